"""Whether a predicted step fits the memory there is, and what would make it fit.

The runtime calls `check_fits(prediction, available, ir)` before it allocates anything: it
returns the prediction when the step fits, else raises `NotEnoughMemory` (a ReportedError: the
command line prints it and exits) naming the predicted figure, the available memory and the
options that would make it fit: the largest batch size that does (from the prediction's growth
per sample), a memory setting that recomputes more, a method registered as fitting in less
memory (a partial-channel one). A step that fits but leaves less free than the prediction's
error (`MARGIN`) gets a warning instead (`close_call`). `available_ram()` reads what the kernel
says a new process can get on the CPU; a GPU's free memory is the runtime's to ask torch for.

The memory setting `auto` (the runtime's default) is resolved here, from the predictions alone:
`choose_memory` picks the setting that keeps the most for backward (the fastest) among those
whose step fits with `MARGIN` to spare; the settings differ in time only, never in arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from spacec import ir as irmod
from spacec.cost.memory import GIB, MEMORY_SETTINGS, Prediction, predict_search
from spacec.cost.methods import METHODS, CostError, method
from spacec.errors import ReportedError

# How far above its prediction a measured peak may lie: the accuracy benchmarks/cost_model.py
# checks against (issue 11: ±20%; the CPU configurations measured on 2026-12-01 with the refitted
# allocator constants landed at 0.81-1.18x of their measured peaks, README "Predicted before it
# runs"). A step predicted to fit with less than this to spare is warned about, not refused:
# most such runs do fit.
MARGIN = 0.20


@dataclass(frozen=True)
class Fix:
    """One way to fit: the command-line options, and the predicted peak with them."""

    options: str  # e.g. "--batch-size 24", "--memory low", "--method pc_darts --batch-size 40"
    total: int  # bytes


class NotEnoughMemory(ReportedError):
    """The predicted peak of a step exceeds the available memory."""

    def __init__(self, prediction: Prediction, available: int, fixes: tuple[Fix, ...]):
        self.prediction = prediction
        self.predicted = prediction.total
        self.available = available
        self.fixes = fixes
        self.largest_batch = prediction.largest_batch(available)
        super().__init__(_message(prediction, available, fixes))


def gib(nbytes: int) -> str:
    return f"{nbytes / GIB:.2f} GiB"


def alternatives(ir: irmod.IR, prediction: Prediction) -> dict[str, Prediction]:
    """The same search step under every memory setting that keeps less, and with every method
    registered as fitting in less memory, keyed by the options that select it: those predicted
    to need less at this batch (under a sampling method `balanced` recomputes little and its
    freed temporaries stay resident: it can need more than `fast`)."""
    if prediction.what != "search":
        return {}
    found: dict[str, Prediction] = {}
    common = {"batch": prediction.batch, "step": prediction.step, "device": prediction.device,
              **dict(prediction.settings)}
    current = MEMORY_SETTINGS[prediction.memory].builder.level
    for name in MEMORY_SETTINGS.names():
        if MEMORY_SETTINGS[name].builder.level <= current:
            continue
        try:
            found[f"--memory {name}"] = predict_search(
                ir, method_name=prediction.method_name or prediction.method, memory=name,
                method_options=dict(prediction.method_options), **common)
        except ReportedError:
            continue  # a setting the space's domain does not take
    for name in METHODS.names():
        if name == prediction.method_name or not method(name).fits_memory:
            continue
        try:
            found[f"--method {name}"] = predict_search(ir, method_name=name,
                                                       memory=prediction.memory, **common)
        except ReportedError:
            continue  # a method this space cannot run (PC-DARTS on a recurrent cell, ...)
    return {option: other for option, other in found.items() if other.total < prediction.total}


def refusal_fixes(prediction: Prediction, available: int,
                  others: Mapping[str, Prediction] = ()) -> tuple[Fix, ...]:
    """The ways to fit a refused step: those that leave `MARGIN` of `available` to spare
    (a run that follows one then starts without the warning of `close_call`), else those
    that fit at all."""
    return (fixes_for(prediction, _budget(available), others)
            or fixes_for(prediction, available, others))


def fixes_for(prediction: Prediction, available: int,
              others: Mapping[str, Prediction] = ()) -> tuple[Fix, ...]:
    """Every way among a smaller batch and `others` that brings the peak under `available`."""
    found = []
    largest = prediction.largest_batch(available)
    if 1 <= largest < prediction.batch:
        found.append(Fix(f"--batch-size {largest}", _at_batch(prediction, largest)))
    for option, other in dict(others).items():
        if other.total <= available:
            found.append(Fix(option, other.total))
        elif 1 <= other.largest_batch(available) < other.batch:
            batch = other.largest_batch(available)
            found.append(Fix(f"{option} --batch-size {batch}", _at_batch(other, batch)))
    return tuple(found)


# run.memory: the fastest memory setting whose step fits (`choose_memory`).
AUTO = "auto"


@dataclass(frozen=True)
class MemoryChoice:
    """The memory setting `auto` chose: its step's prediction, and why not a faster one."""

    prediction: Prediction
    reason: str = ""  # empty when the fastest setting was chosen

    @property
    def memory(self) -> str:
        return self.prediction.memory


def _spares_margin(total: int, available: int) -> bool:
    """Whether a predicted peak of `total` bytes fits `available` bytes even if the peak lies
    `MARGIN` above its prediction."""
    return total * (1 + MARGIN) <= available


def _budget(available: int) -> int:
    """The largest predicted peak that `_spares_margin` of `available` bytes."""
    return int(available / (1 + MARGIN))


