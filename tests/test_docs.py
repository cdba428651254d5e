"""The docs site, rendered offline as nbdev prepares it for Quarto (.ci/render_docs.py), checked page by page in headless
Chromium: each page shows its notebook's title, subtitle, prose, tables and figures, and every image decodes."""
import base64, importlib.util, io, json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('render_docs', ROOT/'.ci'/'render_docs.py')
rd = importlib.util.module_from_spec(spec); spec.loader.exec_module(rd)
NOTEBOOKS = rd.site_notebooks(ROOT/'nbs')

@pytest.fixture(scope='module')
def browser():
    b = rd.find_browser()
    if b is None:
        msg = f"no Chromium-family browser ({', '.join(rd.BROWSERS)}) on PATH; set LLMCOURSE_BROWSER"
        if os.environ.get('CI', '').lower() not in ('', '0', 'false'): pytest.fail(msg + ' (CI is set: the rendered docs must really be checked)')
        pytest.skip(msg)
    return b

def render(nbs, out):
    "Render in a fresh interpreter, as a developer would: nbdev executes show_doc cells in an IPython shell of its own."
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
    r = subprocess.run([sys.executable, str(ROOT/'.ci'/'render_docs.py'), '--nbs', str(nbs), '--out', str(out), '--no-check'],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    # Exit 1 with an errors file: some notebooks failed nbdev's processing (their page tests say why); else a crash.
    assert r.returncode == 0 or (out/rd.ERRORS_FILE).exists(), f'rendering failed:\n{r.stdout}\n{r.stderr[-4000:]}'
    return out

@pytest.fixture(scope='module')
def site(tmp_path_factory): return render(ROOT/'nbs', tmp_path_factory.mktemp('site'))

def test_site_has_its_notebooks():
    names = [p.name for p in NOTEBOOKS]
    assert 'index.ipynb' in names and any(n[0].isdigit() for n in names), names
    assert not any(n.startswith('_') for n in names)

def test_page_names_are_unique():
    pages = [rd.output_name(p) for p in NOTEBOOKS]
    assert len(set(pages)) == len(pages), f'two notebooks would write the same page: {sorted(pages)}'

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_page_shows_its_notebook(nb, browser, site):
    errors = json.loads((site/rd.ERRORS_FILE).read_text())
    assert nb.name not in errors, f"{nb.name}: nbdev's docs processing failed: {errors[nb.name]}"
    exp = rd.expectations(nb, ROOT/'nbs')
    page = site/nb.relative_to(ROOT/'nbs').parent/exp['page']
    assert page.exists(), f'{nb.name} rendered no {exp["page"]}'
    seen = rd.inspect_page(page, browser)
    bad = rd.problems(exp, seen)
    assert not bad, f'{nb.name} -> {exp["page"]}:\n  ' + '\n  '.join(bad)

# --- the checker itself: a page with everything shown passes, broken pages are caught ---------------------------------

def _png(color):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2, 1.5)); ax.plot([0, 1], [0, 1], color=color)
    buf = io.BytesIO(); fig.savefig(buf, format='png'); plt.close(fig)
    return buf.getvalue()

def _nb(path, cells):
    import nbformat
    nb = nbformat.v4.new_notebook(cells=cells, metadata={'kernelspec': {'name': 'python3', 'language': 'python', 'display_name': 'Python 3'}})
    nbformat.write(nb, path)

def _out(cell, **data):
    import nbformat
    cell.outputs = [nbformat.v4.new_output('display_data', data=data)]
    return cell

@pytest.fixture(scope='module')
def fixture_site(tmp_path_factory):
    import nbformat, pandas as pd
    from nbformat.v4 import new_markdown_cell as md, new_code_cell as code
    nbs = tmp_path_factory.mktemp('repo')/'nbs'   # the rendered site lives elsewhere, as _docs/ does on GitHub Pages
    (nbs/'figures').mkdir(parents=True)
    (nbs/'figures'/'inside.png').write_bytes(_png('C1'))
    (nbs.parent/'outside.png').write_bytes(_png('C2'))
    df = pd.DataFrame({'d_model': [512, 768], 'num_layers': [4, 12]})
    _nb(nbs/'index.ipynb', [md('# Home\n\n> The fixture site.'), md('A page that links to [the good one](01_good.ipynb).')])
    _nb(nbs/'01_good.ipynb', [
        code('#| default_exp good'), md('# Good page\n\n> Everything shows.'), md('Two sentences of intro. Here.'),
        code('#| hide\nimport os'),
        md('## A table\n\n| a | b |\n|---|---|\n| 1 | 2 |'),
        _out(code('df'), **{'text/html': df.to_html(), 'text/plain': str(df)}),
        md('## A figure\n\n![inside](figures/inside.png)'),
        _out(code('plot()'), **{'image/png': base64.b64encode(_png('C0')).decode(), 'text/plain': '<Figure>'}),
        _out(code('#| echo: false\nshown_without_source()'), **{'text/plain': "'ok'"}),
        _out(code('#| hide\nhidden_table()'), **{'text/html': df.to_html()}),
    ])
    _nb(nbs/'02_bad.ipynb', [
        md('# Bad page\n\n> Things go missing.\n\nThis intro sits in the title cell.'),
        _out(code('plot()'), **{'image/png': base64.b64encode(b'not a png at all').decode(), 'text/plain': '<Figure>'}),
        md('![outside](../outside.png)'),
    ])
    return nbs, render(nbs, tmp_path_factory.mktemp('fixture_site'))

def test_checker_passes_a_complete_page(browser, fixture_site):
    nbs, out = fixture_site
    exp = rd.expectations(nbs/'01_good.ipynb', nbs)
    assert (exp['title'], exp['tables'], exp['figures']) == ('Good page', 2, 2)   # the #| hide table is not expected
    seen = rd.inspect_page(out/'good.html', browser)
    assert rd.problems(exp, seen) == []
    assert sum(i['decoded'] for i in seen['images']) == 2 and all(i['width'] > 0 for i in seen['images'])
    assert 'shown_without_source' not in seen['text'] and "'ok'" in seen['text']   # echo: false keeps only the output
    assert 'import os' not in seen['text']
    home = (out/'index.html').read_text()
    assert 'href="good.html"' in home   # notebook links point at the page Quarto writes

def test_checker_catches_a_broken_page(browser, fixture_site):
    nbs, out = fixture_site
    bad = rd.problems(rd.expectations(nbs/'02_bad.ipynb', nbs), rd.inspect_page(out/'bad.html', browser))
    text = '\n'.join(bad)
    assert "title cell's prose is missing" in text
    assert "'../outside.png' points outside nbs/" in text
    assert sum('not decoded' in b for b in bad) == 2   # the corrupt PNG output and the unpublished markdown image
    assert '2 figure(s) in the notebook, 0 shown decoded' in text
