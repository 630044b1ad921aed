"""Loading Wan DiT checkpoints: diffusers and original key layouts, config detection, strict checks.

Two layouts exist for the same tensors:

==========================================  ==============================================
original Wan (``WanModel``)                 diffusers (``WanTransformer3DModel``, ours)
==========================================  ==============================================
``patch_embedding``                         ``patch_embedding``
``text_embedding.0`` / ``.2``               ``condition_embedder.text_embedder.linear_1`` / ``_2``
``time_embedding.0`` / ``.2``               ``condition_embedder.time_embedder.linear_1`` / ``_2``
``time_projection.1``                       ``condition_embedder.time_proj``
``blocks.N.self_attn.{q,k,v}``              ``blocks.N.attn1.to_{q,k,v}``
``blocks.N.self_attn.o``                    ``blocks.N.attn1.to_out.0``
``blocks.N.self_attn.norm_{q,k}``           ``blocks.N.attn1.norm_{q,k}``
``blocks.N.cross_attn.*``                   ``blocks.N.attn2.*`` (same sub-names)
``blocks.N.norm3`` (cross-attn LayerNorm)   ``blocks.N.norm2``
``blocks.N.ffn.0`` / ``ffn.2``              ``blocks.N.ffn.net.0.proj`` / ``ffn.net.2``
``blocks.N.modulation``                     ``blocks.N.scale_shift_table``
``head.head``                               ``proj_out``
``head.modulation``                         ``scale_shift_table``
==========================================  ==============================================

(The original calls its parameter-free norms norm1 / norm2 and the affine cross-attention
norm norm3; diffusers orders them norm1 / norm2 (affine) / norm3.) The map is exact in both
directions: :func:`original_to_diffusers_key` and :func:`diffusers_to_original_key` are
inverses on every T2V key, and keys outside the table are left unchanged so that the strict
check reports them.

:func:`load_wan_transformer` accepts a file or a directory, detects the layout from the keys,
reads a ``config.json`` next to the weights (diffusers or original format) when no
architecture is given, builds the network on the meta device and materialises the
checkpoint tensors directly (no double allocation), failing with a
:class:`~framestream.utils.state_dict.CheckpointMismatchError` that lists every missing,
unexpected and mis-shaped key.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch

from framestream.models.wan.transformer.config import WanTransformerArchConfig
from framestream.models.wan.transformer.model import WanDiT
from framestream.utils.state_dict import (
    CheckpointMismatchError,
    check_state_dict,
    load_state_dict_strict,
    read_state_dict,
    remap_keys,
)

__all__ = [
    "original_to_diffusers_key",
    "diffusers_to_original_key",
    "to_diffusers_layout",
    "to_original_layout",
    "detect_layout",
    "load_wan_transformer",
    "read_wan_checkpoint",
    "save_wan_checkpoint",
    "cast_wan_dit",
    "keep_in_fp32",
    "WAN_DIT_FILES_HELP",
    "WrongWanModelError",
    "read_wan_checkpoint_shapes",
    "check_wan_checkpoint_model",
    "check_wan_checkpoint_file",
]

logger = logging.getLogger(__name__)

Layout = Literal["diffusers", "original"]

# (original, diffusers) names of whole modules outside the blocks.
_TOP_LEVEL = [
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.head", "proj_out"),
    ("patch_embedding", "patch_embedding"),
]
# (original, diffusers) names of modules inside ``blocks.N.``.
_IN_BLOCK = [
    ("self_attn.q", "attn1.to_q"),
    ("self_attn.k", "attn1.to_k"),
    ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"),
    ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn.q", "attn2.to_q"),
    ("cross_attn.k", "attn2.to_k"),
    ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn.norm_k", "attn2.norm_k"),
    ("norm3", "norm2"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
]
# Whole-parameter renames (no ``.weight`` / ``.bias`` suffix).
_PARAMS_TOP = [("head.modulation", "scale_shift_table")]
_PARAMS_BLOCK = [("modulation", "scale_shift_table")]

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
_SUFFIXES = ("weight", "bias")


def _rename(key: str, to_diffusers: bool) -> str:
    src, dst = (0, 1) if to_diffusers else (1, 0)
    match = _BLOCK_RE.match(key)
    if match:
        prefix, rest = f"blocks.{match.group(1)}.", match.group(2)
        for pair in _PARAMS_BLOCK:
            if rest == pair[src]:
                return prefix + pair[dst]
        module, _, leaf = rest.rpartition(".")
        if leaf in _SUFFIXES:
            for pair in _IN_BLOCK:
                if module == pair[src]:
                    return f"{prefix}{pair[dst]}.{leaf}"
        return key
    for pair in _PARAMS_TOP:
        if key == pair[src]:
            return pair[dst]
    module, _, leaf = key.rpartition(".")
    if leaf in _SUFFIXES:
        for pair in _TOP_LEVEL:
            if module == pair[src]:
                return f"{pair[dst]}.{leaf}"
    return key


def original_to_diffusers_key(key: str) -> str:
    """Original Wan state-dict key -> diffusers key (unknown keys unchanged)."""
    return _rename(key, to_diffusers=True)


def diffusers_to_original_key(key: str) -> str:
    """diffusers state-dict key -> original Wan key (unknown keys unchanged)."""
    return _rename(key, to_diffusers=False)


def to_diffusers_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return remap_keys(state_dict, original_to_diffusers_key)


def to_original_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return remap_keys(state_dict, diffusers_to_original_key)


_I2V_MARKERS = ("img_emb.", "k_img", "v_img", "norm_k_img", "image_embedder", "add_k_proj", "add_v_proj")
_ORIGINAL_MARKERS = ("time_embedding.", "text_embedding.", "time_projection.", "head.head.", ".self_attn.", ".cross_attn.")
_DIFFUSERS_MARKERS = ("condition_embedder.", "proj_out.", ".attn1.", ".attn2.")


def detect_layout(keys: list[str] | Mapping[str, object]) -> Layout:
    """``"diffusers"`` or ``"original"`` from the key names; raises on I2V or unrecognised checkpoints."""
    names = list(keys)
    i2v = [k for k in names if any(m in k for m in _I2V_MARKERS)]
    if i2v:
        raise ValueError(
            f"this is a Wan 2.1 image-to-video checkpoint with a CLIP image branch ({i2v[0]!r}, ...), which is not "
            "supported; image-to-video runs on Wan 2.2 TI2V-5B (wan2.2-ti2v-5b --image)"
        )
    orig = sum(any(m in k for m in _ORIGINAL_MARKERS) for k in names)
    diff = sum(any(m in k for m in _DIFFUSERS_MARKERS) for k in names)
    if orig and not diff:
        return "original"
    if diff and not orig:
        return "diffusers"
    sample = ", ".join(names[:5])
    raise ValueError(
        f"cannot tell the Wan DiT checkpoint layout (original-style keys: {orig}, diffusers-style keys: {diff}; "
        f"first keys: {sample}); is this a Wan 2.1 T2V transformer checkpoint?"
    )


# ------------------------------------------------------------------------------ files
WAN_DIT_FILES_HELP = (
    "expected the Wan 2.1 DiT weights: diffusion_pytorch_model*.safetensors (+ config.json) from "
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers (transformer/) or Wan-AI/Wan2.1-T2V-1.3B, or a Self-Forcing "
    "checkpoint (self_forcing_dmd.pt from gdhe17/Self-Forcing)"
)

_WRAPPER_PREFIXES = ("model.", "module.", "_orig_mod.", "_fsdp_wrapped_module.")


def _strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a wrapper prefix shared by every key (Self-Forcing saves ``model.blocks...``)."""
    changed = True
    while changed and state_dict:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
                changed = True
    return state_dict


