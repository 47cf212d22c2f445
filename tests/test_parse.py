"""The parser: text -> AST, with source spans; syntax errors as SpaceError at the right token."""

from __future__ import annotations

import pytest

import spacec
from spacec import ast, parse
from spacec.errors import SpaceError


def items_of(text: str, kind: type) -> list:
    return [item for item in parse.parse(text, "t.space").items if isinstance(item, kind)]


def only(text: str, kind: type):
    found = items_of(text, kind)
    assert len(found) == 1, found
    return found[0]


def cell_body(statements: str) -> tuple:
    return only(f"cell c {{ {statements} }}", ast.CellDecl).body


# ---- every shipped space parses --------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(spacec.shipped_spaces()))
def test_shipped_space_parses_with_its_path(name):
    path = spacec.shipped_spaces()[name]
    tree = parse.parse(path.read_text(encoding="utf-8"), str(path))
    assert tree.path == str(path)
    assert any(isinstance(item, ast.NetworkDecl) for item in tree.items)


def test_parser_is_built_once():
    assert parse.parser() is parse.parser()


# ---- declarations --------------------------------------------------------------------------------
def test_space_name_and_params():
    space = only("space my_space\nparam C = 16", ast.SpaceDecl)
    assert space.name.text == "my_space"
    param = only("param C = 16", ast.Param)
    assert param.name.text == "C"
    assert param.value == ast.Num(16, param.value.span)


def test_comments_and_blank_lines_are_ignored():
    text = "# header\n\n  # indented comment\nparam C = 4  # trailing\n"
    (param,) = parse.parse(text).items
    assert param.name.span.line == 4


def test_import_by_shipped_name_and_by_path():
    by_name = only("import darts_ops from darts_cnn", ast.Import)
    assert [n.text for n in by_name.names] == ["darts_ops"]
    assert by_name.source.text == "darts_cnn" and not by_name.is_path
    by_path = only('import a, b from "lib/ops.space"', ast.Import)
    assert [n.text for n in by_path.names] == ["a", "b"]
    assert by_path.source.text == "lib/ops.space" and by_path.is_path
    # The span of a path covers its quotes.
    assert (by_path.source.span.column, by_path.source.span.length) == (18, 15)


def test_op_set_with_bare_calls_arguments_and_composition():
    opset = only(
        "ops s {\n  none = zero\n  conv = dil_conv(kernel=3, dilation=2)\n"
        "  both = relu_conv_bn(kernel=1) >> sep_conv(kernel=3)\n}",
        ast.OpSet,
    )
    assert opset.name.text == "s"
    none, conv, both = opset.ops
    assert [s.name.text for s in none.steps] == ["zero"] and none.steps[0].args == ()
    assert [(a.name.text, a.value.value) for a in conv.steps[0].args] == [
        ("kernel", 3),
        ("dilation", 2),
    ]
    assert [s.name.text for s in both.steps] == ["relu_conv_bn", "sep_conv"]
    assert both.name.span.line == 4


def test_empty_op_set_parses():
    # Emptiness is a semantic error (the checker's), not a syntax error.
    assert only("ops s { }", ast.OpSet).ops == ()


# ---- expressions -------------------------------------------------------------------------------
def test_integer_expression_precedence_and_associativity():
    # 2 * layers // 3 - -1  ==  ((2 * layers) // 3) - (-1)
    value = only("param x = 2 * layers // 3 - -1", ast.Param).value
    assert isinstance(value, ast.BinOp) and value.op == "-"
    assert isinstance(value.right, ast.Neg) and value.right.operand.value == 1
    floordiv = value.left
    assert floordiv.op == "//" and floordiv.right.value == 3
    assert floordiv.left.op == "*" and floordiv.left.right == ast.Ref(
        "layers", floordiv.left.right.span
    )


def test_parentheses_group():
    value = only("param x = 2 * (a + 1)", ast.Param).value
    assert value.op == "*" and value.right.op == "+"


@pytest.mark.parametrize(
    ("text", "value"),
    [("1.5", 1.5), ("1e3", 1000.0), ("2.5e-1", 0.25), ("3.", 3.0), ("007", 7)],
)
def test_number_literals(text, value):
    num = only(f"param x = {text}", ast.Param).value
    assert num.value == value and type(num.value) is type(value)


