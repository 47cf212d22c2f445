"""How an image network's body is laid out: which cell or block sits where, at what width.

Pure Python (no torch): the compiler uses it to lint a space and report its shape, and the
generated supernets and discrete networks use it at construction time, so both agree by
construction.

The conventions are DARTS' (model_search.py): the stem's output feeds every input of the first
cell; a reduction cell (or a stride-2 block) doubles the working width C before it is built; a
cell's output has `multiplier * C` channels where `multiplier` is the number of nodes its output
concatenates (1 for a mean or a single node); a cell input one reduction behind the cell is
brought to the cell's resolution by `reduce_input` (factorized reduce), one at the same
resolution by `preprocess` (1x1 ReLU-Conv-BN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CellShape:
    """What the planner needs to know of a cell type."""

    inputs: int
    reduction: bool
    multiplier: int  # output channels = multiplier * C


@dataclass(frozen=True)
class BlockItem:
    """A fixed (non-searched) block in the body, e.g. res_block(stride=2)."""

    name: str
    stride: int = 1
    args: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class CellInput:
    channels: int
    behind: int  # reductions between this input and the cell's input resolution


@dataclass(frozen=True)
class PlannedCell:
    index: int
    name: str
    C: int  # the cell's working width
    inputs: tuple[CellInput, ...]
    reduction: bool
    out_channels: int
    reduction_index: int  # how many reductions came before this item


@dataclass(frozen=True)
class PlannedBlock:
    index: int
    name: str
    in_channels: int
    out_channels: int
    stride: int
    args: tuple[tuple[str, object], ...]
    reduction_index: int


class LayoutError(ValueError):
    pass


def repeat(cell: str, count: int, replace_with: str | None = None, positions: Sequence[int] = ()):
    """`cell * count with other at [positions]` as a list of cell names."""
    run = [cell] * count
    for position in positions:
        if not 0 <= position < count:
            raise LayoutError(f"position {position} is outside 0 .. {count - 1}")
        run[position] = replace_with
    return run


def plan(
    body: Sequence[str | BlockItem],
    cells: Mapping[str, CellShape],
    stems: int | Sequence[tuple[int, bool]],
    channels: int,
) -> list[PlannedCell | PlannedBlock]:
    """Walk the body once, tracking widths and resolutions of every output so far.

    `stems` is the stem's output channels, or (channels, halves the resolution) per stem when a
    list of stems feeds the first cells (DARTS ImageNet: stem0 at 1/4, stem1 at 1/8).
    """
    history = stem_history(stems)  # (channels, reduction level) of every output so far
    width, level = channels, history[-1][1]
    planned: list[PlannedCell | PlannedBlock] = []
    for index, item in enumerate(body):
        if isinstance(item, BlockItem):
            in_channels = history[-1][0]
            if item.stride == 2:
                width, level = width * 2, level + 1
            planned.append(
                PlannedBlock(index, item.name, in_channels, width, item.stride, item.args, level)
            )
            history = [
                (width, level)
            ]  # a block consumes the stream: later cells see only its output
            continue
        shape = cells[item]
        sources = [history[max(0, len(history) - shape.inputs + i)] for i in range(shape.inputs)]
        inputs = tuple(CellInput(ch, level - lv) for ch, lv in sources)
        if shape.reduction:
            width = width * 2
        out = shape.multiplier * width
        planned.append(PlannedCell(index, item, width, inputs, shape.reduction, out, level))
        if shape.reduction:
            level += 1
        history.append((out, level))
    return planned


def stem_history(stems: int | Sequence[tuple[int, bool]]) -> list[tuple[int, int]]:
    if isinstance(stems, int):
        return [(stems, 0)]
    history, level = [], 0
    for index, (stem_channels, reduces) in enumerate(stems):
        level += 1 if reduces and index else 0
        history.append((stem_channels, level))
    return history


def final_channels(planned: Sequence[PlannedCell | PlannedBlock], stems) -> int:
    return planned[-1].out_channels if planned else stem_history(stems)[-1][0]
