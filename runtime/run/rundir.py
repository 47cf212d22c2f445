"""The run directory: the one place that knows its layout (torch-free).

A run directory holds::

    config.yaml             the resolved configuration (read back by --resume)
    space.json              the space as compiled for the run: source, sha256, parameters (and
                            the search method the space names, if it names one)
    method.json             the search method: its relaxation and how derivation ranks candidates
    metrics.jsonl           one JSON object per finished epoch (strict JSON: a NaN or infinite
                            figure is null, its key listed under "nonfinite")
    checkpoint.pt           everything needed to continue (spacec.runtime.run.checkpoint)
    alphas/epoch_NNN.json   α after N epochs, {cell type: [[...] per edge]} (searches only)
    genotype.json           the latest derived genotype (searches; the trained one for training)
    best.pt, report.json    the best epoch's state and the final report (training only)
    status.json             running, finished, failed or interrupted; the device, process and
                            host; the error that stopped a failed run

Epochs are numbered from 1 in everything a user reads; epoch_000 is the initial α. A run's status
is written when it starts (``running``) and when it ends: ``finished``, ``failed`` (with the
error) or ``interrupted`` (Ctrl-C). A process killed outright cannot write it: `run_status`
reports a ``running`` run whose process is gone from this host as ``interrupted``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spacec.arch.genotype import GENOTYPE_FILE
from spacec.errors import visible
from spacec.files import FileError, append_text, atomic_write_text, make_dirs, reason, remove_dirs

log = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
SPACE_RECORD = "space.json"
METHOD_RECORD = "method.json"
METRICS_NAME = "metrics.jsonl"
CHECKPOINT_NAME = "checkpoint.pt"
ALPHAS_DIR = "alphas"
GENOTYPE_NAME = GENOTYPE_FILE
BEST_NAME = "best.pt"
REPORT_NAME = "report.json"
STATUS_NAME = "status.json"
TIMESTAMP = "%Y%m%d-%H%M%S"

RUNNING, FINISHED, FAILED, INTERRUPTED = "running", "finished", "failed", "interrupted"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(cls, parent: Path, stem: str) -> RunDir:
        """A new, empty ``parent/<stem>-<YYYYmmdd-HHMMSS>`` (suffixed -2, -3... if taken).

        FileError (naming the folder and the OS's reason) when it cannot be made or written
        into; then nothing is left behind, not even the parent folders it created.
        """
        parent = Path(parent).expanduser()
        created = make_dirs(parent)
        base = f"{stem}-{time.strftime(TIMESTAMP)}"
        for attempt in range(1, 1000):
            path = parent / (base if attempt == 1 else f"{base}-{attempt}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            except OSError as error:
                remove_dirs(created)
                raise FileError(
                    f"cannot create run directory {visible(str(path))}: {reason(error)}"
                ) from None
            try:  # a folder that can be made but not written into fails here, not mid-run
                with tempfile.NamedTemporaryFile(dir=path, prefix=".probe."):
                    pass
            except OSError as error:
                remove_dirs([*created, path])
                raise FileError(f"cannot write in {visible(str(path))}: {reason(error)}") from None
            return cls(path.resolve())
        remove_dirs(created)
        raise FileError(f"{visible(str(parent / base))}: too many runs started this second")

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    def recorded_effective(self) -> list[str]:
        """The effective configuration config.yaml opens with (its comment lines), as the run
        printed it when it started; [] without one."""
        try:
            text = self.config_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return []
        lines = []
        for line in text.splitlines():
            if not line.startswith("# "):
                break
            lines.append(line[2:])
        return lines

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_NAME

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def genotype_path(self) -> Path:
        return self.path / GENOTYPE_NAME

    @property
    def best_path(self) -> Path:
        return self.path / BEST_NAME

    @property
    def report_path(self) -> Path:
        return self.path / REPORT_NAME

    def alphas_path(self, epoch: int) -> Path:
        return self.path / ALPHAS_DIR / f"epoch_{epoch:03d}.json"

    def alpha_epochs(self) -> list[int]:
        """Epochs with a saved α, ascending."""
        folder = self.path / ALPHAS_DIR
        epochs = []
        for file in folder.glob("epoch_*.json"):
            number = file.stem.removeprefix("epoch_")
            if number.isdigit():
                epochs.append(int(number))
        return sorted(epochs)

    def write_alphas(self, epoch: int, alphas: Mapping[str, Any]) -> None:
        atomic_write_text(self.alphas_path(epoch), strict_json(dict(alphas)) + "\n")

    def write_json(self, path: Path, data: Any) -> None:
        atomic_write_text(path, strict_json(data, indent=2) + "\n")

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """One epoch's record; a non-finite figure is written as null and its key added to the
        record's "nonfinite" list (metrics.jsonl stays strict JSON)."""
        record = dict(record)
        nulled = [key for key, value in record.items()
                  if isinstance(value, float) and not math.isfinite(value)]
        if nulled:
            listed = list(record.get("nonfinite") or [])
            record["nonfinite"] = listed + [key for key in nulled if key not in listed]
        append_text(self.metrics_path, strict_json(finite_data(record)) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The metrics records; a torn last line (a crash while appending) is dropped."""
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: skipping a malformed line", self.metrics_path)
        return records

    def write_space_record(self, space: Any, source: str) -> None:
        """The space as compiled for this run (a `spacec.spec.Space`): where it came from (a
        shipped name or an absolute path), its sha256 and its parameters; the default search
        method it names, if any (`method pc_darts(k=2)`: {"name": ..., "params": {...}})."""
        record = {
            "name": space.name,
            "source": source,
            "sha256": space.digest,
            "params": dict(space.params),
        }
        if space.method is not None:
            record["method"] = {"name": space.method.name, "params": space.method.values()}
        self.write_json(self.space_record_path, record)

    @property
    def space_record_path(self) -> Path:
        return self.path / SPACE_RECORD

    @property
    def method_record_path(self) -> Path:
        return self.path / METHOD_RECORD

    @property
    def status_path(self) -> Path:
        return self.path / STATUS_NAME

    def write_status(self, status: str, **fields: Any) -> None:
        """Record the run's status (keeping the fields written before, e.g. when it started)."""
        record = {**(self.read_status() or {}), **fields, "status": status,
                  "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.write_json(self.status_path, record)

    def read_status(self) -> dict[str, Any] | None:
        """The recorded status, or None (a run directory written before statuses existed)."""
        try:
            record = json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    @contextmanager
    def tracking(self, device: str, writer: bool = True) -> Iterator[None]:
        """``running`` inside the block (on `device`, by this process); then ``finished``, or
        ``failed`` with the error, or ``interrupted`` on Ctrl-C, and the exception goes on.
        `writer`: whether this process writes the status (on several processes, rank 0 only)."""
        if not writer:
            yield
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        # A resumed run keeps when it started, and records when it was resumed.
        started = (self.read_status() or {}).get("started")
        when = {"started": now} if started is None else {"started": started, "resumed": now}
        self.write_status(RUNNING, device=device, pid=os.getpid(), host=socket.gethostname(),
                          error=None, **when)
        try:
            yield
        except KeyboardInterrupt:
            self.write_status(INTERRUPTED)
            raise
        except BaseException as error:
            self.write_status(FAILED, error=f"{type(error).__name__}: {error}".strip())
            raise
        self.write_status(FINISHED)

    def keep_metrics_through(self, epoch: int) -> None:
        """Drop records of epochs after `epoch` (written by a run that died before checkpointing)."""
        records = self.read_metrics()
        kept = [r for r in records if isinstance(r.get("epoch"), int) and r["epoch"] <= epoch]
        if len(kept) != len(records):
            log.info("dropping %d metrics record(s) after epoch %d", len(records) - len(kept), epoch)
        atomic_write_text(self.metrics_path, "".join(strict_json(r) + "\n" for r in kept))


def finite_data(value: Any) -> Any:
    """`value` (JSON-ready data) with every NaN and infinite float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: finite_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_data(item) for item in value]
    return value


def strict_json(data: Any, indent: int | None = None) -> str:
    """`data` as strict JSON (RFC 8259 has no NaN or Infinity): non-finite floats become null,
    with a warning."""
    try:
        return json.dumps(data, indent=indent, allow_nan=False)
    except ValueError:
        log.warning("non-finite numbers written as null")
        return json.dumps(finite_data(data), indent=indent, allow_nan=False)


def open_run_dir(path: Path) -> RunDir:
    """An existing run directory; ConfigError when `path` is not one."""
    from spacec.runtime.errors import ConfigError

    run_dir = RunDir(Path(path).expanduser().resolve())
    if not run_dir.config_path.is_file():
        raise ConfigError(f"{path}: not a run directory (no {run_dir.config_path.name})")
    return run_dir


def is_run_dir(path: str | Path) -> bool:
    return RunDir(Path(path).expanduser()).config_path.is_file()


def is_search_run(path: str | Path) -> bool:
    """Whether `path` is a search's run directory (it records its method; a training run's
    does not)."""
    return RunDir(Path(path).expanduser()).method_record_path.is_file()


def run_status(run_dir: RunDir) -> str:
    """finished, failed, interrupted or running; ``unknown`` without a status file.

    A ``running`` record whose process no longer exists on this host was killed: interrupted.
    """
    record = run_dir.read_status()
    if record is None:
        return "unknown"
    status = str(record.get("status", "unknown"))
    gone = record.get("host") == socket.gethostname() and not _process_alive(record.get("pid"))
    return INTERRUPTED if status == RUNNING and gone else status


def _process_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: no signal, only the existence check
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process of that number
        return True
    return True
