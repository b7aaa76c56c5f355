"""Config files: YAML load/save, ``key=value`` overrides and the coercion of YAML/CLI values to typed fields.

:func:`config_from_dict` turns nested dicts (as read from YAML, or a checkpoint's ``config`` entry) into a validated
:class:`~ssdkit.config.Config`; every error names the key (``train.lr: expected a number, got 'fast'``). The names
are re-exported by :mod:`ssdkit.config`.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from ssdkit.config import PRESETS, Config, DataConfig, ModelConfig, TrainConfig, replace_model
from ssdkit.errors import ConfigError
from ssdkit.safeio import load_yaml, parse_yaml
from ssdkit.utils import atomic_write_text

__all__ = ["config_from_dict", "config_to_dict", "apply_overrides", "load_config", "save_config",
           "model_config_from_arg"]

_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the dataclass field's annotated type, or raise naming ``key``."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing) | {"Any": Any})  # annotations are postponed strings
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
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
            value = parse_yaml(value, key, ConfigError) if value.strip().startswith("[") else [
                v for v in value.split(",") if v]
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
            value = parse_yaml(raw, f"override {key}", ConfigError) if raw.strip() else None
        except ConfigError:
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
    if not path.is_file() and not path.is_dir():
        raise ConfigError(f"{path}: config file not found")
    data = load_yaml(path, "config file", ConfigError)  # UTF-8, no alias bombs, no duplicate keys
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


