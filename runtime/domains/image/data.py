"""Image data for architecture search and evaluation, DARTS conventions.

Every dataset is opened as up to three splits (`open_image_data`): training images, validation
images and test images. The validation split is a dataset's own (an image folder's ``val/``) or,
without one, the part ``[split, N)`` of the training images held out by ``train_portion``
(``split = floor(N * train_portion)``; the CIFAR-10 training set, the packaged sample). The test
split is never used to choose anything: it is only opened to be reported at the end of training.

Search (``search_loaders``): the training images train the network weights w and the validation
images train the architecture α; both use the training augmentation (DARTS ``train_search.py``,
which splits CIFAR-10's training set in two). Training (``training_loaders``): the training
images with augmentation and optional Cutout; the validation images (test-time preprocessing)
choose the best epoch; the test set is evaluated once (DARTS ``train.py``,
``train_imagenet.py``, which evaluate the test set every epoch: spacec does not choose on it).

The size the network receives is the dataset's own (CIFAR's 32, or the one size every file of
an image folder has) unless ``image_size`` asks for resizing; the training and search tasks
check it, and the number of classes, against the space (`check_against_space`), never change it.

Shuffling is reproducible and resumable: each shuffled loader uses an ``EpochSampler`` whose
order is a pure function of (seed, epoch), so a resumed run calls ``start_epoch(loader, epoch,
batches_done)`` and gets exactly the batches it had not seen. Random augmentation draws from
torch's global RNG (per-worker RNGs when ``num_workers > 0``), like torchvision's transforms.

On several processes (a `Shard` of N > 1, spacec.runtime.run.distributed) the configured batch
size is the global batch: each process reads its contiguous 1/N of every global batch of the
same order (`ShardedEpochSampler`), so step k reads the same images whatever N is, and
augmentation draws from a generator seeded by the image's position in its pass
(`SeededItems`), never from the global one, which must stay equal on every process. Evaluation
sets are cut in N contiguous parts.

Datasets are looked up by name in ``IMAGE_SOURCES``: ``sample`` (a packaged CIFAR-10 subset),
``cifar10``, ``imagefolder`` (spacec.runtime.domains.image.folders), ``imagenet`` (evaluation
only) and ``memory`` (a user's own torch datasets, passed to the Python API).
"""

from __future__ import annotations

import hashlib
import logging
import math
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler, Subset
from torchvision import datasets, transforms
from torchvision.datasets.utils import download_and_extract_archive

from spacec.runtime.domains.image.folders import (
    SCANS,
    TRAIN_FOLDER,
    FolderScan,
    check_same_classes,
    folder_layout,
    load_image_folder,
    scan_folder,
)
from spacec.runtime.errors import DataError
from spacec.runtime.run.config import MAX_BATCH
from spacec.runtime.run.distributed import Shard
from spacec.runtime.samples import sample_path

log = logging.getLogger(__name__)

