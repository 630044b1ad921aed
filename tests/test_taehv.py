"""TAEHV: streaming equals one call, parity with an independent frame-by-frame reference and
with flashdreams' decoder, public checkpoint layout, explicit per-stream state."""

from __future__ import annotations

import pickle

import pytest
import torch

from framestream.models.taehv import (
    TAEHV,
    TAEHVCheckpointError,
    TAEHVDecodeState,
    TAEHVEncodeState,
    infer_taehv_arch,
    init_taehv_random,
    load_taehv,
    tiny_taehv_arch,
)
from taehv_reference import flashdreams_root, load_flashdreams_taehv, sequential_decode, sequential_encode

TOL = 1e-5


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Max abs difference <= 1e-5 relative to the reference's scale (random encoder latents reach ~60)."""
    torch.testing.assert_close(actual, expected, atol=TOL * max(1.0, expected.abs().max().item()), rtol=0)


def _model(latent_channels: int = 16, patch: int = 1, width: int = 8, seed: int = 0) -> TAEHV:
    return init_taehv_random(TAEHV(tiny_taehv_arch(latent_channels, width, patch)), seed).eval()


def _latents(model: TAEHV, frames: int = 6, h: int = 3, w: int = 5, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, frames, model.arch.latent_channels, h, w, generator=g)


def _decode_in_chunks(model: TAEHV, z: torch.Tensor, size: int) -> torch.Tensor:
    state = TAEHVDecodeState()
    return torch.cat([model.decode(z[:, i : i + size], state) for i in range(0, z.shape[1], size)], 1)


@pytest.mark.parametrize("patch,latent_channels", [(1, 16), (2, 48)])
def test_decode_matches_frame_by_frame_reference_and_streams_in_any_chunk_size(patch, latent_channels):
    model = _model(latent_channels, patch)
    z = _latents(model)
    whole = model.decode(z)
    s = model.arch.spatial_ratio
    assert whole.shape == (2, 1 + 4 * (z.shape[1] - 1), 3, 3 * s, 5 * s)
    assert 0.05 < whole.std().item() and 0.0 < whole.mean().item() < 1.0  # not clamped flat
    torch.testing.assert_close(whole, sequential_decode(model, z), atol=TOL, rtol=0)
    for size in (1, 2, 3):
        torch.testing.assert_close(_decode_in_chunks(model, z, size), whole, atol=TOL, rtol=0)


def test_encode_streams_and_matches_reference():
    model = _model()
    g = torch.Generator().manual_seed(3)
    frames = torch.rand(1, 13, 3, 24, 40, generator=g)
    whole = model.encode(frames)
    assert whole.shape == (1, 4, 16, 3, 5)  # 13 frames padded to 16 -> 4 latents
    _assert_close(whole, sequential_encode(model, frames))
    state = TAEHVEncodeState()
    parts = [model.encode(frames[:, i : i + 3], state) for i in range(0, 13, 3)]
    assert parts[0].shape[1] == 0  # three frames do not fill a group of four
    streamed = torch.cat([*parts, model.finish_encode(state)], 1)
    _assert_close(streamed, whole)
    with pytest.raises(ValueError, match="finished"):
        model.encode(frames[:, :4], state)


def test_streams_are_independent():
    model = _model()
    a, b = _latents(model, seed=5), _latents(model, seed=6)
    sa, sb = TAEHVDecodeState(), TAEHVDecodeState()
    out_a, out_b = [], []
    for i in range(0, 6, 2):  # interleave two streams through one model
        out_a.append(model.decode(a[:, i : i + 2], sa))
        out_b.append(model.decode(b[:, i : i + 2], sb))
    torch.testing.assert_close(torch.cat(out_a, 1), model.decode(a), atol=TOL, rtol=0)
    torch.testing.assert_close(torch.cat(out_b, 1), model.decode(b), atol=TOL, rtol=0)
    assert sa.frames_in == 6 and sa.frames_to_trim == 0


def test_bad_input_is_one_clear_error():
    model = _model()
    with pytest.raises(ValueError, match=r"\(B, T, 16, H, W\)"):
        model.decode(torch.zeros(1, 2, 8, 3, 3))
    with pytest.raises(ValueError, match="multiples of 8"):
        model.encode(torch.zeros(1, 4, 3, 20, 16))


