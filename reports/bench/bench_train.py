"""Training throughput of llmcourse's Transformer vs HF transformers' LlamaForCausalLM at the same shape, in one run.

    python reports/bench/bench_train.py            # CS336 TinyStories config on a GPU (bf16, torch.compile); --small on a CPU
    python reports/bench/bench_train.py --small    # a small shape that runs on a CPU in a minute

The CS336 TinyStories config: vocab 10,000, context 256, d_model 512, 4 layers, 16 heads, d_ff 1,344, RoPE theta 10,000,
batch 128 (32,768 tokens per step). Both models train on the same synthetic random tokens with AdamW, the same autocast dtype
and the same compile setting; tokens/s are measured over timed steps after warm-up (compilation) steps. MFU counts the model
FLOPs of llmcourse.accounting (forward + backward) against the device's peak. The step-time breakdown (forward + loss,
backward, optimizer, and the output layer + loss alone) says where the time goes before any tuning.
"""
from __future__ import annotations
import argparse, contextlib, json, platform, sys, time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing
from llmcourse.accounting import mfu
from llmcourse.layers import TransformerLM
from llmcourse.optim import AdamW, cross_entropy
from llmcourse.train import autocast_for, train_step

CS336 = dict(vocab_size=10_000, context_length=256, d_model=512, num_layers=4, num_heads=16, d_ff=1344, rope_theta=10_000.0)
SMALL = dict(vocab_size=2048, context_length=128, d_model=128, num_layers=2, num_heads=4, d_ff=384, rope_theta=10_000.0)


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def timed(fn, steps, device):
    sync(device); t = time.perf_counter()
    for _ in range(steps): fn()
    sync(device)
    return (time.perf_counter() - t) / steps


