"""Wan 2.2 TI2V: per-token-timestep DiT and whole I2V generation against diffusers on shared tiny random weights."""

from __future__ import annotations

import pytest
import torch

from framestream.diffusion.model import DiffusionModelConfig
from framestream.diffusion.schedulers.unipc import FlowMatchUniPCSchedulerConfig
from framestream.models.wan.transformer import WAN22_TINY, WanDiT
from framestream.models.wan.transformer.ti2v import WanTI2VTransformerConfig
from framestream.models.wan.vae import tiny_wan22_arch
from framestream.decoders.wan import WanVAEDecoderConfig
from framestream.encoders.wan import WanVAEEncoderConfig
from framestream.pipeline.config import StreamInferencePipelineConfig

diffusers = pytest.importorskip("diffusers")

LATENT = (3, 4, 6)  # latent frames, height, width -> 9 frames of 64x96 pixels with the 16x Wan 2.2 VAE
STEPS = 4
SEED = 3


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize(module: torch.nn.Module, seed: int, std: float = 0.2, gamma_one: bool = False) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            fan_in = p[0].numel() if gamma_one and p.dim() > 1 else 1
            noise = torch.randn(p.shape, generator=gen) * (std / fan_in**0.5)
            p.copy_(noise + (1.0 if gamma_one and name.endswith("gamma") else 0.0))


@pytest.fixture(scope="module")
def dit_pair():
    ref = diffusers.WanTransformer3DModel(**WAN22_TINY.to_diffusers_config()).eval()
    _randomize(ref, seed=0)
    ours = WanDiT(WAN22_TINY, time_embedding_fp64=False).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


# --------------------------------------------------------------------------- DiT forward
def test_per_token_timesteps_match_diffusers(dit_pair):
    ref, ours = dit_pair
    gen = torch.Generator().manual_seed(1)
    b, (f, h, w) = 2, LATENT
    x = torch.randn(b, 48, f, h, w, generator=gen)
    text = torch.randn(b, 5, WAN22_TINY.text_dim, generator=gen)
    tokens_per_frame = (h // 2) * (w // 2)
    # Per latent frame: frame 0 clean (0), the rest at their sample's timestep, as TI2V's first-frame mask gives.
    per_frame = torch.tensor([[0.0, 937.0, 937.0], [0.0, 412.5, 412.5]])
    per_token = per_frame.repeat_interleave(tokens_per_frame, dim=1)
    # Fully per-token timesteps too (every token its own value).
    free = torch.rand(b, f * tokens_per_frame, generator=gen) * 1000
    with torch.no_grad():
        for ours_t, ref_t in ((per_frame, per_token), (per_token, per_token), (free, free)):
            expected = ref(x, ref_t, text, return_dict=False)[0]
            got = ours(x, ours_t, text)
            assert (got - expected).abs().max().item() <= 1e-5
            assert expected.abs().max() > 0.1
        # The per-token path is not the scalar one: frame 0 at t=0 changes every frame's output.
        scalar = ours(x, torch.tensor([937.0, 412.5]), text)
        assert (scalar - ours(x, per_frame, text)).abs().max() > 1e-3
        # And equal per-token values reduce to the scalar path.
        same = ours(x, torch.tensor([[937.0] * f, [412.5] * f]), text)
        assert (same - scalar).abs().max().item() <= 1e-6


def test_timestep_runs_must_divide_tokens(dit_pair):
    _, ours = dit_pair
    x = torch.randn(1, 48, *LATENT)
    with pytest.raises(ValueError, match="equal runs"):
        ours(x, torch.zeros(1, 5), torch.randn(1, 3, WAN22_TINY.text_dim))


# --------------------------------------------------------------------- whole I2V generation
def _our_config(with_decoder: bool) -> StreamInferencePipelineConfig:
    f, h, w = LATENT
    vae = tiny_wan22_arch()
    return StreamInferencePipelineConfig(
        name="ti2v-parity",
        diffusion_model=DiffusionModelConfig(
            transformer=WanTI2VTransformerConfig(
                arch=WAN22_TINY,
                allow_random_init=True,
                dtype=torch.float32,
                num_frames=f,
                height=h,
                width=w,
                guidance_scale=5.0,
                time_embedding_fp64=False,  # diffusers' float32 sinusoid, for a tight comparison
            ),
            scheduler=FlowMatchUniPCSchedulerConfig(num_inference_steps=STEPS, shift=5.0),
            seed=SEED,
        ),
        encoder=WanVAEEncoderConfig(arch=vae),
        decoder=WanVAEDecoderConfig(arch=vae) if with_decoder else None,
    )


@pytest.fixture(scope="module")
def i2v_setup(dit_pair):
    ref_dit, _ = dit_pair
    vae_arch = tiny_wan22_arch()
    ref_vae = diffusers.AutoencoderKLWan(**vae_arch.to_diffusers_kwargs()).eval()
    _randomize(ref_vae, seed=5, std=0.3, gamma_one=True)

    def load(pipeline):
        pipeline.diffusion_model.transformer.dit.load_state_dict(ref_dit.state_dict(), strict=True)
        parts = [pipeline.encoder] + ([pipeline.decoder] if pipeline.decoder is not None else [])
        for part in parts:
            result = part.vae.load_state_dict(ref_vae.state_dict(), strict=False)
            assert not result.missing_keys
        return pipeline.eval()

    f, h, w = LATENT
    s = vae_arch.scale_factor_spatial
    gen = torch.Generator().manual_seed(11)
    image = torch.rand(1, 3, 1, h * s, w * s, generator=gen) * 2 - 1
    text = torch.randn(1, 6, WAN22_TINY.text_dim, generator=gen)
    negative = torch.randn(1, 6, WAN22_TINY.text_dim, generator=gen)
    return ref_dit, ref_vae, load, image, text, negative


def diffusers_unipc(shift: float):
    """diffusers' UniPC as the Wan pipelines configure it for flow matching (the reference of our scheduler)."""
    return diffusers.UniPCMultistepScheduler(
        num_train_timesteps=1000,
        solver_order=2,
        prediction_type="flow_prediction",
        solver_type="bh2",
        lower_order_final=True,
        use_flow_sigmas=True,
        flow_shift=shift,
        final_sigmas_type="zero",
    )


def _diffusers_i2v(ref_dit, ref_vae, image, text, negative):
    f, h, w = LATENT
    scheduler = diffusers_unipc(shift=5.0)
    pipe = diffusers.WanImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=ref_vae,
        scheduler=scheduler,
        transformer=ref_dit,
        image_processor=None,
        image_encoder=None,
        expand_timesteps=True,  # the Wan 2.2 TI2V path: clean first frame, per-token timesteps
    )
    pipe.set_progress_bar_config(disable=True)
    # The same initial noise our DiffusionModel draws from its seeded generator.
    noise = torch.randn((1, 48, f, h, w), generator=torch.Generator().manual_seed(SEED))
    s = ref_vae.config.scale_factor_spatial
    with torch.no_grad():
        latents = pipe(
            image=image[:, :, 0],
            prompt_embeds=text,
            negative_prompt_embeds=negative,
            height=h * s,
            width=w * s,
            num_frames=1 + 4 * (f - 1),
            num_inference_steps=STEPS,
            guidance_scale=5.0,
            latents=noise,
            output_type="latent",
        ).frames
    return latents


