"""The configuration of a search run (YAML in, YAML out; see spacec.runtime.run.config).

A `SearchConfig` composes ``space`` (`SpaceConfig`), ``data`` (the domain's data config:
`spacec.runtime.domains.image.data.ImageData`, `spacec.runtime.domains.text.data.LanguageData`),
``method`` (the method's parameters, `spacec.arch.methods.MethodParams`: the section's class
follows its ``name``, e.g. ``method: {name: pc_darts, k: 4}``), ``optim`` (`OptimConfig`, the
weights' SGD), ``arch`` (`spacec.runtime.search.architect.ArchConfig`: α's Adam, the α-gradient
order and the strategy) and ``run`` (`RunConfig`: seed, device, checkpoints). Presets are
``runtime/configs/search_<name>.yaml`` (a sequence space's ``search_rnn_<name>.yaml``).

A method's own settings for a preset (its optimisers' official values for ``paper``, its
parameters scaled down for ``quick``) live in ``runtime/configs/method_<name>.yaml``, one
mapping per preset name; `load_config` merges the chosen method's mapping into a shipped preset
before the command line's overrides. A YAML file of one's own is taken as written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spacec.arch.methods import DartsParams, MethodParams, describe, params_class
from spacec.runtime.domains import data_config_class, domain
from spacec.runtime.domains.image.data import ImageData
from spacec.runtime.errors import ConfigError
from spacec.runtime.run import config as yaml_config
from spacec.runtime.run.config import SECTION_CLASS, RunConfig, SpaceConfig, check_sgd_settings
from spacec.runtime.search.architect import ArchConfig
from spacec.runtime.search.methods import METHODS
from spacec.runtime.search.strategy import STRATEGIES

PRESET_PREFIX = "search_"
METHOD_PRESET_PREFIX = "method_"
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
class SearchConfig:
    """Everything that determines a search run."""

    task: str = "image"  # the space's domain
    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: Any = field(default_factory=ImageData)  # the domain's data config
    # The method's parameters; the class follows the section's `name` (spacec.arch.methods).
    method: MethodParams = field(default_factory=DartsParams,
                                 metadata={SECTION_CLASS: params_class})
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
        check_method(self)


def check_method(cfg: SearchConfig) -> None:
    """The method exists here and applies to the task, strategy and order (ValueError)."""
    name = cfg.method.name
    if name not in METHODS:
        raise ValueError(f"method {name!r} is described but not implemented; implemented: "
                         f"{', '.join(METHODS.names())}")
    info = describe(name)
    if cfg.task not in info.domains:
        reason = f" ({info.domain_notes})" if info.domain_notes else ""
        raise ValueError(f"method {name!r} does not apply to {cfg.task} spaces{reason}; it "
                         f"applies to {', '.join(info.domains)} spaces")
    if not info.shares_weights:
        return
    if cfg.arch.mode not in info.strategies:
        raise ValueError(f"method {name!r} runs with arch.mode "
                         f"{' or '.join(info.strategies)}, not {cfg.arch.mode!r}")
    if cfg.arch.order not in info.orders:
        raise ValueError(f"method {name!r} samples its weights every forward pass: its α gradient "
                         f"is first order (arch.order {' or '.join(map(str, info.orders))}), "
                         f"got arch.order {cfg.arch.order}")


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
    """A preset or YAML file, with dotted overrides applied (``{"arch.order": 2}``).

    For a shipped preset, the method's settings for that preset (``method_<name>.yaml``) are
    merged in first, the method being the one the overrides or the preset name.
    """
    overrides = dict(overrides or {})
    path = yaml_config.locate_config(name_or_path, PRESET_PREFIX)
    data = yaml_config.read_yaml(path)
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    data = dict(data or {})
    source = str(path)
    if name_or_path in presets():
        name = overrides.get("method.name", _section(data, "method").get("name", "darts"))
        overlay = method_settings(str(name), name_or_path)
        if overlay:
            data = merged(data, overlay)
            source = f"{path} with {method_settings_path(str(name))}"
    keys = (yaml_config.TASK, *yaml_config.sections(SearchConfig))
    data = yaml_config.apply_overrides(data, overrides, keys)
    if overrides:
        source += " (with overrides)"
    return from_dict(data, source)


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = data.get(name)
    return section if isinstance(section, Mapping) else {}


def method_settings_path(method: str) -> Path | None:
    """The shipped file of a method's preset settings, if it has one."""
    return yaml_config.presets(METHOD_PRESET_PREFIX).get(method)


def method_settings(method: str, preset: str) -> dict[str, Any]:
    """A method's settings for a shipped preset (a partial configuration; empty if none)."""
    path = method_settings_path(method)
    if path is None:
        return {}
    data = yaml_config.read_yaml(path) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of preset names")
    settings = data.get(preset) or {}
    if not isinstance(settings, Mapping):
        raise ConfigError(f"{path}: {preset}: expected a mapping of sections")
    return dict(settings)


def merged(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overlay` merged in, mapping by mapping (overlay values win)."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def read_config(path: Path) -> SearchConfig:
    """A run directory's config.yaml."""
    return yaml_config.read_config(SearchConfig, path, data_config_class)


write_config = yaml_config.write_config
to_yaml = yaml_config.to_yaml
