"""llmcourse.optim against PyTorch and the CS336 assignment-1 contract: loss, AdamW, schedule, clipping, plateau control."""
import io, math

import pytest
import torch
import torch.nn.functional as F

from llmcourse.optim import (AdamW, EarlyStopping, ReduceLROnPlateau, SGD, cross_entropy, gradient_clipping,
                             lr_cosine_schedule)


# ---------------------------------------------------------------- cross_entropy
@pytest.mark.parametrize('shape', [(8, 50), (3, 7, 50), (2, 3, 4, 50)])
def test_cross_entropy_matches_torch(shape):
    torch.manual_seed(0)
    logits, targets = torch.randn(shape), torch.randint(0, shape[-1], shape[:-1])
    ref = F.cross_entropy(logits.reshape(-1, shape[-1]), targets.reshape(-1))
    out = cross_entropy(logits, targets)
    assert out.shape == () and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)


def test_cross_entropy_large_logits():
    # the CS336 check: 1000x logits overflow a naive exp but not log-sum-exp
    torch.manual_seed(0)
    logits, targets = 1000 * torch.randn(16, 5), torch.randint(0, 5, (16,))
    out = cross_entropy(logits, targets)
    assert torch.isfinite(out)
    torch.testing.assert_close(out, F.cross_entropy(logits, targets), atol=1e-4, rtol=1e-6)
    huge = torch.tensor([[1e30, 0.0, -1e30]])  # extreme but finite
    torch.testing.assert_close(cross_entropy(huge, torch.tensor([1])), torch.tensor(1e30))


def test_cross_entropy_gradient():
    torch.manual_seed(0)
    a = torch.randn(4, 6, 30, requires_grad=True)
    b = a.detach().clone().requires_grad_()
    targets = torch.randint(0, 30, (4, 6))
    cross_entropy(a, targets).backward()
    F.cross_entropy(b.view(-1, 30), targets.view(-1)).backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-7, rtol=1e-5)


def test_cross_entropy_bf16_accumulates_in_float32():
    torch.manual_seed(0)
    logits = (3 * torch.randn(64, 5000)).bfloat16().requires_grad_()
    targets = torch.randint(0, 5000, (64,))
    exact = F.cross_entropy(logits.detach().double(), targets)
    out = cross_entropy(logits, targets)
    assert out.dtype == torch.float32
    assert abs(out.item() - exact.item()) < 1e-5  # bf16 arithmetic would be off by ~1e-2
    out.backward()
    assert logits.grad.dtype == torch.bfloat16


def test_cross_entropy_z_loss_and_ignore_index():
    torch.manual_seed(0)
    logits, targets = torch.randn(5, 20).double(), torch.randint(0, 20, (5,))
    lse = torch.logsumexp(logits, -1)
    nll = lse - logits[torch.arange(5), targets]
    torch.testing.assert_close(cross_entropy(logits, targets, z_loss=1e-2), (nll + 1e-2 * lse**2).mean())
    targets[1] = targets[3] = -100
    keep = targets != -100
    torch.testing.assert_close(cross_entropy(logits, targets, ignore_index=-100),
                               F.cross_entropy(logits, targets, ignore_index=-100))
    lse_k = lse[keep]
    nll_k = lse_k - logits[keep].gather(-1, targets[keep, None]).squeeze(-1)
    torch.testing.assert_close(cross_entropy(logits, targets, z_loss=1e-2, ignore_index=-100), (nll_k + 1e-2 * lse_k**2).mean())


def test_cross_entropy_bad_inputs():
    logits = torch.randn(4, 10)
    with pytest.raises(ValueError, match='leading shape'): cross_entropy(logits, torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match='integer'): cross_entropy(logits, torch.zeros(4))
    with pytest.raises(IndexError, match=r'\[0, 10\)'): cross_entropy(logits, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(IndexError, match=r'\[0, 10\)'): cross_entropy(logits, torch.tensor([0, 1, 2, -1]))
    # int32 targets are fine
    torch.testing.assert_close(cross_entropy(logits, torch.tensor([0, 1, 2, 3], dtype=torch.int32)),
                               F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])))


