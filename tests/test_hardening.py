"""Careless and hostile input ends in a clear, positioned message, in bounded time and memory.

Issue 12: errors are capped and counted (3); deep nesting, long `extends` chains and cycles, deep
imports and huge numbers are refused or handled without recursion (4); files that cannot be
written are reported with their path and the OS's reason, and leave nothing half-written (6);
input that is not UTF-8 is reported at file:line:col (7); and the smaller defects of item 8.
Issue 14 item 8: an error in a cell that others extend is reported once.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from test_check_errors import BASE  # the same small valid space the error tests extend

import spacec
from spacec import ast, parse
from spacec.arch.genotype import GenotypeError, resolve
from spacec.cli import main
from spacec.errors import MAX_DIAGNOSTICS, SpaceError
from spacec.files import FileError, atomic_write_text, atomic_write_with
from spacec.parse import MAX_DEPTH, MAX_DIGITS, MAX_NESTING


def load_error(write_space, text: str, name: str = "t.space", **overrides) -> SpaceError:
    with pytest.raises(SpaceError) as caught:
        spacec.load(str(write_space(text, name)), **overrides)
    return caught.value


def run_cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


# ---- 3: errors are capped, counted, and rendered in linear time -----------------------------------
def test_a_file_of_errors_shows_the_first_hundred_and_counts_the_rest(write_space):
    errors = "".join(f"param p{i} = unknown{i}\n" for i in range(500))
    error = load_error(write_space, BASE + errors)
    assert len(error.diagnostics) == MAX_DIAGNOSTICS
    assert error.omitted == 500 - MAX_DIAGNOSTICS
    first = BASE.count("\n") + 1
    assert [d.span.line for d in error.diagnostics] == list(range(first, first + MAX_DIAGNOSTICS))
    rendered = str(error)
    assert rendered.endswith(f"... and 400 more errors (the first {MAX_DIAGNOSTICS} are shown)")
    assert rendered.count(": error: ") == MAX_DIAGNOSTICS


def test_the_command_line_prints_a_bounded_report(write_space):
    path = write_space(BASE + "".join(f"param p{i} = q\n" for i in range(2000)))
    status, output = run_cli("check", path)
    assert status == 2
    assert output.count(": error: unknown parameter 'q'") == MAX_DIAGNOSTICS
    assert "... and 1900 more errors" in output


def test_a_hint_lists_a_bounded_number_of_choices(write_space):
    params = "".join(f"param p{i} = 1\n" for i in range(1000))
    error = load_error(write_space, params + BASE.replace("channels C\n", "channels p99x\n"))
    (diagnostic,) = error.diagnostics
    assert diagnostic.hint.startswith("did you mean 'p99'? known parameters: ")
    assert diagnostic.hint.endswith(", ... (1001 in all)")
    assert diagnostic.hint.count(", ") < 25


def test_the_excerpt_of_a_very_long_line_is_a_window_around_the_error(write_space):
    line = "".join(f"param x{i} = 1 " for i in range(3000)) + "param y = nope\n"
    error = load_error(write_space, line + BASE)
    rendered = str(error).splitlines()
    assert rendered[0].endswith(f":1:{len(line) - 4}: error: unknown parameter 'nope'")
    assert rendered[1].startswith("    ...") and rendered[1].endswith("nope")
    assert len(rendered[1]) < 200
    assert rendered[2].strip() == "^~~~" and rendered[2].index("^") == rendered[1].index("nope")


# ---- 4: nesting, chains and numbers --------------------------------------------------------------
DEEP = 1000
NESTED = [
    pytest.param(f"param x = {'1 + (' * DEEP}1{')' * DEEP}\n", id="sums-in-parentheses"),
    pytest.param(f"param x = {'-' * DEEP}1\n", id="unary-minus"),
    pytest.param(f"param x = {'2 * (' * DEEP}1{')' * DEEP}\n", id="parentheses-and-products"),
    pytest.param("network n {\n tags " + "[" * DEEP + "]" * DEEP + "\n}\n", id="nested-lists"),
    pytest.param("ops o { x = f(" + "a=g(" * DEEP + ")" * (DEEP + 1) + " }\n", id="nested-calls"),
]


@pytest.mark.parametrize("text", NESTED)
def test_deep_nesting_is_a_positioned_error(text, write_space):
    error = load_error(write_space, text)
    (diagnostic,) = error.diagnostics
    assert diagnostic.message.startswith(f"nested too deeply: more than {MAX_NESTING} levels")
    assert diagnostic.span.line >= 1 and diagnostic.span.column >= 1
    assert str(error).startswith(f"{diagnostic.span}: error: nested too deeply")


# Each shape at every depth around the limit: the value just inside an argument, a list or an
# operator can reach the limit exactly, and the node around it must then be refused with its own
# position (an argument once crashed there: it has no span of its own).
AROUND_THE_LIMIT = {
    "minus-in-argument": lambda d: "ops o { x = f(k=" + "-" * d + "1) }\n",
    "plus-in-argument": lambda d: "ops o { x = f(k=" + "1 + (" * d + "1" + ")" * d + ") }\n",
    "list-in-argument": lambda d: "ops o { x = f(k=" + "[" * d + "1" + "]" * d + ") }\n",
    "calls": lambda d: "ops o { x = f(" + "a=g(" * (d // 2) + ")" * (d // 2 + 1) + " }\n",
    "minus-in-list": lambda d: "network n {\n tags [" + "-" * d + "1]\n}\n",
}


@pytest.mark.parametrize("shape", sorted(AROUND_THE_LIMIT))
def test_every_depth_around_the_limit_parses_or_is_refused_where_it_is(shape):
    outcomes = []
    for depth in range(MAX_NESTING - 6, MAX_NESTING + 4):
        text = AROUND_THE_LIMIT[shape](depth)
        try:
            parse.parse(text, "t.space")
            outcomes.append("ok")
        except SpaceError as error:
            (diagnostic,) = error.diagnostics
            assert diagnostic.message.startswith("nested too deeply"), diagnostic.message
            assert 1 <= diagnostic.span.column <= len(text)
            outcomes.append("refused")
    assert outcomes[0] == "ok" and outcomes[-1] == "refused"
    assert outcomes == sorted(outcomes)  # deeper never parses once shallower is refused


def _spaced(text: str) -> str:
    """`text` with blanks after each opening, operator and `=`: the same values, written wider."""
    for mark in ("(", "[", "-", "+", "="):
        text = text.replace(mark, mark + "  ")
    return text


def _deepest(node) -> int:
    """How many levels the deepest value inside `node` nests, counted on the AST (a value with
    nothing inside it: one level; an operation whose left operand is an operation of the same
    precedence continues that operand's chain, a level no deeper)."""
    inside = {
        ast.BinOp: lambda v: (v.left, v.right),
        ast.Neg: lambda v: (v.operand,),
        ast.Call: lambda v: v.args,
        ast.Arg: lambda v: (v.value,),
        ast.ListValue: lambda v: v.items,
    }
    if isinstance(node, tuple):
        return max(map(_deepest, node), default=0)
    if isinstance(node, ast.BinOp) and isinstance(node.left, ast.BinOp) and (
        ast.PRECEDENCE[node.left.op] == ast.PRECEDENCE[node.op]
    ):
        return max(_deepest(node.left), 1 + _deepest(node.right))
    if type(node) in inside:
        return 1 + max(map(_deepest, inside[type(node)](node)), default=0)
    if isinstance(node, (ast.Num, ast.Ref, ast.Name)):
        return 1
    if dataclasses.is_dataclass(node):
        return max((_deepest(getattr(node, f.name)) for f in dataclasses.fields(node)), default=0)
    return 0


@pytest.mark.parametrize("write", [str, _spaced], ids=["compact", "spaced"])
@pytest.mark.parametrize("shape", sorted(AROUND_THE_LIMIT))
def test_exactly_the_values_nested_past_the_limit_are_refused(shape, write, monkeypatch):
    """The parser counts levels only for values written in more than `MAX_NESTING` characters
    (each level takes one at least); the outcome must be the AST's own count, compact or wide."""
    for depth in range(MAX_NESTING - 4, MAX_NESTING + 3):
        text = write(AROUND_THE_LIMIT[shape](depth))
        try:
            parse.parse(text, "t.space")
            refused = False
        except SpaceError:
            refused = True
        with monkeypatch.context() as patched:
            patched.setattr(parse, "MAX_NESTING", 10 * MAX_NESTING)
            deepest = _deepest(parse.parse(text, "t.space").items)
        assert refused == (deepest > MAX_NESTING), (shape, depth, deepest)


# Ways to wrap a value in one more level (or none: parentheses), as (its text from the inner
# one's, the inner precedence it needs without parentheses, the precedence it has): 0 an atom,
# 1 a unary minus, 2 a product, 3 a sum, 4 a list (a value, not an expression).
_WRAPPERS = {
    "neg": (lambda x, b: f"-{b}{x}", 1, 1),
    "add-left": (lambda x, b: f"{x}{b}+{b}1", 3, 3),
    "sub-right": (lambda x, b: f"1{b}-{b}{x}", 2, 3),
    "mul-left": (lambda x, b: f"{x}{b}*{b}2", 2, 2),
    "div-right": (lambda x, b: f"2{b}//{b}{x}", 1, 2),
    "parentheses": (lambda x, b: f"({b}{x}{b})", 3, 0),
    "call": (lambda x, b: f"g({b}k{b}={b}{x}{b})", 4, 0),
    "list": (lambda x, b: f"[{b}1,{b}{x}{b}]", 4, 4),
}


@settings(max_examples=200, deadline=None, database=None)
@given(
    wrappers=st.lists(st.sampled_from(sorted(_WRAPPERS)), min_size=110, max_size=170),
    blanks=st.lists(st.sampled_from(["", " ", "    ", "\n  "]), min_size=1, max_size=8),
)
def test_any_nesting_is_refused_exactly_past_the_limit(wrappers, blanks):
    """Random values near the limit, compact or wide: refused exactly when the AST nests
    deeper than `MAX_NESTING` (counted as `test_exactly_the_values_nested_past_the_limit_...`
    counts)."""
    text, precedence = "1", 0
    for index, name in enumerate(wrappers):
        wrap, needs, has = _WRAPPERS[name]
        if precedence > needs:  # the inner value needs parentheses (a list cannot have them)
            if precedence == 4:
                continue
            text = f"({text})"
        text, precedence = wrap(text, blanks[index % len(blanks)]), has
    source = f"ops o {{ x = f(k={text}) }}\n"
    try:
        parse.parse(source, "t.space")
        refused = False
    except SpaceError as error:
        assert error.diagnostics[0].message.startswith("nested too deeply"), error
        refused = True
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(parse, "MAX_NESTING", 10 * MAX_NESTING)
        deepest = _deepest(parse.parse(source, "t.space").items)
    assert refused == (deepest > MAX_NESTING), (deepest, source)


@pytest.mark.parametrize("operators", [["+"], ["-", "+"], ["*", "//"]])
def test_a_long_flat_chain_is_one_level_and_stays_flat_in_the_generated_code(operators,
                                                                               write_space):
    terms = "".join(f" {operators[i % len(operators)]} 1" for i in range(149))
    text = BASE.replace("channels C\n", f"channels C{terms}\n")
    compiled = spacec.load(str(write_space(text)))
    channels = compiled.spec.network.get("channels")
    assert channels.py == f"C{terms}"  # as written: no parentheses
    assert channels.value == eval(f"8{terms}")  # noqa: S307 -- Python reads it as spacec does
    compile(compiled.source, "supernet.py", "exec")


def test_a_chain_past_the_depth_limit_is_a_positioned_error(write_space):
    longest = f"param x = {' + '.join(['1'] * MAX_DEPTH)}\n"  # MAX_DEPTH levels: the last fits
    assert spacec.load(str(write_space(longest + BASE))).params["x"] == MAX_DEPTH
    error = load_error(write_space, f"param x = {' + '.join(['1'] * (MAX_DEPTH + 1))}\n" + BASE)
    (diagnostic,) = error.diagnostics
    assert diagnostic.message == (
        f"expression too long: its operations chain more than {MAX_DEPTH} levels deep"
    )
    assert (diagnostic.span.line, diagnostic.span.column) == (1, 11)


def test_precedence_keeps_the_parentheses_it_needs_in_the_rendering(write_space):
    written = "C - (C - 1) + 2 * (C // 2) - -C + (C + 1) // 3 * 2 - -(C * 2)"
    compiled = spacec.load(str(write_space(BASE.replace("channels C\n", f"channels {written}\n"))))
    channels = compiled.spec.network.get("channels")
    # Python reads the rendering as spacec read the text: the same value.
    assert channels.py == written and channels.value == eval(written, {"C": 8})  # noqa: S307


def test_redundant_parentheses_nest_nothing(write_space):
    text = BASE.replace("channels C\n", f"channels {'(' * DEEP}C{')' * DEEP}\n")
    assert spacec.load(str(write_space(text))).spec.network.get("channels").value == 8


def test_nesting_below_the_limit_compiles_to_valid_python(write_space):
    terms = " + ".join(["1"] * (MAX_NESTING // 2))
    text = BASE.replace("channels C\n", f"channels C + {terms} - {MAX_NESTING // 2}\n")
    compiled = spacec.load(str(write_space(text)))
    assert compiled.spec.network.get("channels").value == 8
    compile(compiled.source, "supernet.py", "exec")


def test_a_long_composition_of_steps_is_flat(write_space):
    chain = " >> ".join(["sep_conv(kernel=3)"] * 2000)
    compiled = spacec.load(str(write_space(BASE.replace("sep_conv(kernel=3)", chain))))
    assert len(compiled.spec.opset("o").candidates[2].steps) == 2000


def test_a_long_extends_chain_needs_no_recursion(write_space):
    chain = "".join(
        f"cell c{i} extends {'normal' if i == 0 else f'c{i - 1}'} {{ combine sum }}\n"
        for i in range(1500)
    )
    compiled = spacec.load(str(write_space(BASE + chain)))
    assert len(compiled.spec.cells) == 1501
    assert compiled.spec.cell("c1499").edges == compiled.spec.cell("normal").edges


def test_an_extends_cycle_is_one_error(write_space):
    cycle = (
        "cell x extends z { combine sum }\ncell y extends x { combine sum }\n"
        "cell z extends y { combine sum }\ncell w extends y { combine sum }\n"
    )
    error = load_error(write_space, BASE + cycle)
    (diagnostic,) = error.diagnostics
    assert diagnostic.message == "cell 'x' extends itself through 'z', 'y'"
    assert (diagnostic.span.line, diagnostic.span.column) == (BASE.count("\n") + 1, 16)


def test_imports_nest_a_bounded_depth(tmp_path):
    depth = 40
    for i in range(depth):
        text = f'import o from "lib{i + 1}.space"\n' if i + 1 < depth else BASE.split("cell")[0]
        (tmp_path / f"lib{i}.space").write_text(text)
    (tmp_path / "t.space").write_text('import o from "lib0.space"\n' + BASE.replace(
        BASE[BASE.index("ops o {") : BASE.index("cell normal")], ""))  # fmt: skip
    with pytest.raises(SpaceError) as caught:
        spacec.load(str(tmp_path / "t.space"))
    assert "imports nest more than 32 deep" in str(caught.value)


def test_a_long_integer_literal_is_a_positioned_error(write_space):
    digits = "1" + "0" * MAX_DIGITS
    error = load_error(write_space, BASE.replace("param C = 8", f"param C = {digits}"))
    (diagnostic,) = error.diagnostics
    assert diagnostic.message == f"an integer of {MAX_DIGITS + 1} digits; at most {MAX_DIGITS}"
    assert (diagnostic.span.line, diagnostic.span.column) == (2, 11)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("99999999999 * 99999999999", "out of range"),
        ("1e300 * 1e300", "inf is not a finite number"),
        ("1e999 - 1", "inf is not a finite number"),
    ],
)
def test_values_out_of_range_are_errors(expression, message, write_space):
    error = load_error(write_space, BASE.replace("param C = 8", f"param C = {expression}"))
    (diagnostic,) = error.diagnostics  # and the uses of C stay silent
    assert message in diagnostic.message and diagnostic.span.line == 2


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 10**40])
def test_set_values_out_of_range_are_one_error(value, write_space):
    error = load_error(write_space, BASE, C=value)
    (diagnostic,) = error.diagnostics
    assert diagnostic.message.startswith("--set C: ")


