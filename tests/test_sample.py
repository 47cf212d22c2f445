"""Random genotypes (spacec.arch.sample) and the methods' derivation options (spacec.arch.derive).

Sampling must be uniform over the cells a rule allows: a χ² test on small rules (fixed seed)
checks it; every sample of every shipped space fits its rule; `exclude` and `limits` hold.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace

import pytest

import spacec
from spacec.arch.derive import (
    CellRule,
    DerivationError,
    DeriveOptions,
    check_genotype,
    derive_cell,
    edge_normalized_strengths,
    sigmoid_strengths,
    softmax,
)
from spacec.arch.sample import count_cells, sample_cell, sample_genotype

# Two inputs, two nodes (2 + 3 searched edges), three ops one of which is excluded.
SMALL_TOPK = CellRule(
    inputs=("a", "b"), nodes=("n0", "n1"),
    edges=(("a", "n0"), ("b", "n0"), ("a", "n1"), ("b", "n1"), ("n0", "n1")),
    ops=("none", "conv", "pool"), kind="topk", k=2, exclude=frozenset({"none"}),
)
SMALL_ARGMAX = CellRule(
    inputs=("x",), nodes=("n0", "n1"), edges=(("x", "n0"), ("x", "n1"), ("n0", "n1")),
    ops=("none", "skip", "conv"), kind="argmax",
)


def chi_square_critical(df: int, z: float = 3.719) -> float:
    """The χ² quantile of `df` degrees of freedom at the normal quantile `z` (3.719: p = 1e-4),
    by the Wilson-Hilferty approximation (accurate to well under 1% for df >= 3)."""
    h = 2 / (9 * df)
    return df * (1 - h + z * math.sqrt(h)) ** 3


def assert_uniform(rule: CellRule, draws: int, exclude: bool = True) -> None:
    rng = random.Random(7)
    counts = Counter(sample_cell(rule, rng, exclude).edges for _ in range(draws))
    cells = count_cells(rule, exclude)
    assert len(counts) == cells  # every allowed cell comes up
    expected = draws / cells
    statistic = sum((counts[cell] - expected) ** 2 / expected for cell in counts)
    assert statistic < chi_square_critical(cells - 1), (statistic, cells)


def test_topk_samples_are_uniform_over_the_allowed_cells():
    # node n0: C(2,2)·2² = 4 cells, node n1: C(3,2)·2² = 12; 48 in all.
    assert count_cells(SMALL_TOPK) == 48
    assert_uniform(SMALL_TOPK, draws=24_000)


def test_argmax_samples_are_uniform_and_keep_none_when_allowed():
    assert count_cells(SMALL_ARGMAX) == 27
    assert_uniform(SMALL_ARGMAX, draws=13_500)


def test_exclude_is_respected_unless_switched_off():
    rng = random.Random(0)
    ops = {op for _ in range(300) for op, _, _ in sample_cell(SMALL_TOPK, rng).edges}
    assert ops == {"conv", "pool"}
    ops = {op for _ in range(300) for op, _, _ in sample_cell(SMALL_TOPK, rng, False).edges}
    assert ops == {"none", "conv", "pool"}
    assert count_cells(SMALL_TOPK, exclude=False) == 3**2 * 3 * 3**2


def test_limits_are_respected_and_stay_uniform_over_the_cells_that_meet_them():
    limited = replace(SMALL_TOPK, limits=(("conv", 1),))
    rng = random.Random(3)
    draws = [sample_cell(limited, rng) for _ in range(12_000)]
    assert all(sum(op == "conv" for op, _, _ in cell.edges) <= 1 for cell in draws)
    counts = Counter(cell.edges for cell in draws)
    # cells with at most one conv among their 4 edges: 1 (none) + 4 (one) ways over the ops,
    # times the edge subsets (1 for n0, 3 for n1).
    assert len(counts) == 3 * (1 + 4)
    expected = len(draws) / len(counts)
    statistic = sum((n - expected) ** 2 / expected for n in counts.values())
    assert statistic < chi_square_critical(len(counts) - 1)


def test_unreachable_limits_raise():
    impossible = replace(SMALL_ARGMAX, ops=("skip",), limits=(("skip", 1),))
    with pytest.raises(DerivationError, match="no cell meeting the limits"):
        sample_cell(impossible, random.Random(0))


@pytest.mark.parametrize("name", sorted(spacec.shipped_spaces()))
def test_samples_of_every_shipped_space_fit_its_rules_and_compile(name):
    compiled = spacec.load(name)
    rng = random.Random(1)
    for _ in range(5):
        genotype = sample_genotype(compiled.name, compiled.rules, rng)
        assert check_genotype(genotype, compiled.rules) == []
    compiled.discrete_source(genotype)  # a derived network can be generated from it


def test_the_same_seed_gives_the_same_samples():
    rules = spacec.load("darts_cnn").rules
    first = [sample_genotype("darts_cnn", rules, random.Random(5)) for _ in range(2)]
    assert first[0] == first[1]
    assert sample_genotype("darts_cnn", rules, random.Random(6)) != first[0]


# ---------------------------------------------------------------- derivation options


ALPHA = [[0.0, 2.0, 1.9],   # a -> n0
         [0.0, 0.1, 0.0],   # b -> n0
         [5.0, 1.0, 0.9],   # a -> n1: `none` is its strongest
         [0.0, 0.2, 0.1],   # b -> n1
         [0.0, 0.3, 0.0]]   # n0 -> n1


def test_the_default_options_are_the_space_rule():
    cell = derive_cell(ALPHA, SMALL_TOPK)
    assert cell.edges == (("conv", "a", "n0"), ("conv", "b", "n0"),
                          ("conv", "n0", "n1"), ("conv", "b", "n1"))
    assert check_genotype_cell(cell) == []


def check_genotype_cell(cell):
    from spacec.arch.genotype import Genotype

    return check_genotype(Genotype("s", (("c", cell),)), {"c": SMALL_TOPK})


def test_keep_none_lets_none_win_an_edge():
    cell = derive_cell(ALPHA, SMALL_TOPK, options=DeriveOptions(keep_none=True))
    assert ("none", "a", "n1") in cell.edges
    assert any("excluded" in p for p in check_genotype_cell(cell))


def test_pairs_may_take_two_ops_from_one_input():
    cell = derive_cell(ALPHA, SMALL_TOPK, options=DeriveOptions(pairs=True))
    assert cell.edges[:2] == (("conv", "a", "n0"), ("pool", "a", "n0"))
    assert any("duplicate edge" in p for p in check_genotype_cell(cell))


def test_threshold_drops_weak_ops():
    strengths = sigmoid_strengths({"alpha": ALPHA}, SMALL_TOPK)
    cell = derive_cell(ALPHA, SMALL_TOPK, "sigmoid", DeriveOptions(threshold=0.85))
    kept = {(src, dst) for _, src, dst in cell.edges}
    assert kept == {("a", "n0")}  # σ(2.0) = 0.88; the others are below 0.85
    assert strengths[0][1] >= 0.85 > strengths[2][1]
    with pytest.raises(DerivationError, match="threshold"):
        DeriveOptions(threshold=1.5)


def test_options_round_trip_and_reject_unknown_keys():
    options = DeriveOptions(keep_none=True, threshold=0.5)
    assert DeriveOptions.from_dict(options.to_dict()) == options
    assert DeriveOptions.from_dict(None) == DeriveOptions()
    with pytest.raises(DerivationError, match="unknown derivation option"):
        DeriveOptions.from_dict({"pairz": True})


def test_edge_normalized_strengths_weigh_softmax_alpha_by_a_node_softmax_of_beta():
    beta = [0.5, -0.5, 1.0, 0.0, 2.0]
    weights = edge_normalized_strengths({"alpha": ALPHA, "beta": beta}, SMALL_TOPK)
    edge = softmax(beta[:2]) + softmax(beta[2:])
    for row, values in enumerate(ALPHA):
        assert weights[row] == pytest.approx([w * edge[row] for w in softmax(values)])
    with pytest.raises(DerivationError, match="per-edge tensor has 4 value"):
        edge_normalized_strengths({"alpha": ALPHA, "beta": beta[:4]}, SMALL_TOPK)


def test_sigmoid_strengths_are_independent_per_candidate():
    weights = sigmoid_strengths({"alpha": ALPHA}, SMALL_TOPK)
    for row, values in zip(weights, ALPHA, strict=True):
        assert row == pytest.approx([1 / (1 + math.exp(-v)) for v in values])
    assert sigmoid_strengths({"alpha": [[-800.0, 800.0, 0.0]] * 5}, SMALL_TOPK)[0] == [
        0.0, 1.0, 0.5]