# Per-channel statistics of the CIFAR-10 training set (DARTS utils._data_transforms_cifar10).
CIFAR_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR_STD = (0.24703233, 0.24348505, 0.26158768)
# ImageNet statistics (DARTS train_imagenet.py, torchvision's pretrained models).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CIFAR_IMAGE_SIZE = 32
CIFAR_PADDING = 4  # RandomCrop(32, padding=4), DARTS utils._data_transforms_cifar10
IMAGENET_CROP = 224  # RandomResizedCrop(224) / CenterCrop(224), DARTS train_imagenet.py
IMAGENET_RESIZE_RATIO = 256 / 224  # Resize(256) before CenterCrop(224)
IMAGENET_JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.2}
# Folders list images class by class, so a prefix would hold only the first classes: the
# search split and `limit` use one fixed permutation, the same for every run and seed.
FOLDER_ORDER_SEED = 0
RGB = 3  # images are read as RGB


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ImageData:
    """Which image dataset to read and how to batch it.

    Defaults are DARTS' search settings (``train_search.py``): ``batch_size`` 64,
    ``train_portion`` 0.5, no Cutout. DARTS evaluation uses ``cutout=16`` and batch size 96.
    """

    name: str = "sample"
    data_dir: str | None = None  # not used by "sample", which ships with the package
    # imagefolder only: the validation and test folders (class folders), when not val/ and
    # test/ beside DIR/train (spacec.runtime.domains.image.folders)
    val_dir: str | None = None
    test_dir: str | None = None
    # Without a validation set of its own, the fraction of training images that train (the
    # weights); the rest validate (α in a search, the best epoch in training). 1.0: every image
    # trains and training keeps its last epoch (DARTS train.py trains on all 50,000).
    train_portion: float = 0.5
    cutout: int = 0  # side of the Cutout square in pixels; 0 disables it
    batch_size: int = 64
    num_workers: int = 0
    download: bool = True  # cifar10 only: fetch the dataset when it is absent or corrupt
    limit: int | None = None  # use only the first `limit` training images (tests, smoke runs)
    # Resize every image to image_size x image_size. None: the images' own size (CIFAR's 32;
    # an image folder's files must all have one), ImageNet's 224-pixel crops.
    image_size: int | None = None
    report_test: bool = True  # training: evaluate the test set once at the end (select: false)
    scan: str = "decode"  # image folders: open every image before the run (decode, or header)
    drop_last: bool = False  # keep the last partial batch unless told otherwise

    def __post_init__(self) -> None:
        source = image_source(self.name)
        if source.needs_data_dir and self.data_dir is None:
            raise DataError(f"dataset {self.name!r} needs a data directory: --data-dir DIR "
                            "(data.data_dir in a configuration file)")
        if not source.needs_data_dir and self.data_dir is not None:
            raise DataError(f"dataset {self.name!r} ships with the package; data_dir must be unset")
        for label in ("val_dir", "test_dir"):
            if not source.takes_split_dirs and getattr(self, label) is not None:
                raise DataError(f"dataset {self.name!r} has its own splits; {label} must be unset")
        if not 0.0 < self.train_portion <= 1.0:
            raise DataError(f"train_portion must lie in (0, 1], got {self.train_portion}")
        if self.cutout < 0:
            raise DataError(f"cutout must be >= 0, got {self.cutout}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise DataError(f"batch_size must lie in [1, {MAX_BATCH}], got {self.batch_size}")
        if self.num_workers < 0:
            raise DataError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.limit is not None and self.limit < 1:
            raise DataError(f"limit must be None or >= 1, got {self.limit}")
        if self.image_size is not None and self.image_size < 1:
            raise DataError(f"image_size must be None or >= 1, got {self.image_size}")
        if self.scan not in SCANS:
            raise DataError(f"scan must be one of {', '.join(SCANS)}, got {self.scan!r}")
        if source.prepared and self.image_size is not None:
            raise DataError(f"dataset {self.name!r} comes ready-made; resize its images in "
                            "your datasets' transforms, not with image_size")


@dataclass(frozen=True)
class ImageInfo:
    """What a model needs to know about the data.

    For ``search_loaders`` ``train_count``/``val_count`` are the sizes of the weight split and
    the architecture split; for ``training_loaders`` those of the training and validation
    splits (``eval_loaders``: the training and test sets).
    """

    name: str
    num_classes: int | None  # None: unknown (in-memory datasets without `classes`)
    in_channels: int
    image_size: int
    class_names: tuple[str, ...] | None
    train_count: int
    val_count: int
    test_count: int = 0
    resized: bool = False  # image_size comes from resizing (asked for, or ImageNet's crops)
    origin: Mapping[str, str] = field(default_factory=dict)  # split -> where its images are
    preprocessing: Mapping[str, Any] = field(default_factory=dict)  # `preprocessing_record`
    fingerprint: Mapping[str, Any] = field(default_factory=dict)  # `data_fingerprint`
    # Where a validation split of the data's own comes from, for the data line ("" where
    # train_portion holds part of the training images out)
    held_out: str = ""
    # split -> the smallest and largest label of a user's own dataset (memory), checked against
    # the space's classes before a run starts
    labels: Mapping[str, LabelRange] = field(default_factory=dict)

    def held_out_note(self) -> str:
        return f" ({self.held_out})" if self.held_out else ""


@dataclass(frozen=True)
class LabelRange:
    """The smallest and the largest label of a dataset, each as (label, its first index)."""

    low: tuple[int, int]
    high: tuple[int, int]

# ---------------------------------------------------------------- transforms


@dataclass(frozen=True)
class Cutout:
    """Zero one ``length`` x ``length`` square centred on a random pixel, clipped at the borders.

    DeVries & Taylor 2017, as DARTS applies it: to the normalised CHW tensor, after ``Normalize``.
    """

    length: int

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        _, height, width = image.shape
        centre_y = int(torch.randint(height, ()))
        centre_x = int(torch.randint(width, ()))
        half = self.length // 2
        top, bottom = max(0, centre_y - half), min(height, centre_y + half)
        left, right = max(0, centre_x - half), min(width, centre_x + half)
        out = image.clone()
        out[:, top:bottom, left:right] = 0.0
        return out



def _finish(pil_steps: list[Any], mean: Sequence[float], std: Sequence[float], cutout: int) -> Callable:
    steps = [*pil_steps, transforms.ToTensor(), transforms.Normalize(mean, std)]
    if cutout > 0:
        steps.append(Cutout(cutout))
    return transforms.Compose(steps)


def geometry_steps(resize: int | None, crop: int | None) -> list[Any]:
    """The test-time PIL steps of a preprocessing record: resize the shorter side, then crop
    the centre (either may be absent)."""
    steps: list[Any] = []
    if resize is not None:
        steps.append(transforms.Resize(resize))
    if crop is not None:
        steps.append(transforms.CenterCrop(crop))
    return steps


def _cifar_augment(size: int, resized: bool) -> list[Any]:
    if resized:  # resized when asked (data.image_size): as an image folder resized
        return _folder_augment(size, resized)
    return [transforms.RandomCrop(size, padding=CIFAR_PADDING), transforms.RandomHorizontalFlip()]


def _no_geometry(size: int, resized: bool) -> tuple[int | None, int | None]:
    return None, None


def _folder_augment(size: int, resized: bool) -> list[Any]:
    # Padding scaled like CIFAR's 4 px at 32 px.
    return [
        *geometry_steps(*_folder_geometry(size, resized)),
        transforms.RandomCrop(size, padding=size // 8),
        transforms.RandomHorizontalFlip(),
    ]


def _folder_geometry(size: int, resized: bool) -> tuple[int | None, int | None]:
    return (size, size) if resized else (None, None)


def _imagenet_augment(size: int, resized: bool) -> list[Any]:
    return [
        transforms.RandomResizedCrop(size),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(**IMAGENET_JITTER),
    ]


def _imagenet_geometry(size: int, resized: bool) -> tuple[int | None, int | None]:
    return round(size * IMAGENET_RESIZE_RATIO), size


class Transformed(Dataset):
    """A dataset of (image, label) pairs with `transform` applied to the image (None: as is).

    Datasets are opened once, untransformed; each use (training, evaluation) wraps them.
    """

    def __init__(self, dataset: Dataset, transform: Callable | None) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, label = self.dataset[index]
        return (image if self.transform is None else self.transform(image)), label

# ---------------------------------------------------------------- CIFAR-10 files


class SampleCIFAR10(datasets.CIFAR10):
    """The packaged CIFAR-10 subset: torchvision's CIFAR10 reader with this subset's files."""

    train_list = [["data_batch_1", "d549a594d7b02db1e8097bbd9b82645f"]]
    test_list = [["test_batch", "b08058c0f7b7b3ae76a60cfb309673bc"]]


def _md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cifar_problems(dataset_cls: type[datasets.CIFAR10], root: Path) -> list[str]:
    """Every reason the CIFAR files under ``root`` cannot be read, as ``path: cause`` lines."""
    folder = root / dataset_cls.base_folder
    if not folder.is_dir():
        return [f"{folder}: missing directory"]
    expected = [*dataset_cls.train_list, *dataset_cls.test_list]
    expected.append([dataset_cls.meta["filename"], dataset_cls.meta["md5"]])
    problems = []
    for filename, md5 in expected:
        path = folder / filename
        if not path.is_file():
            problems.append(f"{path}: missing file")
            continue
        actual = _md5_of(path)
        if actual != md5:
            problems.append(f"{path}: bad md5 {actual}, expected {md5} (corrupt or wrong file)")
    return problems


def _download_cifar(dataset_cls: type[datasets.CIFAR10], root: Path, problems: list[str]) -> None:
    log.info("downloading %s to %s", dataset_cls.url, root)
    try:
        download_and_extract_archive(
            dataset_cls.url, str(root), filename=dataset_cls.filename, md5=dataset_cls.tgz_md5
        )
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        raise DataError(
            "; ".join(problems) + f"; downloading {dataset_cls.url} failed: {error}"
        ) from None


def load_cifar(
    dataset_cls: type[datasets.CIFAR10],
    root: Path,
    *,
    train: bool,
    transform: Callable | None = None,
    download: bool = False,
) -> datasets.CIFAR10:
    """Open a CIFAR-10-format dataset (the full one or the packaged sample) or raise DataError.

    ``root`` is the folder that contains ``cifar-10-batches-py``; the folder itself is accepted
    too. Files are checked (presence, md5) before torchvision reads them, so the error names them.
    """
    if root.name == dataset_cls.base_folder and not (root / dataset_cls.base_folder).exists():
        root = root.parent
    problems = cifar_problems(dataset_cls, root)
    if problems and download:
        _download_cifar(dataset_cls, root, problems)
        problems = cifar_problems(dataset_cls, root)
    if problems:
        raise DataError("; ".join(problems))
    try:
        return dataset_cls(str(root), train=train, transform=transform, download=False)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError,
            ImportError) as error:
        raise DataError(
            f"{root / dataset_cls.base_folder}: unreadable CIFAR pickle "
            f"({type(error).__name__}: {error})"
        ) from None


def _sample_root() -> Path:
    try:
        return sample_path("cifar10")
    except FileNotFoundError as error:
        raise DataError(str(error)) from None



def _open_sample(cfg: ImageData, split: str) -> Dataset | None:
    if split == "val":
        return None
    return load_cifar(SampleCIFAR10, _sample_root(), train=split == "train")


def _open_cifar10(cfg: ImageData, split: str) -> Dataset | None:
    if split == "val":
        return None
    return load_cifar(datasets.CIFAR10, Path(cfg.data_dir), train=split == "train",
                      download=cfg.download)


# ---------------------------------------------------------------- image folders


def _open_imagefolder(cfg: ImageData, split: str) -> Dataset | None:
    layout = folder_layout(cfg.data_dir, cfg.val_dir, cfg.test_dir)
    folder = getattr(layout, split)
    return None if folder is None else load_image_folder(folder)


def _open_imagenet(cfg: ImageData, split: str) -> Dataset | None:
    # DIR/train and DIR/val; ImageNet's validation set is the test set papers report, DARTS'
    # train_imagenet.py included: it is this source's test split.
    folder = {"train": "train", "test": "val"}.get(split)
    return None if folder is None else load_image_folder(Path(cfg.data_dir) / folder)


# ---------------------------------------------------------------- a user's own datasets

# The datasets handed to the Python API (spacec.runtime.api) for the run it is building:
# split -> a torch Dataset of (image tensor, label), already transformed by the user.
_MEMORY: dict[str, Dataset | None] = {}


def hold_in_memory(train: Dataset, val: Dataset | None, test: Dataset | None) -> None:
    """Make a user's datasets the ``memory`` source's splits (until the next call)."""
    _MEMORY.clear()
    _MEMORY.update({"train": train, "val": val, "test": test})


def _open_memory(cfg: ImageData, split: str) -> Dataset | None:
    if "train" not in _MEMORY:
        raise DataError("dataset 'memory' is a user's own torch datasets, held by the process "
                        "that was given them: pass them again with data=(train, val) to "
                        "spacec.search or spacec.train")
    return _MEMORY[split]


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class ImageSource:
    """How a dataset name is opened and preprocessed."""

    open: Callable[[ImageData, str], Dataset | None]  # (cfg, split) -> (image, label) dataset
    augment: Callable[[int, bool], list[Any]]  # training PIL steps for (size, resized)
    # (size, resized) -> (resize, crop) of the test-time preprocessing (`geometry_steps`)
    geometry: Callable[[int, bool], tuple[int | None, int | None]]
    mean: tuple[float, float, float] | None  # None: the images come normalised (memory)
    std: tuple[float, float, float] | None
    default_size: int
    fixed_size: int | None  # the one size every file has; None: a folder's own (scanned)
    always_resized: bool  # every image is resized and cropped to the size (ImageNet)
    needs_data_dir: bool
    takes_split_dirs: bool  # val_dir / test_dir
    searchable: bool  # False: evaluation only
    permute_before_split: bool  # True for class-sorted folders
    scanned: bool  # every file is opened before a run (spacec.runtime.domains.image.folders)
    prepared: bool = False  # the datasets yield ready tensors: no transforms are applied


IMAGE_SOURCES: dict[str, ImageSource] = {}


def register_image_source(name: str, source: ImageSource) -> None:
    if name in IMAGE_SOURCES:
        raise ValueError(f"image source {name!r} is already registered")
    IMAGE_SOURCES[name] = source


def image_source(name: str) -> ImageSource:
    if name not in IMAGE_SOURCES:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(IMAGE_SOURCES))}")
    return IMAGE_SOURCES[name]