def batches(cfg, batch_size, device, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = [torch.randint(0, cfg['vocab_size'], (batch_size, cfg['context_length'] + 1), generator=g) for _ in range(n)]
    data = [d.to(device) for d in data]
    i = 0
    def next_batch():
        nonlocal i
        d = data[i % n]; i += 1
        return d[:, :-1], d[:, 1:]
    return next_batch


def mfu_of(tokens_per_sec, cfg, device, dtype):
    return mfu(tokens_per_sec, cfg, torch.cuda.get_device_name(device), dtype) if device.type == 'cuda' else None


def bench_ours(cfg, batch_size, device, dtype, compile_, warmup, steps):
    torch.manual_seed(0)
    model = TransformerLM(**cfg, device=device)
    opt = AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    net = torch.compile(model) if compile_ else model
    amp, nb = autocast_for(device, dtype), batches(cfg, batch_size, device)
    step = lambda: train_step(net, opt, nb, 1, 1e-3, 1.0, 0.0, amp)
    for _ in range(warmup): step()
    # where the step time goes: forward + loss, + backward, and the output layer + loss alone
    def fwd():
        with torch.no_grad(), amp: cross_entropy(net(nb()[0]), nb()[1])
    def fwd_bwd():
        x, y = nb()
        with amp: loss = cross_entropy(net(x), y)
        loss.backward()
    h = torch.randn(batch_size, cfg['context_length'], cfg['d_model'], device=device, requires_grad=True)
    y = nb()[1]
    head = model.lm_head
    def head_loss():
        with amp: loss = cross_entropy(head(h), y)
        loss.backward()
    for f in (fwd, fwd_bwd, head_loss): f(); f()
    def breakdown(dt):
        t_f, t_fb, t_head = (min(timed(f, max(2, steps // 2), device) for _ in range(2)) for f in (fwd, fwd_bwd, head_loss))
        opt.zero_grad(set_to_none=True)
        return dict(forward_and_loss=t_f, backward=max(t_fb - t_f, 0.0), optimizer_and_clip=max(dt - t_fb, 0.0),
                    output_layer_and_loss_fwd_bwd=t_head)
    return step, sum(p.numel() for p in model.parameters()), breakdown


def bench_hf(cfg, batch_size, device, dtype, compile_, warmup, steps):
    try: from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError: return None
    torch.manual_seed(0)
    conf = LlamaConfig(vocab_size=cfg['vocab_size'], hidden_size=cfg['d_model'], intermediate_size=cfg['d_ff'],
                       num_hidden_layers=cfg['num_layers'], num_attention_heads=cfg['num_heads'],
                       num_key_value_heads=cfg['num_heads'], max_position_embeddings=cfg['context_length'],
                       rope_theta=cfg['rope_theta'], tie_word_embeddings=False, attention_bias=False, mlp_bias=False)
    conf._attn_implementation = 'sdpa'
    model = LlamaForCausalLM(conf).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                            fused=device.type == 'cuda')
    net = torch.compile(model) if compile_ else model
    amp, nb = autocast_for(device, dtype), batches(cfg, batch_size, device)
    def step():
        x, y = nb()
        with amp: logits = net(input_ids=x).logits
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
    for _ in range(warmup): step()
    return step, sum(p.numel() for p in model.parameters())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--small', action='store_true', help='a small shape (automatic without CUDA)')
    ap.add_argument('--batch_size', type=int, default=None, help='default: 128 (CS336), 8 (--small)')
    ap.add_argument('--steps', type=int, default=None, help='timed steps (default: 50 on CUDA, 5 on a CPU)')
    ap.add_argument('--warmup', type=int, default=None, help='untimed steps first (default: 10 on CUDA, 2 on a CPU)')
    ap.add_argument('--rounds', type=int, default=3, help='alternating timing rounds; the best of each model is reported')
    ap.add_argument('--no_compile', action='store_true', help='skip torch.compile (on by default on CUDA, off on a CPU)')
    ap.add_argument('--dtype', choices=['bf16', 'fp32'], default=None, help='autocast dtype (default: bf16 on CUDA, fp32 on a CPU)')
    args = ap.parse_args(argv)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    cuda = device.type == 'cuda'
    small = args.small or not cuda
    cfg = SMALL if small else CS336
    batch_size = args.batch_size or (8 if small else 128)
    steps, warmup = args.steps or (50 if cuda else 5), args.warmup or (10 if cuda else 2)
    compile_ = cuda and not args.no_compile
    dtype = args.dtype or ('bf16' if cuda else 'fp32')
    if cuda: torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; {dtype}; compile={compile_}")
    print(f"shape: {'small (CPU) ' if small else 'CS336 TinyStories '}{json.dumps(cfg)}, batch {batch_size} "
          f"({batch_size * cfg['context_length']:,} tokens/step); synthetic random tokens; {warmup} warm-up + {steps} timed steps")
    tokens = batch_size * cfg['context_length']
    ours_step, n, breakdown = bench_ours(cfg, batch_size, device, dtype, compile_, warmup, steps)
    hf = bench_hf(cfg, batch_size, device, dtype, compile_, warmup, steps)
    # Alternate the two in rounds and keep each one's best round: on a shared machine this cancels most of the noise.
    t_ours, t_hf = [], []
    for _ in range(args.rounds):
        t_ours.append(timed(ours_step, steps, device))
        if hf: t_hf.append(timed(hf[0], steps, device))
    dt = min(t_ours)
    ours = tokens / dt
    m = mfu_of(ours, cfg, device, dtype)
    print(f"llmcourse TransformerLM: {n / 1e6:.2f}M params, {dt * 1e3:.1f} ms/step, {ours:,.0f} tokens/s"
          + (f", MFU {m:.1%}" if m is not None else ", MFU n/a (no peak FLOPs for this device)")
          + f"  [rounds: {', '.join(f'{t * 1e3:.0f}' for t in t_ours)} ms]")
    print("  step-time breakdown (each part timed on its own):")
    for k, v in breakdown(dt).items(): print(f"    {k:32s} {v * 1e3:8.1f} ms ({v / dt:5.1%} of a step)")
    if hf is None:
        print("HF transformers LlamaForCausalLM: not run (transformers is not installed: pip install transformers)")
    else:
        import transformers
        hdt = min(t_hf)
        theirs = tokens / hdt
        hm = mfu_of(theirs, cfg, device, dtype)
        print(f"HF LlamaForCausalLM (transformers {transformers.__version__}): {hf[1] / 1e6:.2f}M params, {hdt * 1e3:.1f} ms/step, "
              f"{theirs:,.0f} tokens/s" + (f", MFU {hm:.1%}" if hm is not None else '')
              + f"  [rounds: {', '.join(f'{t * 1e3:.0f}' for t in t_hf)} ms]")
        print(f"ratio llmcourse / HF: {ours / theirs:.2f}x (best round of each)")
    if not small: print(f"goal on one H100 at this config: >= 3.5M tokens/s; measured {ours / 1e6:.2f}M tokens/s")


if __name__ == '__main__': main()