def settings_by_level() -> list[str]:
    """The memory settings, the one that keeps most for backward (the fastest) first."""
    return sorted(MEMORY_SETTINGS.names(), key=lambda name: MEMORY_SETTINGS[name].builder.level)


def choose_memory(predict: Callable[[str], Prediction], available: int | None,
                  ir: irmod.IR | None = None) -> MemoryChoice:
    """The memory setting for `auto`, trying every setting in order of what it keeps (fastest
    first; `predict(name)` predicts the step under it, CostError for one the space or method
    does not take): the first whose peak fits `available` bytes with `MARGIN` to spare; else,
    of those that fit at all, the one predicted to need least (`close_call` then warns); else
    NotEnoughMemory for the one that keeps least, with the fixes for it. With `available`
    unknown, the fastest. CostError when no setting can be predicted."""
    predictions = []
    for name in settings_by_level():
        try:
            predictions.append(predict(name))
        except CostError:
            continue
    if not predictions:
        raise CostError("no memory setting of this step can be predicted")
    fastest = predictions[0]
    if available is None:
        return MemoryChoice(fastest)
    roomy = [p for p in predictions if _spares_margin(p.total, available)]
    fitting = [p for p in predictions if p.total <= available]
    if roomy or fitting:
        chosen = roomy[0] if roomy else min(fitting, key=lambda p: p.total)
        skipped = predictions[:predictions.index(chosen)]
        return MemoryChoice(chosen, "; ".join(_slower(faster, available) for faster in skipped))
    least = min(predictions, key=lambda p: p.total)
    others = alternatives(ir, least) if ir is not None else {}
    raise NotEnoughMemory(least, available, refusal_fixes(least, available, others))


def _slower(faster: Prediction, available: int) -> str:
    """Why `auto` did not choose the faster setting of `faster`."""
    fits = "does not fit in" if faster.total > available else f"leaves less than {MARGIN:.0%} of"
    return (f"{faster.memory}'s predicted peak, {gib(faster.total)}, {fits} the "
            f"{gib(available)} available")


def _at_batch(prediction: Prediction, batch: int) -> int:
    return prediction.fixed + prediction.per_sample * batch


def _message(prediction: Prediction, available: int, fixes: tuple[Fix, ...]) -> str:
    label = {"weights": "weights-only search", "first": "first-order search",
             "second": "second-order search", "train": "training"}[prediction.step]
    setting = f" (memory {prediction.memory})" if prediction.what == "search" else ""
    lines = [
        f"one {label} step of {prediction.space} at batch {prediction.batch}{setting} needs "
        f"about {gib(prediction.total)} on {prediction.device} (predicted, during "
        f"{prediction.peak.name}), but only {gib(available)} is available"
    ]
    fixed = prediction.fixed
    if fixes:
        spare = all(_spares_margin(fix.total, available) for fix in fixes)
        lines.append(f"it would fit{f' with {MARGIN:.0%} to spare' if spare else ''} with "
                     + _listed(fixes))
    elif fixed > available or prediction.per_sample <= 0:
        lines.append(f"no batch size fits: what does not grow with the batch (the weights, their "
                     f"optimiser states and gradients, the runtime) alone needs {gib(fixed)}")
    else:
        lines.append(f"no batch size fits: one sample adds about {gib(prediction.per_sample)} "
                     f"to the {gib(fixed)} the weights and the rest need")
    return "\n".join(lines)


def _listed(fixes: tuple[Fix, ...]) -> str:
    return "; or ".join(f"{fix.options} ({gib(fix.total)})" for fix in fixes)


def close_call(prediction: Prediction, available: int, ir: irmod.IR | None = None
               ) -> str | None:
    """None unless the predicted peak fits in `available` bytes with less than `MARGIN` of it
    to spare; then a warning naming both figures and the options that would leave the margin
    (other memory settings and methods too when the space's `ir` is given)."""
    if prediction.total > available or _spares_margin(prediction.total, available):
        return None
    budget = _budget(available)
    others = alternatives(ir, prediction) if ir is not None else {}
    fixes = fixes_for(prediction, budget, others)
    lines = [
        f"the predicted peak, {gib(prediction.total)}, is within {MARGIN:.0%} of the "
        f"{gib(available)} available; measured peaks lie up to {MARGIN:.0%} above their "
        "prediction, so this run may still run out of memory"
    ]
    if fixes:
        lines.append(f"{MARGIN:.0%} to spare with " + _listed(fixes))
    return "\n".join(lines)


def fit_message(prediction: Prediction, available: int,
                others: Mapping[str, Prediction] = ()) -> str | None:
    """None when the predicted peak fits in `available` bytes; else what `check_fits` says."""
    if prediction.total <= available:
        return None
    return _message(prediction, available, refusal_fixes(prediction, available, others))


def check_fits(prediction: Prediction, available: int, ir: irmod.IR | None = None
               ) -> Prediction:
    """`prediction` if its peak fits in `available` bytes, else NotEnoughMemory with the fixes
    (other memory settings and methods too when the space's `ir` is given)."""
    if prediction.total <= available:
        return prediction
    others = alternatives(ir, prediction) if ir is not None else {}
    raise NotEnoughMemory(prediction, available, refusal_fixes(prediction, available, others))


def available_ram(meminfo: str = "/proc/meminfo") -> int | None:
    """The memory the kernel says a new allocation can get without swapping (MemAvailable, in
    bytes), or None where /proc/meminfo does not exist."""
    try:
        with open(meminfo, encoding="ascii") as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
