"""A perfect detector of flat-coloured rectangles, for tests of tiled inference and evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssdkit.coder import SSDBoxCoder

# label -> colour of the flat rectangles ColourOracle detects
PALETTE = {0: (255, 255, 255), 1: (255, 0, 0), 2: (0, 255, 0)}


class ColourOracle(nn.Module):
    """A perfect detector of flat-coloured rectangles on black: per input image and palette colour, the box of the
    pixels of that colour (one object per colour), encoded by the coder so that decoding returns that box with
    score 1. Per-image arithmetic only: batching never changes a result."""

    def __init__(self, config) -> None:
        super().__init__()
        self.coder = SSDBoxCoder(config)
        self.num_classes = config.num_classes
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1))
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        pixels = (x * self.std + self.mean) * 255
        boxes, labels = [], []
        for im in pixels:
            b, lab = [], []
            for label, colour in PALETTE.items():
                mask = ((im - torch.tensor(colour, dtype=im.dtype).view(3, 1, 1)).abs() < 60).all(0)
                if mask.any():
                    ys, xs = mask.any(1).nonzero().squeeze(1), mask.any(0).nonzero().squeeze(1)
                    b.append([float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1])
                    lab.append(label)
            boxes.append(torch.tensor(b, dtype=torch.float32).reshape(-1, 4))
            labels.append(torch.tensor(lab, dtype=torch.int64))
        loc, cls = self.coder.encode_batch(boxes, labels)
        return loc, F.one_hot(cls.clamp(min=0), self.num_classes).float() * 20


def scene(h: int, w: int, objects: list[tuple[int, tuple[int, int, int, int]]]) -> torch.Tensor:
    """``Tensor[3, H, W]`` uint8, black with flat rectangles ``(label, (x0, y0, x1, y1))`` in PALETTE colours."""
    im = torch.zeros(3, h, w, dtype=torch.uint8)
    for label, (x0, y0, x1, y1) in objects:
        im[:, y0:y1, x0:x1] = torch.tensor(PALETTE[label], dtype=torch.uint8).view(3, 1, 1)
    return im
