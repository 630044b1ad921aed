"""Demo model (KV-cached causal DiT, streaming decoder), its recipe, and ``framestream demo``."""

from __future__ import annotations

import pytest
import torch

from framestream.cli.main import main
from framestream.config import derive_config, load_config, save_config
from framestream.io.video import read_video
from framestream.models.demo import (
    DEMO_CONFIGS,
    DemoStreamingDecoderConfig,
    DemoTransformerConfig,
    demo_pipeline_config,
)
from framestream.pipeline import StreamInferencePipelineConfig

TINY_DIT = dict(latent_channels=2, chunk_frames=2, height=4, width=4, dim=32, num_heads=2, num_layers=2, frequency_dim=16)


def run_chunks(transformer, chunks, timestep):
    """Feed chunks one by one through the KV cache, as DiffusionModel does (predict, then finalize)."""
    cache = transformer.initialize_autoregressive_cache()
    outputs = []
    for index, chunk in enumerate(chunks):
        cache.start(index)
        transformer.predict_flow(torch.randn_like(chunk), timestep, cache)  # a denoising step on other data
        outputs.append(transformer.predict_flow(chunk, timestep, cache))
        transformer.finalize_kv_cache(chunk, timestep, cache)
        cache.finalize(index)
    return torch.cat(outputs, dim=1), cache


@pytest.mark.parametrize("window_chunks", [8, 1])
def test_kv_cached_chunks_equal_block_causal_forward(window_chunks: int) -> None:
    transformer = DemoTransformerConfig(**TINY_DIT, window_chunks=window_chunks).setup().eval()
    torch.manual_seed(0)
    chunks = [torch.randn(transformer.latent_shape) for _ in range(4)]
    timestep = torch.tensor(375.0)
    with torch.no_grad():
        streamed, cache = run_chunks(transformer, chunks, timestep)
        reference = transformer.predict_flow_block_causal(torch.cat(chunks, dim=1), timestep)
    torch.testing.assert_close(streamed, reference, rtol=1e-5, atol=1e-5)
    assert cache.num_cached_chunks == min(4, window_chunks)


def test_attention_is_causal_across_chunks() -> None:
    transformer = DemoTransformerConfig(**TINY_DIT).setup().eval()
    torch.manual_seed(1)
    chunks = [torch.randn(transformer.latent_shape) for _ in range(3)]
    changed = [chunks[0], chunks[1], chunks[2] + 1.0]
    with torch.no_grad():
        a = transformer.predict_flow_block_causal(torch.cat(chunks, 1), torch.tensor(500.0))
        b = transformer.predict_flow_block_causal(torch.cat(changed, 1), torch.tensor(500.0))
    n = transformer.tokens_per_chunk
    torch.testing.assert_close(a[:, : 2 * n], b[:, : 2 * n])  # earlier chunks never see later ones
    assert not torch.allclose(a[:, 2 * n :], b[:, 2 * n :])


def test_kv_cache_bookkeeping_errors() -> None:
    transformer = DemoTransformerConfig(**TINY_DIT).setup()
    cache = transformer.initialize_autoregressive_cache()
    noisy = torch.zeros(transformer.latent_shape)
    with pytest.raises(RuntimeError, match="start"):
        transformer.predict_flow(noisy, torch.tensor(0.0), cache)
    with pytest.raises(ValueError, match="expected AR step 0"):
        cache.start(1)
    cache.start(0)
    with pytest.raises(ValueError, match="finalize"):
        cache.finalize(1)
    with pytest.raises(ValueError, match="patchified chunk"):
        transformer.predict_flow(torch.zeros(1, 3, 3), torch.tensor(0.0), cache)


def test_transformer_patchify_round_trip_and_shape() -> None:
    transformer = DemoTransformerConfig(**TINY_DIT).setup()
    latent = torch.randn(1, 2, 2, 4, 4)
    tokens = transformer.patchify_and_maybe_split_cp(latent)
    assert tuple(tokens.shape) == transformer.latent_shape == (1, 2 * 2 * 2, 2 * 4)
    torch.testing.assert_close(transformer.unpatchify_and_maybe_gather_cp(tokens), latent, rtol=0, atol=0)


def test_invalid_transformer_config() -> None:
    with pytest.raises(ValueError, match="patch_size"):
        DemoTransformerConfig(height=5)
    with pytest.raises(ValueError, match="num_heads"):
        DemoTransformerConfig(dim=30, num_heads=4)


# ---------------------------------------------------------------------------- decoder


def tiny_decoder():
    return DemoStreamingDecoderConfig(latent_channels=2, hidden_channels=8, spatial_upsample=4).setup().eval()


