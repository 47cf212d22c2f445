"""Every shipped space compiles to a supernet that trains; the DARTS spaces match the reference.

Shipped spaces are found the way the CLI finds them (`spacec.shipped_spaces()`), so a new file in
spaces/ is tested without editing this file. Forward/backward runs use tiny settings (`--set`
overrides of the usual parameter names).
"""

from __future__ import annotations

import ast as pyast
import hashlib

import pytest
import torch
import torch.nn.functional as F

import spacec
from spacec import ir
from spacec.arch.genotype import Genotype

SHIPPED = sorted(spacec.shipped_spaces())
# Small values for the parameters the shipped spaces use (only those a space declares are set);
# 3 layers still hold a normal and a reduction cell (reductions at layers // 3 and 2 * layers // 3).
TINY = {"C": 4, "layers": 3, "N": 1, "ntoken": 50, "ninp": 16, "nhid": 16}
BATCH = 2
TIME_STEPS = 3
# What a generated module may import: the runtime package, torch, and the standard names it uses.
# Generated supernets import torch, the runtime and the pure architecture model, nothing else.
ALLOWED_IMPORTS = {"torch", "spacec.runtime", "spacec.arch", "__future__", "functools"}

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_overrides(name: str) -> dict[str, int]:
    declared = dict(spacec.load(name).spec.params)
    return {key: value for key, value in TINY.items() if key in declared}


@pytest.fixture(scope="module", params=SHIPPED)
def tiny(request, compiled):
    """(name, compiled space at tiny settings)."""
    return request.param, compiled(request.param, **tiny_overrides(request.param))


def imported_modules(source: str) -> set[str]:
    tree = pyast.parse(source)
    found = set()
    for node in pyast.walk(tree):
        if isinstance(node, pyast.Import):
            found |= {_package(alias.name) for alias in node.names}
        elif isinstance(node, pyast.ImportFrom):
            found.add(_package(node.module or ""))
    return found


