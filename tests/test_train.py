"""`spacec train` and `spacec select`: configuration, schedules, the loop, run directories,
resuming, the NaN guard and clean errors for bad input (spacec.runtime.train.loop, spacec.runtime.tools.select)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from spacec.arch.genotype import resolve
from spacec.cli import main
from spacec.runtime.domains.image.train import ImageTrainTask
from spacec.runtime.domains.image.train import report_lines as image_report_lines
from spacec.runtime.errors import ConfigError, TrainingError
from spacec.runtime.run.checkpoint import load_checkpoint
from spacec.runtime.run.schedules import drop_path_prob, learning_rate
from spacec.runtime.tools.select import load_select_config, select
from spacec.runtime.train import loop as train_module
from spacec.runtime.train.config import TrainOptimConfig, load_train_config
from spacec.runtime.train.loop import (
    CHECKPOINT_KEYS,
    CHECKPOINT_KIND,
    resume_training,
    start_training,
)

TINY = {
    "space.overrides": {"C": 4, "layers": 3},
    "data.limit": 48,
    "data.batch_size": 16,
    "data.cutout": 8,
    "optim.epochs": 2,
    "run.log_every": 1000,
    # One thread: on a shared 2-core machine two threads spin against other processes and a
    # tiny step takes ten times longer.
    "run.threads": 1,
}


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny_config(tmp_path: Path, **extra):
    return load_train_config("quick", {**TINY, "run.out": str(tmp_path / "runs"), **extra})


# ---------------------------------------------------------------- configuration


def test_paper_preset_is_darts_train_py():
    cfg = load_train_config("paper", {"data.data_dir": "/data"})
    assert cfg.space.name == "darts_cnn"
    assert cfg.space.optional_overrides == {"C": 36, "layers": 20} and not cfg.space.overrides
    assert (cfg.data.name, cfg.data.batch_size, cfg.data.cutout, cfg.data.limit) == (
        "cifar10", 96, 16, None)
    # train.py trains on all 50,000 images: no validation split, the last epoch is kept.
    assert cfg.data.train_portion == 1.0 and cfg.data.report_test
    optim = cfg.optim
    assert (optim.epochs, optim.lr, optim.lr_min, optim.schedule) == (600, 0.025, 0.0, "cosine")
    assert (optim.momentum, optim.weight_decay, optim.grad_clip) == (0.9, 3e-4, 5.0)
    assert (optim.auxiliary_weight, optim.drop_path_prob, optim.label_smoothing) == (0.4, 0.2, 0.0)


def test_imagenet_preset_is_darts_train_imagenet_py():
    cfg = load_train_config("imagenet", {"data.data_dir": "/data"})
    assert cfg.space.name == "darts_imagenet"
    assert cfg.space.optional_overrides == {"C": 48, "layers": 14}
    assert (cfg.data.name, cfg.data.batch_size, cfg.data.cutout) == ("imagenet", 128, 0)
    assert (cfg.data.train_portion, cfg.data.scan) == (1.0, "header")
    optim = cfg.optim
    assert (optim.epochs, optim.lr, optim.schedule, optim.gamma, optim.decay_period) == (
        250, 0.1, "exponential", 0.97, 1)
    assert (optim.momentum, optim.weight_decay, optim.grad_clip) == (0.9, 3e-5, 5.0)
    assert (optim.label_smoothing, optim.auxiliary_weight, optim.drop_path_prob) == (0.1, 0.4, 0.0)


def test_select_presets():
    paper = load_select_config("paper", {"data.data_dir": "/data"})
    assert paper.optim.epochs == 100
    assert paper.space.optional_overrides == {"C": 16, "layers": 8}
    assert (paper.data.batch_size, paper.data.train_portion) == (64, 0.5)
    quick = load_select_config("quick")
    assert quick.data.name == "sample"
    assert not paper.data.report_test and not quick.data.report_test  # never opened


def test_quick_preset_is_the_default_and_uses_the_sample():
    cfg = load_train_config()
    assert cfg.data.name == "sample"
    assert cfg.data.data_dir is None


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="no such preset or file; presets: .*quick"):
        load_train_config("nonexistent")
    with pytest.raises(ConfigError, match="optim.*schedule"):
        load_train_config("quick", {"optim.schedule": "linear"})
    with pytest.raises(ConfigError, match=r"arch.order: .*\(sections: space, data, optim, run\)"):
        load_train_config("quick", {"arch.order": 2})
    with pytest.raises(ConfigError, match="unknown key.*arch"):
        load_train_config(str(_yaml(tmp_path, "arch: {order: 2}\n")))


def _yaml(folder: Path, text: str) -> Path:
    path = folder / "train.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- schedules


def _torch_schedule(scheduler_factory, epochs: int, lr: float) -> list[float]:
    """The learning rate of each epoch when the scheduler is stepped after each epoch."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = scheduler_factory(optimizer)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_cosine_schedule_matches_cosine_annealing_lr():
    cfg = TrainOptimConfig(epochs=10, lr=0.025)
    expected = _torch_schedule(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10), 10,
                               0.025)
    assert [learning_rate(e, cfg) for e in range(10)] == pytest.approx(expected)
    assert learning_rate(0, cfg) == 0.025