def test_keywords_are_not_reserved_where_a_name_is_expected():
    # The contextual lexer lets a statement keyword serve as a name elsewhere.
    assert only("param ops = 3", ast.Param).name.text == "ops"
    assert [n.text for n in cell_body("inputs cell, network")[0].names] == ["cell", "network"]


def test_method_with_parameters_and_bare():
    text = "method pc_darts(k=2, edge_norm=false)"
    method = only(text, ast.MethodDecl)
    assert method.call.name.text == "pc_darts"
    assert [(a.name.text, a.value) for a in method.call.args] == [
        ("k", ast.Num(2, method.call.args[0].value.span)),
        ("edge_norm", ast.Ref("false", method.call.args[1].value.span)),
    ]
    assert (method.span.line, method.span.column, method.span.length) == (1, 1, len(text))
    assert (method.call.name.span.column, method.call.args[1].value.span.column) == (8, 32)
    bare = only("space s\nmethod gdas\nparam C = 4", ast.MethodDecl)
    assert bare.call == ast.Call(ast.Name("gdas", bare.call.name.span), (), bare.call.name.span)
    assert (bare.span.line, bare.span.length) == (2, 11)


def test_method_stays_a_name_where_a_name_is_expected():
    assert only("param method = 3", ast.Param).name.text == "method"
    network = only("network n { method 3 }", ast.NetworkDecl)
    assert network.settings[0].key.text == "method"
    assert [n.text for n in cell_body("inputs method, b")[0].names] == ["method", "b"]


# ---- cells ----------------------------------------------------------------------------------
def test_cell_statements():
    body = cell_body(
        "inputs a, b  nodes 3  edges dense : s  edge a, b -> n1 : s  combine sum "
        "output concat(n0, n2)  derive topk(k=2, exclude=[none])  limit skip <= 2  "
        "share highway per node  search_norm batch_norm"
    )
    kinds = [type(s).__name__ for s in body]
    assert kinds == [
        "Inputs",
        "NodesCount",
        "DenseEdges",
        "Edges",
        "Combine",
        "Output",
        "Derive",
        "Limit",
        "Share",
        "SearchNorm",
    ]
    inputs, nodes, dense, edges, _, output, derive, limit, _, _ = body
    assert [n.text for n in inputs.names] == ["a", "b"] and nodes.count == 3
    assert dense.start is None and dense.opset.text == "s"
    assert [n.text for n in edges.sources] == ["a", "b"] and edges.target.text == "n1"
    assert output.reduce.text == "concat" and [n.text for n in output.nodes] == ["n0", "n2"]
    assert derive.rule.name.text == "topk"
    exclude = dict((a.name.text, a.value) for a in derive.rule.args)["exclude"]
    assert isinstance(exclude, ast.ListValue) and [r.name for r in exclude.items] == ["none"]
    assert (limit.op.text, limit.most) == ("skip", 2)


def test_named_nodes_dense_from_and_single_output():
    nodes, dense, output = cell_body("nodes s0, s1  edges dense from s0 : s  output s1")
    assert [n.text for n in nodes.names] == ["s0", "s1"]
    assert dense.start.text == "s0"
    assert output.reduce is None and [n.text for n in output.nodes] == ["s1"]


def test_concat_star_means_all_nodes():
    (output,) = cell_body("output concat(*)")
    assert output.reduce.text == "concat" and output.nodes is None


def test_stride_from_inputs_and_from_named_nodes():
    every, named = cell_body("stride 2 from inputs  stride 2 from a, b")
    assert every.value == 2 and every.sources is None
    assert [n.text for n in named.sources] == ["a", "b"]


def test_fixed_edges_each_and_joint():
    each, joint = cell_body(
        "fixed a, b -> n0 : relu_conv_bn(kernel=1) >> sep_conv(kernel=3)  "
        "fixed (x, h) -> s0 : highway_init(fn=tanh)"
    )
    assert not each.joint and [s.name.text for s in each.steps] == ["relu_conv_bn", "sep_conv"]
    assert joint.joint and [n.text for n in joint.sources] == ["x", "h"]
    assert joint.steps[0].args[0].value == ast.Ref("tanh", joint.steps[0].args[0].value.span)


