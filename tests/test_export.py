"""`spacec export` and `spacec predict`: TorchScript and ONNX files that reproduce the trained
network, normalisation and metadata inside, fed raw image files (spacec.runtime.tools.export,
spacec.runtime.tools.predict)."""

from __future__ import annotations

import importlib.util
import os
import stat
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from spacec.cli import main
from spacec.runtime.domains.image.data import CIFAR_MEAN, CIFAR_STD
from spacec.runtime.tools import export as export_module
from spacec.runtime.tools.export import (
    ExportError,
    export,
    load_classifier,
    load_network,
    random_batch,
    read_metadata,
)
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
    network, shape = load_network(trained, "best")
    images = torch.rand(5, *shape, generator=torch.Generator().manual_seed(7))  # [0, 1] RGB
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (CIFAR_MEAN, CIFAR_STD))
    with torch.no_grad():  # the exported model normalises raw images itself
        assert torch.allclose(loaded(images), network((images - mean) / std), atol=1e-5)
    meta = read_metadata(path)
    assert meta["input_shape"] == [3, 32, 32] and len(meta["class_names"]) == 10
    assert meta["class_names"][:2] == ["airplane", "automobile"]
    assert meta["mean"] == pytest.approx(CIFAR_MEAN) and meta["std"] == pytest.approx(CIFAR_STD)
    assert (meta["resize"], meta["crop"]) == (None, None)


def test_an_exports_archive_is_named_after_the_file(trained, tmp_path):
    """torch.jit.save names the archive's top folder after the file it writes: the export's
    own name, not the temporary file's, with nothing left beside it."""
    path = tmp_path / "net.pt"
    export(trained, "torchscript", path)
    with zipfile.ZipFile(path) as archive:
        assert {name.split("/")[0] for name in archive.namelist()} == {"net"}
    assert [entry.name for entry in tmp_path.iterdir()] == ["net.pt"]


def test_predict_reads_an_exported_model_once(trained, tmp_path, monkeypatch):
    from spacec.runtime.tools.predict import open_model

    path = tmp_path / "net.pt"
    export(trained, "torchscript", path)
    loads = []
    real = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(a) or real(*a, **k))
    _, meta, kind = open_model(path)
    assert kind == "TorchScript model" and meta["input_shape"] == [3, 32, 32]
    assert len(loads) == 1


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
    classifier, meta = load_classifier(trained, "best")
    images = random_batch(4, tuple(meta["input_shape"]), seed=9)  # not the traced batch size
    (logits,) = ReferenceEvaluator(model).run(None, {"images": images.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(logits), classifier(images), atol=1e-4)
    assert read_metadata(path) == meta


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
    # Never over the weights it is made of, nor over what is not a regular file.
    for name in ("best.pt", "checkpoint.pt"):
        kept = trained / name
        before = kept.read_bytes()
        over = runner.invoke(main, ["export", str(trained), "--format", "torchscript", "-o",
                                    str(kept)])
        assert over.exit_code == 1 and "would replace the checkpoint it is made from" in over.output
        assert kept.read_bytes() == before
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    piped = runner.invoke(main, ["export", str(trained), "--format", "torchscript", "-o",
                                 str(fifo)])
    assert piped.exit_code == 1 and "it is not a regular file" in piped.output
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_search_run_is_named_as_such(tmp_path):
    """A search run given where a trained network is asked for (export, predict, train
    --resume) is named a search run, with the command that does what was meant."""
    run = tmp_path / "search-run"
    run.mkdir()
    (run / "config.yaml").write_text("task: image\n")
    (run / "method.json").write_text('{"name": "darts"}')
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    for command, said in ((["export", str(run), "--format", "torchscript", "-o",
                            str(tmp_path / "x.pt")], "train its cell"),
                          (["predict", str(run), str(image)], "train its cell"),
                          (["train", "--resume", str(run)], f"spacec search --resume {run}")):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1, result.output
        assert f"{run} is a search run" in result.output and said in result.output


# ---------------------------------------------------------------- raw files in, classes out


@pytest.fixture(scope="module")
def own_run(tmp_path_factory, walkthrough_space):
    """A training run on 3 classes of 64x64 image files, the walkthrough's space."""
    import numpy as np
    from PIL import Image

    from spacec.runtime.api import train

    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 1), ("test", 3)):
        for name, colour in (("cat", 200), ("dog", 120), ("owl", 40)):
            folder = root / "data" / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.normal(colour, 60, (64, 64, 3)).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    (root / "my_cells.space").write_text(walkthrough_space)
    run = train(str(root / "my_cells.space"), _cell(), data="imagefolder",
                data_dir=root / "data", epochs=1, batch_size=8, threads=1, out=root / "runs")
    yield root, run
    torch.set_num_threads(threads)


