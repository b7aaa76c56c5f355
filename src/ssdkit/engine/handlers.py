"""The trainer's ignite handlers: LR schedule, NaN guard, data position, history and progress bar, evaluation,
checkpoints (two ignite ``Checkpoint``: the last ``train.keep_checkpoints`` and ``best.pt`` by validation mAP, both
written by :class:`CheckpointSaver` in ssdkit's format), TensorBoard when installed, and the curves plot.

Events: ITERATION_STARTED: LR. ITERATION_COMPLETED: NaN guard, throughput, ``history.jsonl`` every
``train.log_every``, bar, TensorBoard, checkpoint every ``train.checkpoint_every`` (an epoch end or the last
iteration waits for its evaluation), stop at ``stop_at_iteration``. EPOCH_COMPLETED: evaluation every
``train.eval_every`` epochs (then ``best.pt`` if best), checkpoint. COMPLETED: the last evaluation (a run ending
mid-epoch), checkpoint, ``curves.png``. Only rank 0 writes files; every process keeps the same bookkeeping.
"""

from __future__ import annotations

import contextlib
import json
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
from ssdkit.engine.optim import total_iterations
from ssdkit.engine.resume import rng_state
from ssdkit.utils import atomic_write_text

__all__ = ["HISTORY", "BEST", "CURVES", "CHECKPOINT_PATTERN", "CheckpointSaver", "RunState", "attach_handlers",
           "read_history", "truncate_history"]

logger = logging.getLogger("ssdkit.train")

HISTORY = "history.jsonl"
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

    @property
    def history_path(self) -> Path:
        return self.output_dir / HISTORY

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


def _append_history(run: RunState, record: dict) -> None:
    if not run.is_main:
        return
    with open(run.history_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, allow_nan=True) + "\n")


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


def _attach_logging(trainer: Engine, run: RunState, log_every: int, images_per_iteration: int) -> None:
    """Throughput (``state.metrics["img/s"]``, for the bar) and a ``history.jsonl`` record every ``log_every``
    iterations: mean loss parts over the window, LR, images per second."""

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
        now = time.perf_counter()
        # progress bar: smoothed throughput of the last iterations (data loading included)
        rate = images_per_iteration / max(now - run.step_t0, 1e-9)
        prev = engine.state.metrics.get("img/s", float("nan"))
        engine.state.metrics["img/s"] = rate if not math.isfinite(prev) else 0.9 * prev + 0.1 * rate
        run.step_t0 = now
        run.log_window.append(out)
        if engine.state.iteration % log_every == 0:
            n = len(run.log_window)
            record = {"iteration": engine.state.iteration, "epoch": engine.state.epoch}
            for k in ("loss", "loc_loss", "cls_loss"):
                record[k] = sum(o[k] for o in run.log_window) / n
            record["lr"] = out["lr"]
            record["img_per_s"] = n * images_per_iteration / max(now - run.log_t0, 1e-9)
            _append_history(run, record)
            run.log_window = []
            run.log_t0 = now


def _attach_progress(trainer: Engine, total: int) -> None:
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


def _tensorboard(trainer: Engine, out_dir: Path, log_every: int):
    """ignite's ``TensorboardLogger`` of the step outputs in ``out_dir/tb``, or None when tensorboard is missing."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return None
    from ignite.handlers.tensorboard_logger import OutputHandler, TensorboardLogger

    tb = TensorboardLogger(log_dir=str(out_dir / "tb"))
    tb.attach(trainer, OutputHandler("train", output_transform=lambda out: out),
              event_name=Events.ITERATION_COMPLETED(every=log_every))
    return tb


def _plot(run: RunState) -> None:
    try:
        from ssdkit.viz import plot_training_curves

        plot_training_curves(read_history(run.history_path), run.output_dir / CURVES)
    except Exception as e:  # noqa: BLE001 - a plotting problem must not lose a finished run
        logger.warning("could not plot the training curves: %s", e)


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
) -> RunState:
    """Attach schedule, NaN guard, epoch positioning, logging, evaluation and checkpointing to ``trainer``.

    Args:
        stop_at_iteration: stop (with a checkpoint) after this iteration as if interrupted, e.g. for
            time-sliced jobs; ``train(resume=...)`` continues from there.

    Returns:
        The :class:`RunState` (``to_save`` holds what every checkpoint stores and resume restores).
    """
    t = cfg.train
    out_dir = Path(t.output_dir)
    is_main = idist.get_rank() == 0
    epoch_length = len(loaders.train_loader)
    run = RunState(out_dir, is_main, total_iterations(cfg, epoch_length))
    run.to_save = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "trainer": trainer}
    if scaler is not None:
        run.to_save["scaler"] = scaler
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    _attach_checkpoints(trainer, run, cfg, loaders.class_names)

    trainer.add_event_handler(Events.ITERATION_STARTED, scheduler)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan(lambda out: out["loss"]))

    @trainer.on(Events.EPOCH_STARTED)
    def _position_data(engine: Engine) -> None:
        # Epoch e (1-based) reads the order of (seed, e - 1); a resumed partial epoch skips its seen batches.
        epoch0 = engine.state.epoch - 1
        set_loader_position(loaders.train_loader, epoch0, engine.state.iteration - epoch0 * epoch_length)

    _attach_logging(trainer, run, t.log_every, loaders.per_process_batch_size * idist.get_world_size())
    if progress and is_main:
        _attach_progress(trainer, run.total)
    tb = _tensorboard(trainer, out_dir, t.log_every) if is_main else None

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
        _append_history(run, record)
        if tb is not None:
            tb.writer.add_scalar(f"val/{t.eval_metric}_map", run.last_map, engine.state.iteration)
        logger.info("epoch %d iteration %d: %s mAP %.4f", engine.state.epoch, engine.state.iteration,
                    t.eval_metric, run.last_map)
        if math.isfinite(run.last_map):
            run.best(engine)  # writes best.pt when the mAP beats the best so far
        spent = time.perf_counter() - t0  # keep evaluation time out of the training throughput
        run.log_t0 += spent
        run.step_t0 += spent

    def checkpoint(engine: Engine) -> None:
        if engine.state.iteration == run.saved_at or run.diverged_at is not None:
            return
        run.saved_at = engine.state.iteration
        run.checkpointer(engine)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _end_of_epoch(engine: Engine) -> None:
        if t.eval_every and engine.state.epoch % t.eval_every == 0:
            evaluate(engine)
        checkpoint(engine)

    if t.checkpoint_every:
        def every(_engine: Engine, iteration: int) -> bool:
            # an epoch end or the last iteration is saved there, after its evaluation
            return iteration % t.checkpoint_every == 0 and iteration % epoch_length != 0 and iteration < run.total

        trainer.add_event_handler(Events.ITERATION_COMPLETED(event_filter=every), checkpoint)

    if stop_at_iteration is not None:
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at_iteration), lambda e: e.terminate())

    @trainer.on(Events.COMPLETED)
    def _end_of_run(engine: Engine) -> None:
        if run.diverged_at is not None:
            return  # keep the last good checkpoint; train() raises with advice
        if engine.state.iteration >= run.total and run.evaluated_at != engine.state.iteration and t.eval_every:
            evaluate(engine)
        checkpoint(engine)
        if is_main:
            _plot(run)
        if tb is not None:
            tb.close()

    return run
