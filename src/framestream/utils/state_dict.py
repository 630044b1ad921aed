"""Reading checkpoints and loading them strictly into modules built on the meta device.

Shared by every model loader (Wan VAE, Wan DiT): one place decides how files are
read (``.pth``/``.pt`` with ``weights_only=True``, ``.safetensors``, sharded
safetensors with an index) and how a mismatch is reported (one error listing every
missing key, unexpected key and shape mismatch).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
import torch.nn as nn

__all__ = [
    "CheckpointMismatchError",
    "read_state_dict",
    "check_state_dict",
    "load_state_dict_strict",
    "remap_keys",
]


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not match the model it is loaded into."""

    def __init__(
        self,
        source: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    ) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched

        def listing(items: list[str], limit: int = 20) -> str:
            shown = ", ".join(items[:limit])
            return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

        parts = [f"checkpoint {source} does not match the model:"]
        if missing:
            parts.append(f"  {len(missing)} missing key(s): {listing(missing)}")
        if unexpected:
            parts.append(f"  {len(unexpected)} unexpected key(s): {listing(unexpected)}")
        if mismatched:
            shapes = [f"{k} (checkpoint {tuple(got)} vs model {tuple(want)})" for k, got, want in mismatched]
            parts.append(f"  {len(mismatched)} shape mismatch(es): {listing(shapes)}")
        super().__init__("\n".join(parts))


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a file or a directory, on CPU, without running pickled code.

    Accepts ``.safetensors``, ``.pth``/``.pt``/``.bin`` (loaded with ``weights_only=True``),
    a ``*.safetensors.index.json`` shard index, or a directory holding one of these
    (``diffusion_pytorch_model.safetensors`` and its sharded form are looked up first).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        candidates = [
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.safetensors.index.json",
            "model.safetensors",
            "model.safetensors.index.json",
        ]
        for name in candidates:
            if (path / name).is_file():
                return read_state_dict(path / name)
        found = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".pth", ".pt"))
        if len(found) == 1:
            return read_state_dict(path / found[0])
        raise FileNotFoundError(
            f"no checkpoint file in {path}: expected one of {candidates} or a single .safetensors/.pth file, found {found}"
        )
    name = path.name
    if name.endswith(".safetensors.index.json"):
        index = json.loads(path.read_text())
        shards = sorted(set(index["weight_map"].values()))
        merged: dict[str, torch.Tensor] = {}
        for shard in shards:
            merged.update(_read_safetensors(path.parent / shard))
        return merged
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
        # Some trainers wrap the weights: {"state_dict": ...} or {"model": ...}.
        for wrapper in ("state_dict", "model", "module"):
            if isinstance(loaded, dict) and wrapper in loaded and isinstance(loaded[wrapper], dict):
                loaded = loaded[wrapper]
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise ValueError(f"{path} does not hold a flat state dict of tensors")
        return loaded
    raise ValueError(f"unsupported checkpoint format {path.suffix!r} ({path}); use .safetensors or .pth")


def remap_keys(state_dict: Mapping[str, torch.Tensor], rename: Callable[[str], str]) -> dict[str, torch.Tensor]:
    """Apply ``rename`` to every key; raises if two keys map to the same name."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new_key = rename(key)
        if new_key in out:
            raise ValueError(f"key map sends two checkpoint keys to {new_key!r}")
        out[new_key] = value
    return out


def check_state_dict(
    expected: Mapping[str, torch.Size | tuple[int, ...]],
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    ignore_prefixes: Iterable[str] = (),
) -> None:
    """Raise :class:`CheckpointMismatchError` unless keys and shapes match exactly.

    Keys starting with one of ``ignore_prefixes`` are dropped from both sides first
    (used to load only the encoder or only the decoder of a VAE).
    """
    ignore = tuple(ignore_prefixes)
    want = {k: tuple(v) for k, v in expected.items() if not k.startswith(ignore)} if ignore else {k: tuple(v) for k, v in expected.items()}
    got = {k: tuple(v.shape) for k, v in state_dict.items() if not (ignore and k.startswith(ignore))}
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    mismatched = [(k, got[k], want[k]) for k in sorted(set(want) & set(got)) if got[k] != want[k]]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(source, missing, unexpected, mismatched)


def load_state_dict_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    keep_fp32: Callable[[str], bool] | None = None,
) -> nn.Module:
    """Check then materialise ``state_dict`` into ``module`` (which may live on the meta device).

    Parameters and buffers are replaced by the checkpoint tensors (cast to ``dtype``
    unless ``keep_fp32(name)`` says to keep them in fp32), so nothing is allocated
    twice. Non-persistent buffers still on meta are left for the module to rebuild.
    """
    expected = {k: v.shape for k, v in module.state_dict().items()}
    check_state_dict(expected, state_dict, source)
    converted = {}
    for key, value in state_dict.items():
        target_dtype = dtype if dtype is not None and value.is_floating_point() else value.dtype
        if keep_fp32 is not None and keep_fp32(key) and value.is_floating_point():
            target_dtype = torch.float32
        converted[key] = value.to(device=device, dtype=target_dtype)
    module.load_state_dict(converted, strict=True, assign=True)
    return module
