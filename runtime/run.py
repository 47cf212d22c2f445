"""What every training loop shares: the run directory, metrics, RNG state, progress, NaN guard.

A run directory holds::

    config.yaml             the resolved configuration (read back by --resume)
    metrics.jsonl           one JSON object per finished epoch
    checkpoint.pt           everything needed to continue (runtime.checkpoint)
    alphas/epoch_NNN.json   α after N epochs, {cell type: [[...] per edge]} (searches only)
    genotype.json           the latest derived genotype (searches only)

Epochs are numbered from 1 in everything a user reads (files, metrics, progress); epoch_000 is
the initial α.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from runtime.checkpoint import CHECKPOINT_NAME
from spacec.files import atomic_write_text

log = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
ALPHAS_DIR = "alphas"
GENOTYPE_NAME = "genotype.json"
TIMESTAMP = "%Y%m%d-%H%M%S"


class TrainingError(Exception):
    """Training cannot go on (a non-finite loss); the last checkpoint on disk is intact."""


# ---------------------------------------------------------------- run directory


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(cls, parent: Path, stem: str) -> RunDir:
        """A new, empty ``parent/<stem>-<YYYYmmdd-HHMMSS>`` (suffixed -2, -3... if taken)."""
        parent = Path(parent).expanduser()
        parent.mkdir(parents=True, exist_ok=True)
        base = f"{stem}-{time.strftime(TIMESTAMP)}"
        for attempt in range(1, 1000):
            path = parent / (base if attempt == 1 else f"{base}-{attempt}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return cls(path.resolve())
        raise FileExistsError(f"{parent / base}: too many runs started this second")

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_NAME

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def genotype_path(self) -> Path:
        return self.path / GENOTYPE_NAME

    def alphas_path(self, epoch: int) -> Path:
        return self.path / ALPHAS_DIR / f"epoch_{epoch:03d}.json"

    def alpha_epochs(self) -> list[int]:
        """Epochs with a saved α, ascending."""
        folder = self.path / ALPHAS_DIR
        epochs = []
        for file in folder.glob("epoch_*.json"):
            number = file.stem.removeprefix("epoch_")
            if number.isdigit():
                epochs.append(int(number))
        return sorted(epochs)

    def write_alphas(self, epoch: int, alphas: Mapping[str, Any]) -> None:
        atomic_write_text(self.alphas_path(epoch), json.dumps(dict(alphas)) + "\n")

    def write_json(self, path: Path, data: Any) -> None:
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        with self.metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(record)) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The metrics records; a torn last line (a crash while appending) is dropped."""
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: skipping a malformed line", self.metrics_path)
        return records

    def keep_metrics_through(self, epoch: int) -> None:
        """Drop records of epochs after `epoch` (written by a run that died before checkpointing)."""
        records = self.read_metrics()
        kept = [r for r in records if isinstance(r.get("epoch"), int) and r["epoch"] <= epoch]
        if len(kept) != len(records):
            log.info("dropping %d metrics record(s) after epoch %d", len(records) - len(kept), epoch)
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))


# ---------------------------------------------------------------- random number generators


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's (when installed) and torch's global generators (CUDA included)."""
    random.seed(seed)
    numpy = _numpy()
    if numpy is not None:
        numpy.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(cuda: bool) -> dict[str, Any]:
    """The global generators' states, as plain data and tensors (loadable with weights_only)."""
    state: dict[str, Any] = {"python": _python_state(random.getstate()),
                             "torch": torch.get_rng_state()}
    numpy = _numpy()
    if numpy is not None:
        kind, keys, position, has_gauss, gauss = numpy.random.get_state()
        state["numpy"] = {"kind": kind, "keys": torch.from_numpy(keys.astype("int64")),
                          "position": int(position), "has_gauss": int(has_gauss),
                          "gauss": float(gauss)}
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    numpy = _numpy()
    if numpy is not None and "numpy" in state:
        saved = state["numpy"]
        keys = saved["keys"].numpy().astype("uint32")
        numpy.random.set_state((saved["kind"], keys, saved["position"], saved["has_gauss"],
                                saved["gauss"]))
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _numpy():
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def resolve_device(name: str) -> torch.device:
    """The torch device for a config's ``device``; ValueError if CUDA is asked for but absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


# ---------------------------------------------------------------- metrics and progress


class Meter:
    """Weighted running means of named metrics over an epoch (weights: samples, tokens)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def update(self, metrics: Mapping[str, float], weight: float = 1.0) -> None:
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * weight
            self.weights[name] = self.weights.get(name, 0.0) + weight

    def means(self) -> dict[str, float]:
        return {name: self.sums[name] / self.weights[name] for name in self.sums
                if self.weights[name] > 0}

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {"sums": dict(self.sums), "weights": dict(self.weights)}

    def load_state_dict(self, state: Mapping[str, Mapping[str, float]]) -> None:
        self.sums = dict(state["sums"])
        self.weights = dict(state["weights"])


def check_finite(value: float, what: str, where: str) -> float:
    """`value`, or TrainingError when it is NaN or infinite."""
    if not math.isfinite(value):
        raise TrainingError(
            f"{what} is {value} at {where}; stopping (the last checkpoint is kept; lower the "
            "learning rate or resume from it)"
        )
    return value


def progress_enabled(quiet: bool) -> bool:
    """Progress bars go to stderr, only when it is a terminal and not silenced."""
    return not quiet and sys.stderr.isatty()


def progress_bar(total: int, initial: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, disable=not enabled,
                leave=False, dynamic_ncols=True, unit="step")


def format_metrics(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{name}={value:.4g}" for name, value in metrics.items())
