"""llmcourse.scaling: the fits recover the exponents of a known law, the bootstrap intervals cover them, muP's groups,
multipliers and initialisation are as specified, and the standard parametrisation (the default) trains exactly as before."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from llmcourse.layers import ModelConfig
from llmcourse.optim import AdamW, cross_entropy, gradient_clipping
from llmcourse.scaling import (bootstrap_power_laws, chinchilla_loss, chinchilla_optimum, fit_chinchilla, fit_parabola,
                               fit_power_law, isoflop_minima, isoflop_variants, model_shape, run_flops)
from llmcourse.train import mup_param_groups
from llmcourse.train import TrainConfig, build_state, config_from_dict, param_groups, train_step

TRUE = dict(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)  # Hoffmann et al. 2022, approach 3


def synthetic_runs(params, budgets, per=7, span=8.0, noise=0.0, seed=0):
    rng, rows = np.random.default_rng(seed), []
    for C, n0 in zip(budgets, chinchilla_optimum(params, budgets)['N_opt']):
        for N in n0 * np.geomspace(1 / span, span, per):
            D = C / (6 * N)
            rows.append(dict(C=C, N=N, D=D, loss=float(chinchilla_loss(params, N, D)) * math.exp(noise * rng.standard_normal())))
    return pd.DataFrame(rows)


BUDGETS = np.geomspace(1e18, 1e21, 5)


def test_parabola_and_power_law_exact():
    p = fit_parabola(np.log([1, 2, 4, 8, 16]), (np.log([1, 2, 4, 8, 16]) - np.log(4)) ** 2 + 3)
    assert p['x_min'] == pytest.approx(np.log(4)) and p['y_min'] == pytest.approx(3)
    with pytest.raises(ValueError, match='no minimum'): fit_parabola([0, 1, 2], [0, 1, 0])
    with pytest.raises(ValueError, match='3 distinct'): fit_parabola([0, 0, 1], [0, 1, 0])
    k, a = fit_power_law([1e3, 1e4, 1e5], 2 * np.array([1e3, 1e4, 1e5]) ** 0.7)
    assert (k, a) == (pytest.approx(2), pytest.approx(0.7))


@pytest.mark.parametrize('params', [TRUE, dict(E=2.0, A=50.0, alpha=0.5, B=300.0, beta=0.3)])
def test_isoflop_minima_recover_exponents(params):
    "Noise-free IsoFLOP profiles of a known law: the parabola minima give N_opt ∝ C^(β/(α+β)) and D_opt ∝ C^(α/(α+β))."
    m = isoflop_minima(synthetic_runs(params, BUDGETS))
    truth = chinchilla_optimum(params, 1.0)
    assert fit_power_law(m.C, m.N_opt)[1] == pytest.approx(truth['a'], abs=0.01)
    assert fit_power_law(m.C, m.D_opt)[1] == pytest.approx(truth['b'], abs=0.01)
    assert np.allclose(m.N_opt, chinchilla_optimum(params, m.C)['N_opt'], rtol=0.2)  # a parabola: near, not exact


def test_bootstrap_intervals_cover_truth():
    "With 1% noise, the 90% intervals cover the true exponents for most noise draws (and always for this seed)."
    truth, covered = chinchilla_optimum(TRUE, 1.0), 0
    for seed in range(5):
        boot = bootstrap_power_laws(synthetic_runs(TRUE, BUDGETS, noise=0.01, seed=seed), n_boot=200, seed=seed)
        covered += boot['a']['lo'] < truth['a'] < boot['a']['hi']
        assert boot['a']['lo'] < boot['a']['estimate'] < boot['a']['hi']
        assert boot['a']['estimate'] + boot['b']['estimate'] == pytest.approx(1, abs=0.02)  # C = 6ND exactly
    assert covered >= 4


def test_chinchilla_fit_recovers_law():
    exact = fit_chinchilla(*synthetic_runs(TRUE, BUDGETS)[['N', 'D', 'loss']].T.values)
    for k, v in TRUE.items(): assert exact[k] == pytest.approx(v, rel=1e-3), k
    noisy = fit_chinchilla(*synthetic_runs(TRUE, BUDGETS, noise=0.01, seed=1)[['N', 'D', 'loss']].T.values)
    assert noisy['alpha'] == pytest.approx(0.34, abs=0.03) and noisy['beta'] == pytest.approx(0.28, abs=0.03)
    assert noisy['E'] == pytest.approx(1.69, abs=0.05)


def test_run_flops_and_variants():
    s = model_shape(64, 2)
    r = run_flops(s, 1000)
    assert r['C'] > r['C_6ND'] and 0 < r['attention_share'] < 0.5
    v = isoflop_variants([1e11, 4e11], [[(32, 1), (64, 2)], [(32, 1)]], tokens_per_step=1024)
    assert [x['name'] for x in v] == ['C=1e+11_d=32_L=1', 'C=1e+11_d=64_L=2', 'C=4e+11_d=32_L=1']
    assert v[2]['max_steps'] == pytest.approx(4 * v[0]['max_steps'], abs=2)  # the schedule follows the budget
    with pytest.raises(ValueError, match='steps'): isoflop_variants([1e6], [[(64, 2)]], tokens_per_step=1024)


def test_mup_model_and_groups():
    torch.manual_seed(0); mup = ModelConfig(**model_shape(128, 2), mup_base_width=32).build()
    torch.manual_seed(0); sp = ModelConfig(**model_shape(128, 2)).build()
    assert mup.output_mult == 0.25 and sp.output_mult == 1.0
    ratio = math.sqrt((128 + 512) / (32 + 512) * 0.25)  # the base model's output std × √(base/width)
    assert torch.allclose(mup.lm_head.weight, sp.lm_head.weight * ratio)
    for name, p in sp.named_parameters():
        if name != 'lm_head.weight': assert torch.equal(p, dict(mup.named_parameters())[name]), name
    x = torch.randint(0, 512, (2, 16))
    sp.load_state_dict(mup.state_dict())
    assert torch.allclose(mup(x), sp(x) * 0.25, atol=1e-6)
    groups = mup_param_groups(mup, 0.1, 32)
    names = {id(p): n for n, p in mup.named_parameters()}
    assert sum(len(g['params']) for g in groups) == len(names)
    assert [g['lr_mult'] for g in groups] == [1.0, 0.25, 1.0] and [g['weight_decay'] for g in groups] == [0.1, 0.1, 0.0]
    assert sorted(names[id(p)] for p in groups[0]['params']) == ['lm_head.weight', 'token_embeddings.weight']
    hidden = sorted(names[id(p)].split('.', 2)[2] for p in groups[1]['params'] if names[id(p)].startswith('layers.0.'))
    assert hidden == ['attn.k_proj.weight', 'attn.output_proj.weight', 'attn.q_proj.weight', 'attn.v_proj.weight',
                      'ffn.w1.weight', 'ffn.w2.weight', 'ffn.w3.weight']
    assert all(p.dim() == 1 for p in groups[2]['params'])


def test_mup_config_checks_and_cli():
    with pytest.raises(ValueError, match='untied'): ModelConfig(mup_base_width=32, tie_embeddings=True)
    with pytest.raises(ValueError, match='mup_base_width'): ModelConfig(mup_base_width=0)
    assert config_from_dict({'mup_base_width': '32'}).mup_base_width == 32
    assert config_from_dict({'mup_base_width': None}).mup_base_width is None
    assert config_from_dict({'mup_base_width': 'none'}).mup_base_width is None
    assert TrainConfig().mup_base_width is None and 'mup_base_width' not in ModelConfig.switches()


def _train(steps=8, **kw):
    cfg = TrainConfig(**model_shape(32, 1), batch_size=2, **kw)
    st = build_state(cfg, np.random.default_rng(0).integers(0, 512, 4000).astype(np.uint16), torch.device('cpu'))
    for i in range(steps): train_step(st.model, st.optimizer, lambda: next(st.sampler), lr=1e-2 * (i + 1) / steps, grad_clip=1.0)
    return st, torch.cat([p.detach().flatten() for p in st.model.parameters()])


def test_sp_default_trains_as_before(one_thread):
    "The default builds the optimizer from param_groups with no lr_mult, and train_step equals the loop it always was."
    st, params = _train()
    assert [len(g['params']) for g in st.optimizer.param_groups] == [len(g['params']) for g in param_groups(st.model, 0.1)]
    assert all('lr_mult' not in g for g in st.optimizer.param_groups)
    # the loop before muP, written out: same seed, same groups, every group at the scheduled rate
    cfg = TrainConfig(**model_shape(32, 1), batch_size=2)
    ref = build_state(cfg, np.random.default_rng(0).integers(0, 512, 4000).astype(np.uint16), torch.device('cpu'))
    torch.manual_seed(cfg.seed); model = cfg.model.build('cpu')
    opt = AdamW(param_groups(model, 0.1), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=0.1)
    for i in range(8):
        for g in opt.param_groups: g['lr'] = 1e-2 * (i + 1) / 8
        x, y = next(ref.sampler)
        cross_entropy(model(x), y).backward()
        gradient_clipping(model.parameters(), 1.0); opt.step(); opt.zero_grad(set_to_none=True)
    assert torch.equal(params, torch.cat([p.detach().flatten() for p in model.parameters()]))
    _, base = _train(mup_base_width=32)  # muP at its base width is SP, bit for bit
    assert torch.equal(params, base)
    _, other = _train(mup_base_width=16)
    assert not torch.equal(params, other)
