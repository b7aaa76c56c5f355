"""SSD networks."""

from ssdkit.models.ssd import SSD, SSD300, SSD512, build_model
from ssdkit.models.vgg import L2Norm, VGG16Extractor, load_vgg16_weights

__all__ = ["SSD", "SSD300", "SSD512", "build_model", "L2Norm", "VGG16Extractor", "load_vgg16_weights"]
