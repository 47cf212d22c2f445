"""Every shipped space × every search method: a tiny search step, a resume, a valid derivation.

For each pair the method applies to: build the search (tiny sizes, a few sample images, one
thread), checkpoint it, take one step, load the checkpoint back into the same search and take
the step again: every tensor of the model, the optimisers and the relaxation (its random stream
included) must come out identical, which is what an exact resume needs. On nas_bench_201 the
checkpoint goes through a file (as `--resume` reads it, weights only); elsewhere it stays in
memory, which keeps the whole matrix to well under a minute on a quiet machine. The
genotype at the end of the search (random_ws: its ranking) must fit the space's rule. Pairs a
method does not apply to must be refused with a message that says why. The `random` method,
which trains every candidate from scratch, runs end to end on the cheapest space.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from click.testing import CliRunner

import spacec
from spacec.arch.derive import check_genotype
from spacec.arch.methods import describe, method_names
from spacec.cli import main
from spacec.runtime.errors import ConfigError
from spacec.runtime.run.checkpoint import load_checkpoint, save_checkpoint
from spacec.runtime.search.config import load_config
from spacec.runtime.search.loop import CHECKPOINT_KIND, Search

SHIPPED = sorted(spacec.shipped_spaces())
SUPERNET_METHODS = [name for name in method_names() if describe(name).shares_weights]
# darts_cnn keeps a normal and two reduction cells; the other DARTS-like spaces get two
# reduction cells (layers=2), which is cheaper and already covers their stride-2 edges.
TINY = {
    "darts_cnn": {"C": 4, "layers": 3},
    "darts_imagenet": {"C": 2, "layers": 2, "classes": 10},  # the sample's 10 classes
    "example_three_inputs": {"C": 2, "layers": 2},
    "nas_bench_201": {"C": 4, "N": 1},
    "darts_rnn": {"ninp": 8, "nhid": 8},
}
# Method parameters that make one step exercise everything: no warm-up, few random_ws samples,
# K=2 so that C=4 leaves 2 channels to the candidates.
PARAMS = {
    "pc_darts": {"k": 2, "warmup_epochs": 0},  # C=2 cells: 1 channel through the candidates
    "drnas": {"warmup_epochs": 0},
    "random_ws": {"samples": 3, "eval_batches": 1, "top": 2},
}


def overrides(space: str, method: str, tmp_path: Path) -> dict[str, Any]:
    if space == "darts_rnn":  # 6-token segments: the cell unrolls over few steps
        data = {"data.limit": 300, "data.batch_size": 2, "data.eval_batch_size": 2,
                "data.bptt": 6, "data.max_seq_len_delta": 2}
    else:
        data = {"data.limit": 8, "data.batch_size": 4 if space == "darts_cnn" else 2}
    if space == "darts_imagenet":  # the sample's 32x32 images, resized to its 224x224 input
        data["data.image_size"] = 224
    return {"space.name": space, "method.name": method, "optim.epochs": 1,
            "run.out": str(tmp_path), "run.threads": 1, **data,
            **{f"space.overrides.{k}": v for k, v in TINY[space].items()},
            **{f"method.{k}": v for k, v in PARAMS.get(method, {}).items()}}


def preset(space: str) -> str:
    return "rnn_quick" if space == "darts_rnn" else "quick"


def domain(space: str) -> str:
    return spacec.load(space).spec.domain


def same(a: Any, b: Any) -> bool:
    """Equal nested states: tensors bit for bit, everything else by ==."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def step_state(search: Search) -> dict[str, Any]:
    state = search.state_dict()
    return {key: state[key] for key in ("model", "w_optimizer", "architect", "relaxation",
                                        "task", "rng")}


def one_step(search: Search) -> dict[str, Any]:
    batches = next(iter(search.task.batches(0, 0)))
    search.model.set_search_progress(0, search.cfg.optim.epochs)
    search._step(batches, search.learning_rate(0), "matrix step")
    return step_state(search)


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", SUPERNET_METHODS)
@pytest.mark.parametrize("space", SHIPPED)
def test_a_method_steps_resumes_and_derives_on_a_space(space, method, tmp_path):
    cfg_overrides = overrides(space, method, tmp_path)
    if domain(space) not in describe(method).domains:
        with pytest.raises(ConfigError, match=f"'{method}' does not apply to"):
            load_config(preset(space), cfg_overrides)
        return
    search = Search.build(load_config(preset(space), cfg_overrides))
    checkpoint = tmp_path / "checkpoint.pt"
    if space == "nas_bench_201":
        save_checkpoint(checkpoint, search.state_dict())
    else:
        saved = copy.deepcopy(search.state_dict())
    before = {k: v.detach().clone() for k, v in search.model.arch_parameters().items()}
    first = one_step(search)
    moved = search.model.arch_parameters()
    plan = getattr(search.model, "plan", None)  # a recurrent model has one cell, no plan
    in_network = (set(search.model.RULES) if plan is None
                  else {item.name for item in plan if hasattr(item, "inputs")})
    assert all(not torch.equal(before[k], moved[k]) for k in before
               if k.split(".")[0] in in_network), "α did not move"

    state = (load_checkpoint(checkpoint, CHECKPOINT_KIND) if space == "nas_bench_201"
             else saved)
    search.load_state_dict(state, checkpoint)
    assert same(search.model.arch_parameters(), before)
    assert same(one_step(search), first), "the resumed step differs"

    genotype = search.genotype(final=True)
    assert check_genotype(genotype, search.compiled.rules) == []


