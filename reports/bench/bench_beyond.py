"""Notebook 10's CPU measurements: GQA/MQA decoding, a mixture of experts against dense models, speculative decoding.

Usage: python reports/bench/bench_beyond.py gqa|moe|spec [--threads 1]
Each part writes reports/bench/bench_beyond_PART.json (read by nbs/10_beyond.ipynb) and prints a summary
(kept in bench_beyond_PART.txt). Everything runs on the CPU in one process, so ratios within a part are fair even on a
shared machine; absolute times are not. Models are byte-level (256 bytes + <|endoftext|> = 257 tokens) and trained on the
embedded TinyStories sample, so nothing outside the repository is needed. Costs on the 2-core shared build machine
(1 thread): gqa about 1 minute, moe about 4 minutes, spec about 4 minutes.
"""
import argparse, datetime, json, os, platform, time
from pathlib import Path
import torch
import torch.nn.functional as F
from llmcourse.accounting import active_param_counts, kv_cache_bytes, param_counts
from llmcourse.data import tinystories_sample
from llmcourse.generate import KVCache, generate, speculative_blocks
from llmcourse.layers import MoEFeedForward, TransformerLM, moe_aux_loss

HERE = Path(__file__).resolve().parent

def machine() -> str:
    return (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} | {platform.platform()} | "
            f"{os.cpu_count()} CPUs (shared with other jobs: absolute times are noisy) | torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s)")

def byte_data(split: str) -> torch.Tensor:
    "The embedded TinyStories split as byte ids, each end of story as id 256."
    raw = tinystories_sample(split).replace('\n<|endoftext|>\n', '\0').encode()  # the sample holds no NUL bytes
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
    data[data == 0] = 256
    return data

def batch(data, batch_size, context, gen):
    ix = torch.randint(0, len(data) - context - 1, (batch_size,), generator=gen)
    xy = torch.stack([data[i:i + context + 1] for i in ix])
    return xy[:, :-1], xy[:, 1:]

def train(model, steps, batch_size, context, lr, seed=0, balance_coef=0.0, z_coef=0.0, eval_every=None, val=None):
    "AdamW with a cosine schedule; returns the history of validation losses and MoE loads at each evaluation."
    data, gen = byte_data('train'), torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    history, t_train = [], 0.0
    for step in range(steps + 1):
        if eval_every and (step % eval_every == 0 or step == steps):
            history.append(dict(step=step, val_loss=evaluate(model, val, context), **moe_state(model)))
        if step == steps: break
        for g in opt.param_groups: g['lr'] = lr * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(step / steps * torch.pi)).item()))
        x, y = batch(data, batch_size, context, gen)
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten()) + moe_aux_loss(model, balance_coef, z_coef)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        t_train += time.perf_counter() - t0
    return history, steps * batch_size * context / t_train

