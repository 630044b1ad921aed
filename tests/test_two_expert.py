"""Two-expert (Wan 2.2 A14B-style) denoising: which expert runs at which timestep, parity with diffusers, placement."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from framestream.diffusion.model import DiffusionModelConfig
from framestream.diffusion.schedulers.unipc import FlowMatchUniPCSchedulerConfig
from framestream.diffusion.two_expert import (
    WAN22_I2V_A14B_BOUNDARY,
    WAN22_T2V_A14B_BOUNDARY,
    TwoExpertTransformerConfig,
    expert_for_timestep,
)
from framestream.models.wan.transformer import WAN_TINY, WanTransformerConfig
from test_wan_recipes import umt5_dir  # noqa: F401  (fixture: a tiny UMT5 encoder + tokenizer on disk)

# UniPC, shift 5, 10 steps: int(1000 * w(s)) for s = linspace(1, 0.001, 11)[:-1], w(s) = 5s / (1 + 4s)
# (worked out by hand, see REFERENCE §4), and the split at the I2V-A14B boundary 0.9 (t >= 900 -> high noise).
SCHEDULE = [999, 978, 952, 921, 882, 833, 769, 682, 556, 359]
HIGH = [999, 978, 952, 921]
LOW = [882, 833, 769, 682, 556, 359]
LATENT = (1, 16, 2, 4, 6)


pytestmark = pytest.mark.usefixtures("one_thread")


def _expert(seed: int, guidance: float) -> WanTransformerConfig:
    return WanTransformerConfig(
        arch=WAN_TINY,
        allow_random_init=True,
        init_seed=seed,
        dtype=torch.float32,
        num_frames=LATENT[2],
        height=LATENT[3],
        width=LATENT[4],
        guidance_scale=guidance,
        time_embedding_fp64=False,
    )


def _model_config(boundary: float = WAN22_I2V_A14B_BOUNDARY, offload: bool = True) -> DiffusionModelConfig:
    return DiffusionModelConfig(
        transformer=TwoExpertTransformerConfig(
            high_noise=_expert(1, guidance=4.0),
            low_noise=_expert(2, guidance=3.0),
            boundary=boundary,
            offload_inactive=offload,
        ),
        scheduler=FlowMatchUniPCSchedulerConfig(num_inference_steps=10, shift=5.0),
        seed=0,
    )


def _context():
    gen = torch.Generator().manual_seed(4)
    return {
        "text_embeddings": torch.randn(1, 5, WAN_TINY.text_dim, generator=gen),
        "negative_text_embeddings": torch.randn(1, 5, WAN_TINY.text_dim, generator=gen),
    }


def test_published_boundaries():
    assert (WAN22_T2V_A14B_BOUNDARY, WAN22_I2V_A14B_BOUNDARY) == (0.875, 0.900)
    assert expert_for_timestep(900, 0.9) == "high_noise"  # the boundary itself is high noise (t >= boundary)
    assert expert_for_timestep(899.9, 0.9) == "low_noise"


def test_experts_run_exactly_on_their_side_of_the_boundary():
    model = _model_config().setup().eval()
    transformer = model.transformer
    assert [int(t) for t in model.scheduler.timesteps] == SCHEDULE
    seen: dict[str, list[int]] = {"high_noise": [], "low_noise": []}

    def recorder(name):
        def hook(module, args, kwargs):
            seen[name].append(int(torch.as_tensor(args[1]).reshape(-1)[0]))
            assert transformer.active == name  # the expert that runs is the resident one

        return hook

    for name in seen:
        transformer.expert(name).dit.register_forward_pre_hook(recorder(name), with_kwargs=True)
    cache = transformer.initialize_autoregressive_cache(**_context())
    seen = {"high_noise": [], "low_noise": []}  # forget the cache set-up (no DiT forward there anyway)
    clean, _ = model.generate(0, cache)
    assert seen == {"high_noise": HIGH, "low_noise": LOW}
    assert torch.isfinite(clean).all()

    # At the T2V boundary (0.875) the step at t=882 moves to the high-noise expert.
    model = _model_config(boundary=WAN22_T2V_A14B_BOUNDARY).setup().eval()
    calls = []
    for name in ("high_noise", "low_noise"):
        model.transformer.expert(name).dit.register_forward_pre_hook(
            lambda m, a, k, name=name: calls.append((name, int(torch.as_tensor(a[1]).reshape(-1)[0]))), with_kwargs=True
        )
    model.generate(0, model.transformer.initialize_autoregressive_cache(**_context()))
    assert [t for n, t in calls if n == "high_noise"] == HIGH + [882]
    assert [t for n, t in calls if n == "low_noise"] == LOW[1:]


def test_two_experts_match_diffusers_two_stage_pipeline():
    diffusers = pytest.importorskip("diffusers")
    model = _model_config().setup().eval()
    context = _context()
    clean, _ = model.generate(0, model.transformer.initialize_autoregressive_cache(**context))

    refs = {}
    for name in ("high_noise", "low_noise"):
        ref = diffusers.WanTransformer3DModel(**WAN_TINY.to_diffusers_config()).eval()
        ref.load_state_dict(model.transformer.expert(name).dit.state_dict(), strict=True)
        refs[name] = ref
    vae = diffusers.AutoencoderKLWan(base_dim=8, z_dim=16)  # unused: output_type="latent"
    from test_wan22_ti2v import diffusers_unipc

    scheduler = diffusers_unipc(shift=5.0)
    pipe = diffusers.WanPipeline(
        tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler,
        transformer=refs["high_noise"], transformer_2=refs["low_noise"], boundary_ratio=WAN22_I2V_A14B_BOUNDARY,
    )
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = pipe(
            prompt_embeds=context["text_embeddings"], negative_prompt_embeds=context["negative_text_embeddings"],
            height=LATENT[3] * 8, width=LATENT[4] * 8, num_frames=1 + 4 * (LATENT[2] - 1), num_inference_steps=10,
            guidance_scale=4.0, guidance_scale_2=3.0, latents=noise, output_type="latent",
        ).frames
    assert (clean - expected).abs().max().item() <= 1e-4
    assert expected.abs().max() > 0.1


def test_placement_and_casts():
    model = _model_config().setup()
    transformer = model.transformer
    assert transformer.active == "high_noise"
    # A dtype cast reaches both experts (the inactive one only gets the dtype part of a move).
    model.to(torch.float64)
    for name in ("high_noise", "low_noise"):
        assert {p.dtype for p in transformer.expert(name).parameters()} == {torch.float64}
    assert model.dtype == torch.float64 and model.device == torch.device("cpu")
    # Noise follows the execution device / dtype anchor, not whichever expert is first in the module tree.
    assert transformer.placement_tensor() is transformer._anchor
    cache = transformer.initialize_autoregressive_cache(**_context())
    assert transformer.active == "high_noise"  # set up low first, so the first denoising step needs no swap
    assert transformer.activate("low_noise") is transformer.low_noise and transformer.active == "low_noise"
    assert cache.of("low_noise") is cache.low_noise
    # A move to the execution device takes only the active expert there. No second device here, so the
    # offload device stands in as "meta": after .to("cpu") the inactive expert is on it, the active one is not.
    parked = dataclasses.replace(_model_config().transformer, offload_device="meta")
    moved = dataclasses.replace(_model_config(), transformer=parked).setup().to("cpu", torch.float64)
    assert {p.device.type for p in moved.transformer.high_noise.parameters()} == {"cpu"}
    assert {(p.device.type, p.dtype) for p in moved.transformer.low_noise.parameters()} == {("meta", torch.float64)}
    assert moved.device == torch.device("cpu") and moved.dtype == torch.float64
    # Not offloading: both stay wherever the module is; nothing but the bookkeeping changes.
    both = _model_config(offload=False).setup()
    assert not both.transformer._offloading()


def test_config_checks():
    with pytest.raises(ValueError, match="boundary"):
        TwoExpertTransformerConfig(high_noise=_expert(1, 1.0), low_noise=_expert(2, 1.0), boundary=1.5)
    with pytest.raises(ValueError, match="latent shapes differ"):
        TwoExpertTransformerConfig(
            high_noise=_expert(1, 1.0), low_noise=dataclasses.replace(_expert(2, 1.0), num_frames=4)
        ).setup()



def test_prompts_are_encoded_once_for_both_experts(umt5_dir, tmp_path):
    from framestream.recipes import RECIPES, generate_video

    config = RECIPES["wan2.2-t2v-a14b-tiny"](umt5_dir)
    model = config.diffusion_model.setup().eval()
    wrapper = model.transformer
    assert wrapper.high_noise.context_encoder is None and wrapper.low_noise.context_encoder is None
    calls = []
    original = wrapper.context_encoder.forward
    wrapper.context_encoder.forward = lambda prompts: calls.append(list(prompts)) or original(prompts)
    cache = wrapper.initialize_autoregressive_cache(prompt=["a red fox"])
    assert calls == [["a red fox"], [""]]  # prompt and (default) negative prompt, once each for both experts
    with torch.no_grad():
        text = torch.cat([original(["a red fox"]), original([""])])
        for name in ("high_noise", "low_noise"):
            expected_k, _ = wrapper.expert(name).dit.cross_attention_kv(text)
            assert torch.equal(cache.of(name).cross_k[0], expected_k[0])  # each expert's own text keys
    assert not torch.equal(cache.high_noise.cross_k[0], cache.low_noise.cross_k[0])
    result = generate_video(config, "a red fox", tmp_path / "fox.mp4")  # and the recipe runs end to end
    assert result["frames"] == 9


@pytest.mark.filterwarnings("ignore:Passing `image` as torch tensor:FutureWarning")
def test_i2v_a14b_matches_diffusers_image_to_video_two_stage():
    """I2V-A14B: 36-channel experts fed [noise, mask, latents of (image, black frames)], split at t=900."""
    diffusers = pytest.importorskip("diffusers")
    from test_wan22_ti2v import _randomize, diffusers_unipc

    from framestream.recipes import RECIPES

    config = RECIPES["wan2.2-i2v-a14b-tiny"]()
    pipeline = config.setup().eval()  # with the tiny Wan 2.1 VAE decoder; we compare latents
    vae_arch = config.decoder.arch
    ref_vae = diffusers.AutoencoderKLWan(**vae_arch.to_diffusers_kwargs()).eval()
    _randomize(ref_vae, seed=5, std=0.3, gamma_one=True)
    result = pipeline.encoder.video_encoder.vae.load_state_dict(ref_vae.state_dict(), strict=False)
    assert not result.missing_keys
    wrapper = pipeline.diffusion_model.transformer
    refs = {}
    for name in ("high_noise", "low_noise"):
        dit = wrapper.expert(name).dit
        ref = diffusers.WanTransformer3DModel(**dit.arch.to_diffusers_config()).eval()
        _randomize(ref, seed=10 if name == "high_noise" else 20)
        dit.load_state_dict(ref.state_dict(), strict=True)
        refs[name] = ref
    assert refs["high_noise"].config.in_channels == 36 and refs["high_noise"].config.out_channels == 16

    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 1, 32, 48, generator=gen) * 2 - 1
    text = torch.randn(1, 5, WAN_TINY.text_dim, generator=gen)
    negative = torch.randn(1, 5, WAN_TINY.text_dim, generator=gen)
    # Latents straight from the diffusion model (the pipeline's generate would also decode them).
    cache = wrapper.initialize_autoregressive_cache(text_embeddings=text, negative_text_embeddings=negative)
    with torch.no_grad():
        condition = pipeline.encoder(image, 0, pipeline.encoder.initialize_autoregressive_cache())
    latents, _ = pipeline.diffusion_model.generate(0, cache, condition)
    assert condition.shape == (1, 20, 3, 4, 6) and torch.equal(condition[:, :4, 0], torch.ones(1, 4, 4, 6))
    assert not condition[:, :4, 1:].any()

    pipe = diffusers.WanImageToVideoPipeline(
        tokenizer=None, text_encoder=None, vae=ref_vae, scheduler=diffusers_unipc(shift=5.0),
        transformer=refs["high_noise"], transformer_2=refs["low_noise"], image_processor=None, image_encoder=None,
        boundary_ratio=WAN22_I2V_A14B_BOUNDARY,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn((1, 16, 3, 4, 6), generator=torch.Generator().manual_seed(0))  # the recipe's seed 0
    with torch.no_grad():
        expected = pipe(
            image=image[:, :, 0], prompt_embeds=text, negative_prompt_embeds=negative, height=32, width=48,
            num_frames=9, num_inference_steps=4, guidance_scale=3.5, guidance_scale_2=3.5, latents=noise,
            output_type="latent",
        ).frames  # fmt: skip
    assert (latents - expected).abs().max().item() <= 1e-4
    assert expected.abs().max() > 0.1
