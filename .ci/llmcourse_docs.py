"""What the docs show a reader beyond nbdev's own processing: an nbdev processor and the sidebar, shared by the site and
the offline render.

`ReaderView` is an nbdev notebook processor, named in settings.ini (`procs = llmcourse_docs:ReaderView`), so nbdev's
`FilterDefaults` runs it after its own processors on every notebook: in `nbdev_docs` on the GitHub Pages workflow and in
`.ci/render_docs.py` alike. nbdev imports it by module name, so this folder (.ci/) must be on the path of whatever runs
nbdev's docs processing: .ci/render_docs.py puts it there itself, the Pages workflow sets `PYTHONPATH=.ci`, and by hand it is
`PYTHONPATH=.ci nbdev_preview`. It lives here, not in the package, because llmcourse/ holds only modules that notebooks
export, and the wheel has no use for it. For each notebook it

- adds an "Open in Colab" badge under the title (not on the home page), linking to the notebook on GitHub;
- drops ipywidgets views: a static page has no kernel, so a tqdm bar shows the state it was drawn in (0%, 50%) forever and an
  interactive control does nothing. A progress bar goes (the run's own log lines stay); another widget becomes a one-line
  note; the saved widget state goes too, so Quarto loads no widget scripts;
- demotes headings inside cell outputs so that the page keeps one H1 (a Markdown report shown as an output starts at H2);
- turns back into plain `name` the links that nbdev's `add_links` writes inside show_doc signatures: the signature is a code
  block, where a Markdown link shows raw. Links written by hand in docments stay, and the page check reports them.

`sidebar(nbs)` is the sidebar, derived from the notebooks present: the home page, then "Course" (every numbered notebook
that is not an experiment, in file order), then "Experiments" (06, 07, 09), "Report" (90, the answers and results page) and
"Beyond assignment 1" (10 on), each once it has pages.
`python .ci/llmcourse_docs.py sidebar` writes it to nbs/sidebar.yml (the Pages workflow does so before `nbdev_docs`, and
tests/test_docs.py checks that the committed file is current).
"""
from __future__ import annotations
import base64, re, sys
from pathlib import Path

# --- the Colab badge ------------------------------------------------------------------------------------------------

COLAB = 'https://colab.research.google.com/github'
BADGE_ALT = 'Open in Colab'
# The badge is inline SVG (no file to publish, nothing fetched: the offline page shows it too), drawn like Colab's own.
_BADGE_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20" role="img" aria-label="Open in Colab">'
              '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
              '<stop offset="1" stop-opacity=".1"/></linearGradient>'
              '<clipPath id="r"><rect width="117" height="20" rx="3" fill="#fff"/></clipPath>'
              '<g clip-path="url(#r)"><rect width="50" height="20" fill="#555"/><rect x="50" width="67" height="20" fill="#f9ab00"/>'
              '<rect width="117" height="20" fill="url(#s)"/></g>'
              '<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,Geneva,sans-serif" font-size="11">'
              '<text x="25" y="14">Open in</text><text x="83" y="14" fill="#333">Colab</text></g></svg>')
BADGE_SRC = 'data:image/svg+xml;base64,' + base64.b64encode(_BADGE_SVG.encode()).decode()

def _cfg():
    from nbdev.config import get_config
    return get_config()

def colab_url(nb_path: str | Path, cfg=None) -> str:
    "Where Colab opens `nb_path` from the repository on GitHub: .../github/USER/REPO/blob/BRANCH/nbs/NAME.ipynb."
    cfg = cfg or _cfg()
    nb_path = Path(nb_path).resolve()
    try: rel = nb_path.relative_to(Path(cfg.nbs_path).resolve())
    except ValueError: rel = Path(nb_path.name)   # a notebook outside the project's nbs/ (the tests' fixtures)
    nbs = Path(cfg.nbs_path).resolve().relative_to(Path(cfg.config_path).resolve())
    return f"{COLAB}/{cfg.user}/{cfg.repo}/blob/{cfg.branch}/{(nbs/rel).as_posix()}"

def badge_markdown(url: str) -> str: return f'[![{BADGE_ALT}]({BADGE_SRC})]({url})'

