"""VGG16 trunk of SSD: conv1_1..conv4_3 (ceil-mode pools), L2Norm on conv4_3, conv5, dilated conv6, conv7, extras.

Layer names follow the seed notebook (torchcv): ``features.layers`` holds conv1_1..conv4_3 with their ReLUs and
pools (the first 23 modules of torchvision's ``vgg16().features``), then ``conv5_1`` .. ``conv11_2``
(``conv12_2`` for SSD512) are attributes of the extractor.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

from ssdkit.arch import LOW_LEVEL_POOL, POOL5_AFTER, TRUNK, tail
from ssdkit.config import ModelConfig
from ssdkit.errors import CheckpointError


def scaled(channels: int, width_mult: float) -> int:
    """Channel count after the width multiplier (at least 8)."""
    return max(8, int(round(channels * width_mult)))


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (initialised to ``scale``, 20 in SSD)."""

    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-12) -> None:
        super().__init__()
        self.scale = scale
        self.eps = eps
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x.pow(2).sum(1, keepdim=True).clamp(min=self.eps).rsqrt() * self.weight.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, scale={self.scale}"


class VGG16(nn.Module):
    """conv1_1 .. conv4_3 (+ReLU), three 2x2 ceil-mode max-pools, as ``layers`` (an ``nn.Sequential``)."""

    def __init__(self, width_mult: float = 1.0, batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in TRUNK:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
                continue
            cout = scaled(v, width_mult)
            layers.append(nn.Conv2d(cin, cout, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class VGG16Extractor(nn.Module):
    """Produces the prediction feature maps: L2-normalised conv4_3, conv7, conv8_2, ... (6 for SSD300, 7 for SSD512)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        w = config.width_mult
        self.features = VGG16(w, config.batch_norm)
        self.norm4 = L2Norm(self.features.out_channels, config.l2norm_scale)
        self.layer_names: list[str] = []
        self.out_channels = [self.features.out_channels]
        self.low_split = None  # index in features.layers of pool3 when conv3_3 is a prediction level
        if config.extra_low_level:
            pools = [i for i, m in enumerate(self.features.layers) if isinstance(m, nn.MaxPool2d)]
            self.low_split = pools[2]
            low_channels = scaled(TRUNK[LOW_LEVEL_POOL - 1], w)
            self.norm3 = L2Norm(low_channels, config.l2norm_scale)
            self.out_channels.insert(0, low_channels)
        self.bns = nn.ModuleDict() if config.batch_norm else None
        self._outputs = set()
        for c in tail(config.arch):
            conv = nn.Conv2d(scaled(c.cin, w), scaled(c.cout, w), kernel_size=c.kernel, stride=c.stride,
                             padding=c.padding, dilation=c.dilation)
            setattr(self, c.name, conv)
            if self.bns is not None:
                self.bns[c.name] = nn.BatchNorm2d(scaled(c.cout, w))
            self.layer_names.append(c.name)
            if c.output:
                self._outputs.add(c.name)
                self.out_channels.append(scaled(c.cout, w))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``Tensor[N, 3, H, W]`` normalised input -> list of ``Tensor[N, C_k, F_k, F_k]``."""
        if self.low_split is None:
            h = self.features(x)
            hs = [self.norm4(h)]
        else:  # conv3_3 is a prediction level too: run the trunk in two parts
            low = self.features.layers[:self.low_split](x)
            h = self.features.layers[self.low_split:](low)
            hs = [self.norm3(low), self.norm4(h)]
        h = F.max_pool2d(h, kernel_size=2, stride=2, ceil_mode=True)
        for name in self.layer_names:
            h = getattr(self, name)(h)
            if self.bns is not None:
                h = self.bns[name](h)
            h = F.relu(h, inplace=True)
            if name == POOL5_AFTER:
                h = F.max_pool2d(h, kernel_size=3, stride=1, padding=1, ceil_mode=True)
            elif name in self._outputs:
                hs.append(h)
        return hs


# torchvision vgg16().features indices of the convolutions, in order conv1_1 .. conv5_3
_TV_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def load_vgg16_weights(extractor: VGG16Extractor, path: str | os.PathLike) -> list[str]:
    """Load ImageNet VGG16 weights from a local torchvision ``vgg16`` state-dict file into ``extractor``.

    conv1_1..conv5_3 are copied; fc6/fc7 become the dilated conv6 and conv7 by the SSD paper's subsampling
    (fc6 ``[4096, 25088]`` -> ``[4096, 512, 7, 7]``, every 4th filter and every 3rd tap -> ``[1024, 512, 3, 3]``;
    fc7 every 4th row and column -> ``[1024, 1024, 1, 1]``). Needs ``width_mult == 1`` and no batch norm.
    Nothing is downloaded. Returns the names of the loaded layers.
    """
    if extractor.features.out_channels != 512 or extractor.bns is not None:
        raise CheckpointError(f"{path}: VGG16 ImageNet weights need width_mult=1 and batch_norm=false")
    from ssdkit.checkpoint import torch_load

    state = torch_load(path, "VGG16 weights file")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a torchvision vgg16 state dict (a {type(state).__name__})")
    convs = [m for m in extractor.features.layers if isinstance(m, nn.Conv2d)]
    convs += [extractor.conv5_1, extractor.conv5_2, extractor.conv5_3]
    # every tensor and shape is checked before anything is copied: a bad file leaves the model untouched
    expected = {}
    for conv, idx in zip(convs, _TV_CONV_INDICES):
        expected[f"features.{idx}.weight"] = tuple(conv.weight.shape)
        expected[f"features.{idx}.bias"] = tuple(conv.bias.shape)
    expected.update({"classifier.0.weight": (4096, 25088), "classifier.0.bias": (4096,),
                     "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,)})
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a torchvision vgg16 state dict (missing {', '.join(missing[:3])}"
                              f"{', ...' if len(missing) > 3 else ''})")
    for k, shape in expected.items():
        v = state[k]
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise CheckpointError(f"{path}: {k} is not a float tensor ({type(v).__name__})")
        if tuple(v.shape) != shape:
            raise CheckpointError(f"{path}: {k} has shape {list(v.shape)}, expected {list(shape)} (torchvision "
                                  "vgg16, ImageNet)")
    from ssdkit.checkpoint import check_finite

    check_finite({k: state[k] for k in expected}, path)
    loaded = []
    with torch.no_grad():
        for conv, idx in zip(convs, _TV_CONV_INDICES):
            conv.weight.copy_(state[f"features.{idx}.weight"])
            conv.bias.copy_(state[f"features.{idx}.bias"])
            loaded.append(f"features.{idx}")
        fc6_w = state["classifier.0.weight"].view(4096, 512, 7, 7)[::4, :, ::3, ::3]
        extractor.conv6.weight.copy_(fc6_w)
        extractor.conv6.bias.copy_(state["classifier.0.bias"][::4])
        fc7_w = state["classifier.3.weight"][::4, ::4]
        extractor.conv7.weight.copy_(fc7_w.reshape(1024, 1024, 1, 1))
        extractor.conv7.bias.copy_(state["classifier.3.bias"][::4])
        loaded += ["classifier.0 -> conv6", "classifier.3 -> conv7"]
    return loaded
