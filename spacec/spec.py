"""The checked space: what `spacec.check` produces from an AST once every rule holds.

Names are resolved, parameters evaluated, cells expanded (dense edges listed, `extends` applied);
integer expressions that the generated network evaluates at construction keep a Python rendering
(`Quantity.py`) built only from validated identifiers, numbers and operators.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Quantity:
    """An integer known at compile time, with the Python expression that computes it from params."""

    value: int
    py: str


@dataclass(frozen=True)
class Step:
    """One primitive with its arguments (argument values are ints, names or tuples of names)."""

    primitive: str
    args: tuple[tuple[str, object], ...] = ()

    def kwargs(self) -> dict[str, object]:
        return dict(self.args)


@dataclass(frozen=True)
class Candidate:
    name: str
    steps: tuple[Step, ...]
    line: int
    column: int = 1

    @property
    def is_zero(self) -> bool:
        from spacec.catalog import ZERO_PRIMITIVES

        return len(self.steps) == 1 and self.steps[0].primitive in ZERO_PRIMITIVES


@dataclass(frozen=True)
class OpSet:
    name: str
    candidates: tuple[Candidate, ...]
    line: int
    source: str  # the file that defined it (differs from the space's file when imported)

    @cached_property
    def names(self) -> tuple[str, ...]:  # cached: the IR and codegen ask once per edge
        return tuple(c.name for c in self.candidates)


@dataclass(frozen=True)
class Edge:
    """A searched edge: softmax-mixed candidates of `opset`; its row in α is its index."""

    src: str
    dst: str
    opset: str
    stride: int
    line: int


@dataclass(frozen=True)
class FixedEdge:
    """A non-searched edge; `joint` means one op over all `sources` together."""

    sources: tuple[str, ...]
    dst: str
    steps: tuple[Step, ...]
    joint: bool
    stride: int
    line: int


@dataclass(frozen=True)
class Rule:
    kind: str  # "topk" | "argmax"
    k: int
    exclude: tuple[str, ...]
    limits: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Cell:
    name: str
    inputs: tuple[str, ...]
    nodes: tuple[str, ...]
    edges: tuple[Edge, ...]  # in α row order: by destination node, then source in declared order
    fixed: tuple[FixedEdge, ...]
    combine: str
    reduce: str  # "concat" | "mean" | "node"
    output: tuple[str, ...]
    rule: Rule
    opset: str  # every searched edge of a cell draws from one set: the α columns
    share: Step | None
    search_norm: Step | None
    reduction: bool  # stride 2 on the edges that leave the inputs
    line: int


@dataclass(frozen=True)
class CellRun:
    """`cell * count with other at [positions]` in the macro body."""

    cell: str
    count: Quantity
    replace_with: str | None
    positions: tuple[Quantity, ...]
    line: int


@dataclass(frozen=True)
class FixedBlock:
    step: Step
    stride: int
    line: int


@dataclass(frozen=True)
class Network:
    kind: str
    # key -> Quantity (ints), Step (blocks), or str (cell names, symbols)
    settings: tuple[tuple[str, object], ...]
    body: tuple[CellRun | FixedBlock, ...]
    line: int
    # key -> (line, column) of each setting as written (messages point there)
    written_at: tuple[tuple[str, tuple[int, int]], ...] = ()

    def get(self, key: str, default=None):
        return dict(self.settings).get(key, default)

    def place(self, key: str) -> tuple[int, int]:
        """(line, column) of setting `key` as written; the network's line where it is not."""
        return dict(self.written_at).get(key, (self.line, 1))


MethodValue = int | float | bool | str | None


@dataclass(frozen=True)
class MethodDefault:
    """`method pc_darts(k=2)`: the search method a space names and the parameters it fixes
    (checked against `spacec.arch.methods`). A search takes it over its preset's method;
    the command line and a configuration file of one's own take precedence over it."""

    name: str
    params: tuple[tuple[str, MethodValue], ...]  # only those written, in written order
    line: int

    def values(self) -> dict[str, MethodValue]:
        return dict(self.params)

    def text(self) -> str:
        """As a space file writes it: `pc_darts(k=2, edge_norm=false)`, or `gdas`."""
        if not self.params:
            return self.name
        args = ", ".join(f"{key}={_written(value)}" for key, value in self.params)
        return f"{self.name}({args})"


def _written(value: MethodValue) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "none"}[value]
    return str(value)


@dataclass(frozen=True)
class Space:
    name: str
    path: str
    sha256: str  # of the file's text (the generated code's header names it)
    params: tuple[tuple[str, int | float], ...]  # resolved values in declaration order
    opsets: tuple[OpSet, ...]
    cells: tuple[Cell, ...]
    network: Network
    method: MethodDefault | None = None  # `method ...`: the space's default search method
    # What a run records and compares to notice a changed space: the file's sha256 where it
    # imports nothing, else of its text and the imported spaces' (spacec.check `_digest`).
    digest: str = ""
    # What the checker warns about (spacec.errors.Diagnostic, severity "warning"): the space
    # compiles, but something in it is probably not what was meant (a cell the body never runs).
    warnings: tuple = ()

    def cell(self, name: str) -> Cell:
        return self._cells_by_name[name]

    def opset(self, name: str) -> OpSet:
        return self._opsets_by_name[name]

    @cached_property
    def _cells_by_name(self) -> dict[str, Cell]:  # lookups stay O(1) in spaces of many cells
        return {c.name: c for c in self.cells}

    @cached_property
    def _opsets_by_name(self) -> dict[str, OpSet]:
        return {o.name: o for o in self.opsets}

    @property
    def domain(self) -> str:
        from spacec.catalog import NETWORK_DOMAINS

        return NETWORK_DOMAINS[self.network.kind]
