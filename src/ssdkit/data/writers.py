"""Writing a dataset to disk: any :class:`~ssdkit.data.sample.DetectionSource` as VOC, COCO, YOLO or a list file,
with JPEG images, in the layouts ssdkit's readers (and the tools they mirror) read back.

Layouts (``split_of[i]`` names image ``i``'s split, e.g. ``train`` / ``val``):

- ``voc``: ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg``, ``ImageSets/Main/{<split>,trainval}.txt``; boxes as
  given (0-based ``xmin, ymin``, exclusive ``xmax, ymax``), which ssdkit's VOC reader reads back unchanged.
- ``coco``: ``images/<id>.jpg``, ``annotations/instances_<split>.json`` (category ids ``1..K``, ``bbox``
  ``[x, y, w, h]``, image ids ``0..N-1``).
- ``yolo``: ``images/<split>/<id>.jpg``, ``labels/<split>/<id>.txt`` (``cls cx cy w h`` normalised), ``data.yaml``
  and ``classes.txt``.
- ``listfile``: ``images/<id>.jpg`` and ``<split>.txt`` of ``path x1 y1 x2 y2 label ...`` lines (torchcv), plus
  ``classes.txt``.

Every file goes through a temp file + ``os.replace`` (:func:`ssdkit.utils.atomic_write_bytes`).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import yaml
from PIL import Image

from ssdkit.data.sample import DetectionSource, Sample
from ssdkit.errors import SSDKitError
from ssdkit.utils import atomic_write_bytes, atomic_write_text

__all__ = ["WRITE_FORMATS", "write_dataset"]

#: Formats :func:`write_dataset` writes (the reader names of :data:`ssdkit.choices.DATA_FORMATS`).
WRITE_FORMATS = ("voc", "coco", "yolo", "listfile")


def _jpeg(image, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.2f}"


def _voc_xml(sample: Sample, filename: str, names: Sequence[str]) -> str:
    objects = []
    for box, label, ign in zip(sample.boxes.tolist(), sample.labels.tolist(), sample.ignore.tolist()):
        coords = "".join(f"<{k}>{_fmt(v)}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        objects.append(
            f"  <object>\n    <name>{escape(names[label])}</name>\n    <pose>Unspecified</pose>\n"
            f"    <truncated>0</truncated>\n    <difficult>{int(ign)}</difficult>\n    <bndbox>{coords}</bndbox>\n"
            "  </object>\n"
        )
    return (
        f"<annotation>\n  <folder>JPEGImages</folder>\n  <filename>{escape(filename)}</filename>\n"
        f"  <source><database>ssdkit</database></source>\n"
        f"  <size><width>{sample.width}</width><height>{sample.height}</height><depth>3</depth></size>\n"
        f"  <segmented>0</segmented>\n{''.join(objects)}</annotation>\n"
    )


def write_dataset(
    source: DetectionSource,
    out_dir: str | os.PathLike,
    format: str = "voc",
    split_of: Sequence[str] | None = None,
    quality: int = 90,
    progress: Callable | None = None,
    description: str = "ssdkit dataset",
) -> Path:
    """Write ``source`` (annotations and pixels) to ``out_dir`` in ``format``; returns ``out_dir``.

    Args:
        source: the dataset; ``source.load_image(i)`` gives ``Tensor[3, H, W]`` uint8 RGB.
        format: ``"voc" | "coco" | "yolo" | "listfile"``.
        split_of: the split name of each image (default: all ``"train"``).
        quality: JPEG quality.
        progress: wraps the image index iterable (e.g. ``tqdm``), or None.
    """
    if format not in WRITE_FORMATS:
        raise SSDKitError(f"format: cannot write {format!r}; expected one of {', '.join(WRITE_FORMATS)}")
    out = Path(out_dir)
    n = len(source)
    split_of = list(split_of) if split_of is not None else ["train"] * n
    splits = list(dict.fromkeys(split_of))
    names = tuple(source.class_names)
    coco = {s: {"images": [], "annotations": []} for s in splits}
    lines: dict[str, list[str]] = {s: [] for s in splits}
    ids: dict[str, list[str]] = {s: [] for s in splits}
    ann_id = 0
    indices = progress(range(n)) if progress is not None else range(n)
    for i in indices:
        sample = source.sample(i)
        split = split_of[i]
        stem = sample.image_id.replace("/", "_")
        filename = f"{stem}.jpg"
        image_dir = {"voc": "JPEGImages", "coco": "images", "yolo": f"images/{split}", "listfile": "images"}[format]
        atomic_write_bytes(out / image_dir / filename, _jpeg(source.load_image(i), quality))
        boxes, labels = sample.boxes.tolist(), sample.labels.tolist()
        ids[split].append(stem)
        if format == "voc":
            atomic_write_text(out / "Annotations" / f"{stem}.xml", _voc_xml(sample, filename, names))
        elif format == "coco":
            coco[split]["images"].append({"id": i, "file_name": filename, "width": sample.width,
                                          "height": sample.height})
            for (x0, y0, x1, y1), label, ign in zip(boxes, labels, sample.ignore.tolist()):
                ann_id += 1  # COCO ids start at 1 (0 means "unmatched" inside COCOeval)
                coco[split]["annotations"].append({
                    "id": ann_id, "image_id": i,
                    "category_id": label + 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": int(ign)})
        elif format == "yolo":
            w, h = float(sample.width), float(sample.height)
            text = "".join(f"{label} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} "
                           f"{(y1 - y0) / h:.6f}\n" for (x0, y0, x1, y1), label in zip(boxes, labels))
            atomic_write_text(out / "labels" / split / f"{stem}.txt", text)
        else:
            objs = "".join(f" {_fmt(x0)} {_fmt(y0)} {_fmt(x1)} {_fmt(y1)} {label}"
                           for (x0, y0, x1, y1), label in zip(boxes, labels))
            lines[split].append(f"images/{filename}{objs}\n")

    if format == "voc":
        for split in splits:
            atomic_write_text(out / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{s}\n" for s in ids[split]))
        if "trainval" not in splits:
            every = [s for split in splits for s in ids[split]]
            atomic_write_text(out / "ImageSets" / "Main" / "trainval.txt", "".join(f"{s}\n" for s in every))
    elif format == "coco":
        categories = [{"id": k + 1, "name": name} for k, name in enumerate(names)]
        for split, part in coco.items():
            part.update(categories=categories, info={"description": description, "version": "1.0"})
            atomic_write_text(out / "annotations" / f"instances_{split}.json", json.dumps(part))
    elif format == "yolo":
        data = {"path": ".", "names": {k: name for k, name in enumerate(names)}}
        data.update({split: f"images/{split}" for split in splits})
        atomic_write_text(out / "data.yaml", yaml.safe_dump(data, sort_keys=False))
        atomic_write_text(out / "classes.txt", "".join(f"{name}\n" for name in names))  # for readers of the folder
    else:
        for split in splits:
            atomic_write_text(out / f"{split}.txt", "".join(lines[split]))
        atomic_write_text(out / "classes.txt", "".join(f"{name}\n" for name in names))
    return out
