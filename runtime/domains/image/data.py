"""Image data for architecture search and evaluation, DARTS conventions.

Search (``search_loaders``): the training set is split in two, indices ``[0, split)`` train the
network weights w and ``[split, N)`` train the architecture α, ``split = floor(N *
train_portion)``; both halves use the training augmentation and the test set is never read
(DARTS ``train_search.py``). Evaluation (``eval_loaders``): every training image, with
augmentation and optional Cutout, and the test set without augmentation (DARTS ``train.py``,
``train_imagenet.py``).

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
``cifar10``, ``imagefolder`` (one folder per class) and ``imagenet`` (evaluation only).
"""

from __future__ import annotations

import hashlib
import logging
import math
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torchvision import datasets, transforms
from torchvision.datasets.utils import download_and_extract_archive

from spacec.runtime.errors import DataError
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




# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ImageData:
    """Which image dataset to read and how to batch it.

    Defaults are DARTS' search settings (``train_search.py``): ``batch_size`` 64,
    ``train_portion`` 0.5, no Cutout. DARTS evaluation uses ``cutout=16`` and batch size 96.
    """

    name: str = "sample"
    data_dir: str | None = None  # not used by "sample", which ships with the package
    test_dir: str | None = None  # imagefolder only: class-per-folder test set for evaluation
    train_portion: float = 0.5  # fraction of training images that train w; the rest train α
    cutout: int = 0  # side of the Cutout square in pixels; 0 disables it
    batch_size: int = 64
    num_workers: int = 0
    download: bool = True  # cifar10 only: fetch the dataset when it is absent or corrupt
    limit: int | None = None  # use only the first `limit` training images (tests, smoke runs)
    image_size: int | None = None  # None: the dataset's own size (32, or 224 for imagenet)
    drop_last: bool = False  # keep the last partial batch unless told otherwise

    def __post_init__(self) -> None:
        source = image_source(self.name)
        if source.needs_data_dir and self.data_dir is None:
            raise DataError(f"dataset {self.name!r} needs data_dir")
        if not source.needs_data_dir and self.data_dir is not None:
            raise DataError(f"dataset {self.name!r} ships with the package; data_dir must be unset")
        if not source.takes_test_dir and self.test_dir is not None:
            raise DataError(f"dataset {self.name!r} has its own test set; test_dir must be unset")
        if not 0.0 < self.train_portion < 1.0:
            raise DataError(f"train_portion must lie strictly between 0 and 1, got {self.train_portion}")
        if self.cutout < 0:
            raise DataError(f"cutout must be >= 0, got {self.cutout}")
        if self.batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise DataError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.limit is not None and self.limit < 1:
            raise DataError(f"limit must be None or >= 1, got {self.limit}")
        if self.image_size is not None and self.image_size < 1:
            raise DataError(f"image_size must be None or >= 1, got {self.image_size}")
        if (
            source.fixed_size is not None
            and self.image_size is not None
            and self.image_size != source.fixed_size
        ):
            raise DataError(
                f"dataset {self.name!r} has {source.fixed_size}x{source.fixed_size} images; "
                f"image_size={self.image_size} only applies to imagefolder and imagenet"
            )