def test_exponential_schedule_matches_step_lr():
    cfg = TrainOptimConfig(epochs=6, lr=0.1, schedule="exponential", gamma=0.97, decay_period=2)
    expected = _torch_schedule(
        lambda o: torch.optim.lr_scheduler.StepLR(o, 2, gamma=0.97), 6, 0.1)
    assert [learning_rate(e, cfg) for e in range(6)] == pytest.approx(expected)


def test_drop_path_grows_linearly_from_zero():
    assert [drop_path_prob(e, 4, 0.2) for e in range(4)] == pytest.approx([0, 0.05, 0.1, 0.15])


# ---------------------------------------------------------------- the loop


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("train")
    return start_training(tiny_config(tmp_path), "DARTS_V2")


def test_run_directory(finished_run):
    folder = finished_run.run_dir
    for name in ("config.yaml", "genotype.json", "space.json", "metrics.jsonl", "checkpoint.pt",
                 "best.pt", "report.json", "status.json"):
        assert (folder / name).is_file(), name
    assert resolve(str(folder)) == resolve("DARTS_V2")
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "drop_path_prob",
                    "seconds"):
            assert math.isfinite(record[key]), key
        assert not any(key.startswith("test_") for key in record)  # the test set: only reported
    assert records[0]["lr"] == 0.025
    assert records[0]["drop_path_prob"] == 0.0
    assert records[1]["drop_path_prob"] == pytest.approx(0.1)


