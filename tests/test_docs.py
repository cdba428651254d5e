"""The docs site, rendered offline as nbdev prepares it for Quarto (.ci/render_docs.py), checked page by page in headless
Chromium: each page shows its notebook's title (its only H1), subtitle, prose, tables and figures (decoded), its equations
typeset by a local MathJax, API signatures without raw links or `NoneType=None`, no widget views or frozen progress bars,
and an "Open in Colab" badge. The checker is tried on synthetic pages too, so that each check is shown to catch its fault.
The sidebar (nbs/sidebar.yml) is checked against the notebooks present."""
import base64, importlib.util, io, json, os, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('render_docs', ROOT/'.ci'/'render_docs.py')
rd = importlib.util.module_from_spec(spec); spec.loader.exec_module(rd)
ld = rd.ld   # .ci/llmcourse_docs.py: the nbdev processor and the sidebar
NOTEBOOKS = rd.site_notebooks(ROOT/'nbs')

# Signatures their notebooks' owners have yet to fix (unannotated `=None` defaults show `NoneType=None`). While a notebook
# is listed, its signature faults make its page test xfail (every other check still holds); once fixed, remove it here.
PENDING_SIGNATURES: set[str] = set()   # notebooks whose signature fixes are pending (none)

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
    pending = [b for b in bad if b.startswith('signature of ')] if nb.name in PENDING_SIGNATURES else []
    bad = [b for b in bad if b not in pending]
    assert not bad, f'{nb.name} -> {exp["page"]}:\n  ' + '\n  '.join(bad)
    if pending: pytest.xfail(f'{nb.name}: signatures to fix in the notebook:\n  ' + '\n  '.join(pending))

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

def _outs(cell, *outputs):
    cell.outputs = list(outputs)
    return cell

def _widget(text, model='0' * 32):
    import nbformat
    return nbformat.v4.new_output('display_data', data={ld.WIDGET_VIEW: {'model_id': model, 'version_major': 2, 'version_minor': 0},
                                                        'text/plain': text})

BAR_50 = 'stopped:  50%|#####     | 15/30 [00:00<?, ?it/s]'
BENCH_REPORT = '# A benchmark report\n\nIts own title.\n\n## A part of it\n\n```sh\n# a comment, not a heading\n```'

@pytest.fixture(scope='module')
def fixture_site(tmp_path_factory):
    import nbformat, pandas as pd
    from nbformat.v4 import new_markdown_cell as md, new_code_cell as code, new_output
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
        md('## Maths\n\nInline, $a^2 + b^2 = c^2$ (a price such as \\$5 is not maths), and displayed:\n\n$$\\sum_{i=1}^n x_i$$'),
        md('## An API'),
        code('#| export\ndef scale(x:float, # the value, as in `scale`\n          factor:float|None=None, # how much; None is 1\n'
             '         )->float:\n    "Multiply `x` by `factor`."\n    return x * (factor or 1)'),
        md('## A run'),   # a tqdm bar drawn as a widget (stopped at 50%) and an interactive control: neither reaches the page
        _outs(code('train()'), new_output('stream', name='stdout', text='step 15: loss 2.0\n'), _widget(BAR_50),
              _widget("VBox(children=(Dropdown(description='tokenizer'),))", model='1' * 32)),
        md('## Results'),   # a Markdown report shown as an output: its H1 must not become a second page title
        _out(code('Markdown(report)'), **{'text/markdown': BENCH_REPORT, 'text/plain': '<Markdown>'}),
    ])
    nb = nbformat.read(nbs/'01_good.ipynb', as_version=4)
    nb.metadata['widgets'] = {'application/vnd.jupyter.widget-state+json': {'state': {}, 'version_major': 2, 'version_minor': 0}}
    nbformat.write(nb, nbs/'01_good.ipynb')
    _nb(nbs/'02_bad.ipynb', [
        code('#| default_exp bad'),
        md('# Bad page\n\n> Things go missing.\n\nThis intro sits in the title cell.'),
        _out(code('plot()'), **{'image/png': base64.b64encode(b'not a png at all').decode(), 'text/plain': '<Figure>'}),
        md('![outside](../outside.png)'),
        md('# A second title\n\nA page with two H1s.'),
        md('## Broken maths\n\nThis fraction lacks its denominator: $\\frac{1}$.'),
        code('#| export\ndef shift(x, # the value\n          by=None, # how far; see [the handout](https://example.org/handout)\n'
             '         ):\n    "Add `by` to `x`."\n    return x + (by or 0)'),
        _outs(code('run()'), new_output('stream', name='stderr', text=BAR_50 + '\n')),   # tqdm's text bar, stopped
    ])
    return nbs, render(nbs, tmp_path_factory.mktemp('fixture_site'))

