"The training command line end to end: config errors, a tiny run, exact resume after kill -9, NaN stop, 2-process DDP."
import json, math, os, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from llmcourse.checkpoint import load_model_from_run, read_checkpoint
from llmcourse.train import TrainConfig, load_metrics, parse_args, read_metrics

ROOT = Path(__file__).resolve().parents[1]
# A model small enough that a step takes milliseconds; the tokenizer (vocab 300) is trained once per session.
TINY = ['--vocab_size', '300', '--context_length', '32', '--d_model', '32', '--num_layers', '1', '--num_heads', '2',
        '--d_ff', '64', '--batch_size', '8', '--warmup_steps', '5', '--eval_batches', '2', '--sample_tokens', '0',
        '--log_every', '5', '--device', 'cpu', '--threads', '1']


@pytest.fixture(scope='session')
def cache(tmp_path_factory): return tmp_path_factory.mktemp('cache')


def run(args, out_dir, cache, torchrun=None, check=True, timeout=120):
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'WANDB_MODE': 'disabled', 'OMP_NUM_THREADS': '1'}
    launcher = [sys.executable, '-m', 'llmcourse.train'] if torchrun is None else \
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(torchrun), '-m', 'llmcourse.train']
    p = subprocess.run(launcher + TINY + ['--out_dir', str(out_dir), '--cache_dir', str(cache)] + args, env=env,
                       capture_output=True, text=True, timeout=timeout)
    if check: assert p.returncode == 0, p.stderr[-3000:]
    return p


def losses(run_dir): return [(r['step'], r['train_loss'], r['val_loss'], r['lr']) for r in read_metrics(run_dir)]


def test_cli_errors_name_the_key(tmp_path):
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    p = subprocess.run([sys.executable, '-m', 'llmcourse.train', '--learning_rate', '1e-3'], env=env, capture_output=True, text=True)
    assert p.returncode == 2 and "unknown config key 'learning_rate'" in p.stderr and 'Traceback' not in p.stderr
    p = subprocess.run([sys.executable, '-m', 'llmcourse.train', '--max_steps', 'many'], env=env, capture_output=True, text=True)
    assert p.returncode == 2 and "bad value 'many' for max_steps: expected an integer" in p.stderr
    cfg = tmp_path / 'bad.json'
    cfg.write_text(json.dumps({'_comment': 'x', 'd_model': 64, 'num_head': 4}))
    p = subprocess.run([sys.executable, '-m', 'llmcourse.train', str(cfg)], env=env, capture_output=True, text=True)
    assert p.returncode == 2 and "bad.json: unknown config key 'num_head' (did you mean 'num_heads'?)" in p.stderr
    # in-process: types come from the dataclass fields
    with pytest.raises(ValueError, match="bad value 'yes please' for compile"): parse_args(['--compile', 'yes please'])
    with pytest.raises(ValueError, match="bad value 1.5 for max_steps"):
        cfg.write_text(json.dumps({'max_steps': 1.5})); parse_args([str(cfg)])
    with pytest.raises(ValueError, match='lr: must be a positive number'): parse_args(['--lr', '-1'])
    with pytest.raises(ValueError, match='expected one of rms, none'): parse_args(['--norm', 'layer'])
    c = parse_args([str(ROOT / 'configs' / 'tinystories_cs336.json'), '--max_steps', '300'])
    assert (c.vocab_size, c.context_length, c.d_model, c.num_layers, c.num_heads, c.d_ff, c.rope_theta, c.batch_size) == \
        (10000, 256, 512, 4, 16, 1344, 10000.0, 128)
    assert c.run_name == 'tinystories_cs336' and c.max_steps == 300


def test_committed_configs_parse():
    for f in sorted((ROOT / 'configs').glob('*.json')):
        d = json.loads(f.read_text())
        assert isinstance(d.get('_comment'), str) and len(d['_comment']) > 40, f"{f.name} must open with a _comment"
        assert list(d)[0] == '_comment'
        parse_args([str(f)])


def test_end_to_end_run(tmp_path, cache):
    p = run(['--max_steps', '20', '--eval_every', '10', '--checkpoint_every', '10', '--keep_every', '10',
             '--sample_tokens', '8'], tmp_path, cache)
    d = tmp_path / 'tinystories_sample'
    assert sorted(f.name for f in d.iterdir()) == ['ckpt_000010.pt', 'ckpt_000020.pt', 'ckpt_last.pt', 'config.json',
                                                   'metrics.jsonl', 'tokenizer']
    saved = json.loads((d / 'config.json').read_text())
    assert saved['d_model'] == 32 and saved['max_steps'] == 20
    rows = read_metrics(d)
    assert [r['step'] for r in rows] == [10, 20] and [r['tokens'] for r in rows] == [2560, 5120]
    assert set(rows[0]) >= {'step', 'tokens', 'train_loss', 'val_loss', 'lr', 'tokens_per_sec', 'mfu'}
    assert rows[0]['train_loss'] < math.log(300) + 0.5 and rows[1]['train_loss'] < rows[0]['train_loss']
    assert read_checkpoint(d / 'ckpt_last.pt')['iteration'] == 20
    assert 'loss curve' in p.stdout and 'a story' in p.stdout
    model, tok, config = load_model_from_run(d)
    assert config['vocab_size'] == 300 and tok.vocab_size <= 300
    assert model(torch.tensor([tok.encode('Once upon a time')])).shape[-1] == 300
    assert list(load_metrics(d).columns)[:3] == ['step', 'tokens', 'train_loss']


