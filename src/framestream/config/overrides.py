"""Command-line overrides of any nested config field.

``apply_overrides(config, ["--diffusion-model.scheduler.shift", "3.0"])`` walks
the dotted path (dashes read as underscores), parses the text with the field's
declared type and returns a new config. Unknown paths raise ``KeyError``; values
that do not parse raise ``ValueError`` naming the path.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from framestream.config.base import derive_config
from framestream.config.serialization import coerce_value

__all__ = ["apply_overrides", "parse_override_args", "list_override_paths"]


def parse_override_args(args: list[str]) -> dict[str, str]:
    """``["--a.b", "1", "--c=2"]`` -> ``{"a.b": "1", "c": "2"}`` (dashes become underscores)."""
    pairs: dict[str, str] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            raise ValueError(f"expected an override like --path.to.field VALUE, got {token!r}")
        key = token[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ValueError(f"override {token!r} has no value")
            value = args[i + 1]
            i += 2
        pairs[key.replace("-", "_")] = value
    return pairs


def _field_annotation(config: Any, path: str) -> Any:
    node = config
    annotation: Any = type(config)
    walked = []
    for part in path.split("."):
        walked.append(part)
        if not (dataclasses.is_dataclass(node) and not isinstance(node, type)):
            raise KeyError(f"unknown config path {'.'.join(walked)!r}: {type(node).__name__} has no fields")
        hints = typing.get_type_hints(type(node))
        if part not in {f.name for f in dataclasses.fields(node)}:
            raise KeyError(f"unknown config path {'.'.join(walked)!r}: {type(node).__name__} has no field {part!r}")
        annotation = hints[part]
        node = getattr(node, part)
    return annotation


def apply_overrides(config: Any, overrides: list[str] | dict[str, str]) -> Any:
    """Return ``config`` with textual overrides parsed by field type and applied."""
    pairs = parse_override_args(overrides) if isinstance(overrides, list) else overrides
    changes: dict[str, Any] = {}
    for path, text in pairs.items():
        annotation = _field_annotation(config, path)
        changes[path] = coerce_value(text, annotation, path)
    return derive_config(config, **changes) if changes else config


def list_override_paths(config: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every overridable leaf as ``(dotted.path, current value)``, for ``--help`` listings."""
    out: list[tuple[str, Any]] = []
    for f in dataclasses.fields(config):
        if f.name.startswith("_"):
            continue
        value = getattr(config, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.extend(list_override_paths(value, path + "."))
        else:
            out.append((path, value))
    return out
