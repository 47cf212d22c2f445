"""The configuration of a search run (YAML in, YAML out; see spacec.runtime.run.config).

A `SearchConfig` composes ``space`` (`SpaceConfig`), ``data`` (the domain's data config:
`spacec.runtime.domains.image.data.ImageData`, `spacec.runtime.domains.text.data.LanguageData`),
``method`` (`MethodConfig`: which search method, spacec.runtime.search.methods), ``optim``
(`OptimConfig`, the weights' SGD), ``arch`` (`spacec.runtime.search.architect.ArchConfig`: α's
Adam, the α-gradient order and the strategy) and ``run`` (`RunConfig`: seed, device,
checkpoints). Presets are ``runtime/configs/search_<name>.yaml`` (a sequence space's
``search_rnn_<name>.yaml``).
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
from spacec.runtime.search.architect import ArchConfig
from spacec.runtime.search.methods import METHODS
from spacec.runtime.search.strategy import STRATEGIES

PRESET_PREFIX = "search_"
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class OptimConfig:
    """The weights' optimiser and its schedule. Defaults: quark0/darts cnn/train_search.py."""

    epochs: int = 50  # --epochs 50
    lr: float = 0.025  # --learning_rate 0.025 (η₀)
    lr_min: float = 0.001  # --learning_rate_min 0.001 (η_min of the cosine schedule)
    momentum: float = 0.9  # --momentum 0.9
    weight_decay: float = 3e-4  # --weight_decay 3e-4
    grad_clip: float | None = 5.0  # --grad_clip 5 (total norm of the weight gradient)
    schedule: str = "cosine"  # CosineAnnealingLR(epochs, eta_min=lr_min); "constant" keeps lr

    def __post_init__(self) -> None:
        check_sgd_settings(self, SCHEDULES)


@dataclass(frozen=True)
class MethodConfig:
    """Which search method (spacec.runtime.search.methods.METHODS)."""

    name: str = "darts"

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise ValueError(f"unknown method {self.name!r}; known: {', '.join(METHODS.names())}")


@dataclass(frozen=True)
class SearchConfig:
    """Everything that determines a search run."""

    task: str = "image"  # the space's domain
    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: Any = field(default_factory=ImageData)  # the domain's data config
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    arch: ArchConfig = field(default_factory=ArchConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        expected = data_config_class(self.task)
        if not isinstance(self.data, expected):
            raise ValueError(f"task {self.task!r} takes data of type {expected.__name__}, "
                             f"got {type(self.data).__name__}")
        if self.arch.mode not in STRATEGIES:
            raise ValueError(f"arch.mode: unknown strategy {self.arch.mode!r}; valid: "
                             f"{', '.join(STRATEGIES.names())}")
        orders = STRATEGIES[self.arch.mode].builder.orders
        if self.arch.order not in orders:
            raise ValueError(f"arch.order {self.arch.order} is not available with "
                             f"arch.mode {self.arch.mode!r} (orders: "
                             f"{', '.join(map(str, orders))})")


def from_dict(data: Any, source: str = "<config>") -> SearchConfig:
    """A `SearchConfig` from parsed YAML; `source` names the file in errors."""
    return yaml_config.from_dict(SearchConfig, data, source, data_config_class)


def to_dict(cfg: SearchConfig) -> dict[str, Any]:
    return yaml_config.to_dict(cfg)


def presets() -> dict[str, Path]:
    """Preset name -> shipped YAML file (``search_<name>.yaml``)."""
    return yaml_config.presets(PRESET_PREFIX)


def preset_for(name: str, task: str) -> str:
    """The preset `name` means for a space of domain `task`: its own (``rnn_quick``) if any."""
    return yaml_config.domain_preset(name, domain(task).preset_prefix, presets())


def load_config(name_or_path: str = "quick",
                overrides: Mapping[str, Any] | None = None) -> SearchConfig:
    """A preset or YAML file, with dotted overrides applied (``{"arch.order": 2}``)."""
    return yaml_config.load_config(SearchConfig, PRESET_PREFIX, data_config_class, name_or_path,
                                   overrides)


def read_config(path: Path) -> SearchConfig:
    """A run directory's config.yaml."""
    return yaml_config.read_config(SearchConfig, path, data_config_class)


write_config = yaml_config.write_config
to_yaml = yaml_config.to_yaml
