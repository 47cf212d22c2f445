"""Code generation and the IR: deterministic, formatted, headed output; no way to inject code.

Whatever a .space file says, compiling it either fails with a SpaceError or gives a module that
imports and runs; names from the file are renamed where they would clash with Python or with the
generated code's own names, and renaming never changes the network.
"""

from __future__ import annotations

import ast as pyast
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
import torch

import spacec
from spacec import __version__, codegen, ir
from spacec.arch.genotype import Genotype
from spacec.errors import SpaceError
from spacec.load import CompiledSpace

pytestmark = pytest.mark.usefixtures("single_thread")

SHIPPED = sorted(spacec.shipped_spaces())


def run_image(compiled_space, batch: int = 2, size: int = 8) -> torch.Tensor:
    torch.manual_seed(0)
    network = compiled_space.supernet()
    logits = network(torch.randn(batch, 3, size, size))
    logits.sum().backward()
    return logits


def run_sequence(compiled_space, steps: int = 3, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(0)
    network = compiled_space.supernet()
    tokens = torch.randint(0, network.ntoken, (steps, batch))
    log_prob, _ = network(tokens, network.init_hidden(batch))
    log_prob.sum().backward()
    return log_prob


def weights_of(compiled_space) -> int:
    torch.manual_seed(0)
    return sum(p.numel() for p in compiled_space.supernet().weights())


# ---- determinism ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SHIPPED)
def test_compiling_twice_gives_identical_bytes(name):
    first, second = spacec.load(name), spacec.load(name)
    assert first.source.encode() == second.source.encode()
    assert codegen.generate(first.ir) == first.source
    assert first.listing() == second.listing()
    assert ir.to_json(first.ir) == ir.to_json(second.ir)
    assert ir.to_dot(first.ir) == ir.to_dot(second.ir)


def test_separate_processes_give_identical_bytes():
    script = (
        "import sys, spacec\n"
        "for name in sorted(spacec.shipped_spaces()):\n"
        "    space = spacec.load(name)\n"
        "    sys.stdout.write(space.source + space.listing())\n"
    )
    outputs = []
    for seed in ("1", "2"):  # different string hashing: set and dict order must not leak
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, env=env, timeout=120, check=True
        )
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    here = "".join(spacec.load(n).source + spacec.load(n).listing() for n in SHIPPED)
    assert outputs[0] == here.encode()


# ---- formatting and header -------------------------------------------------------------------------
COMPOSED_BUG = ()


def ruff_format_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--isolated", "--line-length", "100",
         str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


def _derived(space: CompiledSpace) -> Genotype:
    """A genotype of the space, derived (torch-free) from uniform α."""
    from spacec.arch.derive import derive

    alphas = {cell: [[0.0] * len(space.spec.opset(space.spec.cell(cell).opset).candidates)
                     for _ in space.spec.cell(cell).edges] for cell in space.rules}
    return derive(space.name, alphas, space.rules)


