"""The abstract syntax tree of a .space file: plain frozen dataclasses, each with its source span.

Built by `spacec.parse` as it reduces the grammar's rules; it records what the text says and
nothing more. The classes have slots: a large space's AST is a million nodes and spans.
Meaning (what a name refers to, whether a node order is legal, ...) is `spacec.check`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass

from spacec.errors import Span


@dataclass(frozen=True, slots=True)
class Name:
    text: str
    span: Span


# ---- expressions ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Num:
    value: int | float
    span: Span


@dataclass(frozen=True, slots=True)
class Ref:
    """A bare name in a value position: a parameter, or a symbol such as `tanh` or `none`."""

    name: str
    span: Span


# How tightly each binary operator binds (grammars/space.lark); operators of one precedence
# are left-associative: `a - b + c` is `(a - b) + c`.
PRECEDENCE = {"+": 1, "-": 1, "*": 2, "//": 2}


@dataclass(frozen=True, slots=True)
class BinOp:
    op: str  # "+", "-", "*", "//"
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Neg:
    operand: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Arg:
    name: Name
    value: Value


@dataclass(frozen=True, slots=True)
class Call:
    """`name(arg=value, ...)`; a bare `name` where a call may stand is a Call without args."""

    name: Name
    args: tuple[Arg, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class ListValue:
    items: tuple[Value, ...]
    span: Span


Expr = Num | Ref | BinOp | Neg | Call
Value = Expr | ListValue


# ---- top-level declarations -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SpaceDecl:
    name: Name
    span: Span


@dataclass(frozen=True, slots=True)
class MethodDecl:
    """`method pc_darts(k=2)`: the space's default search method and the parameters it fixes."""

    call: Call
    span: Span


@dataclass(frozen=True, slots=True)
class Import:
    names: tuple[Name, ...]
    source: Name  # a shipped space's name, or a path (text without quotes)
    is_path: bool
    span: Span


@dataclass(frozen=True, slots=True)
class Param:
    name: Name
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class OpDef:
    name: Name
    steps: tuple[Call, ...]  # `a >> b`: the output of a feeds b
    span: Span


@dataclass(frozen=True, slots=True)
class OpSet:
    name: Name
    ops: tuple[OpDef, ...]
    span: Span


# ---- cell statements ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Inputs:
    names: tuple[Name, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class NodesCount:
    count: int
    span: Span


@dataclass(frozen=True, slots=True)
class NodesNamed:
    names: tuple[Name, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class DenseEdges:
    start: Name | None  # `edges dense from s0 : set`: sources from s0 on
    opset: Name
    span: Span


@dataclass(frozen=True, slots=True)
class Edges:
    sources: tuple[Name, ...]
    target: Name
    opset: Name
    span: Span


@dataclass(frozen=True, slots=True)
class Fixed:
    """Non-searched edges: one per source, or one op over all sources jointly (`(a, b) -> n`)."""

    sources: tuple[Name, ...]
    target: Name
    steps: tuple[Call, ...]
    joint: bool
    span: Span


@dataclass(frozen=True, slots=True)
class Combine:
    name: Name
    span: Span


@dataclass(frozen=True, slots=True)
class Output:
    reduce: Name | None  # None: the output is a single node
    nodes: tuple[Name, ...] | None  # None with a reduce: all intermediate nodes (`concat(*)`)
    span: Span


@dataclass(frozen=True, slots=True)
class Derive:
    rule: Call
    span: Span


@dataclass(frozen=True, slots=True)
class Limit:
    op: Name
    most: int
    span: Span


@dataclass(frozen=True, slots=True)
class Stride:
    value: int
    sources: tuple[Name, ...] | None  # None: every input node
    span: Span


@dataclass(frozen=True, slots=True)
class Share:
    block: Call
    span: Span


@dataclass(frozen=True, slots=True)
class SearchNorm:
    norm: Call
    span: Span


CellStmt = (
    Inputs
    | NodesCount
    | NodesNamed
    | DenseEdges
    | Edges
    | Fixed
    | Combine
    | Output
    | Derive
    | Limit
    | Stride
    | Share
    | SearchNorm
)


@dataclass(frozen=True, slots=True)
class CellDecl:
    name: Name
    parent: Name | None
    body: tuple[CellStmt, ...]
    span: Span


# ---- the macro network --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Setting:
    key: Name
    value: Value
    span: Span


@dataclass(frozen=True, slots=True)
class Repeat:
    """`cell * count` optionally `with other at [positions]` (positions among the count)."""

    cell: Name
    count: Expr
    replace_with: Name | None
    positions: ListValue | None
    span: Span


@dataclass(frozen=True, slots=True)
class Block:
    """A single body item: a cell by name or a fixed (non-searched) block such as res_block(...)."""

    call: Call
    span: Span


BodyItem = Repeat | Block


@dataclass(frozen=True, slots=True)
class Body:
    items: tuple[BodyItem, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class NetworkDecl:
    kind: Name
    settings: tuple[Setting, ...]
    bodies: tuple[Body, ...]
    span: Span


Item = SpaceDecl | MethodDecl | Import | Param | OpSet | CellDecl | NetworkDecl


@dataclass(frozen=True, slots=True)
class SpaceFile:
    path: str
    text: str
    items: tuple[Item, ...]
