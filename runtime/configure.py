"""A run's configuration as the command line and the Python API take it, and its effective form.

`assemble` builds a search's or a training run's configuration from a preset, a YAML file or a
dict, then dotted overrides (``--cfg``), the command line's options (`OPTION_KEYS`, one table for
both) and the space's parameters (``--set``), and remembers where each part came from.
`effective_lines` states what a run will really do once it is built: every space parameter and
its origin (the space file, a preset, ``--set``, a search run, the data), the data with its
classes and image size, the method and where it and each of its parameters came from, the device
and threads, what the preset changes. The command line prints it at the start of a run, and it
opens the run's config.yaml as comments.

A search's method, lowest first (`search_sections`): the method's own defaults
(`spacec.arch.methods`), the preset (with the method's settings for that preset,
``runtime/configs/method_<name>.yaml``), the space's ``method`` statement, then a configuration
file's own ``method`` section, ``--cfg method.*`` and ``--method``. Parameters belong to their
method: a layer that names another method starts its section afresh, so ``--method darts`` on a
space that says ``method pc_darts(k=2)`` runs DARTS, without k.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spacec.arch.methods import describe
from spacec.errors import NO_SPAN, Diagnostic, SpaceError, Span, suggest
from spacec.load import CompiledSpace, compile_file, expect_argument, locate
from spacec.runtime.domains.base import DOMAINS
from spacec.runtime.errors import ConfigError
from spacec.runtime.nn import gemm
from spacec.runtime.run import config as yaml_config
from spacec.runtime.search import config as search_config_module
from spacec.runtime.search.config import SearchConfig
from spacec.runtime.train import config as train_config_module
from spacec.runtime.train.config import TrainConfig
from spacec.spec import MethodDefault, Space

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
    "memory": "run.memory",
    "precision": "run.precision",
    "channels_last": "run.channels_last",
    "compile": "run.compile",
    "tensorboard": "run.tensorboard",
}
SEARCH_ONLY = ("order", "mode", "method", "memory")


def _folder(value: Any) -> str:
    return str(Path(value).expanduser().resolve())


# The data's folders, as --data-dir and the others write them: absolute (a relative one in a
# configuration file is taken from the working directory, as on the command line), so that the
# run's config.yaml names the same folders from wherever it is resumed.
FOLDER_KEYS = ("data_dir", "val_dir", "test_dir")


def _folders_resolved(merged: Mapping[str, Any]) -> dict[str, Any]:
    data = merged.get("data")
    if not isinstance(data, Mapping):
        return dict(merged)
    folders = {key: _folder(data[key]) for key in FOLDER_KEYS
               if isinstance(data.get(key), str) and data[key]}
    return {**merged, "data": {**data, **folders}} if folders else dict(merged)


log = logging.getLogger(__name__)


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
    # The preset's or file's own sections, before any option (a search's: with the method's
    # settings for the preset and the space's method statement, `search_sections`).
    raw: dict[str, Any]
    params: dict[str, str]  # space parameter -> who set it explicitly (--set, a search run)
    skipped_run: str = ""  # why a search run's parameters were not applied
    # A search's method: "name" and each parameter -> who set it (absent: the method's default)
    method: dict[str, str] = dataclasses.field(default_factory=dict)
    method_note: str = ""  # why the space's `method` statement was not applied
    # What the options, --set and --cfg (or the API's arguments) set, as dotted keys
    explicit: dict[str, Any] = dataclasses.field(default_factory=dict)


def space_reference(space: str) -> str:
    """A path stays valid from any folder (for --resume and derive); shipped names stay names."""
    path = Path(space).expanduser()
    return str(path.resolve()) if path.is_file() else space


def _read_config(kind: _Kind, config: str | Path | Mapping, checked: Space | None
                 ) -> tuple[dict[str, Any], str, str, str | None]:
    """(raw sections, label for the effective configuration, name for errors, the shipped
    preset's name or None for a file or mapping of one's own). `checked`: the space given."""
    if isinstance(config, Mapping):
        return (yaml_config.plain_data(config), "the configuration given",
                "the configuration given", None)
    name = str(config)
    if checked is not None:
        name = kind.preset_for(name, checked.domain)
    path = yaml_config.locate_config(name, kind.prefix)
    raw = yaml_config.read_yaml(path)
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    shipped = yaml_config.presets(kind.prefix).get(name) == path
    if not raw:
        # An empty file is not the `quick` preset: every setting is the reference code's.
        log.warning("%s sets nothing: every setting is its default, the DARTS reference code's "
                    "(a full-size run; the `quick` preset is --config quick)", path)
    label = f"preset {name}" if shipped else f"config {path}"
    return (dict(raw or {}), label, (f"the {name!r} preset" if shipped else str(path)),
            name if shipped else None)


def assemble(kind_name: str, space: str | None, config: str | Path | Mapping = "quick",
             options: Mapping[str, Any] | None = None,
             params: Mapping[str, int | float] | None = None,
             overrides: Mapping[str, Any] | None = None,
             params_label: str = "params") -> Assembled:
    """A run's configuration: the preset or file, then `overrides` (dotted keys), the options,
    the space and its parameters; ConfigError naming what is wrong. A search takes its method as
    `search_sections` layers it."""
    kind = _KINDS[kind_name]
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTION_KEYS))
    wrong_kind = sorted(set(options) & set(SEARCH_ONLY)) if kind_name == "train" else []
    if unknown or wrong_kind:
        valid = [key for key in OPTION_KEYS if kind_name == "search" or key not in SEARCH_ONLY]
        raise ConfigError(f"unknown option(s) {', '.join(unknown + wrong_kind)}; valid: "
                          f"{', '.join(valid)} (any other key: overrides={{'section.key': ...}})")
    checked = compile_file(locate(space)).spec if space is not None else None
    raw, label, source, preset = _read_config(kind, config, checked)
    dotted = assemble_overrides(space, options, params, overrides)
    layered, method, note = raw, {}, ""
    if kind_name == "search":
        cli = params_label == "--set"  # the command line's labels, else the Python API's
        given = {"method.name": ("--method" if cli else "method=")} if options.get("method") \
            else {}
        layered, method, note = search_sections(
            raw, label, preset, _space_method(checked, raw, dotted), dotted,
            {**{key: "--cfg" if cli else "overrides" for key in overrides or {}}, **given})
        raw = layered  # with the method's settings for the preset (its own, then)
    merged = yaml_config.apply_overrides(layered, dotted,
                                         (yaml_config.TASK, *yaml_config.sections(kind.cls)))
    where = f"{source} with your options" if dotted else source
    _check_domain_options(merged, options, space, params_label == "--set")
    cfg = kind.from_dict(_folders_resolved(merged), where)
    _check_parameter_names(cfg.space, checked, params, params_label, overrides, source)
    explicit = {key: _folder(value) if key.removeprefix("data.") in FOLDER_KEYS
                and isinstance(value, str) and value else value for key, value in dotted.items()}
    return Assembled(cfg, label, raw, {name: params_label for name in params or {}},
                     method=method, method_note=note, explicit=explicit)


def _check_domain_options(merged: Mapping[str, Any], options: Mapping[str, Any],
                          space: str | None, cli: bool) -> None:
    """ConfigError where an option, or the dataset named, belongs to another domain's data than
    the space's (``--image-size`` or ``--data ptb`` for an image space read "unknown key(s)" or
    "unknown dataset"); the space's domain is the configuration's task."""
    task = merged.get(yaml_config.TASK)
    if not isinstance(task, str) or task not in DOMAINS:
        return
    own = DOMAINS[task].builder
    article = "an" if task[:1] in "aeiou" else "a"
    what = f"{Path(space).name if space else 'the space'} is {article} {task} space"
    fields = {f.name for f in dataclasses.fields(own.data_config)}
    for option, key in OPTION_KEYS.items():
        if options.get(option) is None or not key.startswith("data."):
            continue
        if key.removeprefix("data.") not in fields:
            named = f"--{option.replace('_', '-')}" if cli else f"{option}="
            raise ConfigError(f"{named}: {what}, whose data takes no {key} (it is for "
                              f"{_domains_taking(key)} spaces)")
    data = merged.get("data")
    name = data.get("name") if isinstance(data, Mapping) else None
    if not isinstance(name, str) or name in set(own.datasets()):
        return
    for other in DOMAINS.names():
        if other != task and name in set(DOMAINS[other].builder.datasets()):
            raise ConfigError(f"dataset {name!r} is for {other} spaces; {what} (its datasets: "
                              f"{', '.join(sorted(own.datasets()))})")


def _domains_taking(key: str) -> str:
    section = key.removeprefix("data.")
    return ", ".join(name for name in DOMAINS.names() if section in
                     {f.name for f in dataclasses.fields(DOMAINS[name].builder.data_config)})


def _check_parameter_names(space_cfg: Any, checked: Space | None,
                           params: Mapping[str, Any] | None, params_label: str,
                           overrides: Mapping[str, Any] | None, source: str) -> None:
    """Every overridden parameter is one the space declares: a SpaceError naming who set an
    unknown one (--set, --cfg, or the configuration file's ``space.overrides``), as the
    compiler would for --set, which sees only "an override"."""
    if not space_cfg.overrides:
        return
    declared = _declared(space_cfg.name, checked)
    cli = params_label == "--set"  # the command line's, else the Python API's arguments
    given = NO_SPAN.path if cli else "<arguments>"
    diagnostics = []
    for name in space_cfg.overrides:
        if name in declared:
            continue
        dotted = f"space.overrides.{name}"
        if name in (params or {}):
            where, who = given, f"--set {name}" if cli else f"{params_label}[{name!r}]"
        elif dotted in (overrides or {}):
            where, who = given, f"--cfg {dotted}" if cli else f"overrides[{dotted!r}]"
        else:
            where, who = source, dotted
        diagnostics.append(Diagnostic(Span(where, 0, 0, 0), f"{who}: no such parameter",
                                      suggest(name, declared, "parameters")))
    if diagnostics:
        raise SpaceError(diagnostics)


def _declared(space: str, checked: Space | None) -> dict[str, Any]:
    """The parameters `space` declares (`checked`: the space given, when it is that one)."""
    if checked is not None and locate(space).resolve() == Path(checked.path).resolve():
        return dict(checked.params)
    return compile_file(locate(space)).params


def _space_method(checked: Space | None, raw: Mapping[str, Any], dotted: Mapping[str, Any]
                  ) -> MethodDefault | None:
    """The `method` statement of the space searched (the one given, else the configuration's)."""
    if checked is None:
        section = raw.get("space")
        name = dotted.get("space.name",
                          section.get("name") if isinstance(section, Mapping) else None)
        if not isinstance(name, str) or not name:
            name = yaml_config.SpaceConfig().name
        checked = compile_file(locate(name)).spec
    return checked.method


def search_sections(raw: Mapping[str, Any], label: str, preset: str | None,
                    space_method: MethodDefault | None, dotted: Mapping[str, Any],
                    labels: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str], str]:
    """A search's sections with its method layered in, before the dotted overrides (which come
    last): the preset's sections with the method's settings for the preset (a shipped preset
    only: a file of one's own is taken as written), then the space's `method` statement unless
    a file of one's own names a method or the command line names another. `labels`: who set
    each dotted key (``--cfg``, ``--method``).

    Returns (sections, method origins: "name" and parameter -> who set it, a note when the
    space's statement was set aside)."""
    data = dict(raw)
    own = _method_section(data)
    origins = {key: label for key in own if key != "name"}
    chosen = dotted.get("method.name")  # the command line's choice
    file_names = preset is None and "name" in own
    named = space_method.name if space_method is not None and not file_names else None
    if preset is not None:
        method = str(chosen or named or own.get("name", "darts"))
        settings = search_config_module.method_settings(method, preset)
        data = search_config_module.merged(data, {k: v for k, v in settings.items()
                                                  if k != "method"})
        data, origins = _with_method(data, origins, settings.get("method") or {"name": method},
                                     label)
    who = label if "name" in own else "default"
    note = ""
    if space_method is not None:
        written = f"`method {space_method.text()}`"
        if file_names:
            note = f"the space's {written} gives way to {label}'s method section"
        elif chosen is not None and chosen != space_method.name:
            note = (f"the space's {written} gives way to method {chosen} "
                    f"({labels.get('method.name', '--cfg')})")
        else:
            data, origins = _with_method(
                data, origins, {"name": space_method.name, **space_method.values()}, SPACE_FILE)
            who = SPACE_FILE
    if chosen is not None:
        data, origins = _with_method(data, origins, {"name": chosen}, "")
    for key in dotted:
        if key.startswith("method."):
            origins[key.removeprefix("method.")] = labels.get(key, "--cfg")
    origins.setdefault("name", who)
    return data, origins, note


def _method_section(data: Mapping[str, Any]) -> Mapping[str, Any]:
    section = data.get("method")
    return section if isinstance(section, Mapping) else {}


def _with_method(data: dict[str, Any], origins: dict[str, str], section: Mapping[str, Any],
                 label: str) -> tuple[dict[str, Any], dict[str, str]]:
    """`data` with `section` over its method section, and the origins of the parameters:
    merged when both name one method, else in its place (parameters belong to their method)."""
    current = _method_section(data)
    name = section.get("name", current.get("name", "darts"))
    if name != current.get("name", "darts"):
        current, origins = {}, {}
    params = {key: label for key in section if key != "name"}
    return {**data, "method": {**current, **section, "name": name}}, {**origins, **params}


def assemble_overrides(space: str | None, options: Mapping[str, Any],
                       params: Mapping[str, int | float] | None = None,
                       overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Dotted overrides of a configuration: `overrides` (--cfg) first, then the space, the
    options (`OPTION_KEYS`) and the space's parameters (--set)."""
    dotted: dict[str, Any] = dict(overrides or {})

    def put(key: str, value: Any, given_as: str) -> None:
        # An option and an override of the same key that disagree: neither wins silently.
        if key in (overrides or {}) and yaml_config.plain_data(overrides[key]) != value:
            raise ConfigError(f"{given_as} and --cfg {key}={overrides[key]} set {key} twice, "
                              "differently: give one")
        dotted[key] = value

    if space is not None:
        dotted["space.name"] = space_reference(space)  # the SPACE argument names the space
    for option, key in OPTION_KEYS.items():
        value = options.get(option)
        if value is not None:
            put(key, _CONVERT.get(option, lambda v: v)(value),
                f"--{option.replace('_', '-')} {value}")
    for name, value in (params or {}).items():
        put(f"space.overrides.{name}", value, f"--set {name}={value}")
    return dotted


def check_arguments(function: str, space: Any, config: Any, params: Any, overrides: Any,
                    resume: Any = None, on_step: Any = None) -> None:
    """TypeError naming an argument of the wrong kind, before anything is read or written."""
    path = (str, Path)
    expect_argument(function, "space", space, (*path, type(None)),
                    "a shipped space's name or a .space path")
    expect_argument(function, "config", config, (*path, Mapping),
                    "a preset's name, a YAML file or a dict")
    expect_argument(function, "params", params, (Mapping, type(None)),
                    "a dict of the space's parameters, e.g. {'C': 16}")
    expect_argument(function, "overrides", overrides, (Mapping, type(None)),
                    "a dict of dotted configuration keys, e.g. {'optim.lr': 0.05}")
    expect_argument(function, "resume", resume, (*path, type(None)), "a run directory")
    if on_step is not None and not callable(on_step):
        raise TypeError(f"{function}(): on_step must be a function of the step number (or "
                        f"None), got {type(on_step).__name__} {on_step!r:.60}")


def search_config(space: str | None = None, config: str | Path | Mapping = "quick",
                  params: Mapping[str, int | float] | None = None,
                  overrides: Mapping[str, Any] | None = None, **options: Any) -> SearchConfig:
    """The configuration `search` would run with (nothing is opened or written)."""
    check_arguments("search_config", space, config, params, overrides)
    return assemble("search", space, config, options, params, overrides).cfg


def train_config(space: str | None = None, config: str | Path | Mapping = "quick",
                 params: Mapping[str, int | float] | None = None,
                 overrides: Mapping[str, Any] | None = None, **options: Any) -> TrainConfig:
    """The configuration `train` would run with, before a search run's parameters."""
    check_arguments("train_config", space, config, params, overrides)
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
    the space and the method apart (their parameters are shown with their origins)."""
    default = _defaults(assembled.cfg)
    final = _flatten(yaml_config.to_dict(assembled.cfg))
    changes = []
    for key, value in _flatten(assembled.raw).items():
        if key.startswith(("space.", "method.")) or key == yaml_config.TASK:
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


def device_line(run_cfg: Any, device: torch.device) -> str:
    """Where a run computes and with what: the effective configuration's device line (a
    resumed run prints it too: its machine, threads and products' backend may be new)."""
    if run_cfg.device == "auto":
        why = "auto: CUDA is available" if device.type == "cuda" else "auto: no CUDA device"
    else:
        why = "asked for"
    # The setting where there is one: a run sets it as it starts (a random search's samples
    # after this line is shown)
    threads = run_cfg.threads or torch.get_num_threads()
    how = "run.threads" if run_cfg.threads is not None else "torch's default"
    speed = _speed_switches(run_cfg)
    products = gemm.decided()  # decided where the network's products go through gemm
    if products is not None and device.type == "cpu":
        speed.append(f"float32 products {products.line()} (run.matmul)")
    switches = "".join(f"; {text}" for text in speed)
    return f"{device} ({why}); {threads} CPU thread{'s' if threads != 1 else ''} ({how}){switches}"


def _speed_switches(run_cfg: Any) -> list[str]:
    """The run section's speed switches that differ from their defaults, as the device line
    names them."""
    switches = []
    if run_cfg.precision != "fp32":
        switches.append(f"{run_cfg.precision} autocast (run.precision)")
    if not run_cfg.channels_last:
        switches.append("NCHW (run.channels_last: false)")
    if run_cfg.compile:
        mode = "" if run_cfg.compile_mode == "default" else f", mode {run_cfg.compile_mode}"
        switches.append(f"torch.compile (run.compile{mode})")
    return switches


def effective_lines(command: str, assembled: Assembled, compiled: CompiledSpace,
                    origins: Mapping[str, str], data: str, method: str,
                    device: torch.device, extra: Sequence[tuple[str, str]] = ()) -> list[str]:
    """The effective configuration of a run, as lines for a terminal and for config.yaml."""
    cfg = assembled.cfg
    params = ", ".join(f"{name}={value} ({origins.get(name, '?')})"
                       for name, value in compiled.params.items())
    rows = [("space", f"{compiled.name} ({compiled.spec.path})"), ("", params)]
    if command == "search":  # the checker's warnings (a cell never run) are about a search
        rows += [("warning", f"{warning.span}: {warning.message}")
                 for warning in compiled.spec.warnings]
    rows += [("data", data), ("method" if command == "search" else "training", method)]
    if command == "search":
        rows.append(("", method_origins(cfg, assembled.method)))
    rows += [("device", device_line(cfg.run, device)), ("seed", str(cfg.run.seed))]
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
    for note in (assembled.skipped_run, assembled.method_note):
        if note:
            lines.append(f"  {'note':<8} {note}")
    lines.extend(f"  {label:<8} {text}" for label, text in extra)
    return lines


def method_origins(cfg: SearchConfig, origins: Mapping[str, str]) -> str:
    """``pc_darts (space file); k=2 (space file), edge_norm=True (default), ...``: the method
    and each of its parameters with where it came from."""
    text = f"{cfg.method.name} ({origins.get('name', 'default')})"
    values = ", ".join(f"{key}={value} ({origins.get(key, 'default')})"
                       for key, value in cfg.method.values().items())
    return f"{text}; {values}" if values else text


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def header_text(lines: Sequence[str]) -> str:
    return "".join(f"# {line}\n" for line in lines)


def search_method(cfg: SearchConfig) -> str:
    optim = cfg.optim
    weights = (f"{plural(optim.epochs, 'epoch')}, batch {cfg.data.batch_size}, lr {optim.lr:g} "
               f"({optim.schedule})")
    if describe(cfg.method.name).strengths is None:  # no α (random_ws): no α step to describe
        return f"{cfg.method.name}: {cfg.arch.mode}, no α; {weights}"
    order = {1: "first order", 2: "second order"}.get(cfg.arch.order, f"order {cfg.arch.order}")
    return f"{cfg.method.name}: {cfg.arch.mode}, {order}; {weights}, α lr {cfg.arch.lr:g}"


def train_method(cfg: TrainConfig, auxiliary_weight: float | None = None) -> str:
    """The training line; `auxiliary_weight`: the one the task uses (0 where the space has no
    auxiliary head), where known."""
    optim = cfg.optim
    text = (f"{plural(optim.epochs, 'epoch')}, batch {cfg.data.batch_size}, lr {optim.lr:g} "
            f"({optim.schedule})")
    if cfg.task == "image":
        used = optim.auxiliary_weight if auxiliary_weight is None else auxiliary_weight
        auxiliary = f"auxiliary weight {used:g}"
        if optim.auxiliary_weight and not used:
            auxiliary = (f"no auxiliary head (the space has none; auxiliary weight "
                         f"{optim.auxiliary_weight:g} unused)")
        text += f", cutout {cfg.data.cutout}, {auxiliary}, drop path {optim.drop_path_prob:g}"
    return text
