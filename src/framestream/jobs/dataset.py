"""Dataset encode job: every video of a folder or CSV -> one latent file, resumably, one model load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from framestream.io.dataset import DatasetItem, DatasetReport, DistributedSlot, run_dataset_job
from framestream.jobs.encode import EncodeItem, EncodeOptions, encode_one

__all__ = ["encode_dataset"]


def encode_dataset(
    items: list[DatasetItem],
    vae: Any,
    options: EncodeOptions,
    report_path: str | Path,
    slot: DistributedSlot | None = None,
    *,
    progress: bool = True,
) -> DatasetReport:
    """Run :func:`encode_one` on this rank's share of ``items`` (see :func:`run_dataset_job`).

    Finished outputs are skipped, a failing video is recorded in the report and the
    batch goes on; ``options.progress`` (the per-video bar) is best left off here.
    """

    def process(item: DatasetItem) -> None:
        encode_one(EncodeItem(source=item.source, output=item.output), vae, options)

    return run_dataset_job(items, process, report_path, slot, progress=progress)
