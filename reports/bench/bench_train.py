"""Training throughput of llmcourse's Transformer vs HF transformers' LlamaForCausalLM and GPT2LMHeadModel at one shape, in one run.

    python reports/bench/bench_train.py     # on a GPU: the CS336 TinyStories config (bf16, torch.compile)
    python reports/bench/bench_train.py --threads 1 --clock cpu --compile best               # on a CPU: the small shape
    python reports/bench/bench_train.py --threads 1 --clock cpu --compile best --shape medium

The CS336 TinyStories config: vocab 10,000, context 256, d_model 512, 4 layers, 16 heads, d_ff 1,344, RoPE theta 10,000,
batch 128 (32,768 tokens per step). Every model trains on the same synthetic random tokens with AdamW, the same autocast
dtype and the same compile setting; tokens/s are measured over timed steps after warm-up (compilation) steps, in rounds
that alternate the contenders, keeping each one's best round. MFU counts the model FLOPs of llmcourse.accounting (forward +
backward) against the device's peak. The step-time breakdown (forward + loss, backward, optimizer, the output layer + loss
alone, and the pieces inside the blocks) says where the time goes. On a shared CPU machine, `--threads 1 --clock cpu` times
the process's CPU seconds, which other jobs do not inflate (wall time on a loaded machine varies by 2x between rounds).

Two peers: LlamaForCausalLM is the same architecture (RMSNorm, RoPE, SwiGLU, untied head), so tokens/s compare directly.
GPT2LMHeadModel is the GPT-2 layout nanoGPT also trains (LayerNorm, learned positions, GELU MLP of 4 · d_model, tied head,
fused QKV): a different model of about the same size, so the fair comparison is model FLOP/s, each model's own training
FLOPs per token (llmcourse.accounting: a 2-matrix MLP of d_ff = 4 · d_model) times its tokens/s. `--compile best` times
every contender eager and compiled and keeps its faster setting.
"""
from __future__ import annotations
import argparse, contextlib, json, platform, sys, time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing
from llmcourse.accounting import flops_per_token, mfu
from llmcourse.layers import TransformerLM
from llmcourse.optim import AdamW, cross_entropy
from llmcourse.train import autocast_for, train_step

CS336 = dict(vocab_size=10_000, context_length=256, d_model=512, num_layers=4, num_heads=16, d_ff=1344, rope_theta=10_000.0)
SMALL = dict(vocab_size=2048, context_length=128, d_model=128, num_layers=2, num_heads=4, d_ff=384, rope_theta=10_000.0)
MEDIUM = dict(vocab_size=4096, context_length=256, d_model=256, num_layers=4, num_heads=8, d_ff=704, rope_theta=10_000.0)
SHAPES = {'small': (SMALL, 8), 'medium': (MEDIUM, 4), 'cs336': (CS336, 128)}  # shape, default batch size


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


CLOCK = time.perf_counter  # --clock cpu: time.process_time, this process's CPU seconds, which other jobs on the machine don't inflate


