"""Reading a conditioning image (PIL first, PyAV as the fallback) and fitting it to a video size.

:func:`probe_image` reads only the header (size) so a command can check the image
before loading any model; :func:`load_conditioning_image` returns the ``[1, 3, 1, H, W]``
float tensor in ``[-1, 1]`` a Wan VAE encoder takes, resized or centre-cropped exactly as
``framestream encode`` does with ``--resize`` / ``--crop`` (nothing is resized silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from framestream.io.video import center_crop_frames, resize_frames, uint8_to_unit_range

__all__ = ["read_image", "probe_image", "fit_image_mode", "load_conditioning_image"]

FitMode = Literal["none", "resize", "crop"]


def _open_with_pil(path: Path):  # noqa: ANN202 - PIL is optional
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        return Image.open(path)
    except (OSError, ValueError):  # PIL.UnidentifiedImageError is an OSError
        return None


def _first_frame_with_av(path: Path) -> np.ndarray | None:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            for frame in container.decode(video=0):
                return frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, OSError, ValueError):
        return None
    return None


def _decode(path: str | Path, header_only: bool) -> tuple[tuple[int, int], torch.Tensor | None]:
    """``((width, height), pixels)``; PIL reads only the header when ``header_only`` (pixels None then)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    image = _open_with_pil(path)
    if image is not None:
        with image:
            size = (int(image.width), int(image.height))
            return size, None if header_only else torch.from_numpy(np.array(image.convert("RGB")))
    frame = _first_frame_with_av(path)
    if frame is None:
        raise ValueError(f"cannot read image {path}: neither PIL nor PyAV can decode it (use a PNG, JPEG, WebP, ...)")
    return (int(frame.shape[1]), int(frame.shape[0])), torch.from_numpy(np.ascontiguousarray(frame))


def read_image(path: str | Path) -> torch.Tensor:
    """The image's pixels as uint8 ``(H, W, 3)`` RGB (alpha dropped, greyscale expanded)."""
    pixels = _decode(path, header_only=False)[1]
    assert pixels is not None
    return pixels


def probe_image(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image, from its header where PIL can read it."""
    return _decode(path, header_only=True)[0]


def fit_image_mode(
    path: str | Path,
    video_size: tuple[int, int],
    resize: tuple[int, int] | None = None,
    crop: tuple[int, int] | None = None,
) -> FitMode:
    """Check how the image at ``path`` becomes a ``video_size`` (width, height) frame; raise one clear line if it cannot.

    ``resize`` / ``crop`` are the ``--resize`` / ``--crop`` sizes and must equal
    ``video_size`` (the caller sets the video size from them); without either, the image
    must already have the video's size.
    """
    if resize is not None and crop is not None:
        raise ValueError("pass either --resize or --crop, not both")
    width, height = probe_image(path)
    target = resize or crop
    if target is not None and tuple(target) != tuple(video_size):
        raise ValueError(f"the image is fitted to the video size {video_size[0]}x{video_size[1]}, not {target[0]}x{target[1]}")
    if crop is not None:
        if crop[0] > width or crop[1] > height:
            raise ValueError(f"--crop {crop[0]}x{crop[1]} is larger than the image {path} ({width}x{height})")
        return "crop"
    if resize is not None:
        return "resize"
    if (width, height) != tuple(video_size):
        vw, vh = video_size
        raise ValueError(
            f"image {path} is {width}x{height} but the video is {vw}x{vh}: pass --resize {vw}x{vh} or --crop {vw}x{vh} "
            f"(or another size the recipe takes)"
        )
    return "none"


def load_conditioning_image(path: str | Path, video_size: tuple[int, int], mode: FitMode) -> torch.Tensor:
    """``[1, 3, 1, height, width]`` float32 in ``[-1, 1]``, resized (bilinear, antialiased) or centre-cropped to ``video_size``."""
    width, height = video_size
    pixels = uint8_to_unit_range(read_image(path)[None])  # (3, 1, H, W)
    if mode == "resize":
        pixels = resize_frames(pixels, height, width).clamp_(-1.0, 1.0)
    elif mode == "crop":
        pixels = center_crop_frames(pixels, height, width)
    if tuple(pixels.shape[-2:]) != (height, width):
        raise ValueError(f"image is {pixels.shape[-1]}x{pixels.shape[-2]}, expected {width}x{height}")
    return pixels.unsqueeze(0).contiguous()
