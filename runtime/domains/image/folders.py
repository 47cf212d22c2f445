"""Image folders: where a user's own images are, and a check of every file before a run starts.

Two layouts are read (``DIR`` is ``data.data_dir``)::

    DIR/CLASS/*.png                   one folder per class: the training images
    DIR/train/CLASS/*.png             the same inside train/, with optional splits beside it:
    DIR/val/CLASS/*.png                 val/ (or valid/, validation/): the validation images
    DIR/test/CLASS/*.png                test/: the test images, reported, never used to choose

A ``DIR/train`` folder that holds folders (not images) marks the second layout; ``data.val_dir``
and ``data.test_dir`` name the validation and test folders explicitly in either. Folders named
like splits in the first layout, or other folders beside ``train/`` in the second, are refused:
otherwise ``train`` and ``val`` would silently become two classes.

`scan_folder` opens every image once before anything is written (``decode``: each file fully
decoded, so a corrupt file is found now and not mid-run; ``header``: only the headers, for very
large sets) and counts the image sizes, which the run checks against its space.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torchvision import datasets

from spacec.runtime.errors import DataError

log = logging.getLogger(__name__)

TRAIN_FOLDER = "train"
VAL_FOLDERS = ("val", "valid", "validation")
TEST_FOLDER = "test"
SPLIT_NAMES = (TRAIN_FOLDER, *VAL_FOLDERS, TEST_FOLDER)
SCANS = ("decode", "header")
SHOWN = 5  # files named in an error listing several


@dataclass(frozen=True)
class FolderLayout:
    """The folders of each split; None where a split has none."""

    train: Path
    val: Path | None
    test: Path | None
    nested: bool  # DIR/train/CLASS (True) or DIR/CLASS (False)

    def describe(self, split: str) -> str:
        folder = getattr(self, split)
        return "none" if folder is None else str(folder)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir() if entry.is_dir()
                  and not entry.name.startswith("."))


def folder_layout(data_dir: str, val_dir: str | None, test_dir: str | None) -> FolderLayout:
    """Where the training, validation and test images of an image-folder dataset are."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: missing directory (--data-dir names the folder of your images)")
    train = root / TRAIN_FOLDER
    nested = train.is_dir() and bool(_subfolders(train))
    if nested:
        others = [entry.name for entry in _subfolders(root) if entry.name not in SPLIT_NAMES]
        if others:
            raise DataError(
                f"{root}: holds {TRAIN_FOLDER}/ and also {', '.join(others)}/; with a "
                f"{TRAIN_FOLDER}/ folder every class folder goes inside the splits "
                f"({root}/{TRAIN_FOLDER}/CLASS/*.png, optional val/ and test/ beside it)")
        val = _explicit(val_dir) or next((root / name for name in VAL_FOLDERS
                                          if (root / name).is_dir()), None)
        test = _explicit(test_dir) or ((root / TEST_FOLDER) if (root / TEST_FOLDER).is_dir()
                                       else None)
        return FolderLayout(train, val, test, nested=True)
    split_like = [entry.name for entry in _subfolders(root) if entry.name in SPLIT_NAMES]
    if split_like:
        raise DataError(
            f"{root}: class folders named {', '.join(split_like)} look like dataset splits; "
            f"a split holds one folder per class ({root}/{TRAIN_FOLDER}/CLASS/*.png, "
            f"{root}/val/CLASS/*.png), or name the splits with --val-dir and --test-dir")
    return FolderLayout(root, _explicit(val_dir), _explicit(test_dir), nested=False)


def _explicit(folder: str | None) -> Path | None:
    if folder is None:
        return None
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: missing directory")
    return path


# What Pillow raises for a file it cannot read: a broken or unknown file, a size it refuses
# (DecompressionBombError: more pixels than Image.MAX_IMAGE_PIXELS), an image of more than 8
# bits a channel that spacec does not read (`_eight_bits`).
UNREADABLE = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)
# Single-channel modes of 16 bits (PNG, TIFF): `convert("RGB")` clips them at 255 instead of
# scaling, which turns nearly every pixel white.
SIXTEEN_BITS = ("I;16", "I;16B", "I;16L", "I;16N")