def test_extends():
    cell = only("cell reduce extends normal { stride 2 from inputs }", ast.CellDecl)
    assert cell.name.text == "reduce" and cell.parent.text == "normal"
    assert only("cell normal { }", ast.CellDecl).parent is None


# ---- network ------------------------------------------------------------------------------------
def test_network_settings_and_body():
    network = only(
        "network image_classifier {\n  channels C\n  stem conv_bn(kernel=3, channels=3 * C)\n"
        "  body normal * layers with reduce at [layers // 3, 1], res_block(stride=2), normal\n"
        "  head classifier(classes=10)\n}",
        ast.NetworkDecl,
    )
    assert network.kind.text == "image_classifier"
    assert [s.key.text for s in network.settings] == ["channels", "stem", "head"]
    (body,) = network.bodies
    repeat, block, single = body.items
    assert isinstance(repeat, ast.Repeat) and repeat.cell.text == "normal"
    assert repeat.count == ast.Ref("layers", repeat.count.span)
    assert repeat.replace_with.text == "reduce" and len(repeat.positions.items) == 2
    assert isinstance(block, ast.Block) and block.call.name.text == "res_block"
    assert isinstance(single, ast.Block) and single.call.args == ()


def test_repeat_without_replacement():
    (body,) = only("network n { body normal * 4 }", ast.NetworkDecl).bodies
    (repeat,) = body.items
    assert repeat.replace_with is None and repeat.positions is None


def test_list_setting_and_empty_list():
    network = only("network n { stem [a(channels=1), b(channels=2)]  tags [] }", ast.NetworkDecl)
    stem, tags = network.settings
    assert [c.name.text for c in stem.value.items] == ["a", "b"]
    assert tags.value.items == ()


# ---- spans ------------------------------------------------------------------------------------
def test_spans_are_one_based_with_lengths():
    text = "space s\n\nops set_a {\n    conv = sep_conv(kernel=3)\n}\n"
    opset = only(text, ast.OpSet)
    assert (opset.name.span.line, opset.name.span.column, opset.name.span.length) == (3, 5, 5)
    call = opset.ops[0].steps[0]
    assert (call.name.span.line, call.name.span.column, call.name.span.length) == (4, 12, 8)
    assert (call.span.column, call.span.length) == (12, len("sep_conv(kernel=3)"))
    assert call.span.path == "t.space"


def test_tabs_count_as_one_column():
    param = only("param\tC\t=\t4", ast.Param)
    assert param.name.span.column == 7


# ---- syntax errors ----------------------------------------------------------------------------
SYNTAX_ERRORS = [
    # (text, message substring, line, column)
    ("ops s {\n  conv sep_conv(kernel=3)\n}", "unexpected 'sep_conv'; expected '='", 2, 8),
    ("param C = 8 / 2", "unexpected character '/'", 1, 13),
    ("param = 8", "unexpected '='; expected a name", 1, 7),
    ("network n {\n  stem conv_bn(kernel=3 channels=C)\n}", "expected ')' or ','", 2, 25),
    # At the end of the file the caret marks the last token read.
    ("cell c {\n  inputs a, b\n", "unexpected end of file", 2, 13),
    ("cell c { edge a -> : s }", "unexpected ':'", 1, 20),
    ("param C = 4 $", "unexpected character '$'", 1, 13),
    ('import a from "unterminated', "unexpected character '\"'", 1, 15),
    ("space", "unexpected end of file; expected a name", 1, 1),
    # The contextual lexer reads no number where only an integer fits: '2', then a stray '.'.
    ("cell c { nodes 2.5 }", "unexpected character '.'", 1, 17),
    ("param größe = 4", "unexpected character 'ö'", 1, 9),
    ("method", "unexpected end of file; expected a name", 1, 1),
    ("method pc_darts(k)", "unexpected ')'; expected '='", 1, 18),
    ("cell c { method gdas }", "unexpected 'method'; expected 'combine'", 1, 10),  # top level only
]


