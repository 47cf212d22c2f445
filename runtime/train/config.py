"""The configuration of a training run (YAML in, YAML out; see spacec.runtime.run.config).

A `TrainConfig` has the sections of a search's configuration less ``arch`` and ``method``:
``space``, ``data`` (the domain's), ``optim`` (`TrainOptimConfig`) and ``run``. Presets are
``runtime/configs/train_<name>.yaml`` (a sequence space's ``train_rnn_<name>.yaml``); the
selection protocol's are ``select_<name>.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spacec.runtime.domains import data_config_class, domain
from spacec.runtime.domains.image.data import ImageData
from spacec.runtime.run import config as yaml_config
from spacec.runtime.run.config import RunConfig, SpaceConfig, check_sgd_settings
from spacec.runtime.run.schedules import LR_SCHEDULES

TRAIN_PREFIX = "train_"
SELECT_PREFIX = "select_"


@dataclass(frozen=True)
class TrainOptimConfig:
    """How the weights are trained: optimiser, schedule, auxiliary loss, drop path.

    Defaults: quark0/darts cnn/train.py (CIFAR-10).
    """

    epochs: int = 600  # --epochs 600
    lr: float = 0.025  # --learning_rate 0.025
    # CosineAnnealingLR(optimizer, epochs): eta_min is left at its default, 0.
    lr_min: float = 0.0
    momentum: float = 0.9  # --momentum 0.9
    weight_decay: float = 3e-4  # --weight_decay 3e-4
    grad_clip: float | None = 5.0  # --grad_clip 5
    # "cosine": CosineAnnealingLR(epochs, lr_min) (train.py); "exponential": StepLR(decay_period,
    # gamma) (train_imagenet.py). Both stepped at the start of an epoch: epoch 0 trains at lr.
    # "constant": lr throughout (DARTS rnn/train.py).
    schedule: str = "cosine"
    gamma: float = 0.97  # exponential only: train_imagenet.py --gamma 0.97
    decay_period: int = 1  # exponential only: train_imagenet.py --decay_period 1
    label_smoothing: float = 0.0  # train.py uses none; train_imagenet.py --label_smooth 0.1
    # --auxiliary --auxiliary_weight 0.4; 0 builds the network without its auxiliary head.
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.2  # --drop_path_prob 0.2, reached linearly at the last epoch
    # Sequence task: NT-ASGD, switch to averaged SGD once the validation loss is worse than the
    # best of all but the last `nonmono` epochs (rnn/train.py --nonmono 5); None: SGD throughout.
    nonmono: int | None = None

    def __post_init__(self) -> None:
        check_sgd_settings(self, LR_SCHEDULES.names())
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must lie in (0, 1], got {self.gamma}")
        if self.decay_period < 1:
            raise ValueError(f"decay_period must be >= 1, got {self.decay_period}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.auxiliary_weight < 0:
            raise ValueError(f"auxiliary_weight must be >= 0, got {self.auxiliary_weight}")
        if not 0 <= self.drop_path_prob < 1:
            raise ValueError(f"drop_path_prob must lie in [0, 1), got {self.drop_path_prob}")
        if self.nonmono is not None and self.nonmono < 1:
            raise ValueError(f"nonmono must be >= 1 or null, got {self.nonmono}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (the genotype is kept beside it)."""

    task: str = "image"  # the space's domain; picks the data config and the task
    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: Any = field(default_factory=ImageData)  # the domain's data config
    optim: TrainOptimConfig = field(default_factory=TrainOptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        expected = data_config_class(self.task)
        if not isinstance(self.data, expected):
            raise ValueError(f"task {self.task!r} takes data of type {expected.__name__}, "
                             f"got {type(self.data).__name__}")


def config_from_dict(data: Any, source: str = "<config>") -> TrainConfig:
    """A `TrainConfig` from parsed YAML; `source` names the file in errors."""
    return yaml_config.from_dict(TrainConfig, data, source, data_config_class)


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return yaml_config.to_dict(cfg)


def presets(prefix: str = TRAIN_PREFIX) -> dict[str, Path]:
    """Preset name -> shipped YAML file (``<prefix><name>.yaml``)."""
    return yaml_config.presets(prefix)


def preset_for(name: str, task: str, prefix: str = TRAIN_PREFIX) -> str:
    """The preset `name` means for a space of domain `task`: its own (``rnn_quick``) if any."""
    return yaml_config.domain_preset(name, domain(task).preset_prefix, presets(prefix))


def load_train_config(name_or_path: str = "quick", overrides: Mapping[str, Any] | None = None,
                      prefix: str = TRAIN_PREFIX) -> TrainConfig:
    """A preset (``quick``, ``paper``, ``imagenet``) or a YAML file, with dotted overrides."""
    return yaml_config.load_config(TrainConfig, prefix, data_config_class, name_or_path,
                                   overrides)


def read_train_config(path: Path) -> TrainConfig:
    return yaml_config.read_config(TrainConfig, path, data_config_class)


config_yaml = yaml_config.to_yaml
