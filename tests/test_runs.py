"""`spacec runs` and `spacec report` (spacec.runtime.tools.runs), and the run status they show.

A folder with a finished search, a finished training run, a search that failed (a non-finite
loss), one interrupted by Ctrl-C and one whose process was killed outright: the table shows each
with its status, kind, epochs and best validation figure; the report puts them side by side.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import spacec
from spacec.cli import main
from spacec.runtime.domains.image.search import ImageSearchTask
from spacec.runtime.errors import TrainingError
from spacec.runtime.run.rundir import RunDir, run_status
from spacec.runtime.tools.runs import find_runs, summarise

TINY = {"params": {"C": 2, "N": 1}, "limit": 16, "batch_size": 8, "threads": 1}
WAIT = 300  # seconds a killed run may take to write its first checkpoint


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("runs")
    found = spacec.search("nas_bench_201", out=out, epochs=2, **TINY)
    spacec.train(genotype=found, out=out, epochs=1, limit=16, batch_size=8, threads=1)
    yield out
    torch.set_num_threads(threads)


def _only_new(out: Path, before: set[Path]) -> Path:
    (run,) = set(out.iterdir()) - before
    return run


def test_a_finished_search_and_training_run(folder):
    summaries = {summary.kind: summary for summary in map(summarise, find_runs(folder))}
    search, train = summaries["search"], summaries["train"]
    assert (search.status, search.epochs_done, search.epochs) == ("finished", 2, 2)
    assert search.space == "nas_bench_201" and search.method == "darts"
    records = RunDir(search.path).read_metrics()
    assert search.best == max(record["val_acc"] for record in records)
    assert search.genotype.startswith("normal: ")
    assert (train.status, train.method, train.metric) == ("finished", "-", "val acc")


def test_a_failed_run(tmp_path, monkeypatch):
    def nan_loss(self, call, batch):
        out = original(self, call, batch)
        return type(out)(out.loss * float("nan"), {**out.metrics, "loss": float("nan")},
                         out.weight)

    original = ImageSearchTask.loss_and_metrics
    monkeypatch.setattr(ImageSearchTask, "loss_and_metrics", nan_loss)
    with pytest.raises(TrainingError):
        spacec.search("nas_bench_201", out=tmp_path, epochs=1, **TINY)
    (run,) = tmp_path.iterdir()
    assert run_status(RunDir(run)) == "failed"
    assert "TrainingError: the training loss" in json.loads(
        (run / "status.json").read_text())["error"]


def test_an_interrupted_run(tmp_path):
    def interrupt(step: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        spacec.search("nas_bench_201", out=tmp_path, epochs=1, on_step=interrupt, **TINY)
    (run,) = tmp_path.iterdir()
    assert run_status(RunDir(run)) == "interrupted"


def test_a_resumed_run_keeps_when_it_started(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(KeyboardInterrupt), run.tracking("cpu"):
        raise KeyboardInterrupt
    first = run.read_status()
    assert first["status"] == "interrupted" and first["started"] and "resumed" not in first
    run.write_status("interrupted", started="2026-12-01T10:00:00")  # a day before
    with run.tracking("cpu"):
        pass
    resumed = run.read_status()
    assert resumed["status"] == "finished" and resumed["started"] == "2026-12-01T10:00:00"
    assert resumed["resumed"] > resumed["started"]


@pytest.mark.slow
def test_a_killed_run_shows_as_interrupted(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "spacec", "search", "nas_bench_201", "--set", "C=2", "--set",
         "N=1", "--limit", "16", "--batch-size", "8", "--epochs", "1000", "--threads", "1",
         "--out", str(tmp_path), "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + WAIT
        while not list(tmp_path.glob("*/metrics.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.5)
        (run,) = tmp_path.iterdir()
        assert run_status(RunDir(run)) == "running"
        table = CliRunner().invoke(main, ["runs", str(tmp_path)])
        assert "running" in table.stdout
    finally:
        os.kill(process.pid, signal.SIGKILL)  # no chance to write its status
        process.wait(timeout=60)
    assert json.loads((run / "status.json").read_text())["status"] == "running"
    assert run_status(RunDir(run)) == "interrupted"


def test_the_table_and_the_report(folder, tmp_path):
    table = CliRunner().invoke(main, ["runs", str(folder)])
    assert table.exit_code == 0, table.output
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["run", "kind", "space", "method", "epochs", "best", "status",
                              "genotype"]
    assert len(rows) == 2 and all("finished" in row for row in rows)
    assert any(row.startswith("nas_bench_201-") and " 2/2 " in row for row in rows)
    as_json = CliRunner().invoke(main, ["runs", str(folder), "--json"])
    assert {json.loads(line)["kind"] for line in as_json.stdout.splitlines()} == {"search",
                                                                                  "train"}
    runs = sorted(str(path) for path in folder.iterdir())
    report = CliRunner().invoke(main, ["report", *runs, "-o", str(tmp_path / "r.html")])
    assert report.exit_code == 0, report.output
    page = (tmp_path / "r.html").read_text()
    assert all(Path(run).name in page for run in runs)
    assert page.count("data:image/png;base64,") >= 2  # cells (and α) of both runs
    assert "config: optim.epochs" in page  # the settings in which they differ
    empty = CliRunner().invoke(main, ["runs", str(tmp_path / "nowhere")])
    assert empty.exit_code == 1 and "no such folder" in empty.stderr


def test_a_report_goes_on_when_one_runs_pictures_cannot_be_drawn(tmp_path, caplog):
    """A run searched through the API has no pictures; drawn for the report from a space file
    that lost an operation since, its α no longer fits: that run goes without its α pictures, the
    report is written (it stopped for every run)."""
    text = spacec.shipped_spaces()["nas_bench_201"].read_text(encoding="utf-8")
    space = tmp_path / "mine.space"
    space.write_text(text)
    found = spacec.search(str(space), params={"C": 2, "N": 1}, limit=16, batch_size=8,
                          epochs=1, threads=1, out=tmp_path / "runs")
    assert not list(found.run_dir.glob("cell_*.png"))
    lines = text.splitlines()
    (dropped,) = [i for i, line in enumerate(lines) if "avg_pool_3x3" in line and "=" in line]
    space.write_text("\n".join(lines[:dropped] + lines[dropped + 1:]) + "\n")
    with caplog.at_level("WARNING"):
        report = CliRunner().invoke(main, ["report", str(found.run_dir), "-o",
                                           str(tmp_path / "r.html")])
    assert report.exit_code == 0, report.output
    assert "not every picture could be drawn for the report" in caplog.text
    assert found.run_dir.name in (tmp_path / "r.html").read_text()
