"""The global random generators' state: seeding, and capture/restore for exact resumption.

Captured states are plain data and tensors, so checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch


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
        state["cuda_current"] = torch.cuda.get_rng_state()  # this process's device
    return state


def restore_rng(state: Mapping[str, Any], one_device_per_process: bool = False) -> None:
    """Put the captured states back. `one_device_per_process` (a run on several processes, each
    on its own CUDA device): the current device takes the state of the device the capturing
    process used, since every process's device draws the same numbers as rank 0's."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    numpy = _numpy()
    if numpy is not None and "numpy" in state:
        saved = state["numpy"]
        keys = saved["keys"].numpy().astype("uint32")
        numpy.random.set_state((saved["kind"], keys, saved["position"], saved["has_gauss"],
                                saved["gauss"]))
    if torch.cuda.is_available():
        # A run resumed on another machine or device: restore the GPUs both have; a CPU-only
        # machine has no CUDA generator to restore.
        if one_device_per_process and "cuda_current" in state:
            torch.cuda.set_rng_state(state["cuda_current"])
        elif "cuda" in state:
            for index, gpu_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
                torch.cuda.set_rng_state(gpu_state, index)


def _python_state(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _numpy():
    try:
        import numpy
    except ImportError:
        return None
    return numpy
