"""Wan 2.2 recipes: TI2V-5B (text- and image-to-video), T2V-A14B and I2V-A14B (two experts).

``wan2.2-ti2v-5b``
    Wan 2.2 TI2V-5B as its official config samples it: one bidirectional clip of 121
    frames at 1280x704 and 24 fps (31 latent frames of 44x80 with the 16x Wan 2.2 VAE),
    UniPC with 50 steps and shift 5.0, classifier-free guidance 5.0 with Wan's negative
    prompt. Text-to-video as is; image-to-video with :func:`with_image_conditioning`
    (CLI: ``--image PATH``): the image, encoded by the Wan 2.2 VAE, is held as the clean
    latent frame 0 (see :mod:`framestream.models.wan.transformer.ti2v`).

``wan2.2-t2v-a14b``
    Wan 2.2 T2V-A14B: two 14B experts, the high-noise one for ``t >= 875`` and the
    low-noise one below (:mod:`framestream.diffusion.two_expert`), guidance 4.0 / 3.0
    (high / low), UniPC 40 steps with shift 12.0, 81 frames at 1280x720 and 16 fps on the
    Wan 2.1 VAE. Only the active expert sits on the device; the other waits on the CPU.

``wan2.2-i2v-a14b``
    Wan 2.2 I2V-A14B (an image is required): two 14B experts taking 36 input channels
    (noise, first-frame mask, latents of the image followed by black frames; see
    :mod:`framestream.models.wan.transformer.i2v`), split at ``t >= 900``, guidance 3.5 for
    both, UniPC 40 steps with shift 5.0, 81 frames at 1280x720 and 16 fps, Wan 2.1 VAE.

The ``-tiny`` variants keep each pipeline's structure with random few-thousand-parameter
networks, for tests and CPU smoke runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from framestream.config import derive_config
from framestream.diffusion.model import DiffusionModelConfig
from framestream.diffusion.schedulers.unipc import FlowMatchUniPCSchedulerConfig
from framestream.diffusion.two_expert import WAN22_I2V_A14B_BOUNDARY, WAN22_T2V_A14B_BOUNDARY, TwoExpertTransformerConfig
from framestream.models.wan.transformer.checkpoint import check_wan_checkpoint_file
from framestream.models.wan.transformer.config import (
    WAN22_A14B,
    WAN22_I2V_A14B,
    WAN22_I2V_TINY,
    WAN22_TI2V_5B,
    WAN22_TINY,
    WAN_TINY,
    WanTransformerArchConfig,
    WanTransformerConfig,
)
from framestream.models.wan.transformer.i2v import WanI2VTransformerConfig
from framestream.models.wan.transformer.ti2v import WanTI2VTransformerConfig
from framestream.encoders.wan_i2v import WanI2VConditionEncoderConfig
from framestream.models.wan.vae.config import (
    WAN21_VAE_ARCH,
    WAN22_VAE_ARCH,
    WanVAEArchConfig,
    tiny_wan21_arch,
    tiny_wan22_arch,
)
from framestream.decoders.wan import WanVAEDecoderConfig
from framestream.encoders.wan import WanVAEEncoderConfig
from framestream.pipeline.config import StreamInferencePipelineConfig
from framestream.recipes.wan import (
    MissingWeightsError,
    _find_dit,
    _find_text_encoder,
    _first,
    _text_encoder,
    _tiny_text_encoder,
)

__all__ = [
    "WAN22_RECIPES",
    "WAN22_FPS",
    "Wan22Files",
    "resolve_wan22_files",
    "wan22_ti2v_5b",
    "wan22_ti2v_5b_tiny",
    "wan22_t2v_a14b",
    "wan22_t2v_a14b_tiny",
    "wan22_i2v_a14b",
    "wan22_i2v_a14b_tiny",
    "with_image_conditioning",
    "with_video_size",
    "recipe_fps",
]

WAN22_FPS = 24
"""Frame rate of Wan 2.2 TI2V-5B videos (A14B samples at 16 fps, as Wan 2.1)."""

_ROOTS = {
    "ti2v-5b": ("", "Wan2.2-TI2V-5B", "Wan2.2-TI2V-5B-Diffusers"),
    "t2v-a14b": ("", "Wan2.2-T2V-A14B", "Wan2.2-T2V-A14B-Diffusers"),
    "i2v-a14b": ("", "Wan2.2-I2V-A14B", "Wan2.2-I2V-A14B-Diffusers"),
}
_DOWNLOAD_HELP = {
    "ti2v-5b": "huggingface-cli download Wan-AI/Wan2.2-TI2V-5B --local-dir {dir}  "
    "(or Wan-AI/Wan2.2-TI2V-5B-Diffusers)",
    "t2v-a14b": "huggingface-cli download Wan-AI/Wan2.2-T2V-A14B --local-dir {dir}  "
    "(or Wan-AI/Wan2.2-T2V-A14B-Diffusers)",
    "i2v-a14b": "huggingface-cli download Wan-AI/Wan2.2-I2V-A14B --local-dir {dir}  "
    "(or Wan-AI/Wan2.2-I2V-A14B-Diffusers)",
}


@dataclass(frozen=True)
class Wan22Files:
    """Paths of the weights a Wan 2.2 recipe loads (``low_noise_dit`` only for A14B)."""

    dit: Path
    vae: Path
    text_encoder: Path
    tokenizer: Path
    low_noise_dit: Path | None = None


def _a14b_dits(roots: list[Path]) -> tuple[Path | None, Path | None]:
    """(high-noise, low-noise) DiT folders: original ``high_noise_model/`` + ``low_noise_model/``, or
    diffusers ``transformer/`` (high noise) + ``transformer_2/`` (low noise)."""
    for root in roots:
        for high_name, low_name in (("high_noise_model", "low_noise_model"), ("transformer", "transformer_2")):
            high = _find_dit([root / high_name]) if (root / high_name).is_dir() else None
            low = _find_dit([root / low_name]) if (root / low_name).is_dir() else None
            if high is not None or low is not None:
                return high, low
    return None, None


def resolve_wan22_files(checkpoint_dir: str | Path, model: str = "ti2v-5b") -> Wan22Files:
    """Find a Wan 2.2 model's weights under ``checkpoint_dir`` (original or diffusers layout), or raise naming what is missing.

    ``model`` is ``"ti2v-5b"`` (DiT, ``Wan2.2_VAE.pth`` or ``vae/``) or ``"t2v-a14b"`` / ``"i2v-a14b"``
    (``high_noise_model/`` + ``low_noise_model/`` or ``transformer/`` + ``transformer_2/``,
    ``Wan2.1_VAE.pth`` or ``vae/``); both need the UMT5 encoder
    (``models_t5_umt5-xxl-enc-bf16.pth`` or ``text_encoder/``) and its tokenizer
    (``google/umt5-xxl/`` or ``tokenizer/``).
    """
    if model not in _DOWNLOAD_HELP:
        raise ValueError(f"unknown Wan 2.2 model {model!r}; choose one of {sorted(_DOWNLOAD_HELP)}")
    checkpoint_dir = Path(checkpoint_dir)
    help_line = "get them with: " + _DOWNLOAD_HELP[model].format(dir=checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise MissingWeightsError(f"checkpoint directory {checkpoint_dir} does not exist; {help_line}")
    names = _ROOTS[model]
    roots = [checkpoint_dir / r if r else checkpoint_dir for r in names if (checkpoint_dir / r).is_dir()]
    missing: list[str] = []
    low = None
    if model == "ti2v-5b":
        dit = _find_dit(roots)
        vae = _first([r / "Wan2.2_VAE.pth" for r in roots] + [r / "vae" for r in roots])
        if dit is None:
            missing.append("DiT: diffusion_pytorch_model*.safetensors + config.json (or transformer/)")
        if vae is None:
            missing.append("VAE: Wan2.2_VAE.pth (or vae/)")
    else:
        dit, low = _a14b_dits(roots)
        vae = _first([r / "Wan2.1_VAE.pth" for r in roots] + [r / "vae" for r in roots])
        if dit is None:
            missing.append("high-noise DiT: high_noise_model/ (or transformer/)")
        if low is None:
            missing.append("low-noise DiT: low_noise_model/ (or transformer_2/)")
        if vae is None:
            missing.append("VAE: Wan2.1_VAE.pth (or vae/)")
    text, tokenizer = _find_text_encoder(roots, missing)
    if missing:
        lines = [f"missing Wan 2.2 {model.upper()} weights in {checkpoint_dir}:"] + [f"  - {m}" for m in missing]
        raise MissingWeightsError("\n".join(lines + [help_line]))
    return Wan22Files(dit=dit, vae=vae, text_encoder=text, tokenizer=tokenizer, low_noise_dit=low)  # type: ignore[arg-type]


def _vae_decoder(arch: WanVAEArchConfig, files: Wan22Files | None) -> WanVAEDecoderConfig:
    """The recipe's full-precision streaming VAE decoder (weights path unset without a checkpoint directory)."""
    return WanVAEDecoderConfig(
        arch=arch,
        checkpoint_path=str(files.vae) if files else None,
        weights_dtype=torch.float32,
        compute_dtype=torch.float32,
    )


