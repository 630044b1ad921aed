"""Exact spatial tiling of the Wan VAE decoder and encoder (streaming, tile-batched, cache per tile).

Blended tilers (diffusers, mlx-video, :mod:`framestream.tiling.generic`) change the
result: every tile runs its own mid-block attention and seams are averaged. Here the
result *equals* untiled decoding/encoding (up to float rounding), because only the
stages without global coupling are tiled:

- **decode**: per latent chunk, :meth:`WanVAE.decode_head` (post_quant_conv, conv_in,
  mid block with its per-frame global attention) runs once on the whole latent frame
  (cheap: latent resolution). The tail (up blocks, norm_out, conv_out, unpatchify) runs
  on spatial tiles. A tile *owns* a block of latent cells (the owned blocks partition
  the frame) and reads its owned cells plus a context halo, clipped at the frame
  borders; the pixels of its owned cells are copied straight into the frame. No blend.
- **encode**: the front (patchify, conv_in, down blocks: the high-resolution part) runs
  on tiles; their owned latent cells are stitched into one latent-resolution feature
  map, and :meth:`WanVAE.encode_back` (mid-block attention) runs on it once.

Why it is exact. The tiled stages hold only convolutions, per-pixel RMS norms,
nearest resampling and parameter-free space/channel shuffles, so an output position
depends on a bounded window of input positions (:mod:`framestream.tiling.receptive_field`
derives it from the modules and measures it). Call a tile position *clean* at some
layer when its value equals the untiled one. At the crop's edges the zero padding of a
convolution replaces real neighbours, so each 3x3 layer erodes the clean region by one
position from every edge that is not a frame border (at a frame border the zero padding
is the untiled model's own, so nothing erodes). The halo is the total erosion of the
stage (the derived receptive field, e.g. 13 latent cells for the Wan 2.1/2.2 decoder
tail: 12.25 latents of reach), so the owned region stays clean to the end.

Why contamination does not grow over time. Each tile keeps its *own* causal cache
(the stage's cache slots, batch = the tile's rows), and its crop is the same for every
chunk. A causal conv at layer ``l`` reads the current chunk and the last two frames of
its own input from the cache, i.e. values that this same tile computed at this same
layer in earlier chunks, which are clean on exactly the same region (induction over
chunks). So the clean region of layer ``l`` is the same in every frame: a path back in
time through the cache still passes each layer once and erodes it once. The dependency
cone of an output pixel reaches arbitrarily far back in time but never farther in space
than the receptive field. (Measured: perturbing one latent cell in the first chunk
changes later chunks' pixels no farther away than within the chunk.)

Staged cropping (``staged=True``, the default). The remaining receptive field shrinks
after every block: the decoder tail of Wan 2.1 needs 13 latent cells of context at its
input, but after up block 0 (2x) only what the rest of the tail needs, and before
conv_out one pixel. The tile crops its features to that need after every block (via
the ``after_block`` hook of :meth:`WanVAE.decode_tail` / :meth:`WanVAE.encode_front`), so
the recomputed halo is small where the resolution (and the cache) is large. The
per-block needs come from the same interval propagation. Encoder crops must keep the
stride-2 phase of the global grid (the downsamplers pad asymmetrically,
``ZeroPad2d(0, 1, 0, 1)``, then take every other position; Wan 2.2's AvgDown3D
shortcut averages 2x2 groups): every encoder crop covers whole latent cells, i.e. it
starts and ends on multiples of the downsampling still ahead of it. The input crop
is aligned to the full factor (8 for Wan 2.1, 16 for Wan 2.2 including patchify; its
halo is the measured reach rounded up to that). At a crop's right end the pad reads
a zero where the frame has a real pixel; that only dirties positions outside the
need, like any crop edge.

Tile batching. Tiles whose crops agree at every stage (same input size, same crop
offsets and sizes after every block) form a group; groups are cut into calls of at most
``tile_batch_size`` tiles (:func:`framestream.tiling.batching.batch_schedule`). The tile
set of a stream is fixed, so each call's cache stays batched for the whole stream
(rows ``[j*B, (j+1)*B)`` belong to the call's tile ``j``). Batch rows never interact.

Streaming. :func:`iter_decode_tiled` yields each chunk's full-resolution frames as soon
as they are decoded, in order, each exactly once (no blend buffers, nothing carried:
memory does not grow with the number of frames). A :class:`WanTiledDecodeState` (head
cache, per-call tail caches, counters) continues a stream across calls; it lives only
where the caller keeps it, never on a module or function. Chunks have a static shape:
a short last chunk is zero-padded and ``num_padded`` keeps the padding out of every
cache. The caches dominate memory at high resolution (about 4 GiB in bf16 for Wan 2.1 at 720p),
so by default (``atomic_chunks=False``) every cache slot is written through as soon as
its layer has read it: one copy of the caches at the peak, and a failure inside a chunk
marks the state broken (it refuses to continue; start a new stream — a new call with a
fresh state is never affected). With ``atomic_chunks=True`` a chunk is committed to the
state (all caches at once) only after all its calls succeeded and right before its
frames are yielded, so an exception inside a chunk leaves the state as it was and the
same call can be retried, at the price of old and new caches coexisting until then.

Tile-major order (``decode_tiled(..., order="tile")``, the low-memory mode). The stream
above is frame-major: every chunk runs every tile, so all tiles' caches (about a
full-frame cache per layer) live for the whole stream. Tile-major runs the head over all
chunks first (keeping its latent-resolution features), then each tile batch over all
chunks with a fresh cache that is dropped before the next batch: one call's cache at a
time, the same pixels (same chunk shapes, padding, crops), but frames are final only at
the end, and there is no stream state to continue. ``out_dtype=torch.uint8`` stores the
video at one byte per channel. Use the frame-major stream when frames are needed early.

``TilingConfig`` for the exact path: ``tile_size_px`` is the largest *owned* tile side in
output pixels (decode) / input pixels (encode), a multiple of the spatial scale; tiles
of any size down to one latent are exact (small tiles are slow: the halo is recomputed).
``tile_overlap_px`` is **ignored** (still validated as a multiple of the scale): halos
are derived from the model, never configured. ``min_tile_px`` bounds the owned size
from below; ``temporal_tile_frames`` must be ``None`` (time is streamed in chunks of
``chunk_size`` latent frames instead); ``tile_batch_size`` is the largest number of
same-shape tiles per call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from framestream.models.wan.vae.cache import WanCausalCache
from framestream.models.wan.vae.config import WanVAEArchConfig
from framestream.models.wan.vae.model import LOGVAR_RANGE, WanVAE
from framestream.tiling.batching import batch_schedule
from framestream.tiling.planner import TilingConfig, plan_axis
from framestream.tiling.receptive_field import decoder_block_scales, encoder_block_scales, front_needs, tail_needs

__all__ = [
    "AxisCrop",
    "ExactTile",
    "ExactTilePlan",
    "WanTiledDecodeState",
    "WanTiledEncodeState",
    "plan_exact_decode",
    "plan_exact_encode",
    "iter_decode_tiled",
    "decode_tiled",
    "iter_encode_tiled",
    "encode_tiled",
]


# ---------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class AxisCrop:
    """One tile along one axis.

    ``own``: the latent cells ``[a, b)`` it owns. ``crop``: its input ``[start, end)`` (latent
    cells for decode, pixels for encode), owned cells plus halo, clipped at the frame.
    ``stages``: after every block, ``(offset, size)`` of the crop taken from the block's
    output (``(0, size)`` = no crop). ``out``: ``[start, end)`` of the tile's output in global
    output units (pixels for decode, latent cells for encode).
    """

    index: int
    own: tuple[int, int]
    crop: tuple[int, int]
    stages: tuple[tuple[int, int], ...]
    out: tuple[int, int]
    scale: int
    decode: bool

    @property
    def key(self) -> tuple:
        """What a batched call needs to be equal: the input size and every stage crop."""
        return (self.crop[1] - self.crop[0], self.stages)

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
    (lo, hi), needs = tail_needs(vae, (a * s, b * s - 1))
    start, end = max(0, lo - margin), min(length, hi + 1 + margin)
    start, end = min(start, a), max(end, b)  # a negative margin never cuts into the owned cells
    crop = (start, end)
    res = 1
    stages = []
    for up, (nlo, nhi) in zip(decoder_block_scales(vae), needs):
        start, end, res = start * up, end * up, res * up
        if staged:
            ns, ne = max(nlo, 0, start), min(nhi + 1, length * res, end)
            stages.append((ns - start, ne - ns))
            start, end = ns, ne
        else:
            stages.append((0, end - start))
    return AxisCrop(index, own, crop, tuple(stages), (start * p, end * p), s, True)


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
    """Plan the exact tiled decode of ``latent_hw`` latents (see the module doc for ``tiling``).

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
) -> ExactTilePlan:
    """Plan the exact tiled encode of ``video_hw`` pixels (multiples of the spatial scale).

    Raises ``ValueError`` when the encoder front is not local (attention in the down path).
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
    rows = tuple(_encode_axis(vae, h, i, o, staged, margin) for i, o in enumerate(_owned(h, th, mh)))
    cols = tuple(_encode_axis(vae, w, i, o, staged, margin) for i, o in enumerate(_owned(w, tw, mw)))
    return ExactTilePlan("encode", vae.arch, (h, w), (hh, ww), (h, w), rows, cols, batch, bool(staged), margin)


def _stage_hook(tile: ExactTile, staged: bool) -> Callable[[int, torch.Tensor], torch.Tensor] | None:
    """Crop after every block to the call's stage crops (equal for all tiles of a call)."""
    if not staged:
        return None
    cuts = list(zip(tile.row.stages, tile.col.stages))

    def hook(i: int, x: torch.Tensor) -> torch.Tensor:
        (ho, hn), (wo, wn) = cuts[i]
        if ho == 0 and wo == 0 and hn == x.shape[-2] and wn == x.shape[-1]:
            return x
        # A copy, so the uncropped block output is freed (the next block keeps its input alive).
        return x[..., ho : ho + hn, wo : wo + wn].contiguous()

    return hook


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


