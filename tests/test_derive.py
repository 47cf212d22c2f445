"""Derivation: random α against an independent brute-force reference, limits, presets, errors."""

import ast
import math
from collections import Counter
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spacec.arch.derive import (
    ARGMAX,
    TOPK,
    CellRule,
    DerivationError,
    check_genotype,
    derive,
    derive_cell,
)
from spacec.arch.genotype import PRESETS, CellGenotype, Genotype, preset

FAST = settings(max_examples=60, deadline=None, database=None)

# The DARTS primitives: quark0/darts cnn/genotypes.py and rnn/genotypes.py.
CNN_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
           "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
RNN_OPS = ("none", "tanh", "relu", "sigmoid", "identity")
CNN_NODES = ("n0", "n1", "n2", "n3")
RNN_NODES = tuple(f"s{i}" for i in range(9))


def full_dag(sources, nodes):
    """Every earlier name feeds every node (DARTS' mixed-op edges), by node then source."""
    return tuple((src, node) for i, node in enumerate(nodes) for src in sources + nodes[:i])


CNN_RULE = CellRule(
    inputs=("c_k2", "c_k1"),
    nodes=CNN_NODES,
    edges=full_dag(("c_k2", "c_k1"), CNN_NODES),
    ops=CNN_OPS,
    exclude=frozenset({"none"}),
    output=CNN_NODES,
)
RNN_RULE = CellRule(
    inputs=("x", "h_prev"),
    nodes=RNN_NODES,
    edges=full_dag(("s0",), RNN_NODES[1:]),
    ops=RNN_OPS,
    k=1,
    exclude=frozenset({"none"}),
    output=RNN_NODES[1:],
    reduce="mean",
    fixed=(("highway_init", "x", "s0"), ("highway_init", "h_prev", "s0")),
)
SPACE_RULES = {
    "darts_cnn": {"normal": CNN_RULE, "reduce": CNN_RULE},
    "darts_rnn": {"recurrent": RNN_RULE},
}


def test_derive_module_is_pure_python():
    source = (Path(__file__).parents[1] / "spacec" / "arch" / "derive.py").read_text()
    tree = ast.parse(source)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "difflib", "logging", "math", "numbers", "collections",
                        "dataclasses", "typing", "spacec"}


# --- an independent reference ---------------------------------------------------------------


def ref_softmax(row):
    top = max(row)
    exps = [math.exp(x - top) for x in row]
    total = math.fsum(exps)
    return [e / total for e in exps]


def ref_best_op(weights, rule):
    allowed = [j for j, op in enumerate(rule.ops) if op not in rule.exclude]
    return min(allowed, key=lambda j: (-weights[j], j))


def ref_topk(alpha, rule):
    """Brute force: of all k-subsets of a node's edges, the one whose strengths sorted in
    decreasing order are lexicographically largest; equal vectors -> the subset with the
    lexicographically smallest rows. Kept edges listed by strength, then row."""
    weights = [ref_softmax(row) for row in alpha]
    allowed = [j for j, op in enumerate(rule.ops) if op not in rule.exclude]
    strength = [max(w[j] for j in allowed) for w in weights]
    edges = []
    for node in rule.nodes:
        rows = [r for r, (_, dst) in enumerate(rule.edges) if dst == node]
        if not rows:
            continue
        best = max(
            combinations(rows, rule.k),
            key=lambda subset: (sorted((strength[r] for r in subset), reverse=True),
                                [-r for r in subset]),
        )
        for r in sorted(best, key=lambda r: (-strength[r], r)):
            edges.append((rule.ops[ref_best_op(weights[r], rule)], *rule.edges[r]))
    return tuple(edges)


def ref_argmax(alpha, rule):
    return tuple(
        (rule.ops[ref_best_op(ref_softmax(row), rule)], *rule.edges[r])
        for r, row in enumerate(alpha)
    )


# --- random cells ---------------------------------------------------------------------------


