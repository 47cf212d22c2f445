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

`run.memory: auto` (the default) is resolved here: the fastest setting whose predicted step fits
the free memory with the prediction's error to spare (`spacec.cost.choose_memory`; `fast` where
nothing can be predicted); the processes of a run then agree on the one that keeps least
(`agreed_memory`), as their free memory can differ.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
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
    chosen: bool = False  # the memory setting was chosen (`auto`), not given
    reason: str = ""  # why `auto` chose a slower setting than the fastest

    def line(self) -> str:
        """For the effective configuration printed at the start of a run."""
        shared = (f" to each of {self.sharing} processes on this machine"
                  if self.sharing > 1 else "")
        free = ("" if self.available is None
                else f" ({cost.gib(self.available)} available{shared})")
        memory = f"auto: {self.memory}" if self.chosen else self.memory
        why = (f"; {self.memory}, the same arithmetic as the faster settings for more time, "
               f"as {self.reason}" if self.reason else "")
        return (f"predicted peak {cost.gib(self.prediction.total)} per {self.what} at batch "
                f"{self.prediction.batch} (memory {memory}){free}{why}")

    @property
    def memory(self) -> str:
        """The memory setting the prediction is for."""
        return self.prediction.memory


def _available(device: torch.device, processes_here: int) -> tuple[int | None, int]:
    """The memory one process may count on, and how many processes share it."""
    available = available_bytes(device)
    sharing = processes_here if device.type != "cuda" else 1
    if available is not None and sharing > 1:
        available //= sharing
    return available, sharing


def _device_type(device: torch.device) -> str:
    return device.type if device.type in cost.DEVICES else "cpu"


def check_memory(predict: Callable[[str], cost.Prediction], device: torch.device, ir: IR,
                 what: str, processes_here: int = 1) -> Fit | None:
    """Predict (`predict(device type)`) and refuse when it cannot fit (NotEnoughMemory).
    `processes_here`: the run's processes on this machine (torchrun's LOCAL_WORLD_SIZE)."""
    try:
        prediction = predict(_device_type(device))
    except cost.CostError as error:
        log.info("no memory prediction for this %s: %s", what, error)
        return None
    available, sharing = _available(device, processes_here)
    fit = Fit(what, prediction, available, sharing)
    log.info("%s", fit.line())
    if fit.available is not None:
        cost.check_fits(prediction, fit.available, ir)
        _warn_if_close(fit, ir)
    return fit


def _warn_if_close(fit: Fit, ir: IR | None) -> None:
    warning = cost.close_call(fit.prediction, fit.available, ir)
    if warning is not None:
        log.warning("%s", warning)


def choose_memory(predict: Callable[[str, str], cost.Prediction], device: torch.device,
                  ir: IR | None, what: str, processes_here: int = 1) -> Fit | None:
    """`check_memory` for `auto`: the step under the fastest memory setting that fits
    (`predict(device type, setting)`; spacec.cost.choose_memory), or None where no setting
    can be predicted (the run then keeps everything, as `fast`). Refuses what no setting fits."""
    available, sharing = _available(device, processes_here)
    try:
        choice = cost.choose_memory(lambda setting: predict(_device_type(device), setting),
                                    available, ir)
    except cost.CostError as error:
        log.info("no memory prediction for this %s (memory auto: %s): %s", what,
                 cost.settings_by_level()[0], error)
        return None
    fit = Fit(what, choice.prediction, available, sharing, chosen=True, reason=choice.reason)
    log.info("%s", fit.line())
    if fit.available is not None:
        _warn_if_close(fit, ir)
    return fit


def resolved_memory(asked: str, fit: Fit | None) -> str:
    """The memory setting a run uses: `asked`, or for `auto` the one its `fit` was chosen for
    (`fast` where none was predicted)."""
    if asked != cost.AUTO:
        return asked
    return cost.settings_by_level()[0] if fit is None else fit.memory


def agreed_memory(settings: Sequence[str]) -> str:
    """Of every process's setting, the one that keeps least: the processes of one run agree."""
    order = cost.settings_by_level()
    return max(settings, key=order.index)


def check_search_memory(ir: IR, batch: int, order: int, method_name: str,
                        params: Mapping[str, Any], memory: str, bptt: int | None,
                        device: torch.device, processes_here: int = 1) -> Fit | None:
    """`check_memory` for one search step of the run's method (DARTS's program for a method the
    cost model has none for); `choose_memory` for memory `auto`."""
    name = method_name if method_name in cost.METHODS else "darts"

    def predict(device_type: str, setting: str) -> cost.Prediction:
        return cost.predict_search(ir, batch, order=order, method_name=name, memory=setting,
                                   device=device_type, bptt=bptt or 35,
                                   method_options=cost.known_options(name, params))

    if memory == cost.AUTO:
        return choose_memory(predict, device, ir, "search step", processes_here)
    return check_memory(lambda device_type: predict(device_type, memory), device, ir,
                        "search step", processes_here)


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
