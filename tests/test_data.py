"""Image data: the packaged CIFAR-10 sample, DARTS splits, resumable shuffling, Cutout, errors."""

from __future__ import annotations

import hashlib
import pickle
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets

from spacec.runtime.domains.image.data import (
    CIFAR_MEAN,
    CIFAR_STD,
    Cutout,
    DataError,
    EpochSampler,
    ImageData,
    SampleCIFAR10,
    eval_loaders,
    load_cifar,
    search_loaders,
    start_epoch,
)
from spacec.runtime.samples import sample_path
from spacec.runtime.samples.build_samples import build_cifar_sample, build_wikitext_sample

SHARED_DATA = Path("/work/shared/data")
CIFAR_MINI = SHARED_DATA / "cifar10-mini" / "cifar-10-batches-py"
WIKITEXT = SHARED_DATA / "wikitext-2"


def labels_of(loader) -> list[int]:
    return [int(label) for _, labels in loader for label in labels]


@pytest.fixture
def sample_copy(tmp_path: Path) -> Path:
    """A writable copy of the packaged sample: tmp_path/cifar-10-batches-py/..."""
    shutil.copytree(sample_path("cifar10", "cifar-10-batches-py"), tmp_path / "cifar-10-batches-py")
    return tmp_path


# ---------------------------------------------------------------- the packaged sample


def test_sample_is_read_by_torchvisions_cifar10_reader():
    root = sample_path("cifar10")
    train = load_cifar(SampleCIFAR10, root, train=True)
    test = load_cifar(SampleCIFAR10, root, train=False)
    assert isinstance(train, datasets.CIFAR10)
    assert train.data.shape == (1000, 32, 32, 3) and test.data.shape == (200, 32, 32, 3)
    assert Counter(train.targets) == dict.fromkeys(range(10), 100)
    assert Counter(test.targets) == dict.fromkeys(range(10), 20)
    assert train.classes[:3] == ["airplane", "automobile", "bird"]


def test_sample_pickles_have_the_original_bytes_keys_and_layout():
    with sample_path("cifar10", "cifar-10-batches-py", "data_batch_1").open("rb") as handle:
        entry = pickle.load(handle, encoding="bytes")
    assert set(entry) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (1000, 3072)
    assert entry[b"filenames"][0] == b"data_batch_1_00000.png"


def test_sample_is_small_enough_to_ship():
    total = sum(path.stat().st_size for path in sample_path("cifar10").rglob("*") if path.is_file())
    assert total < 4 * 1024 * 1024


@pytest.mark.skipif(not CIFAR_MINI.is_dir() or not WIKITEXT.is_dir(), reason="sources absent")
def test_build_script_reproduces_the_packaged_files(tmp_path: Path):
    build_cifar_sample(CIFAR_MINI, tmp_path / "cifar")
    build_wikitext_sample(WIKITEXT, tmp_path / "wikitext2")
    shipped = {
        "cifar": sample_path("cifar10", "cifar-10-batches-py"),
        "wikitext2": sample_path("wikitext2"),
    }
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        assert (tmp_path / "cifar" / name).read_bytes() == (shipped["cifar"] / name).read_bytes()
    for name in ("train.txt", "valid.txt", "test.txt"):
        rebuilt = (tmp_path / "wikitext2" / name).read_bytes()
        assert rebuilt == (shipped["wikitext2"] / name).read_bytes()


# ---------------------------------------------------------------- search split and shuffling


def test_search_split_is_disjoint_and_covers_the_training_set():
    weights, arch, info = search_loaders(ImageData(batch_size=100), seed=0)
    assert (info.train_count, info.val_count) == (500, 500)
    assert weights.sampler.indices == tuple(range(500))
    assert arch.sampler.indices == tuple(range(500, 1000))
    assert info.num_classes == 10 and info.in_channels == 3 and info.image_size == 32


def test_split_uses_floor_of_the_portion_and_limit():
    _, _, info = search_loaders(ImageData(limit=101, train_portion=0.5), seed=0)
    assert (info.train_count, info.val_count) == (50, 51)


def test_an_empty_split_is_an_error():
    with pytest.raises(DataError, match="leaves a split empty"):
        search_loaders(ImageData(limit=1), seed=0)


