"""Wan 2.1 DiT: parity with diffusers, key maps, checkpoint loading (both layouts), adapter behaviour."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from framestream.config import load_config, save_config
from framestream.models.wan.transformer import (
    WAN21_T2V_1_3B,
    WAN21_T2V_14B,
    WAN_TINY,
    WanDiT,
    WanTransformer,
    WanTransformerArchConfig,
    WanTransformerConfig,
    detect_layout,
    diffusers_to_original_key,
    load_wan_transformer,
    original_to_diffusers_key,
    save_wan_checkpoint,
)
from framestream.models.wan.transformer.checkpoint import keep_in_fp32, to_original_layout
from framestream.utils.state_dict import CheckpointMismatchError

diffusers = pytest.importorskip("diffusers")


def _randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> None:
    """Random values everywhere (norm weights and modulation tables included), so nothing is trivially 1 or 0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


@pytest.fixture(scope="module")
def reference():
    """diffusers WanTransformer3DModel (tiny) with random weights, and our DiT sharing them."""
    ref = diffusers.WanTransformer3DModel(**WAN_TINY.to_diffusers_config()).eval()
    _randomize(ref)
    ours = WanDiT(WAN_TINY, time_embedding_fp64=False).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _inputs(batch: int = 2, frames: int = 3, h: int = 6, w: int = 8, text_len: int = 7):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 16, frames, h, w, generator=gen)
    ctx = torch.randn(batch, text_len, WAN_TINY.text_dim, generator=gen)
    return x, ctx


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("timestep", [torch.tensor([999, 321]), torch.tensor([937.5, 0.25])])
def test_forward_matches_diffusers_fp32(reference, timestep):
    ref, ours = reference
    x, ctx = _inputs()
    with torch.no_grad():
        expected = ref(x, timestep, ctx, return_dict=False)[0]
        got = ours(x, timestep, ctx)
    assert got.shape == expected.shape == x.shape
    assert (got - expected).abs().max().item() <= 1e-5
    assert expected.abs().max() > 0.1  # not a degenerate comparison


def test_state_dict_keys_identical_to_diffusers(reference):
    ref, ours = reference
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


def test_fp64_time_embedding_is_close_to_diffusers(reference):
    # Wan computes the sinusoid in float64, diffusers in float32: tiny, bounded difference.
    ref, ours = reference
    wan = WanDiT(WAN_TINY, time_embedding_fp64=True).eval()
    wan.load_state_dict(ours.state_dict())
    x, ctx = _inputs()
    t = torch.tensor([999, 500])
    with torch.no_grad():
        diff = (wan(x, t, ctx) - ref(x, t, ctx, return_dict=False)[0]).abs().max().item()
    assert diff < 1e-3


def test_scalar_timestep_broadcasts(reference):
    _, ours = reference
    x, ctx = _inputs()
    with torch.no_grad():
        a = ours(x, torch.tensor(250.0), ctx)
        b = ours(x, torch.tensor([250.0, 250.0]), ctx)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_param_count_and_presets():
    for arch in (WAN_TINY, WanTransformerArchConfig(**{**dataclasses.asdict(WAN_TINY), "cross_attn_norm": False})):
        built = WanDiT(arch)
        assert arch.num_parameters() == sum(p.numel() for p in built.parameters())
    assert WAN21_T2V_1_3B.inner_dim == 1536 and WAN21_T2V_1_3B.num_layers == 30
    assert WAN21_T2V_14B.inner_dim == 5120 and WAN21_T2V_14B.num_layers == 40
    assert 1.3e9 < WAN21_T2V_1_3B.num_parameters() < 1.5e9
    assert 13.5e9 < WAN21_T2V_14B.num_parameters() < 14.5e9
    assert WAN21_T2V_1_3B.rope_split == (44, 42, 42)