def test_decoder_temporal_size_mappers() -> None:
    decoder = DemoStreamingDecoderConfig().setup()
    assert (decoder.temporal_compression_ratio, decoder.spatial_compression_ratio) == (4, 8)
    for n in (1, 2, 5):
        assert decoder.get_output_temporal_size(0, n) == 1 + (n - 1) * 4
        assert decoder.get_output_temporal_size(3, n) == n * 4
        assert decoder.get_input_temporal_size(0, 1 + (n - 1) * 4) == n
        assert decoder.get_input_temporal_size(3, n * 4) == n
    with pytest.raises(ValueError):
        decoder.get_input_temporal_size(0, 4)
    with pytest.raises(ValueError):
        decoder.get_input_temporal_size(1, 5)


def test_streaming_decode_equals_decoding_all_at_once() -> None:
    decoder = tiny_decoder()
    torch.manual_seed(0)
    latents = torch.randn(1, 2, 6, 3, 2)
    with torch.no_grad():
        whole = decoder(latents, 0)
        cache = decoder.initialize_autoregressive_cache()
        pieces, start = [], 0
        for index, size in enumerate((1, 3, 2)):
            piece = decoder(latents[:, :, start : start + size], index, cache)
            assert piece.shape == (1, 3, decoder.get_output_temporal_size(index, size), 12, 8)
            pieces.append(piece)
            start += size
    assert whole.shape == (1, 3, 1 + 5 * 4, 12, 8)
    torch.testing.assert_close(torch.cat(pieces, dim=2), whole, rtol=1e-5, atol=1e-5)
    assert whole.abs().max() <= 1.0


def test_decoder_rejects_wrong_index_and_shape() -> None:
    decoder = tiny_decoder()
    cache = decoder.initialize_autoregressive_cache()
    with pytest.raises(ValueError, match="expected AR step 0"):
        decoder(torch.zeros(1, 2, 1, 2, 2), 1, cache)
    with pytest.raises(ValueError, match="expected latents"):
        decoder(torch.zeros(1, 3, 1, 2, 2), 0, cache)
    decoder(torch.zeros(1, 2, 1, 2, 2), 0, cache)
    with pytest.raises(ValueError, match="expected AR step 1"):
        decoder(torch.zeros(1, 2, 1, 2, 2), 0, cache)


# ---------------------------------------------------------------------------- recipe


def small_demo_config(**changes) -> StreamInferencePipelineConfig:
    config = demo_pipeline_config(latent_height=4, latent_width=4, chunk_frames=2, **changes)
    return derive_config(config, diffusion_model={"transformer": {"dim": 32, "num_heads": 2, "frequency_dim": 16}})


def test_demo_recipe_rollout_is_reproducible() -> None:
    config = small_demo_config(seed=11)
    first = [o.clone() for o in config.setup().rollout(3)]
    second = list(config.setup().rollout(3))
    assert [tuple(o.shape) for o in first] == [(1, 3, 5, 32, 32), (1, 3, 8, 32, 32), (1, 3, 8, 32, 32)]
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(o.abs().max() <= 1.0 for o in first)
    other = list(small_demo_config(seed=12).setup().rollout(1))
    assert not torch.allclose(first[0], other[0])


def test_demo_recipe_registry_and_serialization(tmp_path) -> None:
    config = DEMO_CONFIGS["demo"]
    assert config.name == "demo" and config.encoder is None
    assert config.diffusion_model.scheduler.num_inference_steps == 4
    assert load_config(save_config(config, tmp_path / "demo.yaml")) == config


# ---------------------------------------------------------------------------- CLI


def test_cli_demo_writes_video_and_prints_table(tmp_path, capsys) -> None:
    out = tmp_path / "sub" / "demo.mp4"
    code = main(
        [
            "demo",
            "--steps", "2",
            "--output", str(out),
            "--fps", "8",
            "--profile",
            "--diffusion-model.scheduler.shift", "3",
            "--diffusion-model.transformer.num-layers", "1",
        ]
    )
    assert code == 0
    frames, fps = read_video(out)
    assert tuple(frames.shape) == (9 + 12, 96, 128, 3) and fps == 8.0
    assert sorted(p.name for p in out.parent.iterdir()) == ["demo.mp4"]
    captured = capsys.readouterr()
    assert "RANDOM weights" in captured.out and captured.err == ""  # stderr is kept for errors (one line)
    assert "diffusion" in captured.out and "mean*" in captured.out and "wrote 21 frames" in captured.out


def test_cli_demo_reports_bad_override(tmp_path, capsys) -> None:
    out = tmp_path / "demo.mp4"
    assert main(["demo", "--steps", "1", "--output", str(out), "--diffusion-model.no-such-field", "1"]) == 2
    assert "no_such_field" in capsys.readouterr().err
    assert not out.exists()