def test_report(finished_run, compiled):
    report = json.loads((finished_run.run_dir / "report.json").read_text())
    assert report == finished_run.report
    records = [json.loads(line)
               for line in (finished_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    accuracies = [r["val_acc"] for r in records]
    assert report["split"] == "val"
    assert report["best_val_acc"] == max(accuracies)
    assert report["last_val_acc"] == accuracies[-1]
    assert 0 <= report["test_acc"] <= report["test_acc5"] <= 1  # 10 classes: top-5 too
    network = compiled("darts_cnn", C=4, layers=3).discrete_network("DARTS_V2", auxiliary=True)
    assert report["parameters"] == sum(p.numel() for n, p in network.named_parameters()
                                       if "auxiliary" not in n)
    assert report["multiply_adds"] > 0
    assert report["wall_seconds"] > 0


def test_checkpoints_are_whole(finished_run):
    last = load_checkpoint(finished_run.run_dir / "checkpoint.pt", CHECKPOINT_KIND,
                           CHECKPOINT_KEYS)
    best = load_checkpoint(finished_run.run_dir / "best.pt", CHECKPOINT_KIND, CHECKPOINT_KEYS)
    assert last["epoch"] == 2
    assert best["epoch"] == best["best"]["epoch"]
    assert any(key.startswith("auxiliary_head.") for key in last["model"])


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(folder / "checkpoint.pt", CHECKPOINT_KIND, CHECKPOINT_KEYS)["model"]


def test_resume_continues_exactly(tmp_path, monkeypatch, finished_run):
    """Interrupted mid-epoch 2 (checkpointing every step), then resumed: the same weights."""
    cfg = tiny_config(tmp_path, **{"run.checkpoint_every": 1})
    original = train_module.Trainer._step
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 2, step 2 of 3
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(train_module.Trainer, "_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        start_training(cfg, "DARTS_V2")
    monkeypatch.setattr(train_module.Trainer, "_step", original)
    (folder,) = (tmp_path / "runs").iterdir()
    assert load_checkpoint(folder / "checkpoint.pt", CHECKPOINT_KIND)["step"] == 1
    result = resume_training(folder)
    expected = _weights(finished_run.run_dir)
    resumed = _weights(folder)
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    epochs = [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text()
              .splitlines()]
    assert epochs == [1, 2]
    assert result.report["last_val_acc"] == finished_run.report["last_val_acc"]
    assert result.report["test_acc"] == finished_run.report["test_acc"]


def test_nan_loss_stops_with_checkpoints_intact(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path)
    original = ImageTrainTask._loss
    calls = {"n": 0}

    def poisoned(self, logits, labels):
        calls["n"] += 1
        loss = original(self, logits, labels)
        return loss * float("nan") if calls["n"] > 6 else loss  # 2 losses per step (auxiliary)

    monkeypatch.setattr(ImageTrainTask, "_loss", poisoned)
    with pytest.raises(TrainingError, match="the training loss is nan at epoch 2 step 1"):
        start_training(cfg, "DARTS_V2")
    (folder,) = (tmp_path / "runs").iterdir()
    state = load_checkpoint(folder / "checkpoint.pt", CHECKPOINT_KIND, CHECKPOINT_KEYS)
    assert (state["epoch"], state["step"]) == (1, 0)
    assert (folder / "best.pt").is_file()


def test_label_smoothing_and_no_auxiliary(tmp_path):
    cfg = tiny_config(tmp_path, **{"optim.label_smoothing": 0.1, "optim.auxiliary_weight": 0.0,
                                   "optim.epochs": 1})
    result = start_training(cfg, "DARTS_V1")
    state = load_checkpoint(result.run_dir / "checkpoint.pt", CHECKPOINT_KIND)
    assert not any(key.startswith("auxiliary_head.") for key in state["model"])


def test_the_test_set_never_chooses_the_kept_weights(tmp_path, monkeypatch, finished_run):
    """Corrupt every test label: the epoch and the weights kept are the same, only the reported
    test figures change."""
    import spacec.runtime.domains.image.data as image_data

    original = image_data.SampleCIFAR10.__init__

    def wrong_test_labels(self, root, train=True, **kwargs):
        original(self, root, train=train, **kwargs)
        if not train:
            self.targets = [(label + 1) % 10 for label in self.targets]

    monkeypatch.setattr(image_data.SampleCIFAR10, "__init__", wrong_test_labels)
    corrupted = start_training(tiny_config(tmp_path), "DARTS_V2")
    kept = [load_checkpoint(run.run_dir / "best.pt", CHECKPOINT_KIND, CHECKPOINT_KEYS)
            for run in (finished_run, corrupted)]
    assert kept[0]["best"] == kept[1]["best"] and kept[0]["epoch"] == kept[1]["epoch"]
    for key, value in kept[0]["model"].items():
        assert torch.equal(value, kept[1]["model"][key]), key
    assert corrupted.report["best_epoch"] == finished_run.report["best_epoch"]
    assert corrupted.report["test_acc"] != finished_run.report["test_acc"]


def test_without_a_validation_split_the_last_epoch_is_kept(tmp_path):
    result = start_training(tiny_config(tmp_path, **{"data.train_portion": 1.0}), "DARTS_V2")
    report = result.report
    assert report["best_epoch"] == report["epochs"] == 2
    assert "best_val_acc" not in report and 0 <= report["test_acc"] <= 1
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text()
               .splitlines()]
    assert not any(key.startswith(("val_", "test_")) for record in records for key in record)
    assert any("the last epoch's weights are kept" in line
               for line in image_report_lines(report))


# ---------------------------------------------------------------- selection


def test_select_never_reads_the_test_set(tmp_path, monkeypatch):
    import spacec.runtime.domains.image.data

    def no_test_set(*args, **kwargs):
        raise AssertionError("the selection protocol opened the test set")

    opened = []
    original_open = spacec.runtime.domains.image.data.SampleCIFAR10.__init__

    def training_images_only(self, root, train=True, **kwargs):
        opened.append(train)
        assert train, "the selection protocol opened the test set"
        original_open(self, root, train=train, **kwargs)

    monkeypatch.setattr(spacec.runtime.domains.image.data, "eval_loaders", no_test_set)
    monkeypatch.setattr(spacec.runtime.domains.image.data.SampleCIFAR10, "__init__", training_images_only)
    search_run = tmp_path / "search-a"
    search_run.mkdir()
    (search_run / "genotype.json").write_text(resolve("DARTS_V1").to_json())
    cfg = load_select_config("quick", {**TINY, "optim.epochs": 1, "data.limit": 64,
                                       "run.out": str(tmp_path / "runs")})
    summary = select([str(search_run), "DARTS_V2"], cfg)
    assert opened and all(opened)
    assert summary["criterion"] == "last_val_acc"
    rows = summary["candidates"]
    assert [row["reference"] for row in rows] == [str(search_run), "DARTS_V2"]
    best = max(rows, key=lambda row: row["last_val_acc"])
    assert summary["winner"]["reference"] == best["reference"]
    assert summary["winner"]["space"] == best["space"] == "darts_cnn"
    folder = Path(summary["selection_dir"])
    assert json.loads((folder / "selection.json").read_text()) == summary
    assert resolve(str(folder)).to_dict() == best["genotype"]
    for row in rows:
        metrics = (Path(row["run_dir"]) / "metrics.jsonl").read_text()
        assert "val_acc" in metrics and "test_acc" not in metrics


def test_select_checks_every_genotype_before_training(tmp_path):
    bad = tmp_path / "bad.json"
    data = resolve("DARTS_V2").to_dict()
    data["cells"]["normal"]["edges"][0][0] = "conv_9x9"
    bad.write_text(json.dumps(data))
    cfg = load_select_config("quick", {"run.out": str(tmp_path / "runs")})
    with pytest.raises(Exception, match="unknown op 'conv_9x9'"):
        select(["DARTS_V2", str(bad)], cfg)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- the command line


def _genotype_file(tmp_path: Path, mutate) -> Path:
    data = resolve("DARTS_V2").to_dict()
    mutate(data["cells"]["normal"])
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps(data))
    return path


def _set_op(cell):
    cell["edges"][0][0] = "conv_9x9"


def _drop_edge(cell):
    del cell["edges"][0]


def _far_input(cell):
    cell["edges"][0][1] = "c_k3"


def _later_input(cell):
    cell["edges"][0][1] = "n2"


@pytest.mark.parametrize(("mutate", "message"), [
    (_set_op, "unknown op 'conv_9x9'"),
    (_drop_edge, "node n0 has 1 searched input"),
    (_far_input, "unknown node"),
    (_later_input, "n2"),
])
def test_genotypes_that_do_not_fit_the_space(tmp_path, mutate, message):
    path = _genotype_file(tmp_path, mutate)
    result = CliRunner().invoke(main, ["train", "darts_cnn", "--genotype", str(path), "--out",
                                       str(tmp_path / "runs")])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--genotype", "{not json"], "neither a preset"),
    (["--genotype", "DARTS_V9"], "neither a preset (DARTS_V1, DARTS_V2"),
    (["--genotype", "DARTS_V2", "--config", "fast"], "no such preset or file"),
    (["--genotype", "DARTS_V2", "--data", "cifar10", "--data-dir", "/nonexistent/cifar",
      "--cfg", "data.download=false"], "/nonexistent/cifar"),
])
def test_bad_input_exits_cleanly(tmp_path, args, message):
    result = CliRunner().invoke(main, ["train", "darts_cnn", *args, "--out",
                                       str(tmp_path / "runs")])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_invalid_json_file(tmp_path):
    path = tmp_path / "g.json"
    path.write_text("{not json")
    result = CliRunner().invoke(main, ["train", "darts_cnn", "--genotype", str(path)])
    assert result.exit_code == 1
    assert "not valid JSON" in result.output


