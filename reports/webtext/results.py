"""Notebook 07: the numbers behind its figures, written to reports/webtext/results.json (one section per part).

Run from the repository root with the web text prepared (`python reports/webtext/prepare_data.py`):

    python reports/webtext/results.py main          # needs the checkpoints of reports/sweeps/webtext (not committed)
    python reports/webtext/results.py leaderboard   # reads only the committed summaries and metrics of the leaderboard sweeps

`main` measures, for the notebook-06 baseline trained on each corpus (sweep `webtext`): the validation loss again from the
checkpoint on the same 128 held-out windows the run evaluated, the bytes those targets span (hence bits per byte), the errors
by kind of token; the entropy and compressibility of each corpus; each tokenizer's compression; samples. `leaderboard`
summarizes the fixed-compute runs (sweeps `leaderboard`, `leaderboard_final`): per variant the seeds' final losses, their
mean, spread (max - min) and difference from the baseline, the steps and CPU seconds; and the quiet-machine check
(sweep `leaderboard_quiet`, seed 1 of four recipes).
"""
import collections, json, lzma, math, sys, time, unicodedata
from pathlib import Path
import numpy as np
import torch
from llmcourse.checkpoint import load_model_from_run
from llmcourse.data import asset_path, load_tokenizer, tinystories_sample, validation_batches
from llmcourse.files import EOT, atomic_write, read_text
from llmcourse.generate import generate

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / 'reports' / 'webtext' / 'results.json'
SWEEPS = ROOT / 'reports' / 'sweeps'
CORPORA = {'webtext': ('runs/data/webtext_train.txt', 'runs/data/webtext_valid.txt'), 'tinystories': (None, None)}
PROMPTS, NEW_TOKENS, TEMPERATURE, TOP_P = ('Once upon a time', 'The president said'), 100, 0.8, 0.95
PREFIX_BYTES = 1_000_000  # the entropy and compression measures use the same amount of text from each corpus
KINDS = ('end of text', 'whitespace', 'digits', 'punctuation', 'word start, capitalised', 'word start, lower case', 'word continuation')

def texts(corpus: str) -> tuple[str, str]:
    "(training text, validation text) of a corpus, as the runs read them."
    if corpus == 'tinystories': return tinystories_sample('train'), tinystories_sample('valid')
    train, valid = CORPORA[corpus]
    return read_text(ROOT / train), read_text(ROOT / valid)

def entropy_bits(counts) -> float:
    "Shannon entropy in bits of the empirical distribution of `counts`."
    c = np.asarray(list(counts), dtype=np.float64); p = c / c.sum()
    return float(-(p * np.log2(p)).sum())

def data_measures(text: str) -> dict:
    "Entropies (bits per byte) and compressed sizes of the first PREFIX_BYTES of a text."
    b = text.encode('utf-8')[:PREFIX_BYTES]
    uni = collections.Counter(b)
    big = collections.Counter(zip(b, b[1:]))
    h1 = entropy_bits(big.values()) - entropy_bits(collections.Counter(b[:-1]).values())  # H(X_t | X_t-1)
    words = text[:PREFIX_BYTES].split()
    return {'bytes': len(b), 'byte_unigram_entropy_bits': entropy_bits(uni.values()),
            'byte_bigram_conditional_entropy_bits': h1, 'lzma_bits_per_byte': 8 * len(lzma.compress(b, preset=9)) / len(b),
            'distinct_bytes': len(uni), 'words': len(words), 'distinct_words': len(set(words)),
            'non_ascii_byte_share': sum(v for k, v in uni.items() if k >= 128) / len(b)}

def token_kind(tok_bytes: bytes, prev_bytes: bytes, special: bool) -> str:
    "The kind of a target token, given the token before it (whether a letter-led token starts a word)."
    if special: return 'end of text'
    s = tok_bytes.decode('utf-8', errors='replace')
    if not s.strip(): return 'whitespace'
    if any(ch.isdigit() for ch in s): return 'digits'
    core = s.lstrip()
    if not any(ch.isalpha() for ch in core): return 'punctuation'
    prev = prev_bytes.decode('utf-8', errors='replace')
    if core is s and prev and prev[-1:].isalnum(): return 'word continuation'  # no leading space, glued to a word
    return 'word start, capitalised' if core[:1].isupper() else 'word start, lower case'

