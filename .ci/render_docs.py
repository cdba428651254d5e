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

Beyond nbdev's own processors, `FilterDefaults` runs the ones settings.ini names (`procs`): `llmcourse_docs.ReaderView`
(in this folder: Colab badge, no widget views, one H1, no nbdev links inside signatures), so the site and this render get
the same pages. Equations are typeset by a local MathJax 2 (the `jupyter-server-mathjax` package, a dev requirement),
copied beside the pages as `site_libs/mathjax/`: the check runs offline, where the CDN copy nbconvert names can't load.

Each page is checked for what a reader sees: the notebook's title as its only H1, subtitle, prose, tables and figures
(decoded), typeset equations where the notebook has `$...$` maths, API signatures without raw Markdown links or
`NoneType=None`, no widget views or frozen progress bars, and the "Open in Colab" badge linking to the notebook.

    python .ci/render_docs.py                        # render into _html/ and check every page
    python .ci/render_docs.py --out /tmp/site --screenshot data.html   # also save a screenshot of one page
"""
from __future__ import annotations
import argparse, html, json, os, re, shutil, subprocess, sys, tempfile, warnings
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path: sys.path.insert(0, str(HERE))   # nbdev imports the processors settings.ini names from here
import llmcourse_docs as ld
BROWSERS = ('google-chrome', 'google-chrome-stable', 'chromium', 'chromium-browser')
CHECK_ID = '__docs_check__'

# --- which notebooks make the site ----------------------------------------------------------------------------------

site_notebooks = ld.site_notebooks

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

# TeX maths as MathJax's tex2jax finds it in Markdown: $$...$$ and $...$ (not `\$`, not inside code)
_code_md = re.compile(r'```.*?```|~~~.*?~~~|`[^`\n]*`', re.S)
_math_md = re.compile(r'\$\$.+?\$\$|(?<![\\$])\$(?!\s)(?:\\.|[^$\\])+?(?<!\s)\$(?!\$)', re.S)

def n_maths(md: str) -> int:
    "How many equations (`$...$`, `$$...$$`) a Markdown cell holds, code spans and fences left out."
    return len(_math_md.findall(_code_md.sub('', md)))

def _words(text: str, n: int = 70) -> str:
    "Up to `n` characters of the text of `text` outside its equations (MathJax replaces those), from its first prose."
    parts = [norm_text(p) for p in _math_md.split(text)]
    return next((p[:n] for p in parts if len(p) >= min(20, len(text))), '')

def _n_tables(h: str) -> int: return len(re.findall(r'<table\b', h, re.I))
def _n_imgs(h: str) -> int: return len(re.findall(r'<img\b', h, re.I))

def expectations(nb_path: Path, nbs: Path | None = None) -> dict:
    "Title, subtitle, tables, figures and a line of prose per markdown cell that the page of `nb_path` must show."
    from execnb.nbio import read_nb
    nb_path = Path(nb_path).resolve()
    nbs = Path(nbs).resolve() if nbs else nb_path.parent
    nb = read_nb(nb_path)
    title = subtitle = intro = None
    tables = figures = maths = 0
    prose, md_images = [], []
    for cell in nb.cells:
        if cell.cell_type == 'markdown':
            src = cell.source
            if src.strip().startswith('#') and src.strip().endswith(' -'): continue   # nbdev's rm_header_dash
            maths += n_maths(src)
            h = _md2html(src)
            tables += _n_tables(h); figures += _n_imgs(h)
            md_images += re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', h)
            blocks = _Blocks(); blocks.feed(h)
            if title is None and re.search(r'^#\s+\S', src, re.M):   # nbdev's rule for the title cell
                # as displayed: markdown in the title (`# The *KV* cache`) is rendered on the page too
                title = next((norm_text(t) for tag, t in blocks.blocks if tag == 'h1'), None)
                subtitle = next((norm_text(t) for tag, t in blocks.blocks if tag == 'blockquote'), None)
                blocks.blocks = [b for b in blocks.blocks if b[0] not in ('h1', 'blockquote')]
                intro = next((_words(norm_text(t)) for tag, t in blocks.blocks if tag == 'p' and norm_text(t)), None)
                continue
            first = next((norm_text(t) for tag, t in blocks.blocks if tag in ('p', 'h2', 'h3', 'h4') and norm_text(t)), None)
            if first and (words := _words(first)): prose.append(words)
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
                tables=tables, figures=figures, maths=maths, prose=prose, outside_images=outside,
                colab=ld.colab_url(nb_path) if ld.wants_badge(nb_path) else None)

# --- nbdev processing + the Quarto cell options, then nbconvert -----------------------------------------------------

_re_qopt = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')

_re_attr_link = re.compile(r'\[([^\]\n]+)\]\(([^)\s]+)\)\{([^}\n]*)\}')

def _link_attrs(md: str) -> str:
    "Pandoc's link attributes, `[text](url){target=\"_blank\" style=\"...\"}`, as the HTML link Quarto writes."
    return _re_attr_link.sub(lambda m: f'<a href="{m.group(2)}" {m.group(3)}>{m.group(1)}</a>', md)

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
            for o in cell.get('outputs', []):   # show_doc's `[source](url){target="_blank" ...}`: Quarto makes it <a ...>
                if 'text/markdown' in o.get('data', {}):
                    o['data']['text/markdown'] = _link_attrs(ld._text(o['data']['text/markdown']))
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
MATHJAX_DIR = 'site_libs/mathjax'   # where the local MathJax goes in the rendered site

def local_mathjax() -> Path | None:
    "The MathJax 2 files the `jupyter-server-mathjax` package ships (None when it isn't installed)."
    try: import jupyter_server_mathjax
    except ImportError: return None
    d = Path(jupyter_server_mathjax.__file__).parent/'static'
    return d if (d/'MathJax.js').exists() else None

def copy_mathjax(out: Path) -> bool:
    "Copy the local MathJax into the site (English messages only); False when there is none."
    src = local_mathjax()
    if src is None: return False
    skip = lambda d, names: [n for n in names if Path(d).name == 'localization' and n != 'en']
    shutil.copytree(src, out/MATHJAX_DIR, ignore=skip, dirs_exist_ok=True)
    return True

# The package ships MathJax's combined TeX config with HTML-CSS output and the STIX-Web fonts (not MathJax's TeX fonts).
_MATHJAX_CONFIG = """<script type="text/x-mathjax-config">
MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null},
                    MMLorHTML: {prefer: "HTML"}, menuSettings: {renderer: "HTML-CSS"}});
