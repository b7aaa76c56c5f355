"""What a run reports while it trains: throughput, the ``history.jsonl`` / ``results.csv`` records, the counts
of skipped images and steps with the epoch's data line, the progress bar and TensorBoard.

Handlers on the trainer of :func:`ssdkit.engine.handlers.attach_handlers`, sharing its
:class:`~ssdkit.engine.handlers.RunState`.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from ssdkit.engine.data import Loaders

if TYPE_CHECKING:
    from ssdkit.engine.handlers import RunState

__all__ = ["attach_logging", "attach_data_report", "attach_progress", "tensorboard"]

logger = logging.getLogger("ssdkit.train")


def attach_logging(trainer: Engine, run: RunState, log_every: int, batch_per_process: int) -> None:
    """Throughput (``state.metrics["img/s"]``, for the bar), skipped images and steps (counted in
    ``run.epoch_skipped``), and a ``history.jsonl`` / ``results.csv`` record every ``log_every`` iterations:
    mean loss parts over the window's trained steps, LR, images per second."""
    images_per_iteration = batch_per_process * idist.get_world_size()

    @trainer.on(Events.STARTED)
    def _start_clock(engine: Engine) -> None:
        run.log_t0 = run.step_t0 = time.perf_counter()
        engine.state.metrics["img/s"] = float("nan")

    @trainer.on(Events.ITERATION_COMPLETED)
    def _track(engine: Engine) -> None:
        out = engine.state.output
        if not math.isfinite(out["loss"]):
            run.diverged_at = engine.state.iteration
            return
        # every batch holds batch_per_process indices (drop_last); the images that failed to load are missing
        run.epoch_skipped["images"] += batch_per_process - len(engine.state.batch[1])
        run.epoch_skipped["steps"] += int(out.get("skipped", 0) > 0)
        now = time.perf_counter()
        # progress bar: smoothed throughput of the last iterations (data loading included)
        rate = images_per_iteration / max(now - run.step_t0, 1e-9)
        prev = engine.state.metrics.get("img/s", float("nan"))
        engine.state.metrics["img/s"] = rate if not math.isfinite(prev) else 0.9 * prev + 0.1 * rate
        run.step_t0 = now
        run.log_window.append(out)
        if engine.state.iteration % log_every == 0:
            trained = [o for o in run.log_window if not o.get("skipped")]
            if trained:  # a window of skipped steps only has no losses to log
                record = {"iteration": engine.state.iteration, "epoch": engine.state.epoch}
                for k in ("loss", "loc_loss", "cls_loss"):
                    record[k] = sum(o[k] for o in trained) / len(trained)
                record["lr"] = out["lr"]
                record["img_per_s"] = len(run.log_window) * images_per_iteration / max(now - run.log_t0, 1e-9)
                run.log.append(record)
            run.log_window = []
            run.log_t0 = now


def _sum_over_processes(values: list[int]) -> list[int]:
    if idist.get_world_size() == 1:
        return values
    return [int(v) for v in idist.all_reduce(torch.tensor(values, dtype=torch.float64, device=idist.device()))]


