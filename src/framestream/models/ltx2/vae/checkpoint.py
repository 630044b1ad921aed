"""LTX-2 video VAE checkpoints: the diffusers folder and the original single file, detected and loaded strictly.

Two layouts exist for the same weights:

* **diffusers** -- a folder with ``config.json`` (``_class_name: AutoencoderKLLTX2Video``) and
  ``diffusion_pytorch_model.safetensors`` (or a sharded index), or a pipeline folder with
  ``vae/``. Keys are :class:`~framestream.models.ltx2.vae.model.LTX2VAE`'s own.
* **original** -- the LTX-2 release file (e.g. ``ltx-2-19b-dev.safetensors``): one
  safetensors file holding every component, the video VAE under ``vae.``, and the
  configuration as JSON in the metadata key ``config`` (its ``vae`` entry, with
  ``encoder_blocks`` / ``decoder_blocks``). The VAE keys differ from diffusers' only in
  block indices (flat ``down_blocks.N`` / ``up_blocks.N`` lists in which resamplers are
  blocks of their own), ``res_blocks`` for ``resnets``, and the latent statistics
  ``per_channel_statistics.mean-of-means`` / ``std-of-means`` (``channel`` and
  ``mean-of-stds`` are not used). Same shapes; nothing is reshaped.

Loading reads only safetensors or ``weights_only=True`` torch files, builds the model on
the meta device, checks keys and shapes strictly (one error listing everything), and
hands the checkpoint tensors to the model (``assign=True``), cast to ``dtype``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from framestream.models.ltx2.vae.config import LTX2_VAE_ARCH, LTX2VAEArchConfig
from framestream.utils.dtypes import parse_dtype
from framestream.utils.state_dict import CheckpointMismatchError, check_state_dict, load_state_dict_strict, read_state_dict

__all__ = [
    "LTX2VAECheckpointError",
    "LTX2VAECheckpointInfo",
    "detect_ltx2_checkpoint",
    "load_ltx2_vae",
    "original_to_diffusers_state_dict",
    "diffusers_to_original_state_dict",
    "save_original_checkpoint",
    "ORIGINAL_PREFIX",
]

Layout = Literal["diffusers", "original"]
ORIGINAL_PREFIX = "vae."
"""Prefix of the video VAE's keys in an original LTX-2 checkpoint."""

_STATS = {
    "per_channel_statistics.mean-of-means": "latents_mean",
    "per_channel_statistics.std-of-means": "latents_std",
}
_STATS_UNUSED = ("per_channel_statistics.channel", "per_channel_statistics.mean-of-stds")
_TOP_TIME = {"last_time_embedder.": "time_embedder.", "last_scale_shift_table": "scale_shift_table"}
_O_ENC = re.compile(r"^encoder\.down_blocks\.(\d+)\.(.+)$")
_O_DEC = re.compile(r"^decoder\.up_blocks\.(\d+)\.(.+)$")
_D_ENC_RES = re.compile(r"^encoder\.down_blocks\.(\d+)\.(resnets\..+)$")
_D_ENC_DOWN = re.compile(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)$")
_D_DEC_UP = re.compile(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)$")
_D_DEC_REST = re.compile(r"^decoder\.up_blocks\.(\d+)\.(.+)$")


class LTX2VAECheckpointError(CheckpointMismatchError):
    """An LTX-2 VAE checkpoint does not fit the model (or is not an LTX-2 VAE); ``reason`` says why."""

    def __init__(self, reason: str, source: str, missing=None, unexpected=None, mismatched=None) -> None:
        super().__init__(source, missing or [], unexpected or [], mismatched or [])
        self.reason = reason
        self.args = (f"{reason}\n{self.args[0]}",) if (missing or unexpected or mismatched) else (reason,)


# ----------------------------------------------------------------------------- key maps
def _res(rest: str, to_diffusers: bool) -> str:
    return rest.replace("res_blocks.", "resnets.") if to_diffusers else rest.replace("resnets.", "res_blocks.")


