"""One training step of the course's model in numpy (llmcourse.numpy_lm) against torch, at the main job's shape.

Usage: python reports/bench/bench_numpy.py [--repeats 7] > reports/bench/bench_numpy.md

A step is forward, backward, gradient clipping and an AdamW update, in float32, on one batch of 32 × 128 token ids, with
the sizes of configs/tinystories_sample.json. Both models start from the same weights (the numpy one is a copy of the
torch model's state dict). The script measures four things:
1. numpy vs torch (the course's TransformerLM, cross_entropy, gradient_clipping, AdamW), for each BLAS/torch thread count,
   each count in its own subprocess, because the thread pools are sized when numpy and torch load;
2. the speed-ups of notebook 08, put back one at a time from the drafts: one-hot cross-entropy, batched 3-D products for
   every Linear, np.add.at for the embedding gradient, cached attention probabilities; and whole-block recomputation;
3. activation memory: the bytes the tape keeps for the backward pass, and the peak that tracemalloc sees during a step,
   against notebook 02's formula (llmcourse.accounting.activation_bytes) for torch's autograd;
4. (in 1) step time against the thread count.
The machine is shared: contenders alternate, each keeps its best of --repeats, and the load average is printed with the times.
"""
import argparse, contextlib, datetime, json, os, platform, subprocess, sys, time, tracemalloc
from pathlib import Path

SHAPE = dict(vocab_size=2048, context_length=128, d_model=128, num_layers=3, num_heads=4, d_ff=384, rope_theta=10000.0)
BATCH = 32


def machine() -> str:
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name')), platform.machine()) \
        if Path('/proc/cpuinfo').exists() else platform.machine()
    return f"{platform.platform()} | {cpu} | {os.cpu_count()} CPUs"


def load() -> str: return ' '.join(f'{x:.2f}' for x in os.getloadavg())


# ---------------------------------------------------------------- the drafts, patched into llmcourse.numpy_lm one at a time

def linear_forward_3d(x, W):  # np.matmul broadcasts over the batch: B GEMMs of (T, in) @ (in, out)
    return x @ W.T, (x, W)

def linear_backward_3d(dy, cache):  # dW as B per-sequence products, stacked (B, out, in), then summed
    x, W = cache
    if dy.ndim == 2: return dy @ W, dy.T @ x
    return dy @ W, (dy.swapaxes(-1, -2) @ x).reshape(-1, *W.shape).sum(0)

def embedding_backward_add_at(dy, cache):
    import numpy as np
    ids, shape = cache
    dW = np.zeros(shape, dtype=dy.dtype)
    np.add.at(dW, ids.reshape(-1), dy.reshape(-1, shape[1]))
    return dW

def cross_entropy_forward_one_hot(logits, targets):
    import numpy as np
    onehot = np.eye(logits.shape[-1], dtype=logits.dtype)[targets]   # (N, V)
    m = logits.max(-1, keepdims=True)
    logp = logits - (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))
    return float(-(onehot * logp).sum() / len(targets)), (logp, onehot)

def cross_entropy_backward_one_hot(cache):
    import numpy as np
    logp, onehot = cache
    return (np.exp(logp) - onehot) * (1 / len(onehot))

DRAFTS = {'one-hot': dict(cross_entropy_forward=cross_entropy_forward_one_hot, cross_entropy_backward=cross_entropy_backward_one_hot),
          '3-D GEMMs': dict(linear_forward=linear_forward_3d, linear_backward=linear_backward_3d),
          'np.add.at': dict(embedding_backward=embedding_backward_add_at)}


@contextlib.contextmanager
def patched(module, replacements: dict):
    old = {k: getattr(module, k) for k in replacements}
    for k, v in replacements.items(): setattr(module, k, v)
    try: yield
    finally:
        for k, v in old.items(): setattr(module, k, v)


# ---------------------------------------------------------------- the two steps

def setup():
    import numpy as np, torch
    from llmcourse.layers import TransformerLM
    from llmcourse.numpy_lm import NumpyLM
    torch.manual_seed(0)
    model = TransformerLM(**SHAPE)
    x = torch.randint(0, SHAPE['vocab_size'], (BATCH, SHAPE['context_length']))
    y = torch.randint(0, SHAPE['vocab_size'], (BATCH, SHAPE['context_length']))
    return model, NumpyLM.from_state_dict(model.state_dict(), **SHAPE, dtype=np.float32), x, y


