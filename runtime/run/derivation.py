"""Genotypes from a run directory's α or from α in a JSON file (torch-free).

`spacec derive` runs on these: the space is compiled from the run's space record and derived by
its rules, with the compiler alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spacec.arch.derive import DEFAULT_STRENGTHS, DerivationError, derive
from spacec.arch.genotype import Genotype
from spacec.files import FileError, read_text
from spacec.load import CompiledSpace, compile_file, locate
from spacec.runtime.run.rundir import RunDir, open_run_dir

log = logging.getLogger(__name__)


def derive_from_run(path: Path, epoch: int | None = None) -> tuple[Genotype, int]:
    """The genotype of a run's α after `epoch` (default: the latest), and that epoch."""
    run_dir = open_run_dir(path)
    saved = run_dir.alpha_epochs()
    if not saved:
        raise DerivationError(f"{run_dir.path}: no α saved yet")
    chosen = saved[-1] if epoch is None else epoch
    if chosen not in saved:
        raise DerivationError(f"{run_dir.path}: no α after epoch {chosen}; saved epochs: "
                              f"{', '.join(map(str, saved))}")
    compiled = run_space(run_dir)
    alphas = read_alphas(run_dir.alphas_path(chosen))
    return derive(compiled.name, alphas, compiled.rules, run_strengths(run_dir)), chosen


def run_strengths(run_dir: RunDir) -> str:
    """How the run's method ranks candidates (its method record; DARTS' softmax without one)."""
    path = run_dir.method_record_path
    if not path.is_file():
        return DEFAULT_STRENGTHS
    record = _read_json(path)
    strengths = record.get("strengths") if isinstance(record, dict) else None
    if not isinstance(strengths, str):
        raise DerivationError(f"{path}: no 'strengths' entry naming the derivation's ranking")
    return strengths


def run_space(run_dir: RunDir) -> CompiledSpace:
    """The space as a run compiled it (from its space record)."""
    record_path = run_dir.space_record_path
    if not record_path.is_file():
        raise DerivationError(f"{run_dir.path}: no {record_path.name} (not a search or "
                              "training run directory)")
    record = _read_json(record_path)
    compiled = compile_file(locate(record["source"]), dict(record["params"]))
    if compiled.spec.sha256 != record["sha256"]:
        log.warning("%s changed since the run; deriving with its current rules",
                    record["source"])
    return compiled


def derive_from_alphas(space: str, alphas_path: Path,
                       overrides: Mapping[str, int | float] | None = None) -> Genotype:
    """The genotype of α read from JSON ({cell type: [[...] per edge]}) for a space."""
    compiled = compile_file(locate(space), dict(overrides or {}))
    return derive(compiled.name, read_alphas(alphas_path), compiled.rules)


def read_alphas(path: Path) -> dict[str, Any]:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DerivationError(f"{path}: expected {{cell type: [[...] per edge]}}, "
                              f"got a {type(data).__name__}")
    return data


def _read_json(path: Path) -> Any:
    try:
        text = read_text(path)  # FileError names the path, and file:line:col of a non-UTF-8 byte
    except FileError as error:
        raise DerivationError(str(error)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DerivationError(f"{path}:{error.lineno}:{error.colno}: not valid JSON "
                              f"({error.msg})") from None
    except RecursionError:
        raise DerivationError(f"{path}: JSON nested too deeply") from None
