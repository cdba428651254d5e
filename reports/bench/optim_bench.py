"""Speed of llmcourse.optim against its PyTorch peers, measured in one run on the same machine.

cross_entropy forward+backward vs F.cross_entropy, and one AdamW step vs torch.optim.AdamW, interleaved so that the
ratios share whatever else the machine is doing. Usage: python reports/bench/optim_bench.py [--device cuda]
"""
import argparse, platform, statistics, time

import torch
import torch.nn.functional as F

from llmcourse.optim import AdamW, cross_entropy


def timeit(fn, device, reps):
    "Median seconds of fn() over reps runs, after two warm-up runs."
    for _ in range(2): fn()
    out = []
    for _ in range(reps):
        if device == 'cuda': torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == 'cuda': torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def bench_loss(device, n, vocab_size, dtype, reps):
    torch.manual_seed(0)
    logits = torch.randn(n, vocab_size, device=device, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, vocab_size, (n,), device=device)
    def ours():
        logits.grad = None
        cross_entropy(logits, targets).backward()
    def peer():
        logits.grad = None
        F.cross_entropy(logits.float() if dtype != torch.float32 else logits, targets).backward()
    times = {}
    for _ in range(3):  # interleave the two, keep each one's best median
        for name, fn in (('ours', ours), ('torch', peer)):
            times[name] = min(times.get(name, 1e9), timeit(fn, device, reps))
    return times


def bench_adamw(device, shapes, foreach, reps):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, device=device)) for s in shapes]
    for p in params: p.grad = torch.randn_like(p)
    ours = AdamW(params, foreach=foreach)
    peer = torch.optim.AdamW(params, foreach=foreach)
    times = {}
    for _ in range(3):
        for name, opt in (('ours', ours), ('torch', peer)):
            times[name] = min(times.get(name, 1e9), timeit(opt.step, device, reps))
    return times


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = ap.parse_args()
    dev = args.device
    name = torch.cuda.get_device_name() if dev == 'cuda' else f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads'
    print(f'# device: {dev} ({name}); torch {torch.__version__}')
    n = 128 * 256 if dev == 'cuda' else 2048
    for dtype in (torch.float32, torch.bfloat16):
        t = bench_loss(dev, n, 10_000, dtype, reps=20 if dev == 'cuda' else 5)
        print(f'cross_entropy fwd+bwd ({n}, 10000) {str(dtype)[6:]:>8}: ours {t["ours"]*1e3:8.2f} ms, '
              f'F.cross_entropy {t["torch"]*1e3:8.2f} ms, ratio ours/torch {t["ours"]/t["torch"]:.2f}')
    # a 4-layer d_model=512 Transformer's parameter shapes (embedding, per layer: 4 attention + 3 SwiGLU + 2 norms, lm_head)
    shapes = [(10_000, 512)] + [s for _ in range(4) for s in [(512, 512)] * 4 + [(1344, 512), (512, 1344), (1344, 512), (512,), (512,)]] + [(512,), (10_000, 512)]
    for foreach in (False, True):
        t = bench_adamw(dev, shapes, foreach, reps=50 if dev == 'cuda' else 5)
        print(f'AdamW step, {len(shapes)} tensors, foreach={foreach!s:5}: ours {t["ours"]*1e3:8.2f} ms, '
              f'torch.optim.AdamW {t["torch"]*1e3:8.2f} ms, ratio ours/torch {t["ours"]/t["torch"]:.2f}')
