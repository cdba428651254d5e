"""Notebook 07's training options end to end: Muon for the matrices (and its exact resume), the WSD schedule, QK-norm, the
time budget (stops, ends its schedule, survives a resume), their bad values, and checkpoints made before these fields existed."""
import math
from pathlib import Path

import pytest
import torch

from llmcourse.checkpoint import load_model_from_run, read_checkpoint
from llmcourse.layers import ModelConfig
from llmcourse.optim import MuonAdamW
from llmcourse.train import TrainConfig, check_resumable, config_from_dict, parse_args, read_metrics, train, validate

TINY = ['--vocab_size', '300', '--context_length', '32', '--d_model', '32', '--num_layers', '1', '--num_heads', '2',
        '--d_ff', '64', '--batch_size', '8', '--warmup_steps', '5', '--eval_batches', '2', '--sample_tokens', '0',
        '--log_every', '5', '--device', 'cpu', '--threads', '1']


@pytest.fixture(scope='module')
def cache(tmp_path_factory): return tmp_path_factory.mktemp('cache')


def config(args, out_dir, cache): return parse_args(TINY + ['--out_dir', str(out_dir), '--cache_dir', str(cache)] + args)


def quiet(*a): pass


def losses(run_dir): return [(r['step'], r['train_loss'], r['val_loss'], r['lr']) for r in read_metrics(run_dir)]


def stopped_at(out_dir, cache, args, at=10):
    "A run stopped by Ctrl-C when the evaluation at step `at` is reported (it checkpoints at `at + 1`)."
    import signal
    def log(msg):
        if msg.startswith(f'step {at}:'): signal.raise_signal(signal.SIGINT)
    s = train(config(args, out_dir, cache), log=log)
    assert s['status'] == 'interrupted' and s['step'] == at + 1
    return s


MUON = ['--max_steps', '30', '--eval_every', '5', '--optimizer', 'muon', '--schedule', 'wsd', '--qk_norm', 'true']


def test_muon_trains_and_resumes_exactly(tmp_path, cache, one_thread):
    straight = train(config(MUON + ['--run_name', 'straight'], tmp_path, cache), log=quiet)
    assert straight['status'] == 'finished' and straight['final_val_loss'] < math.log(300)
    state = read_checkpoint(tmp_path / 'straight' / 'ckpt_last.pt')
    assert set(state['optimizer']) == {'muon', 'adamw'}
    model, _, cfg = load_model_from_run(tmp_path / 'straight')
    assert cfg['optimizer'] == 'muon' and model.layers[0].attn.q_norm is not None
    # Muon holds exactly the blocks' matrices; the embeddings, the head and every gain stay on AdamW
    muon_shapes = sorted(tuple(t['momentum_buffer'].shape) for t in state['optimizer']['muon']['state'].values())
    assert muon_shapes == sorted([(32, 32)] * 4 + [(64, 32), (32, 64), (64, 32)])
    stopped_at(tmp_path, cache, MUON + ['--run_name', 'stopped'])
    train(config(MUON + ['--run_name', 'stopped', '--resume', 'true'], tmp_path, cache), log=quiet)
    assert losses(tmp_path / 'stopped') == losses(tmp_path / 'straight')


def test_muon_optimizer_split(one_thread):
    model = ModelConfig(vocab_size=300, context_length=32, d_model=32, num_layers=2, num_heads=2, d_ff=64, tie_embeddings=True).build()
    from llmcourse.train import build_optimizer
    opt = build_optimizer(model, 'muon', 1e-3, (0.9, 0.95), 1e-8, 0.1)
    assert isinstance(opt, MuonAdamW)
    on_muon = {id(p) for g in opt.muon.param_groups for p in g['params']}
    on_adamw = {id(p) for g in opt.adamw.param_groups for p in g['params']}
    assert on_muon.isdisjoint(on_adamw) and on_muon | on_adamw == {id(p) for p in model.parameters()}
    assert id(model.lm_head.weight) in on_adamw and all(id(p) in on_adamw for p in model.parameters() if p.dim() == 1)
    with pytest.raises(ValueError, match='not a MuonAdamW state'): opt.load_state_dict(build_optimizer(model, 'adamw', 1e-3, (0.9, 0.95), 1e-8, 0.1).state_dict())


def test_time_budget_stops_and_ends_the_schedule(tmp_path, cache, one_thread):
    args = ['--max_steps', '1000000', '--eval_every', '50', '--time_budget', '1.5', '--lr', '1e-2', '--min_lr', '1e-3', '--run_name', 'b']
    s = train(config(args, tmp_path, cache), log=quiet)
    assert s['status'] == 'finished' and 5 < s['step'] < 1_000_000
    assert s['train_time_s'] >= 1.5 and s['time_clock'] == 'cpu'  # it stops on the budget, not the step cap
    rows = read_metrics(tmp_path / 'b')
    assert rows[-1]['step'] == s['step'] and rows[-1]['time_s'] >= 1.5  # a last evaluation at the stopping step
    assert rows[-1]['lr'] < 1e-3 + 0.2 * (1e-2 - 1e-3)  # the cosine has (about) reached min_lr: it ended with the budget
    assert read_checkpoint(tmp_path / 'b' / 'ckpt_last.pt')['budget_spent'] == pytest.approx(s['train_time_s'], abs=0.01)


