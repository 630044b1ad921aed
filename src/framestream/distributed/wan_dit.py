"""Context-parallel and CFG-parallel Wan DiT over a :class:`~framestream.distributed.runtime.ParallelRuntime`.

Tokens are split by **rows of the patch grid**: context-parallel rank ``i`` owns rows
``rows[i]`` of every latent frame (contiguous, as equal as possible, any degree). Keeping
whole frames' worth of rows per rank keeps every per-frame structure intact: RoPE
positions are the rows' own, and a causal KV cache still holds whole frames, so the
attention sink and the rolling window evict frames exactly as in one process.

- **Ulysses** (``ulysses_degree`` consecutive ranks): an all-to-all turns row shards of
  all heads into all rows of ``H / u`` heads for q, k, v; attention is local; a second
  all-to-all turns the output back. The causal KV cache then holds all rows of this
  rank's heads (1/u of it).
- **Ring** (``ring_degree`` groups): every rank attends its queries to its own K/V block,
  passes the block to the next rank and receives the previous one's, ``ring_degree`` times,
  merging the partial results with an online softmax (running log-sum-exp). The KV cache
  holds this rank's rows of every cached frame. Communication overlaps the block's math.
- **Hybrid**: Ulysses inside each group, ring across groups.
- Text cross-attention needs no traffic: every rank has the text keys / values.
- **CFG-parallel**: the cond and uncond rows of a guided forward run on different ranks;
  the flows are all-gathered before ``uncond + g (cond - uncond)``.

Each rank charges what it sends to ``runtime.stats`` (see :mod:`framestream.distributed.comm`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from framestream.distributed.comm import all_gather_uneven, all_to_all, ring_pass
from framestream.distributed.runtime import ParallelRuntime
from framestream.models.wan.transformer.attention import attention

__all__ = ["WanDiTParallel", "split_rows", "attach_wan_parallel"]


def split_rows(rows: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(start, count)`` ranges covering ``rows``, counts differing by at most one."""
    base, extra = divmod(rows, parts)
    out, start = [], 0
    for i in range(parts):
        n = base + (1 if i < extra else 0)
        out.append((start, n))
        start += n
    return out


class WanDiTParallel:
    """This rank's :class:`~framestream.models.wan.transformer.parallel.DiTParallel` hooks."""

    def __init__(self, runtime: ParallelRuntime, heads: int) -> None:
        self.runtime = runtime
        u = runtime.ulysses_degree
        if heads % u:
            raise ValueError(
                f"Ulysses degree {u} does not divide the {heads} attention heads (Wan 2.1: 12 for 1.3B, 40 for 14B); "
                "use --parallel.mode ring (any degree) or hybrid with a ulysses_degree that divides the heads"
            )
        self.heads = heads

    def shard(self, grid: tuple[int, int, int]) -> "_RowShards":
        return _RowShards(self.runtime, grid)

    def cache_layout(self, grid_hw: tuple[int, int], heads: int) -> tuple[int, int]:
        shards = _RowShards(self.runtime, (1, *grid_hw))
        return heads // self.runtime.ulysses_degree, shards.cache_tokens_per_frame

    def split_cfg(self, x: torch.Tensor) -> torch.Tensor:
        group = self.runtime.cfg
        return x if group.is_trivial else x.chunk(group.size, dim=0)[group.index].contiguous()

    def gather_cfg(self, x: torch.Tensor) -> torch.Tensor:
        group = self.runtime.cfg
        if group.is_trivial:
            return x
        parts = all_gather_uneven(group, x, 0, [x.shape[0]] * group.size, self.runtime.stats)
        return torch.cat(parts, dim=0)


