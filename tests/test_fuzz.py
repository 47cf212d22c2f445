"""Fuzzing the compiler: any text gives a compiled space or a SpaceError, never another exception.

Inputs are arbitrary text and bytes, soups of the language's own tokens, and valid spaces mutated
token by token or line by line (delete, duplicate, swap, change a number, rename an identifier).
Each runs the whole load pipeline (parse, check incl. imports, IR build and lint, code
generation) from a file; a sample of the mutants that compile also builds its supernet at tiny
sizes and runs one forward pass. The parser's own lexer is checked against Lark's contextual
lexer on the same inputs, and its ASTs and syntax errors against Lark's own LALR parser.
`benchmarks/fuzz.py` runs the same kinds of input 10^5 times.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spacec
from spacec import ast, parse
from spacec.errors import SpaceError

FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TOKEN = re.compile(r'[A-Za-z_]\w*|\d+(?:\.\d*)?|//|>>|->|<=|"[^"\n]*"|#[^\n]*|\n|\S')
SEEDS = {name: path.read_text(encoding="utf-8") for name, path in spacec.shipped_spaces().items()}
# A space naming its search method (no shipped space does): mutations reach the statement.
SEEDS["nas_bench_201_pc_darts"] = "method pc_darts(k=2, warmup_epochs=0)\n" + SEEDS["nas_bench_201"]
KEYWORDS = ["space", "method", "import", "from", "param", "ops", "cell", "extends", "inputs",
            "nodes", "edges", "dense", "edge", "fixed", "combine", "output", "derive", "limit",
            "stride", "share", "per", "node", "search_norm", "network", "body", "with", "at",
            ]  # fmt: skip
PUNCTUATION = ["{", "}", "(", ")", "[", "]", ",", "=", ":", "*", "+", "-", "//", ">>", "->", "<="]
# Names a mutation may rename an identifier to: ones the spaces use, and ones Python or the
# generated code reserve (the compiler must rename or reject those).
PLAIN_NAMES = ["a", "x", "n0", "n9", "s0", "h_prev", "normal", "reduce", "C", "layers", "N",
               "none", "o", "darts_ops", "sum", "concat", "mean", "topk", "argmax", "zero",
               "identity", "sep_conv", "res_block", "classifier", "inputs", "edges",
               "gdas", "pc_darts", "k", "true"]  # fmt: skip
HOSTILE_NAMES = ["class", "None", "self", "torch", "weights", "RULES", "Network", "__import__"]
NUMBERS = ["0", "1", "2", "3", "4", "7", "12", "-1", "2.5", "1e3"]  # small: dense cells stay small


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzz.space"


def compile_text(path: Path, text: str | bytes) -> str | None:
    """The generated source, or None when the compiler rejects the text with a SpaceError."""
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
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
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(space_file, data):
    compile_text(space_file, data)


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


# ---- the supernet of what compiles --------------------------------------------------------------
# Parameters of the shipped spaces, at sizes that build in milliseconds.
TINY = {"C": 2, "layers": 2, "N": 1, "ntoken": 12, "ninp": 4, "nhid": 4, "classes": 3}


def build_supernet(path: Path) -> None:
    """Compile at tiny sizes, build the supernet, run one forward pass (and nothing raises but a
    SpaceError from the compiler)."""
    import torch

    params = spacec.load(str(path)).params
    try:
        compiled = spacec.load(str(path), **{k: v for k, v in TINY.items() if k in params})
    except SpaceError:
        return  # e.g. a mutant whose body needs more layers than the tiny size
    torch.manual_seed(0)
    network = compiled.supernet().eval()
    with torch.no_grad():
        if compiled.spec.domain == "image":
            channels = compiled.input_shape[0]
            logits = network(torch.randn(2, channels, 64, 64))
            assert torch.isfinite(logits).all()
        else:
            tokens = torch.randint(0, network.ntoken, (3, 2))
            log_prob, _ = network(tokens, network.init_hidden(2))
            assert torch.isfinite(log_prob).all()


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(text=mutated_space(PLAIN_NAMES))
def test_mutated_spaces_that_compile_build_a_supernet(space_file, text, single_thread):
    if compile_text(space_file, text) is not None:
        build_supernet(space_file)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_seed_builds_a_tiny_supernet(name, space_file, single_thread):
    space_file.write_text(SEEDS[name], encoding="utf-8")
    build_supernet(space_file)


# ---- the parser reads what Lark's own lexer and tree builder read ------------------------------
@pytest.fixture(scope="module")
def lark_reference():
    """The same grammar with Lark's contextual lexer, parse tree and position propagation: the
    reference for spacec's faster lexer and inline AST builder."""
    from lark import Lark

    return Lark(parse.grammar_text(), parser="lalr", lexer="contextual", strict=True,
                propagate_positions=True, maybe_placeholders=True)  # fmt: skip


