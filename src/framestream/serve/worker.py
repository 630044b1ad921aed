"""The model worker: one thread per device that runs AR blocks round-robin across sessions."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import torch

from framestream.io.transfer import frames_to_uint8
from framestream.pipeline import StreamInferencePipeline
from framestream.serve.sessions import BlockInfo, Session, SessionManager
from framestream.serve.steering import ContextBuilder, SteerableRollout

__all__ = ["ModelWorker"]

logger = logging.getLogger(__name__)


class ModelWorker:
    """Owns the pipeline of one device; the only thread that runs it.

    Each turn it takes the next due session from the :class:`SessionManager` (round
    robin), runs exactly one AR block of it, and posts the frames to the event loop.
    A failing session gets an error and is ended; the others keep streaming.
    """

    def __init__(
        self,
        pipeline: StreamInferencePipeline,
        context_builder: ContextBuilder,
        manager: SessionManager,
        loop: asyncio.AbstractEventLoop,
        *,
        threads: int | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.context_builder = context_builder
        self.manager = manager
        self.loop = loop
        self.threads = threads
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="framestream-model-worker", daemon=True)
        self._recent: list[float] = []
        self._recent_lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.manager.wake()
        self._thread.join(timeout)

    def blocks_per_second(self, window: float = 10.0) -> float:
        """AR blocks finished per second over the last ``window`` seconds."""
        now = time.perf_counter()
        with self._recent_lock:
            self._recent = [t for t in self._recent if now - t <= window]
            return len(self._recent) / window

    def _run(self) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        while not self._stop.is_set():
            picked = self.manager.next_due(timeout=0.5)
            if picked is None:
                continue
            session, new_prompt = picked
            try:
                frames, seconds = self._block(session, new_prompt)
            except Exception as err:  # noqa: BLE001 - a failing session must not stop the others
                logger.exception("session %d failed", session.session_id)
                self.manager.block_finished(session, 0, 0.0)
                self.loop.call_soon_threadsafe(session.on_error, session, err)
                continue
            # Read before block_finished bumps the counters; this thread is their only writer.
            info = BlockInfo(
                block_index=session.blocks_done,
                first_frame_id=session.frames_done,
                done_at_ms=time.time() * 1000.0,
                seconds=seconds,
                last=session.blocks_done + 1 >= session.max_blocks,
            )
            with self._recent_lock:
                self._recent.append(time.perf_counter())
            if self.manager.block_finished(session, frames.shape[0], seconds):
                self.loop.call_soon_threadsafe(session.on_block, session, frames, info)

    def _block(self, session: Session, new_prompt: str | None):
        start = time.perf_counter()
        if session.rollout is None:
            rollout = SteerableRollout(self.pipeline, self.context_builder, session.prompt, session.seed)
            self.manager.attach_rollout(session, rollout)
        if new_prompt is not None:
            session.rollout.set_prompt(new_prompt)
        video = session.rollout.next_block()  # (1, 3, T, H, W) in [-1, 1]
        frames = frames_to_uint8(video[0]).cpu().numpy()  # (T, H, W, 3)
        return frames, time.perf_counter() - start
