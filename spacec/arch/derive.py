"""Derivation: architecture weights α -> discrete `Genotype` (Liu et al., ICLR 2019, section 2.4).

Pure Python on purpose (no torch): α arrives as nested lists of floats or as anything with a
`.tolist()` (a tensor, an ndarray), so genotypes can be derived and checked without the runtime.

Each cell type of a search space has a `CellRule` (the compiler writes one literal rule per cell
type into every generated supernet module). Row i of that cell's α belongs to `rule.edges[i]`,
column j to `rule.ops[j]`. A strength function turns a cell's architecture tensors into one weight
per edge and op: DARTS' is a softmax over every row of α (`STRENGTHS["softmax"]`); a relaxation
that owns other tensors, or mixes candidates differently, registers its own and names it. A cell's
tensors arrive as one flat mapping for the whole space: α under the cell's name, any other tensor
under "<cell>.<tensor>" (e.g. "normal.beta"). Then, per `rule.kind`:

* ``topk`` (DARTS' `_parse` in cnn/ and rnn/model_search.py): for each intermediate node, the
  strength of an incoming searched edge is its largest softmax weight over ops not in
  `rule.exclude`; the node keeps its `k` strongest edges, and each kept edge its best allowed op.
  Ties: equal strengths go to the edge earlier in α row order, equal weights to the op earlier in
  `rule.ops` (DARTS gets the same from Python's stable sort and strict `>` comparison).
* ``argmax``: every searched edge keeps its best allowed op (same tie rule).

A method whose official code derives differently from the space's rule names `DeriveOptions`
(all off: the rule as written). ``keep_none`` ranks and picks among every op, the rule's excluded
ones too (SNAS and DrNAS's code keep `none`); ``pairs`` takes a node's k strongest (op, input)
pairs, so one input may give two ops (GDAS's DARTS-space code); ``threshold`` drops a chosen op
whose strength is below it (FairDARTS's `threshold_sparse`). These can give genotypes the space's
rule does not allow (`check_genotype` says how), which is why no method uses them by default.

`rule.limits` caps how often an op may appear in a cell (P-DARTS, Chen et al., 2019, caps
skip_connect at 2). While an op is over its cap, the chosen edge that carries it with the smallest
softmax weight has that op forbidden, and the cell is derived again. This always succeeds when every
edge has an allowed op without a limit; otherwise it can run out of edges and raises.
"""

from __future__ import annotations

import difflib
import logging
import math
import numbers
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from spacec.arch.genotype import REDUCTIONS, CellGenotype, Genotype, output_text
from spacec.errors import ReportedError
from spacec.registry import Registry

logger = logging.getLogger(__name__)

TOPK = "topk"
ARGMAX = "argmax"
KINDS = (TOPK, ARGMAX)


class DerivationError(ReportedError, ValueError):
    """α does not fit its rule, a rule is inconsistent, or the limits cannot be met."""


@dataclass(frozen=True)
class CellRule:
    """How one cell type's α becomes a `CellGenotype` (see the module docstring).

    An empty `output` means every intermediate node. Edges are `(src, dst)` pairs in α row order
    (by destination node, then source in declaration order); `fixed` edges are `(op, src, dst)`
    and are copied into the genotype unchanged.
    """

    inputs: tuple[str, ...]
    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]
    ops: tuple[str, ...]
    kind: str = TOPK
    k: int = 2
    exclude: frozenset[str] = frozenset()
    limits: tuple[tuple[str, int], ...] = ()
    output: tuple[str, ...] = ()
    reduce: str = "concat"
    fixed: tuple[tuple[str, str, str], ...] = ()

    def __post_init__(self) -> None:
        problems = rule_problems(self)
        if problems:
            raise DerivationError("invalid cell rule: " + "; ".join(problems))

    @property
    def names(self) -> tuple[str, ...]:
        return self.inputs + self.nodes

    @property
    def output_nodes(self) -> tuple[str, ...]:
        return self.output or self.nodes

    @property
    def shape(self) -> tuple[int, int]:
        """The shape α must have: (searched edges, ops)."""
        return len(self.edges), len(self.ops)

    def rows_into(self, node: str) -> tuple[int, ...]:
        """α rows of the searched edges that end in `node`, in row order."""
        return tuple(row for row, (_, dst) in enumerate(self.edges) if dst == node)

    def edge_label(self, row: int) -> str:
        src, dst = self.edges[row]
        return f"{src} -> {dst}"


