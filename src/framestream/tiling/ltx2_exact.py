"""Exact spatial and temporal tiling of the LTX-2 VAE (tile-batched, frames streamed per temporal tile).

The LTX-2 encoder and decoder hold no attention and no global operator: every layer is
a 3x3x3 convolution, a per-pixel norm, SiLU or a space/depth shuffle
(:mod:`framestream.tiling.ltx2_receptive_field`). So, unlike Wan, the *whole* encoder and
decoder are tiled, with no global head: a tile owns a block of latent cells (the owned
blocks partition the frame), reads its owned region plus a halo derived from the
layers, and its owned output is copied straight into the frame. No blending: the
result equals the untiled one up to float rounding.

Why it is exact. Call a position *clean* when its value equals the untiled one. At a
crop edge that is not a frame border, a convolution's padding (zeros, reflect, or the
replicated edge frame in time) replaces real neighbours, so each layer erodes the clean
region by its reach from that edge. At a frame border the padding is the untiled model's
own, so nothing erodes: a tile whose window touches the border at a stage keeps touching
it at every later stage (reflect padding at frame borders behaves as untiled). The
needed interval after every step is propagated backwards from the owned output
(:meth:`AxisProgram.needs`), so every value the owned output depends on is clean.

Time. The decoder's temporal upsamplers drop their first output frame; a window of
latent frames ``[a, b)`` therefore yields frames ``[2a, 2b-1)`` at the next level, and the
window rules account for that. The non-causal LTX-2 decoder (``decoder_causal=False``)
reads frames on both sides, so a temporal tile reads a halo before and after its owned
frames (the causal decoder only before). The encoder is causal and its temporal
downsamplers prepend the first frame, so it is tiled in space only (whole clip per tile).

Staged cropping and tile batching. After every step (each resnet, resampler and conv),
a tile's features are cropped to a window of the same size for every tile of that axis
(the largest need, aligned to the downsampling still ahead for the encoder), placed to
contain the tile's own need. Equal sizes at every stage mean every tile has one shape,
so tiles run stacked along the batch (``tile_batch_size`` per call) whatever their
position: edge tiles read a little more on their inner side instead of forming their
own shape group. Batch rows never interact (no batch statistics).

``TilingConfig`` for this path: ``tile_size_px`` is the largest *owned* side in pixels (a
multiple of 32), ``temporal_tile_frames`` the largest owned run of frames for the decoder
(a multiple of 8; None: the whole clip), ``tile_batch_size`` the stack size;
``tile_overlap_px`` / ``temporal_overlap_frames`` are ignored (halos are derived, never
configured); ``min_tile_px`` bounds the owned size from below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

import torch

from framestream.models.ltx2.vae.config import LTX2VAEArchConfig
from framestream.models.ltx2.vae.model import LTX2VAE, split_moments
from framestream.tiling.batching import batch_schedule
from framestream.tiling.ltx2_receptive_field import AxisProgram, decoder_program, encoder_program
from framestream.tiling.planner import TilingConfig, plan_axis

__all__ = [
    "LTX2AxisTile",
    "LTX2TilePlan",
    "plan_ltx2_decode",
    "plan_ltx2_encode",
    "iter_decode_tiled_ltx2",
    "decode_tiled_ltx2",
    "encode_tiled_ltx2",
]


@dataclass(frozen=True)
class LTX2AxisTile:
    """One tile along one axis (plain data).

    ``own``: output ``[start, end)`` it owns (pixels / frames for decode, latent cells for encode).
    ``window``: its input ``[start, end)``. ``crops[i]``: ``(offset, size)`` taken from the output of
    hooked step ``i`` (``None`` = no hook on that axis). ``out_start``: global position of the
    tile's first output.
    """

    index: int
    own: tuple[int, int]
    window: tuple[int, int]
    crops: tuple[tuple[int, int], ...]
    out_start: int

    @property
    def own_local(self) -> slice:
        """The owned region within the tile's output."""
        return slice(self.own[0] - self.out_start, self.own[1] - self.out_start)

    @property
    def own_slice(self) -> slice:
        return slice(*self.own)

    @property
    def window_slice(self) -> slice:
        return slice(*self.window)


