"Tests for llmcourse.layers: the CS336 contract (names, shapes, loading), each module against torch references, variants, bad arguments."
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.layers import (Embedding, Linear, MultiHeadSelfAttention, RMSNorm, RotaryPositionalEmbedding, SiLUFFN, SwiGLU,
                              TransformerBlock, TransformerLM, scaled_dot_product_attention, silu, softmax, swiglu_d_ff)

CFG = dict(vocab_size=500, context_length=16, d_model=64, num_layers=3, num_heads=4, d_ff=128, rope_theta=10000.0)


def cs336_weights(vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta, seed=0, scale=0.1):
    "A CS336-style checkpoint: random tensors under the assignment's exact names and shapes."
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * scale
    sd = {'token_embeddings.weight': torch.randn(vocab_size, d_model, generator=g)}
    for i in range(num_layers):
        sd[f'layers.{i}.ln1.weight'] = 1 + r(d_model)
        for p in ('q', 'k', 'v', 'output'): sd[f'layers.{i}.attn.{p}_proj.weight'] = r(d_model, d_model)
        sd[f'layers.{i}.ln2.weight'] = 1 + r(d_model)
        sd[f'layers.{i}.ffn.w1.weight'] = r(d_ff, d_model)
        sd[f'layers.{i}.ffn.w2.weight'] = r(d_model, d_ff)
        sd[f'layers.{i}.ffn.w3.weight'] = r(d_ff, d_model)
    sd['ln_final.weight'] = 1 + r(d_model)
    sd['lm_head.weight'] = r(vocab_size, d_model)
    return sd


def rope_complex(x, pos, theta):
    "RoPE as multiplication of (x[2i] + i x[2i+1]) by exp(i · pos · theta^(-2i/d)), in float64."
    d = x.shape[-1]
    angles = pos.double()[..., None] * theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2))
    return torch.view_as_real(xc * torch.polar(torch.ones_like(angles), angles)).flatten(-2)


def reference_lm(sd, ids, num_heads, num_layers, rope_theta, eps=1e-5, **_):
    "Independent float64 forward pass of the CS336 pre-norm Transformer LM."
    w = {k: v.double() for k, v in sd.items()}
    rms = lambda x, g: x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * g
    x = F.embedding(ids, w['token_embeddings.weight'])
    B, T, d = x.shape
    d_k = d // num_heads
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(num_layers):
        W = lambda n: w[f'layers.{i}.{n}.weight']
        h = rms(x, W('ln1'))
        q, k, v = (F.linear(h, W(f'attn.{n}_proj')).view(B, T, num_heads, d_k).transpose(1, 2) for n in 'qkv')
        q, k = rope_complex(q, torch.arange(T), rope_theta), rope_complex(k, torch.arange(T), rope_theta)
        s = (q @ k.transpose(-1, -2) / math.sqrt(d_k)).masked_fill(~allowed, -math.inf)
        x = x + F.linear((s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, d), W('attn.output_proj'))
        h = rms(x, W('ln2'))
        x = x + F.linear(F.silu(F.linear(h, W('ffn.w1'))) * F.linear(h, W('ffn.w3')), W('ffn.w2'))
    return F.linear(rms(x, w['ln_final.weight']), w['lm_head.weight'])


EXPECTED_KEYS = (['token_embeddings.weight']
                 + [f'layers.{i}.{n}.weight' for i in range(3) for n in
                    ('ln1', 'attn.q_proj', 'attn.k_proj', 'attn.v_proj', 'attn.output_proj', 'ln2', 'ffn.w1', 'ffn.w2', 'ffn.w3')]
                 + ['ln_final.weight', 'lm_head.weight'])


# ---- the CS336 contract -------------------------------------------------------------------------------------------------

def test_state_dict_keys_are_exactly_cs336():
    model = TransformerLM(**CFG)
    assert list(model.state_dict()) == EXPECTED_KEYS
    sd = cs336_weights(**CFG)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in sd.items()}


