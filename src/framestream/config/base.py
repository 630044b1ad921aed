"""Frozen, typed configs that build the objects they describe.

Every component of framestream is described by a frozen keyword-only dataclass
deriving from :class:`InstantiateConfig`. The config names the class it builds
in ``_target`` and ``config.setup(**runtime_kwargs)`` returns ``_target(config,
**runtime_kwargs)``. Configs are printable, hashable (use tuples, not lists),
and round-trip through JSON/YAML (see :mod:`framestream.config.serialization`).

Subclasses must be declared with ``@dataclass(frozen=True, kw_only=True)``
(``config_dataclass`` is a shorthand for exactly that).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "PrintableConfig",
    "InstantiateConfig",
    "config_dataclass",
    "derive_config",
]

T = TypeVar("T")

config_dataclass = dataclass(frozen=True, kw_only=True)
"""Decorator every config class uses: frozen (hashable, no accidental edits) and keyword-only."""


def _format_value(value: Any, indent: int) -> str:
    pad = "  " * indent
    if isinstance(value, PrintableConfig):
        return value._format(indent)
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, dict) and value:
        inner = "\n".join(f"{pad}  {k!r}: {_format_value(v, indent + 1)}" for k, v in value.items())
        return "{\n" + inner + f"\n{pad}}}"
    return repr(value)


@config_dataclass
class PrintableConfig:
    """Config base class whose ``str()`` is a readable, indented dump of every field."""

    def _format(self, indent: int = 0) -> str:
        pad = "  " * indent
        lines = [f"{type(self).__name__}("]
        for f in dataclasses.fields(self):
            lines.append(f"{pad}  {f.name}={_format_value(getattr(self, f.name), indent + 1)},")
        lines.append(f"{pad})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._format(0)


@config_dataclass
class InstantiateConfig(PrintableConfig):
    """Config carrying the class it builds (``_target``); ``setup()`` instantiates it.

    The target is called as ``_target(self, **kwargs)``: the config first, then any
    runtime-only arguments (a device, an already-built sub-module) that do not belong
    in a serialisable config.
    """

    _target: type = field(default=object, repr=False)
    """Class built by :meth:`setup`; subclasses set it with ``field(default_factory=lambda: Cls)``."""

    def setup(self, **kwargs: Any) -> Any:
        """Instantiate ``_target`` with this config and ``kwargs``."""
        if self._target is object:
            raise TypeError(f"{type(self).__name__} has no _target: it cannot be set up directly")
        return self._target(self, **kwargs)


def _expand_dotted(changes: dict[str, Any]) -> dict[str, Any]:
    """Turn ``{"a.b": 1, "a": {"c": 2}}`` into ``{"a": {"b": 1, "c": 2}}``."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            existing = node.setdefault(part, {})
            if not isinstance(existing, dict):
                raise ValueError(f"conflicting overrides: {key!r} walks into {part!r}, which is also replaced whole")
            node = existing
        leaf = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf].update(value)
        else:
            node[leaf] = value
    return out


def _merge(current: Any, value: Any, path: str) -> Any:
    """New value for one field: walk into configs/dicts, replace anything else."""
    if not isinstance(value, dict):
        return value
    if dataclasses.is_dataclass(current) or isinstance(current, dict):
        return _apply(current, value, path)
    if current is None:
        return value
    # A mapping aimed at a plain leaf (an int, a string...) is a path walking too far.
    first = next(iter(value), "")
    raise KeyError(f"unknown config path {path + '.' + first!r}: {path!r} is a {type(current).__name__}, not a config")


def _apply(base: Any, changes: dict[str, Any], path: str) -> Any:
    if dataclasses.is_dataclass(base) and not isinstance(base, type):
        names = {f.name for f in dataclasses.fields(base)}
        replacements: dict[str, Any] = {}
        for key, value in changes.items():
            here = f"{path}.{key}" if path else key
            if key not in names:
                raise KeyError(f"unknown config path {here!r}: {type(base).__name__} has no field {key!r}")
            replacements[key] = _merge(getattr(base, key), value, here)
        return dataclasses.replace(base, **replacements)
    if isinstance(base, dict):
        merged = dict(base)
        for key, value in changes.items():
            here = f"{path}.{key}" if path else key
            if key not in base:
                raise KeyError(f"unknown config path {here!r}: no key {key!r} in the dict at {path or '<root>'!r}")
            merged[key] = _merge(base[key], value, here)
        return merged
    raise KeyError(f"unknown config path {path!r}: {type(base).__name__} value has no fields to override")


def derive_config(base_config: T, **changes: Any) -> T:
    """Return a copy of ``base_config`` with nested overrides applied.

    A ``dict`` value walks into the dataclass field or dict of that name; any other
    value replaces the field. Dotted keys are accepted too
    (``derive_config(cfg, **{"diffusion_model.scheduler.shift": 3.0})``).
    Raises ``KeyError`` naming the full path of the first unknown field.
    The base config is never modified (configs are frozen; dicts are copied).
    """
    return _apply(base_config, _expand_dotted(changes), "")