# ---------------------------------------------------------------------------- stream states
class _TiledState:
    """Common part of the decode/encode stream states."""

    def __init__(self) -> None:
        self.plan: ExactTilePlan | None = None
        self.batch_size: int | None = None
        self.calls: tuple[WanCausalCache, ...] = ()
        self.latent_frames = 0
        self.frames = 0
        self.broken = False

    @property
    def started(self) -> bool:
        """True once a chunk has been committed."""
        return self.latent_frames > 0

    def _global(self) -> WanCausalCache:
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Bytes held by all caches."""
        return self._global().nbytes + sum(c.nbytes for c in self.calls)

    def _check_continues(self, plan: ExactTilePlan, batch: int) -> None:
        if self.broken:
            raise ValueError(
                "this stream's state was left between chunks by a failure (atomic_chunks=False); "
                "start a new stream with a fresh state"
            )
        if not self.started:
            return
        if plan != self.plan:
            raise ValueError(
                "this state continues a stream with another tile plan (model, size or tiling differ); "
                "use a fresh state for a new stream"
            )
        if batch != self.batch_size:
            raise ValueError(f"this state's stream has batch size {self.batch_size}, got {batch}")


class WanTiledDecodeState(_TiledState):
    """Stream state of :func:`iter_decode_tiled`: pass the same object to every call of a stream.

    ``head``: the head's cache (whole latent frame); ``calls``: one tail cache per call of the
    plan (tiles of a call stacked along the batch); ``latent_frames`` / ``frames``: latents
    consumed and pixel frames produced so far. Not thread-safe: one stream, one state.
    """

    def __init__(self) -> None:
        super().__init__()
        self.head = WanCausalCache()

    def _global(self) -> WanCausalCache:
        return self.head

    def __repr__(self) -> str:
        return (
            f"WanTiledDecodeState({self.latent_frames} latents -> {self.frames} frames, "
            f"{len(self.calls)} tail caches, {self.nbytes / 2**20:.2f} MiB)"
        )


class WanTiledEncodeState(_TiledState):
    """Stream state of :func:`iter_encode_tiled`: ``back`` (latent-resolution cache), ``calls``
    (one front cache per call), ``frames`` / ``latent_frames`` consumed / produced so far."""

    def __init__(self) -> None:
        super().__init__()
        self.back = WanCausalCache()

    def _global(self) -> WanCausalCache:
        return self.back

    def __repr__(self) -> str:
        return (
            f"WanTiledEncodeState({self.frames} frames -> {self.latent_frames} latents, "
            f"{len(self.calls)} front caches, {self.nbytes / 2**20:.2f} MiB)"
        )


def _check_chunk_size(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return chunk_size


def _resolve_plan(
    kind: str,
    vae: WanVAE,
    hw: tuple[int, int],
    tiling: TilingConfig | ExactTilePlan | None,
    state: _TiledState,
    staged: bool,
) -> ExactTilePlan:
    if isinstance(tiling, ExactTilePlan):
        plan = tiling
        if plan.kind != kind:
            raise ValueError(f"got a {plan.kind} plan for a {kind}")
        if plan.arch != vae.arch:
            raise ValueError("the plan was made for another VAE architecture")
        if plan.in_hw != hw:
            raise ValueError(f"the plan is for input {plan.in_hw}, got {hw}")
        return plan
    if tiling is None and state.started:
        assert state.plan is not None
        return state.plan
    planner = plan_exact_decode if kind == "decode" else plan_exact_encode
    return planner(vae, hw, tiling, staged=staged)


# ---------------------------------------------------------------------------- decode
def _prepare_decode(
    vae: WanVAE,
    z: torch.Tensor,
    tiling: TilingConfig | ExactTilePlan | None,
    chunk_size: int,
    state: WanTiledDecodeState | None,
    staged: bool,
) -> tuple[ExactTilePlan, WanTiledDecodeState]:
    """Every check, before any work."""
    if not isinstance(vae, WanVAE) or not vae.has_decoder:
        raise ValueError("exact tiled decoding needs a WanVAE with a decoder")
    if not torch.is_tensor(z) or not z.is_floating_point() or z.dim() != 5:
        raise ValueError(f"latents must be a floating-point (B, C, T, h, w) tensor, got {getattr(z, 'shape', type(z).__name__)}")
    if z.shape[1] != vae.arch.z_dim:
        raise ValueError(f"latents must have z_dim={vae.arch.z_dim} channels, got {z.shape[1]}")
    if min(z.shape[0], z.shape[2], z.shape[3], z.shape[4]) < 1:
        raise ValueError(f"latents need a batch, a frame and a pixel, got shape {tuple(z.shape)}")
    _check_chunk_size(chunk_size)
    if state is None:
        state = WanTiledDecodeState()
    elif not isinstance(state, WanTiledDecodeState):
        raise TypeError(f"state must be a WanTiledDecodeState, got {type(state).__name__}")
    plan = _resolve_plan("decode", vae, (int(z.shape[3]), int(z.shape[4])), tiling, state, staged)
    state._check_continues(plan, int(z.shape[0]))
    return plan, state


def iter_decode_tiled(
    vae: WanVAE,
    z: torch.Tensor,
    tiling: TilingConfig | ExactTilePlan | None = None,
    *,
    chunk_size: int = 1,
    state: WanTiledDecodeState | None = None,
    staged: bool = True,
    atomic_chunks: bool = False,
) -> Iterator[tuple[torch.Tensor, int]]:
    """Decode latents ``(B, z_dim, T, h, w)`` exactly, tile by tile, yielding ``(frames, start)``.

    One item per chunk of ``chunk_size`` latent frames, in order: the chunk's frames
    ``(B, C, n, H, W)`` in the latents' dtype, and the index of its first frame within this
    call's output (``1 + 4(T-1)`` frames at the start of a stream, ``4T`` when ``state``
    continues one). Equals ``vae.decode(z)`` up to float rounding. ``tiling`` is a
    :class:`TilingConfig` (default ``TilingConfig()``; for a continuing ``state``, its plan) or
    an :class:`ExactTilePlan`. ``state`` is updated chunk by chunk (see the module doc);
    ``None`` decodes a self-contained video. All checks run before the first chunk.
    Gradients are not tracked. ``atomic_chunks=False`` replaces each call's cache as soon
    as the call is done instead of at the end of the chunk: about half the cache memory,
    but a failure inside a chunk then leaves the state unusable (it refuses to continue).
    """
    plan, state = _prepare_decode(vae, z, tiling, chunk_size, state, staged)
    return _decode_stream(vae, z, plan, state, chunk_size, bool(atomic_chunks))


def _run_tile_calls(
    stage: Callable[..., torch.Tensor],
    source: torch.Tensor,
    plan: ExactTilePlan,
    state: "_TiledState",
    pad: int,
    atomic: bool,
    new_output: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, list[WanCausalCache]]:
    """Run one chunk's tiled stage (decode tail / encode front) over every tile batch.

    Each batch of tiles gets its crop of ``source`` and its own cache; owned outputs are
    scattered into ``new_output(first_result)``. Atomic: the batches' caches are copies,
    returned for the caller to commit. Write-through: the state's caches are updated in
    place and the state is marked broken until the caller commits the chunk.
    """
    tiles = plan.tiles
    out: torch.Tensor | None = None
    calls = list(state.calls) if state.calls else [WanCausalCache() for _ in plan.batches]
    state.broken = not atomic  # cleared when the chunk is committed
    for ci, members in enumerate(plan.batches):
        group = [tiles[i] for i in members]
        cache = _shallow(calls[ci]) if atomic else calls[ci]
        y = stage(_gather(source, group), cache, num_padded=pad, after_block=_stage_hook(group[0], plan.staged), atomic=atomic)
        if out is None:
            out = new_output(y)
        _scatter(out, y, group, source.shape[0])
        calls[ci] = cache
        if not atomic:  # the state holds the caches being written through (no rollback)
            state.calls = tuple(calls)
        del y
    assert out is not None
    return out, calls


@torch.no_grad()
def _decode_stream(
    vae: WanVAE, z: torch.Tensor, plan: ExactTilePlan, state: WanTiledDecodeState, k: int, atomic: bool
) -> Iterator[tuple[torch.Tensor, int]]:
    b, t = z.shape[0], z.shape[2]
    out_h, out_w = plan.out_hw
    pos = 0
    for c0 in range(0, t, k):
        chunk = z[:, :, c0 : c0 + k]
        real = chunk.shape[2]
        pad = k - real
        if pad:
            chunk = F.pad(chunk, (0, 0, 0, 0, 0, pad))
        n = vae.decoded_frames(real, state.started)
        head = _shallow(state.head) if atomic else state.head
        feat = vae.decode_head(chunk, head, num_padded=pad, atomic=atomic)
        del chunk
        out, calls = _run_tile_calls(
            vae.decode_tail, feat, plan, state, pad, atomic, lambda y: y.new_empty(b, y.shape[1], n, out_h, out_w)
        )
        del feat
        assert out.shape[2] == n
        # Commit the whole chunk, right before handing its frames out.
        state.plan, state.batch_size, state.head, state.calls = plan, b, head, tuple(calls)
        state.latent_frames += real
        state.frames += n
        state.broken = False
        yield out, pos
        pos += n
        del out


def decode_tiled(
    vae: WanVAE,
    z: torch.Tensor,
    tiling: TilingConfig | ExactTilePlan | None = None,
    *,
    chunk_size: int = 1,
    state: WanTiledDecodeState | None = None,
    staged: bool = True,
    atomic_chunks: bool = False,
    on_frames_ready: Callable[[torch.Tensor, int], None] | None = None,
    order: Literal["frame", "tile"] = "frame",
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Whole-call form of :func:`iter_decode_tiled`: the output is allocated once and filled.

    ``on_frames_ready(frames, start)`` is called for every chunk as soon as it is final
    (frame-major: the decoder's float frames; tile-major: the chunk's slice of the output,
    in ``out_dtype``).

    ``order="frame"`` (default) walks chunks in the outer loop, every tile per chunk (the
    streaming order of :func:`iter_decode_tiled`): frames are final chunk by chunk, but the
    tail caches of *all* tiles (about a full-frame cache at every decoder layer) stay alive
    for the whole call.

    ``order="tile"`` is the low-memory mode: the head (mid-block attention, latent
    resolution) runs over all chunks first and its features of every chunk are kept (small:
    latent resolution); then each tile batch runs the tail over all chunks with its own
    fresh cache, writes its owned pixels into the output and drops its cache. Peak ≈ the
    head features of all chunks + ONE call's tail cache + one call's activations + the
    output. Same pixels as ``order="frame"`` (same chunk shapes, padding and stage crops).
    Frames are final only at the end (``on_frames_ready`` then runs for every chunk, in
    order): use the frame-major stream when frames are needed early. It decodes a
    self-contained video: ``state`` must be ``None`` (``ValueError`` otherwise), and
    ``atomic_chunks`` has no effect (no state to protect; caches are written through).

    ``out_dtype``: dtype of the returned video (default: the latents'). ``torch.uint8``
    converts every tile's (or chunk's) pixels with
    :func:`framestream.io.transfer.frames_to_uint8` (``channels_last=False``) before they
    are written, so the held video costs one byte per channel; the result equals
    ``frames_to_uint8`` of the float output. A floating dtype casts.
    """
    if order not in ("frame", "tile"):
        raise ValueError(f"order must be 'frame' or 'tile', got {order!r}")
    ok_dtype = isinstance(out_dtype, torch.dtype) and (out_dtype == torch.uint8 or out_dtype.is_floating_point)
    if out_dtype is not None and not ok_dtype:
        raise ValueError(f"out_dtype must be None, torch.uint8 or a floating dtype, got {out_dtype!r}")
    if order == "tile" and state is not None:
        raise ValueError(
            "order='tile' decodes a self-contained video and cannot continue a stream (state must be None); "
            "use order='frame' to stream with a WanTiledDecodeState"
        )
    plan, state = _prepare_decode(vae, z, tiling, chunk_size, state, staged)
    b, _, t, h, w = z.shape
    s = vae.spatial_ratio
    n_out = vae.decoded_frames(t, state.started)
    shape = (b, vae.arch.output_pixel_channels, n_out, h * s, w * s)
    convert = _converter(out_dtype)
    if order == "tile":
        output = _decode_tile_major(vae, z, plan, chunk_size, shape, out_dtype or z.dtype, convert)
        if on_frames_ready is not None:
            for start, n in _chunk_frames(vae, t, chunk_size):
                on_frames_ready(output[:, :, start : start + n], start)
        return output
    output = z.new_empty(shape, dtype=out_dtype or z.dtype)
    for frames, start in _decode_stream(vae, z, plan, state, chunk_size, bool(atomic_chunks)):
        output[:, :, start : start + frames.shape[2]] = convert(frames)
        if on_frames_ready is not None:
            on_frames_ready(frames, start)
    return output