def _checked_dit(path: Path | None, arch: WanTransformerArchConfig, recipe: str) -> str | None:
    """The DiT path, after checking from its headers that it is the recipe's model (one clear line if not)."""
    if path is None:
        return None
    check_wan_checkpoint_file(path, arch, wanted=recipe)
    return str(path)


# =========================================================================== recipes
def wan22_ti2v_5b(checkpoint_dir: str | Path | None = None, *, seed: int | None = 0) -> StreamInferencePipelineConfig:
    """Wan 2.2 TI2V-5B: 121 frames at 1280x704, 24 fps, UniPC 50 steps, shift 5, CFG 5; I2V with --image.

    Without ``checkpoint_dir`` the weight paths are left unset (the config can be printed
    and derived, but not set up).
    """
    name = "wan2.2-ti2v-5b"
    files = resolve_wan22_files(checkpoint_dir, "ti2v-5b") if checkpoint_dir is not None else None
    return StreamInferencePipelineConfig(
        name=name,
        diffusion_model=DiffusionModelConfig(
            transformer=WanTI2VTransformerConfig(
                arch=WAN22_TI2V_5B,
                checkpoint_path=_checked_dit(files.dit if files else None, WAN22_TI2V_5B, name),
                dtype=torch.bfloat16,
                num_frames=31,
                height=44,
                width=80,
                guidance_scale=5.0,
                context_encoder=_text_encoder(files),
            ),
            scheduler=FlowMatchUniPCSchedulerConfig(num_inference_steps=50, shift=5.0, enable_tqdm=True),
            seed=seed,
        ),
        decoder=_vae_decoder(WAN22_VAE_ARCH, files),
    )