@pytest.mark.parametrize("name", SHIPPED)
def test_generated_modules_have_no_unused_names_and_no_long_lines(name, tmp_path):
    """The supernet and a derived network of every shipped space pass ruff's pyflakes rules
    (F: unused imports and names, undefined names) and the 100-column line length (E501)."""
    space = spacec.load(name)
    (tmp_path / f"{name}_supernet.py").write_text(space.source)
    (tmp_path / f"{name}_derived.py").write_text(space.discrete_source(_derived(space)))
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache", "--select", "F,E501",
         "--line-length", "100", "--output-format", "concise", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=COMPOSED_BUG) if n == "example_three_inputs" else n for n in SHIPPED],
)
def test_generated_source_is_ruff_formatted(name, tmp_path):
    path = tmp_path / f"{name}_supernet.py"
    path.write_text(spacec.load(name).source)
    done = ruff_format_check(path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_composed_candidate_is_ruff_formatted(load_text, tmp_path):
    space = load_text(
        "param C = 4\n"
        "ops o { none = zero\n  both = relu_conv_bn(kernel=1) >> sep_conv(kernel=3) }\n"
        "cell c { inputs a, b nodes 2 edges dense : o output concat(*) derive argmax }\n"
        "network image_classifier { channels C stem conv_bn(kernel=3, channels=C)\n"
        "  body c * 2 head classifier(classes=10) }\n"
    )
    path = tmp_path / "generated.py"
    path.write_text(space.source)
    done = ruff_format_check(path)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("name", SHIPPED)
def test_header_names_source_sha256_and_version(name):
    source = spacec.load(name).source
    first, second = source.splitlines()[:2]
    assert first.startswith(f'# Generated by spacec {__version__} from "spaces/{name}.space".')
    digest = hashlib.sha256(spacec.shipped_spaces()[name].read_bytes()).hexdigest()
    assert second == f"# source sha256: {digest}"
    assert f'SOURCE_SHA256 = "{digest}"' in source


def test_header_of_a_space_outside_the_package(load_text, tmp_path):
    text = spacec.shipped_spaces()["nas_bench_201"].read_text()
    source = load_text(text, name="mine.space").source
    assert str(tmp_path / "mine.space") in source.splitlines()[0]
    assert hashlib.sha256(text.encode()).hexdigest() in source.splitlines()[1]


def test_header_sha256_is_that_of_the_file_bytes(tmp_path):
    text = spacec.shipped_spaces()["nas_bench_201"].read_text()
    path = tmp_path / "crlf.space"
    path.write_bytes(text.replace("\n", "\r\n").encode())
    source = spacec.load(str(path)).source
    assert hashlib.sha256(path.read_bytes()).hexdigest() in source.splitlines()[1]


def test_generated_lines_point_back_to_the_space(compiled):
    source = compiled("darts_cnn").source
    space_lines = spacec.shipped_spaces()["darts_cnn"].read_text().splitlines()
    marks = [line.rsplit("# darts_cnn.space:", 1)[1] for line in source.splitlines()
             if "# darts_cnn.space:" in line]  # fmt: skip
    assert marks
    for mark in marks:
        number = int(mark.split(",")[0].split()[0])
        assert space_lines[number - 1].strip()  # a real, non-empty line of the space


# ---- injection -------------------------------------------------------------------------------------
TEMPLATE = """\
space {space}
param {param} = 3
ops {opset} {{
    none = zero
    {op} = sep_conv(kernel=3)
    skip = identity
}}
cell {cell} {{
    inputs {in0}, {in1}
    nodes {node}, last
    edges dense : {opset}
    output concat(*)
    derive topk(k=1, exclude=[none])
}}
network image_classifier {{
    channels 4
    stem conv_bn(kernel=3, channels=4)
    body {cell} * 2
    head classifier(classes={param})
}}
"""
DEFAULTS = dict(space="s", param="classes", opset="o", op="conv", cell="c", in0="a", in1="b",
                node="n")  # fmt: skip
HOSTILE_NAMES = [
    "class", "import", "None", "match",  # keywords and a soft keyword
    "eval", "type", "__import__", "super",  # builtins (and nn.Module attributes)
    "torch", "nn", "partial", "ops", "blocks", "layout",  # what the generated module imports
    "self", "weights", "C", "plan", "preprocess", "features", "stems", "cells",
    "sequence",  # locals of generated functions
    "SPACE", "RULES", "Network", "CELL_TYPES", "relaxation_of", "body", "O_STEPS",  # its globals
    "rules", "network", "__name__", "_",
]  # fmt: skip
# The space's name and candidate names only ever appear as string literals.
LITERAL_ROLES = {
    "space": ["class", "None", "torch", "SPACE", "__import__"],
    "op": ["class", "self"],
}
ROLES = ["param", "opset", "cell", "in0", "node"]
# Parameter names reach the generated code verbatim (constructor arguments, `body(...)`, and the
# expressions that use them), where they can be keywords or shadow the code's own names.
PARAM_NAME_BUG = ()
FAILING_PARAM_NAMES = {
    "class", "import", "None",  # SyntaxError
    "super", "nn", "blocks", "layout", "self", "body", "sequence", "relaxation_of",  # crash
    "preprocess", "stems", "cells",  # used after being shadowed: crash
    "features",  # silently wrong: the head gets as many classes as the body has channels
}  # fmt: skip
# A cell's name is its α key in an nn.ParameterDict, which rejects names of Module attributes.
CELL_NAME_BUG = ()
# Names starting with `__` are mangled inside a class body: `__STEPS` becomes `_CCell__STEPS`.
OPSET_UNDERSCORE_BUG = ()
KNOWN_BUGS = {
    **{("param", name): PARAM_NAME_BUG for name in FAILING_PARAM_NAMES},
    ("cell", "eval"): CELL_NAME_BUG,
    ("cell", "type"): CELL_NAME_BUG,
    **{("opset", name): OPSET_UNDERSCORE_BUG for name in ("__import__", "__name__", "_")},
}


def injection_cases():
    roles = {**{role: HOSTILE_NAMES for role in ROLES}, **LITERAL_ROLES}
    for role, names in roles.items():
        for name in names:
            marks = KNOWN_BUGS.get((role, name), ())
            yield pytest.param(role, name, marks=marks, id=f"{role}={name}")


def generated_calls(source: str) -> set[str]:
    tree = pyast.parse(source)
    return {
        node.func.id
        for node in pyast.walk(tree)
        if isinstance(node, pyast.Call) and isinstance(node.func, pyast.Name)
    }


@pytest.mark.parametrize(("role", "name"), list(injection_cases()))
def test_hostile_names_are_rejected_or_compile_to_a_working_module(role, name, tmp_path):
    text = TEMPLATE.format(**{**DEFAULTS, role: name})
    path = tmp_path / "t.space"
    path.write_text(text)
    try:
        space = spacec.load(str(path))
    except SpaceError as error:
        assert error.diagnostics
        return
    source = space.source
    assert not {"exec", "eval", "open", "__import__", "compile"} & generated_calls(source)
    torch.manual_seed(0)
    network = space.supernet()
    with torch.no_grad():
        logits = network(torch.randn(1, 3, 4, 4))
    assert logits.shape == (1, 3)  # the parameter, whatever its name, sets the classes
    alphas = {k: tuple(v.shape) for k, v in network.arch_parameters().items()}
    assert alphas == {name if role == "cell" else DEFAULTS["cell"]: (5, 3)}  # 2 + 3 edges, 3 ops
    assert sorted(os.listdir(tmp_path)) == ["t.space"]  # no side effect


def test_python_keywords_as_node_names_are_renamed(load_text):
    space = load_text(
        TEMPLATE.format(**{**DEFAULTS, "in0": "class", "in1": "import", "node": "lambda"})
    )
    source = space.source
    assert "def forward(self, class_1, import_1, weights):" in source
    assert "lambda_1 = " in source
    assert "self.pre_class_1" in source


SENTINEL = "SENTINEL"
HOSTILE_FILE_NAMES = [
    pytest.param('q""" + __import__("pathlib").Path("SENTINEL").touch() + """.space', id="quotes"),
    pytest.param("x\nimport pathlib; pathlib.Path('SENTINEL').touch()\n#.space", id="newline"),
]


@pytest.mark.parametrize("file_name", HOSTILE_FILE_NAMES)
def test_file_name_cannot_inject_code(file_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / file_name).write_text(spacec.shipped_spaces()["nas_bench_201"].read_text())
    try:
        space = spacec.load(file_name, C=4, N=1)
        space.module()
    except SpaceError:
        pass
    assert not (tmp_path / SENTINEL).exists(), "code in the file name ran"
    space = spacec.load(file_name, C=4, N=1)
    assert run_image(space, size=16).shape == (2, 10)


def test_import_path_text_is_not_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hostile = "x'); import pathlib; pathlib.Path('SENTINEL').touch(); ('.space"
    (tmp_path / hostile).write_text(
        "ops o { none = zero  conv = sep_conv(kernel=3)  skip = identity }"
    )
    base = TEMPLATE.format(**DEFAULTS)
    opset = base[base.index("ops o") : base.index("cell")]
    (tmp_path / "t.space").write_text(base.replace(opset, f'import o from "{hostile}"\n'))
    space = spacec.load("t.space")
    assert space.spec.opset("o").source == hostile
    assert run_image(space).shape == (2, 3)
    assert not (tmp_path / SENTINEL).exists()


def test_missing_import_with_code_in_its_path_is_a_space_error(load_text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = '"); import os; ("'
    with pytest.raises(SpaceError):  # a STRING cannot hold a double quote: a syntax error
        load_text(f'import o from "{text}"\n')
    with pytest.raises(SpaceError, match="import: no such file"):
        load_text("import o from \"'); import os; ('\"\n" + TEMPLATE.format(**DEFAULTS))
    assert sorted(os.listdir(tmp_path)) == ["t.space"]


# ---- renaming never changes the network --------------------------------------------------------
RENAMINGS = [
    pytest.param(
        # class names: `a_b` and `aB` both want `ABCell`
        "cell a_b { inputs a, b nodes 2 edges dense : o output concat(*) derive argmax }\n"
        "cell aB extends a_b { stride 2 from inputs }\n"
        "network image_classifier { channels 4 stem conv_bn(kernel=3, channels=4)\n"
        "  body a_b, aB, a_b head classifier(classes=3) }\n",
        {"a_b": "p", "aB": "q"},
        id="cell-class-names",
    ),
    pytest.param(
        # op set constants: `o` and `O` both want `O`
        "ops O { none = zero  skip = identity  pool = max_pool(kernel=3) }\n"
        "cell m { inputs a, b nodes 2 edges dense : o output concat(*) derive argmax }\n"
        "cell n { inputs a, b nodes 2 edges dense : O output concat(*) derive argmax }\n"
        "network image_classifier { channels 4 stem conv_bn(kernel=3, channels=4)\n"
        "  body m, n head classifier(classes=3) }\n",
        {" O ": " P "},
        id="opset-constants",
    ),
    pytest.param(
        # fixed-edge attributes: a -> b_c and a_b -> c both want `self.fixed_a_b_c`
        "cell c { inputs a, a_b nodes b_c, c, d\n"
        "  fixed a -> b_c : sep_conv(kernel=3)\n"
        "  fixed a_b -> c : sep_conv(kernel=5)\n"
        "  edge a, b_c -> c : o\n"
        "  edge a_b, b_c, c -> d : o\n"
        "  output concat(*) derive argmax }\n"
        "network image_classifier { channels 4 stem conv_bn(kernel=3, channels=4)\n"
        "  body c * 2 head classifier(classes=3) }\n",
        {"a_b": "q", "b_c": "r"},
        id="fixed-edge-attributes",
    ),
    pytest.param(
        "cell torch { inputs self, weights nodes C, super\n"
        "  edges dense : o output concat(*) derive argmax }\n"
        "network image_classifier { channels 4 stem conv_bn(kernel=3, channels=4)\n"
        "  body torch * 2 head classifier(classes=3) }\n",
        {"torch": "t", "self": "s", "weights": "w", "C": "k", "super": "u"},
        id="generated-names",
    ),
]
OPSET_O = "ops o { none = zero  conv = sep_conv(kernel=3) }\n"


@pytest.mark.parametrize(("text", "renames"), RENAMINGS)
def test_renaming_does_not_change_the_network(text, renames, load_text):
    renamed = text
    for old, new in renames.items():
        renamed = renamed.replace(old, new)
    original = load_text(OPSET_O + text, name="original.space")
    other = load_text(OPSET_O + renamed, name="renamed.space")
    assert weights_of(original) == weights_of(other)
    torch.manual_seed(0)
    images = torch.randn(2, 3, 8, 8)
    torch.manual_seed(1)
    first = original.supernet()
    torch.manual_seed(1)
    second = other.supernet()
    assert torch.equal(first(images), second(images))


# ---- constructs the checker accepts must compile and run ------------------------------------------
def rejected_or_runs(load_text, text: str, run) -> None:
    try:
        space = load_text(text)
    except SpaceError:
        return
    run(space)


SEQUENCE_SPACE = """\
ops r {{ none = zero  tanh = activation(fn=tanh)  relu = activation(fn=relu) }}
cell rec {{
    inputs x, h
    nodes s0, s1, s2
    fixed (x, h) -> s0 : highway_init(fn=tanh)
    {edges}
    share highway per node
    output {output}
    derive topk(k=1, exclude=[none])
}}
network language_model {{ tokens 20  embedding 8  hidden 8  step rec  decoder {decoder} }}
"""


def test_small_recurrent_space_runs(load_text):
    text = SEQUENCE_SPACE.format(
        edges="edges dense from s0 : r", output="mean(s1, s2)", decoder="untied"
    )
    assert run_sequence(load_text(text)).shape == (3, 2, 20)


def test_edge_both_fixed_and_searched(load_text):
    text = OPSET_O + (
        "cell c { inputs a, b nodes 2 edges dense : o  fixed a -> n1 : sep_conv(kernel=3)\n"
        "  output concat(*) derive argmax }\n"
        "network image_classifier { channels 4 stem conv_bn(kernel=3, channels=4)\n"
        "  body c * 2 head classifier(classes=3) }\n"
    )
    rejected_or_runs(load_text, text, run_image)


def test_joint_fixed_op_in_an_image_cell(load_text):
    text = OPSET_O + (
        "cell c { inputs a, b nodes n0, n1\n"
        "  fixed (a, b) -> n0 : highway_init(fn=tanh)\n"
        "  edge a, b, n0 -> n1 : o\n"
        "  output concat(*) derive argmax }\n"
        "network image_classifier { channels 4 stem conv_bn(kernel=3, channels=4)\n"
        "  body c * 2 head classifier(classes=3) }\n"
    )
    rejected_or_runs(load_text, text, run_image)


def test_plain_fixed_edge_in_a_recurrent_cell(load_text):
    text = SEQUENCE_SPACE.format(
        edges="fixed s0 -> s1 : activation(fn=relu)\n    edge s0, s1 -> s2 : r",
        output="mean(s1, s2)",
        decoder="tied",
    )
    rejected_or_runs(load_text, text, run_sequence)


def test_concat_output_in_a_recurrent_cell(load_text):
    text = SEQUENCE_SPACE.format(
        edges="edges dense from s0 : r", output="concat(s1, s2)", decoder="untied"
    )
    rejected_or_runs(load_text, text, run_sequence)


# ---- the IR --------------------------------------------------------------------------------------
def broken(compiled_space, cell: str, breakage) -> ir.IR:
    """A copy of a compiled space's IR with one cell graph changed by `breakage(graph)`."""
    cells = {name: graph.copy() for name, graph in compiled_space.ir.cells.items()}
    breakage(cells[cell])
    return ir.IR(compiled_space.ir.space, cells, compiled_space.ir.layout)


def add_backwards_edge(graph: nx.DiGraph) -> None:
    graph.add_edge("n3", "n1", kind="fixed", steps=(), joint=None, stride=1, line=1)


def renumber_a_row(graph: nx.DiGraph) -> None:
    u, v, _ = ir.searched_edges(graph)[0]
    graph.edges[u, v]["row"] = 99


def feed_an_input(graph: nx.DiGraph) -> None:
    graph.add_edge("n0", "c_k2", kind="fixed", steps=(), joint=None, stride=1, line=1)


def orphan_a_node(graph: nx.DiGraph) -> None:
    graph.remove_edges_from(list(graph.in_edges("n2")))


def stride_inside(graph: nx.DiGraph) -> None:
    graph.edges["n0", "n1"]["stride"] = 2


def second_output(graph: nx.DiGraph) -> None:
    graph.add_node("output2", role="output", order=99)


@pytest.mark.parametrize(
    ("breakage", "messages"),
    [
        (add_backwards_edge, ["the cell graph has a cycle", "edge n3 -> n1 goes backwards"]),
        (renumber_a_row, ["α rows are not numbered 0 .. n-1"]),
        (feed_an_input, ["input 'c_k2' has incoming edges", "goes backwards"]),
        (orphan_a_node, ["node 'n2' has no incoming edge"]),
        (stride_inside, ["stride 2 on edge n0 -> n1, which does not leave an input"]),
        (second_output, ["expected one output node, found 2"]),
    ],
)
def test_lint_catches_a_hand_broken_graph(breakage, messages, compiled):
    space = compiled("darts_cnn")
    ir.lint(space.ir)  # the real IR is clean
    with pytest.raises(SpaceError) as caught:
        ir.lint(broken(space, "normal", breakage))
    found = [d.message for d in caught.value.diagnostics]
    for message in messages:
        assert any(message in f and f.startswith("cell 'normal': ") for f in found), found
    assert all(d.span.line == space.spec.cell("normal").line for d in caught.value.diagnostics)


def test_cell_graph_schema(compiled):
    graph = compiled("darts_cnn").dag["reduce"]
    assert graph.graph["inputs"] == ("c_k2", "c_k1") and graph.graph["reduction"]
    assert graph.graph["rule"] == {"kind": "topk", "k": 2, "exclude": ["none"], "limits": []}
    assert nx.is_directed_acyclic_graph(graph)
    roles = {n: d["role"] for n, d in graph.nodes(data=True)}
    assert roles == {"c_k2": "input", "c_k1": "input", "n0": "intermediate",
                     "n1": "intermediate", "n2": "intermediate", "n3": "intermediate",
                     "output": "output"}  # fmt: skip
    kinds = nx.get_edge_attributes(graph, "kind")
    assert sum(1 for k in kinds.values() if k == "searched") == 14
    assert sum(1 for k in kinds.values() if k == "output") == 4
    for u, v, data in ir.searched_edges(graph):
        assert data["stride"] == (2 if u in ("c_k2", "c_k1") else 1), (u, v)


def test_joint_fixed_edge_in_the_recurrent_graph(compiled):
    graph = compiled("darts_rnn").dag["recurrent"]
    for source in ("x", "h_prev"):
        data = graph.edges[source, "s0"]
        assert data["kind"] == "fixed" and data["joint"] == ("x", "h_prev")
        assert data["steps"] == (("highway_init", (("fn", "tanh"),)),)
    assert all(d["shared"] == v for _, v, d in ir.searched_edges(graph))


def test_listing_is_deterministic_and_complete(compiled):
    space = compiled("darts_cnn")
    listing = ir.listing(space.ir)
    assert listing == ir.listing(spacec.load("darts_cnn").ir)
    assert listing.count("mixed#") == 28
    assert "cell reduce: inputs c_k2, c_k1; α [14, 8]; reduction" in listing
    assert "  n1 = sum(mixed#2(c_k2), mixed#3(c_k1), mixed#4(n0))" in listing
    assert sum(1 for line in listing.splitlines() if line.startswith("body[")) == 8
