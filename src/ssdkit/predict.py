"""``ssdkit predict``: a checkpoint over files, folders and globs -> COCO results, an image index, drawn images."""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssdkit.choices import PREDICT_PRESET, VIDEO_EXTENSIONS
from ssdkit.data.image import IMAGE_EXTENSIONS
from ssdkit.data.tiles import TileSpec
from ssdkit.errors import DataError, SSDKitError
from ssdkit.inference import Detector

__all__ = ["expand_inputs", "predict"]

# Tiled prediction decodes images until a chunk holds this many pixels (or ``batch`` images): the windows of small
# images still fill batches across images, and a folder of 8000 x 8000 scans is read one image at a time.
TILED_CHUNK_PIXELS = 64_000_000


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Files, folders (searched recursively) and globs -> (image files in order, without repeats; problems).

    Folder and glob matches are filtered by :data:`IMAGE_EXTENSIONS` (any case); a file named explicitly is
    always taken (an unreadable one is reported when it is read).
    """
    files: list[Path] = []
    problems: list[str] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        key = os.path.normcase(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            files.append(p)

    def add_dir(d: Path) -> None:
        found = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            problems.append(f"{d}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        for p in found:
            add(p)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            add_dir(p)
        elif p.is_file():
            add(p)
        elif glob.has_magic(str(item)):
            matches = sorted(glob.glob(str(item), recursive=True))
            hits = [Path(m) for m in matches if Path(m).is_file() and Path(m).suffix.lower() in IMAGE_EXTENSIONS]
            for d in (Path(m) for m in matches if Path(m).is_dir()):
                hits.extend(sorted(q for q in d.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS))
            if not hits:
                problems.append(f"{item}: no image files match this pattern")
            for h in hits:
                add(h)
        else:
            problems.append(f"{item}: no such file or folder")
    return files, problems


def _image_ids(files: Sequence[Path]) -> list[Any]:
    """COCO ``image_id`` per file: ``int(stem)`` when every stem is a number (COCO's own naming, so a COCO
    ground-truth file matches), else the stem when stems are unique, else the 0-based index."""
    stems = [p.stem for p in files]
    if len(set(stems)) == len(stems):
        if stems and all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
            return [int(s) for s in stems]
        return stems
    return list(range(len(files)))


def _ids_from_ground_truth(gt: str | os.PathLike, files: Sequence[Path], class_names: Sequence[str]):
    """COCO image ids of ``files`` (by file name) and category ids of ``class_names`` (by name) in ``gt``.

    Raises:
        DataError: files or class names the ground truth does not have (listed).
    """
    from ssdkit.data.coco_json import load_json, parse_instances

    inst = parse_instances(load_json(gt, "ground-truth"), gt)
    by_name: dict[str, Any] = {}
    for img in inst.images:
        by_name.setdefault(Path(img.get("file_name", "")).name, img["id"])
    missing = [f.name for f in files if f.name not in by_name]
    if missing:
        raise DataError(f"{gt}: {len(missing)} predicted image(s) are not images of the ground truth (first: "
                        f"{', '.join(missing[:5])})")
    cat_of = {c.get("name"): c["id"] for c in inst.categories}
    unknown = [n for n in class_names if n not in cat_of]
    if unknown:
        raise DataError(f"{gt}: the model's classes {unknown} are not categories of the ground truth "
                        f"({sorted(n for n in cat_of if n)})")
    return [by_name[f.name] for f in files], [cat_of[n] for n in class_names]


def _output_names(files: Sequence[Path]) -> list[str]:
    """Drawn-image file names in ``out_dir``: the input's name; ``stem_2.ext`` ... when names repeat."""
    used: set[str] = set()
    names = []
    for p in files:
        suffix = p.suffix.lower() if p.suffix.lower() in IMAGE_EXTENSIONS else ".png"
        name, k = f"{p.stem}{suffix}", 1
        while name.lower() in used:
            k += 1
            name = f"{p.stem}_{k}{suffix}"
        used.add(name.lower())
        names.append(name)
    return names


