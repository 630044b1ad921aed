"""Jobs: the units of work every engine runs (CLI, torchrun shards, a Ray actor, a server).

- :mod:`~framestream.jobs.checks`: checks of user input, run before any model is built;
- :mod:`~framestream.jobs.vae`: the checkpoint checked from its headers, then loaded;
- :mod:`~framestream.jobs.sinks`: where decoded frames go (mp4, PNG folder, npy, safetensors);
- :mod:`~framestream.jobs.decode`: :func:`decode_one` (latent file -> output);
- :mod:`~framestream.jobs.encode`: :func:`encode_one` (video -> latent file);
- :mod:`~framestream.jobs.tiling`: ``--tile-size auto`` and the halo-cost warning;
- :mod:`~framestream.jobs.dataset`: :func:`encode_dataset` (many videos, resumable);
- :mod:`~framestream.jobs.report`: time and peak memory of a run.

An engine loads the VAE once (:func:`load_vae`) and calls ``decode_one(item, vae, options)``
or ``encode_one(item, vae, options)`` per item; the output is published atomically inside.
"""

from framestream.jobs.checks import (
    FORMATS,
    LATENT_CHANNELS,
    SPATIAL_FACTOR,
    TEMPORAL_FACTOR,
    TEMPORAL_FACTORS,
    VAE_NAMES,
    check_chunk,
    check_latents,
    check_output,
    decoded_frames,
    make_tiling,
    output_format,
    parse_float_dtype,
    parse_size,
    resolve_device,
    vae_name,
    vae_version,
)
from framestream.jobs.dataset import encode_dataset
from framestream.jobs.decode import (
    DecodeItem,
    DecodeOptions,
    DecodeResult,
    check_decode_output,
    decode_one,
    decode_to_sink,
    iter_decode,
    read_latents,
)
from framestream.jobs.encode import (
    EncodeItem,
    EncodeOptions,
    EncodePlan,
    EncodeResult,
    check_encode_output,
    encode_one,
    encode_to_file,
    encode_video,
    iter_encode,
    plan_encode,
)
from framestream.jobs.options import VaeJobOptions
from framestream.jobs.report import PeakMemory, human_bytes
from framestream.jobs.sinks import expected_output_bytes, open_sink
from framestream.jobs.tiling import auto_decode_tiling, auto_encode_tiling, halo_warning, safe_encode_tiling
from framestream.jobs.vae import check_checkpoint, checkpoint_latent_channels, load_vae

__all__ = [
    "FORMATS",
    "LATENT_CHANNELS",
    "SPATIAL_FACTOR",
    "TEMPORAL_FACTOR",
    "TEMPORAL_FACTORS",
    "VAE_NAMES",
    "DecodeItem",
    "DecodeOptions",
    "DecodeResult",
    "EncodeItem",
    "EncodeOptions",
    "EncodePlan",
    "EncodeResult",
    "PeakMemory",
    "VaeJobOptions",
    "auto_decode_tiling",
    "auto_encode_tiling",
    "check_decode_output",
    "check_encode_output",
    "check_checkpoint",
    "checkpoint_latent_channels",
    "check_chunk",
    "check_latents",
    "check_output",
    "decode_one",
    "decode_to_sink",
    "decoded_frames",
    "encode_dataset",
    "encode_one",
    "encode_to_file",
    "encode_video",
    "expected_output_bytes",
    "halo_warning",
    "safe_encode_tiling",
    "human_bytes",
    "iter_decode",
    "iter_encode",
    "load_vae",
    "make_tiling",
    "open_sink",
    "output_format",
    "parse_float_dtype",
    "parse_size",
    "plan_encode",
    "read_latents",
    "resolve_device",
    "vae_name",
    "vae_version",
]
