"""Wan recipes, UMT5 text encoder, weight discovery, the ``generate`` CLI and a tiny end-to-end rollout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from framestream.cli.main import main
from framestream.config import load_config, save_config
from framestream.diffusion.schedulers.flow_match import FlowMatchSchedulerConfig
from framestream.diffusion.schedulers.unipc import FlowMatchUniPCSchedulerConfig
from framestream.models.wan.text_encoder import (
    WAN_NEGATIVE_PROMPT,
    UMT5TextEncoderConfig,
    hf_to_wan_t5_key,
    wan_t5_to_hf_key,
)
from framestream.models.wan.transformer import WAN21_T2V_1_3B, WAN_TINY, WanTransformer, WanTransformerConfig
from framestream.decoders.wan import WanVAEDecoderConfig
from framestream.recipes import RECIPES, MissingWeightsError, generate_video, prepare_recipe, resolve_wan_files

transformers = pytest.importorskip("transformers")

WORDS = ["<pad>", "</s>", "<unk>"] + "a cat dog runs on the moon in slow motion red blue fox snow".split()


@pytest.fixture(scope="module")
def umt5_dir(tmp_path_factory) -> Path:
    """A tiny random UMT5 encoder (d_model = WAN_TINY.text_dim) with a word-level tokenizer, saved locally."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    folder = tmp_path_factory.mktemp("umt5")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = transformers.UMT5Config(
        vocab_size=len(WORDS), d_model=WAN_TINY.text_dim, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.UMT5EncoderModel(config).eval().save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoder(umt5_dir):
    return UMT5TextEncoderConfig(checkpoint_path=str(umt5_dir), text_len=16, dtype=torch.float32).setup()


# ------------------------------------------------------------------------ text encoder
def test_text_encoder_trims_and_zero_pads(encoder):
    out = encoder(["a cat runs", "the  dog runs on the moon"])
    assert out.shape == (2, 16, WAN_TINY.text_dim)
    lengths = [4, 7]  # tokens + EOS
    for row, n in zip(out, lengths):
        assert (row[:n].abs().sum(-1) > 0).all() and (row[n:] == 0).all()
    # valid rows equal the encoder run on the unpadded sequence alone
    ids, _ = encoder.tokenize(["a cat runs"])
    alone = encoder.model(input_ids=ids[:, :4]).last_hidden_state
    torch.testing.assert_close(out[:1, :4], alone, rtol=1e-5, atol=1e-5)
    # token ids (tensor or dict) skip the tokenizer and give the same features
    torch.testing.assert_close(encoder(ids), out[:1])
    torch.testing.assert_close(encoder({"input_ids": ids[:, :4], "attention_mask": torch.ones(1, 4)}), out[:1])


