"""Run directories at a glance: `spacec runs [FOLDER]` and `spacec report RUN... -o FILE.html`.

`find_runs` lists the run directories under a folder (its children, and their children, where
`spacec select` puts its candidates); `summarise` reads one from its files alone (torch-free):
what it is (search or training), the space, the method, epochs done of planned, the best
validation figure (accuracy, or perplexity for a language model), the genotype and the status
(spacec.runtime.run.rundir.run_status: finished, failed, interrupted, running). `write_report`
puts several runs side by side in one self-contained HTML file: their summaries, the settings
in which they differ, their last epoch's figures and their pictures (the derived cells and, for
searches, α), drawn first where missing.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from spacec.errors import ReportedError
from spacec.files import atomic_write_text
from spacec.runtime.run.rundir import FINISHED, RunDir, is_search_run, run_status

log = logging.getLogger(__name__)

DEPTH = 2  # run directories are children of the folder, or of a selection folder in it
GENOTYPE_WIDTH = 60  # characters of the genotype shown in the table
# A random search's record of its samples (spacec.runtime.tools.select.SUMMARY_NAME).
SELECTION_SUMMARY = "selection.json"


class RunsError(ReportedError):
    """A folder without runs, or a path that is not a run directory."""


@dataclass(frozen=True)
class RunSummary:
    path: Path
    kind: str  # search, train
    space: str
    method: str  # the search method; "-" for training
    epochs_done: int
    epochs: int | None
    metric: str  # the figure `best` is: "val acc", "val ppl", or "" when there is none
    best: float | None
    genotype: str  # one line
    status: str
    unit: str = ""  # what epochs_done counts, where not epochs: "samples" (a random search)

    @property
    def progress(self) -> str:
        done = f"{self.epochs_done}/{self.epochs}" if self.epochs is not None \
            else str(self.epochs_done)
        return f"{done} {self.unit}" if self.unit else done

    @property
    def best_text(self) -> str:
        if self.best is None:
            return "-"
        if self.metric.endswith("acc"):
            return f"{self.metric} {100 * self.best:.2f}%"
        return f"{self.metric} {self.best:.2f}"


def find_runs(folder: Path) -> list[Path]:
    """Run directories under `folder` (itself included), oldest first by name."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise RunsError(f"{folder}: no such folder")
    found = []
    level = [folder]
    for _ in range(DEPTH + 1):
        found += [path for path in level if RunDir(path).config_path.is_file()]
        level = sorted(child for path in level if not RunDir(path).config_path.is_file()
                       for child in path.iterdir() if child.is_dir())
    return sorted(found, key=lambda path: (path.parent, path.name))


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _config(run: RunDir) -> dict[str, Any]:
    try:
        data = yaml.safe_load(run.config_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def genotype_line(genotype: Any) -> str:
    """A genotype (its dict) on one line: ``normal: op(src) op(src) ... | reduce: ...``."""
    if not isinstance(genotype, dict) or not isinstance(genotype.get("cells"), dict):
        return "-"
    cells = []
    for name, cell in genotype["cells"].items():
        edges = " ".join(f"{edge[0]}({edge[1]})" for edge in cell.get("edges", [])
                         if isinstance(edge, list) and len(edge) >= 2)
        cells.append(f"{name}: {edges}")
    return " | ".join(cells)


def _best(records: Sequence[dict[str, Any]]) -> tuple[str, float | None]:
    """The best validation figure of the epochs: accuracy (highest), or perplexity (lowest)."""
    for metric, higher in (("val_acc", True), ("val_ppl", False)):
        values = [r[metric] for r in records if isinstance(r.get(metric), (int, float))]
        if values:
            return metric.replace("_", " "), max(values) if higher else min(values)
    return "", None


def summarise(path: Path) -> RunSummary:
    """What a run directory holds, from its files alone."""
    run = RunDir(Path(path).expanduser().resolve())
    if not run.config_path.is_file():
        raise RunsError(f"{path}: not a run directory (no {run.config_path.name})")
    config = _config(run)
    kind = "search" if is_search_run(run.path) else "train"
    space = (_json(run.space_record_path) or {}).get("name") or \
        str((config.get("space") or {}).get("name", "?"))
    method = str((config.get("method") or {}).get("name", "darts")) if kind == "search" else "-"
    records = [r for r in run.read_metrics() if isinstance(r.get("epoch"), int)]
    epochs = (config.get("optim") or {}).get("epochs")
    metric, best = _best(records)
    status = run_status(run)
    if status == "unknown" and run.report_path.is_file():
        status = FINISHED  # written before run directories recorded their status
    done, planned, unit = len(records), epochs if isinstance(epochs, int) else None, ""
    samples = (config.get("method") or {}).get("samples")
    if kind == "search" and isinstance(samples, int):  # a random search: samples trained
        unit, planned = "samples", samples
        done = sum(1 for child in run.path.glob("*-sample") if RunDir(child).report_path.is_file())
        chosen = (_json(run.path / SELECTION_SUMMARY) or {}).get("winner") or {}
        if isinstance(chosen.get("last_val_acc"), (int, float)):
            metric, best = "val acc", chosen["last_val_acc"]
    return RunSummary(run.path, kind, space, method, done, planned, metric, best,
                      genotype_line(_json(run.genotype_path)), status, unit)


def describe_runs(summaries: Sequence[RunSummary], relative_to: Path | None = None) -> list[str]:
    """A table for a terminal, one run per line."""
    def name(summary: RunSummary) -> str:
        if relative_to is not None:
            try:
                return str(summary.path.relative_to(relative_to.resolve()))
            except ValueError:
                pass
        return str(summary.path)

    rows = [("run", "kind", "space", "method", "epochs", "best", "status", "genotype")]
    for s in summaries:
        epochs = s.progress
        genotype = s.genotype if len(s.genotype) <= GENOTYPE_WIDTH else \
            s.genotype[:GENOTYPE_WIDTH - 1] + "…"
        rows.append((name(s), s.kind, s.space, s.method, epochs, s.best_text, s.status, genotype))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  " + row[-1] for row in rows]


def summary_record(summary: RunSummary) -> dict[str, Any]:
    record = asdict(summary)
    record["path"] = str(summary.path)
    return record


# ---------------------------------------------------------------- several runs side by side


def _differences(configs: Sequence[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(data, dict):
            return {prefix.rstrip("."): data}
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat

    flat = [flatten(config) for config in configs]
    keys = sorted({key for entry in flat for key in entry})
    return [(key, [str(entry.get(key, "-")) for entry in flat]) for key in keys
            if len({json.dumps(entry.get(key), sort_keys=True, default=str) for entry in flat}) > 1]


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def write_report(paths: Sequence[Path], output: Path) -> Path:
    """Several runs side by side in one HTML file (pictures embedded); returns `output`."""
    from spacec.runtime.tools.show import draw_run

    if not paths:
        raise RunsError("report needs at least one run directory")
    summaries = [summarise(path) for path in paths]
    for summary in summaries:
        if not list(summary.path.glob("cell_*.png")) and summary.genotype != "-":
            try:
                draw_run(summary.path)
            except ReportedError as error:  # one run's pictures: the others' report goes on
                log.warning("%s: not every picture could be drawn for the report (%s)",
                            summary.path, error)
    runs = [RunDir(summary.path) for summary in summaries]
    last = [(run.read_metrics() or [{}])[-1] for run in runs]
    rows: list[tuple[str, list[str]]] = [
        ("kind", [s.kind for s in summaries]),
        ("space", [s.space for s in summaries]),
        ("method", [s.method for s in summaries]),
        ("status", [s.status for s in summaries]),
        ("epochs", [s.progress for s in summaries]),
        ("best", [s.best_text for s in summaries]),
    ]
    figures = sorted({key for record in last for key in record
                      if isinstance(record.get(key), float) and key != "seconds"})
    rows += [(f"last epoch: {key}", [f"{record[key]:.4g}" if key in record else "-"
                                     for record in last]) for key in figures]
    rows += [(f"config: {key}", values) for key, values in _differences([_config(run)
                                                                          for run in runs])]
    pictures = [sorted(run.path.glob("cell_*.png")) + sorted(run.path.glob("alpha_*.png"))
                for run in runs]
    head = "".join(f"<th>{html.escape(s.path.name)}</th>" for s in summaries)
    body = "".join(
        f"<tr><th>{html.escape(label)}</th>"
        + "".join(f"<td>{html.escape(value)}</td>" for value in values) + "</tr>"
        for label, values in rows)
    body += "<tr><th>pictures</th>" + "".join(
        "<td>" + "".join(_image(path) for path in images) + "</td>" for images in pictures) \
        + "</tr>"
    page = (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>spacec runs</title>"
        "<style>body{font-family:sans-serif} table{border-collapse:collapse} "
        "td,th{border:1px solid #ccc;padding:4px;vertical-align:top;text-align:left} "
        "img{max-width:420px;display:block;margin-bottom:6px}</style></head><body>"
        f"<h1>{len(summaries)} spacec runs</h1><table><tr><th></th>{head}</tr>{body}</table>"
        "</body></html>\n")
    atomic_write_text(Path(output), page)
    return Path(output)
