import os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault('WANDB_MODE', 'disabled')
# Tests import the package from this checkout, whether or not it is pip-installed.
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