def test_search_batches_are_normalised_augmented_images_and_keep_the_last_partial_batch():
    weights, _, _ = search_loaders(ImageData(limit=70, train_portion=0.5, batch_size=16), seed=0)
    batches = [images.shape for images, _ in weights]
    assert batches == [(16, 3, 32, 32)] * 2 + [(3, 3, 32, 32)]
    dropped, _, _ = search_loaders(ImageData(limit=70, batch_size=16, drop_last=True), seed=0)
    assert len(list(dropped)) == 2


def test_same_seed_and_epoch_give_the_same_order():
    first, _, _ = search_loaders(ImageData(batch_size=128), seed=3)
    second, _, _ = search_loaders(ImageData(batch_size=128), seed=3)
    for loader in (first, second):
        start_epoch(loader, 2)
    assert labels_of(first) == labels_of(second)
    assert first.sampler.order() == second.sampler.order()
    start_epoch(second, 1)
    assert first.sampler.order() != second.sampler.order()
    other_seed, _, _ = search_loaders(ImageData(batch_size=128), seed=4)
    start_epoch(other_seed, 2)
    assert other_seed.sampler.order() != first.sampler.order()


def test_weight_and_architecture_loaders_shuffle_independently():
    weights, arch, _ = search_loaders(ImageData(), seed=0)
    offsets = [index - 500 for index in arch.sampler.order()]
    assert offsets != weights.sampler.order()


def test_resuming_mid_epoch_reproduces_the_remaining_batches():
    cfg = ImageData(batch_size=64)
    full, _, _ = search_loaders(cfg, seed=7)
    start_epoch(full, 5)
    uninterrupted = [labels.tolist() for _, labels in full]
    resumed, _, _ = search_loaders(cfg, seed=7)
    start_epoch(resumed, 5, batches_done=3)
    assert len(resumed) == len(uninterrupted) - 3
    assert [labels.tolist() for _, labels in resumed] == uninterrupted[3:]
    start_epoch(resumed, 6)  # the next epoch starts from its beginning again
    assert len(resumed) == len(uninterrupted)


def test_epoch_sampler_skip_and_bounds():
    sampler = EpochSampler(range(10, 20), seed=1)
    sampler.set_epoch(4)
    order = sampler.order()
    assert sorted(order) == list(range(10, 20))
    sampler.skip(7)
    assert list(sampler) == order[7:] and len(sampler) == 3
    with pytest.raises(ValueError, match="cannot skip 11 of 10"):
        sampler.skip(11)


def test_start_epoch_needs_an_epoch_sampler():
    _, test_loader, _ = eval_loaders(ImageData(), seed=0)
    with pytest.raises(TypeError, match="EpochSampler"):
        start_epoch(test_loader, 0)


# ---------------------------------------------------------------- evaluation loaders and Cutout


def test_eval_loaders_use_all_training_images_and_the_unaugmented_test_set():
    train, test, info = eval_loaders(ImageData(batch_size=96), seed=0)
    assert (info.train_count, info.val_count) == (1000, 200)
    assert sorted(train.sampler.indices) == list(range(1000))
    first_pass = torch.cat([images for images, _ in test])
    second_pass = torch.cat([images for images, _ in test])
    assert first_pass.shape == (200, 3, 32, 32)
    assert torch.equal(first_pass, second_pass)  # no randomness at test time
    raw = load_cifar(SampleCIFAR10, sample_path("cifar10"), train=False).data[0]
    red = torch.tensor(raw[..., 0], dtype=torch.float32) / 255
    assert torch.allclose(first_pass[0, 0], (red - CIFAR_MEAN[0]) / CIFAR_STD[0], atol=1e-5)


def test_cutout_zeroes_one_square_clipped_at_the_borders():
    torch.manual_seed(0)
    cutout = Cutout(16)
    full_squares = 0
    for _ in range(50):
        zeros = cutout(torch.ones(3, 32, 32)) == 0
        assert torch.equal(zeros[0], zeros[1]) and torch.equal(zeros[0], zeros[2])
        rows = zeros[0].any(dim=1).nonzero().flatten()
        cols = zeros[0].any(dim=0).nonzero().flatten()
        height, width = len(rows), len(cols)
        assert 8 <= height <= 16 and 8 <= width <= 16
        assert int(zeros[0].sum()) == height * width  # one solid rectangle
        assert rows.tolist() == list(range(rows[0], rows[0] + height))
        full_squares += height == width == 16
    assert full_squares > 0
    assert not cutout(torch.ones(1, 8, 8)).any()  # a square larger than the image covers it