def timed(fn, steps, device):
    sync(device); t = CLOCK()
    for _ in range(steps): fn()
    sync(device)
    return (CLOCK() - t) / steps


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
    # the pieces inside the blocks, each forward + backward on its own at the shapes the model gives it, times its count
    B, T, d, L, H = batch_size, cfg['context_length'], cfg['d_model'], cfg['num_layers'], cfg['num_heads']
    leaf = lambda *shape: torch.randn(*shape, device=device, requires_grad=True)
    block = model.layers[0]
    qk, v, xs, a, b = leaf(B, H, T, d // H), leaf(B, H, T, d // H), leaf(B, T, d), leaf(B, T, cfg['d_ff']), leaf(B, T, cfg['d_ff'])
    def backward_of(f):
        def run():
            with amp: out = f()
            out.backward(torch.ones_like(out))
        return run
    pieces = {  # name: (forward + backward, how many per step)
        'attention + FFN sublayers of the blocks': (backward_of(lambda: block.ffn(block.attn(xs))), L),
        '  of which the fused attention kernel': (backward_of(lambda: F.scaled_dot_product_attention(qk, qk, v, is_causal=True)), L),
        '  of which RoPE (on q and k)': (backward_of(lambda: block.attn.rope(qk)), 2 * L),
        '  of which the SwiGLU gate silu(a) * b': (backward_of(lambda: torch.sigmoid(a) * a * b), L),
        'RMSNorms (2 per block + final)': (backward_of(lambda: block.ln1(xs)), 2 * L + 1),
    }
    for f in (fwd, fwd_bwd, head_loss, *(f for f, _ in pieces.values())): f(); f()  # warm up
    def breakdown(dt):
        t_f, t_fb, t_head = (min(timed(f, max(2, steps // 2), device) for _ in range(2)) for f in (fwd, fwd_bwd, head_loss))
        parts = {k: n * min(timed(f, max(2, steps // 2), device) for _ in range(2)) for k, (f, n) in pieces.items()}
        opt.zero_grad(set_to_none=True)
        return dict(forward_and_loss=t_f, backward=max(t_fb - t_f, 0.0), optimizer_and_clip=max(dt - t_fb, 0.0),
                    output_layer_and_loss_fwd_bwd=t_head, **parts)
    return step, sum(p.numel() for p in model.parameters()), breakdown


def hf_step(model, cfg, batch_size, device, dtype, compile_, warmup):
    "A training step of a transformers causal LM (torch's AdamW, F.cross_entropy, clipping), after `warmup` untimed steps."
    model = model.to(device)
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


def bench_hf(cfg, batch_size, device, dtype, compile_, warmup, steps):
    try: from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError: return None
    torch.manual_seed(0)
    conf = LlamaConfig(vocab_size=cfg['vocab_size'], hidden_size=cfg['d_model'], intermediate_size=cfg['d_ff'],
                       num_hidden_layers=cfg['num_layers'], num_attention_heads=cfg['num_heads'],
                       num_key_value_heads=cfg['num_heads'], max_position_embeddings=cfg['context_length'],
                       rope_theta=cfg['rope_theta'], tie_word_embeddings=False, attention_bias=False, mlp_bias=False)
    conf._attn_implementation = 'sdpa'
    return hf_step(LlamaForCausalLM(conf), cfg, batch_size, device, dtype, compile_, warmup)


def bench_gpt2(cfg, batch_size, device, dtype, compile_, warmup, steps):
    try: from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError: return None
    torch.manual_seed(0)
    conf = GPT2Config(vocab_size=cfg['vocab_size'], n_positions=cfg['context_length'], n_embd=cfg['d_model'],
                      n_layer=cfg['num_layers'], n_head=cfg['num_heads'], n_inner=4 * cfg['d_model'], bos_token_id=0,
                      eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)
    conf._attn_implementation = 'sdpa'
    return hf_step(GPT2LMHeadModel(conf), cfg, batch_size, device, dtype, compile_, warmup)


GPT2_LAYOUT = lambda cfg: {**cfg, 'ffn': 'silu', 'd_ff': 4 * cfg['d_model']}  # GPT-2's MLP for the FLOP count: 2 matrices, 4·d


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--shape', choices=list(SHAPES), default=None,
                    help='small: the main job\'s model (CPU default); medium: 4 layers of width 256, context 256 (a larger CPU shape); '
                         'cs336: the handout\'s TinyStories model (CUDA default)')
    ap.add_argument('--small', action='store_true', help='same as --shape small')
    ap.add_argument('--batch_size', type=int, default=None, help='default: 128 (cs336), 8 (small), 4 (medium)')
    ap.add_argument('--steps', type=int, default=None, help='timed steps (default: 50 on CUDA, 5 on a CPU)')
    ap.add_argument('--warmup', type=int, default=None, help='untimed steps first (default: 10 on CUDA, 2 on a CPU)')
    ap.add_argument('--rounds', type=int, default=3, help='alternating timing rounds; the best of each model is reported')
    ap.add_argument('--compile', choices=['off', 'on', 'best'], default=None,
                    help='torch.compile every model, none, or time both and keep each one\'s faster (default: on with CUDA, off on a CPU)')
    ap.add_argument('--no_compile', action='store_true', help='same as --compile off')
    ap.add_argument('--dtype', choices=['bf16', 'fp32'], default=None, help='autocast dtype (default: bf16 on CUDA, fp32 on a CPU)')
    ap.add_argument('--threads', type=int, default=0, help='CPU threads for torch (default: torch\'s own, one per core)')
    ap.add_argument('--clock', choices=['wall', 'cpu'], default='wall',
                    help='wall: elapsed seconds; cpu: the process\'s CPU seconds (with --threads 1, robust to a loaded machine)')
    args = ap.parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    global CLOCK
    if args.clock == 'cpu':
        if torch.cuda.is_available(): ap.error('--clock cpu measures CPU work; on a GPU use the wall clock')
        CLOCK = time.process_time
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    cuda = device.type == 'cuda'
    shape = 'small' if args.small else args.shape or ('cs336' if cuda else 'small')
    small = shape != 'cs336'
    cfg, batch_size = SHAPES[shape]
    batch_size = args.batch_size or batch_size
    steps, warmup = args.steps or (50 if cuda else 5), args.warmup or (10 if cuda else 2)
    compile_mode = 'off' if args.no_compile else args.compile or ('on' if cuda else 'off')
    dtype = args.dtype or ('bf16' if cuda else 'fp32')
    if cuda: torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; {dtype}; compile={compile_mode}; clock={args.clock}")
    print(f"shape: {shape} {json.dumps(cfg)}, batch {batch_size} "
          f"({batch_size * cfg['context_length']:,} tokens/step); synthetic random tokens; {warmup} warm-up + {steps} timed steps")
    tokens = batch_size * cfg['context_length']
    t_flops = {'ours': flops_per_token(cfg, True), 'llama': flops_per_token(cfg, True), 'gpt2': flops_per_token(GPT2_LAYOUT(cfg), True)}
    settings = {'off': [False], 'on': [True], 'best': [False, True]}[compile_mode]
    builders = {'ours': bench_ours, 'llama': bench_hf, 'gpt2': bench_gpt2}
    contenders = {}  # (name, compiled) -> (step, params[, breakdown])
    for c in settings:
        for key, build in builders.items():
            got = build(cfg, batch_size, device, dtype, c, warmup, steps)
            if got is not None: contenders[key, c] = got
    # Alternate every contender in rounds and keep each one's best round: on a shared machine this cancels most of the noise.
    times = {k: [] for k in contenders}
    for _ in range(args.rounds):
        for k, got in contenders.items(): times[k].append(timed(got[0], steps, device))
    best = {}  # name -> (seconds per step, compiled)
    for (key, c), ts in times.items():
        if key not in best or min(ts) < best[key][0]: best[key] = (min(ts), c)
    labels = {'ours': 'llmcourse TransformerLM', 'llama': 'HF LlamaForCausalLM', 'gpt2': 'HF GPT2LMHeadModel'}
    import importlib.util
    hf_version = (__import__('transformers').__version__ if importlib.util.find_spec('transformers') else None)
    for key in builders:
        if key not in best:
            print(f"{labels[key]}: not run (transformers is not installed: pip install transformers)"); continue
        dt, c = best[key]
        n = contenders[key, c][1]
        tps = tokens / dt
        m = mfu_of(tps, GPT2_LAYOUT(cfg) if key == 'gpt2' else cfg, device, dtype)
        rounds = '; '.join(f"{'compiled' if cc else 'eager'} " + ', '.join(f'{t * 1e3:.0f}' for t in times[kk, cc])
                           for (kk, cc) in times if kk == key)
        print(f"{labels[key]}{'' if key == 'ours' else f' (transformers {hf_version})'}: {n / 1e6:.2f}M params, "
              f"{dt * 1e3:.1f} ms/step, {tps:,.0f} tokens/s, {tps * t_flops[key] / 1e9:.2f} model GFLOP/s "
              f"({t_flops[key] / 1e6:.2f} MFLOP/token), best {'compiled' if c else 'eager'}"
              + (f", MFU {m:.1%}" if m is not None else '') + f"  [rounds, ms: {rounds}]")
        if key == 'ours':
            c0 = False if ('ours', False) in times else c  # profile the eager step where it ran: its parts add up
            dt0 = min(times['ours', c0])
            print(f"  where the {'eager' if not c0 else 'compiled'} step's {dt0 * 1e3:.1f} ms go (each part timed on its own):")
            for k, v in contenders['ours', c0][2](dt0).items(): print(f"    {k:58s} {v * 1e3:8.1f} ms ({v / dt0:5.1%} of a step)")
    ours = tokens / best['ours'][0]
    for key in ('llama', 'gpt2'):
        if key in best:
            r_tok, r_flop = best[key][0] / best['ours'][0], best[key][0] / best['ours'][0] * t_flops['ours'] / t_flops[key]
            print(f"ratio llmcourse / {labels[key]}: {r_tok:.2f}x tokens/s, {r_flop:.2f}x model FLOP/s (best setting of each)")
    if not small: print(f"goal on one H100 at this config: >= 3.5M tokens/s; measured {ours / 1e6:.2f}M tokens/s")


if __name__ == '__main__': main()
