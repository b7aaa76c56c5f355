import os

import pytest
import torch

from ssdkit.checkpoint import save_checkpoint
from ssdkit.config import Config, ModelConfig
from ssdkit.models import build_model

# Share the cores between the parallel pytest workers (xdist says how many there are): two workers of two
# threads each on two cores oversubscribe, and OpenMP's spinning threads then run several times slower. The
# environment variable carries the share to the subprocesses some tests start.
_THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
os.environ["OMP_NUM_THREADS"] = str(_THREADS)
torch.set_num_threads(_THREADS)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_config() -> ModelConfig:
    """The model config of ``tiny_checkpoint``: an eighth-width SSD300 with three classes plus background."""
    return ModelConfig(width_mult=0.125, num_classes=4)


@pytest.fixture(scope="session")
def tiny_names() -> tuple[str, ...]:
    """The class names of ``tiny_checkpoint``."""
    return ("cat", "dog", "bird")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_config, tiny_names):
    """A checkpoint of a seeded, untrained tiny model (``tiny_config``, ``tiny_names``); read-only for tests."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, build_model(tiny_config).eval(), Config(model=tiny_config), tiny_names)
    return path