def _plan_axis(program: AxisProgram, length: int, owned: list[tuple[int, int]], uniform: bool = True) -> tuple[LTX2AxisTile, ...]:
    """Windows at every stage for the owned output intervals: with ``uniform`` the same size for
    every tile (so tiles batch; see the module doc), else each tile's own (aligned) need."""
    lengths = program.lengths(length)
    align = program.alignment()
    n_stages = len(lengths)
    needs = [program.needs(a, b - 1, lengths) for a, b in owned]

    def aligned(iv: tuple[int, int], f: int) -> tuple[int, int]:
        return (iv[0] // f) * f, -(-(iv[1] + 1) // f) * f

    def size_at(k: int, group: list) -> int:
        return min(max(aligned(n[k], align[k])[1] - aligned(n[k], align[k])[0] for n in group), lengths[k])

    tiles = []
    for i, ((oa, ob), need) in enumerate(zip(owned, needs)):
        sizes = [size_at(k, needs if uniform else [need]) for k in range(n_stages)]
        start = min(aligned(need[0], align[0])[0], lengths[0] - sizes[0])
        window = (start, start + sizes[0])
        cur = window
        crops: list[tuple[int, int]] = []
        for k in range(len(program.steps)):
            fa, fb = program.step_forward(k, *cur)
            if program.hook_index[k] is None:
                cur = (fa, fb)
                continue
            lo, hi = need[k + 1]
            s = min(aligned((lo, hi), align[k + 1])[0], fb - sizes[k + 1])
            if s < fa or s + sizes[k + 1] < hi + 1:
                raise AssertionError(f"tile {i}: stage {k + 1} window cannot hold its need {need[k + 1]} within [{fa}, {fb})")
            crops.append((s - fa, sizes[k + 1]))
            cur = (s, s + sizes[k + 1])
        if not (cur[0] <= oa and ob <= cur[1]):
            raise AssertionError(f"tile {i}: output [{cur[0]}, {cur[1]}) does not hold its owned [{oa}, {ob})")
        tiles.append(LTX2AxisTile(i, (oa, ob), window, tuple(crops), cur[0]))
    return tuple(tiles)


def _owned_latents(length: int, tile: int, minimum: int) -> list[tuple[int, int]]:
    """Owned latent intervals partitioning ``[0, length)``: the balanced planner, no overlap."""
    tile = min(tile, length)
    return [(t.own_start, t.own_end) for t in plan_axis(length, tile, 0, min(minimum, tile))]


@dataclass(frozen=True)
class LTX2TilePlan:
    """Where every tile reads, crops and writes, and which tiles share a call. Plain data.

    ``temporal``: decode only, one entry per temporal tile (a single whole-clip tile when not
    tiling in time; the encoder is never tiled in time). ``rows`` / ``cols``: spatial axis tiles.
    """

    kind: str
    arch: LTX2VAEArchConfig
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    temporal: tuple[LTX2AxisTile, ...]
    rows: tuple[LTX2AxisTile, ...]
    cols: tuple[LTX2AxisTile, ...]
    tile_batch_size: int

    @cached_property
    def tiles(self) -> tuple[tuple[LTX2AxisTile, LTX2AxisTile], ...]:
        """Spatial tiles (row, col), row-major."""
        return tuple((r, c) for r in self.rows for c in self.cols)

    @cached_property
    def batches(self) -> tuple[tuple[int, ...], ...]:
        """Spatial tile indices of every call (per temporal tile): same shape, at most ``tile_batch_size``."""
        def shape(a: LTX2AxisTile) -> tuple[int, ...]:
            return (a.window[1] - a.window[0], *(n for _, n in a.crops))

        keys = [(shape(r), shape(c)) for r, c in self.tiles]
        return tuple(tuple(b) for b in batch_schedule(keys, self.tile_batch_size))

    @property
    def calls(self) -> int:
        """Model calls for the whole video."""
        return len(self.batches) * len(self.temporal)

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols) * len(self.temporal)

    def __str__(self) -> str:
        unit_in, unit_out = ("latent", "px") if self.kind == "decode" else ("px", "latent")
        lines = [
            f"LTX2TilePlan ({self.kind}): {len(self.temporal)} temporal x {len(self.rows)} x {len(self.cols)} tiles, "
            f"input {'x'.join(map(str, self.in_shape))} -> output {'x'.join(map(str, self.out_shape))}, "
            f"{len(self.batches)} call(s) per temporal tile (batch {self.tile_batch_size}), {self.calls} in all",
        ]
        for name, axis, u_in, u_out in (("time", self.temporal, "latent" if self.kind == "decode" else "frame", "frame"),
                                         ("rows", self.rows, unit_in, unit_out), ("cols", self.cols, unit_in, unit_out)):
            for a in axis:
                lines.append(f"  {name} {a.index:>3}: owns {u_out} [{a.own[0]}:{a.own[1]}) reads {u_in} [{a.window[0]}:{a.window[1]})")
        return "\n".join(lines)


