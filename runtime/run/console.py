"""What a person watching a run sees: the lines meant for a screen, carried by logging.

The runtime never prints. The lines a person watching a run wants (the effective configuration
at the start, one summary per epoch, where the run directory is) are logging records of the
``spacec`` loggers: an epoch's record carries its metrics under `EPOCH_RECORD` (the loops' end-of-
epoch message), any other screen line is marked with `SCREEN`. `showing(write)` is the one way to
see them: inside it they go to `write` (the command line's stderr, above the progress bar), and
nothing else changes for the handlers that were there before (they show what they showed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

EPOCH_RECORD = "epoch_record"  # the loops' end-of-epoch log record: its metrics (a dict)
SCREEN = "spacec_screen"  # a log record meant for a person watching the run
LOGGER = "spacec"

# Metrics of an epoch record, in the order shown: (prefix in the record, label).
_GROUPS = (("train_", "train"), ("val_", "val"), ("arch_", "α"), ("test_", "test"))
_HIDDEN = {"epoch", "epochs", "steps", "seconds", "genotype", "best", "lr", "arch_lr"}


def screen_info(logger: logging.Logger, message: str, *args: Any) -> None:
    """Log `message` at INFO, marked for a person watching the run."""
    logger.info(message, *args, extra={SCREEN: True})


class _AtLeast(logging.Filter):
    """Drops records below a level: what a handler did not show before `showing` began."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


class _ScreenHandler(logging.Handler):
    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.write = write
        self.genotype: Any = None

    def emit(self, record: logging.LogRecord) -> None:
        epoch = getattr(record, EPOCH_RECORD, None)
        if epoch is not None:
            self.write(format_epoch(epoch))
            genotype = epoch.get("genotype")
            if genotype is not None and genotype != self.genotype:
                self.write(format_genotype(genotype, first=self.genotype is None))
                self.genotype = genotype
        elif getattr(record, SCREEN, False):
            self.write(record.getMessage())


@contextmanager
def showing(write: Callable[[str], None] | None) -> Iterator[None]:
    """Inside the block, the runtime's screen lines go to `write` (None: nowhere)."""
    if write is None:
        yield
        return
    logger = logging.getLogger(LOGGER)
    shown = logger.getEffectiveLevel()
    handlers = list(logging.getLogger().handlers)
    keep = _AtLeast(shown)
    for handler in handlers:  # INFO records are made now: the others still show what they did
        handler.addFilter(keep)
    screen = _ScreenHandler(write)
    level = logger.level
    logger.addHandler(screen)
    logger.setLevel(min(shown, logging.INFO))
    try:
        yield
    finally:
        logger.setLevel(level)
        logger.removeHandler(screen)
        for handler in handlers:
            handler.removeFilter(keep)


def _figure(name: str, value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return f"{name} {value}"
    if name.startswith("acc"):
        return f"{name} {100 * value:.1f}%"
    if name == "ppl":
        return f"{name} {value:.1f}"
    return f"{name} {value:.4g}"


def format_epoch(record: Mapping[str, Any]) -> str:
    """``epoch 1/2: train loss 2.31 acc 11.2% | val loss 2.29 acc 13.0% | lr 0.025 | 31.4 s``."""
    parts = []
    for prefix, label in _GROUPS:
        figures = [_figure(key.removeprefix(prefix), value) for key, value in record.items()
                   if key.startswith(prefix) and key not in _HIDDEN]
        if figures:
            parts.append(f"{label} {' '.join(figures)}")
    rates = f"lr {record['lr']:.4g}" if "lr" in record else ""
    if "arch_lr" in record:
        rates += f", α lr {record['arch_lr']:.4g}"
    if rates:
        parts.append(rates)
    if "seconds" in record:
        parts.append(f"{record['seconds']:.1f} s")
    if record.get("best") and any(key.startswith("val_") for key in record):
        parts.append("best so far")
    return f"epoch {record.get('epoch')}/{record.get('epochs')}: " + " | ".join(parts)


def format_genotype(genotype: Mapping[str, Any], first: bool) -> str:
    """The genotype of an epoch record (a `Genotype.to_dict`), indented under its epoch line."""
    from spacec.arch.genotype import Genotype

    text = str(Genotype.from_dict(genotype))
    label = "genotype" if first else "genotype changed"
    return f"  {label}:\n" + "\n".join(f"    {line}" for line in text.splitlines())