def test_cross_entropy_z_loss_gradient_matches_autograd():
    torch.manual_seed(0)
    logits, targets = torch.randn(3, 4, 40), torch.randint(0, 40, (3, 4))
    targets[0, 0] = -1
    x64 = logits.double().requires_grad_()
    keep = targets != -1
    lse = torch.logsumexp(x64, -1)
    per = lse - x64.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1) + 0.1 * lse**2
    (per[keep].mean()).backward()
    x = logits.clone().requires_grad_()
    cross_entropy(x, targets, z_loss=0.1, ignore_index=-1).backward()
    torch.testing.assert_close(x.grad, x64.grad.float(), atol=1e-7, rtol=1e-5)
    assert x.grad[0, 0].abs().max() == 0


def test_cross_entropy_float64_and_degenerate_batches():
    torch.manual_seed(0)
    x, t = torch.randn(5, 7, dtype=torch.float64), torch.randint(0, 7, (5,))
    out = cross_entropy(x, t)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, F.cross_entropy(x, t), atol=1e-12, rtol=0)
    assert torch.isnan(cross_entropy(torch.randn(0, 7), torch.zeros(0, dtype=torch.long)))  # as F.cross_entropy
    all_ignored = torch.full((5,), -100)
    assert torch.isnan(cross_entropy(x, all_ignored, ignore_index=-100))
    with pytest.raises(ValueError, match='z_loss=-1'): cross_entropy(x, t, z_loss=-1)


@pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(), reason='torch.compile is not supported on this Python/torch')
def test_cross_entropy_traces_without_graph_breaks():
    torch._dynamo.reset()
    fn = torch.compile(cross_entropy, backend='aot_eager', fullgraph=True)
    a = torch.randn(6, 12, requires_grad=True)
    b = a.detach().clone().requires_grad_()
    targets = torch.randint(0, 12, (6,))
    fn(a, targets, z_loss=1e-3).backward()
    cross_entropy(b, targets, z_loss=1e-3).backward()
    torch.testing.assert_close(a.grad, b.grad)
    torch.testing.assert_close(fn(a, targets), F.cross_entropy(a, targets))


# ---------------------------------------------------------------- SGD toy
def _toy(lr):
    torch.manual_seed(0)
    w = torch.nn.Parameter(5 * torch.randn(10, 10))
    opt, losses = SGD([w], lr=lr), []
    for _ in range(10):
        opt.zero_grad()
        loss = (w**2).mean()
        losses.append(loss.item())
        loss.backward()
        opt.step()
    return losses


def test_sgd_toy_learning_rates():
    slow, fast, diverge = _toy(1e1), _toy(1e2), _toy(1e3)
    assert all(b < a for a, b in zip(slow, slow[1:])) and slow[-1] > 1
    assert fast[1] == pytest.approx(fast[0]) and fast[4] < 1e-10  # sign flip first, then factor 0 at t = 3
    assert diverge[-1] > 1e15


def test_sgd_step_counts_per_parameter():
    p = torch.nn.Parameter(torch.ones(1))
    opt = SGD([p], lr=1.0)
    for t in range(3):
        p.grad = torch.ones(1)
        before = p.item()
        opt.step()
        assert before - p.item() == pytest.approx(1 / math.sqrt(t + 1))
    assert opt.state[p]['t'] == 3


# ---------------------------------------------------------------- AdamW
def _cs336_optimize(opt_class, **kw):
    # the CS336 test_adamw procedure
    torch.manual_seed(42)
    model = torch.nn.Linear(3, 2, bias=False)
    opt = opt_class(model.parameters(), lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8, **kw)
    for _ in range(1000):
        opt.zero_grad()
        x = torch.rand(model.in_features)
        y = torch.tensor([x[0] + x[1], -x[2]])
        ((y - model(x))**2).sum().backward()
        opt.step()
    return model.weight.detach()


@pytest.mark.parametrize('foreach', [False, True, None])
def test_adamw_matches_torch_cs336(foreach):
    ref = _cs336_optimize(torch.optim.AdamW)
    torch.testing.assert_close(_cs336_optimize(AdamW, foreach=foreach), ref, atol=1e-6, rtol=0)


def _mlp_run(opt_fn, steps, model=None, opt=None, start=0):
    torch.manual_seed(0)
    model = model or torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3))
    if opt is None:
        w = [p for n, p in model.named_parameters() if n.endswith('weight')]
        b = [p for n, p in model.named_parameters() if n.endswith('bias')]
        opt = opt_fn([{'params': w}, {'params': b, 'lr': 3e-3, 'weight_decay': 0.0, 'betas': (0.8, 0.99), 'eps': 1e-6}])
    g = torch.Generator().manual_seed(start)
    for _ in range(steps):
        x = torch.randn(16, 8, generator=g)
        opt.zero_grad()
        ((model(x) - x[:, :3].sin())**2).mean().backward()
        opt.step()
    return model, opt