def _config(tiling: TilingConfig | None) -> TilingConfig:
    config = TilingConfig() if tiling is None else tiling
    if not isinstance(config, TilingConfig):
        raise TypeError(f"tiling must be a TilingConfig or an LTX2TilePlan, got {type(tiling).__name__}")
    return config


def _spatial_units(config: TilingConfig, s: int) -> tuple[tuple[int, int], tuple[int, int]]:
    lt = config.in_latents(s)  # sizes must be multiples of the spatial ratio
    minimum = (1, 1) if config.min_tile_px is None else lt.minimum
    return lt.tile, minimum


def _batch(config: TilingConfig, override: int | None) -> int:
    b = config.tile_batch_size if override is None else override
    if isinstance(b, bool) or not isinstance(b, int) or b < 1:
        raise ValueError(f"tile_batch_size must be an int >= 1, got {b!r}")
    return b


def plan_ltx2_decode(
    vae: LTX2VAE, latent_shape: tuple[int, int, int], tiling: TilingConfig | None = None, *, tile_batch_size: int | None = None
) -> LTX2TilePlan:
    """Plan the exact tiled decode of ``(T, h, w)`` latents (works on a meta-device model)."""
    if not isinstance(vae, LTX2VAE) or not vae.has_decoder:
        raise ValueError("plan_ltx2_decode needs an LTX2VAE with a decoder")
    t, h, w = (int(v) for v in latent_shape)
    if min(t, h, w) < 1:
        raise ValueError(f"latent shape must be positive, got {latent_shape!r}")
    config = _config(tiling)
    s, r = vae.spatial_ratio, vae.temporal_ratio
    (th, tw), (mh, mw) = _spatial_units(config, s)
    batch = _batch(config, tile_batch_size)
    if config.temporal_tile_frames is None:
        t_owned = [(0, t)]
    else:
        if config.temporal_tile_frames % r:
            raise ValueError(f"temporal_tile_frames={config.temporal_tile_frames} is not a multiple of the temporal ratio {r}")
        t_owned = _owned_latents(t, config.temporal_tile_frames // r, 1)
    frames = vae.decoded_frames(t)
    # latent frames [a, b) own output frames [r*a - (r-1), r*b - (r-1)), the first one from 0
    t_out = [(max(0, r * a - (r - 1)), r * b - (r - 1)) for a, b in t_owned]
    space, time = decoder_program(vae, "space"), decoder_program(vae, "time")
    rows = _plan_axis(space, h, [(a * s, b * s) for a, b in _owned_latents(h, th, mh)])
    cols = _plan_axis(space, w, [(a * s, b * s) for a, b in _owned_latents(w, tw, mw)])
    temporal = _plan_axis(time, t, t_out, uniform=False)  # temporal tiles run one after another: no batching
    return LTX2TilePlan("decode", vae.arch, (t, h, w), (frames, h * s, w * s), temporal, rows, cols, batch)


def plan_ltx2_encode(
    vae: LTX2VAE, video_shape: tuple[int, int, int], tiling: TilingConfig | None = None, *, tile_batch_size: int | None = None
) -> LTX2TilePlan:
    """Plan the exact tiled encode of ``(T, H, W)`` frames (H, W multiples of 32; space only)."""
    if not isinstance(vae, LTX2VAE) or not vae.has_encoder:
        raise ValueError("plan_ltx2_encode needs an LTX2VAE with an encoder")
    t, hh, ww = (int(v) for v in video_shape)
    s, r = vae.spatial_ratio, vae.temporal_ratio
    if hh < s or ww < s or hh % s or ww % s:
        raise ValueError(f"video height and width must be positive multiples of {s}, got {hh}x{ww}")
    if t < 1 or (t - 1) % r:
        raise ValueError(f"LTX-2 encodes 1 + {r}k frames, got {t}")
    config = _config(tiling)
    if config.temporal_tile_frames is not None:
        raise ValueError("the LTX-2 encoder is causal and tiled in space only: temporal_tile_frames must be None")
    (th, tw), (mh, mw) = _spatial_units(config, s)
    batch = _batch(config, tile_batch_size)
    h, w = hh // s, ww // s
    space = encoder_program(vae, "space")
    rows = _plan_axis(space, hh, _owned_latents(h, th, mh))
    cols = _plan_axis(space, ww, _owned_latents(w, tw, mw))
    n = vae.encoded_frames(t)
    whole = LTX2AxisTile(0, (0, n), (0, t), (), 0)
    return LTX2TilePlan("encode", vae.arch, (t, hh, ww), (n, h, w), (whole,), rows, cols, batch)


def _resolve(kind: str, vae: LTX2VAE, shape: tuple[int, int, int], tiling, batch: int | None) -> LTX2TilePlan:
    if isinstance(tiling, LTX2TilePlan):
        if tiling.kind != kind or tiling.arch != vae.arch or tiling.in_shape != shape:
            raise ValueError(f"the plan is for a {tiling.kind} of {tiling.in_shape} with another model or size, got a {kind} of {shape}")
        return tiling
    planner = plan_ltx2_decode if kind == "decode" else plan_ltx2_encode
    return planner(vae, shape, tiling, tile_batch_size=batch)


def _hook(time: LTX2AxisTile | None, tiles: list[tuple[LTX2AxisTile, LTX2AxisTile]], rows_per_tile: int):
    """Crop every tile's rows of the stacked batch after each hooked step (offsets may differ per tile)."""

    def crop(i: int, x: torch.Tensor) -> torch.Tensor:
        to, tn = time.crops[i] if time is not None and time.crops else (0, x.shape[2])
        first = (tiles[0][0].crops[i], tiles[0][1].crops[i])
        if all((r.crops[i], c.crops[i]) == first for r, c in tiles):
            (ho, hn), (wo, wn) = first
            if (to, tn, ho, hn, wo, wn) == (0, x.shape[2], 0, x.shape[3], 0, x.shape[4]):
                return x
            return x[:, :, to : to + tn, ho : ho + hn, wo : wo + wn].contiguous()
        parts = []
        for j, (r, c) in enumerate(tiles):
            (ho, hn), (wo, wn) = r.crops[i], c.crops[i]
            parts.append(x[j * rows_per_tile : (j + 1) * rows_per_tile, :, to : to + tn, ho : ho + hn, wo : wo + wn])
        return torch.cat(parts, dim=0)

    return crop


def _gather(source: torch.Tensor, tiles: list[tuple[LTX2AxisTile, LTX2AxisTile]]) -> torch.Tensor:
    parts = [source[..., r.window_slice, c.window_slice] for r, c in tiles]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def _scatter(dest: torch.Tensor, result: torch.Tensor, tiles, rows_per_tile: int, t_local: slice) -> None:
    for j, (r, c) in enumerate(tiles):
        part = result[j * rows_per_tile : (j + 1) * rows_per_tile, :, t_local, r.own_local, c.own_local]
        dest[:, :, :, r.own_slice, c.own_slice] = part


def _prepare_decode(vae, z, tiling, temb, tile_batch_size) -> LTX2TilePlan:
    if not isinstance(vae, LTX2VAE):
        raise TypeError(f"expected an LTX2VAE, got {type(vae).__name__}")
    vae.check_latents(z, temb)
    return _resolve("decode", vae, tuple(int(v) for v in z.shape[2:]), tiling, tile_batch_size)


def iter_decode_tiled_ltx2(
    vae: LTX2VAE,
    z: torch.Tensor,
    tiling: TilingConfig | LTX2TilePlan | None = None,
    *,
    temb: torch.Tensor | None = None,
    tile_batch_size: int | None = None,
) -> Iterator[tuple[torch.Tensor, int]]:
    """Decode latents exactly, yielding ``(frames, start)`` per temporal tile as soon as its frames are final.

    Frames come in order, each exactly once; equal to ``vae.decode(z, temb)`` up to float
    rounding. All checks run before the first tile. Gradients are not tracked.
    """
    plan = _prepare_decode(vae, z, tiling, temb, tile_batch_size)
    return _decode_stream(vae, z, plan, temb)


@torch.no_grad()
def _decode_stream(vae: LTX2VAE, z: torch.Tensor, plan: LTX2TilePlan, temb: torch.Tensor | None) -> Iterator[tuple[torch.Tensor, int]]:
    b = z.shape[0]
    _, out_h, out_w = plan.out_shape
    tiles = plan.tiles
    for tt in plan.temporal:
        source = z[:, :, tt.window_slice]
        frames = None
        for members in plan.batches:
            group = [tiles[i] for i in members]
            t_rep = None if temb is None else temb.reshape(-1).repeat(len(group))
            y = vae.decode_raw(_gather(source, group), t_rep, after_step=_hook(tt, group, b))
            if frames is None:
                frames = y.new_empty(b, y.shape[1], tt.own[1] - tt.own[0], out_h, out_w)
            _scatter(frames, y, group, b, tt.own_local)
            del y
        assert frames is not None
        yield frames, tt.own[0]
        del frames


def decode_tiled_ltx2(
    vae: LTX2VAE,
    z: torch.Tensor,
    tiling: TilingConfig | LTX2TilePlan | None = None,
    *,
    temb: torch.Tensor | None = None,
    tile_batch_size: int | None = None,
    on_frames_ready: Callable[[torch.Tensor, int], None] | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Whole-call form of :func:`iter_decode_tiled_ltx2`: the output is allocated once and filled.

    ``on_frames_ready(frames, start)`` runs for every temporal tile as soon as its frames are
    final. ``out_dtype=torch.uint8`` stores the video at one byte per channel (rounded, as
    :func:`framestream.io.transfer.frames_to_uint8`).
    """
    if out_dtype not in (None, torch.uint8) and not (isinstance(out_dtype, torch.dtype) and out_dtype.is_floating_point):
        raise ValueError(f"out_dtype must be None, torch.uint8 or a floating dtype, got {out_dtype!r}")
    plan = _prepare_decode(vae, z, tiling, temb, tile_batch_size)

    def convert(x: torch.Tensor) -> torch.Tensor:  # a floating output casts in the copy
        if out_dtype != torch.uint8:
            return x
        from framestream.io.transfer import frames_to_uint8  # lazy: framestream.io pulls in video I/O

        return frames_to_uint8(x, channels_last=False)
    frames, hh, ww = plan.out_shape
    output = z.new_empty((z.shape[0], vae.arch.out_channels, frames, hh, ww), dtype=out_dtype or z.dtype)
    for part, start in _decode_stream(vae, z, plan, temb):
        output[:, :, start : start + part.shape[2]] = convert(part)
        if on_frames_ready is not None:
            on_frames_ready(part, start)
    return output


@torch.no_grad()
def encode_tiled_ltx2(
    vae: LTX2VAE,
    x: torch.Tensor,
    tiling: TilingConfig | LTX2TilePlan | None = None,
    *,
    tile_batch_size: int | None = None,
    return_logvar: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Encode a video in [-1, 1] exactly, tile by tile; returns what :meth:`LTX2VAE.encode` returns."""
    if not isinstance(vae, LTX2VAE):
        raise TypeError(f"expected an LTX2VAE, got {type(vae).__name__}")
    vae.check_video(x)
    plan = _resolve("encode", vae, tuple(int(v) for v in x.shape[2:]), tiling, tile_batch_size)
    b = x.shape[0]
    n, h, w = plan.out_shape
    moments = x.new_empty(b, vae.latent_channels + 1, n, h, w)
    tiles = plan.tiles
    everything = slice(None)
    for members in plan.batches:
        group = [tiles[i] for i in members]
        y = vae.encode_moments(_gather(x, group), after_step=_hook(None, group, b))
        _scatter(moments, y, group, b, everything)
        del y
    return split_moments(moments, vae.latent_channels, return_logvar)
