"""Discrete architectures (genotypes) and the published DARTS cells.

A genotype is what derivation turns α into and what the evaluation network is built from. It is
pure data: frozen dataclasses of strings, round-trippable through `to_dict`/`to_json`, and free of
torch so it can be read, printed and checked anywhere.

Schema of `Genotype.to_dict()` (and of the JSON form)::

    {"space": "darts_cnn",
     "cells": {"normal": {"edges": [["sep_conv_3x3", "c_k2", "n0"], ...],
                          "output": ["n0", "n1", "n2", "n3"],
                          "reduce": "concat"},
               "reduce": {...}}}

Edges are `(op, src, dst)`; node names are those of the search space (for the DARTS spaces,
see `DARTS_CNN_INPUTS` and friends below).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spacec.errors import ReportedError
from spacec.files import FileError, read_text

REDUCTIONS = ("concat", "mean", "node")

_CELL_KEYS = ("edges", "output", "reduce")
# The file a run directory keeps its genotype in (spacec.runtime.run.rundir uses this name).
GENOTYPE_FILE = "genotype.json"
_GENOTYPE_KEYS = ("space", "cells")


class GenotypeError(ReportedError, ValueError):
    """A genotype (or its dict/JSON form) is malformed, or a preset name is unknown."""


def output_text(reduce: str, nodes: Sequence[str]) -> str:
    """A cell's output as a space file writes it: `concat(n0, n1)`, `mean(s1, s2)`, or the
    one node `n3` (reduce "node" has no written name)."""
    if reduce == "node" and len(nodes) == 1:
        return nodes[0]
    return f"{reduce}({', '.join(nodes)})"


@dataclass(frozen=True)
class CellGenotype:
    """One derived cell: its chosen edges `(op, src, dst)` and how its output is formed."""

    edges: tuple[tuple[str, str, str], ...]
    output: tuple[str, ...]
    reduce: str

    def __post_init__(self) -> None:
        if self.reduce not in REDUCTIONS:
            raise GenotypeError(
                f"unknown reduce {self.reduce!r}; expected one of {', '.join(REDUCTIONS)}"
            )
        if not self.output:
            raise GenotypeError("a cell needs at least one output node")
        if self.reduce == "node" and len(self.output) != 1:
            raise GenotypeError(
                f"reduce 'node' takes exactly one output node, got {len(self.output)}"
            )

    def nodes(self) -> tuple[str, ...]:
        """Destination nodes in the order their first edge appears."""
        return tuple(dict.fromkeys(dst for _, _, dst in self.edges))

    def inputs_of(self, node: str) -> tuple[tuple[str, str], ...]:
        """`(op, src)` pairs feeding `node`, in genotype order."""
        return tuple((op, src) for op, src, dst in self.edges if dst == node)

    def lines(self) -> list[str]:
        """One line per node, then the output line."""
        lines = []
        for node in self.nodes():
            feeds = ", ".join(f"{op}({src})" for op, src in self.inputs_of(node))
            lines.append(f"{node} <- {feeds}")
        lines.append(f"output {self.output_text()}")
        return lines

    def output_text(self) -> str:
        return output_text(self.reduce, self.output)

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": [list(edge) for edge in self.edges],
            "output": list(self.output),
            "reduce": self.reduce,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "cell") -> CellGenotype:
        _require_keys(data, _CELL_KEYS, where)
        edges = _string_rows(data["edges"], width=3, where=f"{where}.edges")
        output = _string_list(data["output"], where=f"{where}.output")
        reduce = _string(data["reduce"], where=f"{where}.reduce")
        try:
            return cls(edges=edges, output=output, reduce=reduce)
        except GenotypeError as error:
            raise GenotypeError(f"{where}: {error}") from None


@dataclass(frozen=True)
class Genotype:
    """A whole architecture: one `CellGenotype` per cell type of a search space, in space order."""

    space: str
    cells: tuple[tuple[str, CellGenotype], ...]

    def __post_init__(self) -> None:
        names = [name for name, _ in self.cells]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise GenotypeError(f"duplicate cell type(s): {', '.join(duplicates)}")

    @property
    def cell_types(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.cells)

    def cell(self, name: str) -> CellGenotype:
        for cell_type, genotype in self.cells:
            if cell_type == name:
                return genotype
        raise GenotypeError(
            f"genotype of space {self.space!r} has no cell type {name!r}; "
            f"cell types: {', '.join(self.cell_types)}"
        )

    def __str__(self) -> str:
        lines = [f"space {self.space}"]
        for name, cell in self.cells:
            lines.append(f"{name}:")
            lines.extend(f"  {line}" for line in cell.lines())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "cells": {name: cell.to_dict() for name, cell in self.cells},
        }

    @classmethod
    def from_dict(cls, data: Any) -> Genotype:
        _require_keys(data, _GENOTYPE_KEYS, "genotype")
        space = _string(data["space"], where="space")
        cells_data = data["cells"]
        if not isinstance(cells_data, Mapping) or not cells_data:
            raise GenotypeError(
                f"cells: expected a non-empty mapping of cell type -> cell, got {_kind(cells_data)}"
            )
        cells = []
        for name, cell_data in cells_data.items():
            _string(name, where="cells (a cell type name)")
            cells.append((name, CellGenotype.from_dict(cell_data, where=f"cells.{name}")))
        return cls(space=space, cells=tuple(cells))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str, source: str | None = None) -> Genotype:
        """A genotype from JSON text; `source` (a file name) prefixes positions in errors."""
        try:
            data = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
        except json.JSONDecodeError as error:
            if source:
                where = f"{source}:{error.lineno}:{error.colno}"
                raise GenotypeError(f"{where}: genotype is not valid JSON: {error.msg}") from None
            raise GenotypeError(
                f"genotype is not valid JSON: line {error.lineno} column {error.colno}: {error.msg}"
            ) from None
        except RecursionError:
            raise GenotypeError(f"{source or 'genotype'}: JSON nested too deeply") from None
        return cls.from_dict(data)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise GenotypeError(f"duplicate key(s) in genotype JSON: {', '.join(duplicates)}")
    return dict(pairs)


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, Mapping) else "a mapping"


def _require_keys(data: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise GenotypeError(f"{where}: expected a mapping with keys {', '.join(keys)}, "
                            f"got {_kind(data)}")
    missing = [key for key in keys if key not in data]
    if missing:
        raise GenotypeError(f"{where}: missing key(s) {', '.join(missing)}")
    unknown = [str(key) for key in data if key not in keys]
    if unknown:
        raise GenotypeError(
            f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(keys)}"
        )


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise GenotypeError(f"{where}: expected a non-empty string, got {_kind(value)}")
    return value


def _sequence(value: Any, where: str) -> Sequence[Any]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise GenotypeError(f"{where}: expected a list, got {_kind(value)}")
    return value


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    items = _sequence(value, where)
    return tuple(_string(item, where=f"{where}[{index}]") for index, item in enumerate(items))


def _string_rows(value: Any, width: int, where: str) -> tuple[tuple[str, ...], ...]:
    rows = []
    for index, row in enumerate(_sequence(value, where)):
        row = _string_list(row, where=f"{where}[{index}]")
        if len(row) != width:
            raise GenotypeError(
                f"{where}[{index}]: expected [op, src, dst], got {len(row)} item(s)"
            )
        rows.append(row)
    return tuple(rows)


# --- The DARTS search spaces' naming (Liu et al., ICLR 2019; quark0/darts) ----------------------
# CNN: the original code numbers states 0, 1 for the outputs of the two previous cells and 2..5
# for the four intermediate nodes; the cell output concatenates nodes 2..5.
DARTS_CNN_SPACE = "darts_cnn"
DARTS_CNN_INPUTS = ("c_k2", "c_k1")
DARTS_CNN_NODES = ("n0", "n1", "n2", "n3")
# RNN: state 0 is the highway-initialised node computed from x_t and h_{t-1} (fixed, not searched);
# states 1..8 are searched, each picking one earlier state; the output averages states 1..8.
DARTS_RNN_SPACE = "darts_rnn"
DARTS_RNN_INPUTS = ("x", "h_prev")
DARTS_RNN_NODES = tuple(f"s{index}" for index in range(9))
DARTS_RNN_INIT_OP = "highway_init"

DartsPairs = Sequence[tuple[str, int]]


def _darts_cnn_cell(pairs: DartsPairs, concat: Sequence[int], where: str) -> CellGenotype:
    if len(pairs) % 2:
        raise GenotypeError(f"{where}: DARTS CNN cells list two (op, index) pairs per node, "
                            f"got {len(pairs)} pairs")
    steps = len(pairs) // 2
    names = DARTS_CNN_INPUTS + tuple(f"n{step}" for step in range(steps))
    edges = []
    for position, (op, index) in enumerate(pairs):
        dst_index = len(DARTS_CNN_INPUTS) + position // 2
        edges.append((op, _darts_state(names, index, dst_index, where), names[dst_index]))
    output = tuple(_darts_state(names, index, len(names), f"{where}_concat") for index in concat)
    return CellGenotype(edges=tuple(edges), output=output, reduce="concat")


def _darts_state(names: Sequence[str], index: int, before: int, where: str) -> str:
    if not isinstance(index, int) or not 0 <= index < before:
        raise GenotypeError(f"{where}: state index {index!r} is not one of 0..{before - 1}")
    return names[index]


def from_darts(
    normal: DartsPairs,
    normal_concat: Sequence[int],
    reduce: DartsPairs,
    reduce_concat: Sequence[int],
) -> Genotype:
    """Convert a genotype written in quark0/darts' cnn/genotypes.py notation."""
    return Genotype(
        space=DARTS_CNN_SPACE,
        cells=(
            ("normal", _darts_cnn_cell(normal, normal_concat, "normal")),
            ("reduce", _darts_cnn_cell(reduce, reduce_concat, "reduce")),
        ),
    )


