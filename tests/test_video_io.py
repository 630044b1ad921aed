"""Streaming mp4 writer, video reading, and uint8 conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framestream.io.video import StreamingVideoWriter, iter_video_frames, read_video, to_uint8


def listing(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_round_trip_frame_count_size_fps_and_no_temp_file(tmp_path) -> None:
    path = tmp_path / "clip.mp4"
    torch.manual_seed(0)
    with StreamingVideoWriter(path, fps=12, preset="ultrafast") as writer:
        writer.write(torch.rand(1, 3, 5, 32, 48) * 2 - 1)  # decoder layout, float in [-1, 1]
        writer.write(np.zeros((4, 32, 48, 3), dtype=np.uint8))  # (T, H, W, 3) uint8 numpy
        writer.write(torch.full((32, 48, 3), 200, dtype=torch.uint8))  # a single frame
        assert writer.num_frames == 10 and writer.size == (32, 48)
    assert listing(tmp_path) == ["clip.mp4"]
    frames, fps = read_video(path)
    assert frames.dtype == torch.uint8 and tuple(frames.shape) == (10, 32, 48, 3)
    assert fps == 12.0
    assert abs(frames[-1].float().mean().item() - 200) < 3
    assert frames[5:9].float().mean().item() < 3


def test_pixel_values_survive_encoding(tmp_path) -> None:
    path = tmp_path / "gradient.mp4"
    ramp = torch.linspace(-1, 1, 64).view(1, 1, 1, 1, 64).expand(1, 3, 2, 32, 64)
    with StreamingVideoWriter(path, fps=8, crf=0) as writer:
        writer.write(ramp)
    frames, _ = read_video(path)
    expected = to_uint8(ramp)[0].permute(1, 2, 3, 0)
    assert (frames.int() - expected.int()).abs().max() <= 3


def test_frames_reach_disk_while_writing(tmp_path) -> None:
    path = tmp_path / "live.mp4"
    with StreamingVideoWriter(path, fps=8, preset="ultrafast") as writer:
        writer.write(torch.zeros(1, 3, 3, 16, 16))
        (partial,) = list(tmp_path.iterdir())
        assert partial.name.startswith(".live.mp4") and partial.stat().st_size > 0
        assert not path.exists()
    assert listing(tmp_path) == ["live.mp4"]


def test_exception_removes_temp_file_and_keeps_existing_output(tmp_path) -> None:
    path = tmp_path / "out.mp4"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="boom"):
        with StreamingVideoWriter(path, fps=8) as writer:
            writer.write(torch.zeros(2, 16, 16, 3, dtype=torch.uint8))
            raise RuntimeError("boom")
    assert listing(tmp_path) == ["out.mp4"] and path.read_bytes() == b"previous"


def test_odd_size_rejected_before_writing(tmp_path) -> None:
    path = tmp_path / "odd.mp4"
    with pytest.raises(ValueError, match="even width and height, got 15x16"):
        with StreamingVideoWriter(path) as writer:
            writer.write(torch.zeros(1, 16, 15, 3, dtype=torch.uint8))
    assert listing(tmp_path) == []


def test_writer_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="no frames were written"):
        with StreamingVideoWriter(tmp_path / "empty.mp4"):
            pass
    assert listing(tmp_path) == []
    with pytest.raises(ValueError, match="frame size changed"):
        with StreamingVideoWriter(tmp_path / "a.mp4") as writer:
            writer.write(torch.zeros(1, 16, 16, 3, dtype=torch.uint8))
            writer.write(torch.zeros(1, 16, 18, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(1, 3, T, H, W\)"):
        StreamingVideoWriter(tmp_path / "b.mp4").write(torch.zeros(2, 3, 1, 16, 16))
    with pytest.raises(ValueError, match="frames must be"):
        StreamingVideoWriter(tmp_path / "b.mp4").write(torch.zeros(4, 16, 16, 4))
    with pytest.raises(ValueError, match="crf"):
        StreamingVideoWriter(tmp_path / "b.mp4", crf=60)
    with pytest.raises(ValueError, match="fps"):
        StreamingVideoWriter(tmp_path / "b.mp4", fps=0)
    with pytest.raises(ValueError, match="container suffix"):
        StreamingVideoWriter(tmp_path / "b.foo").write(torch.zeros(1, 16, 16, 3, dtype=torch.uint8))
    bad_preset = StreamingVideoWriter(tmp_path / "b.mp4", preset="no-such-preset")
    with pytest.raises(ValueError):  # the encoder rejects the option when the stream opens
        bad_preset.write(torch.zeros(1, 16, 16, 3, dtype=torch.uint8))
    assert listing(tmp_path) == []  # no temporary file left behind, even while the writer is alive
    writer = StreamingVideoWriter(tmp_path / "c.mp4")
    writer.write(torch.zeros(1, 16, 16, 3, dtype=torch.uint8))
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.write(torch.zeros(1, 16, 16, 3, dtype=torch.uint8))
    assert listing(tmp_path) == ["c.mp4"]


def test_to_uint8_rounds_and_clamps_like_float_reference() -> None:
    values = torch.tensor([-3.0, -1.0, -0.9999, 0.0, 0.001, 0.5, 0.999, 1.0, 2.0, float("nan")])
    out = to_uint8(values)
    reference = np.clip(np.rint((np.nan_to_num(values.numpy(), nan=-1.0) + 1) * 127.5), 0, 255).astype(np.uint8)
    assert out.dtype == torch.uint8
    np.testing.assert_array_equal(out.numpy(), reference)
    assert out[6].item() == 255  # 0.999 -> 254.87: truncation would give 254
    assert out[4].item() == 128  # 0.001 -> 127.63: truncation would give 127
    np.testing.assert_array_equal(to_uint8(values.numpy()), reference)  # numpy in, numpy out
    assert to_uint8(values.to(torch.bfloat16)).dtype == torch.uint8
    torch.manual_seed(0)
    x = torch.rand(1000) * 2.2 - 1.1
    expected = ((x.double().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert torch.equal(to_uint8(x), expected)


def test_to_uint8_value_range_and_passthrough() -> None:
    assert to_uint8(torch.tensor([0.0, 0.5, 1.0]), value_range=(0.0, 1.0)).tolist() == [0, 128, 255]
    frames = torch.arange(6, dtype=torch.uint8)
    assert to_uint8(frames) is frames
    with pytest.raises(ValueError, match="value_range"):
        to_uint8(torch.zeros(2), value_range=(1.0, 1.0))
    with pytest.raises(TypeError):
        to_uint8([0.0, 1.0])


def test_iter_video_frames_and_missing_file(tmp_path) -> None:
    path = tmp_path / "v.mkv"
    with StreamingVideoWriter(path, fps=10, preset="ultrafast") as writer:
        writer.write(torch.zeros(7, 16, 16, 3, dtype=torch.uint8))
    sizes = [chunk.shape[0] for chunk in iter_video_frames(path, chunk_size=3)]
    assert sizes == [3, 3, 1]
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")