</script>
"""

def _configure_mathjax(body: str, url: str) -> str:
    "Configure the local MathJax (loaded from `url`, nbconvert's `mathjax_url`) for the fonts that copy has."
    tag = f'<script src="{html.escape(url)}">'
    if tag not in body: raise RuntimeError(f"nbconvert's page has no {tag}: its template changed")
    return body.replace(tag, _MATHJAX_CONFIG + tag, 1)

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
    mathjax = copy_mathjax(out)
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
            depth = len(nb_path.relative_to(nbs).parent.parts)
            if mathjax: exporter.mathjax_url = '../' * depth + MATHJAX_DIR + '/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe'
            body, _ = exporter.from_notebook_node(node, resources={'metadata': {'name': title}})
            if mathjax: body = _configure_mathjax(body, exporter.mathjax_url)
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

VIRTUAL_TIME_MS = 30000

def _chrome(browser: str, args: list[str], timeout: int = 60) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix='llmcourse-chrome-') as profile:
        cmd = [browser, '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic',
               '--no-first-run', '--no-default-browser-check', '--disable-background-networking',
               '--disable-component-update', '--disable-sync', '--disable-extensions', '--mute-audio', '--hide-scrollbars',
               # The check is offline: CDN scripts (MathJax, require.js) fail at once instead of waiting on the network.
               '--host-resolver-rules=MAP * ~NOTFOUND', f'--user-data-dir={profile}', '--window-size=1280,1600',
               # Virtual time runs the page's timers (MathJax typesets after load) until idle, within this budget.
               f'--virtual-time-budget={VIRTUAL_TIME_MS}', *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

_CHECK_JS = """<script>
function __docs_collect__() {
  function shown(e) { var r = e.getBoundingClientRect(), s = getComputedStyle(e);
                      return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; }
  var mj = window.MathJax && window.MathJax.Hub;
  var scripts = Array.from(document.querySelectorAll('script[type^="math/tex"]'));
  var res = {
    h1: Array.from(document.querySelectorAll('h1')).map(function (h) { return h.innerText; }),
    description: Array.from(document.querySelectorAll('.description')).map(function (d) { return d.innerText; }),
    tables: Array.from(document.querySelectorAll('table')).map(function (t) { return {rows: t.rows.length, shown: shown(t)}; }),
    images: Array.from(document.images).map(function (i) {
      return {src: (i.getAttribute('src') || '').slice(0, 60), decoded: i.complete && i.naturalWidth > 0,
              width: i.naturalWidth, height: i.naturalHeight, shown: shown(i), alt: i.alt || ''}; }),
    // MathJax 2 keeps each equation's TeX in a math/tex script, right after the typeset equation it drew
    maths: {mathjax: !!mj, found: scripts.length,
            typeset: scripts.filter(function (s) { var e = s.previousElementSibling;
              return e && /MathJax/.test(e.className) && shown(e); }).length,
            errors: mj ? mj.getAllJax().filter(function (j) { return j.texError || (j.root && j.root.texError); })
                           .map(function (j) { return j.originalText; }) : []},
    // show_doc output: a Markdown output that opens with a rule, then the name as a heading and the signature's code
    signatures: Array.from(document.querySelectorAll('.jp-OutputArea-output[data-mime-type="text/markdown"]'))
      .filter(function (e) { return e.firstElementChild && e.firstElementChild.tagName === 'HR' &&
                                    e.querySelector('h2, h3, h4') && e.querySelector('pre'); })
      .map(function (e) { return {name: e.querySelector('h2, h3, h4').innerText.replace(/\u00b6/g, '').trim(),
                                  text: e.innerText}; }),
    widgets: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"], .jupyter-widgets').length,
    colab: Array.from(document.querySelectorAll('a[href^="https://colab.research.google.com/"]')).map(function (a) {
      var i = a.querySelector('img');
      return {href: a.getAttribute('href'), badge: !!i && i.complete && i.naturalWidth > 0 && shown(i), alt: i ? i.alt : ''}; }),
    text: document.body.innerText
  };
  var pre = document.createElement('pre'); pre.id = '%s'; pre.style.display = 'none';
  pre.textContent = JSON.stringify(res); document.body.appendChild(pre);
}
window.addEventListener('load', function () {
  // wait for MathJax's typesetting when the page loaded it
  if (window.MathJax && window.MathJax.Hub && window.MathJax.Hub.Queue) window.MathJax.Hub.Queue(__docs_collect__);
  else __docs_collect__();
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

def screenshot(page: Path, png: Path, browser: str, height: int = 1600, anchor: str = ''):
    "Save what headless Chromium shows of `page` (1280 px wide; scrolled to `#anchor` if given) to `png`."
    page = Path(page).resolve()
    if not anchor:
        r = _chrome(browser, [f'--window-size=1280,{height}', f'--screenshot={Path(png).resolve()}', page.as_uri()])
    else:   # headless Chromium shoots the top of the page: hide the cells above the anchor's
        js = ('<script>window.addEventListener("load", function () { var e = document.getElementById(%s);'
              ' var c = e && e.closest(".jp-Cell"); while (c && c.previousElementSibling) {'
              ' c = c.previousElementSibling; c.style.display = "none"; } });</script>' % json.dumps(anchor))
        probe = page.with_name(page.stem + '.__shot__.html')
        probe.write_text(page.read_text(encoding='utf-8').replace('</body>', js + '</body>'), encoding='utf-8')
        try: r = _chrome(browser, [f'--window-size=1280,{height}', f'--screenshot={Path(png).resolve()}', probe.as_uri()])
        finally: probe.unlink()
    if not Path(png).exists(): raise RuntimeError(f'no screenshot written:\n{r.stderr[-2000:]}')

def problems(exp: dict, seen: dict) -> list[str]:
    "What the page fails to show of what its notebook holds (empty when it shows everything)."
    out, text = [], norm_text(seen['text'])
    h1 = [norm_text(h) for h in seen['h1']]
    if not exp['title']: out.append('the notebook has no H1 title')
    elif h1[:1] != [exp['title']]: out.append(f"page H1 is {h1[:1]}, notebook title is {exp['title']!r}")
    if len(h1) > 1: out.append(f"the page has {len(h1)} H1s, {h1}: a page has one, its title (a heading in an output or"
                               " a markdown cell starts at ##)")
    if exp['subtitle'] and norm_text(exp['subtitle']) not in text: out.append(f"subtitle {exp['subtitle']!r} not shown")
    shown_tables = [t for t in seen['tables'] if t['shown'] and t['rows'] > 0]
    if len(shown_tables) < exp['tables']:
        out.append(f"{exp['tables']} table(s) in the notebook, {len(shown_tables)} shown on the page")
    bad = [i for i in seen['images'] if not (i['decoded'] and i['shown'])]
    for i in bad: out.append(f"image not shown or not decoded: {i['src']!r}")
    for src in exp['outside_images']:
        out.append(f"markdown image {src!r} points outside nbs/: Quarto doesn't publish it, so it is broken on the site"
                   " (show the figure as a cell output instead)")
    good = [i for i in seen['images'] if i['decoded'] and i['shown'] and i.get('alt') != ld.BADGE_ALT]   # figures only
    if len(good) < exp['figures']: out.append(f"{exp['figures']} figure(s) in the notebook, {len(good)} shown decoded")
    if exp['intro'] and exp['intro'] not in text:
        out.append(f"the title cell's prose is missing from the page ({exp['intro']!r}): nbdev turns the whole H1 cell into"
                   " the title block and drops the rest; keep only the H1 and the `>` line in that cell")
    for p in exp['prose']:
        if p not in text: out.append(f"text missing from the page: {p!r}")
    out += maths_problems(exp, seen) + signature_problems(seen) + widget_problems(seen) + badge_problems(exp, seen)
    return out

def maths_problems(exp: dict, seen: dict) -> list[str]:
    "Every equation of the notebook typeset (MathJax drew it), none with a TeX error."
    m, out = seen.get('maths', {}), []
    if exp.get('maths') and m.get('typeset', 0) < exp['maths']:
        why = ('' if m.get('mathjax') else ': MathJax did not load (the local copy comes from the jupyter-server-mathjax'
               ' package, a dev requirement)')
        out.append(f"{exp['maths']} equation(s) in the notebook, {m.get('typeset', 0)} typeset on the page{why}")
    for tex in m.get('errors', []): out.append(f"equation with a TeX error: {tex[:80]!r}")
    return out

RAW_LINK = re.compile(r'\[[^\]\n]+\]\([^)\s]+\)')

def signature_problems(seen: dict) -> list[str]:
    "show_doc output as a reader sees it: no `NoneType=None` (an unannotated `=None`), no raw Markdown link."
    out = []
    for sig in seen.get('signatures', []):
        t = sig['text']
        if (n := t.count('NoneType=None')):
            out.append(f"signature of {sig['name']} shows NoneType=None ({n}x): annotate the optional argument(s),"
                       " e.g. `device: str | None = None`")
        for link in RAW_LINK.findall(t):
            out.append(f"signature of {sig['name']} shows a raw Markdown link {link[:70]!r}: docments and docstrings"
                       " in a signature are code, keep links out of them")
    return out

def frozen_bars(text: str) -> list[str]:
    "tqdm meters in the page text that stopped short of 100%."
    return [m.group(0) for m in ld.TQDM_RE.finditer(text) if int(m.group(1)) < 100]

def widget_problems(seen: dict) -> list[str]:
    "No ipywidgets view (nothing runs it on a static page) and no progress bar frozen short of 100%."
    out = []
    if seen.get('widgets'): out.append(f"{seen['widgets']} ipywidgets view(s) on the page: a static page can't run them")
    for bar in frozen_bars(seen['text']): out.append(f"progress bar frozen at {bar!r}")
    return out

def badge_problems(exp: dict, seen: dict) -> list[str]:
    "The 'Open in Colab' badge, shown, linking to the notebook on GitHub."
    if not exp.get('colab'): return []
    links = seen.get('colab', [])
    if any(l['href'] == exp['colab'] and l['badge'] for l in links): return []
    if any(l['href'] == exp['colab'] for l in links): return [f"the Open in Colab link to {exp['colab']} shows no badge"]
    return [f"no Open in Colab badge linking to {exp['colab']}" + (f" (links found: {[l['href'] for l in links]})" if links else '')]

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--nbs', default=str(ROOT/'nbs'), help='notebooks folder')
    ap.add_argument('--out', default=str(ROOT/'_html'), help='folder for the rendered site (replaced)')
    ap.add_argument('--no-check', action='store_true', help='render only; no browser')
    ap.add_argument('--screenshot', metavar='PAGE', help='also save a screenshot of this page (e.g. data.html, or'
                    ' data.html#some-heading to scroll there) next to it')
    a = ap.parse_args(argv)
    os.chdir(ROOT)   # nbdev reads settings.ini from the working directory up
    if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))   # show_doc cells import llmcourse from this checkout
    nbs = Path(a.nbs)
    pages, errors = render(nbs, Path(a.out))
    print(f"rendered {len(pages)} page(s) into {a.out}")
    for nb, e in errors.items(): print(f"FAIL {nb}: nbdev's docs processing failed\n       {e}")
    stale_sidebar = (nbs/'sidebar.yml').exists() and (nbs/'sidebar.yml').read_text() != ld.sidebar_yml(nbs)
    if stale_sidebar: print('FAIL nbs/sidebar.yml does not list the notebooks present: run python .ci/llmcourse_docs.py sidebar')
    if a.no_check: return 1 if errors or stale_sidebar else 0
    browser = find_browser()
    if not browser: print('no Chromium-family browser found: nothing checked', file=sys.stderr); return 2
    failed = len(errors) + stale_sidebar
    for nb in site_notebooks(nbs):
        if nb.name in errors: continue
        exp = expectations(nb, nbs)
        seen = inspect_page(pages[exp['page']], browser)
        bad = problems(exp, seen)
        failed += bool(bad)
        n_img = sum(i['decoded'] and i['shown'] and i['alt'] != ld.BADGE_ALT for i in seen['images'])
        print(f"{'FAIL' if bad else 'ok  '} {nb.name:28} -> {exp['page']:24} title={exp['title']!r} "
              f"tables {len([t for t in seen['tables'] if t['shown']])}/{exp['tables']} figures {n_img}/{exp['figures']}"
              f" equations {seen['maths']['typeset']}/{exp['maths']}")
        for b in bad: print('       ' + b)
    if a.screenshot:
        name, _, anchor = a.screenshot.partition('#')
        suffix = '-' + re.sub(r'[^\w-]+', '_', anchor) if anchor else ''
        png = Path(a.out)/(Path(name).stem + suffix + '.png')
        screenshot(pages[name], png, browser, anchor=anchor); print(f"screenshot: {png}")
    return 1 if failed else 0

if __name__ == '__main__': sys.exit(main())
