"""The files of a run folder besides checkpoints: what users open to see what training did.

==========================  ===================================================================================
``history.jsonl``           one JSON object per log step (mean loss parts over the window, LR, img/s) and per
                            evaluation (the metric's scalars, AP per class)
``results.csv``             the same records as a table, :data:`RESULT_COLUMNS` (empty cells where a field does
                            not apply); rows are appended whole, so the ``csv`` module reads it at any time
``labels.png``              class counts, box centres, box shapes and object sizes of the training set (from the
                            annotations only), written when the run starts
``train_batch0.jpg`` ..     the first three training batches as the network sees them (augmented), boxes and
``train_batch2.jpg``        class names drawn: augmentation bugs show here
``val_predictions.jpg``     at the end: validation images, ground truth beside predictions
``report/``                 at the end: :func:`ssdkit.metrics.report.write_report` of the best evaluation of the
                            run (AP per class, PR / F1 curves, confusion matrix, TIDE; ``report/report.md``)
==========================  ===================================================================================

Only rank 0 writes. Every picture is drawn outside the training step (the batches only for the first three
iterations), and a failure to draw is a warning, never a lost run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from ssdkit.utils import atomic_write_text

__all__ = ["HISTORY", "RESULTS", "LABELS", "BATCH_FILES", "VAL_PREDICTIONS", "REPORT", "RESULT_COLUMNS", "RunLog",
           "EvalStash", "read_history", "truncate_history", "write_labels", "write_batch", "write_final_report",
           "result_columns", "attach_run_files"]

logger = logging.getLogger("ssdkit.train")

HISTORY = "history.jsonl"
RESULTS = "results.csv"
LABELS = "labels.png"
BATCH_FILES = ("train_batch0.jpg", "train_batch1.jpg", "train_batch2.jpg")
VAL_PREDICTIONS = "val_predictions.jpg"
REPORT = "report"
#: The columns of ``results.csv`` (COCO runs add :data:`ssdkit.metrics.COCO_STAT_NAMES`).
RESULT_COLUMNS = ("iteration", "epoch", "loss", "loc_loss", "cls_loss", "lr", "img_per_s", "metric", "map")


def result_columns(metric: str) -> tuple[str, ...]:
    """The ``results.csv`` header of a run evaluated with ``metric``."""
    if metric != "coco":
        return RESULT_COLUMNS
    from ssdkit.metrics import COCO_STAT_NAMES

    return RESULT_COLUMNS + tuple(COCO_STAT_NAMES)


def read_history(path: Path) -> list[dict]:
    """The records of a ``history.jsonl`` (a line cut by a crash mid-write is skipped)."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


def truncate_history(path: Path, iteration: int) -> None:
    """Drop history records past ``iteration`` (written after the checkpoint a run resumes from)."""
    if not path.is_file():
        return
    keep = [r for r in read_history(path) if r.get("iteration", 0) <= iteration]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def _csv_rows(records: Sequence[dict], columns: Sequence[str], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), restval="", extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    for r in records:
        writer.writerow({k: "" if r.get(k) is None else r[k] for k in columns if k in r})
    return buf.getvalue()


