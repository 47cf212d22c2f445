"""TensorBoard event files (spacec.runtime.run.events), read back with TensorBoard's own reader:
a search's and a training run's scalars, α histograms, the genotype and the pictures; the switch
(run.tensorboard, --tensorboard/--no-tensorboard); a resumed run shows each epoch once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from spacec.cli import main
from spacec.runtime.configure import search_config
from spacec.runtime.errors import ConfigError
from spacec.runtime.run import events as events_module
from spacec.runtime.run.events import scalar_tag, tensorboard_enabled
from spacec.runtime.search.loop import resume_search, start_search
from spacec.runtime.train.config import load_train_config
from spacec.runtime.train.loop import start_training

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

# Keep every histogram, image and scalar (the reader samples them by default).
EVERYTHING = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


def read_events(run: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run), size_guidance=EVERYTHING)
    accumulator.Reload()
    return accumulator


def records_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def steps(accumulator: EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in accumulator.Scalars(tag)]


class Killed(Exception):
    pass


def test_a_search_writes_its_epochs_alphas_and_pictures(tmp_path):
    result = CliRunner().invoke(main, [
        "search", "nas_bench_201", "--set", "C=2", "--set", "N=1", "--limit", "32",
        "--batch-size", "8", "--epochs", "2", "--threads", "1", "--out", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    records = records_of(run)
    board = read_events(run)
    tags = board.Tags()
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "arch_val_loss", "lr",
                "arch_lr"):
        tag = scalar_tag(key)
        assert steps(board, tag) == [1, 2], tag
        assert [e.value for e in board.Scalars(tag)] == pytest.approx([r[key] for r in records])
    assert {"train/loss", "val/acc", "lr/weights", "lr/alpha"} <= set(tags["scalars"])
    histogram = board.Histograms("alpha/normal")
    assert [e.step for e in histogram] == [0, 1, 2]
    assert histogram[-1].histogram_value.num == 6 * 5  # 6 edges x 5 candidates
    assert set(tags["images"]) >= {"pictures/cell_normal", "pictures/alpha_normal"}
    assert [e.step for e in board.Images("pictures/cell_normal")] == [2]
    assert [e.step for e in board.Tensors("genotype/text_summary")] == [1, 2]  # add_text


def test_a_resumed_search_shows_every_epoch_once(tmp_path):
    cfg = search_config("nas_bench_201", params={"C": 2, "N": 1}, limit=32, batch_size=8,
                        epochs=2, threads=1, seed=5, out=str(tmp_path), checkpoint_every=1)

    def kill(global_step: int) -> None:
        if global_step == 3:  # epoch 2, step 1: its checkpoint is written, epoch 2 is not
            raise Killed

    with pytest.raises(Killed):
        start_search(cfg, on_step=kill)
    (run,) = tmp_path.iterdir()
    resume_search(run)
    board = read_events(run)
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # one file per process that wrote
    assert steps(board, "train/loss") == [1, 2]
    assert [e.step for e in board.Histograms("alpha/normal")] == [0, 1, 2]


def test_a_training_run_writes_its_epochs(tmp_path):
    cfg = load_train_config("quick", {
        "space.overrides": {"C": 4, "layers": 3}, "data.limit": 32, "data.batch_size": 16,
        "optim.epochs": 2, "run.threads": 1, "run.out": str(tmp_path)})
    run = start_training(cfg, "DARTS_V2").run_dir
    board = read_events(run)
    records = records_of(run)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "drop_path_prob"):
        assert [e.value for e in board.Scalars(scalar_tag(key))] == \
            pytest.approx([r[key] for r in records]), key
        assert steps(board, scalar_tag(key)) == [1, 2]
    assert "alpha/normal" not in board.Tags()["histograms"]


def test_the_switch(tmp_path, monkeypatch):
    assert search_config("nas_bench_201").run.tensorboard == "auto"
    assert search_config("nas_bench_201", tensorboard=False).run.tensorboard is False
    with pytest.raises(ConfigError, match="tensorboard must be true, false or auto"):
        search_config("nas_bench_201", overrides={"run.tensorboard": "sometimes"})
    with pytest.raises(ConfigError, match="run.tensorboard: expected true, false or a name"):
        search_config("nas_bench_201", overrides={"run.tensorboard": 3})
    cfg = search_config("nas_bench_201", params={"C": 2, "N": 1}, limit=16, batch_size=8,
                        epochs=1, threads=1, out=str(tmp_path / "off"), tensorboard=False)
    run = start_search(cfg).run_dir
    assert not list(run.glob("events.out.*"))
    # Asked for where tensorboard is missing: refused before a run directory is made.
    monkeypatch.setattr(events_module, "tensorboard_installed", lambda: False)
    assert tensorboard_enabled("auto") is False
    result = CliRunner().invoke(main, [
        "search", "nas_bench_201", "--set", "C=2", "--set", "N=1", "--limit", "16",
        "--epochs", "1", "--out", str(tmp_path / "missing"), "--tensorboard"])
    assert result.exit_code == 1 and "tensorboard package is not installed" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "missing").exists()
