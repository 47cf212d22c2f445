"""Genotypes from a run directory's α or from α in a JSON file (torch-free).

`spacec derive` runs on these: the space is compiled from the run's space record and derived by
its rules, with the compiler alone, the way the run's method derives (its method record: the
strength function and the departures from the rule). A method without α (random_ws, random)
records its genotype, which is what deriving such a run gives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spacec.arch.derive import DEFAULT_STRENGTHS, RULE, DerivationError, DeriveOptions, derive
from spacec.arch.genotype import Genotype, GenotypeError
from spacec.arch.methods import describe
from spacec.errors import SpaceError
from spacec.files import FileError, read_text
from spacec.load import CompiledSpace, compile_file, locate
from spacec.runtime.run.rundir import RunDir, is_run_dir, open_run_dir

log = logging.getLogger(__name__)


def saved_alphas(path: Path, epoch: int | None = None) -> dict[str, Any]:
    """A run's α after `epoch` (default: the latest), as saved in alphas/; DerivationError
    naming the saved epochs for one it did not save."""
    run_dir = open_run_dir(path)
    saved = run_dir.alpha_epochs()
    if not saved:
        raise DerivationError(f"{run_dir.path}: no α saved yet")
    chosen = saved[-1] if epoch is None else epoch
    if isinstance(chosen, bool) or not isinstance(chosen, int) or chosen not in saved:
        raise DerivationError(f"{run_dir.path}: no α after epoch {chosen!r}; saved epochs: "
                              f"{', '.join(map(str, saved))}")
    return read_alphas(run_dir.alphas_path(chosen))


def derive_from_run(path: Path, epoch: int | None = None) -> tuple[Genotype, int]:
    """The genotype of a run's α after `epoch` (default: the latest), and that epoch."""
    run_dir = open_run_dir(path)
    if not run_dir.method_record_path.is_file() and not run_dir.alpha_epochs():
        # (a search run from before method records kept its α, and derives as DARTS')
        raise DerivationError(f"{run_dir.path} is a training run: it trains the genotype it was "
                              f"given ({run_dir.genotype_path.name}), and has no α to derive from")
    if run_strengths(run_dir) is None:
        return _recorded_genotype(run_dir, epoch)
    saved = run_dir.alpha_epochs()
    if not saved:
        raise DerivationError(f"{run_dir.path}: no α saved yet")
    chosen = saved[-1] if epoch is None else epoch
    if chosen not in saved:
        raise DerivationError(f"{run_dir.path}: no α after epoch {chosen}; saved epochs: "
                              f"{', '.join(map(str, saved))}")
    compiled = run_space(run_dir)
    alphas = read_alphas(run_dir.alphas_path(chosen))
    genotype = derive(compiled.name, alphas, compiled.rules, run_strengths(run_dir),
                      run_derive_options(run_dir))
    return genotype, chosen


def _method_record(run_dir: RunDir) -> dict[str, Any] | None:
    path = run_dir.method_record_path
    if not path.is_file():
        return None
    record = _read_json(path)
    if not isinstance(record, dict):
        raise DerivationError(f"{path}: expected a JSON object")
    return record


def run_strengths(run_dir: RunDir) -> str | None:
    """How the run's method ranks candidates (its method record; DARTS' softmax without one);
    None for a method without α, whose run records its genotype."""
    record = _method_record(run_dir)
    if record is None:
        return DEFAULT_STRENGTHS
    if "strengths" not in record or not isinstance(record["strengths"], (str, type(None))):
        raise DerivationError(f"{run_dir.method_record_path}: no 'strengths' entry naming the "
                              "derivation's ranking")
    return record["strengths"]


def run_derive_options(run_dir: RunDir) -> DeriveOptions:
    """The run's method's departures from the space's rule (none without a record of them)."""
    record = _method_record(run_dir)
    if record is None:
        return RULE
    try:
        return DeriveOptions.from_dict(record.get("derive"))
    except (DerivationError, TypeError) as error:
        raise DerivationError(f"{run_dir.method_record_path}: derive: {error}") from None


def _recorded_genotype(run_dir: RunDir, epoch: int | None) -> tuple[Genotype, int]:
    """The genotype a run without α recorded (its final one)."""
    path = run_dir.genotype_path
    if not path.is_file():
        raise DerivationError(f"{run_dir.path}: its method has no α and no genotype was "
                              "recorded yet")
    epochs = [r["epoch"] for r in run_dir.read_metrics() if isinstance(r.get("epoch"), int)]
    last = epochs[-1] if epochs else 0
    if epoch is not None and epoch != last:
        raise DerivationError(f"{run_dir.path}: its method has no α; only the recorded genotype "
                              f"(after epoch {last}) can be given")
    try:
        return Genotype.from_dict(_read_json(path)), last
    except GenotypeError as error:
        raise DerivationError(f"{path}: {error}") from None


def run_space(run_dir: RunDir) -> CompiledSpace:
    """The space as a run compiled it (from its space record)."""
    record = _space_record(run_dir)
    compiled = compile_file(locate(record["source"]), dict(record["params"]))
    if compiled.spec.digest != record["sha256"]:
        log.warning("%s changed since the run; deriving with its current rules",
                    record["source"])
    return compiled


def _space_record(run_dir: RunDir) -> dict[str, Any]:
    record_path = run_dir.space_record_path
    if not record_path.is_file():
        raise DerivationError(f"{run_dir.path}: no {record_path.name} (not a search or "
                              "training run directory)")
    record = _read_json(record_path)
    if not isinstance(record, dict) or not isinstance(record.get("params"), dict) \
            or not isinstance(record.get("source"), str):
        raise DerivationError(f"{record_path}: not a space record (source, params)")
    return record


def run_params(run: str | Path, space: Path) -> dict[str, int | float]:
    """The space parameters a run directory recorded, when it ran `space` (the same file);
    nothing for another space, or for a path that is no run directory."""
    if not is_run_dir(run):
        return {}
    record = _space_record(RunDir(Path(run).expanduser()))
    try:
        same = locate(record["source"]).resolve() == space.resolve()
    except SpaceError:  # the run's space is gone: not this one
        same = False
    return dict(record["params"]) if same else {}


def derive_from_alphas(space: str, alphas_path: Path,
                       overrides: Mapping[str, int | float] | None = None,
                       method: str | None = None) -> Genotype:
    """The genotype of α read from JSON ({cell type: [[...] per edge]}, other tensors under
    "cell.tensor") for a space, ranked as `method` ranks (default: DARTS's softmax)."""
    compiled = compile_file(locate(space), dict(overrides or {}))
    strengths = DEFAULT_STRENGTHS
    if method is not None:
        strengths = describe(method).strengths
        if strengths is None:
            raise DerivationError(f"method {method!r} has no α to derive from")
    return derive(compiled.name, read_alphas(alphas_path), compiled.rules, strengths)


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
