"""AST -> checked space: every semantic rule of the language, with every error collected.

`check` resolves names, evaluates parameters (with overrides), expands dense edges and `extends`,
and validates calls against `spacec.catalog`. It reports all problems it can find in one
`SpaceError`, each pointing at the offending text. It reads no files itself: imports are resolved
through the `resolve` callback the loader passes in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import keyword
import math
import operator
import re
import types
import typing
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from spacec import ast, catalog, spec
from spacec.arch import methods
from spacec.errors import MAX_DIAGNOSTICS, NO_SPAN, Diagnostic, SpaceError, Span, suggest

# resolve(import_decl, importing_path) -> (checked library space, its sources) or raises SpaceError
Resolver = Callable[[ast.Import, str], spec.Space]

_CELL_STATEMENT_GROUPS = {
    ast.Inputs: "inputs",
    ast.NodesCount: "nodes",
    ast.NodesNamed: "nodes",
    ast.DenseEdges: "edges",
    ast.Edges: "edges",
    ast.Fixed: "edges",
    ast.Combine: "combine",
    ast.Output: "output",
    ast.Derive: "derive",
    ast.Limit: "limit",
    ast.Stride: "stride",
    ast.Share: "share",
    ast.SearchNorm: "search_norm",
}
_REPEATABLE_GROUPS = {"edges", "limit"}
_REQUIRED_GROUPS = ("inputs", "nodes", "edges", "output", "derive")

# How messages name a cell (the name is left out when comparing errors for `extends` duplicates).
_CELL_NAME = re.compile(r"cell '[A-Za-z_][A-Za-z0-9_]*'")
# The largest integer a space may compute: int64's (what torch sizes hold). Past it a value is
# surely a mistake, and Python's unbounded integers would let `a * a` chains grow without end.
MAX_INTEGER = 2**63 - 1
# Searched edges (α rows) in all cells together. `extends` and `edges dense` multiply a few
# lines into many edges; past this the IR and α would take gigabytes. DARTS has 28.
MAX_EDGES = 100_000


class _Invalid(Exception):
    """Raised inside the checker to abandon one construct after its error was recorded."""


def check(
    tree: ast.SpaceFile,
    overrides: Mapping[str, object] | None = None,
    resolve: Resolver | None = None,
    library: bool = False,
) -> spec.Space:
    """Check a parsed file. `library=True` checks a file imported for its op sets (no network)."""
    return _Checker(tree, resolve, library).run(dict(overrides or {}))


@dataclass
class _Env:
    values: dict[str, int | float]


class _Checker:
    def __init__(self, tree: ast.SpaceFile, resolve: Resolver | None, library: bool):
        self.tree = tree
        self.resolve = resolve
        self.library = library
        self.diagnostics: list[Diagnostic] = []
        self.omitted = 0  # errors past MAX_DIAGNOSTICS: counted, not kept
        self.owner: str | None = None  # the cell being checked
        self.owners: list[str | None] = []  # the cell each diagnostic was found in
        self.roots: dict[str, str] = {}  # cell -> the top of its chain of `extends`
        self.cell_decls: dict[str, ast.CellDecl] = {}
        self.fixed_stride_ops: dict[str, list] = {}  # op set -> its candidates with a fixed stride
        self.derive_spans: dict[str, Span] = {}  # cell -> its `derive` statement
        self.imported: list[spec.Space] = []  # the spaces `import` statements read, in order
        # cell -> its statements only a recurrent cell takes (`share`, `search_norm`)
        self.recurrent_spans: dict[str, list[tuple[str, Span]]] = {}
        self.sources: dict[str, str] = {tree.path: tree.text}
        self.params: dict[str, int | float] = {}
        # Each declared parameter's name, where it is (first) declared: a use before that line
        # is told so, not called unknown.
        self.declared_params: dict[str, Span] = {}
        self.declaring: str | None = None  # the parameter whose value is being evaluated
        self.opsets: dict[str, spec.OpSet] = {}
        self.opset_spans: dict[str, Span] = {}
        # Names whose definition already failed: later uses stay silent, so one mistake gives
        # one error instead of a cascade of "unknown ..." reports.
        self.failed: set[tuple[str, str]] = set()
        # Operations whose definition failed, by set: still names of the set for later checks
        # (exclude, limit), so one bad definition does not make them look unknown.
        self.broken_ops: dict[str, set[str]] = {}
        self.steps: dict[tuple, spec.Step] = {}  # valid steps by `_call_key`
        self.known_operations: dict[str, frozenset[str]] = {}  # set -> `_known_operations`

    # -- reporting --
    def error(self, span: Span, message: str, hint: str = "") -> None:
        self.report(Diagnostic(span, message, hint))

    def report(self, diagnostic: Diagnostic) -> None:
        if len(self.diagnostics) >= MAX_DIAGNOSTICS:
            self.omitted += 1
        else:
            self.diagnostics.append(diagnostic)
            self.owners.append(self.owner)

    def folded(self) -> list[Diagnostic]:
        """The diagnostics with each error once: a statement inherited through `extends` that
        fails in several cells is reported where it is written, with a note naming the other
        cells (the same text at the same place, up to the name of the cell it was found in)."""
        first: dict[tuple[Span, str, bool], int] = {}
        also: dict[int, list[str]] = {}
        kept: list[Diagnostic] = []
        for diagnostic, owner in zip(self.diagnostics, self.owners, strict=True):
            message = diagnostic.message
            if owner is not None:
                message = _CELL_NAME.sub("cell '*'", message)
            key = (diagnostic.span, message, owner is None)
            if key not in first:
                first[key] = len(kept)
                kept.append(diagnostic)
            elif owner is not None:
                also.setdefault(first[key], []).append(owner)
        for index, cells in also.items():
            cells = list(dict.fromkeys(cells))
            names = ", ".join(f"'{c}'" for c in cells)
            note = (
                f"also in cell {names}, which inherits this line"
                if len(cells) == 1
                else f"also in cells {names}, which inherit this line"
            )
            kept[index] = dataclasses.replace(kept[index], notes=(*kept[index].notes, note))
        return kept

    @property
    def capped(self) -> bool:
        return len(self.diagnostics) >= MAX_DIAGNOSTICS

    def suggest(self, name: str, known: Iterable[str], what: str) -> str:
        """A hint naming the closest known name, while errors are still being kept (a hint costs
        time in the number of known names, so a file of errors gets no more than the shown)."""
        return "" if self.capped else suggest(name, known, what)

    def fail(self, span: Span, message: str, hint: str = ""):
        self.error(span, message, hint)
        raise _Invalid

    # -- driver --
    def run(self, overrides: dict[str, object]) -> spec.Space:
        items = self.tree.items
        name = self._space_name(items)
        self._params([i for i in items if isinstance(i, ast.Param)], overrides)
        for item in items:
            if isinstance(item, ast.Import):
                self._import(item)
        for item in items:
            if isinstance(item, ast.OpSet):
                self._opset(item)
        cells = self._cells([i for i in items if isinstance(i, ast.CellDecl)])
        network = self._network([i for i in items if isinstance(i, ast.NetworkDecl)], cells)
        method = self._method([i for i in items if isinstance(i, ast.MethodDecl)], network)
        if self.diagnostics or self.omitted:
            raise SpaceError(self.folded(), self.sources, self.omitted)
        warnings = self._unused_cells(cells, network)
        return spec.Space(
            name=name,
            path=self.tree.path,
            sha256=hashlib.sha256(self.tree.text.encode()).hexdigest(),
            digest=self._digest(),
            params=tuple(self.params.items()),
            opsets=tuple(self.opsets.values()),
            cells=tuple(cells.values()),
            network=network,
            method=method,
            warnings=warnings,
        )

    def _unused_cells(self, cells: dict[str, spec.Cell],
                      network: spec.Network | None) -> tuple[Diagnostic, ...]:
        """A warning for each cell the network never runs: it is searched all the same (α rows
        of its own, a part of the supernet), for nothing."""
        if network is None:  # an imported file: its cells are not searched
            return ()
        schema = catalog.NETWORK_SETTINGS[network.kind]
        used = {value for key, value in network.settings if schema[key][0] == "cell"}
        for item in network.body:
            if isinstance(item, spec.CellRun):
                used.update(filter(None, (item.cell, item.replace_with)))
        return tuple(
            Diagnostic(
                self.cell_decls[name].name.span,
                f"cell '{name}' is never run by the network, yet it is searched (α and a part "
                "of the supernet of its own)",
                "run it in the network, or remove it",
                severity="warning",
            )
            for name in cells
            if name not in used
        )

    def _digest(self) -> str:
        """The sha256 of the file's text; where it imports spaces, of its text followed by
        theirs (each their own digest, in import order), so that a run notices an imported file
        that changed as it notices its own."""
        digest = hashlib.sha256(self.tree.text.encode())
        for library in self.imported:
            digest.update(f"\nimport {library.digest}".encode())
        return digest.hexdigest()

    def _space_name(self, items) -> str:
        decls = [i for i in items if isinstance(i, ast.SpaceDecl)]
        for extra in decls[1:]:
            self.error(extra.span, "a file declares its space name once")
        if decls:
            return decls[0].name.text
        stem = self.tree.path.rsplit("/", 1)[-1].removesuffix(".space")
        return stem if stem.isidentifier() else "space"

    # -- parameters --
    def _params(self, decls: list[ast.Param], overrides: dict[str, object]) -> None:
        for decl in decls:
            self.declared_params.setdefault(decl.name.text, decl.name.span)
        declared = self.declared_params
        for key in overrides:
            if key not in declared:
                self.error(
                    NO_SPAN,
                    f"--set {key}: no such parameter",
                    self.suggest(key, declared, "parameters"),
                )
        for decl in decls:
            if decl.name.text in self.params:
                self.error(decl.name.span, f"duplicate parameter '{decl.name.text}'")
                continue
            if not self._legal_parameter_name(decl.name):
                self.failed.add(("param", decl.name.text))
                continue
            if decl.name.text in overrides:
                value = overrides[decl.name.text]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    self.error(NO_SPAN, f"--set {decl.name.text}: expected a number, got {value!r}")
                    self.failed.add(("param", decl.name.text))
                    continue
                problem = _out_of_range(value)
                if problem:
                    self.error(NO_SPAN, f"--set {decl.name.text}: {problem}")
                    self.failed.add(("param", decl.name.text))
                    continue
            else:
                self.declaring = decl.name.text
                try:
                    value = self._number(decl.value)
                except _Invalid:
                    self.failed.add(("param", decl.name.text))
                    continue
                finally:
                    self.declaring = None
            self.params[decl.name.text] = value

    def _legal_parameter_name(self, name: ast.Name) -> bool:
        """Parameters become Python keyword arguments of the generated network."""
        text = name.text
        if keyword.iskeyword(text) or text.startswith("_") or text in catalog.RESERVED_PARAMETERS:
            self.error(
                name.span,
                f"'{text}' cannot name a parameter",
                "parameters become Python arguments of the generated network; Python "
                "keywords, names starting with '_' and names the generated code uses "
                "are reserved",
            )
            return False
        return True

    def _number(self, expr: ast.Value) -> int | float:
        return self._evaluate(expr, False, False)[0]

    def _quantity(self, expr: ast.Value, integer: bool = True) -> spec.Quantity:
        """Evaluate an expression over the parameters, keeping its Python rendering."""
        return spec.Quantity(*self._evaluate(expr, integer))

    def _evaluate(
        self, expr: ast.Value, integer: bool, rendered: bool = True
    ) -> tuple[int | float, str | None]:
        """(value, Python rendering) of an expression, each node's value checked for range; the
        rendering is None unless `rendered` (a parameter's value is all that is kept of it).

        Dispatched on the node's class through `_EVALUATORS` (a spanned error for anything
        else). Recursive: the parser bounds how deeply expressions nest (MAX_NESTING)."""
        evaluator = _EVALUATORS.get(expr.__class__)
        if evaluator is None:
            self.fail(_span_of(expr), "expected a number or an integer expression")
        value, py = evaluator(self, expr, integer, rendered)
        if not -MAX_INTEGER <= value <= MAX_INTEGER:  # else in range: the common case, quickly
            problem = _out_of_range(value)
            if problem:
                self.fail(expr.span, problem)
        return value, py

    def _evaluate_num(self, expr: ast.Num, integer: bool, rendered: bool):
        value = expr.value
        if integer and not isinstance(value, int):
            self.fail(expr.span, f"expected an integer, got {value}")
        return value, repr(value) if rendered else None

    def _evaluate_ref(self, expr: ast.Ref, integer: bool, rendered: bool):
        name = expr.name
        if ("param", name) in self.failed:
            raise _Invalid
        value = self.params.get(name)
        if value is None and name == self.declaring:
            self.fail(expr.span, f"parameter '{name}' is defined in terms of itself")
        if value is None and name in self.declared_params:
            # Parameters are evaluated in order, each from those declared before it.
            self.fail(
                expr.span,
                f"parameter '{name}' is used before it is declared "
                f"(at line {self.declared_params[name].line})",
                "a parameter can use only parameters declared above it: move "
                f"`param {name}` up",
            )
        if value is None:
            self.fail(
                expr.span,
                f"unknown parameter '{name}'",
                self.suggest(name, self.params, "parameters"),
            )
        if integer and not isinstance(value, int):
            self.fail(expr.span, f"parameter '{name}' is {value}, expected an integer")
        return value, name

    def _evaluate_neg(self, expr: ast.Neg, integer: bool, rendered: bool):
        value, py = self._evaluate(expr.operand, integer, rendered)
        if not rendered:
            return -value, None
        return -value, f"-{_wrap(py)}"

    def _evaluate_binop(self, expr: ast.BinOp, integer: bool, rendered: bool):
        """A chain of operations, each the left operand of the next (`1 + 2 - 3 + ...`, as
        left-associative operators parse), is walked in a loop: the parser lets such a chain be
        MAX_DEPTH long, and only the right operands (MAX_NESTING levels) recurse. The
        rendering has parentheses only where the operators' precedence needs them, so that it
        reads as written and a flat chain stays flat in the generated Python."""
        chain = []
        node: ast.Value = expr
        while node.__class__ is ast.BinOp:
            chain.append(node)
            node = node.left
        value, py = self._evaluate(node, integer, rendered)
        left_precedence = _ATOM
        for link in reversed(chain):
            right, right_py = self._evaluate(link.right, integer, rendered)
            op = link.op
            if op == "//" and right == 0:
                self.fail(link.span, "division by zero")
            value = _OPERATORS[op](value, right)
            if not -MAX_INTEGER <= value <= MAX_INTEGER:
                problem = _out_of_range(value)
                if problem:
                    self.fail(link.span, problem)
            if rendered:
                precedence = ast.PRECEDENCE[op]
                if left_precedence < precedence:
                    py = f"({py})"
                if _precedence(link.right) <= precedence:
                    right_py = f"({right_py})"
                py = f"{py} {op} {right_py}"
                left_precedence = precedence
        return value, py

    # -- imports and op sets --
    def _import(self, decl: ast.Import) -> None:
        if self.resolve is None:
            self.error(decl.span, "imports are not available here (no file to import from)")
            return
        try:
            library = self.resolve(decl, self.tree.path)
            self.imported.append(library)
        except SpaceError as error:
            imported_here = (decl.source.span, f"imported from {decl.source.span}")
            for diagnostic in error.diagnostics:
                if diagnostic.span.path != self.tree.path:  # in the imported file (or deeper)
                    diagnostic = dataclasses.replace(
                        diagnostic, related=(*diagnostic.related, imported_here)
                    )
                self.report(diagnostic)
            self.omitted += error.omitted
            self.sources.update(error.sources)
            self.failed.update(("opset", name.text) for name in decl.names)
            return
        available = {o.name: o for o in library.opsets}
        for name in decl.names:
            if name.text not in available:
                self.error(
                    name.span,
                    f"'{decl.source.text}' defines no operation set '{name.text}'",
                    self.suggest(name.text, available, "sets"),
                )
                self.failed.add(("opset", name.text))
            elif self._claim_opset_name(name):
                self.opsets[name.text] = available[name.text]

    def _claim_opset_name(self, name: ast.Name) -> bool:
        if name.text in self.opsets:
            self.error(
                name.span,
                f"duplicate operation set '{name.text}'",
                f"first defined at {self.opset_spans[name.text]}",
            )
            return False
        self.opset_spans[name.text] = name.span
        return True

    def _opset(self, decl: ast.OpSet) -> None:
        candidates: list[spec.Candidate] = []
        seen: dict[str, Span] = {}
        step, primitives = self._step, catalog.PRIMITIVES
        for op in decl.ops:
            if op.name.text in seen:
                self.error(
                    op.name.span,
                    f"duplicate operation '{op.name.text}' in set '{decl.name.text}'",
                    f"first defined at {seen[op.name.text]}",
                )
                continue
            seen[op.name.text] = op.name.span
            try:
                steps = tuple([step(call, primitives, "primitive") for call in op.steps])
            except _Invalid:
                self.broken_ops.setdefault(decl.name.text, set()).add(op.name.text)
                continue
            if len(steps) > 1 and not catalog.ZERO_PRIMITIVES.isdisjoint(
                [s.primitive for s in steps]
            ):
                self.error(op.span, "'zero' cannot be composed with other operations")
                self.broken_ops.setdefault(decl.name.text, set()).add(op.name.text)
                continue
            candidates.append(
                spec.Candidate(op.name.text, steps, op.span.line, op.steps[0].span.column)
            )
        if not decl.ops:
            self.error(decl.name.span, f"operation set '{decl.name.text}' is empty")
        if self._claim_opset_name(decl.name):
            self.opsets[decl.name.text] = spec.OpSet(
                decl.name.text, tuple(candidates), decl.span.line, self.tree.path
            )

    def _step(self, call: ast.Call, table: Mapping[str, catalog.Signature], what: str) -> spec.Step:
        """Validate a call against a catalogue table and evaluate its arguments.

        A call whose arguments are all literals or parameters is checked once per space: a valid
        step is a function of the table, the name and those arguments (parameters are final once
        `_params` ran), never of where the call is written, so a repeat (an operation written in
        many sets) takes the first one's result. Failures are not kept: each is reported where
        it is written."""
        key = _call_key(call, table)
        step = self.steps.get(key) if key is not None else None
        if step is None:
            step = self._check_step(call, table, what)
            if key is not None:
                self.steps[key] = step
        return step

    def _check_step(
        self, call: ast.Call, table: Mapping[str, catalog.Signature], what: str
    ) -> spec.Step:
        name = call.name.text
        if name not in table:
            self.fail(
                call.name.span, f"unknown {what} '{name}'", self.suggest(name, table, f"{what}s")
            )
        signature = table[name]
        args: dict[str, object] = {}
        for arg in call.args:
            key = arg.name.text
            if key not in signature.args:
                valid = ", ".join(signature.args) or "none"
                self.fail(
                    arg.name.span,
                    f"{name}() takes no argument '{key}'",
                    f"valid arguments: {valid}",
                )
            if key in args:
                self.fail(arg.name.span, f"{name}(): argument '{key}' given twice")
            args[key] = self._argument(name, key, signature.args[key], arg.value)
        missing = [k for k in signature.required if k not in args]
        if missing:
            self.fail(
                call.span,
                f"{name}() is missing argument{'s' if len(missing) > 1 else ''} "
                + ", ".join(f"'{m}'" for m in missing),
            )
        for key in signature.odd:
            if key in args and args[key].value % 2 == 0:
                self.fail(
                    call.span,
                    f"{name}(): '{key}' must be odd, got {args[key].value}",
                    "padding k // 2 keeps the resolution only for odd sizes",
                )
        for key, default in signature.defaults.items():
            if key not in args:  # checked like a written argument, so it is the same kind of value
                args[key] = self._argument(
                    name, key, signature.args[key], written(default, call.span)
                )
        ordered = tuple((key, args[key]) for key in signature.args if key in args)
        return spec.Step(name, ordered)

    def _argument(self, fn: str, key: str, kind: object, value: ast.Value) -> object:
        if kind in (catalog.INT, catalog.INDEX):
            quantity = self._quantity(value)
            if quantity.value < (0 if kind == catalog.INDEX else 1):
                self.fail(
                    _span_of(value),
                    f"{fn}(): '{key}' must be {'non-negative' if kind == catalog.INDEX else 'positive'}, "
                    f"got {quantity.value}",
                )
            return quantity
        if kind == catalog.NAMES:
            if not isinstance(value, ast.ListValue) or not all(
                isinstance(v, ast.Ref) for v in value.items
            ):
                self.fail(_span_of(value), f"{fn}(): '{key}' takes a list of names, e.g. [none]")
            return tuple((v.name, v.span) for v in value.items)
        assert isinstance(kind, catalog.Choice)
        if not isinstance(value, ast.Ref) or value.name not in kind.options:
            shown = value.name if isinstance(value, ast.Ref) else "this value"
            self.fail(
                _span_of(value),
                f"{fn}(): '{key}' cannot be {shown}",
                self.suggest(shown, kind.options, "choices"),
            )
        return value.name

    # -- cells --
    def _cells(self, decls: list[ast.CellDecl]) -> dict[str, spec.Cell]:
        by_name: dict[str, ast.CellDecl] = {}
        for decl in decls:
            if decl.name.text in by_name:
                self.error(
                    decl.name.span,
                    f"duplicate cell '{decl.name.text}'",
                    f"first defined at {by_name[decl.name.text].name.span}",
                )
            else:
                by_name[decl.name.text] = decl
        self.cell_decls = by_name
        bodies = self._effective_bodies(by_name)
        cells: dict[str, spec.Cell] = {}
        edges = 0
        for name, decl in by_name.items():
            if edges > MAX_EDGES:
                self.failed.add(("cell", name))
                continue
            self.owner = name
            try:
                self._legal_cell_name(decl.name)
                if name not in bodies:
                    raise _Invalid  # its `extends` failed (reported where it failed)
                cells[name] = self._cell(decl, bodies[name])
                edges += len(cells[name].edges)
                if edges > MAX_EDGES:
                    self.error(
                        decl.name.span,
                        f"the cells have {edges:,} searched edges up to here; at most "
                        f"{MAX_EDGES:,} in a space",
                    )
            except _Invalid:
                self.failed.add(("cell", name))
            finally:
                self.owner = None
        return cells

    def _legal_cell_name(self, name: ast.Name) -> None:
        """Cell names key α in an nn.ParameterDict and name generated classes."""
        if name.text.startswith("_") or name.text in catalog.MODULE_ATTRIBUTES:
            self.fail(
                name.span,
                f"'{name.text}' cannot name a cell",
                "it clashes with an attribute of torch's ParameterDict that holds α; "
                "names starting with '_' are reserved too",
            )

    def _effective_bodies(self, by_name: dict[str, ast.CellDecl]) -> dict[str, list]:
        """Each cell's statements after `extends` (a statement group in the child replaces the
        parent's), for every cell whose chain of parents resolves.

        Iterative, and linear in the statements: each cell's body is built once, from its
        parent's. A cycle is reported once (at the first declared cell on it); an unknown parent
        at the cell that names it; cells whose ancestors fail are left out silently.
        """
        bodies: dict[str, list] = {}
        failed: set[str] = set()
        position = {name: index for index, name in enumerate(by_name)}
        for name in by_name:
            chain: list[str] = []  # unresolved cells from `name` up its parents
            on_chain: set[str] = set()
            current: str | None = name
            while current is not None and current not in bodies and current not in failed:
                chain.append(current)
                on_chain.add(current)
                parent = by_name[current].parent
                if parent is None:
                    current = None
                elif parent.text not in by_name:
                    self.error(
                        parent.span,
                        f"unknown cell '{parent.text}'",
                        self.suggest(parent.text, by_name, "cells"),
                    )
                    failed.add(chain.pop())
                    current = None
                elif parent.text in on_chain:
                    cycle = chain[chain.index(parent.text) :]
                    self._extends_cycle(cycle, by_name, position)
                    failed.update(cycle)
                    del chain[chain.index(parent.text) :]
                    current = None
                else:
                    current = parent.text
            for cell in reversed(chain):
                decl = by_name[cell]
                if decl.parent is None:
                    bodies[cell] = list(decl.body)
                    self.roots[cell] = cell
                elif decl.parent.text in failed:
                    failed.add(cell)
                else:
                    self.roots[cell] = self.roots[decl.parent.text]
                    overridden = {_CELL_STATEMENT_GROUPS[type(s)] for s in decl.body}
                    inherited = bodies[decl.parent.text]
                    bodies[cell] = [
                        s for s in inherited if _CELL_STATEMENT_GROUPS[type(s)] not in overridden
                    ] + list(decl.body)
        return bodies

    def _extends_cycle(self, cycle: list[str], by_name, position: dict[str, int]) -> None:
        """One error for a cycle of `extends`, at the first declared cell on it."""
        first = min(cycle, key=position.__getitem__)
        at = cycle.index(first)
        path = (cycle[at:] + cycle[:at])[1:]  # the cells `first` reaches before itself again
        through = f" through {', '.join(repr(c) for c in path)}" if path else ""
        self.error(by_name[first].parent.span, f"cell '{first}' extends itself{through}")

    def _cell(self, decl: ast.CellDecl, body: list) -> spec.Cell:
        groups: dict[str, list] = {}
        own = None  # the cell's own statements (not inherited), by id: found when needed
        for stmt in body:
            group = _CELL_STATEMENT_GROUPS[type(stmt)]
            if group in groups and group not in _REPEATABLE_GROUPS:
                if own is None:
                    own = {id(s) for s in decl.body}
                if id(stmt) in own:
                    self.error(
                        stmt.span, f"cell '{decl.name.text}' has more than one '{group}' statement"
                    )
                    continue
            groups.setdefault(group, []).append(stmt)
        missing = [g for g in _REQUIRED_GROUPS if g not in groups]
        if missing:
            # What a cell lacks, the top of its `extends` chain lacks too: say it there, once.
            where = self.cell_decls[self.roots.get(decl.name.text, decl.name.text)]
            self.fail(
                where.name.span,
                f"cell '{where.name.text}' has no "
                + ", ".join(f"'{m}'" for m in missing)
                + " statement"
                + ("s" if len(missing) > 1 else ""),
            )
        inputs, nodes = self._cell_nodes(decl, groups["inputs"][0], groups["nodes"][0])
        order = {name: i for i, name in enumerate(inputs + nodes)}
        strides = self._strides(groups.get("stride", []), inputs)
        nodes_stmt = groups["nodes"][0]
        node_spans = (
            {name.text: name.span for name in nodes_stmt.names}
            if isinstance(nodes_stmt, ast.NodesNamed)
            else dict.fromkeys(nodes, nodes_stmt.span)
        )
        edges, fixed, opset = self._cell_edges(
            decl, groups["edges"], inputs, nodes, order, strides, node_spans
        )
        combine = self._combine(groups.get("combine"))
        reported = len(self.diagnostics)
        reduce, output = self._output(groups["output"][0], nodes)
        if len(self.diagnostics) == reported:  # an output that names no node: reported there
            self._check_every_node_reaches_the_output(nodes, output, edges, fixed, node_spans)
        rule = self._rule(groups["derive"][0], groups.get("limit", []), opset, edges, nodes)
        self.derive_spans[decl.name.text] = groups["derive"][0].span
        for key in ("share", "search_norm"):
            if groups.get(key):
                self.recurrent_spans.setdefault(decl.name.text, []).append(
                    (key, groups[key][0].span))
        share = self._optional_step(
            groups.get("share"), catalog.SHARED_BLOCKS, "shared block", "block"
        )
        norm = self._optional_step(
            groups.get("search_norm"), catalog.SEARCH_NORMS, "normalisation", "norm"
        )
        reduction = 2 in strides.values()
        return spec.Cell(
            name=decl.name.text,
            inputs=inputs,
            nodes=nodes,
            edges=edges,
            fixed=fixed,
            combine=combine,
            reduce=reduce,
            output=output,
            rule=rule,
            opset=opset.name,
            share=share,
            search_norm=norm,
            reduction=reduction,
            line=decl.span.line,
        )

    def _cell_nodes(
        self, decl, inputs_stmt: ast.Inputs, nodes_stmt
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        seen: dict[str, Span] = {}
        count = getattr(nodes_stmt, "count", None) or len(getattr(nodes_stmt, "names", ()))
        if count > catalog.MAX_NODES:
            self.fail(nodes_stmt.span, f"{count} nodes; a cell has at most {catalog.MAX_NODES}")
        for name in inputs_stmt.names + getattr(nodes_stmt, "names", ()):
            if name.text in seen:
                self.error(name.span, f"duplicate node '{name.text}' in cell '{decl.name.text}'")
            seen[name.text] = name.span
        inputs = tuple(n.text for n in inputs_stmt.names)
        if isinstance(nodes_stmt, ast.NodesCount):
            if nodes_stmt.count < 1:
                self.fail(nodes_stmt.span, "a cell needs at least one intermediate node")
            nodes = tuple(f"n{i}" for i in range(nodes_stmt.count))
            for clash in set(nodes) & set(inputs):
                self.error(
                    inputs_stmt.span, f"input '{clash}' clashes with the generated node name"
                )
        else:
            nodes = tuple(dict.fromkeys(n.text for n in nodes_stmt.names))
        return inputs, nodes

    def _strides(self, stmts: list[ast.Stride], inputs: tuple[str, ...]) -> dict[str, int]:
        strides = {name: 1 for name in inputs}
        for stmt in stmts:
            if stmt.value not in (1, 2):
                self.error(stmt.span, f"stride must be 1 or 2, got {stmt.value}")
                continue
            for source in stmt.sources or ():
                if source.text not in inputs:
                    self.error(
                        source.span,
                        f"stride on edges leaving '{source.text}', which is not an input",
                        f"stride applies to edges that leave an input node: {', '.join(inputs)}",
                    )
            names = [s.text for s in stmt.sources] if stmt.sources else list(inputs)
            for name in names:
                if name in strides:
                    strides[name] = stmt.value
        return strides

    def _cell_edges(self, decl, stmts, inputs, nodes, order, strides, node_spans):
        searched: dict[tuple[str, str], Span] = {}  # (src, dst) -> where the edge is written
        # Each searched edge as (dst's order, src's order, src, dst, set, line): sorted, α rows.
        rows: list[tuple[int, int, str, str, str, int]] = []
        fixed: list[spec.FixedEdge] = []
        opsets: dict[str, Span] = {}

        def known(name: ast.Name) -> str:
            if name.text not in order:
                self.fail(
                    name.span,
                    f"unknown node '{name.text}' in cell '{decl.name.text}'",
                    self.suggest(name.text, order, "nodes"),
                )
            return name.text

        def target(name: ast.Name) -> str:
            dst = known(name)
            if dst in inputs:
                self.fail(
                    name.span, f"edge into input node '{dst}'", "edges end at intermediate nodes"
                )
            return dst

        def add(src: str, dst: str, src_span: Span, opset: ast.Name, line: int) -> None:
            src_order, dst_order = order[src], order[dst]
            if src_order >= dst_order:
                self.error(
                    src_span,
                    _backward_edge(src, dst),
                    "cells are DAGs of ordered nodes: an edge must leave an earlier node",
                )
                return
            edge = (src, dst)
            if edge in searched:
                self.error(src_span, f"duplicate edge {src} -> {dst}")
                return
            searched[edge] = src_span
            rows.append((dst_order, src_order, src, dst, opset.text, line))
            if opset.text not in opsets:
                opsets[opset.text] = opset.span

        broken = False
        for stmt in stmts:
            try:
                if isinstance(stmt, ast.DenseEdges):
                    start = order[known(stmt.start)] if stmt.start else 0
                    self._need_opset(stmt.opset)
                    everything = inputs + nodes
                    for dst in nodes:
                        for src in everything[start : order[dst]]:
                            add(src, dst, stmt.span, stmt.opset, stmt.span.line)
                elif isinstance(stmt, ast.Edges):
                    opset, line = stmt.opset, stmt.span.line
                    self._need_opset(opset)
                    dst = target(stmt.target)
                    for source in stmt.sources:
                        add(known(source), dst, source.span, opset, line)
                else:
                    fixed.extend(self._fixed(stmt, known, target, order, strides, inputs))
            except _Invalid:
                broken = True  # reported already; the cell's edges are incomplete
        if broken:
            raise _Invalid
        if len(opsets) > 1:
            names = list(opsets)  # in the order the cell uses them
            self.fail(
                opsets[names[1]],
                f"cell '{decl.name.text}' mixes operation sets {', '.join(names)}",
                "α has one column per candidate: every searched edge of a cell uses one set",
            )
        if not opsets:
            self.fail(stmts[0].span, f"cell '{decl.name.text}' has no searched edge")
        opset = self.opsets[next(iter(opsets))]
        for edge in fixed:
            for src in edge.sources:
                if (src, edge.dst) in searched:
                    self.error(
                        searched[(src, edge.dst)],
                        f"edge {src} -> {edge.dst} is both searched and fixed",
                    )
        self._check_fixed_strides(opset, searched, strides)
        fed = {dst for (_, dst) in searched} | {f.dst for f in fixed}
        unfed = [node for node in nodes if node not in fed]
        if unfed:
            shown = ", ".join(f"'{node}'" for node in unfed[:5])
            more = f" (and {len(unfed) - 5} more)" if len(unfed) > 5 else ""
            self.error(
                node_spans[unfed[0]],
                f"node{'s' if len(unfed) > 1 else ''} {shown}{more} of cell '{decl.name.text}' "
                f"ha{'ve' if len(unfed) > 1 else 's'} no incoming edge",
            )
        rows.sort()  # by destination, then source, in node order (no two rows tie)
        edges = tuple(
            [
                spec.Edge(src, dst, opset_name, strides.get(src, 1), line)
                for _, _, src, dst, opset_name, line in rows
            ]
        )
        return edges, tuple(fixed), opset

    def _check_fixed_strides(self, opset: spec.OpSet, searched, strides) -> None:
        """Primitives that only work at one stride (factorized_reduce: 2) on edges of another."""
        if opset.name not in self.fixed_stride_ops:
            self.fixed_stride_ops[opset.name] = [
                (candidate, catalog.PRIMITIVES[candidate.steps[0].primitive].fixed_stride)
                for candidate in opset.candidates
                if catalog.PRIMITIVES[candidate.steps[0].primitive].fixed_stride is not None
            ]
        mismatch: dict[int, tuple | None] = {}  # stride -> the first edge with another stride
        for candidate, fixed_stride in self.fixed_stride_ops[opset.name]:
            if fixed_stride not in mismatch:
                mismatch[fixed_stride] = next(
                    (
                        (src, dst, span)
                        for (src, dst), span in searched.items()
                        if strides.get(src, 1) != fixed_stride
                    ),
                    None,
                )
            if mismatch[fixed_stride] is not None:
                src, dst, span = mismatch[fixed_stride]
                self.error(
                    span,
                    f"'{candidate.name}' ({candidate.steps[0].primitive}) needs "
                    f"stride {fixed_stride}, but edge {src} -> {dst} has stride "
                    f"{strides.get(src, 1)}",
                )
                return

    def _need_opset(self, name: ast.Name) -> None:
        if ("opset", name.text) in self.failed:
            raise _Invalid
        if name.text not in self.opsets:
            self.fail(
                name.span,
                f"unknown operation set '{name.text}'",
                self.suggest(name.text, self.opsets, "sets"),
            )

    def _fixed(self, stmt: ast.Fixed, known, target, order, strides,
               inputs: tuple[str, ...]) -> list[spec.FixedEdge]:
        dst = target(stmt.target)
        sources = tuple(known(s) for s in stmt.sources)
        for source, name in zip(sources, stmt.sources, strict=True):
            if order[source] >= order[dst]:
                self.fail(name.span, _backward_edge(source, dst))
        if stmt.joint:
            if len(stmt.steps) != 1:
                self.fail(stmt.span, "a joint fixed edge takes a single operation")
            if sources != inputs:
                # The generated cell hands the joint operation the cell's inputs in their
                # declared order (x_t, h_t-1): any other sources would not be what it reads.
                self.fail(
                    stmt.span,
                    f"a joint fixed edge reads the cell's inputs ({', '.join(inputs)}) in "
                    f"their declared order; got ({', '.join(sources)})",
                    f"write `fixed ({', '.join(inputs)}) -> {dst} : ...`",
                )
            step = self._step(stmt.steps[0], catalog.JOINT_PRIMITIVES, "joint operation")
            stride = max(strides.get(s, 1) for s in sources)
            return [spec.FixedEdge(sources, dst, (step,), True, stride, stmt.span.line)]
        steps = tuple(self._step(call, catalog.PRIMITIVES, "primitive") for call in stmt.steps)
        return [
            spec.FixedEdge((s,), dst, steps, False, strides.get(s, 1), stmt.span.line)
            for s in sources
        ]

    def _check_every_node_reaches_the_output(self, nodes, output, edges, fixed,
                                             node_spans) -> None:
        """A node that feeds neither the output nor a node that does is computed for nothing,
        and the α of its edges gets no gradient: its derived edges would be arbitrary."""
        feeds: dict[str, set[str]] = {}
        for edge in edges:
            feeds.setdefault(edge.dst, set()).add(edge.src)
        for edge in fixed:
            feeds.setdefault(edge.dst, set()).update(edge.sources)
        live, stack = set(output), list(output)
        while stack:
            for source in feeds.get(stack.pop(), ()):
                if source not in live:
                    live.add(source)
                    stack.append(source)
        dead = [node for node in nodes if node not in live]
        if dead:
            others = f" (and {len(dead) - 1} more)" if len(dead) > 1 else ""
            self.error(node_spans[dead[0]],
                       f"node {dead[0]}{others} reaches no output: it would be computed for "
                       "nothing, and the α of its edges gets no gradient",
                       "name it in the output, feed a node that is, or remove it")

    def _combine(self, stmts) -> str:
        if not stmts:
            return "sum"
        name = stmts[0].name
        if name.text not in catalog.COMBINES:
            self.error(
                name.span,
                f"unknown combine '{name.text}'",
                self.suggest(name.text, catalog.COMBINES, "combines"),
            )
        return name.text

    def _output(self, stmt: ast.Output, nodes: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        if stmt.reduce is None:
            reduce = "node"
        elif stmt.reduce.text not in catalog.REDUCES:
            self.fail(
                stmt.reduce.span,
                f"unknown reduction '{stmt.reduce.text}'",
                self.suggest(stmt.reduce.text, catalog.REDUCES, "reductions"),
            )
        else:
            reduce = stmt.reduce.text
        if stmt.nodes is None:
            return reduce, nodes
        for name in stmt.nodes:
            if name.text not in nodes:
                self.error(
                    name.span,
                    f"the output reduces over '{name.text}', which is not an intermediate node",
                    self.suggest(name.text, nodes, "intermediate nodes"),
                )
        names = tuple(n.text for n in stmt.nodes)
        if len(set(names)) != len(names):
            self.error(stmt.span, "the output names a node twice")
        return reduce, names

    def _rule(
        self, derive: ast.Derive, limits: list[ast.Limit], opset: spec.OpSet, edges, nodes
    ) -> spec.Rule:
        step = self._step(derive.rule, catalog.DERIVE_RULES, "derivation rule")
        args = step.kwargs()
        known = self._known_operations(opset)
        exclude = []
        for op, span in args.get("exclude", ()):
            if op not in known:
                self.error(
                    span,
                    f"derivation excludes '{op}', which is not in operation set '{opset.name}'",
                    self.suggest(op, opset.names, "operations"),
                )
            exclude.append(op)
        if opset.names and known <= set(exclude):
            self.error(derive.span, "the derivation excludes every operation of the set")
        k = args["k"].value if "k" in args else 1
        if step.primitive == "topk":
            incoming = Counter(map(_DESTINATION, edges))
            short = [node for node in nodes if 0 < incoming[node] < k]
            if short:
                count = incoming[short[0]]
                others = f" (and {len(short) - 1} more nodes)" if len(short) > 1 else ""
                self.error(
                    derive.rule.span,
                    f"topk(k={k}) but node '{short[0]}' has only {count} "
                    f"candidate edge{'s' if count != 1 else ''}{others}",
                )
        checked_limits = []
        limited: dict[str, Span] = {}
        for limit in limits:
            if limit.op.text not in known:
                self.error(
                    limit.op.span,
                    f"limit on '{limit.op.text}', which is not in operation set '{opset.name}'",
                    self.suggest(limit.op.text, opset.names, "operations"),
                )
            elif limit.op.text in limited:
                self.error(
                    limit.op.span,
                    f"more than one limit on '{limit.op.text}'",
                    f"first limited at {limited[limit.op.text]}",
                )
                continue
            limited.setdefault(limit.op.text, limit.op.span)
            checked_limits.append((limit.op.text, limit.most))
        if limits:
            self._check_limits_can_be_met(step.primitive, k, known - set(exclude),
                                          dict(checked_limits), edges, limits[0].span)
        return spec.Rule(step.primitive, k, tuple(exclude), tuple(checked_limits))

    def _check_limits_can_be_met(self, kind: str, k: int, allowed: set[str],
                                 limits: dict[str, int], edges, span: Span) -> None:
        """Where every op a derivation may choose is limited, the limits must leave as many
        choices as the derivation makes (topk: k for each node with searched edges; argmax: one
        for each edge): otherwise no α derives a genotype."""
        if not allowed or any(op not in limits for op in allowed):
            return
        room = sum(limits[op] for op in allowed)
        if kind == "topk":
            needed = k * len(set(map(_DESTINATION, edges)))
            how = f"topk(k={k}) chooses {needed} edges"
        else:
            needed = len(edges)
            how = f"{kind} chooses an op on each of its {needed} edges"
        if room < needed:
            self.error(
                span,
                f"the limits leave room for {room} chosen edge{'s' if room != 1 else ''} of "
                f"this cell and its derivation {how}: no α derives a genotype",
                "raise a limit, or leave an operation unlimited",
            )

    def _known_operations(self, opset: spec.OpSet) -> frozenset[str]:
        """The names of a set, with those whose definition failed (already reported): once per
        set, as both are final before any cell is checked."""
        known = self.known_operations.get(opset.name)
        if known is None:
            known = frozenset(opset.names) | self.broken_ops.get(opset.name, set())
            self.known_operations[opset.name] = known
        return known

    def _optional_step(self, stmts, table, what: str, attr: str) -> spec.Step | None:
        if not stmts:
            return None
        return self._step(getattr(stmts[0], attr), table, what)

    # -- the default search method --
    def _method(
        self, decls: list[ast.MethodDecl], network: spec.Network | None
    ) -> spec.MethodDefault | None:
        """`method NAME(param=value, ...)`: a method of `spacec.arch.methods` that applies to the
        space's domain, with parameters it takes, each a literal of its type. An imported file's
        statement is checked (without a domain: no network) but not taken over: imports bring
        operation sets only."""
        for extra in decls[1:]:
            self.error(
                extra.span,
                "a space names its search method once",
                f"first named at {decls[0].span}",
            )
        if not decls:
            return None
        try:
            return self._method_default(decls[0], network)
        except _Invalid:
            return None

    def _method_default(
        self, decl: ast.MethodDecl, network: spec.Network | None
    ) -> spec.MethodDefault:
        call = decl.call
        name = call.name.text
        if name not in methods.METHOD_INFO:
            self.fail(
                call.name.span,
                f"unknown search method '{name}'",
                self.suggest(name, methods.method_names(), "methods"),
            )
        info = methods.describe(name)
        if network is not None:
            domain = catalog.NETWORK_DOMAINS[network.kind]
            if domain not in info.domains:
                notes = f" ({info.domain_notes})" if info.domain_notes else ""
                fitting = [m for m in methods.method_names() if methods.applies(m, domain)]
                self.error(
                    call.name.span,
                    f"method '{name}' does not apply to {domain} spaces{notes}",
                    f"methods for {domain} spaces: {', '.join(fitting)}",
                )
        defaults = info.defaults()
        hints = typing.get_type_hints(info.params)
        values: dict[str, spec.MethodValue] = {}
        for arg in call.args:
            key = arg.name.text
            if key not in defaults:
                self.error(
                    arg.name.span,
                    f"method '{name}' takes no parameter '{key}'",
                    self.suggest(key, defaults, "parameters")
                    if defaults
                    else f"'{name}' has no parameters",
                )
            elif key in values:
                self.error(arg.name.span, f"method '{name}': parameter '{key}' given twice")
            else:
                try:
                    values[key] = self._method_value(name, key, hints[key], arg.value)
                except _Invalid:
                    continue
        try:
            info.params(**values)  # the method's own rules (k > 0, derive: space or official)
        except ValueError as error:
            message = str(error).removeprefix(f"{name}: ")
            where = next(
                (a.value.span for a in call.args if re.search(rf"\b{a.name.text}\b", message)),
                call.span,
            )
            self.error(where, f"method '{name}': {message}")
        return spec.MethodDefault(name, tuple(values.items()), decl.span.line)

    def _method_value(
        self, method: str, key: str, hint: object, value: ast.Value
    ) -> spec.MethodValue:
        """A literal of the parameter's type: a number, true or false, a name, or none where the
        parameter may be unset (`anneal_epochs=none`)."""
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        kinds = typing.get_args(hint) if union else (hint,)
        number = value.operand if isinstance(value, ast.Neg) else value
        if isinstance(number, ast.Num):
            literal = -number.value if number is not value else number.value
            problem = _out_of_range(literal)
            if problem:
                self.fail(_span_of(value), problem)
            if isinstance(literal, int) and int in kinds:
                return literal
            if float in kinds:
                return float(literal)
            shown = f"got {literal}"
        elif isinstance(value, ast.Ref):
            if bool in kinds and value.name in ("true", "false"):
                return value.name == "true"
            if type(None) in kinds and value.name == "none":
                return None
            if str in kinds:
                return value.name
            shown = f"got '{value.name}'"
        else:
            shown = "got an expression"
        wanted = [_METHOD_KINDS[kind] for kind in kinds if kind in _METHOD_KINDS]
        written = isinstance(number, ast.Num | ast.Ref) and not (
            isinstance(value, ast.Ref) and value.name in self.params
        )
        self.fail(
            _span_of(value),
            f"method '{method}': '{key}' takes {' or '.join(wanted)}, {shown}",
            ""
            if written
            else "a method's parameters are literal values: no expressions, no space parameters",
        )

    # -- the network --
    def _network(
        self, decls: list[ast.NetworkDecl], cells: dict[str, spec.Cell]
    ) -> spec.Network | None:
        if self.library:
            return None
        if not decls:
            self.error(
                Span(self.tree.path, 1, 1),
                "the space declares no network",
                "add `network image_classifier { ... }` or `network language_model { ... }`",
            )
            return None
        for extra in decls[1:]:
            self.error(extra.span, "a space declares one network")
        decl = decls[0]
        kind = decl.kind.text
        if kind not in catalog.NETWORK_SETTINGS:
            self.error(
                decl.kind.span,
                f"unknown network kind '{kind}'",
                self.suggest(kind, catalog.NETWORK_SETTINGS, "kinds"),
            )
            return None
        settings = self._settings(decl, kind, cells)
        body = self._body(decl, kind, cells)
        self._check_domains(kind, cells, decl)
        self._check_tied_decoder(decl, settings)
        self._check_auxiliary_classes(decl, settings)
        written_at = tuple((s.key.text, (s.key.span.line, s.key.span.column))
                           for s in decl.settings)
        return spec.Network(kind, tuple(settings.items()), body, decl.span.line, written_at)

    def _check_auxiliary_classes(self, decl: ast.NetworkDecl, settings: dict[str, object]) -> None:
        """The auxiliary head is trained on the same labels as the head: the same classes."""
        auxiliary, head = settings.get("auxiliary"), settings.get("head")
        if not isinstance(auxiliary, spec.Step) or not isinstance(head, spec.Step):
            return
        ours, theirs = auxiliary.kwargs().get("classes"), head.kwargs().get("classes")
        if ours is None or theirs is None or ours.value == theirs.value:
            return
        where = next(s for s in decl.settings if s.key.text == "auxiliary")
        self.error(
            _span_of(where.value),
            f"the auxiliary head has {ours.value} classes and the head {theirs.value}: both "
            "are trained on the same labels",
            f"give it the head's: classes={theirs.value}",
        )

    def _check_tied_decoder(self, decl: ast.NetworkDecl, settings: dict[str, object]) -> None:
        """A tied decoder reuses the embedding's weights: it needs embedding == hidden."""
        embedding, hidden = settings.get("embedding"), settings.get("hidden")
        if settings.get("decoder") != "tied" or embedding is None or hidden is None:
            return
        if embedding.value != hidden.value:
            where = next(s for s in decl.settings if s.key.text == "decoder")
            self.error(
                _span_of(where.value),
                f"a tied decoder needs embedding == hidden, got embedding {embedding.value} "
                f"and hidden {hidden.value}",
                "use `decoder untied`, or one size for both",
            )

    def _settings(self, decl: ast.NetworkDecl, kind: str, cells) -> dict[str, object]:
        schema = catalog.NETWORK_SETTINGS[kind]
        settings: dict[str, object] = {}
        for setting in decl.settings:
            key = setting.key.text
            if key not in schema:
                self.error(
                    setting.key.span,
                    f"unknown setting '{key}' for {_article(kind)}",
                    self.suggest(key, schema, "settings"),
                )
                continue
            if key in settings:
                self.error(setting.key.span, f"setting '{key}' given twice")
                continue
            try:
                settings[key] = self._setting_value(schema[key][0], setting.value, cells)
                if schema[key][0] == "int" and settings[key].value < 1:
                    self.fail(
                        _span_of(setting.value),
                        f"'{key}' must be positive, got {settings[key].value}",
                    )
            except _Invalid:
                settings[key] = None
        for key, (_, required) in schema.items():
            if required and key not in settings:
                self.error(decl.kind.span, f"the {kind} has no '{key}' setting")
        for key, default in catalog.NETWORK_DEFAULTS.get(kind, {}).items():
            if (
                key not in settings
            ):  # checked as if written, so codegen sees the same kinds of value
                try:
                    settings[key] = self._setting_value(
                        schema[key][0], written(default, decl.kind.span), cells
                    )
                except _Invalid:
                    settings[key] = None
        return settings

    def _setting_value(self, role: str, value: ast.Value, cells) -> object:
        if role == "int":
            return self._quantity(value)
        if role in ("cell", "decoder"):
            if not isinstance(value, ast.Ref | ast.Call) or (
                isinstance(value, ast.Call) and value.args
            ):
                self.fail(_span_of(value), f"expected a {role} name")
            name = value.name if isinstance(value, ast.Ref) else value.name.text
            if role == "cell" and ("cell", name) in self.failed:
                raise _Invalid
            options = cells if role == "cell" else catalog.DECODERS
            if name not in options:
                self.fail(
                    _span_of(value),
                    f"unknown {role} '{name}'",
                    self.suggest(name, options, f"{role}s"),
                )
            return name
        if role == "stem" and isinstance(value, ast.ListValue):
            if not value.items:
                self.fail(value.span, "a stem list needs at least one stem")
            return tuple(self._setting_value("stem", item, cells) for item in value.items)
        table = catalog.SETTING_BLOCKS[role]
        call = value if isinstance(value, ast.Call) else _as_call(value)
        if call is None:
            self.fail(_span_of(value), f"expected a {role} block, e.g. {next(iter(table))}(...)")
        return self._step(call, table, f"{role} block")

    def _body(self, decl: ast.NetworkDecl, kind: str, cells) -> tuple:
        if kind != "image_classifier":
            for body in decl.bodies:
                self.error(body.span, f"{_article(kind)} has no body")
            return ()
        if len(decl.bodies) != 1:
            span = decl.bodies[1].span if decl.bodies else decl.kind.span
            self.error(span, "an image_classifier has exactly one 'body' statement")
            return ()
        items = []
        total = 0
        for item in decl.bodies[0].items:
            try:
                items.append(self._body_item(item, cells))
            except _Invalid:
                continue
            total += items[-1].count.value if isinstance(items[-1], spec.CellRun) else 1
            if total > catalog.MAX_CELLS:
                self.error(
                    item.span, f"the body reaches {total} items here; at most {catalog.MAX_CELLS}"
                )
                break
        searched = len(items) == len(decl.bodies[0].items)  # an item failed: already reported
        if searched and not any(isinstance(item, spec.CellRun) for item in items):
            self.error(
                decl.bodies[0].span,
                "the body runs no cell: the network has nothing to search",
                f"run a cell, e.g. `body {next(iter(cells), 'normal')} * 8`",
            )
        return tuple(items)

    def _body_item(self, item: ast.BodyItem, cells) -> spec.CellRun | spec.FixedBlock:
        if isinstance(item, ast.Block):
            name = item.call.name.text
            if ("cell", name) in self.failed and not item.call.args:
                raise _Invalid  # a cell whose declaration failed: reported there
            if name in cells and not item.call.args:
                return spec.CellRun(name, spec.Quantity(1, "1"), None, (), item.span.line)
            if name not in catalog.FIXED_BLOCKS:
                self.fail(
                    item.call.name.span,
                    f"'{name}' is neither a cell nor a block",
                    self.suggest(name, [*cells, *catalog.FIXED_BLOCKS], "cells and blocks"),
                )
            step = self._step(item.call, catalog.FIXED_BLOCKS, "block")
            stride = step.kwargs().get("stride", spec.Quantity(1, "1")).value
            if stride not in (1, 2):
                self.fail(item.span, f"a block's stride must be 1 or 2, got {stride}")
            return spec.FixedBlock(step, stride, item.span.line)
        self._need_cell(item.cell, cells)
        count = self._quantity(item.count)
        if count.value > catalog.MAX_CELLS:
            self.fail(_span_of(item.count), f"{count.value} cells; at most {catalog.MAX_CELLS}")
        if count.value < 1:
            self.fail(_span_of(item.count), f"a cell run needs a positive count, got {count.value}")
        positions: tuple[spec.Quantity, ...] = ()
        if item.replace_with is not None:
            self._need_cell(item.replace_with, cells)
            positions = tuple(self._quantity(p) for p in item.positions.items)
            for position, node in zip(positions, item.positions.items, strict=True):
                if not 0 <= position.value < count.value:
                    self.error(
                        _span_of(node),
                        f"position {position.value} is outside 0 .. {count.value - 1}",
                    )
            if len({p.value for p in positions}) != len(positions):
                self.error(item.positions.span, "the same position is listed twice")
        return spec.CellRun(
            item.cell.text,
            count,
            item.replace_with and item.replace_with.text,
            positions,
            item.span.line,
        )

    def _need_cell(self, name: ast.Name, cells) -> None:
        if ("cell", name.text) in self.failed:
            raise _Invalid
        if name.text not in cells:
            self.fail(
                name.span, f"unknown cell '{name.text}'", self.suggest(name.text, cells, "cells")
            )

    def _check_domains(self, kind: str, cells: dict[str, spec.Cell], decl: ast.NetworkDecl) -> None:
        domain = catalog.NETWORK_DOMAINS[kind]
        first_user: dict[str, str] = {}  # each set is checked once, naming the first cell using it
        for cell in cells.values():
            first_user.setdefault(cell.opset, cell.name)
        for name, user in first_user.items():
            opset = self.opsets[name]
            for candidate in opset.candidates:
                for step in candidate.steps:
                    signature = catalog.PRIMITIVES[step.primitive]
                    if step.primitive not in catalog.ZERO_PRIMITIVES and signature.domain != domain:
                        self.error(
                            Span(
                                opset.source, candidate.line, candidate.column, len(step.primitive)
                            ),
                            f"'{step.primitive}' is a {signature.domain} primitive; cell "
                            f"'{user}' belongs to {_article(kind)}",
                        )
        for cell in cells.values():
            self.owner = cell.name
            for edge in cell.fixed:
                table = catalog.JOINT_PRIMITIVES if edge.joint else catalog.PRIMITIVES
                for step in edge.steps:
                    if table[step.primitive].domain != domain:
                        self.error(
                            Span(self.tree.path, edge.line, 1),
                            f"'{step.primitive}' is a {table[step.primitive].domain} "
                            f"primitive; cell '{cell.name}' belongs to {_article(kind)}",
                        )
            self.owner = None
            if domain != "sequence":
                self.owner = cell.name  # an inherited statement is reported once
                for key, span in self.recurrent_spans.get(cell.name, ()):
                    self.error(span, f"`{key}` is a statement of recurrent "
                               f"cells; cell '{cell.name}' belongs to {_article(kind)}, whose "
                               "cells would ignore it", "remove it")
                self.owner = None
            if domain == "sequence":
                if any(not edge.joint for edge in cell.fixed):
                    self.error(
                        decl.kind.span,
                        f"recurrent cell '{cell.name}': fixed edges must be "
                        "joint initial-state edges, e.g. `fixed (x, h_prev) -> s0 : "
                        "highway_init(fn=tanh)`",
                    )
                if cell.reduce == "concat":
                    self.error(
                        decl.kind.span,
                        f"recurrent cell '{cell.name}': the output of a "
                        "recurrent cell is a mean or a single node (the hidden state keeps "
                        "its width)",
                    )
                if len(cell.inputs) != 2:
                    self.error(
                        decl.kind.span,
                        f"a recurrent cell has two inputs (x_t, h_t-1); "
                        f"'{cell.name}' has {len(cell.inputs)}",
                    )
                if cell.share is None:
                    self.error(
                        decl.kind.span,
                        f"recurrent cell '{cell.name}' needs `share highway per node`",
                    )
                if cell.reduction:
                    self.error(decl.kind.span, f"recurrent cell '{cell.name}' cannot have stride 2")
                zeros = [
                    c.name
                    for c in self.opsets[cell.opset].candidates
                    if c.is_zero and c.name not in cell.rule.exclude
                ]
                if zeros:
                    self.owner = cell.name  # an inherited `derive` is reported once
                    self.error(
                        self.derive_spans[cell.name],
                        f"recurrent cell '{cell.name}' may derive '{zeros[0]}' (no connection), "
                        "which a derived recurrent cell cannot hold",
                        f"exclude it: derive {cell.rule.kind}("
                        + (f"k={cell.rule.k}, " if cell.rule.kind == "topk" else "")
                        + f"exclude=[{', '.join([*cell.rule.exclude, *zeros])}])",
                    )
                    self.owner = None


