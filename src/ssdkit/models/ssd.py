"""SSD300 / SSD512: the VGG16 extractor plus one loc and one cls 3x3 convolution per feature map.

``forward`` stays pure: normalised images in, raw ``(loc_preds, cls_preds)`` out. Decoding and NMS live in
:class:`ssdkit.coder.SSDBoxCoder` / :class:`ssdkit.inference.Detector`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ssdkit.config import ModelConfig, replace_model, ssd300_config, ssd512_config
from ssdkit.models.vgg import VGG16Extractor


class SSD(nn.Module):
    """SSD with a VGG16 extractor, built from a :class:`ModelConfig`.

    Attributes (the seed notebook's names): ``extractor``, ``loc_layers``, ``cls_layers``, ``num_classes``,
    ``num_anchors``, ``in_channels``, ``steps``, ``box_sizes``, ``aspect_ratios``, ``fm_sizes``, ``config``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        self.num_anchors = config.num_anchors
        self.steps = config.steps
        self.box_sizes = config.box_sizes
        self.aspect_ratios = config.aspect_ratios
        self.fm_sizes = config.fm_sizes
        self.extractor = VGG16Extractor(config)
        self.in_channels = tuple(self.extractor.out_channels)
        self.loc_layers = nn.ModuleList(
            nn.Conv2d(c, n * 4, kernel_size=3, padding=1) for c, n in zip(self.in_channels, self.num_anchors)
        )
        self.cls_layers = nn.ModuleList(
            nn.Conv2d(c, n * self.num_classes, kernel_size=3, padding=1)
            for c, n in zip(self.in_channels, self.num_anchors)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """VGG convolutions: Kaiming (torchvision's VGG init); extras and heads: Xavier, zero bias (torchvision SSD)."""
        for m in self.extractor.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for name in self.extractor.layer_names:
            conv = getattr(self.extractor, name)
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        for m in [*self.loc_layers, *self.cls_layers]:
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def reset_heads(self, loc: bool = False) -> None:
        """Re-initialise the classification heads (and the loc heads if ``loc``), for fine-tuning."""
        for m in [*self.cls_layers, *(self.loc_layers if loc else [])]:
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``Tensor[N, 3, S, S]`` normalised images -> ``loc_preds [N, A, 4]``, ``cls_preds [N, A, C]`` (logits)."""
        loc_preds, cls_preds = [], []
        for fm, loc_layer, cls_layer in zip(self.extractor(x), self.loc_layers, self.cls_layers):
            n = fm.shape[0]
            loc_preds.append(loc_layer(fm).permute(0, 2, 3, 1).reshape(n, -1, 4))
            cls_preds.append(cls_layer(fm).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes))
        return torch.cat(loc_preds, 1), torch.cat(cls_preds, 1)


def _preset_config(
    preset: Callable[..., ModelConfig], num_classes: int, config: ModelConfig | None, overrides: dict
) -> ModelConfig:
    """The config for a preset class: ``preset(num_classes, **overrides)``, or ``config`` with those replaced."""
    if config is None:
        return preset(num_classes, **overrides)
    if overrides or config.num_classes != num_classes:
        return replace_model(config, num_classes=num_classes, **overrides)
    return config


class SSD300(SSD):
    """SSD300 (8732 default boxes). ``num_classes`` counts background (21 for VOC).

    Extra keyword arguments override :class:`ModelConfig` fields (``width_mult=0.25``, ``box_sizes=...``).
    """

    def __init__(self, num_classes: int = 21, config: ModelConfig | None = None, **overrides) -> None:
        super().__init__(_preset_config(ssd300_config, num_classes, config, overrides))


class SSD512(SSD):
    """SSD512 (24564 default boxes, seven levels), as in the SSD paper and torchcv."""

    def __init__(self, num_classes: int = 21, config: ModelConfig | None = None, **overrides) -> None:
        super().__init__(_preset_config(ssd512_config, num_classes, config, overrides))


def build_model(config: ModelConfig) -> SSD:
    """The one place a model is built from a config."""
    return SSD(config)
