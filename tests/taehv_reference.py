"""Test helpers for TAEHV: an independent frame-by-frame reference and the flashdreams loader.

``sequential_decode`` / ``sequential_encode`` follow the published TAEHV description one
frame at a time (a work queue walking the layers in causal order, each MemBlock fed the
previous frame it saw), a different algorithm from framestream's chunk-parallel
streaming, so agreement checks the streaming rules, not just a re-run of the same code.

``load_flashdreams_taehv`` loads ``flashdreams/recipes/taehv/impl.py`` (flashdreams 0.1.0,
Apache-2.0) by file path, with tiny stand-ins for the three flashdreams modules it imports
that would pull triton / hub code; the real ``cuda_graph`` / ``compile`` / ``checkpoint``
leaf modules are loaded from the same tree. The tree is found as an installed
``flashdreams`` distribution or at ``$FLASHDREAMS_ROOT`` (an unpacked wheel, e.g.
``pip download flashdreams==0.1.0 --no-deps`` then unzip).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from framestream.models.taehv.layers import MemBlock, TGrow, TPool


def _walk_one_frame(layers: nn.Sequential, memory: list, queue: deque) -> torch.Tensor | None:
    """Advance the work queue until one output frame ``(B, C, H, W)`` comes out, or it runs dry."""
    while queue:
        x, i = queue.popleft()
        if i == len(layers):
            return x
        layer = layers[i]
        if isinstance(layer, MemBlock):
            past = torch.zeros_like(x) if memory[i] is None else memory[i]
            memory[i] = x
            queue.appendleft((layer(x, past), i + 1))
        elif isinstance(layer, TPool):
            memory[i] = (memory[i] or []) + [x]
            if len(memory[i]) == layer.stride:
                stacked = torch.cat(memory[i], 1)  # frames on channels, oldest first
                memory[i] = []
                queue.appendleft((layer.conv(stacked), i + 1))
        elif isinstance(layer, TGrow):
            grown = layer.conv(x)
            for child in reversed(grown.chunk(layer.stride, 1)):
                queue.appendleft((child, i + 1))
        else:
            queue.appendleft((layer(x), i + 1))
    return None


def _run_frames(layers: nn.Sequential, frames: torch.Tensor) -> torch.Tensor:
    queue: deque = deque((frames[:, t], 0) for t in range(frames.shape[1]))
    memory: list = [None] * len(layers)
    out = []
    while queue:
        y = _walk_one_frame(layers, memory, queue)
        if y is not None:
            out.append(y)
    return torch.stack(out, 1)


@torch.no_grad()
def sequential_decode(model, latents: torch.Tensor) -> torch.Tensor:
    """Frames in [0, 1] of a whole clip, decoded one frame at a time (first r-1 frames dropped)."""
    y = _run_frames(model.decoder, latents)
    p = model.arch.patch_size
    if p > 1:
        b, t = y.shape[:2]
        z = torch.nn.functional.pixel_shuffle(y.flatten(0, 1), p)
        y = z.view(b, t, *z.shape[1:])
    return y.clamp(0, 1)[:, model.arch.frames_to_trim:]


@torch.no_grad()
def sequential_encode(model, frames: torch.Tensor) -> torch.Tensor:
    """Latents of a whole clip, one frame at a time, the tail padded with the last frame."""
    p = model.arch.patch_size
    if p > 1:
        b, t = frames.shape[:2]
        z = torch.nn.functional.pixel_unshuffle(frames.flatten(0, 1), p)
        frames = z.view(b, t, *z.shape[1:])
    r = model.arch.temporal_ratio
    missing = (-frames.shape[1]) % r
    if missing:
        frames = torch.cat([frames, frames[:, -1:].expand(-1, missing, -1, -1, -1)], 1)
    return _run_frames(model.encoder, frames)


# ------------------------------------------------------------------ flashdreams
def flashdreams_root() -> Path | None:
    """Directory holding the ``flashdreams`` package tree, or None when it is not available."""
    env = os.environ.get("FLASHDREAMS_ROOT")
    if env and (Path(env) / "flashdreams" / "recipes" / "taehv" / "impl.py").is_file():
        return Path(env)
    spec = importlib.util.find_spec("flashdreams")  # finds the package without running its __init__
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations))).parent
        if (root / "flashdreams" / "recipes" / "taehv" / "impl.py").is_file():
            return root
    return None


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_flashdreams_taehv(root: Path, monkeypatch) -> types.ModuleType:
    """flashdreams' ``recipes/taehv/impl.py`` as a module; every sys.modules entry made here
    goes through ``monkeypatch`` so it is undone after the test."""
    pkg = root / "flashdreams"

    def package(name: str) -> None:
        module = types.ModuleType(name)
        module.__path__ = []  # a namespace stand-in: nothing of the real __init__ runs
        monkeypatch.setitem(sys.modules, name, module)

    for name in ("flashdreams", "flashdreams.core", "flashdreams.core.checkpoint", "flashdreams.infra",
                 "flashdreams.recipes", "flashdreams.recipes.taehv"):
        package(name)

    load_mod = types.ModuleType("flashdreams.core.checkpoint.load")
    load_mod.load_checkpoint = lambda path: torch.load(path, map_location="cpu", weights_only=True)
    monkeypatch.setitem(sys.modules, load_mod.__name__, load_mod)

    @dataclass
    class StreamingDecoderCache:  # the one name impl.py takes from infra.decoder
        pass

    decoder_mod = types.ModuleType("flashdreams.infra.decoder")
    decoder_mod.StreamingDecoderCache = StreamingDecoderCache
    monkeypatch.setitem(sys.modules, decoder_mod.__name__, decoder_mod)

    for name, rel in (
        ("flashdreams.infra.compile", "infra/compile.py"),
        ("flashdreams.infra.cuda_graph", "infra/cuda_graph.py"),
        ("flashdreams.recipes.taehv.checkpoint", "recipes/taehv/checkpoint.py"),
        ("flashdreams.recipes.taehv.impl", "recipes/taehv/impl.py"),
    ):
        monkeypatch.setitem(sys.modules, name, None)  # registers the key so monkeypatch removes it later
        _load_file(name, pkg / rel)
    return sys.modules["flashdreams.recipes.taehv.impl"]
