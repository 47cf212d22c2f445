"""A run's configuration as the command line and the Python API take it, and its effective form.

`assemble` builds a search's or a training run's configuration from a preset, a YAML file or a
dict, then dotted overrides (``--cfg``), the command line's options (`OPTION_KEYS`, one table for
both) and the space's parameters (``--set``), and remembers where each part came from.
`effective_lines` states what a run will really do once it is built: every space parameter and
its origin (the space file, a preset, ``--set``, a search run, the data), the data with its
classes and image size, the method, the device and threads, what the preset changes. The
command line prints it at the start of a run, and it opens the run's config.yaml as comments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spacec.load import CompiledSpace, compile_file, locate
from spacec.runtime.errors import ConfigError
from spacec.runtime.run import config as yaml_config
from spacec.runtime.search import config as search_config_module
from spacec.runtime.search.config import SearchConfig
from spacec.runtime.train import config as train_config_module
from spacec.runtime.train.config import TrainConfig

OPTION_KEYS = {
    "data": "data.name",
    "data_dir": "data.data_dir",
    "val_dir": "data.val_dir",
    "test_dir": "data.test_dir",
    "image_size": "data.image_size",
    "order": "arch.order",
    "mode": "arch.mode",
    "method": "method.name",
    "seed": "run.seed",
    "epochs": "optim.epochs",
    "batch_size": "data.batch_size",
    "limit": "data.limit",
    "device": "run.device",
    "out": "run.out",
    "checkpoint_every": "run.checkpoint_every",
    "threads": "run.threads",
    "sync_bn": "run.sync_bn",
    "tensorboard": "run.tensorboard",
}
SEARCH_ONLY = ("order", "mode", "method")


def _folder(value: Any) -> str:
    return str(Path(value).expanduser().resolve())


# How an option's value is written into the configuration.
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "order": int,
    "data_dir": _folder,
    "val_dir": _folder,
    "test_dir": _folder,
    "out": str,
}
SPACE_FILE = "space file"


# ---------------------------------------------------------------- configurations


@dataclass(frozen=True)
class _Kind:
    """A search or a training run: its configuration class and presets."""

    name: str
    cls: type
    prefix: str
    preset_for: Callable[[str, str], str]
    from_dict: Callable[[Any, str], Any]


_KINDS = {
    "search": _Kind("search", SearchConfig, search_config_module.PRESET_PREFIX,
                    search_config_module.preset_for, search_config_module.from_dict),
    "train": _Kind("train", TrainConfig, train_config_module.TRAIN_PREFIX,
                   train_config_module.preset_for, train_config_module.config_from_dict),
}


@dataclass(frozen=True)
class Assembled:
    """A configuration and where its parts came from (for the effective configuration)."""

    cfg: Any
    label: str  # "preset quick", "config /path/x.yaml", "the configuration given"
    raw: dict[str, Any]  # the preset's or file's own sections, before any option
    params: dict[str, str]  # space parameter -> who set it explicitly (--set, a search run)
    skipped_run: str = ""  # why a search run's parameters were not applied


def space_reference(space: str) -> str:
    """A path stays valid from any folder (for --resume and derive); shipped names stay names."""
    path = Path(space).expanduser()
    return str(path.resolve()) if path.is_file() else space


def _read_config(kind: _Kind, config: str | Path | Mapping, space: str | None
                 ) -> tuple[dict[str, Any], str, str]:
    """(raw sections, label for the effective configuration, name for errors)."""
    if isinstance(config, Mapping):
        return yaml_config.plain_data(config), "the configuration given", "the configuration given"
    name = str(config)
    if space is not None:
        name = kind.preset_for(name, compile_file(locate(space)).spec.domain)
    path = yaml_config.locate_config(name, kind.prefix)
    raw = yaml_config.read_yaml(path)
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    shipped = yaml_config.presets(kind.prefix).get(name) == path
    label = f"preset {name}" if shipped else f"config {path}"
    return dict(raw or {}), label, (f"the {name!r} preset" if shipped else str(path))


def assemble(kind_name: str, space: str | None, config: str | Path | Mapping = "quick",
             options: Mapping[str, Any] | None = None,
             params: Mapping[str, int | float] | None = None,
             overrides: Mapping[str, Any] | None = None,
             params_label: str = "params") -> Assembled:
    """A run's configuration: the preset or file, then `overrides` (dotted keys), the options,
    the space and its parameters; ConfigError naming what is wrong."""
    kind = _KINDS[kind_name]
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTION_KEYS))
    wrong_kind = sorted(set(options) & set(SEARCH_ONLY)) if kind_name == "train" else []
    if unknown or wrong_kind:
        valid = [key for key in OPTION_KEYS if kind_name == "search" or key not in SEARCH_ONLY]
        raise ConfigError(f"unknown option(s) {', '.join(unknown + wrong_kind)}; valid: "
                          f"{', '.join(valid)} (any other key: overrides={{'section.key': ...}})")
    raw, label, source = _read_config(kind, config, space)
    dotted = assemble_overrides(space, options, params, overrides)
    merged = yaml_config.apply_overrides(raw, dotted,
                                         (yaml_config.TASK, *yaml_config.sections(kind.cls)))
    where = f"{source} with your options" if dotted else source
    cfg = kind.from_dict(merged, where)
    return Assembled(cfg, label, raw, {name: params_label for name in params or {}})


def assemble_overrides(space: str | None, options: Mapping[str, Any],
                       params: Mapping[str, int | float] | None = None,
                       overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Dotted overrides of a configuration: `overrides` (--cfg) first, then the space, the
    options (`OPTION_KEYS`) and the space's parameters (--set)."""
    dotted: dict[str, Any] = dict(overrides or {})
    if space is not None:
        dotted["space.name"] = space_reference(space)
    for option, key in OPTION_KEYS.items():
        value = options.get(option)
        if value is not None:
            dotted[key] = _CONVERT.get(option, lambda v: v)(value)
    for name, value in (params or {}).items():
        dotted[f"space.overrides.{name}"] = value
    return dotted


