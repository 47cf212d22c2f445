"""The search loop, its run directory, resumption and the `search` / `derive` commands.

Runs are tiny (nas_bench_201 with C=2 and one cell per stage, 32-48 sample images, batches of 8,
one torch thread); one darts_cnn run (C=4) goes through the command line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from spacec.arch.derive import DerivationError
from spacec.arch.genotype import Genotype
from spacec.cli import main
from spacec.runtime.domains import LossOutput
from spacec.runtime.domains.image.search import ImageSearchTask as ImageTask
from spacec.runtime.errors import CheckpointError, ConfigError, DataError, TrainingError
from spacec.runtime.run.checkpoint import load_checkpoint
from spacec.runtime.run.derivation import derive_from_alphas, derive_from_run
from spacec.runtime.run.rundir import RunDir
from spacec.runtime.run.schedules import cosine_lr
from spacec.runtime.search.config import from_dict, load_config
from spacec.runtime.search.loop import CHECKPOINT_KIND, Search, resume_search, start_search
from spacec.runtime.search.strategy import STRATEGIES

ETA0, ETA_MIN = 0.025, 0.001  # DARTS train_search.py --learning_rate, --learning_rate_min


def tiny(tmp_path: Path, **sections) -> dict:
    """Raw config of a tiny nas_bench_201 search; `sections` update single keys."""
    raw = {
        "space": {"name": "nas_bench_201", "overrides": {"C": 2, "N": 1}},
        "data": {"batch_size": 8, "limit": 32},
        "optim": {"epochs": 2},
        "run": {"out": str(tmp_path / "runs"), "threads": 1, "seed": 5},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return raw


def alphas_of(run_dir: Path, epoch: int) -> dict:
    return json.loads((run_dir / "alphas" / f"epoch_{epoch:03d}.json").read_text())


def metrics_of(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """Runs set torch's thread count (run.threads); give other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


class Killed(Exception):
    """Stands in for the process dying."""


def kill_after(steps: int):
    def on_step(global_step: int) -> None:
        if global_step == steps:
            raise Killed

    return on_step


# ---------------------------------------------------------------- learning rate


def test_cosine_lr_starts_at_eta0_and_follows_the_formula():
    assert cosine_lr(0, 50, ETA0, ETA_MIN) == ETA0
    assert cosine_lr(50, 50, ETA0, ETA_MIN) == pytest.approx(ETA_MIN)
    assert cosine_lr(25, 50, ETA0, ETA_MIN) == pytest.approx((ETA0 + ETA_MIN) / 2)
    for epoch in range(50):
        expected = ETA_MIN + (ETA0 - ETA_MIN) * (1 + math.cos(math.pi * epoch / 50)) / 2
        assert cosine_lr(epoch, 50, ETA0, ETA_MIN) == pytest.approx(expected, rel=1e-12)
        assert cosine_lr(epoch + 1, 50, ETA0, ETA_MIN) < cosine_lr(epoch, 50, ETA0, ETA_MIN)


