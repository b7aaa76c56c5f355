"""Writes tests/data/pinned_coder.json: encode/decode outputs of a few fixed scenes, from the code of the day.

Run once before a refactor (``python tests/make_pinned.py``); ``test_pinned.py`` then holds every later version to
the same outputs. Not collected by pytest (no ``test_`` prefix).
"""

import json
from pathlib import Path

import torch

from ssdkit import SSDBoxCoder
from ssdkit.config import small_objects_config, ssd300_config, ssd512_config

CONFIGS = {
    "ssd300": ssd300_config(num_classes=6),
    "ssd300-clipped": ssd300_config(num_classes=6, clip_default_boxes=True, clip_default_box_centers=True),
    "ssd300-small": small_objects_config(num_classes=6),
    "ssd512": ssd512_config(num_classes=6),
}


def scenes(size):
    gen = torch.Generator().manual_seed(123)
    out = []
    for m in (0, 1, 3, 7):
        xy = torch.rand(m, 2, generator=gen) * size * 1.1 - size * 0.05
        wh = torch.rand(m, 2, generator=gen) ** 2 * size * 0.7 + 1
        boxes = torch.cat([xy, xy + wh], 1) if m else torch.zeros(0, 4)
        if m >= 3:
            boxes[2] = boxes[1]  # duplicates collide on their best default box
        labels = torch.randint(0, 5, (m,), generator=gen)
        ignore = torch.zeros(m, dtype=torch.bool)
        if m >= 7:
            ignore[5] = True
        out.append((boxes, labels, ignore))
    return out


def logits_for(coder, seed):
    gen = torch.Generator().manual_seed(seed)
    a = coder.default_boxes.shape[0]
    loc = torch.randn(2, a, 4, generator=gen) * 0.5
    logits = torch.randn(2, a, 6, generator=gen) * 2
    logits[1, :, 0] += 3.0  # image 1: mostly background (few candidates)
    return loc, logits


def compute():
    data = {}
    for name, cfg in CONFIGS.items():
        coder = SSDBoxCoder(cfg)
        sc = scenes(cfg.input_size)
        loc, cls = coder.encode_batch([s[0] for s in sc], [s[1] for s in sc], [s[2] for s in sc])
        enc = []
        for i in range(len(sc)):
            pos = (cls[i] != 0).nonzero().squeeze(1)
            unmatched = cls[i] == 0
            enc.append({"index": pos.tolist(), "cls": cls[i][pos].tolist(), "loc": loc[i][pos].tolist(),
                        "unmatched_loc_sum": loc[i][unmatched].double().sum(0).tolist()})
        loc_p, logits = logits_for(coder, 7)
        dec = {}
        presets = {"tight": dict(score_thresh=0.3, top_k=50, max_detections=20)}
        if name == "ssd300":
            presets["evaluate"] = dict(score_thresh=0.01, top_k=200, max_detections=200)
        for preset, kw in presets.items():
            got = coder.decode_batch(loc_p, logits, **kw)
            dec[preset] = [{k: v.tolist() for k, v in d.items()} for d in got]
        probs = torch.softmax(logits[0], -1)
        b, lab, s = coder.decode(loc_p[0], probs, score_thresh=0.95, nms_thresh=0.45)
        data[name] = {"encode": enc, "decode_batch": dec,
                      "decode": {"boxes": b.tolist(), "labels": lab.tolist(), "scores": s.tolist()}}
    return data


if __name__ == "__main__":
    path = Path(__file__).parent / "data" / "pinned_coder.json"
    path.write_text(json.dumps(compute()))
    print(path, path.stat().st_size)
