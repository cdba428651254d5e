"""The repository's own invariants: generated code and README match the notebooks; CI runs README's test command."""
import re, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

def tracked_copy(dest):
    "Copy the files git tracks (plus untracked, unignored ones) into `dest`, as a fresh clone would have them."
    out = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, out.decode().split('\0')):
        src = ROOT/rel
        if src.is_file():
            (dest/rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest/rel)
    subprocess.run(['git', 'init', '-q'], cwd=dest, check=True)
    subprocess.run(['git', 'add', '-A'], cwd=dest, check=True)
    subprocess.run(['git', '-c', 'user.name=ci', '-c', 'user.email=ci@localhost', 'commit', '-qm', 'snapshot'], cwd=dest, check=True)
    return dest

def changed(repo):
    return subprocess.run(['git', 'status', '--porcelain'], cwd=repo, capture_output=True, text=True, check=True).stdout

@pytest.mark.skipif(shutil.which('git') is None, reason='needs git')
def test_export_and_clean_leave_no_diff(tmp_path):
    repo = tracked_copy(tmp_path/'repo')
    bindir = Path(sys.executable).parent
    for cmd in ('nbdev_export', 'nbdev_clean'):
        subprocess.run([str(bindir/cmd)], cwd=repo, check=True, capture_output=True)
        assert changed(repo) == '', f'{cmd} changed files; run it and commit:\n{changed(repo)}'

def test_readme_matches_index():
    r = subprocess.run([sys.executable, str(ROOT/'.ci'/'sync_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def readme_commands():
    return re.findall(r'```sh\n(.*?)\n```', (ROOT/'README.md').read_text(encoding='utf-8'), re.S)

def test_ci_runs_readme_test_command():
    cmds = readme_commands()
    assert len(cmds) >= 2, 'README needs its two set-up commands'
    setup, test = cmds[0], cmds[1]
    assert 'nbdev_test' in test and 'pytest' in test
    ci_lines = (ROOT/'.ci'/'run').read_text().splitlines()
    assert test in ci_lines, '.ci/run must run README command 2 verbatim'
    assert 'torch==2.13.0' in setup and 'constraints.txt' in setup

def test_constraints_pin_nbdev2():
    pins = (ROOT/'constraints.txt').read_text()
    for pin in ('nbdev==2.4.14', 'execnb<0.2', 'fastcore<2', 'ghapi<2'): assert pin in pins

def test_requirements_give_torch_a_range():
    ini = (ROOT/'settings.ini').read_text()
    req = re.search(r'^requirements\s*=\s*(.*)$', ini, re.M).group(1).split()
    torch = [r for r in req if r.startswith('torch')]
    assert torch and '==' not in torch[0], 'torch must be a range, never an exact pin'

def test_slow_and_gpu_flags_are_skipped_by_default():
    ini = (ROOT/'settings.ini').read_text()
    flags = re.search(r'^tst_flags\s*=\s*(.*)$', ini, re.M).group(1)
    assert set(flags.split()) >= {'slow', 'gpu'}, 'nbdev 2.4.14 splits tst_flags on whitespace'

def test_the_product_never_reads_a_shared_folder():
    "../shared/data exists only on the build machines: no module, notebook, test or CI step may look for it."
    import json
    def code(p):  # a notebook's code cells (their outputs may quote how a benchmark was run on a build machine)
        if p.suffix != '.ipynb': return p.read_text(encoding='utf-8', errors='replace')
        return '\n'.join(''.join(c['source']) for c in json.loads(p.read_text(encoding='utf-8'))['cells'] if c['cell_type'] == 'code')
    found = []
    for d in ('llmcourse', 'nbs', 'tests', '.ci', 'configs'):
        for p in (ROOT/d).rglob('*'):
            if p.is_file() and p.suffix in ('.py', '.ipynb', '.json', '') and p.name != 'test_repo.py':
                if re.search(r'shared/data|LLMCOURSE_SHARED_DATA|shared_data_dir', code(p)): found.append(str(p.relative_to(ROOT)))
    assert not found, f'these files look for the build machines\' shared folder: {found}'

def test_ci_runs_with_an_empty_data_cache():
    run = (ROOT/'.ci'/'run').read_text()
    assert re.search(r'LLMCOURSE_DATA="\$\(mktemp -d\)"', run), '.ci/run must point the data cache at an empty folder'
