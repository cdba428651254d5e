"""Notebook 06, experiment 5: samples from the best baseline run of the ablation sweep, written to reports/sweeps/samples.json.

Run from the repository root after `python -m llmcourse.sweep configs/sweeps/ablations.json` (it needs that sweep's
checkpoints, which are not committed): `python reports/sweeps/samples.py`.
"""
import json, sys
from pathlib import Path
import torch
from llmcourse.checkpoint import load_model_from_run
from llmcourse.files import EOT, atomic_write
from llmcourse.generate import generate
from llmcourse.sweep import load_sweep

HERE = Path(__file__).resolve().parent
SETTINGS = [('greedy (temperature 0)', 0.0, None), ('temperature 0.7', 0.7, None), ('temperature 1.0', 1.0, None),
            ('temperature 1.0, top-p 0.9', 1.0, 0.9)]
PROMPT, NEW_TOKENS, SEED = 'Once upon a time', 120, 0

def main() -> int:
    torch.set_num_threads(1)
    runs = load_sweep(HERE / 'ablations')
    base = runs[(runs.variant == 'baseline') & (runs.status == 'finished')]
    best = base.loc[base.final_val_loss.idxmin()]
    model, tok, _ = load_model_from_run(HERE / 'ablations' / best.run)
    prompt, eos = tok.encode(PROMPT), tok.encode(EOT)
    out = []
    for name, temperature, top_p in SETTINGS:
        new = generate(model, prompt, NEW_TOKENS, temperature=temperature, top_p=top_p, eos_id=eos[0], seed=SEED)
        out.append({'setting': name, 'temperature': temperature, 'top_p': top_p, 'new_tokens': len(new),
                    'text': tok.decode(prompt + [int(i) for i in new]).replace(EOT, '').strip()})
    result = {'run': f"ablations/{best.run}", 'final_val_loss': float(best.final_val_loss), 'prompt': PROMPT,
              'max_new_tokens': NEW_TOKENS, 'seed': SEED, 'samples': out}
    atomic_write(HERE / 'samples.json', json.dumps(result, indent=2) + '\n')
    for s in out: print(f"--- {s['setting']}\n{s['text']}\n")
    return 0

if __name__ == '__main__': sys.exit(main())
