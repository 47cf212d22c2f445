"""Text -> AST: parse a .space file with the Lark grammar and turn the tree into `spacec.ast`.

The conversion only turns tokens into values; it validates nothing, so every semantic rule lives
in `spacec.check`. Syntax errors become a `SpaceError` pointing at the offending token.

Two things keep parsing linear and safe on any input:

* `_Lexer`, a contextual lexer equivalent to Lark's (a word is a keyword where the grammar expects
  that keyword, else a name; only the terminals the parser can accept next are tried), that
  scans with one compiled pattern per parser state. Lark's own lexer costs several times more
  per token; the grammar file stays the one definition of the terminals.
* The tree is converted to AST nodes iteratively (no Python recursion), and input nested deeper
  than `MAX_NESTING` levels (expressions, calls, lists) or with integer literals longer than
  `MAX_DIGITS` digits is refused with a positioned error, so that no later stage (the checker's
  evaluation, the generated Python, Python's own compiler) meets unbounded recursion.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Tree
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
    """The LALR(1) parser, built once per process."""
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer=_Lexer,
        strict=True,
        propagate_positions=True,
        maybe_placeholders=True,
    )


_PARSING = threading.Lock()  # the lexer caches its scanners; one parse at a time


def parse(text: str, path: str = "<string>") -> ast.SpaceFile:
    """Parse source text into a `SpaceFile`; raise `SpaceError` on a syntax error."""
    try:
        with _PARSING:
            tree = parser().parse(text)
    except UnexpectedInput as error:
        raise SpaceError([_syntax_diagnostic(error, path)], {path: text}) from None
    try:
        items = _ToAst(path).convert(tree)
    except _Refused as refused:
        raise SpaceError([refused.diagnostic], {path: text}) from None
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


# ---- tree -> AST -------------------------------------------------------------------------------
class _Refused(Exception):
    """Input past a parsing limit (nesting depth, digits of a literal)."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