@st.composite
def rules(draw, kinds=(TOPK,), with_limits=False):
    inputs = tuple(f"in{i}" for i in range(draw(st.integers(1, 3))))
    nodes = tuple(f"n{i}" for i in range(draw(st.integers(1, 5))))
    edges = []
    for i, node in enumerate(nodes):
        earlier = inputs + nodes[:i]
        sources = draw(st.sets(st.sampled_from(earlier), min_size=1))
        edges += [(src, node) for src in earlier if src in sources]
    ops = ("none",) + tuple(f"op{j}" for j in range(draw(st.integers(1, 7))))
    exclude = frozenset({"none"}) if draw(st.booleans()) else frozenset()
    fewest = min(Counter(dst for _, dst in edges).values())
    limits = ()
    if with_limits:
        allowed = [op for op in ops if op not in exclude]
        limited = draw(st.lists(st.sampled_from(allowed), min_size=1, unique=True))
        limits = tuple((op, draw(st.integers(0, 2))) for op in limited)
    return CellRule(
        inputs=inputs,
        nodes=nodes,
        edges=tuple(edges),
        ops=ops,
        kind=draw(st.sampled_from(kinds)),
        k=draw(st.integers(1, fewest)),
        exclude=exclude,
        limits=limits,
    )


# Small integers make ties (between edges and between ops) common, so tie-breaking is exercised.
alpha_values = st.one_of(
    st.integers(-3, 3).map(float),
    st.floats(-30, 30, allow_nan=False, allow_infinity=False),
)


def alphas(rule, values=alpha_values):
    row = st.lists(values, min_size=len(rule.ops), max_size=len(rule.ops))
    return st.lists(row, min_size=len(rule.edges), max_size=len(rule.edges))


def cases(kinds=(TOPK,), with_limits=False, values=alpha_values):
    return rules(kinds, with_limits).flatmap(
        lambda rule: st.tuples(st.just(rule), alphas(rule, values))
    )


def assert_well_formed(cell, rule):
    position = {name: i for i, name in enumerate(rule.names)}
    assert cell.output == rule.nodes and cell.reduce == rule.reduce
    for op, src, dst in cell.edges:
        assert op in rule.ops and op not in rule.exclude
        assert (src, dst) in rule.edges and position[src] < position[dst]
    if rule.kind == TOPK:
        for node in rule.nodes:
            sources = [src for _, src, dst in cell.edges if dst == node]
            assert len(sources) == rule.k == len(set(sources))
    else:
        assert [(src, dst) for _, src, dst in cell.edges] == list(rule.edges)
    assert check_genotype(Genotype("s", (("c", cell),)), {"c": rule}) == []


@FAST
@given(cases())
def test_topk_matches_brute_force(case):
    rule, alpha = case
    cell = derive_cell(alpha, rule)
    assert cell.edges == ref_topk(alpha, rule)
    assert_well_formed(cell, rule)


@FAST
@given(cases(kinds=(ARGMAX,)))
def test_argmax_keeps_every_edge_with_its_best_op(case):
    rule, alpha = case
    cell = derive_cell(alpha, rule)
    assert cell.edges == ref_argmax(alpha, rule)
    assert_well_formed(cell, rule)


@FAST
@given(cases(kinds=(TOPK, ARGMAX), values=st.integers(-4, 4)), st.data())
def test_adding_a_constant_to_a_row_changes_nothing(case, data):
    rule, alpha = case
    shifts = data.draw(st.lists(st.integers(-50, 50), min_size=len(alpha), max_size=len(alpha)))
    shifted = [[value + shift for value in row] for row, shift in zip(alpha, shifts, strict=True)]
    assert derive_cell(shifted, rule) == derive_cell(alpha, rule)


