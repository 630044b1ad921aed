"""Dataset encode job: every video of a folder or CSV -> one latent file, resumably, one model load."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from framestream.io.dataset import DatasetItem, DatasetReport, DistributedSlot, run_dataset_job
from framestream.io.latents import verify_latent_file
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

    Finished outputs (readable ones: a 0-byte or cut file is redone) are skipped, a
    failing video is recorded in the report and the batch goes on (a full disk stops it); ``options.progress`` (the per-video bar) is best left off here.
    """

    # Only unfinished items reach process(): an existing output there is an unreadable one, to be replaced.
    redo = dataclasses.replace(options, overwrite=True)

    def process(item: DatasetItem) -> None:
        encode_one(EncodeItem(source=item.source, output=item.output), vae, redo)

    return run_dataset_job(items, process, report_path, slot, progress=progress, verify=verify_latent_file)
