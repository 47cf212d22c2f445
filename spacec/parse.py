"""Text -> AST: parse a .space file with the grammar's LALR(1) tables and build `spacec.ast` nodes.

Building the AST only turns tokens into values; it validates nothing, so every semantic rule
lives in `spacec.check`. Syntax errors become a `SpaceError` pointing at the offending token.

Lark analyses grammars/space.lark (the one definition of the language: its terminals, rules and
LALR(1) tables); this module runs those tables itself, because Lark's parse loop, its Token
objects (str subclasses) and its tree-building callbacks cost several times more per token than
the rest of the compiler together. The tables are kept as JSON in the user's cache directory
(`parser`), so that a command needs neither Lark's import nor its analysis unless the grammar
changed:

* `_Lexer` reads the whole text with one compiled pattern (whitespace and comments skipped inside
  it, one named group per terminal), so a token costs one step of `re.finditer`. It reads what
  Lark's contextual lexer reads: where the token it finds is not one the parser accepts in its
  state, the text there is read again with only the acceptable terminals (`contextual`), as
  Lark's contextual lexer does everywhere; a word is the keyword it spells where that keyword is
  accepted, else a name. Positions are character offsets; lines and columns are computed only
  for the spans the AST keeps.
* `_Parser` runs the LALR(1) automaton on plain lists (states, values, start and end offsets),
  with each table row a dict from a token's text (keywords, punctuation) or its terminal
  (`<NAME>`, ...) to one integer action. A rule that only passes its one child on (`?rule`) is a
  goto; a rule named `_rule` (and Lark's generated repetitions) hands its children to the rule
  that contains it; every other rule calls its `_Builder` method with the children that carry a
  value (keywords and punctuation only place it) and the offsets of its first and last token.
* `_Builder` makes the AST nodes as the parser reduces: no parse tree, no second pass, no
  recursion. A node's span runs from its first token to its last, parentheses included where a
  parenthesised expression stands in a larger one.
* Values nested deeper than `MAX_NESTING` levels (expressions, calls, lists; a flat chain of
  operators, `1 + 1 + ... + 1`, is one level), chains whose AST is deeper than `MAX_DEPTH`, and
  integer literals longer than `MAX_DIGITS` digits are refused with a positioned error, so that
  no later stage (the checker's evaluation, the generated Python, Python's own compiler) meets
  unbounded recursion or unbounded numbers.

Lark's own LALR parser stays the reference: tests/test_parse_reference.py compares the ASTs and
syntax errors of both on the shipped spaces, large generated ones and generated and mutated input.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable
from contextlib import contextmanager, suppress
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from spacec import ast
from spacec.errors import Diagnostic, SpaceError, Span
from spacec.files import FileError, atomic_write_text

if TYPE_CHECKING:
    from lark import Lark

GRAMMAR_FILE = "space.lark"

# Levels of nesting a value may have (each operator, call, argument or list one more; a flat
# chain of operators of one precedence, `1 + 2 - 3 + ...`, one in all, as it needs no
# parentheses). Far beyond any real space, far below Python's recursion limit and the 200 nested
# parentheses Python's parser accepts in the generated code.
MAX_NESTING = 100
# Levels of the AST a value may have in all, each operation of a flat chain counted: Python's
# compiler recurses once per operation of the generated expression (it refuses some 3,000).
MAX_DEPTH = 1000
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
# Terminals that carry a value; the others (keywords, punctuation) only place their rule.
_VALUE_TERMINALS = frozenset({"NAME", "INT", "FLOAT", "STRING"})
_END = "$END"  # Lark's terminal for the end of the input
_START = "start"  # the grammar's start rule


def grammar_text() -> str:
    return resources.files("spacec.grammars").joinpath(GRAMMAR_FILE).read_text(encoding="utf-8")


def lark_parser(**options) -> Lark:
    """Lark's LALR(1) parser of the grammar, with its contextual lexer: the source of the tables
    `_Parser` runs, and (with a parse tree) the reference the tests compare it with."""
    from lark import Lark

    return Lark(grammar_text(), parser="lalr", lexer="contextual", strict=True,
                keep_all_tokens=True,  # keywords and punctuation place their statements
                maybe_placeholders=True, **options)  # fmt: skip


@lru_cache(maxsize=1)
def parser() -> _Parser:
    """The parser, built once per process from Lark's analysis of the grammar (`tables`), which
    is kept between processes as JSON in the user's cache directory, so that a command neither
    imports Lark nor analyses the grammar (a cache that is missing, damaged or for another
    grammar is analysed afresh and written again; one that cannot be written is not kept)."""
    grammar = grammar_text()
    cache = _cache_file(grammar)
    saved = _read_tables(cache, grammar) if cache else None
    if saved is not None:
        try:
            return _Parser(saved)
        except Exception:  # noqa: BLE001 -- not tables this version wrote: analysed again below
            pass  # (a fault of `_Parser` itself would be raised again from the fresh tables)
    analysed = tables(lark_parser(), grammar)
    if cache:
        _write_tables(cache, analysed)
    return _Parser(analysed)


# Bumped whenever the saved tables change shape: older files are then not read.
_TABLES_FORMAT = 1


def tables(lark: Lark, grammar: str) -> dict:
    """What `_Parser` needs from Lark's analysis of the grammar, as plain JSON data:

    * `terminals`: each terminal's name, pattern (`kind` "str": fixed text, else a regular
      expression), the regular expression that matches it, its priority and widest match;
    * `states`: the LALR(1) table, state -> symbol -> ["shift", state] (for a rule: the state
      after reducing it) or ["reduce", index in `rules`];
    * `rules`: each rule's name, alias, whether it is a `?rule`, and its symbols as
      [name, is a terminal]."""
    from lark.parsers.lalr_analysis import Shift

    table = lark.parser.parser.parser.parse_table
    rules: list = []
    numbered: dict = {}
    states = {}
    for state, actions in table.states.items():
        row = {}
        for symbol, (action, target) in actions.items():
            if action is Shift:
                row[symbol] = ["shift", target]
                continue
            if target not in numbered:
                numbered[target] = len(rules)
                rules.append({
                    "name": target.origin.name,
                    "alias": target.alias,
                    "expand1": bool(target.options.expand1),
                    "expansion": [[part.name, part.is_term] for part in target.expansion],
                })  # fmt: skip
            row[symbol] = ["reduce", numbered[target]]
        states[str(state)] = row
    terminals = [
        {
            "name": t.name,
            "kind": t.pattern.type,
            "value": t.pattern.value,
            "regexp": t.pattern.to_regexp(),
            "priority": t.priority,
            "max_width": t.pattern.max_width,
        }
        for t in lark.terminals
    ]
    return {
        "format": _TABLES_FORMAT,
        "grammar": _digest(grammar),
        "terminals": terminals,
        "ignore": sorted(lark.lexer_conf.ignore),
        "start": table.start_states[_START],
        "end": table.end_states[_START],
        "rules": rules,
        "states": states,
    }


def _digest(grammar: str) -> str:
    return hashlib.sha256(grammar.encode("utf-8")).hexdigest()


def _cache_file(grammar: str) -> Path | None:
    """Where the grammar's tables are kept: a directory of the user's own, named by the grammar
    and the tables' format."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "spacec"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None
    return folder / f"grammar-{_digest(grammar)[:16]}-tables{_TABLES_FORMAT}.json"


