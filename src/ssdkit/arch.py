"""The layer table of the VGG16-SSD networks: one description that both the model code (``models/vgg.py``) builds
from and the config (``config.feature_map_sizes``) derives the prediction feature-map sizes from, so the default
boxes always match what the network produces.

Imports nothing from ssdkit: the config and the models both read it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["ARCHS", "Conv", "TRUNK", "tail", "feature_map_sizes"]


class Conv(NamedTuple):
    """One convolution after conv4_3 (ReLU follows each one)."""

    name: str
    cin: int
    cout: int
    kernel: int
    stride: int
    padding: int
    dilation: int
    output: bool  # a prediction feature map


#: conv1_1 .. conv4_3 (3x3, padding 1), "M" = 2x2/2 max-pool in ceil mode.
TRUNK = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512)

# After conv4_3: pool4 (2x2/2 ceil), conv5_x, pool5 (3x3/1, padding 1) after conv5_3, dilated conv6, conv7, extras.
_COMMON = (
    Conv("conv5_1", 512, 512, 3, 1, 1, 1, False),
    Conv("conv5_2", 512, 512, 3, 1, 1, 1, False),
    Conv("conv5_3", 512, 512, 3, 1, 1, 1, False),
    Conv("conv6", 512, 1024, 3, 1, 6, 6, False),
    Conv("conv7", 1024, 1024, 1, 1, 0, 1, True),
    Conv("conv8_1", 1024, 256, 1, 1, 0, 1, False),
    Conv("conv8_2", 256, 512, 3, 2, 1, 1, True),
    Conv("conv9_1", 512, 128, 1, 1, 0, 1, False),
    Conv("conv9_2", 128, 256, 3, 2, 1, 1, True),
    Conv("conv10_1", 256, 128, 1, 1, 0, 1, False),
)
_EXTRAS = {
    "ssd300": (
        Conv("conv10_2", 128, 256, 3, 1, 0, 1, True),
        Conv("conv11_1", 256, 128, 1, 1, 0, 1, False),
        Conv("conv11_2", 128, 256, 3, 1, 0, 1, True),
    ),
    "ssd512": (
        Conv("conv10_2", 128, 256, 3, 2, 1, 1, True),
        Conv("conv11_1", 256, 128, 1, 1, 0, 1, False),
        Conv("conv11_2", 128, 256, 3, 2, 1, 1, True),
        Conv("conv12_1", 256, 128, 1, 1, 0, 1, False),
        Conv("conv12_2", 128, 256, 4, 1, 1, 1, True),
    ),
}
#: Backbone layouts (``model.arch``).
ARCHS = tuple(_EXTRAS)
#: The position in TRUNK of pool3: the map before it (conv3_3, stride 4) is the optional extra low level.
LOW_LEVEL_POOL = 9
#: The layer after which pool5 (3x3, stride 1, padding 1) runs.
POOL5_AFTER = "conv5_3"


def tail(arch: str) -> tuple[Conv, ...]:
    """Every convolution after conv4_3 of ``arch``, in order."""
    if arch not in _EXTRAS:
        raise ValueError(f"model.arch: unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    return _COMMON + _EXTRAS[arch]


def _out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil: bool = False) -> int:
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    return (math.ceil(span / stride) if ceil else span // stride) + 1


def feature_map_sizes(arch: str, input_size: int, extra_low_level: bool = False) -> tuple[int, ...]:
    """Sides of the prediction feature maps of ``arch`` for a square ``input_size`` input, walked through the
    layer table (sizes < 1 are returned as they come; the caller rejects them). ``extra_low_level`` adds the
    stride-4 map of conv3_3 first."""
    s = input_size
    low = []
    for k, v in enumerate(TRUNK):
        if v == "M":
            if k == LOW_LEVEL_POOL and extra_low_level:
                low.append(s)  # conv3_3, before pool3
            s = _out(s, 2, 2, 0, ceil=True)
    sizes = [*low, s]  # (conv3_3,) conv4_3
    s = _out(s, 2, 2, 0, ceil=True)  # pool4
    for conv in tail(arch):
        s = _out(s, conv.kernel, conv.stride, conv.padding, conv.dilation)
        if conv.name == POOL5_AFTER:
            s = _out(s, 3, 1, 1, ceil=True)
        if conv.output:
            sizes.append(s)
    return tuple(sizes)