def torch_stepper(model):
    from llmcourse.optim import AdamW, cross_entropy, gradient_clipping
    params = list(model.parameters())
    opt = AdamW([{'params': [p for p in params if p.dim() >= 2], 'weight_decay': 0.1},
                 {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}], lr=1e-4, betas=(0.9, 0.95))
    def step(x, y):
        loss = cross_entropy(model(x), y)
        loss.backward()
        gradient_clipping(params, 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
        return loss.item()
    return step


def numpy_stepper(nmodel):
    from llmcourse.numpy_lm import AdamW, clip_gradients
    opt = AdamW(nmodel.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    def step(x, y):
        loss, grads = nmodel.loss_and_grads(x, y)
        clip_gradients(grads, 1.0)
        opt.step(grads)
        return loss
    return step


def best_of(contenders: dict, repeats: int) -> dict:
    "Alternate the contenders (name -> zero-argument callable), one call each per round; each keeps its best time."
    for f in contenders.values(): f()  # warm-up
    times = {k: [] for k in contenders}
    for _ in range(repeats):
        for k, f in contenders.items():
            t0 = time.perf_counter(); f(); times[k].append(time.perf_counter() - t0)
    return {k: (min(v), sorted(v)[len(v) // 2]) for k, v in times.items()}


def worker(threads: int, repeats: int):
    "Run in a subprocess with the thread count fixed in the environment: numpy vs torch, one JSON line out."
    import torch
    torch.set_num_threads(threads)
    model, nmodel, x, y = setup()
    xs, ys = x.numpy(), y.numpy()
    tstep, nstep = torch_stepper(model), numpy_stepper(nmodel)
    res = best_of({'numpy': lambda: nstep(xs, ys), 'torch': lambda: tstep(x, y)}, repeats)
    print(json.dumps({'threads': threads, **{k: v for k, v in res.items()}, 'load': load()}))


def run_script(argv: list, threads: int) -> str:
    "This script in a subprocess whose BLAS and OpenMP pools have `threads` threads; returns its stdout."
    env = {**os.environ, 'OPENBLAS_NUM_THREADS': str(threads), 'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)}
    return subprocess.run([sys.executable, __file__, *argv], env=env, capture_output=True, text=True, check=True).stdout.strip()

def run_threads(threads: int, repeats: int) -> dict:
    return json.loads(run_script(['--worker', str(threads), '--repeats', str(repeats)], threads).splitlines()[-1])


def variants_table(repeats: int, threads: int):
    "The speed-ups one at a time, and the memory each variant keeps; runs in this process (BLAS threads from the environment)."
    import numpy as np, torch
    import llmcourse.numpy_lm as nl
    from llmcourse.accounting import activation_bytes
    torch.set_num_threads(threads)
    model, nmodel, x, y = setup()
    xs, ys = x.numpy(), y.numpy()
    sd = model.state_dict()
    steps = [('drafts: one-hot CE, 3-D GEMMs, np.add.at, P kept', ['one-hot', '3-D GEMMs', 'np.add.at'], dict(keep_probs=True)),
             ('+ cross-entropy by gather (no one-hot)', ['3-D GEMMs', 'np.add.at'], dict(keep_probs=True)),
             ('+ 2-D GEMMs', ['np.add.at'], dict(keep_probs=True)),
             ('+ unique-token embedding backward', [], dict(keep_probs=True)),
             ('+ P rebuilt from log-sum-exps (exported default)', [], {}),
             ('  whole blocks recomputed instead', [], dict(recompute_blocks=True))]
    models = {name: nl.NumpyLM.from_state_dict(sd, **SHAPE, dtype=np.float32, **kw) for name, _, kw in steps}
    def run(name, drafts):
        with patched(nl, {k: v for d in drafts for k, v in DRAFTS[d].items()}):
            return models[name].loss_and_grads(xs, ys)
    ref_loss, ref_grads = run(steps[-2][0], [])
    for name, drafts, _ in steps:  # every variant computes the same loss and gradients
        loss, grads = run(name, drafts)
        assert abs(loss - ref_loss) < 1e-4 and all(np.abs(grads[k] - g).max() <= 1e-4 * np.abs(g).max() + 1e-7 for k, g in ref_grads.items()), name
    times = best_of({name: (lambda name=name, d=drafts: run(name, d)) for name, drafts, _ in steps}, repeats)
    mem = {}
    for name, drafts, _ in steps:
        with patched(nl, {k: v for d in drafts for k, v in DRAFTS[d].items()}):
            logits, tape = models[name].forward_tape(xs)
            kept = nl.tape_bytes(models[name], tape)['total'] + logits.nbytes
            del logits, tape
            tracemalloc.start(); tracemalloc.reset_peak()
            models[name].loss_and_grads(xs, ys)
            peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
        mem[name] = (kept, peak)
    return steps, times, mem, activation_bytes(SHAPE, batch_size=BATCH)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeats', type=int, default=7, help='rounds of alternating contenders; each keeps its best')
    ap.add_argument('--threads', type=int, nargs='+', default=[1, 2, 4], help='thread counts for numpy vs torch')
    ap.add_argument('--worker', type=int, help=argparse.SUPPRESS)
    ap.add_argument('--variants', type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None: return worker(args.worker, args.repeats)
    if args.variants is not None: return print(variants_section(args.variants, args.repeats))

    import numpy as np, torch
    tokens = BATCH * SHAPE['context_length']
    print(f"# numpy vs torch: one training step of the main job's model\n")
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} | {machine()} (shared with other jobs: absolute times are noisy)  ")
    print(f"numpy {np.__version__} (BLAS: {_blas_name()}), torch {torch.__version__}, python {platform.python_version()}  ")
    print(f"shape: {SHAPE}, batch {BATCH} ({tokens:,} tokens), float32; a step = forward + backward + clipping + AdamW  ")
    print(f"best of {args.repeats} alternating rounds (median in brackets); load average at start: {load()}\n")

    print("## numpy vs torch, by thread count\n")
    print("Each thread count runs in its own process (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS and torch.set_num_threads).\n")
    print("| threads | numpy step | torch step | numpy / torch | numpy tokens/s | torch tokens/s | load after |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    rows = {}
    for t in args.threads:
        r = rows[t] = run_threads(t, args.repeats)
        (nb, nm), (tb, tm) = r['numpy'], r['torch']
        print(f"| {t} | {nb * 1e3:.0f} ms ({nm * 1e3:.0f}) | {tb * 1e3:.0f} ms ({tm * 1e3:.0f}) | {nb / tb:.2f}x | {tokens / nb:,.0f} | {tokens / tb:,.0f} | {r['load']} |")
    best_n, best_t = min(rows.values(), key=lambda r: r['numpy'][0]), min(rows.values(), key=lambda r: r['torch'][0])
    print(f"\nEach at its best thread count: numpy {best_n['numpy'][0] * 1e3:.0f} ms ({best_n['threads']} thread(s)), torch "
          f"{best_t['torch'][0] * 1e3:.0f} ms ({best_t['threads']} thread(s)): numpy takes {best_n['numpy'][0] / best_t['torch'][0]:.2f}x torch's time.\n")

    # the thread pools are sized when numpy loads: the variants run in a subprocess at numpy's best thread count
    print(run_script(['--variants', str(best_n['threads']), '--repeats', str(args.repeats)], best_n['threads']))
    print(f"load average at end: {load()}")


def variants_section(threads: int, repeats: int) -> str:
    steps, times, mem, formula = variants_table(repeats, threads)
    out = [f"## The speed-ups, one at a time ({threads} thread(s))\n",
           "From the drafts of notebook 08 to the exported code, one change per row, timing `loss_and_grads` (the optimizer "
           "step is the same in every row); every row computes the same loss and gradients (checked). Memory: the bytes the tape keeps for the backward pass (plus the logits), and the peak that "
           "tracemalloc sees numpy allocate during `loss_and_grads` (forward, backward and the gradients).\n",
           "| variant | forward + backward | vs previous row | vs drafts | kept for backward | peak during step |", "|---|---:|---:|---:|---:|---:|"]
    first, prev = times[steps[0][0]][0], None
    for name, _, _ in steps:
        b, m = times[name]
        base = times[steps[-2][0]][0] if name.startswith('  ') else prev
        kept, peak = mem[name]
        out.append(f"| {name.strip()} | {b * 1e3:.0f} ms ({m * 1e3:.0f}) | {f'{base / b:.2f}x' if base else '—'} | {first / b:.2f}x "
                   f"| {kept / 2**20:.1f} MiB | {peak / 2**20:.1f} MiB |")
        if not name.startswith('  '): prev = b
    out.append(f"\nThe last row is compared with the exported default above it. Notebook 02's formula for what torch's autograd "
               f"saves at this shape: {formula['total'] / 2**20:.1f} MiB (" + ', '.join(f"{k} {v / 2**20:.1f}" for k, v in formula.items() if k != 'total') + ").\n")
    return '\n'.join(out)


def _blas_name() -> str:
    import numpy as np
    try:
        cfg = np.show_config(mode='dicts')
        b = cfg['Build Dependencies']['blas']
        return f"{b.get('name')} {b.get('version')}"
    except Exception: return 'unknown'


if __name__ == '__main__': main()
