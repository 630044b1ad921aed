"""Config system: setup, derive, printing, file round trip, CLI overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import field

import pytest
import torch

from framestream.config import (
    InstantiateConfig,
    apply_overrides,
    config_dataclass,
    config_from_dict,
    config_to_dict,
    derive_config,
    list_override_paths,
    load_config,
    save_config,
)
from framestream.utils.dtypes import parse_dtype


class Built:
    def __init__(self, config, **kwargs):
        self.config = config
        self.kwargs = kwargs


@config_dataclass
class LeafConfig(InstantiateConfig):
    _target: type = field(default_factory=lambda: Built)
    shift: float = 5.0
    steps: int = 4
    timesteps: tuple[int, ...] = (1000, 750, 500, 250)
    dtype: torch.dtype = torch.float32
    name: str = "leaf"
    enabled: bool = False


@config_dataclass
class OtherLeafConfig(LeafConfig):
    extra: int = 7


@config_dataclass
class RootConfig(InstantiateConfig):
    _target: type = field(default_factory=lambda: Built)
    leaf: LeafConfig = field(default_factory=LeafConfig)
    optional: LeafConfig | None = None
    options: dict[str, int] = field(default_factory=lambda: {"a": 1, "b": 2})
    seed: int | None = None


def test_setup_passes_config_and_runtime_kwargs():
    cfg = LeafConfig(shift=3.0)
    obj = cfg.setup(device="cpu")
    assert isinstance(obj, Built)
    assert obj.config is cfg
    assert obj.kwargs == {"device": "cpu"}


def test_base_config_without_target_refuses_setup():
    with pytest.raises(TypeError, match="no _target"):
        InstantiateConfig().setup()


def test_configs_are_frozen_and_hashable():
    cfg = RootConfig(options={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]
    assert hash(LeafConfig()) == hash(LeafConfig())
    assert LeafConfig(shift=1.0) != LeafConfig()


def test_keyword_only():
    with pytest.raises(TypeError):
        LeafConfig(Built, 3.0)  # type: ignore[misc]


def test_str_is_multiline_and_nested():
    text = str(RootConfig())
    assert text.startswith("RootConfig(")
    assert "leaf=LeafConfig(" in text
    assert "shift=5.0" in text
    assert len(text.splitlines()) > 8


def test_derive_nested_dict_and_dotted_paths():
    base = RootConfig()
    derived = derive_config(base, leaf=dict(shift=3.0), seed=4, **{"leaf.steps": 8, "options.b": 5})
    assert derived.leaf.shift == 3.0 and derived.leaf.steps == 8
    assert derived.seed == 4
    assert derived.options == {"a": 1, "b": 5}
    # The base is untouched, including its dict.
    assert base.leaf.shift == 5.0 and base.seed is None and base.options == {"a": 1, "b": 2}


def test_derive_replaces_whole_subconfig():
    derived = derive_config(RootConfig(), optional=OtherLeafConfig(extra=1))
    assert isinstance(derived.optional, OtherLeafConfig) and derived.optional.extra == 1


@pytest.mark.parametrize(
    "changes, path",
    [
        ({"leaf": {"shiftt": 1.0}}, "leaf.shiftt"),
        ({"nope": 1}, "nope"),
        ({"options": {"c": 1}}, "options.c"),
        ({"leaf.steps.x": 1}, "leaf.steps"),
    ],
)
def test_derive_unknown_path_raises_keyerror_naming_it(changes, path):
    with pytest.raises(KeyError, match=path.replace(".", r"\.")):
        derive_config(RootConfig(), **changes)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_file_round_trip_is_lossless(tmp_path, suffix):
    cfg = RootConfig(
        leaf=LeafConfig(dtype=torch.bfloat16, timesteps=(999, 10), enabled=True),
        optional=OtherLeafConfig(extra=3, dtype=torch.float16),
        seed=11,
    )
    path = save_config(cfg, tmp_path / f"cfg{suffix}")
    loaded = load_config(path)
    assert loaded == cfg
    assert type(loaded.optional) is OtherLeafConfig
    assert isinstance(loaded.leaf.timesteps, tuple)
    assert loaded.leaf.dtype is torch.bfloat16
    assert loaded._target is Built


def test_dict_round_trip_checks_expected_class_and_fields():
    data = config_to_dict(RootConfig())
    assert data["leaf"]["dtype"] == "torch.float32"
    assert config_from_dict(data, RootConfig) == RootConfig()
    with pytest.raises(ValueError, match="is not a LeafConfig"):
        config_from_dict(data, LeafConfig)
    data["leaf"]["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        config_from_dict(data)


def test_save_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=".json"):
        save_config(RootConfig(), tmp_path / "cfg.toml")


def test_cli_overrides_parse_by_field_type():
    cfg = apply_overrides(
        RootConfig(),
        ["--leaf.shift", "3", "--leaf.dtype=bf16", "--leaf.timesteps", "10,20", "--leaf.enabled", "true", "--seed", "5"],
    )
    assert cfg.leaf.shift == 3.0 and isinstance(cfg.leaf.shift, float)
    assert cfg.leaf.dtype is torch.bfloat16
    assert cfg.leaf.timesteps == (10, 20)
    assert cfg.leaf.enabled is True
    assert cfg.seed == 5
    assert apply_overrides(cfg, ["--seed", "none"]).seed is None


@config_dataclass
class InnerConfig(InstantiateConfig):
    tile_size: int = 256


@config_dataclass
class OuterConfig(InstantiateConfig):
    tile_config: InnerConfig = field(default_factory=InnerConfig)


def test_cli_override_dashes_read_as_underscores():
    assert apply_overrides(OuterConfig(), ["--tile-config.tile-size", "128"]).tile_config.tile_size == 128


def test_cli_override_errors_are_clear():
    with pytest.raises(KeyError, match="leaf.nope"):
        apply_overrides(RootConfig(), ["--leaf.nope", "1"])
    with pytest.raises(ValueError, match="leaf.steps"):
        apply_overrides(RootConfig(), ["--leaf.steps", "many"])
    with pytest.raises(ValueError, match="unknown dtype"):
        apply_overrides(RootConfig(), ["--leaf.dtype", "float8"])
    with pytest.raises(ValueError, match="no value"):
        apply_overrides(RootConfig(), ["--seed"])


def test_list_override_paths_walks_nested_fields():
    paths = dict(list_override_paths(RootConfig()))
    assert paths["leaf.shift"] == 5.0
    assert "leaf._target" not in paths


@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("torch.float16", torch.float16), ("FP32", torch.float32)])
def test_parse_dtype(name, dtype):
    assert parse_dtype(name) is dtype


def test_parse_dtype_rejects_unknown_names():
    with pytest.raises(ValueError, match="choose one of"):
        parse_dtype("bfloat17")
