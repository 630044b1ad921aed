"""Resumable many-file jobs (dataset encoding): one atomic output per input.

The job is safe to kill at any moment: each output is written to a temporary file and
renamed into place, so an output that exists is complete; a re-run skips it. Failures
are recorded in a per-rank JSON report and do not stop the batch. Under ``torchrun``
each rank takes its own slice of the sorted input list.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from framestream.io.atomic import atomic_path, remove_stale_partials

__all__ = [
    "VIDEO_SUFFIXES",
    "DatasetItem",
    "DatasetReport",
    "DistributedSlot",
    "distributed_slot",
    "list_dataset_items",
    "run_dataset_job",
]

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif")


@dataclass(frozen=True)
class DatasetItem:
    """One input video and the output file it produces."""

    source: Path
    output: Path


@dataclass(frozen=True)
class DistributedSlot:
    """This process's place in a ``torchrun`` launch (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def distributed_slot(environ: dict[str, str] | None = None) -> DistributedSlot:
    """Read ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` as set by ``torchrun``."""
    env = os.environ if environ is None else environ
    slot = DistributedSlot(
        rank=int(env.get("RANK", 0)), world_size=int(env.get("WORLD_SIZE", 1)), local_rank=int(env.get("LOCAL_RANK", 0))
    )
    if slot.world_size < 1 or not 0 <= slot.rank < slot.world_size:
        raise ValueError(f"inconsistent torchrun environment: RANK={slot.rank} WORLD_SIZE={slot.world_size}")
    return slot


def _read_csv_sources(csv_path: Path) -> list[Path]:
    with csv_path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise ValueError(f"{csv_path} is empty")
    header = [cell.strip().lower() for cell in rows[0]]
    column = next((header.index(name) for name in ("path", "video", "video_path", "file") if name in header), None)
    body = rows[1:] if column is not None else rows
    column = column or 0
    sources = []
    for row in body:
        if not row or not row[column].strip():
            continue
        source = Path(row[column].strip())
        sources.append(source if source.is_absolute() else csv_path.parent / source)
    return sources


def list_dataset_items(input_path: str | Path, output_dir: str | Path, output_suffix: str = ".safetensors") -> list[DatasetItem]:
    """Inputs from a directory (recursive scan of video files) or a CSV (a ``path`` column).

    Outputs mirror the inputs' paths relative to the directory (or the CSV's folder),
    with ``output_suffix``. The list is sorted so every rank sees the same order.
    """
    input_path, output_dir = Path(input_path), Path(output_dir)
    if not input_path.exists():
        raise FileNotFoundError(f"dataset input not found: {input_path}")
    if input_path.is_dir():
        root = input_path
        sources = sorted(p for p in input_path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    elif input_path.suffix.lower() == ".csv":
        root = input_path.parent
        sources = sorted(_read_csv_sources(input_path))
    else:
        raise ValueError(f"dataset input must be a directory of videos or a .csv file, got {input_path}")
    if not sources:
        raise ValueError(f"no videos found in {input_path} (looked for {', '.join(VIDEO_SUFFIXES)})")
    items, seen = [], set()
    for source in sources:
        try:
            relative = source.resolve().relative_to(root.resolve())
        except ValueError:
            relative = Path(source.name)
        output = output_dir / relative.with_suffix(output_suffix)
        if output in seen:
            raise ValueError(f"two inputs map to the same output {output}")
        seen.add(output)
        items.append(DatasetItem(source=source, output=output))
    return items


@dataclass
class DatasetReport:
    """What one rank did: counts, timings and every failure with its error."""

    rank: int = 0
    world_size: int = 1
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def write(self, path: Path) -> Path:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def run_dataset_job(
    items: Sequence[DatasetItem],
    process: Callable[[DatasetItem], None],
    report_path: str | Path,
    slot: DistributedSlot | None = None,
    progress: bool = True,
    verify: Callable[[Path], str | None] | None = None,
) -> DatasetReport:
    """Run ``process(item)`` for this rank's items whose output is not finished yet.

    ``process`` must create ``item.output`` atomically (with :func:`atomic_path`;
    :func:`framestream.io.latents.save_latents` does), so an existing output is a
    finished one; ``verify(output)`` (``None`` when readable, else why not) is asked
    before one is skipped, and an unreadable output (0 bytes, cut short) is redone.
    Leftovers of a killed earlier attempt are removed before an item is retried. The
    report is rewritten after every item, so it is current even if the job is killed.
    Warnings are printed above the progress bar, not into it.
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    slot = slot or DistributedSlot()
    report_path = Path(report_path)
    mine = list(items)[slot.rank :: slot.world_size]
    report = DatasetReport(rank=slot.rank, world_size=slot.world_size)
    start = time.perf_counter()
    bar = tqdm(mine, desc=f"encode-dataset[rank {slot.rank}]", unit="video", disable=None if progress else True)
    with logging_redirect_tqdm(), bar:
        for item in bar:
            if item.output.exists():
                problem = verify(item.output) if verify is not None else None
                if problem is None:
                    report.skipped.append(str(item.source))
                    continue
                logger.warning("redoing %s: the existing output is not readable (%s)", item.output, problem)
            remove_stale_partials(item.output)
            try:
                process(item)
                if not item.output.exists():
                    raise RuntimeError(f"processing {item.source} returned without writing {item.output}")
                report.done.append(str(item.source))
            except Exception as err:  # one bad video must not stop the batch (interrupts do)
                if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                    raise  # every later item would fail the same way
                logger.warning("failed on %s: %s", item.source, err)
                report.failed.append(
                    {"source": str(item.source), "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
                )
            report.seconds = time.perf_counter() - start
            report.write(report_path)
    report.seconds = time.perf_counter() - start
    report.write(report_path)
    return report