def test_time_budget_resumes_the_same_budget(tmp_path, cache, one_thread):
    args = ['--max_steps', '1000000', '--eval_every', '5', '--time_budget', '2', '--run_name', 'b']
    stopped_at(tmp_path, cache, args)
    spent = read_checkpoint(tmp_path / 'b' / 'ckpt_last.pt')['budget_spent']
    assert 0 < spent < 2
    s = train(config(args + ['--resume', 'true'], tmp_path, cache), log=quiet)
    assert s['status'] == 'finished' and s['train_time_s'] >= 2 and s['step'] > 11


def test_wall_clock_budget(tmp_path, cache, one_thread):
    s = train(config(['--max_steps', '1000000', '--eval_every', '50', '--time_budget', '0.5', '--time_clock', 'wall',
                      '--run_name', 'w'], tmp_path, cache), log=quiet)
    assert s['status'] == 'finished' and s['time_clock'] == 'wall' and s['train_time_s'] >= 0.5


def test_bad_values_name_the_key():
    with pytest.raises(ValueError, match='time_budget: must be 0'): validate(config_from_dict({'time_budget': -1}))
    with pytest.raises(ValueError, match='wsd_decay: must be in'): validate(config_from_dict({'wsd_decay': 1.5}))
    with pytest.raises(ValueError, match="optimizer: expected one of adamw, muon"): parse_args(['--optimizer', 'sgd'])
    with pytest.raises(ValueError, match="time_clock: expected one of cpu, wall"): parse_args(['--time_clock', 'gpu'])
    with pytest.raises(ValueError, match="schedule: expected one of"): parse_args(['--schedule', 'linear'])
    with pytest.raises(ValueError, match='qk_norm: expected true or false'): parse_args(['--qk_norm', 'maybe'])
    with pytest.raises(ValueError, match='must not exceed'): parse_args(['--schedule', 'wsd', '--warmup_steps', '500', '--max_steps', '100'])


def test_defaults_are_todays_behaviour():
    cfg = TrainConfig()
    assert (cfg.qk_norm, cfg.optimizer, cfg.time_budget, cfg.schedule) == (False, 'adamw', 0.0, 'cosine')
    assert 'q_norm.weight' not in ''.join(cfg.model.build().state_dict())


def test_a_checkpoint_from_before_the_new_fields_resumes(tmp_path, cache, one_thread):
    "A run config without qk_norm, optimizer, wsd_decay, time_budget, time_clock (written before they existed) still resumes and loads."
    stopped_at(tmp_path, cache, ['--max_steps', '30', '--eval_every', '5', '--run_name', 'old'])
    state = read_checkpoint(tmp_path / 'old' / 'ckpt_last.pt')
    for k in ('qk_norm', 'optimizer', 'wsd_decay', 'time_budget', 'time_clock'): state['config'].pop(k)
    check_resumable(state, config(['--max_steps', '30', '--eval_every', '5', '--run_name', 'old'], tmp_path, cache), 'old')
    assert ModelConfig.from_dict(state['config']).qk_norm is False
    with pytest.raises(ValueError, match="optimizer \\('adamw', now 'muon'\\)"):
        check_resumable(state, config(['--max_steps', '30', '--optimizer', 'muon', '--run_name', 'old'], tmp_path, cache), 'old')


def test_qk_norm_kv_cache_decoding_matches_full_forward(one_thread):
    "The KV-cache path applies QK-norm as the layer does: greedy decoding with and without the cache agrees, and so do the logits."
    from llmcourse.generate import generate
    from llmcourse.accounting import param_counts
    cfg = dict(vocab_size=300, context_length=32, d_model=32, num_layers=2, num_heads=2, d_ff=64, qk_norm=True)
    torch.manual_seed(0)
    model = ModelConfig(**cfg).build().eval()
    for m in model.modules():  # gains away from 1, so that a missing norm would show
        if getattr(m, 'q_norm', None) is not None: torch.nn.init.normal_(m.q_norm.weight, 1, 0.5); torch.nn.init.normal_(m.k_norm.weight, 1, 0.5)
    prompt = [5, 17, 42, 7]
    assert generate(model, prompt, 12, temperature=0, use_cache=True) == generate(model, prompt, 12, temperature=0, use_cache=False)
    assert param_counts(cfg)['total'] == sum(p.numel() for p in model.parameters())
