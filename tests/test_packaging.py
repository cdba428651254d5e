"""The package as a user gets it: a wheel built from a clean checkout carries the embedded data, and a plain (non-editable)
install finds it from anywhere; every numbered notebook opens the way Colab and the docs site need."""
import ast, json, os, re, shutil, subprocess, sys, sysconfig, zipfile
from importlib.metadata import packages_distributions
from importlib.util import find_spec
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT/'nbs').glob('[0-9]*.ipynb') if re.match(r'^\d+[a-z]?_', p.name))

def _tracked_copy(dest: Path) -> Path:
    "The files git tracks (and untracked, unignored ones): what a fresh clone holds, without build/ or *.egg-info."
    out = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, out.decode().split('\0')):
        if (ROOT/rel).is_file():
            (dest/rel).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(ROOT/rel, dest/rel)
    return dest

def _can_build_offline() -> bool:
    "setuptools builds wheels by itself from 70.1; before that it needs the `wheel` package."
    import setuptools
    return tuple(int(x) for x in re.findall(r'\d+', setuptools.__version__)[:2]) >= (70, 1) or find_spec('wheel') is not None

@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    if shutil.which('git') is None: pytest.skip('needs git')
    src = _tracked_copy(tmp_path_factory.mktemp('checkout'))
    dist = tmp_path_factory.mktemp('dist')
    cmd = [sys.executable, '-m', 'pip', 'wheel', str(src), '--no-deps', '-q', '-w', str(dist)]
    if _can_build_offline(): cmd.append('--no-build-isolation')   # reuse this environment's setuptools: fast, offline
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f'building the wheel failed:\n{r.stdout}\n{r.stderr[-4000:]}'
    wheels = list(dist.glob('llmcourse-*.whl'))
    assert len(wheels) == 1, wheels
    return wheels[0]

def test_wheel_carries_the_embedded_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for f in ('tinystories_train.txt.gz', 'tinystories_valid.txt.gz', 'README.md'):
        assert f'llmcourse/assets/{f}' in names, f'{f} is not in the wheel: {sorted(names)}'
    assert not any(n.startswith(('nbs/', 'tests/', 'data/')) for n in names), 'the wheel ships repository folders'

