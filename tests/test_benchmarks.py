"""The benchmark scripts keep working: each measures what it says at tiny sizes.

The figures themselves (speed, memory, accuracy of the cost model) are the scripts' output, read
by a person; these tests pin only that a script's measurement runs through the code it claims to
measure and reports consistent numbers.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def benchmark(monkeypatch):
    """`benchmark(name)`: the script benchmarks/NAME.py as a module. It and the other scripts it
    imports are forgotten afterwards, so each test imports them afresh."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    before = set(sys.modules)
    yield importlib.import_module
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], "__file__", None)
        if file and Path(file).parent == BENCHMARKS:
            del sys.modules[name]


@pytest.fixture
def cost_model(benchmark):
    return benchmark("cost_model")


@pytest.mark.parametrize("method,memory,step", [("pc_darts", "balanced", "first"),
                                                ("darts", "low", "second"),
                                                ("darts", "fast", "train")])
def test_cost_model_measures_the_runs_own_step(cost_model, method, memory, step):
    from timing import run_in_subprocess

    job = {"space": "darts_cnn", "overrides": {"C": 4, "layers": 3}, "batch": 4, "step": step,
           "method": method, "memory": memory, "device": "cpu", "threads": 1, "warmup": 1,
           "genotype": "DARTS_V2"}
    predicted = cost_model.predict(job)
    measured = run_in_subprocess(str(BENCHMARKS / "cost_model.py"), job)
    # The run the worker built predicted what the script predicts: the same step, method
    # options (PC-DARTS's k from the preset) and memory setting.
    ran = measured["run_prediction"]
    assert ran["total_bytes"] == predicted["total_bytes"]
    assert ran["step"] == step
    if step != "train":
        assert ran["memory"] == memory and ran["method"] == predicted["method"]
    assert 0 < measured["measured_bytes"] < 2**30


def test_cost_fit_recovers_the_constants_that_made_the_measurements(benchmark, cost_model):
    from spacec.cost import memory

    cost_fit = benchmark("cost_fit")
    shares, runtime = {"": 0.2, "depthwise": 0.7, "edge": 0.5}, 8 * 2**20
    rows = []
    for setting in ("fast", "balanced", "low"):
        for batch in (2, 8):
            job = {"space": "darts_cnn", "overrides": {"C": 4, "layers": 3}, "batch": batch,
                   "step": "first", "method": "darts", "memory": setting, "device": "cpu",
                   "threads": 1, "warmup": 1, "genotype": "DARTS_V2"}
            terms = cost_fit.phase_terms(job)
            # the recorded terms add up to the CPU's own prediction (up to int rounding)
            today = cost_fit.resident(terms, memory.CPU_RETAINED, memory.CPU_RUNTIME)
            assert abs(today - cost_model.predict(job)["total_bytes"]) <= 1
            rows.append((job, cost_fit.resident(terms, shares, runtime), terms))
    assert cost_fit.fit(rows) == (shares, runtime)


def test_cost_model_plans_the_steps_each_method_runs(cost_model):
    args = cost_model.parse_args(["--spaces", "darts_cnn", "--batch", "16", "--methods", "all",
                                  "--steps", "first", "second", "--predict-only"])
    planned = {(job["method"], job["step"]) for job in cost_model.jobs(args)}
    assert ("darts", "second") in planned and ("gdas", "first") in planned
    assert ("gdas", "second") not in planned and ("snas", "second") not in planned
    assert ("random_ws", "weights") in planned
    assert {method for method, _ in planned} == set(cost_model.all_methods(["all"]))


def test_check_large_times_every_stage_of_spacec_check_and_the_command(benchmark, capsys):
    benchmark("check_large").main(["--sizes", "0.05", "--repeat", "1"])
    valid, errors = capsys.readouterr().out.split("errors spaces")
    assert "searched edges" in valid and "errors shown" in errors
    for stage in ("parse", "check", "ir", "shapes", "spacec check", "median"):
        assert f"{stage} " in valid, stage


def test_search_step_switches_set_the_runs_own_options(benchmark):
    search_step = benchmark("search_step")
    job = {"space": "darts_cnn", "C": 4, "layers": 3, "batch": 4, "threads": 1,
           "device": "cpu", "method": "darts", "order": 2, "switches": "bf16+nchw"}
    search = search_step.method_search(job)
    assert search.cfg.arch.order == 2
    assert search.session.precision == "bf16" and not search.session.channels_last
    with pytest.raises(SystemExit):
        search_step.parse_args(["--switches", "bf16+fast"])


def test_search_step_times_spacec_as_the_loop_runs_and_the_reference_without(benchmark):
    import gc

    search_step = benchmark("search_step")
    with search_step.setup_as_run({"variant": "balanced"}):
        assert gc.get_freeze_count() > 0  # spacec.runtime.run.heap.frozen_setup, as the loop
    with search_step.setup_as_run({"variant": search_step.REFERENCE}):
        assert gc.get_freeze_count() == 0
    with search_step.setup_as_run({"variant": "balanced", "freeze": False}):  # --no-freeze
        assert gc.get_freeze_count() == 0
    assert search_step.parse_args(["--no-freeze"]).freeze is False
    assert gc.get_freeze_count() == 0


