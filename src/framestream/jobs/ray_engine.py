"""``encode-dataset --engine ray``: the dataset encode on a Ray cluster (or a local Ray).

Design (why an actor pool, not Ray Data): each worker is a Ray actor that loads the VAE
once (:class:`~framestream.jobs.ray_tasks.EncodeWorker`); the driver hands clips out
one at a time from a single queue, so a worker that finishes early simply gets the next
clip (dynamic pulling: no shard waits behind the slowest one). Every worker holds at most
``1 + prefetch`` clips: the one it encodes and ``prefetch`` being read (decoded and
resized, :func:`~framestream.jobs.ray_tasks.read_clip`) by its CPU reader process on the
same node (:class:`~framestream.jobs.ray_tasks.ClipReader`), so reading overlaps with
encoding and at most ``workers * (1 + prefetch)`` decoded clips exist at once (backpressure). A plain actor pool
with ``ray.wait`` keeps the per-clip bookkeeping the job needs in one place: which worker
holds which clip, how often a clip was lost with a worker (bounded retries), and which
clips failed on their own (reported once); Ray Data would hide exactly that behind its own
retry and ordering policies and add a second scheduler to tune.

Faults: a worker that dies (killed, OOM, lost node) loses its clips; they go back to the
front of the queue (at most ``max_attempts`` tries each) and a replacement worker is
started. A clip that fails by itself (corrupt file, wrong size) is reported once and
never retried. Outputs are published only by the worker's final rename inside
:func:`~framestream.jobs.encode.encode_one`, and a retried clip whose output already
exists and reads back is not written again. On Ctrl-C the workers are stopped, their
temporary files removed, and a re-run resumes.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from framestream.config.base import InstantiateConfig, config_dataclass
from framestream.io.atomic import remove_stale_partials
from framestream.io.dataset import DatasetItem, DatasetReport
from framestream.jobs.encode import EncodeItem, EncodeOptions
from framestream.jobs.ray_tasks import ClipResult, EncodeWorker, WorkerInfo, output_is_finished

__all__ = ["RayDatasetEncoder", "RayDatasetReport", "RayEngineConfig", "import_ray"]

logger = logging.getLogger(__name__)

_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray reads this at import: ``0`` makes a local Ray use 127.0.0.1 instead of the machine's network address."""