def _max_diff(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def test_adamw_param_groups_match_torch():
    kw = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    ref, _ = _mlp_run(lambda g: torch.optim.AdamW(g, **kw), 300)
    single, _ = _mlp_run(lambda g: AdamW(g, **kw, foreach=False), 300)
    multi, _ = _mlp_run(lambda g: AdamW(g, **kw, foreach=True), 300)
    assert _max_diff(single, ref) <= 1e-6
    assert _max_diff(multi, ref) <= 1e-6
    assert _max_diff(multi, single) <= 1e-6


def test_adamw_mixed_dtypes_foreach():
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(4).double())]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    a, b = AdamW(ps, foreach=True), torch.optim.AdamW(qs)
    for _ in range(5):
        for p, q in zip(ps, qs): p.grad = q.grad = torch.ones_like(p)
        a.step(); b.step()
    for p, q in zip(ps, qs): torch.testing.assert_close(p, q)


def test_adamw_state_dict_round_trip_weights_only(tmp_path):
    kw = dict(lr=2e-3, weight_decay=0.05)
    straight, _ = _mlp_run(lambda g: AdamW(g, **kw), 200)
    straight, _ = _mlp_run(None, 200, model=straight, opt=_, start=1)
    m, o = _mlp_run(lambda g: AdamW(g, **kw), 200)
    path = tmp_path / 'ckpt.pt'
    torch.save({'model': m.state_dict(), 'optim': o.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    m2, o2 = _mlp_run(lambda g: AdamW(g, lr=99.0), 0)  # hyperparameters come back from the checkpoint
    m2.load_state_dict(ckpt['model'])
    o2.load_state_dict(ckpt['optim'])
    assert o2.param_groups[0]['lr'] == 2e-3 and o2.param_groups[1]['lr'] == 3e-3
    m2, o2 = _mlp_run(None, 200, model=m2, opt=o2, start=1)
    assert _max_diff(m2, straight) == 0.0
    assert all(s['step'] == 400 for s in o2.state.values())


def test_adamw_loads_torch_adamw_state():
    kw = dict(lr=1e-3, weight_decay=0.01)
    ref, ref_opt = _mlp_run(lambda g: torch.optim.AdamW(g, **kw), 100)
    ours = _mlp_run(lambda g: AdamW(g, **kw), 0)[0]
    ours.load_state_dict(ref.state_dict())
    opt = AdamW([{'params': [p for n, p in ours.named_parameters() if n.endswith('weight')]},
                 {'params': [p for n, p in ours.named_parameters() if n.endswith('bias')]}], **kw)
    buf = io.BytesIO(); torch.save(ref_opt.state_dict(), buf); buf.seek(0)  # a live state_dict shares its tensors
    opt.load_state_dict(torch.load(buf, weights_only=True))
    assert all(isinstance(s['step'], int) and s['step'] == 100 for s in opt.state.values())
    _mlp_run(None, 50, model=ref, opt=ref_opt, start=1)
    _mlp_run(None, 50, model=ours, opt=opt, start=1)
    assert _max_diff(ours, ref) <= 1e-6


def test_adamw_closure_and_skipped_params():
    torch.manual_seed(0)
    a, frozen = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(3))
    before = frozen.detach().clone()
    opt = AdamW([a, frozen])
    def closure():
        opt.zero_grad()
        loss = (a**2).sum()
        loss.backward()
        return loss
    loss = opt.step(closure)
    assert loss.item() > 0 and frozen not in opt.state
    assert torch.equal(frozen, before)


@pytest.mark.parametrize('kw, msg', [(dict(lr=-1.0), 'lr=-1.0'), (dict(eps=-1e-8), 'eps=-1e-08'),
                                     (dict(betas=(1.0, 0.999)), r'betas\[0\]=1.0'), (dict(betas=(0.9, -0.1)), r'betas\[1\]=-0.1'),
                                     (dict(weight_decay=-0.1), 'weight_decay=-0.1'), (dict(betas=(0.9,)), 'pair')])
def test_adamw_bad_hyperparameters(kw, msg):
    with pytest.raises(ValueError, match=msg): AdamW([torch.nn.Parameter(torch.zeros(2))], **kw)


def test_adamw_bad_group_hyperparameters_and_sparse_grads():
    p, q = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match='lr=-0.5'): AdamW([{'params': [p]}, {'params': [q], 'lr': -0.5}])
    opt = AdamW([p])
    with pytest.raises(ValueError, match=r'betas\[1\]=1.5'): opt.add_param_group({'params': [q], 'betas': (0.9, 1.5)})
    assert len(opt.param_groups) == 1  # the bad group was not added
    emb = torch.nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match='sparse'): AdamW(emb.parameters()).step()


