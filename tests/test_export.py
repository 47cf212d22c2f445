"""`spacec export`: TorchScript and ONNX files that reproduce the trained network (spacec.runtime.tools.export)."""

from __future__ import annotations

import importlib.util
import stat
import warnings

import pytest
import torch
from click.testing import CliRunner

from spacec.cli import main
from spacec.runtime.tools import export as export_module
from spacec.runtime.tools.export import ExportError, export, load_network, random_batch
from spacec.runtime.train.config import load_train_config
from spacec.runtime.train.loop import start_training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A training run directory of a tiny network (one short epoch)."""
    threads = torch.get_num_threads()
    tmp_path = tmp_path_factory.mktemp("export")
    cfg = load_train_config("quick", {
        "space.overrides": {"C": 4, "layers": 3}, "data.limit": 32, "data.batch_size": 16,
        "optim.epochs": 1, "run.threads": 1, "run.out": str(tmp_path / "runs")})
    yield start_training(cfg, "DARTS_V2").run_dir
    torch.set_num_threads(threads)


def test_network_is_rebuilt_without_the_auxiliary_head(trained):
    network, shape = load_network(trained)
    assert shape == (3, 32, 32)
    assert not network.training
    assert network.auxiliary_head is None
    assert not any("auxiliary" in name for name in network.state_dict())


def test_torchscript_round_trip(trained, tmp_path):
    path = tmp_path / "out" / "net.pt"
    result = export(trained, "torchscript", path)
    assert result.path == path and result.max_abs_diff is not None
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # readable by others, not mkstemp's 0600
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of
        loaded = torch.jit.load(str(path))               # torch.export; it still loads
    network, shape = load_network(trained)
    images = random_batch(5, shape, seed=7)
    with torch.no_grad():
        assert torch.allclose(loaded(images), network(images), atol=1e-5)


def test_best_checkpoint_and_checkpoint_file(trained, tmp_path):
    result = export(trained / "best.pt", "torchscript", tmp_path / "best.pt")
    assert result.max_abs_diff is not None
    with pytest.raises(ExportError, match="unknown checkpoint"):
        export(trained, "torchscript", tmp_path / "x.pt", which="middle")


def test_a_wrong_export_is_caught():
    logits = torch.ones(2, 10)
    with pytest.raises(ExportError, match="differ from PyTorch by up to 0.01"):
        export_module.max_difference(logits, logits + 0.01, "x")
    with pytest.raises(ExportError, match="output shape"):
        export_module.max_difference(logits, logits[:1], "x")


def test_onnx_without_the_extra_is_a_clear_error(trained, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real(name, *a))
    result = CliRunner().invoke(main, ["export", str(trained), "--format", "onnx", "-o",
                                       str(tmp_path / "net.onnx")])
    assert result.exit_code == 1
    assert "needs onnxscript" in result.output and "spacec[export]" in result.output
    assert not (tmp_path / "net.onnx").exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("onnx") is None
                    or importlib.util.find_spec("onnxscript") is None,
                    reason="the optional 'export' extra is not installed")
def test_onnx_round_trip(trained, tmp_path):
    import onnx
    from onnx.reference import ReferenceEvaluator

    path = tmp_path / "net.onnx"
    result = CliRunner().invoke(main, ["export", str(trained), "--format", "onnx", "-o",
                                       str(path)])
    assert result.exit_code == 0, result.output
    assert "max |Δ| vs PyTorch" in result.output
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    network, shape = load_network(trained)
    images = random_batch(4, shape, seed=9)  # a batch size other than the traced one
    (logits,) = ReferenceEvaluator(model).run(None, {"images": images.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(logits), network(images), atol=1e-4)


def test_cli_torchscript_and_errors(trained, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(trained), "--format", "torchscript", "-o",
                                  str(tmp_path / "net.pt")])
    assert result.exit_code == 0, result.output
    assert "max |Δ| vs PyTorch" in result.output
    not_a_checkpoint = tmp_path / "junk.pt"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    bad = runner.invoke(main, ["export", str(not_a_checkpoint), "--format", "torchscript", "-o",
                               str(tmp_path / "y.pt")])
    assert bad.exit_code == 1
    assert "unreadable checkpoint" in bad.output and "Traceback" not in bad.output
