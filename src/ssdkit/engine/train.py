"""The trainer: ``train(cfg)`` assembles a pytorch-ignite run from the ``engine`` modules.

Where each part lives::

    engine/optim.py     parameter groups, optimizer, LR factor and schedule
    engine/step.py      the training step as a function of a batch, and the Engine running it
    engine/ema.py       weight EMA (train.ema_momentum) through ignite's EMAHandler
    engine/handlers.py  ignite handlers: checkpoints (ignite Checkpoint, best.pt by mAP), evaluation, stop on a
                        signal, the end of a run
    engine/monitor.py   history records, skipped images and steps, the epoch's data line, progress bar, TensorBoard
    engine/runfiles.py  history.jsonl, results.csv, labels.png, train_batch<k>.jpg, val_predictions.jpg, report/
    engine/rundir.py    the run folder (a new numbered one instead of another run's), writable, stale temp files
    engine/interrupt.py SIGINT / SIGTERM: checkpoint, then TrainingInterrupted
    engine/resume.py    RNG states, resume checks (what may change and what may not), loading the training state
    engine/launch.py    one process / ``nproc`` spawned / torchrun, through ``ignite.distributed``

The same code runs in one process or under ``ignite.distributed`` (``train(cfg, nproc=N)`` spawns N processes;
``torchrun --nproc_per_node N -m ssdkit train ...`` is detected from the environment). Only rank 0 writes files.

Resuming (``train(cfg, resume=PATH)``) restores model, optimizer, LR scheduler, trainer state (iteration, epoch),
GradScaler and RNG states; the data order is a function of ``(seed, epoch)`` and a partial epoch continues at
the next unseen batch, so an interrupted and resumed run matches an uninterrupted one.

Errors of a run (divergence, an interrupt) are raised by :func:`train` in the caller's process from the summary
the run wrote, so a spawned run reports them as one line too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.utils import manual_seed
from torch import nn

from ssdkit.checkpoint import init_from_checkpoint
from ssdkit.config import Config, save_config
from ssdkit.engine.data import build_loaders
from ssdkit.engine.ema import attach_ema
from ssdkit.engine.evaluate import create_evaluator
from ssdkit.engine.handlers import BEST, CURVES, attach_handlers
from ssdkit.engine.interrupt import StopRequest, TrainingInterrupted
from ssdkit.engine.launch import device_for, launch, replicas_in_sync, setup_logging
from ssdkit.engine.optim import create_optimizer, create_scheduler, lr_factor, total_iterations
from ssdkit.engine.resume import load_training_state, seed_process
from ssdkit.engine.rundir import prepare_output_dir, remove_stale_temp_files
from ssdkit.engine.runfiles import BATCH_FILES, LABELS, RESULTS
from ssdkit.engine.step import create_train_step, create_trainer
from ssdkit.errors import CheckpointError, ConfigError, SSDKitError
from ssdkit.models import build_model, load_vgg16_weights
from ssdkit.runtime import amp_dtype, amp_fallback
from ssdkit.utils import atomic_write_text

__all__ = [
    "TrainingDivergedError",
    "TrainingInterrupted",
    "lr_factor",
    "init_from_checkpoint",
    "create_model_and_optimizer",
    "create_optimizer",
    "create_scheduler",
    "create_train_step",
    "create_trainer",
    "create_evaluator",
    "attach_handlers",
    "train",
]

logger = logging.getLogger("ssdkit.train")

SUMMARY = "summary.json"


class TrainingDivergedError(SSDKitError):
    """The loss became NaN/Inf; the message says at which iteration and what to try."""


def create_model_and_optimizer(
    cfg: Config, device: str | torch.device | None = None, weights: bool = True
) -> tuple[nn.Module, torch.optim.Optimizer, dict]:
    """The model (VGG ImageNet trunk or ``train.init_from`` applied, on ``device``, DDP-wrapped when distributed)
    and its optimizer (:func:`ssdkit.engine.optim.create_optimizer`). ``weights=False`` skips
    ``train.pretrained_vgg`` / ``train.init_from`` (a resumed run's weights come from its checkpoint).

    Returns:
        ``(model, optimizer, init_report)``; ``init_report`` says what was loaded/initialised (empty if nothing).
    """
    t = cfg.train
    device = torch.device(device) if device is not None else device_for(cfg)
    model = build_model(cfg.model)
    report: dict[str, Any] = {}
    if t.pretrained_vgg and weights:
        report["pretrained_vgg"] = load_vgg16_weights(model.extractor, t.pretrained_vgg)
        logger.info("loaded ImageNet VGG16 weights from %s (%d layers)", t.pretrained_vgg,
                    len(report["pretrained_vgg"]))
    if t.init_from and weights:
        report.update(init_from_checkpoint(model, t.init_from))
        fresh = sorted({n.split(".")[0] for n in report["initialised"]})
        logger.info("initialised from %s: %d tensors loaded, %d freshly initialised%s", t.init_from,
                    len(report["loaded"]), len(report["initialised"]), f" ({', '.join(fresh)})" if fresh else "")
    model.to(device)
    if t.channels_last:  # faster on CUDA, and measured 3-4x (fp32) / ~10x (bf16) faster on an AMX Xeon CPU
        model.to(memory_format=torch.channels_last)
    if idist.get_world_size() > 1:
        # DDP (params broadcast from rank 0). In one process the model stays unwrapped: auto_model would
        # also wrap it in DataParallel when several GPUs are visible, which this trainer does not want.
        model = idist.auto_model(model)
    return model, create_optimizer(cfg, model), report


def _nan_message(cfg: Config, iteration: int, epoch: int) -> str:
    t = cfg.train
    return (
        f"training diverged: the loss became NaN/Inf at iteration {iteration} (epoch {epoch}); the run stopped "
        f"and the last good checkpoint is kept. Try a lower train.lr (now {t.lr:g}), a longer warmup "
        f"(train.warmup_iterations, now {t.warmup_iterations}), gradient clipping (train.grad_clip, now "
        f"{t.grad_clip}), and check the data with `ssdkit check-data --data {cfg.data.train}`"
    )


def _outcome_message(summary: dict, cfg: Config) -> str:
    ck = summary.get("last_checkpoint")
    where = f"; checkpoint {ck}, continue with train(resume=...) / `ssdkit train ... --resume {ck}`" if ck else \
        "; no checkpoint was written yet"
    return (f"training interrupted by {summary['interrupted']} at iteration {summary['iteration']} of "
            f"{summary['total_iterations']} (epoch {summary['epoch']}){where}")


def _raise_for(summary: dict, cfg: Config) -> dict:
    """Raise what the run's summary says went wrong (in the caller's process, also for spawned runs)."""
    if summary.get("diverged_at") is not None:
        raise TrainingDivergedError(_nan_message(cfg, summary["diverged_at"], summary["epoch"]))
    if summary.get("interrupted") and not summary.get("finished"):
        raise TrainingInterrupted(_outcome_message(summary, cfg), summary["interrupted"],
                                  summary.get("last_checkpoint"), summary)
    return summary


def _exists(path: Path) -> str | None:
    return str(path) if path.exists() else None


def _shared_output_dir(cfg: Config, exist_ok: bool, resume: str | None) -> str:
    """The output folder rank 0 chooses, told to every process (its error, if any, raised in every process)."""
    out = ""
    if idist.get_rank() == 0:
        try:
            out = str(prepare_output_dir(cfg.train.output_dir, exist_ok=exist_ok, resume=resume))
        except ConfigError as e:
            out = "\0" + str(e)
    out = idist.broadcast(out, src=0)
    if out.startswith("\0"):
        raise ConfigError(out[1:])
    return out


def _training(local_rank: int, cfg: Config, resume: str | None, progress: bool,
              stop_at_iteration: int | None, exist_ok: bool | None) -> dict:
    """Everything one process does (``idist.Parallel`` calls this in each process). ``exist_ok`` None: the
    output folder was chosen by the caller; else rank 0 chooses it here (a ``torchrun`` world)."""
    setup_logging()  # spawned processes start without the caller's logging
    rank, world = idist.get_rank(), idist.get_world_size()
    if rank != 0:
        logging.getLogger("ssdkit").setLevel(logging.WARNING)
    if exist_ok is not None:
        cfg = replace(cfg, train=replace(cfg.train, output_dir=_shared_output_dir(cfg, exist_ok, resume)))
    device = device_for(cfg)
    out_dir = Path(cfg.train.output_dir)
    manual_seed(cfg.train.seed)  # same initial weights everywhere (DDP also broadcasts rank 0's)

    loaders = build_loaders(cfg)
    if cfg.model.batch_norm and loaders.per_process_batch_size < 2:
        raise ConfigError(
            f"train.batch_size: {cfg.train.batch_size} gives {loaders.per_process_batch_size} image per process; "
            "model.batch_norm needs at least 2 (BatchNorm of the 1x1 last feature map)"
        )
    if rank == 0:
        remove_stale_temp_files(out_dir)
        problems = loaders.train_source.scan()
        if problems:
            logger.warning("%d box(es) of the training data were clipped or dropped (first: %s); "
                           "`ssdkit check-data` lists them all", len(problems), problems[0])
    model, optimizer, init_report = create_model_and_optimizer(cfg, device, weights=resume is None)
    epoch_length = len(loaders.train_loader)
    total = total_iterations(cfg, epoch_length)
    scheduler = create_scheduler(cfg, optimizer, total)
    use_amp = amp_dtype(cfg.train.amp, device) is not None
    if note := amp_fallback(cfg.train.amp, device):
        logger.warning("train.%s", note)
    scaler = torch.amp.GradScaler("cuda") if use_amp and cfg.train.amp == "fp16" else None
    stop = StopRequest(announce=rank == 0)
    trainer = create_trainer(cfg, model, optimizer, device, scaler, stop)
    # weight EMA: the average is what is evaluated and saved as the checkpoints' model
    ema_model = attach_ema(trainer, model, cfg.train.ema_momentum).ema_model if cfg.train.ema_momentum else None
    evaluator = None
    if loaders.val_loader is not None and cfg.train.eval_every:
        evaluator = create_evaluator(
            model if ema_model is None else ema_model, cfg, loaders.class_names, cfg.train.eval_metric, device,
            pixel_offset=loaders.val_pixel_offset,
            amp=cfg.train.amp, channels_last=cfg.train.channels_last, keep_detections=True,  # the final report
            tile=loaders.tile, batch_size=cfg.train.eval_batch_size or cfg.train.batch_size,
        )
    run = attach_handlers(trainer, cfg, model=model, optimizer=optimizer, scheduler=scheduler, loaders=loaders,
                          evaluator=evaluator, scaler=scaler, progress=progress, stop_at_iteration=stop_at_iteration,
                          stop=stop, ema_model=ema_model)
    if rank == 0:
        save_config(cfg, out_dir / "config.yaml")
    checkpoint = None
    if resume:
        checkpoint = load_training_state(resume, run.to_save, cfg, epoch_length, run.total, loaders.class_names)
        run.resumed(checkpoint)
        logger.info("resumed from %s at iteration %d (epoch %d), lr %.3g", resume, trainer.state.iteration,
                    trainer.state.epoch, optimizer.param_groups[0]["lr"])
    seed_process(cfg, rank, checkpoint)  # the saved RNG states when resuming, so the run continues them
    if rank == 0:
        logger.info("training %s for %d iterations (%d per epoch, batch %d on %d process(es)) on %s; files in %s",
                    cfg.model.arch, total, epoch_length, cfg.train.batch_size, world, device, out_dir)

    with stop:  # SIGINT / SIGTERM: stop after the step with a checkpoint
        if trainer.state.iteration < total:
            trainer.run(loaders.train_loader, max_iters=total)
    state = trainer.state
    diverged = run.diverged_at is not None
    best_path = out_dir / BEST
    report = run.report or {}
    summary = {
        "iteration": state.iteration,
        "epoch": state.epoch,
        "total_iterations": total,
        "finished": state.iteration >= total and not diverged,
        "best_map": run.best_map,
        "last_map": run.last_map,
        "eval_metric": cfg.train.eval_metric,
        "last_checkpoint": run.last_checkpoint,
        "best_checkpoint": str(best_path) if run.best_map is not None and best_path.is_file() else None,
        "history": str(run.history_path),
        "results": _exists(out_dir / RESULTS),
        "curves": _exists(out_dir / CURVES),
        "labels": _exists(out_dir / LABELS),
        "train_batches": [str(out_dir / n) for n in BATCH_FILES if (out_dir / n).is_file()],
        "report": report.get("paths", {}).get("report"),
        "val_predictions": report.get("val_predictions"),
        "output_dir": str(out_dir),
        "world_size": world,
        "lr": float(optimizer.param_groups[0]["lr"]),
        "loss": state.output["loss"] if state.output else None,
        "init": {k: len(v) for k, v in init_report.items()},
        "data": {"train_images": len(loaders.train_source), "images_skipped": run.skipped["images"],
                 "steps_skipped": run.skipped["steps"], **run.data_problems},
        "resume_changes": {k: list(v) for k, v in (checkpoint or {}).get("resume_changes", {}).items()},
        "diverged_at": run.diverged_at,
        "interrupted": run.interrupted,
    }
    if world > 1:
        summary["replicas_in_sync"] = replicas_in_sync(model)
    if rank == 0:
        atomic_write_text(out_dir / SUMMARY, json.dumps(summary, indent=2, allow_nan=True))
    return summary


def train(
    cfg: Config,
    resume: str | None = None,
    progress: bool = True,
    nproc: int | None = None,
    *,
    exist_ok: bool = False,
    stop_at_iteration: int | None = None,
) -> dict:
    """Train an SSD as ``cfg`` says; files go to ``cfg.train.output_dir`` or, when it holds another run's files,
    to the first free ``<output_dir>2``, ``<output_dir>3``, ... (the summary's ``output_dir`` says which).

    Args:
        cfg: the run config (see ``configs/*.yaml``; validated when it was built).
        resume: a checkpoint of this run to continue from (same iteration, LR, data position and RNG state).
            Settings changed since are applied (and logged) or refused with the reason
            (:func:`ssdkit.engine.resume.load_training_state`); a ``train.output_dir`` that is the checkpoint's
            own folder is continued.
        progress: show a progress bar (loss parts, lr, img/s).
        nproc: processes on this machine (``torch.distributed`` through ``ignite.distributed``: gloo on CPU,
            nccl on CUDA). Under ``torchrun`` leave it unset: the world comes from the environment.
        exist_ok: write into ``train.output_dir`` even when it holds files (same-named files are replaced, the
            history restarts; checkpoints of other iterations are never deleted).
        stop_at_iteration: stop after this iteration with a checkpoint, as if interrupted.

    Returns:
        Summary dict: ``best_map``, ``last_map``, ``last_checkpoint``, ``best_checkpoint``, ``output_dir``,
        ``history`` (``history.jsonl``: one JSON object per log step and per evaluation), ``results`` (the same
        as CSV), ``curves``, ``labels``, ``train_batches``, ``report``, ``val_predictions`` (paths), ``data``
        (training images, images skipped as unreadable, steps skipped, boxes clipped / dropped, reader problems),
        ``iteration``, ``epoch``, ``lr``, ``world_size``, ``finished``, ``resume_changes``, ...

    Output folder (:mod:`ssdkit.engine.runfiles`): ``config.yaml``, ``checkpoint_<iteration>.pt`` (the last
    ``train.keep_checkpoints``), ``best.pt`` (best validation mAP), ``history.jsonl``, ``results.csv``,
    ``curves.png``, ``labels.png``, ``train_batch0-2.jpg``, ``val_predictions.jpg``, ``report/``,
    ``summary.json``, ``tb/`` (TensorBoard, when installed).

    Raises:
        ConfigError: a config value does not fit the data, the launch or the file system (the message names the
            key, e.g. ``train.output_dir`` when it is a file or not writable).
        TrainingDivergedError: the loss became NaN/Inf (the message says what to try).
        TrainingInterrupted: SIGINT / SIGTERM stopped the run after a checkpoint (``exit_status`` 130 / 143).
        DataError, CheckpointError: unreadable data or checkpoint, or a checkpoint this config cannot resume.
    """
    setup_logging()
    if resume is not None and not Path(resume).is_file():
        raise CheckpointError(f"{resume}: checkpoint not found")
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not nproc
    if not torchrun:  # chosen here, once; a torchrun world chooses on its rank 0
        out = prepare_output_dir(cfg.train.output_dir, exist_ok=exist_ok, resume=resume)
        cfg = replace(cfg, train=replace(cfg.train, output_dir=str(out)))
    # spawned processes: this parent passes SIGINT / SIGTERM on to them (each stops with its checkpoint)
    parent = StopRequest(forward=True, announce=False) if nproc and nproc > 1 else contextlib.nullcontext()
    with parent:
        summary = launch(_training, cfg, resume, progress, stop_at_iteration, exist_ok if torchrun else None,
                         nproc=nproc, summary=Path(cfg.train.output_dir) / SUMMARY)
    if not summary and getattr(parent, "signal", None):
        raise TrainingInterrupted(f"training interrupted by {parent.signal} before its processes wrote a summary",
                                  parent.signal)
    return _raise_for(summary, cfg)