# ---------------------------------------------------------------- cosine schedule
# The CS336 test_get_lr_cosine_schedule expectations: max 1, min 0.1, warmup 7, cycle 21.
CS336_LRS = [0, 0.14285714285714285, 0.2857142857142857, 0.42857142857142855, 0.5714285714285714, 0.7142857142857143,
             0.8571428571428571, 1.0, 0.9887175604818206, 0.9554359905560885, 0.9018241671106134, 0.8305704108364301,
             0.7452476826029011, 0.6501344202803414, 0.55, 0.44986557971965857, 0.3547523173970989, 0.26942958916356996,
             0.19817583288938662, 0.14456400944391146, 0.11128243951817937, 0.1, 0.1, 0.1, 0.1]


def test_lr_cosine_schedule_cs336_values():
    got = [lr_cosine_schedule(it, max_learning_rate=1, min_learning_rate=0.1, warmup_iters=7, cosine_cycle_iters=21)
           for it in range(25)]
    assert got == pytest.approx(CS336_LRS, abs=1e-12)


def test_lr_cosine_schedule_edges():
    assert lr_cosine_schedule(0, 1.0, 0.1, 0, 10) == 1.0  # no warmup: start at the maximum
    assert lr_cosine_schedule(5, 1.0, 0.1, 5, 5) == 1.0 and lr_cosine_schedule(6, 1.0, 0.1, 5, 5) == 0.1
    assert lr_cosine_schedule(10**9, 1.0, 0.1, 5, 50) == 0.1
    with pytest.raises(ValueError, match='cosine_cycle_iters=3'): lr_cosine_schedule(0, 1.0, 0.1, 5, 3)
    with pytest.raises(ValueError, match='it=-1'): lr_cosine_schedule(-1, 1.0, 0.1, 5, 10)


# ---------------------------------------------------------------- gradient clipping
def _params_with_grads(scale):
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(s)) for s in [(5, 5), (5,), (2, 3)]]
    ps.append(torch.nn.Parameter(torch.randn(4), requires_grad=False))  # no gradient: skipped
    (scale * sum((p**3).sum() for p in ps[:3])).backward()
    return ps


@pytest.mark.parametrize('scale', [1e-3, 1.0, 100.0])
def test_gradient_clipping_matches_torch(scale):
    a, b = _params_with_grads(scale), _params_with_grads(scale)
    norm = gradient_clipping(a, max_l2_norm=1.0)
    ref = torch.nn.utils.clip_grad_norm_(b[:3], 1.0)
    torch.testing.assert_close(norm, ref)
    for p, q in zip(a[:3], b[:3]): torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=0)
    assert a[3].grad is None


def test_gradient_clipping_only_above_max():
    a = _params_with_grads(1.0)
    before = [p.grad.clone() for p in a[:3]]
    norm = gradient_clipping(a, max_l2_norm=1e6)
    assert all(torch.equal(p.grad, g) for p, g in zip(a[:3], before))  # exactly untouched, not scaled by M/(M+eps)
    total = torch.linalg.vector_norm(torch.cat([g.flatten() for g in before]))
    torch.testing.assert_close(norm, total)
    gradient_clipping(a, max_l2_norm=0.5)
    after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in a[:3]]))
    assert after.item() == pytest.approx(0.5, rel=1e-5)


def test_gradient_clipping_odd_inputs():
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.full((4,), 3.0)
    torch.testing.assert_close(gradient_clipping(p, 1.0), torch.tensor(6.0))  # a single tensor works
    assert gradient_clipping(iter([torch.nn.Parameter(torch.ones(2))]), 1.0).item() == 0.0  # no grads at all
    with pytest.raises(ValueError, match='max_l2_norm=-1'): gradient_clipping([p], -1)
    q = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
    q.grad = torch.full((3,), 4.0, dtype=torch.bfloat16)
    assert gradient_clipping([q], 1.0).dtype == torch.float32 and q.grad.dtype == torch.bfloat16


