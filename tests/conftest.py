import os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault('WANDB_MODE', 'disabled')
# Tests import the package from this checkout, whether or not it is pip-installed.
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))

import pytest

@pytest.fixture(scope='module')
def one_thread():
    "Tiny models run fastest on one torch thread; on a busy shared CPU more threads only spin-wait."
    import torch  # here, not at the top: most test modules never need torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
