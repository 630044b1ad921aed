"""Tile planning: where the tiles go, what each one owns, and how they blend.

Everything here is pure integer arithmetic on plain frozen dataclasses, so a plan
can be printed, compared, and checked before any tensor is touched.

Units. An axis is planned in *units*: latent positions. A unit maps to
``in_scale`` input positions and ``out_scale`` output positions:

- decode (latent grid): input in latents (``in_scale=1``), output in pixels
  (``out_scale`` = spatial compression ratio);
- encode (pixel grid): input in pixels aligned to the factor (``in_scale`` = ratio),
  output in latents (``out_scale=1``).

Time can also use the *causal* mapping of causal video VAEs: ``T`` latents decode
to ``1 + (T-1)*s`` frames. A tile whose first latent ``a > 0`` re-decodes that
latent as its own "first frame" (an image-like frame that matches no frame of the
full decode), so it is placed at frame ``a*s`` with weight 0 and the tile blends
from frame ``a*s + 1`` on; with a one-latent overlap the tiles then abut exactly.

Tiles on an axis never drop edge positions and are never slivers: the count is
``n = ceil((L - O) / (T - O))`` and every tile gets the same size
``ceil((L + (n-1)*O) / n)`` (<= T, >= the minimum), with start positions spread
evenly (strides differ by at most one unit); overlaps are therefore ``>= O`` and
differ by at most one unit. Equal sizes mean a 2D plan has a single input shape,
so every tile can go into one batched call.

Blend ramps live in output space: tile ``i`` ramps down and tile ``i+1`` ramps up
over the same region, with complementary weights ``(j+0.5)/r`` and
``(r-j-0.5)/r`` (see :mod:`framestream.tiling.blend`), so the weights of all tiles
sum to one everywhere and no weight buffer is needed. When overlaps are so large
that three tiles cover a position, each ramp is clamped to end where the tile
after next starts, and the rest of the tile gets weight 0 (its ``tail``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from framestream.config import PrintableConfig, config_dataclass

__all__ = [
    "TilingConfig",
    "LatentTiling",
    "AxisTile",
    "Tile2D",
    "TilePlan",
    "VideoTilePlan",
    "plan_axis",
    "plan_tiles_2d",
    "plan_latent_grid",
    "plan_pixel_grid",
    "plan_temporal",
    "plan_video_decode",
]


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a (height, width) pair, got {value!r}")
        pair = (value[0], value[1])
    else:
        pair = (value, value)
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} must hold integers, got {value!r}")
    return pair


@config_dataclass
class TilingConfig(PrintableConfig):
    """How to cut a video into tiles. Sizes are in pixels and frames; see :meth:`in_latents`."""

    tile_size_px: int | tuple[int, int] = 256
    """Largest spatial tile side in pixels, square or (height, width); a multiple of the spatial scale."""

    tile_overlap_px: int | tuple[int, int] = 64
    """Least overlap between neighbouring tiles in pixels (the blend width); a multiple of the spatial scale."""

    min_tile_px: int | tuple[int, int] | None = None
    """Smallest tile side the planner may produce, in pixels; None: the overlap plus one latent."""

    temporal_tile_frames: int | None = None
    """Temporal tile length in pixel frames (= latent frames x temporal scale); None: no temporal tiling."""

    temporal_overlap_frames: int | None = None
    """Temporal overlap in pixel frames (a multiple of the temporal scale); None: one latent frame."""

    tile_batch_size: int = 1
    """Same-shape tiles stacked along the batch and run in one call (peak activations grow with it)."""

    def __post_init__(self) -> None:
        tile = _pair(self.tile_size_px, "tile_size_px")
        overlap = _pair(self.tile_overlap_px, "tile_overlap_px")
        for t, o in zip(tile, overlap):
            if t < 1:
                raise ValueError(f"tile_size_px must be positive, got {self.tile_size_px!r}")
            if o < 0:
                raise ValueError(f"tile_overlap_px must be >= 0, got {self.tile_overlap_px!r}")
            if o >= t:
                default = " (the default)" if self.tile_overlap_px == 64 else ""
                raise ValueError(
                    f"tile_overlap_px ({self.tile_overlap_px!r}{default}) must be smaller than tile_size_px "
                    f"({self.tile_size_px!r}); pass a smaller tile_overlap_px (the exact Wan tiler ignores it: "
                    "tile_overlap_px=0 is fine there)"
                )
        if self.min_tile_px is not None:
            minimum = _pair(self.min_tile_px, "min_tile_px")
            for m, t in zip(minimum, tile):
                if m < 1 or m > t:
                    raise ValueError(f"min_tile_px ({self.min_tile_px!r}) must be in [1, tile_size_px={self.tile_size_px!r}]")
        if self.temporal_tile_frames is None:
            if self.temporal_overlap_frames is not None:
                raise ValueError("temporal_overlap_frames is set but temporal_tile_frames is None (no temporal tiling)")
        else:
            if isinstance(self.temporal_tile_frames, bool) or not isinstance(self.temporal_tile_frames, int) or self.temporal_tile_frames < 1:
                raise ValueError(f"temporal_tile_frames must be a positive int or None, got {self.temporal_tile_frames!r}")
            if self.temporal_overlap_frames is not None:
                if self.temporal_overlap_frames < 0:
                    raise ValueError(f"temporal_overlap_frames must be >= 0, got {self.temporal_overlap_frames}")
                if self.temporal_overlap_frames >= self.temporal_tile_frames:
                    raise ValueError(
                        f"temporal_overlap_frames ({self.temporal_overlap_frames}) must be smaller than "
                        f"temporal_tile_frames ({self.temporal_tile_frames})"
                    )
        if isinstance(self.tile_batch_size, bool) or not isinstance(self.tile_batch_size, int) or self.tile_batch_size < 1:
            raise ValueError(f"tile_batch_size must be an int >= 1, got {self.tile_batch_size!r}")

    def in_latents(self, spatial_scale: int, temporal_scale: int = 1) -> "LatentTiling":
        """The same sizes in latent units; raises ``ValueError`` unless they are multiples of the scales."""
        if spatial_scale < 1 or temporal_scale < 1:
            raise ValueError(f"scales must be >= 1, got spatial={spatial_scale}, temporal={temporal_scale}")

        def units(value: int | tuple[int, int], name: str) -> tuple[int, int]:
            pair = _pair(value, name)
            for v in pair:
                if name == "tile_size_px" and 0 < v < spatial_scale:
                    raise ValueError(
                        f"{name}={value!r} is smaller than one latent cell ({spatial_scale} px); use a multiple of {spatial_scale}"
                    )
                if v % spatial_scale:
                    raise ValueError(f"{name}={value!r} is not a multiple of the spatial scale {spatial_scale}")
            return (pair[0] // spatial_scale, pair[1] // spatial_scale)

        tile = units(self.tile_size_px, "tile_size_px")
        overlap = units(self.tile_overlap_px, "tile_overlap_px")
        if self.min_tile_px is None:
            minimum = (overlap[0] + 1, overlap[1] + 1)
        else:
            minimum = units(self.min_tile_px, "min_tile_px")
        t_tile = t_overlap = None
        if self.temporal_tile_frames is not None:
            if self.temporal_tile_frames % temporal_scale:
                raise ValueError(f"temporal_tile_frames={self.temporal_tile_frames} is not a multiple of the temporal scale {temporal_scale}")
            t_tile = self.temporal_tile_frames // temporal_scale
            if self.temporal_overlap_frames is None:
                t_overlap = 1
            elif self.temporal_overlap_frames % temporal_scale:
                raise ValueError(
                    f"temporal_overlap_frames={self.temporal_overlap_frames} is not a multiple of the temporal scale {temporal_scale}"
                )
            else:
                t_overlap = self.temporal_overlap_frames // temporal_scale
            if t_overlap >= t_tile:
                raise ValueError(
                    f"temporal tile of {t_tile} latent frame(s) needs an overlap below it, got {t_overlap} "
                    f"(temporal_tile_frames={self.temporal_tile_frames}, temporal scale {temporal_scale})"
                )
        return LatentTiling(tile=tile, overlap=overlap, minimum=minimum, temporal_tile=t_tile, temporal_overlap=t_overlap)


@dataclass(frozen=True)
class LatentTiling:
    """A :class:`TilingConfig` converted to latent units (spatial pairs are (height, width))."""

    tile: tuple[int, int]
    overlap: tuple[int, int]
    minimum: tuple[int, int]
    temporal_tile: int | None
    temporal_overlap: int | None


@dataclass(frozen=True)
class AxisTile:
    """One tile along one axis: plain data.

    ``start``/``end``: the input interval (input units). ``out_start``/``out_end``: where the
    tile's output lands (output units). Its blend weight over that output is
    ``lead`` zeros, a ``ramp_in`` rising ramp, ones, a ``ramp_out`` falling ramp, ``tail`` zeros.
    ``own_start``/``own_end``: the output region it owns (split at the middle of each ramp);
    owned regions partition the output, for tilers that crop instead of blending.
    """

    index: int
    start: int
    end: int
    out_start: int
    out_end: int
    lead: int
    ramp_in: int
    ramp_out: int
    tail: int
    own_start: int
    own_end: int

    @property
    def size(self) -> int:
        """Input length."""
        return self.end - self.start

    @property
    def out_size(self) -> int:
        """Output length the tile must decode/encode to."""
        return self.out_end - self.out_start

    @property
    def weight_start(self) -> int:
        """First output position where this tile's weight is non-zero."""
        return self.out_start + self.lead

    @property
    def weight_end(self) -> int:
        """End of the output positions where this tile's weight is non-zero."""
        return self.out_end - self.tail

    @property
    def in_slice(self) -> slice:
        return slice(self.start, self.end)

    @property
    def out_slice(self) -> slice:
        return slice(self.out_start, self.out_end)

    @property
    def blend_spec(self) -> tuple[int, int, int, int, int]:
        """``(out_size, lead, ramp_in, ramp_out, tail)``: all a 1D blend mask depends on."""
        return (self.out_size, self.lead, self.ramp_in, self.ramp_out, self.tail)