def _read_tables(cache: Path, grammar: str) -> dict | None:
    try:
        saved = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("format") != _TABLES_FORMAT:
        return None
    return saved if saved.get("grammar") == _digest(grammar) else None


def _write_tables(cache: Path, analysed: dict) -> None:
    """Write the tables whole or not at all: another process may be reading them."""
    with suppress(FileError):  # not kept: the next process analyses the grammar again
        atomic_write_text(cache, json.dumps(analysed))


def parse(text: str, path: str = "<string>") -> ast.SpaceFile:
    """Parse source text into a `SpaceFile`; raise `SpaceError` on a syntax error."""
    with collector_paused():
        try:
            items = parser().parse(text, _Builder(path, text))
        except _Refused as refused:
            raise SpaceError([refused.diagnostic], {path: text}) from None
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


# ---- syntax errors -----------------------------------------------------------------------------
class _Refused(Exception):
    """Input the parser rejects: a syntax error, or input past a parsing limit (nesting depth,
    digits of a literal)."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def unexpected_character(span: Span, char: str) -> Diagnostic:
    hint = "use // for integer division" if char == "/" else ""
    return Diagnostic(span, f"unexpected character {char!r}", hint)


def unexpected_token(span: Span, found: str | None, expected: Iterable[str]) -> Diagnostic:
    """`found` is the token's text, None at the end of the file; `expected` the terminals the
    parser accepts there."""
    shown = "end of file" if found is None else repr(found)
    labels = sorted({_label(name) for name in expected})
    return Diagnostic(span, f"unexpected {shown}; expected {_or_list(labels)}")


def _label(terminal: str) -> str:
    if terminal in _TERMINAL_LABELS:
        return _TERMINAL_LABELS[terminal]
    found = parser().lexer.terminals[terminal]
    return f"'{found.value}'" if found.kind == "str" else terminal.lower()


def _or_list(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]


# ---- the lexer ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Terminal:
    """A terminal of the grammar, as Lark's analysis defines it: `kind` "str" for fixed text
    (`value`), else "re" (`value` is the pattern); `regexp` matches it either way."""

    name: str
    kind: str
    value: str
    regexp: str
    priority: int
    max_width: int


class _Lexer:
    """Reads tokens as Lark's contextual lexer does, with one pattern for the whole text.

    `tokens` matches the ignored text (whitespace, comments) before a token and then the token:
    one named group per terminal (words in one group, `NAME`; keywords are typed by the parser's
    state), then the end of the text, then any other character (`stray`). Its alternatives are
    ordered as Lark orders terminals (priority, then longest pattern), so where the terminal it
    finds is one the parser accepts, Lark's contextual lexer, which tries only the acceptable
    terminals in the same order, finds the same token. Elsewhere `contextual` reads the text as
    that lexer does (so `nodes 2.5` reads the integer 2, then a stray '.').
    """

    END_GROUP = "end_of_text"
    STRAY_GROUP = "stray"

    def __init__(self, terminals: Iterable[Terminal], ignore: Iterable[str]):
        self.terminals = {t.name: t for t in terminals}
        self.ignore = frozenset(ignore)
        word = self.terminals[_WORD].regexp
        self.keywords = {
            t.value: t.name
            for t in self.terminals.values()
            if t.kind == "str" and re.fullmatch(word, t.value)
        }
        self.keyword_names = frozenset(self.keywords.values())
        self.scanners: dict[frozenset[str], re.Pattern] = {}
        self.everything = self._scanner(frozenset(self.terminals))
        skipped = "|".join(t.regexp for t in self._ordered(self.ignore))
        groups = self._ordered(self._scanned(frozenset(self.terminals)) - self.ignore)
        self.tokens = re.compile(
            f"(?:{skipped})*+(?:"  # possessive: skipping never backtracks
            + "".join(f"(?P<{t.name}>{t.regexp})|" for t in groups)
            + rf"(?P<{self.END_GROUP}>\Z)|(?P<{self.STRAY_GROUP}>(?s:.)))"
        )

    def _ordered(self, names: Iterable[str]) -> list:
        """Terminals in the order Lark's lexer tries them."""
        return sorted(
            (self.terminals[name] for name in names),
            key=lambda t: (-t.priority, -t.max_width, -len(t.value), t.name),
        )

    def _scanned(self, accepts: frozenset[str]) -> set[str]:
        """The terminals a scanner for `accepts` tries: keywords as words, typed afterwards."""
        names = (set(accepts) | self.ignore) & set(self.terminals)
        names -= self.keyword_names
        if accepts & self.keyword_names:
            names.add(_WORD)
        return names

    def _scanner(self, accepts: frozenset[str]) -> re.Pattern:
        scanner = self.scanners.get(accepts)
        if scanner is None:
            scanner = re.compile(
                "|".join(
                    f"(?P<{t.name}>{t.regexp})"
                    for t in self._ordered(self._scanned(accepts))
                )
            )
            self.scanners[accepts] = scanner
        return scanner

    def contextual(self, text: str, pos: int, accepts: frozenset[str]) -> tuple[str, str] | None:
        """The token at `pos` (not in ignored text) as Lark's contextual lexer reads it where the
        parser accepts `accepts`: (terminal, text); None where no terminal matches at all. When
        nothing acceptable matches, the text is matched against every terminal, so that the
        parser reports the token it did not expect."""
        match = self._scanner(accepts).match(text, pos) or self.everything.match(text, pos)
        if match is None:
            return None
        kind, value = match.lastgroup, match.group()
        if kind == _WORD and value in self.keywords:
            keyword = self.keywords[value]
            if keyword in accepts or _WORD not in accepts:
                kind = keyword
        return kind, value


