"""Dataset validation (``ssdkit check``) and the box policy training applies (:func:`sanitize_sample`).

Training policy, applied per sample:
    1. boxes are clipped to the image ``[0, W] x [0, H]`` (a ``out_of_image`` problem per clipped box);
    2. boxes narrower or shorter than 1 px after clipping are dropped (``degenerate``: zero-area,
       inverted ``xmax < xmin``, or entirely outside the image).
Both are ``fixable``; ``strict=True`` turns the first one into a :class:`DataError` instead.
:func:`check_dataset` reports exactly what this policy would change, plus the reader's own problems and,
optionally, unreadable images and images whose size differs from their annotation.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field

import torch

from ssdkit.data.image import check_complete, image_size, load_image
from ssdkit.data.readers.base import error_reason
from ssdkit.data.sample import DetectionSource, Problem, Sample
from ssdkit.errors import DataError

__all__ = ["CheckReport", "check_data", "check_dataset", "sanitize_sample", "SIZE_BUCKETS", "MIN_BOX_SIZE"]

#: Boxes with width or height below this (pixels, after clipping) are dropped.
MIN_BOX_SIZE = 1.0
#: sqrt(area) buckets in pixels: (name, low inclusive, high exclusive); COCO's small/medium/large cut at 32/96.
SIZE_BUCKETS = (("<16", 0.0, 16.0), ("16-32", 16.0, 32.0), ("32-96", 32.0, 96.0), (">=96", 96.0, float("inf")))


def _where(sample: Sample, k: int) -> tuple[str, str]:
    file = str(sample.extra.get("annotation_path") or sample.image_path or sample.image_id)
    label = int(sample.labels[k])
    name = sample.class_names[label] if 0 <= label < len(sample.class_names) else str(label)
    return file, f"image {sample.image_id} box {k} ({name})"


def _fmt_box(b: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:g}" for v in b.tolist()) + "]"


def sanitize_sample(sample: Sample, strict: bool = False) -> tuple[Sample, list[Problem]]:
    """Apply the training box policy to one sample.

    Args:
        sample: boxes ``[M, 4]`` xyxy pixels in an image of ``sample.width x sample.height``.
        strict: raise on the first problem instead of fixing it.

    Returns:
        ``(sample', problems)``: a new :class:`Sample` whose boxes are clipped to the image and have width
        and height >= :data:`MIN_BOX_SIZE` (labels/ignore filtered alike; the input is not modified), and one
        fixable :class:`Problem` per clipped or dropped box.

    Raises:
        DataError: ``strict`` and a box needed fixing; the message names the annotation file and box.
    """
    problems: list[Problem] = []
    if len(sample) == 0:
        return sample, problems
    boxes = sample.boxes
    w, h = float(sample.width), float(sample.height)
    clipped = torch.stack(
        [boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], dim=1
    )
    outside = (clipped != boxes).any(dim=1)
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (cw >= MIN_BOX_SIZE) & (ch >= MIN_BOX_SIZE)
    for k in range(len(sample)):
        if keep[k] and not outside[k]:
            continue
        file, element = _where(sample, k)
        b = boxes[k]
        if not keep[k]:
            if b[2] < b[0] or b[3] < b[1]:
                what = "xmax < xmin" if b[2] < b[0] else "ymax < ymin"
                msg = f"box {_fmt_box(b)} is inverted ({what}); dropped"
            elif b[2] == b[0] or b[3] == b[1]:
                msg = f"box {_fmt_box(b)} has zero area; dropped"
            else:
                msg = (
                    f"box {_fmt_box(b)} is {float(cw[k]):g}x{float(ch[k]):g} px inside the {sample.width}x"
                    f"{sample.height} image (< {MIN_BOX_SIZE:g} px); dropped"
                )
            problem = Problem(file, element, msg, "degenerate", fixable=True)
        else:
            problem = Problem(
                file,
                element,
                f"box {_fmt_box(b)} extends outside the {sample.width}x{sample.height} "
                f"image; clipped to {_fmt_box(clipped[k])}",
                "out_of_image",
                fixable=True,
            )
        if strict:
            raise DataError(str(problem))
        problems.append(problem)
    if not problems:
        return sample, problems
    fixed = Sample(
        image_id=sample.image_id,
        image_path=sample.image_path,
        width=sample.width,
        height=sample.height,
        boxes=clipped[keep],
        labels=sample.labels[keep],
        ignore=sample.ignore[keep],
        class_names=sample.class_names,
        extra=dict(sample.extra),
    )
    return fixed, problems


@dataclass
class CheckReport:
    """What :func:`check_dataset` found. All counts are over the dataset's samples as read (before fixes).

    Attributes:
        dataset_format: the reader's format name (``format`` is the text-rendering method).
        per_class: ``[{"name", "objects", "ignored", "images"}]`` in label order (``objects`` includes ignored).
        size_buckets: object count per sqrt(area) bucket of :data:`SIZE_BUCKETS` (non-degenerate boxes).
        box_width, box_height: ``{"min", "median", "max"}`` in pixels (non-degenerate boxes; empty if none).
        images_without_objects: ids of images with zero objects.
        problems: the reader's problems followed by the check's own.
    """

    dataset_format: str
    root: str
    num_images: int
    num_objects: int
    num_ignored: int
    class_names: list[str]
    per_class: list[dict]
    size_buckets: dict[str, int]
    box_width: dict[str, float]
    box_height: dict[str, float]
    images_without_objects: list[str]
    problems: list[Problem] = field(default_factory=list)
    images_verified: bool = False

    @property
    def problem_counts(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.problems))

    @property
    def ok(self) -> bool:
        """No problem at all (fixable ones included)."""
        return not self.problems

    def to_dict(self) -> dict:
        """JSON-able dict: every field, ``problems`` as dicts, plus ``problem_counts``."""
        d = asdict(self)
        d["problem_counts"] = self.problem_counts
        return d

    def format(self, max_problems: int = 50) -> str:
        """Human-readable multi-line summary; at most ``max_problems`` problems listed (counts are complete)."""
        lines = [
            f"dataset: {self.root} ({self.dataset_format})",
            f"images: {self.num_images}  objects: {self.num_objects} ({self.num_ignored} ignored)  "
            f"images without objects: {len(self.images_without_objects)}",
            "",
            "per class:" if self.per_class else "per class: (no classes)",
        ]
        width = max((len(c["name"]) for c in self.per_class), default=0)
        for i, c in enumerate(self.per_class):
            lines.append(
                f"  {i:3d} {c['name']:<{width}}  objects {c['objects']:7d}  ignored {c['ignored']:6d}  "
                f"images {c['images']:6d}"
            )
        lines.append("")
        lines.append("object size (sqrt area, px): " + "  ".join(f"{k}: {v}" for k, v in self.size_buckets.items()))
        if self.box_width:
            lines.append(
                "box width  min/median/max: " + "/".join(f"{self.box_width[k]:.1f}" for k in ("min", "median", "max"))
            )
            lines.append(
                "box height min/median/max: " + "/".join(f"{self.box_height[k]:.1f}" for k in ("min", "median", "max"))
            )
        lines.append("")
        if not self.problems:
            lines.append("problems: none" + ("" if self.images_verified else " (images not verified)"))
        else:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(self.problem_counts.items()))
            n_fix = sum(p.fixable for p in self.problems)
            lines.append(f"problems: {len(self.problems)} ({counts}; {n_fix} fixable by the training policy)")
            for p in self.problems[:max_problems]:
                lines.append(f"  [{p.kind}{', fixable' if p.fixable else ''}] {p}")
            if len(self.problems) > max_problems:
                lines.append(f"  ... {len(self.problems) - max_problems} more (see to_dict())")
        return "\n".join(lines)


def check_data(
    data: str,
    split: str | None = None,
    format: str | None = None,
    classes=None,
    verify_images: bool = True,
    decode: bool = False,
) -> CheckReport:
    """``ssdkit check-data``: open ``data`` as training would (:func:`ssdkit.data.sources.build_source`: a dataset
    path in any format, or ``"shapes"``) and :func:`check_dataset` it.

    Raises:
        DataError: the data cannot be opened at all (the reader's one-line message).
    """
    from ssdkit.data.sources import build_source

    return check_dataset(build_source(data, split=split, format=format, classes=classes),
                         verify_images=verify_images, decode=decode)


def check_dataset(ds: DetectionSource, verify_images: bool = True, decode: bool = False) -> CheckReport:
    """Summarise and validate a dataset.

    Args:
        ds: any :class:`~ssdkit.data.sample.DetectionSource` (what a reader returned, the shapes set, ...);
            a reader's own ``problems`` are included.
        verify_images: open every image header: unreadable files -> ``unreadable``, a size different from the
            annotation's -> ``size_mismatch``.
        decode: with ``verify_images``, fully decode each image (catches truncated files; slow).

    Returns:
        :class:`CheckReport`.
    """
    n_classes = len(ds.class_names)
    objects, ignored, images = [0] * n_classes, [0] * n_classes, [0] * n_classes
    problems = list(getattr(ds, "problems", ()))
    samples = [ds.sample(i) for i in range(len(ds))]
    widths: list[float] = []
    heights: list[float] = []
    buckets = dict.fromkeys((b[0] for b in SIZE_BUCKETS), 0)
    empty: list[str] = []
    num_objects = num_ignored = 0
    for s in samples:
        num_objects += len(s)
        num_ignored += int(s.ignore.sum())
        if len(s) == 0:
            empty.append(s.image_id)
        for label in s.labels.unique().tolist():
            if 0 <= label < n_classes:
                images[label] += 1
        for label, ign in zip(s.labels.tolist(), s.ignore.tolist()):
            if 0 <= label < n_classes:
                objects[label] += 1
                ignored[label] += int(ign)
        if len(s):
            bw, bh = (s.boxes[:, 2] - s.boxes[:, 0]), (s.boxes[:, 3] - s.boxes[:, 1])
            valid = (bw > 0) & (bh > 0)
            widths.extend(bw[valid].tolist())
            heights.extend(bh[valid].tolist())
            for side in (bw[valid] * bh[valid]).sqrt().tolist():
                for name, lo, hi in SIZE_BUCKETS:
                    if lo <= side < hi:
                        buckets[name] += 1
                        break
        _, fixes = sanitize_sample(s, strict=False)
        problems.extend(fixes)
        if verify_images and s.image_path is not None:
            problems.extend(_verify_image(s, decode))

    def stats(v: list[float]) -> dict[str, float]:
        return {"min": min(v), "median": statistics.median(v), "max": max(v)} if v else {}

    return CheckReport(
        dataset_format=getattr(ds, "format", None) or type(ds).__name__,
        root=str(getattr(ds, "root", None) or ds),
        num_images=len(samples),
        num_objects=num_objects,
        num_ignored=num_ignored,
        class_names=list(ds.class_names),
        per_class=[
            {"name": n, "objects": objects[i], "ignored": ignored[i], "images": images[i]}
            for i, n in enumerate(ds.class_names)
        ],
        size_buckets=buckets,
        box_width=stats(widths),
        box_height=stats(heights),
        images_without_objects=empty,
        problems=problems,
        images_verified=verify_images,
    )


def _verify_image(s: Sample, decode: bool) -> list[Problem]:
    try:
        if decode:
            img = load_image(s.image_path)
            w, h = img.shape[2], img.shape[1]
        else:
            w, h = image_size(s.image_path)
            check_complete(s.image_path)
    except DataError as e:
        reason = error_reason(e, s.image_path)
        return [Problem(str(s.image_path), f"image {s.image_id}", reason, "unreadable")]
    if (w, h) != (s.width, s.height):
        return [
            Problem(
                str(s.image_path),
                f"image {s.image_id}",
                f"image is {w}x{h} but the annotation says {s.width}x{s.height}",
                "size_mismatch",
            )
        ]
    return []
