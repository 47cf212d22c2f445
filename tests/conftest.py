"""Shared fixtures for the compiler tests: compiled shipped spaces (cached) and temporary spaces."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

import spacec
from spacec import CompiledSpace


@cache
def _compiled(name: str, overrides: tuple[tuple[str, int], ...]) -> CompiledSpace:
    return spacec.load(name, **dict(overrides))


@pytest.fixture(scope="session")
def compiled() -> Callable[..., CompiledSpace]:
    """`compiled("darts_cnn", C=8)`: a shipped space compiled once per session and settings."""

    def get(name: str, **overrides: int) -> CompiledSpace:
        return _compiled(name, tuple(sorted(overrides.items())))

    return get


@pytest.fixture
def write_space(tmp_path: Path) -> Callable[..., Path]:
    """`write_space(text, name="t.space")`: a .space file in a fresh temporary folder."""

    def write(text: str, name: str = "t.space") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def load_text(write_space) -> Callable[..., CompiledSpace]:
    """`load_text(text, **overrides)`: write the text to a temporary file and load it."""

    def load(text: str, name: str = "t.space", **overrides: int) -> CompiledSpace:
        return spacec.load(str(write_space(text, name)), **overrides)

    return load


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for tiny models: on a busy 2-core machine, more threads spin and wait
    far longer than the work takes (a tiny supernet's first step went from ~40 s to ~1 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


WALKTHROUGH = Path(__file__).parents[1] / "examples" / "walkthrough.sh"


@pytest.fixture(scope="session")
def walkthrough_space() -> str:
    """The space the README's walkthrough writes (my_cells.space), read from its script."""
    text = WALKTHROUGH.read_text(encoding="utf-8")
    opening = "cat > my_cells.space <<'EOF'\n"
    start = text.index(opening) + len(opening)
    return text[start:text.index("\nEOF\n", start) + 1]


@pytest.fixture(scope="session")
def agrees_with_lark() -> Callable[[str], None]:
    """`agrees_with_lark(text)` asserts that spacec's parser reads `text` as Lark's own LALR(1)
    parser of the grammar does: its contextual lexer, its parse loop and its tree builder (with
    positions), each tree node then handed to spacec's AST builder as spacec's loop hands it.
    Both give the same AST, field for field with every span, or the same syntax error. Lark
    builds no AST before the whole text has parsed, so where spacec refuses a value nested too
    deeply (or a too long integer) and a syntax error follows, only the order is checked."""
    from lark import Token
    from lark.exceptions import UnexpectedCharacters, UnexpectedToken

    from spacec import ast, parse
    from spacec.errors import SpaceError, Span

    lark = parse.lark_parser(propagate_positions=True)
    limits = ("nested too deeply", "expression too long", "an integer of")

    def by_lark(text: str, path: str):
        builder = parse._Builder(path, text)

        def build(node):
            if isinstance(node, Token):
                return str(node), node.start_pos
            values = [
                build(child)
                for child in node.children
                if child is not None
                and not (isinstance(child, Token) and child.type not in parse._VALUE_TERMINALS)
            ]
            start, end = getattr(node.meta, "start_pos", 0), getattr(node.meta, "end_pos", 0)
            return getattr(builder, node.data)(values, start, end)

        try:
            tree = lark.parse(text)
        except UnexpectedCharacters as error:
            span = Span(path, max(error.line, 1), max(error.column, 1))
            return "error", parse.unexpected_character(span, error.char)
        except UnexpectedToken as error:
            token = error.token
            span = Span(path, max(error.line, 1), max(error.column, 1), max(len(str(token)), 1))
            found = None if token.type == "$END" else str(token)
            # What the parser's state accepts (where Lark's contextual lexer finds a token the
            # state does not accept, its error lists only what it could have read, without the
            # end of the file; spacec has always listed the state's terminals).
            state = error.state
            expected = [name for name in state.parse_conf.states[state.position] if name.isupper()]
            return "error", parse.unexpected_token(span, found, expected)
        try:
            return "ok", ast.SpaceFile(path, text, tuple(build(tree)))
        except parse._Refused as refused:
            return "refused", refused.diagnostic

    def by_spacec(text: str, path: str):
        try:
            return "ok", parse.parse(text, path)
        except SpaceError as error:
            (diagnostic,) = error.diagnostics
            return "refused" if diagnostic.message.startswith(limits) else "error", diagnostic

    def check(text: str, path: str = "t.space") -> None:
        ours, reference = by_spacec(text, path), by_lark(text, path)
        if ours[0] == "refused" and reference[0] == "error":
            place = lambda span: (span.line, span.column)  # noqa: E731
            assert place(ours[1].span) < place(reference[1].span), (ours, reference)
        else:
            assert ours == reference

    return check
