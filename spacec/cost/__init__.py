"""The cost model: what a compiled space needs, computed from its IR alone (no torch).

- `shapes(ir)`: the (channels, height, width) of every tensor an image network passes;
  `check_shapes(ir)` turns a size torch would refuse (one reaching zero, halves that do not line
  up) into a SpaceError at the `body` statement, at compile time;
- `supernet_costs(ir)`, `derived_costs(ir, genotype)`: exact parameter counts and multiply-adds
  of one forward (per image, or per token for a language model), as torch counts them;
- `predict_search(ir, batch, ...)`, `predict_train(ir, genotype, batch, ...)`: the predicted
  peak memory of one step with its breakdown (spacec.cost.memory);
- `fit_message(prediction, available)`: None when the prediction fits, else what to change.

Every figure comes from the catalogue's cost programs (spacec.catalog.COSTS) run by a symbolic
tracer (spacec.cost.tracer) over the network the compiler generates (spacec.cost.network).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from spacec import ir as irmod
from spacec.arch.genotype import Genotype
from spacec.cost.memory import (
    DEVICES,
    GIB,
    MEMORY_SETTINGS,
    STEPS,
    Prediction,
    alpha_count,
    predict_search,
    predict_train,
)
from spacec.cost.methods import METHODS, method
from spacec.cost.network import DerivedWalk, Record, RecurrentWalk, SupernetWalk
from spacec.cost.shapes import check_shapes, shapes
from spacec.cost.tracer import Tracer

__all__ = [
    "DEVICES", "GIB", "MEMORY_SETTINGS", "METHODS", "STEPS", "Costs", "Prediction", "Record",
    "alternatives", "available_ram", "check_shapes", "derived_costs", "fit_message",
    "predict_search", "predict_train", "shapes", "supernet_costs",
]  # fmt: skip


@dataclass(frozen=True)
class Costs:
    parameters: int  # weights (the supernet's, or the derived network's without auxiliary head)
    alpha: int  # architecture parameters (0 for a derived network)
    multiply_adds: int  # one forward, per image (or per token)


def _is_image(ir: irmod.IR) -> bool:
    return ir.space.network.kind == "image_classifier"


def supernet_costs(ir: irmod.IR, method_name: str = "darts") -> Costs:
    """The supernet's weights (every module its edges hold), α, and the multiply-adds of one
    forward (what the method's edges run)."""
    search_method = method(method_name)
    if not _is_image(ir):
        t = Tracer(weights_grad=False)
        RecurrentWalk(ir, t, 1, 1, alpha_grad=False).forward()
        return Costs(t.parameters, alpha_count(ir, search_method), t.multiply_adds)
    built, ran = Tracer(weights_grad=False), Tracer(weights_grad=False)
    SupernetWalk(ir, built, 1, search_method, alpha_grad=False, build=True).forward()
    SupernetWalk(ir, ran, 1, search_method, alpha_grad=False).forward()
    return Costs(built.parameters, alpha_count(ir, search_method), ran.multiply_adds)


def derived_costs(ir: irmod.IR, genotype: Genotype) -> Costs:
    """The derived network in evaluation: no auxiliary head (DARTS counts it out), no drop path."""
    t = Tracer(weights_grad=False)
    if _is_image(ir):
        DerivedWalk(ir, t, 1, genotype, auxiliary=False, drop_path=False).forward()
    else:
        RecurrentWalk(ir, t, 1, 1, alpha_grad=False, genotype=genotype).forward()
    return Costs(t.parameters, 0, t.multiply_adds)


# ---- fitting into memory ---------------------------------------------------------------------
def alternatives(ir: irmod.IR, prediction: Prediction) -> dict[str, Prediction]:
    """The same search step under every other registered memory setting and method, keyed by
    the option that selects it (`--memory NAME`, `--method NAME`)."""
    if prediction.what != "search":
        return {}
    found: dict[str, Prediction] = {}
    common = {"batch": prediction.batch, "step": prediction.step, "device": prediction.device,
              **dict(prediction.settings)}
    for name in MEMORY_SETTINGS.names():
        if name != prediction.memory:
            found[f"--memory {name}"] = predict_search(
                ir, method_name=prediction.method, memory=name, **common
            )
    for name in METHODS.names():
        if name != prediction.method:
            found[f"--method {name}"] = predict_search(
                ir, method_name=name, memory=prediction.memory, **common
            )
    return found


def available_ram(meminfo: str = "/proc/meminfo") -> int | None:
    """The memory the kernel says a new allocation can get without swapping (MemAvailable, in
    bytes), or None where /proc/meminfo does not exist. (A GPU's free memory is the runtime's
    to ask torch for.)"""
    try:
        with open(meminfo, encoding="ascii") as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def gib(nbytes: int) -> str:
    return f"{nbytes / GIB:.2f} GiB"


def fit_message(
    prediction: Prediction,
    available: int,
    alternatives: dict[str, Prediction] | Iterable = (),
) -> str | None:
    """None when the predicted peak fits in `available` bytes; else a message naming the
    prediction, the available memory and the options that would make it fit (a smaller
    --batch-size, another memory setting or method among `alternatives`)."""
    if prediction.total <= available:
        return None
    label = {"weights": "weights-only search", "first": "first-order search",
             "second": "second-order search", "train": "training"}[prediction.step]
    lines = [
        f"one {label} step of {prediction.space} at batch {prediction.batch} needs about "
        f"{gib(prediction.total)} on {prediction.device} (predicted, during "
        f"{prediction.peak.name}), but only {gib(available)} is available"
    ]
    fixes = []
    largest = prediction.largest_batch(available)
    if largest >= 1:
        fixes.append(f"--batch-size {largest} (or smaller)")
    for option, other in dict(alternatives).items():
        if other.total <= available:
            fixes.append(f"{option} ({gib(other.total)})")
        elif other.largest_batch(available) >= 1:
            fixes.append(f"{option} with --batch-size {other.largest_batch(available)}")
    if fixes:
        lines.append("it would fit with " + "; or ".join(fixes))
    else:
        lines.append("no batch size fits: the weights and their optimiser states alone exceed it")
    return "\n".join(lines)
