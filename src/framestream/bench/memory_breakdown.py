"""Where a Wan VAE decode's peak memory goes: a per-stage breakdown of live tensor bytes.

``python -m framestream.bench.memory_breakdown [--base-dim 32] [--latent 1,16,5,48,48] [--tile 128] [--against-diffusers]``

A ``TorchDispatchMode`` counts the bytes of every tensor storage created while the
decode runs and frees it when the storage dies (the approach of the tiler's memory
tests). Each storage is labelled with the stage that allocated it (input, head of
chunk *i*, tail call *j* of chunk *i*, or outside any stage: the output buffer and
stitching), by wrapping the model's ``decode_head`` / ``decode_tail`` on the instance
for the run. At the moment the live total peaks, the live bytes are summed per label
class and reported with the weights and the causal caches held by the stream:

- ``weights``: parameters (allocated before the run, counted separately);
- ``caches``: causal-cache slots alive at the peak;
- ``head features``: head outputs alive at the peak (tile-major keeps every chunk's);
- ``tile activations``: everything else allocated inside the stage that is running (the
  whole chunk call when untiled);
- ``output``: the output video buffer and anything allocated outside the stages;
- ``allocator`` (CPU): peak RSS growth minus the live-tensor peak (fragmentation,
  allocator caches), from the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["LiveBytes", "decode_breakdown", "main"]


class LiveBytes(TorchDispatchMode):
    """Live tensor-storage bytes by label; snapshot of the composition at the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.label = "outside"
        self.live: dict[int, tuple[int, str]] = {}
        self.total = self.peak = 0
        self.at_peak: dict[str, int] = {}
        self.cache_ptrs: set[int] = set()

    def _free(self, key: int) -> None:
        n, _ = self.live.pop(key, (0, ""))
        self.total -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        # A view of an argument (a reshaped weight, a slice of the input) allocates nothing.
        inputs = {a.untyped_storage().data_ptr() for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key, n = storage.data_ptr(), storage.nbytes()
                if n and key not in self.live and key not in inputs:
                    self.live[key] = (n, self.label)
                    self.total += n
                    weakref.finalize(storage, self._free, key)
                    if self.total > self.peak:
                        self.peak = self.total
                        self._snapshot()
        return out

    def _snapshot(self) -> None:
        parts: dict[str, int] = {}
        for key, (n, label) in self.live.items():
            kind = "caches" if key in self.cache_ptrs else label
            parts[kind] = parts.get(kind, 0) + n
        self.at_peak = parts

    @contextmanager
    def stage(self, label: str) -> Iterator[None]:
        old, self.label = self.label, label
        try:
            yield
        finally:
            self.label = old


def _mark_cache(meter: LiveBytes, cache: Any) -> None:
    for t in getattr(cache, "slots", {}).values():
        meter.cache_ptrs.add(t.untyped_storage().data_ptr())


def decode_breakdown(vae: Any, z: torch.Tensor, run: Any) -> dict[str, Any]:
    """Run ``run(vae, z)`` under the meter with the head/tail calls labelled; returns the breakdown (bytes)."""
    meter = LiveBytes()
    head, tail = vae.decode_head, vae.decode_tail

    def labelled_head(x: torch.Tensor, cache: Any, **kw: Any) -> torch.Tensor:
        with meter.stage("head"):
            out = head(x, cache, **kw)
        _mark_cache(meter, cache)
        return out

    def labelled_tail(x: torch.Tensor, cache: Any, **kw: Any) -> torch.Tensor:
        with meter.stage("tile activations"):
            out = tail(x, cache, **kw)
        _mark_cache(meter, cache)
        return out

    chunk = vae.decode_chunk

    def labelled_chunk(x: torch.Tensor, cache: Any, **kw: Any) -> torch.Tensor:  # untiled: head and tail in one call
        with meter.stage("tile activations"):
            out = chunk(x, cache, **kw)
        _mark_cache(meter, cache)
        return out

    vae.decode_head, vae.decode_tail, vae.decode_chunk = labelled_head, labelled_tail, labelled_chunk
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        with meter, meter.stage("output"):
            out = run(vae, z)
            del out
    finally:
        del vae.decode_head, vae.decode_tail, vae.decode_chunk  # back to the class methods
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    weights = sum(p.numel() * p.element_size() for p in vae.parameters())
    parts = dict(meter.at_peak)
    if "head" in parts:  # head outputs are allocated inside the head stage: what outlives it is features
        parts["head features"] = parts.pop("head")
    return {
        "weights": weights,
        "live_peak": meter.peak,
        **{k: parts.get(k, 0) for k in ("caches", "head features", "tile activations", "output")},
        "rss_growth": max(0, rss1 - rss0),
    }


def live_peak(fn: Any) -> int:
    """Peak live tensor bytes while ``fn()`` runs (what ``torch.cuda.max_memory_allocated`` counts on a GPU)."""
    meter = LiveBytes()
    with meter:
        out = fn()
        del out
    return meter.peak


def diffusers_live_peaks(base_dim: int, z: torch.Tensor, tiles: list[int]) -> dict[str, int]:
    """Live-tensor peaks of diffusers' untiled and tiled (``tile//4`` px blend, as the bench) decodes of ``z``."""
    from framestream.bench.cases import diffusers_vae

    peaks = {}
    for tile in [None, *tiles]:
        vae = diffusers_vae(base_dim, 0, torch.device("cpu"), tile, None if tile is None else tile // 4)
        peaks["untiled" if tile is None else f"tiled_{tile}px"] = live_peak(lambda v=vae: v.decode(z).sample)
        del vae
    return peaks


def main(argv: list[str] | None = None) -> int:
    from framestream.bench.cases import arch_for
    from framestream.models.wan.vae import WanVAE, init_random_weights
    from framestream.tiling import TilingConfig, decode_tiled

    parser = argparse.ArgumentParser(prog="memory_breakdown", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-dim", type=int, default=32)
    parser.add_argument("--latent", default="1,16,5,48,48", help="latent shape B,C,T,h,w")
    parser.add_argument("--tile", type=int, action="append", default=None, help="tile px (repeatable; default 128 and 256)")
    parser.add_argument("--frame-slice", default="1", help="WanVAE.frame_slice: an int or none")
    parser.add_argument("--against-diffusers", action="store_true", help="also count diffusers' live peaks (same weights and latents)")
    parser.add_argument("--json", default=None, help="also write the report (MiB) to this file")
    args = parser.parse_args(argv)
    vae = init_random_weights(WanVAE(arch_for(args.base_dim), include_encoder=False), 0).eval().requires_grad_(False)
    vae.frame_slice = None if args.frame_slice.lower() == "none" else int(args.frame_slice)
    z = torch.randn(*[int(v) for v in args.latent.split(",")], generator=torch.Generator().manual_seed(1))
    report: dict[str, Any] = {"untiled": decode_breakdown(vae, z, lambda v, x: v.decode(x))}
    for tile in args.tile or [128, 256]:
        cfg = TilingConfig(tile_size_px=tile, tile_overlap_px=0)
        for order in ("tile", "frame"):
            report[f"tiled_{tile}px_{order}_major"] = decode_breakdown(vae, z, lambda v, x, c=cfg, o=order: decode_tiled(v, x, c, order=o))
    mib = {k: {n: round(b / 2**20, 2) for n, b in v.items()} for k, v in report.items()}
    if args.against_diffusers:
        theirs = diffusers_live_peaks(args.base_dim, z, args.tile or [128, 256])
        mib["diffusers_live_peak"] = {k: round(b / 2**20, 2) for k, b in theirs.items()}
        mib["live_peak_ratio_framestream_over_diffusers"] = {
            k: round(report[k if k == "untiled" else f"{k}_tile_major"]["live_peak"] / b, 3) for k, b in theirs.items()
        }
    text = json.dumps(mib, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
