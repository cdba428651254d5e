#!/usr/bin/env python
"""Render the docs site offline and check every page in headless Chromium.

The GitHub Pages workflow runs `nbdev_docs`: nbdev's processors turn each notebook into what Quarto sees (the H1 and `>`
line become the title block, `#| hide`/`#| export` cells disappear, `show_doc` cells are added and executed), then Quarto
renders HTML. Quarto can't be installed offline, so this script runs the same nbdev processors (`FilterDefaults`, as
`nbdev_proc_nbs` does, without its Quarto install step), applies the few Quarto cell options nbdev leaves behind (`echo`,
`output`, `include`), and renders with `jupyter nbconvert` without executing anything: the committed outputs are the content.

The site mirrors Quarto's layout: each page is written under its `output-file` name (`00a_data.ipynb` -> `data.html`), links
to notebooks are rewritten to those names, and the non-notebook files under nbs/ are copied beside the pages (what
`nbdev_proc_nbs` copies into the Quarto project). Files outside nbs/ are not: Quarto doesn't publish them, so a markdown
image such as `../figures/x.png` is broken on the real site and is reported broken here too.

    python .ci/render_docs.py                        # render into _html/ and check every page
    python .ci/render_docs.py --out /tmp/site --screenshot data.html   # also save a screenshot of one page
"""
from __future__ import annotations
import argparse, html, json, os, re, shutil, subprocess, sys, tempfile, warnings
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ('google-chrome', 'google-chrome-stable', 'chromium', 'chromium-browser')
CHECK_ID = '__docs_check__'

# --- which notebooks make the site ----------------------------------------------------------------------------------

def site_notebooks(nbs: Path) -> list[Path]:
    "The numbered notebooks (`00_x.ipynb`, `03a_y.ipynb`, ...) and index.ipynb; scratch notebooks (`_x.ipynb`) stay out."
    nbs = Path(nbs)
    found = sorted(p for p in nbs.glob('[0-9]*.ipynb') if re.match(r'^\d+[a-z]?_', p.name))
    return ([nbs/'index.ipynb'] if (nbs/'index.ipynb').exists() else []) + found

def output_name(nb: Path) -> str:
    "The page nbdev asks Quarto to write for a notebook: the number prefix is dropped (`00a_data.ipynb` -> `data.html`)."
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(Path(nb.name)).name

# --- what each page must show, read from the source notebook --------------------------------------------------------

_HIDE = {'hide', 'export', 'exporti', 'default_exp'}   # nbdev drops these cells, outputs included

def _directives(cell) -> dict:
    from nbdev.process import extract_directives
    return extract_directives(cell, remove=False) if cell.cell_type == 'code' else {}

def _off(d: dict, key: str) -> bool: return [a.lower() for a in d.get(key + ':', [])] == ['false']

def _md2html(src: str) -> str:
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    return markdown2html_mistune(src)

class _Blocks(HTMLParser):
    "Top-level text blocks (paragraphs, headings, ...) of an HTML fragment, as (tag, text) pairs."
    BLOCKS = {'p', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'blockquote', 'ul', 'ol', 'table', 'pre', 'div', 'dl'}
    def __init__(self):
        super().__init__(); self.blocks, self.depth, self.tag, self.buf = [], 0, None, []
    def handle_starttag(self, tag, attrs):
        if tag in self.BLOCKS:
            if self.depth == 0: self.tag, self.buf = tag, []
            self.depth += 1
    def handle_endtag(self, tag):
        if tag in self.BLOCKS and self.depth:
            self.depth -= 1
            if self.depth == 0: self.blocks.append((self.tag, ''.join(self.buf)))
    def handle_data(self, data):
        if self.depth: self.buf.append(data)

def norm_text(s: str) -> str:
    "Text as compared between source and page: no pilcrow anchors, no non-breaking spaces, single spaces."
    return ' '.join(s.replace('\u00b6', ' ').replace('\xa0', ' ').split())

def _n_tables(h: str) -> int: return len(re.findall(r'<table\b', h, re.I))
def _n_imgs(h: str) -> int: return len(re.findall(r'<img\b', h, re.I))

