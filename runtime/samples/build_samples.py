"""Rebuild the packaged sample datasets from their sources, byte for byte.

    python -m spacec.runtime.samples.build_samples --cifar-dir DIR --wikitext-dir DIR

``--cifar-dir`` holds the project's ``cifar10-mini`` CIFAR-10 pickles ``data_batch_1``,
``test_batch`` and ``batches.meta`` (the first 350/80 images per class of the original
``data_batch_1``/``test_batch``, in original order, with provenance file names). ``--wikitext-dir`` holds
WikiText-2's ``train.txt``, ``valid.txt`` and ``test.txt``. Sources are checked against known
sha256 hashes first, so a rebuild either reproduces the shipped files exactly or refuses.

The pickles are written by a small hand-rolled emitter in the format of the original CIFAR-10
files (protocol 2, Python-2 ``str`` opcodes, numpy's Python-2 ndarray layout) so that both
``pickle.load(f, encoding="bytes")`` (bytes keys) and torchvision's ``encoding="latin1"`` (str
keys) read them, and so the bytes do not depend on the installed Python or numpy version.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import pickle
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
CIFAR_OUT = PACKAGE_DIR / "cifar10" / "cifar-10-batches-py"
WIKITEXT_OUT = PACKAGE_DIR / "wikitext2"

CIFAR_NUM_CLASSES = 10
SAMPLE_TRAIN_PER_CLASS = 100
SAMPLE_TEST_PER_CLASS = 20
WIKITEXT_LINES = {"train.txt": 2000, "valid.txt": 250, "test.txt": 250}

# sha256 of the accepted sources: the cifar10-mini subset (README of shared/data) and
# WikiText-2 v1 tokenized, as in pytorch/examples.
ACCEPTED_SOURCES = {
    "data_batch_1": {"a5008d0af5ea26fd0c3aded9d461a73ea6b9e64592d19b84f2b864f2ad0782de"},
    "test_batch": {"04a9682273b0323e6dcd5a3bfa8cf931d5169df0a3e0f951179143e6e5e8334f"},
    "batches.meta": {"f962466ef690d46b226450fb9aadc74ba4bc64a76aa526b5827fe4bc5c7125cb"},
    "train.txt": {"9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f"},
    "valid.txt": {"f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"},
    "test.txt": {"d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"},
}


@dataclass(frozen=True)
class CifarBatch:
    """One CIFAR-10 batch file's content, with Python-2 ``str`` values as bytes."""

    batch_label: bytes
    labels: tuple[int, ...]
    data: np.ndarray  # uint8 [N, 3072], channel-major R, G, B, each 32x32 row-major
    filenames: tuple[bytes, ...]


# ---------------------------------------------------------------- Python-2 style pickle writer

_PICKLE_BATCH = 1000  # items per APPENDS, pickle.Pickler's batch size (Lib/pickle.py _BATCHSIZE)


def _py2_str(value: bytes) -> bytes:
    if len(value) < 256:
        return pickle.SHORT_BINSTRING + bytes([len(value)]) + value
    return pickle.BINSTRING + struct.pack("<i", len(value)) + value


def _py2_int(value: int) -> bytes:
    if 0 <= value < 2**8:
        return pickle.BININT1 + bytes([value])
    if 0 <= value < 2**16:
        return pickle.BININT2 + struct.pack("<H", value)
    return pickle.BININT + struct.pack("<i", value)


def _py2_list(items: Sequence[bytes]) -> bytes:
    """A list of already-encoded items, appended in batches of 1,000 as CPython's pickler does."""
    batches = [items[start:start + _PICKLE_BATCH] for start in range(0, len(items), _PICKLE_BATCH)]
    encoded = [
        batch[0] + pickle.APPEND if len(batch) == 1
        else pickle.MARK + b"".join(batch) + pickle.APPENDS
        for batch in batches
    ]
    return pickle.EMPTY_LIST + b"".join(encoded)


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii")


def _py2_uint8_matrix(array: np.ndarray) -> bytes:
    """A C-ordered uint8 ndarray as numpy under Python 2 pickled it (``_reconstruct`` + state)."""
    if array.dtype != np.uint8 or array.ndim != 2:
        raise ValueError(f"expected a 2-d uint8 array, got {array.dtype} {array.shape}")
    rows, cols = array.shape
    dtype_state = (
        pickle.MARK + _py2_int(3) + _py2_str(b"|") + pickle.NONE * 3
        + pickle.BININT + struct.pack("<i", -1) + pickle.BININT + struct.pack("<i", -1)
        + _py2_int(0) + pickle.TUPLE
    )
    dtype = (
        _global("numpy", "dtype") + _py2_str(b"u1") + _py2_int(0) + _py2_int(1) + pickle.TUPLE3
        + pickle.REDUCE + dtype_state + pickle.BUILD
    )
    empty_array = (
        _global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray")
        + _py2_int(0) + pickle.TUPLE1 + _py2_str(b"b") + pickle.TUPLE3 + pickle.REDUCE
    )
    state = (
        pickle.MARK + _py2_int(1) + _py2_int(rows) + _py2_int(cols) + pickle.TUPLE2 + dtype
        + pickle.NEWFALSE + _py2_str(np.ascontiguousarray(array).tobytes()) + pickle.TUPLE
    )
    return empty_array + state + pickle.BUILD


