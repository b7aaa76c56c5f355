import os

import pytest
import torch

from ssdkit.checkpoint import save_checkpoint
from ssdkit.config import Config, ModelConfig
from ssdkit.models import build_model

# Two cores: keep intra-op threads at the core count so parallel pytest workers do not oversubscribe.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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
