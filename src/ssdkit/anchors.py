"""Default boxes (anchors) of an SSD model.

Order (the seed notebook's and torchcv's, also torchvision's ``DefaultBoxGenerator``'s): level by level;
within a level row-major over feature-map cells (y outer, x inner); within a cell
``(s_k, s_k)``, ``(s'_k, s'_k)`` with ``s'_k = sqrt(s_k * s_{k+1})``, then for each aspect ratio ``ar``
``(s_k*sqrt(ar), s_k/sqrt(ar))`` and ``(s_k/sqrt(ar), s_k*sqrt(ar))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ssdkit.config import ModelConfig


def wh_pairs(box_size: float, next_box_size: float, aspect_ratios: Sequence[float]) -> list[tuple[float, float]]:
    """Default box ``(w, h)`` shapes at one feature-map location of a level."""
    pairs = [(box_size, box_size)]
    s = math.sqrt(box_size * next_box_size)
    pairs.append((s, s))
    for ar in aspect_ratios:
        r = math.sqrt(ar)
        pairs.append((box_size * r, box_size / r))
        pairs.append((box_size / r, box_size * r))
    return pairs


def default_boxes(
    fm_sizes: Sequence[int],
    steps: Sequence[float],
    box_sizes: Sequence[float],
    aspect_ratios: Sequence[Sequence[float]],
    clip_size: float | None = None,
    clip_centers: bool = False,
) -> torch.Tensor:
    """All default boxes, ``Tensor[A, 4]`` float32 ``(cx, cy, w, h)`` in input pixels.

    Computed in float64 and rounded once to float32, so values equal the notebook's (which built them
    with Python floats). ``clip_size`` clamps widths and heights to ``[0, clip_size]`` (torchvision's
    ``clip=True``; centres are left alone, as there, unless ``clip_centers``: amdegroot/lufficc clamp them too).
    """
    if not (len(fm_sizes) == len(steps) == len(aspect_ratios) == len(box_sizes) - 1):
        raise ValueError(
            "default_boxes: fm_sizes, steps and aspect_ratios need one entry per level and box_sizes one more; "
            f"got {len(fm_sizes)}, {len(steps)}, {len(aspect_ratios)}, {len(box_sizes)}"
        )
    out = []
    for k, f in enumerate(fm_sizes):
        wh = torch.tensor(wh_pairs(box_sizes[k], box_sizes[k + 1], aspect_ratios[k]), dtype=torch.float64)
        centers = (torch.arange(f, dtype=torch.float64) + 0.5) * steps[k]
        cy, cx = torch.meshgrid(centers, centers, indexing="ij")
        xy = torch.stack([cx, cy], -1).reshape(-1, 1, 2).expand(-1, len(wh), 2)
        boxes = torch.cat([xy, wh.unsqueeze(0).expand(f * f, -1, 2)], -1).reshape(-1, 4)
        out.append(boxes)
    boxes = torch.cat(out, 0)
    if clip_size is not None:
        boxes[:, 2:] = boxes[:, 2:].clamp(0, clip_size)
        if clip_centers:
            boxes[:, :2] = boxes[:, :2].clamp(0, clip_size)
    return boxes.float()


def default_boxes_for(cfg: ModelConfig) -> torch.Tensor:
    """Default boxes of a model config, ``Tensor[A, 4]`` (cx, cy, w, h) input pixels."""
    return default_boxes(
        cfg.fm_sizes,
        cfg.steps,
        cfg.box_sizes,
        cfg.aspect_ratios,
        clip_size=cfg.input_size if cfg.clip_default_boxes else None,
        clip_centers=cfg.clip_default_box_centers,
    )


def level_of_default_boxes(cfg: ModelConfig) -> torch.Tensor:
    """``Tensor[A]`` int64: the feature-map level of each default box."""
    counts = [f * f * n for f, n in zip(cfg.fm_sizes, cfg.num_anchors)]
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
