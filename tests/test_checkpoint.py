"Checkpoints: CS336 round trips (path and BytesIO), compiled-model keys, RNG states, corrupt files and atomic writes."
import io, random
import numpy as np
import pytest
import torch
from torch import nn

from llmcourse.checkpoint import (atomic_save, load_checkpoint, read_checkpoint, rng_state, save_checkpoint,
                                  set_rng_state)


def make(seed=0, hidden=16):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 4))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def train_steps(model, opt, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(n):
        loss = model(torch.randn(5, 8, generator=g)).square().mean()
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize('kind', ['path', 'str', 'bytesio'])
def test_round_trip(tmp_path, kind):
    model, opt = make()
    train_steps(model, opt, 3)
    out = {'path': tmp_path / 'ck.pt', 'str': str(tmp_path / 'ck.pt'), 'bytesio': io.BytesIO()}[kind]
    save_checkpoint(model, opt, 3, out)
    if kind == 'bytesio': out.seek(0)
    model2, opt2 = make(seed=5)  # different initial weights
    assert load_checkpoint(out, model2, opt2) == 3
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()): assert torch.equal(a, b)
    # the restored optimizer (moments, step counts) continues identically
    assert train_steps(model2, opt2, 2, seed=9) == train_steps(model, opt, 2, seed=9)


def test_compiled_models_both_ways(tmp_path):
    model, opt = make()
    save_checkpoint(torch.compile(model), opt, 4, tmp_path / 'a.pt')
    keys = list(torch.load(tmp_path / 'a.pt', weights_only=True)['model'])
    assert keys and not any(k.startswith('_orig_mod.') for k in keys)
    # a file written from the compiled wrapper by other code loads into a plain and into a compiled model
    torch.save({'model': torch.compile(model).state_dict(), 'optimizer': opt.state_dict(), 'iteration': 4}, tmp_path / 'b.pt')
    for wrap in (lambda m: m, torch.compile):
        m2, o2 = make(seed=3)
        assert load_checkpoint(tmp_path / 'b.pt', wrap(m2), o2) == 4
        assert torch.equal(m2[0].weight, model[0].weight)


def test_extra_entries_and_rng_round_trip(tmp_path):
    model, opt = make()
    random.seed(1); np.random.seed(1); torch.manual_seed(1)
    save_checkpoint(model, opt, 2, tmp_path / 'r.pt', rng=rng_state(), config={'lr': 0.1, 'name': 'x'},
                    sampler={'bit_generator': 'PCG64', 'state': {'state': 2**100 + 7, 'inc': 3}})
    want = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    state = read_checkpoint(tmp_path / 'r.pt')  # weights_only=True must accept all of it
    assert state['config'] == {'lr': 0.1, 'name': 'x'} and state['sampler']['state']['state'] == 2**100 + 7
    set_rng_state(state['rng'])
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == want


def test_corrupt_and_incomplete_files(tmp_path):
    model, opt = make()
    save_checkpoint(model, opt, 1, tmp_path / 'good.pt')
    (tmp_path / 'trunc.pt').write_bytes((tmp_path / 'good.pt').read_bytes()[:300])
    with pytest.raises(ValueError, match=r'trunc\.pt is not a readable checkpoint'): load_checkpoint(tmp_path / 'trunc.pt', *make())
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint at all')
    with pytest.raises(ValueError, match=r'junk\.pt is not a readable checkpoint'): load_checkpoint(tmp_path / 'junk.pt', *make())
    with pytest.raises(FileNotFoundError, match='missing.pt'): load_checkpoint(tmp_path / 'missing.pt', *make())
    torch.save({'model': model.state_dict()}, tmp_path / 'noiter.pt')
    with pytest.raises(ValueError, match=r"noiter\.pt is missing the checkpoint entries \['iteration'\]"):
        load_checkpoint(tmp_path / 'noiter.pt', *make())
    with pytest.raises(ValueError, match=r'good\.pt does not fit this model: 0\.weight: shape \(16, 8\) in the file, \(32, 8\) in the model'):
        load_checkpoint(tmp_path / 'good.pt', *make(hidden=32))
    with pytest.raises(ValueError, match='missing 3.weight'):
        load_checkpoint(tmp_path / 'good.pt', nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.Linear(4, 4)))


def test_pickled_code_is_refused(tmp_path):
    # weights_only=True: a checkpoint holding an arbitrary Python object is rejected, not executed
    torch.save({'model': {}, 'iteration': 0, 'evil': print}, tmp_path / 'evil.pt')
    with pytest.raises(ValueError, match='evil.pt is not a readable checkpoint'): read_checkpoint(tmp_path / 'evil.pt')


class Boom:
    def __reduce__(self): raise RuntimeError('crash while writing')


def test_atomic_write_leaves_old_file_and_no_partial_file(tmp_path):
    model, opt = make()
    save_checkpoint(model, opt, 1, tmp_path / 'ck.pt')
    before = (tmp_path / 'ck.pt').read_bytes()
    with pytest.raises(RuntimeError, match='crash while writing'):
        save_checkpoint(model, opt, 2, tmp_path / 'ck.pt', boom=Boom())
    assert (tmp_path / 'ck.pt').read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ck.pt']
    with pytest.raises(RuntimeError):
        atomic_save({'x': Boom()}, tmp_path / 'new.pt')
    assert not (tmp_path / 'new.pt').exists() and sorted(p.name for p in tmp_path.iterdir()) == ['ck.pt']
