"""What every training loop shares: metrics, RNG state, progress, the NaN guard.

The run directory's layout is spacec.runtime.run.rundir's alone. Epochs are numbered from 1 in
everything a user reads (files, metrics, progress).
"""

from __future__ import annotations

import logging
import math
import random
import sys
from collections.abc import Mapping
from typing import Any

import torch
from tqdm import tqdm

from spacec.runtime.errors import TrainingError
from spacec.runtime.run.rundir import RunDir  # noqa: F401  (re-exported for the loops)

log = logging.getLogger(__name__)


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