def fresh_venv(tmp_path: Path) -> tuple[Path, Path, dict]:
    "A new venv that sees this environment's packages (not its editable llmcourse): (python, site-packages, env)."
    venv = tmp_path/'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', '--without-pip', str(venv)], check=True)
    py = venv/('Scripts/python.exe' if os.name == 'nt' else 'bin/python')
    site = Path(subprocess.run([str(py), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                               capture_output=True, text=True, check=True).stdout.strip())
    # When the tests themselves run in a venv, --system-site-packages reaches only the base interpreter's packages: list
    # this environment's too (plain paths, their .pth files unread, so an editable llmcourse here stays out of sight).
    (site/'_test_parent_env.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    # No PYTHONPATH: the install and the probe must not see this checkout.
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV')}
    return py, site, env

def pip_install(py: Path, env: dict, *args: str):
    r = subprocess.run([sys.executable, '-m', 'pip', '--python', str(py), 'install', '-q', '--no-index', *args],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f'pip install {" ".join(args)} failed:\n{r.stdout}\n{r.stderr[-4000:]}'

def test_plain_install_finds_the_embedded_data(wheel, tmp_path):
    py, site, env = fresh_venv(tmp_path)
    pip_install(py, env, '--no-deps', str(wheel))
    probe = ("import json, llmcourse\n"
             "from llmcourse.data import asset_path, tinystories_sample\n"
             "print(json.dumps({'pkg': llmcourse.__file__, 'asset': str(asset_path('tinystories_train.txt.gz')),\n"
             "                  'valid': tinystories_sample('valid').count('<|endoftext|>'),\n"
             "                  'train': tinystories_sample('train').count('<|endoftext|>')}))")
    outside = tmp_path/'elsewhere'; outside.mkdir()
    r = subprocess.run([str(py), '-c', probe], cwd=outside, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-4000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    site = site.resolve()
    assert Path(got['pkg']).resolve().is_relative_to(site), f"llmcourse imported from {got['pkg']}, not the installed wheel"
    assert Path(got['asset']).resolve().is_relative_to(site), f"embedded data found at {got['asset']}, outside {site}"
    assert (got['valid'], got['train']) == (100, 1627)

# --- what the notebooks import: the base requirements plus the `course` extra ----------------------------------------

def notebook_imports(nb: Path) -> set[str]:
    "Modules a notebook's cells import when run: not inside `try:` (optional) or a function (imported on use); no stdlib or llmcourse."
    mods = set()
    for c in _cells(nb):
        if c['cell_type'] != 'code': continue
        src = '\n'.join(l for l in _src(c).splitlines() if not l.lstrip().startswith(('!', '%')))
        tree = ast.parse(src)
        optional = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) for b in t.body for n in ast.walk(b)}
        optional |= {id(n) for t in ast.walk(tree) if isinstance(t, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(t)}
        for n in ast.walk(tree):
            if id(n) in optional: continue
            if isinstance(n, ast.Import): mods |= {a.name.split('.')[0] for a in n.names}
            elif isinstance(n, ast.ImportFrom) and not n.level: mods.add(n.module.split('.')[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m != 'llmcourse'}

def _norm(name): return re.sub(r'[-_.]+', '-', name).lower()

def wheel_requirements(wheel: Path) -> dict[str | None, set[str]]:
    "Distribution names the wheel requires, by extra (None for the base requirements)."
    zf = zipfile.ZipFile(wheel)
    meta = zf.read(next(n for n in zf.namelist() if n.endswith('.dist-info/METADATA'))).decode()
    out = {}
    for line in re.findall(r'^Requires-Dist: (.*)$', meta, re.M):
        name = _norm(re.match(r'[A-Za-z0-9_.-]+', line).group(0))
        extra = re.search(r'extra\s*==\s*"([^"]+)"', line)
        out.setdefault(extra.group(1) if extra else None, set()).add(name)
    return out

def test_the_course_extra_covers_every_notebook_import(wheel):
    req = wheel_requirements(wheel)
    allowed = req.get(None, set()) | req.get('course', set())
    dists = packages_distributions()
    missing = {}
    for nb in NOTEBOOKS:
        for m in notebook_imports(nb):
            names = {_norm(d) for d in dists.get(m, [m])}
            if not names & allowed: missing.setdefault(nb.name, []).append(m)
    assert not missing, f'notebooks import modules that neither the requirements nor the course extra install: {missing}'

def test_the_wheel_with_its_course_extra_imports_what_the_notebooks_import(wheel, tmp_path):
    py, site, env = fresh_venv(tmp_path)
    pip_install(py, env, f'{wheel}[course]')   # resolves every course requirement (offline: from this environment)
    mods = sorted(set().union(*map(notebook_imports, NOTEBOOKS)) | {'llmcourse.data', 'llmcourse.train', 'llmcourse.generate'})
    r = subprocess.run([str(py), '-c', f'import importlib; [importlib.import_module(m) for m in {mods!r}]; print("ok")'],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith('ok'), r.stderr[-4000:]

# --- notebook shape: Colab set-up cell, title and subtitle ------------------------------------------------------------

def _cells(nb): return json.loads(nb.read_text(encoding='utf-8'))['cells']
def _src(c): return ''.join(c['source'])
def _git_url():
    ini = (ROOT/'settings.ini').read_text()
    user, repo = (re.search(rf'^{k}\s*=\s*(\S+)', ini, re.M).group(1) for k in ('user', 'repo'))
    return f'https://github.com/{user}/{repo}'

def colab_setup_problems(nb: Path) -> list[str]:
    "Why the first code cell (after `#| default_exp`) isn't the hidden cell that pip-installs the package when it's missing."
    code = [c for c in _cells(nb) if c['cell_type'] == 'code']
    if code and re.match(r'\s*#\|\s*default_exp\b', _src(code[0])): code = code[1:]
    if not code: return ['no code cell after `#| default_exp`']
    s, out = _src(code[0]), []
    if not re.match(r'\s*#\|\s*hide\s*$', s.splitlines()[0]): out.append('first line is not `#| hide`')
    if not re.search(r'^try:\s*import llmcourse\s*$', s, re.M) or not re.search(r'^except ImportError:', s, re.M):
        out.append('no `try: import llmcourse` / `except ImportError:`')
    if not re.search(r"'pip',\s*'install'.*'llmcourse\[course\] @ git\+" + re.escape(_git_url()), s):
        out.append(f"no pip install of 'llmcourse[course] @ git+{_git_url()}' (the course extra installs what notebooks import)")
    return [f'{p}:\n{s}' for p in out]

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_opens_with_colab_setup(nb):
    bad = colab_setup_problems(nb)
    assert not bad, f'{nb.name}: the first code cell after default_exp must be the Colab set-up cell of 00a_data.ipynb; ' + bad[0]

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_starts_with_title_and_subtitle(nb):
    md = [_src(c) for c in _cells(nb) if c['cell_type'] == 'markdown']
    assert md, f'{nb.name} has no markdown cell'
    lines = [l for l in md[0].splitlines() if l.strip()]
    assert re.match(r'#\s+\S', lines[0]), f'{nb.name}: the first markdown cell must open with an H1 title, not {lines[0]!r}'
    assert len(lines) > 1 and re.match(r'>\s+\S', lines[1]), f'{nb.name}: the H1 title must be followed by a one-line `>` subtitle'

def test_shape_checks_can_fail(tmp_path):
    good = json.loads((ROOT/'nbs'/'00a_data.ipynb').read_text(encoding='utf-8'))
    assert colab_setup_problems(ROOT/'nbs'/'00a_data.ipynb') == []
    bad = dict(good, cells=[c for c in good['cells'] if 'except ImportError' not in _src(c)])
    (tmp_path/'99_bad.ipynb').write_text(json.dumps(bad))
    assert colab_setup_problems(tmp_path/'99_bad.ipynb')
