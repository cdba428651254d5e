"""llmcourse.generate: sampling sets, greedy and sampled decoding, the KV cache against full recomputation, batches, the CLI."""
import pytest
import torch
from llmcourse.generate import (KVCache, check_sampling_args, forward_cached, generate, next_token_probs, sample_next,
                                stream_generate, top_k_mask, top_p_mask)
from llmcourse.layers import TransformerLM

pytestmark = pytest.mark.usefixtures('one_thread')   # conftest.py: tiny models, one torch thread

def lm(context_length=16, seed=0, **kw):
    torch.manual_seed(seed)
    return TransformerLM(vocab_size=61, context_length=context_length, d_model=32, num_layers=2, num_heads=4, d_ff=64,
                         rope_theta=10_000., **kw)

def greedy_reference(model, prompt, n):
    "Argmax chain over a full forward of the last context_length tokens: no cache, no padding."
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n): seq.append(int(model(torch.tensor([seq[-model.context_length:]]))[0, -1].argmax()))
    return seq[len(prompt):]

kept = lambda m: m.nonzero().flatten().tolist()

# --- top-p / top-k sets -------------------------------------------------------------------------------------------------

def test_top_p_smallest_set_reaching_p():
    probs = torch.tensor([0.1, 0.4, 0.2, 0.3])  # sorted: 0.4 (1), 0.3 (3), 0.2 (2), 0.1 (0); sums 0.4, 0.7, 0.9, 1.0
    assert kept(top_p_mask(probs, 0.3)) == [1]
    assert kept(top_p_mask(probs, 0.4)) == [1]  # reached exactly by one token
    assert kept(top_p_mask(probs, 0.41)) == [1, 3]
    assert kept(top_p_mask(probs, 0.7)) == [1, 3]  # 0.4 + 0.3 reaches 0.7 despite float rounding
    assert kept(top_p_mask(probs, 0.75)) == [1, 2, 3]
    assert kept(top_p_mask(probs, 0.95)) == [0, 1, 2, 3]

def test_top_p_ties_and_one():
    probs = torch.full((8,), 1 / 8)
    assert kept(top_p_mask(probs, 0.25)) == [0, 1]  # smallest set: two of the tied tokens, lower ids first
    assert kept(top_p_mask(probs, 0.26)) == [0, 1, 2]
    assert kept(top_p_mask(probs, 1.0)) == list(range(8))
    tail = torch.tensor([0.999999, 1e-6, 0.0])
    assert kept(top_p_mask(tail, 1.0)) == [0, 1, 2]  # p = 1 keeps everything, even zero-probability tokens
    assert top_p_mask(torch.tensor([[0.5, 0.5], [0.9, 0.1]]), 0.6).tolist() == [[True, True], [True, False]]  # per row

def test_top_p_renormalizes():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0])
    p = logits.softmax(-1)  # 0.644, 0.237, 0.087, 0.032
    got = next_token_probs(logits, 1.0, top_p=0.85)
    want = torch.cat([p[:2] / p[:2].sum(), torch.zeros(2)])
    torch.testing.assert_close(got, want)

def test_top_k():
    logits = torch.tensor([1.0, 5.0, 3.0, 5.0, -2.0])
    assert kept(top_k_mask(logits, 1)) == [1]  # tie between ids 1 and 3: the lower id wins
    assert kept(top_k_mask(logits, 3)) == [1, 2, 3]
    assert kept(top_k_mask(logits, 10)) == [0, 1, 2, 3, 4]
    probs = next_token_probs(logits, 1.0, top_k=2)
    torch.testing.assert_close(probs, torch.tensor([0, 0.5, 0, 0.5, 0]))
    # top-k before top-p: of the two kept tokens (0.5 each) p = 0.4 keeps the lower id only
    torch.testing.assert_close(next_token_probs(logits, 1.0, top_k=2, top_p=0.4), torch.tensor([0, 1.0, 0, 0, 0]))

def test_temperature():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    for t in (0.3, 1.0, 3.0):
        torch.testing.assert_close(next_token_probs(logits, t), (logits.double() / t).softmax(-1).float())
    assert next_token_probs(logits, 0).tolist() == [1, 0, 0, 0]
    assert next_token_probs(logits, 1e-30).tolist() == [1, 0, 0, 0]  # tiny temperature: no overflow, no NaN
    assert sample_next(torch.tensor([[0.0, 3.0, 3.0]]), 0).tolist() == [1]  # greedy tie: the lower id

