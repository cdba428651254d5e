"""Notebook 09's prediction, written before its run: fit the IsoFLOP runs of the budgets up to 1e12 FLOPs (the four that had
finished when it was made: the build machine's load, 13-25 on 2 cores, would not have let a run 4x the fifth budget finish in
the session), predict the compute-optimal model and its loss at 4e12 FLOPs (4x the largest fitted budget), write
reports/scaling/prediction.json and the one-point sweep file that runs it, configs/sweeps/isoflop_prediction.json.
Run from the repository root: python reports/scaling/predict.py"""
import json, re, subprocess, time
from pathlib import Path
from llmcourse.files import atomic_write
from llmcourse.scaling import bootstrap_power_laws, fit_chinchilla, predict_run, read_runs

BUDGET, FITTED_MAX, TOKENS_PER_STEP = 4e12, 1e12, 8 * 128
log = Path('reports/sweeps/isoflop/sweep.log').read_text()
train_tokens = int(re.search(r'tokenized tinystories_sample \(train\): ([\d,]+) tokens', log).group(1).replace(',', ''))
runs = read_runs('reports/sweeps/isoflop', train_tokens)
runs = runs[runs.C <= FITTED_MAX].reset_index(drop=True)
assert len(runs) == 28, f"{len(runs)} finished runs up to {FITTED_MAX:g}: those budgets are not done"
fit = fit_chinchilla(runs.N, runs.D, runs.loss)
p = predict_run(runs, fit, BUDGET, TOKENS_PER_STEP, vocab_size=512)
p |= {'fit': fit, 'exponents_bootstrap_90': bootstrap_power_laws(runs, n_boot=1000), 'fitted_budgets': sorted(runs.C.unique()),
      'fitted_runs': len(runs), 'runs_commit': subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip(),
      'made_at': time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()),
      'note': 'loss_parametric is the prediction under test; loss_minima_law (the IsoFLOP minima as a pure power law of C) a second opinion'}
atomic_write('reports/scaling/prediction.json', json.dumps(p, indent=2) + '\n')
s = p['shape']
base = json.loads(Path('configs/sweeps/isoflop.json').read_text())
spec = {'_comment': (f"Notebook 09's prediction put to the test: the model reports/scaling/prediction.json chose for C = {BUDGET:g} training FLOPs "
                     f"(4x the largest budget it was fitted on), d_model {s['d_model']}, {s['num_layers']} layers, N = {p['N']:,.0f}, trained on "
                     f"{p['D']:,} tokens ({p['max_steps']:,} steps of 1,024), the IsoFLOP sweep's settings otherwise. Written by "
                     "reports/scaling/predict.py; committed with the prediction before the run started."),
        'base': base['base'], 'set': base['set'],
        'variants': [{'name': f"C={BUDGET:g}_d={s['d_model']}_L={s['num_layers']}", 'd_model': s['d_model'], 'num_layers': s['num_layers'],
                      'num_heads': s['num_heads'], 'd_ff': s['d_ff'], 'max_steps': p['max_steps'],
                      'warmup_steps': max(2, round(0.05 * p['max_steps'])), 'eval_every': max(1, p['max_steps'] // 2)}],
        'out_dir': 'reports/sweeps/isoflop_prediction', 'parallel': 1, 'threads': 1}
atomic_write('configs/sweeps/isoflop_prediction.json', json.dumps(spec, indent=2) + '\n')
print(json.dumps({k: v for k, v in p.items() if k not in ('fit', 'exponents_bootstrap_90')}, indent=1))
