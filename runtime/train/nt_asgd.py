"""NT-ASGD (Merity, Keskar & Socher 2018, Sect. 3; AWD-LSTM main.py, DARTS rnn/train.py).

SGD until the validation loss has not improved on the best of all but the last ``nonmono``
evaluations, then `torch.optim.ASGD` with t0=0, lambd=0 (plain SGD steps whose weights are
averaged from the switch on); evaluation and the final test use the averaged weights. The
training loop applies it to any domain when ``optim.nonmono`` is set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class NonMonotoneSwitch:
    """NT-ASGD's trigger: switch from SGD to averaged SGD when the latest validation loss is
    worse than the best of all but the last `nonmono` earlier ones
    (``len(history) > nonmono and loss > min(history[:-nonmono])``)."""

    nonmono: int = 5  # --nonmono 5

    def __post_init__(self) -> None:
        if self.nonmono < 1:
            raise ValueError(f"nonmono must be >= 1, got {self.nonmono}")

    def should_switch(self, history: Sequence[float], loss: float) -> bool:
        """`history`: the validation losses of the earlier SGD epochs, oldest first."""
        return len(history) > self.nonmono and loss > min(history[: -self.nonmono])


def averaged_sgd(params: Any, lr: float, weight_decay: float) -> torch.optim.ASGD:
    """torch.optim.ASGD(t0=0, lambd=0): plain SGD steps, weights averaged from the first step."""
    return torch.optim.ASGD(params, lr=lr, t0=0, lambd=0.0, weight_decay=weight_decay)


def is_averaging(optimizer: torch.optim.Optimizer) -> bool:
    return isinstance(optimizer, torch.optim.ASGD)


@contextmanager
def averaged_weights(model: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Inside the block the model holds ASGD's averages ``ax`` (no-op for other optimisers)."""
    if not is_averaging(optimizer):
        yield
        return
    saved = []
    with torch.no_grad():
        for param in model.parameters():
            average = optimizer.state.get(param, {}).get("ax")
            if average is not None:
                saved.append((param, param.detach().clone()))
                param.copy_(average)
    try:
        yield
    finally:
        with torch.no_grad():
            for param, value in saved:
                param.copy_(value)


def checkpoint_averages(network: nn.Module, state: Mapping[str, Any]
                        ) -> Iterator[tuple[Tensor, Tensor]]:
    """(parameter, ASGD average) pairs of a checkpoint whose optimiser was averaging."""
    if not state["nt_asgd"]["averaging_since"]:
        return
    optimizer = state["optimizer"]
    indices = [index for group in optimizer["param_groups"] for index in group["params"]]
    for index, param in zip(indices, network.parameters(), strict=True):
        average = optimizer["state"].get(index, {}).get("ax")
        if average is not None:
            yield param, average