def test_random_trains_its_samples_with_every_data_run_and_optimiser_setting_given(tmp_path):
    """What a `random` search is told about the data, the run and the weights' optimiser sets
    each sample's training (the rest is the selection protocol's). Only the batch, the limit
    and the epochs were passed on, and those only where they differed from the search preset:
    --epochs 2 (the search preset's) trained the samples for the selection preset's 5, the
    seed, the data folder and the image size were ignored."""
    command = ["search", "nas_bench_201", "--method", "random", "--cfg", "method.samples=1",
               "--set", "C=2", "--set", "N=1", "--batch-size", "4", "--epochs", "2",
               "--limit", "8", "--seed", "3", "--cfg", "data.cutout=0", "--cfg",
               "optim.lr=0.05", "--threads", "1", "-q"]
    result = CliRunner().invoke(main, [*command, "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    sample = yaml.safe_load((run / "0-sample" / "config.yaml").read_text())
    assert sample["data"]["batch_size"] == 4 and sample["data"]["limit"] == 8
    assert sample["data"]["cutout"] == 0 and sample["optim"]["lr"] == 0.05
    assert sample["optim"]["epochs"] == 2 and sample["run"]["seed"] == 3
    assert len((run / "0-sample" / "metrics.jsonl").read_text().splitlines()) == 2
    # No α: the α step's settings are refused, not recorded as if they applied.
    refused = CliRunner().invoke(main, [*command, "--order", "2", "--out",
                                        str(tmp_path / "refused")])
    assert refused.exit_code == 1, refused.output
    assert "has no α: arch.order does not apply" in refused.output
    assert not (tmp_path / "refused").exists()


def test_random_trains_its_samples_from_scratch_and_keeps_the_best(tmp_path):
    selection = tmp_path / "select.yaml"
    selection.write_text(json.dumps({
        "data": {"name": "sample", "limit": 16, "batch_size": 8, "train_portion": 0.5},
        "optim": {"epochs": 1, "auxiliary_weight": 0.0, "drop_path_prob": 0.0},
        "run": {"seed": 0, "threads": 1},
    }))
    result = CliRunner().invoke(main, [
        "search", "nas_bench_201", "--method", "random", "--cfg", "method.samples=2",
        "--cfg", f"method.select={selection}", "--set", "C=2", "--set", "N=1",
        "--out", str(tmp_path / "runs"), "--threads", "1", "-q"])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "selection.json").read_text())
    assert len(summary["candidates"]) == 2
    best = max(summary["candidates"], key=lambda c: c["last_val_acc"])
    assert json.loads((run / "genotype.json").read_text()) == best["genotype"]
    record = json.loads((run / "method.json").read_text())
    assert record["name"] == "random" and record["strengths"] is None
    derived = CliRunner().invoke(main, ["derive", str(run), "--json"])
    assert derived.exit_code == 0, derived.output
    assert json.loads(derived.output) == best["genotype"]
    compiled = spacec.load("nas_bench_201")
    from spacec.arch.genotype import Genotype

    assert check_genotype(Genotype.from_dict(best["genotype"]), compiled.rules) == []
    assert (run / "cell_normal.png").is_file()
    with pytest.raises(ConfigError, match="trains its candidates from scratch"):
        Search.build(load_config("quick", {"method.name": "random", "run.threads": 1}))


def test_a_random_search_records_its_status_and_lists_its_samples(tmp_path):
    """A random search run has a status, `spacec runs` counts its samples and shows the
    winner's accuracy, and --resume says why it cannot continue (it said 'no checkpoint')."""
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, [
        "search", "nas_bench_201", "--method", "random", "--cfg", "method.samples=2",
        "--set", "C=2", "--set", "N=1", "--batch-size", "4", "--epochs", "1", "--limit", "8",
        "--out", str(out), "--threads", "1", "-q"])
    assert result.exit_code == 0, result.output
    (run,) = out.iterdir()
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    # its effective configuration, printed first and kept in config.yaml (it printed none)
    lines = result.stderr.splitlines()
    block = lines[:lines.index(next(x for x in lines if x.startswith("run directory")))]
    assert block[0] == "spacec search: the effective configuration"
    assert "C=2 (--set), N=1 (--set), classes=10 (space file)" in block[2]
    assert ("random: 2 genotypes drawn from the space's rule, each trained from scratch (1 epoch, "
            "batch 4, ") in block[4] and "no auxiliary head (the space has none" in block[4]
    assert "1 CPU thread (run.threads)" in "\n".join(block)
    assert (run / "config.yaml").read_text().startswith("".join(f"# {x}\n" for x in block))
    assert lines[len(block)] == f"run directory {run}"  # the search's, before its samples'
    listed = CliRunner().invoke(main, ["runs", str(out)])
    assert listed.exit_code == 0, listed.output
    row = listed.output.splitlines()[1]
    winner = json.loads((run / "selection.json").read_text())["winner"]["last_val_acc"]
    assert "2/2 samples" in row and f"val acc {100 * winner:.2f}%" in row and "finished" in row
    resumed = CliRunner().invoke(main, ["search", "--resume", str(run)])
    assert resumed.exit_code == 1 and "keeps no checkpoint of the search" in resumed.output