@torch.no_grad()
def evaluate(model, val, context):
    "Mean loss over fixed validation windows (the same for every model)."
    x, y = val
    return sum(F.cross_entropy(model(x[i:i + 16]).flatten(0, 1), y[i:i + 16].flatten()).item() for i in range(0, len(x), 16)) / (len(x) // 16)

def moe_state(model):
    layers = [m for m in model.modules() if isinstance(m, MoEFeedForward)]
    if not layers: return {}
    return dict(load=[m.stats['load'].tolist() for m in layers], dropped=sum(m.stats['dropped'].item() for m in layers) / len(layers))

def val_windows(context, n=128):
    data = byte_data('valid')
    starts = torch.linspace(0, len(data) - context - 2, n).long()
    xy = torch.stack([data[i:i + context + 1] for i in starts])
    return xy[:, :-1], xy[:, 1:]

# --- GQA / MQA: cache memory and decoding speed at a long context ----------------------------------------------------------

def gqa():
    config = dict(vocab_size=4096, context_length=2048, d_model=256, num_layers=4, num_heads=8, d_ff=704, rope_theta=10_000.)
    prompt_len, new, rows = 1536, 64, []
    print(f"model: {config}, float32, CPU; prompt {prompt_len} tokens, {new} greedy tokens decoded with the KV cache")
    for kv in (8, 4, 2, 1):
        torch.manual_seed(0)
        model = TransformerLM(**config, num_kv_heads=kv).eval()
        prompt = torch.randint(0, 4096, (prompt_len,)).tolist()
        cache = KVCache(model, 1)
        measured = sum(t.nbytes for t in cache.k + cache.v)
        assert measured == kv_cache_bytes(config | dict(num_kv_heads=kv), 1)
        generate(model, prompt[:64], 4, temperature=0)  # warm-up
        best_prefill, best_total = float('inf'), float('inf')
        for _ in range(3):  # best of three: the prefill alone (one new token), then the prefill and `new` tokens
            t0 = time.perf_counter(); generate(model, prompt, 1, temperature=0); t1 = time.perf_counter()
            generate(model, prompt, new + 1, temperature=0); t2 = time.perf_counter()
            best_prefill, best_total = min(best_prefill, t1 - t0), min(best_total, t2 - t1)
        decode_s = best_total - best_prefill
        rows.append(dict(num_kv_heads=kv, params=param_counts(config | dict(num_kv_heads=kv))['total'], cache_bytes=measured,
                         cache_bytes_at_prompt=kv_cache_bytes(config | dict(num_kv_heads=kv), 1, prompt_len),
                         prefill_s=best_prefill, decode_tokens_per_s=new / decode_s))
        r = rows[-1]
        print(f"num_kv_heads {kv}: {r['params'] / 1e6:.2f}M params, cache {measured / 2**20:.1f} MiB for 2,048 tokens, "
              f"prefill {best_prefill:.2f} s, decoding {r['decode_tokens_per_s']:.1f} tokens/s "
              f"({r['decode_tokens_per_s'] / rows[0]['decode_tokens_per_s']:.2f}x MHA)")
    return dict(config=config, prompt_len=prompt_len, new_tokens=new, rows=rows)

# --- mixture of experts against dense models ------------------------------------------------------------------------------

MOE_BASE = dict(vocab_size=257, context_length=64, d_model=64, num_layers=2, num_heads=4, d_ff=192, rope_theta=10_000.)
MOE_RUNS = {  # name: (model overrides, balance-loss weight)
    'dense, d_ff 192 (= MoE active)': (dict(), 0.0),
    'dense, d_ff 768 (= MoE total)': (dict(d_ff=768), 0.0),
    'MoE 4 experts top-1, balance 0.01': (dict(num_experts=4, capacity_factor=1.25), 0.01),
    'MoE 4 experts top-1, no balance loss': (dict(num_experts=4, capacity_factor=1.25), 0.0),
    'MoE 4 experts top-2, balance 0.01': (dict(num_experts=4, moe_top_k=2, capacity_factor=1.25), 0.01),
}

def moe(steps=500):
    val, out = val_windows(64), {}
    print(f"base: {MOE_BASE}; {steps} steps of 16 x 64 bytes, AdamW lr 3e-3 cosine; capacity factor 1.25; eval every 50 steps")
    for name, (kw, balance) in MOE_RUNS.items():
        cfg = MOE_BASE | kw
        torch.manual_seed(0)
        model = TransformerLM(**cfg)
        history, tok_s = train(model, steps, 16, 64, 3e-3, balance_coef=balance, eval_every=50, val=val)
        out[name] = dict(config=cfg, balance_coef=balance, total_params=param_counts(cfg)['total'],
                         active_params=active_param_counts(cfg)['total'], tokens_per_s=tok_s, history=history)
        last = history[-1]
        extra = (f", dropped {last['dropped']:.1%}, last load {[round(x, 2) for x in last['load'][0]]}" if 'load' in last else '')
        print(f"{name:40s} total {out[name]['total_params']:>7,} active {out[name]['active_params']:>7,}: "
              f"val loss {last['val_loss']:.3f}, {tok_s:,.0f} training tokens/s{extra}")
    return dict(base=MOE_BASE, steps=steps, runs=out)

# --- speculative decoding with a trained draft and a trained target -------------------------------------------------------

TARGET = dict(vocab_size=257, context_length=128, d_model=128, num_layers=4, num_heads=4, d_ff=384, rope_theta=10_000.)
DRAFT = dict(vocab_size=257, context_length=128, d_model=32, num_layers=1, num_heads=2, d_ff=96, rope_theta=10_000.)

def spec(steps=400):
    val = val_windows(128)
    models = {}
    for name, cfg in (('target', TARGET), ('draft', DRAFT)):
        torch.manual_seed(0)
        models[name] = TransformerLM(**cfg)
        history, tok_s = train(models[name], steps, 8, 128, 3e-3, eval_every=steps, val=val)
        print(f"{name}: {cfg} ({param_counts(cfg)['total']:,} params), {steps} steps of 8 x 128 bytes: "
              f"val loss {history[-1]['val_loss']:.3f} nats/byte ({tok_s:,.0f} training tokens/s)")
        models[name].eval()
    target, draft = models['target'], models['draft']
    prompts = [list(s.encode()) for s in ('Once upon a time, there was a', 'Lily and Tom went to the park', 'The little dog was sad because')]
    new, rows = 96, []
    def timed(fn):
        t0 = time.perf_counter(); out = fn(); return out, time.perf_counter() - t0
    for temperature in (0.0, 1.0):
        generate(target, prompts[0], 8, temperature=temperature, seed=0)  # warm-up
        base_s = min(sum(timed(lambda: generate(target, p, new, temperature=temperature, seed=i))[1] for i, p in enumerate(prompts))
                     for _ in range(2))
        draft_s = min(sum(timed(lambda: generate(draft, p, new, temperature=temperature, seed=i))[1] for i, p in enumerate(prompts))
                      for _ in range(2))
        rows.append(dict(temperature=temperature, draft_tokens=0, tokens_per_s=len(prompts) * new / base_s, speedup=1.0,
                         acceptance=None, tokens_per_pass=1.0, draft_alone_tokens_per_s=len(prompts) * new / draft_s))
        print(f"T={temperature}: target alone {rows[-1]['tokens_per_s']:.0f} tokens/s, draft alone {rows[-1]['draft_alone_tokens_per_s']:.0f} tokens/s")
        for k in (1, 2, 3, 4, 6, 8):
            best, passes, accepted, proposed = float('inf'), 0, 0, 0
            for rep in range(2):
                t0, blocks = time.perf_counter(), []
                for i, p in enumerate(prompts):
                    gen = torch.Generator().manual_seed(i)
                    blocks += list(speculative_blocks(target, draft, p, new, k, temperature, generator=gen))
                best = min(best, time.perf_counter() - t0)
            passes = len(blocks)
            proposed = sum(d for _, d in blocks)
            accepted = sum(len(b) - 1 for b, d in blocks)  # every pass adds one token of the target's own
            if temperature == 0:  # greedy speculative decoding is the target's own greedy text
                assert [t for b, _ in blocks for t in b][:new] == generate(target, prompts[0], new, temperature=0)
            rows.append(dict(temperature=temperature, draft_tokens=k, tokens_per_s=len(prompts) * new / best,
                             speedup=base_s / best, acceptance=accepted / proposed, tokens_per_pass=len(prompts) * new / passes))
            r = rows[-1]
            print(f"T={temperature} k={k}: acceptance {r['acceptance']:.2f}, {r['tokens_per_pass']:.2f} tokens per target pass, "
                  f"{r['tokens_per_s']:.0f} tokens/s, speed-up {r['speedup']:.2f}x over the target alone")
    samples = {k: bytes(t for t in generate(target, prompts[0], new, temperature=0, draft_model=draft, draft_tokens=k) if t < 256).decode(errors='replace')
               for k in (4,)}
    return dict(target=TARGET, draft=DRAFT, steps=steps, new_tokens=new, prompts=len(prompts), rows=rows,
                target_params=param_counts(TARGET)['total'], draft_params=param_counts(DRAFT)['total'], greedy_sample=samples[4])

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('part', choices=['gqa', 'moe', 'spec'])
    ap.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1: small models, shared machines)')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    t0 = time.perf_counter()
    result = dict(machine=machine()) | {'gqa': gqa, 'moe': moe, 'spec': spec}[args.part]()
    result['seconds'] = time.perf_counter() - t0
    print(f"({result['seconds']:.0f} s)")
    (HERE / f'bench_beyond_{args.part}.json').write_text(json.dumps(result, indent=1) + '\n')