# ---------------------------------------------------------------- plateau control
def _val_curve(n=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(float(n))
    return (2 + torch.exp(-t / 10) + 0.05 * torch.randn(n, generator=g)).tolist()


@pytest.mark.parametrize('cfg', [dict(), dict(factor=0.1, patience=0), dict(factor=0.5, patience=2, cooldown=3, min_delta=0.02),
                                 dict(factor=0.3, patience=1, min_lr=2e-4), dict(patience=5, min_delta=0.1, cooldown=1)])
def test_reduce_lr_on_plateau_matches_torch(cfg):
    full = dict(factor=0.5, patience=3, cooldown=0, min_delta=0.0, min_lr=0.0) | cfg
    a = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    b = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    ours = ReduceLROnPlateau(a, **full)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(b, mode='min', threshold_mode='abs', threshold=full['min_delta'],
                                                     factor=full['factor'], patience=full['patience'],
                                                     cooldown=full['cooldown'], min_lr=full['min_lr'])
    lrs_a, lrs_b = [], []
    for v in _val_curve(seed=len(cfg)):
        ours.step(torch.tensor(v)); ref.step(v)
        lrs_a.append(ours.get_last_lr()[0]); lrs_b.append(ref.get_last_lr()[0])
    assert lrs_a == lrs_b
    assert len(set(lrs_a)) > 1  # the curve does plateau: the check is not vacuous
    assert lrs_a[-1] == pytest.approx(max(1e-2 * ours.scale, full['min_lr']))


def test_reduce_lr_on_plateau_state_dict_and_errors():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = ReduceLROnPlateau(opt, patience=1)
    for v in [3.0, 2.0, 2.0, 2.0, 2.0]: s.step(v)
    buf = io.BytesIO(); torch.save(s.state_dict(), buf); buf.seek(0)
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)  # as restored from the optimizer's checkpoint
    s2 = ReduceLROnPlateau(opt2, patience=1)
    s2.load_state_dict(torch.load(buf, weights_only=True))
    assert s2.state_dict() == s.state_dict() and s2.num_reductions == 1
    for v in [2.0, 2.0]: s.step(v); s2.step(v)
    assert s2.state_dict() == s.state_dict() and s2.num_reductions == 2 and opt.param_groups[0]['lr'] == opt2.param_groups[0]['lr'] == 0.25
    with pytest.raises(KeyError, match='unknown'): s2.load_state_dict(s.state_dict() | {'junk': 1})
    with pytest.raises(KeyError, match='lacks'): s2.load_state_dict({'best': 1.0})
    for kw, msg in [(dict(factor=1.0), 'factor=1.0'), (dict(patience=-1), 'patience=-1'), (dict(min_lr=-1.0), 'min_lr=-1.0')]:
        with pytest.raises(ValueError, match=msg): ReduceLROnPlateau(opt, **kw)


def test_early_stopping():
    es = EarlyStopping(patience=3, min_delta=0.1)
    decisions = [es.step(v) for v in [5.0, 4.0, 3.95, 3.92, 3.91]]
    assert decisions == [False, False, False, False, True]  # 3.95, 3.92, 3.91 never beat 4.0 - 0.1
    assert es.best == 4.0 and not es.improved
    es = EarlyStopping(patience=2)
    assert [es.step(v) for v in [3.0, 2.0, 2.5, 1.0, 1.5, 1.6]] == [False, False, False, False, False, True]
    assert EarlyStopping(patience=10).step(float('nan'))  # a non-finite loss stops at once
    es = EarlyStopping(patience=2); es.step(1.0); es.step(2.0)
    buf = io.BytesIO(); torch.save(es.state_dict(), buf); buf.seek(0)
    es2 = EarlyStopping(patience=2); es2.load_state_dict(torch.load(buf, weights_only=True))
    assert es2.step(3.0) and es2.num_bad_epochs == 2
    with pytest.raises(ValueError, match='patience=0'): EarlyStopping(patience=0)
    with pytest.raises(ValueError, match='min_delta=-1'): EarlyStopping(min_delta=-1)

def test_gradient_clipping_of_float64_gradients_matches_torch():
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(5, 3, dtype=torch.float64)) for _ in range(3)]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    for a, b in zip(ours, ref): a.grad = torch.randn_like(a) * 10; b.grad = a.grad.clone()
    gradient_clipping(ours, 1.0)
    torch.nn.utils.clip_grad_norm_(ref, 1.0)   # coef = max_norm / (total + 1e-6), as ours
    for a, b in zip(ours, ref): torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=0)
    assert ours[0].grad.dtype == torch.float64
