"""spacec's parser against Lark's own LALR(1) parser of the same grammar (the `agrees_with_lark`
fixture): the same AST, field for field with every span, or the same syntax error, on the shipped
spaces, the README's and the walkthrough's spaces, large generated spaces and inputs where a
lexer that ignores the parser's state would read differently. tests/test_fuzz.py does the same
on generated and mutated input."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import pickle
import re
from pathlib import Path

import pytest

import spacec
from spacec import ast, parse
from spacec.errors import Span

ROOT = Path(__file__).parents[1]


def _check_large():
    """benchmarks/check_large.py, whose generated spaces the benchmark times."""
    spec = importlib.util.spec_from_file_location("check_large", ROOT / "benchmarks" / "check_large.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(spacec.shipped_spaces()))
def test_shipped_spaces(name, agrees_with_lark):
    path = spacec.shipped_spaces()[name]
    agrees_with_lark(path.read_text(encoding="utf-8"), str(path))


def test_the_walkthrough_space(walkthrough_space, agrees_with_lark):
    agrees_with_lark(walkthrough_space)


def test_the_readmes_code_blocks(agrees_with_lark):
    """Every unlabelled block of the README (spaces, and text that is not a space: the same
    errors then)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    fences = re.findall(r"^```(\w*)\n(.*?)^```$", readme, flags=re.S | re.M)
    blocks = [block for language, block in fences if not language]
    assert any(block.startswith("space ") for block in blocks)
    for block in blocks:
        agrees_with_lark(block)


@pytest.mark.parametrize("kind", ["valid", "errors"])
def test_large_generated_spaces(kind, agrees_with_lark):
    """The benchmark's spaces, at 150 kB: every statement kind, long `extends` chains, wide
    cells, large operation sets."""
    large = _check_large()
    text = (large.valid_space if kind == "valid" else large.error_space)(150_000)
    agrees_with_lark(text, f"{kind}.space")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t# only a comment\n",
        "param x = 1",
        "param x = 1\n",
        "param x = 1  # no newline at the end",
        "cell c { nodes 2.5 }",  # the integer 2, then a stray '.'
        "cell c { nodes 2e3 }",  # no number here: the integer 2, then the name e3
        "cell c { limit conv <= 2.5 }",
        "param x = 2e3\nparam y = 2.\nparam z = .5",
        "param x = a->b",  # '-' where '->' is not accepted
        "param x = a ->> b",
        "cell c { edge a -> n0 : s\n edge a-> n1 : s }",
        "param x = 7 / 2",
        "param x = 1 <= 2",
        'import a from "lib.space"\nimport b from "unterminated\n',
        "param node = 1\nparam per = node\ncell c { share res(per=node) per node }",
        "param inputs = 1\ncell c { inputs inputs\n stride 2 from inputs }",
        "network n { body c * 2 with r at [1, 2,], x }",
        "network n { body c * 2 with r at [1, 2] }",
        "space s\nspace",
        "cell c { fixed (a, b) -> n0 : conv(k=3) >> relu }",
        "ops o { a = f(x=[], y=[[1, 2], [3]], z=-(1 + 2) * 3 // 4) }",
        "param x = ((((1))))\nparam y = -(-(-1))",
        "param x = 1\x00",
        "param x\t= 1\r\nparam y = 2",
        "param é = 1",
        "method pc_darts(k=2",
        "cell c {",
        "cell c { output concat(*) }\ncell d { output concat(n0, n1) }",
        "param x = " + "9" * 31,
        "param x = " + "(" * 120 + "1" + ")" * 120,
        "param x = " + " + ".join(["1"] * 120),
        "param x = " + "-" * 120 + "1",
        "param x = " + "f(a=" * 60 + "1" + ")" * 60 + "\n@",
    ],
)
def test_where_reading_depends_on_the_parsers_state(text, agrees_with_lark):
    agrees_with_lark(text)


@pytest.mark.parametrize(
    "cls", [cls for cls in vars(ast).values() if dataclasses.is_dataclass(cls)] + [Span]
)
def test_a_maker_makes_what_init_makes(cls):
    """`parse._maker` fills a new object's fields without `__init__`: the object is the one
    `__init__` makes (equal, same hash, repr and fields, frozen, pickles)."""
    values = [f"v{i}" for i, _ in enumerate(dataclasses.fields(cls))]
    made, init = parse._maker(cls)(*values), cls(*values)
    assert type(made) is cls and made == init and hash(made) == hash(init)
    assert repr(made) == repr(init) and dataclasses.astuple(made) == tuple(values)
    assert pickle.loads(pickle.dumps(made)) == init and copy.deepcopy(made) == init
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, dataclasses.fields(cls)[0].name, "other")


def test_the_parsers_spans_are_spans():
    """The builder makes spans and names without their dataclass `__init__`: they are the same
    objects as the ones `__init__` makes."""
    tree = parse.parse("param x = 12  # c\nparam yy = (x +\n 1)\n", "p.space")
    first, second = tree.items
    made = first.value.span
    assert type(made) is Span and made == Span("p.space", 1, 11, 2)
    assert hash(made) == hash(Span("p.space", 1, 11, 2))
    assert repr(made) == repr(Span("p.space", 1, 11, 2)) and str(made) == "p.space:1:11"
    assert sorted([Span("p.space", 1, 12), made]) == [made, Span("p.space", 1, 12)]
    assert dataclasses.replace(made, length=3) == Span("p.space", 1, 11, 3)
    assert pickle.loads(pickle.dumps(made)) == made and copy.deepcopy(made) == made
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.line = 2
    name = second.name
    assert type(name) is ast.Name and name == ast.Name("yy", Span("p.space", 2, 7, 2))
    assert dataclasses.asdict(name) == {"text": "yy", "span": dataclasses.asdict(name.span)}
    assert second.value.span == Span("p.space", 2, 13, 1)  # `x +\n 1`: two lines, length 1
    assert second.span == Span("p.space", 2, 1, 1)  # its parentheses are the parameter's