def search_config(space: str | None = None, config: str | Path | Mapping = "quick",
                  params: Mapping[str, int | float] | None = None,
                  overrides: Mapping[str, Any] | None = None, **options: Any) -> SearchConfig:
    """The configuration `search` would run with (nothing is opened or written)."""
    return assemble("search", space, config, options, params, overrides).cfg


def train_config(space: str | None = None, config: str | Path | Mapping = "quick",
                 params: Mapping[str, int | float] | None = None,
                 overrides: Mapping[str, Any] | None = None, **options: Any) -> TrainConfig:
    """The configuration `train` would run with, before a search run's parameters."""
    return assemble("train", space, config, options, params, overrides).cfg


# ---------------------------------------------------------------- the effective configuration


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _defaults(cfg: Any) -> dict[str, Any]:
    """``section.key`` -> the default of every field of a configuration's sections."""
    defaults = {}
    for section in yaml_config.sections(type(cfg)):
        for item in dataclasses.fields(getattr(cfg, section)):
            if item.default is not dataclasses.MISSING:
                value = item.default
            elif item.default_factory is not dataclasses.MISSING:
                value = item.default_factory()
            else:
                continue
            defaults[f"{section}.{item.name}"] = yaml_config.plain_data(value)
    return defaults


def preset_changes(assembled: Assembled) -> list[str]:
    """``key=value`` for what the preset or file sets away from the defaults (DARTS' settings),
    the space apart (its parameters are shown with their origins)."""
    default = _defaults(assembled.cfg)
    final = _flatten(yaml_config.to_dict(assembled.cfg))
    changes = []
    for key, value in _flatten(assembled.raw).items():
        if key.startswith("space.") or key == yaml_config.TASK:
            continue
        value = yaml_config.plain_data(value)
        # What the preset sets, still in effect (an option may have set it again).
        if default.get(key, object()) != value and final.get(key) == value:
            changes.append(f"{key}={value}")
    return changes


