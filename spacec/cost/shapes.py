"""Shapes through an image network, and the compile-time check that every size works.

`check_shapes` runs the supernet at batch 1 on the space's `image_size`: a size torch would
refuse (one that reaches zero, a stride-2 block's halves that do not line up, a width a block
cannot take) becomes a SpaceError at the `body` statement that puts the failing item there, with
a caret under its name, e.g.

    t.space:14:38: error: body item 7 (cell 'reduce') would reduce 1x1 to 0x0 (candidate skip,
    edge a -> n0); the input is 32x32 (image_size)
"""

from __future__ import annotations

import dataclasses
import random
import re

from spacec import ir as irmod
from spacec import spec
from spacec.arch.genotype import Genotype
from spacec.arch.rules import cell_rules
from spacec.arch.sample import sample_genotype
from spacec.cost.methods import METHODS, known_options, method
from spacec.cost.network import DerivedWalk, PlacedError, Record, SupernetWalk
from spacec.cost.tracer import Tracer
from spacec.errors import Diagnostic, SpaceError, Span


def _is_image(ir: irmod.IR) -> bool:
    return ir.space.network.kind == "image_classifier"


def shapes(ir: irmod.IR, genotype: Genotype | None = None) -> list[Record]:
    """Per-sample shapes through the supernet (or a derived network, its auxiliary head too)."""
    if not _is_image(ir):
        return []
    records: list[Record] = []
    t = Tracer(weights_grad=False)
    if genotype is None:
        SupernetWalk(ir, t, 1, method("darts"), alpha_grad=False, records=records).forward()
    else:
        DerivedWalk(ir, t, 1, genotype, True, False, records=records).forward()
    return records


# ---- compile-time check of the sizes ---------------------------------------------------------
def check_shapes(ir: irmod.IR, text: str | None = None) -> None:
    """SpaceError at the `body` item whose sizes torch would refuse, at the space's image_size:
    the supernet's, with the search method the space names (its edges may need sizes of their
    own: PC-DARTS' k divides the channels). Not the derived network's auxiliary head, which a
    search does not build (`spacec train` and `spacec info --genotype` check it; training
    without it, optim.auxiliary_weight 0, needs no fit)."""
    if not _is_image(ir) or not ir.layout:
        return
    named = ir.space.method
    walked = method("darts")
    if named is not None and named.name in METHODS:
        walked = method(named.name, **known_options(named.name, named.values()))
    try:
        SupernetWalk(ir, Tracer(weights_grad=False), 1, walked, False).forward()
    except PlacedError as error:
        raise space_error(ir, error, text) from None


def auxiliary_warnings(ir: irmod.IR, text: str | None = None) -> tuple[Diagnostic, ...]:
    """A warning where the derived network's auxiliary head does not fit the space's sizes (a
    search does not build it, so `check_shapes` passes; `spacec train` would refuse it): the
    head reads a cell's output, whose size the space fixes whatever the genotype, so one
    sampled genotype tells."""
    if not _is_image(ir) or not ir.layout or ir.space.network.get("auxiliary") is None:
        return ()
    genotype = sample_genotype(ir.space.name, cell_rules(ir.space), random.Random(0))
    try:
        DerivedWalk(ir, Tracer(weights_grad=False), 1, genotype, True, False).forward()
    except PlacedError as error:
        if error.where != "auxiliary":
            return ()  # the derived network's own sizes: spacec train names them
        found = _diagnostic(ir, error, text)
        return (dataclasses.replace(
            found, severity="warning", message=f"{found.message}: spacec train would refuse "
            "the derived network",
            hint="move the head's `after` to an earlier cell, or train without it "
                 "(--cfg optim.auxiliary_weight=0)"),)
    return ()


def space_error(ir: irmod.IR, error: PlacedError, text: str | None = None) -> SpaceError:
    """The SpaceError of a size that does not work, at the place the network puts it."""
    return SpaceError([_diagnostic(ir, error, text)], {ir.space.path: text} if text else None)


def _diagnostic(ir: irmod.IR, error: PlacedError, text: str | None) -> Diagnostic:
    network = ir.space.network
    size = network.get("image_size").value
    piece = {
        "cell": f"cell '{error.name}'",
        "block": f"block {error.name}",
        "stem": f"stem {error.name}",
        "head": f"head {error.name}",
        "auxiliary": f"auxiliary head {error.name}",
    }[error.kind]
    place = {
        "body": f"body item {error.index} ({piece})",
        "auxiliary": f"the {piece} after body item {error.index} (reading "
        f"{'x'.join(map(str, error.size[-2:]))})",
    }.get(error.where, piece)
    cause = error.error
    if cause.sizes is not None:
        h, w, out_h, out_w = cause.sizes
        what = f"{place} would reduce {h}x{w} to {out_h}x{out_w}"
    else:
        what = f"{place}: {cause.message}"
    if cause.context:
        what += f" ({', '.join(cause.context)})"
    what += f"; the input is {size}x{size} (image_size)"
    if error.where == "body":
        line, column, length = _body_caret(ir.space, error.index, error.name, text)
    elif error.where == "auxiliary":
        (line, column), length = network.place("auxiliary"), len("auxiliary")
    else:
        line, column, length = network.line, 1, 1
    return Diagnostic(Span(ir.space.path, line, column, length), what)


def _body_caret(space: spec.Space, index: int, name: str, text: str | None
                ) -> tuple[int, int, int]:
    """(line, column, length) of the body statement's word that puts `name` at layout position
    `index`: the cell's name in `normal * 6 with reduce at [2]`, or the block's."""
    position, target = 0, None
    for item in space.network.body:
        count = 1 if isinstance(item, spec.FixedBlock) else item.count.value
        if index < position + count:
            target = item
            break
        position += count
    if target is None:
        return space.network.line, 1, 1
    lines = text.splitlines() if text is not None else []
    if not 0 < target.line <= len(lines):
        return target.line, 1, 1
    source, start = lines[target.line - 1], 0
    for item in space.network.body:  # step over the items before it on the same line
        if item is target:
            break
        if item.line == target.line:
            for word in _words(item):
                start = _find(source, word, start)[1]
    words = _words(target)
    if len(words) > 1 and name == words[1] and name != words[0]:
        start = _find(source, words[0], start)[1]
        words = words[1:]
    found, end = _find(source, words[0], start)
    if found < 0:
        first = re.search(r"\S", source)
        return target.line, (first.start() + 1 if first else 1), 1
    return target.line, found + 1, end - found


def _words(item) -> list[str]:
    if isinstance(item, spec.FixedBlock):
        return [item.step.primitive]
    return [item.cell] + ([item.replace_with] if item.replace_with else [])


def _find(source: str, word: str, start: int) -> tuple[int, int]:
    found = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)").search(source, start)
    return (found.start(), found.end()) if found else (-1, start)