def wants_badge(nb_path: str | Path) -> bool:
    "Every notebook page but the home page (index.ipynb, which is also the README)."
    return Path(nb_path).name != 'index.ipynb'

# --- widgets --------------------------------------------------------------------------------------------------------

WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'
# A tqdm meter as text: "demo:  50%|#####     | 15/30 [00:01<00:01, 9.8it/s]"
TQDM_RE = re.compile(r'(\d{1,3})%\|[^|\n]*\|\s*[\d.]+[kMG]?/[\d.]+[kMG]?\b')
WIDGET_NOTE = '*An interactive widget is here: run the notebook (in Jupyter, or in Colab from the badge above) to use it.*'

def _text(v) -> str: return ''.join(v) if isinstance(v, list) else (v or '')

def drop_widgets(cell):
    "Drop tqdm bars drawn as widgets; replace any other widget view by a note. Returns how many outputs changed."
    if cell.get('cell_type') != 'code' or not cell.get('outputs'): return 0
    outs, n = [], 0
    for o in cell.outputs:
        data = o.get('data') or {}
        if WIDGET_VIEW not in data: outs.append(o); continue
        n += 1
        if TQDM_RE.search(_text(data.get('text/plain'))): continue
        o['data'] = {'text/markdown': WIDGET_NOTE}
        outs.append(o)
    cell['outputs'] = outs
    return n

# --- headings inside outputs ----------------------------------------------------------------------------------------

_md_head = re.compile(r'^(#{1,6})(?=\s)', re.M)
_fence = re.compile(r'^(```|~~~).*?^\1', re.M | re.S)
_html_head = re.compile(r'<(/?)h([1-6])\b', re.I)

def demote_markdown(md: str, top: int = 2) -> str:
    "Shift the ATX headings of `md` (outside code fences) down so that the highest is at least `top` (H1 -> H2 ...)."
    parts, last, chunks = [], 0, []
    for m in _fence.finditer(md): chunks += [(md[last:m.start()], True), (m.group(0), False)]; last = m.end()
    chunks.append((md[last:], True))
    levels = [len(h) for c, prose in chunks if prose for h in _md_head.findall(c)]
    shift = max(0, top - min(levels)) if levels else 0
    if not shift: return md
    for c, prose in chunks:
        parts.append(_md_head.sub(lambda m: '#' * min(6, len(m.group(1)) + shift), c) if prose else c)
    return ''.join(parts)

def demote_html(h: str, top: int = 2) -> str:
    "The same for <h1>..<h6> tags in an HTML output."
    levels = [int(l) for _, l in _html_head.findall(h)]
    shift = max(0, top - min(levels)) if levels else 0
    if not shift: return h
    return _html_head.sub(lambda m: f'<{m.group(1)}h{min(6, int(m.group(2)) + shift)}', h)

def heading_level(md: str) -> int | None:
    "The level of the last ATX heading of a markdown cell (outside code fences), if any."
    levels = [len(h) for h in _md_head.findall(_fence.sub('', md))]
    return levels[-1] if levels else None

def demote_output_headings(cell, top: int = 2):
    "An output never titles the page: its headings start at `top` (one below the section it sits in), show_doc's aside."
    for o in cell.get('outputs', []) if cell.get('cell_type') == 'code' else []:
        data = o.get('data') or {}
        if 'text/markdown' in data and not is_show_doc(_text(data['text/markdown'])):
            data['text/markdown'] = demote_markdown(_text(data['text/markdown']), top)
        if 'text/html' in data: data['text/html'] = demote_html(_text(data['text/html']), top)

# --- show_doc signatures --------------------------------------------------------------------------------------------

_nbdev_link = re.compile(r'\[(`[^`\n]+`)\]\((?:https?://|/)[^)\s]*\)')   # what nbdev's add_links writes for `name`

def unlink_signature(md: str) -> str:
    "Inside the code fences of a show_doc output, `[`name`](url)` (nbdev's auto-link) back to `name`."
    return _fence.sub(lambda m: _nbdev_link.sub(r'\1', m.group(0)), md)

def is_show_doc(md: str) -> bool: return bool(re.match(r'\s*---\s*\n', md)) and bool(re.search(r'^#{2,4} ', md, re.M))

