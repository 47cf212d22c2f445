"""Genotype data: presets against the published DARTS cells, printing, and dict/JSON round trips."""

import ast
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spacec.arch.genotype import (
    PRESETS,
    REDUCTIONS,
    CellGenotype,
    Genotype,
    GenotypeError,
    from_darts,
    from_darts_rnn,
    preset,
)

FAST = settings(max_examples=100, deadline=None, database=None)


def test_genotype_module_is_pure_python():
    tree = ast.parse((Path(__file__).parents[1] / "spacec" / "arch" / "genotype.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {
        "__future__", "difflib", "json", "collections", "dataclasses", "typing", "pathlib",
        "spacec",
    }


def test_preset_names():
    assert list(PRESETS) == ["DARTS_V1", "DARTS_V2", "DARTS", "DARTS_RNN_V1", "DARTS_RNN"]
    assert PRESETS["DARTS"] is PRESETS["DARTS_V2"]
    assert {name: g.space for name, g in PRESETS.items()} == {
        "DARTS_V1": "darts_cnn",
        "DARTS_V2": "darts_cnn",
        "DARTS": "darts_cnn",
        "DARTS_RNN_V1": "darts_rnn",
        "DARTS_RNN": "darts_rnn",
    }


# Written out by hand from quark0/darts cnn/genotypes.py DARTS_V2 (index 0 = c_k2, 1 = c_k1,
# 2.. = n0..): normal pairs (sep3,0) (sep3,1) | (sep3,0) (sep3,1) | (sep3,1) (skip,0) |
# (skip,0) (dil3,2); reduce (max,0) (max,1) | (skip,2) (max,1) | (max,0) (skip,2) | (skip,2) (max,1).
DARTS_V2_NORMAL = (
    ("sep_conv_3x3", "c_k2", "n0"), ("sep_conv_3x3", "c_k1", "n0"),
    ("sep_conv_3x3", "c_k2", "n1"), ("sep_conv_3x3", "c_k1", "n1"),
    ("sep_conv_3x3", "c_k1", "n2"), ("skip_connect", "c_k2", "n2"),
    ("skip_connect", "c_k2", "n3"), ("dil_conv_3x3", "n0", "n3"),
)
DARTS_V2_REDUCE = (
    ("max_pool_3x3", "c_k2", "n0"), ("max_pool_3x3", "c_k1", "n0"),
    ("skip_connect", "n0", "n1"), ("max_pool_3x3", "c_k1", "n1"),
    ("max_pool_3x3", "c_k2", "n2"), ("skip_connect", "n0", "n2"),
    ("skip_connect", "n0", "n3"), ("max_pool_3x3", "c_k1", "n3"),
)


def test_darts_v2_preset_matches_the_paper():
    darts = preset("DARTS")
    assert darts.cell_types == ("normal", "reduce")
    assert darts.cell("normal") == CellGenotype(
        edges=DARTS_V2_NORMAL, output=("n0", "n1", "n2", "n3"), reduce="concat"
    )
    assert darts.cell("reduce") == CellGenotype(
        edges=DARTS_V2_REDUCE, output=("n0", "n1", "n2", "n3"), reduce="concat"
    )


def test_darts_v1_preset_matches_the_paper():
    # quark0/darts cnn/genotypes.py DARTS_V1 (first-order search).
    normal = preset("DARTS_V1").cell("normal")
    assert normal.edges[:4] == (
        ("sep_conv_3x3", "c_k1", "n0"), ("sep_conv_3x3", "c_k2", "n0"),
        ("skip_connect", "c_k2", "n1"), ("sep_conv_3x3", "c_k1", "n1"),
    )
    assert normal.edges[-1] == ("skip_connect", "n0", "n3")
    reduce = preset("DARTS_V1").cell("reduce")
    assert reduce.edges[-1] == ("avg_pool_3x3", "c_k2", "n3")


def test_darts_rnn_preset_matches_the_paper():
    # quark0/darts rnn/genotypes.py DARTS_V2: (sigmoid,0) (relu,1) (relu,1) (identity,1)
    # (tanh,2) (sigmoid,5) (tanh,3) (relu,5), concat range(1, 9).
    cell = preset("DARTS_RNN").cell("recurrent")
    assert cell.edges == (
        ("highway_init", "x", "s0"), ("highway_init", "h_prev", "s0"),
        ("sigmoid", "s0", "s1"), ("relu", "s1", "s2"), ("relu", "s1", "s3"),
        ("identity", "s1", "s4"), ("tanh", "s2", "s5"), ("sigmoid", "s5", "s6"),
        ("tanh", "s3", "s7"), ("relu", "s5", "s8"),
    )
    assert cell.output == tuple(f"s{i}" for i in range(1, 9))
    assert cell.reduce == "mean"
    v1 = preset("DARTS_RNN_V1").cell("recurrent")
    assert [op for op, _, _ in v1.edges[2:]] == [
        "relu", "relu", "tanh", "relu", "relu", "identity", "relu", "relu"
    ]
    assert [src for _, src, _ in v1.edges[2:]] == ["s0", "s1", "s2", "s3", "s4", "s1", "s5", "s1"]


def test_unknown_preset_lists_names():
    with pytest.raises(GenotypeError, match=r"unknown preset 'DART'; did you mean DARTS\? "
                                            r"known presets: DARTS_V1, DARTS_V2, DARTS, "):
        preset("DART")
    with pytest.raises(ValueError, match="known presets"):
        preset("zzz")


def test_darts_v2_str():
    assert str(preset("DARTS")) == "\n".join([
        "space darts_cnn",
        "normal:",
        "  n0 <- sep_conv_3x3(c_k2), sep_conv_3x3(c_k1)",
        "  n1 <- sep_conv_3x3(c_k2), sep_conv_3x3(c_k1)",
        "  n2 <- sep_conv_3x3(c_k1), skip_connect(c_k2)",
        "  n3 <- skip_connect(c_k2), dil_conv_3x3(n0)",
        "  output concat(n0, n1, n2, n3)",
        "reduce:",
        "  n0 <- max_pool_3x3(c_k2), max_pool_3x3(c_k1)",
        "  n1 <- skip_connect(n0), max_pool_3x3(c_k1)",
        "  n2 <- max_pool_3x3(c_k2), skip_connect(n0)",
        "  n3 <- skip_connect(n0), max_pool_3x3(c_k1)",
        "  output concat(n0, n1, n2, n3)",
    ])


def test_rnn_str_lists_the_fixed_init_node_first():
    lines = str(preset("DARTS_RNN")).splitlines()
    assert lines[:4] == [
        "space darts_rnn", "recurrent:", "  s0 <- highway_init(x), highway_init(h_prev)",
        "  s1 <- sigmoid(s0)",
    ]
    assert lines[-1] == "  output mean(s1, s2, s3, s4, s5, s6, s7, s8)"


def test_a_single_output_node_prints_as_the_space_writes_it():
    cell = CellGenotype(edges=(("skip", "a", "z"),), output=("z",), reduce="node")
    assert str(cell).splitlines() == ["z <- skip(a)", "output z"]  # `output z`, not node(z)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: from_darts([("a", 0)], [2], [("a", 0), ("b", 1)], [2]),
         "normal: DARTS CNN cells list two .* got 1 pairs"),
        (lambda: from_darts([("a", 0), ("b", 2)], [2], [("a", 0), ("b", 1)], [2]),
         r"normal: state index 2 is not one of 0..1"),
        (lambda: from_darts([("a", 0), ("b", 1)], [2], [("a", 0), ("b", 1)], [3]),
         r"reduce_concat: state index 3 is not one of 0..2"),
        (lambda: from_darts_rnn([("relu", 0), ("tanh", 2)], [1, 2]),
         r"recurrent: state index 2 is not one of 0..1"),
        (lambda: from_darts_rnn([("relu", 0)], [0, 2]), r"concat: state index 2 is not one of"),
    ],
)
def test_darts_converters_reject_bad_indices(call, message):
    with pytest.raises(GenotypeError, match=message):
        call()


