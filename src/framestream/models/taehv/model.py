"""TAEHV: tiny streaming encoder/decoder for Wan video latents.

Layout is frames-first, ``(B, T, C, H, W)``, as in the public TAEHV code. The decoder
maps latents to frames in ``[0, 1]``; the encoder maps frames in ``[0, 1]`` to latents.
Each chunk runs all its frames in parallel, layer by layer; the only thing carried
between chunks is the per-stream state (:mod:`framestream.models.taehv.state`), so
decoding a stream in chunks of any size gives the same frames as one call.
"""

from __future__ import annotations

import zlib
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from framestream.models.taehv.config import TAEW2_1_ARCH, TAEHVArchConfig
from framestream.models.taehv.layers import (
    MemBlock,
    TGrow,
    TPool,
    build_decoder,
    build_encoder,
)
from framestream.models.taehv.state import TAEHVDecodeState, TAEHVEncodeState

__all__ = ["TAEHV", "run_stack", "memblock_input_shapes", "init_taehv_random"]


def init_taehv_random(model: nn.Module, seed: int = 0, gain: float = 1.0) -> nn.Module:
    """Seeded normal conv weights (std ``sqrt(gain / fan_in)``) and small uniform biases (tests, benchmarks).

    With ``gain`` 1 the activations stay of order one through the ReLU stacks and the
    residual sums, so random-weight frames are neither clamped flat nor blown up. Each
    parameter has its own generator (seed + name), so an encoder-only or decoder-only
    model gets the same weights as the full one.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = torch.Generator().manual_seed((seed * 0x9E3779B1 + zlib.crc32(name.encode())) % (2**63))
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (gain / fan_in) ** 0.5)
            else:
                p.copy_(torch.empty(p.shape).uniform_(-0.1, 0.1, generator=g))
    return model


def memblock_input_shapes(layers: nn.Sequential, channels: int, height: int, width: int) -> dict[int, tuple[int, int, int]]:
    """``(C, H, W)`` of every MemBlock's input, by walking the stack's shape rules (no compute)."""
    shapes: dict[int, tuple[int, int, int]] = {}
    c, h, w = channels, height, width
    for index, layer in enumerate(layers):
        if isinstance(layer, MemBlock):
            shapes[index] = (c, h, w)
            c = layer.conv[-1].out_channels
        elif isinstance(layer, nn.Conv2d):
            stride = layer.stride[0]
            c, h, w = layer.out_channels, (h - 1) // stride + 1, (w - 1) // stride + 1
        elif isinstance(layer, nn.Upsample):
            scale = int(layer.scale_factor)  # type: ignore[arg-type]
            h, w = h * scale, w * scale
        elif isinstance(layer, (TPool, TGrow)):
            c = layer.conv.out_channels // (layer.stride if isinstance(layer, TGrow) else 1)
    return shapes


def run_stack(
    layers: nn.Sequential,
    x: torch.Tensor,
    memory: dict[int, torch.Tensor],
    pending: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """Run one chunk ``(B, T, C, H, W)`` through ``layers``, continuing the stream in ``memory``.

    Every MemBlock takes, as its past, the previous frame of its input: the slot in
    ``memory`` for the chunk's first frame, the chunk itself for the others; the slot is
    then overwritten in place with the chunk's last frame. ``pending`` (encoder only)
    holds frames a TPool could not group yet. Returns ``(B, T', C', H', W')``, or None
    when a pool swallowed every frame of the chunk.
    """
    batch = x.shape[0]
    h = x.reshape(-1, *x.shape[2:])
    for index, layer in enumerate(layers):
        if isinstance(layer, MemBlock):
            frames = h.view(batch, -1, *h.shape[1:])
            slot = memory[index]
            past = torch.cat([slot.unsqueeze(1), frames[:, :-1]], 1).reshape(h.shape)
            out = layer(h, past)
            slot.copy_(frames[:, -1])
            h = out
        elif isinstance(layer, TPool) and layer.stride > 1:
            frames = h.view(batch, -1, *h.shape[1:])
            if pending is not None and index in pending:
                frames = torch.cat([pending.pop(index), frames], 1)
            usable = frames.shape[1] // layer.stride * layer.stride
            if usable < frames.shape[1]:
                if pending is None:
                    raise ValueError(f"TPool {index}: {frames.shape[1]} frames do not fill groups of {layer.stride}")
                pending[index] = frames[:, usable:].clone()
            if usable == 0:
                return None
            h = layer(frames[:, :usable].reshape(-1, *frames.shape[2:]))
        else:
            h = layer(h)
    return h.view(batch, -1, *h.shape[1:])


class TAEHV(nn.Module):
    """Tiny autoencoder for Wan latents with streaming encode/decode over an explicit state.

    ``encoder`` / ``decoder`` are ``nn.Sequential`` stacks in the public checkpoint's
    layer order, so ``state_dict()`` has the ``taew2_1.pth`` key layout.
    """

    def __init__(self, arch: TAEHVArchConfig = TAEW2_1_ARCH, *, include_encoder: bool = True, include_decoder: bool = True):
        super().__init__()
        if not (include_encoder or include_decoder):
            raise ValueError("TAEHV needs the encoder, the decoder or both")
        self.arch = arch
        self.encoder = build_encoder(arch) if include_encoder else None
        self.decoder = build_decoder(arch) if include_decoder else None
        self.decoder_stack: Callable[..., torch.Tensor | None] = run_stack
        """What runs one decoder chunk: ``run_stack``, or its compiled form after :meth:`compile_chunks`."""
        self.cuda_graphs = False
        """Replay chunks as CUDA graphs (held by each stream's state) after :meth:`compile_chunks` on CUDA."""

    def compile_chunks(self, *, mode: str | None = None, backend: str = "inductor", cuda_graphs: bool = True) -> "TAEHV":
        """Run decoder chunks under ``torch.compile`` (static shapes: one graph per chunk shape).

        The stream's memory slots are allocated (zeros) before the first chunk and then
        updated in place, so the first chunk already uses the same graph as the rest.
        With ``cuda_graphs`` and CUDA tensors, every chunk after a stream's first is
        replayed from a CUDA graph captured once per stream and chunk shape.
        """
        from framestream.utils.compile import compile_function

        self.decoder_stack = compile_function(run_stack, mode=mode, backend=backend)
        self.cuda_graphs = cuda_graphs
        return self

    # ------------------------------------------------------------------ decode
    def _check_latents(self, latents: torch.Tensor) -> None:
        if self.decoder is None:
            raise RuntimeError("this TAEHV was built without its decoder")
        if not torch.is_tensor(latents) or latents.dim() != 5 or latents.shape[2] != self.arch.latent_channels:
            shape = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
            raise ValueError(f"TAEHV.decode expects latents (B, T, {self.arch.latent_channels}, H, W), got {shape}")
        if latents.shape[1] < 1:
            raise ValueError("TAEHV.decode needs at least one latent frame")

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, state: TAEHVDecodeState | None = None) -> torch.Tensor:
        """Decode one chunk of latents ``(B, T, C, h, w)`` into frames ``(B, T', 3, H, W)`` in [0, 1].

        The first chunk of a stream gives ``1 + r(T-1)`` frames (``r`` = temporal ratio),
        later chunks ``rT``. ``state`` (updated in place) continues a stream; None decodes
        a whole clip.
        """
        self._check_latents(latents)
        state = TAEHVDecodeState() if state is None else state
        assert self.decoder is not None
        if not state.memory:
            b, _, _, h, w = latents.shape
            for index, (c, hh, ww) in memblock_input_shapes(self.decoder, self.arch.latent_channels, h, w).items():
                state.memory[index] = latents.new_zeros(b, c, hh, ww)
            state.frames_to_trim = self.arch.frames_to_trim
        x = self._decode_chunk(latents, state)
        state.frames_in += latents.shape[1]
        x = self.postprocess_frames(x)
        trim = min(state.frames_to_trim or 0, x.shape[1])
        state.frames_to_trim = (state.frames_to_trim or 0) - trim
        return x[:, trim:]

    def _decode_chunk(self, latents: torch.Tensor, state: TAEHVDecodeState) -> torch.Tensor:
        assert self.decoder is not None
        if self.cuda_graphs and latents.is_cuda and state.started:
            from framestream.utils.compile import CudaGraphStep

            key = tuple(latents.shape)
            step = state.graphs.get(key)
            if step is None:
                decoder, stack = self.decoder, self.decoder_stack
                step = state.graphs[key] = CudaGraphStep(lambda z, slots: (stack(decoder, z, slots), {}))
            return step(latents, slots=state.memory)
        x = self.decoder_stack(self.decoder, latents, state.memory)
        assert x is not None
        return x

    def postprocess_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder output -> frames in [0, 1] (pixel shuffle for patch > 1, then clamp)."""
        if self.arch.patch_size > 1:
            b, t = x.shape[:2]
            y = F.pixel_shuffle(x.flatten(0, 1), self.arch.patch_size)
            x = y.view(b, t, *y.shape[1:])
        return x.clamp(0, 1)

    # ------------------------------------------------------------------ encode
    @torch.no_grad()
    def encode(self, frames: torch.Tensor, state: TAEHVEncodeState | None = None) -> torch.Tensor:
        """Encode frames ``(B, T, 3, H, W)`` in [0, 1] into latents ``(B, T', C, h, w)``.

        One latent per complete group of ``r`` frames; frames short of a group wait in
        ``state`` for the next chunk or for :meth:`finish_encode`. Without a state the
        clip is encoded whole (tail padded with its last frame, as the public encoder does).
        """
        if self.encoder is None:
            raise RuntimeError("this TAEHV was built without its encoder")
        p = self.arch.patch_size
        if not torch.is_tensor(frames) or frames.dim() != 5 or frames.shape[2] != self.arch.image_channels:
            raise ValueError(f"TAEHV.encode expects frames (B, T, {self.arch.image_channels}, H, W)")
        if frames.shape[-1] % (self.arch.spatial_ratio) or frames.shape[-2] % (self.arch.spatial_ratio):
            raise ValueError(f"TAEHV.encode: height and width must be multiples of {self.arch.spatial_ratio}")
        whole = state is None
        state = TAEHVEncodeState() if state is None else state
        if state.finished:
            raise ValueError("TAEHV.encode: this stream was finished; start a new TAEHVEncodeState")
        x = frames
        if p > 1:
            b, t = x.shape[:2]
            x = F.pixel_unshuffle(x.flatten(0, 1), p).view(b, t, -1, x.shape[-2] // p, x.shape[-1] // p)
        if not state.memory:
            b, _, c, h, w = x.shape
            for index, (cc, hh, ww) in memblock_input_shapes(self.encoder, c, h, w).items():
                state.memory[index] = x.new_zeros(b, cc, hh, ww)
        state.last_frame = x[:, -1:].clone()
        state.frames_in += x.shape[1]
        out = run_stack(self.encoder, x, state.memory, state.pending)
        if out is None:
            out = self._latent_like(state)
        if whole:
            out = torch.cat([out, self.finish_encode(state)], 1)
        return out

    @torch.no_grad()
    def finish_encode(self, state: TAEHVEncodeState) -> torch.Tensor:
        """End an encoder stream: pad the frames still waiting with copies of the last one
        and return the latents they complete (possibly none)."""
        if self.encoder is None:
            raise RuntimeError("this TAEHV was built without its encoder")
        if state.finished:
            raise ValueError("TAEHV.finish_encode: this stream was already finished")
        state.finished = True
        ratio = self.arch.temporal_ratio
        missing = (-state.frames_in) % ratio
        if state.last_frame is None:
            raise ValueError("TAEHV.finish_encode: the stream took no frames")
        if missing == 0:
            return self._latent_like(state)
        pad = state.last_frame.expand(-1, missing, -1, -1, -1)
        out = run_stack(self.encoder, pad, state.memory, state.pending)
        assert out is not None, "padding to a full group always yields a latent"
        return out

    def _latent_like(self, state: TAEHVEncodeState) -> torch.Tensor:
        """An empty latent chunk ``(B, 0, C, h, w)`` of this stream's size."""
        assert state.last_frame is not None
        s = self.arch.spatial_ratio // self.arch.patch_size
        b, _, _, h, w = state.last_frame.shape
        return state.last_frame.new_zeros(b, 0, self.arch.latent_channels, h // s, w // s)
