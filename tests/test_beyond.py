"Tests for notebook 10's switches: GQA/MQA attention, the mixture-of-experts FFN, speculative decoding and their accounting."
import math
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from llmcourse.accounting import (activation_bytes, active_param_counts, decode_step, forward_flops, kv_cache_bytes,
                                  model_config, param_counts, six_n_flops_per_token)
from llmcourse.generate import KVCache, forward_cached, generate, next_token_probs, speculative_blocks, stream_generate
from llmcourse.layers import (ModelConfig, MoEFeedForward, MultiHeadSelfAttention, SwiGLU, TransformerLM, moe_aux_loss,
                              repeat_kv)

pytestmark = pytest.mark.usefixtures('one_thread')   # conftest.py: tiny models, one torch thread

CFG = dict(vocab_size=97, context_length=48, d_model=64, num_layers=2, num_heads=8, d_ff=96, rope_theta=10_000.)

def build(seed=0, **kw):
    torch.manual_seed(seed)
    return TransformerLM(**CFG | kw)

# --- GQA / MQA ------------------------------------------------------------------------------------------------------------

def test_default_kv_heads_is_todays_model():
    ids = torch.randint(0, 97, (2, 20))
    base, same = build(), build(num_kv_heads=8)
    assert {k: v.shape for k, v in base.state_dict().items()} == {k: v.shape for k, v in same.state_dict().items()}
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), same.state_dict().values()))
    assert torch.equal(base(ids), same(ids))
    assert base.layers[0].attn.k_proj.weight.shape == (64, 64)