@torch.no_grad()
def per_token(model, tokens: np.ndarray, windows: int, context: int):
    "Per-target losses (nats), argmax hits and target ids over the first `windows` evaluation windows, as the run evaluated them."
    losses, hits, targets, inputs = [], [], [], []
    for x, y in validation_batches(tokens, 16, context, 'cpu', drop_tail=True):
        logits = model(x).float()
        losses.append(torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction='none'))
        hits.append((logits.argmax(-1) == y).flatten()); targets.append(y.flatten()); inputs.append(x.flatten())
        if sum(len(t) for t in targets) >= windows * context: break
    return torch.cat(losses).numpy(), torch.cat(hits).numpy(), torch.cat(targets).numpy(), torch.cat(inputs).numpy()

def errors_by_kind(tok, losses, hits, targets, inputs) -> dict:
    "Per kind of token: its share of the targets and of their bytes, the top-1 error rate, the mean loss, its share of the loss."
    special = {tok.encode(EOT)[0]}
    kinds = [token_kind(tok.vocab[int(t)], tok.vocab[int(p)], int(t) in special) for t, p in zip(targets, inputs)]
    nbytes = np.array([len(tok.vocab[int(t)]) for t in targets])
    out = {}
    for k in KINDS:
        m = np.array([x == k for x in kinds])
        if not m.any(): continue
        out[k] = {'token_share': float(m.mean()), 'byte_share': float(nbytes[m].sum() / nbytes.sum()),
                  'error_rate': float(1 - hits[m].mean()), 'mean_loss_nats': float(losses[m].mean()),
                  'loss_share': float(losses[m].sum() / losses.sum()), 'bits_per_byte': float(losses[m].sum() / math.log(2) / nbytes[m].sum())}
    return out

def main_experiment() -> dict:
    torch.set_num_threads(1)
    gpt2 = load_tokenizer(vocab=asset_path('gpt2_vocab.json.gz'), merges=asset_path('gpt2_merges.txt.gz'), special_tokens=[EOT])
    res = {'data': {}, 'tokenizers': {}, 'runs': {}, 'errors_by_kind': {}, 'samples': []}
    toks = {c: load_model_from_run(SWEEPS / 'webtext' / f'{c}_seed=0')[1] for c in CORPORA}
    for corpus in CORPORA:
        train, valid = texts(corpus)
        res['data'][corpus] = data_measures(train) | {'train_bytes': len(train.encode()), 'valid_bytes': len(valid.encode()),
                                                      'train_documents': train.count(EOT), 'valid_documents': valid.count(EOT)}
        vb = len(valid.encode())
        ids = {name: t.encode(valid) for name, t in (('own 2,048 BPE', toks[corpus]), ('other corpus 2,048 BPE', toks[[c for c in CORPORA if c != corpus][0]]),
                                                    ('GPT-2 50,257 BPE', gpt2))}
        own = np.array(ids['own 2,048 BPE'])
        res['tokenizers'][corpus] = {name: {'tokens': len(v), 'bytes_per_token': vb / len(v)} for name, v in ids.items()}
        res['tokenizers'][corpus]['own 2,048 BPE']['unigram_entropy_bits_per_token'] = entropy_bits(collections.Counter(own.tolist()).values())
        runs = {}
        for seed in (0, 1, 2):
            run = SWEEPS / 'webtext' / f'{corpus}_seed={seed}'
            model, tok, cfg = load_model_from_run(run)
            losses, hits, targets, inputs = per_token(model, own.astype(np.int64), cfg['eval_batches'] * cfg['batch_size'], cfg['context_length'])
            nbytes = sum(len(tok.vocab[int(t)]) for t in targets)
            logged = json.loads((run / 'summary.json').read_text())['final_val_loss']
            runs[seed] = {'val_loss': float(losses.mean()), 'logged_final_val_loss': logged, 'val_ppl': math.exp(float(losses.mean())),
                          'targets': len(targets), 'target_bytes': nbytes, 'bytes_per_token': nbytes / len(targets),
                          'bits_per_byte': float(losses.sum() / math.log(2) / nbytes), 'top1_error_rate': float(1 - hits.mean())}
            if seed == 0:
                res['errors_by_kind'][corpus] = errors_by_kind(tok, losses, hits, targets, inputs)
                for prompt in PROMPTS:
                    p = tok.encode(prompt)
                    new = generate(model, p, NEW_TOKENS, temperature=TEMPERATURE, top_p=TOP_P, eos_id=tok.encode(EOT)[0], seed=0)
                    res['samples'].append({'model': corpus, 'run': f'webtext/{corpus}_seed=0', 'prompt': prompt,
                                           'text': tok.decode(p + [int(i) for i in new]).replace(EOT, '').strip()})
        vals = [r['val_loss'] for r in runs.values()]; bpbs = [r['bits_per_byte'] for r in runs.values()]
        res['runs'][corpus] = {'seeds': runs, 'mean_val_loss': float(np.mean(vals)), 'spread_val_loss': float(np.ptp(vals)),
                               'mean_val_ppl': math.exp(float(np.mean(vals))), 'mean_bits_per_byte': float(np.mean(bpbs)),
                               'spread_bits_per_byte': float(np.ptp(bpbs)), 'steps': cfg['max_steps'],
                               'tokens': cfg['max_steps'] * cfg['batch_size'] * cfg['context_length'],
                               'params': sum(p.numel() for p in model.parameters())}
    res['settings'] = {'prompts': PROMPTS, 'new_tokens': NEW_TOKENS, 'temperature': TEMPERATURE, 'top_p': TOP_P,
                       'prefix_bytes': PREFIX_BYTES, 'eval_windows': 128, 'measured': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}
    return res