class RunLog:
    """``history.jsonl`` and ``results.csv`` of a run, appended together (only when ``enabled``: rank 0)."""

    def __init__(self, out_dir: str | Path, metric: str, enabled: bool = True) -> None:
        self.history_path = Path(out_dir) / HISTORY
        self.results_path = Path(out_dir) / RESULTS
        self.columns = result_columns(metric)
        self.enabled = enabled

    def restart(self, iteration: int) -> None:
        """Continue the logs of a run at ``iteration``: later records (of an abandoned continuation, or of another
        run in a reused folder at iteration 0) are dropped, and ``results.csv`` is rewritten from the history."""
        if not self.enabled:
            return
        truncate_history(self.history_path, iteration)
        atomic_write_text(self.results_path, _csv_rows(read_history(self.history_path), self.columns, True))

    def append(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.history_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
        new = not self.results_path.is_file()
        with open(self.results_path, "a", encoding="utf-8", newline="") as f:
            f.write(_csv_rows([record], self.columns, new))  # one write of whole rows: always parseable


def write_labels(source: Any, class_names: Sequence[str], path: str | Path) -> None:
    """``labels.png`` of a training source (annotations only: ``source.sample(i)``, no image is read)."""
    from ssdkit.viz_run import plot_labels

    labels, boxes, sizes = [], [], []
    for i in range(len(source)):
        s = source.sample(i)
        labels.append(s.labels.reshape(-1))
        boxes.append(s.boxes.reshape(-1, 4).float())
        sizes.append(torch.tensor([[float(s.width), float(s.height)]]).expand(len(s.labels), 2))
    cat = (lambda parts, shape: torch.cat(parts) if parts else torch.zeros(shape))  # noqa: E731
    plot_labels(class_names, cat(labels, (0,)), cat(boxes, (0, 4)), cat(sizes, (0, 2)), path, num_images=len(source))


def write_batch(batch: Any, class_names: Sequence[str], path: str | Path) -> None:
    """``train_batch<k>.jpg``: a loader batch ``(images uint8 [B, 3, S, S], targets)`` as a captioned grid."""
    from ssdkit.viz import save_image
    from ssdkit.viz_run import batch_grid

    images, targets = batch
    save_image(batch_grid(images, targets, class_names), path)


@dataclass
class EvalStash:
    """This process's detections and ground truths of one evaluation (the run's best, or its latest while no
    evaluation of this session beat the best so far), kept for the final report."""

    iteration: int
    best: bool
    detections: list = field(default_factory=list)
    ground_truths: list = field(default_factory=list)

    @classmethod
    def of(cls, evaluator: Engine, iteration: int, best: bool) -> EvalStash:
        keys = ("boxes", "labels", "scores")  # not the per-box names: they only cost memory
        dets = [{k: d[k] for k in keys} for d in getattr(evaluator.state, "detections", [])]
        return cls(iteration, best, dets, list(getattr(evaluator.state, "ground_truths", [])))


def _timed(run: Any, what: str, write, *args) -> None:
    """Run ``write(*args)`` outside the throughput clock of ``run``; a failure is a warning."""
    t0 = time.perf_counter()
    try:
        write(*args)
    except Exception as e:  # noqa: BLE001 - a picture must not lose the run
        logger.warning("could not write %s: %s", what, e)
    spent = time.perf_counter() - t0
    run.log_t0 += spent
    run.step_t0 += spent


def attach_run_files(trainer: Engine, run: Any, loaders: Any) -> None:
    """``labels.png`` when the run starts and ``train_batch<k>.jpg`` of its first three iterations, in
    ``run.output_dir`` (rank 0 attaches this). A resumed run draws only what its folder lacks."""
    out, names = Path(run.output_dir), loaders.class_names
    state = {"start": 0}

    @trainer.on(Events.STARTED)
    def _labels(engine: Engine) -> None:
        state["start"] = engine.state.iteration
        if engine.state.iteration == 0 or not (out / LABELS).is_file():
            _timed(run, LABELS, write_labels, loaders.train_source, names, out / LABELS)

    def first_three(_engine: Engine, iteration: int) -> bool:
        return iteration - state["start"] <= len(BATCH_FILES)

    @trainer.on(Events.ITERATION_COMPLETED(event_filter=first_three))
    def _batch(engine: Engine) -> None:
        path = out / BATCH_FILES[engine.state.iteration - state["start"] - 1]
        if state["start"] == 0 or not path.is_file():
            _timed(run, path.name, write_batch, engine.state.batch, names, path)


def _first_images(source: Any, ground_truths: Sequence[dict], count: int) -> list[tuple[int, int]]:
    """``(position in ground_truths, index in source)`` of up to ``count`` images, those with objects first."""
    order = sorted(range(len(ground_truths)), key=lambda k: len(ground_truths[k]["labels"]) == 0)[: count * 4]
    wanted = {str(ground_truths[k]["image_id"]): k for k in order}
    found = {}
    for i in range(len(source)):
        image_id = str(source.sample(i).image_id)
        if image_id in wanted and image_id not in found:
            found[image_id] = i
            if len(found) == len(wanted):
                break
    return [(wanted[i], found[i]) for i in sorted(found, key=lambda i: order.index(wanted[i]))][:count]


def write_final_report(out_dir: str | Path, detections: Sequence[dict], ground_truths: Sequence[dict],
                       class_names: Sequence[str], metric: str, pixel_offset: bool, val_source: Any,
                       num_images: int = 4) -> dict:
    """``report/`` (:func:`ssdkit.metrics.report.write_report`) and ``val_predictions.jpg`` of one evaluation.

    Predictions are drawn above the report's confusion-matrix threshold (the F1-optimal score).

    Returns:
        The report's summary (``write_report``'s return) with ``"val_predictions"`` (the JPEG's path).
    """
    from ssdkit.metrics.report import write_report
    from ssdkit.viz import save_image
    from ssdkit.viz_run import predictions_side_by_side

    out = Path(out_dir)
    report = write_report(out / REPORT, detections, ground_truths, class_names, metric=metric,
                          pixel_offset=pixel_offset)
    pairs = []
    for k, index in _first_images(val_source, ground_truths, num_images):
        try:
            image = val_source.load_image(index)
        except (OSError, ValueError, RuntimeError):  # unreadable: its detections cannot be drawn
            continue
        pairs.append((image, ground_truths[k], detections[k]))
    threshold = report.get("score_threshold")
    save_image(predictions_side_by_side(pairs, class_names, float(threshold) if threshold is not None else 0.5),
               out / VAL_PREDICTIONS)
    return dict(report, val_predictions=str(out / VAL_PREDICTIONS))
