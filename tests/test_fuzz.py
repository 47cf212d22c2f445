"""Fuzzing the compiler: any text gives a compiled space or a SpaceError, never another exception.

Inputs are arbitrary text, soups of the language's own tokens, and valid spaces mutated token by
token or line by line (delete, duplicate, swap, change a number, rename an identifier). Each runs
the whole load pipeline (parse, check incl. imports, IR build and lint, code generation) from a
file; no torch module is built.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spacec
from spacec.errors import SpaceError

FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TOKEN = re.compile(r'[A-Za-z_]\w*|\d+(?:\.\d*)?|//|>>|->|<=|"[^"\n]*"|#[^\n]*|\n|\S')
SEEDS = {name: path.read_text(encoding="utf-8") for name, path in spacec.shipped_spaces().items()}
KEYWORDS = ["space", "import", "from", "param", "ops", "cell", "extends", "inputs", "nodes",
            "edges", "dense", "edge", "fixed", "combine", "output", "derive", "limit", "stride",
            "share", "per", "node", "search_norm", "network", "body", "with", "at"]  # fmt: skip
PUNCTUATION = ["{", "}", "(", ")", "[", "]", ",", "=", ":", "*", "+", "-", "//", ">>", "->", "<="]
# Names a mutation may rename an identifier to: ones the spaces use, and ones Python or the
# generated code reserve (the compiler must rename or reject those).
PLAIN_NAMES = ["a", "x", "n0", "n9", "s0", "h_prev", "normal", "reduce", "C", "layers", "N",
               "none", "o", "darts_ops", "sum", "concat", "mean", "topk", "argmax", "zero",
               "identity", "sep_conv", "res_block", "classifier", "inputs", "edges"]  # fmt: skip
HOSTILE_NAMES = ["class", "None", "self", "torch", "weights", "RULES", "Network", "__import__"]
NUMBERS = ["0", "1", "2", "3", "4", "7", "12", "-1", "2.5", "1e3"]  # small: dense cells stay small


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzz.space"


def compile_text(path: Path, text: str) -> str | None:
    """The generated source, or None when the compiler rejects the text with a SpaceError."""
    path.write_text(text, encoding="utf-8")
    try:
        return spacec.load(str(path)).source
    except SpaceError as error:
        assert error.diagnostics
        assert str(error)  # renders without failing
        return None


# ---- mutations -----------------------------------------------------------------------------------
@st.composite
def mutated_space(draw, names: list[str]) -> str:
    tokens = TOKEN.findall(draw(st.sampled_from(sorted(SEEDS.values()))))
    for _ in range(draw(st.integers(1, 4))):
        tokens = draw(mutation(tokens, names))
    return " ".join(tokens).replace(" \n ", "\n")


def mutation(tokens: list[str], names: list[str]):
    index = st.integers(0, max(len(tokens) - 1, 0))
    return st.one_of(
        index.map(lambda i: tokens[:i] + tokens[i + 1 :]),  # delete
        index.map(lambda i: tokens[: i + 1] + tokens[i:]),  # duplicate
        st.tuples(index, index).map(lambda ij: swapped(tokens, *ij)),  # swap
        st.tuples(index, st.sampled_from(NUMBERS)).map(lambda p: renumbered(tokens, *p)),
        st.tuples(index, st.sampled_from(names), st.booleans()).map(lambda p: renamed(tokens, *p)),
        st.tuples(index, st.sampled_from(KEYWORDS + PUNCTUATION + NUMBERS + names)).map(
            lambda p: tokens[: p[0]] + [p[1]] + tokens[p[0] :]  # insert
        ),
        line_mutation(tokens),
    )


def swapped(tokens: list[str], i: int, j: int) -> list[str]:
    tokens = list(tokens)
    tokens[i], tokens[j] = tokens[j], tokens[i]
    return tokens


def renumbered(tokens: list[str], i: int, number: str) -> list[str]:
    positions = [n for n, t in enumerate(tokens) if t[:1].isdigit()]
    if not positions:
        return tokens
    target = positions[i % len(positions)]
    return tokens[:target] + [number] + tokens[target + 1 :]


def renamed(tokens: list[str], i: int, name: str, everywhere: bool) -> list[str]:
    positions = [n for n, t in enumerate(tokens) if t[:1].isalpha() or t[:1] == "_"]
    if not positions:
        return tokens
    old = tokens[positions[i % len(positions)]]
    if everywhere:
        return [name if t == old else t for t in tokens]
    target = positions[i % len(positions)]
    return tokens[:target] + [name] + tokens[target + 1 :]


def line_mutation(tokens: list[str]):
    lines = " ".join(tokens).split("\n")
    index = st.integers(0, len(lines) - 1)

    def rejoin(new_lines: list[str]) -> list[str]:
        return TOKEN.findall("\n".join(new_lines))

    return st.one_of(
        index.map(lambda i: rejoin(lines[:i] + lines[i + 1 :])),
        index.map(lambda i: rejoin(lines[: i + 1] + lines[i:])),
        st.tuples(index, index).map(lambda ij: rejoin(swapped(lines, *ij))),
    )


# ---- properties ----------------------------------------------------------------------------------
@FUZZ
@given(text=st.text(max_size=300))
def test_arbitrary_text(space_file, text):
    compile_text(space_file, text)


@FUZZ
@given(
    tokens=st.lists(
        st.sampled_from(KEYWORDS + PUNCTUATION + NUMBERS + PLAIN_NAMES + ["\n", '"x.space"']),
        max_size=80,
    )
)
def test_token_soup(space_file, tokens):
    compile_text(space_file, " ".join(tokens))


@FUZZ
@given(text=mutated_space(PLAIN_NAMES + HOSTILE_NAMES))
def test_mutated_spaces_compile_or_fail_cleanly(space_file, text):
    compile_text(space_file, text)


@FUZZ
@given(text=mutated_space(PLAIN_NAMES))
def test_mutated_spaces_that_compile_are_valid_python(space_file, text):
    source = compile_text(space_file, text)
    if source is not None:
        compile(source, "generated.py", "exec")


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_unmutated_seeds_compile(name, space_file):
    assert compile_text(space_file, SEEDS[name]) is not None