def from_darts_rnn(recurrent: DartsPairs, concat: Sequence[int]) -> Genotype:
    """Convert a genotype written in quark0/darts' rnn/genotypes.py notation.

    Entry i, `(op, j)`, makes state s{i+1} = op applied to state s{j}; s0 is the fixed init node.
    """
    names = tuple(f"s{index}" for index in range(len(recurrent) + 1))
    fixed = tuple((DARTS_RNN_INIT_OP, source, names[0]) for source in DARTS_RNN_INPUTS)
    searched = tuple(
        (op, _darts_state(names, index, step + 1, "recurrent"), names[step + 1])
        for step, (op, index) in enumerate(recurrent)
    )
    output = tuple(_darts_state(names, index, len(names), "concat") for index in concat)
    cell = CellGenotype(edges=fixed + searched, output=output, reduce="mean")
    return Genotype(space=DARTS_RNN_SPACE, cells=(("recurrent", cell),))


# Values from quark0/darts cnn/genotypes.py (DARTS_V1: first-order search, DARTS_V2:
# second-order search, the cell reported in the paper) and rnn/genotypes.py (DARTS_V1, and
# DARTS_V2 = the paper's PTB cell).
_DARTS_CNN_V1 = from_darts(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    reduce_concat=[2, 3, 4, 5],
)
_DARTS_CNN_V2 = from_darts(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5],
)
_DARTS_RNN_V1 = from_darts_rnn(
    recurrent=[("relu", 0), ("relu", 1), ("tanh", 2), ("relu", 3), ("relu", 4), ("identity", 1),
               ("relu", 5), ("relu", 1)],
    concat=range(1, 9),
)
_DARTS_RNN_V2 = from_darts_rnn(
    recurrent=[("sigmoid", 0), ("relu", 1), ("relu", 1), ("identity", 1), ("tanh", 2),
               ("sigmoid", 5), ("tanh", 3), ("relu", 5)],
    concat=range(1, 9),
)