def cifar_batch_pickle(batch: CifarBatch) -> bytes:
    """Serialise a batch with the keys, order and opcodes of the original CIFAR-10 files."""
    items = (
        _py2_str(b"batch_label") + _py2_str(batch.batch_label)
        + _py2_str(b"labels") + _py2_list([_py2_int(label) for label in batch.labels])
        + _py2_str(b"data") + _py2_uint8_matrix(batch.data)
        + _py2_str(b"filenames") + _py2_list([_py2_str(name) for name in batch.filenames])
    )
    return pickle.PROTO + bytes([2]) + pickle.EMPTY_DICT + pickle.MARK + items + pickle.SETITEMS + pickle.STOP


# ---------------------------------------------------------------- building


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checked_source(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise SystemExit(f"{path}: source file not found")
    digest = sha256_of(path)
    if digest not in ACCEPTED_SOURCES[name]:
        raise SystemExit(f"{path}: unexpected sha256 {digest}; the sample would not be reproducible")
    return path


def read_cifar_batch(path: Path) -> CifarBatch:
    with path.open("rb") as handle:
        entry = pickle.load(handle, encoding="bytes")
    return CifarBatch(
        batch_label=entry[b"batch_label"],
        labels=tuple(int(label) for label in entry[b"labels"]),
        data=np.asarray(entry[b"data"], dtype=np.uint8),
        filenames=tuple(entry[b"filenames"]),
    )


def first_per_class(labels: Sequence[int], per_class: int) -> list[int]:
    """Indices of the first ``per_class`` images of every class, in their original order."""
    taken = [0] * CIFAR_NUM_CLASSES
    chosen = []
    for index, label in enumerate(labels):
        if taken[label] < per_class:
            taken[label] += 1
            chosen.append(index)
    if min(taken) < per_class:
        raise SystemExit(f"source has only {min(taken)} images of some class, need {per_class}")
    return chosen


def subset_batch(batch: CifarBatch, per_class: int, batch_label: bytes) -> CifarBatch:
    chosen = first_per_class(batch.labels, per_class)
    return CifarBatch(
        batch_label=batch_label,
        labels=tuple(batch.labels[i] for i in chosen),
        data=batch.data[chosen],
        filenames=tuple(batch.filenames[i] for i in chosen),
    )


def build_cifar_sample(cifar_dir: Path, out_dir: Path = CIFAR_OUT) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    train = subset_batch(
        read_cifar_batch(_checked_source(cifar_dir, "data_batch_1")),
        SAMPLE_TRAIN_PER_CLASS,
        b"spacec sample training batch: first 100 images per class of CIFAR-10 data_batch_1, "
        b"original order",
    )
    test = subset_batch(
        read_cifar_batch(_checked_source(cifar_dir, "test_batch")),
        SAMPLE_TEST_PER_CLASS,
        b"spacec sample testing batch: first 20 images per class of CIFAR-10 test_batch, "
        b"original order",
    )
    (out_dir / "data_batch_1").write_bytes(cifar_batch_pickle(train))
    (out_dir / "test_batch").write_bytes(cifar_batch_pickle(test))
    shutil.copyfile(_checked_source(cifar_dir, "batches.meta"), out_dir / "batches.meta")
    log.info("wrote %d training and %d test images to %s", len(train.labels), len(test.labels), out_dir)


def build_wikitext_sample(wikitext_dir: Path, out_dir: Path = WIKITEXT_OUT) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, line_count in WIKITEXT_LINES.items():
        with _checked_source(wikitext_dir, name).open("rb") as handle:
            head = b"".join(handle.readline() for _ in range(line_count))
        (out_dir / name).write_bytes(head)
        log.info("wrote the first %d lines (%d bytes) of %s", line_count, len(head), name)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar-dir", type=Path, required=True,
                        help="folder with data_batch_1, test_batch, batches.meta")
    parser.add_argument("--wikitext-dir", type=Path, required=True,
                        help="folder with WikiText-2 train.txt, valid.txt, test.txt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_cifar_sample(args.cifar_dir)
    build_wikitext_sample(args.wikitext_dir)
    for path in sorted([*CIFAR_OUT.iterdir(), *WIKITEXT_OUT.glob("*.txt")]):
        log.info("%s  md5 %s  sha256 %s", path.relative_to(PACKAGE_DIR),
                 hashlib.md5(path.read_bytes()).hexdigest(), sha256_of(path))


if __name__ == "__main__":
    main()
