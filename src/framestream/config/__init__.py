"""Typed, frozen configs: build, derive, save/load, and override from the command line."""

from framestream.config.base import InstantiateConfig, PrintableConfig, config_dataclass, derive_config
from framestream.config.overrides import apply_overrides, list_override_paths, parse_override_args
from framestream.config.serialization import (
    class_path,
    coerce_value,
    config_from_dict,
    config_to_dict,
    import_class,
    load_config,
    save_config,
)

__all__ = [
    "InstantiateConfig",
    "PrintableConfig",
    "config_dataclass",
    "derive_config",
    "apply_overrides",
    "list_override_paths",
    "parse_override_args",
    "class_path",
    "coerce_value",
    "config_from_dict",
    "config_to_dict",
    "import_class",
    "load_config",
    "save_config",
]