@pytest.mark.parametrize('kw, name', [(dict(temperature=-0.1), 'temperature'), (dict(temperature=float('inf')), 'temperature'),
                                      (dict(top_p=0.0), 'top_p'), (dict(top_p=1.01), 'top_p'), (dict(top_p=-0.5), 'top_p'),
                                      (dict(top_k=0), 'top_k'), (dict(top_k=-3), 'top_k'), (dict(top_k=2.5), 'top_k')])
def test_bad_sampling_args(kw, name):
    with pytest.raises(ValueError, match=name): check_sampling_args(**kw)
    with pytest.raises(ValueError, match=name): next_token_probs(torch.zeros(5), **({'temperature': 1.0} | kw))
    model = lm()
    with pytest.raises(ValueError, match=name): generate(model, [1, 2], 3, **kw)
    with pytest.raises(ValueError, match=name): stream_generate(model, [1, 2], 3, **kw)  # at the call, not at the first token

def test_bad_prompts_and_lengths():
    model = lm()
    with pytest.raises(ValueError, match='empty'): generate(model, [], 3)
    with pytest.raises(ValueError, match='prompt 1 is empty'): generate(model, [[1], []], 3)
    with pytest.raises(ValueError, match=r'outside \[0, 61\)'): generate(model, [1, 61], 3)
    with pytest.raises(ValueError, match=r'outside \[0, 61\)'): generate(model, [-1], 3)
    with pytest.raises(ValueError, match='integer'): generate(model, torch.tensor([1.0, 2.0]), 3)
    with pytest.raises(ValueError, match='not text'): generate(model, 'hello', 3)
    with pytest.raises(ValueError, match='max_new_tokens'): generate(model, [1], -1)
    with pytest.raises(ValueError, match='one prompt'): stream_generate(model, [[1], [2]], 3)
    with pytest.raises(ValueError, match='either generator or seed'): generate(model, [1], 3, seed=1, generator=torch.Generator())
    assert generate(model, [1, 2], 0) == []

# --- decoding ---------------------------------------------------------------------------------------------------------

def test_greedy_is_argmax_chain_and_truncates_to_context():
    model = lm(context_length=16)
    prompt = [3, 14, 15, 9, 26]
    ref = greedy_reference(model, prompt, 30)  # 35 tokens > 16: the window slides
    assert generate(model, prompt, 30, temperature=0) == ref
    assert generate(model, torch.tensor(prompt), 30, temperature=0, use_cache=False) == ref
    assert list(stream_generate(model, prompt, 30, temperature=0)) == ref
    long = list(range(40))  # a prompt longer than the context window
    assert generate(model, long, 5, temperature=0) == greedy_reference(model, long, 5)

def test_eos_stops_and_is_kept():
    model = lm()
    prompt = [1, 2, 3]
    ref = greedy_reference(model, prompt, 20)
    eos = ref[4]
    want = ref[:ref.index(eos) + 1]
    assert generate(model, prompt, 20, temperature=0, eos_id=eos) == want
    assert list(stream_generate(model, prompt, 20, temperature=0, eos_id=eos)) == want
    assert generate(model, prompt, 20, temperature=0, eos_id=60 if 60 not in ref else None) == ref  # never produced: runs to the end

def test_seed_reproducibility():
    model = lm()
    a = generate(model, [5, 6], 25, temperature=1.2, top_k=20, seed=7)
    assert generate(model, [5, 6], 25, temperature=1.2, top_k=20, seed=7) == a
    assert generate(model, [5, 6], 25, temperature=1.2, top_k=20, generator=torch.Generator().manual_seed(7)) == a
    assert list(stream_generate(model, [5, 6], 25, temperature=1.2, top_k=20, seed=7)) == a
    assert generate(model, [5, 6], 25, temperature=1.2, top_k=20, seed=7, use_cache=False) == a
    assert generate(model, [5, 6], 25, temperature=1.2, top_k=20, seed=8) != a
    assert all(0 <= t < 61 for t in a) and len(a) == 25

def test_sampling_respects_top_k_set():
    model = lm()
    with torch.no_grad(): allowed = set(model(torch.tensor([[9]]))[0, -1].topk(3).indices.tolist())
    firsts = {generate(model, [9], 1, temperature=5.0, top_k=3, seed=s)[0] for s in range(60)}
    assert firsts <= allowed and len(firsts) > 1

