"""KV cache vs recomputation: time to generate 512 new tokens greedily with a small TransformerLM on the CPU.

Usage: python reports/bench/bench_kvcache.py [--threads N] [--new_tokens 512]   (output kept in bench_kvcache.txt)
Both ways run in the same process, one after the other, so their ratio is fair even on a shared, noisy CPU;
the absolute times are not. The outputs must agree token for token (greedy decoding, float32).
"""
import argparse, datetime, os, platform, time
import torch
from llmcourse.generate import generate
from llmcourse.layers import TransformerLM

ap = argparse.ArgumentParser()
ap.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1: small models, shared machines)')
ap.add_argument('--new_tokens', type=int, default=512)
args = ap.parse_args()
torch.set_num_threads(args.threads)
config = dict(vocab_size=10_000, context_length=1024, d_model=256, num_layers=4, num_heads=8, d_ff=683, rope_theta=10_000.)
torch.manual_seed(0)
model = TransformerLM(**config).eval()
params = sum(p.numel() for p in model.parameters())
prompt = torch.randint(0, config['vocab_size'], (16,)).tolist()

print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} | {platform.platform()} | {platform.processor() or platform.machine()} "
      f"| {os.cpu_count()} CPUs (shared with other jobs: absolute times are noisy) | torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
print(f"model: {config} ({params / 1e6:.2f}M parameters), float32, CPU; prompt 16 tokens, {args.new_tokens} new tokens, greedy")
generate(model, prompt, 8, temperature=0)  # warm-up
generate(model, prompt, 8, temperature=0, use_cache=False)
times, outs = {}, {}
for use_cache in (True, False):
    t0 = time.perf_counter()
    outs[use_cache] = generate(model, prompt, args.new_tokens, temperature=0, use_cache=use_cache)
    times[use_cache] = time.perf_counter() - t0
    name = 'KV cache' if use_cache else 'recompute'
    print(f"{name:>10}: {times[use_cache]:7.2f} s  ({times[use_cache] / args.new_tokens * 1e3:6.2f} ms/token)")
same = sum(a == b for a, b in zip(outs[True], outs[False]))
print(f"identical tokens: {same}/{args.new_tokens}")
print(f"speed-up of the KV cache: {times[False] / times[True]:.1f}x")
