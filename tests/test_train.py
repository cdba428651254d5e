"""The training command line end to end: config errors, a tiny run, exact resume after kill -9, stops (Ctrl-C, SIGTERM,
divergence, early stopping), the run folder's rules (lock, refusals, damaged checkpoints), summary.json, 2-process DDP, wandb."""
import errno, json, math, os, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from llmcourse.checkpoint import checksum_path, load_model_from_run, read_checkpoint, save_checkpoint
from llmcourse.train import (TrainConfig, is_text_source, load_metrics, locked_run_dir, main, parse_args, prepare_tokenizer,
                             read_metrics, train)

ROOT = Path(__file__).resolve().parents[1]
# A model small enough that a step takes milliseconds; the tokenizer (vocab 300) is trained once per session.
TINY = ['--vocab_size', '300', '--context_length', '32', '--d_model', '32', '--num_layers', '1', '--num_heads', '2',
        '--d_ff', '64', '--batch_size', '8', '--warmup_steps', '5', '--eval_batches', '2', '--sample_tokens', '0',
        '--log_every', '5', '--device', 'cpu', '--threads', '1']
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'WANDB_MODE': 'disabled', 'OMP_NUM_THREADS': '1'}


@pytest.fixture(scope='session')
def cache(tmp_path_factory): return tmp_path_factory.mktemp('cache')


def command(args, out_dir, cache, torchrun=None):
    launcher = [sys.executable, '-m', 'llmcourse.train'] if torchrun is None else \
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(torchrun), '-m', 'llmcourse.train']
    return launcher + TINY + ['--out_dir', str(out_dir), '--cache_dir', str(cache)] + args


def run(args, out_dir, cache, torchrun=None, check=True, timeout=180, env=None):
    p = subprocess.run(command(args, out_dir, cache, torchrun), env=env or ENV, capture_output=True, text=True, timeout=timeout)
    if check: assert p.returncode == 0, p.stderr[-3000:]
    return p


def config(args, out_dir, cache): return parse_args(TINY + ['--out_dir', str(out_dir), '--cache_dir', str(cache)] + args)


def quiet(*a): pass


def interrupted_run(out_dir, cache, at=10, args=()):
    "An in-process run stopped by a Ctrl-C sent when the evaluation at step `at` is reported: it checkpoints at `at + 1`."
    def log(msg):
        if msg.startswith(f'step {at}:'): signal.raise_signal(signal.SIGINT)
    s = train(config(['--max_steps', '60', '--eval_every', '5', *args], out_dir, cache), log=log)
    assert s['status'] == 'interrupted' and s['step'] == at + 1
    return Path(s['run_dir'])


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob('*')) if p.is_file()}


def losses(run_dir): return [(r['step'], r['train_loss'], r['val_loss'], r['lr']) for r in read_metrics(run_dir)]


# --- the command line ------------------------------------------------------------------------------------------------

def test_cli_errors_name_the_key(tmp_path):
    p = subprocess.run([sys.executable, '-m', 'llmcourse.train', '--learning_rate', '1e-3'], env=ENV, capture_output=True, text=True)
    assert p.returncode == 2 and "unknown config key 'learning_rate'" in p.stderr and 'Traceback' not in p.stderr
    p = subprocess.run([sys.executable, '-m', 'llmcourse.train', '--max_steps', 'many'], env=ENV, capture_output=True, text=True)
    assert p.returncode == 2 and "bad value 'many' for max_steps: expected an integer" in p.stderr
    cfg = tmp_path / 'bad.json'
    cfg.write_text(json.dumps({'_comment': 'x', 'd_model': 64, 'num_head': 4}))
    p = subprocess.run([sys.executable, '-m', 'llmcourse.train', str(cfg)], env=ENV, capture_output=True, text=True)
    assert p.returncode == 2 and "bad.json: unknown config key 'num_head' (did you mean 'num_heads'?)" in p.stderr
    # in-process: types come from the dataclass fields
    with pytest.raises(ValueError, match="bad value 'yes please' for compile"): parse_args(['--compile', 'yes please'])
    with pytest.raises(ValueError, match="bad value 1.5 for max_steps"):
        cfg.write_text(json.dumps({'max_steps': 1.5})); parse_args([str(cfg)])
    with pytest.raises(ValueError, match='lr: must be a positive number'): parse_args(['--lr', '-1'])
    with pytest.raises(ValueError, match='expected one of rms, none, layer'): parse_args(['--norm', 'batch'])
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