@pytest.mark.parametrize(("text", "message", "line", "column"), SYNTAX_ERRORS)
def test_syntax_error_points_at_the_token(text, message, line, column):
    with pytest.raises(SpaceError) as caught:
        parse.parse(text, "t.space")
    (diagnostic,) = caught.value.diagnostics
    assert message in diagnostic.message
    assert (diagnostic.span.line, diagnostic.span.column) == (line, column)
    rendered = str(caught.value)
    assert rendered.startswith(f"t.space:{line}:{column}: error: ")
    caret = "    " + " " * (column - 1) + "^"
    assert any(line.rstrip("~") == caret for line in rendered.splitlines())


def test_syntax_error_lists_what_was_expected():
    with pytest.raises(SpaceError) as caught:
        parse.parse("param C = 8 +\n", "t.space")
    message = caught.value.diagnostics[0].message
    assert "unexpected end of file; expected" in message
    assert "an integer" in message and "a name" in message and "'('" in message


def test_slash_suggests_integer_division():
    with pytest.raises(SpaceError) as caught:
        parse.parse("param C = 8 / 2", "t.space")
    assert "hint: use // for integer division" in str(caught.value)


def test_syntax_error_carries_the_source_for_rendering():
    with pytest.raises(SpaceError) as caught:
        parse.parse("param C = 8\nparam D = = 2\n", "x.space")
    assert caught.value.sources == {"x.space": "param C = 8\nparam D = = 2\n"}
    assert "    param D = = 2" in str(caught.value).splitlines()


# ---- the grammar's analysis, kept between processes ------------------------------------------
_PARSE_A_SPACE = """
import sys
from spacec import parse
print(repr(parse.parse(open(sys.argv[1], encoding="utf-8").read(), "darts_cnn.space")))
print("lark imported" if "lark" in sys.modules else "lark not imported")
"""


def _parse_in_a_new_process(cache_home, space_file, lark_imported: bool) -> str:
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _PARSE_A_SPACE, str(space_file)],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "XDG_CACHE_HOME": str(cache_home)})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    tree, imported = done.stdout.strip().splitlines()
    assert imported == ("lark imported" if lark_imported else "lark not imported")
    return tree


def test_the_grammar_analysis_is_cached_per_user_and_survives_a_bad_cache(tmp_path):
    import json

    from spacec.load import locate

    space_file = locate("darts_cnn")
    expected = repr(parse.parse(space_file.read_text(encoding="utf-8"), "darts_cnn.space"))
    home = tmp_path / "cache"
    # The first process analyses the grammar with Lark and saves the tables ...
    first = _parse_in_a_new_process(home, space_file, lark_imported=True)
    [saved] = (home / "spacec").iterdir()
    assert saved.name.startswith("grammar-") and saved.stat().st_size > 0
    assert (home / "spacec").stat().st_mode & 0o077 == 0  # the user's own folder
    # ... which the next one reads, without importing Lark.
    second = _parse_in_a_new_process(home, space_file, lark_imported=False)
    assert first == second == expected
    tables = json.loads(saved.read_text(encoding="utf-8"))
    broken = [
        b"not JSON",  # damaged
        json.dumps({**tables, "grammar": "0" * 64}).encode(),  # another grammar's
        json.dumps({**tables, "format": 0}).encode(),  # another version's
        json.dumps({**tables, "states": {"0": {"NAME": ["jump", 1]}}}).encode(),  # nonsense
        json.dumps({**tables, "rules": []}).encode(),
        json.dumps({**tables, "terminals": [{**t, "kind": "str", "value": "="}
                                            for t in tables["terminals"]]}).encode(),  # fmt: skip
        b"[]",
    ]
    for content in broken:  # each is analysed afresh, and the file written again
        saved.write_bytes(content)
        assert _parse_in_a_new_process(home, space_file, lark_imported=True) == expected
        rewritten = json.loads(saved.read_text(encoding="utf-8"))
        assert [rewritten[key] for key in ("format", "grammar")] == [
            tables[key] for key in ("format", "grammar")
        ]  # (Lark may number the states otherwise in another process)
    blocked = tmp_path / "file"
    blocked.write_text("")  # a cache home that is a file: no cache, same parse
    assert _parse_in_a_new_process(blocked, space_file, lark_imported=True) == expected
