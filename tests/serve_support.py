"""Test helpers: run ``framestream serve`` in a subprocess on a free loopback port, always killed after."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

# Small demo frames (64x64 px) keep the tests cheap on two cores.
TINY_DEMO = (
    "--diffusion-model.transformer.height", "8",
    "--diffusion-model.transformer.width", "8",
)


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    output: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def serve(*args: str, startup_timeout: float = 60.0) -> Iterator[ServerProcess]:
    """``framestream serve demo --port 0 ...`` until the block exits; the process is killed on the way out."""
    command = [sys.executable, "-m", "framestream", "serve", "demo", "--port", "0", "--threads", "1", *TINY_DEMO, *args]
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


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