_CIFAR_STEPS = {
    "augment": _cifar_augment,
    "geometry": _folder_geometry,  # nothing unless resized
    "mean": CIFAR_MEAN,
    "std": CIFAR_STD,
    "default_size": CIFAR_IMAGE_SIZE,
    "fixed_size": CIFAR_IMAGE_SIZE,
    "always_resized": False,
    "takes_split_dirs": False,
    "searchable": True,
    "permute_before_split": False,
    "scanned": False,
}
register_image_source("sample", ImageSource(open=_open_sample, needs_data_dir=False, **_CIFAR_STEPS))
register_image_source("cifar10", ImageSource(open=_open_cifar10, needs_data_dir=True, **_CIFAR_STEPS))
register_image_source(
    "imagefolder",
    ImageSource(
        open=_open_imagefolder,
        augment=_folder_augment,
        geometry=_folder_geometry,
        # Generic natural photographs: the usual ImageNet statistics.
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        default_size=CIFAR_IMAGE_SIZE,
        fixed_size=None,
        always_resized=False,
        needs_data_dir=True,
        takes_split_dirs=True,
        searchable=True,
        permute_before_split=True,
        scanned=True,
    ),
)
register_image_source(
    "imagenet",
    ImageSource(
        open=_open_imagenet,
        augment=_imagenet_augment,
        geometry=_imagenet_geometry,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        default_size=IMAGENET_CROP,
        fixed_size=None,
        always_resized=True,
        needs_data_dir=True,
        takes_split_dirs=False,
        searchable=False,  # DARTS searches on CIFAR-10 and transfers the cell to ImageNet
        permute_before_split=True,
        scanned=True,
    ),
)
register_image_source(
    "memory",
    ImageSource(
        open=_open_memory,
        augment=lambda size, resized: [],
        geometry=_no_geometry,
        mean=None,
        std=None,
        default_size=CIFAR_IMAGE_SIZE,
        fixed_size=None,
        always_resized=False,
        needs_data_dir=False,
        takes_split_dirs=False,
        searchable=True,
        permute_before_split=False,
        scanned=False,
        prepared=True,
    ),
)



