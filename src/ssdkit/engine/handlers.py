"""The trainer's ignite handlers: LR schedule, NaN guard, data position, history and progress bar, evaluation,
checkpoints (two ignite ``Checkpoint``: the last ``train.keep_checkpoints`` and ``best.pt`` by validation mAP, both
written by :class:`CheckpointSaver` in ssdkit's format), TensorBoard when installed, and the curves plot.

Events: STARTED: logs continued at the start iteration, ``labels.png`` (:mod:`ssdkit.engine.runfiles`).
ITERATION_STARTED: LR. ITERATION_COMPLETED: NaN guard, skipped images and steps counted, throughput,
``history.jsonl`` + ``results.csv`` every ``train.log_every``, bar, TensorBoard, ``train_batch<k>.jpg`` (the first
three), checkpoint every ``train.checkpoint_every`` (an epoch end or the last iteration waits for its evaluation),
stop at ``stop_at_iteration`` or on SIGINT / SIGTERM (:mod:`ssdkit.engine.interrupt`). EPOCH_COMPLETED: the
epoch's data line (images that failed to load, skipped steps, boxes the box policy fixed), evaluation every
``train.eval_every`` epochs (then ``best.pt`` if best), checkpoint, stop on a signal received meanwhile.
COMPLETED: the last evaluation (a run ending mid-epoch), checkpoint, ``curves.png``, and for a finished run the
report of its best evaluation and ``val_predictions.jpg``. Only rank 0 writes files; every process keeps the same
bookkeeping.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, LRScheduler, TerminateOnNan
from ignite.handlers.checkpoint import BaseSaveHandler
from torch import nn

from ssdkit.checkpoint import checkpoint_state, write_checkpoint
from ssdkit.config import Config
from ssdkit.engine.data import Loaders, set_loader_position
from ssdkit.engine.ema import TRAIN_MODEL
from ssdkit.engine.interrupt import SIGNALS, StopRequest
from ssdkit.engine.monitor import attach_data_report, attach_logging, attach_progress, tensorboard
from ssdkit.engine.optim import total_iterations
from ssdkit.engine.resume import rng_state
from ssdkit.engine.runfiles import (
    HISTORY,
    EvalStash,
    RunLog,
    attach_run_files,
    read_history,
    truncate_history,
    write_final_report,
)

__all__ = ["HISTORY", "BEST", "CURVES", "CHECKPOINT_PATTERN", "CheckpointSaver", "RunState", "attach_handlers",
           "read_history", "truncate_history"]

logger = logging.getLogger("ssdkit.train")

BEST = "best.pt"
CURVES = "curves.png"
#: ``Checkpoint.filename_pattern`` of the periodic checkpoints (``global_step`` = the trainer's iteration).
CHECKPOINT_PATTERN = "checkpoint_{global_step:08d}.pt"
_CHECKPOINT_NAME = re.compile(r"checkpoint_(\d+)\.pt")


class CheckpointSaver(BaseSaveHandler):
    """An ignite ``Checkpoint`` save handler writing ssdkit checkpoints (:mod:`ssdkit.checkpoint`) in ``dirname``.

    ``checkpoint`` (what ``Checkpoint`` gathers from ``to_save``) must hold ``"model"``; its other entries and
    ``describe()`` (iteration, epoch, RNG states, metrics) complete the file. Writes are atomic (umask permissions).
    A file ``Checkpoint`` rotates out is deleted only after the next one is written: a ``kill -9`` mid-write leaves
    the previous checkpoint, and a fixed name (``best.pt``, ``n_saved=1``: ``Checkpoint`` removes the old best
    before saving the new one as the same name) is replaced, never deleted. Only rank ``save_on_rank`` writes.
    """

    def __init__(self, dirname: str | Path, config: Config, class_names: Sequence[str],
                 describe: Callable[[], Mapping[str, Any]] | None = None, save_on_rank: int = 0) -> None:
        self.dirname = Path(dirname)
        self.config = config
        self.class_names = tuple(class_names)
        self.describe = describe
        self.save_on_rank = save_on_rank
        self._pending: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != self.save_on_rank:
            self._pending.clear()
            return
        state = dict(checkpoint)
        model_state = state.pop("model")
        state.update(self.describe() if self.describe is not None else {})
        write_checkpoint(self.dirname / filename, checkpoint_state(model_state, self.config, self.class_names,
                                                                   **state))
        pending, self._pending = self._pending, []
        for old in pending:
            if old != filename:
                (self.dirname / old).unlink(missing_ok=True)

    def remove(self, filename: str) -> None:
        self._pending.append(filename)  # deleted by the next __call__, after its write


@dataclass
class RunState:
    """Bookkeeping shared by the handlers (and returned by :func:`attach_handlers`)."""

    output_dir: Path
    is_main: bool
    total: int
    to_save: dict[str, Any] = field(default_factory=dict)
    checkpointer: Checkpoint | None = None
    best: Checkpoint | None = None
    last_map: float | None = None
    saved_at: int = -1
    evaluated_at: int = -1
    diverged_at: int | None = None
    log_window: list[dict] = field(default_factory=list)
    log_t0: float = 0.0
    step_t0: float = 0.0
    log: RunLog | None = None
    stop: StopRequest | None = None
    interrupted: str | None = None  # the signal the run stopped on
    #: skipped images (failed to load) and steps (batch too small): the run's totals of finished epochs, and
    #: this process's of the current epoch
    skipped: dict[str, int] = field(default_factory=lambda: {"images": 0, "steps": 0})
    epoch_skipped: dict[str, int] = field(default_factory=lambda: {"images": 0, "steps": 0})
    data_problems: dict[str, int] = field(default_factory=dict)  # boxes clipped / dropped, reader problems
    stash: EvalStash | None = None
    report: dict | None = None

    @property
    def history_path(self) -> Path:
        return self.output_dir / HISTORY

    @property
    def skipped_total(self) -> dict[str, int]:
        return {k: self.skipped[k] + self.epoch_skipped[k] for k in self.skipped}

    @property
    def best_map(self) -> float | None:
        """The best validation mAP of the run so far (``best.pt``'s), or None."""
        saved = self.best.state_dict()["_saved"] if self.best is not None else []
        return float(saved[-1][0]) if saved else None

    @property
    def last_checkpoint(self) -> str | None:
        name = self.checkpointer.last_checkpoint if self.checkpointer is not None else None
        return str(self.output_dir / name) if name is not None else None

    def resumed(self, checkpoint: Mapping[str, Any]) -> None:
        """Continue the bookkeeping of the run ``checkpoint`` (a loaded checkpoint dict) was saved by."""
        self.saved_at = int(checkpoint.get("iteration", -1))
        best = (checkpoint.get("metrics") or {}).get("best_map")
        if best is not None and self.best is not None:
            self.best.load_state_dict({"_saved": [(float(best), BEST)]})
        saved = checkpoint.get("skipped") or {}
        self.skipped = {k: int(saved.get(k, 0)) for k in self.skipped}


def _summary_metrics(result: dict) -> dict[str, Any]:
    """The JSON-able scalar part of a DetectionMAP result (drops the PR arrays)."""
    keep = {}
    for k, v in result.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            keep[k] = float(v)
        elif k == "ap" and isinstance(v, dict):
            keep[k] = {str(n): float(a) for n, a in v.items()}
    return keep


def _attach_checkpoints(trainer: Engine, run: RunState, cfg: Config, class_names: Sequence[str]) -> None:
    """The two ignite ``Checkpoint`` handlers of :class:`RunState`: ``checkpoint_<iteration>.pt`` (the last
    ``train.keep_checkpoints``) and ``best.pt`` (``score_function``: the mAP of the evaluation just run)."""
    t = cfg.train

    def describe() -> dict[str, Any]:
        it = trainer.state.iteration
        return {
            "iteration": it,
            "epoch": trainer.state.epoch,
            "rng": rng_state(),
            "skipped": run.skipped_total,
            "metrics": {
                "map": run.last_map if run.evaluated_at == it else None,
                "best_map": run.best_map,
                "eval_metric": t.eval_metric,
                "loss": trainer.state.output["loss"] if trainer.state.output else None,
            },
        }

    run.checkpointer = Checkpoint(
        run.to_save, CheckpointSaver(run.output_dir, cfg, class_names, describe), n_saved=t.keep_checkpoints,
        filename_pattern=CHECKPOINT_PATTERN, global_step_transform=lambda engine, _event: engine.state.iteration,
    )
    run.best = Checkpoint(
        run.to_save, CheckpointSaver(run.output_dir, cfg, class_names, describe), n_saved=1, filename_pattern=BEST,
        score_function=lambda _engine: run.last_map, score_name=f"{t.eval_metric}_map",
    )

    @trainer.on(Events.STARTED)
    def _adopt_existing(engine: Engine) -> None:
        # A run resumed in its own folder counts its checkpoints there towards train.keep_checkpoints; later ones
        # (of an abandoned continuation) are left alone.
        if run.is_main:
            names = (_CHECKPOINT_NAME.fullmatch(p.name) for p in run.output_dir.glob("checkpoint_*.pt"))
            found = sorted((int(m.group(1)), m.group(0)) for m in names if m)
            run.checkpointer.load_state_dict({"_saved": [f for f in found if f[0] <= engine.state.iteration]})


def _plot(run: RunState) -> None:
    try:
        from ssdkit.viz import plot_training_curves

        plot_training_curves(read_history(run.history_path), run.output_dir / CURVES)
    except Exception as e:  # noqa: BLE001 - a plotting problem must not lose a finished run
        logger.warning("could not plot the training curves: %s", e)


def _final_report(run: RunState, cfg: Config, loaders: Loaders) -> None:
    """``report/`` and ``val_predictions.jpg`` from the stashed evaluation (gathered from every process)."""
    stash = run.stash
    if stash is None or loaders.val_source is None:
        return
    dets, gts = stash.detections, stash.ground_truths
    if idist.get_world_size() > 1:
        parts = idist.all_gather((dets, gts))
        dets, gts = [d for p in parts for d in p[0]], [g for p in parts for g in p[1]]
    if not run.is_main:
        return
    what = "best.pt" if stash.best else "the final model (best.pt is from before this resumed run)"
    try:
        run.report = write_final_report(run.output_dir, dets, gts, loaders.class_names, cfg.train.eval_metric,
                                        loaders.val_pixel_offset, loaders.val_source)
        logger.info("evaluation report of %s (iteration %d): %s", what, stash.iteration, run.report["paths"]["report"])
    except Exception as e:  # noqa: BLE001 - a report problem must not lose a finished run
        logger.warning("could not write the evaluation report: %s", e)


def attach_handlers(
    trainer: Engine,
    cfg: Config,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    loaders: Loaders,
    evaluator: Engine | None = None,
    scaler: torch.amp.GradScaler | None = None,
    progress: bool = True,
    stop_at_iteration: int | None = None,
    stop: StopRequest | None = None,
    ema_model: nn.Module | None = None,
) -> RunState:
    """Attach schedule, NaN guard, epoch positioning, logging, run files, evaluation, checkpointing and the stop
    on a signal to ``trainer``.

    Args:
        evaluator: from ``create_evaluator(..., keep_detections=True)``, whose detections and ground truths make
            the final report (without ``keep_detections``: no report).
        stop_at_iteration: stop (with a checkpoint) after this iteration as if interrupted, e.g. for
            time-sliced jobs; ``train(resume=...)`` continues from there.
        stop: the :class:`~ssdkit.engine.interrupt.StopRequest` of the run (also given to the training step).
        ema_model: the weight average of :mod:`ssdkit.engine.ema`: saved as the checkpoints' ``model`` (``model``
            as ``train_model``).

    Returns:
        The :class:`RunState` (``to_save`` holds what every checkpoint stores and resume restores).
    """
    t = cfg.train
    out_dir = Path(t.output_dir)
    is_main = idist.get_rank() == 0
    world = idist.get_world_size()
    epoch_length = len(loaders.train_loader)
    run = RunState(out_dir, is_main, total_iterations(cfg, epoch_length), stop=stop)
    run.log = RunLog(out_dir, t.eval_metric, enabled=is_main)
    run.to_save = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "trainer": trainer}
    if ema_model is not None:
        run.to_save.update(model=ema_model, **{TRAIN_MODEL: model})
    if scaler is not None:
        run.to_save["scaler"] = scaler
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    trainer.add_event_handler(Events.STARTED, lambda engine: run.log.restart(engine.state.iteration))
    _attach_checkpoints(trainer, run, cfg, loaders.class_names)

    trainer.add_event_handler(Events.ITERATION_STARTED, scheduler)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan(lambda out: out["loss"]))

    @trainer.on(Events.EPOCH_STARTED)
    def _position_data(engine: Engine) -> None:
        # Epoch e (1-based) reads the order of (seed, e - 1); a resumed partial epoch skips its seen batches.
        epoch0 = engine.state.epoch - 1
        set_loader_position(loaders.train_loader, epoch0, engine.state.iteration - epoch0 * epoch_length)

    if is_main:
        attach_run_files(trainer, run, loaders)  # labels.png, train_batch<k>.jpg (time kept out of img/s)
    attach_logging(trainer, run, t.log_every, loaders.per_process_batch_size)
    attach_data_report(trainer, run, loaders)
    if progress and is_main:
        attach_progress(trainer, run.total)
    tb = tensorboard(trainer, out_dir, t.log_every) if is_main else None

    def evaluate(engine: Engine) -> None:
        if evaluator is None or loaders.val_loader is None:
            return
        t0 = time.perf_counter()
        evaluator.run(loaders.val_loader)
        result = evaluator.state.metrics[t.eval_metric]
        run.last_map = float(result["map"])
        run.evaluated_at = engine.state.iteration
        record = {"iteration": engine.state.iteration, "epoch": engine.state.epoch, "metric": t.eval_metric}
        record.update(_summary_metrics(result))
        run.log.append(record)
        if tb is not None:
            tb.writer.add_scalar(f"val/{t.eval_metric}_map", run.last_map, engine.state.iteration)
        logger.info("epoch %d iteration %d: %s mAP %.4f", engine.state.epoch, engine.state.iteration,
                    t.eval_metric, run.last_map)
        before = list(run.best.state_dict()["_saved"])
        if math.isfinite(run.last_map):
            run.best(engine)  # writes best.pt when the mAP beats the best so far
        improved = list(run.best.state_dict()["_saved"]) != before
        if hasattr(evaluator.state, "ground_truths") and (improved or run.stash is None or not run.stash.best):
            run.stash = EvalStash.of(evaluator, engine.state.iteration, improved)  # for the final report
        spent = time.perf_counter() - t0  # keep evaluation time out of the training throughput
        run.log_t0 += spent
        run.step_t0 += spent

    def checkpoint(engine: Engine) -> None:
        if engine.state.iteration == run.saved_at or run.diverged_at is not None:
            return
        run.saved_at = engine.state.iteration
        run.checkpointer(engine)

    def stop_requested(engine: Engine, agree: bool) -> str | None:
        """The signal to stop on: this process's, or, when distributed, the one every process agreed on (in the
        step's collective, or with one here when ``agree``)."""
        if stop is None:
            return None
        if world == 1:
            return stop.signal
        if agree:
            code = idist.all_reduce(torch.tensor([float(stop.code)], device=idist.device()), op="MAX").item()
        else:
            code = engine.state.output.get("stop", 0) if isinstance(engine.state.output, dict) else 0
        return SIGNALS.get(int(code))

    def stop_on_signal(engine: Engine, agree: bool = False) -> None:
        name = stop_requested(engine, agree)
        if name is not None and run.interrupted is None and engine.state.iteration < run.total:
            run.interrupted = name
            if is_main:
                logger.warning("%s: stopping at iteration %d with a checkpoint", name, engine.state.iteration)
            engine.terminate()

    @trainer.on(Events.EPOCH_COMPLETED)
    def _end_of_epoch(engine: Engine) -> None:
        if t.eval_every and engine.state.epoch % t.eval_every == 0:
            evaluate(engine)
        checkpoint(engine)
        stop_on_signal(engine, agree=True)  # a signal that came during the evaluation

    if t.checkpoint_every:
        def every(_engine: Engine, iteration: int) -> bool:
            # an epoch end or the last iteration is saved there, after its evaluation
            return iteration % t.checkpoint_every == 0 and iteration % epoch_length != 0 and iteration < run.total

        trainer.add_event_handler(Events.ITERATION_COMPLETED(event_filter=every), checkpoint)

    if stop_at_iteration is not None:
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at_iteration), lambda e: e.terminate())
    trainer.add_event_handler(Events.ITERATION_COMPLETED, stop_on_signal)

    @trainer.on(Events.COMPLETED)
    def _end_of_run(engine: Engine) -> None:
        if run.diverged_at is not None:
            return  # keep the last good checkpoint; train() raises with advice
        finished = engine.state.iteration >= run.total
        if finished and run.evaluated_at != engine.state.iteration and t.eval_every:
            evaluate(engine)
        checkpoint(engine)  # also the checkpoint of a run stopped by stop_at_iteration or a signal
        if is_main:
            _plot(run)
        if finished:
            _final_report(run, cfg, loaders)
        if tb is not None:
            tb.close()

    return run
