"""The measurements behind the report's answers (nbs/90_report.ipynb) that no other committed file holds.

    python reports/answers/answers.py exact          # unicode.json, accounting.json, lr_toy.json (deterministic, seconds)
    LLMCOURSE_DATA=... python reports/answers/answers.py bpe   # bpe.json: tokenizers trained on TinyStories and WebText

`exact` computes what the code answers the same way on every machine: the handout's unicode questions, notebook 02's
accounting for GPT-2 XL (SwiGLU and the handout's two-matrix SiLU feed-forward side by side) and notebook 03's SGD toy.
tests/test_report.py recomputes these and fails when the committed JSON differs. `bpe` measures (times, memory): it trains
the handout's tokenizers on the text at hand, the embedded TinyStories sample (vocab 10,000) and the WebText piece the data
cache finds (vocab 32,000; `python -m llmcourse.data list` says which copy), and encodes held-out documents with both.
Run from the repository root. Each file is written atomically, with the machine and the time it ran.
"""
from __future__ import annotations
import json, os, platform, resource, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent

def _write(name: str, obj: dict) -> Path:
    from llmcourse.files import atomic_write
    path = HERE/name
    atomic_write(path, json.dumps(obj, indent=1, ensure_ascii=False) + '\n')
    print(f'wrote {path}')
    return path

# --- exact ------------------------------------------------------------------------------------------------------------

def unicode_answers() -> dict:
    "unicode1 (what chr(0) is) and unicode2 (why UTF-8, a wrong decoder, an invalid byte pair), computed."
    import io
    from llmcourse.data import asset_path
    from llmcourse.files import read_text
    nul = chr(0)
    shown = io.StringIO(); print('this is a test' + nul + 'string', file=shown, end='')
    texts = {'TinyStories': read_text(asset_path('tinystories_train.txt.gz')),
             'State of the Union': read_text(asset_path('sotu_1790-2021.txt.gz'))[-3_000_000:],
             'Multilingual': ('Größenwahn ist kein Straßenname. Ça coûte cher, n’est-ce pas ? Привет, как дела? Καλημέρα κόσμε. '
                             '東京タワーへ行きました。今天天气很好。안녕하세요, 반갑습니다. مرحبا بالعالم. नमस्ते दुनिया। 🦄🏳️‍🌈👩🏽‍💻 ') * 20}   # notebook 00's line
    enc = {}
    for name, t in texts.items():
        b8, b16, b32 = (t.encode(e) for e in ('utf-8', 'utf-16-le', 'utf-32-le'))
        enc[name] = {'chars': len(t), 'utf8_bytes_per_char': len(b8) / len(t), 'utf16_bytes_per_char': len(b16) / len(t),
                     'utf32_bytes_per_char': len(b32) / len(t), 'utf16_zero_byte_share': b16.count(0) / len(b16),
                     'utf32_zero_byte_share': b32.count(0) / len(b32)}
    word = 'こんにちは'
    try: ''.join(bytes([b]).decode('utf-8') for b in word.encode()); wrong_error = None
    except UnicodeDecodeError as e: wrong_error = str(e)
    bad = b'\xc0\x80'
    try: bad.decode('utf-8'); bad_error = None
    except UnicodeDecodeError as e: bad_error = str(e)
    return {'chr0': {'repr': repr(nul), 'code_point': f'U+{ord(nul):04X}', 'name': 'NULL', 'printed': repr(shown.getvalue()),
                     'len_a_nul_b': len('a' + nul + 'b'), 'utf8': nul.encode().hex()},
            'encodings': enc,
            'wrong_decoder': {'input': word, 'bytes': word.encode().hex(' '), 'error': wrong_error},
            'invalid_pair': {'bytes': bad.hex(' '), 'error': bad_error, 'replaced': bad.decode('utf-8', errors='replace')}}