def unlink_signatures(cell):
    for o in cell.get('outputs', []) if cell.get('cell_type') == 'code' else []:
        data = o.get('data') or {}
        md = _text(data.get('text/markdown'))
        if md and is_show_doc(md): data['text/markdown'] = unlink_signature(md)

# --- the processor --------------------------------------------------------------------------------------------------

try: from nbdev.process import Processor
except ImportError: Processor = object   # the sidebar CLI needs no nbdev

class ReaderView(Processor):
    "nbdev processor: Colab badge, no widget views, one H1, no nbdev links inside signatures (see the module docstring)."
    def begin(self): self.level = 1   # the level of the section the current cell sits in
    def cell(self, cell):
        if cell.cell_type == 'markdown': self.level = heading_level(cell.source) or self.level
        drop_widgets(cell); demote_output_headings(cell, min(6, self.level + 1)); unlink_signatures(cell)
    def end(self):
        nb = self.nb
        nb.metadata.pop('widgets', None)
        path = getattr(nb, 'path_', None)
        if not path or not wants_badge(path): return
        from execnb.nbio import mk_cell
        cells = nb.cells
        # after nbdev's front matter (the title block), or at the top when the notebook has none
        at = next((i + 1 for i, c in enumerate(cells[:1]) if c.cell_type == 'raw' and c.source.lstrip().startswith('---')), 0)
        cells.insert(at, mk_cell(badge_markdown(colab_url(path)), 'markdown'))

# --- the sidebar ----------------------------------------------------------------------------------------------------

# The sections and the notebook numbers in each; a number not listed is Course (08, the numpy model, belongs to the course).
SECTIONS = {'Experiments': ('06', '07', '09'), 'Report': ('90',), 'Beyond assignment 1': ('10', '11', '12')}
_numbered = re.compile(r'^(\d+)[a-z]?_')

def site_notebooks(nbs: Path) -> list[Path]:
    "The numbered notebooks (`00_x.ipynb`, `03a_y.ipynb`, ...) and index.ipynb; scratch notebooks (`_x.ipynb`) stay out."
    nbs = Path(nbs)
    found = sorted(p for p in nbs.glob('[0-9]*.ipynb') if _numbered.match(p.name))
    return ([nbs/'index.ipynb'] if (nbs/'index.ipynb').exists() else []) + found

def sidebar(nbs: Path) -> dict:
    "Quarto's sidebar for the notebooks in `nbs`: home page, Course, then each section of SECTIONS once it has pages."
    nbs = Path(nbs)
    found = site_notebooks(nbs)
    numbered = [p.name for p in found if p.name != 'index.ipynb']
    def section(name): return next((s for s, nums in SECTIONS.items() if _numbered.match(name).group(1) in nums), 'Course')
    contents = ['index.ipynb'] if (nbs/'index.ipynb').exists() else []
    contents += [{'section': s, 'contents': pages} for s in ('Course', *SECTIONS)
                 if (pages := [n for n in numbered if section(n) == s])]
    return {'website': {'sidebar': {'contents': contents}}}

def sidebar_yml(nbs: Path) -> str:
    import yaml
    head = '# Written by `python .ci/llmcourse_docs.py sidebar` from the notebooks in nbs/: do not edit by hand.\n'
    return head + yaml.safe_dump(sidebar(nbs), sort_keys=False, default_flow_style=False)

def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description='Write the docs sidebar (nbs/sidebar.yml) from the notebooks present.')
    ap.add_argument('cmd', choices=['sidebar'])
    ap.add_argument('--nbs', default=str(Path(__file__).resolve().parents[1]/'nbs'))
    ap.add_argument('--check', action='store_true', help='only say whether the file is current (exit 1 if not)')
    a = ap.parse_args(argv)
    dest, text = Path(a.nbs)/'sidebar.yml', sidebar_yml(Path(a.nbs))
    if a.check:
        ok = dest.exists() and dest.read_text() == text
        print(f"{dest} is {'current' if ok else 'out of date: run python .ci/llmcourse_docs.py sidebar'}")
        return 0 if ok else 1
    dest.write_text(text); print(f'wrote {dest}')
    return 0

if __name__ == '__main__': sys.exit(main())
