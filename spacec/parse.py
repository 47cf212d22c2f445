"""Text -> AST: parse a .space file with the Lark grammar and turn the tree into `spacec.ast`.

The Transformer only converts tokens into values; it validates nothing (a Python exception raised
inside a Transformer comes out wrapped in Lark's VisitError), so every semantic rule lives in
`spacec.check`. Syntax errors become a `SpaceError` pointing at the offending token.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from spacec import ast
from spacec.errors import Diagnostic, SpaceError, Span

GRAMMAR_FILE = "space.lark"

# How expected terminals read in an error message.
_TERMINAL_LABELS = {
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "STRING": 'a quoted path ("...")',
    "$END": "the end of the file",
}


def grammar_text() -> str:
    return resources.files("spacec.grammars").joinpath(GRAMMAR_FILE).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def parser() -> Lark:
    """The LALR(1) parser, built once per process."""
    return Lark(
        grammar_text(),
        parser="lalr",
        strict=True,
        propagate_positions=True,
        maybe_placeholders=True,
    )


def parse(text: str, path: str = "<string>") -> ast.SpaceFile:
    """Parse source text into a `SpaceFile`; raise `SpaceError` on a syntax error."""
    try:
        tree = parser().parse(text)
    except UnexpectedInput as error:
        raise SpaceError([_syntax_diagnostic(error, path)], {path: text}) from None
    items = _ToAst(path).transform(tree)
    return ast.SpaceFile(path=path, text=text, items=tuple(items.children))


def _syntax_diagnostic(error: UnexpectedInput, path: str) -> Diagnostic:
    line, column = max(error.line, 1), max(error.column, 1)
    if isinstance(error, UnexpectedCharacters):
        char = error.char
        hint = "use // for integer division" if char == "/" else ""
        return Diagnostic(Span(path, line, column), f"unexpected character {char!r}", hint)
    assert isinstance(error, UnexpectedToken)
    token = error.token
    found = "end of file" if token.type == "$END" else repr(str(token))
    expected = sorted({_label(name) for name in error.expected})
    message = f"unexpected {found}; expected {_or_list(expected)}"
    return Diagnostic(Span(path, line, column, max(len(str(token)), 1)), message)


def _label(terminal: str) -> str:
    if terminal in _TERMINAL_LABELS:
        return _TERMINAL_LABELS[terminal]
    pattern = parser().get_terminal(terminal).pattern
    return f"'{pattern.value}'" if pattern.type == "str" else terminal.lower()


def _or_list(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]


class _ToAst(Transformer):
    """Lark tree -> AST nodes. Pure conversion: no checks, no lookups."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    # -- helpers --
    def _span(self, meta_or_token, length: int | None = None) -> Span:
        if isinstance(meta_or_token, Token):
            return Span(self.path, meta_or_token.line, meta_or_token.column, len(meta_or_token))
        meta = meta_or_token
        if getattr(meta, "empty", False):
            return Span(self.path, 0, 0, 0)
        if length is None:
            same_line = meta.end_line == meta.line
            length = meta.end_column - meta.column if same_line else 1
        return Span(self.path, meta.line, meta.column, max(length, 1))

    def _name(self, token: Token) -> ast.Name:
        return ast.Name(str(token), self._span(token))

    # -- values --
    def NAME(self, token: Token) -> Token:  # noqa: N802 - Lark calls terminal callbacks by name
        return token

    @v_args(meta=True)
    def int_lit(self, meta, children):
        return ast.Num(int(children[0]), self._span(meta))

    @v_args(meta=True)
    def float_lit(self, meta, children):
        return ast.Num(float(children[0]), self._span(meta))

    @v_args(meta=True)
    def ref(self, meta, children):
        return ast.Ref(str(children[0]), self._span(meta))

    def _binop(op):  # noqa: N805 - builds the four binary-operator callbacks below
        @v_args(meta=True)
        def build(self, meta, children):
            left, right = children
            return ast.BinOp(op, left, right, self._span(meta))

        return build

    add, sub, mul, floordiv = _binop("+"), _binop("-"), _binop("*"), _binop("//")

    @v_args(meta=True)
    def neg(self, meta, children):
        return ast.Neg(children[0], self._span(meta))

    @v_args(meta=True)
    def list(self, meta, children):
        items = tuple(child for child in children if child is not None)
        return ast.ListValue(items, self._span(meta))

    def arg(self, children):
        name, value = children
        return ast.Arg(self._name(name), value)

    @v_args(meta=True)
    def call(self, meta, children):
        name, *args = children
        return ast.Call(self._name(name), tuple(a for a in args if a is not None), self._span(meta))

    def bare_call(self, children):
        name = self._name(children[0])
        return ast.Call(name, (), name.span)

    def name_list(self, children):
        return tuple(self._name(token) for token in children)

    def op_expr(self, children):
        return tuple(children)

    # -- declarations --
    @v_args(meta=True)
    def space_decl(self, meta, children):
        return ast.SpaceDecl(self._name(children[0]), self._span(meta))

    @v_args(meta=True)
    def import_decl(self, meta, children):
        names, (source, is_path) = children
        return ast.Import(names, source, is_path, self._span(meta))

    def path_source(self, children):
        token = children[0]
        span = self._span(token)
        return ast.Name(str(token)[1:-1], span), True

    def name_source(self, children):
        return self._name(children[0]), False

    @v_args(meta=True)
    def param_decl(self, meta, children):
        name, value = children
        return ast.Param(self._name(name), value, self._span(meta))

    @v_args(meta=True)
    def op_def(self, meta, children):
        name, steps = children
        return ast.OpDef(self._name(name), steps, self._span(meta))

    @v_args(meta=True)
    def ops_decl(self, meta, children):
        name, *ops = children
        return ast.OpSet(self._name(name), tuple(ops), self._span(meta))

    # -- cells --
    def extends(self, children):
        return self._name(children[0])

    @v_args(meta=True)
    def cell_decl(self, meta, children):
        name, *rest = children
        parent = rest.pop(0) if rest and isinstance(rest[0], ast.Name) else None
        return ast.CellDecl(self._name(name), parent, tuple(rest), self._span(meta))

    @v_args(meta=True)
    def inputs_stmt(self, meta, children):
        return ast.Inputs(children[0], self._span(meta))

    @v_args(meta=True)
    def nodes_count(self, meta, children):
        return ast.NodesCount(int(children[0]), self._span(meta))

    @v_args(meta=True)
    def nodes_named(self, meta, children):
        return ast.NodesNamed(children[0], self._span(meta))

    def dense_from(self, children):
        return self._name(children[0])

    @v_args(meta=True)
    def dense_stmt(self, meta, children):
        start = children[0] if len(children) == 2 else None
        return ast.DenseEdges(start, self._name(children[-1]), self._span(meta))

    @v_args(meta=True)
    def edge_stmt(self, meta, children):
        sources, target, opset = children
        return ast.Edges(sources, self._name(target), self._name(opset), self._span(meta))

    @v_args(meta=True)
    def fixed_each(self, meta, children):
        sources, target, steps = children
        return ast.Fixed(sources, self._name(target), steps, False, self._span(meta))

    @v_args(meta=True)
    def fixed_joint(self, meta, children):
        sources, target, steps = children
        return ast.Fixed(sources, self._name(target), steps, True, self._span(meta))

    @v_args(meta=True)
    def combine_stmt(self, meta, children):
        return ast.Combine(self._name(children[0]), self._span(meta))

    @v_args(meta=True)
    def output_reduce(self, meta, children):
        reduce, nodes = children
        return ast.Output(self._name(reduce), nodes, self._span(meta))

    def all_nodes(self, children):
        return None

    @v_args(meta=True)
    def output_node(self, meta, children):
        return ast.Output(None, (self._name(children[0]),), self._span(meta))

    @v_args(meta=True)
    def derive_stmt(self, meta, children):
        return ast.Derive(children[0], self._span(meta))

    @v_args(meta=True)
    def limit_stmt(self, meta, children):
        op, most = children
        return ast.Limit(self._name(op), int(most), self._span(meta))

    def all_inputs(self, children):
        return None

    @v_args(meta=True)
    def stride_stmt(self, meta, children):
        value, sources = children
        return ast.Stride(int(value), sources, self._span(meta))

    @v_args(meta=True)
    def share_stmt(self, meta, children):
        return ast.Share(children[0], self._span(meta))

    @v_args(meta=True)
    def search_norm_stmt(self, meta, children):
        return ast.SearchNorm(children[0], self._span(meta))

    # -- network --
    @v_args(meta=True)
    def setting(self, meta, children):
        key, value = children
        return ast.Setting(self._name(key), value, self._span(meta))

    def replace(self, children):
        name, positions = children
        return self._name(name), positions

    @v_args(meta=True)
    def repeat(self, meta, children):
        cell, count, *rest = children
        replace_with, positions = rest[0] if rest and rest[0] is not None else (None, None)
        return ast.Repeat(self._name(cell), count, replace_with, positions, self._span(meta))

    @v_args(meta=True)
    def block(self, meta, children):
        return ast.Block(children[0], self._span(meta))

    @v_args(meta=True)
    def body_stmt(self, meta, children):
        return ast.Body(tuple(children), self._span(meta))

    @v_args(meta=True)
    def network_decl(self, meta, children):
        kind, *stmts = children
        settings = tuple(s for s in stmts if isinstance(s, ast.Setting))
        bodies = tuple(s for s in stmts if isinstance(s, ast.Body))
        return ast.NetworkDecl(self._name(kind), settings, bodies, self._span(meta))


def _is_tree(node) -> bool:
    return isinstance(node, Tree)
