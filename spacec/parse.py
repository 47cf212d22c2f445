"""Text -> AST: parse a .space file with the Lark grammar and turn the tree into `spacec.ast`.

Building the AST only turns tokens into values; it validates nothing, so every semantic rule
lives in `spacec.check`. Syntax errors become a `SpaceError` pointing at the offending token.

Parsing is linear in the input and safe on any input:

* `_Lexer`, a contextual lexer equivalent to Lark's (a word is a keyword where the grammar expects
  that keyword, else a name; only the terminals the parser can accept next are tried), scans with
  one compiled pattern per parser state: Lark's own lexer costs several times more per token.
  The grammar file stays the one definition of the terminals.
* `_Builder` makes the AST nodes while the parser reduces (Lark's inline transformer): no parse
  tree, no second pass, no recursion, positions taken from the tokens themselves (Lark's
  position propagation cost more than all the rest of a parse).
* Values nested deeper than `MAX_NESTING` levels (expressions, calls, lists) and integer literals
  longer than `MAX_DIGITS` digits are refused with a positioned error, so that no later stage
  (the checker's evaluation, the generated Python, Python's own compiler) meets unbounded
  recursion or unbounded numbers.
"""

from __future__ import annotations

import gc
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import Lexer, LexerState

from spacec import ast
from spacec.errors import Diagnostic, SpaceError, Span

GRAMMAR_FILE = "space.lark"

# Levels of nesting the parse tree may have (a statement takes about six; each operator, call,
# argument or list one more). Far beyond any real space, far below Python's recursion limit and
# the 200 nested parentheses Python's parser accepts in the generated code.
MAX_NESTING = 100
# Digits an integer literal may have: int64 holds 19, and Python refuses to convert strings of
# more than 4300 digits.
MAX_DIGITS = 30

# How expected terminals read in an error message.
_TERMINAL_LABELS = {
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "STRING": 'a quoted path ("...")',
    "$END": "the end of the file",
}
# The terminal whose pattern matches words; words equal to a keyword are typed by context.
_WORD = "NAME"


def grammar_text() -> str:
    return resources.files("spacec.grammars").joinpath(GRAMMAR_FILE).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def parser() -> Lark:
    """The LALR(1) parser, built once per process; it builds AST nodes as it goes."""
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer=_Lexer,
        strict=True,
        keep_all_tokens=True,  # keywords and punctuation place their statements
        maybe_placeholders=True,
        transformer=_Builder(),
    )


_PARSING = threading.Lock()  # the builder and the lexer keep per-parse state: one at a time


def parse(text: str, path: str = "<string>") -> ast.SpaceFile:
    """Parse source text into a `SpaceFile`; raise `SpaceError` on a syntax error."""
    lark = parser()
    builder = lark.options.transformer
    with _PARSING, collector_paused():
        builder.reset(path)
        try:
            items = lark.parse(text)
        except UnexpectedInput as error:
            raise SpaceError([_syntax_diagnostic(error, path)], {path: text}) from None
        except _Refused as refused:
            raise SpaceError([refused.diagnostic], {path: text}) from None
        finally:
            builder.reset(path)  # drop the positions of this parse
    return ast.SpaceFile(path=path, text=text, items=tuple(items))


