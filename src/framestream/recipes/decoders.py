"""Decoder choice for the Wan recipes: the full Wan VAE (default) or the tiny TAEHV decoder.

``select_decoder(config, "taehv", ...)`` swaps a recipe's Wan VAE decoder for TAEHV
(``taew2_1.pth``), keeping the recipe's decode dtype. The ``-tiny`` recipes get a tiny
random-weight TAEHV, so the whole pipeline runs without any file.
"""

from __future__ import annotations

from pathlib import Path

from framestream.config import derive_config
from framestream.decoders.taehv import TAEHVDecoderConfig
from framestream.models.taehv.config import TAEW2_1_ARCH, tiny_taehv_arch
from framestream.pipeline.config import StreamInferencePipelineConfig
from framestream.recipes.wan import MissingWeightsError

__all__ = ["DECODER_CHOICES", "TAEHV_DOWNLOAD_HELP", "find_taehv_checkpoint", "select_decoder"]

DECODER_CHOICES = ("wan-vae", "taehv")
"""Names ``framestream generate --decoder`` takes."""

TAEHV_DOWNLOAD_HELP = "get it from https://github.com/madebyollin/taehv (taew2_1.pth, ~22 MB)"


def find_taehv_checkpoint(checkpoint_dir: str | Path | None) -> Path | None:
    """``taew2_1.pth`` in ``checkpoint_dir`` or its ``taehv/`` subfolder, if there."""
    if checkpoint_dir is None:
        return None
    root = Path(checkpoint_dir)
    for candidate in (root / "taew2_1.pth", root / "taehv" / "taew2_1.pth", root / "taew2_1.safetensors"):
        if candidate.is_file():
            return candidate
    return None


def select_decoder(
    config: StreamInferencePipelineConfig,
    decoder: str,
    *,
    checkpoint_path: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    tiny: bool = False,
) -> StreamInferencePipelineConfig:
    """``config`` with its decoder replaced by ``decoder`` (one of :data:`DECODER_CHOICES`).

    ``"taehv"`` needs ``checkpoint_path`` or a ``taew2_1.pth`` in ``checkpoint_dir`` unless
    ``tiny`` (random weights, for the ``-tiny`` recipes); a missing file is reported before
    anything is built.
    """
    if decoder not in DECODER_CHOICES:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of: {', '.join(DECODER_CHOICES)}")
    if decoder == "wan-vae":
        return config
    dtype = getattr(config.decoder, "compute_dtype", None) or getattr(config.decoder, "dtype")
    if tiny:
        taehv = TAEHVDecoderConfig(arch=tiny_taehv_arch(latent_channels=16), dtype=dtype)
    else:
        path = Path(checkpoint_path) if checkpoint_path is not None else find_taehv_checkpoint(checkpoint_dir)
        if path is None or not path.is_file():
            where = str(checkpoint_path) if checkpoint_path is not None else f"{checkpoint_dir}/taew2_1.pth"
            raise MissingWeightsError(f"TAEHV decoder: {where} not found; {TAEHV_DOWNLOAD_HELP}")
        taehv = TAEHVDecoderConfig(arch=TAEW2_1_ARCH, checkpoint_path=str(path), dtype=dtype)
    return derive_config(config, decoder=taehv)
