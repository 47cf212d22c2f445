"""A user's own images and own space, end to end through the command line (issue 14).

A generated ImageFolder dataset (3 classes of 64x64 images, with and without val/ and test/) and
the walkthrough's space (my_cells: 64x64 inputs, 3 classes, 4 cells): the space's classes and
input size are used, and every disagreement (split folders taken for classes, a missing class,
images of another size, a preset's sizes for another space) ends in a clear error before
anything is written, or in a printed decision recorded in config.yaml; never in a silent change.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from spacec.cli import main

CLASSES = ("cat", "dog", "owl")
COLOURS = {"cat": (200, 80, 60), "dog": (70, 180, 70), "owl": (60, 80, 200)}
FAST = ["--epochs", "1", "--batch-size", "8", "--threads", "1", "-q"]


def write_images(folder: Path, count: int, size: int = 64, classes=CLASSES, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            pixels = rng.normal(COLOURS[name], 40, (size, size, 3)).clip(0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / name / f"{index}.png")


@pytest.fixture
def space(tmp_path: Path, walkthrough_space: str) -> Path:
    """The walkthrough's own space: 64x64 inputs, 3 classes, 4 cells."""
    path = tmp_path / "my_cells.space"
    path.write_text(walkthrough_space, encoding="utf-8")
    return path


@pytest.fixture
def splits(tmp_path: Path) -> Path:
    """data/train, data/val and data/test, one folder per class."""
    root = tmp_path / "data"
    for split, count in (("train", 6), ("val", 2), ("test", 2)):
        write_images(root / split, count, seed=len(split))
    return root


def spacec(tmp_path: Path, *args: str):
    return CliRunner().invoke(main, [*args, "--out", str(tmp_path / "runs"), *FAST])


def runs_in(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "runs"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def effective_block(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if "the effective configuration" in line)
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("  "))
    return lines[start:end]