@FAST
@given(cases(kinds=(TOPK, ARGMAX), with_limits=True))
def test_limits_are_respected(case):
    rule, alpha = case
    limits = dict(rule.limits)
    has_unlimited_op = any(op not in rule.exclude and op not in limits for op in rule.ops)
    free = derive_cell(alpha, replace(rule, limits=()))
    try:
        cell = derive_cell(alpha, rule)
    except DerivationError as error:
        assert not has_unlimited_op, "an unlimited op on every edge makes the limits satisfiable"
        assert "cannot meet the limits" in str(error)
        return
    counts = Counter(op for op, _, _ in cell.edges)
    assert all(counts[op] <= limit for op, limit in rule.limits)
    assert_well_formed(cell, replace(rule, limits=()))
    free_counts = Counter(op for op, _, _ in free.edges)
    if all(free_counts[op] <= limit for op, limit in rule.limits):
        assert cell == free


def test_limit_forbids_the_weakest_op_and_rederives():
    # P-DARTS-style cap of one skip_connect. n1's skip (weight ~0.995) beats n0's (~0.976), so
    # skip is forbidden on in0 -> n0, and n0 now prefers sep_conv from in1.
    rule = CellRule(
        inputs=("in0", "in1"),
        nodes=("n0", "n1"),
        edges=(("in0", "n0"), ("in1", "n0"), ("in0", "n1"), ("in1", "n1"), ("n0", "n1")),
        ops=("none", "skip_connect", "sep_conv"),
        k=1,
        exclude=frozenset({"none"}),
        limits=(("skip_connect", 1),),
    )
    alpha = [[0, 5, 1], [0, 0, 2], [0, 0, 0], [0, 0, 0], [0, 6, 0]]
    assert derive_cell(alpha, replace(rule, limits=())).edges == (
        ("skip_connect", "in0", "n0"), ("skip_connect", "n0", "n1"),
    )
    assert derive_cell(alpha, rule).edges == (
        ("sep_conv", "in1", "n0"), ("skip_connect", "n0", "n1"),
    )


def test_limit_on_argmax_edges_and_unsatisfiable_limits():
    rule = CellRule(inputs=("a",), nodes=("n0",), edges=(("a", "n0"),), ops=("skip", "conv"),
                    kind=ARGMAX, limits=(("skip", 0),))
    assert derive_cell([[3.0, 0.0]], rule).edges == (("conv", "a", "n0"),)
    impossible = replace(rule, limits=(("skip", 0), ("conv", 0)))
    with pytest.raises(DerivationError, match=r"cannot meet the limits \(skip <= 0, conv <= 0\): "
                                              r"edge a -> n0 has no op left"):
        derive_cell([[3.0, 0.0]], impossible)
    topk = replace(impossible, kind=TOPK, k=1)
    with pytest.raises(DerivationError, match="node n0 has 0 edge.* needs k=1"):
        derive_cell([[3.0, 0.0]], topk)


def test_ties_go_to_earlier_rows_and_columns():
    alpha = [[0.0] * len(CNN_OPS) for _ in CNN_RULE.edges]
    cell = derive_cell(alpha, CNN_RULE)
    assert cell.edges == (
        ("max_pool_3x3", "c_k2", "n0"), ("max_pool_3x3", "c_k1", "n0"),
        ("max_pool_3x3", "c_k2", "n1"), ("max_pool_3x3", "c_k1", "n1"),
        ("max_pool_3x3", "c_k2", "n2"), ("max_pool_3x3", "c_k1", "n2"),
        ("max_pool_3x3", "c_k2", "n3"), ("max_pool_3x3", "c_k1", "n3"),
    )


# --- the published cells come back from α built to favour them ------------------------------


