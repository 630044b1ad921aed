"""The ``demo`` recipe: tiny random-weight DiT + streaming decoder + self-forcing flow-match scheduler.

A smoke test of the whole streaming pipeline that runs on a laptop CPU in seconds.
The weights are random, so the video it produces is structured noise, not content.
"""

from __future__ import annotations

from framestream.diffusion.model import DiffusionModelConfig
from framestream.diffusion.schedulers.flow_match import FlowMatchSchedulerConfig
from framestream.models.demo.decoder import DemoStreamingDecoderConfig
from framestream.models.demo.transformer import DemoTransformerConfig
from framestream.pipeline.config import StreamInferencePipelineConfig

__all__ = ["DEMO_CONFIGS", "demo_pipeline_config"]


def demo_pipeline_config(
    *,
    latent_height: int = 12,
    latent_width: int = 16,
    chunk_frames: int = 3,
    denoising_timesteps: tuple[int, ...] = (1000, 750, 500, 250),
    shift: float = 5.0,
    seed: int | None = 0,
    enable_sync_and_profile: bool = False,
) -> StreamInferencePipelineConfig:
    """Config of the demo pipeline.

    Defaults give 96x128 RGB video, 12 frames per AR step (9 at step 0), with the
    4-step self-forcing schedule (1000, 750, 500, 250) at shift 5.

    Args:
        latent_height: Latent height (pixels = 8x).
        latent_width: Latent width (pixels = 8x).
        chunk_frames: Latent frames per AR step (pixel frames = 4x, 4x - 3 at step 0).
        denoising_timesteps: Few-step schedule of the flow-match scheduler.
        shift: Flow-matching time shift.
        seed: Seed of the noise; None uses torch's global RNG.
        enable_sync_and_profile: Record per-stage timings (see the pipeline docs).
    """
    latent_channels = 4
    return StreamInferencePipelineConfig(
        name="demo",
        diffusion_model=DiffusionModelConfig(
            transformer=DemoTransformerConfig(
                latent_channels=latent_channels,
                chunk_frames=chunk_frames,
                height=latent_height,
                width=latent_width,
            ),
            scheduler=FlowMatchSchedulerConfig(
                num_inference_steps=len(denoising_timesteps),
                denoising_timesteps=tuple(denoising_timesteps),
                shift=shift,
            ),
            seed=seed,
        ),
        decoder=DemoStreamingDecoderConfig(latent_channels=latent_channels),
        enable_sync_and_profile=enable_sync_and_profile,
    )


DEMO_CONFIGS: dict[str, StreamInferencePipelineConfig] = {"demo": demo_pipeline_config()}
"""Demo recipes by name (``config.name``)."""
