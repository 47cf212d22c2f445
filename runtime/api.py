"""spacec's Python API: a search or a training run from Python; the command line's one code path.

    import spacec

    found = spacec.search("darts_cnn", epochs=1, limit=64)    # the quick preset, the sample
    found.genotype, found.metrics[-1]["val_acc"], found.run_dir, found.model
    trained = spacec.train(genotype=found, epochs=1)          # the search run's space and sizes
    trained.report["test_acc"], trained.model                  # the network the run kept

Configuration is the command line's: ``config`` is a preset ("quick", "paper", ...), a YAML file
or a dict shaped like one; keyword options are the command line's options (``epochs``,
``batch_size``, ``seed``, ``device``, ``data_dir``, ``val_dir``, ``test_dir``, ``image_size``,
``limit``, ``out``, ``threads``, ``checkpoint_every``, ``tensorboard``; a search's ``order``,
``mode``, ``method``); ``params`` sets space parameters (``--set``) and ``overrides`` any dotted key
(``--cfg``). ``data`` is a dataset's name, or your own torch datasets or DataLoaders (image
spaces): one dataset (``train_portion`` holds part of it out to validate), ``(train, val)``,
``(train, val, test)`` or a dict with those keys.

The space decides the network: a preset's sizes apply to the shipped spaces only, and a training
run given a search run takes that run's space and parameters (a shipped space's preset sizes
still apply, as DARTS evaluates a larger network than it searches). Every run starts with its
effective configuration: each space parameter and where its value came from, the data, the
method, the device. It opens config.yaml as comment lines, and is shown with ``verbose=True``.

Nothing is printed unless asked: ``verbose=True`` shows the effective configuration and one line
per epoch (spacec.runtime.run.console), ``progress=True`` a progress bar (on a terminal).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader, Dataset

from spacec.arch.genotype import Genotype, resolve
from spacec.arch.methods import describe
from spacec.load import CompiledSpace, compile_file, expect_argument, locate
from spacec.runtime.configure import (
    OPTION_KEYS,
    SPACE_FILE,
    Assembled,
    assemble,
    check_arguments,
    device_line,
    effective_lines,
    header_text,
    param_origins,
    plural,
    search_config,
    search_method,
    train_config,
    train_method,
)
from spacec.runtime.domains import domain
from spacec.runtime.domains.image.data import hold_in_memory
from spacec.runtime.errors import ConfigError
from spacec.runtime.run import config as yaml_config
from spacec.runtime.run.console import screen_info, showing
from spacec.runtime.run.derivation import saved_alphas
from spacec.runtime.run.fits import Fit
from spacec.runtime.run.rundir import RunDir, is_run_dir, is_search_run, open_run_dir
from spacec.runtime.run.session import resolve_device
from spacec.runtime.search.config import SearchConfig
from spacec.runtime.search.loop import Search, resume_search, start_search
from spacec.runtime.tools.select import RandomSearchPlan, plan_random_search, run_random_search
from spacec.runtime.train.config import TrainConfig
from spacec.runtime.train.loop import Trainer, resume_training, start_training

__all__ = ["OPTION_KEYS", "SearchRun", "TrainRun", "search", "search_config", "train",
           "train_config"]

log = logging.getLogger(__name__)

# Keyword option (the command line's option, dashes as underscores) -> dotted config key.
# ---------------------------------------------------------------- a user's own data


def _user_data(data: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(options, overrides) that select a user's torch datasets, which it holds in memory; None
    when `data` names a dataset."""
    if data is None or isinstance(data, (str, Path)):
        return None
    if isinstance(data, Mapping):
        unknown = set(data) - {"train", "val", "test"}
        if unknown or "train" not in data:
            raise ConfigError("data as a dict needs 'train' (and optionally 'val', 'test'); got "
                              f"{', '.join(map(str, data))}")
        parts = [data.get("train"), data.get("val"), data.get("test")]
    elif isinstance(data, (Dataset, DataLoader)):
        parts = [data, None, None]
    elif isinstance(data, Sequence) and 1 <= len(data) <= 3:
        parts = [*data, *[None] * (3 - len(data))]
    else:
        raise ConfigError(f"data: expected a dataset name, a torch Dataset or DataLoader, a "
                          f"(train, val[, test]) pair of them or a dict; got {type(data).__name__}")
    datasets: list[Dataset | None] = []
    options: dict[str, Any] = {}
    overrides: dict[str, Any] = {"data.name": "memory"}
    for part in parts:
        if isinstance(part, DataLoader):
            options.setdefault("batch_size", part.batch_size)
            overrides.setdefault("data.num_workers", part.num_workers)
            part = part.dataset
        if part is not None and not isinstance(part, Dataset):
            raise ConfigError(f"data: expected torch Datasets or DataLoaders, got "
                              f"{type(part).__name__}")
        datasets.append(part)
    hold_in_memory(*datasets)
    return options, overrides