def favouring(cell, rule):
    """α whose DARTS derivation is `cell`: each node's i-th listed input gets 5 - i on its op;
    the excluded 'none' gets the largest α of all, which derivation must ignore."""
    alpha = [[0.0] * len(rule.ops) for _ in rule.edges]
    for row in alpha:
        row[rule.ops.index("none")] = 10.0
    for node in rule.nodes:
        for rank, (op, src) in enumerate(cell.inputs_of(node)):
            if (op, src, node) not in rule.fixed:
                alpha[rule.edges.index((src, node))][rule.ops.index(op)] = 5.0 - rank
    return alpha


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_derived_back(name):
    genotype = preset(name)
    rules = SPACE_RULES[genotype.space]
    alphas = {cell_type: favouring(genotype.cell(cell_type), rules[cell_type])
              for cell_type in rules}
    assert derive(genotype.space, alphas, rules) == genotype
    assert check_genotype(genotype, rules) == []


class Matrix:
    """Stands in for a tensor: only `.tolist()`."""

    def __init__(self, rows):
        self.rows = rows

    def tolist(self):
        return self.rows


def test_alpha_may_be_anything_with_tolist():
    alpha = favouring(preset("DARTS").cell("normal"), CNN_RULE)
    assert derive_cell(Matrix(alpha), CNN_RULE) == preset("DARTS").cell("normal")


def test_cells_come_out_in_rule_order():
    rules = {"reduce": CNN_RULE, "normal": CNN_RULE}
    alpha = [[0.0] * len(CNN_OPS) for _ in CNN_RULE.edges]
    genotype = derive("darts_cnn", {"normal": alpha, "reduce": alpha}, rules)
    assert genotype.cell_types == ("reduce", "normal")


# --- errors ---------------------------------------------------------------------------------


def zeros(rows=14, cols=8):
    return [[0.0] * cols for _ in range(rows)]


def with_value(row, col, value):
    alpha = zeros()
    alpha[row][col] = value
    return alpha


@pytest.mark.parametrize(
    ("alpha", "message"),
    [
        (zeros(13), r"^α has 13 row\(s\) but the cell has 14 searched edge\(s\); "
                    r"expected shape 14x8 \(searched edges x ops\)$"),
        ([*zeros(3), [0.0] * 7, *zeros(10)],
         r"^α row 3 \(edge c_k1 -> n1\) has 7 column\(s\) but the cell has 8 op\(s\); "
         r"expected shape 14x8"),
        (with_value(0, 1, math.nan), r"^α row 0 \(edge c_k2 -> n0\), op max_pool_3x3: nan is not "
                                     r"finite$"),
        (with_value(13, 7, -math.inf), r"^α row 13 \(edge n2 -> n3\), op dil_conv_5x5: -inf is "
                                       r"not finite$"),
        (with_value(2, 0, "1.0"), r"^α row 2 \(edge c_k2 -> n1\), op none: '1.0' is not a number$"),
        (3.0, r"^α must be a matrix, got float; expected shape 14x8"),
        ([0.0] * 14, r"^α row 0 \(edge c_k2 -> n0\) is a float, not a row; expected shape 14x8"),
        (Matrix([0.0]), r"^α has 1 row\(s\)"),
    ],
)
def test_bad_alpha(alpha, message):
    with pytest.raises(DerivationError, match=message):
        derive_cell(alpha, CNN_RULE)


def test_derive_names_the_cell_and_checks_cell_types():
    rules = SPACE_RULES["darts_cnn"]
    with pytest.raises(DerivationError, match=r"^cell 'reduce': α has 2 row\(s\)"):
        derive("darts_cnn", {"normal": zeros(), "reduce": zeros(2)}, rules)
    with pytest.raises(DerivationError, match=r"^α given for cell type\(s\) no rule names: "
                                              r"recurrent; no α for cell type\(s\): reduce "
                                              r"\(cell types: normal, reduce\)$"):
        derive("darts_cnn", {"normal": zeros(), "recurrent": zeros()}, rules)
    assert issubclass(DerivationError, ValueError)