def predict(
    checkpoint: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike = "predictions",
    score: float | None = None,
    batch: int = 8,
    device: str = "auto",
    draw: bool = True,
    progress: bool = True,
    tile: TileSpec | str | None = "auto",
    gt: str | os.PathLike | None = None,
    precision: str = "fp32",
    every: int = 1,
) -> dict[str, Any]:
    """Run a checkpoint on files, folders and globs; write COCO results, an image index and drawn images.

    ``tile`` (a :class:`~ssdkit.data.tiles.TileSpec`) runs tiled inference for small objects in large images:
    ``batch`` then counts windows per forward pass, and boxes are still in each image's own pixels. ``"auto"``
    (default): the windows the model was trained on (``data.tile_size``), else whole images; None: whole images.

    Writes (atomically) into ``out_dir``:

    - ``detections.json``: COCO results ``[{"image_id", "category_id" (label + 1), "bbox": [x, y, w, h] original
      pixels, "score"}, ...]`` (what ``ssdkit evaluate --gt GT --detections detections.json`` reads);
    - ``images.json``: ``{"images": [{"id", "file_name", "path", "width", "height"}], "categories": [{"id",
      "name"}]}``, a COCO-style index of the images read (ground truth can be joined on ``id``);
    - one drawn image per input (same name; ``name_2.jpg`` for repeated names) when ``draw``.

    ``image_id`` is ``int(stem)`` when all file stems are numbers, else the stem, else the index (repeated stems).
    Video files (:data:`ssdkit.choices.VIDEO_EXTENSIONS`) among the inputs go through
    :func:`ssdkit.video.predict_video` (one in ``every`` frames): ``<stem>.detections.json`` and an annotated video
    in ``out_dir``, listed under ``"videos"``. ``checkpoint`` may be an exported file (ONNX, OpenVINO, pt2,
    TorchScript); ``precision="bf16"`` runs an eager model in bfloat16.

    With ``gt`` (a COCO instances file) the ids are the ground truth's: images by file name, categories by class
    name, so ``ssdkit evaluate --gt GT --detections detections.json`` evaluates them directly.
    Unreadable files are skipped and reported (a line on stderr while the progress bar runs, and in the summary).

    Returns:
        ``{"images": read, "detections": total, "skipped": ["<path>: <reason>", ...], "out_dir", "detections_json",
        "images_json", "drawn": [paths]}``.

    Raises:
        CheckpointError: the checkpoint is missing or unreadable. SSDKitError: no input names an image file.
    """
    from tqdm.auto import tqdm

    from ssdkit.data.image import load_image
    from ssdkit.metrics import detections_to_coco_results
    from ssdkit.utils import atomic_write_text

    if batch < 1:
        raise SSDKitError(f"batch: must be >= 1, got {batch}")
    detector = Detector.from_checkpoint(checkpoint, device=device, preset=PREDICT_PRESET, score_thresh=score,
                                        batch_size=batch, tile=tile, precision=precision)
    out = Path(out_dir)
    videos = [Path(i) for i in inputs if Path(i).suffix.lower() in VIDEO_EXTENSIONS]
    inputs = [i for i in inputs if Path(i).suffix.lower() not in VIDEO_EXTENSIONS]
    if videos:
        from ssdkit.video import predict_video

        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise SSDKitError(f"every: must be an integer >= 1, got {every!r}")
        done = [predict_video(detector, v, out, every=every, batch=batch, progress=progress) for v in videos]
        if not inputs:
            return {"images": 0, "detections": 0, "skipped": [], "out_dir": str(out), "videos": done}
    files, skipped = expand_inputs(inputs)
    # never read our own outputs (a folder of inputs holding an earlier run's --out), never write over an input
    out_abs = out.resolve()
    if any(f.resolve().parent == out_abs for f in files) or out_abs in {Path(i).resolve() for i in inputs}:
        raise SSDKitError(f"out: {out} holds the input images; the drawn images would overwrite them: choose "
                          "another --out folder")
    files = [f for f in files if out_abs not in f.resolve().parents]
    if not files:
        raise SSDKitError(f"inputs: no image files found ({'; '.join(skipped) or 'nothing given'})")
    out.mkdir(parents=True, exist_ok=True)

    def report(msg: str) -> None:
        if progress:
            tqdm.write(f"skipped: {msg}", file=sys.stderr)

    for msg in skipped:
        report(msg)

    ok_files: list[Path] = []
    sizes: list[tuple[int, int]] = []
    detections: list[dict[str, Any]] = []
    drawn: list[str] = []
    out_names = dict(zip(files, _output_names(files)))
    bar = tqdm(total=len(files), unit="img", desc="predict", disable=not progress, dynamic_ncols=True)
    try:
        start = 0
        while start < len(files):
            chunk, images, pixels, tried = [], [], 0, 0
            for path in files[start:start + batch]:
                tried += 1
                try:
                    images.append(load_image(path))
                    chunk.append(path)
                except DataError as e:
                    skipped.append(str(e))
                    report(str(e))
                    continue
                pixels += images[-1].shape[1] * images[-1].shape[2]
                if detector.tile is not None and pixels >= TILED_CHUNK_PIXELS:
                    break
            if images:
                results = detector(images)
                for path, image, det in zip(chunk, images, results):
                    ok_files.append(path)
                    sizes.append((int(image.shape[1]), int(image.shape[2])))
                    detections.append(det)
                    if draw:
                        from ssdkit.viz import draw_detections, save_image

                        target = out / out_names[path]
                        save_image(draw_detections(image, det["boxes"], det["labels"], det["scores"],
                                                   detector.class_names), target)
                        drawn.append(str(target))
            bar.update(tried)
            start += tried
    finally:
        bar.close()

    if not ok_files:
        raise SSDKitError(f"inputs: none of the {len(files)} image file(s) could be read "
                          f"(first: {skipped[-len(files)]})")
    if gt is not None:
        ids, category_ids = _ids_from_ground_truth(gt, ok_files, detector.class_names)
    else:
        ids, category_ids = _image_ids(ok_files), [c + 1 for c in range(len(detector.class_names))]
    results_json = detections_to_coco_results(detections, ids, category_ids)
    index = {
        "images": [
            {"id": i, "file_name": p.name, "path": str(p), "width": w, "height": h}
            for i, p, (h, w) in zip(ids, ok_files, sizes)
        ],
        "categories": [{"id": c, "name": n} for c, n in zip(category_ids, detector.class_names)],
    }
    det_path, index_path = out / "detections.json", out / "images.json"
    atomic_write_text(det_path, json.dumps(results_json))
    atomic_write_text(index_path, json.dumps(index, indent=1))
    return {
        "images": len(ok_files),
        "detections": len(results_json),
        "skipped": skipped,
        "out_dir": str(out),
        "detections_json": str(det_path),
        "images_json": str(index_path),
        "drawn": drawn,
        "videos": done if videos else [],
    }