def test_arch_from_configs():
    diffusers_cfg = {
        "_class_name": "WanTransformer3DModel", "_diffusers_version": "0.33.0", "added_kv_proj_dim": None,
        "attention_head_dim": 128, "cross_attn_norm": True, "eps": 1e-06, "ffn_dim": 8960, "freq_dim": 256,
        "image_dim": None, "in_channels": 16, "num_attention_heads": 12, "num_layers": 30, "out_channels": 16,
        "patch_size": [1, 2, 2], "pos_embed_seq_len": None, "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": 1024, "text_dim": 4096,
    }  # fmt: skip
    assert WanTransformerArchConfig.from_diffusers_config(diffusers_cfg) == WAN21_T2V_1_3B
    original_cfg = {
        "_class_name": "WanModel", "_diffusers_version": "0.30.0", "dim": 1536, "eps": 1e-06, "ffn_dim": 8960,
        "freq_dim": 256, "in_dim": 16, "model_type": "t2v", "num_heads": 12, "num_layers": 30, "out_dim": 16,
        "text_len": 512,
    }  # fmt: skip
    assert WanTransformerArchConfig.from_original_config(original_cfg) == WAN21_T2V_1_3B
    with pytest.raises(ValueError, match="t2v"):
        WanTransformerArchConfig.from_original_config({**original_cfg, "model_type": "i2v"})
    with pytest.raises(ValueError, match="I2V"):
        WanTransformerArchConfig.from_diffusers_config({**diffusers_cfg, "image_dim": 1280, "added_kv_proj_dim": 5120})


# ---------------------------------------------------------------------------- key map
# The rename table of diffusers' scripts/convert_wan_to_diffusers.py (plain substring replaces
# in this order), used as an independent reference for our exact key map.
_DIFFUSERS_SCRIPT_RENAMES = [
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.modulation", "scale_shift_table"),
    ("head.head", "proj_out"),
    ("modulation", "scale_shift_table"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
    ("norm2", "norm__placeholder"),
    ("norm3", "norm2"),
    ("norm__placeholder", "norm3"),
    ("self_attn.q", "attn1.to_q"),
    ("self_attn.k", "attn1.to_k"),
    ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"),
    ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn.q", "attn2.to_q"),
    ("cross_attn.k", "attn2.to_k"),
    ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn.norm_k", "attn2.norm_k"),
]


def _script_rename(key: str) -> str:
    for old, new in _DIFFUSERS_SCRIPT_RENAMES:
        key = key.replace(old, new)
    return key


def test_key_map_is_exact_and_bidirectional():
    keys = list(WanDiT(WAN_TINY).state_dict())
    original = [diffusers_to_original_key(k) for k in keys]
    assert len(set(original)) == len(keys)
    assert [original_to_diffusers_key(k) for k in original] == keys
    assert [_script_rename(k) for k in original] == keys  # agrees with diffusers' converter
    expected_original = {
        "patch_embedding.weight", "text_embedding.0.weight", "text_embedding.2.bias", "time_embedding.0.weight",
        "time_embedding.2.bias", "time_projection.1.weight", "blocks.0.self_attn.q.weight", "blocks.0.self_attn.o.bias",
        "blocks.0.self_attn.norm_q.weight", "blocks.1.cross_attn.norm_k.weight", "blocks.0.cross_attn.v.bias",
        "blocks.0.norm3.weight", "blocks.0.norm3.bias", "blocks.1.ffn.0.weight", "blocks.1.ffn.2.bias",
        "blocks.0.modulation", "head.head.weight", "head.head.bias", "head.modulation",
    }  # fmt: skip
    assert expected_original <= set(original)
    assert not any(".norm2." in k or "attn1" in k or "condition_embedder" in k for k in original)
    assert detect_layout(original) == "original" and detect_layout(keys) == "diffusers"


def test_unknown_and_i2v_keys():
    assert original_to_diffusers_key("blocks.0.something.weight") == "blocks.0.something.weight"
    with pytest.raises(ValueError, match="image-to-video"):
        detect_layout(["blocks.0.cross_attn.k_img.weight", "time_embedding.0.weight"])
    with pytest.raises(ValueError, match="layout"):
        detect_layout(["encoder.layers.0.weight"])


# ---------------------------------------------------------------------------- loading
@pytest.fixture(scope="module")
def tiny_dit():
    torch.manual_seed(3)
    dit = WanDiT(WAN_TINY).eval()
    _randomize(dit, seed=3)
    return dit


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sa[k].float(), sb[k].float(), rtol=0, atol=0, msg=k)