def test_batch_of_different_lengths_equals_each_alone():
    model = lm(context_length=16)
    prompts = [[7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [4, 4, 4], [20, 30, 40, 50, 60, 1, 2]]
    alone = [generate(model, p, 20, temperature=0) for p in prompts]
    assert alone == [greedy_reference(model, p, 20) for p in prompts]
    assert generate(model, prompts, 20, temperature=0) == alone
    assert generate(model, prompts, 20, temperature=0, use_cache=False) == alone
    eos = alone[2][2]
    assert generate(model, prompts, 20, temperature=0, eos_id=eos) == [r[:r.index(eos) + 1] if eos in r else r for r in alone]
    same = torch.tensor([[1, 2, 3], [4, 5, 6]])  # a 2-D tensor is a batch
    import numpy as np
    assert generate(model, np.array(prompts[2]), 5, temperature=0) == alone[2][:5]  # numpy prompts work like lists
    assert generate(model, [np.array(p) for p in prompts], 5, temperature=0) == [r[:5] for r in alone]
    assert generate(model, [torch.tensor(p) for p in prompts], 5, temperature=0) == [r[:5] for r in alone]
    assert generate(model, tuple(prompts[1]), 5, temperature=0) == alone[1][:5]
    assert generate(model, prompts[0], np.int64(5), temperature=0, top_k=np.int64(3)) == alone[0][:5]  # numpy integers as settings
    assert generate(model, same, 5, temperature=0) == [greedy_reference(model, r, 5) for r in same.tolist()]

# --- the KV cache ------------------------------------------------------------------------------------------------------

VARIANTS = [{}, dict(norm_position='post'), dict(norm='none'), dict(position='nope'), dict(ffn='silu'), dict(tie_embeddings=True),
            dict(attention='scratch'), dict(norm='none', norm_position='post', position='nope', ffn='silu', tie_embeddings=True)]

@pytest.mark.parametrize('kw', VARIANTS, ids=lambda kw: ','.join(f'{k}={v}' for k, v in kw.items()) or 'default')
def test_cache_matches_full_forward(kw):
    model = lm(context_length=32, **kw)
    ids = torch.randint(0, 61, (3, 30))
    with torch.no_grad():
        full = model(ids)
        cache = KVCache(model, 3)
        cached = torch.cat([forward_cached(model, ids[:, a:b], cache) for a, b in ((0, 5), (5, 6), (6, 7), (7, 30))], 1)
    assert cache.length == 30
    scale = max(1.0, full.abs().max().item())
    assert (cached - full).abs().max().item() <= 1e-5 * scale
    # and the generations agree token for token
    assert generate(model, [1, 2, 3], 12, temperature=0) == greedy_reference(model, [1, 2, 3], 12)

def test_cache_float64_exact_and_overflow():
    model = lm(context_length=32, dtype=torch.float64)
    ids = torch.randint(0, 61, (1, 20))
    with torch.no_grad():
        cache = KVCache(model, 1)
        cached = torch.cat([forward_cached(model, ids[:, :9], cache), forward_cached(model, ids[:, 9:], cache)], 1)
        torch.testing.assert_close(cached, model(ids), rtol=0, atol=1e-10)
        assert cache.k[0].dtype == torch.float64 and cache.k[0].shape == (1, 4, 32, 8)
        with pytest.raises(ValueError, match='context_length'): forward_cached(model, torch.zeros(1, 13, dtype=torch.long), cache)

# --- the command line ----------------------------------------------------------------------------------------------------

import json, subprocess, sys
from pathlib import Path
import llmcourse.generate as G
from llmcourse.checkpoint import save_checkpoint
from llmcourse.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
EOT_ID = 256

def byte_tokenizer():
    return Tokenizer({i: bytes([i]) for i in range(256)}, [], ['<|endoftext|>'])  # <|endoftext|> gets id 256

@pytest.fixture
def run_dir(tmp_path):
    "A tiny run folder as `python -m llmcourse.train` leaves it: config.json, ckpt_last.pt, tokenizer/."
    config = dict(vocab_size=257, context_length=24, d_model=32, num_layers=2, num_heads=4, d_ff=64, rope_theta=10_000.)
    torch.manual_seed(0)
    model = TransformerLM(**config)
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'config.json').write_text(json.dumps(config))
    save_checkpoint(model, None, 0, run / 'ckpt_last.pt')
    byte_tokenizer().save(run / 'tokenizer')
    return run

