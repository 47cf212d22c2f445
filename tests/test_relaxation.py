"""The relaxation seam: a relaxation defined here, in the test file alone, runs on every space.

`HardArgmax` keeps DARTS' edges but gives each edge a straight-through one-hot of argmax(α)
(forward: only the strongest candidate counts; backward: softmax's gradient reaches every α),
and derivation ranks candidates by that one-hot (a pure strength function registered beside it).
It is registered with a method that uses it; a search step and a derivation then run through
the package's own loop on every shipped space without any file of the package knowing of it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import spacec
from spacec.arch.derive import ALPHA, STRENGTHS, CellRule, alpha_rows, check_genotype, derive
from spacec.arch.genotype import Genotype
from spacec.arch.methods import METHOD_INFO, MethodInfo, MethodParams, register_info
from spacec.runtime.relax import RELAXATIONS, Relaxation, register_relaxation
from spacec.runtime.search.config import load_config
from spacec.runtime.search.loop import Search
from spacec.runtime.search.methods import METHODS, Method, register_method

SHIPPED = sorted(spacec.shipped_spaces())
# Tiny sizes of every shipped space, and the data each searches on.
TINY = {
    "darts_cnn": {"C": 4, "layers": 3},
    "darts_imagenet": {"C": 4, "layers": 3, "classes": 10},  # the sample's 10 classes
    "example_three_inputs": {"C": 4, "layers": 3},
    "nas_bench_201": {"C": 4, "N": 1},
    "darts_rnn": {"ninp": 8, "nhid": 8},
}


def one_hot_argmax(tensors: Mapping[str, object], rule: CellRule) -> list[list[float]]:
    """A row's strongest candidate weighs 1, the others 0 (the earlier column on ties)."""
    rows = alpha_rows(tensors[ALPHA], rule)
    return [[1.0 if column == row.index(max(row)) else 0.0 for column in range(len(row))]
            for row in rows]


class HardArgmax(Relaxation):
    strengths = "test_one_hot_argmax"

    def cell_weights(self, tensors: Mapping[str, Tensor], rule: CellRule) -> Tensor:
        soft = F.softmax(tensors[ALPHA], dim=-1)
        hard = F.one_hot(soft.argmax(dim=-1), soft.shape[-1]).to(soft.dtype)
        return hard - soft.detach() + soft


@dataclass(frozen=True)
class HardArgmaxParams(MethodParams):
    name: str = "test_hard"


@pytest.fixture(scope="module")
def toy_method():
    STRENGTHS.register("test_one_hot_argmax")(one_hot_argmax)
    register_relaxation("test_hard_argmax")(HardArgmax)
    register_info(MethodInfo("test_hard", "a test", "one-hot argmax(α)", HardArgmaxParams,
                             strengths="test_one_hot_argmax"))
    register_method(Method("test_hard", "test_hard_argmax"))
    yield "test_hard"
    METHODS.unregister("test_hard")
    METHOD_INFO.unregister("test_hard")
    RELAXATIONS.unregister("test_hard_argmax")
    STRENGTHS.unregister("test_one_hot_argmax")


def test_every_shipped_space_has_tiny_sizes():
    assert sorted(TINY) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_a_relaxation_from_outside_the_package_searches_and_derives(name, toy_method, tmp_path,
                                                                    single_thread):
    overrides = {"space.name": name, "method.name": toy_method, "optim.epochs": 1,
                 "run.out": str(tmp_path), "run.threads": 1,
                 **{f"space.overrides.{k}": v for k, v in TINY[name].items()}}
    preset = "rnn_quick" if name == "darts_rnn" else "quick"
    data = {"data.limit": 600, "data.batch_size": 4} if name == "darts_rnn" else {
        "data.limit": 16, "data.batch_size": 8}
    if name == "darts_imagenet":  # the sample's 32x32 images, resized to its 224x224 input
        data["data.image_size"] = 224
    search = Search.build(load_config(preset, {**overrides, **data}))
    model = search.model
    assert isinstance(model.relaxation, HardArgmax)
    before = {key: alpha.detach().clone() for key, alpha in model.arch_parameters().items()}

    batches = next(iter(search.task.batches(0, 0)))
    search._step(batches, search.learning_rate(0), "test step")

    after = model.arch_parameters()
    assert all(not torch.equal(before[key], after[key]) for key in before), "α did not move"
    genotype = model.genotype()
    assert genotype == derive(search.compiled.name, model.arch_values(), search.compiled.rules,
                              one_hot_argmax)
    assert check_genotype(genotype, search.compiled.rules) == []


def test_the_run_directory_records_how_to_derive(toy_method, tmp_path):
    from click.testing import CliRunner

    from spacec.cli import main
    from spacec.runtime.search.loop import start_search

    cfg = load_config("quick", {"space.name": "nas_bench_201", "method.name": toy_method,
                                "space.overrides.C": 4, "space.overrides.N": 1,
                                "optim.epochs": 1, "data.limit": 16, "data.batch_size": 8,
                                "run.out": str(tmp_path), "run.threads": 1})
    result = start_search(cfg)
    derived = CliRunner().invoke(main, ["derive", str(result.run_dir), "--json"])
    assert derived.exit_code == 0, derived.output
    assert Genotype.from_json(derived.output) == result.genotype
    assert json.loads((Path(result.run_dir) / "method.json").read_text()) == {
        "name": toy_method, "relaxation": "test_hard_argmax", "strengths": "test_one_hot_argmax",
        "derive": {"keep_none": False, "pairs": False, "threshold": None}}