@dataclass(frozen=True)
class ImageInfo:
    """What a model needs to know about the data.

    For ``search_loaders`` ``train_count``/``val_count`` are the sizes of the weight split and
    the architecture split; for ``eval_loaders`` those of the training and test sets.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    class_names: tuple[str, ...]
    train_count: int
    val_count: int


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


def _cifar_augment(size: int) -> list[Any]:
    return [transforms.RandomCrop(size, padding=CIFAR_PADDING), transforms.RandomHorizontalFlip()]


def _cifar_preprocess(size: int) -> list[Any]:
    return []


def _folder_augment(size: int) -> list[Any]:
    # Padding scaled like CIFAR's 4 px at 32 px.
    return [
        transforms.Resize(size),
        transforms.RandomCrop(size, padding=size // 8),
        transforms.RandomHorizontalFlip(),
    ]


def _folder_preprocess(size: int) -> list[Any]:
    return [transforms.Resize(size), transforms.CenterCrop(size)]


def _imagenet_augment(size: int) -> list[Any]:
    return [
        transforms.RandomResizedCrop(size),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(**IMAGENET_JITTER),
    ]


def _imagenet_preprocess(size: int) -> list[Any]:
    return [transforms.Resize(round(size * IMAGENET_RESIZE_RATIO)), transforms.CenterCrop(size)]


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


def _open_sample(cfg: ImageData, train: bool, transform: Callable) -> Dataset:
    return load_cifar(SampleCIFAR10, _sample_root(), train=train, transform=transform)


def _open_cifar10(cfg: ImageData, train: bool, transform: Callable) -> Dataset:
    return load_cifar(
        datasets.CIFAR10, Path(cfg.data_dir), train=train, transform=transform, download=cfg.download
    )


# ---------------------------------------------------------------- image folders


def _load_rgb(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"{path}: unreadable image ({error})") from None


def load_image_folder(folder: Path, transform: Callable) -> datasets.ImageFolder:
    """A class-per-folder dataset (``folder/<class>/<image>``) or DataError."""
    if not folder.is_dir():
        raise DataError(f"{folder}: missing directory")
    try:
        return datasets.ImageFolder(str(folder), transform=transform, loader=_load_rgb)
    except FileNotFoundError as error:  # no class folders, or class folders without images
        raise DataError(f"{folder}: empty folder ({error})") from None


def _open_imagefolder(cfg: ImageData, train: bool, transform: Callable) -> Dataset:
    if train:
        return load_image_folder(Path(cfg.data_dir), transform)
    if cfg.test_dir is None:
        raise DataError(f"{cfg.data_dir}: imagefolder evaluation needs test_dir, a held-out test set")
    return load_image_folder(Path(cfg.test_dir), transform)


def _open_imagenet(cfg: ImageData, train: bool, transform: Callable) -> Dataset:
    return load_image_folder(Path(cfg.data_dir) / ("train" if train else "val"), transform)


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class ImageSource:
    """How a dataset name is opened and preprocessed."""

    open: Callable[[ImageData, bool, Callable], Dataset]  # (cfg, train, transform) -> dataset
    augment: Callable[[int], list[Any]]  # training-time PIL steps for an image size
    preprocess: Callable[[int], list[Any]]  # test-time PIL steps for an image size
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_size: int
    fixed_size: int | None  # the only size the files have, or None if images are resized
    needs_data_dir: bool
    takes_test_dir: bool
    searchable: bool  # False: evaluation only
    permute_before_split: bool  # True for class-sorted folders


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
    "preprocess": _cifar_preprocess,
    "mean": CIFAR_MEAN,
    "std": CIFAR_STD,
    "default_size": CIFAR_IMAGE_SIZE,
    "fixed_size": CIFAR_IMAGE_SIZE,
    "takes_test_dir": False,
    "searchable": True,
    "permute_before_split": False,
}
register_image_source("sample", ImageSource(open=_open_sample, needs_data_dir=False, **_CIFAR_STEPS))
register_image_source("cifar10", ImageSource(open=_open_cifar10, needs_data_dir=True, **_CIFAR_STEPS))
register_image_source(
    "imagefolder",
    ImageSource(
        open=_open_imagefolder,
        augment=_folder_augment,
        preprocess=_folder_preprocess,
        # Generic natural photographs: the usual ImageNet statistics.
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        default_size=CIFAR_IMAGE_SIZE,
        fixed_size=None,
        needs_data_dir=True,
        takes_test_dir=True,
        searchable=True,
        permute_before_split=True,
    ),
)
register_image_source(
    "imagenet",
    ImageSource(
        open=_open_imagenet,
        augment=_imagenet_augment,
        preprocess=_imagenet_preprocess,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        default_size=IMAGENET_CROP,
        fixed_size=None,
        needs_data_dir=True,
        takes_test_dir=False,
        searchable=False,  # DARTS searches on CIFAR-10 and transfers the cell to ImageNet
        permute_before_split=True,
    ),
)


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
    ``num_workers > 0``, loading overlaps too); elsewhere nothing changes."""
    if device.type != "cuda":
        return
    for loader in loaders:
        if loader is not None:
            loader.pin_memory = True
            loader.pin_memory_device = str(device)


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


def _class_names(dataset: Any) -> tuple[str, ...]:
    return tuple(str(name) for name in dataset.classes)


def _image_size(cfg: ImageData, source: ImageSource) -> int:
    return cfg.image_size if cfg.image_size is not None else source.default_size


