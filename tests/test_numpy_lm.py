"""llmcourse.numpy_lm against torch: every layer's backward pass, the whole model's gradients, 50 training steps, resuming, generation."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmcourse import generate as tgen, layers
from llmcourse.data import get_batch
from llmcourse.optim import AdamW as TorchAdamW, cross_entropy, lr_cosine_schedule
from llmcourse import numpy_lm as nl
from llmcourse.numpy_lm import NumpyLM

SMALL = dict(vocab_size=61, context_length=16, d_model=24, num_layers=2, num_heads=3, d_ff=40, rope_theta=10000.0)


def rel_err(a, b):
    b = b.detach().numpy() if torch.is_tensor(b) else np.asarray(b)
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


def autograd(fn, inputs, dout):
    "torch's out and gradients of sum(fn(*inputs) * dout)."
    ts = [torch.tensor(x, requires_grad=True) for x in inputs]
    out = fn(*ts)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


def pair(tie=False, seed=0, **sizes):
    sizes = sizes or SMALL
    torch.manual_seed(seed)
    model = layers.TransformerLM(**sizes, tie_embeddings=tie, dtype=torch.float64)
    return model, NumpyLM.from_state_dict(model.state_dict(), **sizes)


@pytest.fixture
def rng(): return np.random.default_rng(0)


# --- each layer against autograd, float64, relative error <= 1e-10

def test_linear(rng):
    W, x, dy = rng.normal(size=(5, 6)), rng.normal(size=(2, 3, 6)), rng.normal(size=(2, 3, 5))
    y, cache = nl.linear_forward(x, W)
    lin = layers.Linear(6, 5, dtype=torch.float64)
    ref_y, ref = autograd(lambda x, W: torch.func.functional_call(lin, {'weight': W}, (x,)), [x, W], dy)
    assert rel_err(y, ref_y) < 1e-12
    assert max(rel_err(g, r) for g, r in zip(nl.linear_backward(dy, cache), ref)) <= 1e-10


def test_embedding_repeated_ids(rng):
    W, ids, dy = rng.normal(size=(10, 4)), rng.integers(0, 10, size=(3, 9)), rng.normal(size=(3, 9, 4))
    ref_y, (ref,) = autograd(lambda W: F.embedding(torch.from_numpy(ids), W), [W], dy)
    y, cache = nl.embedding_forward(ids, W)
    assert np.array_equal(y, ref_y)
    assert rel_err(nl.embedding_backward(dy, cache), ref) <= 1e-10


def test_rmsnorm(rng):
    norm = layers.RMSNorm(8, dtype=torch.float64)
    w, x, dy = rng.normal(size=8), rng.normal(size=(2, 5, 8)) * 3, rng.normal(size=(2, 5, 8))
    ref_y, ref = autograd(lambda x, w: torch.func.functional_call(norm, {'weight': w}, (x,)), [x, w], dy)
    y, cache = nl.rmsnorm_forward(x, w)
    assert rel_err(y, ref_y) < 1e-12
    assert max(rel_err(g, r) for g, r in zip(nl.rmsnorm_backward(dy, cache), ref)) <= 1e-10


def test_swiglu(rng):
    ffn = layers.SwiGLU(6, 16, dtype=torch.float64)
    names = ('w1.weight', 'w2.weight', 'w3.weight')
    Ws = [rng.normal(size=s) for s in ((16, 6), (6, 16), (16, 6))]
    x, dy = rng.normal(size=(2, 5, 6)) * 4, rng.normal(size=(2, 5, 6))
    ref_y, (ref_dx, *ref_dW) = autograd(lambda x, *Ws: torch.func.functional_call(ffn, dict(zip(names, Ws)), (x,)), [x, *Ws], dy)
    y, cache = nl.swiglu_forward(x, *Ws)
    dx, dW = nl.swiglu_backward(dy, cache)
    assert rel_err(y, ref_y) < 1e-12
    assert max(rel_err(dx, ref_dx), *[rel_err(g, r) for g, r in zip(dW, ref_dW)]) <= 1e-10


def test_rope_odd_positions(rng):
    positions = np.array([1, 3, 4, 9, 21, 33, 35])
    rope = layers.RotaryPositionalEmbedding(10000.0, 8, 40, dtype=torch.float64)
    cos, sin = nl.rope_tables(10000.0, 8, 40)
    assert rel_err(cos, rope.cos) < 1e-15 and rel_err(sin, rope.sin) < 1e-15
    x, dy = rng.normal(size=(2, 3, 7, 8)), rng.normal(size=(2, 3, 7, 8))
    ref_y, (ref,) = autograd(lambda x: rope(x, torch.from_numpy(positions)), [x], dy)
    y, cache = nl.rope_forward(x, cos[positions], sin[positions])
    assert rel_err(y, ref_y) < 1e-12
    assert rel_err(nl.rope_backward(dy, cache), ref) <= 1e-10


@pytest.mark.parametrize('keep_probs', [False, True])
def test_causal_attention(rng, keep_probs):
    q, k, v, do = (rng.normal(size=(2, 3, 7, 4)) * 2 for _ in range(4))
    mask = torch.ones(7, 7, dtype=torch.bool).tril()
    ref_o, ref = autograd(lambda q, k, v: layers.scaled_dot_product_attention(q, k, v, mask), [q, k, v], do)
    o, cache = nl.causal_attention_forward(q, k, v, keep_probs)
    assert rel_err(o, ref_o) < 1e-12
    assert max(rel_err(g, r) for g, r in zip(nl.causal_attention_backward(do, cache), ref)) <= 1e-10
    # the mask: no gradient flows from a query to a later key
    do2 = np.zeros_like(do); do2[..., 2, :] = 1
    assert np.abs(nl.causal_attention_backward(do2, cache)[1][..., 3:, :]).max() == 0


def test_attention_with_rope_at_odd_positions(rng):
    mha = layers.MultiHeadSelfAttention(12, 3, max_seq_len=40, theta=10000.0, dtype=torch.float64)
    names = ('q_proj', 'k_proj', 'v_proj', 'output_proj')
    Ws = [rng.normal(size=(12, 12)) / 3 for _ in names]
    x, dy, pos = rng.normal(size=(2, 6, 12)), rng.normal(size=(2, 6, 12)), np.array([1, 3, 4, 9, 21, 33])
    fn = lambda x, *Ws: torch.func.functional_call(mha, {f'{n}.weight': W for n, W in zip(names, Ws)}, (x, torch.from_numpy(pos)))
    ref_y, (ref_dx, *ref_dW) = autograd(fn, [x, *Ws], dy)
    cos, sin = nl.rope_tables(10000.0, 4, 40)
    y, cache = nl.attention_forward(x, *Ws, 3, cos[pos], sin[pos])
    dx, dW = nl.attention_backward(dy, cache)
    assert rel_err(y, ref_y) < 1e-12
    assert max(rel_err(dx, ref_dx), *[rel_err(g, r) for g, r in zip(dW, ref_dW)]) <= 1e-10


def test_cross_entropy(rng):
    z, y = rng.normal(size=(20, 11)) * 3, rng.integers(0, 11, size=20)
    zt = torch.tensor(z, requires_grad=True)
    ref = F.cross_entropy(zt, torch.from_numpy(y)); ref.backward()
    loss, cache = nl.cross_entropy_forward(z, y)
    assert abs(loss - ref.item()) < 1e-12
    assert rel_err(nl.cross_entropy_backward(cache), zt.grad) <= 1e-10


# --- the whole model

@pytest.mark.parametrize('tie', [False, True])
@pytest.mark.parametrize('opts', [{}, {'keep_probs': True}, {'recompute_blocks': True}])
def test_model_grads_match_torch(rng, tie, opts):
    model, _ = pair(tie)
    nmodel = NumpyLM.from_state_dict(model.state_dict(), **SMALL, **opts)
    assert nmodel.tied == tie
    ids, targets = rng.integers(0, 61, size=(3, 16)), rng.integers(0, 61, size=(3, 16))
    ref = cross_entropy(model(torch.from_numpy(ids)), torch.from_numpy(targets)); ref.backward()
    loss, grads = nmodel.loss_and_grads(ids, targets)
    assert abs(loss - ref.item()) < 1e-12
    assert list(grads) == list(model.state_dict())
    ref_grads = {n: p.grad for n, p in model.named_parameters()}
    if tie:
        ref_grads['lm_head.weight'] = ref_grads['token_embeddings.weight']
        assert grads['lm_head.weight'] is grads['token_embeddings.weight']
        assert len(nmodel.parameters()) == len(grads) - 1
    for name, g in grads.items(): assert rel_err(g, ref_grads[name]) <= 1e-9, name
    assert rel_err(nmodel.forward(ids), model(torch.from_numpy(ids))) < 1e-12


def test_from_state_dict_copies_and_accepts_arrays():
    model, nmodel = pair()
    arrays = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    n2 = NumpyLM.from_state_dict(arrays, **SMALL)
    assert not n2.tied
    for p in nmodel.parameters().values(): p += 1.0  # never writes into the torch model
    assert all(np.array_equal(n2.params[k], v.numpy()) for k, v in model.state_dict().items())
    forced = NumpyLM.from_state_dict({**arrays, 'lm_head.weight': arrays['token_embeddings.weight']}, **SMALL, tie_embeddings=True)
    assert forced.tied


def test_bad_state_dicts_and_ids():
    model, nmodel = pair()
    sd = model.state_dict()
    with pytest.raises(KeyError, match='ln_final.weight'): NumpyLM.from_state_dict({k: v for k, v in sd.items() if k != 'ln_final.weight'}, **SMALL)
    with pytest.raises(KeyError, match='extra'): NumpyLM.from_state_dict({**sd, 'extra': torch.zeros(1)}, **SMALL)
    with pytest.raises(ValueError, match='layers.1.ffn.w2.weight'): NumpyLM.from_state_dict({**sd, 'layers.1.ffn.w2.weight': torch.zeros(40, 24)}, **SMALL)
    with pytest.raises(ValueError, match='differ'): NumpyLM.from_state_dict(sd, **SMALL, tie_embeddings=True)
    with pytest.raises(IndexError, match=r'\[0, 61\)'): nmodel.forward([[0, -1]])
    with pytest.raises(ValueError, match='context_length'): nmodel.forward(np.zeros((1, 17), dtype=int))
    with pytest.raises(TypeError, match='integers'): nmodel.forward(np.zeros((1, 3)))


def test_float32_stays_float32(rng):
    torch.manual_seed(0)
    model = layers.TransformerLM(**SMALL)
    n32 = NumpyLM.from_state_dict(model.state_dict(), **SMALL, dtype=np.float32)
    ids = rng.integers(0, 61, size=(2, 16))
    loss, grads = n32.loss_and_grads(ids, ids)
    assert {g.dtype for g in grads.values()} == {np.dtype(np.float32)} and n32.forward(ids).dtype == np.float32
    assert abs(loss - cross_entropy(model(torch.from_numpy(ids)), torch.from_numpy(ids)).item()) < 1e-5


def test_initialize_matches_torch_init_statistics():
    sizes = dict(SMALL, vocab_size=2000, d_model=64, d_ff=160, num_heads=4)
    n = NumpyLM.initialize(**sizes, seed=0)
    torch.manual_seed(0)
    t = layers.TransformerLM(**sizes, dtype=torch.float64)
    for k, v in t.state_dict().items():
        assert n.params[k].shape == tuple(v.shape)
        assert abs(n.params[k].std() - v.std().item()) < 0.05 * v.std().item() + 1e-12, k
        assert np.abs(n.params[k]).max() <= 3 * (1.0 if k == 'token_embeddings.weight' else np.sqrt(2 / sum(v.shape))) + 1e-12 or v.dim() == 1
    assert NumpyLM.initialize(**sizes, tie_embeddings=True).tied


def test_tape_bytes_counts_each_buffer_once(rng):
    n = NumpyLM.initialize(**SMALL, dtype=np.float32)
    ids = rng.integers(0, 61, size=(4, 16))
    full = nl.tape_bytes(n, n.forward_tape(ids)[1])
    keep = NumpyLM.initialize(**SMALL, dtype=np.float32, keep_probs=True)
    kept = nl.tape_bytes(keep, keep.forward_tape(ids)[1])
    ckpt = NumpyLM.initialize(**SMALL, dtype=np.float32, recompute_blocks=True)
    small = nl.tape_bytes(ckpt, ckpt.forward_tape(ids)[1])
    N, D = 4 * 16, 24
    assert kept['blocks'] - full['blocks'] == 2 * 4 * 3 * 16 * 16 * 4  # the probabilities: layers × (B, H, T, T) float32
    assert small['blocks'] == 2 * N * D * 4                           # only the block inputs
    assert full['total'] < kept['total'] and small['total'] < full['total']


# --- AdamW, clipping and the training loop against the torch loop

def torch_losses(model, tokens, steps, batch_size, seed, lr=3e-3, min_lr=3e-4, warmup_steps=10, clip=1.0):
    params = list(model.parameters())
    opt = TorchAdamW([{'params': [p for p in params if p.dim() >= 2], 'weight_decay': 0.1},
                      {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}], lr=lr, betas=(0.9, 0.95))
    gen, out = torch.Generator().manual_seed(seed), []
    for step in range(steps):
        x, y = get_batch(tokens, batch_size, model.context_length, 'cpu', gen)
        for g in opt.param_groups: g['lr'] = lr_cosine_schedule(step, lr, min_lr, warmup_steps, steps)
        loss = cross_entropy(model(x), y)
        loss.backward()
        # llmcourse.optim.gradient_clipping sums norms in float32, which torch refuses for float64 grads: torch's own, same formula
        if clip: torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step(); opt.zero_grad(set_to_none=True)
        out.append(loss.item())
    return out


@pytest.fixture
def memmap_tokens(tmp_path):
    np.random.default_rng(1).integers(0, 61, size=5000).astype(np.uint16).tofile(tmp_path / 'tokens.bin')
    return np.memmap(tmp_path / 'tokens.bin', dtype=np.uint16, mode='r')


@pytest.mark.parametrize('tie', [False, True])
def test_50_steps_match_torch_loop(tmp_path, memmap_tokens, tie):
    model, nmodel = pair(tie, seed=3)
    ref = torch_losses(model, memmap_tokens, 50, batch_size=4, seed=7)
    run = nl.train(nmodel, memmap_tokens, tmp_path / 'run', max_steps=50, batch_size=4, warmup_steps=10, seed=7, log=lambda *a: None)
    assert len(run['losses']) == 50
    assert np.abs(np.array(run['losses']) - ref).max() <= 1e-9
    for k, p in model.state_dict().items(): assert rel_err(nmodel.params[k], p) <= 1e-9, k


def test_clip_gradients_matches_torch(rng):
    grads = {'a': rng.normal(size=(3, 4)) * 5, 'b': rng.normal(size=4)}
    ts = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads.values()]
    for t, g in zip(ts, grads.values()): t.grad = torch.from_numpy(g.copy())
    assert abs(nl.clip_gradients(grads, 1.0) - torch.nn.utils.clip_grad_norm_(ts, 1.0).item()) < 1e-12
    for t, g in zip(ts, grads.values()): assert rel_err(g, t.grad) < 1e-14
    assert nl.clip_gradients({'a': np.full(4, 0.1)}, 1.0) == pytest.approx(0.2)  # under the limit: untouched norm


def test_resume_reproduces_uninterrupted_run(tmp_path, memmap_tokens):
    kw = dict(max_steps=12, batch_size=4, warmup_steps=3, cosine_steps=12, checkpoint_every=6, log=lambda *a: None)
    full = NumpyLM.initialize(**SMALL, seed=0)
    ref = nl.train(full, memmap_tokens, tmp_path / 'full', **kw)
    cut = NumpyLM.initialize(**SMALL, seed=0)
    nl.train(cut, memmap_tokens, tmp_path / 'cut', **kw | dict(max_steps=6))
    lines = []
    fresh = NumpyLM.initialize(**SMALL, seed=1)
    run = nl.train(fresh, memmap_tokens, tmp_path / 'cut', resume=True, **kw | dict(log=lines.append))
    assert run['losses'] == ref['losses']
    assert all(np.array_equal(fresh.params[k], full.params[k]) for k in full.params)
    assert lines[0].startswith('resumed') and any(l.startswith('step 10/12 | loss') and 'tok/s' in l for l in lines)
    assert 't = train' in lines[-1]  # the ASCII plot
    with np.load(tmp_path / 'cut' / 'ckpt_numpy.npz', allow_pickle=False) as z:  # arrays only: loads without pickle
        assert int(z['step']) == 12 and int(z['adam_t']) == 12
    with pytest.raises(ValueError, match='batch_size'):
        nl.train(fresh, memmap_tokens, tmp_path / 'cut', resume=True, **kw | dict(batch_size=8))
    assert not list((tmp_path / 'cut').glob('.*.tmp'))


def test_train_evaluates_and_stops_on_nan(tmp_path, memmap_tokens):
    lines = []
    n = NumpyLM.initialize(**SMALL, seed=0)
    run = nl.train(n, memmap_tokens, tmp_path, max_steps=4, batch_size=2, warmup_steps=1, val_tokens=memmap_tokens, eval_every=2, eval_batches=2, log=lines.append)
    assert sorted(run['val_losses']) == [2, 4] and any(l.startswith('step 2: train') for l in lines)
    n.params['ln_final.weight'][:] = np.nan
    with pytest.raises(FloatingPointError, match='loss is nan'):
        nl.train(n, memmap_tokens, tmp_path / 'nan', max_steps=2, batch_size=2, warmup_steps=1, log=lines.append)
    assert not (tmp_path / 'nan' / 'ckpt_numpy.npz').exists()


# --- generation

def test_cached_logits_equal_forward(rng):
    _, nmodel = pair(seed=5)
    ids = rng.integers(0, 61, size=(2, 16))
    cache = nl.KVCache(nmodel, 2)
    parts = [nl.forward_cached(nmodel, ids[:, :5], cache)] + [nl.forward_cached(nmodel, ids[:, t:t + 1], cache) for t in range(5, 16)]
    assert rel_err(np.concatenate(parts, axis=1), nmodel.forward(ids)) < 1e-12
    with pytest.raises(ValueError, match='context_length'): nl.forward_cached(nmodel, ids[:, :1], cache)


def test_greedy_generation_matches_llmcourse_generate():
    torch.manual_seed(5)
    model = layers.TransformerLM(**SMALL, dtype=torch.float64)
    with torch.no_grad():  # sharper logits than the init's, so greedy decoding does not collapse onto one token
        for p in model.parameters():
            if p.dim() == 2: p.mul_(4)
    nmodel = NumpyLM.from_state_dict(model.state_dict(), **SMALL)
    prompt = [3, 14, 15, 9, 26]
    ours = nl.generate(nmodel, prompt, 40, temperature=0.0)  # 45 tokens: the 16-token window slides
    assert ours == tgen.generate(model, prompt, 40, temperature=0.0)
    assert len(set(ours)) > 3
    batch = [prompt, prompt[::-1]]
    assert nl.generate(nmodel, batch, 20, temperature=0.0) == tgen.generate(model, batch, 20, temperature=0.0)
    stop = ours[3]
    assert nl.generate(nmodel, prompt, 40, temperature=0.0, eos_id=stop) == ours[:ours.index(stop) + 1]


@pytest.mark.parametrize('settings', [dict(temperature=0.0), dict(temperature=0.7), dict(temperature=1.0, top_k=5),
                                      dict(temperature=1.3, top_p=0.9), dict(temperature=0.8, top_k=20, top_p=0.5)])
def test_sampling_distribution_matches_llmcourse_generate(rng, settings):
    logits = rng.normal(size=(4, 61)) * 3
    ours = nl.next_token_probs(logits, **settings)
    assert np.abs(ours - tgen.next_token_probs(torch.from_numpy(logits), **settings).double().numpy()).max() < 1e-6


def test_sampling_is_seeded_and_checked():
    _, nmodel = pair(seed=5)
    a = nl.generate(nmodel, [1, 2, 3], 12, temperature=1.0, top_k=3, seed=0)
    assert a == nl.generate(nmodel, [1, 2, 3], 12, temperature=1.0, top_k=3, seed=0)
    with pytest.raises(ValueError, match='top_p'): nl.generate(nmodel, [1], 2, top_p=0)
    with pytest.raises(ValueError, match='empty'): nl.generate(nmodel, [], 2)


def test_train_cleans_temporary_files_and_says_when_nothing_to_resume(tmp_path, memmap_tokens):
    (tmp_path / '.ckpt_numpy.npz.abc123.tmp').write_bytes(b'half a checkpoint')
    lines = []
    nl.train(NumpyLM.initialize(**SMALL), memmap_tokens, tmp_path, max_steps=2, batch_size=2, warmup_steps=1, resume=True, log=lines.append)
    assert lines[0].startswith('resume: no checkpoint') and not list(tmp_path.glob('.*.tmp'))


def test_generate_refuses_ragged_batches():
    _, nmodel = pair(seed=5)
    with pytest.raises(ValueError, match='different lengths'): nl.generate(nmodel, [[1, 2, 3], [4]], 2, temperature=0.0)
