"""Every numbered notebook runs top to bottom the way a reader's Jupyter or Colab runs it: nbclient executes every cell,
honouring no `tst_flags` and no `#| eval: false`, on a CPU, with an empty data cache (a fresh clone has nothing beside it),
and leaves the repository as it found it."""
import os, re, subprocess, time
from pathlib import Path
import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT/'nbs').glob('[0-9]*.ipynb') if re.match(r'^\d+[a-z]?_', p.name))

def repo_state() -> set[str]:
    "What git sees as changed or new (ignored files left out): a notebook run must not add to it."
    r = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=all'], cwd=ROOT, capture_output=True, text=True)
    return set(r.stdout.splitlines()) if r.returncode == 0 else set()

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(nb, tmp_path, monkeypatch, record_property):
    monkeypatch.setenv('LLMCOURSE_DATA', str(tmp_path/'empty_data_cache'))  # no downloads, no shared folder
    monkeypatch.setenv('LLMCOURSE_CACHE', str(tmp_path/'cache'))
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')                          # a CPU reader, even on a GPU machine
    monkeypatch.setenv('WANDB_MODE', 'offline'); monkeypatch.setenv('HF_HUB_OFFLINE', '1'); monkeypatch.setenv('MPLBACKEND', 'Agg')
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')])))
    before = repo_state()
    book = nbformat.read(nb, as_version=4)
    client = nbclient.NotebookClient(book, timeout=900, kernel_name='python3', allow_errors=False,
                                     resources={'metadata': {'path': str(nb.parent)}})
    t0 = time.perf_counter()
    try: client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f'{nb.name} fails under plain Jupyter:\n{str(e)[-3000:]}')
    record_property('seconds', round(time.perf_counter() - t0, 1))
    print(f'{nb.name}: {time.perf_counter() - t0:.1f} s')
    added = repo_state() - before
    assert not added, f'{nb.name} wrote into the repository (outside git-ignored folders): {sorted(added)}'