def _with_user_data(data: Any, options: dict[str, Any], overrides: Mapping[str, Any] | None,
                    resume: Any = None) -> dict[str, Any]:
    """Options and overrides once `data` is applied (a name, or a user's datasets; a resumed
    run only takes the datasets back, its configuration is recorded)."""
    overrides = dict(overrides or {})
    if isinstance(data, (str, Path)):
        options["data"] = str(data)
    held = _user_data(data)
    if held is not None and resume is None:
        found_options, found_overrides = held
        for key, value in found_options.items():
            if options.get(key) is None:
                options[key] = value
        overrides.update(found_overrides)
    return overrides


def screen(verbose: bool) -> Callable[[str], None] | None:
    """Where screen lines go when asked: stderr, above any progress bar (tqdm.write)."""
    if not verbose:
        return None
    from tqdm import tqdm

    return lambda line: tqdm.write(line, file=sys.stderr)


# ---------------------------------------------------------------- search


@dataclass(frozen=True)
class SearchRun:
    """A finished search: where it wrote, what it found, and the supernet it trained."""

    run_dir: Path
    genotype: Genotype
    metrics: list[dict[str, Any]]  # metrics.jsonl: one record per epoch
    config: SearchConfig
    space: CompiledSpace  # as compiled for the run
    # The supernet, with its weights and α after the run (None: a method without one).
    model: nn.Module | None = field(repr=False)
    effective: tuple[str, ...] = ()  # the effective configuration (config.yaml's comments)

    def alphas(self, epoch: int | None = None) -> dict[str, Any]:
        """α after `epoch` (default: the last), as saved in alphas/; DerivationError naming the
        saved epochs for another."""
        return saved_alphas(self.run_dir, epoch)


def search(space: str | None = None, *, config: str | Path | Mapping = "quick",
           data: Any = None, params: Mapping[str, int | float] | None = None,
           overrides: Mapping[str, Any] | None = None, resume: str | Path | None = None,
           verbose: bool = False, progress: bool = False, params_label: str = "params",
           on_step: Callable[[int], None] | None = None, **options: Any) -> SearchRun:
    """Search an architecture in `space` (default: the configuration's, darts_cnn).

    Writes a run directory (config.yaml, metrics.jsonl, alphas/, genotype.json, checkpoint.pt,
    status.json) and returns a `SearchRun`. With `resume` (a run directory) the run continues
    from its checkpoint as recorded (only ``device`` may change; pass your datasets again if the
    run was given some). See the module docstring for the arguments.
    """
    check_arguments("search", space, config, params, overrides, resume, on_step)
    options = dict(options)
    overrides = _with_user_data(data, options, overrides, resume)
    with showing(screen(verbose)):
        if resume is not None:
            return _resume_search(Path(resume), options, overrides, params, progress, on_step)
        assembled = assemble("search", space, config, options, params, overrides, params_label)
        if not describe(assembled.cfg.method.name).shares_weights:
            return _random_search(assembled, progress)
        built = Search.build(assembled.cfg)
        lines = _search_lines(assembled, built)
        for line in lines:
            screen_info(log, "%s", line)
        result = start_search(assembled.cfg, not progress, on_step, built, header_text(lines))
        return _search_run(result.run_dir, result.genotype, built, lines)


