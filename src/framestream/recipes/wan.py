"""Wan 2.1 recipes: the bidirectional T2V-1.3B sampler and the causal Self-Forcing streamer.

Each recipe is a function returning a :class:`~framestream.pipeline.StreamInferencePipelineConfig`;
:data:`RECIPES` maps their names to them and :func:`generate_video` runs one to an mp4,
writing each AR block's frames as soon as it is decoded.

``wan2.1-t2v-1.3b``
    Wan 2.1 T2V-1.3B as the official ``generate.py`` samples it: one AR step over the
    whole 81-frame clip (21 latent frames, 480x832), UniPC (order 2, BH2) with 50 steps and
    shift 5.0, classifier-free guidance 5.0 with Wan's default negative prompt, cond and
    uncond batched in one DiT forward. (The Wan README suggests shift 8 / guidance 6 for
    the 1.3B model at 480p: ``--diffusion-model.scheduler.shift 8
    --diffusion-model.transformer.guidance-scale 6``.)

``wan2.1-self-forcing-1.3b``
    Self-Forcing (Huang et al. 2025) on the Wan 2.1 1.3B backbone: blocks of 3 latent
    frames, each denoised with the 4-step flow-match self-forcing loop at timesteps
    (1000, 750, 500, 250) warped by shift 5.0 (``timestep_shift`` of Self-Forcing's
    ``self_forcing_dmd.yaml``), no guidance (distilled), KV cache of earlier blocks updated
    with the clean block at context noise 0, streaming VAE decode. 7 blocks = 81 frames.

The ``-tiny`` variants keep the pipeline structure with a few-thousand-parameter random
DiT and VAE, for tests and CPU smoke runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from framestream.config import derive_config
from framestream.diffusion.model import DiffusionModelConfig
from framestream.diffusion.schedulers.flow_match import FlowMatchSchedulerConfig
from framestream.diffusion.schedulers.unipc import FlowMatchUniPCSchedulerConfig
from framestream.diffusion.two_expert import TwoExpertTransformerConfig
from framestream.models.wan.text_encoder import WAN_NEGATIVE_PROMPT, UMT5TextEncoderConfig
from framestream.models.wan.transformer.config import WAN21_T2V_1_3B, WAN_TINY, WanTransformerConfig
from framestream.models.wan.vae.config import WAN21_VAE_ARCH, tiny_wan21_arch
from framestream.decoders.wan import WanVAEDecoderConfig
from framestream.pipeline.config import StreamInferencePipelineConfig
from framestream.recipes.runner import run_to_video, text_context

__all__ = [
    "RECIPES",
    "WanFiles",
    "MissingWeightsError",
    "resolve_wan_files",
    "wan21_t2v_1_3b",
    "wan21_self_forcing_1_3b",
    "wan21_t2v_1_3b_tiny",
    "wan21_self_forcing_1_3b_tiny",
    "prepare_recipe",
    "generate_video",
    "iter_video_blocks",
    "WAN_FPS",
]

WAN_FPS = 16
"""Frame rate of Wan 2.1 videos."""

SELF_FORCING_TIMESTEPS = (1000, 750, 500, 250)


# =========================================================================== weights
class MissingWeightsError(FileNotFoundError):
    """The checkpoint directory lacks files a recipe needs (the message says which and where to get them)."""


@dataclass(frozen=True)
class WanFiles:
    """Paths of the weights a Wan recipe loads."""

    dit: Path
    vae: Path
    text_encoder: Path
    tokenizer: Path


_WAN_ROOTS = ("", "Wan2.1-T2V-1.3B", "Wan2.1-T2V-1.3B-Diffusers", "Wan2.1_T2V_1.3B", "wan_models/Wan2.1-T2V-1.3B")

_DOWNLOAD_HELP = """get them from Hugging Face, e.g.:
  hf download Wan-AI/Wan2.1-T2V-1.3B --local-dir {dir}
  (or the diffusers layout: hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers --local-dir {dir})"""
_SF_DOWNLOAD_HELP = """  hf download gdhe17/Self-Forcing checkpoints/self_forcing_dmd.pt --local-dir {dir}"""


def _roots(checkpoint_dir: Path) -> list[Path]:
    return [checkpoint_dir / r if r else checkpoint_dir for r in _WAN_ROOTS if (checkpoint_dir / r).is_dir()]


def _first(candidates: list[Path]) -> Path | None:
    return next((c for c in candidates if c.exists()), None)


def _find_text_encoder(roots: list[Path], missing: list[str]) -> tuple[Path | None, Path | None]:
    """The UMT5 encoder and its tokenizer (original or diffusers layout); what is absent is appended to ``missing``."""
    text = _first([r / "models_t5_umt5-xxl-enc-bf16.pth" for r in roots] + [r / "text_encoder" for r in roots])
    tokenizer = _first([r / "google" / "umt5-xxl" for r in roots] + [r / "tokenizer" for r in roots])
    if text is None:
        missing.append("text encoder: models_t5_umt5-xxl-enc-bf16.pth (or text_encoder/)")
    if tokenizer is None:
        missing.append("tokenizer: google/umt5-xxl/ (or tokenizer/)")
    return text, tokenizer


def _find_dit(roots: list[Path]) -> Path | None:
    for root in roots:
        if (root / "transformer").is_dir() and any((root / "transformer").glob("diffusion_pytorch_model*.safetensors")):
            return root / "transformer"
        if any(root.glob("diffusion_pytorch_model*.safetensors")):
            return root
    return None


def _find_self_forcing(checkpoint_dir: Path) -> Path | None:
    named = [
        checkpoint_dir / "self_forcing_dmd.pt",
        checkpoint_dir / "checkpoints" / "self_forcing_dmd.pt",
        checkpoint_dir / "Self-Forcing" / "checkpoints" / "self_forcing_dmd.pt",
        checkpoint_dir / "self_forcing" / "checkpoints" / "self_forcing_dmd.pt",
    ]
    found = _first(named)
    if found is not None:
        return found
    matches = sorted(p for p in checkpoint_dir.glob("**/self_forcing*.pt") if len(p.relative_to(checkpoint_dir).parts) <= 4)
    return matches[0] if matches else None


def resolve_wan_files(checkpoint_dir: str | Path, self_forcing: bool = False) -> WanFiles:
    """Find the DiT, VAE, text encoder and tokenizer under ``checkpoint_dir``, or raise naming what is missing.

    Both the original Wan repo layout (``diffusion_pytorch_model*.safetensors`` + ``config.json``,
    ``Wan2.1_VAE.pth``, ``models_t5_umt5-xxl-enc-bf16.pth``, ``google/umt5-xxl/``) and the diffusers
    layout (``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``) are recognised, at the top
    level or in a ``Wan2.1-T2V-1.3B[-Diffusers]/`` subfolder. With ``self_forcing`` the DiT is
    ``self_forcing_dmd.pt`` (also looked up in ``checkpoints/``).
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise MissingWeightsError(
            f"checkpoint directory {checkpoint_dir} does not exist; " + _DOWNLOAD_HELP.format(dir=checkpoint_dir)
            + ("\n" + _SF_DOWNLOAD_HELP.format(dir=checkpoint_dir) if self_forcing else "")
        )
    roots = _roots(checkpoint_dir)
    dit = _find_self_forcing(checkpoint_dir) if self_forcing else _find_dit(roots)
    vae = _first([r / "Wan2.1_VAE.pth" for r in roots] + [r / "vae" for r in roots])
    missing: list[str] = []
    if dit is None:
        missing.append(
            "DiT: self_forcing_dmd.pt (or checkpoints/self_forcing_dmd.pt)"
            if self_forcing
            else "DiT: diffusion_pytorch_model*.safetensors + config.json (or transformer/ in the diffusers layout)"
        )
    if vae is None:
        missing.append("VAE: Wan2.1_VAE.pth (or vae/)")
    text, tokenizer = _find_text_encoder(roots, missing)
    if missing:
        lines = [f"missing Wan 2.1 weights in {checkpoint_dir}:"] + [f"  - {m}" for m in missing]
        lines.append(_DOWNLOAD_HELP.format(dir=checkpoint_dir))
        if self_forcing:
            lines.append(_SF_DOWNLOAD_HELP.format(dir=checkpoint_dir))
        raise MissingWeightsError("\n".join(lines))
    return WanFiles(dit=dit, vae=vae, text_encoder=text, tokenizer=tokenizer)  # type: ignore[arg-type]