def _public_layout_state(model: TAEHV) -> dict[str, torch.Tensor]:
    """The state dict as the public files hold it: decoder.7 (a stride-1 TGrow) stored for stride 2."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    w = state["decoder.7.conv.weight"]
    state["decoder.7.conv.weight"] = torch.cat([torch.randn_like(w), w], 0)  # first-frame half is dropped
    return state


def test_checkpoint_public_layout_roundtrip(tmp_path):
    model = _model(width=8)
    state = _public_layout_state(model)
    assert sorted({k.split(".")[0] for k in state}) == ["decoder", "encoder"]
    assert "decoder.3.conv.0.weight" in state and "encoder.17.weight" in state  # nn.Sequential indices
    path = tmp_path / "taew2_1.pth"
    torch.save(state, path)
    loaded = load_taehv(path)
    assert loaded.arch == model.arch
    z = _latents(model)
    torch.testing.assert_close(loaded.decode(z), model.decode(z), atol=0, rtol=0)
    decoder_only = load_taehv(path, include_encoder=False)
    assert decoder_only.encoder is None

    arch22 = infer_taehv_arch(_model(48, 2, width=4).state_dict())
    assert (arch22.latent_channels, arch22.patch_size, arch22.decoder_channels) == (48, 2, (4, 4, 4, 4))


class _NotWeights:
    """A pickled object weights_only loading must refuse."""


def test_checkpoint_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"decoder.1.weight": torch.zeros(8, 16, 3, 3)}, bad)
    with pytest.raises(TAEHVCheckpointError, match="lacks"):
        load_taehv(bad)

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"x": _NotWeights()}, f, protocol=2)
    with pytest.raises(TAEHVCheckpointError, match="weights-only"):
        load_taehv(evil)
    with pytest.raises(FileNotFoundError, match="madebyollin/taehv"):
        load_taehv(tmp_path / "missing.pth")


def test_parity_with_flashdreams_decoder(tmp_path, monkeypatch):
    root = flashdreams_root()
    if root is None:
        pytest.skip("flashdreams not present (the README set-up installs it: pip install --no-deps flashdreams==0.1.0)")
    impl = load_flashdreams_taehv(root, monkeypatch)
    model = _model(width=8)
    path = tmp_path / "taew2_1.pth"
    torch.save(_public_layout_state(model), path)
    ref = impl.TAEHV(checkpoint_path=str(path), channels=(8, 8, 8, 8), use_cuda_graph=False).float()
    z = _latents(model, frames=7)
    ours = load_taehv(path)
    whole = ours.decode(z)
    torch.testing.assert_close(whole, ref.decode(z), atol=TOL, rtol=0)
    cache = ref.prepare_cache()  # their streaming path, chunks of 3 latents
    theirs = torch.cat([ref.decode(z[:, i : i + 3], cache=cache) for i in range(0, 7, 3)], 1)
    torch.testing.assert_close(_decode_in_chunks(ours, z, 3), theirs, atol=TOL, rtol=0)


def test_tiny_self_forcing_recipe_runs_with_taehv_end_to_end(tmp_path, capsys):
    from framestream.cli.main import main
    from framestream.io.video import read_video
    from framestream.recipes import RECIPES, generate_video
    from framestream.recipes.decoders import select_decoder

    out = tmp_path / "sf_taehv.mp4"
    rc = main(["generate", "wan2.1-self-forcing-1.3b-tiny", "--prompt", "a fox", "--decoder", "taehv",
               "--num-blocks", "2", "-o", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    video, _ = read_video(out)
    assert video.shape == (21, 32, 48, 3)  # 9 + 12 frames, 8x the 4x6 latent
    assert video.float().std() > 1.0  # frames carry content

    # Without a checkpoint the full recipe names the missing file before building anything.
    rc = main(["generate", "wan2.1-self-forcing-1.3b", "--prompt", "x", "--decoder", "taehv",
               "--checkpoint-dir", str(tmp_path), "-o", str(tmp_path / "no.mp4")])  # fmt: skip
    assert rc != 0 and not (tmp_path / "no.mp4").exists()

    config = select_decoder(RECIPES["wan2.1-self-forcing-1.3b-tiny"](), "taehv", tiny=True)
    blocks: list[int] = []
    generate_video(config, "a fox", tmp_path / "b.mp4", num_blocks=2, on_block=lambda i, n: blocks.append(n))
    assert blocks == [9, 12]


def test_cli_decode_with_taehv(tmp_path, capsys):
    import numpy as np

    from framestream.cli.main import main
    from framestream.io.latents import LatentMetadata, save_latents
    from framestream.io.transfer import frames_to_uint8

    model = _model(width=8)
    ckpt = tmp_path / "taew2_1.pth"
    torch.save(_public_layout_state(model), ckpt)
    z = torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(9))  # (B, C, T, h, w), normalised
    latents = tmp_path / "z.safetensors"
    save_latents(latents, z, LatentMetadata(vae="wan2.1", normalized=True, fps=8.0))
    out = tmp_path / "frames.npy"
    rc = main(["decode", str(latents), "-o", str(out), "--vae", "taehv-wan2.1", "--checkpoint", str(ckpt), "--chunk", "2"])
    assert rc == 0, capsys.readouterr().err
    frames = np.load(out)
    expected = frames_to_uint8(model.decode(z.transpose(1, 2)).transpose(1, 2).mul(2).sub(1))[0].numpy()
    assert frames.shape == (9, 32, 48, 3) and np.array_equal(frames, expected)

    rc = main(["decode", str(latents), "-o", str(tmp_path / "t.npy"), "--vae", "taehv-wan2.1", "--checkpoint", str(ckpt),
               "--tile-size", "64"])  # fmt: skip
    assert rc != 0 and "does not tile" in capsys.readouterr().err
    assert not (tmp_path / "t.npy").exists()
