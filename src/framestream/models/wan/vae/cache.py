"""Explicit per-stream state of the Wan VAE's causal convolutions.

A :class:`WanCausalCache` is a plain mapping from a module path
(``"decoder.up_blocks.0.resnets.1.conv2"``) to a tensor, batch dimension first:

- a causal 3-tap conv keeps the last ``CACHE_T = 2`` frames of its input stream,
  ``(B, C, 2, H, W)``; a stream that has seen fewer frames holds zeros in front, which
  is exactly the zero padding of an un-chunked causal conv;
- a temporal downsampler (encoder, stride-2 ``time_conv``) keeps the last frame of its
  input, ``(B, C, 1, H, W)``;
- a temporal upsampler's ``time_conv`` slot doubles as the first-chunk marker (the
  "Rep" rule): while it is absent, the stream's first frame bypasses the temporal
  upsampling (and DupUp drops its leading copies); the first chunk then installs it.

A missing slot therefore means "this stream has not reached that layer yet". The model
never stores stream state on itself: every forward reads one of these objects and
writes its new slots back when the chunk has finished, so a failed chunk leaves the
cache untouched and any number of rollouts (or threads, each with its own cache) can
share one model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from framestream.decoders.base import StreamingDecoderCache
from framestream.encoders.base import StreamingEncoderCache

__all__ = ["CACHE_T", "WanCausalCache", "stack_caches", "unstack_cache"]

CACHE_T = 2
"""Frames of context a causal 3-tap convolution keeps between chunks."""


def _as_prefixes(prefixes: str | Iterable[str]) -> tuple[str, ...]:
    return (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    """``key`` is one of ``prefixes`` or lies below one of them (dot-separated)."""
    return any(key == p or key.startswith(p + ".") or p == "" for p in prefixes)


class WanCausalCache(StreamingDecoderCache, StreamingEncoderCache):
    """Per-stream causal-conv state of a Wan VAE: module path -> tensor (batch first)."""

    __slots__ = ("slots", "broken")

    def __init__(self, slots: dict[str, torch.Tensor] | None = None) -> None:
        self.slots: dict[str, torch.Tensor] = dict(slots) if slots else {}
        self.broken = False
        """True while a write-through (non-atomic) chunk is in flight or after it failed."""

    # ------------------------------------------------------------------ mapping view
    def __len__(self) -> int:
        return len(self.slots)

    def __contains__(self, key: object) -> bool:
        return key in self.slots

    def __iter__(self) -> Iterator[str]:
        return iter(self.slots)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.slots[key]

    def get(self, key: str) -> torch.Tensor | None:
        """The slot's tensor, or ``None`` when the stream has not reached that layer."""
        return self.slots.get(key)

    def keys(self) -> list[str]:
        """Slot names in insertion (execution) order."""
        return list(self.slots)

    def __repr__(self) -> str:
        return f"WanCausalCache({len(self.slots)} slots, batch={self.batch_size}, {self.nbytes / 2**20:.2f} MiB)"

    @property
    def is_empty(self) -> bool:
        """True for a fresh stream."""
        return not self.slots

    def started(self, prefix: str = "") -> bool:
        """True once any slot under ``prefix`` (``"decoder"``, ``"encoder"``...) exists."""
        prefixes = (prefix,)
        return any(_under(k, prefixes) for k in self.slots)

    @property
    def batch_size(self) -> int | None:
        """Batch size of the stored tensors (``None`` when empty)."""
        for t in self.slots.values():
            return int(t.shape[0])
        return None

    @property
    def nbytes(self) -> int:
        """Bytes held by all slots."""
        return sum(t.numel() * t.element_size() for t in self.slots.values())

    # ------------------------------------------------------------------ copies
    def clone(self) -> "WanCausalCache":
        """Deep copy: the clone and the original can continue independently."""
        return WanCausalCache({k: v.clone() for k, v in self.slots.items()})

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "WanCausalCache":
        """New cache with ``fn`` applied to every slot (e.g. a spatial crop, a device move)."""
        return WanCausalCache({k: fn(v) for k, v in self.slots.items()})

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "WanCausalCache":
        """New cache with every slot moved / cast."""
        return self.apply(lambda t: t.to(device=device, dtype=dtype))

    # ------------------------------------------------------------------ by module prefix
    def select(self, prefixes: str | Iterable[str]) -> "WanCausalCache":
        """New cache holding (sharing, not copying) only the slots under ``prefixes``."""
        ps = _as_prefixes(prefixes)
        return WanCausalCache({k: v for k, v in self.slots.items() if _under(k, ps)})

    def without(self, prefixes: str | Iterable[str]) -> "WanCausalCache":
        """New cache holding (sharing) every slot *not* under ``prefixes``."""
        ps = _as_prefixes(prefixes)
        return WanCausalCache({k: v for k, v in self.slots.items() if not _under(k, ps)})

    def split(self, *prefix_groups: str | Iterable[str]) -> list["WanCausalCache"]:
        """One cache per prefix group, plus a last one with the remaining slots."""
        groups = [_as_prefixes(g) for g in prefix_groups]
        parts: list[dict[str, torch.Tensor]] = [{} for _ in range(len(groups) + 1)]
        for k, v in self.slots.items():
            for i, g in enumerate(groups):
                if _under(k, g):
                    parts[i][k] = v
                    break
            else:
                parts[-1][k] = v
        return [WanCausalCache(p) for p in parts]

    def update(self, other: "WanCausalCache | dict[str, torch.Tensor]") -> None:
        """Overwrite / add ``other``'s slots in place."""
        self.slots.update(other.slots if isinstance(other, WanCausalCache) else other)

    @classmethod
    def merge(cls, caches: Iterable["WanCausalCache"]) -> "WanCausalCache":
        """Union of caches with disjoint slot names (e.g. a head cache and a tail cache)."""
        out: dict[str, torch.Tensor] = {}
        for c in caches:
            clash = out.keys() & c.slots.keys()
            if clash:
                raise ValueError(f"cannot merge caches that share slots: {sorted(clash)[:5]}")
            out.update(c.slots)
        return cls(out)

    # ------------------------------------------------------------------ batching
    @classmethod
    def stack(cls, caches: Iterable["WanCausalCache"]) -> "WanCausalCache":
        """Concatenate caches along the batch dim (e.g. per-tile caches run as one batch).

        All caches must be at the same point of their streams: same slot names and
        shapes apart from the batch dimension.
        """
        caches = list(caches)
        if not caches:
            raise ValueError("stack needs at least one cache")
        names = list(caches[0].slots)
        for i, c in enumerate(caches[1:], 1):
            if c.slots.keys() != caches[0].slots.keys():
                raise ValueError(
                    f"cannot stack caches at different stream positions: cache {i} has slots "
                    f"{sorted(c.slots.keys() ^ caches[0].slots.keys())[:5]} that cache 0 lacks or has"
                )
        out = {}
        for k in names:
            parts = [c.slots[k] for c in caches]
            ref = parts[0].shape[1:]
            for i, p in enumerate(parts):
                if p.shape[1:] != ref:
                    raise ValueError(
                        f"cannot stack slot {k!r}: cache {i} has shape {tuple(p.shape)}, cache 0 {tuple(parts[0].shape)}"
                    )
            out[k] = torch.cat(parts, dim=0)
        return cls(out)

    def unstack(self, n: int) -> list["WanCausalCache"]:
        """Inverse of :meth:`stack` for ``n`` equal batch parts (each part owns its memory)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if self.is_empty:
            return [WanCausalCache() for _ in range(n)]
        b = self.batch_size
        assert b is not None
        if b % n:
            raise ValueError(f"cannot unstack a batch of {b} into {n} equal parts")
        step = b // n
        return [
            WanCausalCache({k: v[i * step : (i + 1) * step].clone() for k, v in self.slots.items()}) for i in range(n)
        ]


def stack_caches(caches: Iterable[WanCausalCache]) -> WanCausalCache:
    """Module-level alias of :meth:`WanCausalCache.stack`."""
    return WanCausalCache.stack(caches)


def unstack_cache(cache: WanCausalCache, n: int) -> list[WanCausalCache]:
    """Module-level alias of :meth:`WanCausalCache.unstack`."""
    return cache.unstack(n)
