"""Wan VAE checkpoints: key maps (original Wan <-> diffusers), detection, strict loading.

Two layouts exist for the same weights:

* **original** -- what Wan-Video/Wan2.1 (``wan/modules/vae.py``) and Wan2.2
  (``wan/modules/vae2_2.py``) save, e.g. ``Wan2.1_VAE.pth`` / ``Wan2.2_VAE.pth``:
  ``conv1``/``conv2`` for the quant convs, ``{en,de}coder.conv1``, ``.middle.{0,1,2}``,
  ``.head.{0,2}``, resnets as ``residual.{0,2,3,6}`` + ``shortcut``, and the down/up
  paths as flat ``nn.Sequential`` lists (2.1) or nested ones
  (2.2: ``encoder.downsamples.X.downsamples.Y``, ``decoder.upsamples.X.upsamples.Y``);
* **diffusers** -- ``AutoencoderKLWan`` (and framestream's ``WanVAE``, which has the
  same state-dict keys and shapes): ``quant_conv``, ``conv_in``, ``mid_block``,
  ``norm_out``/``conv_out``, ``down_blocks``/``up_blocks`` with ``resnets``,
  ``upsamplers.0`` (2.1) or ``downsampler``/``upsampler`` (2.2).

Only names differ: every tensor has the same shape in both layouts (checked against
both sources: the RMS-norm ``gamma`` is ``(C, 1, 1, 1)`` in resnets and heads and
``(C, 1, 1)`` in the attention block on both sides; the attention ``to_qkv``/``proj``
are 1x1 ``Conv2d`` on both sides), so no tensor is reshaped. The parameter-free
``AvgDown3D``/``DupUp3D`` shortcuts of Wan 2.2 have no keys in either layout.

The flat 2.1 decoder list and the nested 2.2 lists put the resample layer after the
resnets of a stage, so mapping those indices needs ``num_res_blocks`` (2 in every
published Wan VAE).

Loading (:func:`load_wan_vae`) reads the file once (``.pth`` always with
``weights_only=True``), renames the keys, builds the model on the meta device, checks
keys and shapes strictly (one :class:`~framestream.utils.state_dict.CheckpointMismatchError`
listing everything), then hands the checkpoint tensors to the module with
``assign=True`` so the weights are allocated once.

dtype: every floating tensor, the RMS-norm ``gamma`` included, is cast to the
requested ``dtype``; nothing is kept in float32. Keeping ``gamma`` in float32 buys no
accuracy: the norm already normalises in float32 for half inputs, and framestream's
``RMSNorm`` casts ``gamma`` to the activation dtype before the multiply (in diffusers'
norm a float32 ``gamma`` would instead promote the activations to float32 and break
the half-precision convs after it). It would only cost a cast per call.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections import Counter
from collections.abc import Mapping

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from framestream.utils.dtypes import parse_dtype
from framestream.utils.state_dict import (
    CheckpointMismatchError,
    check_state_dict,
    load_state_dict_strict,
    read_state_dict,
    remap_keys,
)

if TYPE_CHECKING:
    from framestream.models.wan.vae.config import WanVAEArchConfig
    from framestream.models.wan.vae.model import WanVAE

__all__ = [
    "ORIGINAL_FILE_NAMES",
    "WanVAECheckpointInfo",
    "WanVAECheckpointError",
    "original_to_diffusers_key",
    "diffusers_to_original_key",
    "original_to_diffusers_state_dict",
    "diffusers_to_original_state_dict",
    "detect_checkpoint",
    "load_wan_vae",
    "resolve_checkpoint",
]

Version = Literal["2.1", "2.2"]
Layout = Literal["original", "diffusers"]

#: File names the Wan releases use for their VAE weights (original layout).
ORIGINAL_FILE_NAMES: dict[str, Version] = {"Wan2.1_VAE.pth": "2.1", "Wan2.2_VAE.pth": "2.2"}

_VERSIONS = ("2.1", "2.2")


def _check_version(version: str) -> None:
    if version not in _VERSIONS:
        raise ValueError(f"unknown Wan VAE version {version!r}; expected '2.1' or '2.2'")


# --------------------------------------------------------------------------- key maps
# Inside a residual block: original ``residual`` Sequential is
# [RMS_norm, SiLU, CausalConv3d, RMS_norm, SiLU, Dropout, CausalConv3d] + ``shortcut``.
_RESNET_TO_DIFFUSERS = (
    ("residual.0.gamma", "norm1.gamma"),
    ("residual.2.", "conv1."),
    ("residual.3.gamma", "norm2.gamma"),
    ("residual.6.", "conv2."),
    ("shortcut.", "conv_shortcut."),
)
_MIDDLE_TO_DIFFUSERS = {"0": "resnets.0", "1": "attentions.0", "2": "resnets.1"}
_MIDDLE_TO_ORIGINAL = {v: k for k, v in _MIDDLE_TO_DIFFUSERS.items()}

_HALF = r"(?P<half>encoder|decoder)"
_O_TOP = re.compile(r"^(?P<conv>conv[12])\.(?P<rest>.+)$")
_O_CONV_IN = re.compile(rf"^{_HALF}\.conv1\.(?P<rest>.+)$")
_O_HEAD = re.compile(rf"^{_HALF}\.head\.(?P<idx>0|2)\.(?P<rest>.+)$")
_O_MIDDLE = re.compile(rf"^{_HALF}\.middle\.(?P<idx>[012])\.(?P<rest>.+)$")
_O_DOWN_21 = re.compile(r"^encoder\.downsamples\.(?P<n>\d+)\.(?P<rest>.+)$")
_O_UP_21 = re.compile(r"^decoder\.upsamples\.(?P<n>\d+)\.(?P<rest>.+)$")
_O_DOWN_22 = re.compile(r"^encoder\.downsamples\.(?P<x>\d+)\.downsamples\.(?P<y>\d+)\.(?P<rest>.+)$")
_O_UP_22 = re.compile(r"^decoder\.upsamples\.(?P<x>\d+)\.upsamples\.(?P<y>\d+)\.(?P<rest>.+)$")

_D_TOP = re.compile(r"^(?P<conv>quant_conv|post_quant_conv)\.(?P<rest>.+)$")
_D_CONV_IN = re.compile(rf"^{_HALF}\.conv_in\.(?P<rest>.+)$")
_D_NORM_OUT = re.compile(rf"^{_HALF}\.norm_out\.(?P<rest>.+)$")
_D_CONV_OUT = re.compile(rf"^{_HALF}\.conv_out\.(?P<rest>.+)$")
_D_MID = re.compile(rf"^{_HALF}\.mid_block\.(?P<sub>resnets\.[01]|attentions\.0)\.(?P<rest>.+)$")
_D_DOWN_21 = re.compile(r"^encoder\.down_blocks\.(?P<n>\d+)\.(?P<rest>.+)$")
_D_UP_21_RES = re.compile(r"^decoder\.up_blocks\.(?P<b>\d+)\.resnets\.(?P<j>\d+)\.(?P<rest>.+)$")
_D_UP_21_SAMPLE = re.compile(r"^decoder\.up_blocks\.(?P<b>\d+)\.upsamplers\.0\.(?P<rest>.+)$")
_D_DOWN_22_RES = re.compile(r"^encoder\.down_blocks\.(?P<x>\d+)\.resnets\.(?P<y>\d+)\.(?P<rest>.+)$")
_D_DOWN_22_SAMPLE = re.compile(r"^encoder\.down_blocks\.(?P<x>\d+)\.downsampler\.(?P<rest>.+)$")
_D_UP_22_RES = re.compile(r"^decoder\.up_blocks\.(?P<x>\d+)\.resnets\.(?P<y>\d+)\.(?P<rest>.+)$")
_D_UP_22_SAMPLE = re.compile(r"^decoder\.up_blocks\.(?P<x>\d+)\.upsampler\.(?P<rest>.+)$")


def _resnet_to_diffusers(rest: str) -> str:
    for old, new in _RESNET_TO_DIFFUSERS:
        if rest.startswith(old):
            return new + rest[len(old) :]
    return rest


def _resnet_to_original(rest: str) -> str:
    for old, new in _RESNET_TO_DIFFUSERS:
        if rest.startswith(new):
            return old + rest[len(new) :]
    return rest


def original_to_diffusers_key(key: str, version: str, num_res_blocks: int = 2) -> str:
    """Rename one original-Wan VAE key to its diffusers/framestream name.

    ``version`` is ``"2.1"`` or ``"2.2"``; ``num_res_blocks`` is the architecture's
    (2 for every published Wan VAE), needed to tell resnets from the resample layer in
    the flat 2.1 decoder list and in the nested 2.2 lists. A key that fits no pattern
    is returned unchanged (it then shows up as unexpected when loading).
    """
    _check_version(version)
    r = num_res_blocks
    if m := _O_TOP.match(key):
        return ("quant_conv." if m["conv"] == "conv1" else "post_quant_conv.") + m["rest"]
    if m := _O_CONV_IN.match(key):
        return f"{m['half']}.conv_in.{m['rest']}"
    if m := _O_HEAD.match(key):
        return f"{m['half']}.{'norm_out' if m['idx'] == '0' else 'conv_out'}.{m['rest']}"
    if m := _O_MIDDLE.match(key):
        sub = _MIDDLE_TO_DIFFUSERS[m["idx"]]
        rest = m["rest"] if sub.startswith("attentions") else _resnet_to_diffusers(m["rest"])
        return f"{m['half']}.mid_block.{sub}.{rest}"
    if version == "2.2":
        if m := _O_DOWN_22.match(key):
            x, y = int(m["x"]), int(m["y"])
            if y < r:
                return f"encoder.down_blocks.{x}.resnets.{y}.{_resnet_to_diffusers(m['rest'])}"
            if y == r:
                return f"encoder.down_blocks.{x}.downsampler.{m['rest']}"
            return key
        if m := _O_UP_22.match(key):
            x, y = int(m["x"]), int(m["y"])
            if y <= r:
                return f"decoder.up_blocks.{x}.resnets.{y}.{_resnet_to_diffusers(m['rest'])}"
            if y == r + 1:
                return f"decoder.up_blocks.{x}.upsampler.{m['rest']}"
            return key
        return key
    if m := _O_DOWN_21.match(key):
        # The flat encoder list keeps its index in diffusers (resnets, optional
        # attention blocks and resamples all live in ``down_blocks``).
        return f"encoder.down_blocks.{m['n']}.{_resnet_to_diffusers(m['rest'])}"
    if m := _O_UP_21.match(key):
        # Flat decoder list: each stage is (num_res_blocks + 1) resnets then one
        # resample (the last stage has no resample, which changes no index before it).
        block, j = divmod(int(m["n"]), r + 2)
        if j <= r:
            return f"decoder.up_blocks.{block}.resnets.{j}.{_resnet_to_diffusers(m['rest'])}"
        return f"decoder.up_blocks.{block}.upsamplers.0.{m['rest']}"
    return key


def diffusers_to_original_key(key: str, version: str, num_res_blocks: int = 2) -> str:
    """Inverse of :func:`original_to_diffusers_key` (same arguments, same pass-through rule)."""
    _check_version(version)
    r = num_res_blocks
    if m := _D_TOP.match(key):
        return ("conv1." if m["conv"] == "quant_conv" else "conv2.") + m["rest"]
    if m := _D_CONV_IN.match(key):
        return f"{m['half']}.conv1.{m['rest']}"
    if m := _D_NORM_OUT.match(key):
        return f"{m['half']}.head.0.{m['rest']}"
    if m := _D_CONV_OUT.match(key):
        return f"{m['half']}.head.2.{m['rest']}"
    if m := _D_MID.match(key):
        sub = m["sub"]
        rest = m["rest"] if sub.startswith("attentions") else _resnet_to_original(m["rest"])
        return f"{m['half']}.middle.{_MIDDLE_TO_ORIGINAL[sub]}.{rest}"
    if version == "2.2":
        if m := _D_DOWN_22_RES.match(key):
            if int(m["y"]) < r:
                return f"encoder.downsamples.{m['x']}.downsamples.{m['y']}.{_resnet_to_original(m['rest'])}"
            return key
        if m := _D_DOWN_22_SAMPLE.match(key):
            return f"encoder.downsamples.{m['x']}.downsamples.{r}.{m['rest']}"
        if m := _D_UP_22_RES.match(key):
            if int(m["y"]) <= r:
                return f"decoder.upsamples.{m['x']}.upsamples.{m['y']}.{_resnet_to_original(m['rest'])}"
            return key
        if m := _D_UP_22_SAMPLE.match(key):
            return f"decoder.upsamples.{m['x']}.upsamples.{r + 1}.{m['rest']}"
        return key
    if m := _D_DOWN_21.match(key):
        return f"encoder.downsamples.{m['n']}.{_resnet_to_original(m['rest'])}"
    if m := _D_UP_21_RES.match(key):
        if int(m["j"]) <= r:
            n = int(m["b"]) * (r + 2) + int(m["j"])
            return f"decoder.upsamples.{n}.{_resnet_to_original(m['rest'])}"
        return key
    if m := _D_UP_21_SAMPLE.match(key):
        n = int(m["b"]) * (r + 2) + r + 1
        return f"decoder.upsamples.{n}.{m['rest']}"
    return key


def original_to_diffusers_state_dict(
    state_dict: Mapping[str, torch.Tensor], version: str, num_res_blocks: int = 2
) -> dict[str, torch.Tensor]:
    """Rename every key of an original-layout state dict (tensors are shared, not copied)."""
    return remap_keys(state_dict, lambda k: original_to_diffusers_key(k, version, num_res_blocks))


def diffusers_to_original_state_dict(
    state_dict: Mapping[str, torch.Tensor], version: str, num_res_blocks: int = 2
) -> dict[str, torch.Tensor]:
    """Rename every key of a diffusers-layout state dict (tensors are shared, not copied)."""
    return remap_keys(state_dict, lambda k: diffusers_to_original_key(k, version, num_res_blocks))


# --------------------------------------------------------------------------- detection
@dataclasses.dataclass(frozen=True)
class WanVAECheckpointInfo:
    """What :func:`detect_checkpoint` found.

    ``files`` are the weight files (several for a sharded diffusers checkpoint);
    ``config_file`` the diffusers ``config.json`` when there is one, and ``arch`` the
    architecture built from it. ``z_dim``/``patch_size`` come from tensor shapes
    (``None`` when the half that carries them is absent).
    """

    layout: Layout
    version: Version
    files: tuple[Path, ...]
    config_file: Path | None = None
    arch: WanVAEArchConfig | None = None
    z_dim: int | None = None
    patch_size: int | None = None
    has_encoder: bool = True
    has_decoder: bool = True


class WanVAECheckpointError(CheckpointMismatchError):
    """A Wan VAE checkpoint does not fit the requested model; ``reason`` says why in words."""

    def __init__(
        self,
        reason: str,
        source: str,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] | None = None,
    ) -> None:
        super().__init__(source, missing or [], unexpected or [], mismatched or [])
        self.reason = reason
        if reason and (missing or unexpected or mismatched):
            self.args = (f"{reason}\n{self.args[0]}",)
        elif reason:
            self.args = (reason,)


_ORIGINAL_PREFIXES = (
    "conv1.", "conv2.",
    "encoder.conv1.", "encoder.downsamples.", "encoder.middle.", "encoder.head.",
    "decoder.conv1.", "decoder.upsamples.", "decoder.middle.", "decoder.head.",
)  # fmt: skip
_DIFFUSERS_PREFIXES = (
    "quant_conv.", "post_quant_conv.",
    "encoder.conv_in.", "encoder.down_blocks.", "encoder.mid_block.", "encoder.norm_out.", "encoder.conv_out.",
    "decoder.conv_in.", "decoder.up_blocks.", "decoder.mid_block.", "decoder.norm_out.", "decoder.conv_out.",
)  # fmt: skip
_RESIDUAL_ORIGINAL = re.compile(r"^(encoder\.downsamples\.\d+\.downsamples|decoder\.upsamples\.\d+\.upsamples)\.\d+\.")
_RESIDUAL_DIFFUSERS = re.compile(
    r"^(encoder\.down_blocks\.\d+\.(resnets\.\d+|downsampler)|decoder\.up_blocks\.\d+\.upsampler)\."
)


def _patch_from_channels(channels: int) -> int | None:
    """3 image channels per pixel: 3 -> patch 1, 12 -> patch 2, 3*p*p -> p; None if not of that form."""
    p = round((channels / 3) ** 0.5)
    return p if p >= 1 and 3 * p * p == channels else None


def _inspect_shapes(shapes: Mapping[str, tuple[int, ...]], source: str) -> dict:
    """Layout, version, z_dim, patch size and present halves from key names and shapes."""
    n_original = sum(k.startswith(_ORIGINAL_PREFIXES) for k in shapes)
    n_diffusers = sum(k.startswith(_DIFFUSERS_PREFIXES) for k in shapes)
    if n_original and n_diffusers:
        raise ValueError(
            f"{source} mixes original Wan key names ({n_original} keys such as 'encoder.downsamples.*') "
            f"and diffusers key names ({n_diffusers} keys such as 'encoder.down_blocks.*'); it is not a Wan VAE "
            "checkpoint in either layout"
        )
    if not (n_original or n_diffusers):
        sample = ", ".join(sorted(shapes)[:5]) or "(no keys)"
        raise ValueError(
            f"{source} is not a Wan VAE checkpoint: none of its {len(shapes)} keys has a Wan VAE name "
            f"(first keys: {sample})"
        )
    layout: Layout = "original" if n_original else "diffusers"
    residual_re = _RESIDUAL_ORIGINAL if layout == "original" else _RESIDUAL_DIFFUSERS
    version: Version = "2.2" if any(residual_re.match(k) for k in shapes) else "2.1"

    if layout == "original":
        quant, post_quant, enc_in, enc_out, dec_in, dec_out = (
            "conv1.weight", "conv2.weight", "encoder.conv1.weight", "encoder.head.2.weight",
            "decoder.conv1.weight", "decoder.head.2.weight",
        )  # fmt: skip
    else:
        quant, post_quant, enc_in, enc_out, dec_in, dec_out = (
            "quant_conv.weight", "post_quant_conv.weight", "encoder.conv_in.weight", "encoder.conv_out.weight",
            "decoder.conv_in.weight", "decoder.conv_out.weight",
        )  # fmt: skip
    z_dim = None
    if post_quant in shapes:
        z_dim = shapes[post_quant][0]
    elif quant in shapes:
        z_dim = shapes[quant][0] // 2
    elif dec_in in shapes and len(shapes[dec_in]) > 1:
        z_dim = shapes[dec_in][1]
    elif enc_out in shapes:
        z_dim = shapes[enc_out][0] // 2
    patch = None
    if enc_in in shapes and len(shapes[enc_in]) > 1:
        patch = _patch_from_channels(shapes[enc_in][1])
    elif dec_out in shapes:
        patch = _patch_from_channels(shapes[dec_out][0])
    return {
        "layout": layout,
        "version": version,
        "z_dim": z_dim,
        "patch_size": patch,
        "has_encoder": any(k.startswith(("encoder.", "conv1.", "quant_conv.")) for k in shapes),
        "has_decoder": any(k.startswith(("decoder.", "conv2.", "post_quant_conv.")) for k in shapes),
    }


_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_DIFFUSERS_WEIGHT_NAMES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.bin",
)


def _is_wan_vae_config(path: Path) -> bool:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(cfg, dict):
        return False
    name = cfg.get("_class_name")
    return name == "AutoencoderKLWan" or (name is None and "z_dim" in cfg and "base_dim" in cfg)


def _expand_index(path: Path) -> tuple[Path, ...]:
    if path.name.endswith(".safetensors.index.json"):
        index = json.loads(path.read_text())
        return tuple(path.parent / shard for shard in sorted(set(index["weight_map"].values())))
    return (path,)


def _locate(path: Path) -> tuple[tuple[Path, ...], Path | None]:
    """Weight files and diffusers config for a file or directory."""
    if path.is_file():
        sibling = path.parent / "config.json"
        config = sibling if path.name.startswith("diffusion_pytorch_model") and _is_wan_vae_config(sibling) else None
        return _expand_index(path), config
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if _is_wan_vae_config(path / "config.json"):
        for name in _DIFFUSERS_WEIGHT_NAMES:
            if (path / name).is_file():
                return _expand_index(path / name), path / "config.json"
        raise FileNotFoundError(
            f"{path} has an AutoencoderKLWan config.json but no weights: "
            f"expected one of {list(_DIFFUSERS_WEIGHT_NAMES)}"
        )
    originals = [path / name for name in ORIGINAL_FILE_NAMES if (path / name).is_file()]
    if len(originals) > 1:
        raise ValueError(f"{path} holds both {originals[0].name} and {originals[1].name}; pass the file you mean")
    if originals:
        return (originals[0],), None
    if (path / "vae").is_dir():  # a diffusers pipeline folder
        return _locate(path / "vae")
    found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    if len(found) == 1:
        return (found[0],), None
    raise FileNotFoundError(
        f"no Wan VAE checkpoint in {path}: expected a diffusers VAE folder (config.json + "
        f"diffusion_pytorch_model.safetensors), {' or '.join(ORIGINAL_FILE_NAMES)}, a 'vae' subfolder, or a single "
        f"weight file; found {[p.name for p in found]}"
    )


def _read_shapes(files: tuple[Path, ...]) -> dict[str, tuple[int, ...]]:
    """Key -> shape without loading the tensors where the format allows it."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {file}")
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    shapes[key] = tuple(f.get_slice(key).get_shape())
            continue
        try:  # zip-format torch files can be mapped instead of read
            loaded = torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            loaded = None
        if isinstance(loaded, dict) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
            shapes.update({k: tuple(v.shape) for k, v in loaded.items()})
            del loaded
        else:
            shapes.update({k: tuple(v.shape) for k, v in read_state_dict(file).items()})
    return shapes