# ---- the LALR(1) loop ----------------------------------------------------------------------------
# What a reduction does (`_Parser.plans`): pop `size` states and the `count` values its children
# carry (keywords and punctuation carry none, so they push none), go to `goto[state below]`, and
# push the children's values through `gather` (unless None: the list as it is) and `build`
# (`build(builder, values, start, end)`, for a rule that makes a node). A rule that only passes
# its one child on (`?rule`) has `count` -1: its child's value stays.
Plan = tuple[int, int, dict[int, int], Callable | None, Callable | None]


class _Parser:
    """Lark's LALR(1) tables, run by a loop of our own (see the module's docstring).

    `rows[state]` maps a token's key to an action: a state to shift to (>= 0) or `~plan` (< 0),
    the index of the rule to reduce by. A token's key is its text for terminals of fixed text
    (keywords, punctuation), else `<TERMINAL>`; `$END` at the end of the input.
    """

    def __init__(self, tables: dict):
        """`tables`: the grammar's analysis (see `tables`)."""
        self.lexer = _Lexer([Terminal(**t) for t in tables["terminals"]], tables["ignore"])
        states = {int(state): actions for state, actions in tables["states"].items()}
        # For the expected terminals of an error: state -> the terminals it accepts.
        self.expected = {
            state: [symbol for symbol in actions if symbol.isupper()]
            for state, actions in states.items()
        }
        self.start_state = tables["start"]
        self.end_state = tables["end"]
        self.keys = {name: self._key(name) for name in self.lexer.terminals}
        self.keys[_END] = _END
        assert len(set(self.keys.values())) == len(self.keys), "two terminals share a key"
        self.group_keys = {name: f"<{name}>" for name in self.lexer.terminals}
        self.group_keys[_Lexer.END_GROUP] = _END
        self.group_keys[_Lexer.STRAY_GROUP] = f"<{_Lexer.STRAY_GROUP}>"

        rules = tables["rules"]
        gotos: dict[str, dict[int, int]] = {}
        for state, actions in states.items():
            for symbol, (_, target) in actions.items():
                if not symbol.isupper():  # a rule: where the parser goes after reducing it
                    gotos.setdefault(symbol, {})[state] = target
        self.plans: list[Plan] = []
        planned: dict[int, int] = {}  # index in `rules` -> index in `plans`
        self.rows: list[dict[str, int]] = [{} for _ in range(max(states) + 1)]
        for state, actions in states.items():
            row = self.rows[state]
            for symbol, (action, target) in actions.items():
                if not symbol.isupper():
                    continue
                if action == "shift":
                    row[self.keys[symbol]] = target
                elif action == "reduce":
                    if target not in planned:
                        planned[target] = len(self.plans)
                        rule = rules[target]
                        self.plans.append(self._plan(rule, gotos[rule["name"]]))
                    row[self.keys[symbol]] = ~planned[target]
                else:
                    raise ValueError(f"unknown action {action!r}")
        self.accepts = {state: frozenset(actions) for state, actions in states.items()}
        # (state below, state on top, lookahead key) -> where a chain of `?rule`s ends
        self.units: dict[tuple[int, int, str], tuple[int, int | None]] = {}

    def _key(self, terminal: str) -> str:
        found = self.lexer.terminals[terminal]
        return found.value if found.kind == "str" else f"<{terminal}>"

    @staticmethod
    def _plan(rule: dict, goto: dict[int, int]) -> Plan:
        """How the loop reduces `rule`: as Lark's tree builder would with `keep_all_tokens` and
        an inline transformer (`?rule` with one child: the child; `_rule`: its children, spliced
        into the rule that contains it; else the builder's method of the rule's alias or name),
        but keeping only the children that carry a value."""
        name, alias, expansion = rule["name"], rule["alias"], rule["expansion"]
        size = len(expansion)
        kept = [
            (index, not is_term and symbol.startswith("_"))
            for index, (symbol, is_term) in enumerate(expansion)
            if not is_term or symbol in _VALUE_TERMINALS
        ]
        spliced = name.startswith("_")
        if rule["expand1"] and not alias:
            if size == 1 and kept == [(0, False)]:
                return size, -1, goto, None, None
            if size < 2 or any(splice for _, splice in kept):
                raise NotImplementedError(f"rule {name}: a ?rule whose children vary in number")
        build = None if spliced else getattr(_Builder, alias or name)
        return size, len(kept), goto, _gatherer([splice for _, splice in kept]), build

    def parse(self, text: str, builder: _Builder) -> list:
        """The builder's value of the start rule; raises `_Refused` on a syntax error.

        A reduced rule's span ends where the last token shifted ends: the grammar's one empty
        rule is `start`, which no rule contains and which has no span, so every other rule ends
        with a token of its own."""
        rows, plans, group_keys = self.rows, self.plans, self.group_keys
        end_state, finditer = self.end_state, self.lexer.tokens.finditer
        units = self.units
        state = self.start_state  # the state on top of `states`
        states = [state]
        values: list = []
        starts: list[int] = []  # offsets of each entry's first token
        pos = last = last_end = 0  # where lexing (re)starts; the last token shifted: start, end
        while True:
            reread = None
            for match in finditer(text, pos):
                group = match.lastgroup
                token = match[group]
                end = match.end()
                start = end - len(token)
                row = rows[state]
                key = token
                action = row.get(key)
                if action is None:
                    key = group_keys[group]
                    action = row.get(key)
                    if action is None:
                        key, token, action = self._reread(text, start, state, builder, last)
                        end = reread = start + len(token)
                while action < 0:
                    size, count, goto, gather, build = plans[~action]
                    if count < 0:  # a chain of `?rule`s, in one step (see `_after_units`)
                        below = states[-2]
                        found = units.get((below, state, key))
                        if found is None:
                            found = units[below, state, key] = self._after_units(below, state, key)
                        state, action = found
                        states[-1] = state
                    else:
                        if count:
                            children = values[-count:]
                            del values[-count:]
                        else:
                            children = []
                        if size:
                            del states[-size:]
                            if size > 1:
                                del starts[-size + 1 :]
                        else:
                            starts.append(start)
                        if gather is not None:
                            children = gather(children)
                        if build is not None:
                            children = build(builder, children, starts[-1], last_end)
                        values.append(children)
                        state = goto[states[-1]]
                        states.append(state)
                        action = rows[state].get(key)
                    if action is None:
                        if key == _END and state == end_state:
                            return values[-1]
                        raise self._unexpected(token, key, start, state, builder, last)
                state = action
                states.append(state)
                if key is not token:  # a name, number or path: it carries a value
                    values.append((token, start))
                starts.append(start)
                last, last_end = start, end
                if reread is not None:
                    break  # lex on after the token read again
            pos = reread

    def _after_units(self, below: int, top: int, key: str) -> tuple[int, int | None]:
        """Reduce the `?rule`s that pass their one child on, one after another, from state `top`
        over state `below` with lookahead `key`: (the state on top then, its action on `key`).

        Such a reduction replaces the top state by the rule's goto from the state below it, which
        stays, so the whole chain (`atom` to `unary` to ... to `value` for every number) depends
        on those three keys only; the loop looks each chain up once (`units`) instead of running
        five steps for every number it reads."""
        action = self.rows[top].get(key)
        while action is not None and action < 0:
            _, count, goto, _, _ = self.plans[~action]
            if count >= 0:
                break
            top = goto[below]
            action = self.rows[top].get(key)
        return top, action

    def _reread(self, text: str, start: int, state: int, builder: _Builder, last: int):
        """The token at `start` as Lark's contextual lexer reads it in `state`, where the token
        read first is not acceptable: (key, text, action), or the syntax error."""
        if start == len(text):
            raise self._unexpected("", _END, start, state, builder, last)
        accepts = self.accepts[state]
        found = self.lexer.contextual(text, start, accepts)
        if found is None:
            span = builder.span(start, start + 1)
            raise _Refused(unexpected_character(span, text[start]))
        kind, token = found
        key = token if self.keys[kind] == token else self.keys[kind]
        action = self.rows[state].get(key)
        if action is None:
            raise self._unexpected(token, key, start, state, builder, last)
        return key, token, action

    def _unexpected(self, token, key, start, state, builder, last) -> _Refused:
        expected = self.expected[state]
        if key == _END:  # placed where the last token starts, as Lark places it
            return _Refused(unexpected_token(builder.span(last, last + 1), None, expected))
        return _Refused(unexpected_token(builder.span(start, start + len(token)), token, expected))


