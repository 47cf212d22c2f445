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
    result = CliRunner().invoke(main, ["search", "darts_cnn", *TINY, "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "one first-order search step of darts_cnn at batch 8 needs about" in result.output
    assert "but only 0.06 GiB is available" in result.output
    assert "it would fit with --batch-size" in result.output
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
    assert "per search step at batch 8 (memory fast) (1024.00 GiB available)" in result.output


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
    result = CliRunner().invoke(main, ["search", "darts_cnn", *TINY, "--out", str(tmp_path)])
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