def _unit_intervals(length: int, tile: int, overlap: int, minimum: int) -> list[tuple[int, int]]:
    if length <= tile:
        return [(0, length)]
    n = -(-(length - overlap) // (tile - overlap))
    size = -(-(length + (n - 1) * overlap) // n)
    if size < minimum:
        size = minimum
        n = -(-(length - overlap) // (size - overlap))
    span = length - size
    return [((i * span) // (n - 1), (i * span) // (n - 1) + size) for i in range(n)]


def _axis_tiles(units: list[tuple[int, int]], in_scale: int, out_scale: int, causal: bool) -> list[AxisTile]:
    n = len(units)
    if causal:
        outs = [(a * out_scale, 1 + (b - 1) * out_scale) for a, b in units]
        leads = [1 if a > 0 else 0 for a, _ in units]
    else:
        outs = [(a * out_scale, b * out_scale) for a, b in units]
        leads = [0] * n
    w_start = [os + lead for (os, _), lead in zip(outs, leads)]
    # End of tile i's non-zero weight: its output end, clamped to where tile i+2 takes over.
    w_end = [min(outs[i][1], w_start[i + 2]) if i + 2 < n else outs[i][1] for i in range(n)]
    for i in range(n - 1):
        if outs[i][1] < w_start[i + 1]:
            raise ValueError(f"tiles {i} and {i + 1} leave a gap in the output (a causal split needs an overlap of at least one latent)")
    mids = [w_start[i + 1] + (w_end[i] - w_start[i + 1]) // 2 for i in range(n - 1)]
    tiles = []
    for i, ((a, b), (os, oe)) in enumerate(zip(units, outs)):
        ramp_in = w_end[i - 1] - w_start[i] if i > 0 else 0
        ramp_out = w_end[i] - w_start[i + 1] if i + 1 < n else 0
        tiles.append(
            AxisTile(
                index=i,
                start=a * in_scale,
                end=b * in_scale,
                out_start=os,
                out_end=oe,
                lead=leads[i],
                ramp_in=ramp_in,
                ramp_out=ramp_out,
                tail=oe - w_end[i],
                own_start=mids[i - 1] if i > 0 else os,
                own_end=mids[i] if i + 1 < n else oe,
            )
        )
    return tiles


def plan_axis(
    length: int,
    tile: int,
    overlap: int,
    minimum: int = 1,
    *,
    in_scale: int = 1,
    out_scale: int = 1,
    causal: bool = False,
) -> list[AxisTile]:
    """Tiles covering ``length`` units with tiles of at most ``tile`` units overlapping by ``>= overlap``.

    A length ``<= tile`` gives one tile. Otherwise all tiles have the same size (``>= minimum``,
    ``<= tile``) and evenly spread starts; the first starts at 0 and the last ends at ``length``.
    ``in_scale``/``out_scale`` map units to input/output positions; ``causal`` uses the causal
    time mapping (``T`` units -> ``1 + (T-1)*out_scale`` outputs, see the module doc).
    """
    for name, value in (("length", length), ("tile", tile), ("minimum", minimum), ("in_scale", in_scale), ("out_scale", out_scale)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f"overlap must be an int >= 0, got {overlap!r}")
    if overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be smaller than tile ({tile})")
    if minimum > tile:
        raise ValueError(f"minimum ({minimum}) must not exceed tile ({tile})")
    if causal and length > tile and overlap < 1:
        raise ValueError("causal temporal tiling needs an overlap of at least one latent frame (each tile's first frame is re-decoded)")
    return _axis_tiles(_unit_intervals(length, tile, overlap, minimum), in_scale, out_scale, causal)


@dataclass(frozen=True)
class Tile2D:
    """One spatial tile: its row/column and the two axis tiles it is made of."""

    row: int
    col: int
    h: AxisTile
    w: AxisTile

    @property
    def in_slices(self) -> tuple[slice, slice]:
        """(height, width) slices of the input (latents for decode, pixels for encode)."""
        return (self.h.in_slice, self.w.in_slice)

    @property
    def out_slices(self) -> tuple[slice, slice]:
        """(height, width) slices of the output (pixels for decode, latents for encode)."""
        return (self.h.out_slice, self.w.out_slice)

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.h.size, self.w.size)

    @property
    def output_shape(self) -> tuple[int, int]:
        return (self.h.out_size, self.w.out_size)

    @property
    def ramps(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """((top, bottom), (left, right)) blend ramp lengths in output units."""
        return ((self.h.ramp_in, self.h.ramp_out), (self.w.ramp_in, self.w.ramp_out))


def _span(a: int, b: int) -> str:
    return f"[{a}:{b})"


@dataclass(frozen=True)
class TilePlan:
    """A 2D plan: row and column axis tiles and their row-major product."""

    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    rows: tuple[AxisTile, ...]
    cols: tuple[AxisTile, ...]
    in_unit: str = "latent"
    out_unit: str = "px"

    @cached_property
    def tiles(self) -> tuple[Tile2D, ...]:
        """All tiles, row-major."""
        return tuple(Tile2D(r.index, c.index, r, c) for r in self.rows for c in self.cols)

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def __iter__(self) -> Iterator[Tile2D]:
        return iter(self.tiles)

    def __getitem__(self, index: int) -> Tile2D:
        return self.tiles[index]

    def shape_groups(self) -> dict[tuple[int, int], list[Tile2D]]:
        """Tiles grouped by input (height, width), in order of first appearance: one batch per group."""
        groups: dict[tuple[int, int], list[Tile2D]] = {}
        for tile in self.tiles:
            groups.setdefault(tile.input_shape, []).append(tile)
        return groups

    def __str__(self) -> str:
        (ih, iw), (oh, ow) = self.in_hw, self.out_hw
        lines = [
            f"TilePlan: {len(self.rows)} x {len(self.cols)} = {len(self)} tiles, "
            f"input {ih}x{iw} {self.in_unit} -> output {oh}x{ow} {self.out_unit}",
            f"{'row':>4} {'col':>4} | {'in h':>12} {'in w':>12} | {'out h':>12} {'out w':>12} | "
            f"{'ramp h':>9} {'ramp w':>9} | {'owns h':>12} {'owns w':>12}",
        ]
        for t in self.tiles:
            lines.append(
                f"{t.row:>4} {t.col:>4} | {_span(t.h.start, t.h.end):>12} {_span(t.w.start, t.w.end):>12} | "
                f"{_span(t.h.out_start, t.h.out_end):>12} {_span(t.w.out_start, t.w.out_end):>12} | "
                f"{f'{t.h.ramp_in}/{t.h.ramp_out}':>9} {f'{t.w.ramp_in}/{t.w.ramp_out}':>9} | "
                f"{_span(t.h.own_start, t.h.own_end):>12} {_span(t.w.own_start, t.w.own_end):>12}"
            )
        groups = ", ".join(f"{h}x{w} {self.in_unit}: {len(g)}" for (h, w), g in self.shape_groups().items())
        lines.append(f"shape groups: {groups}")
        return "\n".join(lines)


def plan_tiles_2d(
    h: int,
    w: int,
    tile: int | tuple[int, int],
    overlap: int | tuple[int, int],
    minimum: int | tuple[int, int] = 1,
    *,
    in_scale: int = 1,
    out_scale: int = 1,
    in_unit: str = "latent",
    out_unit: str = "px",
) -> TilePlan:
    """Plan an ``h x w`` unit grid (ints or (height, width) pairs for the sizes); see :func:`plan_axis`."""
    tile_hw, overlap_hw, min_hw = _pair(tile, "tile"), _pair(overlap, "overlap"), _pair(minimum, "minimum")
    rows = plan_axis(h, tile_hw[0], overlap_hw[0], min_hw[0], in_scale=in_scale, out_scale=out_scale)
    cols = plan_axis(w, tile_hw[1], overlap_hw[1], min_hw[1], in_scale=in_scale, out_scale=out_scale)
    return TilePlan(
        in_hw=(h * in_scale, w * in_scale),
        out_hw=(h * out_scale, w * out_scale),
        rows=tuple(rows),
        cols=tuple(cols),
        in_unit=in_unit,
        out_unit=out_unit,
    )


def plan_latent_grid(h_latent: int, w_latent: int, config: TilingConfig, spatial_scale: int) -> TilePlan:
    """Decode plan: tiles in latent units, output slices in pixels (latent x scale)."""
    lt = config.in_latents(spatial_scale)
    return plan_tiles_2d(h_latent, w_latent, lt.tile, lt.overlap, lt.minimum, in_scale=1, out_scale=spatial_scale, in_unit="latent", out_unit="px")


def plan_pixel_grid(height: int, width: int, config: TilingConfig, spatial_scale: int) -> TilePlan:
    """Encode plan: tiles in pixels aligned to the scale, output slices in latents.

    ``height`` and ``width`` must be multiples of ``spatial_scale`` (pad the video first):
    a partial last unit is never silently dropped.
    """
    if height % spatial_scale or width % spatial_scale:
        raise ValueError(
            f"pixel size {height}x{width} is not a multiple of the spatial scale {spatial_scale}; "
            "pad the input to a multiple first (no pixel is silently dropped)"
        )
    lt = config.in_latents(spatial_scale)
    return plan_tiles_2d(
        height // spatial_scale,
        width // spatial_scale,
        lt.tile,
        lt.overlap,
        lt.minimum,
        in_scale=spatial_scale,
        out_scale=1,
        in_unit="px",
        out_unit="latent",
    )


def plan_temporal(latent_frames: int, config: TilingConfig, temporal_scale: int, causal: bool = True) -> list[AxisTile]:
    """Temporal decode tiles (input in latent frames, output in pixel frames); one tile when not tiling in time."""
    if latent_frames < 1:
        raise ValueError(f"need at least one latent frame, got {latent_frames}")
    lt = config.in_latents(1, temporal_scale)
    if lt.temporal_tile is None:
        return plan_axis(latent_frames, latent_frames, 0, out_scale=temporal_scale, causal=causal)
    if causal and lt.temporal_overlap < 1 and latent_frames > lt.temporal_tile:
        raise ValueError(
            "causal temporal tiling needs temporal_overlap_frames >= one latent frame "
            f"({temporal_scale} frames): each tile's first frame is re-decoded and gets weight 0"
        )
    minimum = min(lt.temporal_tile, lt.temporal_overlap + 1)
    return plan_axis(latent_frames, lt.temporal_tile, lt.temporal_overlap, minimum, out_scale=temporal_scale, causal=causal)


@dataclass(frozen=True)
class VideoTilePlan:
    """A full decode plan: temporal tiles x spatial tiles."""

    temporal: tuple[AxisTile, ...]
    spatial: TilePlan
    latent_shape: tuple[int, int, int]
    out_frames: int
    causal_temporal: bool

    def __str__(self) -> str:
        t, h, w = self.latent_shape
        mapping = "causal 1+(T-1)s" if self.causal_temporal else "T*s"
        lines = [
            f"VideoTilePlan: latents {t}x{h}x{w} -> {self.out_frames} frames ({mapping}), "
            f"{len(self.temporal)} temporal x {len(self.spatial)} spatial tiles",
            f"{'t':>4} | {'latents':>10} | {'frames':>12} | {'lead':>4} {'ramp':>7} {'tail':>4} | {'owns':>12}",
        ]
        for tt in self.temporal:
            lines.append(
                f"{tt.index:>4} | {_span(tt.start, tt.end):>10} | {_span(tt.out_start, tt.out_end):>12} | "
                f"{tt.lead:>4} {f'{tt.ramp_in}/{tt.ramp_out}':>7} {tt.tail:>4} | {_span(tt.own_start, tt.own_end):>12}"
            )
        lines.append(str(self.spatial))
        return "\n".join(lines)


def plan_video_decode(
    latent_shape: tuple[int, int, int],
    config: TilingConfig,
    spatial_scale: int,
    temporal_scale: int,
    causal_temporal: bool = True,
) -> VideoTilePlan:
    """Plan the decode of ``(T, h, w)`` latents; everything is validated before any work."""
    t, h, w = latent_shape
    temporal = plan_temporal(t, config, temporal_scale, causal_temporal)
    spatial = plan_latent_grid(h, w, config, spatial_scale)
    out_frames = 1 + (t - 1) * temporal_scale if causal_temporal else t * temporal_scale
    return VideoTilePlan(
        temporal=tuple(temporal),
        spatial=spatial,
        latent_shape=(t, h, w),
        out_frames=out_frames,
        causal_temporal=causal_temporal,
    )
