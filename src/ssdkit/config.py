"""Typed configs: model, data, train, each validating itself on construction.

One :class:`ModelConfig` drives the network, the default boxes and the box coder: no architecture
parameter is written in two places. Configs are frozen dataclasses; every value is validated on
construction and errors name the key (``model.box_sizes: expected 7 values (levels + 1), got 6``).
YAML load/save and ``key=value`` overrides live in :mod:`ssdkit.configfile` and are re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from ssdkit.arch import feature_map_sizes as arch_feature_map_sizes
from ssdkit.choices import (
    AMP_MODES,
    ARCHS,
    CHANNEL_ORDERS,
    DATA_FORMAT_CHOICES,
    DEVICES,
    METRICS,
    OPTIMIZERS,
    SCHEDULES,
    TILE_CUTS,
)
from ssdkit.errors import ConfigError

__all__ = [
    "ModelConfig", "DataConfig", "TrainConfig", "Config", "PRESETS", "feature_map_sizes", "ssd300_config",
    "ssd512_config", "small_objects_config", "replace_model", "MAX_SEED",
    # from ssdkit.configfile
    "config_from_dict", "config_to_dict", "apply_overrides", "load_config", "save_config", "model_config_from_arg",
]


def _check(ok: bool, key: str, msg: str) -> None:
    """Raise ``ConfigError("{key}: {msg}")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: {msg}")


def _one_of(value: Any, names: tuple[str, ...], key: str) -> None:
    _check(value in names, key, f"expected one of {', '.join(names)}, got {value!r}")


def feature_map_sizes(arch: str, input_size: int, extra_low_level: bool = False) -> tuple[int, ...]:
    """Spatial sizes of the prediction feature maps of ``arch`` for a square ``input_size`` input (with the
    stride-4 conv3_3 level first when ``extra_low_level``).

    Derived from the network's layer table (:mod:`ssdkit.arch`: ceil-mode pools, stride-2 extras, unpadded 3x3
    tails), so the default boxes always match what the network really produces.
    """
    if arch not in ARCHS:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    sizes = arch_feature_map_sizes(arch, input_size, extra_low_level)
    if min(sizes) < 1:
        raise ConfigError(f"model.input_size: {input_size} is too small for {arch} (feature maps {sizes})")
    return sizes