def test_the_sample_is_resized_only_when_asked():
    weights, _, info = search_loaders(ImageData(limit=8, batch_size=4, image_size=48), seed=0)
    assert (info.image_size, info.resized) == (48, True)
    assert next(iter(weights))[0].shape == (4, 3, 48, 48)
    _, _, info = search_loaders(ImageData(limit=8, batch_size=4), seed=0)
    assert (info.image_size, info.resized) == (32, False)


def test_eval_cutout_is_applied_after_normalisation():
    train, _, _ = eval_loaders(ImageData(cutout=16, limit=32, batch_size=32), seed=0)
    images, _ = next(iter(train))
    zeros_per_image = (images == 0).flatten(1).sum(dim=1)
    assert bool((zeros_per_image >= 3 * 8 * 8).all())


# ---------------------------------------------------------------- errors


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(DataError, match="unknown dataset 'cifar100'; known: cifar10, imagefolder"):
        ImageData(name="cifar100")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"train_portion": 1.5}, r"train_portion must lie in \(0, 1\]"),
        ({"train_portion": 0.0}, r"train_portion must lie in \(0, 1\]"),
        ({"cutout": -1}, "cutout must be >= 0"),
        ({"batch_size": 0}, "batch_size must lie in \\[1, 2147483647\\]"),
        ({"limit": 0}, "limit must be None or >= 1"),
        ({"data_dir": "x"}, "ships with the package"),
        ({"name": "cifar10"}, "needs a data directory: --data-dir DIR"),
        ({"name": "cifar10", "data_dir": "x", "test_dir": "y"}, "test_dir must be unset"),
        ({"name": "cifar10", "data_dir": "x", "val_dir": "y"}, "val_dir must be unset"),
        ({"scan": "peek"}, "scan must be one of decode, header"),
    ],
)
def test_invalid_configurations(fields, message):
    with pytest.raises(DataError, match=message):
        ImageData(**fields)


def test_missing_cifar_directory_names_the_path(tmp_path: Path):
    cfg = ImageData(name="cifar10", data_dir=str(tmp_path / "absent"), download=False)
    with pytest.raises(DataError, match="missing directory") as raised:
        search_loaders(cfg, seed=0)
    assert str(tmp_path / "absent" / "cifar-10-batches-py") in str(raised.value)


def test_cifar10_path_checks_every_file(sample_copy: Path):
    # The sample is not the full dataset: the cifar10 reader names each missing or wrong file.
    cfg = ImageData(name="cifar10", data_dir=str(sample_copy), download=False)
    with pytest.raises(DataError) as raised:
        eval_loaders(cfg, seed=0)
    message = str(raised.value)
    assert f"{sample_copy / 'cifar-10-batches-py' / 'data_batch_1'}: bad md5" in message
    assert f"{sample_copy / 'cifar-10-batches-py' / 'data_batch_5'}: missing file" in message


def test_corrupt_pickle_fails_its_md5(sample_copy: Path):
    batch = sample_copy / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(DataError, match="bad md5") as raised:
        load_cifar(SampleCIFAR10, sample_copy, train=True)
    assert str(batch) in str(raised.value)


def test_unreadable_pickle_with_a_matching_md5(sample_copy: Path):
    batch = sample_copy / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(b"not a pickle")

    class Truncated(SampleCIFAR10):
        train_list = [["data_batch_1", hashlib.md5(b"not a pickle").hexdigest()]]

    with pytest.raises(DataError, match="unreadable CIFAR pickle") as raised:
        load_cifar(Truncated, sample_copy, train=True)
    assert str(sample_copy / "cifar-10-batches-py") in str(raised.value)


def test_cifar_folder_itself_is_accepted_as_root(sample_copy: Path):
    dataset = load_cifar(SampleCIFAR10, sample_copy / "cifar-10-batches-py", train=False)
    assert len(dataset) == 200