def attach_data_report(trainer: Engine, run: RunState, loaders: Loaders) -> None:
    """At each epoch end (and at the end of a run stopped mid-epoch) fold the epoch's skipped images (summed over
    processes) and steps into ``run.skipped``. Logged: at the first epoch end one line with them and the training
    data's fixed boxes and reader problems; later, a line for each epoch that skipped images or steps."""
    problems = loaders.train_source.problems if run.is_main else []
    kinds = [p.kind for p in problems]
    run.data_problems = {"boxes_clipped": kinds.count("out_of_image"), "boxes_dropped": kinds.count("degenerate"),
                         "windows_cutting_objects": kinds.count("cut_by_window"),
                         "reader_problems": len(loaders.reader_problems)}

    def fold(engine: Engine) -> dict[str, int]:
        images, = _sum_over_processes([run.epoch_skipped["images"]])
        epoch = {"images": images, "steps": run.epoch_skipped["steps"]}  # steps: decided by all processes
        run.skipped = {k: run.skipped[k] + epoch[k] for k in run.skipped}
        run.epoch_skipped = {k: 0 for k in run.epoch_skipped}
        return epoch

    said = []  # the training set's part (fixed for the run) is logged once, at the first epoch end

    @trainer.on(Events.EPOCH_COMPLETED)
    def _epoch_line(engine: Engine) -> None:
        epoch, d = fold(engine), run.data_problems
        if said:
            if epoch["images"] or epoch["steps"]:
                logger.info("epoch %d data: %d unreadable image(s) skipped, %d step(s) skipped (too few images "
                            "left for BatchNorm)", engine.state.epoch, epoch["images"], epoch["steps"])
            return
        said.append(engine.state.epoch)
        first = f" (first: {problems[0]})" if problems else ""
        cuts = (f", {d['windows_cutting_objects']} window(s) cutting objects below data.tile_min_visible"
                if d["windows_cutting_objects"] else "")
        logger.info("epoch %d data: %d unreadable image(s) skipped, %d step(s) skipped (too few images left for "
                    "BatchNorm); training set: %d box(es) clipped, %d dropped by the box policy%s%s, %d reader "
                    "problem(s)%s", engine.state.epoch, epoch["images"], epoch["steps"], d["boxes_clipped"],
                    d["boxes_dropped"], cuts, first, d["reader_problems"],
                    "; `ssdkit check-data` lists them" if problems or d["reader_problems"] else "")

    @trainer.on(Events.COMPLETED)
    def _fold_partial_epoch(engine: Engine) -> None:
        if engine.state.iteration % engine.state.epoch_length:
            fold(engine)


def attach_progress(trainer: Engine, total: int) -> None:
    """A tqdm bar per epoch with loss parts, LR and img/s, rate and ETA. Unlike ignite's ``ProgressBar`` (whose
    total is always the epoch length) its total is what this epoch will really run, so a run cut short by
    ``train.max_iterations`` shows a true ETA."""
    from tqdm.auto import tqdm

    bar = {}

    def start(engine: Engine) -> None:  # at the first completed iteration of an epoch (or of a resumed one)
        it, per_epoch = engine.state.iteration - 1, engine.state.epoch_length
        this_epoch = min(per_epoch - it % per_epoch, total - it)
        bar["tqdm"] = tqdm(total=this_epoch, desc=f"train epoch {engine.state.epoch}", leave=False, unit="it")

    def step(engine: Engine) -> None:
        if "tqdm" not in bar:
            start(engine)
        out = engine.state.output if isinstance(engine.state.output, dict) else {}
        post = {k: f"{out[k]:.3g}" for k in ("loss", "loc_loss", "cls_loss", "lr") if k in out}
        if "img/s" in engine.state.metrics:
            post["img/s"] = f"{engine.state.metrics['img/s']:.1f}"
        first = bar["tqdm"].n == 0
        bar["tqdm"].set_postfix(post, refresh=first)  # shown at once, then at tqdm's refresh rate
        bar["tqdm"].update(1)

    def close(engine: Engine) -> None:
        if "tqdm" in bar:
            bar.pop("tqdm").close()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, step)
    for event in (Events.EPOCH_COMPLETED, Events.COMPLETED, Events.TERMINATE):  # not EXCEPTION_RAISED: a
        # handler there makes ignite swallow the exception
        trainer.add_event_handler(event, close)


def tensorboard(trainer: Engine, out_dir: Path, log_every: int):
    """ignite's ``TensorboardLogger`` of the step outputs in ``out_dir/tb``, or None when tensorboard is missing."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return None
    from ignite.handlers.tensorboard_logger import OutputHandler, TensorboardLogger

    tb = TensorboardLogger(log_dir=str(out_dir / "tb"))
    tb.attach(trainer, OutputHandler("train", output_transform=lambda out: out),
              event_name=Events.ITERATION_COMPLETED(every=log_every))
    return tb