def _gatherer(splices: list[bool]) -> Callable | None:
    """The function that takes the values of a reduced rule's children (those that carry one)
    to the rule's values, or None where they are those values as they are. `splices` says for
    each whether it is a `_rule`'s values, a list spliced into the containing rule's. Lark's
    repetitions are left-recursive (`__x: item | __x "," item`), so the list they grow is
    extended by one append for each item."""
    if not any(splices):
        return None
    if splices == [True, False]:  # `__x: __x "," item`

        def append(children: list) -> list:
            values, item = children
            values.append(item)
            return values

        return append

    def gather(children: list) -> list:
        values = None  # the first child's list, extended: a repetition never copies its items
        for child, splice in zip(children, splices, strict=True):
            if values is None:
                values = child if splice else [child]
            elif splice:
                values += child
            else:
                values.append(child)
        return values

    return gather


# ---- parse -> AST ------------------------------------------------------------------------------
_ALL = object()  # `concat(*)`, `stride ... from inputs`: every node (None in the AST)
_NEWLINE = re.compile("\n")

Token = tuple[str, int]  # a value-carrying token: its text and its offset


def _maker(cls: type) -> Callable:
    """A function making `cls`, a frozen dataclass with slots, from its fields in order: the
    object its `__init__` makes, two to three times as fast.

    The AST's nodes and spans are most of what a parse costs, and a frozen dataclass's
    `__init__` sets each field through `object.__setattr__`. This fills an object of a plain
    class with the same slots (stores Python's interpreter specialises), then makes it a `cls`:
    `__class__` may be assigned between classes of one layout, and the object is then exactly
    what `__init__` makes (tests/test_parse_reference.py checks both agree for every class).
    Written out as the `dataclasses` module writes `__init__`."""
    names = [field.name for field in dataclasses.fields(cls)]
    assert all(name.isidentifier() for name in names)
    draft = _draft(cls)
    stores = "".join(f"    made.{name} = {name}\n" for name in names)
    source = (
        f"def make_{cls.__name__}({', '.join(names)}):\n"
        f"    made = draft()\n{stores}    made.__class__ = cls\n    return made\n"
    )
    namespace = {"draft": draft, "cls": cls}
    exec(source, namespace)  # noqa: S102 -- field names of our own dataclasses, checked above
    return namespace[f"make_{cls.__name__}"]