def original_to_diffusers_key(key: str, n_down: int) -> str | None:
    """An original VAE key (without ``vae.``) in diffusers' names; ``None`` for the unused statistics.

    ``n_down``: encoder down blocks (the original list has a res block and a resampler per
    down block, then the mid block).
    """
    if key in _STATS:
        return _STATS[key]
    if key in _STATS_UNUSED:
        return None
    m = _O_ENC.match(key)
    if m:
        n, rest = int(m[1]), _res(m[2], True)
        if n == 2 * n_down:
            return f"encoder.mid_block.{rest}"
        return f"encoder.down_blocks.{n // 2}.{rest}" if n % 2 == 0 else f"encoder.down_blocks.{n // 2}.downsamplers.0.{rest}"
    m = _O_DEC.match(key)
    if m:
        n, rest = int(m[1]), _res(m[2], True)
        if n == 0:
            return f"decoder.mid_block.{rest}"
        return f"decoder.up_blocks.{(n - 1) // 2}.upsamplers.0.{rest}" if n % 2 else f"decoder.up_blocks.{n // 2 - 1}.{rest}"
    for old, new in _TOP_TIME.items():
        if key.startswith("decoder." + old):
            return "decoder." + new + key[len("decoder." + old) :]
    return key


def diffusers_to_original_key(key: str, n_down: int) -> str:
    """Inverse of :func:`original_to_diffusers_key` (without the ``vae.`` prefix)."""
    inverse = {v: k for k, v in _STATS.items()}
    if key in inverse:
        return inverse[key]
    if key.startswith("encoder.mid_block."):
        return f"encoder.down_blocks.{2 * n_down}.{_res(key[len('encoder.mid_block.') :], False)}"
    m = _D_ENC_DOWN.match(key)
    if m:
        return f"encoder.down_blocks.{2 * int(m[1]) + 1}.{m[2]}"
    m = _D_ENC_RES.match(key)
    if m:
        return f"encoder.down_blocks.{2 * int(m[1])}.{_res(m[2], False)}"
    if key.startswith("decoder.mid_block."):
        return f"decoder.up_blocks.0.{_res(key[len('decoder.mid_block.') :], False)}"
    m = _D_DEC_UP.match(key)
    if m:
        return f"decoder.up_blocks.{2 * int(m[1]) + 1}.{m[2]}"
    m = _D_DEC_REST.match(key)
    if m:
        return f"decoder.up_blocks.{2 * int(m[1]) + 2}.{_res(m[2], False)}"
    for old, new in _TOP_TIME.items():
        if key.startswith("decoder." + new):
            return "decoder." + old + key[len("decoder." + new) :]
    return key