# ---------------------------------------------------------------- opening a dataset


@dataclass(frozen=True)
class ImageSplits:
    """A dataset opened for one run, every split checked; no transforms applied yet."""

    cfg: ImageData
    source: ImageSource
    train: Dataset  # (image, label) pairs: PIL images, or ready tensors (prepared sources)
    val: Dataset | None  # a validation set of its own; None: held out of train (train_portion)
    test: Dataset | None  # None: not asked for (a search, report_test false) or there is none
    classes: tuple[str, ...] | None  # None: unknown (in-memory datasets without `classes`)
    in_channels: int
    image_size: int  # the side of the square images the network receives
    resized: bool  # image_size comes from resizing (data.image_size, or ImageNet's crops)
    origin: dict[str, str]  # split -> where its images are
    labels: dict[str, LabelRange] = field(default_factory=dict)  # prepared sources (memory)


def open_image_data(cfg: ImageData, test: bool = False) -> ImageSplits:
    """Open the training and validation splits (and the test split with `test`), check that
    they hold the same classes and, for image folders, that every file can be read.

    Nothing here depends on a space: `check_against_space` compares the result with one.
    """
    source = image_source(cfg.name)
    _warn_same_folders(cfg)
    opened = {"train": source.open(cfg, "train"), "val": source.open(cfg, "val"),
              "test": source.open(cfg, "test") if test else None}
    origin = {split: _origin(cfg, split, dataset) for split, dataset in opened.items()
              if dataset is not None}
    classes = _classes(opened["train"])
    for split in ("val", "test"):
        other = None if opened[split] is None else _classes(opened[split])
        if classes is not None and other is not None:
            check_same_classes(classes, other, split, origin[split], origin["train"])
    scans = ([scan_folder(dataset, cfg.scan) for dataset in opened.values() if dataset is not None]
             if source.scanned else [])
    channels, size, resized = _input_size(cfg, source, opened["train"], scans)
    labels = ({split: label_range(dataset, _yours(split)) for split, dataset in opened.items()
               if dataset is not None and len(dataset)} if source.prepared else {})
    return ImageSplits(cfg, source, opened["train"], opened["val"], opened["test"], classes,
                       channels, size, resized, origin, labels)


def label_range(dataset: Dataset, where: str) -> LabelRange:
    """The smallest and largest label of a user's dataset, read from its label tensor where it
    has one (TensorDataset, `targets`, a Subset of either), else sample by sample; DataError
    unless the labels are class indices (one integer per image)."""
    labels = _labels(dataset)
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype.is_complex \
            or labels.dtype == torch.bool:
        raise DataError(f"{where}: its labels are {labels.dtype} of shape "
                        f"{tuple(labels.shape)}; a label is a class index, one integer per "
                        "image (cross-entropy's target)")
    low, high = int(labels.argmin()), int(labels.argmax())
    return LabelRange((int(labels[low]), low), (int(labels[high]), high))


def _labels(dataset: Dataset) -> torch.Tensor:
    if isinstance(dataset, Subset):
        return _labels(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    if isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) == 2:
        return dataset.tensors[1].reshape(len(dataset), -1).squeeze(1)
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return torch.as_tensor(targets)
    return torch.as_tensor([torch.as_tensor(dataset[index][1]).item()
                            for index in range(len(dataset))])


def _warn_same_folders(cfg: ImageData) -> None:
    """A validation (or test) folder that is the training folder: α, or the choice of the
    best epoch, would be judged on the images the weights are trained on."""
    if cfg.data_dir is None:
        return
    root = Path(cfg.data_dir).expanduser().resolve()
    training = (root, root / TRAIN_FOLDER)  # DIR/CLASS, or DIR/train/CLASS
    for key in ("val_dir", "test_dir"):
        folder = getattr(cfg, key)
        if folder is not None and Path(folder).expanduser().resolve() in training:
            log.warning("data.%s is the training folder %s: its figures are the training "
                        "images'", key, Path(folder).expanduser().resolve())