def _converter(out_dtype: torch.dtype | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Pixels as written into the output: uint8 via ``frames_to_uint8``, else as they are (the copy casts)."""
    if out_dtype != torch.uint8:
        return lambda x: x
    from framestream.io.transfer import frames_to_uint8  # lazy: framestream.io pulls in video I/O

    return lambda x: frames_to_uint8(x, channels_last=False)


def _chunk_frames(vae: WanVAE, t: int, k: int) -> Iterator[tuple[int, int]]:
    """``(first output frame, frames)`` of every chunk of a self-contained decode."""
    pos = 0
    for c0 in range(0, t, k):
        n = vae.decoded_frames(min(k, t - c0), c0 > 0)
        yield pos, n
        pos += n


@torch.no_grad()
def _decode_tile_major(
    vae: WanVAE,
    z: torch.Tensor,
    plan: ExactTilePlan,
    k: int,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    convert: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``order="tile"`` of :func:`decode_tiled`: head over all chunks, then every call over all chunks."""
    b, t = z.shape[0], z.shape[2]
    # (1) The head on every chunk (own cache, written through), keeping its latent-resolution features.
    head = WanCausalCache()
    feats: list[tuple[torch.Tensor, int]] = []
    for c0 in range(0, t, k):
        chunk = z[:, :, c0 : c0 + k]
        pad = k - chunk.shape[2]
        if pad:
            chunk = F.pad(chunk, (0, 0, 0, 0, 0, pad))
        feats.append((vae.decode_head(chunk, head, num_padded=pad, atomic=False), pad))
        del chunk
    del head
    output = z.new_empty(shape, dtype=dtype)
    spans = list(_chunk_frames(vae, t, k))
    tiles = plan.tiles
    # (2) Every call (tile batch) over all chunks with a fresh cache, dropped before the next call.
    for members in plan.batches:
        group = [tiles[i] for i in members]
        hook = _stage_hook(group[0], plan.staged)
        cache = WanCausalCache()
        for (feat, pad), (start, n) in zip(feats, spans):
            y = vae.decode_tail(_gather(feat, group), cache, num_padded=pad, after_block=hook, atomic=False)
            assert y.shape[2] == n
            _scatter(output[:, :, start : start + n], y, group, b, convert)
            del y
        del cache
    return output


# ---------------------------------------------------------------------------- encode
def _prepare_encode(
    vae: WanVAE,
    x: torch.Tensor,
    tiling: TilingConfig | ExactTilePlan | None,
    chunk_size: int,
    state: WanTiledEncodeState | None,
    staged: bool,
) -> tuple[ExactTilePlan, WanTiledEncodeState]:
    if not isinstance(vae, WanVAE) or not vae.has_encoder:
        raise ValueError("exact tiled encoding needs a WanVAE with an encoder")
    a = vae.arch
    if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() != 5:
        raise ValueError(f"video must be a floating-point (B, C, T, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if x.shape[1] != a.pixel_channels:
        raise ValueError(f"video must have {a.pixel_channels} channels, got {x.shape[1]}")
    s, r = a.scale_factor_spatial, a.scale_factor_temporal
    if x.shape[0] < 1 or x.shape[3] < s or x.shape[4] < s or x.shape[3] % s or x.shape[4] % s:
        raise ValueError(f"video height and width must be positive multiples of {s}, got {tuple(x.shape[3:])}")
    _check_chunk_size(chunk_size)
    if state is None:
        state = WanTiledEncodeState()
    elif not isinstance(state, WanTiledEncodeState):
        raise TypeError(f"state must be a WanTiledEncodeState, got {type(state).__name__}")
    t = x.shape[2]
    if state.started:
        if t < r or t % r:
            raise ValueError(f"a continuing stream needs a positive multiple of {r} frames, got {t}")
    elif t < 1 or (t - 1) % r:
        raise ValueError(f"the first call of a stream needs 1 + {r}k frames, got {t}")
    plan = _resolve_plan("encode", vae, (int(x.shape[3]), int(x.shape[4])), tiling, state, staged)
    state._check_continues(plan, int(x.shape[0]))
    return plan, state


def iter_encode_tiled(
    vae: WanVAE,
    x: torch.Tensor,
    tiling: TilingConfig | ExactTilePlan | None = None,
    *,
    chunk_size: int = 1,
    state: WanTiledEncodeState | None = None,
    staged: bool = True,
    atomic_chunks: bool = False,
) -> Iterator[tuple[torch.Tensor, int]]:
    """Encode a video in [-1, 1] exactly, tile by tile, yielding ``(moments, start)`` per chunk.

    ``moments`` are the posterior moments ``(B, 2*z_dim, n, h, w)`` (mean, then raw
    log-variance) of the chunk's latent frames, as :meth:`WanVAE.encode_moments`; ``start``
    is the chunk's first latent within this call. Chunks follow :meth:`WanVAE.encode`: the
    stream's first frame alone, then ``4*chunk_size`` frames (a short last chunk is
    zero-padded). Equals the untiled encode up to float rounding. Gradients are not tracked.
    ``state`` and ``atomic_chunks`` work as in :func:`iter_decode_tiled`.
    """
    plan, state = _prepare_encode(vae, x, tiling, chunk_size, state, staged)
    return _encode_stream(vae, x, plan, state, chunk_size, bool(atomic_chunks))


def _encode_spans(t: int, k: int, r: int, started: bool) -> list[tuple[int, int, int, int]]:
    """The encoder chunks of ``t`` pixel frames: ``(first frame, frames used, real latents, padded latents)``.

    A stream's first frame is encoded alone; then ``k*r`` frames per chunk, the last one
    zero-padded to full size.
    """
    spans, start = [], 0
    if not started:
        spans.append((0, 1, 1, 0))
        start = 1
    while start < t:
        used = min(k * r, t - start)
        spans.append((start, used, used // r, k - used // r))
        start += used
    return spans


def _pixel_chunk(x: torch.Tensor, start: int, used: int, pad: int, r: int) -> torch.Tensor:
    """Frames ``[start, start+used)`` of ``x``, zero-padded by ``pad`` latents' worth of frames."""
    chunk = x[:, :, start : start + used]
    return F.pad(chunk, (0, 0, 0, 0, 0, pad * r)) if pad else chunk


@torch.no_grad()
def _encode_stream(
    vae: WanVAE, x: torch.Tensor, plan: ExactTilePlan, state: WanTiledEncodeState, k: int, atomic: bool
) -> Iterator[tuple[torch.Tensor, int]]:
    b = x.shape[0]
    r = vae.temporal_ratio
    grid_h, grid_w = plan.grid_hw
    pos = 0
    for start, used, real, pad in _encode_spans(x.shape[2], k, r, state.started):
        chunk = _pixel_chunk(x, start, used, pad, r)
        feats, calls = _run_tile_calls(
            vae.encode_front, chunk, plan, state, pad, atomic, lambda y: y.new_empty(b, y.shape[1], y.shape[2], grid_h, grid_w)
        )
        del chunk
        back = _shallow(state.back) if atomic else state.back
        moments = vae.encode_back(feats, back, num_padded=pad, atomic=atomic)
        del feats
        state.plan, state.batch_size, state.back, state.calls = plan, b, back, tuple(calls)
        state.frames += used
        state.latent_frames += real
        state.broken = False
        yield moments, pos
        pos += real
        del moments


@torch.no_grad()
def _encode_tile_major(vae: WanVAE, x: torch.Tensor, plan: ExactTilePlan, k: int, moments: torch.Tensor) -> None:
    """``order="tile"`` of :func:`encode_tiled`: every call over all chunks, then the back over all chunks."""
    b, t = x.shape[0], x.shape[2]
    r = vae.temporal_ratio
    grid_h, grid_w = plan.grid_hw
    spans = _encode_spans(t, k, r, started=False)
    feats: list[torch.Tensor | None] = [None] * len(spans)
    tiles = plan.tiles
    for members in plan.batches:
        group = [tiles[i] for i in members]
        hook = _stage_hook(group[0], plan.staged)
        cache = WanCausalCache()
        for i, (start, used, _, pad) in enumerate(spans):
            chunk = _pixel_chunk(x, start, used, pad, r)
            y = vae.encode_front(_gather(chunk, group), cache, num_padded=pad, after_block=hook, atomic=False)
            if feats[i] is None:
                feats[i] = y.new_empty(b, y.shape[1], y.shape[2], grid_h, grid_w)
            _scatter(feats[i], y, group, b)
            del y, chunk
        del cache
    back = WanCausalCache()
    pos = 0
    for i, (_, _, real, pad) in enumerate(spans):
        moments[:, :, pos : pos + real] = vae.encode_back(feats[i], back, num_padded=pad, atomic=False)
        feats[i] = None
        pos += real


def encode_tiled(
    vae: WanVAE,
    x: torch.Tensor,
    tiling: TilingConfig | ExactTilePlan | None = None,
    *,
    chunk_size: int = 1,
    state: WanTiledEncodeState | None = None,
    staged: bool = True,
    atomic_chunks: bool = False,
    return_logvar: bool = False,
    order: Literal["frame", "tile"] = "frame",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Whole-call form of :func:`iter_encode_tiled`, returning what :meth:`WanVAE.encode` returns:
    the posterior mean, or ``(mean, clamped logvar)`` with ``return_logvar``.

    ``order="tile"`` is the low-memory mode (as in :func:`decode_tiled`): every tile batch
    walks the whole clip through the high-resolution front with a fresh cache that is
    dropped before the next batch, the stitched latent-resolution features of every chunk
    are kept, then the back (mid-block attention) runs over them. Only one batch's front
    caches are alive at a time, instead of every tile's (which, with halos, can exceed the
    untiled cache). Same result as ``order="frame"``; ``state`` must be ``None``.
    """
    if order not in ("frame", "tile"):
        raise ValueError(f"order must be 'frame' or 'tile', got {order!r}")
    if order == "tile" and state is not None:
        raise ValueError(
            "order='tile' encodes a self-contained video and cannot continue a stream (state must be None); "
            "use order='frame' to stream with a WanTiledEncodeState"
        )
    plan, state = _prepare_encode(vae, x, tiling, chunk_size, state, staged)
    b, _, t, hh, ww = x.shape
    r, s, zd = vae.temporal_ratio, vae.spatial_ratio, vae.arch.z_dim
    n = t // r if state.started else 1 + (t - 1) // r
    moments = x.new_empty(b, 2 * zd, n, hh // s, ww // s)
    if order == "tile":
        _encode_tile_major(vae, x, plan, chunk_size, moments)
    else:
        for m, start in _encode_stream(vae, x, plan, state, chunk_size, bool(atomic_chunks)):
            moments[:, :, start : start + m.shape[2]] = m
    mean = moments[:, :zd].contiguous()
    if not return_logvar:
        return mean
    return mean, moments[:, zd:].clamp(*LOGVAR_RANGE)