class _RowShards:
    """Row shards of one patch grid (see the module doc); built per forward, holds nothing across calls."""

    def __init__(self, runtime: ParallelRuntime, grid: tuple[int, int, int]) -> None:
        self.runtime = runtime
        self.frames, self.h, self.w = grid
        cp, u = runtime.cp_degree, runtime.ulysses_degree
        if self.h < cp:
            raise ValueError(f"the latent has {self.h} token rows, fewer than the context-parallel degree {cp}")
        self.rows = split_rows(self.h, cp)
        me = runtime.cp.index
        self.start, self.count = self.rows[me]
        q = me // u  # our Ulysses group (= our ring position)
        self.member_rows = [n for _, n in self.rows[q * u : (q + 1) * u]]
        # Rows each ring member's Ulysses group holds after the all-to-all.
        self.group_rows = [sum(n for _, n in self.rows[g * u : (g + 1) * u]) for g in range(runtime.ring_degree)]
        self.cache_tokens_per_frame = self.group_rows[q] * self.w

    # ----------------------------------------------------------------- tokens
    def _rows_of(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[0] // (self.h * self.w)
        return x.reshape(frames, self.h, self.w, -1)[:, self.start : self.start + self.count].reshape(-1, x.shape[-1])

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        x = x.reshape(b, self.frames, self.h, self.w, c)[:, :, self.start : self.start + self.count]
        return x.reshape(b, -1, c).contiguous()

    def split_rope(self, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._rows_of(cos), self._rows_of(sin)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        b, f, c = x.shape[0], self.frames, x.shape[-1]
        sizes = [f * n * self.w for _, n in self.rows]
        parts = all_gather_uneven(self.runtime.cp, x, 1, sizes, self.runtime.stats)
        parts = [p.reshape(b, f, n * self.w, c) for p, (_, n) in zip(parts, self.rows)]
        return torch.cat(parts, dim=2).reshape(b, -1, c)

    # -------------------------------------------------------------- attention
    def self_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        self_kv: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        if mask is not None:
            raise ValueError(
                "context parallelism runs block-causal attention through the KV cache; an explicit "
                "self-attention mask is not supported (run one process)"
            )
        rt = self.runtime
        if rt.ulysses_degree > 1:
            q, k, v = (self._heads_to_rows(t) for t in (q, k, v))
        if self_kv is not None:
            k, v = self_kv(k, v)
        out = self._ring(q, k, v) if rt.ring_degree > 1 else attention(q, k, v)
        if rt.ulysses_degree > 1:
            out = self._rows_to_heads(out)
        return out

    def _heads_to_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Ulysses in: ``[B, F*rows_me*W, H, D]`` -> ``[B, F*rows_group*W, H/u, D]`` (frame-major order kept)."""
        group, u = self.runtime.ulysses, self.runtime.ulysses_degree
        b, _, h, d = x.shape
        f, w, hu = x.shape[1] // (self.count * self.w), self.w, h // u
        parts = [x[:, :, j * hu : (j + 1) * hu].contiguous() for j in range(u)]
        shapes = [(b, f * n * w, hu, d) for n in self.member_rows]
        got = all_to_all(group, parts, shapes, self.runtime.stats)
        got = [g.reshape(b, f, n * w, hu, d) for g, n in zip(got, self.member_rows)]
        return torch.cat(got, dim=2).reshape(b, -1, hu, d)

    def _rows_to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """Ulysses out: the inverse of :meth:`_heads_to_rows`."""
        group = self.runtime.ulysses
        b, _, hu, d = x.shape
        w = self.w
        f = x.shape[1] // (sum(self.member_rows) * w)
        by_member = x.reshape(b, f, -1, hu, d).split([n * w for n in self.member_rows], dim=2)
        parts = [p.reshape(b, f * n * w, hu, d).contiguous() for p, n in zip(by_member, self.member_rows)]
        shapes = [(b, f * self.count * w, hu, d)] * len(self.member_rows)
        return torch.cat(all_to_all(group, parts, shapes, self.runtime.stats), dim=2)

    def _ring(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Ring attention with an online softmax; K/V blocks of other ranks arrive while this block computes."""
        group, stats = self.runtime.ring, self.runtime.stats
        r = group.size
        me = group.index
        b, _, h, d = k.shape
        kv_frames = k.shape[1] // (self.group_rows[me] * self.w)
        qf = q.float().transpose(1, 2)
        scale = d**-0.5
        out = lse = None
        block = (k, v)
        for step in range(r):
            pending = None
            if step < r - 1:
                src = (me - step - 1) % r  # owner of the block that arrives next
                shape = (b, kv_frames * self.group_rows[src] * self.w, h, d)
                pending = ring_pass(group, list(block), [shape, shape], stats)
            block_out, block_lse = _attend_block(qf, block[0], block[1], scale)
            if out is None:
                out, lse = block_out, block_lse
            else:
                new_lse = torch.logaddexp(lse, block_lse)
                out = out * torch.exp(lse - new_lse) + block_out * torch.exp(block_lse - new_lse)
                lse = new_lse
            if pending is not None:
                block = tuple(pending.wait())
        assert out is not None
        return out.transpose(1, 2).to(q.dtype)


_SCORE_BYTES = 256 * 2**20
"""Largest fp32 score matrix one ring step materialises; queries are processed in slices below it."""


def _attend_block(qf: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of fp32 queries ``[B, H, Lq, D]`` over one K/V block ``[B, Lk, H, D]``: (out, log-sum-exp)."""
    b, h, lq, _ = qf.shape
    kt = k.float().permute(0, 2, 3, 1)
    vf = v.float().transpose(1, 2)
    rows = max(1, _SCORE_BYTES // (4 * b * h * max(1, k.shape[1])))
    outs, lses = [], []
    for start in range(0, lq, rows):
        scores = torch.matmul(qf[:, :, start : start + rows], kt) * scale
        lses.append(torch.logsumexp(scores, dim=-1, keepdim=True))
        outs.append(torch.matmul(torch.softmax(scores, dim=-1), vf))
        del scores
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def attach_wan_parallel(transformer, runtime: ParallelRuntime) -> None:
    """Make a :class:`~framestream.models.wan.transformer.model.WanTransformer` run on ``runtime``'s groups.

    A no-op for one process (the model keeps its one-process code path).
    """
    if runtime.cp_degree == 1 and runtime.cfg_degree == 1:
        return
    if runtime.cfg_degree > 1 and not transformer.guidance:
        raise ValueError("cfg_parallel needs a guided recipe (guidance_scale != 1): there is no unconditional branch")
    transformer.parallel = WanDiTParallel(runtime, transformer.config.arch.num_attention_heads)
