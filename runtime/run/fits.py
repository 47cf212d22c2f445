"""Before a run allocates its network: the cost model's predicted peak against the free memory.

`spacec.cost` predicts, from the compiled IR alone, the peak memory of one search step or one
training step (weights, α and optimiser states, the activations kept for backward, the
second-order step's copies). A run prints that figure at start (`Fit.line`, in the effective
configuration) and refuses to begin, with the
figure, the memory available and what would make it fit (a smaller batch, a lower memory
setting, a partial-channel method: `spacec.cost.NotEnoughMemory`), when it exceeds the free RAM
(MemAvailable) or the GPU's free memory, instead of failing after minutes or swapping. A step
that fits with less to spare than the prediction's error (`spacec.cost.MARGIN`) starts with a
warning that says so and what would leave that margin.

The prediction covers one process: on several, each holds a replica and its share of the batch;
processes on one machine's CPU share its RAM, so each counts on its share of what is free (a
GPU is each process's own).
A space or a method the cost model does not cover (a recurrent space with a memory setting that
recomputes, a method it has no program for) is not refused: the run says it cannot predict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from spacec import cost
from spacec.arch.genotype import Genotype
from spacec.ir import IR

log = logging.getLogger(__name__)


def available_bytes(device: torch.device) -> int | None:
    """The memory a new allocation can get on `device` (None: unknown)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        return cost.available_ram()
    return None  # MPS shares the system's memory without a reliable free figure


@dataclass(frozen=True)
class Fit:
    """A step's predicted peak memory and the memory that was free for it (None: unknown)."""

    what: str  # "search step" or "training step"
    prediction: cost.Prediction
    available: int | None
    sharing: int = 1  # the processes on this machine that share `available`'s memory

    def line(self) -> str:
        """For the effective configuration printed at the start of a run."""
        shared = (f" to each of {self.sharing} processes on this machine"
                  if self.sharing > 1 else "")
        free = ("" if self.available is None
                else f" ({cost.gib(self.available)} available{shared})")
        return (f"predicted peak {cost.gib(self.prediction.total)} per {self.what} at batch "
                f"{self.prediction.batch} (memory {self.prediction.memory}){free}")


def check_memory(predict: Callable[[str], cost.Prediction], device: torch.device, ir: IR,
                 what: str, processes_here: int = 1) -> Fit | None:
    """Predict (`predict(device type)`) and refuse when it cannot fit (NotEnoughMemory).
    `processes_here`: the run's processes on this machine (torchrun's LOCAL_WORLD_SIZE)."""
    try:
        prediction = predict(device.type if device.type in cost.DEVICES else "cpu")
    except cost.CostError as error:
        log.info("no memory prediction for this %s: %s", what, error)
        return None
    available = available_bytes(device)
    sharing = processes_here if device.type != "cuda" else 1
    if available is not None and sharing > 1:
        available //= sharing
    fit = Fit(what, prediction, available, sharing)
    log.info("%s", fit.line())
    if fit.available is not None:
        cost.check_fits(prediction, fit.available, ir)
        warning = cost.close_call(prediction, fit.available, ir)
        if warning is not None:
            log.warning("%s", warning)
    return fit


def check_search_memory(ir: IR, batch: int, order: int, method_name: str,
                        params: Mapping[str, Any], memory: str, bptt: int | None,
                        device: torch.device, processes_here: int = 1) -> Fit | None:
    """`check_memory` for one search step of the run's method (DARTS's program for a method the
    cost model has none for)."""
    name = method_name if method_name in cost.METHODS else "darts"

    def predict(device_type: str) -> cost.Prediction:
        return cost.predict_search(ir, batch, order=order, method_name=name, memory=memory,
                                   device=device_type, bptt=bptt or 35,
                                   method_options=cost.known_options(name, params))

    return check_memory(predict, device, ir, "search step", processes_here)


def check_train_memory(ir: IR, genotype: Genotype, batch: int, auxiliary: bool,
                       drop_path: bool, device: torch.device, processes_here: int = 1
                       ) -> Fit | None:
    """`check_memory` for one training step of a derived image network."""
    if ir.space.network.kind != "image_classifier":
        return None  # the cost model predicts the recurrent search only

    def predict(device_type: str) -> cost.Prediction:
        return cost.predict_train(ir, genotype, batch, auxiliary=auxiliary, drop_path=drop_path,
                                  device=device_type)

    return check_memory(predict, device, ir, "training step", processes_here)