def _text_encoder(files: WanFiles | None) -> UMT5TextEncoderConfig | None:
    if files is None:
        return None
    return UMT5TextEncoderConfig(
        checkpoint_path=str(files.text_encoder),
        tokenizer_path=str(files.tokenizer),
        dtype=torch.bfloat16,
        negative_prompt=WAN_NEGATIVE_PROMPT,
    )


# =========================================================================== recipes
def wan21_t2v_1_3b(checkpoint_dir: str | Path | None = None, *, seed: int | None = 0) -> StreamInferencePipelineConfig:
    """Wan 2.1 T2V-1.3B, bidirectional: 81 frames at 480x832, UniPC 50 steps, shift 5, CFG 5.

    Without ``checkpoint_dir`` the weight paths are left unset (the config can be printed
    and derived, but not set up).
    """
    files = resolve_wan_files(checkpoint_dir) if checkpoint_dir is not None else None
    return StreamInferencePipelineConfig(
        name="wan2.1-t2v-1.3b",
        diffusion_model=DiffusionModelConfig(
            transformer=WanTransformerConfig(
                arch=WAN21_T2V_1_3B,
                checkpoint_path=str(files.dit) if files else None,
                dtype=torch.bfloat16,
                num_frames=21,
                height=60,
                width=104,
                causal=False,
                guidance_scale=5.0,
                context_encoder=_text_encoder(files),
            ),
            scheduler=FlowMatchUniPCSchedulerConfig(num_inference_steps=50, shift=5.0),
            seed=seed,
        ),
        decoder=WanVAEDecoderConfig(
            arch=WAN21_VAE_ARCH,
            checkpoint_path=str(files.vae) if files else None,
            weights_dtype=torch.float32,
            compute_dtype=torch.float32,
        ),
    )