def _cell():
    from spacec.arch.genotype import Genotype

    cell = {"edges": [["conv", "c_k1", "n0"], ["skip", "c_k2", "n0"], ["pool", "n0", "n1"],
                      ["conv", "c_k1", "n1"]], "reduce": "concat", "output": ["n0", "n1"]}
    return Genotype.from_dict({"space": "my_cells", "cells": {"normal": cell, "reduce": cell}})


def _expected(root, run) -> tuple[list, torch.Tensor]:
    """The test files and the trained network's probabilities on them, through the training
    data pipeline (normalised tensors, not files)."""
    from spacec.runtime.domains.image.data import training_loaders

    loaders = training_loaders(run.config.data, seed=0)
    files = [Path(path) for path, _ in loaders.test.dataset.dataset.samples]
    with torch.no_grad():
        logits = torch.cat([run.model(images) for images, _ in loaders.test])
    return files, torch.softmax(logits, dim=1)


@pytest.mark.slow
def test_raw_files_give_the_trained_networks_predictions(own_run, tmp_path):
    from spacec.runtime.tools.predict import predict

    root, run = own_run
    files, expected = _expected(root, run)
    assert len(files) == 9
    models = [run.run_dir, tmp_path / "net.pt"]
    export(run.run_dir, "torchscript", tmp_path / "net.pt")
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxscript"):
        export(run.run_dir, "onnx", tmp_path / "net.onnx")
        models.append(tmp_path / "net.onnx")
    names = ["cat", "dog", "owl"]
    for model in models:
        predictions = predict(model, files, top=3)
        assert [p.path for p in predictions] == files
        for prediction, probabilities in zip(predictions, expected, strict=True):
            got = dict(prediction.ranked)
            assert set(got) == set(names)
            for index, name in enumerate(names):
                assert got[name] == pytest.approx(float(probabilities[index]), abs=1e-5), model
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "net.pt"), *map(str, files[:2])])
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0].split("\t")
    assert first[0] == str(files[0]) and first[1].split()[0] in names


def test_predict_refuses_what_it_cannot_read(own_run, tmp_path):
    from PIL import Image

    from spacec.runtime.tools.predict import predict

    root, run = own_run
    small = tmp_path / "small.png"
    Image.new("RGB", (48, 48)).save(small)
    with pytest.raises(Exception, match="a 48x48 image; the network takes 64x64"):
        predict(run.run_dir, [small])
    result = CliRunner().invoke(main, ["predict", str(run.run_dir), str(small)])
    assert result.exit_code == 1 and result.stderr.count("spacec: error:") == 1
    plain = tmp_path / "plain.pt"  # a TorchScript file not written by spacec export
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still works
        torch.jit.save(torch.jit.script(torch.nn.Identity()), str(plain))
    with pytest.raises(Exception, match="holds no spacec metadata"):
        predict(plain, [small])
    # Files that are not what their name says, or damaged: the file and the loader's reason.
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    broken = tmp_path / "broken.pt"  # a zip with TorchScript's code folder and nothing else
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("broken/code/x.py", "")
    bad_meta = tmp_path / "bad_meta.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(torch.nn.Identity()), str(bad_meta),
                       _extra_files={"spacec.json": "{not json"})
    for path, what in ((junk, "ONNX"), (broken, "TorchScript"), (bad_meta, "TorchScript")):
        result = CliRunner().invoke(main, ["predict", str(path), str(small)])
        assert result.exit_code == 1, result.output
        assert f"{path}: not a readable {what} model (" in result.stderr
        assert "Traceback" not in result.output and result.stderr.count("spacec: error:") == 1
