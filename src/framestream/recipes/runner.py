"""Running a recipe to a video file: text (and image) in, frames out chunk by chunk.

:func:`iter_video_chunks` drives the pipeline one AR block at a time and decodes each
block's latents in chunks of ``decode_chunk_latents`` latent frames through one
continuing decoder stream (the Wan VAE is causal, so chunked decoding gives the same
frames as decoding the block at once); every chunk is handed out as soon as it is
decoded. A bidirectional recipe (one block: Wan 2.1 T2V, Wan 2.2 TI2V) thus streams
its clip to the writer chunk by chunk instead of holding every decoded frame.

The pipeline is built without its decoder (``decoder=None``: it returns latents), and
the decoder is built from the recipe's ``decoder`` config next to it.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from framestream.config import derive_config
from framestream.pipeline.config import StreamInferencePipelineConfig

__all__ = ["text_context", "iter_video_chunks", "run_to_video", "fallback_embeddings"]

logger = logging.getLogger(__name__)


def fallback_embeddings(prompt: str, text_dim: int) -> torch.Tensor:
    """Seeded random text features for tiny recipes without a text encoder (smoke runs only)."""
    generator = torch.Generator().manual_seed(zlib.crc32(prompt.encode("utf-8")))
    return torch.randn(1, 16, text_dim, generator=generator)


def _text_dim_and_guidance(transformer: Any) -> tuple[int, bool]:
    """Text width and whether negative features are needed, for a Wan transformer or a two-expert wrapper."""
    experts = [getattr(transformer, name) for name in ("high_noise", "low_noise") if hasattr(transformer, name)]
    experts = experts or [transformer]
    return experts[0].config.arch.text_dim, any(getattr(e, "guidance", False) for e in experts)


def text_context(pipeline: Any, prompt: str, negative_prompt: str | None = None) -> dict[str, Any]:
    """The transformer's rollout context: prompts for its text encoder, or seeded stand-in features without one."""
    transformer = pipeline.diffusion_model.transformer
    context: dict[str, Any] = {}
    if transformer.context_encoder is None:
        logger.warning("no text encoder configured: using random text features derived from the prompt")
        text_dim, guidance = _text_dim_and_guidance(transformer)
        context["text_embeddings"] = fallback_embeddings(prompt, text_dim)
        if guidance:
            context["negative_text_embeddings"] = fallback_embeddings(negative_prompt or "", text_dim)
    else:
        context["prompt"] = [prompt]
        if negative_prompt is not None:
            context["negative_prompt"] = [negative_prompt]
    return context


def iter_video_chunks(
    pipeline: Any,
    decoder: Any,
    prompt: str,
    num_blocks: int,
    *,
    negative_prompt: str | None = None,
    image: torch.Tensor | None = None,
    decode_chunk_latents: int = 1,
) -> Iterator[tuple[int, torch.Tensor, bool]]:
    """Yield ``(block_index, frames [B, 3, t, H, W], last_chunk_of_block)`` as each decoder chunk is ready.

    ``pipeline`` returns latents (built with ``decoder=None``); ``decoder`` is a streaming
    decoder whose one stream spans all blocks. ``image`` (``[B, 3, 1, H, W]`` in [-1, 1])
    is the input of the pipeline's encoder (first-frame conditioning); it needs a
    one-block recipe.
    """
    if decode_chunk_latents < 1:
        raise ValueError(f"decode_chunk_latents must be >= 1, got {decode_chunk_latents}")
    if (image is None) != (pipeline.encoder is None):
        raise ValueError(
            "this recipe's pipeline has an image encoder: pass an image"
            if image is None
            else "this pipeline has no image encoder: image-to-video needs a recipe with image conditioning"
        )
    if image is not None and num_blocks != 1:
        raise ValueError(f"image conditioning pins frame 0 of one clip: num_blocks must be 1, got {num_blocks}")
    cache = pipeline.initialize_cache(transformer_context=text_context(pipeline, prompt, negative_prompt))
    decoder_cache = decoder.initialize_autoregressive_cache()
    step = 0
    for index in range(num_blocks):
        latents = pipeline.generate(index, cache, input=image)
        with torch.no_grad():
            total = latents.shape[2]
            for start in range(0, total, decode_chunk_latents):
                frames = decoder(latents[:, :, start : start + decode_chunk_latents], step, decoder_cache)
                step += 1
                yield index, frames, start + decode_chunk_latents >= total
        if index + 1 < num_blocks:
            pipeline.finalize(index, cache)


def run_to_video(
    config: StreamInferencePipelineConfig,
    prompt: str,
    output: str | Path,
    *,
    num_blocks: int,
    negative_prompt: str | None = None,
    image: torch.Tensor | None = None,
    fps: float,
    crf: int = 18,
    device: str | torch.device = "cpu",
    decode_chunk_latents: int = 1,
    on_block: Callable[[int, int], None] | None = None,
    world: Any = None,
) -> dict[str, Any]:
    """Build ``config``, run it and write the frames to ``output`` (mp4) chunk by chunk.

    Returns ``{"frames", "blocks", "height", "width", "path"}``. ``on_block(index, frames)``
    is called once per AR block with the number of frames it wrote. A failure or an
    interrupt leaves no partial file (the writer is atomic). ``world``: this rank's
    :class:`~framestream.distributed.runtime.ProcessWorld` under torchrun (the DiT runs as
    ``config.parallel`` says, every rank decodes, only rank 0 writes); None = one process.
    """
    import contextlib

    from framestream.io.video import StreamingVideoWriter

    if config.decoder is None:
        raise ValueError(f"{config.name}: a video needs a decoder in the recipe")
    transformer = config.diffusion_model.transformer
    expert = getattr(transformer, "high_noise", transformer)  # a two-expert wrapper: its experts set the batch
    if getattr(expert, "batch_size", 1) != 1:
        raise ValueError("a recipe run writes one video: batch_size must be 1")
    if world is not None:
        from framestream.distributed.pipeline import setup_parallel_pipeline

        device = world.device
        pipeline = setup_parallel_pipeline(derive_config(config, decoder=None), world)
    else:
        device = torch.device(device)
        pipeline = derive_config(config, decoder=None).setup().to(device).eval()
    writes = world is None or world.is_main
    decoder = config.decoder.setup().to(device).eval()
    if image is not None:
        image = image.to(device)
    written: dict[int, int] = {}
    with StreamingVideoWriter(output, fps=fps, crf=crf) if writes else contextlib.nullcontext() as writer:
        chunks = iter_video_chunks(
            pipeline,
            decoder,
            prompt,
            num_blocks,
            negative_prompt=negative_prompt,
            image=image,
            decode_chunk_latents=decode_chunk_latents,
        )
        for index, frames, block_done in chunks:
            if writer is not None:
                writer.write(frames)
            written[index] = written.get(index, 0) + frames.shape[2]
            if block_done and on_block is not None:
                on_block(index, written[index])
    if writer is None:
        return {"frames": 0, "blocks": num_blocks, "height": 0, "width": 0, "path": Path(output)}
    height, width = writer.size or (0, 0)
    return {"frames": writer.num_frames, "blocks": num_blocks, "height": height, "width": width, "path": Path(output)}
