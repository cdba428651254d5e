"The sweep runner end to end on a tiny sweep (runs, skips, resumes, records divergence) and every bad input it refuses."
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest

from llmcourse.sweep import load_curves, load_sweep, parse_sweep, point_name, run_sweep, train_command

ROOT = Path(__file__).resolve().parents[1]
# A model whose step takes milliseconds; the tokenizer (vocab 300) is trained once per session in the cache folder.
TINY = {'vocab_size': 300, 'context_length': 32, 'd_model': 32, 'num_layers': 1, 'num_heads': 2, 'd_ff': 64, 'batch_size': 8,
        'warmup_steps': 2, 'eval_batches': 2, 'sample_tokens': 0, 'log_every': 5, 'device': 'cpu', 'max_steps': 10,
        'eval_every': 5, 'checkpoint_every': 5}


@pytest.fixture(scope='session')
def cache(tmp_path_factory): return tmp_path_factory.mktemp('cache')


def write_sweep(tmp_path, cache, **spec):
    path = tmp_path / 'tiny.json'
    spec = {'base': {**TINY, 'cache_dir': str(cache)}, 'out_dir': str(tmp_path / 'sweep'), 'threads': 1, **spec}
    path.write_text(json.dumps(spec))
    return path


def sweep_cli(path, *args, timeout=600):
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'WANDB_MODE': 'disabled', 'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, '-m', 'llmcourse.sweep', str(path), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_tiny_sweep_runs_skips_and_records_divergence(tmp_path, cache):
    # two points: a sane one and one whose learning rate blows the weights up (NaN loss): a result, not an error
    path = write_sweep(tmp_path, cache, variants=[{'name': 'ok'}, {'name': 'blowup', 'lr': 1e30, 'min_lr': 0.0, 'grad_clip': 0.0}],
                       parallel=2)
    p = sweep_cli(path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert '2 points' in p.stdout and 'diverged blowup' in p.stdout and 'finished ok' in p.stdout
    assert '[tiny] 2 done, 0 running, 0 left (1 diverged)' in p.stdout
    df = load_sweep(tmp_path / 'sweep')
    assert list(df.run) == ['ok', 'blowup'] and list(df.variant) == ['ok', 'blowup']
    ok, bad = df.iloc[0], df.iloc[1]
    assert ok.status == 'finished' and ok.step == 10 and ok.tokens == 10 * 8 * 32
    assert 0 < ok.best_val_loss <= ok.final_val_loss + 1e-9 and ok.final_val_ppl == pytest.approx(2.718281828 ** ok.final_val_loss)
    assert ok.wall_time_s > 0
    assert bad.status == 'diverged' and 1 <= bad.diverged_at_step <= 10
    assert set(load_curves(tmp_path / 'sweep').run) <= {'ok', 'blowup'}
    # a second run of the same sweep starts nothing: every point is done
    before = (tmp_path / 'sweep' / 'ok' / 'metrics.jsonl').stat().st_mtime_ns
    p = sweep_cli(path)
    assert p.returncode == 0 and '2 done, 0 to run' in p.stdout and 'start' not in p.stdout
    assert (tmp_path / 'sweep' / 'ok' / 'metrics.jsonl').stat().st_mtime_ns == before


def test_interrupted_sweep_resumes(tmp_path, cache):
    # Ctrl-C on the runner: it passes the signal on, the running point checkpoints; the next run resumes it to the end
    path = write_sweep(tmp_path, cache, grid={'seed': [0, 1]},
                       set={'max_steps': 300, 'checkpoint_every': 10, 'eval_every': 100, 'warmup_steps': 20})
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'WANDB_MODE': 'disabled', 'OMP_NUM_THREADS': '1'}
    proc = subprocess.Popen([sys.executable, '-m', 'llmcourse.sweep', str(path), '--parallel', '1'], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt, t0 = tmp_path / 'sweep' / 'seed=0' / 'ckpt_last.pt', time.time()
    while not ckpt.exists() and proc.poll() is None and time.time() - t0 < 120: time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert 'run the same command again to resume' in err
    assert load_sweep(tmp_path / 'sweep').set_index('run').status['seed=0'] in ('interrupted', 'incomplete')
    p = sweep_cli(path, '--parallel', '1')
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert 'resume seed=0' in p.stdout and 'start seed=1' in p.stdout
    assert 'resumed' in (tmp_path / 'sweep' / 'seed=0' / 'train.log').read_text()
    df = load_sweep(tmp_path / 'sweep')
    assert list(df.status) == ['finished', 'finished'] and list(df.step) == [300, 300] and list(df.seed) == [0, 1]
    steps = [json.loads(l)['step'] for l in (tmp_path / 'sweep' / 'seed=0' / 'metrics.jsonl').read_text().splitlines()]
    assert steps == [100, 200, 300]


def test_points_names_and_commands(tmp_path, cache):
    path = write_sweep(tmp_path, cache, grid={'lr': [1e-3, 3e-5], 'seed': [0, 1]}, set={'min_lr': 0.0},
                       variants=[{'name': 'base'}, {'name': 'nope', 'position': 'nope'}])
    sw = parse_sweep(path)
    assert [p.name for p in sw.points][:3] == ['base_lr=0.001_seed=0', 'base_lr=0.001_seed=1', 'base_lr=3e-05_seed=0']
    assert len(sw.points) == 8 and sw.axes == ['position', 'lr', 'seed']
    assert sw.points[4].settings == {'position': 'nope', 'lr': 1e-3, 'seed': 0}
    cmd = train_command(sw, sw.points[4])
    assert cmd[:4] == ['python', '-m', 'llmcourse.train', str(tmp_path / 'sweep' / 'base.json')]
    assert cmd[4:] == ['--position', 'nope', '--lr', '0.001', '--seed', '0', '--out_dir', str(tmp_path / 'sweep'),
                       '--run_name', 'nope_lr=0.001_seed=0']
    assert point_name({'tie_embeddings': True, 'batch_size': 16}) == 'tie_embeddings=true_batch_size=16'
    # a grid value can carry linked settings: min_lr follows lr, and the folder is named by the axis alone
    linked = parse_sweep(write_sweep(tmp_path, cache, grid={'lr': [{'lr': 1e-2, 'min_lr': 1e-3}, {'lr': 1e-4, 'min_lr': 1e-5}]}))
    assert [(p.name, p.settings) for p in linked.points] == [('lr=0.01', {'lr': 1e-2, 'min_lr': 1e-3}), ('lr=0.0001', {'lr': 1e-4, 'min_lr': 1e-5})]
    assert linked.axes == ['lr', 'min_lr']
    lines = []
    run_sweep(sw, dry_run=True, log=lines.append)
    assert len(lines) == 9 and 'to run' in lines[0] and not (tmp_path / 'sweep').exists()
    # one point by number or name: a SLURM array task (--point $SLURM_ARRAY_TASK_ID) or a wandb agent's run
    for which in ('5', 'nope_lr=0.001_seed=0'):
        lines = []; run_sweep(sw, dry_run=True, log=lines.append, point=which)
        assert len(lines) == 2 and lines[1].endswith('--run_name nope_lr=0.001_seed=0')
    with pytest.raises(ValueError, match="no point '9' in sweep tiny: give a number from 1 to 8"): run_sweep(sw, dry_run=True, point='9')


@pytest.mark.parametrize('spec, message', [
    ({'grid': {'learning_rate': [1e-3]}}, "unknown config key 'learning_rate' .did you mean 'lr'"),
    ({'variants': [{'name': 'x', 'norm_pos': 'post'}]}, "variant x.*unknown config key 'norm_pos'"),
    ({'grid': {'lr': []}}, 'grid axis lr is empty'),
    ({'grid': {'lr': 0.001}}, 'grid axis lr must be a list'),
    ({'variants': []}, 'variants must be a non-empty list'),
    ({'variants': [{'post': 1}]}, 'must be an object with a "name"'),
    ({'grid': {'lr': [0.003, 0.0030000001]}}, "same folder name 'lr=0.003'"),
    ({'variants': [{'name': 'a'}, {'name': 'a', 'seed': 1}]}, "same folder name 'a'"),
    ({'variants': [{'name': 'a/b'}]}, 'not a folder name'),
    ({'grid': {'lr': [1e-3]}, 'variants': [{'name': 'a', 'lr': 1e-2}]}, 'variant a sets lr, which the grid also varies'),
    ({'grid': {'out_dir': ['a', 'b']}}, "out_dir says where a run goes"),
    ({'grid': {'lr': [{'min_lr': 1e-4}]}}, 'linked settings .* must include lr'),
    ({'grid': {'lr': [{'lr': 1e-3, 'min_rl': 1e-4}]}}, "grid axis lr: unknown config key 'min_rl'"),
    ({'grid': {'lr': [{'lr': 1e-3, 'min_lr': 1e-4}]}, 'variants': [{'name': 'a', 'min_lr': 0.0}]}, 'variant a sets min_lr'),
    ({'grid': {'lr': [-1.0]}}, 'point lr=-1.*bad value -1.0 for lr'),
    ({'grid': {'norm': ['batch']}}, 'bad value .batch. for norm'),
    ({'grid': {'lr': [1e-3]}, 'parallell': 2}, 'unknown sweep key parallell'),
    ({'base': 'configs/nothing.json', 'grid': {'lr': [1e-3]}}, 'base config file configs/nothing.json not found'),
    ({'base': {'n_layer': 2}, 'grid': {'lr': [1e-3]}}, "base: unknown config key 'n_layer'"),
    ({}, 'nothing to sweep'),
])
def test_bad_sweeps_fail_before_anything_runs(tmp_path, cache, spec, message):
    path = write_sweep(tmp_path, cache, **spec)
    with pytest.raises((ValueError, FileNotFoundError), match=message): parse_sweep(path)
    assert not (tmp_path / 'sweep').exists()


def test_bad_sweep_on_the_command_line(tmp_path, cache):
    p = sweep_cli(write_sweep(tmp_path, cache, grid={'lr': []}))
    assert p.returncode == 2 and p.stderr.startswith('error: ') and 'grid axis lr is empty' in p.stderr and 'Traceback' not in p.stderr
    assert not (tmp_path / 'sweep').exists()
    p = sweep_cli(tmp_path / 'missing.json')
    assert p.returncode == 2 and 'no sweep file at' in p.stderr


def test_a_folder_trained_with_other_settings_is_refused(tmp_path, cache):
    path = write_sweep(tmp_path, cache, grid={'seed': [0]})
    run_dir = tmp_path / 'sweep' / 'seed=0'; run_dir.mkdir(parents=True)
    (run_dir / 'config.json').write_text(json.dumps({**TINY, 'seed': 0, 'lr': 0.5}))
    with pytest.raises(ValueError, match='holds a run with other settings .lr: 0.5'): run_sweep(path, log=lambda *a: None)
    assert sorted(f.name for f in run_dir.iterdir()) == ['config.json']


def test_a_point_running_in_another_process_is_left_to_it(tmp_path, cache):
    # two runners on one sweep share its points: a folder whose .running names a live process is skipped
    path = write_sweep(tmp_path, cache, grid={'seed': [0]})
    run_dir = tmp_path / 'sweep' / 'seed=0'; run_dir.mkdir(parents=True)
    (run_dir / '.running').write_text(f"{os.uname().nodename} {os.getpid()}\n")
    lines = []
    assert run_sweep(path, log=lines.append) == {'seed=0': 'elsewhere'}
    assert 'skip seed=0: running in another process' in lines and not (run_dir / 'config.json').exists()
    # a stale .running (its process is gone) is taken over
    (run_dir / '.running').write_text(f"{os.uname().nodename} 999999999\n")
    from llmcourse.sweep import _claim
    assert _claim(run_dir) and (run_dir / '.running').read_text().split()[1] == str(os.getpid())
    assert not _claim(run_dir)  # now it is ours: a second claim fails


def test_committed_sweep_files_parse():
    # every sweep file under configs/sweeps resolves its base and validates every point (CS336 ones included)
    files = sorted((ROOT / 'configs' / 'sweeps').glob('*.json'))
    assert len(files) >= 9
    for f in files: assert parse_sweep(f).points, f