def _read_files(files: tuple[Path, ...]) -> dict[str, torch.Tensor]:
    if len(files) == 1:
        return read_state_dict(files[0])
    merged: dict[str, torch.Tensor] = {}
    for file in files:
        part = read_state_dict(file)
        clash = sorted(set(part) & set(merged))
        if clash:
            raise ValueError(f"keys present in more than one shard ({file}): {clash[:10]}")
        merged.update(part)
    return merged


def _build_info(
    files: tuple[Path, ...], config: Path | None, shapes: Mapping[str, tuple[int, ...]], source: str
) -> WanVAECheckpointInfo:
    facts = _inspect_shapes(shapes, source)
    by_name = {name.lower(): version for name, version in ORIGINAL_FILE_NAMES.items()}
    named = next((by_name[f.name.lower()] for f in files if f.name.lower() in by_name), None)
    if named is not None and named != facts["version"]:
        warnings.warn(
            f"{source} is named like a Wan {named} VAE but its tensors are Wan {facts['version']}; "
            "going by the tensors",
            stacklevel=3,
        )
    arch = None
    if config is not None:
        from framestream.models.wan.vae.config import WanVAEArchConfig

        arch = WanVAEArchConfig.from_diffusers_config(json.loads(config.read_text()))
    return WanVAECheckpointInfo(files=tuple(files), config_file=config, arch=arch, **facts)