def test_roundtrip_diffusers_safetensors_with_config(tmp_path, tiny_dit):
    save_wan_checkpoint(tiny_dit, tmp_path / "transformer", layout="diffusers")
    assert json.loads((tmp_path / "transformer" / "config.json").read_text())["num_attention_heads"] == 2
    loaded = load_wan_transformer(tmp_path, dtype=torch.float32)  # pipeline root -> transformer/
    assert loaded.arch == WAN_TINY
    _same_weights(loaded, tiny_dit)


def test_loads_what_diffusers_saves_sharded(tmp_path, reference):
    ref, ours = reference
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "diffusion_pytorch_model.safetensors.index.json").is_file()
    loaded = load_wan_transformer(tmp_path, dtype=torch.float32, time_embedding_fp64=False)
    x, ctx = _inputs()
    t = torch.tensor([700, 30])
    with torch.no_grad():
        assert (loaded(x, t, ctx) - ref(x, t, ctx, return_dict=False)[0]).abs().max().item() <= 1e-5


def test_roundtrip_original_layout(tmp_path, tiny_dit):
    path = save_wan_checkpoint(tiny_dit, tmp_path, layout="original")
    from safetensors.torch import load_file

    keys = list(load_file(str(path)))
    assert "head.modulation" in keys and "blocks.0.self_attn.q.weight" in keys
    assert json.loads((tmp_path / "config.json").read_text())["dim"] == WAN_TINY.inner_dim
    loaded = load_wan_transformer(tmp_path, dtype=torch.float32)
    _same_weights(loaded, tiny_dit)
    # explicit file + explicit arch + forced layout
    again = load_wan_transformer(path, arch=WAN_TINY, dtype=torch.float32, layout="original")
    _same_weights(again, tiny_dit)


def test_self_forcing_style_pt(tmp_path, tiny_dit):
    original = to_original_layout(tiny_dit.state_dict())
    ema = {f"model.{k}": v for k, v in original.items()}
    raw = {f"model.{k}": torch.zeros_like(v) for k, v in original.items()}
    torch.save({"generator": raw, "generator_ema": ema}, tmp_path / "self_forcing_dmd.pt")
    loaded = load_wan_transformer(tmp_path / "self_forcing_dmd.pt", arch=WAN_TINY, dtype=torch.float32)
    _same_weights(loaded, tiny_dit)
    plain = load_wan_transformer(tmp_path / "self_forcing_dmd.pt", arch=WAN_TINY, dtype=torch.float32, use_ema=False)
    assert all(float(v.abs().sum()) == 0 for v in plain.state_dict().values())