def _variant(page: Path, name: str, edit) -> Path:
    "A copy of `page` beside it (relative links resolve the same), changed by `edit(html) -> html`."
    dest = page.with_name(name)
    src = page.read_text(encoding='utf-8')
    new = edit(src)
    assert new != src, f'the edit for {name} changed nothing'
    dest.write_text(new, encoding='utf-8')
    return dest

def test_checker_passes_a_complete_page(browser, fixture_site):
    nbs, out = fixture_site
    exp = rd.expectations(nbs/'01_good.ipynb', nbs)
    assert (exp['title'], exp['tables'], exp['figures'], exp['maths']) == ('Good page', 2, 2, 2)   # not the #| hide table
    assert exp['colab'] == 'https://colab.research.google.com/github/llmcourse/llmcourse/blob/main/nbs/01_good.ipynb'
    seen = rd.inspect_page(out/'good.html', browser)
    assert rd.problems(exp, seen) == []
    figures = [i for i in seen['images'] if i['alt'] != ld.BADGE_ALT]
    assert sum(i['decoded'] for i in figures) == 2 and all(i['width'] > 0 for i in figures)
    assert 'shown_without_source' not in seen['text'] and "'ok'" in seen['text']   # echo: false keeps only the output
    assert 'import os' not in seen['text']
    home = (out/'index.html').read_text()
    assert 'href="good.html"' in home   # notebook links point at the page Quarto writes
    # equations typeset by the local MathJax, offline
    assert seen['maths']['mathjax'] and seen['maths']['typeset'] == 2 and seen['maths']['errors'] == []
    assert (out/rd.MATHJAX_DIR/'MathJax.js').exists() and 'cdnjs.cloudflare.com/ajax/libs/mathjax' not in (out/'good.html').read_text()
    # the badge, under the title, linking to the notebook; none on the home page
    assert [(c['href'], c['badge']) for c in seen['colab']] == [(exp['colab'], True)]
    assert seen['text'].index('Everything shows.') < seen['text'].index('Two sentences of intro.')
    assert rd.inspect_page(out/'index.html', browser)['colab'] == []
    # widgets: the bar is gone (the run's log line stays), the control became a note, no widget state is left
    assert seen['widgets'] == 0 and '50%' not in seen['text'] and 'step 15: loss 2.0' in seen['text']
    assert ld.WIDGET_NOTE.strip('*') in seen['text'] and 'VBox' not in seen['text']
    assert 'widget-state' not in (out/'good.html').read_text()
    # the report's headings sit under the section that shows it: one H1, the report's title an H3
    assert seen['h1'] == ['Good page'] and 'A benchmark report' in seen['text']
    assert re.search(r'<h3 id="A-benchmark-report"', (out/'good.html').read_text())
    # show_doc's signature, clean: annotated default, no link inside the code
    sig = next(s for s in seen['signatures'] if s['name'] == 'scale')
    assert 'factor:float | None=None' in sig['text'] and '`scale`' in sig['text'], sig['text']

def test_checker_catches_a_broken_page(browser, fixture_site):
    nbs, out = fixture_site
    bad = rd.problems(rd.expectations(nbs/'02_bad.ipynb', nbs), rd.inspect_page(out/'bad.html', browser))
    text = '\n'.join(bad)
    assert "title cell's prose is missing" in text
    assert "'../outside.png' points outside nbs/" in text
    assert sum('not decoded' in b for b in bad) == 2   # the corrupt PNG output and the unpublished markdown image
    assert '2 figure(s) in the notebook, 0 shown decoded' in text
    assert "the page has 2 H1s, ['Bad page', 'A second title']" in text
    assert "equation with a TeX error: '\\\\frac{1}'" in text
    assert 'signature of shift shows NoneType=None (1x)' in text
    assert "signature of shift shows a raw Markdown link '[the handout](https://example.org/handout)'" in text
    assert "progress bar frozen at '50%|#####     | 15/30'" in text

