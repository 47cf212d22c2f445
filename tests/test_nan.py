"""The NaN guard (spacec.runtime.run.finite): a run whose values turn non-finite stops with a
message naming them and where, writes none of them, keeps its last good checkpoint, and resumes
from it; metrics.jsonl stays strict JSON.

Values are poisoned between steps (after the N-th step of a run, in place), the way a diverging
run leaves them: a BatchNorm buffer, an optimiser's state, α, a recurrent weight. Tiny runs: a
nas_bench_201 supernet with C=2, a darts_cnn network with C=4 and 3 cells, a darts_rnn supernet
with 8 units; one torch thread.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from spacec.cli import main
from spacec.runtime.errors import TrainingError
from spacec.runtime.run.checkpoint import load_checkpoint
from spacec.runtime.run.finite import nonfinite_names
from spacec.runtime.run.rundir import RunDir
from spacec.runtime.search import loop as search_loop
from spacec.runtime.search.config import load_config
from spacec.runtime.search.loop import Search, resume_search, start_search
from spacec.runtime.train import loop as train_loop
from spacec.runtime.train.config import load_train_config
from spacec.runtime.train.loop import resume_training, start_training

NAN = float("nan")


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


def _refuse(constant: str) -> None:
    raise ValueError(f"not strict JSON: {constant}")


def strict_records(run: Path) -> list[dict]:
    """metrics.jsonl read by a strict parser: NaN, Infinity and -Infinity are refused."""
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line, parse_constant=_refuse) for line in lines]


def poison_after(monkeypatch, cls: type, call: int, poison: Callable[[object], None]) -> None:
    """After the `call`-th step of a run of `cls` (Search or Trainer), `poison(loop)`."""
    real = cls._step
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == call:
            with torch.no_grad():
                poison(self)

    monkeypatch.setattr(cls, "_step", step)


def first_named(module: torch.nn.Module, suffix: str, buffers: bool = False) -> tuple[str, torch.Tensor]:
    items = module.named_buffers() if buffers else module.named_parameters()
    return next((name, tensor) for name, tensor in items if name.endswith(suffix))


def checkpoint_of(run: Path, kind: str) -> dict:
    state = load_checkpoint(run / "checkpoint.pt", kind)
    assert nonfinite_names(state) == []
    return state


def search_args(out: Path) -> list[str]:
    return ["search", "nas_bench_201", "--set", "C=2", "--set", "N=1", "--limit", "32",
            "--batch-size", "8", "--epochs", "2", "--seed", "5", "--threads", "1", "--out",
            str(out), "-q"]


def tiny_search(out: Path, **overrides):
    return load_config("quick", {
        "space.name": "nas_bench_201", "space.overrides.C": 2, "space.overrides.N": 1,
        "data.batch_size": 8, "data.limit": 32, "optim.epochs": 2, "run.threads": 1,
        "run.seed": 5, "run.out": str(out), **overrides})


# ---------------------------------------------------------------- image search


def test_a_nan_batchnorm_buffer_stops_the_search_and_it_resumes_from_the_last_good_checkpoint(
        tmp_path, monkeypatch):
    poisoned = {}

    def poison(search: Search) -> None:  # mid epoch 2 (2 steps per epoch)
        name, buffer = first_named(search.model, "running_var", buffers=True)
        buffer.fill_(NAN)
        poisoned["name"] = name

    poison_after(monkeypatch, Search, 3, poison)
    runner = CliRunner()
    result = runner.invoke(main, search_args(tmp_path / "runs"))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (run,) = (tmp_path / "runs").iterdir()
    message = result.output
    assert f"non-finite values at the end of epoch 2: {poisoned['name']}" in message
    assert "The last good checkpoint (after epoch 1) is kept" in " ".join(message.split())
    assert f"spacec search --resume {run}" in " ".join(message.split())
    # Nothing non-finite was written: the checkpoint of epoch 1, α and genotype of epoch 1.
    state = checkpoint_of(run, search_loop.CHECKPOINT_KIND)
    assert (state["epoch"], state["step"]) == (1, 0)
    assert not (run / "alphas" / "epoch_002.json").exists()
    records = strict_records(run)
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["nonfinite"] == [poisoned["name"]] and "genotype" not in records[1]
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and poisoned["name"] in status["error"]

    monkeypatch.undo()
    resumed = runner.invoke(main, ["search", "--resume", str(run), "-q"])
    assert resumed.exit_code == 0, resumed.output
    records = strict_records(run)
    assert [r["epoch"] for r in records] == [1, 2]
    assert not any("nonfinite" in r for r in records)
    assert checkpoint_of(run, search_loop.CHECKPOINT_KIND)["epoch"] == 2
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    if list(run.glob("events.out.tfevents.*")):  # TensorBoard: the stopped epoch 2 is hidden
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run))
        events.Reload()
        losses = events.Scalars("train/loss")
        assert [e.step for e in losses] == [1, 2]
        assert losses[1].value == pytest.approx(records[1]["train_loss"])


def test_a_nan_optimiser_state_refuses_a_mid_epoch_checkpoint(tmp_path, monkeypatch):
    poisoned = {}

    def poison(search: Search) -> None:
        name, weight = first_named(search.model, "weight")
        search.w_optimizer.state[weight]["momentum_buffer"].fill_(NAN)
        poisoned["name"] = name

    poison_after(monkeypatch, Search, 3, poison)  # epoch 2 step 1: then a checkpoint
    with pytest.raises(TrainingError) as stopped:
        start_search(tiny_search(tmp_path / "runs", **{"run.checkpoint_every": 1}))
    message = str(stopped.value)
    assert (f"non-finite values at the checkpoint of epoch 2, step 1: w_optimizer "
            f"momentum_buffer of {poisoned['name']}") in message
    assert "(after epoch 1)" in message
    (run,) = (tmp_path / "runs").iterdir()
    state = checkpoint_of(run, search_loop.CHECKPOINT_KIND)
    assert (state["epoch"], state["step"]) == (1, 0)
    assert [r["epoch"] for r in strict_records(run)] == [1]


@pytest.mark.parametrize("method", [{"method.name": "darts"},
                                    {"method.name": "pc_darts", "method.k": 2},  # β too
                                    {"method.name": "gdas"}], ids=lambda m: m["method.name"])
def test_nan_architecture_tensors_stop_every_method_before_they_are_written(tmp_path, monkeypatch,
                                                                             method):
    def poison(search: Search) -> None:  # the last step of the only epoch
        for tensor in search.model.arch_parameters().values():
            tensor.fill_(NAN)

    poison_after(monkeypatch, Search, 2, poison)
    cfg = tiny_search(tmp_path / "runs", **{"optim.epochs": 1, **method})
    with pytest.raises(TrainingError) as stopped:
        start_search(cfg)
    message = str(stopped.value)
    assert "non-finite values at the end of epoch 1: arch.normal." in message, message
    assert "(the initial state, before epoch 1)" in message
    (run,) = (tmp_path / "runs").iterdir()
    assert RunDir(run).alpha_epochs() == [0]
    state = checkpoint_of(run, search_loop.CHECKPOINT_KIND)
    assert (state["epoch"], state["step"]) == (0, 0)
    monkeypatch.undo()
    result = resume_search(run)
    assert result.epochs == 1 and RunDir(run).alpha_epochs() == [0, 1]
    assert [r["epoch"] for r in strict_records(run)] == [1]


# ---------------------------------------------------------------- text search


def test_a_nan_recurrent_weight_stops_a_text_search_which_resumes(tmp_path, monkeypatch):
    poisoned = {}

    def poison(search: Search) -> None:
        name, weight = first_named(search.model, "weight")
        weight.fill_(NAN)
        poisoned["name"] = name

    poison_after(monkeypatch, Search, 2, poison)
    cfg = load_config("rnn_quick", {
        "space.overrides.ninp": 8, "space.overrides.nhid": 8, "data.batch_size": 4,
        "data.limit": 480, "optim.epochs": 1, "run.threads": 1, "run.checkpoint_every": 1,
        "run.out": str(tmp_path / "runs")})
    with pytest.raises(TrainingError) as stopped:
        start_search(cfg)
    assert (f"non-finite values at the checkpoint of epoch 1, step 2: {poisoned['name']}"
            in str(stopped.value))
    assert "(epoch 1, step 1)" in str(stopped.value)
    (run,) = (tmp_path / "runs").iterdir()
    state = checkpoint_of(run, search_loop.CHECKPOINT_KIND)
    assert (state["epoch"], state["step"]) == (0, 1)
    monkeypatch.undo()
    assert resume_search(run).epochs == 1
    (record,) = strict_records(run)
    assert record["epoch"] == 1 and "nonfinite" not in record


# ---------------------------------------------------------------- image training


def test_a_nan_batchnorm_buffer_stops_training_and_it_resumes(tmp_path, monkeypatch):
    poisoned = {}

    def poison(trainer) -> None:  # epoch 2, step 2 of 3
        name, buffer = first_named(trainer.network, "running_var", buffers=True)
        buffer.fill_(NAN)
        poisoned["name"] = name

    poison_after(monkeypatch, train_loop.Trainer, 5, poison)
    cfg = load_train_config("quick", {
        "space.overrides": {"C": 4, "layers": 3}, "data.limit": 48, "data.batch_size": 16,
        "optim.epochs": 2, "run.threads": 1, "run.out": str(tmp_path / "runs")})
    with pytest.raises(TrainingError) as stopped:
        start_training(cfg, "DARTS_V2")
    message = str(stopped.value)
    assert f"non-finite values at the end of epoch 2: {poisoned['name']}" in message
    (run,) = (tmp_path / "runs").iterdir()
    assert f"`spacec train --resume {run}` continues from it" in message
    state = checkpoint_of(run, train_loop.CHECKPOINT_KIND)
    assert (state["epoch"], state["step"]) == (1, 0)
    assert nonfinite_names(load_checkpoint(run / "best.pt", train_loop.CHECKPOINT_KIND)) == []
    assert strict_records(run)[1]["nonfinite"] == [poisoned["name"]]
    monkeypatch.undo()
    result = resume_training(run)
    assert result.report["epochs"] == 2
    assert [r["epoch"] for r in strict_records(run)] == [1, 2]
    assert not any("nonfinite" in r for r in strict_records(run))


@pytest.mark.parametrize("kind", ["search", "joint", "train"])
def test_a_nan_weight_gradient_stops_the_step_naming_the_parameter(tmp_path, kind):
    """A non-finite weight gradient stops the step before the optimiser moves, naming the
    parameter (clipping by a NaN norm would make every weight NaN, and the next loss would
    be blamed with the advice to lower the learning rate)."""
    poisoned = {}

    def poison_gradient(network: torch.nn.Module) -> None:
        name, weight = first_named(network, "weight")
        weight.register_hook(lambda grad: torch.full_like(grad, NAN))
        poisoned["name"] = name

    if kind in ("search", "joint"):  # DARTS's weight step; SNAS's joint step
        method = {"method.name": "snas"} if kind == "joint" else {}
        search = Search.build(tiny_search(tmp_path / "runs", **method))
        poison_gradient(search.model)
        before = [w.detach().clone() for w in search.model.parameters()]
        batches = next(iter(search.task.batches(0, 0)))
        with pytest.raises(TrainingError) as stopped:
            if kind == "joint":
                search._step(batches, 0.025, "epoch 1, step 1")
            else:
                search.weight_step(batches.train, "epoch 1, step 1")
        after = list(search.model.parameters())  # α too: the joint step moves it after w's clip
    else:
        cfg = load_train_config("quick", {
            "space.overrides": {"C": 4, "layers": 3}, "data.limit": 16, "data.batch_size": 8,
            "optim.epochs": 1, "run.threads": 1, "run.out": str(tmp_path / "runs")})
        original = train_loop.Trainer._step

        def poisoned_step(trainer, *args):
            if not poisoned:
                poison_gradient(trainer.network)
                poisoned["before"] = [p.detach().clone() for p in trainer.network.parameters()]
                poisoned["trainer"] = trainer
            return original(trainer, *args)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(train_loop.Trainer, "_step", poisoned_step)
            with pytest.raises(TrainingError) as stopped:
                start_training(cfg, "DARTS_V2")
        before, after = poisoned["before"], list(poisoned["trainer"].network.parameters())
    message = str(stopped.value)
    assert re.search(r"the weights' gradient is not finite at epoch 1,? step 1 \(", message)
    assert f"({poisoned['name']}); " in message  # that one alone: named before clipping
    assert all(torch.equal(b, a) for b, a in zip(before, after, strict=True))  # no step taken


# ---------------------------------------------------------------- strict JSON


def test_metrics_are_strict_json_whatever_the_figures(tmp_path):
    run = RunDir(tmp_path)
    run.append_metrics({"epoch": 1, "val_loss": NAN, "val_ppl": float("inf"), "train_loss": 1.5})
    run.append_metrics({"epoch": 2, "val_loss": NAN, "nonfinite": ["model.w"]})
    first, second = strict_records(tmp_path)
    assert first == {"epoch": 1, "val_loss": None, "val_ppl": None, "train_loss": 1.5,
                     "nonfinite": ["val_loss", "val_ppl"]}
    assert second["nonfinite"] == ["model.w", "val_loss"]
    run.keep_metrics_through(1)
    assert strict_records(tmp_path) == [first]


def test_a_perplexity_that_overflows_a_finite_loss_does_not_stop_the_run():
    from spacec.runtime.run.finite import _overflowed, nonfinite_names

    record = {"train_loss": 800.0, "train_ppl": math.inf, "val_loss": math.nan,
              "val_ppl": math.nan}
    assert _overflowed("train_ppl", record)
    assert not _overflowed("val_ppl", record)  # its loss is not finite either
    assert not _overflowed("train_loss", record)
    assert nonfinite_names({"best": {"loss": 800.0, "ppl": math.inf}}) == []
    assert nonfinite_names({"best": {"loss": math.inf, "ppl": math.inf}}) == ["best.loss",
                                                                             "best.ppl"]