def load_rgb(path: str) -> Image.Image:
    """An image file as RGB (8 bits a channel); DataError naming the file when it cannot be
    read."""
    try:
        with Image.open(path) as image:
            return _eight_bits(image).convert("RGB")
    except UNREADABLE as error:
        raise DataError(f"{path}: unreadable image ({error})") from None


def _eight_bits(image: Image.Image) -> Image.Image:
    """`image` with 8 bits a channel: a 16-bit grey image scaled (0-65535 to 0-255, rounded),
    as is a 32-bit integer one whose values lie in 16 bits (how Pillow opens some 16-bit PNGs;
    one whose values all lie in 0-255 is taken as 8-bit); a float or wider image is refused
    (ValueError), its range unknown."""
    if image.mode not in (*SIXTEEN_BITS, "I", "F"):
        return image
    values = np.asarray(image)
    if image.mode == "F" or values.min() < 0 or values.max() > 65535:
        raise ValueError(f"a {image.mode} image of values {values.min()}..{values.max()}: "
                         "spacec reads images of 8 or 16 bits a channel")
    if image.mode == "I" and values.max() <= 255:
        return Image.fromarray(values.astype(np.uint8), "L")
    return Image.fromarray(np.rint(values.astype(np.float64) / 257).astype(np.uint8), "L")


class _ImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder without hidden entries (a `.ipynb_checkpoints` folder is no
    class, `._x.png` no image) and with regular files only (a pipe named x.png would block the
    scan forever)."""

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes, _ = super().find_classes(directory)
        classes = [name for name in classes if not name.startswith(".")]
        if not classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
        return classes, {name: index for index, name in enumerate(classes)}


def _is_image_file(root: Path, path: str) -> bool:
    """An image file as ImageFolder counts one, not hidden nor in a hidden folder under
    `root`, and a regular file."""
    file = Path(path)
    return (file.name.lower().endswith(datasets.folder.IMG_EXTENSIONS)
            and not any(part.startswith(".") for part in file.relative_to(root).parts)
            and file.is_file())


def load_image_folder(folder: Path, transform=None) -> datasets.ImageFolder:
    """A class-per-folder dataset (``folder/<class>/<image>``) or DataError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: missing directory")
    try:
        dataset = _ImageFolder(str(folder), transform=transform, loader=load_rgb,
                               is_valid_file=functools.partial(_is_image_file, folder))
    except FileNotFoundError as error:  # no class folders, or class folders without images
        raise DataError(_why_empty(folder, error)) from None
    _refuse_linked_twice(folder, dataset.samples)
    return dataset


def _why_empty(folder: Path, error: Exception) -> str:
    """What a folder torchvision found no images in holds instead."""
    loose = [entry.name for entry in folder.iterdir() if entry.is_file()
             and entry.name.lower().endswith(datasets.folder.IMG_EXTENSIONS)]
    if loose:
        return (f"{folder}: holds images ({loose[0]}, ...) but no class folder: put each "
                f"class's images in a folder of its own ({folder}/CLASS/*.png)")
    empty = [entry.name for entry in _subfolders(folder)
             if not any(_is_image_file(folder, str(path)) for path in entry.rglob("*"))]
    if empty:
        return (f"{folder}: the class folder{'s' if len(empty) > 1 else ''} "
                f"{', '.join(empty[:SHOWN])} hold{'' if len(empty) > 1 else 's'} no image "
                "(remove it, or add its images)")
    return f"{folder}: empty folder ({error})"