def _random_search(assembled: Assembled, progress: bool) -> SearchRun:
    """A method without weight sharing: candidates trained by the selection protocol."""
    plan = plan_random_search(assembled.cfg, given=assembled.explicit)
    lines = _random_search_lines(assembled, plan)
    for line in lines:
        screen_info(log, "%s", line)
    result = run_random_search(plan, quiet=not progress, header=header_text(lines))
    return SearchRun(Path(result.run_dir), result.genotype, [], assembled.cfg, plan.compiled,
                     None, tuple(lines))


def _random_search_lines(assembled: Assembled, plan: RandomSearchPlan) -> list[str]:
    """A random search's effective configuration: the space at the sizes its samples train at
    and where each came from, the data, how each sample is trained and scored."""
    cfg, train_cfg = assembled.cfg, plan.train_cfg
    sized = compile_file(locate(cfg.space.name), dict(train_cfg.space.overrides))
    origins = {}
    for name in sized.params:
        if name in assembled.params:
            origins[name] = assembled.params[name]
        elif name in cfg.space.overrides:
            origins[name] = "overrides"
        elif name in train_cfg.space.overrides:
            origins[name] = f"selection preset {cfg.method.select}"
        else:
            origins[name] = SPACE_FILE
    data = train_cfg.data
    where = f" ({data.data_dir})" if getattr(data, "data_dir", None) else ""
    limit = f", the first {data.limit} images" if data.limit else ""
    auxiliary = 0.0 if sized.spec.network.get("auxiliary") is None else None
    method = (f"random: {plural(len(plan.genotypes), 'genotype')} drawn from the space's rule, "
              f"each trained from scratch ({train_method(train_cfg, auxiliary)}); the best "
              "validation "
              "accuracy wins")
    return effective_lines("search", assembled, sized, origins,
                           f"{data.name}{where}{limit}; each sample is scored on its "
                           "validation split", method, resolve_device(train_cfg.run.device))


def _memory_row(fit: Fit | None) -> list[tuple[str, str]]:
    return [] if fit is None else [("memory", fit.line())]


def _search_lines(assembled: Assembled, built: Search) -> list[str]:
    plain = compile_file(locate(assembled.cfg.space.name))
    origins = param_origins(built.compiled, assembled, built.task.space_params(plain))
    return effective_lines("search", assembled, built.compiled, origins, built.task.describe(),
                           search_method(assembled.cfg), built.device, _memory_row(built.fit))


def _search_run(run_dir: Path, genotype: Genotype, built: Search,
                lines: Sequence[str]) -> SearchRun:
    return SearchRun(Path(run_dir), genotype, RunDir(Path(run_dir)).read_metrics(), built.cfg,
                     built.compiled, built.model, tuple(lines))


def _resume_search(run: Path, options: Mapping[str, Any], overrides: Mapping[str, Any],
                   params: Mapping[str, Any] | None, progress: bool,
                   on_step: Callable[[int], None] | None) -> SearchRun:
    _only_device(options, overrides, params)
    open_run_dir(run)
    if not is_search_run(run):
        raise ConfigError(f"{run} is a training run: `spacec train --resume {run}` continues it")
    built: list[Search] = []

    def restored(found: Search) -> None:
        built.append(found)
        _say_resuming(run, found)

    result = resume_search(run, options.get("device"), not progress, on_step, restored)
    return _search_run(result.run_dir, result.genotype, built[0], ())


def _say_resuming(run: Path, found: Search | Trainer) -> None:
    """Where a resumed run goes on, and on what (its machine, threads and the products'
    backend may be new); or that it had finished, and only its results are made again."""
    epochs = found.cfg.optim.epochs
    device = device_line(found.cfg.run, found.device)
    if found.epoch >= epochs:
        screen_info(log, "%s finished all its %d epoch%s: nothing to continue; its results "
                    "again, on %s\n  device   %s", run, epochs, "" if epochs == 1 else "s",
                    found.device, device)
        return
    screen_info(log, "resuming %s at epoch %d, step %d on %s\n  device   %s", run,
                found.epoch + 1, found.step, found.device, device)
    recorded = RunDir(run).recorded_effective()
    if recorded:
        screen_info(log, "%s", "\n".join(["as it started (config.yaml):", *recorded]))