def test_bf16_weights_keep_fp32_parts(tmp_path, tiny_dit):
    save_wan_checkpoint(tiny_dit, tmp_path)
    dit = load_wan_transformer(tmp_path, dtype=torch.bfloat16)
    for name, p in dit.named_parameters():
        assert p.dtype == (torch.float32 if keep_in_fp32(name) else torch.bfloat16), name
    assert dit.blocks[0].scale_shift_table.dtype == torch.float32
    assert dit.blocks[0].attn1.norm_q.weight.dtype == torch.bfloat16
    x, ctx = _inputs(batch=1)
    with torch.no_grad():
        out = dit(x, torch.tensor(500.0), ctx)
        ref = tiny_dit(x, torch.tensor(500.0), ctx)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_bad_checkpoints_give_clear_errors(tmp_path, tiny_dit):
    from safetensors.torch import save_file

    # missing key, original layout: reported with its original name
    sd = to_original_layout(tiny_dit.state_dict())
    del sd["blocks.1.self_attn.k.weight"]
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "m.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"missing key\(s\): blocks\.1\.self_attn\.k\.weight") as err:
        load_wan_transformer(tmp_path / "m.safetensors", arch=WAN_TINY)
    assert err.value.missing == ["blocks.1.self_attn.k.weight"]

    # an extra key and a shape mismatch (wrong architecture)
    sd = dict(tiny_dit.state_dict())
    sd["blocks.0.extra.weight"] = torch.zeros(1)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "x.safetensors"))
    wider = WanTransformerArchConfig(**{**dataclasses.asdict(WAN_TINY), "ffn_dim": 64})
    with pytest.raises(CheckpointMismatchError) as err:
        load_wan_transformer(tmp_path / "x.safetensors", arch=wider)
    text = str(err.value)
    assert "unexpected key(s): blocks.0.extra.weight" in text
    assert "blocks.0.ffn.net.0.proj.weight (checkpoint (48, 24) vs model (64, 24))" in text

    # config.json disagreeing with the requested architecture
    save_wan_checkpoint(tiny_dit, tmp_path / "cfg")
    with pytest.raises(ValueError, match="ffn_dim"):
        load_wan_transformer(tmp_path / "cfg", arch=wider)

    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model"):
        load_wan_transformer(tmp_path / "nothing_here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="Wan-AI/Wan2.1-T2V-1.3B"):
        load_wan_transformer(tmp_path / "empty")
    save_file({"foo.weight": torch.zeros(2)}, str(tmp_path / "alien.safetensors"))
    with pytest.raises(ValueError, match="layout"):
        load_wan_transformer(tmp_path / "alien.safetensors", arch=WAN_TINY)


# ---------------------------------------------------------------------------- adapter
def _adapter(**changes) -> WanTransformer:
    cfg = WanTransformerConfig(
        arch=WAN_TINY, allow_random_init=True, dtype=torch.float32, num_frames=3, height=4, width=6, **changes
    )
    return WanTransformer(cfg).eval()


def test_adapter_shapes_and_identity_patchify():
    t = _adapter(batch_size=2)
    assert t.latent_shape == (2, 16, 3, 4, 6)
    x = torch.randn(t.latent_shape)
    assert t.patchify_and_maybe_split_cp(x) is x
    assert t.unpatchify_and_maybe_gather_cp(x) is x
    cache = t.initialize_autoregressive_cache(text_embeddings=torch.randn(1, 5, 32))  # batch-1 text broadcasts
    flow = t.predict_flow(x, torch.tensor(900.0), cache)
    assert flow.shape == x.shape
    t.finalize_kv_cache(x, torch.tensor(0.0), cache)  # bidirectional: no-op
    with pytest.raises(ValueError, match="text_embeddings= or prompt="):
        t.initialize_autoregressive_cache()
    with pytest.raises(ValueError, match="context_encoder"):
        t.initialize_autoregressive_cache(prompt="a cat")
    with pytest.raises(ValueError, match="allow_random_init"):
        WanTransformer(WanTransformerConfig(arch=WAN_TINY, num_frames=3, height=4, width=6))


def test_classifier_free_guidance_batches_cond_and_uncond():
    t = _adapter(guidance_scale=4.0)
    x = torch.randn(t.latent_shape)
    cond, uncond = torch.randn(1, 5, 32), torch.randn(1, 5, 32)
    cache = t.initialize_autoregressive_cache(text_embeddings=cond, negative_text_embeddings=uncond)
    assert cache.batch_size == 2 and cache.guidance
    got = t.predict_flow(x, torch.tensor(600.0), cache)
    with torch.no_grad():
        fc = t.dit(x, torch.tensor(600.0), cond)
        fu = t.dit(x, torch.tensor(600.0), uncond)
    torch.testing.assert_close(got, fu + 4.0 * (fc - fu), rtol=1e-5, atol=1e-5)


def test_random_init_is_seeded_and_config_roundtrips(tmp_path):
    a, b = _adapter(init_seed=5), _adapter(init_seed=5)
    _same_weights(a.dit, b.dit)
    cfg = _adapter(causal=True, rolling_kv_cache=True, kv_cache_frames=6, sink_frames=3).config
    save_config(cfg, tmp_path / "t.json")
    assert load_config(tmp_path / "t.json") == cfg
    with pytest.raises(ValueError, match="rolling KV cache"):
        dataclasses.replace(cfg, kv_cache_frames=5)
    with pytest.raises(ValueError, match="divisible"):
        dataclasses.replace(cfg, height=5)