class _ToAst:
    """Lark tree -> AST nodes. Pure conversion: no checks, no lookups.

    Each rule's method takes the tree's `meta` (its position) and its converted children.
    `convert` walks the tree with an explicit stack, children before parents.
    """

    def __init__(self, path: str):
        self.path = path
        self.rules = {
            name: getattr(self, name)
            for name in dir(self)
            if not name.startswith("_") and name not in ("path", "rules", "convert")
        }

    def convert(self, root: Tree):
        stack: list[tuple[Tree, Iterator, list]] = [(root, iter(root.children), [])]
        while True:
            tree, pending, done = stack[-1]
            for child in pending:
                if isinstance(child, Tree):
                    if len(stack) >= MAX_NESTING:
                        raise _Refused(
                            Diagnostic(
                                self._span(child.meta),
                                f"nested too deeply: more than {MAX_NESTING} levels of "
                                "expressions, calls and lists",
                                "split the expression with `param` declarations",
                            )
                        )
                    stack.append((child, iter(child.children), []))
                    break
                done.append(child)
            else:
                stack.pop()
                value = self.rules[tree.data](tree.meta, done)
                if not stack:
                    return value
                stack[-1][2].append(value)

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

    def _int(self, token: Token) -> int:
        if len(token) > MAX_DIGITS:
            raise _Refused(
                Diagnostic(self._span(token), f"an integer of {len(token)} digits; at most {MAX_DIGITS}")
            )
        return int(token)

    # -- values --
    def start(self, meta, children):
        return Tree("start", children)

    def int_lit(self, meta, children):
        return ast.Num(self._int(children[0]), self._span(meta))

    def float_lit(self, meta, children):
        return ast.Num(float(children[0]), self._span(meta))

    def ref(self, meta, children):
        return ast.Ref(str(children[0]), self._span(meta))

    def _binary(self, op: str, meta, children):
        left, right = children
        return ast.BinOp(op, left, right, self._span(meta))

    def add(self, meta, children):
        return self._binary("+", meta, children)

    def sub(self, meta, children):
        return self._binary("-", meta, children)

    def mul(self, meta, children):
        return self._binary("*", meta, children)

    def floordiv(self, meta, children):
        return self._binary("//", meta, children)

    def neg(self, meta, children):
        return ast.Neg(children[0], self._span(meta))

    def list(self, meta, children):
        items = tuple(child for child in children if child is not None)
        return ast.ListValue(items, self._span(meta))

    def arg(self, meta, children):
        name, value = children
        return ast.Arg(self._name(name), value)

    def call(self, meta, children):
        name, *args = children
        return ast.Call(self._name(name), tuple(a for a in args if a is not None), self._span(meta))

    def bare_call(self, meta, children):
        name = self._name(children[0])
        return ast.Call(name, (), name.span)

    def name_list(self, meta, children):
        return tuple(self._name(token) for token in children)

    def op_expr(self, meta, children):
        return tuple(children)

    # -- declarations --
    def space_decl(self, meta, children):
        return ast.SpaceDecl(self._name(children[0]), self._span(meta))

    def import_decl(self, meta, children):
        names, (source, is_path) = children
        return ast.Import(names, source, is_path, self._span(meta))

    def path_source(self, meta, children):
        token = children[0]
        return ast.Name(str(token)[1:-1], self._span(token)), True

    def name_source(self, meta, children):
        return self._name(children[0]), False

    def param_decl(self, meta, children):
        name, value = children
        return ast.Param(self._name(name), value, self._span(meta))

    def op_def(self, meta, children):
        name, steps = children
        return ast.OpDef(self._name(name), steps, self._span(meta))

    def ops_decl(self, meta, children):
        name, *ops = children
        return ast.OpSet(self._name(name), tuple(ops), self._span(meta))

    # -- cells --
    def extends(self, meta, children):
        return self._name(children[0])

    def cell_decl(self, meta, children):
        name, *rest = children
        parent = rest.pop(0) if rest and isinstance(rest[0], ast.Name) else None
        return ast.CellDecl(self._name(name), parent, tuple(rest), self._span(meta))

    def inputs_stmt(self, meta, children):
        return ast.Inputs(children[0], self._span(meta))

    def nodes_count(self, meta, children):
        return ast.NodesCount(self._int(children[0]), self._span(meta))

    def nodes_named(self, meta, children):
        return ast.NodesNamed(children[0], self._span(meta))

    def dense_from(self, meta, children):
        return self._name(children[0])

    def dense_stmt(self, meta, children):
        start = children[0] if len(children) == 2 else None
        return ast.DenseEdges(start, self._name(children[-1]), self._span(meta))

    def edge_stmt(self, meta, children):
        sources, target, opset = children
        return ast.Edges(sources, self._name(target), self._name(opset), self._span(meta))

    def fixed_each(self, meta, children):
        sources, target, steps = children
        return ast.Fixed(sources, self._name(target), steps, False, self._span(meta))

    def fixed_joint(self, meta, children):
        sources, target, steps = children
        return ast.Fixed(sources, self._name(target), steps, True, self._span(meta))

    def combine_stmt(self, meta, children):
        return ast.Combine(self._name(children[0]), self._span(meta))

    def output_reduce(self, meta, children):
        reduce, nodes = children
        return ast.Output(self._name(reduce), nodes, self._span(meta))

    def all_nodes(self, meta, children):
        return None

    def output_node(self, meta, children):
        return ast.Output(None, (self._name(children[0]),), self._span(meta))

    def derive_stmt(self, meta, children):
        return ast.Derive(children[0], self._span(meta))

    def limit_stmt(self, meta, children):
        op, most = children
        return ast.Limit(self._name(op), self._int(most), self._span(meta))

    def all_inputs(self, meta, children):
        return None

    def stride_stmt(self, meta, children):
        value, sources = children
        return ast.Stride(self._int(value), sources, self._span(meta))

    def share_stmt(self, meta, children):
        return ast.Share(children[0], self._span(meta))

    def search_norm_stmt(self, meta, children):
        return ast.SearchNorm(children[0], self._span(meta))

    # -- network --
    def setting(self, meta, children):
        key, value = children
        return ast.Setting(self._name(key), value, self._span(meta))

    def replace(self, meta, children):
        name, positions = children
        return self._name(name), positions

    def repeat(self, meta, children):
        cell, count, *rest = children
        replace_with, positions = rest[0] if rest and rest[0] is not None else (None, None)
        return ast.Repeat(self._name(cell), count, replace_with, positions, self._span(meta))

    def block(self, meta, children):
        return ast.Block(children[0], self._span(meta))

    def body_stmt(self, meta, children):
        return ast.Body(tuple(children), self._span(meta))

    def network_decl(self, meta, children):
        kind, *stmts = children
        settings = tuple(s for s in stmts if isinstance(s, ast.Setting))
        bodies = tuple(s for s in stmts if isinstance(s, ast.Body))
        return ast.NetworkDecl(self._name(kind), settings, bodies, self._span(meta))