def cli(*args):
    env = {'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '1', 'PYTHONIOENCODING': 'utf-8'}
    r = subprocess.run([sys.executable, '-m', 'llmcourse.generate', *map(str, args)], capture_output=True, env=env, cwd=ROOT, timeout=300)
    # bytes, not text mode: universal newlines would turn a generated '\r' into '\n'
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode('utf-8'), r.stderr.decode('utf-8'))

def expected_text(run, prompt, n, **kw):
    from llmcourse.checkpoint import load_model_from_run
    model, tok, _ = load_model_from_run(run, 'cpu')
    ids = generate(model, tok.encode(prompt), n, eos_id=EOT_ID, **kw)
    return tok.decode([i for i in ids if i != EOT_ID])

def test_cli_greedy_and_seeded(run_dir):
    r = cli(run_dir, '--prompt', 'Once upon a time', '--temperature', '0', '--max_new_tokens', '30', '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected_text(run_dir, 'Once upon a time', 30, temperature=0) + '\n'
    args = (run_dir, '--prompt', 'Once', '--temperature', '1.3', '--top_p', '0.95', '--top_k', '200', '--seed', '3', '--max_new_tokens', '40', '--device', 'cpu')
    a, b = cli(*args), cli(*args)
    assert a.returncode == 0 and a.stdout == b.stdout
    assert a.stdout == expected_text(run_dir, 'Once', 40, temperature=1.3, top_p=0.95, top_k=200, seed=3) + '\n'
    assert cli(run_dir, '--max_new_tokens', '5', '--seed', '0', '--device', 'cpu').returncode == 0  # empty prompt: starts after <|endoftext|>

def test_cli_errors(run_dir, tmp_path):
    r = cli(tmp_path / 'missing')
    assert r.returncode == 2 and 'no run folder' in r.stderr
    r = cli(tmp_path)
    assert r.returncode == 2 and 'no config.json' in r.stderr
    for flag, value in (('--temperature', '-1'), ('--top_p', '0'), ('--top_k', '0'), ('--max_new_tokens', '-2')):
        r = cli(run_dir, flag, value)
        assert r.returncode == 2 and flag[2:] in r.stderr, (flag, r.stderr)
    (run_dir / 'ckpt_last.pt').write_bytes(b'not a checkpoint')
    r = cli(run_dir, '--device', 'cpu')
    assert r.returncode == 2 and 'ckpt_last.pt' in r.stderr and 'Traceback' not in r.stderr, r.stderr

def test_stream_text_holds_back_split_characters(monkeypatch):
    "A character split over several byte tokens is printed once, whole; <|endoftext|> ends the text unprinted."
    ids = [72, 0xE2, 0x82, 0xAC, 33, 0xC3, 0xA9, EOT_ID, 65]  # 'H', '€' in 3 bytes, '!', 'é' in 2 bytes, end, 'A'
    monkeypatch.setattr(G, 'stream_generate', lambda model, prompt, n, **kw: iter(ids))
    pieces = list(G.stream_text(None, byte_tokenizer(), 'x', 10))
    assert pieces == ['H', '€', '!', 'é']

@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cli_device_without_cuda(run_dir):
    r = cli(run_dir, '--device', 'cuda', '--max_new_tokens', '2')
    assert r.returncode == 2 and 'CUDA is not available' in r.stderr and 'Traceback' not in r.stderr, r.stderr
    r = cli(run_dir, '--device', 'tpu', '--max_new_tokens', '2')
    assert r.returncode == 2 and 'unknown device' in r.stderr and 'Traceback' not in r.stderr, r.stderr

def test_cli_unreadable_checkpoint(run_dir):
    (run_dir / 'ckpt_last.pt').unlink(); (run_dir / 'ckpt_last.pt').mkdir()  # a folder where the file should be
    r = cli(run_dir, '--device', 'cpu')
    assert r.returncode == 2 and r.stderr.startswith('error:') and 'Traceback' not in r.stderr, r.stderr

def test_one_eot_and_one_device_picker():
    import llmcourse.files, llmcourse.layers
    assert G.EOT is llmcourse.files.EOT and G.pick_device is llmcourse.layers.pick_device
    assert not hasattr(G, '_pick_device') and 'EOT' not in G.__all__

def test_main_guard_does_nothing_in_a_kernel():
    "Run as a notebook kernel runs it (__name__ == '__main__', no __file__), the module's last cell must not call main()."
    src = (ROOT / 'llmcourse' / 'generate.py').read_text()
    ns = {'__name__': '__main__'}
    exec(compile(src.replace('from .', 'from llmcourse.'), 'generate', 'exec'), ns)  # would raise SystemExit without the guard