def _classes(dataset: Any) -> tuple[str, ...] | None:
    names = getattr(dataset, "classes", None)
    return None if names is None else tuple(str(name) for name in names)


def _origin(cfg: ImageData, split: str, dataset: Any) -> str:
    root = getattr(dataset, "root", None)
    if cfg.name in ("imagefolder", "imagenet") and root is not None:
        return str(root)
    if cfg.name == "memory":
        return f"your {split} dataset" if split != "train" else "your own datasets"
    return f"{cfg.name} {'test' if split == 'test' else 'training'} set"


def _input_size(cfg: ImageData, source: ImageSource, train: Dataset,
                scans: Sequence[FolderScan]) -> tuple[int, int, bool]:
    """(channels, side, resized) of the images the network receives."""
    if cfg.image_size is not None:
        return RGB, cfg.image_size, True
    if source.fixed_size is not None:
        return RGB, source.fixed_size, False
    if source.always_resized:
        return RGB, source.default_size, True
    if source.prepared:
        return _prepared_shape(train)
    sizes: dict[tuple[int, int], int] = {}
    examples: dict[tuple[int, int], str] = {}
    for scan in scans:
        for size, count in scan.sizes.items():
            sizes[size] = sizes.get(size, 0) + count
            examples.setdefault(size, scan.examples[size])
    if len(sizes) == 1:
        ((width, height),) = sizes
        if width == height:
            return RGB, width, False
    merged = FolderScan(Path(cfg.data_dir or "."), sum(sizes.values()), sizes, examples)
    raise DataError(f"the images in {cfg.data_dir} are {merged.describe_sizes()}; a network "
                    "takes square images of one size: resize them all to your space's input "
                    "size with --image-size N (data.image_size)")


def _prepared_shape(train: Dataset) -> tuple[int, int, bool]:
    if len(train) == 0:
        raise DataError("your training dataset is empty")
    image, _ = train[0]
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        kind = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise DataError(f"your training dataset yields images of {kind}; spacec takes tensors of "
                        "shape (channels, height, width): end your dataset's transform with "
                        "ToTensor() (and Normalize)")
    channels, height, width = image.shape
    if height != width:
        raise DataError(f"your training dataset yields {height}x{width} images; a network takes "
                        "square images (resize them in the dataset's transform)")
    return int(channels), int(height), False


# ---------------------------------------------------------------- the data against the space


def space_classes(compiled: Any) -> tuple[int, str | None] | None:
    """(classes, the parameter that sets them or None) of a space's classifier head."""
    head = compiled.spec.network.get("head")
    quantity = dict(getattr(head, "args", ())).get("classes")
    if quantity is None:
        return None
    parameter = quantity.py if quantity.py in compiled.params else None
    return int(quantity.value), parameter


def _network_setting(compiled: Any, key: str, value: int) -> str:
    """``image_size 32 in its network``, or that the network leaves it to its default."""
    network = compiled.spec.network
    if network is not None and key in dict(network.written_at):
        return f"{key} {value} in its network"
    return f"its network does not write {key}: {value} is the default"


def check_against_space(info: ImageInfo, compiled: Any, cfg: ImageData) -> None:
    """DataError unless the data fits the space: its classes, channels and input size. The
    space decides; the message says what was found and what to do."""
    channels, height, width = compiled.input_shape
    declared = space_classes(compiled)
    name = compiled.name
    if declared is not None and info.num_classes is not None and declared[0] != info.num_classes:
        classes, parameter = declared
        found = info.class_names or ()
        listing = f" ({', '.join(found)})" if found and len(found) <= 12 else ""
        fix = (f"if the data is right, run with --set {parameter}={info.num_classes}"
               if parameter else "if the data is right, change the classes of the space's head")
        raise DataError(
            f"the training images ({info.origin.get('train', info.name)}) have "
            f"{info.num_classes} classes{listing}, but space {name} declares {classes}: {fix}; "
            "if a class is missing, add its folder of images")
    if declared is not None:
        _check_labels(info, declared[0], name)
    if info.in_channels != channels:
        raise DataError(f"the images have {info.in_channels} channels but space {name} takes "
                        f"{channels} ({_network_setting(compiled, 'in_channels', channels)})")
    if (height, width) == (info.image_size, info.image_size):
        return
    space_size = (f"space {name} takes {height}x{width} inputs "
                  f"({_network_setting(compiled, 'image_size', height)})")
    source = image_source(info.name)
    if cfg.image_size is not None:
        raise DataError(f"--image-size {cfg.image_size} resizes the images to "
                        f"{cfg.image_size}x{cfg.image_size}, but {space_size}: use "
                        f"--image-size {height}")
    if source.fixed_size is not None:
        raise DataError(f"dataset {info.name!r} has {info.image_size}x{info.image_size} images, "
                        f"but {space_size}: resize them with --image-size {height}, or use a "
                        f"space whose image_size is {info.image_size}")
    if source.always_resized:
        raise DataError(f"dataset {info.name!r} is cropped to {info.image_size}x"
                        f"{info.image_size} by default, but {space_size}: use --image-size "
                        f"{height}")
    if source.prepared:
        raise DataError(f"your datasets yield {info.image_size}x{info.image_size} images, but "
                        f"{space_size}: resize them in the datasets' transforms")
    raise DataError(f"the images in {info.origin.get('train', cfg.data_dir)} are "
                    f"{info.image_size}x{info.image_size}, but {space_size}: resize them to the "
                    f"space's size with --image-size {height}, or set image_size "
                    f"{info.image_size} in the space's network")


def _yours(split: str) -> str:
    return f"your {dict(train='training', val='validation').get(split, split)} dataset"


def _check_labels(info: ImageInfo, classes: int, name: str) -> None:
    """Every label of a user's own dataset is a class of the space's head."""
    for split, found in info.labels.items():
        for label, index in (found.low, found.high):
            if not 0 <= label < classes:
                raise DataError(f"{_yours(split)}: the label at index {index} is "
                                f"{label}, but space {name} has {classes} classes (labels 0 to "
                                f"{classes - 1})")


