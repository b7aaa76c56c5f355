"""Typed configs: model, data, train. YAML load/save and ``key=value`` overrides.

One :class:`ModelConfig` drives the network, the default boxes and the box coder: no architecture
parameter is written in two places. Configs are frozen dataclasses; every value is validated on
construction and errors name the key (``model.box_sizes: expected 7 values (levels + 1), got 6``).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ssdkit.arch import feature_map_sizes as arch_feature_map_sizes
from ssdkit.choices import ARCHS
from ssdkit.errors import ConfigError
from ssdkit.utils import atomic_write_text


def feature_map_sizes(arch: str, input_size: int) -> tuple[int, ...]:
    """Spatial sizes of the prediction feature maps of ``arch`` for a square ``input_size`` input.

    Derived from the network's layer table (:mod:`ssdkit.arch`: ceil-mode pools, stride-2 extras, unpadded 3x3
    tails), so the default boxes always match what the network really produces.
    """
    if arch not in ARCHS:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    sizes = arch_feature_map_sizes(arch, input_size)
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
        return feature_map_sizes(self.arch, self.input_size)

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
        if self.channel_order not in ("rgb", "bgr"):
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


PRESETS = {"ssd300": ssd300_config, "ssd512": ssd512_config, "ssd300_small": small_objects_config}


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is read and augmented."""

    train: str = "shapes"
    val: str = "shapes"
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
    num_workers: int = 0
    strict: bool = False


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
    amp: str = "none"  # none | bf16 | fp16 (CUDA only)
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


@dataclass(frozen=True)
class Config:
    """One run: model + data + train. Saved beside the checkpoints."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the dataclass field's annotated type, or raise naming ``key``."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing) | {"Any": Any})  # annotations are postponed strings
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _build_section(cls: type, values: dict[str, Any], prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{prefix}.{key}: unknown key (known: {', '.join(sorted(known))})")
        kwargs[key] = _coerce(value, hints[key], f"{prefix}.{key}")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(prefix) else f"{prefix}.{msg}") from None


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a validated :class:`Config` from nested dicts (as read from YAML)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping at top level, got {type(data).__name__}")
    unknown = set(data) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown section (expected model, data, train)")
    model_values = dict(data.get("model") or {})
    preset = model_values.pop("preset", None)
    sections = {}
    for name, cls in _SECTIONS.items():
        values = model_values if name == "model" else (data.get(name) or {})
        if name == "model" and preset is not None:
            if preset not in PRESETS:
                raise ConfigError(f"model.preset: unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
            base = dataclasses.asdict(PRESETS[preset]())
            base.update(values)
            values = base
        sections[name] = _build_section(cls, values, name)
    return Config(**sections)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return {name: {k: plain(v) for k, v in dataclasses.asdict(getattr(cfg, name)).items()} for name in _SECTIONS}


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` (or unambiguous ``key=value``) overrides; values are YAML scalars/lists."""
    data = config_to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        if "." in key:
            section, name = key.split(".", 1)
            if section not in data:
                raise ConfigError(f"override {key}: unknown section {section!r} (expected model, data, train)")
        else:
            owners = [s for s in data if key in data[s]]
            if not owners:
                raise ConfigError(f"override {key}: unknown key")
            if len(owners) > 1:
                raise ConfigError(f"override {key}: ambiguous, write {owners[0]}.{key} or {owners[1]}.{key}")
            section, name = owners[0], key
        if name not in data[section]:
            raise ConfigError(f"override {key}: unknown key {section}.{name}")
        data[section][name] = value
    return config_from_dict(data)


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file, validate it, apply ``key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "invalid YAML"
        raise ConfigError(f"{path}: invalid YAML ({first})") from None
    try:
        cfg = config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return apply_overrides(cfg, overrides or [])


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML atomically."""
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def model_config_from_arg(arg: str | None, num_classes: int | None = None) -> ModelConfig:
    """``ssd300`` / ``ssd512`` / ``ssd300_small`` preset name, or a YAML file with a ``model:`` section."""
    arg = arg or "ssd300"
    if arg in PRESETS:
        cfg = PRESETS[arg]()
    else:
        cfg = load_config(arg).model
    if num_classes is not None:
        cfg = replace_model(cfg, num_classes=num_classes)
    return cfg


def replace_model(cfg: ModelConfig, **changes: Any) -> ModelConfig:
    try:
        return replace(cfg, **changes)
    except ConfigError:
        raise
    except TypeError as e:
        raise ConfigError(f"model: {e}") from None
