"""One chunk's tile calls of the exact Wan tiler: gather crops, run a batch, scatter owned outputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from framestream.models.wan.vae.cache import WanCausalCache
from framestream.tiling.wan_exact.plan import ExactTile, ExactTilePlan

if TYPE_CHECKING:
    from framestream.tiling.wan_exact.state import _TiledState

__all__: list[str] = []


class _StageCrops:
    """The stage hook of one call: crops after every block and after every residual block
    (equal for all tiles of a call). A crop is a copy, so the uncropped output is freed."""

    def __init__(self, tile: ExactTile) -> None:
        self.blocks = list(zip(tile.row.stages, tile.col.stages))
        self.resnets = [list(zip(r, c)) for r, c in zip(tile.row.resnet_stages, tile.col.resnet_stages)]

    @staticmethod
    def _crop(cut: tuple[tuple[int, int], tuple[int, int]], x: torch.Tensor) -> torch.Tensor:
        (ho, hn), (wo, wn) = cut
        if ho == 0 and wo == 0 and hn == x.shape[-2] and wn == x.shape[-1]:
            return x
        return x[..., ho : ho + hn, wo : wo + wn].contiguous()

    def __call__(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self._crop(self.blocks[i], x)

    def after_resnet(self, i: int, j: int, x: torch.Tensor) -> torch.Tensor:
        """After residual block ``j`` of up block ``i`` (see ``AxisCrop.resnet_stages``)."""
        cuts = self.resnets[i] if i < len(self.resnets) else ()
        return self._crop(cuts[j], x) if j < len(cuts) else x


def _stage_hook(tile: ExactTile, staged: bool) -> _StageCrops | None:
    """Crop after every block (and residual block) to the call's stage crops."""
    return _StageCrops(tile) if staged else None


def _gather(source: torch.Tensor, tiles: list[ExactTile]) -> torch.Tensor:
    """The input crops of ``tiles`` stacked along the batch (a view for a single tile)."""
    parts = [source[..., t.row.crop[0] : t.row.crop[1], t.col.crop[0] : t.col.crop[1]] for t in tiles]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def _scatter(
    dest: torch.Tensor,
    result: torch.Tensor,
    tiles: list[ExactTile],
    batch: int,
    convert: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> None:
    """Copy every tile's owned region of a batched result into ``dest`` (through ``convert`` if given)."""
    for j, t in enumerate(tiles):
        part = result[j * batch : (j + 1) * batch][..., t.row.own_local, t.col.own_local]
        dest[..., t.row.own_out, t.col.own_out] = part if convert is None else convert(part)


def _shallow(cache: WanCausalCache) -> WanCausalCache:
    """A cache sharing the tensors: writes land in the copy only (models replace slots, never edit them)."""
    return WanCausalCache(dict(cache.slots))


def _cache_on(cache: WanCausalCache, device: torch.device) -> WanCausalCache:
    """A copy of ``cache`` on ``device``; host copies of device tensors are pinned, so both
    directions run asynchronously on the current stream (stream order keeps them exact)."""
    slots = {}
    for key, t in cache.slots.items():
        if device.type == "cpu" and t.device.type == "cuda":
            slots[key] = torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
        else:
            slots[key] = t.to(device, non_blocking=True)
    return WanCausalCache(slots)


def _run_tile_calls(
    stage: Callable[..., torch.Tensor],
    source: torch.Tensor,
    plan: ExactTilePlan,
    state: "_TiledState",
    pad: int,
    atomic: bool,
    new_output: Callable[[torch.Tensor], torch.Tensor],
    offload: bool = False,
) -> tuple[torch.Tensor, list[WanCausalCache]]:
    """Run one chunk's tiled stage (decode tail / encode front) over every tile batch.

    Each batch of tiles gets its crop of ``source`` and its own cache; owned outputs are
    scattered into ``new_output(first_result)``. Atomic: the batches' caches are copies,
    returned for the caller to commit. Write-through: the state's caches are updated in
    place and the state is marked broken until the caller commits the chunk. ``offload``:
    every call's cache waits in host memory between its calls and visits the device only
    for its own call (a no-op when ``source`` is in host memory already).
    """
    tiles = plan.tiles
    out: torch.Tensor | None = None
    calls = list(state.calls) if state.calls else [WanCausalCache() for _ in plan.batches]
    offload = offload and source.device.type != "cpu"
    state.broken = not atomic  # cleared when the chunk is committed
    for ci, members in enumerate(plan.batches):
        group = [tiles[i] for i in members]
        # A device copy is already a copy: the state's (host) cache stays as it was until committed.
        cache = _cache_on(calls[ci], source.device) if offload else _shallow(calls[ci]) if atomic else calls[ci]
        y = stage(_gather(source, group), cache, num_padded=pad, after_block=_stage_hook(group[0], plan.staged), atomic=atomic)
        if out is None:
            out = new_output(y)
        _scatter(out, y, group, source.shape[0])
        calls[ci] = _cache_on(cache, torch.device("cpu")) if offload else cache
        del cache
        if not atomic:  # the state holds the caches being written through (no rollback)
            state.calls = tuple(calls)
        del y
    assert out is not None
    return out, calls


def _check_chunk_size(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return chunk_size


def _converter(out_dtype: torch.dtype | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Pixels as written into the output: uint8 via ``frames_to_uint8``, else as they are (the copy casts)."""
    if out_dtype != torch.uint8:
        return lambda x: x
    from framestream.io.transfer import frames_to_uint8  # lazy: framestream.io pulls in video I/O

    return lambda x: frames_to_uint8(x, channels_last=False)