def describe_images(info: ImageInfo, counts: str, extra: str = "") -> str:
    """One line for a terminal: the dataset and where it is, split sizes, classes, image size."""
    classes = "classes unknown" if info.num_classes is None else f"{info.num_classes} classes"
    if info.class_names and len(info.class_names) <= 12:
        classes += f" ({', '.join(info.class_names)})"
    size = f"{info.image_size}x{info.image_size} " + ("resized" if info.resized else "as stored")
    where = info.origin.get("train")
    name = info.name if where is None or where.startswith(info.name) else \
        f"{info.name} ({where})"
    return "; ".join(part for part in (name, counts, classes, size, extra) if part)


def preprocessing_record(splits: ImageSplits) -> dict[str, Any]:
    """How a file becomes the network's input at test time, for exports and `spacec predict`:
    ``resize`` (shorter side) then ``crop`` (centre), both optional; [0, 1] RGB; then
    ``(x - mean) / std`` per channel (mean/std None: the user's datasets came normalised)."""
    resize, crop = splits.source.geometry(splits.image_size, splits.resized)
    return {
        "resize": resize,
        "crop": crop,
        "mean": None if splits.source.mean is None else list(splits.source.mean),
        "std": None if splits.source.std is None else list(splits.source.std),
        "input_shape": [splits.in_channels, splits.image_size, splits.image_size],
        "class_names": None if splits.classes is None else list(splits.classes),
    }



# ---------------------------------------------------------------- reproducible shuffling


def derive_seed(seed: int, *labels: object) -> int:
    """A 63-bit seed from ``seed`` and labels; distinct inputs give unrelated streams."""
    text = ":".join(str(part) for part in (seed, *labels))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


class EpochSampler(Sampler[int]):
    """Yields ``indices`` in an order that is a pure function of (seed, epoch).

    ``set_epoch(e)`` selects epoch e's permutation (a ``torch.Generator`` seeded from the seed and
    e); ``skip(n)`` drops the first n indices of that order, so that a run resumed after k
    batches of size b calls ``skip(k * b)`` (or ``start_epoch(loader, e, k)``) and receives
    exactly the batches it had not seen.
    """

    def __init__(self, indices: Sequence[int], seed: int) -> None:
        super().__init__()
        self.indices = tuple(int(index) for index in indices)
        self.seed = seed
        self.epoch = 0
        self.skipped = 0

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch``'s order, starting from its beginning."""
        self.epoch = epoch
        self.skipped = 0

    def skip(self, n_samples: int) -> None:
        """Start the current epoch after its first ``n_samples`` indices."""
        if not 0 <= n_samples <= len(self.indices):
            raise ValueError(f"cannot skip {n_samples} of {len(self.indices)} samples")
        self.skipped = n_samples

    def order(self) -> list[int]:
        """The full order of the current epoch."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", self.epoch))
        permutation = torch.randperm(len(self.indices), generator=generator).tolist()
        return [self.indices[position] for position in permutation]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.skipped:])

    def __len__(self) -> int:
        return len(self.indices) - self.skipped

    def batches_per_pass(self, batch_size: int, drop_last: bool) -> int:
        """Batches of `batch_size` in one whole pass, whatever has been skipped."""
        count = len(self.indices)
        return count // batch_size if drop_last else math.ceil(count / batch_size)


class ShardedEpochSampler(EpochSampler):
    """One process's share of an `EpochSampler`'s order: its part of every global batch.

    The pass's order is the EpochSampler's; it is cut in global batches of ``global_batch``
    and this process reads its contiguous part of each (`Shard.batch_positions`; a last partial
    batch is cut to a multiple of the processes, or left out with ``drop_last``). It yields
    ``(index, seed)`` pairs for `SeededItems`: an image's augmentation seed is a function of
    (seed, epoch, position in the pass), the same whichever process reads it. ``skip(n)`` and
    ``len`` count this process's samples.
    """

    def __init__(self, indices: Sequence[int], seed: int, shard: Shard, global_batch: int,
                 drop_last: bool) -> None:
        super().__init__(indices, seed)
        self.shard = shard
        self.global_batch = global_batch
        self.positions = tuple(self._positions(drop_last))

    def _positions(self, drop_last: bool) -> Iterator[int]:
        count, batch = len(self.indices), self.global_batch
        for start in range(0, count, batch):
            stop = min(start + batch, count)
            if drop_last and stop - start < batch:
                return
            yield from self.shard.batch_positions(start, stop)

    def skip(self, n_samples: int) -> None:
        if n_samples < 0:
            raise ValueError(f"cannot skip {n_samples} samples")
        self.skipped = min(n_samples, len(self.positions))

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        order = self.order()
        for position in self.positions[self.skipped:]:
            yield order[position], derive_seed(self.seed, "augment", self.epoch, position)

    def __len__(self) -> int:
        return len(self.positions) - self.skipped

    def batches_per_pass(self, batch_size: int, drop_last: bool) -> int:
        # Every global batch gives each process a part; only the last may be shorter.
        return math.ceil(len(self.positions) / batch_size)


class SeededItems(Dataset):
    """``dataset[index]`` for an ``(index, seed)`` item, drawn with torch's CPU generator seeded
    by `seed`; the generator's state is put back after every item.

    Loading then never moves the global generator (on several processes it must stay equal on
    every one), and an image's augmentation depends on its seed alone, not on the process or
    worker that loads it.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)


def pin_for(device: torch.device, *loaders: DataLoader | None) -> None:
    """On a CUDA device, have `loaders` put their batches in page-locked memory, so that the
    tasks' ``.to(device, non_blocking=True)`` copies overlap with computation (with
    ``num_workers > 0``, loading overlaps too); elsewhere nothing changes. Page-locked memory
    serves every CUDA device; the loader's ``pin_memory_device`` stays unset, which torch
    deprecates (set, it warns on every epoch: 2.11 and 2.14 do)."""
    if device.type != "cuda":
        return
    for loader in loaders:
        if loader is not None:
            loader.pin_memory = True


