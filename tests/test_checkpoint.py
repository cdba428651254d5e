"Checkpoints: CS336 round trips (path and BytesIO), compiled-model keys, RNG states, corrupt files, checksums and atomic writes."
import hashlib, io, json, random, shutil
import numpy as np
import pytest
import torch
from torch import nn

import llmcourse.files
from llmcourse.checkpoint import (atomic_save, checksum_path, copy_checkpoint, load_checkpoint, load_model_from_run,
                                  read_checkpoint, rng_state, save_checkpoint, save_with_checksum, set_rng_state,
                                  verify_checksum)


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


def test_pickled_code_is_refused_naming_the_global(tmp_path):
    # weights_only=True: a checkpoint holding an arbitrary Python object is rejected, not executed
    torch.save({'model': {}, 'iteration': 0, 'evil': print}, tmp_path / 'evil.pt')
    with pytest.raises(ValueError) as e: read_checkpoint(tmp_path / 'evil.pt')
    msg = str(e.value)
    assert 'evil.pt was refused: it holds the Python object print' in msg and 'can run code' in msg
    assert 'weights_only=False' not in msg and 'trust' not in msg  # torch's advice to load unsafely is not passed on


def test_empty_and_truncated_files_give_clear_errors(tmp_path):
    model, opt = make()
    save_checkpoint(model, opt, 1, tmp_path / 'good.pt')
    good = (tmp_path / 'good.pt').read_bytes()
    (tmp_path / 'empty.pt').write_bytes(b'')  # torch.load: EOFError, or OSError [Errno 22] through some paths
    with pytest.raises(ValueError, match=r'empty\.pt is not a readable checkpoint: the file is empty'): read_checkpoint(tmp_path / 'empty.pt')
    for n in (1, 10, 100, 1000, len(good) // 2, len(good) - 1):  # cut at many places: IndexError, RuntimeError, ...
        (tmp_path / 'cut.pt').write_bytes(good[:n])
        with pytest.raises(ValueError, match=r'cut\.pt is not a readable checkpoint'): read_checkpoint(tmp_path / 'cut.pt')


def test_checksum_finds_a_flipped_byte_and_survives_a_kill_between_writes(tmp_path):
    model, opt = make()
    save_checkpoint(model, opt, 1, tmp_path / 'ck.pt')
    listed = json.loads(checksum_path(tmp_path / 'ck.pt').read_text())
    assert listed['sha256'] == hashlib.sha256((tmp_path / 'ck.pt').read_bytes()).hexdigest()
    old = (tmp_path / 'ck.pt').read_bytes()
    # killed after the sidecar was replaced but before the checkpoint was: the old checkpoint still verifies
    save_with_checksum({'model': {}, 'iteration': 2}, tmp_path / 'ck.pt')
    (tmp_path / 'ck.pt').write_bytes(old)
    assert verify_checksum(tmp_path / 'ck.pt') is True and read_checkpoint(tmp_path / 'ck.pt')['iteration'] == 1
    flipped = bytearray(old); flipped[len(old) // 3] ^= 0x01
    (tmp_path / 'ck.pt').write_bytes(bytes(flipped))
    assert torch.load(tmp_path / 'ck.pt', weights_only=True)['iteration'] == 1  # torch alone does not notice
    with pytest.raises(ValueError, match=r'ck\.pt fails its checksum'): read_checkpoint(tmp_path / 'ck.pt')
    # a file without a sidecar (written by other code) still loads
    torch.save({'model': model.state_dict(), 'iteration': 5}, tmp_path / 'other.pt')
    assert verify_checksum(tmp_path / 'other.pt') is None and read_checkpoint(tmp_path / 'other.pt')['iteration'] == 5


def test_kept_copy_is_atomic(tmp_path, monkeypatch):
    model, opt = make(hidden=4096)
    save_checkpoint(model, opt, 1, tmp_path / 'ckpt_last.pt')
    def killed_midway(src, dst, length=0):
        dst.write(src.read(1000)); raise KeyboardInterrupt  # a kill inside the copy
    monkeypatch.setattr(llmcourse.files.shutil, 'copyfileobj', killed_midway)
    with pytest.raises(KeyboardInterrupt): copy_checkpoint(tmp_path / 'ckpt_last.pt', tmp_path / 'ckpt_000001.pt')
    assert not (tmp_path / 'ckpt_000001.pt').exists()  # no partial file under the final name
    assert not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]
    monkeypatch.undo()
    copy_checkpoint(tmp_path / 'ckpt_last.pt', tmp_path / 'ckpt_000001.pt')
    assert read_checkpoint(tmp_path / 'ckpt_000001.pt')['iteration'] == 1 and verify_checksum(tmp_path / 'ckpt_000001.pt')


def test_run_folder_errors_name_the_file(tmp_path):
    from llmcourse.layers import ModelConfig
    from llmcourse.tokenizer import Tokenizer
    cfg = ModelConfig(vocab_size=257, context_length=8, d_model=16, num_layers=1, num_heads=2, d_ff=32)
    run = tmp_path / 'run'
    Tokenizer({i: bytes([i]) for i in range(256)}, [], ['<|endoftext|>']).save(run / 'tokenizer')
    (run / 'config.json').write_text(json.dumps({**cfg.__dict__}))
    save_checkpoint(cfg.build(), None, 3, run / 'ckpt_last.pt')
    assert load_model_from_run(run)[2]['d_model'] == 16
    (run / 'config.json').write_text('{"d_model": 16,')
    with pytest.raises(ValueError, match=r'config\.json is not valid JSON'): load_model_from_run(run)
    (run / 'config.json').write_bytes(b'{"d_model": "\xe9"}')
    with pytest.raises(ValueError, match=r'config\.json is not UTF-8 text'): load_model_from_run(run)
    (run / 'config.json').write_text('[1, 2]')
    with pytest.raises(ValueError, match=r'config\.json must hold a JSON object'): load_model_from_run(run)


class Boom:
    def __reduce__(self): raise RuntimeError('crash while writing')


def test_atomic_write_leaves_old_file_and_no_partial_file(tmp_path):
    model, opt = make()
    save_checkpoint(model, opt, 1, tmp_path / 'ck.pt')
    before = (tmp_path / 'ck.pt').read_bytes()
    with pytest.raises(RuntimeError, match='crash while writing'):
        save_checkpoint(model, opt, 2, tmp_path / 'ck.pt', boom=Boom())
    assert (tmp_path / 'ck.pt').read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ck.pt', 'ck.pt.sha256']
    assert verify_checksum(tmp_path / 'ck.pt') is True
    with pytest.raises(RuntimeError):
        atomic_save({'x': Boom()}, tmp_path / 'new.pt')
    assert not (tmp_path / 'new.pt').exists() and sorted(p.name for p in tmp_path.iterdir()) == ['ck.pt', 'ck.pt.sha256']
