"""The checker checks a call of literal arguments once per space (`check._call_key`): a repeat takes
the first one's step. These cases are where such a memo could go wrong: the same text meaning
something else (other parameter values, a parameter instead of a number, 3.0 instead of 3), and
a repeated mistake, which must still be reported wherever it is written.
"""

from __future__ import annotations

import pytest

from spacec import ast, catalog, check, parse, spec
from spacec.errors import SpaceError, Span

SETS = """\
param k = 3
ops first {
    a = sep_conv(kernel=k)
    b = sep_conv(kernel=3)
    c = sep_conv(kernel=k) >> max_pool(kernel=3)
}
ops second {
    a = sep_conv(kernel=k)
    b = sep_conv(kernel=3)
}
"""


def checked(text: str, **overrides: int) -> spec.Space:
    return check.check(parse.parse(text, "t.space"), overrides, library=True)


def kernels(space: spec.Space, opset: str) -> list[tuple[int, str]]:
    """(value, Python rendering) of each candidate's first kernel."""
    steps = [c.steps[0] for c in next(o for o in space.opsets if o.name == opset).candidates]
    return [(q.value, q.py) for q in (s.kwargs()["kernel"] for s in steps)]


def test_a_parameter_and_an_equal_number_keep_their_own_rendering():
    space = checked(SETS)
    assert kernels(space, "first") == [(3, "k"), (3, "3"), (3, "k")]
    assert kernels(space, "second") == [(3, "k"), (3, "3")]


def test_other_parameter_values_give_other_steps():
    assert kernels(checked(SETS, k=5), "second") == [(5, "k"), (3, "3")]
    assert kernels(checked(SETS, k=7), "second") == [(7, "k"), (3, "3")]
    assert kernels(checked(SETS), "second") == [(3, "k"), (3, "3")]


def test_a_float_equal_to_a_checked_integer_is_still_rejected():
    text = "ops o {\n    a = sep_conv(kernel=3)\n    b = sep_conv(kernel=3.0)\n}\n"
    with pytest.raises(SpaceError) as caught:
        checked(text)
    [error] = caught.value.diagnostics
    assert error.message == "expected an integer, got 3.0"
    assert (error.span.line, error.span.column) == (3, 25)


def test_a_repeated_mistake_is_reported_at_each_place():
    text = (
        "ops o {\n    a = sep_conv(kernel=3)\n    b = sep_conv(kernel=2)\n}\n"
        "ops p {\n    b = sep_conv(kernel=2)\n    c = dil_conv(kernel=3)\n}\n"
    )
    with pytest.raises(SpaceError) as caught:
        checked(text)
    found = [(d.span.line, d.message) for d in caught.value.diagnostics]
    assert found == [
        (3, "sep_conv(): 'kernel' must be odd, got 2"),
        (6, "sep_conv(): 'kernel' must be odd, got 2"),
        (7, "dil_conv() is missing argument 'dilation'"),
    ]


def test_a_call_checked_against_one_table_is_checked_again_against_another():
    """`sep_conv(kernel=3)` is a valid primitive, not a stem: the key names the table."""
    text = (
        "ops o {\n    none = zero\n    conv = sep_conv(kernel=3)\n}\n"
        "cell c {\n    inputs a, b\n    nodes 2\n    edges dense : o\n"
        "    output concat(*)\n    derive topk(k=2, exclude=[none])\n}\n"
        "network image_classifier {\n    channels 8\n    stem sep_conv(kernel=3)\n"
        "    body c * 2\n    head classifier(classes=10)\n}\n"
    )
    with pytest.raises(SpaceError) as caught:
        check.check(parse.parse(text, "t.space"), {})
    [error] = caught.value.diagnostics
    assert error.message == "unknown stem block 'sep_conv'"
    assert (error.span.line, error.span.column) == (14, 10)


def test_a_call_whose_default_is_a_list_of_names_is_not_shared(monkeypatch):
    """The checker writes a default at the call's position, and a list of names keeps its
    positions in the step: two such calls must not share one step."""
    rule = catalog.DERIVE_RULES["argmax"]
    with_names = catalog.Signature(rule.args, defaults={"exclude": ("none",)}, doc=rule.doc)
    monkeypatch.setitem(catalog.DERIVE_RULES, "argmax", with_names)
    at = Span("t.space", 1, 1)
    argmax = ast.Call(ast.Name("argmax", at), (), at)
    assert check._call_key(argmax, catalog.DERIVE_RULES) is None
    topk = ast.Call(ast.Name("topk", at), (ast.Arg(ast.Name("k", at), ast.Num(2, at)),), at)
    assert check._call_key(topk, catalog.DERIVE_RULES) is not None