def start_epoch(loader: DataLoader, epoch: int, batches_done: int = 0) -> None:
    """Position a shuffled loader at batch ``batches_done`` of epoch ``epoch``."""
    sampler = loader.sampler
    if not isinstance(sampler, EpochSampler):
        raise TypeError(f"loader is not shuffled by an EpochSampler (it has {type(sampler).__name__})")
    sampler.set_epoch(epoch)
    sampler.skip(min(batches_done * loader.batch_size, len(sampler.indices)))


def shuffled_loader(dataset: Dataset, indices: Sequence[int], sampler_seed: int, batch_size: int,
                    cfg: ImageData, workers_seed: int, shard: Shard | None = None) -> DataLoader:
    """A loader of `indices` in `EpochSampler` order, at global batch `batch_size`; on several
    processes, this process's share (`ShardedEpochSampler`, `SeededItems`)."""
    sampler: EpochSampler
    if shard is not None and shard.distributed:
        sampler = ShardedEpochSampler(indices, sampler_seed, shard, batch_size, cfg.drop_last)
        dataset = SeededItems(dataset)
        batch_size = shard.per_rank(batch_size, "data.batch_size")
    else:
        sampler = EpochSampler(indices, sampler_seed)
    # A loader's own generator: DataLoader otherwise draws its worker base seed from torch's
    # global RNG whenever an iterator starts, which would shift the augmentation stream on resume.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                      num_workers=cfg.num_workers, drop_last=cfg.drop_last,
                      generator=torch.Generator().manual_seed(workers_seed))


def evaluation_subset(dataset: Dataset, indices: Sequence[int], shard: Shard | None,
                      augment_seed: int | None = None) -> Dataset:
    """`dataset` at `indices` in order, this process's contiguous part on several processes;
    with `augment_seed` (an augmented split read by several processes) each image's
    augmentation is seeded by its position."""
    if shard is None or not shard.distributed:
        return Subset(dataset, list(indices))
    part = shard.part(len(indices))
    if augment_seed is None:
        return Subset(dataset, [indices[i] for i in part])
    return Subset(SeededItems(dataset),
                  [(indices[i], derive_seed(augment_seed, "augment", i)) for i in part])


def _shuffled_loader(
    dataset: Dataset, indices: Sequence[int], seed: int, batch_size: int, cfg: ImageData,
    shard: Shard | None = None,
) -> DataLoader:
    if shard is not None and shard.distributed:
        return shuffled_loader(dataset, indices, seed, batch_size, cfg,
                               derive_seed(seed, "workers"), shard)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(indices, seed),
        num_workers=cfg.num_workers,
        drop_last=cfg.drop_last,
        # Seeds the workers' augmentation RNGs; unused without workers.
        generator=torch.Generator().manual_seed(derive_seed(seed, "workers")),
    )



# ---------------------------------------------------------------- loaders


def _training_order(count: int, source: ImageSource, limit: int | None) -> list[int]:
    if source.permute_before_split:
        generator = torch.Generator().manual_seed(FOLDER_ORDER_SEED)
        order = torch.randperm(count, generator=generator).tolist()
    else:
        order = list(range(count))
    return order if limit is None else order[:limit]


def _batch_size(cfg: ImageData, override: int | None) -> int:
    batch_size = cfg.batch_size if override is None else override
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    return batch_size


def _training_transform(splits: ImageSplits) -> Callable | None:
    source = splits.source
    if source.prepared:
        return None
    return _finish(source.augment(splits.image_size, splits.resized), source.mean, source.std,
                   splits.cfg.cutout)


def _test_transform(splits: ImageSplits) -> Callable | None:
    source = splits.source
    if source.prepared:
        return None
    geometry = source.geometry(splits.image_size, splits.resized)
    return _finish(geometry_steps(*geometry), source.mean, source.std, 0)


def _split_indices(splits: ImageSplits) -> tuple[Dataset, list[int], list[int]]:
    """(the dataset both index, training indices, validation indices): a validation set of the
    dataset's own follows the training images; otherwise train_portion holds one out."""
    cfg = splits.cfg
    order = _training_order(len(splits.train), splits.source, cfg.limit)
    if splits.val is not None:
        count = len(splits.train)
        return (ConcatDataset([splits.train, splits.val]), order,
                list(range(count, count + len(splits.val))))
    split = math.floor(len(order) * cfg.train_portion)
    return splits.train, order[:split], order[split:]


def _info(splits: ImageSplits, train_count: int, val_count: int, test_count: int = 0
          ) -> ImageInfo:
    return ImageInfo(
        name=splits.cfg.name,
        num_classes=None if splits.classes is None else len(splits.classes),
        in_channels=splits.in_channels,
        image_size=splits.image_size,
        class_names=splits.classes,
        train_count=train_count,
        val_count=val_count,
        test_count=test_count,
        resized=splits.resized,
        origin=dict(splits.origin),
        preprocessing=preprocessing_record(splits),
        fingerprint=data_fingerprint(splits),
        held_out=_held_out(splits),
        labels=dict(splits.labels),
    )


def _held_out(splits: ImageSplits) -> str:
    """The validation images' origin where they are the data's own (a val folder, your val
    dataset): train_portion then holds nothing out, which the data line says."""
    if splits.val is None:
        return ""
    unused = "" if splits.cfg.train_portion == 1 else \
        f"; data.train_portion {splits.cfg.train_portion} unused"
    return f"{splits.origin.get('val', 'the validation set given')}{unused}"


