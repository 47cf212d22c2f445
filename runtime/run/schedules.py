"""Learning-rate and drop-path schedules shared by the search and the training loop.

Every schedule is a function of the 0-based epoch and the optimiser section of the configuration
(which has ``epochs``, ``lr``, ``lr_min`` and, for ``exponential``, ``gamma`` and
``decay_period``), stepped at the start of an epoch: epoch 0 runs at ``lr`` exactly, as DARTS'
schedulers stepped at the start of each epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from spacec.registry import Registry

LR_SCHEDULES = Registry("learning-rate schedule")
Schedule = Callable[[int, Any], float]


def cosine_lr(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """η of 0-based `epoch` of `epochs`: η_min + (η₀ − η_min)(1 + cos(π·epoch/epochs)) / 2.

    Epoch 0 trains at η₀ exactly, as DARTS' CosineAnnealingLR stepped at the start of each epoch.
    """
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


@LR_SCHEDULES.register("cosine")
def _cosine(epoch: int, cfg: Any) -> float:
    """CosineAnnealingLR(epochs, eta_min=lr_min) (DARTS train_search.py, train.py)."""
    return cosine_lr(epoch, cfg.epochs, cfg.lr, cfg.lr_min)


@LR_SCHEDULES.register("constant")
def _constant(epoch: int, cfg: Any) -> float:
    """lr throughout (DARTS rnn/train.py)."""
    return cfg.lr


@LR_SCHEDULES.register("exponential")
def exponential_lr(epoch: int, cfg: Any) -> float:
    """StepLR(decay_period, gamma) (DARTS train_imagenet.py): lr · γ^(epoch // period)."""
    return cfg.lr * cfg.gamma ** (epoch // cfg.decay_period)


def learning_rate(epoch: int, cfg: Any) -> float:
    """The learning rate of 0-based `epoch` under `cfg.schedule`."""
    return LR_SCHEDULES[cfg.schedule].builder(epoch, cfg)


def drop_path_prob(epoch: int, epochs: int, final: float) -> float:
    """DARTS train.py: ``model.drop_path_prob = args.drop_path_prob * epoch / args.epochs``."""
    return final * epoch / epochs
