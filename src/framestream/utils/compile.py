"""``torch.compile`` and CUDA-graph helpers for static-shape chunk calls.

Streaming models here run fixed-size chunks (a short last chunk is zero-padded), so
every call of a stream after the first has the same shapes and the same cache layout:
compiled with ``dynamic=False`` that is one graph per chunk shape, reused for the whole
stream. The first chunk differs (empty caches, the Wan VAE's first-frame rule) and gets
its own graph. :func:`recompiles` counts graph compilations from dynamo's counters, so
tests can check that no chunk after the first compiles again.

:class:`CudaGraphStep` captures one chunk call on CUDA and replays it. Captured
kernels read and write fixed addresses, so the step's inputs are copied into static
buffers and its cache slots are *updated in place* (``copy_``) instead of being
replaced. It lives in the caller's per-stream state, never on a model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["compile_function", "compile_module_forward", "recompiles", "CudaGraphStep"]

_RECOMPILE_LIMIT = 64
"""Graphs per compiled function (one per chunk / tile shape); dynamo's default of 8 is too few for tile sets."""


def _raise_recompile_limit() -> None:
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):  # renamed across torch versions
        if hasattr(dynamo_config, name) and getattr(dynamo_config, name) < _RECOMPILE_LIMIT:
            setattr(dynamo_config, name, _RECOMPILE_LIMIT)


def compile_function(fn: Callable[..., Any], *, mode: str | None = None, backend: str = "inductor") -> Callable[..., Any]:
    """``torch.compile(fn, dynamic=False)``: one specialised graph per input shape."""
    _raise_recompile_limit()
    return torch.compile(fn, dynamic=False, mode=mode, backend=backend)


def compile_module_forward(module: torch.nn.Module, *, mode: str | None = None, backend: str = "inductor") -> torch.nn.Module:
    """Compile ``module``'s forward in place (``nn.Module.compile``, static shapes); returns it."""
    _raise_recompile_limit()
    module.compile(dynamic=False, mode=mode, backend=backend)
    return module


def recompiles() -> int:
    """Graphs compiled so far in this process (dynamo's ``unique_graphs`` counter).

    Take the difference around a region to count its compilations.
    """
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class CudaGraphStep:
    """One chunk call captured as a CUDA graph and replayed with new inputs.

    ``fn(*inputs, slots)`` must return ``(output, new_slots)`` where ``slots`` /
    ``new_slots`` map names to tensors of unchanging shapes (a stream's caches after its
    first chunk). The first call runs ``warmup`` times eagerly on a side stream (kernel
    selection, lazy init), then captures; every call copies ``inputs`` into the static
    buffers, replays, copies ``new_slots`` into the static slot tensors *inside* the
    graph (in place: their addresses never change) and returns a clone of the output.
    ``slots`` handed to the first call become the stream's static slots (they are
    updated in place from then on).
    """

    def __init__(self, fn: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]], warmup: int = 2) -> None:
        self.fn = fn
        self.warmup = warmup
        self.graph: Any = None
        self.static_inputs: tuple[torch.Tensor, ...] = ()
        self.slots: dict[str, torch.Tensor] = {}
        self.static_output: torch.Tensor | None = None
        self.replays = 0

    def _body(self) -> torch.Tensor:
        out, new = self.fn(*self.static_inputs, self.slots)
        for name, value in new.items():
            target = self.slots[name]
            if value.data_ptr() != target.data_ptr():
                target.copy_(value)
        return out

    def __call__(self, *inputs: torch.Tensor, slots: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.graph is None:
            if not all(t.is_cuda for t in inputs):
                raise ValueError("CudaGraphStep needs CUDA tensors")
            self.static_inputs = tuple(t.clone() for t in inputs)
            self.slots = slots
            before = {k: v.clone() for k, v in slots.items()}
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.warmup):  # warm-up runs must not advance the stream
                    self._body()
                    for k, v in before.items():
                        self.slots[k].copy_(v)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_output = self._body()
            for k, v in before.items():  # capture does not run the kernels: restore, then replay for real
                self.slots[k].copy_(v)
        elif slots is not self.slots:
            raise ValueError("a CudaGraphStep belongs to one stream: pass the same slots every call")
        for static, new in zip(self.static_inputs, inputs):
            if static.shape != new.shape:
                raise ValueError(f"CudaGraphStep captured shape {tuple(static.shape)}, got {tuple(new.shape)}")
            static.copy_(new)
        self.graph.replay()
        self.replays += 1
        assert self.static_output is not None
        return self.static_output.clone()