@contextmanager
def collector_paused():
    """Pause Python's cyclic garbage collector: compiling allocates many small objects that live
    on, and the collector, triggered by allocations, re-walks them all again and again (it
    doubled the time of a 1 MB parse, and grew faster than the input). Nothing the compiler
    builds holds a reference cycle; the collector resumes afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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


# ---- the lexer ---------------------------------------------------------------------------------
class _Lexer(Lexer):
    """Lark's contextual lexing, one compiled alternation per set of acceptable terminals.

    In each parser state only the terminals the parser accepts there are tried (so `nodes 2.5`
    reads the integer 2, then a stray '.'), ordered as Lark orders them (priority, then longest
    pattern). A word is the keyword it spells where that keyword is accepted, else a name. When
    nothing acceptable matches, the text is matched against every terminal, and the parser
    reports the token it did not expect; when nothing matches at all, the character is reported.
    """

    __future_interface__ = 2

    def __init__(self, conf):
        self.terminals = {t.name: t for t in conf.terminals}
        self.ignore = frozenset(conf.ignore)
        self.keywords = {
            t.pattern.value: t.name
            for t in conf.terminals
            if t.pattern.type == "str" and re.fullmatch(self.terminals[_WORD].pattern.to_regexp(),
                                                         t.pattern.value)
        }  # fmt: skip
        self.keyword_names = frozenset(self.keywords.values())
        self.scanners: dict[frozenset[str], re.Pattern] = {}
        self.everything = self._scanner(frozenset(self.terminals))

    def _scanner(self, accepts: frozenset[str]) -> re.Pattern:
        scanner = self.scanners.get(accepts)
        if scanner is None:
            names = (set(accepts) | self.ignore) & set(self.terminals)
            names -= self.keyword_names  # words: matched by the word pattern, typed afterwards
            if accepts & self.keyword_names:
                names.add(_WORD)
            ordered = sorted(
                (self.terminals[name] for name in names),
                key=lambda t: (-t.priority, -t.pattern.max_width, -len(t.pattern.value), t.name),
            )
            scanner = re.compile(
                "|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in ordered)
            )
            self.scanners[accepts] = scanner
        return scanner

    def lex(self, lexer_state: LexerState, parser_state) -> Iterator[Token]:
        text = lexer_state.text.text
        pos, end = lexer_state.text.start, lexer_state.text.end
        line, line_start = 1, 0
        states = parser_state.parse_conf.parse_table.states
        by_state: dict[int, tuple[re.Pattern, frozenset[str]]] = {}
        while pos < end:
            state = parser_state.position
            if state not in by_state:
                accepts = frozenset(states[state])
                by_state[state] = (self._scanner(accepts), accepts)
            scanner, accepts = by_state[state]
            match = scanner.match(text, pos)
            if match is None:
                match = self.everything.match(text, pos)
                if match is None:
                    raise UnexpectedCharacters(text, pos, line, pos - line_start + 1,
                                               allowed=accepts, state=parser_state)  # fmt: skip
            kind, value = match.lastgroup, match.group()
            if kind in self.ignore:
                newlines = value.count("\n")
                if newlines:
                    line += newlines
                    line_start = pos + value.rindex("\n") + 1
                pos = match.end()
                continue
            if kind == _WORD and value in self.keywords:
                keyword = self.keywords[value]
                if keyword in accepts or _WORD not in accepts:
                    kind = keyword
            column = pos - line_start + 1
            token = Token(kind, value, pos, line, column, line, column + len(value), match.end())
            lexer_state.last_token = token
            pos = match.end()
            yield token


# ---- parse -> AST ------------------------------------------------------------------------------
class _Refused(Exception):
    """Input past a parsing limit (nesting depth, digits of a literal)."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


# Terminals that carry a value; the others (keywords, punctuation) only place their rule.
_VALUE_TERMINALS = frozenset({"NAME", "INT", "FLOAT", "STRING"})
_ALL = object()  # `concat(*)`, `stride ... from inputs`: every node (None in the AST)

Extent = tuple[int, int, int, int]  # line, column, end line, end column