def wan22_ti2v_5b_tiny(
    text_encoder_dir: str | Path | None = None, *, seed: int | None = 0
) -> StreamInferencePipelineConfig:
    """Tiny random-weight stand-in of ``wan2.2-ti2v-5b`` (3 latent frames of 4x6 -> 9 frames of 96x64, 4 UniPC steps)."""
    tiny = {"arch": WAN22_TINY, "allow_random_init": True, "dtype": torch.float32, "num_frames": 3, "height": 4, "width": 6}
    return derive_config(  # the real recipe's structure, shrunk
        wan22_ti2v_5b(seed=seed),
        name="wan2.2-ti2v-5b-tiny",
        diffusion_model={
            "transformer": {**tiny, "context_encoder": _tiny_text_encoder(text_encoder_dir)},
            "scheduler": {"num_inference_steps": 4, "enable_tqdm": False},
        },
        decoder={"arch": tiny_wan22_arch(4)},
    )


def _a14b_expert(path: str | None, guidance: float, image: bool = False) -> WanTransformerConfig:
    """One A14B expert (T2V, or I2V with ``image``): 81 frames at 1280x720 (21 latent frames of 90x160), bf16."""
    kind = WanI2VTransformerConfig if image else WanTransformerConfig
    return kind(
        arch=WAN22_I2V_A14B if image else WAN22_A14B,
        checkpoint_path=path,
        dtype=torch.bfloat16,
        num_frames=21,
        height=90,
        width=160,
        causal=False,
        guidance_scale=guidance,
    )