def _batch_size(cfg: ImageData, override: int | None) -> int:
    batch_size = cfg.batch_size if override is None else override
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    return batch_size


def _training_transform(cfg: ImageData, source: ImageSource) -> Callable:
    return _finish(source.augment(_image_size(cfg, source)), source.mean, source.std, cfg.cutout)


def search_loaders(
    cfg: ImageData, seed: int, batch_size: int | None = None, shard: Shard | None = None
) -> tuple[DataLoader, DataLoader, ImageInfo]:
    """(weights loader, architecture loader, info) for a DARTS search; see the module docstring.

    ``batch_size`` overrides ``cfg.batch_size``; `shard`: this process's share of both.
    """
    source = image_source(cfg.name)
    if not source.searchable:
        raise DataError(f"dataset {cfg.name!r} is for evaluation only; search on cifar10 or sample")
    batch_size = _batch_size(cfg, batch_size)
    dataset = source.open(cfg, True, _training_transform(cfg, source))
    order = _training_order(len(dataset), source, cfg.limit)
    split = math.floor(len(order) * cfg.train_portion)
    if not 0 < split < len(order):
        raise DataError(
            f"train_portion {cfg.train_portion} of {len(order)} training images leaves a split empty"
        )
    weights = _shuffled_loader(dataset, order[:split], derive_seed(seed, "search-w"), batch_size,
                               cfg, shard)
    arch = _shuffled_loader(dataset, order[split:], derive_seed(seed, "search-alpha"), batch_size,
                            cfg, shard)
    info = ImageInfo(
        name=cfg.name,
        num_classes=len(dataset.classes),
        in_channels=3,
        image_size=_image_size(cfg, source),
        class_names=_class_names(dataset),
        train_count=split,
        val_count=len(order) - split,
    )
    return weights, arch, info


def eval_loaders(
    cfg: ImageData, seed: int, batch_size: int | None = None, shard: Shard | None = None
) -> tuple[DataLoader, DataLoader, ImageInfo]:
    """(training loader, test loader, info) for training a derived network from scratch.

    ``batch_size`` overrides ``cfg.batch_size``. The test loader is neither shuffled nor augmented.
    `shard`: this process's share of both.
    """
    source = image_source(cfg.name)
    batch_size = _batch_size(cfg, batch_size)
    size = _image_size(cfg, source)
    train_set = source.open(cfg, True, _training_transform(cfg, source))
    test_set = source.open(cfg, False, _finish(source.preprocess(size), source.mean, source.std, 0))
    if list(test_set.classes) != list(train_set.classes):
        raise DataError(
            f"{cfg.name}: test classes {list(test_set.classes)} differ from training classes "
            f"{list(train_set.classes)}"
        )
    order = _training_order(len(train_set), source, cfg.limit)
    train_loader = _shuffled_loader(train_set, order, derive_seed(seed, "eval-train"), batch_size,
                                    cfg, shard)
    if shard is not None and shard.distributed:
        test_set = evaluation_subset(test_set, range(len(test_set)), shard)
        batch_size = shard.per_rank(batch_size, "data.batch_size")
    test_loader = DataLoader(
        test_set, batch_size=batch_size, shuffle=False, num_workers=cfg.num_workers, drop_last=False
    )
    info = ImageInfo(
        name=cfg.name,
        num_classes=len(train_set.classes),
        in_channels=3,
        image_size=size,
        class_names=_class_names(train_set),
        train_count=len(order),
        val_count=len(test_set),
    )
    return train_loader, test_loader, info


def holdout_loaders(cfg: ImageData, seed: int, shard: Shard | None = None
                    ) -> tuple[DataLoader, DataLoader, ImageInfo]:
    """(training loader, validation loader, info) on a split of the training set only.

    The training loader is the search's weights loader (augmented, shuffled by epoch); the
    validation loader reads the other part with the test-time preprocessing, in order.
    `shard`: this process's share of both.
    """
    train_loader, held_out, info = search_loaders(cfg, seed, shard=shard)
    source = image_source(cfg.name)
    plain = _finish(source.preprocess(info.image_size), source.mean, source.std, 0)
    dataset = source.open(cfg, True, plain)
    validation = evaluation_subset(dataset, held_out.sampler.indices, shard)
    val_loader = DataLoader(validation, batch_size=train_loader.batch_size, shuffle=False,
                            num_workers=cfg.num_workers)
    return train_loader, val_loader, info