VALUE_TERMINALS = {"NAME", "INT", "FLOAT", "STRING"}


def reference_reading(parser, text: str):
    """Where the reference fails, or its value tokens (position, text) in source order."""
    from lark import Token
    from lark.exceptions import UnexpectedInput

    try:
        tree = parser.parse(text)
    except UnexpectedInput as error:
        return ("error", error.line, error.column)
    tokens = tree.scan_values(lambda t: isinstance(t, Token) and t.type in VALUE_TERMINALS)
    return ("ok", sorted((t.line, t.column, str(t)) for t in tokens))


def spacec_reading(text: str):
    """Where spacec's parser fails, or the names and paths its AST holds (position, text)."""
    try:
        tree = parse.parse(text, "t.space")
    except SpaceError as error:
        (diagnostic,) = error.diagnostics
        if diagnostic.message.startswith((
                "nested too deeply", "expression too long", "an integer of")):
            return None  # limits the reference does not have
        return ("error", diagnostic.span.line, diagnostic.span.column)
    found = []

    def walk(node) -> None:
        if isinstance(node, ast.Name):
            quoted = any(
                isinstance(i, ast.Import) and i.is_path and i.source is node for i in tree.items
            )
            found.append(
                (node.span.line, node.span.column, f'"{node.text}"' if quoted else node.text)
            )
        elif isinstance(node, ast.Ref):
            found.append((node.span.line, node.span.column, node.name))
        elif isinstance(node, tuple | list):
            for item in node:
                walk(item)
        elif dataclasses.is_dataclass(node):
            for field in dataclasses.fields(node):
                if field.name != "span":
                    walk(getattr(node, field.name))

    walk(tree.items)
    return ("ok", sorted(set(found), key=lambda f: (f[0], f[1])))


@FUZZ
@given(
    text=st.one_of(
        mutated_space(PLAIN_NAMES + HOSTILE_NAMES),
        st.lists(st.sampled_from(KEYWORDS + PUNCTUATION + NUMBERS + PLAIN_NAMES + ["\n", "x.5"]),
                 max_size=60).map(" ".join),
        st.text(alphabet='ab01._-=>/(){}[]#" \n\t', max_size=80),
    )
)  # fmt: skip
def test_the_parser_reads_what_larks_reference_reads(lark_reference, text):
    ours = spacec_reading(text)
    if ours is None:
        return
    reference = reference_reading(lark_reference, text)
    if reference[0] == "ok":  # names and paths (numbers become values, not always nodes)
        reference = ("ok", [t for t in reference[1] if not t[2][:1].isdigit()])
    assert ours == reference


# ---- the parser builds what Lark's own parser builds -------------------------------------------
@FUZZ
@given(
    text=st.one_of(
        mutated_space(PLAIN_NAMES + HOSTILE_NAMES),
        st.lists(st.sampled_from(KEYWORDS + PUNCTUATION + NUMBERS + PLAIN_NAMES + ["\n", "x.5",
                                 "2e3", "->>", '"x.space"', "(", ")"]),
                 max_size=60).map(" ".join),
        st.text(alphabet='ab01._-=>/(){}[]#" \n\t', max_size=80),
        st.text(max_size=120),
    )
)  # fmt: skip
def test_the_parser_builds_what_larks_parser_builds(agrees_with_lark, text):
    agrees_with_lark(text)