def test_checker_catches_raw_maths(browser, fixture_site):
    "A page whose MathJax doesn't load (today's offline render: nbconvert names the CDN) shows `$...$` raw."
    nbs, out = fixture_site
    page = _variant(out/'good.html', 'good_nomaths.html', lambda h: re.sub(r'<script src="[^"]*MathJax\.js[^"]*">', '<script>', h))
    bad = rd.problems(rd.expectations(nbs/'01_good.ipynb', nbs), rd.inspect_page(page, browser))
    assert bad == ['2 equation(s) in the notebook, 0 typeset on the page: MathJax did not load (the local copy comes from'
                   ' the jupyter-server-mathjax package, a dev requirement)']

def test_checker_catches_a_missing_badge(browser, fixture_site):
    nbs, out = fixture_site
    exp = rd.expectations(nbs/'01_good.ipynb', nbs)
    page = _variant(out/'good.html', 'good_nobadge.html', lambda h: re.sub(r'<a href="https://colab[^"]*">.*?</a>', '', h, flags=re.S))
    assert rd.problems(exp, rd.inspect_page(page, browser)) == [f"no Open in Colab badge linking to {exp['colab']}"]
    wrong = _variant(out/'good.html', 'good_wrongbadge.html', lambda h: h.replace('/nbs/01_good.ipynb', '/nbs/01_other.ipynb'))
    assert rd.problems(exp, rd.inspect_page(wrong, browser))[0].startswith(f"no Open in Colab badge linking to {exp['colab']} (links found")

def test_checker_catches_a_widget_view(browser, fixture_site):
    "What nbconvert and Quarto write for a widget output: the view's JSON in a script, for the widget manager to draw."
    nbs, out = fixture_site
    view = '<script type="application/vnd.jupyter.widget-view+json">{"model_id": "abc", "version_major": 2}</script>'
    page = _variant(out/'good.html', 'good_widget.html', lambda h: h.replace('</body>', f'<div>{view}</div></body>'))
    assert rd.problems(rd.expectations(nbs/'01_good.ipynb', nbs), rd.inspect_page(page, browser)) == [
        "1 ipywidgets view(s) on the page: a static page can't run them"]

# --- the docs processing, piece by piece (no browser) -----------------------------------------------------------------

def test_drop_widgets():
    import nbformat
    from nbformat.v4 import new_code_cell, new_output
    cell = _outs(new_code_cell('train()'), new_output('stream', name='stdout', text='log\n'),
                 _widget('demo:   0%|          | 0/150 [00:00<?, ?it/s]'), _widget('interactive(children=(Text(),))'))
    assert ld.drop_widgets(cell) == 2
    assert [o.get('text') or o['data'] for o in cell.outputs] == ['log\n', {'text/markdown': ld.WIDGET_NOTE}]

def test_demote_output_headings():
    assert ld.demote_markdown(BENCH_REPORT, 3).splitlines()[0] == '### A benchmark report'
    assert '#### A part of it' in ld.demote_markdown(BENCH_REPORT, 3)
    assert '# a comment, not a heading' in ld.demote_markdown(BENCH_REPORT, 3)   # code fences are left alone
    assert ld.demote_markdown('### Already low\n\ntext', 2) == '### Already low\n\ntext'
    assert ld.demote_html('<h1 id="x">T</h1><h2>U</h2>', 2) == '<h2 id="x">T</h2><h3>U</h3>'