RULE = {"inputs": ("a", "b"), "nodes": ("n0", "n1"), "ops": ("none", "conv"),
        "edges": (("a", "n0"), ("b", "n0"), ("a", "n1"), ("n0", "n1"))}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k": 3}, r"node n0 has 2 searched incoming edge\(s\), fewer than k=3"),
        ({"k": 0}, "k must be a positive integer, got 0"),
        ({"exclude": frozenset({"none", "conv"})}, "every op is excluded"),
        ({"exclude": frozenset({"pool"})}, r"excluded op\(s\) pool are not among the ops"),
        ({"edges": (("n1", "n0"), ("b", "n0"), ("a", "n1"))}, "edge n1 -> n0: n1 is not earlier "
                                                             "than n0"),
        ({"edges": (("a", "b"), ("a", "n0"), ("b", "n0"), ("n0", "n1"))},
         "edge a -> b: 'b' is not an intermediate node"),
        ({"edges": (("q", "n0"), ("a", "n0"), ("n0", "n1"))}, "edge q -> n0: unknown source 'q'"),
        ({"edges": (("a", "n0"), ("a", "n0"), ("n0", "n1"))}, r"duplicate edge\(s\): a -> n0"),
        ({"edges": (("a", "n0"), ("b", "n0"))}, r"node\(s\) n1 have no incoming edge"),
        ({"kind": "sample"}, "unknown kind 'sample'; kinds: topk, argmax"),
        ({"reduce": "sum"}, "unknown reduce 'sum'"),
        ({"output": ("n0", "n7")}, r"unknown output node\(s\): n7"),
        ({"reduce": "node"}, "reduce 'node' takes one output node, got 2"),
        ({"limits": (("pool", 1),)}, "limit on unknown op 'pool'"),
        ({"limits": (("conv", -1),)}, "limit for 'conv' must be a non-negative integer"),
        ({"ops": ("conv", "conv")}, r"duplicate op\(s\): conv"),
        ({"nodes": ("n0", "a")}, r"duplicate node name\(s\): a"),
        ({"fixed": (("init", "a", "n0"),)}, r"duplicate edge\(s\): a -> n0"),
    ],
)
def test_bad_rules(change, message):
    with pytest.raises(DerivationError, match="^invalid cell rule: .*" + message):
        CellRule(**{**RULE, **change})


def test_rule_errors_are_all_listed():
    with pytest.raises(DerivationError) as info:
        CellRule(**{**RULE, "k": 3, "reduce": "sum", "kind": "topk"})
    assert "fewer than k=3" in str(info.value) and "unknown reduce 'sum'" in str(info.value)


# --- checking genotypes written by users ----------------------------------------------------


def edited(name, cell_type, edges=None, output=None):
    genotype = preset(name)
    cell = genotype.cell(cell_type)
    cell = replace(cell, edges=cell.edges if edges is None else edges,
                   output=cell.output if output is None else output)
    return replace(genotype, cells=tuple(
        (ct, cell if ct == cell_type else c) for ct, c in genotype.cells
    ))


NORMAL = preset("DARTS").cell("normal").edges
RECURRENT = preset("DARTS_RNN").cell("recurrent").edges