def _resolve_dir(path: Path) -> Path:
    """A diffusers pipeline repo keeps the DiT under ``transformer/``."""
    if (path / "transformer").is_dir() and not any(path.glob("diffusion_pytorch_model*.safetensors")):
        return path / "transformer"
    return path


def read_wan_checkpoint(path: str | Path, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """Read the DiT tensors of a file or directory (wrapper prefixes stripped, layout untouched).

    Self-Forcing training checkpoints (``{"generator": ..., "generator_ema": ...}``) are
    unwrapped, preferring the EMA weights when ``use_ema``. Sharded safetensors without an
    index (``diffusion_pytorch_model-0000N-of-0000M.safetensors``) are merged.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Wan DiT checkpoint not found: {path}; {WAN_DIT_FILES_HELP}")
    if path.is_dir():
        path = _resolve_dir(path)
        shards = sorted(path.glob("diffusion_pytorch_model-*-of-*.safetensors"))
        has_single = (path / "diffusion_pytorch_model.safetensors").is_file()
        has_index = (path / "diffusion_pytorch_model.safetensors.index.json").is_file()
        if shards and not has_single and not has_index:
            from safetensors.torch import load_file

            merged: dict[str, torch.Tensor] = {}
            for shard in shards:
                merged.update(load_file(str(shard), device="cpu"))
            return _strip_prefixes(merged)
        try:
            return _strip_prefixes(read_state_dict(path))
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err}; {WAN_DIT_FILES_HELP}") from err
    if path.suffix in (".pt", ".pth", ".ckpt", ".bin"):
        try:
            loaded = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(loaded, dict) and ("generator" in loaded or "generator_ema" in loaded):
            key = "generator_ema" if use_ema and "generator_ema" in loaded else "generator"
            if key not in loaded:
                key = "generator_ema"
            logger.info("using the %r weights of %s", key, path.name)
            loaded = loaded[key]
        for wrapper in ("state_dict", "model", "module"):
            if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
                loaded = loaded[wrapper]
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise ValueError(f"{path} does not hold a state dict of tensors")
        return _strip_prefixes(dict(loaded))
    return _strip_prefixes(read_state_dict(path))


def _find_config(path: Path) -> Path | None:
    folder = _resolve_dir(path) if path.is_dir() else path.parent
    candidate = folder / "config.json"
    return candidate if candidate.is_file() else None


def arch_from_config_file(config_path: str | Path) -> WanTransformerArchConfig:
    """Architecture from a diffusers or original Wan ``config.json``."""
    data = json.loads(Path(config_path).read_text())
    if "num_attention_heads" in data or data.get("_class_name") == "WanTransformer3DModel":
        return WanTransformerArchConfig.from_diffusers_config(data)
    if "dim" in data and "num_heads" in data:
        return WanTransformerArchConfig.from_original_config(data)
    raise ValueError(f"{config_path} is neither a diffusers nor an original Wan transformer config")


def _infer_arch(state_dict: Mapping[str, torch.Tensor]) -> WanTransformerArchConfig:
    """Architecture from tensor shapes (diffusers keys), assuming Wan's head dim of 128."""
    patch = state_dict["patch_embedding.weight"]
    dim, in_ch = patch.shape[0], patch.shape[1]
    head_dim = 128
    if dim % head_dim:
        raise ValueError(f"cannot infer the head count of a width-{dim} DiT: pass arch= or a config.json")
    layers = 1 + max(int(m.group(1)) for k in state_dict if (m := _BLOCK_RE.match(k)))
    proj = state_dict["proj_out.weight"]
    return WanTransformerArchConfig(
        patch_size=tuple(patch.shape[2:]),
        num_attention_heads=dim // head_dim,
        attention_head_dim=head_dim,
        in_channels=in_ch,
        out_channels=proj.shape[0] // int(torch.tensor(patch.shape[2:]).prod()),
        text_dim=state_dict["condition_embedder.text_embedder.linear_1.weight"].shape[1],
        freq_dim=state_dict["condition_embedder.time_embedder.linear_1.weight"].shape[1],
        ffn_dim=state_dict["blocks.0.ffn.net.0.proj.weight"].shape[0],
        num_layers=layers,
        cross_attn_norm="blocks.0.norm2.weight" in state_dict,
    )


# -------------------------------------------------------------------------- dtype policy
_FP32_COMPONENTS = {"time_embedder", "time_proj", "scale_shift_table", "norm1", "norm2", "norm3", "norm_out"}


def keep_in_fp32(name: str) -> bool:
    """Parameters kept in fp32 under a half weight dtype: time embedding, modulation tables, LayerNorms."""
    return any(part in _FP32_COMPONENTS for part in name.split("."))


def cast_wan_dit(dit: WanDiT, dtype: torch.dtype) -> WanDiT:
    """Cast weights to ``dtype``, keeping :func:`keep_in_fp32` parameters in fp32."""
    for name, param in dit.named_parameters():
        target = torch.float32 if keep_in_fp32(name) else dtype
        if param.dtype != target:
            param.data = param.data.to(target)
    return dit


# ------------------------------------------------------------------------------ loading
def load_wan_transformer(
    path: str | Path,
    arch: WanTransformerArchConfig | None = None,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    layout: Literal["auto", "diffusers", "original"] = "auto",
    use_ema: bool = True,
    time_embedding_fp64: bool = True,
) -> WanDiT:
    """Build a :class:`WanDiT` from a checkpoint file or directory, strictly.

    Args:
        path: ``.safetensors`` / shard index / ``.pth`` / ``.pt`` file, or a directory
            (diffusers ``transformer/`` folder, a diffusers pipeline repo, or the original
            Wan repo with ``diffusion_pytorch_model*.safetensors``).
        arch: architecture; ``None`` reads ``config.json`` next to the weights (diffusers or
            original format) and otherwise infers it from the tensor shapes.
        dtype: weight dtype (time embedding, modulation and norms stay fp32).
        device: where the weights are materialised.
        layout: key layout, detected from the keys by default.
        use_ema: Self-Forcing checkpoints: take ``generator_ema`` rather than ``generator``.

    Raises:
        FileNotFoundError: no checkpoint at ``path`` (the message names the expected files).
        CheckpointMismatchError: keys or shapes do not match ``arch`` (lists all of them).
        ValueError: unknown layout, I2V checkpoint, unreadable config.
    """
    path = Path(path)
    state_dict = read_wan_checkpoint(path, use_ema=use_ema)
    found = detect_layout(state_dict) if layout == "auto" else layout
    if found == "original":
        state_dict = to_diffusers_layout(state_dict)
    config_path = _find_config(path)
    if arch is None:
        if config_path is not None:
            arch = arch_from_config_file(config_path)
        else:
            arch = _infer_arch(state_dict)
            logger.info("no config.json next to %s: inferred %s", path, arch)
    elif config_path is not None:
        try:
            described = arch_from_config_file(config_path)
        except (ValueError, KeyError, TypeError):
            described = None  # not a transformer config (e.g. a pipeline's): the strict key check decides
        if described is not None and described != arch:
            diff = {
                name: (getattr(described, name), getattr(arch, name))
                for name in described.__dataclass_fields__
                if getattr(described, name) != getattr(arch, name)
            }
            raise ValueError(
                f"{config_path} describes another Wan DiT than the requested architecture "
                f"(field: checkpoint vs requested) {diff}"
            )
    with torch.device("meta"):
        dit = WanDiT(arch, time_embedding_fp64=time_embedding_fp64)
    source = f"{path} ({found} layout)"
    try:
        load_state_dict_strict(dit, state_dict, source, dtype=dtype, device=device, keep_fp32=keep_in_fp32)
    except CheckpointMismatchError as err:
        if found == "original":
            # Report the keys as they are named in the file.
            err = CheckpointMismatchError(
                source,
                [diffusers_to_original_key(k) for k in err.missing],
                [diffusers_to_original_key(k) for k in err.unexpected],
                [(diffusers_to_original_key(k), a, b) for k, a, b in err.mismatched],
            )
        raise err from None
    return dit.eval()


def save_wan_checkpoint(
    dit: WanDiT,
    folder: str | Path,
    layout: Layout = "diffusers",
    filename: str = "diffusion_pytorch_model.safetensors",
) -> Path:
    """Write the DiT as ``folder/filename`` plus a ``config.json`` in the matching format."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in dit.state_dict().items()}
    if layout == "original":
        tensors = to_original_layout(tensors)
        config = dit.arch.to_original_config()
    else:
        config = {"_class_name": "WanTransformer3DModel", **dit.arch.to_diffusers_config()}
    out = folder / filename
    save_file(tensors, str(out))
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def check_wan_state_dict(dit: WanDiT, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state_dict`` (diffusers keys) fits ``dit``."""
    check_state_dict({k: v.shape for k, v in dit.state_dict().items()}, state_dict, source)


# --------------------------------------------------------------------- which model is it
class WrongWanModelError(ValueError):
    """The checkpoint holds another Wan DiT than the one asked for (one line: what it holds, what is needed)."""


def _safetensors_files(path: Path) -> list[Path] | None:
    """The safetensors files of a DiT checkpoint path, or None when it is not in safetensors form."""
    if path.is_dir():
        folder = _resolve_dir(path)
        files = sorted(folder.glob("diffusion_pytorch_model*.safetensors")) or sorted(folder.glob("*.safetensors"))
        return files or None
    if path.name.endswith(".safetensors.index.json"):
        index = json.loads(path.read_text())
        return [path.parent / name for name in sorted(set(index["weight_map"].values()))]
    return [path] if path.suffix == ".safetensors" else None


def read_wan_checkpoint_shapes(path: str | Path, use_ema: bool = True) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a DiT checkpoint without reading its tensors (safetensors headers; ``.pth`` memory-mapped)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Wan DiT checkpoint not found: {path}; {WAN_DIT_FILES_HELP}")
    files = _safetensors_files(path)
    if files is None:
        return {k: tuple(v.shape) for k, v in read_wan_checkpoint(path, use_ema=use_ema).items()}
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                shapes[key] = tuple(handle.get_slice(key).get_shape())
    return _strip_prefixes(shapes)  # type: ignore[arg-type,return-value]


_Signature = tuple[int, int, int, int, int, int, tuple[int, ...]]


def _arch_signature(arch: WanTransformerArchConfig) -> _Signature:
    """(width, in channels, out channels, blocks, ffn width, text width, patch) of an architecture."""
    return (
        arch.inner_dim,
        arch.in_channels,
        arch.out_channels,
        arch.num_layers,
        arch.ffn_dim,
        arch.text_dim,
        tuple(arch.patch_size),
    )


def _checkpoint_signature(shapes: Mapping[str, tuple[int, ...]]) -> _Signature | None:
    """The same signature read off diffusers-layout shapes; None when the key names are not a Wan DiT's."""
    try:
        patch = shapes["patch_embedding.weight"]
        patch_size = tuple(int(p) for p in patch[2:])
        out = shapes["proj_out.weight"][0] // max(1, math.prod(patch_size))
        layers = 1 + max(int(m.group(1)) for k in shapes if (m := _BLOCK_RE.match(k)))
        return (
            int(patch[0]),
            int(patch[1]),
            int(out),
            layers,
            int(shapes["blocks.0.ffn.net.0.proj.weight"][0]),
            int(shapes["condition_embedder.text_embedder.linear_1.weight"][1]),
            patch_size,
        )
    except (KeyError, ValueError, IndexError):
        return None


def _describe(signature: _Signature) -> str:
    width, cin, _, layers, ffn, text, _ = signature
    names = [name for name, preset in _presets().items() if _arch_signature(preset) == signature and name != "tiny"]
    known = f" ({names[0]})" if names else ""
    return f"width {width}, {cin} latent channels, {layers} blocks, ffn {ffn}, text width {text}{known}"


def _presets() -> dict[str, WanTransformerArchConfig]:
    from framestream.models.wan.transformer.config import WAN_ARCH_PRESETS

    return WAN_ARCH_PRESETS


def check_wan_checkpoint_model(
    shapes: Mapping[str, tuple[int, ...]],
    arch: WanTransformerArchConfig,
    source: str,
    wanted: str | None = None,
) -> None:
    """Raise :class:`WrongWanModelError` (one line) when diffusers-layout ``shapes`` are another Wan DiT than ``arch``.

    Silent when the keys are not recognisable: the strict loader then lists what is wrong.
    """
    held = _checkpoint_signature(shapes)
    need = _arch_signature(arch)
    if held is None or held == need:
        return
    raise WrongWanModelError(
        f"{source} holds a Wan DiT with {_describe(held)}, but {wanted or 'the requested model'} needs {_describe(need)}"
    )


def check_wan_checkpoint_file(
    path: str | Path,
    arch: WanTransformerArchConfig,
    wanted: str | None = None,
    layout: Literal["auto", "diffusers", "original"] = "auto",
    use_ema: bool = True,
) -> None:
    """Before loading anything: does the checkpoint at ``path`` hold the ``arch`` DiT? Reads headers only."""
    shapes = read_wan_checkpoint_shapes(path, use_ema=use_ema)
    found = detect_layout(shapes) if layout == "auto" else layout
    if found == "original":
        shapes = {original_to_diffusers_key(k): v for k, v in shapes.items()}
    check_wan_checkpoint_model(shapes, arch, str(path), wanted)
