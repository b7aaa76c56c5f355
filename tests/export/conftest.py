"""Fixtures of the export tests: test images, one export per (format, postprocess), and a model that detects.

``fitted_checkpoint`` is a width-0.125 SSD300 whose random VGG trunk is kept and whose twelve head convolutions are
solved in closed form (ridge regression on the trunk's features, one solve per level) to the encoded targets of
48 generated shapes scenes: 3-12 s (quiet or busy box) instead of minutes of training, and on those scenes it
really detects (VOC07 mAP@0.5 0.76 with confident, well separated scores), so an accuracy loss of int8 shows up as
an mAP change (measured: onnxruntime int8 +0.07 points, OpenVINO/NNCF int8 +1.9). It memorises rather than
generalises (held-out mAP ~0.03): the scenes it is checked on are its own.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssdkit.checkpoint import save_checkpoint
from ssdkit.coder import SSDBoxCoder
from ssdkit.config import Config, ModelConfig
from ssdkit.data.preprocess import InputNormalizer, resize_image
from ssdkit.data.shapes import ShapesDataset
from ssdkit.models import build_model

FITTED_NAMES = ("circle", "square", "triangle")


@pytest.fixture(scope="session")
def images() -> list[torch.Tensor]:
    """Three uint8 ``[3, H, W]`` images of different sizes (gradients + noise)."""
    rng = np.random.default_rng(1)
    out = []
    for h, w in [(300, 300), (240, 320), (500, 375)]:
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([x * 255 // w, y * 255 // h, rng.integers(0, 255, (h, w))], 0)
        out.append(torch.from_numpy(img.astype(np.uint8)))
    return out


def fitted_scenes(count: int = 48) -> ShapesDataset:
    """The scenes ``fitted_checkpoint`` was fitted to: 1-3 shapes of 40-140 px on 300 x 300 images."""
    return ShapesDataset(count, seed=5, class_names=FITTED_NAMES, min_size=40, max_size=140, min_objects=1,
                         max_objects=3)


@torch.no_grad()
def fit_heads(model, scenes, lam: float = 1e-3, pos_weight: float = 10.0) -> None:
    """Solve ``model``'s loc / cls head convs (3x3) by ridge regression on its trunk features of ``scenes``.

    cls: target logits +4 (true class) / -4 (others), rows of locations with a positive default box weighted
    ``1 + pos_weight``; loc: per default-box shape, least squares on its positive locations only.
    """
    cfg = model.config
    coder = SSDBoxCoder(cfg)
    size = cfg.input_size
    x = torch.stack([resize_image(scenes.load_image(i), size) for i in range(len(scenes))])
    samples = [scenes.sample(i) for i in range(len(scenes))]
    boxes = [s.boxes * torch.tensor([size / s.width, size / s.height] * 2) for s in samples]
    loc_t, cls_t = coder.encode_batch(boxes, [s.labels for s in samples])
    feats = model.extractor(InputNormalizer(cfg)(x))
    start = 0
    for fm, loc_layer, cls_layer in zip(feats, model.loc_layers, model.cls_layers):
        n, c, h, w = fm.shape
        per_cell = loc_layer.out_channels // 4
        cols = F.unfold(fm, 3, padding=1).transpose(1, 2).reshape(n * h * w, c * 9)
        cols = torch.cat([cols, torch.ones(len(cols), 1)], 1).double()  # + bias column
        count = h * w * per_cell
        ct = cls_t[:, start:start + count].reshape(n * h * w, per_cell)
        lt = loc_t[:, start:start + count].reshape(n * h * w, per_cell, 4).double()
        start += count
        target = F.one_hot(ct.clamp(min=0), cfg.num_classes).double() * 8.0 - 4.0
        weight = (1 + pos_weight * (ct > 0).any(1).double()).sqrt()[:, None]
        gram = (cols * weight).T @ (cols * weight)
        scale = gram.diagonal().mean()
        eye = torch.eye(len(gram), dtype=gram.dtype)
        sol = torch.linalg.solve(gram + lam * scale * eye, (cols * weight).T @ (target.reshape(len(cols), -1) * weight))
        cls_layer.weight.copy_(sol[:-1].T.reshape(cls_layer.weight.shape).float())
        cls_layer.bias.copy_(sol[-1].float())
        loc_sol = torch.zeros(cols.shape[1], per_cell * 4, dtype=cols.dtype)
        for a in range(per_cell):
            pos = ct[:, a] > 0
            if pos.any():
                xp = cols[pos]
                ridge = 10 * lam * scale * len(xp) / len(cols) * eye
                loc_sol[:, 4 * a:4 * a + 4] = torch.linalg.solve(xp.T @ xp + ridge, xp.T @ lt[pos, a])
        loc_layer.weight.copy_(loc_sol[:-1].T.reshape(loc_layer.weight.shape).float())
        loc_layer.bias.copy_(loc_sol[-1].float())


@pytest.fixture(scope="session")
def fitted_checkpoint(tmp_path_factory):
    """A checkpoint of a model that detects :func:`fitted_scenes` by construction (module docstring)."""
    torch.manual_seed(0)
    cfg = ModelConfig(width_mult=0.125, num_classes=len(FITTED_NAMES) + 1)
    model = build_model(cfg).eval()
    fit_heads(model, fitted_scenes())
    path = tmp_path_factory.mktemp("fitted") / "fitted.pt"
    save_checkpoint(path, model, Config(model=cfg), FITTED_NAMES)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_checkpoint):
    """``exported(fmt, postprocess) -> path``: one export of ``tiny_checkpoint`` per (format, postprocess)."""
    from ssdkit.export import export_onnx, export_openvino, export_pt2, export_torchscript
    from ssdkit.export.graph import SUFFIXES

    exporters = {"onnx": export_onnx, "torchscript": export_torchscript, "pt2": export_pt2,
                 "openvino": export_openvino}
    cache = {}

    def get(fmt: str, postprocess: bool):
        if (fmt, postprocess) not in cache:
            folder = tmp_path_factory.mktemp(f"{fmt}_{postprocess}")
            path = folder / f"m{SUFFIXES[fmt]}"
            info = exporters[fmt](tiny_checkpoint, path, with_postprocess=postprocess)
            assert info["with_postprocess"] is postprocess and info["path"] == str(path)
            written = sorted(p.name for p in folder.iterdir())
            assert written == sorted([path.name] + ([path.with_suffix(".bin").name] if fmt == "openvino" else []))
            cache[fmt, postprocess] = path
        return cache[fmt, postprocess]

    return get