def _draft(cls: type) -> type:
    """A plain class with the slots of `cls`, a dataclass with slots: its objects may become
    `cls` objects by assigning `__class__`."""
    assert tuple(field.name for field in dataclasses.fields(cls)) == cls.__slots__
    return type(f"_{cls.__name__}Draft", (), {"__slots__": cls.__slots__})


_NAME, _NUM, _REF, _BINOP, _NEG, _ARG, _CALL = map(
    _maker, (ast.Name, ast.Num, ast.Ref, ast.BinOp, ast.Neg, ast.Arg, ast.Call)
)
_PARAM, _OPDEF, _EDGES = map(_maker, (ast.Param, ast.OpDef, ast.Edges))
_SpanDraft = _draft(Span)


# The values directly inside a value of each kind, one level deeper (see `_Builder._nested`);
# other values (numbers, references, names) have nothing inside.
_INSIDE: dict[type, Callable[..., tuple]] = {
    ast.BinOp: lambda value: (value.left, value.right),
    ast.Neg: lambda value: (value.operand,),
    ast.Call: lambda value: value.args,
    ast.Arg: lambda value: (value.value,),
    ast.ListValue: lambda value: value.items,
}


def _inside(value) -> tuple:
    inside = _INSIDE.get(type(value))
    return () if inside is None else inside(value)