def _package(module: str) -> str:
    """The top-level package, or spacec's subpackage (spacec.runtime, spacec.arch, ...)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "spacec" else parts[0]


# ---- every shipped space -------------------------------------------------------------------------
def test_there_are_shipped_spaces():
    assert {"darts_cnn", "darts_rnn", "nas_bench_201", "example_three_inputs"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_checks_and_compiles(name, compiled):
    space = compiled(name)
    assert space.name == name
    assert space.spec.path == f"spaces/{name}.space"
    source = space.source
    compile(source, f"{name}.py", "exec")  # valid Python
    assert set(space.dag) == {cell.name for cell in space.spec.cells}


@pytest.mark.parametrize("name", SHIPPED)
def test_generated_module_imports_only_torch_and_the_runtime(name, compiled):
    modules = imported_modules(compiled(name).source)
    assert modules <= ALLOWED_IMPORTS, modules - ALLOWED_IMPORTS
    assert {"torch", "spacec.runtime"} <= modules


def test_tiny_supernet_forward_backward_trains_every_alpha(tiny):
    name, space = tiny
    torch.manual_seed(0)
    network = space.supernet()
    network.train()
    if space.spec.domain == "image":
        classes = space.spec.network.get("head").kwargs()["classes"].value
        images = torch.randn(BATCH, *space.input_shape)
        logits = network(images)
        assert logits.shape == (BATCH, classes)
        loss = F.cross_entropy(logits, torch.randint(0, classes, (BATCH,)))
    else:
        ntoken = space.spec.network.get("tokens").value
        tokens = torch.randint(0, ntoken, (TIME_STEPS, BATCH))
        log_prob, hidden = network(tokens, network.init_hidden(BATCH))
        assert log_prob.shape == (TIME_STEPS, BATCH, ntoken)
        assert hidden[0].shape == (1, BATCH, space.spec.network.get("hidden").value)
        loss = F.nll_loss(log_prob.view(-1, ntoken), tokens.view(-1))
    assert torch.isfinite(loss)
    loss.backward()
    alphas = network.arch_parameters()
    assert set(alphas) == {cell.name for cell in space.spec.cells}
    for cell, alpha in alphas.items():
        assert alpha.grad is not None, cell
        assert torch.isfinite(alpha.grad).all(), cell
        assert (alpha.grad != 0).all(), f"{name}: α of {cell} has zero gradients"


def test_tiny_supernet_genotype_names_every_cell(tiny):
    name, space = tiny
    torch.manual_seed(0)
    genotype = space.supernet().genotype()
    assert isinstance(genotype, Genotype)
    assert genotype.space == name
    assert set(genotype.cell_types) == {cell.name for cell in space.spec.cells}
    for cell in space.spec.cells:
        derived = genotype.cell(cell.name)
        kept = {op for op, _, _ in derived.edges}
        candidates = set(space.spec.opset(cell.opset).names) | {
            f.steps[0].primitive for f in cell.fixed
        }
        assert kept <= candidates
        assert not kept & set(cell.rule.exclude)
        for op, most in cell.rule.limits:
            assert sum(1 for o, _, _ in derived.edges if o == op) <= most


def test_alpha_is_kept_apart_from_weights(tiny):
    _, space = tiny
    network = space.supernet()
    alpha_ids = {id(a) for a in network.arch_parameters().values()}
    assert alpha_ids.isdisjoint(id(p) for p in network.weights())
    total = sum(p.numel() for p in network.parameters())
    assert total == sum(p.numel() for p in network.weights()) + sum(
        a.numel() for a in network.arch_parameters().values()
    )


def test_compiled_header_matches_the_file(tiny):
    name, space = tiny
    path = spacec.shipped_spaces()[name]
    assert space.spec.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert space.spec.sha256 == space.module().SOURCE_SHA256


# ---- fidelity: the DARTS reference numbers -------------------------------------------------------
DARTS_CNN_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
DARTS_RNN_OPS = ("none", "tanh", "relu", "sigmoid", "identity")


def weight_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_darts_cnn_supernet_has_the_reference_weight_count(compiled):
    # DARTS model_search.Network(C=16, num_classes=10, layers=8) ("param size = 1.930618MB"):
    #   stem      3x3 conv 3 -> 48 (3*48*9 = 1,296) + affine BatchNorm(48) (96)      =     1,392
    #   cells     8 cells: preprocessing, 14 mixed edges each (search BN affine=False) = 1,926,656
    #   classifier Linear(256 -> 10): 4 nodes x 64 channels after two reductions      =     2,570
    #   total                                                                          = 1,930,618
    space = compiled("darts_cnn")
    assert dict(space.spec.params)["C"] == 16 and dict(space.spec.params)["layers"] == 8
    network = space.supernet()
    assert weight_count(network.stems) == 1_392
    assert weight_count(network.body) == 1_926_656
    assert weight_count(network.head) == 2_570
    assert sum(p.numel() for p in network.weights()) == 1_930_618
    shapes = {name: tuple(a.shape) for name, a in network.arch_parameters().items()}
    assert shapes == {"normal": (14, 8), "reduce": (14, 8)}


def test_darts_rnn_supernet_has_the_reference_weight_count(compiled):
    # DARTS rnn/model_search.RNNModelSearch(ntoken=10000, ninp=300, nhid=300), tied weights:
    #   embedding 10000 x 300 (shared with the decoder)       = 3,000,000
    #   decoder bias                                            =    10,000
    #   W0: [x, h] (600) -> [c, h] (600)                       =   360,000
    #   8 node maps 300 -> 600                                  = 1,440,000
    #   BatchNorm of the search cell (affine=False)             =         0
    #   total                                                   = 4,810,000
    space = compiled("darts_rnn")
    network = space.supernet()
    assert network.tied and network.decoder.weight is network.encoder.weight
    assert sum(p.numel() for p in network.weights()) == 4_810_000
    shapes = {name: tuple(a.shape) for name, a in network.arch_parameters().items()}
    assert shapes == {"recurrent": (36, 5)}


@pytest.mark.parametrize(
    ("name", "ops"), [("darts_cnn", DARTS_CNN_OPS), ("darts_rnn", DARTS_RNN_OPS)]
)
def test_alpha_columns_follow_the_reference_op_order(name, ops, compiled):
    space = compiled(name)
    for cell in space.spec.cells:
        assert space.spec.opset(cell.opset).names == ops
        assert tuple(space.dag[cell.name].graph["ops"]) == ops
        assert tuple(space.module().RULES[cell.name].ops) == ops


def expected_rows(inputs, nodes, first_source=0):
    names = list(inputs) + list(nodes)
    rows = []
    for j, dst in enumerate(nodes):
        rows += [(src, dst) for src in names[first_source : len(inputs) + j]]
    return rows


@pytest.mark.parametrize(
    ("name", "cell", "first_source", "count"),
    [
        ("darts_cnn", "normal", 0, 14),
        ("darts_cnn", "reduce", 0, 14),
        ("darts_rnn", "recurrent", 2, 36),
    ],
)
def test_alpha_rows_by_destination_then_source(name, cell, first_source, count, compiled):
    space = compiled(name)
    spec_cell = space.spec.cell(cell)
    rows = expected_rows(spec_cell.inputs, spec_cell.nodes, first_source)
    if name == "darts_rnn":  # s0 comes from the joint highway_init, not from a searched edge
        rows = [(src, dst) for src, dst in rows if dst != "s0"]
    assert len(rows) == count
    assert [(e.src, e.dst) for e in spec_cell.edges] == rows
    assert [(u, v) for u, v, _ in ir.searched_edges(space.dag[cell])] == rows
    assert list(space.module().RULES[cell].edges) == rows


def test_alpha_rows_ignore_the_order_edges_are_written_in(load_text):
    space = load_text(
        """
        ops o { none = zero  conv = sep_conv(kernel=3) }
        cell c {
            inputs a, b
            nodes x, y
            edge x, b, a -> y : o
            edge b, a -> x : o
            output concat(*)
            derive topk(k=1, exclude=[none])
        }
        network image_classifier {
            channels 4  stem conv_bn(kernel=3, channels=4)  body c * 2  head classifier(classes=3)
        }
        """
    )
    rows = [(e.src, e.dst) for e in space.spec.cell("c").edges]
    assert rows == [("a", "x"), ("b", "x"), ("a", "y"), ("b", "y"), ("x", "y")]


# ---- the example space ---------------------------------------------------------------------------
def test_example_three_inputs_shape(compiled):
    space = compiled("example_three_inputs")
    normal, reduce = space.spec.cell("normal"), space.spec.cell("reduce")
    assert normal.inputs == ("c_k3", "c_k2", "c_k1") and len(normal.nodes) == 3
    assert len(normal.edges) == 3 + 4 + 5
    assert not normal.reduction and reduce.reduction
    assert all(e.stride == (2 if e.src in reduce.inputs else 1) for e in reduce.edges)
    assert normal.rule.limits == (("skip_connect", 2),)
    composed = [c for c in space.spec.opset(normal.opset).candidates if len(c.steps) > 1]
    assert [[s.primitive for s in c.steps] for c in composed] == [["relu_conv_bn", "sep_conv"]]


def test_example_three_inputs_skip_limit_holds_when_alpha_favours_skips(compiled):
    space = compiled("example_three_inputs", C=4, layers=3)
    network = space.supernet()
    skip = space.spec.opset("three_input_ops").names.index("skip_connect")
    with torch.no_grad():
        for alpha in network.arch_parameters().values():
            alpha.zero_()
            alpha[:, skip] = 5.0
    for cell in network.genotype().cell_types:
        edges = network.genotype().cell(cell).edges
        assert sum(1 for op, _, _ in edges if op == "skip_connect") == 2