def original_to_diffusers_state_dict(state_dict: Mapping[str, torch.Tensor], n_down: int) -> dict[str, torch.Tensor]:
    """VAE keys of an original checkpoint (``vae.`` already stripped) renamed to diffusers'."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = original_to_diffusers_key(key, n_down)
        if new is None:
            continue
        if new in out:
            raise ValueError(f"two original keys map to {new!r}")
        out[new] = value
    return out


def diffusers_to_original_state_dict(state_dict: Mapping[str, torch.Tensor], n_down: int) -> dict[str, torch.Tensor]:
    """A diffusers-named VAE state dict in the original names, with the ``vae.`` prefix."""
    return {ORIGINAL_PREFIX + diffusers_to_original_key(k, n_down): v for k, v in state_dict.items()}


def save_original_checkpoint(model: torch.nn.Module, arch: LTX2VAEArchConfig, path: str | Path, extra: Mapping[str, torch.Tensor] | None = None) -> None:
    """Write ``model``'s weights as an original LTX-2 single file (``vae.`` keys, config in the metadata).

    ``extra`` tensors (other components of a combined checkpoint) are stored alongside.
    """
    from safetensors.torch import save_file

    tensors = diffusers_to_original_state_dict(model.state_dict(), len(arch.block_out_channels))
    c = arch.latent_channels
    tensors[ORIGINAL_PREFIX + "per_channel_statistics.channel"] = torch.arange(c, dtype=torch.float32)
    tensors[ORIGINAL_PREFIX + "per_channel_statistics.mean-of-stds"] = torch.ones(c)
    tensors.update(extra or {})
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={"config": json.dumps({"vae": arch.to_original_config()})})


# ----------------------------------------------------------------------------- detection
@dataclass(frozen=True)
class LTX2VAECheckpointInfo:
    """What :func:`detect_ltx2_checkpoint` found: layout, weight files, and the architecture."""

    layout: Layout
    files: tuple[Path, ...]
    config_file: Path | None
    arch: LTX2VAEArchConfig | None
    source: str


_DIFFUSERS_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")


def _is_ltx2_config(path: Path) -> bool:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and cfg.get("_class_name") == "AutoencoderKLLTX2Video"


def _expand(path: Path) -> tuple[Path, ...]:
    if path.name.endswith(".safetensors.index.json"):
        index = json.loads(path.read_text())
        return tuple(path.parent / s for s in sorted(set(index["weight_map"].values())))
    return (path,)


def _safetensors_meta(path: Path) -> tuple[list[str], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return list(f.keys()), (f.metadata() or {})


def _not_ltx2(source: str, keys: list[str]) -> LTX2VAECheckpointError:
    sample = ", ".join(sorted(keys)[:5]) or "(no keys)"
    hint = ""
    if any(k.startswith(("encoder.downsamples.", "decoder.upsamples.", "encoder.conv1.")) for k in keys):
        hint = " (it looks like a Wan VAE: use --vae wan2.1 / wan2.2)"
    elif any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in keys):
        hint = " (it has VAE key names but not the LTX-2 video VAE's)"
    return LTX2VAECheckpointError(
        f"{source} is not an LTX-2 video VAE checkpoint{hint}: expected a diffusers AutoencoderKLLTX2Video folder "
        f"or an original LTX-2 file with '{ORIGINAL_PREFIX}encoder.*' / '{ORIGINAL_PREFIX}decoder.*' keys; first keys: {sample}",
        source,
    )


def detect_ltx2_checkpoint(path: str | Path) -> LTX2VAECheckpointInfo:
    """Find an LTX-2 VAE under ``path`` (file or folder) and tell its layout and architecture.

    Only headers are read. Raises :class:`LTX2VAECheckpointError` (one line saying what it
    looks like instead) when ``path`` holds no LTX-2 video VAE, ``FileNotFoundError`` when
    nothing is there.
    """
    path = Path(path)
    source = str(path)
    if path.is_dir():
        if (path / "vae").is_dir() and not (path / "config.json").is_file():
            return detect_ltx2_checkpoint(path / "vae")
        config = path / "config.json"
        if config.is_file():
            if not _is_ltx2_config(config):
                name = json.loads(config.read_text()).get("_class_name", "unknown") if config.is_file() else "?"
                raise LTX2VAECheckpointError(f"{source} holds a {name} config, not an AutoencoderKLLTX2Video", source)
            for name in _DIFFUSERS_NAMES:
                if (path / name).is_file():
                    arch = LTX2VAEArchConfig.from_diffusers_config(json.loads(config.read_text()))
                    return LTX2VAECheckpointInfo("diffusers", _expand(path / name), config, arch, source)
            raise FileNotFoundError(f"{path} has an AutoencoderKLLTX2Video config.json but no {_DIFFUSERS_NAMES[0]}")
        found = sorted(p for p in path.iterdir() if p.suffix == ".safetensors")
        if len(found) != 1:
            raise FileNotFoundError(
                f"no LTX-2 VAE in {path}: expected a diffusers VAE folder (config.json + {_DIFFUSERS_NAMES[0]}), "
                f"a pipeline folder with vae/, or one original .safetensors file; found {[p.name for p in found]}"
            )
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    sibling = path.parent / "config.json"
    if path.name.startswith("diffusion_pytorch_model") and _is_ltx2_config(sibling):
        arch = LTX2VAEArchConfig.from_diffusers_config(json.loads(sibling.read_text()))
        return LTX2VAECheckpointInfo("diffusers", _expand(path), sibling, arch, source)
    if path.suffix != ".safetensors":
        keys = list(read_state_dict(path))
        raise _not_ltx2(source, keys) if not any(k.startswith(ORIGINAL_PREFIX) for k in keys) else LTX2VAECheckpointError(
            f"{source}: original LTX-2 checkpoints are .safetensors files (their config lives in the metadata)", source
        )
    keys, meta = _safetensors_meta(path)
    vae_keys = [k[len(ORIGINAL_PREFIX) :] for k in keys if k.startswith(ORIGINAL_PREFIX)]
    if not any(k.startswith(("encoder.", "decoder.")) for k in vae_keys):
        raise _not_ltx2(source, keys)
    arch = None
    if "config" in meta:
        try:
            vae_config = json.loads(meta["config"]).get("vae")
        except ValueError as err:
            raise LTX2VAECheckpointError(f"{source}: its metadata 'config' is not JSON ({err})", source) from None
        if vae_config is not None:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                name = ORIGINAL_PREFIX + "decoder.conv_in.conv.weight"
                widths = {"decoder_in": f.get_slice(name).get_shape()[0]} if name in keys else {}
            try:
                arch = LTX2VAEArchConfig.from_original_config(vae_config, widths)
            except ValueError as err:
                raise LTX2VAECheckpointError(f"{source}: unsupported LTX-2 VAE configuration: {err}", source) from None
    return LTX2VAECheckpointInfo("original", (path,), None, arch, source)


# ----------------------------------------------------------------------------- loading
def _read(info: LTX2VAECheckpointInfo) -> dict[str, torch.Tensor]:
    if info.layout == "diffusers":
        merged: dict[str, torch.Tensor] = {}
        for file in info.files:
            merged.update(read_state_dict(file))
        return merged
    from safetensors import safe_open

    out = {}
    with safe_open(str(info.files[0]), framework="pt") as f:  # only the VAE's tensors of a combined file
        for key in f.keys():
            if key.startswith(ORIGINAL_PREFIX):
                out[key[len(ORIGINAL_PREFIX) :]] = f.get_tensor(key)
    return out


def load_ltx2_vae(
    path: str | Path,
    arch: LTX2VAEArchConfig | None = None,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
    include_encoder: bool = True,
    include_decoder: bool = True,
):
    """Load an LTX-2 video VAE (diffusers folder or original file, detected) into an :class:`LTX2VAE`.

    ``arch``: the architecture to build; by default the checkpoint's own config (diffusers
    ``config.json`` or the original metadata), else the published LTX-2 architecture. Keys
    and shapes are checked strictly: a wrong model raises one :class:`LTX2VAECheckpointError`
    (or :class:`CheckpointMismatchError`) listing every problem. Weights are cast to ``dtype``
    (the compute dtype is the input's) and placed on ``device``; the model comes back in eval
    mode with gradients off. ``include_encoder`` / ``include_decoder`` drop a half.
    """
    from framestream.models.ltx2.vae.model import LTX2VAE

    if not (include_encoder or include_decoder):
        raise ValueError("load_ltx2_vae: include_encoder and include_decoder cannot both be False")
    dtype = parse_dtype(dtype)
    info = detect_ltx2_checkpoint(path)
    arch_from = "the arch argument" if arch is not None else ("the checkpoint's config" if info.arch else "the LTX-2 preset")
    arch = arch or info.arch or LTX2_VAE_ARCH
    state_dict = _read(info)
    if info.layout == "original":
        state_dict = original_to_diffusers_state_dict(state_dict, len(arch.block_out_channels))
    with torch.device("meta"):
        model = LTX2VAE(arch, include_encoder=include_encoder, include_decoder=include_decoder)
    skip = tuple(p for p, keep in (("encoder.", include_encoder), ("decoder.", include_decoder)) if not keep)
    if skip:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(skip)}
    label = f"{info.source} ({info.layout} layout; architecture from {arch_from})"
    try:
        check_state_dict({k: v.shape for k, v in model.state_dict().items()}, state_dict, label)
    except CheckpointMismatchError as err:
        raise LTX2VAECheckpointError(
            "the checkpoint does not fit this LTX-2 VAE architecture", label, err.missing, err.unexpected, err.mismatched
        ) from None
    load_state_dict_strict(model, state_dict, label, dtype=dtype, device=device)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"LTX2VAE kept tensors on the meta device after loading: {left[:10]}")
    # The latent statistics stay float32: they normalise latents, they do not run convolutions.
    model.latents_mean.data = model.latents_mean.data.float()
    model.latents_std.data = model.latents_std.data.float()
    return model.eval().requires_grad_(False)