def import_ray(*, local: bool = False) -> Any:
    """The ``ray`` module, or a one-line ``ValueError`` saying how to install it.

    ``local``: a Ray started here binds the loopback address (set before Ray is imported).
    """
    if local and "ray" not in sys.modules:
        os.environ.setdefault(_LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError:
        raise ValueError("--engine ray needs the ray package: pip install 'framestream[ray]'") from None
    return ray


@config_dataclass
class RayEngineConfig(InstantiateConfig):
    """How ``encode-dataset --engine ray`` uses Ray; ``setup(checkpoint=..., options=...)`` builds the engine."""

    _target: type = field(default_factory=lambda: RayDatasetEncoder, repr=False)
    address: str | None = None
    """Cluster to join (``ray://host:10001``, ``host:6379`` or ``auto``); ``None`` starts a local Ray."""
    workers: int | None = None
    """Encode workers (actors); ``None``: as many as the cluster's GPUs (or CPUs) fit."""
    gpus_per_worker: float = 0.0
    """GPUs per worker (a fraction packs several workers on one GPU); 0 encodes on CPU."""
    cpus_per_worker: float = 1.0
    """CPUs each worker reserves (and torch threads of a CPU worker)."""
    prefetch: int = 1
    """Clips read ahead per worker while it encodes; decoded clips in flight <= workers * (1 + prefetch)."""
    max_attempts: int = 3
    """Tries per clip when workers die under it; a clip that fails by itself is never retried."""
    worker_start_timeout_s: float = 600.0
    """Give up when no worker has loaded its model after this long (e.g. no node has the GPUs asked for)."""
    local_num_cpus: int | None = None
    """CPUs of a local Ray (``None``: all of this machine's)."""
    local_object_store_bytes: int | None = None
    """Object store of a local Ray (``None``: Ray's default share of memory)."""

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise ValueError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if self.cpus_per_worker < 0:
            raise ValueError(f"cpus_per_worker must be >= 0, got {self.cpus_per_worker}")
        if self.prefetch < 0 or self.max_attempts < 1:
            raise ValueError(f"prefetch must be >= 0 and max_attempts >= 1 (got {self.prefetch}, {self.max_attempts})")


@dataclass
class RayDatasetReport(DatasetReport):
    """The default engine's report, plus the Ray side: workers used and clips retried after a worker died."""

    engine: str = "ray"
    workers: int = 0
    retried: list[dict[str, Any]] = field(default_factory=list)
    peak_worker_memory_bytes: int = 0
    max_clips_in_flight: int = 0
    """Most clips handed out (being read or encoded) at once: the backpressure bound in action."""


@dataclass
class _Clip:
    item: EncodeItem
    attempts: int = 0


@dataclass(eq=False)
class _Worker:
    """An encode actor and its reader actor (``info.reader``, same node): lost, and replaced, together."""

    handle: Any
    info: WorkerInfo
    holding: set[Any] = field(default_factory=set)
    """Encode refs of the clips handed to this worker and not finished."""


@dataclass(eq=False)
class _InFlight:
    clip: _Clip
    worker: _Worker
    read_ref: Any
    """Held so the decoded clip lives exactly as long as its encode is pending."""


class _Job:
    """The driver's state during one run: the clip queue, the workers and the clips each holds."""

    def __init__(self, ray: Any, encoder: RayDatasetEncoder, queue: deque[_Clip], report: RayDatasetReport, n_workers: int) -> None:
        config = encoder.config
        self.ray, self.encoder, self.queue, self.report = ray, encoder, queue, report
        self.actor = ray.remote(
            num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker, max_restarts=0, max_task_retries=0
        )(EncodeWorker)
        self.convert_on_reader = config.gpus_per_worker == 0
        self.depth = 1 + config.prefetch
        self.replacements_left = n_workers * config.max_attempts  # bounds restarts when workers keep dying
        self.starting: dict[Any, Any] = {}
        self.workers: list[_Worker] = []
        self.flights: dict[Any, _InFlight] = {}
        self.actors: list[Any] = []
        self.start_error = ""
        self.started_at = time.monotonic()
        for _ in range(n_workers):
            self.start_worker()

    def start_worker(self) -> None:
        config = self.encoder.config
        handle = self.actor.remote(self.encoder.checkpoint, self.encoder.options, config.gpus_per_worker, max(1, int(config.cpus_per_worker)))
        self.actors.append(handle)
        self.starting[handle.info.remote()] = handle

    def dispatch(self) -> None:
        """Hand queued clips to the least busy workers, each up to ``1 + prefetch`` clips."""
        for worker in sorted(self.workers, key=lambda w: len(w.holding)):
            while self.queue and len(worker.holding) < self.depth:
                clip = self.queue.popleft()
                clip.attempts += 1
                read_ref = worker.info.reader.read.remote(clip.item, self.encoder.options, self.convert_on_reader)
                ref = worker.handle.encode.remote(clip.item, read_ref)  # runs once the read is done
                worker.holding.add(ref)
                self.flights[ref] = _InFlight(clip, worker, read_ref)
        self.report.max_clips_in_flight = max(self.report.max_clips_in_flight, len(self.flights))

    def next_ready(self, timeout: float) -> Any | None:
        """The next finished ref (a worker ready, or a clip done/failed), ``None`` after ``timeout``."""
        config = self.encoder.config
        if not self.workers and not self.starting:
            raise RuntimeError(f"no Ray worker could be kept running: {self.start_error or 'workers kept dying'}")
        ready, _ = self.ray.wait([*self.flights, *self.starting], num_returns=1, timeout=timeout)
        if ready:
            return ready[0]
        if not self.workers and time.monotonic() - self.started_at > config.worker_start_timeout_s:
            raise RuntimeError(
                f"no Ray worker started within {config.worker_start_timeout_s:.0f} s (each asks for {config.gpus_per_worker} GPU "
                f"and {config.cpus_per_worker} CPU; the cluster has {self.ray.cluster_resources()})"
            )
        return None

    def worker_started(self, ref: Any) -> None:
        from ray.exceptions import RayActorError, RayTaskError

        handle = self.starting.pop(ref)
        try:
            info: WorkerInfo = self.ray.get(ref)
            self.workers.append(_Worker(handle, info))
        except (RayActorError, RayTaskError) as err:
            # The model failed to load (bad checkpoint, out of memory): the same on a new worker.
            init_failed = isinstance(err, RayTaskError) or getattr(err, "actor_init_failed", False)
            self.start_error = _one_line(err)
            logger.warning("a Ray worker failed to start: %s", self.start_error)
            if not init_failed:
                self._replace()

    def _replace(self) -> None:
        if self.replacements_left > 0:
            self.replacements_left -= 1
            self.start_worker()

    def clip_finished(self, ref: Any) -> ClipResult | None:
        """Account for one finished encode ref: done, failed (reported once), or requeued after a lost worker."""
        from ray.exceptions import RayActorError, RayTaskError

        flight = self.flights.pop(ref)
        flight.worker.holding.discard(ref)
        clip, source = flight.clip, str(flight.clip.item.source)
        try:
            result: ClipResult = self.ray.get(ref)
        except RayTaskError as err:  # the clip itself failed (its reader or encode raised): never retried
            cause = getattr(err, "cause", None)
            if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise cause from None  # a full disk fails every later clip too: stop, as the default engine does
            self.report.failed.append({"source": source, "error": _cause_line(err), "traceback": str(err)})
            return None
        except Exception as err:  # the worker or an object was lost; the clip is not at fault
            if isinstance(err, RayActorError) and flight.worker in self.workers:
                # The encoder or its reader died (or is unreachable): end both, so one clip never
                # has two writers, and start a new pair.
                self.workers.remove(flight.worker)
                self.ray.kill(flight.worker.info.reader, no_restart=True)
                self.ray.kill(flight.worker.handle, no_restart=True)
                self._replace()
            error = _one_line(err)
            self.report.retried.append({"source": source, "attempt": clip.attempts, "error": error})
            if clip.attempts < self.encoder.config.max_attempts:
                self.queue.appendleft(clip)  # next out, to whichever worker is free
            else:
                self.report.failed.append({"source": source, "error": f"gave up after {clip.attempts} attempts: {error}", "traceback": ""})
            return None
        self.report.done.append(source)
        self.report.peak_worker_memory_bytes = max(self.report.peak_worker_memory_bytes, result.peak_memory_bytes)
        return result

    def held_outputs(self) -> list[Path]:
        return [flight.clip.item.output for flight in self.flights.values()]

    def stop(self) -> None:
        """End every actor of the job (a reader also ends with the worker that owns it)."""
        for worker in self.workers:
            self.ray.kill(worker.info.reader, no_restart=True)
        for handle in self.actors:
            self.ray.kill(handle, no_restart=True)


class RayDatasetEncoder:
    """A dataset encode on Ray: one queue of clips, a pool of encode actors, each fed by a CPU reader beside it."""

    def __init__(self, config: RayEngineConfig, *, checkpoint: str | Path, options: EncodeOptions) -> None:
        self.config = config
        self.checkpoint = str(checkpoint)
        self.options = options

    def connect(self) -> tuple[Any, bool, bool]:
        """``(ray, owned, started_here)``: use this process's Ray (not owned), join ``address``, or start a local Ray."""
        ray = import_ray(local=self.config.address is None)
        if ray.is_initialized():
            return ray, False, False
        common: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if self.config.address is not None:
            ray.init(address=self.config.address, **common)
            return ray, True, False
        ray.init(num_cpus=self.config.local_num_cpus, object_store_memory=self.config.local_object_store_bytes, **common)
        return ray, True, True

    def worker_count(self, ray: Any, clips: int) -> int:
        """``workers``, or as many as the cluster's GPUs (CPUs for CPU workers) fit; never more than clips."""
        config, resources = self.config, ray.cluster_resources()
        count = config.workers
        if count is None:
            if config.gpus_per_worker > 0:
                count = int(resources.get("GPU", 0) // config.gpus_per_worker)
            else:
                count = int(resources.get("CPU", 1) // max(config.cpus_per_worker, 1.0))
        count = max(1, min(count, clips))
        if count * config.gpus_per_worker > resources.get("GPU", 0) or count * config.cpus_per_worker > resources.get("CPU", 0):
            # Not an error: an autoscaling cluster may add nodes. Started workers do the job meanwhile;
            # if none starts within worker_start_timeout_s, the job ends with one line.
            logger.warning(
                "%d workers need %g GPU and %g CPU but the cluster has %g GPU and %g CPU now; waiting up to %.0f s for them",
                count, count * config.gpus_per_worker, count * config.cpus_per_worker, resources.get("GPU", 0),
                resources.get("CPU", 0), config.worker_start_timeout_s,
            )  # fmt: skip
        return count

    def run(
        self,
        items: Sequence[DatasetItem],
        report_path: str | Path,
        *,
        progress: bool = True,
        on_result: Callable[[ClipResult], None] | None = None,
    ) -> RayDatasetReport:
        """Encode every item whose output is not finished; returns (and writes) the report.

        ``on_result`` is called on the driver after each clip a worker finished (a hook for
        monitoring). On ``KeyboardInterrupt`` (or any error) every worker is stopped, the
        temporary files of the clips they held are removed, the report is written, and the
        exception propagates; a re-run resumes.
        """
        report_path = Path(report_path)
        start = time.perf_counter()
        report = RayDatasetReport(rank=0, world_size=1)
        queue: deque[_Clip] = deque()
        for item in items:
            if output_is_finished(item.output):
                report.skipped.append(str(item.source))
            else:
                queue.append(_Clip(EncodeItem(source=item.source, output=item.output)))
        report.write(report_path)
        if not queue:
            return report
        ray, owned, started_here = self.connect()
        job: _Job | None = None
        try:
            report.workers = self.worker_count(ray, len(queue))
            job = _Job(ray, self, queue, report, report.workers)
            self._loop(job, len(items), progress, on_result, report_path, start)
        finally:
            held = job.held_outputs() if job is not None else []
            if job is not None:
                job.stop()  # no worker may write after the sweep below
            if owned:
                ray.shutdown()  # after this, the processes of a Ray started here are gone
            if held and not started_here:
                time.sleep(1.0)  # the cluster's raylets end the killed workers
            for output in held:
                remove_stale_partials(output)
            report.seconds = time.perf_counter() - start
            report.write(report_path)
        return report

    def _loop(
        self,
        job: _Job,
        total: int,
        progress: bool,
        on_result: Callable[[ClipResult], None] | None,
        report_path: Path,
        start: float,
    ) -> None:
        from tqdm.contrib.logging import logging_redirect_tqdm

        report = job.report
        last_write = time.monotonic()
        # One bar for the whole cluster, on a terminal only (as the default engine); warnings print above it.
        with logging_redirect_tqdm(), tqdm(
            total=total, initial=len(report.skipped), unit="clip", desc="encode-dataset[ray]",
            disable=None if progress else True, dynamic_ncols=True, smoothing=0.1,
        ) as bar:  # fmt: skip
            while job.queue or job.flights:
                job.dispatch()
                ref = job.next_ready(_WAIT_S)
                if ref is None:
                    continue
                if ref in job.starting:
                    job.worker_started(ref)
                    bar.set_postfix(workers=len(job.workers), refresh=False)
                    continue
                finished = len(report.done) + len(report.failed)
                result = job.clip_finished(ref)
                if result is not None and on_result is not None:
                    on_result(result)
                bar.update(len(report.done) + len(report.failed) - finished)  # a requeued clip is not progress
                bar.set_postfix(workers=len(job.workers), retried=len(report.retried), refresh=False)
                if time.monotonic() - last_write > _REPORT_EVERY_S:
                    report.seconds = time.perf_counter() - start
                    report.write(report_path)
                    last_write = time.monotonic()


_WAIT_S = 0.2  # also how soon Ctrl-C is seen: Python handles the signal once ray.wait returns
_REPORT_EVERY_S = 2.0


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _cause_line(err: Any) -> str:
    """``ValueError: ...`` of the exception a Ray task raised (not Ray's wrapper)."""
    cause = getattr(err, "cause", None)
    return _one_line(cause) if isinstance(cause, BaseException) else _one_line(err)