@pytest.mark.parametrize('attention', ['fused', 'scratch'])
def test_cs336_checkpoint_loads_and_matches_float64_reference(attention):
    sd = cs336_weights(**CFG)
    model = TransformerLM(**CFG, attention=attention)
    model.load_state_dict(sd, strict=True)
    ids = torch.randint(0, CFG['vocab_size'], (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(): out = model(ids)
    assert out.shape == (3, 12, CFG['vocab_size'])
    torch.testing.assert_close(out.double(), reference_lm(sd, ids, **CFG), atol=1e-5, rtol=1e-5)


def test_float64_model_equals_reference_to_rounding():
    sd = cs336_weights(**CFG)
    model = TransformerLM(**CFG, dtype=torch.float64)
    model.load_state_dict(sd)
    ids = torch.randint(0, CFG['vocab_size'], (2, 16))
    with torch.no_grad(): torch.testing.assert_close(model(ids), reference_lm(sd, ids, **CFG), atol=1e-11, rtol=1e-11)


def test_truncated_input_and_unbatched_input():
    model = TransformerLM(**CFG)
    ids = torch.randint(0, CFG['vocab_size'], (2, 16))
    with torch.no_grad():
        full, half = model(ids), model(ids[:, :8])
        torch.testing.assert_close(half, full[:, :8], atol=1e-5, rtol=1e-5)  # causal: a prefix's logits don't see the rest
        torch.testing.assert_close(model(ids[0]), full[0], atol=1e-5, rtol=1e-5)  # (seq,) ids -> (seq, vocab)


def test_block_loads_cs336_block_weights():
    sd = cs336_weights(**CFG)
    block_sd = {k[len('layers.0.'):]: v for k, v in sd.items() if k.startswith('layers.0.')}
    block = TransformerBlock(64, 4, 128, 16, 10000.0)
    block.load_state_dict(block_sd, strict=True)
    x = torch.randn(2, 10, 64)
    with torch.no_grad():
        y = x + block.attn(block.ln1(x))
        torch.testing.assert_close(block(x), y + block.ffn(block.ln2(y)))


def test_config_rebuilds_the_model():
    model = TransformerLM(**CFG, ffn='silu', tie_embeddings=True)
    assert model.config['ffn'] == 'silu' and model.config['d_model'] == 64
    clone = TransformerLM(**model.config)
    clone.load_state_dict(model.state_dict(), strict=True)
    assert model.context_length == 16 and model.vocab_size == 500


def test_gpt2_xl_parameter_count_on_meta():
    model = TransformerLM(50257, 1024, 1600, 48, 25, 6400, 10000.0, device='meta')
    assert sum(p.numel() for p in model.parameters()) == 2_127_057_600


def test_decoding_hooks_are_exposed():
    model = TransformerLM(**CFG)
    attn = model.layers[0].attn
    assert (attn.num_heads, attn.d_k) == (4, 16) and isinstance(attn.rope, RotaryPositionalEmbedding)
    assert model.layers[0].norm_position == 'pre'
    assert model.layers[1].attn.rope is attn.rope                    # one shared cos/sin table
    assert TransformerLM(**CFG, position='nope').layers[0].attn.rope is None


# ---- each module against torch ------------------------------------------------------------------------------------------

def test_linear_and_embedding():
    lin = Linear(32, 48)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(lin(x), F.linear(x, lin.weight))
    assert lin.weight.shape == (48, 32) and lin.weight.abs().max() <= 3 * math.sqrt(2 / 80) + 1e-7
    emb = Embedding(100, 16)
    ids = torch.randint(0, 100, (3, 7))
    torch.testing.assert_close(emb(ids), F.embedding(ids, emb.weight))
    assert emb.weight.shape == (100, 16) and emb.weight.abs().max() <= 3


def test_rmsnorm_matches_torch_and_keeps_dtype():
    norm = RMSNorm(64)
    nn.init.normal_(norm.weight)
    x = torch.randn(4, 9, 64) * 5
    torch.testing.assert_close(norm(x), F.rms_norm(x, (64,), norm.weight, eps=1e-5))
    xb = x.bfloat16()
    assert norm(xb).dtype == torch.bfloat16
    torch.testing.assert_close(norm(xb).float(), norm(xb.float()), atol=0.1, rtol=0.02)


def test_silu_softmax_swiglu():
    x = torch.randn(3, 8, 16) * 4
    torch.testing.assert_close(silu(x), F.silu(x))
    for dim in (0, 1, -1): torch.testing.assert_close(softmax(x, dim), F.softmax(x, dim))
    torch.testing.assert_close(softmax(torch.tensor([1e4, 1e4 + 1]), 0), F.softmax(torch.tensor([1e4, 1e4 + 1]), 0))
    ffn, plain = SwiGLU(16, 40), SiLUFFN(16, 64)
    torch.testing.assert_close(ffn(x), F.linear(F.silu(F.linear(x, ffn.w1.weight)) * F.linear(x, ffn.w3.weight), ffn.w2.weight))
    torch.testing.assert_close(plain(x), F.linear(F.silu(F.linear(x, plain.w1.weight)), plain.w2.weight))
    assert [swiglu_d_ff(d) for d in (64, 512, 768)] == [192, 1408, 2048]


@pytest.mark.parametrize('shape', [(6, 10, 16), (2, 3, 10, 16)])
def test_attention_matches_torch(shape):
    Q, K = torch.randn(*shape), torch.randn(*shape[:-2], 13, shape[-1])
    V = torch.randn(*shape[:-2], 13, 8)
    mask = torch.rand(*shape[:-1], 13) > 0.5
    mask[..., 0] = True
    torch.testing.assert_close(scaled_dot_product_attention(Q, K, V, mask), F.scaled_dot_product_attention(Q, K, V, attn_mask=mask))
    torch.testing.assert_close(scaled_dot_product_attention(Q, K, V), F.scaled_dot_product_attention(Q, K, V))
    probs_to_key = scaled_dot_product_attention(Q, K, torch.eye(13).expand(*shape[:-2], 13, 13), mask)
    assert (probs_to_key[~mask] == 0).all()                           # masked keys get probability exactly 0
    mask[..., 1, :] = False                                           # query 1 may attend to nothing: zeros, as torch gives
    out = scaled_dot_product_attention(Q, K, V, mask)
    assert (out[..., 1, :] == 0).all() and out.isfinite().all()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(Q, K, V, attn_mask=mask))


def test_rope_against_complex_numbers_and_broadcasting():
    rope = RotaryPositionalEmbedding(10000.0, 32, 64)
    x = torch.randn(3, 12, 32)
    pos = torch.arange(12)
    torch.testing.assert_close(rope(x, pos), rope_complex(x, pos, 10000.0).float())
    bpos = torch.randint(0, 64, (3, 12))
    torch.testing.assert_close(rope(x, bpos), rope_complex(x, bpos, 10000.0).float())
    xh = torch.randn(3, 4, 12, 32)                                     # (batch, heads, seq, d_k) with (batch, seq) positions
    torch.testing.assert_close(rope(xh, bpos), rope_complex(xh, bpos[:, None], 10000.0).float())
    torch.testing.assert_close(rope(xh, pos), rope_complex(xh, pos, 10000.0).float())
    torch.testing.assert_close(rope(xh, pos[None]), rope_complex(xh, pos, 10000.0).float())
    assert rope.state_dict() == {} and rope(x.bfloat16(), pos).dtype == torch.bfloat16


def test_mha_paths_agree_and_match_per_head_loop():
    x = torch.randn(2, 12, 64)
    for theta in (None, 10000.0):
        fused = MultiHeadSelfAttention(64, 4, max_seq_len=16, theta=theta)
        scratch = MultiHeadSelfAttention(64, 4, max_seq_len=16, theta=theta, attention='scratch')
        scratch.load_state_dict(fused.state_dict(), strict=True)
        pos = torch.arange(12)[None]                                   # CS336 passes (1, seq) positions
        with torch.no_grad():
            out = fused(x, pos)
            torch.testing.assert_close(out, scratch(x, pos))
            heads = []
            for h in range(4):
                sl = slice(16 * h, 16 * h + 16)
                q, k, v = (x @ getattr(fused, f'{n}_proj').weight[sl].T for n in 'qkv')
                if theta: q, k = (rope_complex(t, torch.arange(12), theta).float() for t in (q, k))
                heads.append(F.scaled_dot_product_attention(q, k, v, is_causal=True))
            torch.testing.assert_close(out, torch.cat(heads, -1) @ fused.output_proj.weight.T)


# ---- variants -----------------------------------------------------------------------------------------------------------

VARIANTS = [dict(), dict(norm='none'), dict(norm_position='post'), dict(position='nope'), dict(ffn='silu', d_ff=256),
            dict(tie_embeddings=True), dict(attention='scratch'),
            dict(norm='none', norm_position='post', position='nope', ffn='silu', tie_embeddings=True, attention='scratch')]


@pytest.mark.parametrize('kw', VARIANTS, ids=lambda kw: ','.join(f'{k}={v}' for k, v in kw.items()) or 'default')
def test_variant_forward_backward(kw):
    torch.manual_seed(0)
    model = TransformerLM(**(CFG | kw))
    ids = torch.randint(0, CFG['vocab_size'], (2, 16))
    logits = model(ids)
    assert logits.shape == (2, 16, CFG['vocab_size']) and logits.isfinite().all()
    F.cross_entropy(logits.flatten(0, 1), ids.roll(-1, 1).flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.isfinite().all() and p.grad.abs().sum() > 0, name


def test_variant_structure():
    none = TransformerLM(**CFG, norm='none')
    assert isinstance(none.ln_final, nn.Identity) and isinstance(none.layers[0].ln1, nn.Identity)
    assert not any('ln' in k for k in none.state_dict())
    post = TransformerLM(**CFG, norm_position='post')
    assert isinstance(post.ln_final, nn.Identity) and isinstance(post.layers[0].ln2, RMSNorm)
    tied = TransformerLM(**CFG, tie_embeddings=True)
    assert tied.lm_head.weight is tied.token_embeddings.weight
    assert sum(p.numel() for p in tied.parameters()) == sum(p.numel() for p in TransformerLM(**CFG).parameters()) - 500 * 64
    silu_ffn = TransformerLM(**CFG, ffn='silu')
    assert list(silu_ffn.layers[0].ffn.state_dict()) == ['w1.weight', 'w2.weight']
    x = torch.randn(1, 5, 64)
    b = post.layers[0]
    with torch.no_grad():
        y = b.ln1(x + b.attn(x))
        torch.testing.assert_close(b(x), b.ln2(y + b.ffn(y)))


def test_bf16_model_runs_and_keeps_float32_rope_tables():
    model = TransformerLM(**CFG, dtype=torch.bfloat16)
    out = model(torch.randint(0, 500, (2, 8)))
    assert out.dtype == torch.bfloat16 and out.isfinite().all()
    cast = TransformerLM(**CFG).to(torch.bfloat16)
    rope = cast.layers[0].attn.rope
    assert rope.cos.dtype == torch.float32 and cast.lm_head.weight.dtype == torch.bfloat16
    torch.testing.assert_close(rope.cos, RotaryPositionalEmbedding(10000.0, 16, 16).cos)
    assert cast.layers[2].attn.rope is rope


# ---- bad arguments ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('kw, message', [
    (dict(norm='batch'), 'norm must be one of'), (dict(norm_position='middle'), 'norm_position must be one of'),
    (dict(position='alibi'), 'position must be one of'), (dict(ffn='relu'), 'ffn must be one of'),
    (dict(attention='flash'), 'attention must be one of'), (dict(tie_embeddings='yes'), 'tie_embeddings must be a bool'),
    (dict(num_heads=5), 'num_heads=5 must divide d_model=64'), (dict(d_model=0), 'd_model must be a positive int'),
    (dict(vocab_size=-1), 'vocab_size must be a positive int'), (dict(num_layers=2.0), 'num_layers must be a positive int'),
    (dict(d_ff=0), 'd_ff must be a positive int'), (dict(context_length=None), 'context_length must be a positive int'),
    (dict(rope_theta=-1.0), 'rope_theta must be a positive number')])
