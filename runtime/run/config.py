"""Configurations read from YAML: one frozen dataclass per section, generic over the run's kind.

A run's configuration (`spacec.runtime.search.config.SearchConfig` for a search,
`spacec.runtime.train.config.TrainConfig` for training) is a frozen dataclass with a ``task``
(the domain of its space: "image" or "sequence") and one dataclass per section. The YAML form
has one mapping per section plus ``task``::

    task: image
    space: {name: darts_cnn, overrides: {C: 8}, optional_overrides: {}}
    data: {name: sample, batch_size: 64, ...}        # fields of the domain's data config
    optim: {epochs: 50, lr: 0.025, ...}
    run: {seed: 2, device: cpu, ...}

Sections and keys may be left out (their defaults apply); an unknown key, a value of the wrong
type, or one a dataclass rejects raises `ConfigError` naming the file and the key. The ``data``
section's class depends on the task: the caller passes the domain registry's lookup. A section
whose class depends on its own content (a search's ``method``, by its ``name``) names a chooser
in its field's metadata (`SECTION_CLASS`: raw section -> class). Presets are
YAML files shipped in ``runtime/configs`` (``<kind>_<name>.yaml``, a sequence space's
``<kind>_rnn_<name>.yaml``); `load_config` takes a preset name or a path, then dotted overrides
(``{"arch.order": 2}``) from the command line. This module knows no section but the ones every
run has (``space``, ``run``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

# run.memory: the fastest of MEMORY_SETTINGS whose step fits (spacec.runtime.run.fits).
from spacec.cost import AUTO as AUTO_MEMORY
from spacec.files import atomic_write_text, read_text
from spacec.runtime.errors import ConfigError, DataError

PRESET_SUFFIX = ".yaml"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
TASK = "task"
# run.memory (spacec.runtime.nn.memory) and run.precision (spacec.runtime.run.session).
MEMORY_SETTINGS = ("fast", "balanced", "low")
PRECISIONS = ("fp32", "bf16")
# run.matmul (spacec.runtime.nn.gemm): auto, or the backend of float32 CPU products.
MATMUL_SETTINGS = ("auto", "aten", "onednn")
# torch.compile's modes (run.compile_mode); reduce-overhead replays CUDA graphs, which is what a
# step bound by kernel launches needs on a GPU (README, "On a GPU").
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# task name -> the dataclass of its `data` section (the domain registry's lookup)
DataClassOf = Callable[[str], type]
# Field metadata key: a function from the raw section (a mapping or None) to its dataclass.
SECTION_CLASS = "spacec.section_class"


# ---------------------------------------------------------------- the sections every run has


@dataclass(frozen=True)
class SpaceConfig:
    """Which search space to search and at which parameters."""

    name: str = "darts_cnn"  # a shipped space name or a path to a .space file
    # Parameter overrides (`--set C=8`); each must be a parameter the space declares.
    overrides: dict[str, int | float] = field(default_factory=dict)
    # A preset's sizes for the spaces shipped with spacec: applied only to a shipped space, and
    # only to the parameters it declares (darts_cnn's `layers`, nas_bench_201's `N`). A space of
    # your own keeps its own values: a preset is not made for it (`is_shipped_space`).
    optional_overrides: dict[str, int | float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must be a space name or a path")
        for label, values in (("overrides", self.overrides),
                              ("optional_overrides", self.optional_overrides)):
            bad = [key for key in values if not str(key).isidentifier()]
            if bad:
                raise ValueError(f"{label}: parameter names must be identifiers, got {bad}")


def is_shipped_space(name: str) -> bool:
    """Whether a space name or path is one of the spaces shipped with spacec."""
    from spacec.load import locate, shipped_spaces

    shipped = {path.resolve() for path in shipped_spaces().values()}
    return locate(name).resolve() in shipped


# The largest float32: a setting an optimiser turns into a float32 tensor must stay below it
# (1e300 overflowed in the first SGD step, after the run directory was made).
FLOAT32_MAX = 3.4028234663852886e38
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds
MAX_THREADS = 1024
MAX_BATCH = 2**31 - 1


def check_float32(name: str, value: float) -> None:
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise ValueError(f"{name} must be a finite number below {FLOAT32_MAX:.3g} (float32), "
                         f"got {value}")


def check_sgd_settings(cfg: Any, schedules: Iterable[str]) -> None:
    """The checks every SGD section shares (search and training): ValueError on a bad value."""
    if cfg.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {cfg.epochs}")
    for name in ("lr", "lr_min", "weight_decay"):
        check_float32(name, getattr(cfg, name))
    if cfg.grad_clip is not None:
        check_float32("grad_clip", cfg.grad_clip)
    if cfg.lr <= 0:
        raise ValueError(f"lr must be > 0, got {cfg.lr}")
    if not 0 <= cfg.lr_min <= cfg.lr:
        raise ValueError(f"lr_min must lie in [0, lr={cfg.lr}], got {cfg.lr_min}")
    if not 0 <= cfg.momentum < 1:
        raise ValueError(f"momentum must lie in [0, 1), got {cfg.momentum}")
    if cfg.weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {cfg.weight_decay}")
    if cfg.grad_clip is not None and cfg.grad_clip <= 0:
        raise ValueError(f"grad_clip must be > 0 or null, got {cfg.grad_clip}")
    if cfg.schedule not in schedules:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: {', '.join(schedules)}")


@dataclass(frozen=True)
class RunConfig:
    """Where and how a run executes."""

    seed: int = 2  # train_search.py --seed 2
    # "auto": CUDA when available, else the CPU (spacec.runtime.run.session.resolve_device);
    # or "cpu", "cuda", "cuda:N", "mps" (Apple GPUs: only when asked for, not tested).
    device: str = "auto"
    out: str = "runs"  # parent folder of run directories
    checkpoint_every: int = 0  # also checkpoint every N steps (0: at the end of epochs only)
    log_every: int = 50  # an INFO line every N steps (train_search.py --report_freq 50)
    threads: int | None = None  # torch.set_num_threads; None leaves torch's default
    # On several processes (torchrun): BatchNorm as SyncBatchNorm (CUDA only), and how long a
    # collective waits for the other processes (torch.distributed's default, 30 minutes).
    sync_bn: bool = False
    dist_timeout: float = 1800.0
    # TensorBoard event files beside metrics.jsonl (spacec.runtime.run.events): true, false, or
    # auto (when the tensorboard package is installed).
    tensorboard: bool | str = "auto"
    # What a supernet's mixed edges keep for the backward pass (spacec.runtime.nn.memory):
    # fast (everything), balanced (recompute the max poolings', the depthwise convolutions' and the
    # ReLUs' outputs), low (recompute every edge); or auto: the fastest of the three whose step
    # the cost model predicts to fit the free memory with its error (20%) to spare, fast where it
    # cannot predict (spacec.runtime.run.fits; the run prints its choice). The same arithmetic
    # in all three (balanced bit for bit on the CPU, low up to rounding); search only (training
    # takes fast or auto). Default: auto, which is fast wherever fast fits, the only setting
    # that costs no time (benchmarks/search_step.py, results in
    # benchmarks/results/search_step_memory_cpu_b16.*, search_step_low_cpu_b16.*,
    # search_step_zen5_vs_issue_cpu_b16_avg_kept.*: at batch 16 against the reference layout's
    # peak, fast 0.79-0.81x, balanced 0.56-0.57x for +4-15% time, low 0.30x for +14-36%).
    memory: str = AUTO_MEMORY
    # fp32, or bf16: the weights' forward passes under bf16 autocast (search: the weight step;
    # training: every step). α, its softmax and the architecture step stay in fp32.
    precision: str = "fp32"
    # NHWC tensors (the generated networks' layout; oneDNN's and cuDNN's faster one); false:
    # NCHW.
    channels_last: bool = True
    # torch.compile the network the weight step (search) or every step (training) calls; a
    # recurrent network compiles its time step, which every step calls (RecurrentLM.compile_steps).
    compile: bool = False
    # torch.compile's mode with compile: true: default, reduce-overhead (CUDA graphs on a GPU),
    # max-autotune or max-autotune-no-cudagraphs. Default: torch's default.
    compile_mode: str = "default"
    # With compile: true, a recurrent network's consecutive time steps per compiled graph
    # (RecurrentLM.compile_steps; the steps a sequence has left over run one at a time). Default
    # 5 (bptt 35 is 7 such runs): darts_rnn's compiled first-order search step at batch 16 took
    # 0.84 against 0.93 s with one step per graph, for 131 against 22 s of compiling
    # (benchmarks/rnn_tokens.py --unroll; benchmarks/RESULTS.md).
    compile_unroll: int = 5
    # Float32 matrix products of a recurrent network on the CPU (spacec.runtime.nn.gemm): aten
    # (torch.mm: MKL in torch's x86 wheels), onednn, or auto: oneDNN where one timed product at
    # start shows it at least 1.15x torch.mm's speed. MKL runs its AVX2 kernels on AMD CPUs
    # even where they have AVX-512; oneDNN's ran at 1.3-2.3x its speed on the Zen 5 EPYC
    # (benchmarks/gemm.py). The same float32 arithmetic, summed in another order.
    matmul: str = "auto"

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must lie in [0, 2**63 - 1], got {self.seed}")
        if not _DEVICE.match(self.device):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if not self.out:
            raise ValueError("out must be a folder")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            raise ValueError(f"threads must lie in [1, {MAX_THREADS}] or be null, got "
                             f"{self.threads}")
        if self.dist_timeout <= 0:
            raise ValueError(f"dist_timeout must be > 0 seconds, got {self.dist_timeout}")
        if not isinstance(self.tensorboard, bool) and self.tensorboard != "auto":
            raise ValueError(f"tensorboard must be true, false or auto, got {self.tensorboard!r}")
        if self.memory not in (AUTO_MEMORY, *MEMORY_SETTINGS):
            raise ValueError(f"memory must be one of {', '.join((AUTO_MEMORY, *MEMORY_SETTINGS))}"
                             f", got {self.memory!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                             f"{self.precision!r}")
        if isinstance(self.compile_unroll, bool) or not isinstance(self.compile_unroll, int) \
                or self.compile_unroll < 1:
            raise ValueError(f"compile_unroll must be an integer >= 1, got "
                             f"{self.compile_unroll!r}")
        if self.matmul not in MATMUL_SETTINGS:
            raise ValueError(f"matmul must be one of {', '.join(MATMUL_SETTINGS)}, got "
                             f"{self.matmul!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got "
                             f"{self.compile_mode!r}")



# Run settings a resumed run may differ in from its checkpoint: the device (--resume --device),
# TensorBoard's switch, which changes no result, and the products' backend, which changes only
# their rounding (a checkpoint written before these existed lacks them).
RESUME_MAY_CHANGE = ("device", "tensorboard", "matmul")


def resume_view(config: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration dict minus the run settings a resumed run may change (to compare a
    checkpoint's configuration with the run directory's)."""
    run = {k: v for k, v in config.get("run", {}).items() if k not in RESUME_MAY_CHANGE}
    return {**config, "run": run}


