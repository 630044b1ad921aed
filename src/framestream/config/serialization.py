"""Lossless config <-> JSON/YAML, and typed parsing of values given as text.

The on-disk form is readable: nested configs are mappings with a ``_config`` key
naming their class (``module:QualName``), targets and other classes are
``module:QualName`` strings, dtypes are ``torch.bfloat16``-style strings, tuples
are lists. Loading walks the dataclass type hints, so every value comes back with
its declared type (tuples stay tuples, dtypes stay dtypes).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import torch

from framestream.utils.dtypes import parse_dtype

__all__ = [
    "config_to_dict",
    "config_from_dict",
    "save_config",
    "load_config",
    "coerce_value",
    "class_path",
    "import_class",
]

_CONFIG_KEY = "_config"


def class_path(cls: type) -> str:
    """``module:QualName`` of a class, the form used in config files."""
    return f"{cls.__module__}:{cls.__qualname__}"


def import_class(path: str) -> type:
    """Import ``module:QualName`` (or ``module.QualName``)."""
    if ":" in path:
        module_name, qualname = path.split(":", 1)
    else:
        module_name, _, qualname = path.rpartition(".")
    if not module_name:
        raise ValueError(f"cannot import {path!r}: expected 'module:QualName'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import {path!r}: {err}") from err
    if not isinstance(obj, type):
        raise ValueError(f"{path!r} is not a class")
    return obj


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {_CONFIG_KEY: class_path(type(value))}
        for f in dataclasses.fields(value):
            out[f.name] = _encode(getattr(value, f.name))
        return out
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, type):
        return class_path(value)
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot serialise config value of type {type(value).__name__}: {value!r}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON/YAML-ready mapping of a config (see module doc for the format)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"expected a config dataclass, got {type(config).__name__}")
    return _encode(config)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def coerce_value(value: Any, annotation: Any, where: str = "value") -> Any:
    """Convert ``value`` (decoded JSON/YAML or CLI text) to ``annotation``'s type.

    Raises ``ValueError`` naming ``where`` when the value does not fit.
    """
    if annotation is Any:
        return value
    if _is_union(annotation):
        options = get_args(annotation)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in options:
                return None
        errors = []
        # Config mappings pick the union member named by their _config key.
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce_value(value, option, where)
            except (ValueError, TypeError) as err:
                errors.append(str(err))
        raise ValueError(f"{where}: {value!r} fits none of {annotation}: " + "; ".join(errors))
    origin = get_origin(annotation)
    if annotation is type(None):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        raise ValueError(f"{where}: expected None, got {value!r}")
    if origin is Literal:
        allowed = get_args(annotation)
        for option in allowed:
            if value == option or (isinstance(value, str) and str(option) == value):
                return option
        raise ValueError(f"{where}: {value!r} is not one of {allowed}")
    if annotation is torch.dtype:
        if isinstance(value, torch.dtype):
            return value
        return parse_dtype(value, where=where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{where}: expected a boolean, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected {annotation.__name__}, got a boolean")
        try:
            converted = annotation(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: expected {annotation.__name__}, got {value!r}") from err
        if annotation is int and isinstance(value, float) and converted != value:
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return converted
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    if annotation is Path:
        return Path(value)
    if origin is type or annotation is type:
        if isinstance(value, type):
            return value
        if isinstance(value, str):
            return import_class(value)
        raise ValueError(f"{where}: expected a class path, got {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a sequence, got {value!r}")
        args = get_args(annotation)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
            items = [coerce_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_type = args[0] if args else Any
            items = [coerce_value(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        args = get_args(annotation)
        value_type = args[1] if len(args) == 2 else Any
        return {k: coerce_value(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if isinstance(value, dict):
            return _decode_config(value, annotation, where)
        raise ValueError(f"{where}: expected a {annotation.__name__} mapping, got {value!r}")
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise ValueError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def _decode_config(data: dict[str, Any], expected: type | None, where: str) -> Any:
    data = dict(data)
    named = data.pop(_CONFIG_KEY, None)
    cls = import_class(named) if named else expected
    if cls is None:
        raise ValueError(f"{where}: mapping has no {_CONFIG_KEY!r} key naming its config class")
    if expected is not None and not issubclass(cls, expected):
        raise ValueError(f"{where}: {cls.__name__} is not a {expected.__name__}")
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: {cls.__name__} has no field(s) {unknown}")
    kwargs = {}
    for name, raw in data.items():
        kwargs[name] = coerce_value(raw, hints[name], f"{where}.{name}" if where else name)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any], expected: type | None = None) -> Any:
    """Inverse of :func:`config_to_dict`."""
    return _decode_config(data, expected, "")


def save_config(config: Any, path: str | Path) -> Path:
    """Write a config to ``.json`` or ``.yaml``/``.yml`` (chosen by suffix)."""
    path = Path(path)
    data = config_to_dict(config)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    elif path.suffix == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        raise ValueError(f"config file must end in .json, .yaml or .yml, got {path.name!r}")
    path.write_text(text)
    return path


def load_config(path: str | Path, expected: type | None = None) -> Any:
    """Read a config written by :func:`save_config`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return config_from_dict(data, expected)
