"""Explicit per-stream state of the TAEHV encoder and decoder.

TAEHV remembers one frame per :class:`~framestream.models.taehv.layers.MemBlock` (the
block's last input frame), and the encoder additionally holds frames that do not yet
fill a temporal-pooling group. Nothing is kept on the model: a fresh state starts a
stream, and two states stream independently through one model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["TAEHVDecodeState", "TAEHVEncodeState"]


@dataclass
class _TAEHVStreamState:
    memory: dict[int, torch.Tensor] = field(default_factory=dict)
    """Layer index of each MemBlock -> its last input frame ``(B, C, H, W)``. The slots are
    allocated once (zeros: an empty memory) and then updated in place, so their storage is
    stable across the chunks of a stream (what CUDA-graph replay needs)."""
    frames_in: int = 0
    """Frames fed so far (latent frames for the decoder, pixel frames for the encoder)."""

    @property
    def started(self) -> bool:
        """True once the stream has taken its first chunk."""
        return self.frames_in > 0


@dataclass
class TAEHVDecodeState(_TAEHVStreamState):
    """Decoder stream: MemBlock memories and how many leading frames are still to be dropped."""

    frames_to_trim: int | None = None
    """Leading output frames still to drop (set from the architecture on the first chunk)."""
    graphs: dict[tuple[int, ...], Any] = field(default_factory=dict)
    """Chunk shape -> the CUDA graph replaying it for this stream (compiled CUDA runs only)."""


@dataclass
class TAEHVEncodeState(_TAEHVStreamState):
    """Encoder stream: MemBlock memories plus the frames waiting at each temporal pool."""

    pending: dict[int, torch.Tensor] = field(default_factory=dict)
    """Layer index of each TPool -> frames ``(B, n, C, H, W)`` (n < stride) not yet pooled."""
    last_frame: torch.Tensor | None = None
    """The last input frame ``(B, 1, C, H, W)``, repeated to pad the stream when it is finished."""
    finished: bool = False
    """True after :meth:`TAEHV.finish_encode`; the stream then takes no more frames."""
