"""Resumable dataset job: listing, sharding, atomic outputs, failure report, kill + resume."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from framestream.io.atomic import atomic_path
from framestream.io.dataset import (
    DistributedSlot,
    distributed_slot,
    list_dataset_items,
    run_dataset_job,
)


def make_inputs(root: Path, names: list[str]) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())


def write_output(item, text: str = "x") -> None:
    with atomic_path(item.output) as tmp:
        tmp.write_text(text)


def test_lists_directory_recursively_and_mirrors_paths(tmp_path):
    make_inputs(tmp_path / "in", ["b.mp4", "a.mov", "sub/c.mkv", "notes.txt"])
    items = list_dataset_items(tmp_path / "in", tmp_path / "out")
    assert [i.source.name for i in items] == ["a.mov", "b.mp4", "c.mkv"]
    assert items[2].output == tmp_path / "out" / "sub" / "c.safetensors"


def test_lists_csv_with_path_column(tmp_path):
    make_inputs(tmp_path, ["v1.mp4", "v2.mp4"])
    (tmp_path / "list.csv").write_text("caption,path\nhello,v2.mp4\nworld,v1.mp4\n")
    items = list_dataset_items(tmp_path / "list.csv", tmp_path / "out")
    assert [i.source.name for i in items] == ["v1.mp4", "v2.mp4"]


def test_listing_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        list_dataset_items(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no videos"):
        list_dataset_items(tmp_path / "empty", tmp_path / "out")


def test_torchrun_environment_and_sharding(tmp_path):
    slot = distributed_slot({"RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "1"})
    assert slot == DistributedSlot(rank=1, world_size=3, local_rank=1)
    with pytest.raises(ValueError):
        distributed_slot({"RANK": "3", "WORLD_SIZE": "3"})
    make_inputs(tmp_path / "in", [f"{i}.mp4" for i in range(7)])
    items = list_dataset_items(tmp_path / "in", tmp_path / "out")
    seen = []
    for rank in range(3):
        report = run_dataset_job(
            items,
            write_output,
            tmp_path / f"report{rank}.json",
            DistributedSlot(rank=rank, world_size=3),
            progress=False,
        )
        seen += report.done
    assert sorted(seen) == sorted(str(i.source) for i in items)  # each exactly once


def test_failures_are_reported_and_do_not_stop_the_batch(tmp_path):
    make_inputs(tmp_path / "in", ["a.mp4", "bad.mp4", "c.mp4", "forgetful.mp4"])
    items = list_dataset_items(tmp_path / "in", tmp_path / "out")

    def process(item):
        if "forgetful" in item.source.name:
            return
        with atomic_path(item.output) as tmp:
            tmp.write_text("half")
            if "bad" in item.source.name:
                raise RuntimeError("unreadable video")
            tmp.write_text(item.source.read_text())

    report = run_dataset_job(items, process, tmp_path / "report.json", progress=False)
    assert len(report.done) == 2 and len(report.failed) == 2
    assert "unreadable video" in report.failed[0]["error"]
    assert "without writing" in report.failed[1]["error"]
    assert not (tmp_path / "out" / "bad.safetensors").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.safetensors", "c.safetensors"]
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["failed"][0]["source"].endswith("bad.mp4")
    again = run_dataset_job(items, process, tmp_path / "report.json", progress=False)
    assert len(again.skipped) == 2 and again.done == []


def test_killed_job_resumes_without_redoing_finished_outputs(tmp_path):
    make_inputs(tmp_path / "in", [f"{i:02d}.mp4" for i in range(6)])
    log = tmp_path / "calls.log"
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from framestream.io.atomic import atomic_path
        from framestream.io.dataset import list_dataset_items, run_dataset_job
        items = list_dataset_items({str(tmp_path / 'in')!r}, {str(tmp_path / 'out')!r})
        def process(item):
            with open({str(log)!r}, "a") as fh:
                fh.write(item.source.name + "\\n")
            with atomic_path(item.output) as tmp:
                tmp.write_text("partial")
                time.sleep(float(sys.argv[1]))
                tmp.write_text("done " + item.source.name)
        run_dataset_job(items, process, Path({str(tmp_path / 'report.json')!r}), progress=False)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script, "0.4"])
    deadline = time.time() + 60
    while time.time() < deadline and len(list((tmp_path / "out").glob("*.safetensors"))) < 2:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    finished = {p.name for p in (tmp_path / "out").glob("*.safetensors")}
    assert 2 <= len(finished) < 6
    subprocess.run([sys.executable, "-c", script, "0"], check=True)
    outputs = sorted((tmp_path / "out").glob("*.safetensors"))
    assert len(outputs) == 6
    assert all(p.read_text() == "done " + p.with_suffix(".mp4").name for p in outputs)
    calls = log.read_text().split()
    # Finished outputs were not produced again; only the interrupted one ran twice.
    assert all(calls.count(name.replace(".safetensors", ".mp4")) == 1 for name in finished)
    assert len(calls) <= 7
    assert not list((tmp_path / "out").glob("*.partial"))