def _refuse_linked_twice(folder: Path, samples: Sequence[tuple[str, int]]) -> None:
    """One file reached by two paths (a symbolic link to a folder of the data, or back up to
    its own) would be read as two images, perhaps of two classes and in both splits."""
    seen: dict[str, str] = {}
    twice: list[str] = []
    for path, _ in samples:
        real = os.path.realpath(path)
        if real in seen:
            twice.append(f"{path} (also {seen[real]})")
        else:
            seen[real] = path
    if twice:
        shown = "; ".join(twice[:SHOWN]) + (f"; and {len(twice) - SHOWN} more"
                                            if len(twice) > SHOWN else "")
        raise DataError(f"{folder}: {len(twice)} image{'s are' if len(twice) != 1 else ' is'} "
                        f"reached twice through symbolic links: {shown} (a link to a folder of "
                        "the data, or back up to its own, reads its images again)")


# ---------------------------------------------------------------- the scan


@dataclass(frozen=True)
class FolderScan:
    """Every image of a folder opened once: how many, and of which sizes."""

    folder: Path
    count: int
    sizes: dict[tuple[int, int], int]  # (width, height) -> images
    examples: dict[tuple[int, int], str]  # (width, height) -> one file of that size

    def uniform_size(self) -> tuple[int, int] | None:
        """(width, height) when every image has it."""
        return next(iter(self.sizes)) if len(self.sizes) == 1 else None

    def describe_sizes(self) -> str:
        """``64x64 (238 images), 48x48 (2 images, e.g. cat/7.png)``, most common first."""
        parts = []
        for (width, height), count in sorted(self.sizes.items(), key=lambda item: -item[1]):
            example = "" if count > 2 or len(self.sizes) == 1 else \
                f", e.g. {self.examples[(width, height)]}"
            parts.append(f"{width}x{height} ({count} image{'s' if count != 1 else ''}{example})")
        return ", ".join(parts)


def scan_folder(dataset: datasets.ImageFolder, how: str) -> FolderScan:
    """Open every image of `dataset` (``decode`` or ``header``); DataError listing the files
    that cannot be read."""
    if how not in SCANS:
        raise DataError(f"unknown scan {how!r}; valid: {', '.join(SCANS)}")
    started = time.perf_counter()
    sizes: Counter[tuple[int, int]] = Counter()
    examples: dict[tuple[int, int], str] = {}
    bad: list[str] = []
    for path, _ in dataset.samples:
        try:
            with Image.open(path) as image:
                if how == "decode":
                    image.load()
                    _eight_bits(image)  # a float image is refused now, not mid-run
                size = image.size
        except UNREADABLE as error:
            bad.append(f"{path} ({error})")
            continue
        sizes[size] += 1
        examples.setdefault(size, path)
    folder = Path(dataset.root)
    if bad:
        shown = "; ".join(bad[:SHOWN]) + (f"; and {len(bad) - SHOWN} more" if len(bad) > SHOWN
                                          else "")
        raise DataError(f"{folder}: {len(bad)} unreadable image{'s' if len(bad) != 1 else ''}: "
                        f"{shown} (remove or replace them; nothing was written)")
    log.info("%s: %d images checked (%s) in %.1f s", folder, len(dataset.samples), how,
             time.perf_counter() - started)
    return FolderScan(folder, len(dataset.samples), dict(sizes), examples)


def check_same_classes(reference: Sequence[str], other: Sequence[str], split: str, where: str,
                       reference_where: str) -> None:
    """Every split must hold the training images' classes: the labels are class indices."""
    if list(other) == list(reference):
        return
    missing = sorted(set(reference) - set(other))
    extra = sorted(set(other) - set(reference))
    parts = ([f"{', '.join(missing)} missing from {split}"] if missing else []) + \
        ([f"{', '.join(extra)} only in {split}"] if extra else [])
    raise DataError(f"the {split} images ({where}) have classes {', '.join(other)}; the training "
                    f"images ({reference_where}) have {', '.join(reference)}: "
                    f"{'; '.join(parts) or 'another order'}. Every split needs the same class "
                    "folders")
