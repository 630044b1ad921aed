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

Files: ``plan.py`` (tile plans), ``state.py`` (stream states), ``tile_calls.py`` (one
chunk's batched tile calls), ``decode.py`` and ``encode.py`` (the two directions).
"""

from framestream.tiling.wan_exact.decode import decode_tiled, iter_decode_tiled
from framestream.tiling.wan_exact.encode import encode_tiled, iter_encode_tiled
from framestream.tiling.wan_exact.plan import AxisCrop, ExactTile, ExactTilePlan, plan_exact_decode, plan_exact_encode
from framestream.tiling.wan_exact.state import WanTiledDecodeState, WanTiledEncodeState

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