def test_help_prints_usage():
    for flag in ('--help', '-h'):
        p = subprocess.run([sys.executable, '-m', 'llmcourse.train', flag], env=ENV, capture_output=True, text=True)
        assert p.returncode == 0 and p.stdout.startswith('usage: python -m llmcourse.train'), p.stderr
        assert '--d_model 128' in p.stdout and '--diverge_factor 2.0' in p.stdout and '--overwrite false' in p.stdout
        assert 'needs a value' not in p.stderr and 'no config file' not in p.stderr


def test_bad_values_found_before_the_run(tmp_path):
    with pytest.raises(ValueError, match='sample_prompt: must not be empty'): parse_args(['--sample_prompt', ''])
    with pytest.raises(ValueError, match='expected tinystories_sample, a text file'): parse_args(['--train_data', 'train.tokens'])
    with pytest.raises(ValueError, match="can't be combined with --resume true"): parse_args(['--resume', 'true', '--overwrite', 'true'])
    with pytest.raises(ValueError, match='diverge_factor: must be 0'): parse_args(['--diverge_factor', '0.5'])
    bad = tmp_path / 'latin1.json'
    bad.write_bytes('{"_comment": "caf\xe9"}'.encode('latin-1'))
    p = subprocess.run([sys.executable, '-m', 'llmcourse.train', str(bad)], env=ENV, capture_output=True, text=True)
    assert p.returncode == 2 and 'latin1.json is not UTF-8 text' in p.stderr and 'Traceback' not in p.stderr


def test_text_suffixes_in_any_case(tmp_path, cache):
    assert is_text_source('train.TXT') and is_text_source('x.Txt.GZ') and not is_text_source('train.BIN')
    (tmp_path / 'train.TXT').write_text((ROOT / 'tests' / 'fixtures' / 'tinystories_sample.txt').read_text(encoding='utf-8'), encoding='utf-8')
    tok = prepare_tokenizer(str(tmp_path / 'train.TXT'), 270, cache=tmp_path, log=quiet)  # was: "is a token file: set tokenizer"
    assert tok.vocab_size == 270


# --- runs --------------------------------------------------------------------------------------------------------------

def test_end_to_end_run(tmp_path, cache):
    old = os.umask(0o022)
    try: p = run(['--max_steps', '20', '--eval_every', '10', '--checkpoint_every', '10', '--keep_every', '10',
                  '--sample_tokens', '8'], tmp_path, cache)
    finally: os.umask(old)
    d = tmp_path / 'tinystories_sample'
    assert sorted(f.name for f in d.iterdir()) == ['ckpt_000010.pt', 'ckpt_000010.pt.sha256', 'ckpt_000020.pt',
                                                   'ckpt_000020.pt.sha256', 'ckpt_last.pt', 'ckpt_last.pt.sha256',
                                                   'config.json', 'metrics.jsonl', 'summary.json', 'tokenizer']
    saved = json.loads((d / 'config.json').read_text())
    assert saved['d_model'] == 32 and saved['max_steps'] == 20
    rows = read_metrics(d)
    assert [r['step'] for r in rows] == [10, 20] and [r['tokens'] for r in rows] == [2560, 5120]
    assert set(rows[0]) >= {'step', 'tokens', 'train_loss', 'val_loss', 'train_ppl', 'val_ppl', 'lr', 'tokens_per_sec', 'mfu'}
    assert rows[1]['val_ppl'] == pytest.approx(math.exp(rows[1]['val_loss'])) and rows[1]['train_ppl'] == pytest.approx(math.exp(rows[1]['train_loss']))
    assert rows[0]['train_loss'] < math.log(300) + 0.5 and rows[1]['train_loss'] < rows[0]['train_loss']
    assert read_checkpoint(d / 'ckpt_last.pt')['iteration'] == 20
    assert 'loss curve' in p.stdout and 'a story' in p.stdout and 'ppl' in p.stdout
    model, tok, config = load_model_from_run(d)
    assert config['vocab_size'] == 300 and tok.vocab_size <= 300
    assert model(torch.tensor([tok.encode('Once upon a time')])).shape[-1] == 300
    assert list(load_metrics(d).columns)[:3] == ['step', 'tokens', 'train_loss']
    summary = json.loads((d / 'summary.json').read_text())
    assert summary == {**summary, 'status': 'finished', 'step': 20, 'tokens': 5120, 'final_val_loss': rows[-1]['val_loss'],
                       'best_val_loss': min(r['val_loss'] for r in rows), 'diverged_at_step': None}
    assert summary['final_val_ppl'] == pytest.approx(math.exp(rows[-1]['val_loss'])) and summary['wall_time_s'] > 0
    # files get the usual modes (0644 under umask 022), not mkstemp's 0600
    for f in ['ckpt_last.pt', 'ckpt_last.pt.sha256', 'ckpt_000010.pt', 'config.json', 'summary.json', 'metrics.jsonl',
              *(f'tokenizer/{t.name}' for t in (d / 'tokenizer').iterdir())]:
        assert (d / f).stat().st_mode & 0o777 == 0o644, f


