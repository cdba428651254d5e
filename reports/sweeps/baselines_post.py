"""Notebook 06a, experiments 1 and 2: what the committed metrics can't hold, written to reports/sweeps/baselines/post.json.

For every run of the `baselines` sweep: its parameter count, its training FLOPs per token (notebook 02's count for the
Transformers, `baseline_flops_per_token` for the baselines), and samples from its final checkpoint at greedy decoding and at
temperature 1 with top-p 0.8, 0.95 and 1.0; and the tokenizer's tokens per byte on the validation text, which turns the
validation loss into bits per byte, and the number of tokens of the whole training text. Run from the repository root after `python -m llmcourse.sweep configs/sweeps/baselines.json`
(it needs that sweep's checkpoints and tokenizers, which are not committed): `python reports/sweeps/baselines_post.py`.
"""
import json, math, sys, time
from pathlib import Path
import torch
from llmcourse.accounting import flops_per_token
from llmcourse.baselines import baseline_flops_per_token
from llmcourse.checkpoint import load_model_from_run
from llmcourse.data import tinystories_sample
from llmcourse.files import EOT, atomic_write
from llmcourse.generate import generate
from llmcourse.layers import ModelConfig
from llmcourse.sweep import load_sweep

HERE = Path(__file__).resolve().parent
SWEEP = HERE / 'baselines'
SETTINGS = [('greedy', 0.0, None), ('top-p 0.8', 1.0, 0.8), ('top-p 0.95', 1.0, 0.95), ('top-p 1.0', 1.0, 1.0)]
PROMPT, NEW_TOKENS, SEED = 'Once upon a time', 60, 0

def main() -> int:
    torch.set_num_threads(1)
    t0 = time.time()
    runs, out, tok = load_sweep(SWEEP), {}, None
    for run in runs.run:
        model, tok, config = load_model_from_run(SWEEP / run)
        cfg = ModelConfig.from_dict(config)
        prompt, eos = tok.encode(PROMPT), tok.encode(EOT)[0]
        samples = {}
        for name, temperature, top_p in SETTINGS:
            new = generate(model, prompt, NEW_TOKENS, temperature=temperature, top_p=top_p, eos_id=eos, seed=SEED)
            samples[name] = tok.decode(prompt + [int(i) for i in new]).replace(EOT, '').strip()
        out[run] = {'params': sum(p.numel() for p in model.parameters()),
                    'flops_per_token': flops_per_token(cfg) if cfg.arch == 'transformer' else baseline_flops_per_token(cfg),
                    'samples': samples}
    text = tinystories_sample('valid')
    tokens_per_byte = len(tok.encode(text)) / len(text.encode('utf-8'))
    train_tokens = len(tok.encode(tinystories_sample('train')))  # all of the training text: train_limit 0 in experiment 4
    result = {'prompt': PROMPT, 'max_new_tokens': NEW_TOKENS, 'seed': SEED, 'tokens_per_byte': tokens_per_byte, 'train_tokens': train_tokens,
              'runs': out, 'seconds': round(time.time() - t0, 1)}
    atomic_write(SWEEP / 'post.json', json.dumps(result, indent=2) + '\n')
    print(f"tokens per byte {tokens_per_byte:.4f}; {len(out)} runs in {result['seconds']} s")
    return 0

if __name__ == '__main__': sys.exit(main())