def detect_checkpoint(path: str | Path) -> WanVAECheckpointInfo:
    """Find the weight files under ``path`` and tell their layout and Wan version.

    ``path`` may be a weight file (``.pth``/``.safetensors``/shard index), a diffusers
    VAE folder (``config.json`` + ``diffusion_pytorch_model.safetensors``), a diffusers
    pipeline folder (its ``vae/``), or a Wan release folder holding ``Wan2.1_VAE.pth`` /
    ``Wan2.2_VAE.pth``. The tensors decide: key names give the layout, nested
    down/up lists (Wan 2.2 residual blocks) give the version; a file name that
    disagrees only triggers a warning. Only headers are read where possible.
    """
    path = Path(path)
    files, config = _locate(path)
    return _build_info(files, config, _read_shapes(files), str(path))


# --------------------------------------------------------------------------- loading
def _arch_version(arch: WanVAEArchConfig) -> Version:
    return "2.2" if arch.is_residual else "2.1"


def _describe_arch(arch: WanVAEArchConfig) -> str:
    return (
        f"Wan {_arch_version(arch)} (is_residual={arch.is_residual}, z_dim={arch.z_dim}, "
        f"patch_size={arch.patch}, base_dim={arch.base_dim})"
    )


def _default_arch(info: WanVAECheckpointInfo, shapes: Mapping[str, tuple[int, ...]]) -> WanVAEArchConfig:
    """The published architecture of the detected version, with the widths the tensors show.

    Widths are read, not guessed: each half's base width is the value most of its
    stem/head tensors agree on (``conv_in``, ``conv_out``, ``norm_out``), so one damaged
    tensor shows up as one shape mismatch rather than changing the whole model.
    Everything else (depth, resamplings, z_dim, latent statistics) is the preset's and
    is then checked strictly.
    """
    from framestream.models.wan.vae.config import WAN21_VAE_ARCH, WAN22_VAE_ARCH

    preset = WAN22_VAE_ARCH if info.version == "2.2" else WAN21_VAE_ARCH
    top = preset.dim_mult[-1]
    if info.layout == "original":  # stem/head names do not depend on num_res_blocks
        shapes = {original_to_diffusers_key(k, info.version): v for k, v in shapes.items()}

    def vote(half: str, candidates: list[tuple[str, int, int]]) -> int | None:
        votes = Counter()
        for name, dim, divisor in candidates:
            shape = shapes.get(f"{half}.{name}")
            if shape is not None and len(shape) > dim and shape[dim] % divisor == 0:
                votes[shape[dim] // divisor] += 1
        return votes.most_common(1)[0][0] if votes else None

    # (tensor, dim, divisor): encoder width = conv_in out = conv_out in / top mult; decoder mirrored.
    base = vote(
        "encoder",
        [("conv_in.weight", 0, 1), ("conv_in.bias", 0, 1), ("conv_out.weight", 1, top), ("norm_out.gamma", 0, top)],
    )
    dec = vote(
        "decoder",
        [("conv_out.weight", 1, 1), ("norm_out.gamma", 0, 1), ("conv_in.weight", 0, top), ("conv_in.bias", 0, top)],
    )
    if base is None and dec is None:
        return preset
    base = base if base is not None else preset.base_dim
    if dec is None:
        dec = preset.decoder_dim * base // preset.base_dim
    return dataclasses.replace(preset, base_dim=base, decoder_base_dim=None if dec == base else dec)


def _half_prefixes(model: torch.nn.Module, include_encoder: bool, include_decoder: bool) -> tuple[str, ...]:
    """Key prefixes of the half that is not loaded (and that the model does not hold)."""
    present = {key.split(".", 1)[0] for key in model.state_dict()}
    skipped = []
    if not include_encoder:
        skipped += [p for p in ("encoder", "quant_conv") if p not in present]
    if not include_decoder:
        skipped += [p for p in ("decoder", "post_quant_conv") if p not in present]
    return tuple(p + "." for p in skipped)


def load_wan_vae(
    path: str | Path,
    arch: WanVAEArchConfig | None = None,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
    include_encoder: bool = True,
    include_decoder: bool = True,
) -> WanVAE:
    """Load a Wan 2.1 / 2.2 VAE checkpoint in either layout into a :class:`WanVAE`.

    ``path``: anything :func:`detect_checkpoint` accepts, or a Hugging Face repo id
    (see :func:`resolve_checkpoint`). ``arch``: the architecture to build; by default
    the diffusers ``config.json`` when there is one, else the published architecture
    of the detected version with the checkpoint's channel widths. A checkpoint of the
    other Wan version, or a ``z_dim``/patch size that differs from ``arch``, raises
    :class:`WanVAECheckpointError` saying so; any other missing, unexpected or
    mis-shaped key raises one :class:`CheckpointMismatchError` listing all of them.

    With ``include_encoder=False`` (or ``include_decoder=False``) the model is built
    without that half and the checkpoint's keys for it are dropped unreported.

    The model is built on the meta device and receives the checkpoint tensors
    themselves (cast to ``dtype`` and moved to ``device`` one at a time, so the peak is
    the checkpoint plus one tensor), then returned in eval mode with gradients off.
    """
    from framestream.models.wan.vae.model import WanVAE

    if not (include_encoder or include_decoder):
        raise ValueError("load_wan_vae: include_encoder and include_decoder cannot both be False")
    dtype = parse_dtype(dtype)
    path = resolve_checkpoint(path)
    source = str(path)
    files, config = _locate(path)
    state_dict = _read_files(files)
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    info = _build_info(files, config, shapes, source)

    arch_is_default = False
    if arch is not None:
        arch_from = "the arch argument"
    elif info.arch is not None:
        arch, arch_from = info.arch, f"{info.config_file}"
    else:
        arch, arch_is_default = _default_arch(info, shapes), True
        arch_from = f"the Wan {info.version} preset (widths from the checkpoint)"

    reasons = []
    if _arch_version(arch) != info.version:
        reasons.append(
            f"{source} holds Wan {info.version} VAE weights ({info.layout} layout"
            f"{', residual down/up blocks' if info.version == '2.2' else ''}) but the architecture from "
            f"{arch_from} is {_describe_arch(arch)}; use a Wan {info.version} architecture "
            f"(WAN{info.version.replace('.', '')}_VAE_ARCH) or leave arch=None to take it from the checkpoint"
        )
    else:
        if info.z_dim is not None and info.z_dim != arch.z_dim:
            reasons.append(
                f"{source} has z_dim={info.z_dim} but the architecture from {arch_from} has z_dim={arch.z_dim}"
            )
        if info.patch_size is not None and info.patch_size != arch.patch:
            reasons.append(
                f"{source} has patch_size={info.patch_size} (conv_in/conv_out channels) but the architecture from "
                f"{arch_from} has patch_size={arch.patch}"
            )

    if info.layout == "original":
        state_dict = original_to_diffusers_state_dict(state_dict, info.version, arch.num_res_blocks)

    with torch.device("meta"):
        model = WanVAE(arch, include_encoder=include_encoder, include_decoder=include_decoder)
    skip = _half_prefixes(model, include_encoder, include_decoder)
    if skip:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(skip)}
    expected = {k: v.shape for k, v in model.state_dict().items()}
    label = f"{source} ({info.layout} layout, Wan {info.version}; architecture from {arch_from})"
    try:
        check_state_dict(expected, state_dict, label)
    except CheckpointMismatchError as err:
        missing, unexpected, mismatched = err.missing, err.unexpected, err.mismatched
        if info.layout == "original":  # name the keys as the file (and the original code) does
            label = (
                f"{source} ({info.layout} layout, Wan {info.version}, keys in its own names; "
                f"architecture from {arch_from})"
            )
            r = arch.num_res_blocks
            missing = sorted(diffusers_to_original_key(k, _arch_version(arch), r) for k in missing)
            unexpected = sorted(diffusers_to_original_key(k, info.version, r) for k in unexpected)
            mismatched = sorted((diffusers_to_original_key(k, info.version, r), g, w) for k, g, w in mismatched)
        if arch_is_default and not reasons:
            reasons.append(
                f"no arch given: {source} was checked against the published Wan {info.version} architecture "
                "(with the checkpoint's channel widths); if it is a non-standard variant, pass arch="
            )
        if reasons or info.layout == "original":
            raise WanVAECheckpointError("; ".join(reasons), label, missing, unexpected, mismatched) from None
        raise
    if reasons:  # shapes happen to fit, but the checkpoint is not what arch describes
        raise WanVAECheckpointError("; ".join(reasons), label)

    # Cast/move one tensor at a time, dropping the original as we go.
    for key in list(state_dict):
        value = state_dict[key]
        target = dtype if value.is_floating_point() else value.dtype
        state_dict[key] = value.to(device=device, dtype=target)
        del value
    load_state_dict_strict(model, state_dict, label, device=device)
    del state_dict
    _assert_no_meta(model)
    return model.eval().requires_grad_(False)