# What a method parameter's type takes, in messages (the types of spacec.arch.methods' fields).
_METHOD_KINDS = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a name",
    type(None): "none",
}


def _backward_edge(src: str, dst: str) -> str:
    if src == dst:
        return f"edge {src} -> {dst} loops from a node to itself"
    return f"edge {src} -> {dst} goes from a later node to an earlier one"


def _article(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


# What each operator of an integer expression computes.
_OPERATORS: dict[str, Callable[[int | float, int | float], int | float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "//": operator.floordiv,
}


# The precedence of a value that is not a binary operation (a number, a name, a negation):
# above every operator's (spacec.ast.PRECEDENCE), so it is never parenthesised as an operand.
_ATOM = max(ast.PRECEDENCE.values()) + 1


def _precedence(value: ast.Value) -> int:
    return ast.PRECEDENCE[value.op] if value.__class__ is ast.BinOp else _ATOM


def _wrap(py: str) -> str:
    """An operand's rendering, parenthesised where it has an operator of its own."""
    return f"({py})" if " " in py else py


# How `_Checker._evaluate` computes each kind of expression node (value, Python rendering).
_EVALUATORS: dict[type, Callable[[_Checker, typing.Any, bool, bool], tuple]] = {
    ast.Num: _Checker._evaluate_num,
    ast.Ref: _Checker._evaluate_ref,
    ast.Neg: _Checker._evaluate_neg,
    ast.BinOp: _Checker._evaluate_binop,
}


def _out_of_range(value: int | float) -> str:
    """Why a computed value cannot be used (too large, or not finite), or ""."""
    if isinstance(value, int) and abs(value) > MAX_INTEGER:
        digits = len(str(abs(value)))
        return (
            f"a {digits}-digit integer is out of range (at most {MAX_INTEGER:,} in absolute value)"
        )
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    return ""


def _call_key(call: ast.Call, table: Mapping[str, catalog.Signature]) -> tuple | None:
    """What a valid step of `call` depends on, when every argument is a number or a name: the
    table, the name, and each argument as (name, number's type, number) or (name, name given):
    3 and 3.0 would be equal keys without the type, and `k` and 3 render differently even where
    k = 3. None for any other argument (an expression; a list of names, whose step keeps the
    names' positions, and a call whose step would take a default list of names, which the
    checker writes at the call's position)."""
    signature = table.get(call.name.text)
    if signature is not None and signature.names_by_default:
        return None
    key = [id(table), call.name.text]
    for arg in call.args:
        value = arg.value
        cls = value.__class__
        if cls is ast.Num:
            key.append((arg.name.text, value.value.__class__, value.value))
        elif cls is ast.Ref:
            key.append((arg.name.text, value.name))  # two items: a number's have three
        else:
            return None
    return tuple(key)


_DESTINATION = operator.attrgetter("dst")


def _span_of(node) -> Span:
    return node.span


def written(value: object, span: Span) -> ast.Value:
    """A default from the catalogue as the AST of the text that would say it: numbers, symbols,
    lists, and calls given as (name, ((argument, value), ...)). All positioned at `span`."""
    if isinstance(value, bool):
        raise TypeError(f"no written form for {value!r}")
    if isinstance(value, int | float):
        return ast.Num(value, span)
    if isinstance(value, str):
        return ast.Ref(value, span)
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and (
            isinstance(value[1], tuple)
            and all(isinstance(pair, tuple) and len(pair) == 2 for pair in value[1])
        )
    ):
        name = ast.Name(value[0], span)
        args = tuple(ast.Arg(ast.Name(key, span), written(item, span)) for key, item in value[1])
        return ast.Call(name, args, span)
    if isinstance(value, tuple | list):
        return ast.ListValue(tuple(written(item, span) for item in value), span)
    raise TypeError(f"no written form for {value!r}")


def _as_call(value: ast.Value) -> ast.Call | None:
    if isinstance(value, ast.Ref):
        name = ast.Name(value.name, value.span)
        return ast.Call(name, (), value.span)
    return None