def test_cosine_lr_agrees_with_torch_cosine_annealing():
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=ETA0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 10, eta_min=ETA_MIN)
    for epoch in range(10):
        assert cosine_lr(epoch, 10, ETA0, ETA_MIN) == pytest.approx(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()


# ---------------------------------------------------------------- data order


def test_image_batches_resume_at_any_step(tmp_path):
    cfg = from_dict(tiny(tmp_path, data={"limit": 48, "train_portion": 0.625}))
    task = ImageTask(cfg.data, STRATEGIES["bilevel"].builder.plan, seed=1,
                     device=torch.device("cpu"))
    assert task.steps_in_epoch(0) == 4  # 30 images: 4 batches; the α split (18) has 3 per pass
    torch.manual_seed(0)
    whole = [(b.train[1], b.val[1]) for b in task.batches(1, 0)]
    torch.manual_seed(0)
    tail = [(b.train[1], b.val[1]) for b in task.batches(1, 2)]
    assert len(whole) == 4 and len(tail) == 2
    for (train_a, val_a), (train_b, val_b) in zip(whole[2:], tail, strict=True):
        assert torch.equal(train_a, train_b) and torch.equal(val_a, val_b)
    other_epoch = [b.train[1] for b in task.batches(2, 0)]
    assert not all(torch.equal(a, b) for (a, _), b in zip(whole, other_epoch, strict=True))


# ---------------------------------------------------------------- runs


def test_a_run_writes_a_complete_run_directory(tmp_path):
    result = start_search(from_dict(tiny(tmp_path)))
    run = result.run_dir
    assert run.parent == tmp_path / "runs" and run.name.startswith("nas_bench_201-")
    # TensorBoard's events too, where it is installed (run.tensorboard: auto).
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith("events.out.")) == [
        "alphas", "checkpoint.pt", "config.yaml", "genotype.json", "method.json", "metrics.jsonl",
        "space.json", "status.json"]
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "finished" and status["device"] == "cpu"
    assert RunDir(run).alpha_epochs() == [0, 1, 2]
    assert set(alphas_of(run, 2)) == {"normal"}
    assert len(alphas_of(run, 2)["normal"]) == 6 and len(alphas_of(run, 2)["normal"][0]) == 5
    records = metrics_of(run)
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "arch_val_loss", "lr",
                "arch_lr", "genotype", "steps"):
        assert key in records[0]
    assert records[0]["lr"] == ETA0 and records[1]["lr"] == pytest.approx((ETA0 + ETA_MIN) / 2)
    assert records[0]["arch_lr"] == 3e-4
    genotype = Genotype.from_dict(json.loads((run / "genotype.json").read_text()))
    assert genotype == result.genotype == Genotype.from_dict(records[-1]["genotype"])
    state = load_checkpoint(run / "checkpoint.pt", CHECKPOINT_KIND)
    assert (state["epoch"], state["step"]) == (2, 0)
    assert alphas_of(run, 2)["normal"] == state["model"]["arch.normal.alpha"].tolist()


def test_the_same_seed_gives_the_same_alphas(tmp_path):
    first = start_search(from_dict(tiny(tmp_path / "a")))
    second = start_search(from_dict(tiny(tmp_path / "b")))
    other = start_search(from_dict(tiny(tmp_path / "c", run={"seed": 6})))
    assert alphas_of(first.run_dir, 2) == alphas_of(second.run_dir, 2)
    assert metrics_of(first.run_dir) == metrics_of(second.run_dir)
    assert first.genotype == second.genotype
    assert alphas_of(first.run_dir, 2) != alphas_of(other.run_dir, 2)


@pytest.mark.parametrize("mode", ["bilevel", "joint"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, mode):
    # 30 w images and 18 α images in batches of 8: the α stream wraps around mid-epoch.
    raw = tiny(tmp_path, data={"limit": 48, "train_portion": 0.625},
               run={"checkpoint_every": 3}, arch={"mode": mode})
    whole = start_search(from_dict(raw))
    steps = 4 if mode == "bilevel" else 6  # per epoch; joint reads train∪val
    checkpointed = (steps // 3 + 1) * 3  # the first mid-epoch checkpoint of epoch 2
    with pytest.raises(Killed):
        start_search(from_dict(raw), on_step=kill_after(checkpointed + 1))
    (killed,) = [p for p in (tmp_path / "runs").iterdir() if p != whole.run_dir]
    state = load_checkpoint(killed / "checkpoint.pt", CHECKPOINT_KIND)
    assert state["epoch"] == 1 and state["step"] > 0  # a mid-epoch checkpoint
    resumed = resume_search(killed)
    assert resumed.run_dir == killed
    assert alphas_of(killed, 2) == alphas_of(whole.run_dir, 2)
    assert metrics_of(killed) == metrics_of(whole.run_dir)
    assert resumed.genotype == whole.genotype


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    result = start_search(from_dict(tiny(tmp_path, optim={"epochs": 1})))
    before = (result.run_dir / "metrics.jsonl").read_text()
    again = resume_search(result.run_dir)
    assert again.genotype == result.genotype and again.epochs == 1
    assert (result.run_dir / "metrics.jsonl").read_text() == before


def test_a_record_written_after_the_last_checkpoint_is_dropped_on_resume(tmp_path, monkeypatch):
    raw = tiny(tmp_path)
    real_save = Search.save

    def die_before_the_last_checkpoint(self, run_dir):
        if self.epoch == 2:
            raise Killed
        real_save(self, run_dir)

    monkeypatch.setattr(Search, "save", die_before_the_last_checkpoint)
    with pytest.raises(Killed):
        start_search(from_dict(raw))
    monkeypatch.setattr(Search, "save", real_save)
    (run,) = (tmp_path / "runs").iterdir()
    assert [r["epoch"] for r in metrics_of(run)] == [1, 2]
    resume_search(run)
    whole = start_search(from_dict(raw))
    assert metrics_of(run) == metrics_of(whole.run_dir)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None])