def test_moe_runs_train_with_the_routers_losses(tmp_path, cache):
    "A mixture-of-experts run adds moe_balance x the balance loss to its gradient: the routers end elsewhere than without it."
    def router(balance):
        s = train(config(['--num_experts', '2', '--max_steps', '3', '--warmup_steps', '1', '--eval_every', '3', '--moe_balance', balance,
                          '--run_name', f'moe_{balance}'], tmp_path, cache), log=quiet)
        return load_model_from_run(s['run_dir'])[0].layers[0].ffn.router.weight
    assert not torch.equal(router('0'), router('0.5'))
    with pytest.raises(ValueError, match='for moe_balance: must not be negative'):
        train(config(['--num_experts', '2', '--moe_balance', '-1'], tmp_path, cache), log=quiet)


def test_resume_after_kill_9_equals_uninterrupted(tmp_path, cache):
    args = ['--max_steps', '120', '--eval_every', '10', '--checkpoint_every', '20', '--sample_tokens', '4']
    run(args + ['--run_name', 'straight'], tmp_path, cache)
    proc = subprocess.Popen(command(args + ['--run_name', 'killed'], tmp_path, cache), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
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


def test_keep_every_need_not_be_a_multiple_of_checkpoint_every(tmp_path, cache):
    "It used to keep nothing: a copy was made only at steps that were multiples of both."
    s = train(config(['--max_steps', '20', '--eval_every', '10', '--checkpoint_every', '5', '--keep_every', '7'], tmp_path, cache), log=quiet)
    d = Path(s['run_dir'])
    assert sorted(p.name for p in d.glob('ckpt_*.pt')) == ['ckpt_000007.pt', 'ckpt_000014.pt', 'ckpt_last.pt']
    assert [read_checkpoint(d / f'ckpt_{n:06d}.pt')['iteration'] for n in (7, 14)] == [7, 14]


def test_interrupt_at_an_odd_step_resumes_exactly(tmp_path, cache):
    "A stop between sync points (step 11 of log_every 5) still logs the same training losses after the resume."
    straight = train(config(['--max_steps', '30', '--eval_every', '5', '--run_name', 'straight'], tmp_path, cache), log=quiet)
    assert straight['status'] == 'finished'
    interrupted_run(tmp_path, cache, args=['--max_steps', '30'])
    train(config(['--max_steps', '30', '--eval_every', '5', '--resume', 'true'], tmp_path, cache), log=quiet)
    assert losses(tmp_path / 'tinystories_sample') == losses(tmp_path / 'straight')


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
    assert json.loads((tmp_path / 'ddp' / 'summary.json').read_text())['status'] == 'finished'


# --- stopping ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('sig, code', [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_and_exits_cleanly(tmp_path, cache, sig, code):
    proc = subprocess.Popen(command(['--max_steps', '100000', '--checkpoint_every', '50', '--eval_every', '50'], tmp_path, cache),
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / 'tinystories_sample' / 'ckpt_last.pt'
    t0 = time.time()
    while not ckpt.exists() and proc.poll() is None and time.time() - t0 < 120: time.sleep(0.01)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    assert 'Traceback' not in err and 'continue with --resume true' in out + err
    step = read_checkpoint(ckpt)['iteration']
    assert 50 < step < 100000  # the checkpoint was written when the signal came, not only the periodic one at 50
    summary = json.loads((tmp_path / 'tinystories_sample' / 'summary.json').read_text())
    assert summary['status'] == 'interrupted' and summary['step'] == step


def test_divergence_stops_with_status_3_and_keeps_last_good_checkpoint(tmp_path, cache):
    p = run(['--max_steps', '50', '--lr', '1e30', '--min_lr', '0', '--grad_clip', '0', '--warmup_steps', '2',
             '--checkpoint_every', '1', '--log_every', '1', '--eval_every', '50'], tmp_path, cache, check=False)
    assert p.returncode == 3, p.stderr[-2000:]
    out = p.stdout + p.stderr
    assert 'Traceback' not in out and 'the last good checkpoint' in out and 'training diverged' in out
    state = read_checkpoint(tmp_path / 'tinystories_sample' / 'ckpt_last.pt')
    assert 1 <= state['iteration'] < 50
    assert all(t.isfinite().all() for t in state['model'].values())
    summary = json.loads((tmp_path / 'tinystories_sample' / 'summary.json').read_text())
    assert summary['status'] == 'diverged' and summary['diverged_at_step'] > state['iteration']
    # a diverged run stays ended
    p = run(['--max_steps', '50', '--lr', '1e30', '--min_lr', '0', '--resume', 'true'], tmp_path, cache)
    assert 'has already ended (diverged' in p.stdout + p.stderr


def test_divergence_without_a_checkpoint_says_so(tmp_path, cache):
    s = train(config(['--max_steps', '50', '--lr', '10', '--min_lr', '0', '--grad_clip', '0', '--warmup_steps', '0',
                      '--log_every', '1', '--checkpoint_every', '100'], tmp_path, cache), log=(msgs := []).append)
    assert s['status'] == 'diverged' and s['diverged_at_step'] == 2  # the loss is past 2 × its start at step 2
    said = ' '.join(msgs)
    assert 'no checkpoint had been written yet' in said and 'is kept' not in said
    assert not (tmp_path / 'tinystories_sample' / 'ckpt_last.pt').exists()


def test_plateau_schedule_and_early_stopping(tmp_path, cache):
    # a learning rate too small to improve the val loss by min_delta: the plateau scheduler cuts it, then early stopping ends the run
    args = ['--max_steps', '200', '--eval_every', '5', '--schedule', 'plateau', '--lr', '1e-6', '--min_lr', '1e-8',
            '--warmup_steps', '0', '--plateau_patience', '0', '--early_stop_patience', '3', '--min_delta', '0.5']
    p = run(args, tmp_path, cache)
    d = tmp_path / 'tinystories_sample'
    rows = read_metrics(d)
    # the first evaluation is an improvement (on infinity); the next three are not
    assert 'early stopping at step 20' in p.stdout + p.stderr
    assert [r['step'] for r in rows] == [5, 10, 15, 20]
    lrs = [r['lr'] for r in rows]  # a row's lr is the one its steps used; a cut follows every evaluation without improvement
    assert lrs[0] == lrs[1] == pytest.approx(1e-6) and lrs[2] == pytest.approx(5e-7) and lrs[3] == pytest.approx(2.5e-7)
    assert read_checkpoint(d / 'ckpt_last.pt')['iteration'] == 20
    assert json.loads((d / 'summary.json').read_text())['status'] == 'early_stopped'
    # an early-stopped run stays stopped: it used to train on from 20 when resumed
    before = snapshot(d)
    p = run(args + ['--resume', 'true'], tmp_path, cache)
    assert 'has already ended (early_stopped at step 20)' in p.stdout + p.stderr and snapshot(d) == before
    (d / 'summary.json').unlink()  # killed after its last checkpoint, before the summary: the checkpoint knows
    p = run(args + ['--resume', 'true'], tmp_path, cache)
    assert 'has already ended (early_stopped at step 20)' in p.stdout + p.stderr
    assert read_checkpoint(d / 'ckpt_last.pt')['iteration'] == 20 and [r['step'] for r in read_metrics(d)] == [5, 10, 15, 20]


# --- the run folder ------------------------------------------------------------------------------------------------------

def test_refused_resume_leaves_the_folder_untouched(tmp_path, cache):
    d = interrupted_run(tmp_path, cache)
    before = snapshot(d)
    other = tmp_path / 'other.txt'
    other.write_text((ROOT / 'tests' / 'fixtures' / 'tinystories_sample.txt').read_text(encoding='utf-8'), encoding='utf-8')
    for args, why in ((['--d_model', '64'], 'different d_model (32, now 64)'),
                      (['--train_data', str(other)], 'different train_data'),
                      (['--grad_accum', '2'], 'different grad_accum (1, now 2)'),
                      (['--max_steps', '80'], 'pin it with --cosine_steps 60')):
        p = run(['--max_steps', '60', '--eval_every', '5', '--resume', 'true', *args], tmp_path, cache, check=False)
        assert p.returncode == 2 and why in p.stderr and 'Traceback' not in p.stderr, p.stderr[-2000:]
        assert snapshot(d) == before, args  # config.json, tokenizer/, checkpoints and metrics as they were
    # a longer run is fine once the cosine's length is pinned
    p = run(['--max_steps', '80', '--cosine_steps', '60', '--eval_every', '5', '--resume', 'true'], tmp_path, cache)
    assert read_checkpoint(d / 'ckpt_last.pt')['iteration'] == 80


def test_fresh_run_refuses_a_folder_holding_a_run(tmp_path, cache):
    args = ['--max_steps', '10', '--eval_every', '5']
    run(args, tmp_path, cache)
    d = tmp_path / 'tinystories_sample'
    before = snapshot(d)
    p = run(args, tmp_path, cache, check=False)
    assert p.returncode == 2 and '--resume true' in p.stderr and '--overwrite true' in p.stderr and 'Traceback' not in p.stderr
    assert snapshot(d) == before
    p = run(args + ['--overwrite', 'true', '--seed', '1'], tmp_path, cache)
    assert read_metrics(d)[0]['train_loss'] != json.loads(before['metrics.jsonl'].decode().splitlines()[0])['train_loss']


def test_second_process_is_refused(tmp_path, cache):
    d = tmp_path / 'tinystories_sample'
    with locked_run_dir(d):  # as a running training process holds it
        for extra in ([], ['--resume', 'true']):
            p = run(['--max_steps', '10'] + extra, tmp_path, cache, check=False)
            assert p.returncode == 2 and 'in use by another training process' in p.stderr, p.stderr[-2000:]
    assert list(d.iterdir()) == []
    run(['--max_steps', '10'], tmp_path, cache)  # the lock went with its holder


def test_damaged_ckpt_last_falls_back_to_the_newest_intact_kept_checkpoint(tmp_path, cache):
    d = interrupted_run(tmp_path, cache, at=20, args=['--checkpoint_every', '5', '--keep_every', '10'])
    ckpt = d / 'ckpt_last.pt'
    ckpt.write_bytes(ckpt.read_bytes()[:4096])  # a kill or a full disk cut it short
    with pytest.raises(ValueError, match=r"The newest intact checkpoint in .* is ckpt_000020\.pt \(step 20\)"):
        load_model_from_run(d)  # generate's loader: a clear error that offers the kept checkpoint
    p = run(['--max_steps', '60', '--eval_every', '5', '--checkpoint_every', '5', '--keep_every', '10', '--resume', 'true'],
            tmp_path, cache)
    assert 'ckpt_last.pt is damaged; resuming from ckpt_000020.pt (step 20)' in p.stdout + p.stderr
    assert [r['step'] for r in read_metrics(d)] == list(range(5, 65, 5))
    # no intact checkpoint at all: a clear error, no traceback
    for f in d.glob('ckpt_*.pt'): f.write_bytes(b'')
    (d / 'summary.json').unlink()
    p = run(['--max_steps', '60', '--resume', 'true'], tmp_path, cache, check=False)
    assert p.returncode == 2 and 'no intact checkpoint' in p.stderr and 'Traceback' not in p.stderr, p.stderr[-2000:]


def test_resume_from_a_plain_save_checkpoint_file_is_refused_clearly(tmp_path, cache):
    d = interrupted_run(tmp_path, cache)
    model, _, _ = load_model_from_run(d)
    save_checkpoint(model, None, 11, d / 'ckpt_last.pt')  # the CS336 function: no config, sampler or RNG state
    p = run(['--max_steps', '60', '--eval_every', '5', '--resume', 'true'], tmp_path, cache, check=False)
    assert p.returncode == 2 and 'is not a run checkpoint of llmcourse.train' in p.stderr and 'Traceback' not in p.stderr


def test_flipped_byte_is_found_by_the_checksum(tmp_path, cache):
    d = interrupted_run(tmp_path, cache)
    data = bytearray((d / 'ckpt_last.pt').read_bytes()); data[len(data) // 2] ^= 0x10
    (d / 'ckpt_last.pt').write_bytes(bytes(data))
    with pytest.raises(ValueError, match='fails its checksum'): read_checkpoint(d / 'ckpt_last.pt')
    assert checksum_path(d / 'ckpt_last.pt').is_file()


def test_full_disk_says_so_and_keeps_ckpt_last(tmp_path, cache, monkeypatch, capsys):
    d = interrupted_run(tmp_path, cache)
    before = (d / 'ckpt_last.pt').read_bytes()
    def full(fd): raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(os, 'fsync', full)
    code = main(TINY + ['--out_dir', str(tmp_path), '--cache_dir', str(cache), '--max_steps', '60', '--eval_every', '5',
                        '--resume', 'true'])
    err = capsys.readouterr().err
    assert code == 1 and 'disk full while writing' in err and 'unchanged' in err and 'Traceback' not in err
    assert (d / 'ckpt_last.pt').read_bytes() == before


# --- wandb -----------------------------------------------------------------------------------------------------------------

def wandb_records(path):
    "The records of a .wandb file: LevelDB log framing (32 KB blocks, 7-byte chunk headers) around wandb's own protobufs."
    from wandb.proto import wandb_internal_pb2 as pb
    data = Path(path).read_bytes()
    assert data[:4] == b':W&B', data[:7]
    pos, block, pieces, out = 7, 32768, b'', []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7: pos += left; continue  # a block's tail too short for a header is padding
        length, kind = int.from_bytes(data[pos + 4:pos + 6], 'little'), data[pos + 6]
        if kind == 0: pos += left; continue  # zero padding
        pieces += data[pos + 7:pos + 7 + length]; pos += 7 + length
        if kind in (1, 4):  # FULL, or LAST of a FIRST/MIDDLE/LAST chain
            r = pb.Record(); r.ParseFromString(pieces); out.append(r); pieces = b''
    return out


def test_wandb_offline_logs_what_metrics_jsonl_holds(tmp_path, cache):
    pytest.importorskip('wandb')
    run(['--max_steps', '20', '--eval_every', '5', '--wandb', 'true'], tmp_path, cache,
        env={**ENV, 'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true'}, timeout=300)
    d = tmp_path / 'tinystories_sample'
    files = list((d / 'wandb').glob('offline-run-*/run-*.wandb'))
    assert len(files) == 1, files
    history = [r.history for r in wandb_records(files[0]) if r.WhichOneof('record_type') == 'history']
    logged = [{(i.key or '/'.join(i.nested_key)): json.loads(i.value_json) for i in h.item if not (i.key or i.nested_key[0]).startswith('_')}
              for h in history]
    assert [h.step.num for h in history] == [5, 10, 15, 20]
    assert logged == read_metrics(d)