def rule_problems(rule: CellRule) -> list[str]:
    """Every inconsistency in a rule (empty when the rule is usable)."""
    return [
        *_name_problems(rule),
        *_op_problems(rule),
        *_edge_problems(rule),
        *_kind_problems(rule),
        *_output_problems(rule),
    ]


def _duplicates(items: Sequence[Any]) -> list[Any]:
    counts = Counter(items)
    return [item for item in counts if counts[item] > 1]


def _name_problems(rule: CellRule) -> list[str]:
    problems = []
    if not rule.nodes:
        problems.append("a cell needs at least one intermediate node")
    bad = [name for name in rule.names if not isinstance(name, str) or not name]
    if bad:
        problems.append(f"node names must be non-empty strings, got {bad!r}")
    duplicated = _duplicates(rule.names)
    if duplicated:
        problems.append(f"duplicate node name(s): {', '.join(map(str, duplicated))}")
    return problems


def _op_problems(rule: CellRule) -> list[str]:
    problems = []
    if not rule.ops:
        problems.append("a cell needs at least one op")
    duplicated = _duplicates(rule.ops)
    if duplicated:
        problems.append(f"duplicate op(s): {', '.join(duplicated)}")
    unknown = sorted(op for op in rule.exclude if op not in rule.ops)
    if unknown:
        problems.append(f"excluded op(s) {', '.join(unknown)} are not among the ops")
    if rule.ops and set(rule.ops) <= set(rule.exclude):
        problems.append("every op is excluded, so no edge can be chosen")
    for op, limit in rule.limits:
        if op not in rule.ops:
            problems.append(f"limit on unknown op {op!r}; ops: {', '.join(rule.ops)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            problems.append(f"limit for {op!r} must be a non-negative integer, got {limit!r}")
    duplicated = _duplicates([op for op, _ in rule.limits])
    if duplicated:
        problems.append(f"more than one limit for op(s) {', '.join(duplicated)}")
    return problems


def _edge_order_problem(rule: CellRule, src: str, dst: str) -> str | None:
    """Why `src -> dst` cannot be an edge of the cell's DAG, if it cannot."""
    position = {name: index for index, name in enumerate(rule.names)}
    if dst not in rule.nodes:
        return f"{dst!r} is not an intermediate node"
    if src not in position:
        return f"unknown source {src!r}"
    if position[src] >= position[dst]:
        return f"{src} is not earlier than {dst}"
    return None


def _edge_problems(rule: CellRule) -> list[str]:
    pairs = list(rule.edges) + [(src, dst) for _, src, dst in rule.fixed]
    problems = [
        f"edge {src} -> {dst}: {problem}"
        for src, dst in pairs
        if (problem := _edge_order_problem(rule, src, dst)) is not None
    ]
    duplicated = _duplicates(pairs)
    if duplicated:
        problems.append("duplicate edge(s): " + ", ".join(f"{s} -> {d}" for s, d in duplicated))
    fed = {dst for _, dst in pairs}
    unfed = [node for node in rule.nodes if node not in fed]
    if unfed:
        problems.append(f"node(s) {', '.join(unfed)} have no incoming edge")
    return problems


def _kind_problems(rule: CellRule) -> list[str]:
    if rule.kind not in KINDS:
        return [f"unknown kind {rule.kind!r}; kinds: {', '.join(KINDS)}"]
    if rule.kind != TOPK:
        return []
    if isinstance(rule.k, bool) or not isinstance(rule.k, int) or rule.k < 1:
        return [f"k must be a positive integer, got {rule.k!r}"]
    problems = []
    for node in rule.nodes:
        candidates = len(rule.rows_into(node))
        if 0 < candidates < rule.k:
            problems.append(
                f"node {node} has {candidates} searched incoming edge(s), fewer than k={rule.k}"
            )
    return problems


def _output_problems(rule: CellRule) -> list[str]:
    problems = []
    if rule.reduce not in REDUCTIONS:
        problems.append(f"unknown reduce {rule.reduce!r}; expected one of {', '.join(REDUCTIONS)}")
    unknown = [name for name in rule.output if name not in rule.names]
    if unknown:
        problems.append(f"unknown output node(s): {', '.join(map(str, unknown))}")
    if rule.reduce == "node" and len(rule.output_nodes) != 1:
        problems.append(f"reduce 'node' takes one output node, got {len(rule.output_nodes)}")
    return problems


# --- α -> weights -------------------------------------------------------------------------------


def softmax(values: Sequence[float]) -> list[float]:
    """Numerically stable softmax (shifted by the maximum; the sum is exactly rounded)."""
    top = max(values)
    exps = [math.exp(value - top) for value in values]
    total = math.fsum(exps)
    return [value / total for value in exps]


# A cell's architecture tensors ({"alpha": ..., other tensors by name}) -> weight[edge][op].
Strengths = Callable[[Mapping[str, Any], "CellRule"], list[list[float]]]
STRENGTHS = Registry("derivation strength")
DEFAULT_STRENGTHS = "softmax"
ALPHA = "alpha"  # the name of α among a cell's architecture tensors


@STRENGTHS.register(DEFAULT_STRENGTHS)
def softmax_strengths(tensors: Mapping[str, Any], rule: CellRule) -> list[list[float]]:
    """DARTS: softmax over each row of α."""
    return [softmax(row) for row in alpha_rows(tensors[ALPHA], rule)]


def _softmax_by_node(values: Sequence[float], rule: CellRule) -> list[float]:
    """One weight per searched edge: a softmax over the edges that enter the same node."""
    weights = [0.0] * len(rule.edges)
    for node in rule.nodes:
        rows = rule.rows_into(node)
        if rows:
            for row, weight in zip(rows, softmax([values[row] for row in rows]), strict=True):
                weights[row] = weight
    return weights


EDGE_TENSOR = "beta"  # PC-DARTS's per-edge logits among a cell's tensors


@STRENGTHS.register("edge_normalized")
def edge_normalized_strengths(tensors: Mapping[str, Any], rule: CellRule) -> list[list[float]]:
    """PC-DARTS: softmax(α) of every edge times the edge's weight, a softmax of β over the edges
    entering its node (yuhuixu1993/PC-DARTS model_search.py:197, `W[j,:]=W[j,:]*W2[j]`)."""
    if EDGE_TENSOR not in tensors:
        raise DerivationError(f"PC-DARTS' edge-normalised strengths need the cell's per-edge "
                              f"{EDGE_TENSOR!r} beside α (an α file's 'CELL.{EDGE_TENSOR}'); "
                              f"the tensors given: "
                              f"{', '.join(sorted(map(str, tensors))) or 'none'}")
    beta = edge_vector(tensors[EDGE_TENSOR], rule)
    edge_weights = _softmax_by_node(beta, rule)
    return [[weight * edge for weight in softmax(row)]
            for row, edge in zip(alpha_rows(tensors[ALPHA], rule), edge_weights, strict=True)]


@STRENGTHS.register("sigmoid")
def sigmoid_strengths(tensors: Mapping[str, Any], rule: CellRule) -> list[list[float]]:
    """FairDARTS: an independent sigmoid of every α (xiaomi-automl/FairDARTS model_search.py)."""
    return [[_sigmoid(value) for value in row] for row in alpha_rows(tensors[ALPHA], rule)]


def _sigmoid(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1.0 + exp)


def edge_vector(values: Any, rule: CellRule) -> list[float]:
    """A per-edge tensor (one finite float per searched edge), checked."""
    vector = values.tolist() if hasattr(values, "tolist") else values
    if isinstance(vector, (str, bytes)) or not isinstance(vector, Sequence):
        raise DerivationError(f"a per-edge tensor must be a list, got {type(values).__name__}")
    if len(vector) != len(rule.edges):
        raise DerivationError(f"a per-edge tensor has {len(vector)} value(s) but the cell has "
                              f"{len(rule.edges)} searched edge(s)")
    for row, value in enumerate(vector):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(value):
            raise DerivationError(f"edge {rule.edge_label(row)}: {value!r} is not a finite number")
    return [float(value) for value in vector]


def strengths_function(name: str) -> Strengths:
    """The registered strength function `name`; DerivationError lists the known ones."""
    if name not in STRENGTHS:
        raise DerivationError(
            f"unknown derivation strengths {name!r}; known: {', '.join(STRENGTHS.names())}"
        )
    return STRENGTHS[name].builder


def cell_tensors(alphas: Mapping[str, Any], rules: Mapping[str, CellRule]) -> dict[str, dict]:
    """A space's flat tensor mapping grouped by cell: {cell: {"alpha": α, "beta": β, ...}}."""
    grouped: dict[str, dict[str, Any]] = {}
    unknown = []
    for key, value in alphas.items():
        cell, _, tensor = str(key).partition(".")
        if cell not in rules:
            unknown.append(str(key))
            continue
        grouped.setdefault(cell, {})[tensor or ALPHA] = value
    missing = [name for name in rules if ALPHA not in grouped.get(name, {})]
    problems = []
    if unknown:
        problems.append(f"α given for cell type(s) no rule names: {', '.join(unknown)}")
    if missing:
        problems.append(f"no α for cell type(s): {', '.join(missing)}")
    if problems:
        raise DerivationError("; ".join(problems) + f" (cell types: {', '.join(rules)})")
    return grouped


def alpha_rows(alpha: Any, rule: CellRule) -> list[list[float]]:
    """α as a checked matrix of finite floats, shape `rule.shape`."""
    return _alpha_rows(alpha, rule)


def _alpha_rows(alpha: Any, rule: CellRule) -> list[list[float]]:
    matrix = alpha.tolist() if hasattr(alpha, "tolist") else alpha
    expected = "expected shape {}x{} (searched edges x ops)".format(*rule.shape)
    if isinstance(matrix, (str, bytes)) or not isinstance(matrix, Sequence):
        raise DerivationError(f"α must be a matrix, got {type(alpha).__name__}; {expected}")
    if len(matrix) != len(rule.edges):
        raise DerivationError(
            f"α has {len(matrix)} row(s) but the cell has {len(rule.edges)} searched edge(s); "
            f"{expected}"
        )
    return [_alpha_row(values, row, rule, expected) for row, values in enumerate(matrix)]


def _alpha_row(values: Any, row: int, rule: CellRule, expected: str) -> list[float]:
    where = f"α row {row} (edge {rule.edge_label(row)})"
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise DerivationError(f"{where} is a {type(values).__name__}, not a row; {expected}")
    if len(values) != len(rule.ops):
        raise DerivationError(
            f"{where} has {len(values)} column(s) but the cell has {len(rule.ops)} op(s); "
            f"{expected}"
        )
    for op, value in zip(rule.ops, values, strict=True):
        if not isinstance(value, numbers.Real):
            raise DerivationError(f"{where}, op {op}: {value!r} is not a number")
        if not math.isfinite(value):
            raise DerivationError(f"{where}, op {op}: {value!r} is not finite")
    return [float(value) for value in values]


# --- choosing edges and ops ---------------------------------------------------------------------

Choice = tuple[int, int]  # (α row, op column)


@dataclass(frozen=True)
class DeriveOptions:
    """Departures of a method's official derivation from the space's rule (module docstring)."""

    keep_none: bool = False  # rank and pick among every op, the rule's excluded ones too
    pairs: bool = False  # topk: a node's k strongest (op, input) pairs; an input may give two
    threshold: float | None = None  # drop a chosen op whose strength is below this

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise DerivationError(f"threshold must lie in [0, 1] or be null, got {self.threshold}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> DeriveOptions:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise DerivationError(f"derivation options must be a mapping, got {data!r}")
        known = {"keep_none", "pairs", "threshold"}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise DerivationError(f"unknown derivation option(s) {', '.join(unknown)}; "
                                  f"known: {', '.join(sorted(known))}")
        return cls(**data)


RULE = DeriveOptions()  # the space's rule as written


def _allowed_columns(rule: CellRule, row: int, forbidden: set[Choice]) -> list[int]:
    return [
        column
        for column, op in enumerate(rule.ops)
        if op not in rule.exclude and (row, column) not in forbidden
    ]


def _best_column(weights: Sequence[float], columns: Sequence[int]) -> int:
    return max(columns, key=weights.__getitem__)  # max() keeps the first of equal weights


def _limits_text(rule: CellRule) -> str:
    return ", ".join(f"{op} <= {limit}" for op, limit in rule.limits)


def _choose_argmax(
    weights: list[list[float]], rule: CellRule, forbidden: set[Choice]
) -> list[Choice]:
    choices = []
    for row in range(len(rule.edges)):
        columns = _allowed_columns(rule, row, forbidden)
        if not columns:
            raise DerivationError(
                f"cannot meet the limits ({_limits_text(rule)}): "
                f"edge {rule.edge_label(row)} has no op left"
            )
        choices.append((row, _best_column(weights[row], columns)))
    return choices


def _choose_topk(
    weights: list[list[float]], rule: CellRule, forbidden: set[Choice]
) -> list[Choice]:
    choices = []
    for node in rule.nodes:
        rows = rule.rows_into(node)
        if not rows:
            continue
        best = {}
        for row in rows:
            columns = _allowed_columns(rule, row, forbidden)
            if columns:
                best[row] = _best_column(weights[row], columns)
        if len(best) < rule.k:
            raise DerivationError(
                f"cannot meet the limits ({_limits_text(rule)}): node {node} has "
                f"{len(best)} edge(s) with an op left, needs k={rule.k}"
            )
        # sorted() is stable, so equal strengths keep α row order.
        ranked = sorted(best, key=lambda row: -weights[row][best[row]])
        choices.extend((row, best[row]) for row in ranked[: rule.k])
    return choices


def _choose_pairs(
    weights: list[list[float]], rule: CellRule, forbidden: set[Choice]
) -> list[Choice]:
    """GDAS (search_model_gdas_nasnet.py:128-143): a node's k strongest (row, op) pairs over every
    allowed candidate of its incoming edges; two may share a row. Ties: row order, then column."""
    choices = []
    for node in rule.nodes:
        rows = rule.rows_into(node)
        if not rows:
            continue
        pairs = [(row, column) for row in rows
                 for column in _allowed_columns(rule, row, forbidden)]
        if len(pairs) < rule.k:
            raise DerivationError(
                f"cannot meet the limits ({_limits_text(rule)}): node {node} has "
                f"{len(pairs)} (edge, op) pair(s) left, needs k={rule.k}"
            )
        ranked = sorted(pairs, key=lambda pair: -weights[pair[0]][pair[1]])
        choices.extend(ranked[: rule.k])
    return choices


def _over_limit(choices: list[Choice], rule: CellRule) -> int | None:
    """Column of the first op (in `rule.limits` order) used more often than its limit."""
    counts = Counter(column for _, column in choices)
    for op, limit in rule.limits:
        column = rule.ops.index(op)
        if counts[column] > limit:
            return column
    return None


def _weakest_row(choices: list[Choice], weights: list[list[float]], column: int) -> int:
    """The chosen edge carrying op `column` with the smallest weight for it (earlier row on ties)."""
    rows = [row for row, chosen in choices if chosen == column]
    return min(rows, key=lambda row: (weights[row][column], row))


def derive_cell(
    alpha: Any,
    rule: CellRule,
    strengths: str | Strengths = DEFAULT_STRENGTHS,
    options: DeriveOptions = RULE,
) -> CellGenotype:
    """Derive one cell from its α (shape `rule.shape`), or from its tensors ({"alpha": ...})."""
    tensors = alpha if isinstance(alpha, Mapping) else {ALPHA: alpha}
    strength = strengths_function(strengths) if isinstance(strengths, str) else strengths
    weights = strength(tensors, rule)
    chooser = rule if not options.keep_none else replace(rule, exclude=frozenset())
    if rule.kind != TOPK:
        choose = _choose_argmax
    else:
        choose = _choose_pairs if options.pairs else _choose_topk
    forbidden: set[Choice] = set()
    choices = choose(weights, chooser, forbidden)
    while (column := _over_limit(choices, rule)) is not None:
        row = _weakest_row(choices, weights, column)
        logger.debug(
            "limit on %s exceeded; forbidding it on edge %s", rule.ops[column], rule.edge_label(row)
        )
        forbidden.add((row, column))
        choices = choose(weights, chooser, forbidden)
    if options.threshold is not None:
        choices = [(row, column) for row, column in choices
                   if weights[row][column] >= options.threshold]
    searched = tuple((rule.ops[column], *rule.edges[row]) for row, column in choices)
    return CellGenotype(
        edges=tuple(rule.fixed) + searched, output=rule.output_nodes, reduce=rule.reduce
    )


def derive(
    space: str,
    alphas: Mapping[str, Any],
    rules: Mapping[str, CellRule],
    strengths: str | Strengths = DEFAULT_STRENGTHS,
    options: DeriveOptions = RULE,
) -> Genotype:
    """Derive the genotype of a whole search space; cells come out in `rules` order.

    `alphas` is the flat mapping of the module docstring; `strengths` names the relaxation's
    strength function (`STRENGTHS`); `options` the method's departures from the rule.
    """
    grouped = cell_tensors(alphas, rules)
    cells = []
    for name, rule in rules.items():
        try:
            cells.append((name, derive_cell(grouped[name], rule, strengths, options)))
        except DerivationError as error:
            raise DerivationError(f"cell {name!r}: {error}") from None
    return Genotype(space=space, cells=tuple(cells))


# --- checking genotypes written by users --------------------------------------------------------


def check_genotype(genotype: Genotype, rules: Mapping[str, CellRule]) -> list[str]:
    """Every way `genotype` does not fit the space described by `rules` (empty when it fits).

    Limits are not enforced here: they steer derivation, and a hand-written cell may ignore them.
    """
    problems = []
    for name in genotype.cell_types:
        if name not in rules:
            problems.append(f"unknown cell type {name!r}; cell types: {', '.join(rules)}")
    for name in rules:
        if name not in genotype.cell_types:
            problems.append(f"missing cell type {name!r}")
    for name, cell in genotype.cells:
        if name in rules:
            problems.extend(f"{name}: {problem}" for problem in _cell_problems(cell, rules[name]))
    return problems


def _unknown_op(op: str, rule: CellRule) -> str:
    close = difflib.get_close_matches(op, rule.ops, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown op {op!r}; {hint}ops: {', '.join(rule.ops)}"


def _searched_edge_problem(op: str, src: str, dst: str, rule: CellRule) -> str | None:
    unknown = [name for name in (src, dst) if name not in rule.names]
    if unknown:
        return f"unknown node(s) {', '.join(unknown)}; nodes: {', '.join(rule.names)}"
    problem = _edge_order_problem(rule, src, dst)
    if problem is not None:
        return problem
    if (src, dst) not in rule.edges:
        return f"{src} -> {dst} is not a searched edge of this cell"
    if op not in rule.ops:
        return _unknown_op(op, rule)
    if op in rule.exclude:
        return f"op {op!r} is excluded from this cell"
    return None


def _cell_problems(cell: CellGenotype, rule: CellRule) -> list[str]:
    fixed_ops = {(src, dst): op for op, src, dst in rule.fixed}
    problems = []
    seen: set[tuple[str, str]] = set()
    inputs_per_node: Counter[str] = Counter()
    for op, src, dst in cell.edges:
        label = f"edge {op}({src}) -> {dst}"
        if (src, dst) in seen:
            problems.append(f"{label}: duplicate edge {src} -> {dst}")
            continue
        if (src, dst) in fixed_ops:
            seen.add((src, dst))
            if op != fixed_ops[src, dst]:
                problems.append(f"{label}: this edge is fixed to {fixed_ops[src, dst]}")
            continue
        problem = _searched_edge_problem(op, src, dst, rule)
        if problem is not None:
            problems.append(f"{label}: {problem}")
            continue
        seen.add((src, dst))
        inputs_per_node[dst] += 1
    problems.extend(
        f"missing fixed edge {op}({src}) -> {dst}"
        for (src, dst), op in fixed_ops.items()
        if (src, dst) not in seen
    )
    problems.extend(_coverage_problems(rule, seen, inputs_per_node))
    if cell.output != rule.output_nodes or cell.reduce != rule.reduce:
        problems.append(
            f"output {cell.output_text()} does not match the space's "
            f"{output_text(rule.reduce, rule.output_nodes)}"
        )
    return problems


def _coverage_problems(
    rule: CellRule, seen: set[tuple[str, str]], inputs_per_node: Counter[str]
) -> list[str]:
    if rule.kind == ARGMAX:
        return [
            f"missing edge {src} -> {dst}: every searched edge keeps an op"
            for src, dst in rule.edges
            if (src, dst) not in seen
        ]
    return [
        f"node {node} has {inputs_per_node[node]} searched input(s), expected k={rule.k}"
        for node in rule.nodes
        if rule.rows_into(node) and inputs_per_node[node] != rule.k
    ]