def test_a_corrupt_or_missing_checkpoint_is_reported_and_nothing_is_overwritten(tmp_path, content):
    run = start_search(from_dict(tiny(tmp_path, optim={"epochs": 1}))).run_dir
    checkpoint = run / "checkpoint.pt"
    if content is None:
        checkpoint.unlink()
    else:
        checkpoint.write_bytes(content)
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=str(checkpoint)):
        resume_search(run)
    result = CliRunner().invoke(main, ["search", "--resume", str(run)])
    assert result.exit_code == 1, result.output
    assert "spacec: error:" in result.output and str(checkpoint) in result.output
    assert "Traceback" not in result.output
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    run = start_search(from_dict(tiny(tmp_path, optim={"epochs": 1}))).run_dir
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("seed: 5", "seed: 6"))
    with pytest.raises(CheckpointError, match="different configuration"):
        resume_search(run)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    calls = {"w": 0}
    real = ImageTask.train_loss

    def poisoned(self, model, batch):
        out = real(self, model, batch)
        calls["w"] += 1
        if calls["w"] == 3:  # epoch 2, step 1
            nan = out.loss * float("nan")
            return LossOutput(nan, {**out.metrics, "loss": nan.item()}, out.weight)
        return out

    monkeypatch.setattr(ImageTask, "train_loss", poisoned)
    with pytest.raises(TrainingError, match=r"training loss \(w step\) is nan at epoch 2 step 1"
                       ) as stopped:
        start_search(from_dict(tiny(tmp_path)))
    (run,) = (tmp_path / "runs").iterdir()
    assert (f"The last good checkpoint (after epoch 1) is kept in {run / 'checkpoint.pt'}: "
            f"`spacec search --resume {run}` continues from it") in str(stopped.value)
    state = load_checkpoint(run / "checkpoint.pt", CHECKPOINT_KIND)
    assert (state["epoch"], state["step"]) == (1, 0)
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert [r["epoch"] for r in metrics_of(run)] == [1]


def test_a_nan_loss_exits_1_through_the_cli(tmp_path, monkeypatch):
    def nan_loss(self, call, batch):
        out = LossOutput(torch.tensor(float("nan"), requires_grad=True), {"loss": float("nan")}, 1)
        return out

    monkeypatch.setattr(ImageTask, "train_loss", nan_loss)
    result = CliRunner().invoke(main, cli_args(tmp_path))
    assert result.exit_code == 1
    assert "training loss (w step) is nan at epoch 1 step 1" in result.output