def test_bad_model_arguments(kw, message):
    with pytest.raises(ValueError, match=message): TransformerLM(**(CFG | kw))


def test_bad_module_arguments_and_inputs():
    with pytest.raises(ValueError, match='d_k must be even'): RotaryPositionalEmbedding(10000.0, 15, 8)
    with pytest.raises(ValueError, match='theta must be positive'): RotaryPositionalEmbedding(0.0, 16, 8)
    with pytest.raises(ValueError, match='max_seq_len is required'): MultiHeadSelfAttention(64, 4, theta=10000.0)
    with pytest.raises(ValueError, match='theta is required'): TransformerBlock(64, 4, 128, 16, None)
    TransformerBlock(64, 4, 128, 16, None, position='nope')                # NoPE needs no theta
    with pytest.raises(ValueError, match='in_features must be a positive int'): Linear(0, 4)
    with pytest.raises(ValueError, match='exceeds context_length=16'): TransformerLM(**CFG)(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match='exceeds max_seq_len=8'): RotaryPositionalEmbedding(10000.0, 16, 8)(torch.randn(9, 16))
    with pytest.raises(IndexError, match='token id 500 is out of range'): TransformerLM(**CFG)(torch.tensor([[1, 500]]))
    with pytest.raises(IndexError, match='token id -2 is out of range'): Embedding(10, 4)(torch.tensor([-2, 3]))


# ---- parameter counts against the accounting formulas -------------------------------------------------------------------

@pytest.mark.parametrize('kw', VARIANTS, ids=lambda kw: ','.join(f'{k}={v}' for k, v in kw.items()) or 'default')
def test_param_counts_match_accounting(kw):
    from llmcourse.accounting import param_counts
    cfg = CFG | kw
    model = TransformerLM(**cfg)
    counts = param_counts(model)                                        # the model's own config
    assert counts['total'] == sum(p.numel() for p in model.parameters())
    assert counts['attention'] == sum(p.numel() for n, p in model.named_parameters() if '.attn.' in n)
    assert counts['ffn'] == sum(p.numel() for n, p in model.named_parameters() if '.ffn.' in n)