def data_fingerprint(splits: ImageSplits) -> dict[str, Any]:
    """What a resumed run checks it reads again: each split's number of images and classes and,
    for files on disk (image folders), a digest of their names and sizes: images added, removed
    or replaced since the checkpoint would make it another run."""
    record: dict[str, Any] = {"classes": list(splits.classes or ())}
    for split in ("train", "val", "test"):
        dataset = getattr(splits, split)
        if dataset is None:
            continue
        record[split] = len(dataset)
        samples = getattr(dataset, "samples", None)
        if samples:
            root = Path(getattr(dataset, "root", "."))
            digest = hashlib.sha256()
            for path, label in samples:
                file = Path(path)
                digest.update(f"{file.relative_to(root)}\t{label}\t{file.stat().st_size}\n"
                              .encode())
            record[f"{split}_files"] = digest.hexdigest()
    return record


def _plain_loader(dataset: Dataset, batch_size: int, cfg: ImageData,
                  shard: Shard | None = None) -> DataLoader:
    """`dataset` in order, not augmented; on several processes, this process's contiguous part
    at its share of the global batch."""
    if shard is not None and shard.distributed:
        dataset = evaluation_subset(dataset, range(len(dataset)), shard)
        batch_size = shard.per_rank(batch_size, "data.batch_size")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=cfg.num_workers,
                      drop_last=False)


def search_loaders(
    cfg: ImageData, seed: int, batch_size: int | None = None, splits: ImageSplits | None = None,
    shard: Shard | None = None,
) -> tuple[DataLoader, DataLoader, ImageInfo]:
    """(weights loader, architecture loader, info) for a DARTS search; see the module docstring.

    ``batch_size`` overrides ``cfg.batch_size``; `splits`: the data already opened; `shard`:
    this process's share of both.
    """
    source = image_source(cfg.name)
    if not source.searchable:
        raise DataError(f"dataset {cfg.name!r} is for evaluation only; search on cifar10 or sample")
    batch_size = _batch_size(cfg, batch_size)
    if cfg.test_dir is not None:
        log.warning("data.test_dir (--test-dir) %s: a search reads no test images (spacec train "
                    "reports the test set); not opened", cfg.test_dir)
    splits = splits or open_image_data(cfg)
    base, train_indices, val_indices = _split_indices(splits)
    if not train_indices or not val_indices:
        count = len(train_indices) + len(val_indices)
        raise DataError(
            f"train_portion {cfg.train_portion} of {count} training images leaves a split empty "
            "(a search trains α on the held-out part: set data.train_portion below 1, or give "
            "a validation folder)")
    dataset = Transformed(base, _training_transform(splits))
    weights = _shuffled_loader(dataset, train_indices, derive_seed(seed, "search-w"), batch_size,
                               cfg, shard)
    arch = _shuffled_loader(dataset, val_indices, derive_seed(seed, "search-alpha"), batch_size,
                            cfg, shard)
    return weights, arch, _info(splits, len(train_indices), len(val_indices))


@dataclass(frozen=True)
class TrainingLoaders:
    """The loaders of a training run: training (augmented, shuffled by epoch), validation and
    test (test-time preprocessing, in order; None where there is none)."""

    train: DataLoader
    val: DataLoader | None
    test: DataLoader | None
    info: ImageInfo


def training_loaders(cfg: ImageData, seed: int, splits: ImageSplits | None = None,
                     shard: Shard | None = None) -> TrainingLoaders:
    """The training images (less the held-out part), the validation split that chooses the
    best epoch (none with train_portion 1 and no validation set: the last epoch is kept) and,
    with ``report_test``, the test split. `shard`: this process's share of each."""
    batch_size = _batch_size(cfg, None)
    splits = splits or open_image_data(cfg, test=cfg.report_test)
    base, train_indices, val_indices = _split_indices(splits)
    if not train_indices:
        raise DataError(f"train_portion {cfg.train_portion} of {len(val_indices)} training "
                        "images leaves none to train")
    train = _shuffled_loader(Transformed(base, _training_transform(splits)), train_indices,
                             derive_seed(seed, "eval-train"), batch_size, cfg, shard)
    plain = Transformed(base, _test_transform(splits))
    val = _plain_loader(Subset(plain, val_indices), batch_size, cfg, shard) if val_indices else None
    test = None
    if splits.test is not None:
        test = _plain_loader(Transformed(splits.test, _test_transform(splits)), batch_size, cfg,
                             shard)
    info = _info(splits, len(train_indices), len(val_indices),
                 0 if splits.test is None else len(splits.test))
    return TrainingLoaders(train, val, test, info)


def eval_loaders(
    cfg: ImageData, seed: int, batch_size: int | None = None, shard: Shard | None = None
) -> tuple[DataLoader, DataLoader, ImageInfo]:
    """(training loader, test loader, info): every training image and the test set, as DARTS'
    train.py reads them. ``batch_size`` overrides ``cfg.batch_size``. The test loader is neither
    shuffled nor augmented. `shard`: this process's share of both."""
    batch_size = _batch_size(cfg, batch_size)
    splits = open_image_data(cfg, test=True)
    if splits.test is None:
        raise DataError(f"{cfg.data_dir or cfg.name}: no test set (give one with --test-dir DIR, "
                        "or a test/ folder beside train/)")
    order = _training_order(len(splits.train), splits.source, cfg.limit)
    train_set = Transformed(splits.train, _training_transform(splits))
    train_loader = _shuffled_loader(train_set, order, derive_seed(seed, "eval-train"), batch_size,
                                    cfg, shard)
    test_loader = _plain_loader(Transformed(splits.test, _test_transform(splits)), batch_size, cfg,
                                shard)
    return train_loader, test_loader, _info(splits, len(order), len(splits.test), len(splits.test))


def holdout_loaders(cfg: ImageData, seed: int, shard: Shard | None = None
                    ) -> tuple[DataLoader, DataLoader, ImageInfo]:
    """(training loader, validation loader, info) on the training data only (the selection
    protocol's split); the test set is not opened. `shard`: this process's share of both."""
    loaders = training_loaders(cfg, seed, open_image_data(cfg, test=False), shard)
    if loaders.val is None:
        raise DataError(f"train_portion {cfg.train_portion} holds no training images out to "
                        "validate: set data.train_portion below 1")
    return loaders.train, loaders.val, loaders.info