def test_second_order_and_the_ablation_modes_run(tmp_path):
    for arch in ({"order": 2}, {"mode": "coordinate"}):
        result = start_search(from_dict(tiny(tmp_path, arch=arch, optim={"epochs": 1})))
        (record,) = metrics_of(result.run_dir)
        assert math.isfinite(record["arch_val_loss"]) and math.isfinite(record["train_loss"])
        assert alphas_of(result.run_dir, 1) != alphas_of(result.run_dir, 0)


def test_a_space_of_the_wrong_domain_is_a_config_error(tmp_path):
    raw = tiny(tmp_path)
    raw["space"] = {"name": "darts_rnn"}
    with pytest.raises(ConfigError, match="darts_rnn is a sequence space"):
        Search.build(from_dict(raw))


def test_the_space_declares_the_classes_and_the_data_must_agree(tmp_path):
    raw = tiny(tmp_path)
    raw["space"]["overrides"]["classes"] = 5
    with pytest.raises(DataError, match=r"have 10 classes .* but space nas_bench_201 declares "
                                        r"5: if the data is right, run with --set classes=10"):
        Search.build(from_dict(raw))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("space", "expected"), [
    ("darts_cnn", {"C": 8, "layers": 5, "classes": 10}),
    ("nas_bench_201", {"C": 8, "N": 1, "classes": 10}),
])
def test_the_quick_preset_fits_both_image_spaces(space, expected):
    search = Search.build(load_config("quick", {"space.name": space}))
    assert dict(search.compiled.spec.params).items() >= expected.items()
    assert search.task.steps_in_epoch(0) == 8