# Expressions over two parameters; their Python rendering must compute the checked value.
EXPRESSIONS = st.recursive(
    st.sampled_from(["a", "b", "3", "7", "0"]),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "//"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda e: f"-{e}"),
        st.tuples(inner, st.sampled_from(["+", "-", "*", "//"]), inner).map(" ".join),
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, database=None)
@given(expression=EXPRESSIONS)
def test_the_python_rendering_of_an_expression_computes_its_value(expression, tmp_path_factory):
    path = tmp_path_factory.mktemp("expr") / "t.space"
    channels = f"({expression}) * ({expression}) + 1"  # positive, as a width must be
    path.write_text(BASE.replace("param C = 8", "param C = 8\nparam a = 5\nparam b = -4").replace(
        "channels C\n", f"channels {channels}\n"))  # fmt: skip
    try:
        compiled = spacec.load(str(path))
    except SpaceError as error:
        assert "division by zero" in str(error)
        return
    width = compiled.spec.network.get("channels")
    assert eval(width.py, {"__builtins__": {}}, {"a": 5, "b": -4}) == width.value  # noqa: S307


# ---- 6: every file written through one place ---------------------------------------------------
@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/proc/spacec-test/x.py", "cannot create folder /proc/spacec-test: No such file or directory"),
        ("{file}/x.py", "cannot create folder {file}: {file} is a file"),
    ],
)  # fmt: skip
def test_compile_to_an_unwritable_path_names_it_and_the_reason(target, message, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    target = target.format(file=blocker)
    status, output = run_cli("compile", "nas_bench_201", "-o", target)
    assert status == 1
    assert f"spacec: error: {message.format(file=blocker)}" in output
    assert blocker.read_text() == "not a folder" and sorted(tmp_path.iterdir()) == [blocker]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.py"
    atomic_write_text(target, "old\n")

    def half_then_fail(temp: Path) -> None:
        temp.write_text("half")
        raise RuntimeError("the writer died")

    with pytest.raises(RuntimeError):
        atomic_write_with(target, half_then_fail)
    with pytest.raises(FileError, match=r"cannot write .*: it is a folder"):
        atomic_write_text(tmp_path, "x")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.py"]


def test_a_run_directory_that_cannot_be_written_leaves_nothing(tmp_path, monkeypatch):
    from spacec.runtime.run import rundir

    with pytest.raises(FileError, match="cannot create folder /proc/spacec-test"):
        rundir.RunDir.create(Path("/proc/spacec-test/runs"), "x")

    def unwritable(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(rundir.tempfile, "NamedTemporaryFile", unwritable)
    with pytest.raises(FileError, match=r"cannot write in .*/new/runs/x-\d+.*: Permission denied"):
        rundir.RunDir.create(tmp_path / "new" / "runs", "x")
    assert list(tmp_path.iterdir()) == []  # the run directory and the folders made for it


def test_select_checks_its_output_before_training(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    status, output = run_cli("select", "DARTS_V2", "-o", blocker / "summary.json")
    assert status == 1 and f"{blocker} is a file" in output


@pytest.mark.usefixtures("single_thread")
def test_search_into_an_impossible_folder_is_a_message(tmp_path):
    status, output = run_cli("search", "nas_bench_201", "--set", "C=4", "--set", "N=1",
                             "--epochs", "1", "--limit", "16", "--batch-size", "8",
                             "--threads", "1", "-q", "--out", "/proc/spacec-test")  # fmt: skip
    assert status == 1
    assert "spacec: error: cannot create folder /proc/spacec-test: No such file" in output


# ---- 7: input that is not UTF-8 ---------------------------------------------------------------
def test_a_space_that_is_not_utf8_is_reported_at_its_first_bad_byte(tmp_path):
    path = tmp_path / "t.space"
    path.write_bytes(b"param C = 4\n# caf\xe9 au lait \xff\nparam D = 5\n")
    with pytest.raises(SpaceError) as caught:
        spacec.load(str(path))
    assert str(caught.value).splitlines() == [
        f"{caught.value.diagnostics[0].span.path}:2:6: error: not UTF-8 text (byte 0xe9)",
        "    # caf\\xe9 au lait \\xff",
        "         ^~~~",
        "hint: save the file as UTF-8",
    ]


def test_an_imported_file_that_is_not_utf8_is_reported_in_it(tmp_path):
    (tmp_path / "lib.space").write_bytes(b"ops o {\n  none = zero \x80\n}\n")
    (tmp_path / "t.space").write_text('import o from "lib.space"\n' + BASE.replace(
        BASE[BASE.index("ops o {") : BASE.index("cell normal")], ""))  # fmt: skip
    with pytest.raises(SpaceError) as caught:
        spacec.load(str(tmp_path / "t.space"))
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.span.path.endswith("lib.space")
    assert (diagnostic.span.line, diagnostic.span.column) == (2, 15)
    assert "    none = zero \\x80" in str(caught.value)


def test_json_files_that_are_not_utf8_are_reported_at_file_line_col(tmp_path):
    genotype = tmp_path / "g.json"
    genotype.write_bytes(b'{\n  "space": "d\xc3("\n}')
    with pytest.raises(GenotypeError) as caught:
        resolve(str(genotype))
    assert str(caught.value).startswith(f"{genotype}:2:14: error: not UTF-8 text (byte 0xc3)")
    (tmp_path / "t.space").write_text(BASE)
    status, output = run_cli("derive", tmp_path / "t.space", "--alphas", genotype)
    assert status == 1 and f"{genotype}:2:14: error: not UTF-8 text" in output
    # placed as a compiler's: not 'spacec: error: g.json:2:14: error: ...'
    assert output.splitlines()[0].startswith(f"{genotype}:2:14: error:")


def test_a_yaml_config_that_is_not_utf8_is_reported_at_file_line_col(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_bytes(b"optim:\n  lr: 0.1 # \xff\n")
    status, output = run_cli("search", "darts_cnn", "--config", config)
    assert status == 1 and f"{config}:2:13" in output


# ---- 8: smaller defects --------------------------------------------------------------------------
def test_an_unknown_candidate_is_one_error(write_space):
    text = BASE.replace("    none = zero\n    skip = identity\n", "    none = zero\n").replace(
        "sep_conv(kernel=3)", "sep_con(kernel=3)"
    )
    (diagnostic,) = load_error(write_space, text).diagnostics
    assert diagnostic.message == "unknown primitive 'sep_con'"


def test_an_unknown_excluded_name_is_one_error(write_space):
    text = BASE.replace("exclude=[none]", "exclude=[none, skip, nothing]")
    (diagnostic,) = load_error(write_space, text).diagnostics
    assert diagnostic.message.startswith("derivation excludes 'nothing'")


def test_two_limits_on_one_operation_are_an_error(write_space):
    text = BASE.replace("exclude=[none])", "exclude=[none])\n    limit skip <= 1  limit skip <= 2")
    (diagnostic,) = load_error(write_space, text).diagnostics
    assert diagnostic.message == "more than one limit on 'skip'"
    assert (diagnostic.span.line, diagnostic.span.column) == (14, 28)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [("\x1b[31m", "\\x1b[31m"), ("\x00", "\\x00"), ("\u202e", "\\u202e"), ("\x07", "\\x07")],
)
def test_control_characters_are_shown_escaped(raw, shown, write_space):
    text = BASE.replace("param C = 8", f'import o from "a{raw}b"  # x{raw}y\nparam C = 8')
    error = load_error(write_space, text)
    rendered = str(error)
    assert raw not in rendered
    assert f'"a{shown}b"' in rendered and f"# x{shown}y" in rendered
    caret = rendered.splitlines()[2]
    assert caret.index("^") == rendered.splitlines()[1].index('"a')


def test_an_unreadable_checkpoint_is_never_advised_to_be_loaded_unsafely(tmp_path):
    torch = pytest.importorskip("torch")
    from spacec.runtime.run.checkpoint import load_checkpoint

    path = tmp_path / "checkpoint.pt"
    torch.save({"format": 1, "kind": "search", "payload": Payload()}, path)
    (tmp_path / "text.pt").write_text('{"not": "a checkpoint"}')
    for file in (path, tmp_path / "text.pt"):
        with pytest.raises(Exception) as caught:
            load_checkpoint(file, "search")
        message = str(caught.value)
        assert message.startswith(f"{file}: unreadable checkpoint (")
        assert "weights_only" not in message and "\x1b" not in message
    assert "(test_hardening.Payload)" in str(caught.value) or "Payload" not in message


class Payload:
    """An object beyond tensors and plain data (torch refuses to unpickle it)."""


def test_check_of_a_folder_says_it_is_a_folder(tmp_path):
    status, output = run_cli("check", tmp_path)
    assert status == 2 and f"{tmp_path}: error: is a folder, not a .space file" in output


def genotype_file(tmp_path: Path, space: str) -> Path:
    data = resolve("DARTS_V2").to_dict()
    path = tmp_path / f"{space}.json"
    path.write_text(json.dumps({**data, "space": space}))
    return path


def test_a_genotype_file_of_another_space_is_refused(tmp_path, compiled):
    path = genotype_file(tmp_path, "nas_bench_201")
    with pytest.raises(GenotypeError, match=r"a genotype of space 'nas_bench_201', not of "
                                            r"'darts_cnn'"):  # fmt: skip
        resolve(str(path), "darts_cnn")
    status, output = run_cli("compile", "darts_cnn", "--genotype", path)
    assert status == 1 and "a genotype of space 'nas_bench_201'" in output


def test_genotypes_transfer_where_the_paper_transfers_them(tmp_path, compiled):
    assert resolve(str(genotype_file(tmp_path, "darts_cnn")), "darts_imagenet").space == "darts_cnn"
    assert compiled("darts_imagenet", C=8, layers=5).discrete_source("DARTS_V2")  # presets fit


def test_a_genotype_that_does_not_fit_says_which_space_it_is_of(write_space):
    compiled = spacec.load(str(write_space(BASE)))
    with pytest.raises(GenotypeError, match=r"derived for space 'darts_cnn'"):
        compiled.discrete_source("DARTS_V2")


def test_non_positive_network_sizes_are_positioned_errors(write_space):
    text = BASE.replace("    channels C\n", "    channels C\n    image_size 8 - 8\n")
    (diagnostic,) = load_error(write_space, text).diagnostics
    assert diagnostic.message == "'image_size' must be positive, got 0"
    assert (diagnostic.span.line, diagnostic.span.column) == (17, 16)


def test_a_tied_decoder_needs_equal_embedding_and_hidden_sizes(write_space):
    text = spacec.shipped_spaces()["darts_rnn"].read_text()
    error = load_error(write_space, text, nhid=200)  # found by benchmarks/fuzz.py
    (diagnostic,) = error.diagnostics
    assert diagnostic.message == (
        "a tied decoder needs embedding == hidden, got embedding 300 and hidden 200"
    )
    assert diagnostic.span.line == text[: text.index("decoder    tied")].count("\n") + 1
    spacec.load(str(write_space(text.replace("decoder    tied", "decoder    untied"))), nhid=200)


def test_an_even_stem_kernel_is_a_positioned_error(write_space):
    text = BASE.replace("conv_bn(kernel=3", "conv_bn(kernel=4")
    (diagnostic,) = load_error(write_space, text).diagnostics
    assert "'kernel' must be odd, got 4" in diagnostic.message


def test_check_names_a_bounded_number_of_cells(write_space):
    many = "".join(f"cell c{i} extends normal {{ combine sum }}\n" for i in range(30))
    status, output = run_cli("check", write_space(BASE + many))
    assert status == 0 and output.rstrip().endswith(", and 21 more cells)")


# ---- issue 14, 8: an error in a cell that others extend, once -------------------------------------
def test_an_error_in_an_extended_cell_is_reported_once_with_the_cells_that_inherit_it(write_space):
    text = BASE.replace("output concat(*)", "output concat(n0, n7)") + (
        "cell reduce extends normal { stride 2 from inputs }\n"
        "cell other extends reduce { combine sum }\n"
    )
    error = load_error(write_space, text)
    (diagnostic,) = error.diagnostics
    assert diagnostic.message.startswith("the output reduces over 'n7'")
    assert (diagnostic.span.line, diagnostic.span.column) == (12, 23)
    assert diagnostic.notes == ("also in cells 'reduce', 'other', which inherit this line",)
    assert str(error).splitlines()[-1] == (
        "note: also in cells 'reduce', 'other', which inherit this line"
    )


def test_a_statement_missing_from_an_extended_cell_is_reported_once(write_space):
    text = BASE.replace("    derive topk(k=2, exclude=[none])\n", "") + (
        "cell reduce extends normal { stride 2 from inputs }\n"
    )
    (diagnostic,) = load_error(write_space, text).diagnostics
    assert diagnostic.message == "cell 'normal' has no 'derive' statement"
    assert diagnostic.notes == ("also in cell 'reduce', which inherits this line",)


def test_an_error_only_the_child_makes_is_the_childs(write_space):
    text = BASE.replace("output concat(*)", "output concat(n0, n1)") + (
        "cell reduce extends normal { nodes 1 }\n"
    )
    (diagnostic,) = load_error(write_space, text).diagnostics
    assert diagnostic.message == "the output reduces over 'n1', which is not an intermediate node"
    assert diagnostic.span.line == 12 and diagnostic.notes == ()