def mha_from_gqa(attn: MultiHeadSelfAttention, **kw) -> MultiHeadSelfAttention:
    "A plain multi-head layer whose key/value heads are the GQA layer's, each repeated for the query heads sharing it."
    H, H_kv, d_k = attn.num_heads, attn.num_kv_heads, attn.d_k
    mha = MultiHeadSelfAttention(attn.d_model, H, 32, 10_000., **kw)
    sd = attn.state_dict()
    for n in ('k_proj', 'v_proj'):
        w = sd[f'{n}.weight'].view(H_kv, d_k, -1)
        sd[f'{n}.weight'] = repeat_kv(w, H // H_kv).reshape(H * d_k, -1)  # head h reads kv head h // (H / H_kv)
    mha.load_state_dict(sd)
    return mha

@pytest.mark.parametrize('num_kv_heads', [1, 2, 4])
@pytest.mark.parametrize('attention', ['fused', 'scratch'])
def test_gqa_equals_mha_with_repeated_heads(num_kv_heads, attention):
    torch.manual_seed(0)
    gqa = MultiHeadSelfAttention(64, 8, 32, 10_000., num_kv_heads=num_kv_heads, attention=attention)
    assert gqa.k_proj.weight.shape == (num_kv_heads * 8, 64)
    x = torch.randn(3, 20, 64)
    torch.testing.assert_close(gqa(x), mha_from_gqa(gqa, attention=attention)(x), atol=1e-5, rtol=1e-5)

def test_gqa_fused_equals_scratch():
    fused, scratch = build(num_kv_heads=2), build(num_kv_heads=2, attention='scratch')
    scratch.load_state_dict(fused.state_dict())
    ids = torch.randint(0, 97, (2, 30))
    torch.testing.assert_close(fused(ids), scratch(ids), atol=1e-5, rtol=1e-5)

@pytest.mark.parametrize('num_kv_heads', [1, 2])
def test_gqa_kv_cache(num_kv_heads):
    model = build(num_kv_heads=num_kv_heads)
    cache = KVCache(model, 2)
    assert cache.k[0].shape == (2, num_kv_heads, 48, 8)
    ids = torch.randint(0, 97, (2, 30))
    with torch.no_grad():
        cached = torch.cat([forward_cached(model, ids[:, a:b], cache) for a, b in ((0, 9), (9, 10), (10, 30))], 1)
        torch.testing.assert_close(cached, model(ids), atol=1e-5, rtol=1e-5)
    prompts = [[1, 2, 3], [4, 5]]
    assert generate(model, prompts, 60, temperature=0) == generate(model, prompts, 60, temperature=0, use_cache=False)

def test_gqa_bad_arguments():
    with pytest.raises(ValueError, match='num_kv_heads=3 must divide num_heads=8'): build(num_kv_heads=3)
    with pytest.raises(ValueError, match='num_kv_heads must be a positive int'): build(num_kv_heads=0)
    with pytest.raises(ValueError, match='num_kv_heads=3 must divide'): MultiHeadSelfAttention(64, 8, num_kv_heads=3)

# --- mixture of experts --------------------------------------------------------------------------------------------------

def test_one_expert_is_the_dense_swiglu():
    torch.manual_seed(0)
    dense, moe = SwiGLU(32, 64), MoEFeedForward(32, 64, num_experts=1)
    moe.experts[0].load_state_dict(dense.state_dict())
    x = torch.randn(2, 7, 32)
    assert torch.equal(moe(x), dense(x))
    dense_lm, moe_lm = build(), build(num_experts=1)
    moe_lm.load_state_dict({k.replace('ffn.', 'ffn.experts.0.'): v for k, v in dense_lm.state_dict().items()}
                           | {k: v for k, v in moe_lm.state_dict().items() if 'router' in k})
    ids = torch.randint(0, 97, (2, 20))
    assert torch.equal(moe_lm(ids), dense_lm(ids))

def routed(logits, top_k=1, capacity_factor=None):
    "An MoE layer whose router is the identity, so the tokens `logits` are routed by exactly these logits."
    N, E = logits.shape
    moe = MoEFeedForward(E, 8, E, top_k, capacity_factor).double()
    with torch.no_grad(): moe.router.weight.copy_(torch.eye(E, dtype=torch.float64))
    return moe, logits.double()

def test_balance_loss_on_a_hand_built_routing():
    logits = torch.tensor([[2., 0, 0, 0], [3, 1, 0, 0], [0, 4, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 5, 1]])
    moe, x = routed(logits)
    moe(x)
    p = torch.softmax(logits.double(), -1)
    f = torch.tensor([3, 1, 1, 1], dtype=torch.float64) / 6   # argmax experts: 0, 0, 1, 3, 0, 2
    torch.testing.assert_close(moe.stats['balance_loss'].double(), 4 * (f * p.mean(0)).sum(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(moe.stats['load'].double(), f)
    torch.testing.assert_close(moe.stats['z_loss'].double(), torch.logsumexp(logits.double(), -1).pow(2).mean(), atol=1e-6, rtol=1e-6)
    balanced, xb = routed(torch.eye(4) * 3)   # every expert gets one token, with the same confidence
    balanced(xb)
    assert balanced.stats['balance_loss'].item() == pytest.approx(1.0)

def test_top2_gates_capacity_and_drops():
    logits = torch.tensor([[3., 2, 0, 0]] * 6 + [[0, 0, 2, 3]] * 2)  # 6 tokens want experts 0 then 1
    moe, x = routed(logits, top_k=2, capacity_factor=1.0)           # capacity ⌈1 · 2 · 8 / 4⌉ = 4 per expert
    out = moe(x)
    # experts 0 and 1 each take the first 4 of the 6 tokens; 2 tokens lose both choices: 4 of 16 assignments dropped
    assert moe.stats['dropped'].item() == pytest.approx(4 / 16)
    torch.testing.assert_close(out[4:6], torch.zeros(2, 4, dtype=torch.float64))
    g = torch.softmax(torch.tensor([3., 2]).double(), -1)
    want = g[0] * moe.experts[0](x[:1]) + g[1] * moe.experts[1](x[:1])
    torch.testing.assert_close(out[:1], want)
    free, _ = routed(logits, top_k=2)
    assert free.stats == {} and (free(x)[4:6].abs().sum() > 0) and free.stats['dropped'].item() == 0

def test_moe_model_trains_and_aux_loss():
    model = build(num_experts=4, moe_top_k=2, capacity_factor=1.25)
    ids = torch.randint(0, 97, (4, 24))
    assert moe_aux_loss(model).item() == 0
    loss = F.cross_entropy(model(ids).flatten(0, 1), ids.roll(-1, 1).flatten())
    aux = moe_aux_loss(model, balance_coef=0.01, z_coef=1e-3)
    stats = [m.stats for m in model.modules() if isinstance(m, MoEFeedForward)]
    assert aux.item() == pytest.approx(sum(0.01 * s['balance_loss'].item() + 1e-3 * s['z_loss'].item() for s in stats))
    (loss + aux).backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for n, p in model.named_parameters() if 'router' in n)
    assert moe_aux_loss(build()).item() == 0  # a dense model has none
    assert sorted(k for k in model.state_dict() if k.startswith('layers.0.ffn'))[:2] == ['layers.0.ffn.experts.0.w1.weight', 'layers.0.ffn.experts.0.w2.weight']

def test_moe_bad_arguments():
    with pytest.raises(ValueError, match='moe_top_k=2 needs num_experts >= 2'): build(num_experts=1, moe_top_k=2)
    with pytest.raises(ValueError, match='capacity_factor applies only with num_experts'): build(capacity_factor=1.0)
    with pytest.raises(ValueError, match='capacity_factor must be a positive number'): build(num_experts=2, capacity_factor=0)
    with pytest.raises(ValueError, match="moe_top_k must be one of"): build(num_experts=2, moe_top_k=3)
    with pytest.raises(ValueError, match="moe_top_k must be one of"): build(num_experts=2, moe_top_k=True)
    with pytest.raises(ValueError, match='num_experts must be a positive int'): build(num_experts=0)

def test_model_config_fields():
    assert ModelConfig.optional_fields()[:3] == ('num_kv_heads', 'num_experts', 'capacity_factor')  # then later extensions (mup_base_width)
    old_run = dict(CFG)  # a config.json written before these fields existed
    assert ModelConfig.from_dict(old_run) == ModelConfig(**CFG)
    assert build().config | {} == ModelConfig(**CFG).__dict__

# --- speculative decoding ------------------------------------------------------------------------------------------------

def pair(vocab_size=97, context_length=96):
    torch.manual_seed(0)
    target = TransformerLM(vocab_size, context_length, 64, 3, 4, 128)
    torch.manual_seed(1)
    draft = TransformerLM(vocab_size, context_length, 32, 1, 2, 64)
    return target, draft

@pytest.mark.parametrize('k', [1, 2, 4, 7])
def test_speculative_greedy_is_the_targets_text(k):
    target, draft = pair()
    ref = generate(target, [3, 1, 4], 60, temperature=0)
    assert generate(target, [3, 1, 4], 60, temperature=0, draft_model=draft, draft_tokens=k) == ref
    assert list(stream_generate(target, [3, 1, 4], 60, temperature=0, draft_model=target, draft_tokens=k)) == ref
    # the target as its own draft accepts everything: k + 1 tokens per pass
    assert [len(b) for b, _ in speculative_blocks(target, target, [3, 1, 4], 5 * (k + 1), k, temperature=0)] == [k + 1] * 5

def test_speculative_batch_and_eos():
    target, draft = pair()
    prompts = [[3, 1, 4], [1, 5], [9, 2, 6, 5]]
    ref = generate(target, prompts, 40, temperature=0)
    eos = ref[0][10]
    want = generate(target, prompts, 40, temperature=0, eos_id=eos)
    assert generate(target, prompts, 40, temperature=0, eos_id=eos, draft_model=draft, draft_tokens=3) == want
    assert want[0][-1] == eos and len(want[0]) <= 11
    a = generate(target, prompts, 20, seed=5, draft_model=draft)
    assert a == generate(target, prompts, 20, seed=5, draft_model=draft) and [len(r) for r in a] == [20] * 3

def exact_distribution(model, prompt, n, **shape):
    "P(x_1 … x_n | prompt) for every sequence, from the model's own next-token distributions: (V,) * n."
    V = model.vocab_size
    with torch.no_grad():
        dist = torch.ones(())
        for step in range(n):
            seqs = torch.cartesian_prod(*[torch.arange(V)] * step).reshape(-1, step) if step else torch.zeros(1, 0, dtype=torch.long)
            ids = torch.cat([torch.tensor(prompt).expand(len(seqs), -1), seqs], 1)
            p = next_token_probs(model(ids)[:, -1].double(), **shape).double()  # (V^step, V)
            dist = dist.reshape(-1, 1) * p
        return dist.reshape([V] * n)

def chi_squared_p(counts, probs):
    "The p-value of Pearson's chi-squared test of `counts` against `probs` (cells with zero probability must be empty)."
    assert counts[probs == 0].sum() == 0
    n, keep = counts.sum(), probs > 0
    expected = n * probs[keep]
    chi2 = ((counts[keep] - expected) ** 2 / expected).sum()
    dof = keep.sum() - 1
    return float(torch.special.gammaincc(dof.double() / 2, chi2.double() / 2))

@pytest.mark.parametrize('shape', [dict(temperature=1.0), dict(temperature=0.8, top_k=3)])
def test_speculative_sampling_keeps_the_targets_distribution(shape):
    "Two new tokens from a 5-token vocabulary, 2,000 seeds (fixed, so the test cannot flake), against the exact joint law."
    target, draft = pair(vocab_size=5, context_length=8)
    # the first pass drafts one token: accepted, it comes with a free target token; rejected, the correction and a plain step
    prompt, n, runs = [0, 1], 2, 2000
    counts = torch.zeros(5, 5, dtype=torch.float64)
    for seed in range(runs):
        counts[tuple(generate(target, prompt, n, seed=seed, draft_model=draft, draft_tokens=3, **shape))] += 1
    exact = exact_distribution(target, prompt, n, **shape)
    assert chi_squared_p(counts.flatten(), exact.flatten()) > 1e-3
    # the test has power: the draft's own distribution (what one would get by accepting every draft) is rejected
    assert chi_squared_p(counts.flatten(), exact_distribution(draft, prompt, n, **shape).flatten() + 1e-12) < 1e-6

def test_speculative_bad_arguments():
    target, draft = pair()
    with pytest.raises(ValueError, match='vocab_size 50 differs'): generate(target, [1], 5, draft_model=TransformerLM(50, 96, 32, 1, 2, 64))
    with pytest.raises(ValueError, match='draft_tokens must be an integer >= 1'): generate(target, [1], 5, draft_model=draft, draft_tokens=0)
    with pytest.raises(ValueError, match='needs use_cache=True'): generate(target, [1], 5, draft_model=draft, use_cache=False)
    with pytest.raises(ValueError, match='exceeds the context_length 96'): generate(target, [1] * 90, 10, draft_model=draft)
    with pytest.raises(ValueError, match='exceeds the context_length'): stream_generate(target, [1] * 90, 10, draft_model=draft)

# --- accounting ----------------------------------------------------------------------------------------------------------

VARIANTS = [dict(num_kv_heads=2), dict(num_kv_heads=1), dict(num_experts=4), dict(num_experts=4, moe_top_k=2, num_kv_heads=4),
            dict(num_experts=3, ffn='silu', tie_embeddings=True)]

@pytest.mark.parametrize('kw', VARIANTS)
def test_accounting_matches_the_model(kw):
    cfg = CFG | dict(attention='scratch') | kw  # the from-scratch attention: FlopCounterMode sees its matmuls on a CPU
    model = TransformerLM(**cfg)
    assert param_counts(cfg)['total'] == sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter, torch.no_grad(): model(torch.randint(0, 97, (3, 40)))
    assert forward_flops(cfg, 40, 3)['total'] == counter.get_total_flops()
    cache = KVCache(model, 3)
    assert kv_cache_bytes(cfg, 3) == sum(t.nbytes for t in cache.k + cache.v)
    c = model_config(cfg)
    experts = sum(p.numel() for n, p in model.named_parameters() if '.experts.' in n)
    if c['num_experts']:
        assert param_counts(cfg)['total'] - active_param_counts(cfg)['total'] == experts * (c['num_experts'] - c['moe_top_k']) // c['num_experts']
    else: assert active_param_counts(cfg) == param_counts(cfg)

def test_kv_cache_and_decode_step_scale_with_kv_heads():
    sizes = {h: kv_cache_bytes(CFG | dict(num_kv_heads=h), 4, 1024, 2) for h in (8, 4, 2, 1)}
    assert sizes == {h: sizes[8] * h // 8 for h in sizes}
    steps = {h: decode_step(CFG | dict(num_kv_heads=h), 16, 4096) for h in (8, 1)}
    assert steps[1]['intensity'] > steps[8]['intensity'] and steps[1]['kv cache bytes'] == steps[8]['kv cache bytes'] // 8

def test_moe_accounting():
    dense, moe = CFG, CFG | dict(num_experts=8, moe_top_k=2)
    assert six_n_flops_per_token(moe) > six_n_flops_per_token(dense)
    assert active_param_counts(moe)['ffn'] == 2 * param_counts(dense)['ffn'] + CFG['num_layers'] * 64 * 8
    with pytest.raises(ValueError, match='dense multi-head model only'): activation_bytes(moe, 1)
    with pytest.raises(ValueError, match='dense multi-head model only'): activation_bytes(CFG | dict(num_kv_heads=2), 1)
    with pytest.raises(ValueError, match='num_kv_heads=3 must divide'): param_counts(CFG | dict(num_kv_heads=3))

def test_moe_decodes_with_the_kv_cache():
    "Without a capacity limit a token's output depends on it alone, so cached decoding equals the full forward pass."
    model = build(num_experts=4, moe_top_k=2, num_kv_heads=2)
    cache = KVCache(model, 2)
    ids = torch.randint(0, 97, (2, 30))
    with torch.no_grad():
        cached = torch.cat([forward_cached(model, ids[:, a:b], cache) for a, b in ((0, 9), (9, 10), (10, 30))], 1)
        torch.testing.assert_close(cached, model(ids), atol=1e-5, rtol=1e-5)
    assert generate(model, [[1, 2, 3], [4, 5]], 30, temperature=0) == generate(model, [[1, 2, 3], [4, 5]], 30, temperature=0, use_cache=False)