def test_an_image_folder_resized_when_asked_with_the_spaces_classes(tmp_path):
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for label in ("cat", "dog", "owl"):
        folder = tmp_path / "images" / label
        folder.mkdir(parents=True)
        for index in range(6):
            pixels = torch.randint(256, (20, 24, 3), generator=generator, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(folder / f"{index}.png")
    raw = tiny(tmp_path, data={"name": "imagefolder", "data_dir": str(tmp_path / "images"),
                               "limit": None}, optim={"epochs": 1})
    raw["space"]["overrides"]["classes"] = 3
    with pytest.raises(DataError, match="are 24x20 .*--image-size N"):
        start_search(from_dict(raw))
    raw["data"]["image_size"] = 32  # nas_bench_201's input size
    result = start_search(from_dict(raw))
    space = json.loads((result.run_dir / "space.json").read_text())
    assert space["params"]["classes"] == 3
    assert metrics_of(result.run_dir)[0]["steps"] == 2  # 9 images in batches of 8


# ---------------------------------------------------------------- derive


def test_derive_from_a_run_directory_and_from_alphas_json(tmp_path):
    result = start_search(from_dict(tiny(tmp_path)))
    run = result.run_dir
    genotype, epoch = derive_from_run(run)
    assert epoch == 2 and genotype == result.genotype
    initial, _ = derive_from_run(run, epoch=0)
    assert initial == derive_from_alphas("nas_bench_201", run / "alphas" / "epoch_000.json")
    with pytest.raises(DerivationError, match="no α after epoch 7; saved epochs: 0, 1, 2"):
        derive_from_run(run, epoch=7)


def test_derive_rejects_alphas_of_the_wrong_shape(tmp_path):
    path = tmp_path / "alphas.json"
    path.write_text(json.dumps({"normal": [[0.0] * 8] * 14, "reduce": [[0.0] * 7] * 14}))
    with pytest.raises(DerivationError, match=r"cell 'reduce': .*7 column\(s\).*expected shape 14x8"):
        derive_from_alphas("darts_cnn", path)
    path.write_text(json.dumps({"normal": [[0.0] * 8] * 14}))
    with pytest.raises(DerivationError, match="no α for cell type\\(s\\): reduce"):
        derive_from_alphas("darts_cnn", path)
    path.write_text("{not json")
    with pytest.raises(DerivationError, match="not valid JSON"):
        derive_from_alphas("darts_cnn", path)


# ---------------------------------------------------------------- command line


def cli_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["search", "nas_bench_201", "--set", "C=2", "--set", "N=1", "--limit", "32",
            "--batch-size", "8", "--epochs", "1", "--threads", "1", "--out",
            str(tmp_path / "runs"), "--quiet", *extra]


@pytest.mark.slow
def test_cli_search_and_derive_on_darts_cnn(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, [
        "search", "--set", "C=4", "--set", "layers=3", "--limit", "16", "--batch-size", "8",
        "--epochs", "1", "--threads", "1", "--seed", "3", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    assert run.name.startswith("darts_cnn-")
    assert result.stdout.startswith("space darts_cnn\nnormal:\n")
    assert result.stdout.rstrip().endswith(f"run directory: {run}")
    # stderr: the effective configuration first, then one line per epoch
    assert result.stderr.startswith("spacec search: the effective configuration\n")
    assert "C=4 (--set), layers=3 (--set), classes=10 (space file)" in result.stderr
    assert "\nepoch 1/1: train loss " in result.stderr
    # The run directory holds its pictures: the derived cells and the α heatmaps.
    assert {p.name for p in run.glob("*.png")} == {
        "cell_normal.png", "cell_reduce.png", "alpha_normal.png", "alpha_reduce.png"
    }
    genotype = Genotype.from_json((run / "genotype.json").read_text())
    assert str(genotype) in result.stdout
    derived = runner.invoke(main, ["derive", str(run), "--json"])
    assert derived.exit_code == 0 and Genotype.from_json(derived.output) == genotype
    from_alphas = runner.invoke(main, ["derive", "darts_cnn", "--alphas",
                                       str(run / "alphas" / "epoch_001.json")])
    assert from_alphas.exit_code == 0 and from_alphas.output.strip() == str(genotype)


def test_cli_order_2_and_resume(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, cli_args(tmp_path, "--order", "2", "--seed", "3"))
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    config = (run / "config.yaml").read_text()
    assert "order: 2" in config and "seed: 3" in config
    resumed = runner.invoke(main, ["search", "--resume", str(run), "--device", "cpu", "--quiet"])
    assert resumed.exit_code == 0 and resumed.stdout == result.stdout
    assert (f"{run} finished all its 1 epoch: nothing to continue; its results again, on cpu"
            in resumed.stderr)
    # where it runs now (another machine's threads or products' backend, say): the device line
    assert "\n  device   cpu (asked for); " in resumed.stderr


def test_cli_derive_errors(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "alphas.json"
    bad.write_text(json.dumps({"normal": [[0.0] * 5] * 3}))
    result = runner.invoke(main, ["derive", "nas_bench_201", "--alphas", str(bad)])
    assert result.exit_code == 1
    assert "cell 'normal': α has 3 row(s) but the cell has 6 searched edge(s); expected shape 6x5" \
        in result.output
    missing = runner.invoke(main, ["derive", "nas_bench_201"])
    assert missing.exit_code == 2 and "--alphas FILE" in missing.output
    not_a_run = runner.invoke(main, ["derive", str(tmp_path)])
    assert not_a_run.exit_code == 1 and "not a run directory" in not_a_run.output


def test_cli_missing_dataset_exits_1_without_a_run_directory(tmp_path):
    result = CliRunner().invoke(main, cli_args(
        tmp_path, "--data", "cifar10", "--data-dir", str(tmp_path / "nowhere"),
        "--cfg", "data.download=false"))
    assert result.exit_code == 1
    assert "spacec: error:" in result.output and "missing directory" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cli_resume_refuses_other_options(tmp_path):
    result = CliRunner().invoke(main, ["search", "--resume", str(tmp_path), "--seed", "4"])
    assert result.exit_code == 2 and "drop --seed" in result.output


def test_cli_config_errors_exit_1(tmp_path):
    result = CliRunner().invoke(main, cli_args(tmp_path, "--cfg", "optim.epoch=3"))
    assert result.exit_code == 1 and "unknown key(s) epoch" in result.output