def test_text_encoder_original_wan_pth(tmp_path, umt5_dir, encoder):
    state = encoder.model.state_dict()
    wan = {hf_to_wan_t5_key(k): v for k, v in state.items() if k != "encoder.embed_tokens.weight"}
    assert "blocks.0.ffn.gate.0.weight" in wan and "token_embedding.weight" in wan and "norm.weight" in wan
    assert "blocks.1.pos_embedding.embedding.weight" in wan
    assert all(wan_t5_to_hf_key(hf_to_wan_t5_key(k)) == k for k in state if k != "encoder.embed_tokens.weight")
    torch.save(wan, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    (tmp_path / "t5.json").write_text(json.dumps(encoder.model.config.to_dict()))
    wan_encoder = UMT5TextEncoderConfig(
        checkpoint_path=str(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"),
        tokenizer_path=str(umt5_dir),
        model_config_path=str(tmp_path / "t5.json"),
        text_len=16,
        dtype=torch.float32,
    ).setup()
    prompts = ["red fox in snow", "a dog"]
    torch.testing.assert_close(wan_encoder(prompts), encoder(prompts), rtol=0, atol=0)


def test_text_encoder_errors(tmp_path, umt5_dir):
    with pytest.raises(FileNotFoundError, match="models_t5_umt5-xxl-enc-bf16.pth"):
        UMT5TextEncoderConfig(checkpoint_path=str(tmp_path / "missing")).setup()
    with pytest.raises(ValueError, match="checkpoint_path is not set"):
        UMT5TextEncoderConfig().setup()
    no_tok = UMT5TextEncoderConfig(checkpoint_path=str(umt5_dir), tokenizer_path=None, text_len=8, dtype=torch.float32)
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        UMT5TextEncoderConfig(checkpoint_path=str(umt5_dir), tokenizer_path=str(tmp_path)).setup()
    assert no_tok.setup()(torch.tensor([[3, 4, 1]])).shape == (1, 8, WAN_TINY.text_dim)


def test_prompts_and_negative_prompt_through_the_transformer(umt5_dir, encoder):
    t = WanTransformer(
        WanTransformerConfig(
            arch=WAN_TINY, allow_random_init=True, dtype=torch.float32, num_frames=3, height=4, width=6,
            guidance_scale=5.0,
            context_encoder=UMT5TextEncoderConfig(
                checkpoint_path=str(umt5_dir), text_len=16, dtype=torch.float32, negative_prompt="blue snow"
            ),
        )  # fmt: skip
    )
    cache = t.initialize_autoregressive_cache(prompt=["a red fox"])
    assert cache.batch_size == 2
    expected_k, _ = t.dit.cross_attention_kv(torch.cat([encoder(["a red fox"]), encoder(["blue snow"])]))
    torch.testing.assert_close(cache.cross_k[1], expected_k[1])


# ----------------------------------------------------------------------------- recipes
def test_registry_and_recipe_configs(tmp_path):
    assert {"wan2.1-t2v-1.3b", "wan2.1-self-forcing-1.3b", "wan2.1-t2v-1.3b-tiny", "wan2.1-self-forcing-1.3b-tiny"} <= set(RECIPES)

    sf = RECIPES["wan2.1-self-forcing-1.3b"]()
    tr, sched = sf.diffusion_model.transformer, sf.diffusion_model.scheduler
    assert sf.name == "wan2.1-self-forcing-1.3b"
    assert tr.arch == WAN21_T2V_1_3B and tr.causal and tr.num_frames == 3 and tr.guidance_scale == 1.0
    assert (tr.height, tr.width) == (60, 104)
    assert isinstance(sched, FlowMatchSchedulerConfig)
    assert tuple(sched.denoising_timesteps) == (1000, 750, 500, 250) and sched.num_inference_steps == 4
    assert sched.shift == 5.0 and sched.warp_denoising_step
    assert sf.diffusion_model.context_noise == 0
    assert isinstance(sf.decoder, WanVAEDecoderConfig)

    t2v = RECIPES["wan2.1-t2v-1.3b"]()
    tr, sched = t2v.diffusion_model.transformer, t2v.diffusion_model.scheduler
    assert not tr.causal and tr.num_frames == 21 and tr.guidance_scale > 1
    assert isinstance(sched, FlowMatchUniPCSchedulerConfig) and sched.num_inference_steps == 50 and sched.shift == 5.0

    for name in RECIPES:
        config = RECIPES[name]()
        save_config(config, tmp_path / f"{name}.yaml")
        assert load_config(tmp_path / f"{name}.yaml") == config


def test_prepare_recipe_sizes_the_kv_cache():
    sf = RECIPES["wan2.1-self-forcing-1.3b"]()
    config, blocks = prepare_recipe(sf)
    assert blocks == 7 and config.diffusion_model.transformer.kv_cache_frames == 21
    config, blocks = prepare_recipe(sf, 10)
    assert blocks == 10 and config.diffusion_model.transformer.kv_cache_frames == 30
    with pytest.raises(ValueError, match="bidirectional"):
        prepare_recipe(RECIPES["wan2.1-t2v-1.3b"](), 2)


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_resolve_wan_files_both_layouts(tmp_path):
    original = tmp_path / "orig"
    for name in ("diffusion_pytorch_model.safetensors", "config.json", "Wan2.1_VAE.pth",
                 "models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/tokenizer.json"):  # fmt: skip
        _touch(original / name)
    files = resolve_wan_files(original)
    assert files.dit == original and files.vae.name == "Wan2.1_VAE.pth"
    assert files.tokenizer == original / "google" / "umt5-xxl"
    config = RECIPES["wan2.1-t2v-1.3b"](original)  # paths filled in, nothing loaded yet
    text = config.diffusion_model.transformer.context_encoder
    assert text.negative_prompt == WAN_NEGATIVE_PROMPT and text.checkpoint_path.endswith("enc-bf16.pth")
    assert config.decoder.checkpoint_path == str(original / "Wan2.1_VAE.pth")
    assert config.diffusion_model.transformer.checkpoint_path == str(original)
    save_config(config, tmp_path / "resolved.json")
    assert load_config(tmp_path / "resolved.json") == config

    diff = tmp_path / "diff" / "Wan2.1-T2V-1.3B-Diffusers"
    for name in ("transformer/diffusion_pytorch_model.safetensors", "vae/config.json",
                 "text_encoder/config.json", "tokenizer/tokenizer.json"):  # fmt: skip
        _touch(diff / name)
    files = resolve_wan_files(tmp_path / "diff")
    assert files.dit == diff / "transformer" and files.text_encoder == diff / "text_encoder"

    with pytest.raises(MissingWeightsError, match="self_forcing_dmd.pt"):
        resolve_wan_files(tmp_path / "diff", self_forcing=True)
    _touch(tmp_path / "diff" / "checkpoints" / "self_forcing_dmd.pt")
    assert resolve_wan_files(tmp_path / "diff", self_forcing=True).dit.name == "self_forcing_dmd.pt"


def test_cli_list_and_missing_weights_fail_before_any_work(tmp_path, capsys, monkeypatch):
    assert main(["generate", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "wan2.1-self-forcing-1.3b" in listing and "wan2.1-t2v-1.3b-tiny" in listing

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the weights were checked")

    monkeypatch.setattr("framestream.models.wan.transformer.model.WanDiT.__init__", no_model)
    rc = main(["generate", "wan2.1-self-forcing-1.3b", "--prompt", "a cat", "--checkpoint-dir", str(tmp_path),
               "-o", str(tmp_path / "x.mp4")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    for needed in ("self_forcing_dmd.pt", "Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl",
                   "Wan-AI/Wan2.1-T2V-1.3B", "gdhe17/Self-Forcing"):  # fmt: skip
        assert needed in err
    assert main(["generate", "wan2.1-t2v-1.3b", "--prompt", "a cat"]) == 2
    assert "--checkpoint-dir" in capsys.readouterr().err
    assert main(["generate", "no-such-recipe", "--prompt", "x"]) == 2
    assert not (tmp_path / "x.mp4").exists()


# ------------------------------------------------------------------------- end to end
def test_self_forcing_rollout_end_to_end(tmp_path, umt5_dir):
    from framestream.io.video import read_video

    config = RECIPES["wan2.1-self-forcing-1.3b-tiny"](umt5_dir)
    blocks = []
    result = generate_video(
        config, "a red fox runs in snow", tmp_path / "sf.mp4", num_blocks=2, on_block=lambda i, n: blocks.append(n)
    )
    assert blocks == [9, 12]  # causal VAE: 1 + 4*(3-1) frames for the first block, 4*3 after
    video, fps = read_video(tmp_path / "sf.mp4")
    assert video.shape == (21, 32, 48, 3) and result["frames"] == 21 and fps == 16


def test_generate_cli_tiny_bidirectional_with_overrides(tmp_path, umt5_dir, capsys):
    from framestream.io.video import read_video

    out = tmp_path / "t2v.mp4"
    rc = main(["generate", "wan2.1-t2v-1.3b-tiny", "--prompt", "a cat on the moon", "--checkpoint-dir", str(umt5_dir),
               "-o", str(out), "--diffusion-model.scheduler.num-inference-steps", "2",
               "--diffusion-model.transformer.num-frames", "2"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert read_video(out)[0].shape[0] == 1 + 4 * (2 - 1)
