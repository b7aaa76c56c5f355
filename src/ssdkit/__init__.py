"""ssdkit: SSD300/SSD512 object detection: data, augmentation, training, evaluation, export.

The public API::

    from ssdkit import SSD300, SSD512, SSDBoxCoder, SSDLoss, ModelConfig, Detector
"""

from ssdkit.coder import SSDBoxCoder
from ssdkit.config import Config, ModelConfig, load_config, ssd300_config, ssd512_config
from ssdkit.errors import SSDKitError
from ssdkit.inference import Detector
from ssdkit.loss import SSDLoss
from ssdkit.models import SSD, SSD300, SSD512, build_model

__version__ = "0.1.0"

__all__ = [
    "SSD",
    "SSD300",
    "SSD512",
    "SSDBoxCoder",
    "SSDLoss",
    "Detector",
    "ModelConfig",
    "Config",
    "SSDKitError",
    "build_model",
    "load_config",
    "ssd300_config",
    "ssd512_config",
    "__version__",
]
