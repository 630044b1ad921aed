"""Live server over its WebSocket protocol, no browser: sessions, admission, memory, bad input, metrics."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import aiohttp
import pytest

from framestream.serve.protocol import unpack_frame_header
from serve_support import serve, wait_until

TOKEN = "s3cret-token"
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def server():
    with serve("--max-sessions", "4", "--max-waiting", "2", "--token", TOKEN, "--max-message-bytes", "4096",
               "--max-prompt-chars", "100", "--fps", "32", "--no-webrtc") as proc:
        yield proc


class Viewer:
    """One WebSocket viewer; collects frames and JSON messages in the background."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url
        self.frames: list[tuple[int, int, bool, float]] = []
        self.messages: list[dict] = []
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task | None = None

    async def connect(self, token: str | None = TOKEN) -> "Viewer":
        query = f"?token={token}" if token else ""
        self.ws = await self.http.ws_connect(f"{self.url}/ws{query}")
        self._reader = asyncio.create_task(self._read())
        await self.wait_for("welcome")
        return self

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.frames.append(unpack_frame_header(msg.data))
            elif msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(msg.data))

    async def send(self, message: dict | str) -> None:
        assert self.ws is not None
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))

    async def wait_for(self, kind: str, count: int = 1, timeout: float = TIMEOUT, **match) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in self.messages if m["type"] == kind and all(m.get(k) == v for k, v in match.items())]
            if len(found) >= count:
                return found[count - 1]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {kind} {match} within {timeout} s; got {self.messages[-5:]}")

    async def wait_frames(self, count: int, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while len(self.frames) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(self.frames) >= count, f"{len(self.frames)} frames, wanted {count}"

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def scrape(server, token: str | None = TOKEN) -> str:
    url = f"{server.base_url}/metrics" + (f"?token={token}" if token else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def wait_idle(server) -> None:
    assert wait_until(lambda: metric(scrape(server), "framestream_sessions") == 0, 15)


def test_four_sessions_stream_and_a_fifth_waits_busy_until_one_ends(server) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            viewers = [await Viewer(http, server.base_url).connect() for _ in range(4)]
            started = time.monotonic()
            for index, viewer in enumerate(viewers):
                await viewer.send({"type": "start", "prompt": f"stream {index}", "seed": index})
            for viewer in viewers:
                await viewer.wait_for("started")
            await asyncio.gather(*(v.wait_frames(24, timeout=20) for v in viewers))
            assert time.monotonic() - started < 20
            for viewer in viewers:  # frames arrive in order, ids consecutive, block-done stamps set
                ids = [f[0] for f in viewer.frames[:24]]
                assert ids == list(range(24))
                assert all(f[3] > 0 for f in viewer.frames)

            fifth = await Viewer(http, server.base_url).connect()
            await fifth.send({"type": "start", "prompt": "late viewer", "seed": 9})
            queued = await fifth.wait_for("queued")
            assert queued["position"] == 1 and queued["message"] == "busy, position 1"
            await asyncio.sleep(0.5)
            assert not fifth.frames and not [m for m in fifth.messages if m["type"] == "started"]
            await viewers[0].send({"type": "stop"})
            await viewers[0].wait_for("ended")
            await fifth.wait_for("started", timeout=10)
            await fifth.wait_frames(12, timeout=20)
            for viewer in [*viewers, fifth]:
                await viewer.close()

    run(scenario())
    wait_idle(server)
    text = scrape(server)
    assert metric(text, "framestream_sessions_started_total") >= 5
    assert metric(text, "framestream_blocks_total") >= 8


def test_closing_sessions_returns_memory_to_idle(server) -> None:
    async def stream(count: int, frames: int) -> None:
        async with aiohttp.ClientSession() as http:
            viewers = [await Viewer(http, server.base_url).connect() for _ in range(count)]
            for index, viewer in enumerate(viewers):
                await viewer.send({"type": "start", "prompt": f"memory {index}", "seed": index})
            await asyncio.gather(*(v.wait_frames(frames, timeout=25) for v in viewers))
            for viewer in viewers:  # dropped connections, not stops: the server must notice
                await viewer.close()

    wait_idle(server)
    run(stream(1, 12))  # warm-up: lazy imports and allocator pools settle
    wait_idle(server)
    idle = server.rss_bytes()
    run(stream(4, 36))
    # Dropped connections free the caches at once (well before the 20 s heartbeat).
    assert wait_until(lambda: metric(scrape(server), "framestream_session_caches") == 0, 3)
    wait_idle(server)
    time.sleep(0.5)
    after = server.rss_bytes()
    assert after <= 1.10 * idle, f"RSS {after / 2**20:.1f} MiB after closing vs {idle / 2**20:.1f} MiB idle"


def test_bad_messages_get_errors_while_other_sessions_keep_streaming(server) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            good = await Viewer(http, server.base_url).connect()
            await good.send({"type": "start", "prompt": "steady stream", "seed": 1})
            await good.wait_frames(4)

            intruder = await Viewer(http, server.base_url).connect(token=None)
            await intruder.send({"type": "start", "prompt": "let me in"})
            assert (await intruder.wait_for("error"))["code"] == "unauthorised"
            await intruder.send({"type": "start", "prompt": "guess", "token": "wrong"})
            await intruder.wait_for("error", count=2, code="unauthorised")

            bad = await Viewer(http, server.base_url).connect()
            cases = [
                ("{not json", "malformed"),
                (json.dumps([1, 2]), "malformed"),
                (json.dumps({"type": "dance"}), "unknown_type"),
                (json.dumps({"type": "start", "prompt": "x", "seed": "seven"}), "malformed"),
                (json.dumps({"type": "start", "prompt": "x" * 101}), "prompt_too_long"),
                (json.dumps({"type": "start", "prompt": "x", "extra": 1}), "malformed"),
                (json.dumps({"type": "prompt", "prompt": "no stream yet"}), "no_session"),
                (json.dumps({"type": "start", "prompt": "y" * 5000}), "too_large"),
            ]
            for number, (raw, code) in enumerate(cases, start=1):
                await bad.send(raw)
                error = await bad.wait_for("error", count=number)
                assert error["code"] == code, (raw[:40], error)
            await bad.ws.send_bytes(b"\x00" * 10)
            assert (await bad.wait_for("error", count=len(cases) + 1))["code"] == "malformed"
            # The erring sockets stay usable, and the good stream never paused.
            before = len(good.frames)
            await bad.send({"type": "start", "prompt": "now a proper one", "seed": 2})
            await bad.wait_frames(4)
            await good.wait_frames(before + 8, timeout=15)
            blocks_seen = len([m for m in good.messages if m["type"] == "block"])
            await good.send({"type": "prompt", "prompt": "a different scene"})
            ack = await good.wait_for("prompt_ok")
            assert ack["from_block"] >= blocks_seen >= 1  # never a block the viewer already has
            await good.send({"type": "start", "prompt": "twice"})
            assert (await good.wait_for("error", code="already_streaming"))["type"] == "error"
            for viewer in (good, intruder, bad):
                await viewer.close()

    run(scenario())
    wait_idle(server)
    assert metric(scrape(server), "framestream_message_errors_total") >= 12


def test_http_surface_static_files_metrics_and_auth(server) -> None:
    with urllib.request.urlopen(f"{server.base_url}/", timeout=10) as response:
        page = response.read().decode()
    assert "<canvas" in page and "static/app.js" in page and "http" not in page.split("<body>")[1].split("</body>")[0]
    for name, kind in (("app.js", "javascript"), ("style.css", "css")):
        with urllib.request.urlopen(f"{server.base_url}/static/{name}", timeout=10) as response:
            assert kind in response.headers["Content-Type"]
    for path in ("/static/../../pyproject.toml", "/static/..%2F__init__.py", "/static/%2e%2e%2fapp.py", "/static/app.py", "/static/"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{server.base_url}{path}", timeout=10)
        assert err.value.code == 404, path
    with pytest.raises(urllib.error.HTTPError) as err:
        scrape(server, token=None)
    assert err.value.code == 401
    text = scrape(server)
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert all(name.startswith("framestream_") for name in names)
    assert {"framestream_sessions", "framestream_queue_depth_frames", "framestream_blocks_per_second",
            "framestream_time_to_first_frame_seconds", "framestream_block_latency_seconds",
            "framestream_frames_dropped_total"} <= names
    assert 'framestream_block_latency_seconds_bucket{le="+Inf"}' in text