def param_origins(compiled: CompiledSpace, assembled: Assembled,
                  from_data: Mapping[str, Any]) -> dict[str, str]:
    """Space parameter -> where its value came from."""
    cfg = assembled.cfg
    declared = compile_file(locate(cfg.space.name)).params
    shipped = yaml_config.is_shipped_space(cfg.space.name)
    preset_hard = (assembled.raw.get("space") or {}).get("overrides") or {}
    origins = {}
    for name, value in compiled.params.items():
        if name in assembled.params:
            origin = assembled.params[name]
        elif name in from_data:
            origin = "the data"
        elif name in cfg.space.overrides:
            origin = assembled.label if name in preset_hard else "overrides"
        elif shipped and name in cfg.space.optional_overrides:
            origin = assembled.label
        elif value == declared.get(name):
            origin = SPACE_FILE
        else:
            origin = "?"
        origins[name] = origin
    return origins


def _device_line(run_cfg: Any, device: torch.device) -> str:
    if run_cfg.device == "auto":
        why = "auto: CUDA is available" if device.type == "cuda" else "auto: no CUDA device"
    else:
        why = "asked for"
    threads = torch.get_num_threads()
    how = "run.threads" if run_cfg.threads is not None else "torch's default"
    return f"{device} ({why}); {threads} CPU thread{'s' if threads != 1 else ''} ({how})"


def effective_lines(command: str, assembled: Assembled, compiled: CompiledSpace,
                    origins: Mapping[str, str], data: str, method: str,
                    device: torch.device, extra: Sequence[tuple[str, str]] = ()) -> list[str]:
    """The effective configuration of a run, as lines for a terminal and for config.yaml."""
    cfg = assembled.cfg
    params = ", ".join(f"{name}={value} ({origins.get(name, '?')})"
                       for name, value in compiled.params.items())
    rows = [("space", f"{compiled.name} ({compiled.spec.path})"), ("", params), ("data", data),
            ("method" if command == "search" else "training", method),
            ("device", _device_line(cfg.run, device)), ("seed", str(cfg.run.seed))]
    lines = [f"spacec {command}: the effective configuration",
             *(f"  {label:<8} {text}" for label, text in rows)]
    changes = preset_changes(assembled)
    preset = f"  {'config':<8} {assembled.label}"
    if changes:
        preset += f": {', '.join(changes)}"
    optional = cfg.space.optional_overrides
    if optional and not yaml_config.is_shipped_space(cfg.space.name):
        sizes = ", ".join(f"{k}={v}" for k, v in optional.items())
        preset += f"; its sizes ({sizes}) are for the shipped spaces, not applied to yours"
    lines.append(preset)
    if assembled.skipped_run:
        lines.append(f"  {'note':<8} {assembled.skipped_run}")
    lines.extend(f"  {label:<8} {text}" for label, text in extra)
    return lines


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def header_text(lines: Sequence[str]) -> str:
    return "".join(f"# {line}\n" for line in lines)


def search_method(cfg: SearchConfig) -> str:
    order = {1: "first order", 2: "second order"}.get(cfg.arch.order, f"order {cfg.arch.order}")
    optim = cfg.optim
    return (f"{cfg.method.name}: {cfg.arch.mode}, {order}; {plural(optim.epochs, 'epoch')}, "
            f"batch {cfg.data.batch_size}, lr {optim.lr:g} ({optim.schedule}), α lr "
            f"{cfg.arch.lr:g}")


def train_method(cfg: TrainConfig) -> str:
    optim = cfg.optim
    text = (f"{plural(optim.epochs, 'epoch')}, batch {cfg.data.batch_size}, lr {optim.lr:g} "
            f"({optim.schedule})")
    if cfg.task == "image":
        text += (f", cutout {cfg.data.cutout}, auxiliary weight {optim.auxiliary_weight:g}, "
                 f"drop path {optim.drop_path_prob:g}")
    return text
