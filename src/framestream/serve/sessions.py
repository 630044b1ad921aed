"""Sessions, their bounded frame queues, admission (``--max-sessions``) and round-robin scheduling.

Threading: the event loop owns sessions and queues; the model worker thread only asks
:meth:`SessionManager.next_due` for work and hands finished blocks back to the loop
with ``call_soon_threadsafe``. Everything the two share is guarded by the manager's lock.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AdmissionError", "BlockInfo", "Frame", "FrameQueue", "Session", "SessionManager"]


@dataclass(frozen=True)
class Frame:
    """One RGB frame waiting to be sent."""

    frame_id: int
    """Index of the frame in its session's stream."""
    block_index: int
    first_in_block: bool
    done_at_ms: float
    """Server wall clock (``time.time()`` in ms) when its block finished generating."""
    pixels: np.ndarray
    """``(H, W, 3)`` uint8."""


class FrameQueue:
    """Bounded FIFO of frames; a push onto a full queue drops the oldest frame and counts it.

    Loop-thread only. ``get`` waits for a frame; ``close`` wakes every waiter with None.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"frame queue capacity must be >= 1, got {capacity}")
        self._frames: deque[Frame] = deque()
        self.capacity = capacity
        self.dropped = 0
        self._ready = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, frame: Frame) -> int:
        """Append ``frame``; returns how many old frames were dropped to make room (0 or 1)."""
        if self._closed:
            return 0
        dropped = 0
        if len(self._frames) >= self.capacity:
            self._frames.popleft()
            self.dropped += 1
            dropped = 1
        self._frames.append(frame)
        self._ready.set()
        return dropped

    async def get(self) -> Frame | None:
        """Next frame, or None once the queue is closed."""
        while not self._frames:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()

    def close(self) -> None:
        self._closed = True
        self._frames.clear()
        self._ready.set()


@dataclass(frozen=True)
class BlockInfo:
    """Facts about one finished block, fixed by the worker when it finished."""

    block_index: int
    first_frame_id: int
    done_at_ms: float
    """Server wall clock (ms) when the block finished."""
    seconds: float
    """Worker wall time of the block."""
    last: bool
    """The session's block limit is reached with this block."""


class AdmissionError(RuntimeError):
    """The server cannot take (or queue) another session."""


@dataclass(eq=False)
class Session:
    """One viewer's stream. ``rollout`` is created and used by the model worker only."""

    session_id: int
    prompt: str
    seed: int
    max_blocks: int
    queue: FrameQueue
    on_block: Callable[[Session, Any, "BlockInfo"], None]
    """Loop-thread callback ``(session, frames_uint8 (T, H, W, 3), info)``."""
    on_error: Callable[[Session, BaseException], None]
    fps: float
    state: str = "waiting"
    """``waiting`` -> ``active`` -> ``closed``."""
    rollout: Any = None
    busy: bool = False
    """True while the worker runs a block of this session."""
    blocks_done: int = 0
    """Blocks the worker finished (worker-written, under the manager's lock)."""
    frames_done: int = 0
    blocks_delivered: int = 0
    """Blocks whose frames reached the queue (loop thread only)."""
    pending_prompt: str | None = None
    playback_end: float = 0.0
    """perf_counter time at which the frames generated so far finish playing at ``fps``."""
    first_frame_at: float | None = None

    def due(self, now: float, lead: float) -> bool:
        """Due once its buffered frames would run out within ``lead`` seconds (or it has none)."""
        return self.state == "active" and self.blocks_done < self.max_blocks and now >= self.playback_end - lead


