"""What runs inside Ray's processes for ``encode-dataset --engine ray``: reader tasks and encode workers.

Plain Python (no ``import ray`` at import time): :mod:`framestream.jobs.ray_engine` wraps
:class:`ClipReader` and :class:`EncodeWorker` as Ray actors, so this module imports
without Ray installed.

- :func:`read_clip` (run as a CPU task of a :class:`ClipReader` actor) plans a video from its headers and decodes the
  planned frames into the encoder's chunks. On CPU workers it also resizes/crops and
  converts them (:func:`~framestream.jobs.encode.model_pixels` on the CPU, exactly as
  the default engine does on a CPU device); for GPU workers it ships uint8 chunks and
  the worker converts them on its GPU, again exactly where the default engine does, so
  both engines give the same bits on the same device.
- :class:`EncodeWorker` loads the VAE once and runs
  :func:`~framestream.jobs.encode.encode_one` on each clip it is handed: the same
  function, the same atomic publish, as the default engine.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from framestream.io.atomic import remove_stale_partials
from framestream.jobs.encode import EncodeItem, EncodeOptions, EncodePlan, encode_one, iter_raw_chunks, model_pixels
from framestream.jobs.report import PeakMemory

__all__ = ["ClipPixels", "ClipReader", "ClipResult", "EncodeWorker", "WorkerInfo", "output_is_finished", "read_clip"]


@dataclass(frozen=True)
class ClipPixels:
    """One planned clip, read: the encoder's input chunks, in order."""

    plan: EncodePlan
    chunks: tuple[torch.Tensor, ...]
    converted: bool
    """``True``: chunks are ``(1, 3, t, h, w)`` model input; ``False``: uint8 ``(t, H, W, 3)`` frames."""
    read_seconds: float


@dataclass(frozen=True)
class ClipResult:
    """What a worker did with one clip."""

    source: str
    status: str
    """``"done"``, or ``"exists"`` when an earlier (killed) attempt had already published the output."""
    encode_seconds: float
    read_seconds: float
    peak_memory_bytes: int
    worker_pid: int


@dataclass(frozen=True)
class WorkerInfo:
    """A worker ready for clips: where it runs, and the handle of its reader."""

    pid: int
    node_id: str
    device: str
    reader: Any
    """The worker's :class:`ClipReader` actor (on the same node, owned by the worker: it dies with it)."""


def output_is_finished(path: str | Path) -> bool:
    """An output that exists *and* reads back: a latent file a re-run may skip.

    The engines publish by rename, so a half-written file cannot appear under the final
    name; this also rejects a file damaged or truncated after the fact (it is re-encoded).
    """
    from framestream.io.latents import verify_latent_file

    path = Path(path)
    return path.is_file() and verify_latent_file(path) is None


def read_clip(item: EncodeItem, options: EncodeOptions, convert: bool) -> ClipPixels:
    """Plan ``item.source`` and decode its planned frames into encoder chunks (the reader task).

    ``convert``: also resize/crop and convert to ``options.dtype`` here on the CPU (for
    CPU workers); otherwise the uint8 frames go to the worker, which converts on its device.
    A bad video raises here (``ValueError`` etc.): a deterministic failure, never retried.
    """
    torch.set_num_threads(1)  # one reader is one core's worth of work next to the encoders
    start = time.perf_counter()
    plan = options.plan(item.source)
    chunks = []
    for raw in iter_raw_chunks(plan, options.chunk_size):
        chunks.append(model_pixels(raw, plan, torch.device("cpu"), options.dtype) if convert else raw.clone())
    return ClipPixels(plan=plan, chunks=tuple(chunks), converted=convert, read_seconds=time.perf_counter() - start)


class ClipReader:
    """A CPU process beside an encode worker that runs :func:`read_clip` for it.

    A long-lived process, not a fresh Ray task per clip: a task's worker process is
    recycled when idle on a busy node, and each new one pays for importing torch and PyAV
    again (seconds), which would stall the encoder it should keep fed.
    """

    def read(self, item: EncodeItem, options: EncodeOptions, convert: bool) -> ClipPixels:
        return read_clip(item, options, convert)


class EncodeWorker:
    """One encoder: the VAE loaded once on this worker's device, then one clip per call."""

    def __init__(self, checkpoint: str, options: EncodeOptions, gpus: float, threads: int) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # The reader starts first, on this node, and imports its libraries while the model loads.
        # Created here, it is owned by this worker: Ray ends it when this worker dies.
        self.node_id = ray.get_runtime_context().get_node_id()
        near = NodeAffinitySchedulingStrategy(node_id=self.node_id, soft=True)
        # num_cpus=0: reading is bounded by the driver's in-flight window (1 + prefetch clips per
        # worker), not by Ray's CPU count, so a worker that reserves every CPU never starves it.
        reader = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(ClipReader)
        self.reader = reader.options(scheduling_strategy=near).remote()
        device = torch.device("cuda", 0) if gpus > 0 else torch.device("cpu")  # Ray narrows CUDA_VISIBLE_DEVICES
        torch.set_num_threads(max(1, threads))
        # overwrite: a worker only gets clips whose output is missing or unreadable (checked
        # again in encode()), and an unreadable one is replaced, as the default engine does.
        self.options = dataclasses.replace(options, device=device, progress=False, overwrite=True)
        self.memory = PeakMemory(device)
        self.vae = self.options.load_vae(checkpoint)

    def info(self) -> WorkerInfo:
        """Called once the model is loaded: the worker is ready for clips."""
        return WorkerInfo(pid=os.getpid(), node_id=self.node_id, device=str(self.options.device), reader=self.reader)

    def encode(self, item: EncodeItem, clip: ClipPixels) -> ClipResult:
        """Encode one read clip and publish ``item.output`` (atomically, inside :func:`encode_one`)."""
        start = time.perf_counter()
        status = "exists"
        # A retried clip whose earlier worker died after its final rename is already done:
        # never write it a second time.
        if not output_is_finished(item.output):
            remove_stale_partials(item.output)  # leftovers of a worker killed mid-write
            device, dtype = self.options.device, self.options.dtype
            if clip.converted:
                pixels: Any = (chunk.to(device) for chunk in clip.chunks)
            else:
                pixels = (model_pixels(raw, clip.plan, device, dtype) for raw in clip.chunks)
            encode_one(item, self.vae, self.options, plan=clip.plan, pixels=pixels)
            status = "done"
        return ClipResult(
            source=str(item.source),
            status=status,
            encode_seconds=time.perf_counter() - start,
            read_seconds=clip.read_seconds,
            peak_memory_bytes=self.memory.peak_bytes(),
            worker_pid=os.getpid(),
        )