def accounting_answers() -> dict:
    "transformer_accounting and adamwAccounting for the GPT-2 sizes, by notebook 02's formulas (checked there against the model)."
    from llmcourse.accounting import (GPT2_SIZES, adamw_flops, flops_per_token, forward_flops, gpt2_config, max_batch_size,
                                      param_counts, peak_flops, training_memory, training_seconds)
    out = {'sizes': {}, 'xl': {}}
    for s in GPT2_SIZES:
        f = forward_flops(gpt2_config(s))
        out['sizes'][s] = {'params': param_counts(gpt2_config(s))['total'], 'forward_tflops': f['total'] / 1e12,
                           **{f'share_{k.replace(" ", "_")}': v / f['total'] for k, v in f.items() if k != 'total'}}
    f = forward_flops(gpt2_config('xl', 16384))
    out['xl_16384'] = {'forward_tflops': f['total'] / 1e12, **{f'share_{k.replace(" ", "_")}': v / f['total'] for k, v in f.items() if k != 'total'}}
    a100, h100 = peak_flops('A100', 'fp32'), peak_flops('H100 SXM', 'bf16')
    for ffn in ('swiglu', 'silu'):   # SwiGLU: three d_model x d_ff matrices; SiLU: the handout's two (W1, W2), d_ff = 4 d_model
        cfg = gpt2_config('xl', ffn=ffn)
        p, mem1, mem0 = param_counts(cfg), training_memory(cfg, 1), training_memory(cfg, 0)
        out['xl'][ffn] = {'d_ff': cfg['d_ff'], 'params': p['total'], 'ffn_params': p['ffn'],
                          'params_gb': mem0['parameters'] / 1e9, 'gradients_gb': mem0['gradients'] / 1e9,
                          'optimizer_gb': mem0['optimizer state'] / 1e9, 'fixed_gb': mem0['total'] / 1e9,
                          'activations_gb_per_sequence': mem1['activations'] / 1e9,
                          'max_batch_80gb': max_batch_size(cfg, 80e9),
                          'adamw_flops': adamw_flops(cfg), 'train_flops_per_token': flops_per_token(cfg),
                          'step_flops_batch_1024': flops_per_token(cfg) * 1024 * 1024 + adamw_flops(cfg),
                          'a100_fp32_peak_tflops': a100 / 1e12,
                          'days_400k_steps_batch_1024_a100_fp32_mfu50': training_seconds(cfg, 400_000, 1024, a100) / 86400,
                          'h100_bf16_peak_tflops': h100 / 1e12,
                          'days_400k_steps_batch_1024_h100_bf16_mfu50': training_seconds(cfg, 400_000, 1024, h100) / 86400}
    return out

def lr_toy_answers() -> dict:
    "learning_rate_tuning: the handout's SGD (step lr/sqrt(t+1)) on mean(w**2), w = 5 randn(10, 10), seed 0, ten steps."
    import torch
    from llmcourse.optim import SGD
    out = {}
    for lr in (1e1, 1e2, 1e3):
        torch.manual_seed(0)
        w = torch.nn.Parameter(5 * torch.randn(10, 10))
        opt, losses = SGD([w], lr=lr), []
        for _ in range(10):
            opt.zero_grad(); loss = (w**2).mean(); losses.append(loss.item()); loss.backward(); opt.step()
        out[f'lr={lr:g}'] = losses
    return out

def exact() -> dict:
    "Every deterministic answer file's contents, by name."
    return {'unicode.json': unicode_answers(), 'accounting.json': accounting_answers(), 'lr_toy.json': lr_toy_answers()}

# --- bpe ----------------------------------------------------------------------------------------------------------------

def _train(job):
    "Train in a fresh process (so its peak memory is its own): (path, vocab_size) -> seconds, peak RSS, vocab, merges."
    import warnings
    from llmcourse.files import EOT
    from llmcourse.tokenizer import train_bpe
    path, vocab_size = job
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        vocab, merges = train_bpe(path, vocab_size, [EOT], num_processes=1)
    sec = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KB on Linux
    return sec, peak / 1024, base / 1024, vocab, merges, [str(w.message) for w in caught], _profile(path, vocab_size)

def _profile(path, vocab_size) -> dict:
    "A second, profiled training: the share of its time in counting pre-tokens and in the merges (cumulative times)."
    import cProfile, pstats
    from llmcourse.files import EOT
    from llmcourse.tokenizer import train_bpe
    import warnings
    prof = cProfile.Profile(); prof.enable()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')                  # said once already, by the timed training
        train_bpe(path, vocab_size, [EOT], num_processes=1)
    prof.disable()
    st = pstats.Stats(prof)
    cum = {fn[2]: v[3] for fn, v in st.stats.items()}
    total = cum['train_bpe']
    return {'counting_pretokens_share': cum['_count_chunk'] / total, 'merging_share': cum['_merge'] / total,
            'pretokenize_share': cum['pretokenize'] / total}

def _docs(text: str) -> list[str]:
    from llmcourse.files import EOT
    return [d.strip() for d in text.split(EOT) if d.strip()]