class _Builder:
    """Builds AST nodes as the parser reduces each rule: no parse tree is built and nothing
    recurses. Pure conversion: no checks, no lookups.

    Each method gets the values of its rule's children (nodes, and `Token`s for names, numbers
    and paths; keywords and punctuation dropped) and the offsets where the rule's first token
    starts and its last one ends (`span` makes them a `Span`). Values nested more than
    `MAX_NESTING` levels (operators, calls, arguments, lists) are refused (`_nested`). One
    builder per parse.
    """

    def __init__(self, path: str, text: str):
        self.path = path
        # Offsets of the "\n"s, between two sentinels: one before the text, one after it.
        self.newlines = [-1, *(match.start() for match in _NEWLINE.finditer(text)), len(text) + 1]
        # Each line's number as one int object, shared by every span on that line: past line 256
        # each span would otherwise hold an int of its own (28 bytes; 15 MB of a 5 MB space).
        self.line_numbers = list(range(len(self.newlines)))
        self.depths: dict[int, int] = {}

    # -- positions and nesting --
    def span(self, start: int, end: int) -> Span:
        """`Span` from offset `start` to `end`: lines count "\\n" only, columns characters from
        1; a span over several lines has length 1. (Made as `_maker`'s functions make objects,
        written out here: a span is made for nearly every token.)"""
        newlines = self.newlines
        line = bisect_left(newlines, start)  # newlines before `start`, with the first sentinel
        made = _SpanDraft()
        made.path = self.path
        made.line = self.line_numbers[line]
        made.column = start - newlines[line - 1]
        made.length = end - start if newlines[line] >= end else 1  # the next "\n" after it
        made.__class__ = Span
        return made

    def _nested(self, node, inside: Iterable, start: int, end: int):
        """`node`, made of the values `inside` and written from offset `start` to `end`, unless
        it nests more than `MAX_NESTING` levels or its AST is more than `MAX_DEPTH` deep: then
        refused there (an argument has no span of its own, so the offsets place it).

        Each level takes at least one character of the text (an operator, a parenthesis, a
        name), so a value written in at most `MAX_NESTING` characters, nearly every value, is
        within both limits and costs nothing here. A longer one is measured (`_measure`) and
        keeps its measure (`depths`, by identity: the parse keeps every node alive), so each
        value is measured once."""
        if end - start > MAX_NESTING:
            depth, levels = measure = self._measure(node, inside)
            if levels > MAX_NESTING:
                raise self._too_deep(self.span(start, end))
            if depth > MAX_DEPTH:
                raise self._too_long(self.span(start, end))
            self.depths[id(node)] = measure
        return node

    @staticmethod
    def _too_deep(span: Span) -> _Refused:
        return _Refused(
            Diagnostic(
                span,
                f"nested too deeply: more than {MAX_NESTING} levels of expressions, calls and "
                "lists",
                "split the expression with `param` declarations",
            )
        )

    @staticmethod
    def _too_long(span: Span) -> _Refused:
        return _Refused(
            Diagnostic(
                span,
                f"expression too long: its operations chain more than {MAX_DEPTH} levels deep",
                "split the expression with `param` declarations",
            )
        )

    def _measure(self, node, inside: Iterable) -> tuple[int, int]:
        """(depth, levels) of `node`, made of the values `inside`: the levels of its AST (one
        for a value with nothing inside it), and its levels of nesting, where a binary
        operation whose left operand is an operation of the same precedence continues that
        operand's chain rather than nesting it (`1 + 2 - 3` is one level of operators, as it
        reads; `1 - (2 - 3)` two)."""
        measured = [self._measured(value) for value in inside]
        depth = 1 + max([d for d, _ in measured], default=0)
        left = getattr(node, "left", None)
        if left.__class__ is ast.BinOp and ast.PRECEDENCE[left.op] == ast.PRECEDENCE[node.op]:
            return depth, max(measured[0][1], 1 + measured[1][1])
        return depth, 1 + max([levels for _, levels in measured], default=0)

    def _measured(self, value) -> tuple[int, int]:
        """`_measure` of a value. Values that `_nested` did not measure are written in at most
        `MAX_NESTING` characters, so this recursion is as shallow."""
        known = self.depths.get(id(value))
        if known is not None:
            return known
        return self._measure(value, _inside(value))

    def _name(self, token: Token) -> ast.Name:
        text, start = token
        return _NAME(text, self.span(start, start + len(text)))

    def _int(self, token: Token) -> int:
        digits, start = token
        if len(digits) > MAX_DIGITS:
            raise _Refused(
                Diagnostic(
                    self.span(start, start + len(digits)),
                    f"an integer of {len(digits)} digits; at most {MAX_DIGITS}",
                )
            )
        return int(digits)

    # -- values --
    def start(self, v, start, end):
        return v

    def int_lit(self, v, start, end):
        return _NUM(self._int(v[0]), self.span(start, end))

    def float_lit(self, v, start, end):
        return ast.Num(float(v[0][0]), self.span(start, end))

    def ref(self, v, start, end):
        return _REF(v[0][0], self.span(start, end))

    def atom(self, v, start, end):
        """`( expr )`: the expression, placed with its parentheses in what contains it."""
        return v[0]

    def _binary(self, op: str, v, start, end):
        left, right = v
        return self._nested(_BINOP(op, left, right, self.span(start, end)), v, start, end)

    def add(self, v, start, end):
        return self._binary("+", v, start, end)

    def sub(self, v, start, end):
        return self._binary("-", v, start, end)

    def mul(self, v, start, end):
        return self._binary("*", v, start, end)

    def floordiv(self, v, start, end):
        return self._binary("//", v, start, end)

    def neg(self, v, start, end):
        (operand,) = v
        return self._nested(_NEG(operand, self.span(start, end)), v, start, end)

    def list(self, v, start, end):
        items = tuple(v)
        return self._nested(ast.ListValue(items, self.span(start, end)), items, start, end)

    def arg(self, v, start, end):
        name, value = v
        return self._nested(_ARG(self._name(name), value), (value,), start, end)

    def call(self, v, start, end):
        args = tuple(v[1:])
        return self._nested(_CALL(self._name(v[0]), args, self.span(start, end)), args, start, end)

    def bare_call(self, v, start, end):
        name = self._name(v[0])
        return _CALL(name, (), name.span)

    def name_list(self, v, start, end):
        return tuple([self._name(token) for token in v])

    def op_expr(self, v, start, end):
        return tuple(v)

    # -- declarations --
    def space_decl(self, v, start, end):
        return ast.SpaceDecl(self._name(v[0]), self.span(start, end))

    def method_decl(self, v, start, end):
        return ast.MethodDecl(v[0], self.span(start, end))

    def import_decl(self, v, start, end):
        names, (source, is_path) = v
        return ast.Import(names, source, is_path, self.span(start, end))

    def path_source(self, v, start, end):
        return ast.Name(v[0][0][1:-1], self.span(start, end)), True

    def name_source(self, v, start, end):
        return self._name(v[0]), False

    def param_decl(self, v, start, end):
        return _PARAM(self._name(v[0]), v[1], self.span(start, end))

    def op_def(self, v, start, end):
        return _OPDEF(self._name(v[0]), v[1], self.span(start, end))

    def ops_decl(self, v, start, end):
        return ast.OpSet(self._name(v[0]), tuple(v[1:]), self.span(start, end))

    # -- cells --
    def extends(self, v, start, end):
        return self._name(v[0])

    def cell_decl(self, v, start, end):
        name, *rest = v
        parent = rest.pop(0) if rest and isinstance(rest[0], ast.Name) else None
        return ast.CellDecl(self._name(name), parent, tuple(rest), self.span(start, end))

    def inputs_stmt(self, v, start, end):
        return ast.Inputs(v[0], self.span(start, end))

    def nodes_count(self, v, start, end):
        return ast.NodesCount(self._int(v[0]), self.span(start, end))

    def nodes_named(self, v, start, end):
        return ast.NodesNamed(v[0], self.span(start, end))

    def dense_from(self, v, start, end):
        return self._name(v[0])

    def dense_stmt(self, v, start, end):
        source = v[0] if len(v) == 2 else None
        return ast.DenseEdges(source, self._name(v[-1]), self.span(start, end))

    def edge_stmt(self, v, start, end):
        sources, target, opset = v
        return _EDGES(sources, self._name(target), self._name(opset), self.span(start, end))

    def fixed_each(self, v, start, end):
        sources, target, steps = v
        return ast.Fixed(sources, self._name(target), steps, False, self.span(start, end))

    def fixed_joint(self, v, start, end):
        sources, target, steps = v
        return ast.Fixed(sources, self._name(target), steps, True, self.span(start, end))

    def combine_stmt(self, v, start, end):
        return ast.Combine(self._name(v[0]), self.span(start, end))

    def output_reduce(self, v, start, end):
        reduce, nodes = v
        nodes = None if nodes is _ALL else nodes
        return ast.Output(self._name(reduce), nodes, self.span(start, end))

    def all_nodes(self, v, start, end):
        return _ALL

    def output_node(self, v, start, end):
        return ast.Output(None, (self._name(v[0]),), self.span(start, end))

    def derive_stmt(self, v, start, end):
        return ast.Derive(v[0], self.span(start, end))

    def limit_stmt(self, v, start, end):
        op, most = v
        return ast.Limit(self._name(op), self._int(most), self.span(start, end))

    def all_inputs(self, v, start, end):
        return _ALL

    def stride_stmt(self, v, start, end):
        value, sources = v
        sources = None if sources is _ALL else sources
        return ast.Stride(self._int(value), sources, self.span(start, end))

    def share_stmt(self, v, start, end):
        return ast.Share(v[0], self.span(start, end))

    def search_norm_stmt(self, v, start, end):
        return ast.SearchNorm(v[0], self.span(start, end))

    # -- network --
    def setting(self, v, start, end):
        return ast.Setting(self._name(v[0]), v[1], self.span(start, end))

    def replace(self, v, start, end):
        name, positions = v
        return self._name(name), positions

    def repeat(self, v, start, end):
        cell, count, *rest = v
        replace_with, positions = rest[0] if rest else (None, None)
        return ast.Repeat(self._name(cell), count, replace_with, positions, self.span(start, end))

    def block(self, v, start, end):
        return ast.Block(v[0], self.span(start, end))

    def body_stmt(self, v, start, end):
        return ast.Body(tuple(v), self.span(start, end))

    def network_decl(self, v, start, end):
        kind, *stmts = v
        settings = tuple(s for s in stmts if isinstance(s, ast.Setting))
        bodies = tuple(s for s in stmts if isinstance(s, ast.Body))
        return ast.NetworkDecl(self._name(kind), settings, bodies, self.span(start, end))
