"""The report page (nbs/90_report.ipynb) holds its numbers to their sources. Every number the committed page shows is a
citation (`llmcourse.report`): it is read back here from its committed file and must show the same, and its file and key
must exist. The check is shown to fail: on a copy of the cited files with one value changed, a key removed and a file
deleted, and on a page whose shown number was edited. The deterministic answer files are what reports/answers/answers.py
computes now, and every handout problem has its section with cited numbers."""
import importlib.util, json, re, shutil, subprocess
from pathlib import Path
import pytest
from llmcourse.report import (CitationError, Ledger, check_notebook, check_text, citations_in, page_text, read_value, span,
                              uncited_numbers)

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT/'nbs'/'90_report.ipynb'
MAIN = 'reports/runs/tinystories_sample/summary.json'
PROBLEMS = ['unicode1', 'unicode2', 'train_bpe_tinystories', 'train_bpe_expts_owt', 'tokenizer_experiments',
            'transformer_accounting', 'learning_rate_tuning', 'adamwAccounting', 'learning_rate', 'batch_size_experiment',
            'generate', 'layer_norm_ablation', 'pre_norm_ablation', 'no_pos_emb', 'swiglu_ablation', 'main_experiment',
            'leaderboard']

def _cells(): return json.loads(PAGE.read_text(encoding='utf-8'))['cells']

def _outputs_md(cell) -> str:
    return '\n'.join(''.join(o['data']['text/markdown']) for o in cell.get('outputs', []) if 'text/markdown' in o.get('data', {}))

def _copy_sources(text: str, dest: Path) -> set[str]:
    "Copy every file the page cites into `dest`, at the same relative paths; returns their paths."
    files = {p for spec, _ in citations_in(text) for p, _ in spec['src']}
    for f in files:
        (dest/f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT/f, dest/f)
    return files

def test_every_number_of_the_page_matches_its_source():
    n, problems = check_notebook(PAGE, ROOT)
    assert n >= 150, f'the committed page shows only {n} cited numbers: was it executed before committing?'
    assert problems == [], 'numbers of the report differ from the files they cite:\n  ' + '\n  '.join(problems)
    text = page_text(PAGE)
    assert text.count('<span class="cite"') == len(citations_in(text)), 'a citation span the check cannot read'

def test_the_answers_type_no_number_by_hand():
    "What the page's code cells show (the answers, the tables) cites every decimal and every number of four digits or more."
    loose = {c['id']: found for c in _cells() if (found := uncited_numbers(_outputs_md(c)))}
    assert loose == {}, f'uncited numbers in the generated answers: {loose}'

def test_no_citation_sits_in_a_code_span():
    "Inside backticks a citation's HTML shows raw on the page: the answers wrap cited text in <code> instead."
    raw = {c['id']: m for c in _cells() if c['id'] != 'rp-root'   # (the lesson that shows a citation's HTML on purpose)
           for m in re.findall(r'`[^`]*`', _outputs_md(c)) if '<span class="cite"' in m}
    assert raw == {}, f'citations inside Markdown code spans: {raw}'

def test_every_cited_file_is_committed():
    "A fresh clone has only what git tracks: a cited file that is merely present here would be missing there."
    r = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0: pytest.skip('not a git checkout')
    tracked = set(r.stdout.splitlines())
    cited = {p for spec, _ in citations_in(page_text(PAGE)) for p, _ in spec['src']}
    assert cited - tracked == set(), f'cited but not committed: {sorted(cited - tracked)}'

def test_every_problem_has_a_section_with_cited_numbers():
    cells = _cells()
    heads = [(i, ''.join(c['source'])) for i, c in enumerate(cells) if c['cell_type'] == 'markdown' and ''.join(c['source']).startswith('## ')]
    for name in PROBLEMS:
        at = [i for i, h in heads if re.search(rf'\b{name}\b', h.splitlines()[0])]
        assert at, f'no section of the report names {name}'
        nxt = next((i for i, _ in heads if i > at[0]), len(cells))
        shown = '\n'.join(_outputs_md(c) for c in cells[at[0]:nxt])
        assert shown.strip(), f'the section of {name} shows no answer'
        if name not in ('main_experiment', 'leaderboard') or 'Waits for' not in shown:
            assert citations_in(shown), f'the answer to {name} cites no number'

