"""A run predicts its peak memory before it allocates anything, and refuses what cannot fit.

spacec.runtime.run.fits asks the cost model (spacec.cost) for one step's peak at the run's batch
and compares it with the free memory; these tests shrink the free memory instead of growing the
network, so nothing large is ever allocated.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from spacec import cost
from spacec.cli import main
from spacec.runtime.run import fits

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ("--set", "C=4", "--set", "layers=3", "--epochs", "1", "--limit", "16", "--batch-size",
        "8", "-q")


@pytest.fixture
def free_memory(monkeypatch):
    """Set the free memory a run sees (bytes)."""

    def set_free(nbytes: int | None) -> None:
        monkeypatch.setattr(fits, "available_bytes", lambda device: nbytes)

    return set_free


def test_a_search_that_cannot_fit_is_refused_before_anything_is_written(free_memory, tmp_path):
    free_memory(64 * 2**20)  # 64 MiB: the tiny supernet's weights fit, batch 8 does not
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["search", "darts_cnn", *TINY, "--memory", "fast",
                                       "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert ("one first-order search step of darts_cnn at batch 8 (memory fast) needs about"
            in result.output)
    assert "but only 0.06 GiB is available" in result.output
    assert "it would fit with 20% to spare with --batch-size" in result.output
    assert not out.exists()


def test_the_largest_batch_offered_fits_and_one_more_does_not(free_memory, tmp_path):
    free_memory(None)  # nothing refused: read the prediction
    from spacec.load import compile_file, locate

    compiled = compile_file(locate("darts_cnn"), {"C": 4, "layers": 3})
    prediction = cost.predict_search(compiled.ir, 8)
    budget = prediction.total - 1
    with pytest.raises(cost.NotEnoughMemory) as raised:
        cost.check_fits(prediction, budget, compiled.ir)
    largest = raised.value.largest_batch
    assert 1 <= largest < 8
    assert cost.predict_search(compiled.ir, largest).total <= budget
    assert cost.predict_search(compiled.ir, largest + 1).total > budget


def test_a_fix_without_the_margin_is_offered_when_none_has_it(free_memory):
    free_memory(None)
    from spacec.load import compile_file, locate

    compiled = compile_file(locate("darts_cnn"), {"C": 4, "layers": 3})
    prediction = cost.predict_search(compiled.ir, 8)
    one = cost.predict_search(compiled.ir, 1).total
    with pytest.raises(cost.NotEnoughMemory) as raised:
        cost.check_fits(prediction, one)  # batch 1 fits, not with 20% to spare
    assert [fix.options for fix in raised.value.fixes] == ["--batch-size 1"]
    assert "it would fit with --batch-size 1 (" in str(raised.value)


def test_a_run_logs_its_prediction_and_goes_on_when_it_fits(free_memory, tmp_path):
    free_memory(1 << 40)
    messages = []
    from spacec.load import compile_file, locate

    compiled = compile_file(locate("darts_cnn"), {"C": 4, "layers": 3})
    import logging

    class Catch(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Catch()
    logging.getLogger(fits.__name__).addHandler(handler)
    logging.getLogger(fits.__name__).setLevel(logging.INFO)
    try:
        import torch

        fit = fits.check_search_memory(compiled.ir, 8, 2, "pc_darts", {"k": 2}, "fast", None,
                                       torch.device("cpu"))
    finally:
        logging.getLogger(fits.__name__).removeHandler(handler)
    assert fit is not None and fit.prediction.method_name == "pc_darts"
    assert dict(fit.prediction.method_options)["k"] == 2
    assert fit.available == 1 << 40


def test_the_effective_configuration_shows_the_prediction(free_memory, tmp_path):
    free_memory(1 << 40)
    result = CliRunner().invoke(main, ["search", "darts_cnn", *TINY, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "  memory   predicted peak " in result.output
    assert "per search step at batch 8 (memory auto: fast) (1024.00 GiB available)" in result.output


def test_the_prediction_is_for_the_batch_the_data_fills(free_memory, tmp_path):
    """16 images give splits of 8: at --batch-size 400 a step holds 8, and the prediction (and
    a refusal) is for 8, not for 400."""
    free_memory(1 << 40)
    options = [option if option != "8" else "400" for option in TINY]
    result = CliRunner().invoke(main, ["search", "darts_cnn", *options, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "per search step at batch 8 (memory auto: fast)" in result.output


def test_a_training_run_that_cannot_fit_is_refused(free_memory, tmp_path):
    from spacec.cost.memory import CPU_RUNTIME

    free_memory(CPU_RUNTIME // 2)  # less than any step needs beyond its tensors
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["train", "darts_cnn", "--genotype", "DARTS_V2", *TINY,
                                       "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "one training step of darts_cnn at batch 8 needs about" in result.output
    assert not out.exists()


def test_a_step_that_fits_without_the_predictions_margin_is_warned_about():
    from spacec.load import compile_file, locate

    compiled = compile_file(locate("darts_cnn"), {"C": 4, "layers": 3})
    prediction = cost.predict_search(compiled.ir, 8)
    roomy = int(prediction.total * (1 + cost.MARGIN)) + 1
    assert cost.close_call(prediction, roomy, compiled.ir) is None
    assert cost.close_call(prediction, prediction.total - 1, compiled.ir) is None  # refused
    warning = cost.close_call(prediction, prediction.total, compiled.ir)
    assert "is within 20% of the" in warning and "may still run out of memory" in warning
    # The options offered leave the margin: a smaller batch, or a setting that keeps less.
    assert "20% to spare with --batch-size" in warning
    assert "--memory balanced" in warning
    batch = int(warning.split("--batch-size ")[1].split()[0])
    assert cost.predict_search(compiled.ir, batch).total * (1 + cost.MARGIN) <= prediction.total


def test_a_run_close_to_the_free_memory_starts_with_a_warning(free_memory, tmp_path):
    from spacec.load import compile_file, locate

    compiled = compile_file(locate("darts_cnn"), {"C": 4, "layers": 3})
    predicted = cost.predict_search(compiled.ir, 8).total
    free_memory(predicted + predicted // 10)
    result = CliRunner().invoke(main, ["search", "darts_cnn", *TINY, "--memory", "fast",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "may still run out of memory" in result.output


def test_a_method_the_cost_model_cannot_predict_is_not_refused():
    import torch

    def unknown(device_type):
        raise cost.CostError("no program")

    assert fits.check_memory(unknown, torch.device("cpu"), None, "search step") is None


def test_processes_on_one_machine_share_its_free_memory(free_memory):
    # torchrun's processes on one CPU machine each count on their share of the free RAM; a GPU
    # is each process's own.
    import torch

    from spacec.load import compile_file, locate

    compiled = compile_file(locate("darts_cnn"), {"C": 4, "layers": 3})
    prediction = cost.predict_search(compiled.ir, 8)
    free_memory(prediction.total + prediction.total // 2)  # fits one process, not two

    def check(processes: int, device: str = "cpu"):
        return fits.check_memory(lambda device_type: prediction, torch.device(device),
                                 compiled.ir, "search step", processes)

    alone = check(1)
    assert alone.available == prediction.total + prediction.total // 2
    with pytest.raises(cost.NotEnoughMemory) as raised:
        check(2)
    assert raised.value.available == (prediction.total + prediction.total // 2) // 2
    assert check(2, "cuda").sharing == 1
    free_memory(4 * prediction.total)
    assert "available to each of 2 processes on this machine" in check(2).line()


# ---------------------------------------------------------------- memory: auto


def _tiny_predictions():
    from spacec.load import compile_file, locate

    compiled = compile_file(locate("darts_cnn"), {"C": 4, "layers": 3})
    return compiled, {name: cost.predict_search(compiled.ir, 8, memory=name)
                      for name in cost.settings_by_level()}


def test_auto_chooses_the_fastest_setting_that_fits_with_the_margin_to_spare():
    compiled, predicted = _tiny_predictions()
    fast, balanced, low = (predicted[name] for name in ("fast", "balanced", "low"))
    assert fast.total > balanced.total > low.total
    assert cost.settings_by_level() == ["fast", "balanced", "low"]

    def choose(available):
        return cost.choose_memory(predicted.__getitem__, available, compiled.ir)

    roomy = int(fast.total * (1 + cost.MARGIN)) + 1
    assert choose(roomy).memory == "fast" and choose(roomy).reason == ""
    assert choose(None).memory == "fast"  # free memory unknown: nothing to choose for
    # fast would fit, but without the prediction's error to spare: the next that has it
    tight = fast.total + 1
    assert balanced.total * (1 + cost.MARGIN) <= tight
    chosen = choose(tight)
    assert chosen.memory == "balanced" and chosen.prediction is balanced
    assert "fast's predicted peak" in chosen.reason and "leaves less than 20% of" in chosen.reason
    between = int(low.total * (1 + cost.MARGIN)) + 1
    if between < balanced.total * (1 + cost.MARGIN):
        assert choose(between).memory == "low"
        # why not each faster setting: fast's figure and balanced's
        assert ("fast's predicted peak" in choose(between).reason
                and "balanced's predicted peak" in choose(between).reason)
    # none with the margin: of those that fit, the one that needs least
    assert choose(low.total).memory == "low"
    assert "does not fit in" in choose(low.total).reason
    with pytest.raises(cost.NotEnoughMemory) as raised:
        choose(low.total - 1)
    assert raised.value.prediction is low  # the fixes are for the setting that keeps least


def test_auto_passes_over_the_settings_a_step_cannot_take():
    compiled, predicted = _tiny_predictions()

    def only_fast(name):
        if name != "fast":
            raise cost.CostError(f"--memory {name} recomputes the mixed edges of image cells")
        return predicted[name]

    with pytest.raises(cost.NotEnoughMemory):
        cost.choose_memory(only_fast, predicted["fast"].total - 1, compiled.ir)
    assert cost.choose_memory(only_fast, 1 << 40).memory == "fast"

    def nothing(name):
        raise cost.CostError("no program")

    with pytest.raises(cost.CostError):
        cost.choose_memory(nothing, 1 << 40)


def test_the_run_configuration_defaults_to_auto_and_the_names_agree():
    from spacec.cli import options
    from spacec.runtime.run.config import AUTO_MEMORY, RunConfig

    assert RunConfig().memory == AUTO_MEMORY == cost.AUTO == options.AUTO_MEMORY
    assert fits.resolved_memory("auto", None) == "fast"  # nothing predicted: keep everything
    assert fits.resolved_memory("low", None) == "low"
    assert fits.agreed_memory(["fast", "low", "balanced"]) == "low"
    assert fits.agreed_memory(["fast", "balanced"]) == "balanced"
    assert fits.agreed_memory(["fast"]) == "fast"


def test_a_search_short_of_memory_for_fast_runs_balanced(free_memory, tmp_path):
    from spacec.runtime.search.config import load_config
    from spacec.runtime.search.loop import Search

    _, predicted = _tiny_predictions()
    free_memory(predicted["fast"].total + 1)
    cfg = load_config("quick", {"space.overrides.C": 4, "space.overrides.layers": 3,
                                "data.batch_size": 8, "data.limit": 16,
                                "run.out": str(tmp_path)})
    assert cfg.run.memory == "auto"
    search = Search.build(cfg)
    edges = [m for m in search.model.modules() if hasattr(m, "edge_memory")]
    assert edges and all(edge.memory == "balanced" for edge in edges)
    assert search.fit.chosen and search.fit.memory == "balanced"
    assert "(memory auto: balanced)" in search.fit.line()
    free_memory(1 << 40)
    roomy = Search.build(cfg)
    assert all(edge.memory == "fast" for edge in roomy.model.modules()
               if hasattr(edge, "edge_memory"))


def test_auto_refuses_what_no_setting_fits_and_offers_the_rest(free_memory, tmp_path):
    from spacec.cost.memory import CPU_RUNTIME

    _, predicted = _tiny_predictions()
    out = tmp_path / "runs"
    free_memory(64 * 2**20)  # fast is refused here (above); low fits
    assert predicted["low"].total <= 64 * 2**20 < predicted["fast"].total
    result = CliRunner().invoke(main, ["search", "darts_cnn", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "(memory auto: low)" in result.output
    free_memory(CPU_RUNTIME // 2)  # less than any step needs beyond its tensors
    result = CliRunner().invoke(main, ["search", "darts_cnn", *TINY, "--out", str(out / "x")])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and not (out / "x").exists()
    # auto refuses for the leanest setting, and says which it is
    assert ("one first-order search step of darts_cnn at batch 8 (memory low) needs about"
            in result.output)


def test_the_cli_prints_what_auto_chose_and_why(free_memory, tmp_path):
    _, predicted = _tiny_predictions()
    free_memory(predicted["fast"].total + 1)
    result = CliRunner().invoke(main, ["search", "darts_cnn", *TINY, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "per search step at batch 8 (memory auto: balanced)" in result.output
    assert "; balanced, the same arithmetic as the faster settings for more time, as fast's " \
           "predicted peak" in result.output
    assert "may still run out of memory" not in result.output


def test_a_recurrent_search_under_auto_keeps_everything(free_memory, tmp_path):
    # balanced and low recompute image cells only: auto has fast alone to choose
    free_memory(1 << 40)
    result = CliRunner().invoke(main, [
        "search", "darts_rnn", "--set", "nhid=8", "--set", "ninp=8", "--epochs", "1",
        "--limit", "400", "--batch-size", "4", "--cfg", "data.bptt=5", "-q",
        "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "(memory auto: fast)" in result.output


def test_info_shows_what_auto_would_choose_here(monkeypatch):
    _, predicted = _tiny_predictions()
    monkeypatch.setattr(cost, "available_ram", lambda: predicted["fast"].total + 1)
    args = ["info", "darts_cnn", "--set", "C=4", "--set", "layers=3", "--batch-size", "8",
            "--memory", "auto"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "(memory auto: balanced)" in result.output
    assert "fast's predicted peak" in result.output
    monkeypatch.setattr(cost, "available_ram", lambda: predicted["low"].total - 1)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "(memory auto: low)" in result.output and "no setting fits" in result.output
    result = CliRunner().invoke(main, [*args, "--device", "cuda"])
    assert "(memory auto: fast)" in result.output and "free memory unknown" in result.output


def test_processes_of_a_run_keep_what_the_leanest_keeps(free_memory, tmp_path, monkeypatch):
    from spacec.runtime.run.session import Session
    from spacec.runtime.search.config import load_config
    from spacec.runtime.search.loop import Search

    free_memory(1 << 40)  # fast here; another process (below) chose balanced for its share
    monkeypatch.setattr(Session, "gather", lambda self, value: [value, "balanced"])
    cfg = load_config("quick", {"space.overrides.C": 4, "space.overrides.layers": 3,
                                "data.batch_size": 8, "data.limit": 16,
                                "run.out": str(tmp_path)})
    search = Search.build(cfg)
    assert all(edge.memory == "balanced" for edge in search.model.modules()
               if hasattr(edge, "edge_memory"))
    assert search.fit.memory == "balanced" and search.fit.prediction.memory == "balanced"
    assert "(memory auto: balanced)" in search.fit.line()
    assert "another process of this run has less memory free" in search.fit.line()