@pytest.mark.parametrize(
    ("genotype", "expected"),
    [
        (edited("DARTS", "normal", edges=(("sep_conv_3x4", "c_k2", "n0"), *NORMAL[1:])),
         ["normal: edge sep_conv_3x4(c_k2) -> n0: unknown op 'sep_conv_3x4'; did you mean "
          "sep_conv_3x3? ops: none, max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3, "
          "sep_conv_5x5, dil_conv_3x3, dil_conv_5x5",
          "normal: node n0 has 1 searched input(s), expected k=2"]),
        (edited("DARTS", "normal", edges=(("none", "c_k2", "n0"), *NORMAL[1:])),
         ["normal: edge none(c_k2) -> n0: op 'none' is excluded from this cell",
          "normal: node n0 has 1 searched input(s), expected k=2"]),
        (edited("DARTS", "normal", edges=(*NORMAL[:7], ("dil_conv_3x3", "n9", "n3"))),
         ["normal: edge dil_conv_3x3(n9) -> n3: unknown node(s) n9; nodes: c_k2, c_k1, n0, n1, "
          "n2, n3",
          "normal: node n3 has 1 searched input(s), expected k=2"]),
        (edited("DARTS", "normal", edges=(*NORMAL[:7], ("skip_connect", "n3", "n3"))),
         ["normal: edge skip_connect(n3) -> n3: n3 is not earlier than n3",
          "normal: node n3 has 1 searched input(s), expected k=2"]),
        (edited("DARTS", "normal", edges=(*NORMAL, ("skip_connect", "c_k2", "c_k1"))),
         ["normal: edge skip_connect(c_k2) -> c_k1: 'c_k1' is not an intermediate node"]),
        (edited("DARTS", "normal", edges=(*NORMAL[:7], ("max_pool_3x3", "c_k2", "n3"))),
         ["normal: edge max_pool_3x3(c_k2) -> n3: duplicate edge c_k2 -> n3",
          "normal: node n3 has 1 searched input(s), expected k=2"]),
        (edited("DARTS", "normal", edges=(*NORMAL, ("max_pool_3x3", "n1", "n3"))),
         ["normal: node n3 has 3 searched input(s), expected k=2"]),
        (edited("DARTS", "reduce", output=("n0", "n1", "n2")),
         ["reduce: output concat(n0, n1, n2) does not match the space's concat(n0, n1, n2, n3)"]),
        (edited("DARTS_RNN", "recurrent", edges=RECURRENT[1:]),
         ["recurrent: missing fixed edge highway_init(x) -> s0"]),
        (edited("DARTS_RNN", "recurrent", edges=(("tanh", "x", "s0"), *RECURRENT[1:])),
         ["recurrent: edge tanh(x) -> s0: this edge is fixed to highway_init"]),
        (edited("DARTS_RNN", "recurrent", edges=(*RECURRENT[:2], ("relu", "x", "s1"),
                                                 *RECURRENT[3:])),
         ["recurrent: edge relu(x) -> s1: x -> s1 is not a searched edge of this cell",
          "recurrent: node s1 has 0 searched input(s), expected k=1"]),
    ],
)
def test_check_genotype_lists_every_problem(genotype, expected):
    assert check_genotype(genotype, SPACE_RULES[genotype.space]) == expected


def test_check_genotype_cell_types_and_argmax_coverage():
    darts = preset("DARTS")
    only_normal = Genotype("darts_cnn", darts.cells[:1])
    assert check_genotype(only_normal, SPACE_RULES["darts_cnn"]) == ["missing cell type 'reduce'"]
    extra = Genotype("darts_cnn", (*darts.cells, ("stem", darts.cell("normal"))))
    assert check_genotype(extra, SPACE_RULES["darts_cnn"]) == [
        "unknown cell type 'stem'; cell types: normal, reduce"
    ]
    rule = CellRule(**RULE, kind=ARGMAX)
    cell = CellGenotype(edges=(("conv", "a", "n0"), ("conv", "n0", "n1")), output=("n0", "n1"),
                        reduce="concat")
    assert check_genotype(Genotype("s", (("c", cell),)), {"c": rule}) == [
        "c: missing edge b -> n0: every searched edge keeps an op",
        "c: missing edge a -> n1: every searched edge keeps an op",
    ]


def test_pc_darts_strengths_without_beta_name_what_is_missing():
    """`spacec derive SPACE --alphas A.json --method pc_darts` with α alone ended in a KeyError
    traceback."""
    import spacec
    from spacec.arch.derive import DerivationError, derive

    compiled = spacec.load("nas_bench_201")
    alpha = [[0.1] * 5 for _ in range(6)]
    with pytest.raises(DerivationError, match="need the cell's per-edge 'beta' beside α"):
        derive("nas_bench_201", {"normal": alpha}, compiled.rules, strengths="edge_normalized")