def _a14b_recipe(
    name: str,
    checkpoint_dir: str | Path | None,
    seed: int | None,
    *,
    image: bool,
    boundary: float,
    guidance: tuple[float, float],
    shift: float,
) -> StreamInferencePipelineConfig:
    """An A14B pipeline: two 14B experts (high, low noise), UniPC 40 steps, Wan 2.1 VAE; ``guidance`` is (high, low)."""
    files = resolve_wan22_files(checkpoint_dir, name.removeprefix("wan2.2-")) if checkpoint_dir is not None else None
    arch = WAN22_I2V_A14B if image else WAN22_A14B
    high = _checked_dit(files.dit if files else None, arch, name)
    low = _checked_dit(files.low_noise_dit if files else None, arch, name)
    config = StreamInferencePipelineConfig(
        name=name,
        diffusion_model=DiffusionModelConfig(
            transformer=TwoExpertTransformerConfig(
                high_noise=_a14b_expert(high, guidance[0], image),
                low_noise=_a14b_expert(low, guidance[1], image),
                boundary=boundary,
                context_encoder=_text_encoder(files),
            ),
            scheduler=FlowMatchUniPCSchedulerConfig(num_inference_steps=40, shift=shift, enable_tqdm=True),
            seed=seed,
        ),
        decoder=_vae_decoder(WAN21_VAE_ARCH, files),
    )
    return with_image_conditioning(config) if image else config


def _a14b_tiny(
    real: StreamInferencePipelineConfig, arch: WanTransformerArchConfig, text_encoder_dir: str | Path | None
) -> StreamInferencePipelineConfig:
    """The real A14B recipe's structure, shrunk: two tiny random experts, 4 steps, a tiny Wan 2.1 VAE."""
    tiny = {"arch": arch, "allow_random_init": True, "dtype": torch.float32, "num_frames": 3, "height": 4, "width": 6}
    shrunk = derive_config(
        real,
        name=f"{real.name}-tiny",
        diffusion_model={
            "transformer": {
                "high_noise": {**tiny, "init_seed": 1},
                "low_noise": {**tiny, "init_seed": 2},
                "context_encoder": _tiny_text_encoder(text_encoder_dir),
            },
            "scheduler": {"num_inference_steps": 4, "enable_tqdm": False},
        },
        decoder={"arch": tiny_wan21_arch(4)},
    )
    return with_image_conditioning(shrunk) if shrunk.encoder is not None else shrunk  # re-sized image encoder


def wan22_t2v_a14b(checkpoint_dir: str | Path | None = None, *, seed: int | None = 0) -> StreamInferencePipelineConfig:
    """Wan 2.2 T2V-A14B: high-/low-noise 14B experts split at t=875, 81 frames at 1280x720, UniPC 40 steps, shift 12."""
    return _a14b_recipe(
        "wan2.2-t2v-a14b", checkpoint_dir, seed, image=False, boundary=WAN22_T2V_A14B_BOUNDARY, guidance=(4.0, 3.0), shift=12.0
    )


def wan22_t2v_a14b_tiny(
    text_encoder_dir: str | Path | None = None, *, seed: int | None = 0
) -> StreamInferencePipelineConfig:
    """Tiny random-weight stand-in of ``wan2.2-t2v-a14b`` (two tiny experts split at t=875, 4 UniPC steps)."""
    return _a14b_tiny(wan22_t2v_a14b(seed=seed), WAN_TINY, text_encoder_dir)


def wan22_i2v_a14b(checkpoint_dir: str | Path | None = None, *, seed: int | None = 0) -> StreamInferencePipelineConfig:
    """Wan 2.2 I2V-A14B (needs --image): 14B experts split at t=900, 81 frames at 1280x720, UniPC 40 steps, shift 5, CFG 3.5."""
    return _a14b_recipe(
        "wan2.2-i2v-a14b", checkpoint_dir, seed, image=True, boundary=WAN22_I2V_A14B_BOUNDARY, guidance=(3.5, 3.5), shift=5.0
    )


def wan22_i2v_a14b_tiny(
    text_encoder_dir: str | Path | None = None, *, seed: int | None = 0
) -> StreamInferencePipelineConfig:
    """Tiny random-weight stand-in of ``wan2.2-i2v-a14b`` (two tiny 36-channel experts split at t=900, 4 UniPC steps)."""
    return _a14b_tiny(wan22_i2v_a14b(seed=seed), WAN22_I2V_TINY, text_encoder_dir)