def wan21_self_forcing_1_3b(
    checkpoint_dir: str | Path | None = None, *, seed: int | None = 0
) -> StreamInferencePipelineConfig:
    """Self-Forcing Wan 2.1 1.3B: causal blocks of 3 latent frames, 4-step self-forcing, streaming decode."""
    files = resolve_wan_files(checkpoint_dir, self_forcing=True) if checkpoint_dir is not None else None
    return StreamInferencePipelineConfig(
        name="wan2.1-self-forcing-1.3b",
        diffusion_model=DiffusionModelConfig(
            transformer=WanTransformerConfig(
                arch=WAN21_T2V_1_3B,
                checkpoint_path=str(files.dit) if files else None,
                use_ema=True,
                dtype=torch.bfloat16,
                num_frames=3,
                height=60,
                width=104,
                causal=True,
                kv_cache_frames=21,
                guidance_scale=1.0,
                context_encoder=_text_encoder(files),
            ),
            scheduler=FlowMatchSchedulerConfig(
                num_inference_steps=len(SELF_FORCING_TIMESTEPS),
                denoising_timesteps=SELF_FORCING_TIMESTEPS,
                shift=5.0,
                warp_denoising_step=True,
            ),
            seed=seed,
            context_noise=0,
        ),
        decoder=WanVAEDecoderConfig(
            arch=WAN21_VAE_ARCH,
            checkpoint_path=str(files.vae) if files else None,
            weights_dtype=torch.bfloat16,
            compute_dtype=torch.bfloat16,
        ),
    )


def _tiny_text_encoder(text_encoder_dir: str | Path | None) -> UMT5TextEncoderConfig | None:
    if text_encoder_dir is None:
        return None
    return UMT5TextEncoderConfig(checkpoint_path=str(text_encoder_dir), text_len=16, dtype=torch.float32)


def wan21_t2v_1_3b_tiny(
    text_encoder_dir: str | Path | None = None, *, seed: int | None = 0
) -> StreamInferencePipelineConfig:
    """Tiny random-weight stand-in of ``wan2.1-t2v-1.3b`` (5 latent frames of 4x6, 4 UniPC steps, CFG 5).

    ``text_encoder_dir``: a small UMT5 (``d_model`` 32) + tokenizer directory; without it,
    pass ``text_embeddings`` ``[1, L, 32]`` in the transformer context.
    """
    return StreamInferencePipelineConfig(
        name="wan2.1-t2v-1.3b-tiny",
        diffusion_model=DiffusionModelConfig(
            transformer=WanTransformerConfig(
                arch=WAN_TINY,
                allow_random_init=True,
                dtype=torch.float32,
                num_frames=5,
                height=4,
                width=6,
                causal=False,
                guidance_scale=5.0,
                context_encoder=_tiny_text_encoder(text_encoder_dir),
            ),
            scheduler=FlowMatchUniPCSchedulerConfig(num_inference_steps=4, shift=5.0),
            seed=seed,
        ),
        decoder=WanVAEDecoderConfig(arch=tiny_wan21_arch(4)),
    )


def wan21_self_forcing_1_3b_tiny(
    text_encoder_dir: str | Path | None = None, *, seed: int | None = 0
) -> StreamInferencePipelineConfig:
    """Tiny random-weight stand-in of ``wan2.1-self-forcing-1.3b`` (blocks of 3 latent frames of 4x6)."""
    return StreamInferencePipelineConfig(
        name="wan2.1-self-forcing-1.3b-tiny",
        diffusion_model=DiffusionModelConfig(
            transformer=WanTransformerConfig(
                arch=WAN_TINY,
                allow_random_init=True,
                dtype=torch.float32,
                num_frames=3,
                height=4,
                width=6,
                causal=True,
                kv_cache_frames=9,
                context_encoder=_tiny_text_encoder(text_encoder_dir),
            ),
            scheduler=FlowMatchSchedulerConfig(
                num_inference_steps=len(SELF_FORCING_TIMESTEPS),
                denoising_timesteps=SELF_FORCING_TIMESTEPS,
                shift=5.0,
            ),
            seed=seed,
            context_noise=0,
        ),
        decoder=WanVAEDecoderConfig(arch=tiny_wan21_arch(4)),
    )