def refused(result, *phrases: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    message = result.stderr
    assert message.count("spacec: error:") == 1, message  # reported once
    for phrase in phrases:
        assert phrase in message, message


# ---------------------------------------------------------------- the space's size and classes


def test_split_folders_are_splits_and_the_space_decides(tmp_path, space, splits):
    found = spacec(tmp_path, "search", str(space), "--data", "imagefolder", "--data-dir",
                   str(splits))
    assert found.exit_code == 0, found.output
    block = effective_block(found.stderr)
    text = "\n".join(block)
    assert "C=4 (space file), layers=4 (space file), classes=3 (space file)" in text
    # the weights train on train/, α on val/; test/ is not read by a search
    # the held-out part is val/, not data.train_portion's share of train/
    assert (f"18 train w, 6 train α ({splits / 'val'}; data.train_portion 0.5 unused); "
            "3 classes (cat, dog, owl); 64x64 as stored") in text
    assert "not applied to yours" in text  # the quick preset's sizes are for shipped spaces
    (run,) = runs_in(tmp_path)
    assert json.loads((run / "space.json").read_text())["params"] == {
        "C": 4, "layers": 4, "classes": 3}
    config = (run / "config.yaml").read_text()
    assert config.startswith("".join(f"# {line}\n" for line in block))  # recorded as shown
    assert yaml.safe_load(config)["data"]["image_size"] is None  # nothing resized

    trained = spacec(tmp_path, "train", "--genotype", str(run), "--data", "imagefolder",
                     "--data-dir", str(splits))
    assert trained.exit_code == 0, trained.output
    assert (f"18 train, 6 validate ({splits / 'val'}; data.train_portion 0.8 unused), 6 test "
            "(reported at the end)") in trained.stderr
    assert "val accuracy: best" in trained.stdout and "test accuracy: " in trained.stdout
    assert "top-5" not in trained.stdout  # 3 classes
    report = json.loads((run.parent / next(p.name for p in runs_in(tmp_path)
                                           if p.name.startswith("train-")) / "report.json")
                        .read_text())
    assert "test_acc5" not in report and 0 <= report["test_acc"] <= 1


def test_class_folders_hold_out_validation_images_and_no_test_is_reported(tmp_path, space):
    write_images(tmp_path / "flat", 5)
    trained = spacec(tmp_path, "train", str(space), "--genotype", str(_genotype(tmp_path)),
                     "--data", "imagefolder", "--data-dir", str(tmp_path / "flat"))
    assert trained.exit_code == 0, trained.output
    assert "12 train, 3 validate, no test set (give one with --test-dir DIR" in trained.stderr
    assert "test accuracy: not evaluated (no test set: --test-dir DIR gives one)" in \
        trained.stdout


def _genotype(tmp_path: Path) -> Path:
    """A genotype of my_cells, written as a file."""
    path = tmp_path / "genotype.json"
    cell = {"edges": [["conv", "c_k1", "n0"], ["skip", "c_k2", "n0"], ["pool", "n0", "n1"],
                      ["conv", "c_k1", "n1"]], "reduce": "concat", "output": ["n0", "n1"]}
    path.write_text(json.dumps({"space": "my_cells", "cells": {"normal": cell, "reduce": cell}}))
    return path


def test_train_takes_the_search_runs_space_and_parameters(tmp_path, space, splits):
    found = spacec(tmp_path, "search", str(space), "--set", "C=2", "--data", "imagefolder",
                   "--data-dir", str(splits))
    assert found.exit_code == 0, found.output
    (run,) = runs_in(tmp_path)
    trained = spacec(tmp_path, "train", "--genotype", str(run), "--data", "imagefolder",
                     "--data-dir", str(splits))
    assert trained.exit_code == 0, trained.output
    assert f"C=2 (search run {run.name}), layers=4 (space file)" in trained.stderr
    train_run = next(p for p in runs_in(tmp_path) if p.name.startswith("train-"))
    assert json.loads((train_run / "space.json").read_text())["params"]["C"] == 2


# ---------------------------------------------------------------- disagreements


def test_split_names_are_never_taken_for_classes(tmp_path, space):
    for split in ("train", "val"):  # images directly inside train/ and val/
        write_images(tmp_path / "data", 2, classes=())
        folder = tmp_path / "data" / split
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64)).save(folder / "0.png")
    result = spacec(tmp_path, "search", str(space), "--data", "imagefolder", "--data-dir",
                    str(tmp_path / "data"))
    refused(result, "class folders named train, val look like dataset splits")
    assert not runs_in(tmp_path)

    write_images(tmp_path / "nested" / "train", 2)
    write_images(tmp_path / "nested" / "cats", 2, classes=("cat",))
    result = spacec(tmp_path, "search", str(space), "--data", "imagefolder", "--data-dir",
                    str(tmp_path / "nested"))
    refused(result, "holds train/ and also cats/")
    assert not runs_in(tmp_path)


def test_a_missing_class_is_refused_with_what_to_do(tmp_path, space):
    root = tmp_path / "data"
    write_images(root / "train", 3, classes=("cat", "dog"))
    write_images(root / "val", 1)
    result = spacec(tmp_path, "search", str(space), "--data", "imagefolder", "--data-dir",
                    str(root))
    refused(result, "the val images", "have classes cat, dog, owl", "owl only in val")
    (root / "val" / "owl" / "0.png").unlink()
    (root / "val" / "owl").rmdir()
    result = spacec(tmp_path, "search", str(space), "--data", "imagefolder", "--data-dir",
                    str(root))
    refused(result, "have 2 classes (cat, dog), but space my_cells declares 3",
            "--set classes=2", "if a class is missing, add its folder")
    assert not runs_in(tmp_path)
    agreed = spacec(tmp_path, "search", str(space), "--set", "classes=2", "--data",
                    "imagefolder", "--data-dir", str(root))
    assert agreed.exit_code == 0, agreed.output
    assert "classes=2 (--set)" in agreed.stderr