class SessionManager:
    """Admission control plus the worker's round-robin pick of the next due session."""

    def __init__(self, *, max_sessions: int, max_waiting: int) -> None:
        if max_sessions < 1:
            raise ValueError(f"--max-sessions must be >= 1, got {max_sessions}")
        self.max_sessions = max_sessions
        self.max_waiting = max_waiting
        self.active: list[Session] = []
        self.waiting: deque[Session] = deque()
        self._lock = threading.Condition()
        self._rr = 0
        self._ids = itertools.count(1)
        self._block_seconds = 0.0
        """Playback time of the longest block seen."""
        self._compute_seconds: float | None = None
        """Moving average of the worker's wall time per block."""
        self._holding: set[Session] = set()
        """Sessions whose rollout (caches) is alive."""

    @property
    def live_rollouts(self) -> int:
        """Sessions whose caches are alive (0 once every session is closed)."""
        return len(self._holding)

    def attach_rollout(self, session: Session, rollout: Any) -> None:
        """Worker: give ``session`` its freshly built rollout."""
        with self._lock:
            session.rollout = rollout
            self._holding.add(session)

    def _free(self, session: Session) -> None:
        # Caller holds the lock.
        if session.rollout is not None:
            session.rollout.close()
            session.rollout = None
        self._holding.discard(session)

    def new_id(self) -> int:
        return next(self._ids)

    # ------------------------------------------------------------------ admission (loop thread)
    def admit(self, session: Session) -> int:
        """Start ``session`` now (returns 0) or queue it (returns its 1-based position)."""
        with self._lock:
            if len(self.active) < self.max_sessions and not self.waiting:
                self._activate(session)
                return 0
            if len(self.waiting) >= self.max_waiting:
                raise AdmissionError(f"server full: {len(self.active)} streaming and {len(self.waiting)} waiting")
            self.waiting.append(session)
            return len(self.waiting)

    def _activate(self, session: Session) -> None:
        session.state = "active"
        session.playback_end = time.perf_counter()
        self.active.append(session)
        self._lock.notify_all()

    def close(self, session: Session) -> list[Session]:
        """End ``session`` (any state) and free its caches; returns the sessions promoted from the queue."""
        promoted: list[Session] = []
        with self._lock:
            previous, session.state = session.state, "closed"
            session.queue.close()
            if previous == "waiting" and session in self.waiting:
                self.waiting.remove(session)
            elif previous == "active" and session in self.active:
                self.active.remove(session)
            if not session.busy:
                self._free(session)  # not running: drop its caches now
            while self.waiting and len(self.active) < self.max_sessions:
                nxt = self.waiting.popleft()
                self._activate(nxt)
                promoted.append(nxt)
        return promoted

    def positions(self) -> list[tuple[Session, int]]:
        with self._lock:
            return [(s, i + 1) for i, s in enumerate(self.waiting)]

    def set_prompt(self, session: Session, prompt: str) -> int:
        """Queue ``prompt`` for ``session``; returns the index of the first block generated under it."""
        with self._lock:
            session.pending_prompt = prompt
            return session.blocks_done + (1 if session.busy else 0)

    # ------------------------------------------------------------------ scheduling (worker thread)
    def lead_seconds(self) -> float:
        """How early before a session's frames run out its next block should start.

        Generation should finish just before playback needs it: a block's compute time
        times the sessions sharing the worker (a round-robin turn), with 50% and 50 ms of
        slack; never more than one block of playback (no point running further ahead),
        and a whole block until the first block has been timed.
        """
        if self._compute_seconds is None:
            return self._block_seconds or 1.0
        turn = self._compute_seconds * max(1, len(self.active))
        return min(self._block_seconds, 1.5 * turn + 0.05)

    def next_due(self, timeout: float) -> tuple[Session, str | None] | None:
        """Round-robin: the next active session due for a block (marked busy), or None after ``timeout``."""
        deadline = time.perf_counter() + timeout
        with self._lock:
            while True:
                now = time.perf_counter()
                n = len(self.active)
                lead = self.lead_seconds()
                for offset in range(n):
                    session = self.active[(self._rr + offset) % n]
                    if session.due(now, lead):
                        self._rr = (self._rr + offset + 1) % max(n, 1)
                        session.busy = True
                        prompt, session.pending_prompt = session.pending_prompt, None
                        return session, prompt
                remaining = deadline - now
                if remaining <= 0:
                    return None
                # Wake on admissions/closures, or when the earliest session falls due.
                waits = [s.playback_end - lead - now for s in self.active if s.blocks_done < s.max_blocks]
                self._lock.wait(min([remaining, *[w for w in waits if w > 0]] or [remaining]))

    def block_finished(self, session: Session, frames: int, compute_seconds: float) -> bool:
        """Book a finished block; returns False when the session closed meanwhile (its rollout is freed)."""
        with self._lock:
            session.busy = False
            if frames:
                ema = self._compute_seconds
                self._compute_seconds = compute_seconds if ema is None else 0.8 * ema + 0.2 * compute_seconds
            block_seconds = frames / session.fps
            self._block_seconds = max(self._block_seconds, block_seconds)
            session.blocks_done += 1
            session.frames_done += frames
            session.playback_end = max(session.playback_end, time.perf_counter()) + block_seconds
            if session.state == "closed":
                self._free(session)
                return False
            return True

    def wake(self) -> None:
        with self._lock:
            self._lock.notify_all()
