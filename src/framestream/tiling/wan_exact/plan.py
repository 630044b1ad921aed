"""Tile plans of the exact Wan tiler: owned blocks, context halos and per-block stage crops."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from framestream.models.wan.vae.config import WanVAEArchConfig
from framestream.models.wan.vae.model import WanVAE
from framestream.tiling.batching import batch_schedule
from framestream.tiling.planner import TilingConfig, plan_axis
from framestream.tiling.receptive_field import decoder_block_scales, encoder_block_scales, front_needs, tail_resnet_needs

__all__ = ["AxisCrop", "ExactTile", "ExactTilePlan", "MAX_ENCODE_HALO_OVERHEAD", "encode_halo_overhead", "plan_exact_decode", "plan_exact_encode"]

MAX_ENCODE_HALO_OVERHEAD = 1.5
"""Default cap on an exact tiled encode's recomputed input (see :func:`plan_exact_encode`)."""


@dataclass(frozen=True)
class AxisCrop:
    """One tile along one axis.

    ``own``: the latent cells ``[a, b)`` it owns. ``crop``: its input ``[start, end)`` (latent
    cells for decode, pixels for encode), owned cells plus halo, clipped at the frame.
    ``stages``: after every block, ``(offset, size)`` of the crop taken from the block's
    output (``(0, size)`` = no crop). ``resnet_stages`` (decode): per block, the same after each
    of its residual blocks, so the halo shrinks as soon as it is no longer needed (smaller
    caches); empty where a block is cropped only at its end. ``out``: ``[start, end)`` of the
    tile's output in global output units (pixels for decode, latent cells for encode).
    """

    index: int
    own: tuple[int, int]
    crop: tuple[int, int]
    stages: tuple[tuple[int, int], ...]
    out: tuple[int, int]
    scale: int
    decode: bool
    resnet_stages: tuple[tuple[tuple[int, int], ...], ...] = ()

    @property
    def key(self) -> tuple:
        """What a batched call needs to be equal: the input size and every stage crop."""
        return (self.crop[1] - self.crop[0], self.stages, self.resnet_stages)

    @property
    def own_out(self) -> slice:
        """Global output slice of the owned region."""
        f = self.scale if self.decode else 1
        return slice(self.own[0] * f, self.own[1] * f)

    @property
    def own_local(self) -> slice:
        """The owned region within the tile's output."""
        f = self.scale if self.decode else 1
        a = self.own[0] * f - self.out[0]
        return slice(a, a + (self.own[1] - self.own[0]) * f)

    @property
    def halo(self) -> tuple[int, int]:
        """Input context before/after the owned cells, in input units (clipped at the frame)."""
        f = 1 if self.decode else self.scale
        return (self.own[0] * f - self.crop[0], self.crop[1] - self.own[1] * f)

    def sizes(self) -> tuple[int, ...]:
        """Extent at the input and after every block (after cropping)."""
        return (self.crop[1] - self.crop[0], *(n for _, n in self.stages))


class ExactTile(NamedTuple):
    """A 2D tile: row-major index and its two axis crops."""

    index: int
    row: AxisCrop
    col: AxisCrop

    @property
    def key(self) -> tuple:
        return (self.row.key, self.col.key)


@dataclass(frozen=True)
class ExactTilePlan:
    """Where every tile reads, crops and writes; which tiles share a call. Plain data.

    ``grid_hw``: the latent grid; ``in_hw``/``out_hw``: input/output sizes (latents and pixels
    for decode, pixels and latents for encode). Plans compare by value; a stream's plan is
    fixed (its caches are laid out for it).
    """

    kind: str
    arch: WanVAEArchConfig
    grid_hw: tuple[int, int]
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    rows: tuple[AxisCrop, ...]
    cols: tuple[AxisCrop, ...]
    tile_batch_size: int
    staged: bool
    halo_margin: int = 0

    @cached_property
    def tiles(self) -> tuple[ExactTile, ...]:
        n = len(self.cols)
        return tuple(ExactTile(r.index * n + c.index, r, c) for r in self.rows for c in self.cols)

    @cached_property
    def batches(self) -> tuple[tuple[int, ...], ...]:
        """Tile indices of every call, in order: grouped by key, at most ``tile_batch_size`` each."""
        return tuple(tuple(b) for b in batch_schedule([t.key for t in self.tiles], self.tile_batch_size))

    @property
    def num_groups(self) -> int:
        """Distinct tile shapes (crop sizes and stage crops)."""
        return len({t.key for t in self.tiles})

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def __str__(self) -> str:
        unit_in, unit_out = ("latent", "px") if self.kind == "decode" else ("px", "latent")
        lines = [
            f"ExactTilePlan ({self.kind}, staged={self.staged}): {len(self.rows)} x {len(self.cols)} = {len(self)} tiles, "
            f"{self.in_hw[0]}x{self.in_hw[1]} {unit_in} -> {self.out_hw[0]}x{self.out_hw[1]} {unit_out}, "
            f"{self.num_groups} shape group(s), {len(self.batches)} call(s) per chunk",
        ]
        for name, axis in (("rows", self.rows), ("cols", self.cols)):
            for a in axis:
                lines.append(
                    f"  {name} {a.index:>3}: owns latents [{a.own[0]}:{a.own[1]}) reads {unit_in} [{a.crop[0]}:{a.crop[1]}) "
                    f"(halo {a.halo[0]}/{a.halo[1]}), stage crops {list(a.stages)}"
                )
        return "\n".join(lines)