def test_op_count_counts_every_operation_of_a_step(benchmark):
    op_count = benchmark("op_count")
    job = {"space": "darts_cnn", "C": 2, "layers": 3, "batch": 1}
    reference = op_count.count({**job, "kind": "weights", "variant": "reference"})
    spacec = op_count.count({**job, "kind": "weights", "variant": "fast"})
    # the same convolutions and their gradients in both layouts, counted once each (top level)
    assert reference["aten::conv2d"] == spacec["aten::conv2d"] > 0
    assert reference["aten::convolution_backward"] == spacec["aten::convolution_backward"] > 0
    # spacec's NHWC and polyphase layout adds permutes, which the reference's has none of
    assert spacec["aten::permute"] > 0 == reference["aten::permute"]


@pytest.mark.skipif(not (BENCHMARKS.parent / ".git").exists(), reason="not a git checkout")
def test_search_step_then_runs_a_revisions_own_code(benchmark, tmp_path):
    # --then REV: the revision's files, importable as installed (package-dir mapped in spacec/),
    # and its own worker measuring its own supernet; here HEAD at a tiny size.
    search_step = benchmark("search_step")
    tree = benchmark("timing").tree_of_revision("HEAD", tmp_path)
    job = {"space": "darts_cnn", "C": 2, "layers": 3, "batch": 2, "kind": "first",
           "device": "cpu", "threads": 1, "warmup": 0, "steps": 1, "variant": search_step.THEN,
           "memory": search_step.THEN}
    result = search_step.run_job(job, tree)
    assert result["variant"] == search_step.THEN and result["median_s"] > 0
    probe = ("import spacec, spacec.runtime, spacec.grammars, spacec.spaces; "
             "print(spacec.runtime.__file__)")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONPATH": str(tree)},
                           cwd=tmp_path)  # as a worker's script: not this checkout's spacec
    assert Path(found.stdout.strip()).resolve().is_relative_to(tree.resolve())


def test_depthwise_grad_alternates_the_blocked_and_onednns_weight_gradient(benchmark, capsys,
                                                                          monkeypatch):
    from spacec.runtime.nn import accelerate

    depthwise_grad = benchmark("depthwise_grad")
    calls = []
    original = accelerate._weight_grad_by_blocks

    def counted(*args):
        calls.append(accelerate._BLOCKED_KERNELS)
        return original(*args)

    monkeypatch.setattr(accelerate, "_weight_grad_by_blocks", counted)
    depthwise_grad.main(["--measure", "step", "--C", "2", "--layers", "3", "--batch", "2",
                         "--pairs", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].split()[:2] == ["fast", "weights"]
    # 2 warm-up steps and 2 of the 4 timed ones run the blocks; the switch is restored after
    per_step = len(calls) // 4
    assert per_step > 0 and len(calls) == 4 * per_step
    assert accelerate._BLOCKED_KERNELS == (5,)
    calls.clear()
    depthwise_grad.main(["--measure", "kernels", "--batch", "1", "--repeat", "1"])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert len(rows) == len(depthwise_grad.SHAPES)
    assert all(float(row.split()[-1]) < 1e-4 for row in rows)  # the same gradient


def test_gemm_times_both_backends_on_the_products_it_names(benchmark, capsys):
    gemm_bench = benchmark("gemm")
    results = gemm_bench.measure(batch=2, rounds=1, nhid=8, ntoken=30)
    assert [r["what"] for r in results] == [s[0] for s in gemm_bench.shapes(2, 8, 30)]
    for r in results:
        assert r["aten_gflops"] > 0 and r["onednn_gflops"] > 0
        assert r["ratio"] == pytest.approx(r["onednn_gflops"] / r["aten_gflops"])
        assert r["max_abs_diff"] < 1e-3
    # The head's weight gradient: [ntoken, rows] @ [rows, nhid + 1], rows = batch x bptt.
    assert (results[-1]["m"], results[-1]["k"], results[-1]["n"]) == (30, 2 * 35, 9)


def test_rnn_tokens_baseline_multiplies_by_torch_mm(benchmark):
    from spacec.runtime.nn import accelerate, recurrent

    rnn_tokens = benchmark("rnn_tokens")
    job = {"kind": "search1", "size": 8, "ntoken": 20, "bptt": 3, "batch": 2}
    import torch

    def maps(network):
        return [m for m in network.modules()
                if isinstance(m, (recurrent.HighwayInit, recurrent.SharedHighway))]

    model, step = rnn_tokens.build_step(job, torch.device("cpu"), reference=True)
    assert maps(model) and not any("product" in m.__dict__ for m in maps(model))
    assert model.decode_nll is recurrent.decoded_nll_reference
    spacec_model, _ = rnn_tokens.build_step(job, torch.device("cpu"))
    assert all(m.product.__func__ is accelerate._gemm_product for m in maps(spacec_model))
    model.train()
    step()