def test_the_check_fails_when_a_cited_value_changes(tmp_path):
    text = page_text(PAGE)
    files = _copy_sources(text, tmp_path)
    assert MAIN in files and check_text(text, tmp_path) == []
    summary = json.loads((tmp_path/MAIN).read_text())
    (tmp_path/MAIN).write_text(json.dumps(summary | {'final_val_loss': summary['final_val_loss'] + 0.01}))
    problems = check_text(text, tmp_path)
    n = sum(1 for spec, _ in citations_in(text) if [MAIN, 'final_val_loss'] in spec['src'])
    assert n >= 1 and len(problems) == n, problems
    assert all('differs from its source' in p and MAIN in p for p in problems)
    # a text file's value, read with a regular expression
    kv = 'reports/bench/bench_kvcache.txt'
    (tmp_path/kv).write_text(re.sub(r'speed-up of the KV cache: [\d.]+x', 'speed-up of the KV cache: 9.9x', (ROOT/kv).read_text()))
    assert any("'9.9'" in p for p in check_text(text, tmp_path))

def test_the_check_fails_when_a_cited_file_or_key_is_gone(tmp_path):
    text = page_text(PAGE)
    _copy_sources(text, tmp_path)
    bpe = json.loads((tmp_path/'reports/answers/bpe.json').read_text())
    del bpe['throughput']
    (tmp_path/'reports/answers/bpe.json').write_text(json.dumps(bpe))
    (tmp_path/'reports/bench/bench_kvcache.txt').unlink()
    problems = check_text(text, tmp_path)
    assert any("no key 'throughput'" in p for p in problems), problems
    assert any('bench_kvcache.txt: no such file' in p for p in problems), problems

def test_the_check_fails_when_the_page_is_edited():
    "A number typed over on the page (the citation kept) no longer matches its source."
    text = page_text(PAGE)
    first = re.search(r'(<span class="cite" data-cite="[^"]*" title="[^"]*">)([^<]*)(</span>)', text)
    edited = text[:first.start(2)] + 'X' + first.group(2) + text[first.end(2):]
    assert len(check_text(edited, ROOT)) == 1

def test_read_value(tmp_path):
    (tmp_path/'a.json').write_text(json.dumps({'x': {'y': [1.5, 2.5]}, 'name': 'run'}))
    (tmp_path/'m.jsonl').write_text('{"step": 1, "loss": 4.0}\n{"step": 2, "loss": 3.0}\n')
    (tmp_path/'b.txt').write_text('speed: 1,234.5 tokens/s\n')
    assert read_value(tmp_path, 'a.json', 'x/y/1') == 2.5 and read_value(tmp_path, 'a.json', 'name') == 'run'
    assert read_value(tmp_path, 'm.jsonl', '-1/loss') == 3.0
    assert read_value(tmp_path, 'b.txt', r'speed: ([\d,.]+)') == 1234.5
    for path, key, why in [('a.json', 'x/z', "no key 'z'"), ('a.json', 'x/y/7', "no item '7'"), ('c.json', 'x', 'no such file'),
                           ('b.txt', r'rate: (\d+)', 'nothing matches')]:
        with pytest.raises(CitationError, match=why): read_value(tmp_path, path, key)
    L = Ledger(tmp_path)
    assert 'title="a.json : x/y/0"' in L.cite('a.json', 'x/y/0', '.2f')
    assert '>2.00<' in L.calc('mean', [('a.json', 'x/y/0'), ('a.json', 'x/y/1')], '.2f')
    with pytest.raises(CitationError, match='of non-numbers'): L.calc('mean', [('a.json', 'name')])
    assert L.files() == ['a.json']
    assert check_text(''.join(span(s, t) for s, t in L.citations), tmp_path) == []

def test_the_exact_answer_files_are_current():
    "unicode.json, accounting.json and lr_toy.json are what reports/answers/answers.py computes with the code as it is."
    spec = importlib.util.spec_from_file_location('answers', ROOT/'reports'/'answers'/'answers.py')
    answers = importlib.util.module_from_spec(spec); spec.loader.exec_module(answers)
    for name, now in answers.exact().items():
        committed, now = json.loads((ROOT/'reports'/'answers'/name).read_text(encoding='utf-8')), json.loads(json.dumps(now))
        stale = f'reports/answers/{name} is stale: run python reports/answers/answers.py exact'
        if name == 'lr_toy.json':   # float32 training steps: equal to rounding across torch builds
            assert committed.keys() == now.keys() and all(v == pytest.approx(now[k], rel=1e-5) for k, v in committed.items()), stale
        else: assert committed == now, stale