def test_resume_after_kill_9_equals_uninterrupted(tmp_path, cache):
    args = ['--max_steps', '120', '--eval_every', '10', '--checkpoint_every', '20', '--sample_tokens', '4']
    run(args + ['--run_name', 'straight'], tmp_path, cache)
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'WANDB_MODE': 'disabled', 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'llmcourse.train'] + TINY + ['--out_dir', str(tmp_path), '--cache_dir', str(cache),
                                                             '--run_name', 'killed'] + args
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / 'killed' / 'ckpt_last.pt'
    t0 = time.time()
    while not ckpt.exists() and proc.poll() is None and time.time() - t0 < 120: time.sleep(0.005)
    proc.send_signal(signal.SIGKILL); proc.wait()
    killed_at = read_checkpoint(ckpt)['iteration']
    assert killed_at < 120, "the run finished before it could be killed"
    p = run(args + ['--run_name', 'killed', '--resume'], tmp_path, cache)
    assert f'at step {killed_at}' in p.stderr + p.stdout
    assert losses(tmp_path / 'killed') == losses(tmp_path / 'straight')
    assert len(losses(tmp_path / 'killed')) == 12


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, cache):
    p = run(['--max_steps', '50', '--lr', '1e30', '--min_lr', '0', '--grad_clip', '0', '--warmup_steps', '2',
             '--checkpoint_every', '1', '--log_every', '1', '--eval_every', '50'], tmp_path, cache, check=False)
    assert p.returncode == 1, p.stderr[-2000:]
    assert 'Traceback' not in p.stderr and 'the last good checkpoint' in p.stderr
    assert 'loss is nan' in p.stderr or 'loss is inf' in p.stderr or 'hold NaN/inf' in p.stderr
    state = read_checkpoint(tmp_path / 'tinystories_sample' / 'ckpt_last.pt')
    assert 1 <= state['iteration'] < 50
    assert all(t.isfinite().all() for t in state['model'].values())


def test_two_gloo_processes_equal_one_process(tmp_path, cache):
    args = ['--max_steps', '12', '--eval_every', '6', '--checkpoint_every', '12', '--batch_size', '8', '--sample_tokens', '0']
    run(args + ['--run_name', 'single'], tmp_path, cache)
    run(args + ['--run_name', 'ddp'], tmp_path, cache, torchrun=2)
    one, two = losses(tmp_path / 'single'), losses(tmp_path / 'ddp')
    assert [r[0] for r in one] == [r[0] for r in two] == [6, 12]
    for a, b in zip(one, two):
        for x, y in zip(a[1:], b[1:]): assert x == pytest.approx(y, rel=1e-4, abs=1e-5)
    w1 = read_checkpoint(tmp_path / 'single' / 'ckpt_last.pt')['model']
    w2 = read_checkpoint(tmp_path / 'ddp' / 'ckpt_last.pt')['model']
    for k in w1: torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-5)


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, cache):
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'WANDB_MODE': 'disabled', 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'llmcourse.train'] + TINY + ['--out_dir', str(tmp_path), '--cache_dir', str(cache),
                                                             '--max_steps', '100000', '--checkpoint_every', '50', '--eval_every', '50']
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / 'tinystories_sample' / 'ckpt_last.pt'
    t0 = time.time()
    while not ckpt.exists() and proc.poll() is None and time.time() - t0 < 120: time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert 'Traceback' not in err and 'continue with --resume true' in out + err
    step = read_checkpoint(ckpt)['iteration']
    assert 50 <= step < 100000


def test_plateau_schedule_and_early_stopping(tmp_path, cache):
    # a learning rate too small to improve the val loss by min_delta: the plateau scheduler cuts it, then early stopping ends the run
    p = run(['--max_steps', '200', '--eval_every', '5', '--schedule', 'plateau', '--lr', '1e-6', '--min_lr', '1e-8',
             '--warmup_steps', '0', '--plateau_patience', '0', '--early_stop_patience', '3', '--min_delta', '0.5'], tmp_path, cache)
    rows = read_metrics(tmp_path / 'tinystories_sample')
    # the first evaluation is an improvement (on infinity); the next three are not
    assert 'early stopping at step 20' in p.stdout + p.stderr
    assert [r['step'] for r in rows] == [5, 10, 15, 20]
    lrs = [r['lr'] for r in rows]  # a row's lr is the one its steps used; a cut follows every evaluation without improvement
    assert lrs[0] == lrs[1] == pytest.approx(1e-6) and lrs[2] == pytest.approx(5e-7) and lrs[3] == pytest.approx(2.5e-7)
    assert read_checkpoint(tmp_path / 'tinystories_sample' / 'ckpt_last.pt')['iteration'] == 20
