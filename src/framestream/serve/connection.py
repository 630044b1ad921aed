"""One viewer's WebSocket: authentication, message handling, its session and its frame sender."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from framestream.serve.frames import encode_jpeg
from framestream.serve.protocol import ProtocolError, pack_frame, parse_message
from framestream.serve.sessions import AdmissionError, BlockInfo, Frame, FrameQueue, Session

if TYPE_CHECKING:
    from framestream.serve.app import StreamServer

__all__ = ["ViewerConnection"]


class ViewerConnection:
    """Serves one WebSocket until it closes; at most one session at a time.

    Errors in a message are answered on this socket only; the socket stays open.
    Closing the socket (or ``stop``) ends the session and frees its caches at once.
    """

    def __init__(self, server: StreamServer, ws: web.WebSocketResponse, authed: bool) -> None:
        self.server = server
        self.ws = ws
        self.authed = authed
        self.session: Session | None = None
        self.transport = "websocket"
        self._sender: asyncio.Task[None] | None = None
        self._peer: Any = None
        self._started_at = 0.0
        self._send_lock = asyncio.Lock()

    # ------------------------------------------------------------------ sending
    async def send_json(self, message: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            async with self._send_lock:
                await self.ws.send_json(message)

    async def _error(self, err: ProtocolError) -> None:
        self.server.metrics.errors.inc()
        await self.send_json(err.as_message())

    # ------------------------------------------------------------------ main loop
    async def serve(self) -> None:
        config = self.server.config
        await self.send_json(self.server.welcome())
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT or msg.type == WSMsgType.BINARY:
                    try:
                        parsed = parse_message(msg.data, max_bytes=config.max_message_bytes, max_prompt_chars=config.max_prompt_chars)
                        await self._handle(parsed.type, parsed.fields)
                    except ProtocolError as err:
                        await self._error(err)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            await self.end_session()

    async def _handle(self, kind: str, fields: dict[str, Any]) -> None:
        if kind == "ping":  # clock sync is harmless, allowed before auth
            await self.send_json({"type": "pong", "t": fields["t"], "server_ms": time.time() * 1000.0})
            return
        token = fields.get("token")
        if not self.authed and token is not None:
            self.authed = self.server.check_token(token)
        if not self.authed:
            raise ProtocolError("unauthorised", "missing or wrong token")
        if kind == "hello":
            await self.send_json({"type": "hello_ok"})
        elif kind == "start":
            await self._start(fields)
        elif kind == "prompt":
            if self.session is None:
                raise ProtocolError("no_session", "start a stream before changing its prompt")
            from_block = self.server.manager.set_prompt(self.session, fields["prompt"])
            await self.send_json({"type": "prompt_ok", "prompt": fields["prompt"], "from_block": from_block})
        elif kind == "stop":
            await self.end_session()
            await self.send_json({"type": "ended", "reason": "stopped"})
        elif kind == "offer":
            await self._answer(fields["sdp"])

    # ------------------------------------------------------------------ session lifecycle
    async def _start(self, fields: dict[str, Any]) -> None:
        if self.session is not None:
            raise ProtocolError("already_streaming", "stop the current stream before starting another")
        server = self.server
        if fields["transport"] == "webrtc" and not server.webrtc_available:
            raise ProtocolError("no_webrtc", "this server has no WebRTC transport; use websocket")
        self.transport = fields["transport"]
        session = Session(
            session_id=server.manager.new_id(),
            prompt=fields["prompt"],
            seed=fields["seed"],
            max_blocks=server.recipe.max_blocks,
            queue=FrameQueue(server.config.frame_queue_frames),
            on_block=self._on_block,
            on_error=self._on_error,
            fps=server.config.fps,
        )
        self._started_at = time.perf_counter()
        try:
            position = server.manager.admit(session)
        except AdmissionError as err:
            raise ProtocolError("server_full", str(err)) from None
        self.session = session
        server.connections_by_session[session.session_id] = self
        if position:
            await self.send_json({"type": "queued", "position": position, "message": f"busy, position {position}"})
        else:
            await self.announce_started()

    async def announce_started(self) -> None:
        """Tell the viewer its session streams now, and start the WebSocket sender."""
        session = self.session
        if session is None:
            return
        self.server.metrics.sessions_started.inc()
        await self.send_json({"type": "started", "session": session.session_id, "transport": self.transport, "fps": session.fps})
        if self.transport == "websocket":
            self._sender = asyncio.create_task(self._send_frames(session))

    async def end_session(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        self.server.connections_by_session.pop(session.session_id, None)
        for promoted in self.server.manager.close(session):
            connection = self.server.connections_by_session.get(promoted.session_id)
            if connection is not None:
                await connection.announce_started()
        await self.server.broadcast_positions()
        sender, self._sender = self._sender, None
        if sender is not None and sender is not asyncio.current_task():
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
        if self._peer is not None:
            peer, self._peer = self._peer, None
            with contextlib.suppress(Exception):
                await peer.close()

    # ------------------------------------------------------------------ worker callbacks (loop thread)
    def _on_block(self, session: Session, frames: Any, info: BlockInfo) -> None:
        if session is not self.session:
            return
        metrics = self.server.metrics
        metrics.blocks.inc()
        metrics.block_latency.observe(info.seconds)
        if session.first_frame_at is None:
            session.first_frame_at = time.perf_counter()
            metrics.ttff.observe(session.first_frame_at - self._started_at)
        dropped = 0
        for offset, pixels in enumerate(frames):
            frame = Frame(
                frame_id=info.first_frame_id + offset,
                block_index=info.block_index,
                first_in_block=offset == 0,
                done_at_ms=info.done_at_ms,
                pixels=pixels,
            )
            dropped += session.queue.push(frame)
        session.blocks_delivered += 1
        if dropped:
            metrics.frames_dropped.inc(dropped)
        asyncio.ensure_future(
            self.send_json(
                {
                    "type": "block",
                    "index": info.block_index,
                    "first_frame": info.first_frame_id,
                    "frames": int(frames.shape[0]),
                    "width": int(frames.shape[2]),
                    "height": int(frames.shape[1]),
                    "done_at_ms": info.done_at_ms,
                    "gen_ms": info.seconds * 1000.0,
                    "dropped": session.queue.dropped,
                    "queue": len(session.queue),
                    "last": info.last,
                }
            )
        )

    def _on_error(self, session: Session, err: BaseException) -> None:
        if session is not self.session:
            return
        self.server.metrics.errors.inc()

        async def report() -> None:
            await self.send_json({"type": "error", "code": "generation_failed", "message": f"{type(err).__name__}: {err}"})
            await self.end_session()
            await self.send_json({"type": "ended", "reason": "error"})

        asyncio.ensure_future(report())

    # ------------------------------------------------------------------ transports
    async def _pace(self, next_at: float, fps: float) -> float:
        """Sleep until ``next_at`` (perf_counter); returns when the frame after this one may go."""
        now = time.perf_counter()
        if next_at > now:
            await asyncio.sleep(next_at - now)
        return max(next_at, now) + 1.0 / fps

    async def _send_frames(self, session: Session) -> None:
        """WebSocket transport: JPEG packets at most ``fps`` per second, as the queue delivers them."""
        loop = asyncio.get_running_loop()
        quality = self.server.config.jpeg_quality
        next_at = 0.0
        while True:
            frame = await session.queue.get()
            if frame is None:
                return
            next_at = await self._pace(next_at, session.fps)
            jpeg = await loop.run_in_executor(None, encode_jpeg, frame.pixels, quality)
            if self.ws.closed:
                return
            async with self._send_lock:
                await self.ws.send_bytes(pack_frame(frame.frame_id, frame.block_index, frame.first_in_block, frame.done_at_ms, jpeg))
            self.server.metrics.frames_sent.inc()
            await self._maybe_finish(session)

    async def _maybe_finish(self, session: Session) -> None:
        if session.blocks_delivered >= session.max_blocks and len(session.queue) == 0 and session is self.session:
            await self.end_session()
            await self.send_json({"type": "ended", "reason": f"block limit ({session.max_blocks}) reached"})

    async def _answer(self, sdp: str) -> None:
        session = self.session
        if session is None or self.transport != "webrtc":
            raise ProtocolError("no_session", "start a webrtc stream before sending an offer")
        if self._peer is not None:
            raise ProtocolError("already_connected", "this session already has a WebRTC peer")
        from framestream.serve.webrtc import answer_offer

        try:
            self._peer, answer = await answer_offer(sdp, session, self.server, on_sent=self._frame_sent)
        except ValueError as err:
            raise ProtocolError("bad_offer", f"WebRTC offer refused: {err}") from None
        await self.send_json({"type": "answer", "sdp": answer})

    async def _frame_sent(self, session: Session) -> None:
        self.server.metrics.frames_sent.inc()
        await self._maybe_finish(session)