def test_cli_train_and_resume(tmp_path):
    runner = CliRunner()
    args = ["train", "darts_cnn", "--genotype", "DARTS_V2", "--out", str(tmp_path / "runs"),
            "--set", "C=4", "--set", "layers=3", "--limit", "32", "--batch-size", "16",
            "--epochs", "1", "--threads", "1", "-q"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "val accuracy: best" in result.output and "test accuracy: " in result.output
    assert "parameters:" in result.output and "multiply-adds:" in result.output
    (folder,) = (tmp_path / "runs").iterdir()
    resumed = runner.invoke(main, ["train", "--resume", str(folder), "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert "finished all its 1 epoch: nothing to continue; its results again" in resumed.output
    assert "resuming" not in resumed.output
    as_search = runner.invoke(main, ["search", "--resume", str(folder)])
    assert as_search.exit_code == 1, as_search.output
    assert f"is a training run: `spacec train --resume {folder}` continues it" in as_search.output
    rejected = runner.invoke(main, ["train", "--resume", str(folder), "--epochs", "3"])
    assert rejected.exit_code == 2
    assert "--epochs" in rejected.output


def test_cli_needs_space_and_genotype():
    result = CliRunner().invoke(main, ["train", "darts_cnn"])
    assert result.exit_code == 2
    assert "--genotype" in result.output


def test_a_selection_run_resumes_on_its_own_split(tmp_path):
    cfg = load_select_config("quick", {**TINY, "optim.epochs": 1, "data.limit": 32,
                                       "run.out": str(tmp_path / "runs")})
    summary = select(["DARTS_V2"], cfg)
    folder = summary["candidates"][0]["run_dir"]
    result = CliRunner().invoke(main, ["train", "--resume", folder])
    assert result.exit_code == 0, result.output
    assert "val accuracy: best" in result.output
    report = json.loads((Path(folder) / "report.json").read_text())
    assert report["split"] == "val" and "last_test_acc" not in report


def test_training_a_recurrent_space_is_refused(tmp_path):
    cfg = replace(tiny_config(tmp_path), space=replace(tiny_config(tmp_path).space,
                                                       name="darts_rnn", overrides={}))
    with pytest.raises(ConfigError, match="sequence space"):
        start_training(cfg, "DARTS_RNN")


def test_cli_select_prints_each_candidates_epochs(tmp_path):
    result = CliRunner().invoke(main, [
        "select", "DARTS_V2", "--set", "C=4", "--set", "layers=3", "--limit", "32",
        "--batch-size", "16", "--epochs", "1", "--threads", "1", "--out", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.stderr.splitlines()
            if line.startswith("epoch ")] == ["epoch 1/1"]
    assert "DARTS_V2" in result.stdout and "<- selected" in result.stdout


def test_a_last_batch_of_one_image_the_auxiliary_head_cannot_normalise_is_refused(tmp_path):
    # quick preset: train_portion 0.8 of 32 images leaves 25 to train on; at batch 8 the last
    # batch holds one image, whose auxiliary head's BatchNorm sees one value per channel.
    out = tmp_path / "runs"

    def train(batch: int, *extra: str):
        return CliRunner().invoke(main, [
            "train", "darts_cnn", "--genotype", "DARTS_V2", "--out", str(out), "--set", "C=4",
            "--set", "layers=3", "--limit", "32", "--batch-size", str(batch), "--epochs", "1",
            "--threads", "1", "-q", *extra])

    result = train(8)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert ("the last training batch of every epoch holds 1 image (25 training images at "
            "batch 8)") in result.output
    assert "BatchNorm auxiliary_head.features.6" in result.output
    assert "(e.g. 7, 9)" in result.output and "optim.auxiliary_weight=0" in result.output
    assert not out.exists()  # refused before the run directory is made
    for batch, extra in ((7, ()), (8, ("--cfg", "data.drop_last=true")),
                         (8, ("--cfg", "optim.auxiliary_weight=0"))):
        fixed = train(batch, *extra)
        assert fixed.exit_code == 0, (batch, extra, fixed.output)


def test_the_smallest_training_batch_counts_the_last_one():
    from types import SimpleNamespace

    from spacec.runtime.domains.image.train import smallest_batch

    def loader(count: int, batch: int, drop_last: bool = False):
        return SimpleNamespace(sampler=SimpleNamespace(indices=range(count)), batch_size=batch,
                               drop_last=drop_last)

    assert smallest_batch(loader(25, 8)) == 1
    assert smallest_batch(loader(24, 8)) == 8
    assert smallest_batch(loader(5, 8)) == 5
    assert smallest_batch(loader(25, 8, drop_last=True)) == 8


def test_the_training_line_says_when_the_space_has_no_auxiliary_head(tmp_path):
    """nas_bench_201 has none: the preset's auxiliary weight is not used, and the effective
    configuration says so (it printed 'auxiliary weight 0.4' beside a warning that it was
    ignored)."""
    from spacec.runtime.configure import train_method

    cfg = tiny_config(tmp_path)
    assert "auxiliary weight 0.4, drop path" in train_method(cfg)
    assert "auxiliary weight 0.4, drop path" in train_method(cfg, 0.4)
    assert ("no auxiliary head (the space has none; auxiliary weight 0.4 unused)"
            in train_method(cfg, 0.0))
    without = replace(cfg, optim=replace(cfg.optim, auxiliary_weight=0.0))
    assert "auxiliary weight 0, drop path" in train_method(without, 0.0)


def test_select_refuses_a_sequence_candidate_by_name(tmp_path):
    run = tmp_path / "darts_rnn-run"
    run.mkdir()
    (run / "genotype.json").write_text(resolve("DARTS_RNN").to_json())
    (run / "space.json").write_text(json.dumps({"name": "darts_rnn", "source": "darts_rnn"}))
    result = CliRunner().invoke(main, ["select", str(run), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "a sequence space (darts_rnn); the selection protocol's presets train image" in \
        result.output
    assert not (tmp_path / "out").exists()


def test_derive_names_a_training_run(tmp_path):
    result = CliRunner().invoke(main, [
        "train", "darts_cnn", "--genotype", "DARTS_V2", "--out", str(tmp_path / "runs"),
        "--set", "C=4", "--set", "layers=3", "--limit", "32", "--batch-size", "16",
        "--epochs", "1", "--threads", "1", "-q"])
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "runs").iterdir()
    derived = CliRunner().invoke(main, ["derive", str(folder)])
    assert derived.exit_code == 1 and "is a training run" in derived.output, derived.output