WAN22_RECIPES = {
    "wan2.2-ti2v-5b": wan22_ti2v_5b,
    "wan2.2-t2v-a14b": wan22_t2v_a14b,
    "wan2.2-i2v-a14b": wan22_i2v_a14b,
    "wan2.2-ti2v-5b-tiny": wan22_ti2v_5b_tiny,
    "wan2.2-t2v-a14b-tiny": wan22_t2v_a14b_tiny,
    "wan2.2-i2v-a14b-tiny": wan22_i2v_a14b_tiny,
}
"""Recipe name -> function ``(checkpoint_dir | None, *, seed) -> StreamInferencePipelineConfig``
(for ``-tiny`` recipes the argument is an optional small UMT5 directory)."""


# ======================================================================= derivations
def recipe_fps(config: StreamInferencePipelineConfig) -> float:
    """The frame rate a recipe's videos are made for: 24 for TI2V-5B, 16 for the others."""
    return float(WAN22_FPS) if config.name.startswith("wan2.2-ti2v") else 16.0


def with_image_conditioning(config: StreamInferencePipelineConfig) -> StreamInferencePipelineConfig:
    """The recipe with the pipeline encoder that turns a ``[B, 3, 1, H, W]`` image into its conditioning.

    TI2V: the Wan VAE encoder (the image becomes latent frame 0). I2V-A14B: the
    :class:`~framestream.encoders.wan_i2v.WanI2VConditionEncoder` (mask + latents of
    the image followed by black frames, sized to the transformer's frame count, so call this
    after changing ``num_frames``). The VAE is the recipe decoder's (same architecture and
    weights file). Raises ``ValueError`` (one line) for a text-to-video-only recipe.
    """
    transformer = config.diffusion_model.transformer
    expert = getattr(transformer, "high_noise", transformer)
    if not isinstance(expert, (WanTI2VTransformerConfig, WanI2VTransformerConfig)):
        raise ValueError(
            f"{config.name} does text-to-video only; image-to-video (--image) needs wan2.2-ti2v-5b or wan2.2-i2v-a14b"
        )
    decoder = config.decoder
    if not isinstance(decoder, WanVAEDecoderConfig):
        raise ValueError(f"{config.name}: image conditioning needs the recipe's Wan VAE decoder to derive the encoder")
    encoder = WanVAEEncoderConfig(
        arch=decoder.arch,
        checkpoint_path=decoder.checkpoint_path,
        weights_dtype=decoder.weights_dtype,
        compute_dtype=decoder.compute_dtype,
        seed=decoder.seed,
    )
    if isinstance(expert, WanI2VTransformerConfig):
        frames = 1 + decoder.arch.scale_factor_temporal * (expert.num_frames - 1)
        return derive_config(config, encoder=WanI2VConditionEncoderConfig(vae=encoder, num_frames=frames))
    return derive_config(config, encoder=encoder)


def video_size(config: StreamInferencePipelineConfig) -> tuple[int, int]:
    """(width, height) in pixels of the recipe's video."""
    transformer = config.diffusion_model.transformer
    expert = getattr(transformer, "high_noise", transformer)
    scale = config.decoder.arch.scale_factor_spatial  # type: ignore[union-attr]
    return expert.width * scale, expert.height * scale


def with_video_size(config: StreamInferencePipelineConfig, width: int, height: int) -> StreamInferencePipelineConfig:
    """The recipe at ``width x height`` pixels (multiples of the VAE factor times the DiT patch: 32 for TI2V-5B)."""
    transformer = config.diffusion_model.transformer
    expert = getattr(transformer, "high_noise", transformer)
    scale = config.decoder.arch.scale_factor_spatial  # type: ignore[union-attr]
    _, ph, pw = expert.arch.patch_size
    multiple_h, multiple_w = scale * ph, scale * pw
    if width % multiple_w or height % multiple_h or width < 1 or height < 1:
        raise ValueError(
            f"{config.name} makes videos whose width is a multiple of {multiple_w} and height a multiple of "
            f"{multiple_h} (VAE x{scale}, patch {ph}x{pw}); {width}x{height} is not (e.g. "
            f"{max(multiple_w, width // multiple_w * multiple_w)}x{max(multiple_h, height // multiple_h * multiple_h)})"
        )
    latent = {"height": height // scale, "width": width // scale}
    if isinstance(transformer, TwoExpertTransformerConfig):
        return derive_config(
            config, diffusion_model={"transformer": {"high_noise": latent, "low_noise": latent}}
        )
    return derive_config(config, diffusion_model={"transformer": latent})