@dataclass(frozen=True)
class ModelConfig:
    """Architecture, default boxes and input preprocessing of an SSD model.

    ``num_classes`` counts the background class (VOC: 21). ``box_sizes`` has one more entry than
    there are levels: level ``k`` uses ``box_sizes[k]`` and ``sqrt(box_sizes[k] * box_sizes[k+1])``.
    Preprocessing: the network input is ``(pixel / 255 - mean) / std`` in ``channel_order``.
    ``width_mult`` scales every convolution's width (small fast variants); ``batch_norm`` adds BatchNorm after
    each convolution of the trunk and extras (for training from scratch, as DSOD/ScratchDet found).
    """

    arch: str = "ssd300"
    num_classes: int = 21
    input_size: int = 300
    width_mult: float = 1.0
    batch_norm: bool = False
    steps: tuple[float, ...] = (8, 16, 32, 64, 100, 300)
    box_sizes: tuple[float, ...] = (30, 60, 111, 162, 213, 264, 315)
    aspect_ratios: tuple[tuple[float, ...], ...] = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
    variances: tuple[float, float] = (0.1, 0.2)
    clip_default_boxes: bool = False
    clip_default_box_centers: bool = False
    l2norm_scale: float = 20.0
    # a stride-4 prediction level from conv3_3 (own L2Norm), first: for objects under ~16 px at the input
    extra_low_level: bool = False
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: str = "rgb"

    def __post_init__(self) -> None:
        # Normalise YAML lists into tuples so configs compare and hash by value.
        object.__setattr__(self, "steps", tuple(float(s) if not float(s).is_integer() else int(s) for s in self.steps))
        object.__setattr__(
            self, "box_sizes", tuple(float(s) if not float(s).is_integer() else int(s) for s in self.box_sizes)
        )
        object.__setattr__(self, "aspect_ratios", tuple(tuple(a) for a in self.aspect_ratios))
        object.__setattr__(self, "variances", tuple(float(v) for v in self.variances))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        self.validate()

    @property
    def fm_sizes(self) -> tuple[int, ...]:
        return feature_map_sizes(self.arch, self.input_size, self.extra_low_level)

    @property
    def num_levels(self) -> int:
        return len(self.fm_sizes)

    @property
    def num_anchors(self) -> tuple[int, ...]:
        """Default boxes per feature-map location: 2 squares + 2 per aspect ratio."""
        return tuple(2 + 2 * len(ar) for ar in self.aspect_ratios)

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"model.arch: unknown architecture {self.arch!r}; expected one of {', '.join(ARCHS)}")
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ConfigError(f"model.num_classes: must be an integer >= 2 (background + 1), got {self.num_classes!r}")
        if not isinstance(self.input_size, int) or self.input_size < 32:
            raise ConfigError(f"model.input_size: must be an integer >= 32, got {self.input_size!r}")
        if not (0 < self.width_mult <= 4):
            raise ConfigError(f"model.width_mult: must be in (0, 4], got {self.width_mult!r}")
        levels = len(self.fm_sizes)
        if len(self.steps) != levels:
            raise ConfigError(f"model.steps: expected {levels} values (one per level), got {len(self.steps)}")
        if len(self.box_sizes) != levels + 1:
            raise ConfigError(f"model.box_sizes: expected {levels + 1} values (levels + 1), got {len(self.box_sizes)}")
        if len(self.aspect_ratios) != levels:
            raise ConfigError(
                f"model.aspect_ratios: expected {levels} tuples (one per level), got {len(self.aspect_ratios)}"
            )
        if any(s <= 0 for s in self.steps):
            raise ConfigError(f"model.steps: must be positive, got {self.steps}")
        if any(s <= 0 for s in self.box_sizes):
            raise ConfigError(f"model.box_sizes: must be positive, got {self.box_sizes}")
        if any(a <= 0 for ar in self.aspect_ratios for a in ar):
            raise ConfigError(f"model.aspect_ratios: must be positive, got {self.aspect_ratios}")
        if len(self.variances) != 2 or any(v <= 0 for v in self.variances):
            raise ConfigError(f"model.variances: expected two positive values, got {self.variances}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ConfigError(f"model.mean/std: expected 3 values each with std > 0, got {self.mean} / {self.std}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise ConfigError(f"model.channel_order: expected 'rgb' or 'bgr', got {self.channel_order!r}")


def ssd300_config(num_classes: int = 21, **overrides: Any) -> ModelConfig:
    """The SSD300 of the paper / the seed notebook (8732 default boxes)."""
    return ModelConfig(arch="ssd300", num_classes=num_classes, **overrides)


def ssd512_config(num_classes: int = 21, **overrides: Any) -> ModelConfig:
    """SSD512 as in the SSD paper and torchcv (24564 default boxes)."""
    base = dict(
        arch="ssd512",
        input_size=512,
        steps=(8, 16, 32, 64, 128, 256, 512),
        box_sizes=(35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6),
        aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    )
    base.update(overrides)
    return ModelConfig(num_classes=num_classes, **base)


def small_objects_config(num_classes: int = 21, **overrides: Any) -> ModelConfig:
    """SSD300 with the notebook project's shrunk default boxes for small (aerial) objects."""
    return ModelConfig(arch="ssd300", num_classes=num_classes, box_sizes=(3, 6, 11, 16, 21, 26, 31), **overrides)


def tiny_objects_config(num_classes: int = 21, **overrides: Any) -> ModelConfig:
    """SSD300 with the stride-4 conv3_3 level (75 x 75 at 300 px; 4 default boxes per cell of 15 and 21 px) in front
    of SSD300's own six: 31232 default boxes. For objects of ~6-16 px at the input."""
    base = dict(arch="ssd300", extra_low_level=True, steps=(4, 8, 16, 32, 64, 100, 300),
                box_sizes=(15, 30, 60, 111, 162, 213, 264, 315),
                aspect_ratios=((2,), (2,), (2, 3), (2, 3), (2, 3), (2,), (2,)))
    base.update(overrides)
    return ModelConfig(num_classes=num_classes, **base)


PRESETS = {"ssd300": ssd300_config, "ssd512": ssd512_config, "ssd300_small": small_objects_config,
           "ssd300_tiny": tiny_objects_config}


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is read and augmented."""

    train: str = "shapes"
    val: str | None = "shapes"  # None / "": no validation set (or the hold-out below)
    format: str | None = None
    train_split: str | None = "train"
    val_split: str | None = "val"
    classes: tuple[str, ...] | None = None
    shapes_train_count: int = 800
    shapes_val_count: int = 100
    shapes_seed: int = 0
    shapes_image_size: int = 300
    shapes_min_size: float = 8.0  # object size range (longer box side, px), log-uniform
    shapes_max_size: float | None = None  # None = 90% of the image side
    shapes_min_objects: int = 1
    shapes_max_objects: int = 6
    augment: bool = True
    zoom_out: float = 4.0  # the SSD zoom-out's largest canvas (x the image); 1 = no zoom-out (small objects)
    crop_min_scale: float = 0.3  # the min-IoU crop's smallest side (x the canvas); 1 = no crop
    photometric: bool = True
    num_workers: int = 0
    strict: bool = False
    holdout_fraction: float = 0.0  # > 0: validate on this seeded share of the training data (data.val unused)
    holdout_seed: int = 0
    # tiled training: windows of tile_size px at native scale (objects small in large images); null = whole images
    tile_size: int | None = None
    tile_overlap: float = 0.2
    tile_min_visible: float = 0.5  # an object cut by a window edge is kept (clipped) if this share is inside
    tile_cut: str = "drop"  # drop | ignore: what happens to the others
    tile_empty_fraction: float = 0.1  # windows without objects kept, as a share of those with objects

    def __post_init__(self) -> None:
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
        self.validate()

    def validate(self) -> None:
        """Check every value; errors name the key and the bad value (``data.num_workers: must be >= 0, got -1``)."""
        if self.format is not None:
            _one_of(self.format, DATA_FORMAT_CHOICES, "data.format")
        _check(self.num_workers >= 0, "data.num_workers", f"must be >= 0, got {self.num_workers}")
        for key in ("shapes_train_count", "shapes_val_count"):
            _check(getattr(self, key) >= 0, f"data.{key}", f"must be >= 0, got {getattr(self, key)}")
        _check(self.shapes_image_size >= 16, "data.shapes_image_size", f"must be >= 16, got {self.shapes_image_size}")
        _check(self.shapes_min_size > 0, "data.shapes_min_size", f"must be positive, got {self.shapes_min_size}")
        _check(self.shapes_max_size is None or self.shapes_max_size >= self.shapes_min_size, "data.shapes_max_size",
               f"must be >= data.shapes_min_size ({self.shapes_min_size}) or null, got {self.shapes_max_size}")
        _check(self.zoom_out >= 1, "data.zoom_out", f"must be >= 1 (1 = no zoom-out), got {self.zoom_out}")
        _check(0 < self.crop_min_scale <= 1, "data.crop_min_scale", f"must be in (0, 1], got {self.crop_min_scale}")
        _check(0 <= self.holdout_fraction < 1, "data.holdout_fraction",
               f"must be in [0, 1), got {self.holdout_fraction}")
        _check(self.holdout_seed >= 0, "data.holdout_seed", f"must be >= 0, got {self.holdout_seed}")
        _check(self.tile_size is None or self.tile_size >= 16, "data.tile_size",
               f"must be >= 16 px (or null: no tiling), got {self.tile_size}")
        _check(0 <= self.tile_overlap < 1, "data.tile_overlap", f"must be in [0, 1), got {self.tile_overlap}")
        _check(0 < self.tile_min_visible <= 1, "data.tile_min_visible",
               f"must be in (0, 1], got {self.tile_min_visible}")
        _one_of(self.tile_cut, TILE_CUTS, "data.tile_cut")
        _check(self.tile_empty_fraction >= 0, "data.tile_empty_fraction",
               f"must be >= 0, got {self.tile_empty_fraction}")
        _check(0 <= self.shapes_min_objects <= self.shapes_max_objects, "data.shapes_min_objects",
               f"need 0 <= shapes_min_objects <= shapes_max_objects, got {self.shapes_min_objects} / "
               f"{self.shapes_max_objects}")


#: The largest ``train.seed`` (numpy's ``RandomState`` takes 32-bit unsigned seeds).
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation recipe (the SSD paper's by default) and run bookkeeping."""

    batch_size: int = 32
    max_iterations: int | None = None
    epochs: int = 10
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "multistep"  # multistep | cosine | constant
    milestones: tuple[int, ...] = ()  # iterations; empty = 2/3 and 5/6 of the run (the paper's 80k/100k of 120k)
    gamma: float = 0.1
    warmup_iterations: int = 0
    warmup_factor: float = 0.001  # LR multiplier at iteration 0, rising linearly to 1 over warmup_iterations
    grad_clip: float | None = None
    ema_momentum: float = 0.0  # weight EMA for evaluation and best.pt (engine/ema.py); 0 = off, e.g. 0.01
    amp: str = "none"  # none | bf16 (CUDA, or CPUs with AVX512-BF16/AMX) | fp16 (CUDA)
    channels_last: bool = False
    neg_pos_ratio: int = 3
    seed: int = 0
    device: str = "auto"
    output_dir: str = "runs/ssdkit"
    keep_checkpoints: int = 2
    checkpoint_every: int = 0  # iterations; 0 = only at the end of each epoch (and of the run)
    eval_every: int = 1  # epochs
    eval_metric: str = "voc07"
    eval_batch_size: int | None = None  # None = batch_size
    log_every: int = 10
    init_from: str | None = None
    pretrained_vgg: str | None = None
    optimizer: str = "sgd"  # sgd | adamw

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(self.milestones))
        self.validate()

    def validate(self) -> None:
        """Check every value the trainer interprets; errors name the key and the bad value."""
        _one_of(self.schedule, SCHEDULES, "train.schedule")
        _one_of(self.optimizer, OPTIMIZERS, "train.optimizer")
        _one_of(self.amp, AMP_MODES, "train.amp")
        _one_of(self.eval_metric, METRICS, "train.eval_metric")
        _check(self.device in DEVICES or str(self.device).startswith("cuda:"), "train.device",
               f"expected {', '.join(DEVICES)} or cuda:N, got {self.device!r}")
        _check(self.batch_size >= 1, "train.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.eval_batch_size is None or self.eval_batch_size >= 1, "train.eval_batch_size",
               f"must be >= 1, got {self.eval_batch_size}")
        _check(self.max_iterations is None or self.max_iterations >= 1, "train.max_iterations",
               f"must be >= 1 (or null to train for train.epochs), got {self.max_iterations}")
        _check(self.epochs >= 1, "train.epochs", f"must be >= 1, got {self.epochs}")
        _check(self.lr > 0 and math.isfinite(self.lr), "train.lr", f"must be a positive number, got {self.lr}")
        _check(self.momentum >= 0, "train.momentum", f"must be >= 0, got {self.momentum}")
        _check(self.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(list(self.milestones) == sorted(self.milestones) and all(m >= 1 for m in self.milestones),
               "train.milestones", f"must be increasing positive iterations, got {list(self.milestones)}")
        _check(0 < self.gamma <= 1, "train.gamma", f"must be in (0, 1], got {self.gamma}")
        _check(self.warmup_iterations >= 0, "train.warmup_iterations", f"must be >= 0, got {self.warmup_iterations}")
        _check(0 < self.warmup_factor <= 1, "train.warmup_factor", f"must be in (0, 1], got {self.warmup_factor}")
        _check(self.grad_clip is None or self.grad_clip > 0, "train.grad_clip",
               f"must be positive (or null), got {self.grad_clip}")
        _check(isinstance(self.ema_momentum, (int, float)) and 0 <= self.ema_momentum < 1, "train.ema_momentum",
               f"must be in [0, 1) (0 = no weight EMA), got {self.ema_momentum!r}")
        _check(self.neg_pos_ratio >= 0, "train.neg_pos_ratio", f"must be >= 0, got {self.neg_pos_ratio}")
        _check(self.keep_checkpoints >= 1, "train.keep_checkpoints", f"must be >= 1, got {self.keep_checkpoints}")
        _check(self.checkpoint_every >= 0, "train.checkpoint_every",
               f"must be >= 0 (0 = at epoch ends only), got {self.checkpoint_every}")
        _check(self.eval_every >= 0, "train.eval_every", f"must be >= 0 (0 = never evaluate), got {self.eval_every}")
        _check(self.log_every >= 1, "train.log_every", f"must be >= 1, got {self.log_every}")
        # numpy seeds are 32-bit unsigned; each process seeds with seed + rank (wrapped), torch takes any of them
        _check(isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed <= MAX_SEED,
               "train.seed", f"must be an integer in [0, {MAX_SEED}] (what numpy accepts), got {self.seed!r}")
        _check(bool(str(self.output_dir).strip()), "train.output_dir", "must be a folder path, got an empty string")


@dataclass(frozen=True)
class Config:
    """One run: model + data + train. Saved beside the checkpoints."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def replace_model(cfg: ModelConfig, **changes: Any) -> ModelConfig:
    try:
        return replace(cfg, **changes)
    except ConfigError:
        raise
    except TypeError as e:
        raise ConfigError(f"model: {e}") from None


# YAML load/save and overrides: a sibling module (it needs the classes above), re-exported for the many importers.
from ssdkit.configfile import (  # noqa: E402
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    model_config_from_arg,
    save_config,
)
