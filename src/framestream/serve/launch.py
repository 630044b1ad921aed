"""Run ``framestream serve`` in a subprocess on a free loopback port (tests and the latency benchmark).

The server is started with ``--port 0``; its address is read from the line it prints once it
listens. Leaving the ``with`` block always ends the process (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["ServerProcess", "launched_server", "wait_until", "find_chromium", "CHROMIUM_ARGS"]

CHROMIUM_ARGS = (
    "--no-sandbox",  # CI runs as root
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",  # WebRTC over 127.0.0.1 only
    "--disable-features=WebRtcHideLocalIpsWithMdns",  # real host candidates, not mDNS names aiortc must resolve
    # Several viewers in one browser: without these, pages other than the focused one get
    # throttled animation frames and video callbacks, which would count as page-side drops.
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
)
"""Flags for a headless Chromium driving the viewer page on loopback."""


def find_chromium() -> str:
    """Path of the system Chromium (Debian: ``apt-get install chromium``); one clear error if absent."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("chromium is not installed (Debian: apt-get install -y chromium; see the README set-up)")


@dataclass
class ServerProcess:
    """A running server: its process, port and the lines it printed so far."""

    process: subprocess.Popen
    port: int
    output: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_bytes(self) -> int:
        """Resident memory of the server process (Linux ``/proc``)."""
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def launched_server(recipe: str, *args: str, startup_timeout: float = 60.0) -> Iterator[ServerProcess]:
    """``framestream serve RECIPE --port 0 ARGS...`` for the duration of the block."""
    command = [sys.executable, "-m", "framestream", "serve", recipe, "--port", "0", *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output: list[str] = []
    ready = threading.Event()
    port: list[int] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            if found and not port:
                port.append(int(found.group(1)))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        if not ready.wait(startup_timeout) or not port:
            raise RuntimeError("server did not start:\n" + "".join(output))
        yield ServerProcess(process=process, port=port[0], output=output)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