def test_cell_lookup():
    darts = preset("DARTS")
    assert darts.cell("reduce") is darts.cells[1][1]
    with pytest.raises(GenotypeError, match="no cell type 'recurrent'; cell types: normal, reduce"):
        darts.cell("recurrent")


def test_constructor_checks():
    cell = preset("DARTS").cell("normal")
    with pytest.raises(GenotypeError, match="duplicate cell type.*normal"):
        Genotype(space="s", cells=(("normal", cell), ("normal", cell)))
    with pytest.raises(GenotypeError, match="unknown reduce 'sum'; expected one of concat, mean"):
        CellGenotype(edges=(), output=("n0",), reduce="sum")
    with pytest.raises(GenotypeError, match="reduce 'node' takes exactly one output node, got 2"):
        CellGenotype(edges=(), output=("n0", "n1"), reduce="node")
    with pytest.raises(GenotypeError, match="at least one output"):
        CellGenotype(edges=(), output=(), reduce="concat")


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip(name):
    genotype = PRESETS[name]
    assert Genotype.from_dict(genotype.to_dict()) == genotype
    assert Genotype.from_json(genotype.to_json()) == genotype
    assert Genotype.from_json(genotype.to_json(indent=None)) == genotype


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789-ÄΩ", min_size=1, max_size=8)


