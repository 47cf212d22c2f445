"""The cost model: what a compiled space needs, computed from its IR alone (no torch).

- `shapes(ir)`: the (channels, height, width) of every tensor an image network passes;
  `check_shapes(ir)` turns a size torch would refuse (one reaching zero, halves that do not line
  up) into a SpaceError at the `body` statement, at compile time;
- `supernet_costs(ir)`, `derived_costs(ir, genotype)`: exact parameter counts and multiply-adds
  of one forward (per image, or per token for a language model), as torch counts them;
- `predict_search(ir, batch, ...)`, `predict_train(ir, genotype, batch, ...)`: the predicted
  peak memory of one step with its breakdown (spacec.cost.memory);
- `check_fits(prediction, available, ir)`: the prediction, or NotEnoughMemory naming what would
  make it fit (spacec.cost.fit); `fit_message`, the same as text or None; `close_call`, a
  warning for a step that fits with less than the prediction's error (`MARGIN`) to spare;
  `choose_memory`, the fastest memory setting whose step fits (the runtime's `auto`).

Every figure comes from the catalogue's cost programs (spacec.catalog.COSTS) run by a symbolic
tracer (spacec.cost.tracer) over the network the compiler generates (spacec.cost.network).
"""

from __future__ import annotations

from dataclasses import dataclass

from spacec import ir as irmod
from spacec.arch.genotype import Genotype
from spacec.cost.fit import (
    AUTO,
    MARGIN,
    Fix,
    MemoryChoice,
    NotEnoughMemory,
    alternatives,
    available_ram,
    check_fits,
    choose_memory,
    close_call,
    fit_message,
    gib,
    settings_by_level,
)
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
from spacec.cost.methods import METHODS, CostError, known_options, method
from spacec.cost.network import DerivedWalk, PlacedError, Record, RecurrentWalk, SupernetWalk
from spacec.cost.shapes import auxiliary_warnings, check_shapes, shapes, space_error
from spacec.cost.tracer import Tracer

__all__ = [
    "AUTO", "DEVICES", "GIB", "MEMORY_SETTINGS", "METHODS", "STEPS", "CostError", "Costs", "Fix",
    "MARGIN", "MemoryChoice", "NotEnoughMemory", "Prediction", "Record", "alternatives",
    "auxiliary_warnings", "available_ram", "check_fits", "check_shapes", "choose_memory",
    "close_call", "derived_costs", "fit_message", "gib", "known_options", "predict_search",
    "predict_train",
    "multiply_adds_text", "settings_by_level", "shapes", "supernet_costs",
]  # fmt: skip


def multiply_adds_text(count: int | float) -> str:
    """``300.3M``; ``7.2G``, ``71.7T`` for the sizes a large space reaches."""
    for scale, unit in ((1e12, "T"), (1e9, "G")):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return f"{count / 1e6:.1f}M"


@dataclass(frozen=True)
class Costs:
    parameters: int  # weights (the supernet's, or the derived network's without auxiliary head)
    alpha: int  # architecture parameters (0 for a derived network)
    multiply_adds: int  # one forward, per image (or per token)


def _is_image(ir: irmod.IR) -> bool:
    return ir.space.network.kind == "image_classifier"


def supernet_costs(ir: irmod.IR, method_name: str = "darts", **options: object) -> Costs:
    """The supernet's weights (every module its edges hold), α, and the multiply-adds of one
    forward (what the method's edges run; a sampling method's most expensive sample)."""
    search_method = method(method_name, **options)
    search_method.check_domain("image" if _is_image(ir) else "sequence")
    if not _is_image(ir):
        t = Tracer(weights_grad=False)
        RecurrentWalk(ir, t, 1, 1, alpha_grad=False).forward()
        return Costs(t.parameters, alpha_count(ir, search_method), t.multiply_adds)
    built, ran = Tracer(weights_grad=False), Tracer(weights_grad=False)
    try:
        SupernetWalk(ir, built, 1, search_method, alpha_grad=False, build=True).forward()
        SupernetWalk(ir, ran, 1, search_method, alpha_grad=False).forward()
    except PlacedError as error:  # a method option the space's sizes do not take (PC-DARTS k)
        raise space_error(ir, error) from None
    return Costs(built.parameters, alpha_count(ir, search_method), ran.multiply_adds)


def derived_costs(ir: irmod.IR, genotype: Genotype) -> Costs:
    """The derived network in evaluation: no auxiliary head (DARTS counts it out), no drop path."""
    t = Tracer(weights_grad=False)
    if _is_image(ir):
        DerivedWalk(ir, t, 1, genotype, auxiliary=False, drop_path=False).forward()
    else:
        RecurrentWalk(ir, t, 1, 1, alpha_grad=False, genotype=genotype).forward()
    return Costs(t.parameters, 0, t.multiply_adds)