def expectations(nb_path: Path, nbs: Path | None = None) -> dict:
    "Title, subtitle, tables, figures and a line of prose per markdown cell that the page of `nb_path` must show."
    from execnb.nbio import read_nb
    nb_path = Path(nb_path).resolve()
    nbs = Path(nbs).resolve() if nbs else nb_path.parent
    nb = read_nb(nb_path)
    title = subtitle = intro = None
    tables = figures = 0
    prose, md_images = [], []
    for cell in nb.cells:
        if cell.cell_type == 'markdown':
            src = cell.source
            if src.strip().startswith('#') and src.strip().endswith(' -'): continue   # nbdev's rm_header_dash
            h = _md2html(src)
            tables += _n_tables(h); figures += _n_imgs(h)
            md_images += re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', h)
            blocks = _Blocks(); blocks.feed(h)
            if title is None and re.search(r'^#\s+\S', src, re.M):   # nbdev's rule for the title cell
                # as displayed: markdown in the title (`# The *KV* cache`) is rendered on the page too
                title = next((norm_text(t) for tag, t in blocks.blocks if tag == 'h1'), None)
                subtitle = next((norm_text(t) for tag, t in blocks.blocks if tag == 'blockquote'), None)
                blocks.blocks = [b for b in blocks.blocks if b[0] not in ('h1', 'blockquote')]
                intro = next((norm_text(t)[:70] for tag, t in blocks.blocks if tag == 'p' and norm_text(t)), None)
                continue
            first = next((norm_text(t) for tag, t in blocks.blocks if tag in ('p', 'h2', 'h3', 'h4') and norm_text(t)), None)
            if first: prose.append(first[:70])
        elif cell.cell_type == 'code':
            d = _directives(cell)
            if d.keys() & _HIDE or _off(d, 'include') or _off(d, 'output'): continue
            for o in cell.get('outputs', []):
                data = o.get('data', {})
                if any(k in data for k in ('image/png', 'image/jpeg', 'image/gif')): figures += 1
                if 'text/html' in data: tables += _n_tables(''.join(data['text/html']))
                elif 'text/markdown' in data: tables += _n_tables(_md2html(''.join(data['text/markdown'])))
    # Quarto publishes only files inside its project (nbs/): an image link that leaves it is broken on the site.
    outside = [s for s in md_images if not re.match(r'^([a-z]+:|/)', s) and not (nb_path.parent/s).resolve().is_relative_to(nbs)]
    return dict(notebook=nb_path.name, page=output_name(nb_path), title=title, subtitle=subtitle, intro=intro,
                tables=tables, figures=figures, prose=prose, outside_images=outside)

# --- nbdev processing + the Quarto cell options, then nbconvert -----------------------------------------------------

_re_qopt = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')

def _quarto_shim(nb, pages: dict[str, str]):
    "Apply what Quarto does with nbdev's output that nbconvert doesn't: title block, cell options, notebook links."
    import nbformat
    out = []
    for cell in nb.cells:
        if cell.cell_type == 'raw' and cell.source.lstrip().startswith('---'):
            from nbdev.frontmatter import _fm2dict
            fm = _fm2dict(cell.source)
            src = f"# {fm.get('title', '')}"
            if fm.get('description'):   # Quarto renders the description as markdown (`code`, *emphasis*)
                desc = re.sub(r'^<p>|</p>\s*$', '', _md2html(fm['description']).strip())
                src += f'\n\n<p class="description">{desc}</p>'
            out.append(nbformat.v4.new_markdown_cell(src)); continue
        if cell.cell_type == 'markdown':
            cell.source = re.sub(r'\]\(([^)\s:#]+)\.ipynb(#[^)]*)?\)',
                                 lambda m: f"]({pages.get(m.group(1) + '.ipynb', m.group(1) + '.ipynb')}{m.group(2) or ''})",
                                 cell.source)
        if cell.cell_type == 'code':
            lines, opts = cell.source.splitlines(), {}
            while lines and (m := _re_qopt.match(lines[0])):
                opts[m.group(1)] = m.group(2).strip('"\'').lower(); lines.pop(0)
            cell.source = '\n'.join(lines)
            if opts.get('include') == 'false': continue
            tags = set(cell.metadata.get('tags', []))
            if opts.get('echo') == 'false' or not cell.source.strip(): tags.add('remove_input')
            if opts.get('output') == 'false': tags.add('remove_output')
            cell.metadata['tags'] = sorted(tags)
        out.append(cell)
    nb.cells = out
    return nb

ERRORS_FILE = '_render_errors.json'

def _explain(nb_path: Path, e: Exception) -> str:
    msg = f'{type(e).__name__}: {e}'
    if e.__cause__ is not None: msg += f'\n  caused by {type(e.__cause__).__name__}: {e.__cause__}'
    if isinstance(e.__cause__, NameError):
        msg += ('\n  While building the docs nbdev runs the export cells, the show_doc cells and every cell that imports'
                ' something, in a fresh shell: a lesson cell that imports a module and uses earlier results fails there'
                ' (and in the GitHub Pages deploy). Move its import into the notebook\'s imports cell.')
    return msg