@pytest.mark.filterwarnings("ignore:Passing `image` as torch tensor:FutureWarning")
def test_i2v_generation_matches_diffusers_ti2v_pipeline(i2v_setup):
    ref_dit, ref_vae, load, image, text, negative = i2v_setup
    expected = _diffusers_i2v(ref_dit, ref_vae, image, text, negative)

    pipeline = load(_our_config(with_decoder=False).setup())
    cache = pipeline.initialize_cache(transformer_context={"text_embeddings": text, "negative_text_embeddings": negative})
    latents = pipeline.generate(0, cache, input=image)
    assert latents.shape == expected.shape
    assert (latents - expected).abs().max().item() <= 1e-4
    assert expected[:, :, 1:].abs().max() > 0.1

    # Frame 0 is the encoded image, exactly (not approximately).
    with torch.no_grad():
        encoded = pipeline.encoder(image, 0, pipeline.encoder.initialize_autoregressive_cache())
    assert torch.equal(latents[:, :, :1], encoded)

    # Decoding: our full pipeline's frames equal diffusers' VAE decode of its latents.
    full = load(_our_config(with_decoder=True).setup())
    cache = full.initialize_cache(transformer_context={"text_embeddings": text, "negative_text_embeddings": negative})
    video = full.generate(0, cache, input=image)
    cfg = ref_vae.config
    mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        ref_video = ref_vae.decode(expected * std + mean, return_dict=False)[0]
    assert video.shape == ref_video.shape == (1, 3, 9, 64, 96)
    assert (video - ref_video).abs().max().item() <= 1e-4


def test_t2v_without_image_uses_scalar_timesteps(i2v_setup):
    ref_dit, ref_vae, _, _, text, negative = i2v_setup
    # T2V is the same model with no image: no encoder, compared with diffusers' WanPipeline (expand_timesteps).
    t2v = StreamInferencePipelineConfig(name="t2v", diffusion_model=_our_config(with_decoder=False).diffusion_model)
    pipeline = t2v.setup().eval()
    pipeline.diffusion_model.transformer.dit.load_state_dict(ref_dit.state_dict(), strict=True)
    cache = pipeline.initialize_cache(transformer_context={"text_embeddings": text, "negative_text_embeddings": negative})
    latents = pipeline.generate(0, cache)

    f, h, w = LATENT
    scheduler = diffusers_unipc(shift=5.0)
    pipe = diffusers.WanPipeline(
        tokenizer=None, text_encoder=None, vae=ref_vae, scheduler=scheduler, transformer=ref_dit, expand_timesteps=True
    )
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn((1, 48, f, h, w), generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        expected = pipe(
            prompt_embeds=text, negative_prompt_embeds=negative, height=h * 16, width=w * 16,
            num_frames=1 + 4 * (f - 1), num_inference_steps=STEPS, guidance_scale=5.0, latents=noise,
            output_type="latent",
        ).frames
    assert (latents - expected).abs().max().item() <= 1e-4