def _assert_no_meta(model: torch.nn.Module) -> None:
    """Refuse to return a module with tensors still on the meta device."""
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"WanVAE kept tensors on the meta device after loading: {left[:10]}")


# --------------------------------------------------------------------------- hub
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_checkpoint(path_or_repo_id: str | Path, revision: str | None = None) -> Path:
    """A local path as is; a Hugging Face repo id (``"Wan-AI/Wan2.1-T2V-1.3B"``) downloaded.

    For a repo the VAE alone is fetched: ``Wan2.1_VAE.pth`` / ``Wan2.2_VAE.pth`` from an
    original Wan release, ``vae/`` from a diffusers pipeline, or a standalone diffusers
    VAE repo. Needs ``huggingface_hub`` (``pip install 'framestream[hub]'``) and network
    access; fails with a plain message otherwise.
    """
    path = Path(path_or_repo_id)
    if path.exists():
        return path
    text = str(path_or_repo_id)
    if isinstance(path_or_repo_id, Path) or not _REPO_ID.match(text) or text.endswith((*_WEIGHT_SUFFIXES, ".json")):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        import huggingface_hub
    except ImportError:
        raise RuntimeError(
            f"{text!r} is not a local path, and downloading it as a Hugging Face repo needs huggingface_hub "
            "(pip install 'framestream[hub]')"
        ) from None
    try:
        files = set(huggingface_hub.list_repo_files(text, revision=revision))
        names = [n for n in ORIGINAL_FILE_NAMES if n in files]
        if names:
            return Path(huggingface_hub.hf_hub_download(text, names[0], revision=revision))
        if "vae/config.json" in files:
            root = huggingface_hub.snapshot_download(text, revision=revision, allow_patterns=["vae/*"])
            return Path(root) / "vae"
        if "config.json" in files and any(n.startswith("diffusion_pytorch_model") for n in files):
            root = Path(huggingface_hub.hf_hub_download(text, "config.json", revision=revision)).parent
            if _is_wan_vae_config(root / "config.json"):
                return Path(
                    huggingface_hub.snapshot_download(
                        text, revision=revision, allow_patterns=["config.json", "diffusion_pytorch_model*"]
                    )
                )
    except Exception as err:  # network, auth, missing repo: one plain message
        raise RuntimeError(f"could not fetch the Wan VAE from Hugging Face repo {text!r}: {err}") from err
    raise FileNotFoundError(
        f"Hugging Face repo {text!r} has no Wan VAE: expected {' or '.join(ORIGINAL_FILE_NAMES)}, a 'vae/' "
        "diffusers folder, or an AutoencoderKLWan config.json with its weights"
    )
