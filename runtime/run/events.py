"""Where a run's epochs go: metrics.jsonl and α files, and TensorBoard event files.

The loops report through one `Events` object per run (`open_events`): an epoch's record
(`epoch`) and, for a search, α after an epoch (`alphas`). Each goes to every sink: `RunFiles`
(metrics.jsonl and alphas/ of the run directory, always) and `TensorBoard` (event files beside
metrics.jsonl, when ``run.tensorboard`` says so: ``auto``, the default, writes them when the
tensorboard package is installed). Only rank 0 writes; the other processes get no sinks.

TensorBoard receives every number of an epoch's record as a scalar, at step = the epoch (1 for the
first): ``train/loss``, ``val/acc``, ``arch/val_loss`` (a split's figures under the split's name),
``lr/weights`` and ``lr/alpha``, ``time/epoch_seconds``; the genotype as text; each cell type's α
as a histogram (``alpha/normal``; step 0 is the initial α); and, at the end of a search through
the command line, the pictures of the cells and of α (`add_pictures`). A resumed run appends to
the same folder with ``purge_step`` at the first step it writes, so that TensorBoard hides what
the stopped run wrote after its checkpoint: no epoch appears twice.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from spacec.arch.genotype import Genotype, GenotypeError
from spacec.runtime.errors import ConfigError
from spacec.runtime.run.rundir import RunDir

log = logging.getLogger(__name__)

AUTO = "auto"
EVENTS_GLOB = "events.out.tfevents.*"
# Record keys that are positions, not figures.
_NOT_SCALARS = ("epoch", "epochs", "steps", "genotype", "nonfinite")
# Record keys with a tag of their own; other keys "<split>_<name>" go to "<split>/<name>".
_TAGS = {"lr": "lr/weights", "arch_lr": "lr/alpha", "seconds": "time/epoch_seconds",
         "drop_path_prob": "schedule/drop_path_prob", "asgd": "schedule/averaged_sgd"}
_SPLITS = ("train", "val", "test", "arch")


def tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def tensorboard_enabled(setting: bool | str) -> bool:
    """Whether a run writes TensorBoard events (``run.tensorboard``: true, false or auto);
    ConfigError when asked for and tensorboard is not installed."""
    if setting == AUTO:
        return tensorboard_installed()
    if setting and not tensorboard_installed():
        raise ConfigError("run.tensorboard: true, but the tensorboard package is not installed "
                          "(pip install 'spacec[tensorboard]', or --no-tensorboard)")
    return bool(setting)


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a metrics record's key."""
    if key in _TAGS:
        return _TAGS[key]
    split, _, name = key.partition("_")
    return f"{split}/{name}" if split in _SPLITS and name else key


class Sink(Protocol):
    """One destination of a run's epochs."""

    def epoch(self, record: Mapping[str, Any]) -> None: ...

    def alphas(self, epoch: int, values: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class RunFiles:
    """metrics.jsonl and alphas/epoch_NNN.json of the run directory."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir

    def epoch(self, record: Mapping[str, Any]) -> None:
        self.run_dir.append_metrics(record)

    def alphas(self, epoch: int, values: Mapping[str, Any]) -> None:
        self.run_dir.write_alphas(epoch, values)

    def close(self) -> None:
        pass


class TensorBoard:
    """TensorBoard event files in `folder` (torch.utils.tensorboard; needs tensorboard).

    `purge_step`: the first step this writer records; TensorBoard hides events of that step
    and later that earlier writers left in the folder.
    """

    def __init__(self, folder: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)

    def epoch(self, record: Mapping[str, Any]) -> None:
        step = int(record["epoch"])
        for key, value in record.items():
            if key in _NOT_SCALARS or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):  # a NaN stop's record: the figures that are left
                self.writer.add_scalar(scalar_tag(key), float(value), step)
        genotype = record.get("genotype")
        if genotype is not None:
            try:
                text = str(Genotype.from_dict(genotype))
            except GenotypeError:
                text = repr(genotype)
            self.writer.add_text("genotype", f"```\n{text}\n```", step)
        self.writer.flush()

    def alphas(self, epoch: int, values: Mapping[str, Any]) -> None:
        import numpy as np

        for name, rows in values.items():
            self.writer.add_histogram(f"alpha/{name}", np.asarray(rows, dtype=np.float64), epoch)
        self.writer.flush()

    def pictures(self, paths: Sequence[Path], step: int) -> None:
        from matplotlib.image import imread

        for path in paths:
            self.writer.add_image(f"pictures/{Path(path).stem}", imread(path), step,
                                  dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Events:
    """Every sink of a run: what the loops call once per epoch."""

    def __init__(self, sinks: Sequence[Sink] = ()) -> None:
        self.sinks = list(sinks)

    def epoch(self, record: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.epoch(record)

    def alphas(self, epoch: int, values: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.alphas(epoch, values)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


@contextmanager
def open_events(run_dir: RunDir, tensorboard: bool | str, writer: bool,
                first_step: int) -> Iterator[Events]:
    """The run's sinks (none unless `writer`: rank 0), closed at the end of the block.

    `tensorboard`: ``run.tensorboard``; `first_step`: the first step this run writes (0 for a
    new search, which records its initial α; otherwise the first epoch it runs).
    """
    sinks: list[Sink] = []
    if writer:
        sinks.append(RunFiles(run_dir))
        if tensorboard_enabled(tensorboard):
            sinks.append(TensorBoard(run_dir.path, purge_step=first_step))
    events = Events(sinks)
    try:
        yield events
    finally:
        events.close()


def add_pictures(run_dir: Path, paths: Sequence[Path], step: int) -> bool:
    """The run's pictures (PNG files) as TensorBoard images at `step`, when the run writes
    TensorBoard events (its folder holds event files); whether it did."""
    run_dir = Path(run_dir)
    pictures = [Path(path) for path in paths if Path(path).suffix == ".png"]
    if not pictures or not any(run_dir.glob(EVENTS_GLOB)) or not tensorboard_installed():
        return False
    board = TensorBoard(run_dir)
    try:
        board.pictures(pictures, step)
    finally:
        board.close()
    return True