def _positive_pair(hw: tuple[int, int], name: str) -> tuple[int, int]:
    if not isinstance(hw, (tuple, list)) or len(hw) != 2:
        raise ValueError(f"{name} must be a (height, width) pair, got {hw!r}")
    for v in hw:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must hold positive ints, got {hw!r}")
    return (int(hw[0]), int(hw[1]))


def _tile_units(tiling: TilingConfig | None, scale: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(tile, minimum) owned sizes in latent cells; validates the config for the exact path."""
    config = TilingConfig() if tiling is None else tiling
    if not isinstance(config, TilingConfig):
        raise TypeError(f"tiling must be a TilingConfig (or an ExactTilePlan), got {type(tiling).__name__}")
    if config.temporal_tile_frames is not None:
        raise ValueError(
            "exact tiling streams time in chunks (chunk_size); temporal_tile_frames must be None, "
            f"got {config.temporal_tile_frames}"
        )
    lt = config.in_latents(scale)  # tile / overlap / minimum must be multiples of the scale
    minimum = (1, 1) if config.min_tile_px is None else lt.minimum
    for t in lt.tile:
        if t < 1:
            raise ValueError(f"tile_size_px={config.tile_size_px!r} must be at least one latent ({scale} px)")
    return lt.tile, minimum


def _check_batch(tile_batch_size: int) -> int:
    if isinstance(tile_batch_size, bool) or not isinstance(tile_batch_size, int) or tile_batch_size < 1:
        raise ValueError(f"tile_batch_size must be an int >= 1, got {tile_batch_size!r}")
    return tile_batch_size


def _check_margin(halo_margin: int) -> int:
    if isinstance(halo_margin, bool) or not isinstance(halo_margin, int):
        raise ValueError(f"halo_margin must be an int, got {halo_margin!r}")
    return halo_margin


def _owned(length: int, tile: int, minimum: int) -> list[tuple[int, int]]:
    """Owned latent intervals partitioning ``[0, length)``: the balanced planner, no overlap."""
    tile = min(tile, length)
    return [(t.own_start, t.own_end) for t in plan_axis(length, tile, 0, min(minimum, tile))]


def _decode_axis(vae: WanVAE, length: int, index: int, own: tuple[int, int], staged: bool, margin: int) -> AxisCrop:
    s, p = vae.arch.scale_factor_spatial, vae.arch.patch
    a, b = own
    (lo, hi), needs, inner = tail_resnet_needs(vae, (a * s, b * s - 1))
    start, end = max(0, lo - margin), min(length, hi + 1 + margin)
    start, end = min(start, a), max(end, b)  # a negative margin never cuts into the owned cells
    crop = (start, end)
    res = 1
    stages, resnet_stages = [], []

    def cut(need: tuple[int, int]) -> tuple[int, int]:
        nonlocal start, end
        ns, ne = max(need[0], 0, start), min(need[1] + 1, length * res, end)
        step = (ns - start, ne - ns)
        start, end = ns, ne
        return step

    for up, need, block_inner in zip(decoder_block_scales(vae), needs, inner):
        # After each residual block (in the block's input grid), then after the block.
        resnet_stages.append(tuple(cut(n) for n in block_inner) if staged else ())
        start, end, res = start * up, end * up, res * up
        stages.append(cut(need) if staged else (0, end - start))
    return AxisCrop(index, own, crop, tuple(stages), (start * p, end * p), s, True, tuple(resnet_stages) if staged else ())


def _encode_axis(vae: WanVAE, length: int, index: int, own: tuple[int, int], staged: bool, margin: int) -> AxisCrop:
    s, p = vae.arch.scale_factor_spatial, vae.arch.patch
    a, b = own
    (lo, hi), needs = front_needs(vae, (a, b - 1))
    start = max(0, (lo // s - margin) * s)
    end = min(length * s, (-(-(hi + 1) // s) + margin) * s)
    start, end = min(start, a * s), max(end, b * s)
    crop = (start, end)
    downs = encoder_block_scales(vae)
    remaining = math.prod(downs)  # downsampling still ahead, in the current grid
    start, end = start // p, end // p
    stages = []
    for down, (nlo, nhi) in zip(downs, needs):
        start, end, remaining = start // down, end // down, remaining // down
        if staged:
            # Whole latent cells only: every crop spans [c0*f, c1*f) in a grid with f-fold
            # downsampling still ahead, so each stride-2 layer (and AvgDown3D's 2x2 groups)
            # sees the global phase and an even size.
            f = remaining
            ns = max((nlo // f) * f, 0, start)
            ne = min(-(-(nhi + 1) // f) * f, length * f, end)
            stages.append((ns - start, ne - ns))
            start, end = ns, ne
        else:
            stages.append((0, end - start))
    return AxisCrop(index, own, crop, tuple(stages), (start, end), s, False)


def plan_exact_decode(
    vae: WanVAE,
    latent_hw: tuple[int, int],
    tiling: TilingConfig | None = None,
    *,
    tile_batch_size: int | None = None,
    staged: bool = True,
    halo_margin: int = 0,
) -> ExactTilePlan:
    """Plan the exact tiled decode of ``latent_hw`` latents (``tiling``: see docs/exact_tiling.md).

    ``tile_batch_size`` overrides the config's. ``halo_margin`` adds latent cells of input
    context on every side (a negative margin breaks exactness: for tests).
    """
    if not isinstance(vae, WanVAE) or not vae.has_decoder:
        raise ValueError("plan_exact_decode needs a WanVAE with a decoder")
    h, w = _positive_pair(latent_hw, "latent_hw")
    s = vae.arch.scale_factor_spatial
    (th, tw), (mh, mw) = _tile_units(tiling, s)
    batch = _check_batch(tile_batch_size if tile_batch_size is not None else (tiling or TilingConfig()).tile_batch_size)
    margin = _check_margin(halo_margin)
    rows = tuple(_decode_axis(vae, h, i, o, staged, margin) for i, o in enumerate(_owned(h, th, mh)))
    cols = tuple(_decode_axis(vae, w, i, o, staged, margin) for i, o in enumerate(_owned(w, tw, mw)))
    return ExactTilePlan("decode", vae.arch, (h, w), (h, w), (h * s, w * s), rows, cols, batch, bool(staged), margin)


def plan_exact_encode(
    vae: WanVAE,
    video_hw: tuple[int, int],
    tiling: TilingConfig | None = None,
    *,
    tile_batch_size: int | None = None,
    staged: bool = True,
    halo_margin: int = 0,
    max_halo_overhead: float | None = None,
) -> ExactTilePlan:
    """Plan the exact tiled encode of ``video_hw`` pixels (multiples of the spatial scale).

    The encoder's halo is wide (about 60 px each side for Wan 2.1), so small tiles
    recompute more input than they own, and their caches (one per tile, halo included)
    outweigh what tiling saves: a tiled encode that costs more time *and* memory than the
    untiled one. ``max_halo_overhead`` caps the input pixels all tiles read per frame
    pixel: tiles that exceed it are enlarged (one latent cell per side at a time, up to
    the whole frame, which is the untiled encode) until they fit. ``None`` (default) keeps
    the requested tiles. The pipeline encoder and the encode jobs plan with
    :func:`framestream.tiling.wan_encode_budget.plan_exact_encode_safe`, which also requires
    the estimated peak memory to be below the untiled encode's. Raises ``ValueError`` when
    the encoder front is not local (attention in the down path).
    """
    if not isinstance(vae, WanVAE) or not vae.has_encoder:
        raise ValueError("plan_exact_encode needs a WanVAE with an encoder")
    hh, ww = _positive_pair(video_hw, "video_hw")
    s = vae.arch.scale_factor_spatial
    if hh % s or ww % s:
        raise ValueError(f"video height and width must be multiples of {s}, got {hh}x{ww}")
    h, w = hh // s, ww // s
    (th, tw), (mh, mw) = _tile_units(tiling, s)
    batch = _check_batch(tile_batch_size if tile_batch_size is not None else (tiling or TilingConfig()).tile_batch_size)
    margin = _check_margin(halo_margin)
    if max_halo_overhead is not None and not max_halo_overhead >= 1.0:
        raise ValueError(f"max_halo_overhead must be >= 1 (or None), got {max_halo_overhead!r}")
    while True:
        rows = tuple(_encode_axis(vae, h, i, o, staged, margin) for i, o in enumerate(_owned(h, th, mh)))
        cols = tuple(_encode_axis(vae, w, i, o, staged, margin) for i, o in enumerate(_owned(w, tw, mw)))
        overhead = encode_halo_overhead(rows, cols, (hh, ww))
        if max_halo_overhead is None or overhead <= max_halo_overhead or (th >= h and tw >= w):
            break
        th, tw = min(h, th + 1), min(w, tw + 1)
    return ExactTilePlan("encode", vae.arch, (h, w), (hh, ww), (h, w), rows, cols, batch, bool(staged), margin)


def encode_halo_overhead(rows: tuple[AxisCrop, ...], cols: tuple[AxisCrop, ...], video_hw: tuple[int, int]) -> float:
    """Input pixels all tiles read, per pixel of the frame (1.0 = no recomputation: one tile)."""
    read_h = sum(r.crop[1] - r.crop[0] for r in rows)
    read_w = sum(c.crop[1] - c.crop[0] for c in cols)
    return (read_h * read_w) / (video_hw[0] * video_hw[1])