RECIPES: dict[str, Callable[..., StreamInferencePipelineConfig]] = {
    "wan2.1-t2v-1.3b": wan21_t2v_1_3b,
    "wan2.1-self-forcing-1.3b": wan21_self_forcing_1_3b,
    "wan2.1-t2v-1.3b-tiny": wan21_t2v_1_3b_tiny,
    "wan2.1-self-forcing-1.3b-tiny": wan21_self_forcing_1_3b_tiny,
}
"""Recipe name -> function ``(checkpoint_dir | None, *, seed) -> StreamInferencePipelineConfig``.
For ``-tiny`` recipes the positional argument is an optional small UMT5 directory instead."""


# ============================================================================ runner
def prepare_recipe(
    config: StreamInferencePipelineConfig, num_blocks: int | None = None
) -> tuple[StreamInferencePipelineConfig, int]:
    """Check ``num_blocks`` against the config and size the causal KV cache for it.

    A bidirectional recipe generates one clip (one block). A causal one without a rolling
    cache gets ``kv_cache_frames`` raised to hold every block it generates.
    """
    transformer = config.diffusion_model.transformer
    if isinstance(transformer, TwoExpertTransformerConfig):  # Wan 2.2 A14B: both experts share the shape
        transformer = transformer.high_noise
    if not isinstance(transformer, WanTransformerConfig):
        raise ValueError(f"{config.name}: not a Wan recipe")
    if num_blocks is None:
        # Causal default: as many blocks as the KV cache holds (7 x 3 = 21 latent frames = 81 video frames).
        if not transformer.causal:
            num_blocks = 1
        elif transformer.rolling_kv_cache:
            num_blocks = 7
        else:
            num_blocks = max(1, transformer.kv_cache_frames // transformer.num_frames)
    if num_blocks < 1:
        raise ValueError(f"--num-blocks must be >= 1, got {num_blocks}")
    if not transformer.causal and num_blocks != 1:
        raise ValueError(f"{config.name} is bidirectional: it generates one clip (num_blocks=1), got {num_blocks}")
    if transformer.causal and not transformer.rolling_kv_cache:
        needed = num_blocks * transformer.num_frames
        if needed > transformer.kv_cache_frames:
            config = derive_config(config, **{"diffusion_model.transformer.kv_cache_frames": needed})
    return config, num_blocks


def iter_video_blocks(
    pipeline: Any,
    prompt: str,
    num_blocks: int,
    negative_prompt: str | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the decoded frames ``[1, 3, T, H, W]`` of each AR block of a pipeline with its decoder, block by block."""
    cache = pipeline.initialize_cache(transformer_context=text_context(pipeline, prompt, negative_prompt))
    for index in range(num_blocks):
        frames = pipeline.generate(index, cache)
        yield frames
        if index + 1 < num_blocks:
            pipeline.finalize(index, cache)


def generate_video(
    config: StreamInferencePipelineConfig,
    prompt: str,
    output: str | Path,
    *,
    num_blocks: int | None = None,
    negative_prompt: str | None = None,
    image: torch.Tensor | None = None,
    fps: float = WAN_FPS,
    crf: int = 18,
    device: str | torch.device = "cpu",
    decode_chunk_latents: int = 1,
    on_block: Callable[[int, int], None] | None = None,
    world: Any = None,
) -> dict[str, Any]:
    """Run a Wan recipe and stream its frames to ``output`` (mp4), decoded chunk by chunk.

    ``image`` (``[1, 3, 1, H, W]`` in [-1, 1]) conditions the first frame (recipes with an
    image encoder, see :func:`framestream.recipes.wan22.with_image_conditioning`).
    Returns ``{"frames", "blocks", "height", "width", "path"}``. ``on_block(index, frames)``
    is called after each block is written. ``world``: this rank's
    :class:`~framestream.distributed.runtime.ProcessWorld` under torchrun (the DiT then
    runs as ``config.parallel`` says; only rank 0 writes); None = one process.
    """
    config, num_blocks = prepare_recipe(config, num_blocks)
    return run_to_video(
        config,
        prompt,
        output,
        num_blocks=num_blocks,
        negative_prompt=negative_prompt,
        image=image,
        fps=fps,
        crf=crf,
        device=device,
        decode_chunk_latents=decode_chunk_latents,
        on_block=on_block,
        world=world,
    )
