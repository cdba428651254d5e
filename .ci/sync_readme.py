"""Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto; this needs nothing).

`python .ci/sync_readme.py` rewrites README.md; `--check` exits 1 when README.md has drifted from the notebook.
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = '<!-- Generated from nbs/index.ipynb by `python .ci/sync_readme.py`: edit the notebook, not this file. -->\n\n'

def render(nb_path=ROOT/'nbs'/'index.ipynb'):
    "README text: the notebook's markdown cells, links to notebooks pointed into nbs/."
    cells = json.loads(Path(nb_path).read_text(encoding='utf-8'))['cells']
    md = [''.join(c['source']).strip() for c in cells if c['cell_type'] == 'markdown']
    text = '\n\n'.join(md) + '\n'
    return HEADER + re.sub(r'\]\((?!https?:)([^)\s]+\.ipynb)\)', r'](nbs/\1)', text)

def main(argv):
    readme, want = ROOT/'README.md', render()
    if '--check' in argv:
        if not readme.exists() or readme.read_text(encoding='utf-8') != want:
            sys.exit('README.md has drifted from nbs/index.ipynb: run `python .ci/sync_readme.py`')
        return
    tmp = readme.with_suffix('.md.tmp')
    tmp.write_text(want, encoding='utf-8')
    tmp.replace(readme)

if __name__ == '__main__': main(sys.argv[1:])