PRESETS: dict[str, Genotype] = {
    "DARTS_V1": _DARTS_CNN_V1,
    "DARTS_V2": _DARTS_CNN_V2,
    "DARTS": _DARTS_CNN_V2,
    "DARTS_RNN_V1": _DARTS_RNN_V1,
    "DARTS_RNN": _DARTS_RNN_V2,
}


def preset(name: str) -> Genotype:
    """A published genotype by name (see `PRESETS`)."""
    if name in PRESETS:
        return PRESETS[name]
    close = difflib.get_close_matches(name, PRESETS, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise GenotypeError(f"unknown preset {name!r}; {hint}known presets: {', '.join(PRESETS)}")


# The reference code names its recurrent cells DARTS_V1, DARTS_V2 and DARTS too (rnn/genotypes.py):
# for a recurrent space those names mean the recurrent presets.
SPACE_ALIASES = {
    "darts_rnn": {"DARTS": "DARTS_RNN", "DARTS_V2": "DARTS_RNN", "DARTS_V1": "DARTS_RNN_V1"},
}
# Spaces whose genotypes another space is made to take: DARTS searches on CIFAR-10 (darts_cnn)
# and trains the cell in the ImageNet mobile setting (darts_imagenet, the same cells; Sect. 3.4).
TRANSFERS = {"darts_imagenet": ("darts_cnn",)}


def fits_space(genotype: Genotype, space: str) -> bool:
    """Whether `genotype` was derived for `space` (or for a space `space` takes genotypes from)."""
    return genotype.space == space or genotype.space in TRANSFERS.get(space, ())


def resolve(reference: str, space: str | None = None) -> Genotype:
    """A genotype from a preset name, a genotype JSON file, or a run directory holding one.

    With `space`, preset names are read the way that space's paper code reads them.
    """
    from pathlib import Path

    reference = SPACE_ALIASES.get(space or "", {}).get(reference, reference)
    if reference in PRESETS:
        return PRESETS[reference]
    path = Path(reference).expanduser()
    if path.is_dir():
        if not (path / GENOTYPE_FILE).is_file() and (path / "config.yaml").is_file():
            raise GenotypeError(
                f"{reference}: a run directory without {GENOTYPE_FILE} (a search that did not "
                f"finish its first epoch, or failed; `spacec runs` shows its status). `spacec "
                f"derive {reference} --json > g.json` gives the genotype of the α it saved, if any")
        path = path / GENOTYPE_FILE
    if not path.is_file():
        known = ", ".join(PRESETS)
        raise GenotypeError(f"{reference}: neither a preset ({known}) nor a genotype JSON file")
    try:
        text = read_text(path)
    except FileError as error:
        raise GenotypeError(str(error)) from None
    try:
        genotype = Genotype.from_json(text, str(path))
    except GenotypeError as error:
        message = str(error)
        raise GenotypeError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    if space is not None and not fits_space(genotype, space):
        raise GenotypeError(
            f"{path}: a genotype of space '{genotype.space}', not of '{space}'; derive one in "
            f"'{space}', or set its \"space\" field to '{space}' if its cells fit"
        )
    return genotype