def test_unlink_signature():
    "nbdev's add_links turns `name` into a link, which shows raw inside show_doc's code block; a hand-written link stays."
    md = ('---\n\n### f\n\n```python\ndef f(\n    c, # a config (see [`model_config`](https://llmcourse.github.io/llmcourse/'
          'accounting.html#model_config)); [the docs](https://example.org)\n):\n```\n\n*Uses [`g`](https://x.org/g).*')
    out = ld.unlink_signature(md)
    assert '# a config (see `model_config`); [the docs](https://example.org)' in out
    assert out.endswith('*Uses [`g`](https://x.org/g).*')   # outside the code block a link is a link

def test_colab_url():
    assert ld.colab_url(ROOT/'nbs'/'04_training.ipynb') == \
        'https://colab.research.google.com/github/llmcourse/llmcourse/blob/main/nbs/04_training.ipynb'
    assert not ld.wants_badge(ROOT/'nbs'/'index.ipynb') and ld.wants_badge(ROOT/'nbs'/'00c_files.ipynb')

def test_the_site_runs_the_processor():
    "nbdev_docs on the Pages workflow runs the same processing as this render: settings.ini names it, .ci/ is on the path."
    from nbdev.config import get_config
    assert 'llmcourse_docs:ReaderView' in get_config(path=ROOT).get('procs', '').split()
    wf = (ROOT/'.github'/'workflows'/'deploy.yaml').read_text()
    assert re.search(r'PYTHONPATH: .*/\.ci\b', wf), 'the Pages workflow must put .ci/ on PYTHONPATH for nbdev'
    assert rd.local_mathjax() is not None, 'no local MathJax: pip install -e ".[dev]" installs jupyter-server-mathjax'

# --- the sidebar ------------------------------------------------------------------------------------------------------

def _sections(sb):
    return {c['section']: c['contents'] for c in sb['website']['sidebar']['contents'] if isinstance(c, dict)}

def _reachable(sb):
    top = [c for c in sb['website']['sidebar']['contents'] if isinstance(c, str)]
    return top + [p for pages in _sections(sb).values() for p in pages]

def test_sidebar_follows_the_notebooks(tmp_path):
    for n in ['index', '00_bpe', '00b_text', '00c_files', '01_layers', '05_decoding', '08_numpy', '_scratch']:
        (tmp_path/f'{n}.ipynb').write_text('{}')
    sb = ld.sidebar(tmp_path)
    assert sb['website']['sidebar']['contents'][0] == 'index.ipynb'
    assert _sections(sb) == {'Course': ['00_bpe.ipynb', '00b_text.ipynb', '00c_files.ipynb', '01_layers.ipynb',
                                        '05_decoding.ipynb', '08_numpy.ipynb']}   # no Experiments section without pages
    (tmp_path/'06_ablations.ipynb').write_text('{}')
    assert _sections(ld.sidebar(tmp_path)) == {**_sections(sb), 'Experiments': ['06_ablations.ipynb']}
    (tmp_path/'10_beyond.ipynb').write_text('{}')
    assert list(_sections(ld.sidebar(tmp_path))) == ['Course', 'Experiments', 'Beyond assignment 1']
    (tmp_path/'90_report.ipynb').write_text('{}')   # the report: its own section, after the experiments
    assert _sections(ld.sidebar(tmp_path))['Report'] == ['90_report.ipynb']
    assert list(_sections(ld.sidebar(tmp_path))) == ['Course', 'Experiments', 'Report', 'Beyond assignment 1']

def test_sidebar_reaches_every_notebook():
    import yaml
    sb = yaml.safe_load((ROOT/'nbs'/'sidebar.yml').read_text())
    assert (ROOT/'nbs'/'sidebar.yml').read_text() == ld.sidebar_yml(ROOT/'nbs'), \
        'nbs/sidebar.yml is out of date: run python .ci/llmcourse_docs.py sidebar'
    assert sorted(_reachable(sb)) == sorted(p.name for p in NOTEBOOKS), 'every site notebook is in the sidebar, once'
    assert all(_sections(sb).values()), f'an empty sidebar section: {_sections(sb)}'
    q = yaml.safe_load((ROOT/'nbs'/'_quarto.yml').read_text())
    assert 'sidebar.yml' in q['metadata-files'] and 'contents' not in q['website']['sidebar'], \
        "_quarto.yml takes the sidebar's contents from sidebar.yml only"