@st.composite
def cells(draw):
    edges = draw(st.lists(st.tuples(names, names, names), max_size=10).map(tuple))
    reduce = draw(st.sampled_from(REDUCTIONS))
    size = 1 if reduce == "node" else draw(st.integers(1, 5))
    output = tuple(draw(st.lists(names, min_size=size, max_size=size)))
    return CellGenotype(edges=edges, output=output, reduce=reduce)


genotypes = st.builds(
    Genotype,
    space=names,
    cells=st.dictionaries(names, cells(), min_size=1, max_size=3).map(lambda d: tuple(d.items())),
)


@FAST
@given(genotypes)
def test_random_genotypes_round_trip(genotype):
    assert Genotype.from_dict(genotype.to_dict()) == genotype
    text = genotype.to_json()
    assert Genotype.from_json(text) == genotype
    assert Genotype.from_json(text).to_json() == text
    assert Genotype.from_dict(json.loads(text)) == genotype


def _valid_dict():
    return preset("DARTS").to_dict()


def _edit(path, value):
    data = _valid_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], r"^genotype: expected a mapping with keys space, cells, got list \[1, 2\]$"),
        (_edit(["space"], _DELETE), r"^genotype: missing key\(s\) space$"),
        (_edit(["extra"], 1), r"^genotype: unknown key\(s\) extra; expected space, cells$"),
        (_edit(["space"], 3), r"^space: expected a non-empty string, got int 3$"),
        (_edit(["space"], ""), r"^space: expected a non-empty string, got str ''$"),
        (_edit(["cells"], {}), r"^cells: expected a non-empty mapping"),
        (_edit(["cells"], [["normal"]]), r"^cells: expected a non-empty mapping .* got list"),
        (_edit(["cells", "normal", "reduce"], _DELETE),
         r"^cells\.normal: missing key\(s\) reduce$"),
        (_edit(["cells", "normal", "edges"], "sep_conv_3x3"),
         r"^cells\.normal\.edges: expected a list, got str 'sep_conv_3x3'$"),
        (_edit(["cells", "normal", "edges", 2], ["skip_connect", "c_k2"]),
         r"^cells\.normal\.edges\[2\]: expected \[op, src, dst\], got 2 item\(s\)$"),
        (_edit(["cells", "normal", "edges", 1, 0], None),
         r"^cells\.normal\.edges\[1\]\[0\]: expected a non-empty string, got NoneType None$"),
        (_edit(["cells", "reduce", "output"], "n0"),
         r"^cells\.reduce\.output: expected a list, got str 'n0'$"),
        (_edit(["cells", "reduce", "output", 3], 5),
         r"^cells\.reduce\.output\[3\]: expected a non-empty string, got int 5$"),
        (_edit(["cells", "reduce", "reduce"], "sum"),
         r"^cells\.reduce: unknown reduce 'sum'; expected one of concat, mean, node$"),
        (_edit(["cells", "reduce", "reduce"], "node"),
         r"^cells\.reduce: reduce 'node' takes exactly one output node, got 4$"),
    ],
)
def test_from_dict_errors(data, message):
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_dict(data)


def test_from_json_errors():
    with pytest.raises(GenotypeError, match=r"not valid JSON: line 1 column 2"):
        Genotype.from_json("{oops")
    with pytest.raises(GenotypeError, match=r"duplicate key\(s\) in genotype JSON: space"):
        Genotype.from_json('{"space": "a", "space": "b", "cells": {}}')
    with pytest.raises(GenotypeError, match=r"^genotype: expected a mapping"):
        Genotype.from_json("null")
    assert issubclass(GenotypeError, ValueError)


def test_a_run_directory_without_a_genotype_is_named_so(tmp_path):
    from spacec.arch.genotype import resolve

    (tmp_path / "config.yaml").write_text("space: {}\n")  # a search that failed in epoch 1
    with pytest.raises(GenotypeError, match="a run directory without genotype.json"):
        resolve(str(tmp_path))
