"""The Python API (spacec.search, spacec.train; spacec.runtime.api) and the machine's devices.

Searches and training runs from Python on the embedded sample and on a user's in-memory
datasets; the same configuration as the command line (a preset, a dict, a YAML file, keyword
options), which calls the same functions; silence unless asked; one summary line per epoch
through the real entry point; device ``auto`` and a run resumed on another device.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import spacec
from spacec.arch.genotype import Genotype
from spacec.cli import main
from spacec.runtime import api
from spacec.runtime.errors import ConfigError, DataError
from spacec.runtime.run import checkpoint as checkpoint_module
from spacec.runtime.run.checkpoint import load_checkpoint, save_checkpoint
from spacec.runtime.run.config import RunConfig, presets, read_yaml
from spacec.runtime.run.session import resolve_device
from spacec.runtime.train.loop import CHECKPOINT_KEYS, CHECKPOINT_KIND

TINY = {"params": {"C": 2, "N": 1}, "limit": 16, "batch_size": 8, "epochs": 1, "threads": 1}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "runs"
    return spacec.search("nas_bench_201", out=out, **TINY)


def images(count: int, seed: int, size: int = 32) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(count, 3, size, size, generator=generator),
                         torch.randint(3, (count,), generator=generator))


# ---------------------------------------------------------------- the API


def test_import_spacec_stays_torch_free():
    done = subprocess.run([sys.executable, "-c", (
        "import sys, spacec\n"
        "spacec.load('darts_cnn')\n"
        "assert 'torch' not in sys.modules, 'import spacec imported torch'\n"
        "assert callable(spacec.search) and 'torch' in sys.modules\n")],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_a_search_returns_what_it_found(found):
    assert isinstance(found, spacec.SearchRun)
    run = found.run_dir
    assert found.genotype == Genotype.from_json((run / "genotype.json").read_text())
    assert [record["epoch"] for record in found.metrics] == [1]
    assert 0 <= found.metrics[0]["val_acc"] <= 1
    assert isinstance(found.model, nn.Module) and set(found.model.arch_parameters()) == {"normal"}
    assert found.alphas()["normal"] == found.model.arch_values()["normal"]
    assert found.config.space.overrides == {"C": 2, "N": 1}
    assert found.effective[0] == "spacec search: the effective configuration"
    assert (run / "config.yaml").read_text().startswith(f"# {found.effective[0]}\n")


def test_training_a_search_run_from_python(found, tmp_path):
    trained = spacec.train(genotype=found, out=tmp_path / "runs", limit=16, batch_size=8,
                           epochs=1, threads=1)
    assert isinstance(trained, spacec.TrainRun) and trained.genotype == found.genotype
    assert trained.report["space"] == "nas_bench_201" and 0 <= trained.report["test_acc"] <= 1
    # A shipped space: the quick preset's training sizes win over the search's, and say so.
    assert trained.config.space.overrides == {}
    assert any("had C=2, N=1; preset quick sizes this shipped space for training instead "
               "(--set C=2 --set N=1 keeps the run's)" in line for line in trained.effective)
    assert not trained.model.training
    kept = load_checkpoint(trained.run_dir / "best.pt", CHECKPOINT_KIND, CHECKPOINT_KEYS)
    for name, value in trained.model.state_dict().items():
        assert torch.equal(value, kept["model"][name]), name
    assert trained.model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_your_own_datasets_in_memory(tmp_path):
    common = {"params": {"C": 2, "N": 1, "classes": 3}, "epochs": 1, "threads": 1,
              "out": tmp_path / "runs"}
    found = spacec.search("nas_bench_201", data=(images(16, 0), images(8, 1)), batch_size=8,
                          **common)
    assert ("memory (your own datasets); 16 train w, 8 train α (your val dataset; "
            "data.train_portion 0.5 unused); classes unknown; 32x32 as stored") in \
        "\n".join(found.effective)
    loaders = [DataLoader(images(count, seed), batch_size=4) for count, seed in
               ((16, 2), (8, 3), (8, 4))]
    trained = spacec.train("nas_bench_201", found.genotype, data=loaders, **common)
    assert trained.config.data.batch_size == 4  # the DataLoaders' own
    assert trained.config.data.name == "memory"
    assert {"best_val_acc", "test_acc"} <= set(trained.report)
    assert trained.model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_your_own_datasets_must_fit_the_space(tmp_path):
    with pytest.raises(DataError, match="your datasets yield 16x16 images, but space "
                                        "nas_bench_201 takes 32x32 inputs"):
        spacec.search("nas_bench_201", data=(images(8, 0, 16), images(8, 1, 16)),
                      out=tmp_path, **TINY)
    named = images(8, 0)
    named.classes = ["a", "b"]
    with pytest.raises(DataError, match="have 2 classes \\(a, b\\), but space nas_bench_201 "
                                        "declares 10"):
        spacec.search("nas_bench_201", data=named, out=tmp_path, **TINY)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="data: expected a dataset name"):
        spacec.search("nas_bench_201", data=3, out=tmp_path)


def labelled(labels: list[int], dtype: torch.dtype = torch.long) -> TensorDataset:
    return TensorDataset(torch.zeros(len(labels), 3, 32, 32), torch.tensor(labels, dtype=dtype))


class OneByOne(torch.utils.data.Dataset):
    """A dataset without a label tensor: its labels are read sample by sample."""

    def __init__(self, labels: list[int]):
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return torch.zeros(3, 32, 32), self.labels[index]


@pytest.mark.parametrize(("data", "message"), [
    ((labelled([0, 1, 2, 0, 1, 5]), labelled([0, 1])),
     "your training dataset: the label at index 5 is 5, but space nas_bench_201 has 3 classes "
     "(labels 0 to 2)"),
    ((labelled([0, 1]), labelled([0, -1, 2])), "your validation dataset: the label at index 1 "
                                               "is -1"),
    ((torch.utils.data.Subset(labelled([0, 1, 2, 3]), [1, 3]), labelled([0, 1])),
     "your training dataset: the label at index 1 is 3"),
    ((OneByOne([0, 1, 2, 0, 9]), labelled([0, 1])), "the label at index 4 is 9"),
    ((labelled([0, 1], torch.float32), labelled([0, 1])),
     "your training dataset: its labels are torch.float32 of shape (2,); a label is a class "
     "index"),
])
def test_your_own_labels_must_be_classes_of_the_space(data, message, tmp_path):
    message = re.escape(message)
    with pytest.raises(DataError, match=message):
        spacec.search("nas_bench_201", data=data, out=tmp_path,
                      **{**TINY, "params": {**TINY["params"], "classes": 3}})
    with pytest.raises(DataError, match=message):
        spacec.train("nas_bench_201", _derived_genotype(spacec.load("nas_bench_201")), data=data,
                     out=tmp_path,
                     **{**TINY, "params": {**TINY["params"], "classes": 3}})
    assert not any(tmp_path.iterdir())  # torch's IndexError came mid-run, in a failed run


def test_the_same_configuration_as_the_command_line(tmp_path):
    settings = {"optim": {"epochs": 3}, "data": {"limit": 16, "batch_size": 8}}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(settings))
    from_dict = api.search_config("nas_bench_201", config=settings, params={"C": 4})
    from_file = api.search_config("nas_bench_201", config=path, params={"C": 4})
    assert from_dict == from_file
    assert from_dict.optim.epochs == 3 and from_dict.space.overrides == {"C": 4}
    keyword = api.search_config("nas_bench_201", config=settings, epochs=5,
                                overrides={"optim.lr": 0.05})
    assert (keyword.optim.epochs, keyword.optim.lr) == (5, 0.05)
    with pytest.raises(ConfigError, match="unknown option\\(s\\) epoch; valid: data, "):
        api.search_config("nas_bench_201", epoch=2)
    with pytest.raises(ConfigError, match="unknown option\\(s\\) order"):
        api.train_config("nas_bench_201", order=2)


def test_the_command_line_calls_the_api(tmp_path, monkeypatch):
    calls = []
    real = api.search

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "search", spy)
    result = CliRunner().invoke(main, ["search", "nas_bench_201", "--set", "C=2", "--set", "N=1",
                                       "--limit", "16", "--batch-size", "8", "--epochs", "1",
                                       "--threads", "1", "--out", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    (kwargs,) = calls
    assert kwargs["params"] == {"C": 2, "N": 1} and kwargs["epochs"] == 1
    assert kwargs["verbose"] and not kwargs["progress"]


def test_nothing_is_printed_unless_asked(tmp_path):
    script = ("import spacec\n"
              f"spacec.search('nas_bench_201', out={str(tmp_path)!r}, params={{'C': 2, 'N': 1}},"
              " limit=16, batch_size=8, epochs=1)\n")
    quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=600, env=ENV)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "" and quiet.stderr == ""
    shown = subprocess.run([sys.executable, "-c", script.replace("epochs=1", "epochs=1, "
                                                                 "verbose=True")],
                           capture_output=True, text=True, timeout=600, env=ENV)
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.startswith("spacec search: the effective configuration\n")
    assert "\nepoch 1/1: train loss " in shown.stderr


# ---------------------------------------------------------------- per-epoch lines


def test_the_command_prints_one_line_per_epoch(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "spacec", "search", "nas_bench_201", "--set", "C=2", "--set",
         "N=1", "--limit", "16", "--batch-size", "8", "--epochs", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=ENV)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("space nas_bench_201\n")
    lines = done.stderr.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    for line in epochs:
        assert "train loss " in line and "| val loss " in line and " acc " in line
        assert "| lr " in line and ", α lr " in line and line.endswith(" s")
    assert lines[lines.index(epochs[0]) + 1] == "  genotype:"  # the first epoch's genotype
    record = json.loads((next(tmp_path.iterdir()) / "metrics.jsonl").read_text().splitlines()[0])
    assert f"train loss {record['train_loss']:.4g} acc {100 * record['train_acc']:.1f}%" \
        in epochs[0]


def test_training_prints_one_line_per_epoch(tmp_path):
    result = CliRunner().invoke(main, ["train", "nas_bench_201", "--genotype",
                                       _nb201_genotype(tmp_path),
                                       "--set", "C=2", "--limit", "16", "--batch-size", "8",
                                       "--epochs", "2", "--threads", "1", "--out",
                                       str(tmp_path / "runs"), "-q"])
    assert result.exit_code == 0, result.output
    epochs = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2 and "val loss" in epochs[0] and "best so far" in epochs[0]


def _nb201_genotype(tmp_path: Path) -> str:
    cell = {"edges": [["nor_conv_3x3", "x", "n0"], ["skip_connect", "x", "n1"],
                      ["nor_conv_1x1", "n0", "n1"], ["avg_pool_3x3", "x", "n2"],
                      ["none", "n0", "n2"], ["nor_conv_3x3", "n1", "n2"]],
            "output": ["n2"], "reduce": "node"}
    path = tmp_path / "nb201.json"
    path.write_text(json.dumps({"space": "nas_bench_201", "cells": {"normal": cell}}))
    return str(path)


# ---------------------------------------------------------------- devices and threads


def test_device_auto_is_cuda_when_available(monkeypatch):
    assert RunConfig().device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available \\(use --device auto or cpu\\)"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="MPS is not available"):
        resolve_device("mps")


def test_presets_choose_the_device_and_leave_threads_to_torch():
    for prefix in ("search_", "train_", "select_"):
        for path in presets(prefix).values():
            run = (read_yaml(path) or {}).get("run") or {}
            assert "threads" not in run, f"{path.name} pins threads"
            assert run.get("device", "auto") == "auto", f"{path.name}: device {run['device']}"


def test_the_run_directory_records_the_device(found):
    status = json.loads((found.run_dir / "status.json").read_text())
    assert status["device"] == "cpu" and status["status"] == "finished"
    assert "  device   cpu (auto: no CUDA device); 1 CPU thread (run.threads)" in found.effective


def test_the_device_line_names_the_speed_switches_that_are_not_defaults():
    from spacec.runtime.configure import device_line

    cpu = torch.device("cpu")
    assert device_line(RunConfig(threads=1), cpu).endswith("(run.threads)")
    line = device_line(RunConfig(precision="bf16", channels_last=False, compile=True), cpu)
    assert line.endswith("; bf16 autocast (run.precision); NCHW (run.channels_last: false); "
                         "torch.compile (run.compile)")
    line = device_line(RunConfig(compile=True, compile_mode="reduce-overhead"), cpu)
    assert line.endswith("; torch.compile (run.compile, mode reduce-overhead)")


def test_a_resumed_run_shows_the_configuration_it_started_with(tmp_path, capsys):
    """A resumed run printed where it went on and its device line only: now also the effective
    configuration its config.yaml recorded when it started."""
    common = {**TINY, "limit": 32, "epochs": 2, "checkpoint_every": 1}

    class Killed(Exception):
        pass

    def kill(step: int) -> None:
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        spacec.search("nas_bench_201", out=tmp_path, on_step=kill, **common)
    (run,) = tmp_path.iterdir()
    capsys.readouterr()
    spacec.search(resume=run, verbose=True)
    shown = capsys.readouterr().err
    recorded = [line[2:] for line in (run / "config.yaml").read_text().splitlines()
                if line.startswith("# ")]
    assert recorded[0] == "spacec search: the effective configuration"
    assert "as it started (config.yaml):\n" + "\n".join(recorded) in shown


def test_a_run_from_another_device_resumes_here(tmp_path, monkeypatch):
    """A run started on a GPU (its configuration says cuda, its checkpoint holds CUDA generator
    states) resumes on the CPU with --device cpu, tensors mapped to the CPU, and ends as an
    uninterrupted CPU run does."""
    common = {**TINY, "limit": 32, "epochs": 2, "checkpoint_every": 1}  # 2 steps an epoch
    whole = spacec.search("nas_bench_201", out=tmp_path / "whole", **common)

    class Killed(Exception):
        pass

    def kill(step: int) -> None:
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        spacec.search("nas_bench_201", out=tmp_path / "cut", on_step=kill, **common)
    (run,) = (tmp_path / "cut").iterdir()
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["run"]["device"] = "cuda"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    state = load_checkpoint(run / "checkpoint.pt", "search")
    state["config"]["run"]["device"] = "cuda"
    state["rng"]["cuda"] = [torch.get_rng_state()]  # as a GPU's generator state
    save_checkpoint(run / "checkpoint.pt", {k: v for k, v in state.items() if k != "format"})

    with pytest.raises(ConfigError, match="CUDA is not available"):
        spacec.search(resume=run)
    locations = []
    real_load = torch.load

    def load(*args, **kwargs):
        locations.append(kwargs.get("map_location"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "load", load)
    resumed = spacec.search(resume=run, device="cpu")
    assert locations == ["cpu"]
    assert resumed.alphas() == whole.alphas() and resumed.genotype == whole.genotype
    assert json.loads((run / "status.json").read_text())["device"] == "cpu"


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path):
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## From Python: searches and training runs"):]
    start = section.index("```python\n") + len("```python\n")
    code = section[start:section.index("\n```", start)]
    assert "spacec.search(" in code and "spacec.train(" in code
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900, env=ENV)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""  # nothing printed unless asked
    kinds = sorted(path.name.split("-")[0] for path in (tmp_path / "runs").iterdir())
    assert kinds == ["nas_bench_201", "nas_bench_201", "train"]


def test_a_search_runs_alphas_of_an_epoch_it_did_not_save_name_the_saved_ones(tmp_path):
    from spacec.arch.derive import DerivationError

    found = spacec.search("nas_bench_201", out=tmp_path / "runs", **TINY)
    assert found.alphas() == found.alphas(1)
    for epoch in (5, -1, "x"):
        with pytest.raises(DerivationError, match="saved epochs: 0, 1"):
            found.alphas(epoch)


def test_the_errors_a_script_catches_are_spacecs_names():
    assert issubclass(spacec.ConfigError, spacec.ReportedError)
    assert issubclass(spacec.GenotypeError, spacec.ReportedError)
    with pytest.raises(spacec.ConfigError, match="epochs must be >= 1"):
        spacec.search("nas_bench_201", epochs=0)
    with pytest.raises(spacec.ReportedError):
        spacec.load("no_such_space")


# ---------------------------------------------------------------- the compiled space


def test_a_compiled_spaces_networks_check_their_keywords_as_set_does():
    space = spacec.load("nas_bench_201", C=2, N=1)
    with pytest.raises(spacec.SpaceError, match="'channels' must be positive, got 0"):
        space.supernet(C=0)
    with pytest.raises(spacec.SpaceError, match="--set C: expected a number"):
        space.discrete_network(_derived_genotype(space), C="4")
    with pytest.raises(spacec.SpaceError) as refused:
        space.supernet(foo=1)
    assert "supernet(): foo: no such parameter or option" in str(refused.value)
    assert "known parameters and options: C, N, classes, relaxation" in str(refused.value)
    with pytest.raises(spacec.SpaceError, match="discrete_network\\(\\): Cc: no such parameter "
                                                "or option\nhint: did you mean 'C'\\?"):
        space.discrete_network(_derived_genotype(space), Cc=4)
    # The space's parameters compile the space again, on top of the ones it was loaded with.
    assert _weights(space.supernet(C=4)) > _weights(space.supernet())
    derived = space.discrete_network(_derived_genotype(space), C=4, auxiliary=False)
    assert _weights(derived) > _weights(space.discrete_network(_derived_genotype(space)))


def test_a_language_models_dropouts_are_its_options():
    space = spacec.load("darts_rnn", ntoken=50, ninp=8, nhid=8)
    assert space.supernet(dropout=0.1).dropout == 0.1
    with pytest.raises(spacec.SpaceError, match="hint: known parameters and options: dropout, "
                                                "dropoute, dropouth, dropouti, dropoutx, nhid"):
        space.discrete_network("DARTS_V2", tied=False)


def _derived_genotype(space):
    return space.supernet().genotype()


def _weights(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


@pytest.mark.parametrize("function", ["search", "train", "search_config", "train_config"])
@pytest.mark.parametrize(("arguments", "message"), [
    ({"params": [("C", 4)]}, "params must be a dict of the space's parameters"),
    ({"overrides": ["optim.lr=0.1"]}, "overrides must be a dict of dotted configuration keys"),
    ({"space": 3}, "space must be a shipped space's name or a .space path, got int 3"),
    ({"config": 5}, "config must be a preset's name, a YAML file or a dict, got int 5"),
])
def test_arguments_of_the_wrong_kind_are_named(function, arguments, message, tmp_path):
    call = getattr(api, function)
    arguments = dict(arguments)
    space = arguments.pop("space", "nas_bench_201")
    with pytest.raises(TypeError, match=re.escape(f"{function}(): {message}")):
        call(space, **arguments, **({"out": tmp_path} if "config" not in function else {}))
    assert not any(tmp_path.iterdir())


def test_arguments_of_the_wrong_kind_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(TypeError, match=re.escape("load(): name_or_path must be a shipped "
                                                  "space's name or a .space path, got int 3")):
        spacec.load(3)
    with pytest.raises(TypeError, match="search\\(\\): on_step must be a function"):
        spacec.search("nas_bench_201", out=tmp_path, on_step=5, **TINY)
    with pytest.raises(TypeError, match="search\\(\\): resume must be a run directory"):
        spacec.search(resume=5)
    with pytest.raises(TypeError, match="train\\(\\): genotype must be a preset's name, .*got "
                                        "int 5"):
        spacec.train("nas_bench_201", 5, out=tmp_path)
    assert not any(tmp_path.iterdir())  # the search given on_step=5 left a failed run