def test_images_of_another_size_are_resized_only_when_asked(tmp_path, space):
    root = tmp_path / "data"
    write_images(root / "train", 4, size=48)
    write_images(root / "val", 1, size=48)
    common = ["search", str(space), "--data", "imagefolder", "--data-dir", str(root)]
    refused(spacec(tmp_path, *common), "are 48x48, but space my_cells takes 64x64 inputs",
            "--image-size 64")
    refused(spacec(tmp_path, *common, "--image-size", "32"),
            "--image-size 32 resizes the images to 32x32, but space my_cells takes 64x64 "
            "inputs (image_size 64 in its network)", "use --image-size 64")
    assert not runs_in(tmp_path)
    # a shipped space that leaves it to the default is not said to write it
    refused(spacec(tmp_path, "search", "darts_cnn", "--image-size", "16"),
            "space darts_cnn takes 32x32 inputs (its network does not write image_size: 32 is "
            "the default): use --image-size 32")
    resized = spacec(tmp_path, *common, "--image-size", "64")
    assert resized.exit_code == 0, resized.output
    assert "64x64 resized" in resized.stderr
    (run,) = runs_in(tmp_path)
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["image_size"] == 64


def test_images_of_mixed_sizes_are_listed(tmp_path, space):
    root = tmp_path / "data"
    write_images(root, 3)
    Image.new("RGB", (40, 30)).save(root / "cat" / "odd.png")
    result = spacec(tmp_path, "search", str(space), "--data", "imagefolder", "--data-dir",
                    str(root))
    refused(result, "64x64 (9 images), 40x30 (1 image, e.g. ", "odd.png",
            "--image-size N")


def test_a_presets_sizes_are_for_the_shipped_spaces_only(tmp_path, space):
    shipped = spacec(tmp_path, "search", "darts_cnn", "--limit", "8")
    assert shipped.exit_code == 0, shipped.output
    assert "C=8 (preset quick), layers=5 (preset quick), classes=10 (space file)" in \
        shipped.stderr


def test_a_dataset_without_a_data_dir_names_the_flag(tmp_path, space):
    result = spacec(tmp_path, "search", str(space), "--data", "imagefolder")
    refused(result, "needs a data directory: --data-dir DIR")
    assert ".yaml" not in result.stderr  # no internal preset file


# ---------------------------------------------------------------- broken images


def test_a_corrupt_image_stops_the_run_before_anything_is_written(tmp_path, space, splits):
    broken = splits / "train" / "dog" / "3.png"
    broken.write_bytes(broken.read_bytes()[:80])  # the header survives, the pixels do not
    result = spacec(tmp_path, "search", str(space), "--data", "imagefolder", "--data-dir",
                    str(splits))
    refused(result, "1 unreadable image", str(broken), "nothing was written")
    assert not runs_in(tmp_path)


def test_a_corrupt_image_found_mid_run_marks_the_run_failed(tmp_path, space, splits):
    broken = splits / "val" / "owl" / "1.png"
    broken.write_bytes(broken.read_bytes()[:80])
    result = spacec(tmp_path, "search", str(space), "--data", "imagefolder", "--data-dir",
                    str(splits), "--cfg", "data.scan=header")  # headers only: found mid-run
    refused(result, "unreadable image", str(broken))
    (run,) = runs_in(tmp_path)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "unreadable image" in status["error"]
    table = CliRunner().invoke(main, ["runs", str(tmp_path / "runs")])
    assert table.exit_code == 0 and "failed" in table.stdout.splitlines()[1]


# ---------------------------------------------------------------- what a folder may hold


def test_a_16_bit_grey_image_is_scaled_not_clipped(tmp_path):
    from spacec.runtime.domains.image.folders import load_rgb

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as opened:
        assert opened.mode.startswith("I")  # Pillow opens it as 16-bit (I;16 or I)
    loaded = np.asarray(load_rgb(str(tmp_path / "deep.png")))
    assert loaded.shape == (64, 64, 3) and (loaded[..., 0] == loaded[..., 2]).all()
    expected = np.rint(ramp / 257).astype(np.uint8)
    assert (loaded[..., 0] == expected).all()  # clipped, 99.7% of them were 255
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(Exception, match="images of 8 or 16 bits a channel"):
        load_rgb(str(tmp_path / "float.tiff"))


