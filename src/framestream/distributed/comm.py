"""Collectives on one process group, with the bytes each rank sends counted.

Every helper takes a :class:`RankGroup` (the group handle, its global ranks, this rank's
index) and a :class:`CommStats` to charge; nothing is kept on the module. Byte counts are
the payload *this* rank puts on the wire for other ranks (its own chunk excluded), the
quantity the README's formulas predict.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["CommStats", "RankGroup", "all_to_all", "all_gather_uneven", "gather_uneven", "ring_pass", "broadcast"]


@dataclass
class CommStats:
    """Bytes this rank sent, per operation kind (a plain counter the caller owns and resets)."""

    sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, kind: str, nbytes: int) -> None:
        self.sent[kind] += int(nbytes)

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def reset(self) -> None:
        self.sent.clear()


@dataclass(frozen=True)
class RankGroup:
    """A process group as this rank sees it: ``ranks`` (global, in group order) and ``index`` (ours)."""

    group: Any
    ranks: tuple[int, ...]
    index: int

    @property
    def size(self) -> int:
        return len(self.ranks)

    @property
    def is_trivial(self) -> bool:
        return self.size == 1


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def all_to_all(group: RankGroup, parts: list[torch.Tensor], recv_shapes: list[tuple[int, ...]], stats: CommStats | None) -> list[torch.Tensor]:
    """Send ``parts[j]`` to member ``j``, receive a tensor of ``recv_shapes[i]`` from member ``i`` (sizes may differ)."""
    if group.is_trivial:
        return [parts[0]]
    ref = parts[group.index]
    send = torch.cat([p.reshape(-1) for p in parts])
    in_splits = [p.numel() for p in parts]
    out_splits = [int(torch.Size(s).numel()) for s in recv_shapes]
    recv = send.new_empty(sum(out_splits))
    dist.all_to_all_single(recv, send, out_splits, in_splits, group=group.group)
    if stats is not None:
        stats.add("all_to_all", (send.numel() - ref.numel()) * send.element_size())
    return [chunk.view(shape) for chunk, shape in zip(recv.split(out_splits), recv_shapes)]


def all_gather_uneven(group: RankGroup, x: torch.Tensor, dim: int, sizes: list[int], stats: CommStats | None) -> list[torch.Tensor]:
    """Every member's ``x`` (they differ only along ``dim``, member ``i`` has ``sizes[i]``), padded on the wire."""
    if group.is_trivial:
        return [x]
    longest = max(sizes)
    pad = longest - x.shape[dim]
    if pad:
        x = torch.cat([x, x.new_zeros(*x.shape[:dim], pad, *x.shape[dim + 1 :])], dim=dim)
    x = x.contiguous()
    out = [torch.empty_like(x) for _ in group.ranks]
    dist.all_gather(out, x, group=group.group)
    if stats is not None:
        stats.add("all_gather", _nbytes(x) * (group.size - 1))
    return [o.narrow(dim, 0, n) for o, n in zip(out, sizes)]


def gather_uneven(group: RankGroup, x: torch.Tensor, sizes: list[int], stats: CommStats | None) -> list[torch.Tensor] | None:
    """Flat tensors of ``sizes[i]`` elements to member 0 (padded on the wire); None on the others."""
    if group.is_trivial:
        return [x]
    longest = max(sizes)
    flat = x.reshape(-1)
    if flat.numel() < longest:
        flat = torch.cat([flat, flat.new_zeros(longest - flat.numel())])
    root = group.ranks[0]
    if group.index == 0:
        out = [torch.empty_like(flat) for _ in group.ranks]
        dist.gather(flat, out, dst=root, group=group.group)
        return [o[:n] for o, n in zip(out, sizes)]
    dist.gather(flat, None, dst=root, group=group.group)
    if stats is not None:
        stats.add("gather", _nbytes(flat))
    return None


class PendingRing:
    """Receives of one ring step in flight; :meth:`wait` returns them."""

    def __init__(self, works: list, recv: list[torch.Tensor]) -> None:
        self.works, self.recv = works, recv

    def wait(self) -> list[torch.Tensor]:
        for work in self.works:
            work.wait()
        return self.recv


def ring_pass(group: RankGroup, tensors: list[torch.Tensor], recv_shapes: list[tuple[int, ...]], stats: CommStats | None) -> PendingRing:
    """Start sending ``tensors`` to the next member and receiving ``recv_shapes`` from the previous one."""
    nxt = group.ranks[(group.index + 1) % group.size]
    prv = group.ranks[(group.index - 1) % group.size]
    recv = [tensors[0].new_empty(s) for s in recv_shapes]
    ops = [dist.P2POp(dist.isend, t.contiguous(), nxt, group.group) for t in tensors]
    ops += [dist.P2POp(dist.irecv, r, prv, group.group) for r in recv]
    works = dist.batch_isend_irecv(ops)
    if stats is not None:
        stats.add("ring", sum(_nbytes(t) for t in tensors))
    return PendingRing(works, recv)


def broadcast(group: RankGroup, x: torch.Tensor, stats: CommStats | None) -> torch.Tensor:
    """``x`` of member 0 on every member (``x`` must already have the right shape everywhere)."""
    if group.is_trivial:
        return x
    x = x.contiguous()
    dist.broadcast(x, src=group.ranks[0], group=group.group)
    if stats is not None and group.index == 0:
        stats.add("broadcast", _nbytes(x) * (group.size - 1))
    return x
