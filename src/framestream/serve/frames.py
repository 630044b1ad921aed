"""Frame encodings for the transports: JPEG for the WebSocket, a frame-id strip for WebRTC."""

from __future__ import annotations

import io

import numpy as np

__all__ = ["encode_jpeg", "add_frame_id_strip", "read_frame_id_strip", "STRIP_ROWS", "STRIP_BITS"]

STRIP_ROWS = 16
"""Rows added below a WebRTC frame to carry its id (one 16-row macroblock row, so codecs keep it sharp)."""
STRIP_BITS = 16


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """``(H, W, 3)`` uint8 -> JPEG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def add_frame_id_strip(pixels: np.ndarray, frame_id: int) -> np.ndarray:
    """Append :data:`STRIP_ROWS` rows encoding ``frame_id % 2**16`` as black/white cells (MSB first).

    WebRTC hides the sender's RTP timestamp origin, so the page reads this strip to know
    which frame it painted (and so when that frame's block finished on the server); the
    page crops it away. Frames are first padded with black on the right / bottom to a width
    that is a multiple of 16 and at least 64 (cells of >= 4 px survive the codec) and an
    even height (4:2:0 chroma); the page crops that padding too.
    """
    height, width, _ = pixels.shape
    padded_width = max(4 * STRIP_BITS, -(-width // STRIP_BITS) * STRIP_BITS)
    if padded_width != width or height % 2:
        pixels = np.pad(pixels, ((0, height % 2), (0, padded_width - width), (0, 0)))
        width = padded_width
    cell = width // STRIP_BITS
    bits = [(frame_id >> (STRIP_BITS - 1 - i)) & 1 for i in range(STRIP_BITS)]
    row = np.repeat(np.array(bits, dtype=np.uint8) * 255, cell)
    strip = np.broadcast_to(row[None, :, None], (STRIP_ROWS, width, 3))
    return np.concatenate([pixels, strip], axis=0)


def read_frame_id_strip(frame: np.ndarray) -> int:
    """Inverse of :func:`add_frame_id_strip` on a (possibly codec-blurred) frame: samples cell centres."""
    height, width, _ = frame.shape
    cell = width // STRIP_BITS
    row = frame[height - STRIP_ROWS // 2]
    value = 0
    for i in range(STRIP_BITS):
        value = (value << 1) | int(row[i * cell + cell // 2].mean() > 127)
    return value
