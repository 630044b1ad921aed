"""Server metrics in the Prometheus text exposition format (version 0.0.4), no client library.

Every metric name starts with ``framestream_``. Updates may come from the model worker
thread and the event loop at once, so each metric guards its values with a lock.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Sequence

__all__ = ["Counter", "Gauge", "Histogram", "MetricsRegistry", "ServerMetrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _format_number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str) -> None:
        if not name.startswith("framestream_"):
            raise ValueError(f"metric names start with framestream_, got {name!r}")
        self.name = name
        self.help_text = help_text
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A value that only goes up."""

    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self._value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        with self._lock:
            self._value += amount

    @property
    def value(self) -> float:
        return self._value

    def samples(self) -> list[str]:
        return [f"{self.name} {_format_number(self._value)}"]


class Gauge(_Metric):
    """A value read at scrape time from a callback (so it can never go stale)."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        super().__init__(name, help_text)
        self._read = read

    def samples(self) -> list[str]:
        return [f"{self.name} {_format_number(self._read())}"]


class Histogram(_Metric):
    """Cumulative-bucket histogram of observations (seconds)."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        super().__init__(name, help_text)
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sum += value

    @property
    def count(self) -> int:
        return sum(self._counts)

    def samples(self) -> list[str]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        lines, running = [], 0
        for bound, count in zip((*self.buckets, math.inf), counts):
            running += count
            lines.append(f'{self.name}_bucket{{le="{_format_number(bound)}"}} {running}')
        lines.append(f"{self.name}_sum {_format_number(total)}")
        lines.append(f"{self.name}_count {running}")
        return lines


class MetricsRegistry:
    """Metrics in registration order; :meth:`render` gives the text exposition."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def add(self, metric: _Metric) -> _Metric:
        if any(m.name == metric.name for m in self._metrics):
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics:
            lines += metric.header() + metric.samples()
        return "\n".join(lines) + "\n"


LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    """The server's metrics; gauges read live values through the callbacks given."""

    def __init__(
        self,
        *,
        active_sessions: Callable[[], float],
        waiting_sessions: Callable[[], float],
        live_rollouts: Callable[[], float],
        queued_frames: Callable[[], float],
        blocks_per_second: Callable[[], float],
    ) -> None:
        self.registry = MetricsRegistry()
        add = self.registry.add
        add(Gauge("framestream_sessions", "Sessions currently streaming.", active_sessions))
        add(Gauge("framestream_session_caches", "Sessions whose rollout caches are alive (0 once all closed).", live_rollouts))
        add(Gauge("framestream_sessions_waiting", "Sessions queued for a free slot (--max-sessions).", waiting_sessions))
        add(Gauge("framestream_queue_depth_frames", "Frames waiting to be sent, summed over sessions.", queued_frames))
        add(Gauge("framestream_blocks_per_second", "AR blocks generated per second over the last 10 s.", blocks_per_second))
        self.sessions_started = add(Counter("framestream_sessions_started_total", "Sessions that started streaming."))
        self.blocks = add(Counter("framestream_blocks_total", "AR blocks generated."))
        self.frames_sent = add(Counter("framestream_frames_sent_total", "Frames handed to a transport."))
        self.frames_dropped = add(Counter("framestream_frames_dropped_total", "Frames dropped by full per-session queues (oldest first)."))
        self.errors = add(Counter("framestream_message_errors_total", "Client messages answered with an error."))
        self.ttff = add(Histogram("framestream_time_to_first_frame_seconds", "Start request to first frame ready to send.", LATENCY_BUCKETS))
        self.block_latency = add(Histogram("framestream_block_latency_seconds", "Wall time of one AR block on the model worker.", LATENCY_BUCKETS))

    def render(self) -> str:
        return self.registry.render()
