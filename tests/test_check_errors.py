"""Malformed spaces: every error is a SpaceError at the right line and column, rendered with a caret.

The table edits one line of a small valid space (BASE) or appends to it, so each case's expected
position reads off BASE's line numbers. Every case runs the whole pipeline (parse, check, IR lint)
through `spacec.load` on a temporary file.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import pytest
from click.testing import CliRunner

import spacec
from spacec.cli import main
from spacec.errors import SpaceError
from spacec.load import parse_overrides, shipped_spaces

BASE = """\
space tiny
param C = 8
ops o {
    none = zero
    skip = identity
    conv = sep_conv(kernel=3)
}
cell normal {
    inputs a, b
    nodes 2
    edges dense : o
    output concat(*)
    derive topk(k=2, exclude=[none])
}
network image_classifier {
    channels C
    stem conv_bn(kernel=3, channels=C)
    body normal * 2
    head classifier(classes=10)
}
"""
APPENDED_LINE = BASE.count("\n") + 1  # the first line of text appended to BASE


def edit(old: str, new: str) -> str:
    assert BASE.count(old) == 1, f"{old!r} must occur once in BASE"
    return BASE.replace(old, new)


def append(text: str) -> str:
    return BASE + text + "\n"


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    message: str
    line: int
    column: int
    files: dict[str, str] = field(default_factory=dict)  # more files next to t.space
    where: str = "t.space"  # the file the error is in


CONV = "    conv = sep_conv(kernel=3)"
EDGES = "    edges dense : o"
OUTPUT = "    output concat(*)"
DERIVE = "    derive topk(k=2, exclude=[none])"
BODY = "    body normal * 2"
OPSET = BASE[BASE.index("ops o {") : BASE.index("}\n") + 2]


def importing(source: str) -> str:
    """BASE with its op set `o` imported from `source` (line 1) instead of defined."""
    return f"import o from {source}\n" + BASE.replace(OPSET, "")


# fmt: off
CASES = [
    # ---- syntax ----
    Case("syntax-missing-equals", edit(CONV, "    conv sep_conv(kernel=3)"),
         "unexpected 'sep_conv'; expected '='", 6, 10),
    Case("syntax-missing-comma", edit("kernel=3, channels=C", "kernel=3 channels=C"),
         "unexpected 'channels'; expected ')' or ','", 17, 27),
    Case("syntax-slash", edit("param C = 8", "param C = 8 / 2"), "unexpected character '/'", 2, 13),
    Case("syntax-end-of-file", BASE.rstrip("}\n") + "\n", "unexpected end of file; expected", 19, 31),
    # ---- calls against the catalogue ----
    Case("unknown-primitive", edit(CONV, "    conv = sep_con(kernel=3)"),
         "unknown primitive 'sep_con'", 6, 12),
    Case("wrong-argument", edit(CONV, "    conv = sep_conv(size=3)"),
         "sep_conv() takes no argument 'size'", 6, 21),
    Case("missing-argument", edit(CONV, "    conv = dil_conv(kernel=3)"),
         "dil_conv() is missing argument 'dilation'", 6, 12),
    Case("argument-twice", edit(CONV, "    conv = sep_conv(kernel=3, kernel=5)"),
         "argument 'kernel' given twice", 6, 31),
    Case("argument-not-positive", edit(CONV, "    conv = sep_conv(kernel=0)"),
         "'kernel' must be positive, got 0", 6, 28),
    Case("argument-not-integer", edit(CONV, "    conv = sep_conv(kernel=2.5)"),
         "expected an integer, got 2.5", 6, 28),
    Case("argument-bad-choice", edit(CONV, "    conv = activation(fn=softplus)"),
         "activation(): 'fn' cannot be softplus", 6, 26),
    Case("zero-composed", edit(CONV, "    conv = zero >> sep_conv(kernel=3)"),
         "'zero' cannot be composed", 6, 5),
    # ---- names: parameters, op sets, ops, cells, nodes ----
    Case("unknown-parameter", edit("    channels C", "    channels D"),
         "unknown parameter 'D'", 16, 14),
    Case("parameter-used-before-its-declaration", edit("param C = 8", "param C = D\nparam D = 8"),
         "parameter 'D' is used before it is declared (at line 3)", 2, 11),
    Case("parameter-defined-in-terms-of-itself", edit("param C = 8", "param C = C + 1"),
         "parameter 'C' is defined in terms of itself", 2, 11),
    Case("duplicate-parameter", edit("param C = 8", "param C = 8  param C = 4"),
         "duplicate parameter 'C'", 2, 20),
    Case("duplicate-op-set", append("ops o { x = zero }"),
         "duplicate operation set 'o'", APPENDED_LINE, 5),
    Case("empty-op-set", append("ops e { }"), "operation set 'e' is empty", APPENDED_LINE, 5),
    Case("duplicate-op-in-set", edit("    skip = identity", "    none = identity"),
         "duplicate operation 'none' in set 'o'", 5, 5),
    Case("unknown-op-set", edit(EDGES, "    edges dense : oo"),
         "unknown operation set 'oo'", 11, 19),
    Case("duplicate-cell",
         append("cell normal { inputs a nodes 1 edges dense : o output n0 derive argmax }"),
         "duplicate cell 'normal'", APPENDED_LINE, 6),
    Case("duplicate-node", edit("    inputs a, b", "    inputs a, a"),
         "duplicate node 'a' in cell 'normal'", 9, 15),
    Case("input-named-like-a-generated-node", edit("    inputs a, b", "    inputs n0, b"),
         "input 'n0' clashes with the generated node name", 9, 5),
    Case("unknown-node", edit(EDGES, EDGES + "  edge zz -> n1 : o"),
         "unknown node 'zz' in cell 'normal'", 11, 27),
    Case("unknown-cell-in-body", edit(BODY, "    body normall * 2"), "unknown cell 'normall'", 18, 10),
    Case("neither-cell-nor-block", edit(BODY, BODY + ", conv_block"),
         "'conv_block' is neither a cell nor a block", 18, 22),
    Case("extends-unknown-cell", append("cell r extends nrm { stride 2 from inputs }"),
         "unknown cell 'nrm'", APPENDED_LINE, 16),
    Case("extends-itself", append("cell r extends r { stride 2 from inputs }"),
         "cell 'r' extends itself", APPENDED_LINE, 16),
    Case("space-named-twice", edit("space tiny", "space tiny space other"),
         "a file declares its space name once", 1, 12),
    # ---- the cell graph ----
    Case("edge-from-later-node", edit(EDGES, EDGES + "  edge n1 -> n0 : o"),
         "edge n1 -> n0 goes from a later node to an earlier one", 11, 27),
    Case("edge-to-itself", edit(EDGES, EDGES + "  edge n0 -> n0 : o"),
         "edge n0 -> n0 loops from a node to itself", 11, 27),
    Case("edge-into-input", edit(EDGES, EDGES + "  edge n0 -> a : o"),
         "edge into input node 'a'", 11, 33),
    Case("duplicate-edge", edit(EDGES, EDGES + "  edge a -> n0 : o"), "duplicate edge a -> n0", 11, 27),
    Case("mixed-op-sets",
         edit(EDGES, "    edge a, b -> n0 : o  edge a, b, n0 -> n1 : p") + "ops p { z = zero }\n",
         "cell 'normal' mixes operation sets o, p", 11, 48),
    Case("no-intermediate-node", edit("    nodes 2", "    nodes 0"),
         "a cell needs at least one intermediate node", 10, 5),
    Case("missing-statement", edit(DERIVE, ""), "cell 'normal' has no 'derive' statement", 8, 6),
    Case("statement-twice", edit(OUTPUT, OUTPUT + "  output n1"),
         "cell 'normal' has more than one 'output' statement", 12, 23),
    Case("output-over-undefined-node", edit(OUTPUT, "    output concat(n0, n7)"),
         "the output reduces over 'n7', which is not an intermediate node", 12, 23),
    Case("output-names-node-twice", edit(OUTPUT, "    output concat(n0, n0)"),
         "the output names a node twice", 12, 5),
    Case("unknown-reduction", edit(OUTPUT, "    output stack(*)"), "unknown reduction 'stack'", 12, 12),
    Case("stride-from-non-input", edit(OUTPUT, OUTPUT + "  stride 2 from n0"),
         "stride on edges leaving 'n0', which is not an input", 12, 37),
    Case("stride-not-1-or-2", edit(OUTPUT, OUTPUT + "  stride 3 from inputs"),
         "stride must be 1 or 2, got 3", 12, 23),
    # ---- derivation ----
    Case("topk-larger-than-candidates", edit(DERIVE, "    derive topk(k=3, exclude=[none])"),
         "topk(k=3) but node 'n0' has only 2 candidate edges", 13, 12),
    Case("exclude-not-in-set", edit(DERIVE, "    derive topk(k=2, exclude=[nothing])"),
         "derivation excludes 'nothing', which is not in operation set 'o'", 13, 31),
    Case("exclude-everything", edit(DERIVE, "    derive topk(k=2, exclude=[none, skip, conv])"),
         "the derivation excludes every operation of the set", 13, 5),
    Case("limit-not-in-set", edit(DERIVE, DERIVE + "  limit sep <= 2"),
         "limit on 'sep', which is not in operation set 'o'", 13, 45),
    Case("unknown-derivation-rule", edit(DERIVE, "    derive best"),
         "unknown derivation rule 'best'", 13, 12),
    # ---- the network ----
    Case("unknown-network-setting", edit("    channels C", "    channels C  dropout 3"),
         "unknown setting 'dropout'", 16, 17),
    Case("setting-twice", edit("    channels C", "    channels C  channels 4"),
         "setting 'channels' given twice", 16, 17),
    Case("unknown-network-kind", edit("network image_classifier", "network image_classifer"),
         "unknown network kind 'image_classifer'", 15, 9),
    Case("missing-setting", edit("    head classifier(classes=10)", ""),
         "the image_classifier has no 'head' setting", 15, 9),
    Case("no-network", BASE.split("network")[0], "the space declares no network", 1, 1),
    Case("division-by-zero", edit("param C = 8", "param C = 8 // 0"), "division by zero", 2, 11),
    Case("division-by-zero-in-body", edit(BODY, "    body normal * (2 // (C - C))"),
         "division by zero", 18, 20),
    Case("position-out-of-range", edit(BODY, BODY + " with normal at [2]"),
         "position 2 is outside 0 .. 1", 18, 37),
    Case("negative-position", edit(BODY, BODY + " with normal at [-1]"),
         "position -1 is outside 0 .. 1", 18, 37),
    Case("position-twice", edit(BODY, BODY + " with normal at [1, 1]"),
         "the same position is listed twice", 18, 36),
    Case("unknown-replacement-cell", edit(BODY, BODY + " with reduce at [1]"),
         "unknown cell 'reduce'", 18, 26),
    Case("cell-run-count-zero", edit(BODY, "    body normal * 0"),
         "a cell run needs a positive count, got 0", 18, 19),
    Case("block-stride-3", edit(BODY, BODY + ", res_block(stride=3)"),
         "a block's stride must be 1 or 2, got 3", 18, 22),
    # IR lint: the layout cannot feed a 24-channel stem into identity-preprocessed 8-wide cells.
    Case("preprocess-identity-width",
         edit("channels=C)", "channels=3 * C)  preprocess identity"),
         "`preprocess identity` needs inputs of 8 channels", 15, 1),
    # ---- the search method (`method NAME(...)`, checked against spacec.arch.methods) ----
    Case("method-unknown", append("method pc_dart(k=2)"),
         "unknown search method 'pc_dart'", APPENDED_LINE, 8),
    Case("method-unknown-parameter", append("method pc_darts(warmup_epochs=0, kk=2)"),
         "method 'pc_darts' takes no parameter 'kk'", APPENDED_LINE, 34),
    Case("method-parameter-not-integer", append("method pc_darts(k=2.5)"),
         "method 'pc_darts': 'k' takes an integer, got 2.5", APPENDED_LINE, 19),
    Case("method-parameter-not-boolean", append("method pc_darts(edge_norm=1)"),
         "'edge_norm' takes true or false, got 1", APPENDED_LINE, 27),
    Case("method-parameter-expression", append("method pc_darts(k=C)"),
         "'k' takes an integer, got 'C'", APPENDED_LINE, 19),
    Case("method-parameter-out-of-range", append("method pc_darts(k=0)"),
         "method 'pc_darts': k must be > 0, got 0", APPENDED_LINE, 19),
    Case("method-parameter-bad-choice", append("method gdas(derive=offical)"),
         "derive must be one of space, official, got 'offical'", APPENDED_LINE, 20),
    Case("method-parameter-twice", append("method gdas(tau_max=5, tau_max=4)"),
         "method 'gdas': parameter 'tau_max' given twice", APPENDED_LINE, 24),
    Case("method-twice", append("method gdas\nmethod snas"),
         "a space names its search method once", APPENDED_LINE + 1, 1),
    Case("method-in-imported-file", importing('"lib.space"'),
         "unknown search method 'gdass'", 1, 8,
         files={"lib.space": "method gdass\nops o { none = zero }\n"}, where="lib.space"),
    # ---- imports (files next to t.space) ----
    Case("import-missing-file", importing('"missing.space"'),
         "import: no such file 'missing.space'", 1, 15),
    Case("import-itself", importing('"t.space"'), "a space cannot import itself", 1, 15),
    Case("import-cycle", importing('"lib.space"'), "import cycle through 't.space'",
         1, 15, files={"lib.space": 'import o from "t.space"\n'}, where="lib.space"),
    Case("import-unknown-shipped-space", importing("dartz_cnn"),
         "import: no shipped space 'dartz_cnn'", 1, 15),
    Case("import-undefined-set", importing("darts_cnn"),
         "'darts_cnn' defines no operation set 'o'", 1, 8),
    Case("error-inside-imported-file", importing('"lib.space"'),
         "unknown primitive 'identiti'", 2, 12,
         files={"lib.space": "ops o { none = zero\n    skip = identiti }\n"}, where="lib.space"),
]
# A candidate from the wrong domain should be flagged at the primitive, like every other call.
DOMAIN_CASE = Case("primitive-of-another-domain", edit(CONV, "    conv = activation(fn=tanh)"),
                   "'activation' is a sequence primitive", 6, 12)
CASES += [
    Case("auxiliary-classes-differ",
         edit("    head classifier(classes=10)", "    head classifier(classes=10)\n"
              "    auxiliary auxiliary_cifar(after=1, classes=7)"),
         "the auxiliary head has 7 classes and the head 10", 20, 15),
    Case("body-without-a-cell", edit(BODY, "    body res_block(stride=2)"),
         "the body runs no cell: the network has nothing to search", 18, 5),
    Case("recurrent-statement-in-an-image-cell", edit(OUTPUT, OUTPUT + "\n    share highway per node"),
         "`share` is a statement of recurrent cells", 13, 5),
    Case("limits-leave-no-room", edit(DERIVE, DERIVE + "\n    limit conv <= 0\n    limit skip <= 1"),
         "the limits leave room for 1 chosen edge of this cell and its derivation topk(k=2) "
         "chooses 4 edges", 14, 5),
    Case("dead-node", edit(OUTPUT, "    output n0"),
         "node n1 reaches no output: it would be computed for nothing", 10, 5),
    Case("method-option-against-the-sizes", "method pc_darts(k=3)\n" + BASE,
         "pc_darts: k=3 must divide the edge's 8 channels", 19, 10),
]
# The joint initial-state edge reads the cell's inputs as declared (x_t, h_t-1).
JOINT_CASE = Case(
    "joint-edge-sources",
    spacec.shipped_spaces()["darts_rnn"].read_text(encoding="utf-8").replace(
        "fixed    (x, h_prev) -> s0", "fixed    (h_prev, x) -> s0"),
    "a joint fixed edge reads the cell's inputs (x, h_prev) in their declared order; got "
    "(h_prev, x)", 25, 5)
# A method that does not apply to the space's domain (PC-DARTS splits image channels).
METHOD_DOMAIN_CASE = Case(
    "method-of-another-domain",
    "method pc_darts(k=2)\n" + spacec.shipped_spaces()["darts_rnn"].read_text(encoding="utf-8"),
    "method 'pc_darts' does not apply to sequence spaces", 1, 8)
# fmt: on

TABLE = [pytest.param(case, id=case.id) for case in CASES] + [
    pytest.param(
        DOMAIN_CASE,
        id=DOMAIN_CASE.id,
    ),
    pytest.param(METHOD_DOMAIN_CASE, id=METHOD_DOMAIN_CASE.id),
    pytest.param(JOINT_CASE, id=JOINT_CASE.id),
]


def load_case(case: Case, tmp_path):
    for name, text in case.files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    path = tmp_path / "t.space"
    path.write_text(case.text, encoding="utf-8")
    return spacec.load(str(path))


def test_table_is_large_enough():
    assert len(CASES) >= 25
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", TABLE)
def test_malformed_space_reports_position_and_snippet(case: Case, tmp_path):
    with pytest.raises(SpaceError) as caught:
        load_case(case, tmp_path)
    error = caught.value
    matching = [d for d in error.diagnostics if case.message in d.message]
    assert matching, f"no diagnostic says {case.message!r}:\n{error}"
    diagnostic = matching[0]
    assert diagnostic.span.path.endswith(case.where)
    assert (diagnostic.span.line, diagnostic.span.column) == (case.line, case.column), str(error)
    # Rendered compiler-style: `path:line:col: error: message`, the source line, a caret line.
    rendered = diagnostic.render(error.sources).splitlines()
    assert rendered[0] == f"{diagnostic.span}: error: {diagnostic.message}"
    source_line = (tmp_path / case.where).read_text().splitlines()[case.line - 1]
    assert rendered[1] == "    " + source_line
    caret = rendered[2]
    assert caret.startswith("    " + " " * (case.column - 1) + "^")
    assert set(caret.strip()) <= {"^", "~"}
    assert len(caret.strip()) == max(diagnostic.span.length, 1)
    assert "\n".join(rendered) in str(error)


def test_every_table_edit_changes_base():
    assert all(case.text != BASE for case in CASES)


def test_base_is_valid(tmp_path):
    (tmp_path / "t.space").write_text(BASE)
    compiled = spacec.load(str(tmp_path / "t.space"))
    assert [cell.name for cell in compiled.spec.cells] == ["normal"]


def test_hints_name_the_closest_choice(tmp_path):
    case = next(c for c in CASES if c.id == "unknown-primitive")
    with pytest.raises(SpaceError) as caught:
        load_case(case, tmp_path)
    assert "hint: did you mean 'sep_conv'? known primitives:" in str(caught.value)


def test_method_hints_name_the_closest_method_parameter_and_the_domains_methods(tmp_path):
    hints = {}
    for case_id in ("method-unknown", "method-unknown-parameter", "method-parameter-expression"):
        with pytest.raises(SpaceError) as caught:
            load_case(next(c for c in CASES if c.id == case_id), tmp_path)
        hints[case_id] = str(caught.value)
    assert "hint: did you mean 'pc_darts'? known methods: beta_darts, darts," in \
        hints["method-unknown"]
    assert "hint: did you mean 'k'? known parameters: edge_norm, k, warmup_epochs" in \
        hints["method-unknown-parameter"]
    assert "literal values: no expressions, no space parameters" in \
        hints["method-parameter-expression"]
    with pytest.raises(SpaceError) as caught:
        load_case(METHOD_DOMAIN_CASE, tmp_path)
    assert "(partial channel connections split image feature maps" in str(caught.value)
    hint = str(caught.value).split("hint: methods for sequence spaces: ")[1].splitlines()[0]
    assert "pc_darts" not in hint and "random" not in hint.split(", ")
    assert {"darts", "gdas", "snas"} <= set(hint.split(", "))


@pytest.mark.parametrize(
    ("statement", "name", "params", "shown"),
    [
        ("method gdas", "gdas", (), "gdas"),
        ("method pc_darts(k=2, warmup_epochs=0)", "pc_darts", (("k", 2), ("warmup_epochs", 0)),
         "pc_darts(k=2, warmup_epochs=0)"),
        # floats from integers, none where a parameter may be unset, names for choices
        ("method snas(tau_max=2, anneal_epochs=none, derive=official)", "snas",
         (("tau_max", 2.0), ("anneal_epochs", None), ("derive", "official")),
         "snas(tau_max=2.0, anneal_epochs=none, derive=official)"),
        ("method pc_darts(edge_norm=false)", "pc_darts", (("edge_norm", False),),
         "pc_darts(edge_norm=false)"),
        ("method darts_minus(beta=-0.0)", "darts_minus", (("beta", -0.0),),
         "darts_minus(beta=-0.0)"),
    ],
)
def test_the_checked_space_carries_its_method(statement, name, params, shown, tmp_path):
    (tmp_path / "t.space").write_text(statement + "\n" + BASE)
    method = spacec.load(str(tmp_path / "t.space")).spec.method
    assert (method.name, method.params, method.line) == (name, params, 1)
    assert [type(value) for _, value in method.params] == [type(value) for _, value in params]
    assert method.text() == shown


def test_no_statement_no_method_and_an_imported_files_method_stays_there(tmp_path):
    (tmp_path / "t.space").write_text(BASE)
    assert spacec.load(str(tmp_path / "t.space")).spec.method is None
    (tmp_path / "lib.space").write_text("method gdas(tau_max=5)\n" + OPSET)
    (tmp_path / "t.space").write_text(importing('"lib.space"'))
    assert spacec.load(str(tmp_path / "t.space")).spec.method is None  # imports take op sets


def test_an_error_in_an_imported_file_points_back_at_each_import_on_the_way(tmp_path):
    (tmp_path / "lib.space").write_text("ops o { none = zero\n    skip = identiti }\n")
    (tmp_path / "mid.space").write_text('space mid\nimport o from "lib.space"\n')
    (tmp_path / "t.space").write_text(importing('"mid.space"'))
    with pytest.raises(SpaceError) as caught:
        spacec.load(str(tmp_path / "t.space"))
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.span.path.endswith("lib.space")
    assert [(span.path.rsplit("/", 1)[-1], span.line, span.column)
            for span, _ in diagnostic.related] == [("mid.space", 2, 15), ("t.space", 1, 15)]
    rendered = str(caught.value).splitlines()
    at = rendered.index(f"note: imported from {diagnostic.related[0][0]}")
    assert rendered[at + 1 : at + 6] == [
        '    import o from "lib.space"',
        "                  ^~~~~~~~~~~",
        f"note: imported from {diagnostic.related[1][0]}",
        '    import o from "mid.space"',
        "                  ^~~~~~~~~~~",
    ]


def test_an_error_at_the_import_itself_has_no_imported_from_note(tmp_path):
    (tmp_path / "t.space").write_text(importing('"missing.space"'))
    with pytest.raises(SpaceError) as caught:
        spacec.load(str(tmp_path / "t.space"))
    assert "imported from" not in str(caught.value)


# ---- several errors at once --------------------------------------------------------------------
def test_all_errors_of_a_file_are_reported_sorted_by_position(tmp_path):
    text = BASE
    text = text.replace(DERIVE, "    derive topk(k=2, exclude=[nothing])")  # 13:31
    text = text.replace("    channels C", "    channels D")  # 16:14
    text = text.replace(CONV, "    conv = sep_conv(size=3)")  # 6:21
    text = text.replace("param C = 8", "param C = 8  param C = 9")  # 2:20
    (tmp_path / "t.space").write_text(text)
    with pytest.raises(SpaceError) as caught:
        spacec.load(str(tmp_path / "t.space"))
    positions = [(d.span.line, d.span.column) for d in caught.value.diagnostics]
    assert positions == [(2, 20), (6, 21), (13, 31), (16, 14)]
    rendered = str(caught.value)
    order = [rendered.index(f"t.space:{line}:{column}:") for line, column in positions]
    assert order == sorted(order)


# ---- parameter overrides ---------------------------------------------------------------------
def test_unknown_set_parameter_names_the_known_ones(tmp_path):
    (tmp_path / "t.space").write_text(BASE)
    with pytest.raises(SpaceError) as caught:
        spacec.load(str(tmp_path / "t.space"), D=3)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.message == "--set D: no such parameter"
    assert (diagnostic.span.line, diagnostic.span.column) == (0, 0)
    assert str(caught.value) == (
        "<command line>: error: --set D: no such parameter\nhint: known parameters: C"
    )


def test_set_float_for_an_integer_points_at_its_uses(tmp_path):
    (tmp_path / "t.space").write_text(BASE)
    with pytest.raises(SpaceError) as caught:
        spacec.load(str(tmp_path / "t.space"), C=2.5)
    assert [(d.span.line, d.span.column) for d in caught.value.diagnostics] == [(16, 14), (17, 37)]
    assert "parameter 'C' is 2.5, expected an integer" in str(caught.value)


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["C"], "--set C: expected NAME=NUMBER"),
        (["=3"], "--set =3: expected NAME=NUMBER"),
        (["C=abc"], "--set C=abc: 'abc' is not a number"),
        (["1C=3"], "expected NAME=NUMBER"),
    ],
)
def test_malformed_set_option(pairs, message):
    with pytest.raises(SpaceError) as caught:
        parse_overrides(pairs)
    assert str(caught.value).startswith("<command line>: error: --set ")
    assert message in str(caught.value)


def test_set_option_values():
    assert parse_overrides(["C=36", "lr = 0.5"]) == {"C": 36, "lr": 0.5}


# ---- no error cascades -----------------------------------------------------------------------
CASCADES = [
    pytest.param(edit(OUTPUT, "    output stack(*)"), id="invalid-cell-then-used-in-body"),
    pytest.param(edit("param C = 8", "param C = 8 // 0"), id="invalid-parameter-then-used"),
    pytest.param(edit(EDGES, "    edges dense : oo"), id="unknown-op-set-in-a-cell"),
    pytest.param(importing('"missing.space"'), id="failed-import-then-used"),
    pytest.param(importing("darts_cnn"), id="import-of-an-undefined-set-then-used"),
    pytest.param(edit(BODY, BODY + ", r") + "cell r extends nrm { stride 2 from inputs }\n",
                 id="failed-extends-then-cell-run-by-name"),
    pytest.param(edit(BODY, BODY + ", r, q")
                 + "cell r extends nrm { stride 2 from inputs }\ncell q extends r { nodes 1 }\n",
                 id="failed-extends-chain-then-cells-run-by-name"),
]


@pytest.mark.parametrize("text", CASCADES)
def test_one_mistake_gives_one_error(text, tmp_path):
    (tmp_path / "t.space").write_text(text)
    with pytest.raises(SpaceError) as caught:
        spacec.load(str(tmp_path / "t.space"))
    assert len(caught.value.diagnostics) == 1, str(caught.value)


def test_a_failed_import_still_lets_unrelated_errors_through(tmp_path):
    text = importing('"missing.space"').replace("    channels C", "    channels C  dropout 3")
    (tmp_path / "t.space").write_text(text)
    with pytest.raises(SpaceError) as caught:
        spacec.load(str(tmp_path / "t.space"))
    assert [d.message.split(" for ")[0] for d in caught.value.diagnostics] == [
        "import: no such file 'missing.space'",
        "unknown setting 'dropout'",
    ]


# ---- warnings ------------------------------------------------------------------------------------
SPARE = "cell spare extends normal { nodes 1 }"


def test_a_cell_the_network_never_runs_is_warned_about_where_it_is_declared(tmp_path):
    (tmp_path / "t.space").write_text(append(SPARE))
    (warning,) = spacec.load(str(tmp_path / "t.space")).spec.warnings
    assert (warning.span.line, warning.span.column, warning.severity) == (APPENDED_LINE, 6,
                                                                           "warning")
    result = CliRunner().invoke(main, ["check", str(tmp_path / "t.space")])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"{warning.span}: warning: cell 'spare' is never run by the network, yet it is searched "
        "(α and a part of the supernet of its own)",
        f"    {SPARE}",
        "         ^~~~~",
        "hint: run it in the network, or remove it",
    ]


def test_a_search_says_which_cell_it_searches_for_nothing(tmp_path):
    """The warning was printed by check/compile/info only, not by the search it is about."""
    (tmp_path / "t.space").write_text(append(SPARE))
    result = CliRunner().invoke(main, ["search", str(tmp_path / "t.space"), "--epochs", "1",
                                       "--limit", "8", "--batch-size", "4", "--threads", "1",
                                       "-q", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    row = (f"  warning  {tmp_path / 't.space'}:{APPENDED_LINE}:6: cell 'spare' is never run by "
           "the network, yet it is searched")
    assert row in result.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert f"# {row}" in (run / "config.yaml").read_text()  # the run's record says so too


def test_an_auxiliary_head_the_derived_network_cannot_run_is_warned_about(tmp_path):
    """A search does not build the auxiliary head, so check passed a head that `spacec train`
    refuses (4x4 maps into a 5x5 pooling at image_size 16)."""
    text = spacec.load("darts_cnn").text.replace("    in_channels   3\n",
                                                 "    in_channels   3\n    image_size    16\n")
    (tmp_path / "small.space").write_text(text)
    (warning,) = spacec.load(str(tmp_path / "small.space")).spec.warnings
    line = text.splitlines().index(next(x for x in text.splitlines() if "auxiliary     " in x))
    assert (warning.span.line, warning.span.column) == (line + 1, 5)
    assert warning.message.startswith("the auxiliary head auxiliary_cifar after body item 5 "
                                      "(reading 4x4) would reduce 4x4 to 0x0")
    assert "spacec train would refuse the derived network" in warning.message
    assert "optim.auxiliary_weight=0" in warning.hint
    result = CliRunner().invoke(main, ["check", str(tmp_path / "small.space")])
    assert result.exit_code == 0 and "warning: the auxiliary head" in result.stderr


@pytest.mark.parametrize("name", sorted(shipped_spaces()))
def test_the_shipped_spaces_compile_without_warnings(name):
    assert spacec.load(name).spec.warnings == ()


def test_cells_run_in_the_body_or_as_replacements_are_not_warned_about(tmp_path):
    (tmp_path / "t.space").write_text(append(SPARE).replace(BODY, BODY + " with spare at [1]"))
    assert spacec.load(str(tmp_path / "t.space")).spec.warnings == ()
    assert spacec.load("darts_rnn").spec.warnings == ()  # its cell runs as the `step` setting


# ---- the command line ------------------------------------------------------------------------
BAD = edit(CONV, "    conv = sep_con(kernel=3)")


def test_cli_check_of_a_bad_space_exits_2_without_traceback(tmp_path):
    (tmp_path / "bad.space").write_text(BAD)
    result = CliRunner().invoke(main, ["check", str(tmp_path / "bad.space")])
    assert result.exit_code == 2, result.output
    assert "bad.space:6:12: error: unknown primitive 'sep_con'" in result.stderr
    assert "^~~~~~~" in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_cli_unknown_set_parameter_exits_2():
    result = CliRunner().invoke(main, ["check", "darts_cnn", "--set", "widht=3"])
    assert result.exit_code == 2
    assert "--set widht: no such parameter" in result.stderr
    assert "Traceback" not in result.output


def test_cli_missing_file_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["compile", str(tmp_path / "nowhere.space")])
    assert result.exit_code == 2
    assert "no such file" in result.stderr


def test_real_process_check_of_a_bad_space(tmp_path):
    (tmp_path / "bad.space").write_text(BAD)
    done = subprocess.run(
        [sys.executable, "-m", "spacec", "check", "bad.space"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("bad.space:6:12: error: unknown primitive 'sep_con'\n")
    assert "Traceback" not in done.stderr


def test_a_byte_order_mark_and_classic_mac_line_ends_are_read_as_text(tmp_path):
    (tmp_path / "bom.space").write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    (tmp_path / "crlf_bom.space").write_bytes(b"\xef\xbb\xbf" + BASE.replace("\n", "\r\n").encode())
    for name in ("bom.space", "crlf_bom.space"):
        assert spacec.load(str(tmp_path / name)).name == "tiny"
    # A CR alone ends a line too: the error is on the line an editor shows.
    bad = edit("sep_conv(kernel=3)", "sep_con(kernel=3)").replace("\n", "\r")
    (tmp_path / "cr.space").write_bytes(bad.encode())
    result = CliRunner().invoke(main, ["check", str(tmp_path / "cr.space")])
    assert result.exit_code == 2
    assert "cr.space:6:12: error: unknown primitive 'sep_con'" in result.stderr


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no named pipes")
def test_a_path_that_is_not_a_regular_file_is_named_so(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.space")
    for path in (str(tmp_path / "pipe.space"), os.devnull):
        result = CliRunner().invoke(main, ["check", path])
        assert result.exit_code == 2
        assert f"{path}: error: is not a regular file" in result.stderr
    (tmp_path / "imports.space").write_text('import o from ""\n' + BASE)
    result = CliRunner().invoke(main, ["check", str(tmp_path / "imports.space")])
    assert result.exit_code == 2 and "import: an empty path names no file" in result.stderr


def test_compile_refuses_to_write_over_its_own_space(tmp_path):
    space = tmp_path / "own.space"
    space.write_text(BASE)
    for output in (space, tmp_path / "missing" / ".." / "own.space"):
        result = CliRunner().invoke(main, ["compile", str(space), "-o", str(output)])
        assert result.exit_code == 2
        assert "is the space's own file" in result.output
        assert space.read_text() == BASE


def test_the_digest_covers_the_imported_files(tmp_path):
    """A run compares the space's digest with the one it recorded: an imported file that
    changed must change it, as the file's own text does; where nothing is imported it is the
    file's own sha256."""
    import hashlib

    library = tmp_path / "lib.space"
    library.write_text(OPSET)
    (tmp_path / "t.space").write_text(importing('"lib.space"'))
    first = spacec.load(str(tmp_path / "t.space")).spec
    assert spacec.load(str(tmp_path / "t.space")).spec.digest == first.digest
    library.write_text(OPSET.replace("sep_conv(kernel=3)", "max_pool(kernel=3)"))
    changed = spacec.load(str(tmp_path / "t.space")).spec
    assert changed.digest != first.digest
    # The generated code's header names the file's own sha256, which did not change.
    own = hashlib.sha256((tmp_path / "t.space").read_bytes()).hexdigest()
    assert changed.sha256 == first.sha256 == own != first.digest
    (tmp_path / "plain.space").write_text(BASE)
    plain = spacec.load(str(tmp_path / "plain.space")).spec
    assert plain.digest == plain.sha256 == hashlib.sha256(BASE.encode()).hexdigest()