def _only_device(options: Mapping[str, Any], overrides: Mapping[str, Any],
                 params: Mapping[str, Any] | None) -> None:
    given = [key for key, value in options.items() if value is not None and key != "device"]
    given += list(overrides)
    given += list(params or {})
    if given:
        raise ConfigError(f"resume continues a run with its recorded configuration; drop "
                          f"{', '.join(given)} (only device applies)")


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainRun:
    """A finished training run: its report and the network it kept."""

    run_dir: Path
    report: dict[str, Any]  # report.json: validation, test, parameters, multiply-adds, time
    metrics: list[dict[str, Any]]  # metrics.jsonl: one record per epoch
    genotype: Genotype
    config: TrainConfig
    model: nn.Module = field(repr=False)  # the network with the weights kept (best.pt), eval mode
    effective: tuple[str, ...] = ()


@dataclass(frozen=True)
class _SearchRunRecord:
    """What a training run takes from the search run it was given."""

    run_dir: Path
    space: str  # the run's space: a shipped name or an absolute path
    params: dict[str, int | float]


def _search_run_record(genotype: Any) -> _SearchRunRecord | None:
    import json

    folder = genotype.run_dir if isinstance(genotype, SearchRun) else None
    if folder is None and isinstance(genotype, (str, Path)) and is_run_dir(genotype):
        folder = Path(genotype).expanduser()
    if folder is None:
        return None
    record = RunDir(Path(folder)).space_record_path
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        return _SearchRunRecord(Path(folder), str(data["source"]), dict(data["params"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{record}: unreadable space record ({error})") from None


def _run_params(run: _SearchRunRecord, cfg: TrainConfig, label: str
                ) -> tuple[dict[str, int | float], str]:
    """The search run's parameters that differ from the space's own (less the ones a preset
    sizes for a shipped space and the ones set explicitly), and a note on those not taken."""
    if locate(run.space).resolve() != locate(cfg.space.name).resolve():
        return {}, (f"search run {run.run_dir.name} searched space {run.space}: its parameters "
                    "are not applied to this one")
    declared = compile_file(locate(cfg.space.name)).params
    sized = set(cfg.space.optional_overrides) if yaml_config.is_shipped_space(
        cfg.space.name) else set()
    differ = {name: value for name, value in run.params.items()
              if name in declared and value != declared[name] and name not in cfg.space.overrides}
    taken = {name: value for name, value in differ.items() if name not in sized}
    resized = {name: value for name, value in differ.items() if name in sized}
    note = ""
    if resized:
        values = ", ".join(f"{name}={value}" for name, value in resized.items())
        sets = " ".join(f"--set {name}={value}" for name, value in resized.items())
        note = (f"search run {run.run_dir.name} had {values}; {label} sizes this shipped space "
                f"for training instead ({sets} keeps the run's)")
    return taken, note


def train(space: str | None = None, genotype: Any = None, *,
          config: str | Path | Mapping = "quick", data: Any = None,
          params: Mapping[str, int | float] | None = None,
          overrides: Mapping[str, Any] | None = None, resume: str | Path | None = None,
          verbose: bool = False, progress: bool = False, params_label: str = "params",
          **options: Any) -> TrainRun:
    """Train the derived network of `genotype` in `space` from scratch (DARTS Sect. 3.2).

    `genotype`: a preset name (DARTS_V2), a genotype.json, a search run directory or a
    `SearchRun`; a search run also gives the space (when `space` is None) and its parameters.
    Writes a run directory (config.yaml, genotype.json, metrics.jsonl, checkpoint.pt, best.pt,
    report.json, status.json) and returns a `TrainRun`. See the module docstring.
    """
    check_arguments("train", space, config, params, overrides, resume)
    expect_argument("train", "genotype", genotype, (Genotype, SearchRun, str, Path, type(None)),
                    "a preset's name, a genotype.json, a run directory, a Genotype or a "
                    "SearchRun")
    options = dict(options)
    overrides = _with_user_data(data, options, overrides, resume)
    with showing(screen(verbose)):
        if resume is not None:
            return _resume_training(Path(resume), options, overrides, params, progress)
        if genotype is None:
            raise ConfigError("train needs a genotype: a preset (DARTS_V2), a genotype.json or "
                              "a search run directory")
        run = _search_run_record(genotype)
        if space is None and run is not None:
            space = run.space
        if space is None:
            raise ConfigError("train needs a space (or a search run as the genotype, whose "
                              "space it trains)")
        assembled = assemble("train", space, config, options, params, overrides, params_label)
        assembled = _with_run_params(assembled, run, space, config, options, params, overrides,
                                     params_label)
        chosen = genotype.genotype if isinstance(genotype, SearchRun) else genotype
        if not isinstance(chosen, Genotype):
            chosen = resolve(str(chosen), compile_file(locate(space)).name)
        trainer = Trainer.build(assembled.cfg, chosen)
        lines = _train_lines(assembled, trainer)
        for line in lines:
            screen_info(log, "%s", line)
        result = start_training(assembled.cfg, chosen, not progress, trainer=trainer,
                                header=header_text(lines))
        return _train_run(result.run_dir, result.report, trainer, lines)


def _with_run_params(assembled: Assembled, run: _SearchRunRecord | None, space: str,
                     config: Any, options: Mapping[str, Any],
                     params: Mapping[str, Any] | None, overrides: Mapping[str, Any],
                     params_label: str) -> Assembled:
    """The configuration with a search run's parameters, as overrides labelled by the run."""
    if run is None:
        return assembled
    taken, note = _run_params(run, assembled.cfg, assembled.label)
    if not taken:
        return Assembled(assembled.cfg, assembled.label, assembled.raw, assembled.params, note)
    dotted = {**overrides, **{f"space.overrides.{k}": v for k, v in taken.items()}}
    again = assemble("train", space, config, options, params, dotted, params_label)
    label = f"search run {run.run_dir.name}"
    return Assembled(again.cfg, again.label, again.raw,
                     {**{name: label for name in taken}, **again.params}, note)


def _train_lines(assembled: Assembled, trainer: Trainer) -> list[str]:
    plain = compile_file(locate(assembled.cfg.space.name))
    origins = param_origins(trainer.compiled, assembled, trainer.task.space_params(plain))
    used = getattr(trainer.task, "auxiliary_weight", None)  # 0: the space has no such head
    return effective_lines("train", assembled, trainer.compiled, origins,
                           trainer.task.describe(), train_method(assembled.cfg, used),
                           trainer.device, [("genotype", _genotype_line(trainer.genotype)),
                                            *_memory_row(trainer.fit)])


def _genotype_line(genotype: Genotype) -> str:
    return " / ".join(line.strip() for line in str(genotype).splitlines()[1:])


def _kept_network(trainer: Trainer, run_dir: Path) -> nn.Module:
    """The trainer's network holding the weights the run kept (best.pt's), in eval mode."""
    with trainer.best_weights(RunDir(run_dir)):
        kept = {name: value.clone() for name, value in trainer.network.state_dict().items()}
    trainer.network.load_state_dict(kept)
    return trainer.network.eval()


def _train_run(run_dir: Path, report: dict[str, Any], trainer: Trainer,
               lines: Sequence[str]) -> TrainRun:
    return TrainRun(Path(run_dir), report, RunDir(Path(run_dir)).read_metrics(),
                    trainer.genotype, trainer.cfg, _kept_network(trainer, Path(run_dir)),
                    tuple(lines))


def _resume_training(run: Path, options: Mapping[str, Any], overrides: Mapping[str, Any],
                     params: Mapping[str, Any] | None, progress: bool) -> TrainRun:
    _only_device(options, overrides, params)
    open_run_dir(run)
    if is_search_run(run):
        raise ConfigError(f"{run} is a search run: `spacec search --resume {run}` continues it")
    built: list[Trainer] = []

    def restored(found: Trainer) -> None:
        built.append(found)
        _say_resuming(run, found)

    result = resume_training(run, options.get("device"), not progress, restored)
    return _train_run(result.run_dir, result.report, built[0], ())


def describe_training(report: Mapping[str, Any]) -> list[str]:
    """A training report as lines for a terminal (the domain's own wording)."""
    return domain(report.get("task", "image")).report_lines(report)
