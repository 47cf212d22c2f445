"""DARTS' selection protocol (Liu, Simonyan & Yang, ICLR 2019, Sect. 3.2).

A search is run several times with different seeds; each run's derived cell is trained from
scratch for a short period and the cell with the best validation accuracy is kept for the final
evaluation. Validation means a held-out part of the TRAINING set: the first
``floor(N · train_portion)`` training images train the network (augmented, as in training) and
the rest are evaluated (test-time preprocessing), the same split a search uses. The test set is
never opened: choosing a cell by its test accuracy would leak the test set into the model.

Each candidate is trained by the one training loop (spacec.runtime.train.loop) into its own run directory
under ``<run.out>/select-<time>/``; the summary goes to ``selection.json`` there, and the
winner's genotype to ``genotype.json``, so that ``spacec train SPACE --genotype <that folder>``
trains it.

The same protocol ranks the `random` search method's candidates (`random_search`: random search
without weight sharing, Li & Talwalkar, UAI 2019): genotypes drawn uniformly from the space's
rule (spacec.arch.sample), each trained briefly from scratch, the best kept.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from spacec.arch.genotype import Genotype, resolve
from spacec.arch.methods import describe
from spacec.arch.sample import sample_genotype
from spacec.load import compile_file, locate
from spacec.runtime.errors import ConfigError
from spacec.runtime.relax.base import stream_seed
from spacec.runtime.run.console import SCREEN
from spacec.runtime.run.rundir import RunDir
from spacec.runtime.search.config import write_config
from spacec.runtime.train.config import (
    SELECT_PREFIX,
    TrainConfig,
    config_to_dict,
    load_train_config,
)
from spacec.runtime.train.loop import TrainResult, start_training

log = logging.getLogger(__name__)

SUMMARY_NAME = "selection.json"
CRITERION = "last_val_acc"  # the validation accuracy after the last epoch of the short training


# The held-out part of the training set (spacec.runtime.domains.image.data.holdout_loaders).
VALIDATION_SPLIT = "val"


@dataclass(frozen=True)
class Candidate:
    reference: str  # as given on the command line
    label: str  # a folder-safe name
    genotype: Genotype
    space: str  # the space it is trained in: its run's space, else the configuration's


def candidate(reference: str, index: int, default_space: str) -> Candidate:
    """A genotype reference (run directory, genotype file, preset) and the space to train it in."""
    genotype = resolve(reference)
    path = Path(reference).expanduser()
    space = default_space
    record = RunDir(path).space_record_path
    if path.is_dir() and record.is_file():
        try:
            space = json.loads(record.read_text(encoding="utf-8"))["source"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{record}: unreadable space record ({error})") from None
    stem = path.name if path.name else reference
    label = f"{index}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem)}"
    return Candidate(reference, label, genotype, space)


def load_select_config(name_or_path: str = "quick", overrides: dict[str, Any] | None = None
                       ) -> TrainConfig:
    """A selection preset (``select_quick``, ``select_paper``) or YAML file."""
    return load_train_config(name_or_path, overrides, prefix=SELECT_PREFIX)


def select(references: Sequence[str], cfg: TrainConfig, quiet: bool = True) -> dict[str, Any]:
    """Train every candidate briefly, evaluate on the held-out split, pick the best.

    Every genotype is checked against its space before any training starts.
    """
    if not references:
        raise ConfigError("select needs at least one run directory or genotype")
    candidates = [candidate(ref, index, cfg.space.name) for index, ref in enumerate(references)]
    for entry in candidates:
        compiled = compile_file(locate(entry.space))
        if compiled.spec.domain != cfg.task:
            raise ConfigError(
                f"{entry.reference}: a {compiled.spec.domain} space ({compiled.name}); the "
                f"selection protocol's presets train {cfg.task} candidates (a sequence space's: "
                "train each with spacec train and compare their validation perplexity)")
        compiled.discrete_source(entry.genotype)
    folder = RunDir.create(Path(cfg.run.out), "select")
    log.info("selection directory %s", folder.path)
    return select_candidates(candidates, cfg, folder, quiet)


def select_candidates(candidates: Sequence[Candidate], cfg: TrainConfig, folder: RunDir,
                      quiet: bool = True) -> dict[str, Any]:
    """Train every candidate into `folder`/<label>, write the summary and the winner's genotype
    there, and return the summary."""
    results = []
    for entry in candidates:
        log.info("candidate %s: training %s in %s", entry.label, entry.reference, entry.space)
        result = start_training(_config_for(cfg, entry), entry.genotype, quiet,
                                split=VALIDATION_SPLIT, run_dir=folder.path / entry.label)
        results.append(_candidate_summary(entry, result))
    winner = max(results, key=lambda r: r[CRITERION])  # the first of equals wins
    summary = {
        "criterion": CRITERION,
        "config": config_to_dict(cfg),
        "candidates": results,
        "winner": {key: winner[key]
                   for key in ("reference", "space", "run_dir", CRITERION, "genotype")},
        "selection_dir": str(folder.path),
    }
    folder.write_json(folder.path / SUMMARY_NAME, summary)  # strict JSON
    folder.write_json(folder.genotype_path, winner["genotype"])
    return summary


@dataclass(frozen=True)
class RandomSearchResult:
    run_dir: Path
    genotype: Genotype
    summary: dict[str, Any]


# The sections of a `random` search's configuration whose explicit settings (options, --set,
# --cfg) its samples' training takes: the data, the run, the weights' optimiser, the space's
# sizes; the rest of that training is the selection protocol's. A search's keys there are all
# keys of a training's too.
SELECTION_SECTIONS = ("data.", "run.", "optim.", "space.overrides.")
# Explicit settings that do not apply to a search without α, refused rather than recorded.
NO_ALPHA_SECTIONS = ("arch.",)


@dataclass(frozen=True)
class RandomSearchPlan:
    """What a `random` search will do, before anything is written: the genotypes drawn and the
    training that scores each (for its effective configuration)."""

    cfg: Any  # the search's configuration
    compiled: Any  # the space, as its genotypes are drawn from it
    genotypes: tuple[Genotype, ...]
    train_cfg: TrainConfig  # the selection protocol's training of each sample


def plan_random_search(cfg: Any, given: dict[str, Any] | None = None) -> RandomSearchPlan:
    """The `random` method of a search configuration (spacec.runtime.search.config): draw
    ``method.samples`` genotypes from the space's rule, each to be trained by the selection
    protocol (``method.select``'s preset or file, at the space's sizes there, with what the
    search's `given` settings set in SELECTION_SECTIONS)."""
    params = cfg.method
    info = describe(params.name)
    if info.shares_weights or cfg.task not in info.domains:
        raise ConfigError(f"random_search runs the `random` method on image spaces, not "
                          f"{params.name!r} on a {cfg.task} space")
    not_applied = sorted(key for key in given or {} if key.startswith(NO_ALPHA_SECTIONS))
    if not_applied:
        raise ConfigError(f"{params.name} trains sampled architectures from scratch and has no "
                          f"α: {', '.join(not_applied)} does not apply (--order, --cfg arch.*)")
    compiled = compile_file(locate(cfg.space.name))
    rng = random.Random(stream_seed(cfg.run.seed, "random"))
    exclude = params.derive != "official"  # official: `none` may be sampled
    genotypes = tuple(sample_genotype(compiled.name, compiled.rules, rng, exclude=exclude)
                      for _ in range(params.samples))
    return RandomSearchPlan(cfg, compiled, genotypes,
                            _selection_config(cfg, compiled.params, given or {}))


def run_random_search(plan: RandomSearchPlan, quiet: bool = True,
                      header: str = "") -> RandomSearchResult:
    """Train every sample of `plan`, keep the best. The run directory holds config.yaml (after
    `header`, the effective configuration as comment lines), space.json, method.json, one
    training run directory per sample, selection.json and the winner as genotype.json."""
    cfg, compiled = plan.cfg, plan.compiled
    folder = RunDir.create(Path(cfg.run.out), compiled.name)
    log.info("run directory %s", folder.path, extra={SCREEN: True})
    write_config(cfg, folder.config_path, header)
    folder.write_space_record(compiled.spec, cfg.space.name)
    folder.write_json(folder.method_record_path, {
        "name": cfg.method.name, "relaxation": None, "strengths": None,
        "derive": describe(cfg.method.name).derive_options(cfg.method).to_dict()})
    candidates = [Candidate(f"sample {index}", f"{index}-sample", genotype, cfg.space.name)
                  for index, genotype in enumerate(plan.genotypes)]
    with folder.tracking(plan.train_cfg.run.device):
        summary = select_candidates(candidates, plan.train_cfg, folder, quiet)
    return RandomSearchResult(folder.path, Genotype.from_dict(summary["winner"]["genotype"]),
                              summary)


def random_search(cfg: Any, quiet: bool = True,
                  given: dict[str, Any] | None = None) -> RandomSearchResult:
    """`plan_random_search` then `run_random_search`."""
    return run_random_search(plan_random_search(cfg, given), quiet)


def _selection_config(cfg: Any, declared: dict[str, Any], given: dict[str, Any]) -> TrainConfig:
    """The selection preset for the search's space: its sizes where the space declares them,
    the search's own explicit overrides, what `given` sets in SELECTION_SECTIONS, device and
    threads."""
    applied = {key: value for key, value in given.items() if key.startswith(SELECTION_SECTIONS)}
    train_cfg = load_select_config(cfg.method.select, {"run.device": cfg.run.device, **applied})
    space = train_cfg.space
    sizes = {k: v for k, v in {**space.optional_overrides, **space.overrides}.items()
             if k in declared}
    return replace(
        train_cfg,
        space=replace(space, name=cfg.space.name, overrides={**sizes, **cfg.space.overrides},
                      optional_overrides={}),
        run=replace(train_cfg.run, threads=cfg.run.threads or train_cfg.run.threads),
    )


def _config_for(cfg: TrainConfig, entry: Candidate) -> TrainConfig:
    return replace(cfg, space=replace(cfg.space, name=entry.space))


def _candidate_summary(entry: Candidate, result: TrainResult) -> dict[str, Any]:
    report = result.report
    return {
        "reference": entry.reference,
        "space": report["space"],
        "run_dir": str(result.run_dir),
        "last_val_acc": report["last_val_acc"],
        "best_val_acc": report["best_val_acc"],
        "best_epoch": report["best_epoch"],
        "parameters": report["parameters"],
        "genotype": entry.genotype.to_dict(),
    }


def describe_selection(summary: dict[str, Any]) -> list[str]:
    lines = [f"{'candidate':<40} {'val acc (last)':>14} {'val acc (best)':>14}"]
    for row in summary["candidates"]:
        mark = " <- selected" if row["run_dir"] == summary["winner"]["run_dir"] else ""
        lines.append(f"{row['reference']:<40} {100 * row['last_val_acc']:>13.2f}% "
                     f"{100 * row['best_val_acc']:>13.2f}%{mark}")
    lines.append(f"summary: {Path(summary['selection_dir']) / SUMMARY_NAME}")
    return lines