def render(nbs: Path, out: Path, notebooks: list[Path] | None = None) -> tuple[dict[str, Path], dict[str, str]]:
    "Process `notebooks` (default: the site's) as nbdev does for Quarto, render them into `out`: pages, errors by notebook."
    import nbformat
    from execnb.nbio import read_nb, nb2dict
    from nbdev.processors import FilterDefaults
    from nbconvert import HTMLExporter
    from traitlets.config import Config
    nbs, out = Path(nbs).resolve(), Path(out).resolve()
    notebooks = site_notebooks(nbs) if notebooks is None else notebooks
    if out.exists(): shutil.rmtree(out)
    # nbdev_proc_nbs copies every other file of nbs/ into the Quarto project; Quarto publishes the ones pages refer to.
    for f in nbs.rglob('*'):
        rel = f.relative_to(nbs)
        if f.is_file() and f.suffix != '.ipynb' and not any(p.startswith(('.', '_')) for p in rel.parts):
            (out/rel).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(f, out/rel)
    pages = {nb.name: output_name(nb) for nb in notebooks}
    c = Config()
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_input_tags = {'remove_input'}
    c.TagRemovePreprocessor.remove_all_outputs_tags = {'remove_output'}
    c.HTMLExporter.exclude_input_prompt = c.HTMLExporter.exclude_output_prompt = True
    exporter = HTMLExporter(config=c, template_name='lab')
    res, errors, old = {}, {}, os.environ.get('IN_TEST')
    os.environ['IN_TEST'] = '1'   # as nbdev's serve_drv sets while it processes
    try:
        for nb_path in notebooks:
            nb = read_nb(nb_path)
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings('ignore', message='Found cells containing imports and other code')
                    FilterDefaults()(nb)
            except Exception as e:
                errors[nb_path.name] = _explain(nb_path, e); continue
            nb = _quarto_shim(nb, pages)
            node = nbformat.reads(json.dumps(nb2dict(nb)), as_version=4)   # joins the line lists nb2dict writes
            title = next((c.source.splitlines()[0][2:] for c in node.cells
                          if c.cell_type == 'markdown' and c.source.startswith('# ')), nb_path.stem)
            body, _ = exporter.from_notebook_node(node, resources={'metadata': {'name': title}})
            dest = out/nb_path.relative_to(nbs).parent/pages[nb_path.name]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(body, encoding='utf-8')
            res[pages[nb_path.name]] = dest
    finally:
        if old is None: os.environ.pop('IN_TEST', None)
        else: os.environ['IN_TEST'] = old
    (out/ERRORS_FILE).write_text(json.dumps(errors, indent=1))
    return res, errors

# --- headless Chromium ----------------------------------------------------------------------------------------------

def find_browser() -> str | None:
    "A Chromium-family browser: $LLMCOURSE_BROWSER, else google-chrome, chromium or chromium-browser on PATH."
    if env := os.environ.get('LLMCOURSE_BROWSER'): return env
    for name in BROWSERS:
        p = shutil.which(name)
        if p and '/snap/' not in os.path.realpath(p): return p   # a snap browser can't read files under /tmp
    return None

