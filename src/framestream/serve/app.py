"""The live streaming server: HTTP routes, the viewer page, ``/metrics`` and its lifecycle.

Routes: ``/`` (the viewer page), ``/static/<name>`` (only the package's own viewer files,
looked up by exact name, so no path can escape), ``/ws`` (one WebSocket per viewer, see
:mod:`framestream.serve.protocol`), ``/metrics`` (Prometheus text) and ``/healthz``.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.resources
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from framestream.serve.config import ServerConfig
from framestream.serve.connection import ViewerConnection
from framestream.serve.metrics import CONTENT_TYPE, ServerMetrics
from framestream.serve.recipes import ServedRecipe, prompt_context_builder, resolve_recipe
from framestream.serve.sessions import SessionManager
from framestream.serve.webrtc import restrict_ice_to_host, webrtc_available

__all__ = ["StreamServer", "STATIC_FILES"]

logger = logging.getLogger(__name__)

STATIC_FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
"""The only files the server hands out, all shipped in ``framestream/serve/static``."""


def _static_bytes(name: str) -> bytes:
    return importlib.resources.files("framestream.serve").joinpath("static", name).read_bytes()


class StreamServer:
    """Build with ``ServerConfig(...).setup()``; run with :meth:`run` or ``await start()`` / ``stop()``.

    The recipe is resolved (and its files checked) in the constructor, before any
    weights load, so bad input fails fast with one clear line.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.recipe: ServedRecipe = resolve_recipe(
            config.recipe,
            checkpoint_dir=None if config.checkpoint_dir is None else Path(config.checkpoint_dir),
            overrides=list(config.overrides),
            max_blocks=config.max_blocks,
        )
        self.webrtc_available = config.webrtc and webrtc_available()
        self.manager = SessionManager(max_sessions=config.max_sessions, max_waiting=config.max_waiting)
        self.connections_by_session: dict[int, ViewerConnection] = {}
        self.metrics = ServerMetrics(
            active_sessions=lambda: len(self.manager.active),
            waiting_sessions=lambda: len(self.manager.waiting),
            live_rollouts=lambda: self.manager.live_rollouts,
            queued_frames=lambda: sum(len(s.queue) for s in list(self.manager.active)),
            blocks_per_second=lambda: self.worker.blocks_per_second() if self.worker is not None else 0.0,
        )
        self.worker: Any = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._static = {name: _static_bytes(name) for name in STATIC_FILES}

    # ------------------------------------------------------------------ auth and info
    def check_token(self, token: str | None) -> bool:
        if self.config.token is None:
            return True
        return token is not None and hmac.compare_digest(token.encode("utf-8"), self.config.token.encode("utf-8"))

    def welcome(self) -> dict[str, Any]:
        c = self.config
        return {
            "type": "welcome",
            "server_ms": time.time() * 1000.0,
            "recipe": c.recipe,
            "random_weights": self.recipe.random_weights,
            "transports": ["webrtc", "websocket"] if self.webrtc_available else ["websocket"],
            "fps": c.fps,
            "max_prompt_chars": c.max_prompt_chars,
            "max_blocks": self.recipe.max_blocks,
            "auth_required": c.token is not None,
        }

    async def broadcast_positions(self) -> None:
        for session, position in self.manager.positions():
            connection = self.connections_by_session.get(session.session_id)
            if connection is not None:
                await connection.send_json({"type": "queued", "position": position, "message": f"busy, position {position}"})

    # ------------------------------------------------------------------ HTTP handlers
    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=self._static["index.html"], content_type="text/html", charset="utf-8")

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._static:  # exact names only: nothing outside the package can be named
            raise web.HTTPNotFound()
        return web.Response(body=self._static[name], content_type=STATIC_FILES[name], charset="utf-8")

    async def _metrics(self, request: web.Request) -> web.Response:
        if not self._request_authed(request):
            raise web.HTTPUnauthorized(text="missing or wrong token\n")
        return web.Response(body=self.metrics.render().encode("utf-8"), headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "sessions": len(self.manager.active), "waiting": len(self.manager.waiting)})

    def _request_authed(self, request: web.Request) -> bool:
        if self.config.token is None:
            return True
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else request.query.get("token")
        return self.check_token(token)

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        # aiohttp closes a socket whose message passes max_msg_size; keep that hard cap well above our
        # limit so an oversized message gets an error reply (protocol check) and the socket lives on.
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=max(4 * self.config.max_message_bytes, 1 << 20))
        await ws.prepare(request)
        self._sockets.add(ws)
        authed = self.config.token is None or ("token" in request.query and self.check_token(request.query["token"]))
        try:
            await ViewerConnection(self, ws, authed).serve()
        finally:
            self._sockets.discard(ws)
        return ws

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static_file)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        return app

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> int:
        """Load the model, start the worker and listen; returns the bound port."""
        import torch

        from framestream.serve.worker import ModelWorker

        loop = asyncio.get_running_loop()
        # Listen first: a busy port fails in a second, before minutes of weight loading.
        # Sessions admitted before the worker runs simply wait for its first turn.
        self._runner = web.AppRunner(self.build_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as err:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            raise ValueError(f"cannot listen on {self.config.host}:{self.config.port}: {err.strerror or err}") from None
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        if self.webrtc_available:
            restrict_ice_to_host(self.config.host)

        def build() -> Any:
            return self.recipe.config.setup().to(torch.device(self.config.device)).eval()

        pipeline = await loop.run_in_executor(None, build)
        self.worker = ModelWorker(pipeline, prompt_context_builder(pipeline), self.manager, loop, threads=self.config.threads)
        self.worker.start()
        return self.port

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.worker is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.worker.stop)

    def run(self, on_ready: Any = None) -> None:
        """Serve until interrupted (Ctrl-C / SIGTERM)."""
        import signal

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            try:
                port = await self.start()
                if on_ready is not None and not stop.is_set():
                    on_ready(port)
                await stop.wait()
            finally:
                await self.stop()

        asyncio.run(main())
