"Tests for llmcourse.accounting: formulas against the real model, peak FLOPs lookup, MFU, bad configs."
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from llmcourse.accounting import (activation_bytes, flops_per_token, forward_flops, gpt2_config, max_batch_size, mfu,
                                  model_config, param_counts, peak_flops, six_n_flops_per_token, training_memory)
from llmcourse.layers import RotaryPositionalEmbedding, TransformerLM

SMALL = dict(vocab_size=200, context_length=32, d_model=48, num_layers=2, num_heads=4, d_ff=128)


def test_gpt2_xl_anchors():
    xl = gpt2_config('xl')
    assert param_counts(xl)['total'] == 2_127_057_600
    assert abs(forward_flops(xl)['total'] / 1e12 - 4.513) < 1e-3


@pytest.mark.parametrize('kw', [{}, dict(ffn='silu'), dict(position='nope', tie_embeddings=True)])
def test_forward_flops_match_flop_counter(kw):
    cfg = SMALL | kw | dict(attention='scratch')  # FlopCounterMode has no formula for the fused CPU kernel; meta and CUDA count it
    model = TransformerLM(**cfg)
    with FlopCounterMode(display=False) as counter, torch.no_grad(): model(torch.randint(0, 200, (3, 20)))
    assert forward_flops(cfg, seq_len=20, batch_size=3)['total'] == counter.get_total_flops()


def test_flops_per_token_and_six_n():
    cfg = model_config(SMALL)
    fwd = forward_flops(cfg)['total']
    assert flops_per_token(cfg, training=False) == fwd / 32 and flops_per_token(cfg) == 3 * fwd / 32
    assert flops_per_token(cfg) - six_n_flops_per_token(cfg) == pytest.approx(12 * 2 * 32 * 48)


@pytest.mark.parametrize('kw', [{}, dict(attention='scratch'), dict(norm='none', position='nope', ffn='silu'),
                                dict(norm_position='post')])
def test_activation_bytes_match_saved_tensors(kw, monkeypatch):
    # the formula counts what a GPU saves: RoPE's real form (on a CPU, in eager mode, the complex one saves less)
    monkeypatch.setattr(RotaryPositionalEmbedding, 'complex_on_cpu', False)
    cfg = SMALL | kw
    model = TransformerLM(**cfg)
    skip = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen = {}
    def pack(t):
        if t.untyped_storage().data_ptr() not in skip: seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    ids, targets = torch.randint(0, 200, (3, 24)), torch.randint(0, 200, (3, 24))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(model(ids).flatten(0, 1), targets.flatten())
    assert sum(seen.values()) == activation_bytes(cfg, 3, 24)['total']


def test_memory_and_max_batch():
    xl = gpt2_config('xl')
    m = training_memory(xl, 2)
    assert m['parameters'] == m['gradients'] == m['optimizer state'] / 2 == 4 * 2_127_057_600
    b = max_batch_size(xl, 80e9)
    assert training_memory(xl, b)['total'] <= 80e9 < training_memory(xl, b + 1)['total']
    assert max_batch_size(xl, 1e9) == 0


def test_peak_flops_and_mfu():
    assert peak_flops('NVIDIA H100 80GB HBM3') == 989.4e12
    assert peak_flops('NVIDIA H100 PCIe') == 756e12
    assert peak_flops('NVIDIA A100-SXM4-40GB', 'fp32') == 19.5e12
    assert peak_flops('NVIDIA L40S') == 362.05e12 and peak_flops('NVIDIA L4') == 121e12
    assert peak_flops('cpu') is None and peak_flops('Some Unknown GPU') is None
    with pytest.raises(ValueError, match='dtype must be one of'): peak_flops('NVIDIA H100 PCIe', 'int4')
    cfg = SimpleNamespace(**SMALL, lr=1e-3)                           # an object config with extra fields works
    assert mfu(1e6, cfg, 'NVIDIA H100 80GB HBM3') == pytest.approx(1e6 * flops_per_token(SMALL) / 989.4e12)
    assert mfu(1e6, cfg, 1e12) == pytest.approx(1e6 * flops_per_token(SMALL) / 1e12)
    assert mfu(1e6, cfg, 'cpu') is None


def test_bad_configs():
    with pytest.raises(ValueError, match='config is missing d_ff'): model_config({k: v for k, v in SMALL.items() if k != 'd_ff'})
    with pytest.raises(ValueError, match='config norm must be one of'): param_counts(SMALL | dict(norm='batch'))
    with pytest.raises(ValueError, match='num_heads=5 must divide'): forward_flops(SMALL | dict(num_heads=5))
    with pytest.raises(ValueError, match='d_model must be a positive int'): param_counts(SMALL | dict(d_model=-4))
    with pytest.raises(ValueError, match='size must be one of'): gpt2_config('huge')


def test_fields_come_from_model_config():
    from llmcourse import accounting
    from llmcourse.layers import ModelConfig
    assert accounting.SWITCHES == ModelConfig.switches()
    assert set(accounting.SIZE_FIELDS) <= set(ModelConfig.field_names())
    assert accounting.SIZE_FIELDS == ('vocab_size', 'context_length', 'd_model', 'num_layers', 'num_heads', 'd_ff')
