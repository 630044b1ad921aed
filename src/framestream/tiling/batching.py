"""Tile batching: run same-shape calls stacked along the batch dimension.

Each *item* is the argument tuple of one call, ``fn(*item)``. Arguments may be nested
tuples / lists / dicts / dataclasses of tensors (a per-tile cache, say) and plain values.
Items whose arguments have the same structure, the same non-tensor values and tensors of
the same shape past dim 0 (and dtype and device) are grouped; each group is cut into
chunks of at most ``batch_size`` items, every tensor leaf is concatenated along dim 0,
``fn`` is called once per chunk, and every tensor leaf of its result is split back by the
items' dim-0 sizes (``torch.split``, so a short last chunk is never over-split).

The result of ``fn`` may be a tensor or any such nested structure, e.g.
``(output, new_cache)``: so a tiler that carries a per-tile cache passes ``(x, cache)``
items and gets ``(output, new_cache)`` back per tile (:func:`map_batched_with_state`).
Batching is only exact for functions whose batch rows do not interact (no batch-norm
statistics, no cross-batch attention); that is the caller's contract.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import torch

__all__ = [
    "batch_schedule",
    "call_key",
    "iter_batched",
    "map_batched",
    "map_batched_with_state",
]


def _flatten(tree: Any, leaves: list[Any]) -> Hashable:
    """Append the leaves of ``tree`` to ``leaves``; return a hashable description of its structure."""
    if isinstance(tree, torch.Tensor):
        leaves.append(tree)
        return ("T", tuple(tree.shape[1:]), tree.dtype, str(tree.device))
    if isinstance(tree, (tuple, list)):
        return (type(tree), tuple(_flatten(v, leaves) for v in tree))
    if isinstance(tree, dict):
        return (dict, tuple((k, _flatten(v, leaves)) for k, v in tree.items()))
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return (type(tree), tuple((f.name, _flatten(getattr(tree, f.name), leaves)) for f in dataclasses.fields(tree)))
    try:
        hash(tree)
    except TypeError as err:
        raise TypeError(f"cannot batch an argument of type {type(tree).__name__}: it is neither a tensor, a container nor hashable") from err
    return ("V", type(tree), tree)


def _rebuild(tree: Any, leaves: Iterator[Any]) -> Any:
    """Same structure as ``tree`` with its tensor leaves replaced, in order, from ``leaves``."""
    if isinstance(tree, torch.Tensor):
        return next(leaves)
    if isinstance(tree, tuple):
        values = [_rebuild(v, leaves) for v in tree]
        return type(tree)(*values) if hasattr(tree, "_fields") else tuple(values)
    if isinstance(tree, list):
        return [_rebuild(v, leaves) for v in tree]
    if isinstance(tree, dict):
        return {k: _rebuild(v, leaves) for k, v in tree.items()}
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        new = copy.copy(tree)
        for f in dataclasses.fields(tree):
            object.__setattr__(new, f.name, _rebuild(getattr(tree, f.name), leaves))
        return new
    return tree


def call_key(item: Any) -> Hashable:
    """Grouping key of one call's arguments: structure, non-tensor values, tensor shapes past dim 0."""
    return _flatten(item, [])


def batch_schedule(keys: Sequence[Hashable], batch_size: int) -> list[list[int]]:
    """Item indices per call: grouped by key (first appearance first), chunks of at most ``batch_size``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [g[i : i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]


def _batch_rows(leaves: list[torch.Tensor], index: int) -> int:
    if not leaves:
        raise ValueError(f"item {index} has no tensor argument to batch along")
    rows = leaves[0].shape[0] if leaves[0].dim() else None
    for leaf in leaves:
        if leaf.dim() == 0 or leaf.shape[0] != rows:
            raise ValueError(f"item {index}: every tensor argument must have the same batch size in dim 0, got {[tuple(t.shape) for t in leaves]}")
    return rows


def iter_batched(
    fn: Callable[..., Any],
    items: Sequence[tuple[Any, ...]],
    batch_size: int,
    *,
    key: Callable[[Any], Hashable] = call_key,
) -> Iterator[tuple[int, Any]]:
    """Run ``fn(*item)`` for every item, batched; yield ``(item_index, result)`` as each call finishes.

    Results come group by group (see :func:`batch_schedule`), not in item order; a
    consumer that accumulates them needs only one call's outputs at a time.
    """
    schedule = batch_schedule([key(item) for item in items], batch_size)
    for chunk in schedule:
        if len(chunk) == 1:
            yield chunk[0], fn(*items[chunk[0]])
            continue
        flat: list[list[torch.Tensor]] = []
        for i in chunk:
            leaves: list[torch.Tensor] = []
            _flatten(items[i], leaves)
            flat.append(leaves)
        rows = [_batch_rows(leaves, i) for i, leaves in zip(chunk, flat)]
        stacked = [torch.cat(column, dim=0) for column in zip(*flat)]
        result = fn(*_rebuild(items[chunk[0]], iter(stacked)))
        out_leaves: list[torch.Tensor] = []
        _flatten(result, out_leaves)
        total = sum(rows)
        parts = []
        for leaf in out_leaves:
            if leaf.dim() == 0 or leaf.shape[0] != total:
                raise ValueError(
                    f"batched call over {len(chunk)} items (batch {total}) returned a tensor of shape {tuple(leaf.shape)}: "
                    "every tensor in the result must keep the stacked batch in dim 0"
                )
            parts.append(leaf.split(rows, dim=0))
        for j, i in enumerate(chunk):
            yield i, _rebuild(result, iter([p[j] for p in parts]))


def map_batched(fn: Callable[[torch.Tensor], Any], inputs: Sequence[torch.Tensor], batch_size: int) -> list[Any]:
    """``[fn(x) for x in inputs]``, same-shape inputs stacked into calls of at most ``batch_size``."""
    results: list[Any] = [None] * len(inputs)
    for i, result in iter_batched(fn, [(x,) for x in inputs], batch_size):
        results[i] = result
    return results


def map_batched_with_state(
    fn: Callable[[torch.Tensor, Any], tuple[Any, Any]],
    inputs: Sequence[torch.Tensor],
    states: Sequence[Any],
    batch_size: int,
) -> tuple[list[Any], list[Any]]:
    """Stateful form: ``fn(x, state) -> (output, new_state)`` per tile, batched.

    Per-tile states (e.g. lists of cache tensors, or ``None`` entries) are stacked along
    dim 0 with their inputs and the new states are split back per tile. Tiles whose
    states differ in structure or shape are never stacked together.
    """
    if len(inputs) != len(states):
        raise ValueError(f"got {len(inputs)} inputs but {len(states)} states")
    outputs: list[Any] = [None] * len(inputs)
    new_states: list[Any] = [None] * len(inputs)
    for i, result in iter_batched(fn, list(zip(inputs, states)), batch_size):
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise ValueError(f"a stateful tile function must return (output, new_state), got {type(result).__name__}")
        outputs[i], new_states[i] = result
    return outputs, new_states
