"""Stream states of the exact Wan tiler (explicit, passed in by the caller) and plan resolution."""

from __future__ import annotations

from framestream.models.wan.vae.cache import WanCausalCache
from framestream.models.wan.vae.model import WanVAE
from framestream.tiling.planner import TilingConfig
from framestream.tiling.wan_exact.plan import ExactTilePlan, plan_exact_decode, plan_exact_encode

__all__ = ["WanTiledDecodeState", "WanTiledEncodeState"]


class _TiledState:
    """Common part of the decode/encode stream states."""

    def __init__(self) -> None:
        self.plan: ExactTilePlan | None = None
        self.batch_size: int | None = None
        self.calls: tuple[WanCausalCache, ...] = ()
        self.latent_frames = 0
        self.frames = 0
        self.broken = False

    @property
    def started(self) -> bool:
        """True once a chunk has been committed."""
        return self.latent_frames > 0

    def _global(self) -> WanCausalCache:
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Bytes held by all caches."""
        return self._global().nbytes + sum(c.nbytes for c in self.calls)

    def _check_continues(self, plan: ExactTilePlan, batch: int) -> None:
        if self.broken:
            raise ValueError(
                "this stream's state was left between chunks by a failure (atomic_chunks=False); "
                "start a new stream with a fresh state"
            )
        if not self.started:
            return
        if plan != self.plan:
            raise ValueError(
                "this state continues a stream with another tile plan (model, size or tiling differ); "
                "use a fresh state for a new stream"
            )
        if batch != self.batch_size:
            raise ValueError(f"this state's stream has batch size {self.batch_size}, got {batch}")


class WanTiledDecodeState(_TiledState):
    """Stream state of :func:`iter_decode_tiled`: pass the same object to every call of a stream.

    ``head``: the head's cache (whole latent frame); ``calls``: one tail cache per call of the
    plan (tiles of a call stacked along the batch); ``latent_frames`` / ``frames``: latents
    consumed and pixel frames produced so far. Not thread-safe: one stream, one state.
    """

    def __init__(self) -> None:
        super().__init__()
        self.head = WanCausalCache()

    def _global(self) -> WanCausalCache:
        return self.head

    def __repr__(self) -> str:
        return (
            f"WanTiledDecodeState({self.latent_frames} latents -> {self.frames} frames, "
            f"{len(self.calls)} tail caches, {self.nbytes / 2**20:.2f} MiB)"
        )


class WanTiledEncodeState(_TiledState):
    """Stream state of :func:`iter_encode_tiled`: ``back`` (latent-resolution cache), ``calls``
    (one front cache per call), ``frames`` / ``latent_frames`` consumed / produced so far."""

    def __init__(self) -> None:
        super().__init__()
        self.back = WanCausalCache()

    def _global(self) -> WanCausalCache:
        return self.back

    def __repr__(self) -> str:
        return (
            f"WanTiledEncodeState({self.frames} frames -> {self.latent_frames} latents, "
            f"{len(self.calls)} front caches, {self.nbytes / 2**20:.2f} MiB)"
        )


def _resolve_plan(
    kind: str,
    vae: WanVAE,
    hw: tuple[int, int],
    tiling: TilingConfig | ExactTilePlan | None,
    state: _TiledState,
    staged: bool,
) -> ExactTilePlan:
    if isinstance(tiling, ExactTilePlan):
        plan = tiling
        if plan.kind != kind:
            raise ValueError(f"got a {plan.kind} plan for a {kind}")
        if plan.arch != vae.arch:
            raise ValueError("the plan was made for another VAE architecture")
        if plan.in_hw != hw:
            raise ValueError(f"the plan is for input {plan.in_hw}, got {hw}")
        return plan
    if tiling is None and state.started:
        assert state.plan is not None
        return state.plan
    planner = plan_exact_decode if kind == "decode" else plan_exact_encode
    return planner(vae, hw, tiling, staged=staged)