# ---------------------------------------------------------------- dict <-> dataclasses


def sections(cls: type) -> tuple[str, ...]:
    """The section names of a configuration class, in order (every field but ``task``)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name != TASK)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain YAML/JSON-ready data (tuples become lists), sections in a fixed order."""
    out: dict[str, Any] = {TASK: cfg.task}
    for section in sections(type(cfg)):
        out[section] = plain_data(dataclasses.asdict(getattr(cfg, section)))
    return out


def plain_data(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return value


def from_dict(cls: type, data: Any, source: str, data_class: DataClassOf) -> Any:
    """Build configuration `cls` from parsed YAML; `source` names the file in errors."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    names = sections(cls)
    _reject_unknown(data, (TASK, *names), source, where="top level")
    task = data.get(TASK, _default(cls, TASK))
    if not isinstance(task, str):
        raise ConfigError(f"{source}: task: expected a string, got {task!r}")
    try:
        classes = {name: _section_class(cls, name) for name in names}
        classes["data"] = data_class(task)
    except ValueError as error:
        raise ConfigError(f"{source}: task: {error}") from None
    for name, choose in _chosen_classes(cls).items():
        try:
            classes[name] = choose(data.get(name))
        except ValueError as error:
            raise ConfigError(f"{source}: {name}: {error}") from None
    built = {name: build_section(classes[name], data.get(name), source, name) for name in names}
    try:
        return cls(task=task, **built)
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None


def _default(cls: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def _chosen_classes(cls: type) -> dict[str, Callable[[Any], type]]:
    """Sections whose class a chooser in the field's metadata picks from the raw section."""
    return {f.name: f.metadata[SECTION_CLASS] for f in dataclasses.fields(cls)
            if SECTION_CLASS in f.metadata}


def _section_class(cls: type, name: str) -> type:
    hint = typing.get_type_hints(cls)[name]
    return hint if dataclasses.is_dataclass(hint) else object


def _reject_unknown(data: Mapping, valid: tuple[str, ...] | list[str], source: str,
                    where: str) -> None:
    unknown = [str(key) for key in data if key not in valid]
    if unknown:
        raise ConfigError(
            f"{source}: {where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
        )


def build_section(cls: type, data: Any, source: str, section: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: {section}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    _reject_unknown(data, names, source, where=section)
    values = {key: _convert(value, hints[key], f"{source}: {section}.{key}")
              for key, value in data.items()}
    try:
        return cls(**values)
    except (ValueError, TypeError, DataError) as error:
        raise ConfigError(f"{source}: {section}: {error}") from None


def _convert(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against the type annotation `hint` (the few kinds configs use)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _convert(value, options[0], where)
        if set(options) == {bool, str}:  # a switch with a named third setting (auto)
            if not isinstance(value, (bool, str)):
                raise ConfigError(f"{where}: expected true, false or a name, got {value!r}")
            return value
        if all(a in (int, float) for a in options):
            return _number(value, where, integer=False)
        raise ConfigError(f"{where}: unsupported annotation {hint}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_hint, value_hint = args
        return {_convert(k, key_hint, where): _convert(v, value_hint, f"{where}.{k}")
                for k, v in value.items()}
    return _scalar(value, hint, where)


def _scalar(value: Any, hint: Any, where: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        return _number(value, where, integer=True)
    if hint is float:
        return float(_number(value, where, integer=False))
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported annotation {hint}")


def _number(value: Any, where: str, integer: bool) -> int | float:
    if not integer and isinstance(value, str):
        value = _float_text(value, where)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}: expected {kind}, got {value!r}")
    if integer and not isinstance(value, numbers.Integral):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _float_text(text: str, where: str) -> float:
    # PyYAML (YAML 1.1) reads exponent notation without a dot, `3e-4`, as a string.
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {text!r}") from None


# ---------------------------------------------------------------- overrides


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any],
                    keys: tuple[str, ...]) -> dict[str, Any]:
    """A copy of raw config `data` with dotted keys set: ``{"arch.order": 2, "task": "image"}``.

    Keys may go deeper than a section (``space.overrides.C``). Values are left as given (they
    are checked when the config is built); a key outside the known sections raises ConfigError.
    """
    merged = _copy_mappings(data)
    for dotted, value in overrides.items():
        path = dotted.split(".")
        if path[0] not in keys or (path[0] == TASK) != (len(path) == 1):
            names = ", ".join(key for key in keys if key != TASK)
            raise ConfigError(f"override {dotted}: expected task or SECTION.KEY "
                              f"(sections: {names})")
        if not all(path):
            raise ConfigError(f"override {dotted}: empty key")
        node = merged
        for depth, key in enumerate(path[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted}: {'.'.join(path[:depth + 1])} is not a "
                                  "mapping")
            node = child
        node[path[-1]] = value
    return merged


def _copy_mappings(data: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _copy_mappings(value) if isinstance(value, Mapping) else value
            for key, value in data.items()}


def parse_assignment(text: str) -> tuple[str, Any]:
    """`optim.lr=0.05` -> ("optim.lr", 0.05): the value is read as YAML (numbers, lists, null)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{text!r}: expected SECTION.KEY=VALUE")
    return key, _load_yaml(value, f"{text!r}: the value") if value.strip() else ""


# ---------------------------------------------------------------- files


def presets(prefix: str) -> dict[str, Path]:
    """Preset name -> shipped YAML file (``runtime/configs/<prefix><name>.yaml``)."""
    folder = resources.files("spacec.runtime.configs")
    found = {}
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith(prefix) and name.endswith(PRESET_SUFFIX):
            found[name[len(prefix):-len(PRESET_SUFFIX)]] = Path(str(entry))
    return dict(sorted(found.items()))


def domain_preset(name: str, prefix: str, available: Iterable[str]) -> str:
    """The preset `name` stands for in a domain whose presets carry `prefix` (``rnn_``): the
    domain's own preset when there is one (`quick` -> `rnn_quick`)."""
    if prefix and not name.startswith(prefix) and prefix + name in set(available):
        return prefix + name
    return name


def locate_config(name_or_path: str, prefix: str) -> Path:
    """A preset's file, or the given path."""
    shipped = presets(prefix)
    if name_or_path in shipped:
        return shipped[name_or_path]
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    raise ConfigError(f"{name_or_path}: no such preset or file; presets: {', '.join(shipped)}")


def _yaml_message(where: str, error: yaml.MarkedYAMLError) -> str:
    """`where:line:col: not valid YAML: problem (context, line N)`: the position in the file,
    not PyYAML's "<unicode string>"."""
    mark = error.problem_mark or error.context_mark
    at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else where
    message = f"{at}: not valid YAML: {error.problem or error.context}"
    if error.problem and error.context:
        line = f", line {error.context_mark.line + 1}" if error.context_mark else ""
        message += f" ({error.context}{line})"
    return message


class _UniqueKeys(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping, which it would take
    silently as the last one (a second `optim:` section dropped the first one's epochs)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in first:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"the key {key!r} is given twice (first on line {first[key].line + 1})",
                    key_node.start_mark)
            first[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> Any:
    """A YAML file's data; FileError (file:line:col of a non-UTF-8 byte) or ConfigError."""
    return _load_yaml(read_text(path), str(path))


def _load_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeys)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as error:
        raise ConfigError(_yaml_message(where, error)) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML ({error})") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise ConfigError(f"{where}: YAML nested too deeply") from None


def load_config(cls: type, prefix: str, data_class: DataClassOf, name_or_path: str,
                overrides: Mapping[str, Any] | None = None) -> Any:
    """A preset or YAML file, with dotted overrides applied, as configuration `cls`."""
    path = locate_config(name_or_path, prefix)
    data = read_yaml(path)
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    merged = apply_overrides(data or {}, overrides or {}, (TASK, *sections(cls)))
    source = str(path) if not overrides else f"{path} (with overrides)"
    return from_dict(cls, merged, source, data_class)


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)


def write_config(cfg: Any, path: Path, header: str = "") -> None:
    """`cfg` as YAML, after `header` (comment lines: the run's effective configuration)."""
    atomic_write_text(path, header + to_yaml(cfg))


def read_config(cls: type, path: Path, data_class: DataClassOf) -> Any:
    """A configuration written by `write_config` (a run directory's config.yaml)."""
    return from_dict(cls, read_yaml(path), str(path), data_class)