def _chrome(browser: str, args: list[str], timeout: int = 60) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix='llmcourse-chrome-') as profile:
        cmd = [browser, '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic',
               '--no-first-run', '--no-default-browser-check', '--disable-background-networking',
               '--disable-component-update', '--disable-sync', '--disable-extensions', '--mute-audio', '--hide-scrollbars',
               # The check is offline: CDN scripts (MathJax, require.js) fail at once instead of waiting on the network.
               '--host-resolver-rules=MAP * ~NOTFOUND', f'--user-data-dir={profile}', '--window-size=1280,1600', *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

_CHECK_JS = """<script>
window.addEventListener('load', function () {
  function shown(e) { var r = e.getBoundingClientRect(), s = getComputedStyle(e);
                      return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; }
  var res = {
    h1: Array.from(document.querySelectorAll('h1')).map(function (h) { return h.innerText; }),
    description: Array.from(document.querySelectorAll('.description')).map(function (d) { return d.innerText; }),
    tables: Array.from(document.querySelectorAll('table')).map(function (t) { return {rows: t.rows.length, shown: shown(t)}; }),
    images: Array.from(document.images).map(function (i) {
      return {src: (i.getAttribute('src') || '').slice(0, 60), decoded: i.complete && i.naturalWidth > 0,
              width: i.naturalWidth, height: i.naturalHeight, shown: shown(i)}; }),
    text: document.body.innerText
  };
  var pre = document.createElement('pre'); pre.id = '%s'; pre.style.display = 'none';
  pre.textContent = JSON.stringify(res); document.body.appendChild(pre);
});
</script>""" % CHECK_ID

def inspect_page(page: Path, browser: str) -> dict:
    "Open `page` in headless Chromium; what the browser shows: H1s, description, tables, images (decoded or not), text."
    page = Path(page)
    probe = page.with_name(page.stem + '.__check__.html')   # beside the page, so relative links resolve the same
    src = page.read_text(encoding='utf-8')
    probe.write_text(src.replace('</body>', _CHECK_JS + '\n</body>') if '</body>' in src else src + _CHECK_JS, encoding='utf-8')
    try:
        r = _chrome(browser, ['--dump-dom', probe.as_uri()])   # Chromium prints the DOM once the page has loaded
    finally: probe.unlink()
    m = re.search(rf'<pre id="{CHECK_ID}"[^>]*>(.*?)</pre>', r.stdout, re.S)
    if not m: raise RuntimeError(f'{browser} rendered no check result for {page} (exit {r.returncode}):\n{r.stderr[-2000:]}')
    return json.loads(html.unescape(m.group(1)))

def screenshot(page: Path, png: Path, browser: str, height: int = 1600):
    "Save what headless Chromium shows of `page` (1280 px wide) to `png`."
    r = _chrome(browser, [f'--window-size=1280,{height}', f'--screenshot={Path(png).resolve()}', Path(page).resolve().as_uri()])
    if not Path(png).exists(): raise RuntimeError(f'no screenshot written:\n{r.stderr[-2000:]}')

def problems(exp: dict, seen: dict) -> list[str]:
    "What the page fails to show of what its notebook holds (empty when it shows everything)."
    out, text = [], norm_text(seen['text'])
    h1 = [norm_text(h) for h in seen['h1']]
    if not exp['title']: out.append('the notebook has no H1 title')
    elif h1[:1] != [exp['title']]: out.append(f"page H1 is {h1[:1]}, notebook title is {exp['title']!r}")
    if exp['subtitle'] and norm_text(exp['subtitle']) not in text: out.append(f"subtitle {exp['subtitle']!r} not shown")
    shown_tables = [t for t in seen['tables'] if t['shown'] and t['rows'] > 0]
    if len(shown_tables) < exp['tables']:
        out.append(f"{exp['tables']} table(s) in the notebook, {len(shown_tables)} shown on the page")
    bad = [i for i in seen['images'] if not (i['decoded'] and i['shown'])]
    for i in bad: out.append(f"image not shown or not decoded: {i['src']!r}")
    for src in exp['outside_images']:
        out.append(f"markdown image {src!r} points outside nbs/: Quarto doesn't publish it, so it is broken on the site"
                   " (show the figure as a cell output instead)")
    good = [i for i in seen['images'] if i['decoded'] and i['shown']]
    if len(good) < exp['figures']: out.append(f"{exp['figures']} figure(s) in the notebook, {len(good)} shown decoded")
    if exp['intro'] and exp['intro'] not in text:
        out.append(f"the title cell's prose is missing from the page ({exp['intro']!r}): nbdev turns the whole H1 cell into"
                   " the title block and drops the rest; keep only the H1 and the `>` line in that cell")
    for p in exp['prose']:
        if p not in text: out.append(f"text missing from the page: {p!r}")
    return out

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--nbs', default=str(ROOT/'nbs'), help='notebooks folder')
    ap.add_argument('--out', default=str(ROOT/'_html'), help='folder for the rendered site (replaced)')
    ap.add_argument('--no-check', action='store_true', help='render only; no browser')
    ap.add_argument('--screenshot', metavar='PAGE', help='also save a screenshot of this page (e.g. data.html) next to it')
    a = ap.parse_args(argv)
    os.chdir(ROOT)   # nbdev reads settings.ini from the working directory up
    if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))   # show_doc cells import llmcourse from this checkout
    nbs = Path(a.nbs)
    pages, errors = render(nbs, Path(a.out))
    print(f"rendered {len(pages)} page(s) into {a.out}")
    for nb, e in errors.items(): print(f"FAIL {nb}: nbdev's docs processing failed\n       {e}")
    if a.no_check: return 1 if errors else 0
    browser = find_browser()
    if not browser: print('no Chromium-family browser found: nothing checked', file=sys.stderr); return 2
    failed = len(errors)
    for nb in site_notebooks(nbs):
        if nb.name in errors: continue
        exp = expectations(nb, nbs)
        seen = inspect_page(pages[exp['page']], browser)
        bad = problems(exp, seen)
        failed += bool(bad)
        n_img = sum(i['decoded'] and i['shown'] for i in seen['images'])
        print(f"{'FAIL' if bad else 'ok  '} {nb.name:28} -> {exp['page']:24} title={exp['title']!r} "
              f"tables {len([t for t in seen['tables'] if t['shown']])}/{exp['tables']} figures {n_img}/{exp['figures']}")
        for b in bad: print('       ' + b)
    if a.screenshot:
        png = Path(a.out)/(Path(a.screenshot).stem + '.png')
        screenshot(pages[a.screenshot], png, browser); print(f"screenshot: {png}")
    return 1 if failed else 0

if __name__ == '__main__': sys.exit(main())