def test_hidden_entries_and_what_is_not_a_file_are_no_images(tmp_path):
    import os

    from spacec.runtime.domains.image.folders import load_image_folder

    root = tmp_path / "data"
    write_images(root, 2)
    write_images(root / ".ipynb_checkpoints", 1, classes=("cat",))  # a hidden folder: no class
    write_images(root / "cat" / ".ipynb_checkpoints", 1, classes=("cat",))
    (root / "dog" / "._0.png").write_bytes(b"macOS metadata")
    os.mkfifo(root / "owl" / "pipe.png")  # reading it would block forever
    dataset = load_image_folder(root)
    assert dataset.classes == list(CLASSES)
    assert len(dataset.samples) == 6


def test_an_image_reached_twice_through_a_link_is_refused(tmp_path):
    from spacec.runtime.domains.image.folders import load_image_folder
    from spacec.runtime.errors import DataError

    root = tmp_path / "data"
    write_images(root, 2)
    (root / "cat" / "again").symlink_to("..", target_is_directory=True)  # back up to data/
    with pytest.raises(DataError, match="reached twice through symbolic links"):
        load_image_folder(root)


def test_an_image_larger_than_pillows_limit_is_named(tmp_path, space, splits, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 = 4096 > 2 x 1000: refused
    result = spacec(tmp_path, "search", str(space), "--data", "imagefolder", "--data-dir",
                    str(splits))
    refused(result, "unreadable image", "decompression bomb")


def test_a_folder_without_class_folders_or_with_an_empty_one_says_which(tmp_path, space):
    loose = tmp_path / "loose"
    write_images(loose, 1, classes=("cat",))
    for image in (loose / "cat").iterdir():
        image.rename(loose / image.name)
    (loose / "cat").rmdir()
    refused(spacec(tmp_path, "search", str(space), "--data", "imagefolder", "--data-dir",
                   str(loose)), "holds images (0.png, ...) but no class folder")
    classes = tmp_path / "classes"
    write_images(classes, 1, classes=("cat", "dog"))
    (classes / "owl").mkdir()
    refused(spacec(tmp_path, "search", str(space), "--data", "imagefolder", "--data-dir",
                   str(classes)), "the class folder owl holds no image")


def test_a_search_says_it_reads_no_test_images_and_a_split_that_is_the_training_folder(
        tmp_path, space, splits):
    result = spacec(tmp_path, "search", str(space), "--data", "imagefolder", "--data-dir",
                    str(splits), "--test-dir", str(splits / "test"), "--val-dir",
                    str(splits / "train"))
    assert result.exit_code == 0, result.output
    assert "a search reads no test images" in result.stderr
    assert f"data.val_dir is the training folder {splits / 'train'}" in result.stderr


def test_a_run_resumed_on_changed_images_is_refused(tmp_path, space, splits):
    """Images removed (or added, renamed, replaced) since the checkpoint: resuming would continue
    another run, on other data (it went on silently, the split reshuffled)."""
    result = spacec(tmp_path, "search", str(space), "--data", "imagefolder", "--data-dir",
                    str(splits))
    assert result.exit_code == 0, result.output
    (run,) = runs_in(tmp_path)
    again = CliRunner().invoke(main, ["search", "--resume", str(run), "-q"])
    assert again.exit_code == 0, again.output  # the same data: the finished run's results
    (splits / "train" / "cat" / "0.png").unlink()
    refused(CliRunner().invoke(main, ["search", "--resume", str(run), "-q"]),
            "the data changed since the checkpoint was written", "train: 18 -> 17")
    Image.new("RGB", (64, 64)).save(splits / "train" / "cat" / "0.png")  # back, other pixels
    refused(CliRunner().invoke(main, ["search", "--resume", str(run), "-q"]),
            "the train split's files (their names or sizes)")