class _Builder:
    """Builds AST nodes as the parser reduces each rule (Lark's inline transformer): no parse
    tree is built and nothing recurses. Pure conversion: no checks, no lookups.

    Each method gets its rule's children with every token kept (keywords and punctuation too,
    for positions). A node's span runs from its first token to its last, parentheses included
    where a parenthesised expression stands in a larger one (`extents`, by object id).
    `depths` counts how deeply values nest (operators, calls, arguments, lists), refused past
    `MAX_NESTING`.
    """

    def __init__(self):
        self.path = "<string>"
        self.extents: dict[int, Extent] = {}
        self.depths: dict[int, int] = {}

    def reset(self, path: str) -> None:
        self.path = path
        self.extents.clear()
        self.depths.clear()

    # -- positions and nesting --
    def _extent(self, item) -> Extent | None:
        if isinstance(item, Token):
            return item.line, item.column, item.end_line, item.end_column
        return self.extents.get(id(item))

    def _bounds(self, children: list) -> Extent:
        """From the start of the first child that has a place to the end of the last one."""
        extent = self._extent
        first = next(e for e in map(extent, children) if e is not None)
        last = next(e for e in map(extent, reversed(children)) if e is not None)
        return first[0], first[1], last[2], last[3]

    def _placed(self, node, children: list):
        """Record `node`'s extent (first to last child) and return it."""
        self.extents[id(node)] = self._bounds(children)
        return node

    def _nested(self, node, *inner):
        """Record `node` one level deeper than the deepest of `inner`; refuse past the limit."""
        depth = 1 + max((self.depths.get(id(item), 0) for item in inner), default=0)
        if depth > MAX_NESTING:
            raise _Refused(
                Diagnostic(
                    node.span,
                    f"nested too deeply: more than {MAX_NESTING} levels of expressions, calls "
                    "and lists",
                    "split the expression with `param` declarations",
                )
            )
        self.depths[id(node)] = depth
        return node

    def _token_span(self, token: Token) -> Span:
        return Span(self.path, token.line, token.column, len(token))

    def _name(self, token: Token) -> ast.Name:
        return ast.Name(str(token), self._token_span(token))

    def _int(self, token: Token) -> int:
        if len(token) > MAX_DIGITS:
            raise _Refused(
                Diagnostic(
                    self._token_span(token),
                    f"an integer of {len(token)} digits; at most {MAX_DIGITS}",
                )
            )
        return int(token)

    @staticmethod
    def _values(children: list) -> list:
        """The children that carry a value: no keyword or punctuation, no empty placeholder."""
        return [
            c
            for c in children
            if c is not None and not (isinstance(c, Token) and c.type not in _VALUE_TERMINALS)
        ]

    def _node(self, make, children: list):
        """`make(values, span)` placed at the children's extent."""
        bounds = line, column, end_line, end_column = self._bounds(children)
        length = end_column - column if line == end_line else 1
        node = make(self._values(children), Span(self.path, line, column, max(length, 1)))
        self.extents[id(node)] = bounds
        return node

    # -- values --
    def start(self, children):
        return children

    def int_lit(self, children):
        return self._nested(self._node(lambda v, span: ast.Num(self._int(v[0]), span), children))

    def float_lit(self, children):
        return self._nested(self._node(lambda v, span: ast.Num(float(v[0]), span), children))

    def ref(self, children):
        return self._nested(self._node(lambda v, span: ast.Ref(str(v[0]), span), children))

    def atom(self, children):
        """`( expr )`: the expression, placed with its parentheses in what contains it."""
        inner = self._values(children)[0]
        return self._placed(inner, children)

    def _binary(self, op: str, children):
        node = self._node(lambda v, span: ast.BinOp(op, v[0], v[1], span), children)
        return self._nested(node, node.left, node.right)

    def add(self, children):
        return self._binary("+", children)

    def sub(self, children):
        return self._binary("-", children)

    def mul(self, children):
        return self._binary("*", children)

    def floordiv(self, children):
        return self._binary("//", children)

    def neg(self, children):
        node = self._node(lambda v, span: ast.Neg(v[0], span), children)
        return self._nested(node, node.operand)

    def list(self, children):
        node = self._node(lambda v, span: ast.ListValue(tuple(v), span), children)
        return self._nested(node, *node.items)

    def arg(self, children):
        name, value = self._values(children)
        node = self._placed(ast.Arg(self._name(name), value), children)
        return self._nested(node, value)

    def call(self, children):
        node = self._node(lambda v, span: ast.Call(self._name(v[0]), tuple(v[1:]), span), children)
        return self._nested(node, *node.args)

    def bare_call(self, children):
        name = self._name(children[0])
        return self._nested(self._placed(ast.Call(name, (), name.span), children))

    def name_list(self, children):
        return self._placed(tuple(self._name(t) for t in self._values(children)), children)

    def op_expr(self, children):
        return self._placed(tuple(self._values(children)), children)

    # -- declarations --
    def space_decl(self, children):
        return self._node(lambda v, span: ast.SpaceDecl(self._name(v[0]), span), children)

    def method_decl(self, children):
        return self._node(lambda v, span: ast.MethodDecl(v[0], span), children)

    def import_decl(self, children):
        def make(v, span):
            names, (source, is_path) = v
            return ast.Import(names, source, is_path, span)

        return self._node(make, children)

    def path_source(self, children):
        token = children[0]
        return self._placed((ast.Name(str(token)[1:-1], self._token_span(token)), True), children)

    def name_source(self, children):
        return self._placed((self._name(children[0]), False), children)

    def param_decl(self, children):
        return self._node(lambda v, span: ast.Param(self._name(v[0]), v[1], span), children)

    def op_def(self, children):
        return self._node(lambda v, span: ast.OpDef(self._name(v[0]), v[1], span), children)

    def ops_decl(self, children):
        return self._node(lambda v, span: ast.OpSet(self._name(v[0]), tuple(v[1:]), span), children)

    # -- cells --
    def extends(self, children):
        return self._placed(self._name(self._values(children)[0]), children)

    def cell_decl(self, children):
        def make(v, span):
            name, *rest = v
            parent = rest.pop(0) if rest and isinstance(rest[0], ast.Name) else None
            return ast.CellDecl(self._name(name), parent, tuple(rest), span)

        return self._node(make, children)

    def inputs_stmt(self, children):
        return self._node(lambda v, span: ast.Inputs(v[0], span), children)

    def nodes_count(self, children):
        return self._node(lambda v, span: ast.NodesCount(self._int(v[0]), span), children)

    def nodes_named(self, children):
        return self._node(lambda v, span: ast.NodesNamed(v[0], span), children)

    def dense_from(self, children):
        return self._placed(self._name(self._values(children)[0]), children)

    def dense_stmt(self, children):
        def make(v, span):
            start = v[0] if len(v) == 2 else None
            return ast.DenseEdges(start, self._name(v[-1]), span)

        return self._node(make, children)

    def edge_stmt(self, children):
        return self._node(
            lambda v, span: ast.Edges(v[0], self._name(v[1]), self._name(v[2]), span), children
        )

    def fixed_each(self, children):
        return self._node(
            lambda v, span: ast.Fixed(v[0], self._name(v[1]), v[2], False, span), children
        )

    def fixed_joint(self, children):
        return self._node(
            lambda v, span: ast.Fixed(v[0], self._name(v[1]), v[2], True, span), children
        )

    def combine_stmt(self, children):
        return self._node(lambda v, span: ast.Combine(self._name(v[0]), span), children)

    def output_reduce(self, children):
        def make(v, span):
            reduce, nodes = v
            return ast.Output(self._name(reduce), None if nodes is _ALL else nodes, span)

        return self._node(make, children)

    def all_nodes(self, children):
        return self._placed(_ALL, children)

    def output_node(self, children):
        return self._node(lambda v, span: ast.Output(None, (self._name(v[0]),), span), children)

    def derive_stmt(self, children):
        return self._node(lambda v, span: ast.Derive(v[0], span), children)

    def limit_stmt(self, children):
        return self._node(
            lambda v, span: ast.Limit(self._name(v[0]), self._int(v[1]), span), children
        )

    def all_inputs(self, children):
        return self._placed(_ALL, children)

    def stride_stmt(self, children):
        def make(v, span):
            value, sources = v
            return ast.Stride(self._int(value), None if sources is _ALL else sources, span)

        return self._node(make, children)

    def share_stmt(self, children):
        return self._node(lambda v, span: ast.Share(v[0], span), children)

    def search_norm_stmt(self, children):
        return self._node(lambda v, span: ast.SearchNorm(v[0], span), children)

    # -- network --
    def setting(self, children):
        return self._node(lambda v, span: ast.Setting(self._name(v[0]), v[1], span), children)

    def replace(self, children):
        name, positions = self._values(children)
        return self._placed((self._name(name), positions), children)

    def repeat(self, children):
        def make(v, span):
            cell, count, *rest = v
            replace_with, positions = rest[0] if rest else (None, None)
            return ast.Repeat(self._name(cell), count, replace_with, positions, span)

        return self._node(make, children)

    def block(self, children):
        return self._node(lambda v, span: ast.Block(v[0], span), children)

    def body_stmt(self, children):
        return self._node(lambda v, span: ast.Body(tuple(v), span), children)

    def network_decl(self, children):
        def make(v, span):
            kind, *stmts = v
            settings = tuple(s for s in stmts if isinstance(s, ast.Setting))
            bodies = tuple(s for s in stmts if isinstance(s, ast.Body))
            return ast.NetworkDecl(self._name(kind), settings, bodies, span)

        return self._node(make, children)
