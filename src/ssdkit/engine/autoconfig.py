"""``ssdkit train --data PATH``: a complete, reproducible run config from a labelled folder, no YAML to write.

What it decides, and says (``notes``):

1. the data: ``PATH`` in any format; its own ``train`` / ``val`` splits when it has them, else the validation set
   given, else a seeded 10% hold-out of the training images (``data.holdout_fraction``);
2. the classes, from the data;
3. the default boxes: the anchor analysis (:func:`ssdkit.analysis.anchor_fit`) of the training objects; when the
   preset's default boxes give fewer than ``COVERAGE_TARGET`` of them a default box at IoU 0.5, its recommended
   ``box_sizes`` / ``steps`` / ``input_size`` are used instead;
4. tiling, when objects are small in large images (:func:`ssdkit.analysis.report.recommend_tile`): the model then
   trains on windows at native scale and validates tiled;
5. the from-scratch recipe (:data:`RECIPE`): BatchNorm trunk, width, AdamW, warmup + cosine, augmentation, with
   the schedule length in epochs of the training set.

The resolved config is written to the run folder as ``config.yaml`` (by :func:`ssdkit.engine.train.train`), so
``ssdkit train runs/x/config.yaml`` repeats the run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ssdkit.config import Config, ModelConfig, apply_overrides, config_from_dict, config_to_dict, model_config_from_arg
from ssdkit.errors import ConfigError, DataError

__all__ = ["RECIPE", "COVERAGE_TARGET", "auto_config", "at_input_size"]

#: Below this share of objects with a default box at IoU >= 0.5, the anchor analysis's default boxes are used.
COVERAGE_TARGET = 0.9
#: The from-scratch recipe for small real datasets (chosen on BCCD and the small-object shapes set: see the README).
RECIPE = {
    "model": {"width_mult": 0.25, "batch_norm": True},
    # the default model (ssd300's layers) runs at this input: small objects grow by 4/3 (BCCD val VOC07 0.869
    # after 20 epochs at 400 px vs 0.782 at 300 px; 1.9x the compute per image)
    "input_size": 400,
    "data": {"augment": True, "zoom_out": 1.0, "crop_min_scale": 0.5, "photometric": True, "num_workers": 1},
    "train": {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 5e-4, "schedule": "cosine", "warmup_iterations": 100,
              "batch_size": 8, "epochs": 40, "eval_every": 10, "keep_checkpoints": 1, "log_every": 20,
              "amp": "bf16", "channels_last": True},
}


def at_input_size(cfg: ModelConfig, input_size: int) -> ModelConfig:
    """``cfg``'s layers at another input size: steps follow the feature-map grid, box sizes scale with the input
    except the smallest, which stays (the larger input is there to make small objects bigger, not to drop the
    box that matches the smallest of them)."""
    if input_size == cfg.input_size:
        return cfg
    from ssdkit.analysis.anchor_fit import with_box_sizes  # the anchor search's steps-from-the-grid, one place

    r = input_size / cfg.input_size
    return with_box_sizes(cfg, input_size, (cfg.box_sizes[0], *(b * r for b in cfg.box_sizes[1:])), cfg.extra_low_level)


def _try_split(data: str, split: str | None, fmt: str | None):
    from ssdkit.data.sources import build_source

    try:
        source = build_source(data, split=split, format=fmt)
    except DataError:
        return None
    return source if len(source) else None


def _is_other_split(val, train) -> bool:  # noqa: ANN001 - sources
    """Whether ``val`` is a split of its own (some readers ignore the split name and give every image)."""
    if val is None:
        return False
    ids = {train.sample(i).image_id for i in range(len(train))}
    return any(val.sample(i).image_id not in ids for i in range(len(val)))


def auto_config(
    data: str | os.PathLike,
    val_data: str | os.PathLike | None = None,
    model: str | None = None,
    epochs: int | None = None,
    batch: int | None = None,
    tile: int | str | None = "auto",
    format: str | None = None,
    overrides: Sequence[str] = (),
    output_dir: str | None = None,
) -> tuple[Config, list[str]]:
    """The run config ``ssdkit train --data`` trains with (module docstring) and what was decided, one line each.

    Args:
        data: the training data (any format ``build_source`` reads, or ``"shapes"``).
        val_data: the validation data; default the data's own ``val`` split, else a 10% hold-out.
        model: ``ssd300`` / ``ssd512`` / ``ssd300_small`` / a config YAML (default ``ssd300``).
        epochs, batch: the schedule (default :data:`RECIPE`'s).
        tile: ``"auto"`` (tile when objects are small in large images), a window side, or None (never tile).
        overrides: ``section.key=value`` applied last.
        output_dir: default ``runs/<data folder name>``.

    Raises:
        DataError: the data cannot be read or has no images; ConfigError: a bad override or value.
    """
    from ssdkit.analysis import anchor_fit
    from ssdkit.analysis.report import recommend_tile
    from ssdkit.data.sources import build_source

    data = str(data)
    notes: list[str] = []
    train_split = "train" if _try_split(data, "train", format) is not None else None
    source = build_source(data, split=train_split, format=format)
    if len(source) == 0:
        raise DataError(f"{data}: no training images")
    names = list(source.class_names)
    notes.append(f"data: {len(source)} training images ({'split ' + repr(train_split) if train_split else 'all'}), "
                 f"{len(names)} classes: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}")
    d = {"train": data, "format": format, "train_split": train_split, "classes": names}
    if val_data is not None:
        d.update(val=str(val_data), val_split=None)
        notes.append(f"validation: {val_data}")
    elif train_split is not None and _is_other_split(_try_split(data, "val", format), source):
        d.update(val=data, val_split="val")
        notes.append("validation: the data's own 'val' split")
    else:
        d.update(val=None, val_split=None, holdout_fraction=0.1, holdout_seed=0)
        notes.append("validation: a seeded 10% hold-out of the training images (data.holdout_fraction=0.1)")

    base = model_config_from_arg(model, len(names) + 1)
    if model is None:
        base = at_input_size(base, RECIPE["input_size"])
        notes.append(f"model: ssd300's layers at input {base.input_size} (the recipe's; --model ssd300 keeps 300)")
    mcfg = {**config_to_dict(Config(model=base))["model"], **RECIPE["model"]}
    samples = [source.sample(i) for i in range(len(source))]
    advice = recommend_tile(samples, base.input_size)
    window = advice["tile"] if tile == "auto" else tile
    if window is not None:
        from ssdkit.data.tiles import TileSpec
        from ssdkit.data.window_source import WindowSource

        view = WindowSource(source, TileSpec(size=int(window)))
        samples = [view.sample(i) for i in range(len(view))]
        d["tile_size"] = int(window)
        notes.append(f"tiling: windows of {window} px ({advice['reason']})" if tile == "auto" else
                     f"tiling: windows of {window} px (asked)")
    fit = anchor_fit(samples, config_from_dict({"model": mcfg}).model)
    if fit["objects"] and fit["coverage"] < COVERAGE_TARGET and fit.get("recommended"):
        rec = fit["recommended"]
        mcfg.update(input_size=rec["input_size"], box_sizes=rec["box_sizes"], steps=rec["steps"],
                    extra_low_level=rec["extra_low_level"], aspect_ratios=rec["aspect_ratios"])
        notes.append(f"default boxes: the preset covers {100 * fit['coverage']:.0f}% of the objects; using the "
                     f"anchor analysis's (coverage {100 * rec['coverage']:.0f}%): input {rec['input_size']}, "
                     f"box_sizes {rec['box_sizes']}{', the stride-4 level' if rec['extra_low_level'] else ''}")
    elif fit["objects"]:
        notes.append(f"default boxes: the preset's cover {100 * fit['coverage']:.0f}% of the objects")

    t = dict(RECIPE["train"])
    if batch is not None:
        t["batch_size"] = batch
    n_epochs = epochs if epochs is not None else t.pop("epochs")
    t.pop("epochs", None)
    if isinstance(n_epochs, bool) or not isinstance(n_epochs, int) or n_epochs < 1:
        raise ConfigError(f"epochs: must be an integer >= 1, got {n_epochs!r}")
    n_train = len(samples) if window is not None else round(len(source) * (1 - d.get("holdout_fraction", 0)))
    per_epoch = max(1, n_train // t["batch_size"])
    t["max_iterations"] = n_epochs * per_epoch
    t["eval_every"] = max(1, min(t["eval_every"], n_epochs))
    t["output_dir"] = output_dir or str(Path("runs") / (Path(data).stem or "data"))
    notes.append(f"schedule: {n_epochs} epochs of {per_epoch} iterations (batch {t['batch_size']}) = "
                 f"{t['max_iterations']} iterations")
    cfg = config_from_dict({"model": mcfg, "data": {**RECIPE["data"], **d}, "train": t})
    return apply_overrides(cfg, list(overrides)), notes