def _longest(vocab: dict) -> dict:
    b = max(vocab.values(), key=len)
    return {'text': b.decode('utf-8', errors='replace'), 'bytes': len(b)}

def bpe() -> dict:
    "train_bpe_tinystories, train_bpe_expts_owt, tokenizer_experiments at the scale of the text at hand."
    import random, tempfile
    import numpy as np
    from llmcourse.data import corpus_path, find_corpus
    from llmcourse.files import EOT, read_text
    from llmcourse.tokenizer import Tokenizer
    ts_train = read_text(corpus_path('tinystories', 'train')) + '\n' + EOT + '\n' + read_text(corpus_path('tinystories_v1', 'train'))
    ts_valid = _docs(read_text(corpus_path('tinystories', 'valid')))
    web = _docs(read_text(corpus_path('webtext', 'train')))
    held = 100                                          # the last 100 WebText documents are held out from its tokenizer
    web_train, web_valid = web[:-held], web[-held:]
    out = {'machine': f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}",
           'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
           'data': {'tinystories': f"{find_corpus('tinystories', 'train')} + {find_corpus('tinystories_v1', 'train')}",
                    'webtext': str(find_corpus('webtext', 'train')), 'webtext_docs_train': len(web_train), 'webtext_docs_held_out': held}}
    toks = {}
    with tempfile.TemporaryDirectory() as d:
        jobs = {'tinystories': (Path(d)/'ts.txt', 10_000, ts_train), 'webtext': (Path(d)/'web.txt', 32_000, f'\n{EOT}\n'.join(web_train))}
        for name, (path, vocab_size, text) in jobs.items():
            path.write_text(text, encoding='utf-8')
            with ProcessPoolExecutor(1) as pool: sec, peak_mb, base_mb, vocab, merges, warned, prof = pool.submit(_train, (path, vocab_size)).result()
            toks[name] = Tokenizer(vocab, merges, [EOT])
            out[f'train_{name}'] = {'text_mb': len(text.encode()) / 1e6, 'vocab_asked': vocab_size, 'vocab': len(vocab),
                                    'merges': len(merges), 'seconds': sec, 'hours': sec / 3600, 'peak_rss_mb': peak_mb,
                                    'rss_before_mb': base_mb, 'longest_token': _longest(vocab), 'warnings': warned, 'profile': prof,
                                    'longest_tokens': [b.decode('utf-8', errors='replace') for b in sorted(vocab.values(), key=len, reverse=True)[:6]]}
    rng = random.Random(0)
    samples = {'tinystories': rng.sample(ts_valid, 10), 'webtext': rng.sample(web_valid, 10)}
    comp = {}
    for tname, tok in toks.items():
        for sname, docs in samples.items():
            text = '\n'.join(docs)
            comp[f'{tname}_tokenizer_on_{sname}'] = len(text.encode()) / len(tok.encode(text))
    out['compression_bytes_per_token'] = comp
    # throughput: the WebText tokenizer on the held-out WebText documents, best of three, fresh tokenizer each time
    text = '\n'.join(web_valid); mb = len(text.encode()) / 1e6
    best = min(_timed(Tokenizer(toks['webtext'].vocab, toks['webtext'].merges, [EOT]).encode, text) for _ in range(3))
    out['throughput'] = {'text_mb': mb, 'seconds': best, 'mb_per_s': mb / best, 'pile_825gb_hours': 825e3 / (mb / best) / 3600}
    ids = np.array(toks['webtext'].encode(text))
    out['uint16'] = {'max_id_tinystories': toks['tinystories'].vocab_size - 1, 'max_id_webtext': toks['webtext'].vocab_size - 1,
                     'fits': bool(ids.max() < 2**16 and toks['webtext'].vocab_size <= 2**16),
                     'round_trip': bool((ids.astype(np.uint16).astype(np.int64) == ids).all())}
    return out

def _timed(f, *a) -> float:
    t0 = time.perf_counter(); f(*a); return time.perf_counter() - t0

def main(argv=None) -> int:
    what = (argv or sys.argv[1:] or ['exact'])[0]
    if what == 'exact':
        for name, obj in exact().items(): _write(name, obj)
    elif what == 'bpe': _write('bpe.json', bpe())
    else: print(f'usage: python reports/answers/answers.py exact|bpe (not {what!r})', file=sys.stderr); return 2
    return 0

if __name__ == '__main__': sys.exit(main())