def _summaries(sweep: str) -> list[dict]:
    folder = SWEEPS / sweep
    meta = json.loads((folder / 'sweep.json').read_text())
    rows = []
    for p in meta['points']:
        f = folder / p['name'] / 'summary.json'
        if not f.exists(): continue
        s = json.loads(f.read_text())
        rows.append({'sweep': sweep, 'run': p['name'], 'variant': p['variant'], 'seed': p['settings'].get('seed'), **{k: s.get(k) for k in
                     ('status', 'step', 'tokens', 'final_val_loss', 'wall_time_s', 'train_time_s')}})
    return rows

def leaderboard() -> dict:
    rows = [r for s in ('leaderboard', 'leaderboard_final') if (SWEEPS / s / 'sweep.json').exists() for r in _summaries(s)]
    done = [r for r in rows if r['status'] == 'finished' and r['final_val_loss'] is not None]
    base = [r['final_val_loss'] for r in done if r['variant'] == 'baseline']
    base_mean = float(np.mean(base)) if base else None
    table = {}
    for v in dict.fromkeys(r['variant'] for r in rows):
        rs = [r for r in done if r['variant'] == v]
        if not rs: continue
        losses = [r['final_val_loss'] for r in rs]
        table[v] = {'runs': [r['sweep'] + '/' + r['run'] for r in rs], 'seeds': len(rs), 'final_val_losses': losses,
                    'mean_val_loss': float(np.mean(losses)), 'spread': float(np.ptp(losses)),
                    'delta_vs_baseline': float(np.mean(losses)) - base_mean if base_mean is not None else None,
                    'mean_steps': float(np.mean([r['step'] for r in rs])), 'mean_tokens': float(np.mean([r['tokens'] for r in rs])),
                    'mean_train_cpu_s': float(np.mean([r['train_time_s'] or 0 for r in rs])),
                    'mean_wall_s': float(np.mean([r['wall_time_s'] or 0 for r in rs]))}
    quiet = {r['variant']: {'run': 'leaderboard_quiet/' + r['run'], 'final_val_loss': r['final_val_loss'], 'steps': r['step'],
                            'train_cpu_s': r['train_time_s'], 'wall_s': r['wall_time_s']}
             for r in (_summaries('leaderboard_quiet') if (SWEEPS / 'leaderboard_quiet' / 'sweep.json').exists() else [])}
    return {'budget_cpu_s': 45, 'baseline_mean_val_loss': base_mean, 'quiet_machine_seed1': quiet, 'baseline_runs': len(base), 'variants': table,
            'not_finished': [r['sweep'] + '/' + r['run'] for r in rows if r not in done],
            'total_train_cpu_s': float(sum(r['train_time_s'] or 0 for r in rows)),
            'total_wall_s_summed_over_runs': float(sum(r['wall_time_s'] or 0 for r in rows))}

def main(argv) -> int:
    parts = argv or ['main', 'leaderboard']
    res = json.loads(OUT.read_text()) if OUT.exists() else {}
    for part in parts:
        if part not in ('main', 'leaderboard'): print(f"unknown part {part!r}: main or leaderboard", file=sys.stderr); return 2
        res[part] = main_experiment() if part == 'main' else leaderboard()
    atomic_write(OUT, json.dumps(res, indent=1) + '\n')
    print(f"wrote {', '.join(parts)} to {OUT}")
    return 0

if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
