import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# Every key, shape and dtype of a released stage-2 E2Style checkpoint, as listed from the official file.
REFERENCE_DIR = ROOT / "tests" / "data"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: official-size models; seconds to a minute each")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