# ---------------------------------------------------------------- image folders


def write_image_folder(root: Path, classes: int, per_class: int, size: int) -> Path:
    generator = np.random.default_rng(0)
    for label in range(classes):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for index in range(per_class):
            pixels = generator.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


def test_imagefolder_search_split_is_a_fixed_permutation(tmp_path: Path):
    root = write_image_folder(tmp_path / "train", classes=3, per_class=4, size=40)
    cfg = ImageData(name="imagefolder", data_dir=str(root), batch_size=4)
    weights, arch, info = search_loaders(cfg, seed=0)
    assert (info.train_count, info.val_count, info.num_classes) == (6, 6, 3)
    assert set(weights.sampler.indices).isdisjoint(arch.sampler.indices)
    assert set(weights.sampler.indices) | set(arch.sampler.indices) == set(range(12))
    assert weights.sampler.indices != tuple(range(6))  # not the class-sorted prefix
    again, _, _ = search_loaders(cfg, seed=1)
    assert again.sampler.indices == weights.sampler.indices  # same split for every seed
    images, _ = next(iter(weights))
    assert images.shape == (4, 3, 40, 40)  # the files' own size: nothing is resized unless asked


def test_imagefolder_evaluation_needs_a_test_dir(tmp_path: Path):
    train_dir = write_image_folder(tmp_path / "train", classes=2, per_class=2, size=20)
    test_dir = write_image_folder(tmp_path / "test", classes=2, per_class=1, size=20)
    with pytest.raises(DataError, match="no test set .*--test-dir DIR"):
        eval_loaders(ImageData(name="imagefolder", data_dir=str(train_dir)), seed=0)
    cfg = ImageData(name="imagefolder", data_dir=str(train_dir), test_dir=str(test_dir), image_size=16)
    train, test, info = eval_loaders(cfg, seed=0)
    assert (info.train_count, info.val_count, info.image_size) == (4, 2, 16)
    assert next(iter(test))[0].shape == (2, 3, 16, 16)


def test_empty_and_missing_image_folders(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        search_loaders(ImageData(name="imagefolder", data_dir=str(tmp_path / "empty")), seed=0)
    with pytest.raises(DataError, match="missing directory"):
        search_loaders(ImageData(name="imagefolder", data_dir=str(tmp_path / "absent")), seed=0)


def test_unreadable_image_names_the_file_before_any_batch(tmp_path: Path):
    root = write_image_folder(tmp_path / "train", classes=2, per_class=2, size=8)
    broken = root / "class0" / "0.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match="1 unreadable image") as raised:
        search_loaders(ImageData(name="imagefolder", data_dir=str(root)), seed=0)
    assert str(broken) in str(raised.value)


def test_a_truncated_image_is_found_by_decoding_not_by_its_header(tmp_path: Path):
    root = write_image_folder(tmp_path / "train", classes=2, per_class=2, size=8)
    broken = root / "class1" / "1.png"
    broken.write_bytes(broken.read_bytes()[:60])  # the header survives, the pixels do not
    with pytest.raises(DataError, match="1 unreadable image"):
        search_loaders(ImageData(name="imagefolder", data_dir=str(root)), seed=0)
    weights, arch, _ = search_loaders(
        ImageData(name="imagefolder", data_dir=str(root), scan="header"), seed=0)
    with pytest.raises(DataError, match="unreadable image") as raised:  # mid-run, named
        list(weights) + list(arch)
    assert str(broken) in str(raised.value)


def test_imagenet_folders_are_for_evaluation_at_224(tmp_path: Path):
    write_image_folder(tmp_path / "train", classes=2, per_class=2, size=64)
    write_image_folder(tmp_path / "val", classes=2, per_class=1, size=64)
    cfg = ImageData(name="imagenet", data_dir=str(tmp_path), batch_size=2)
    train, test, info = eval_loaders(cfg, seed=0)
    assert (info.image_size, info.train_count, info.val_count) == (224, 4, 2)
    assert next(iter(train))[0].shape == (2, 3, 224, 224)
    assert next(iter(test))[0].shape == (2, 3, 224, 224)
    with pytest.raises(DataError, match="evaluation only"):
        search_loaders(cfg, seed=0)
