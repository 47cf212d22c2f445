"""Random genotypes of a compiled space: uniform over the discrete architectures its rules allow.

Random search (Li & Talwalkar, UAI 2019) needs architectures drawn uniformly from the space the
derivation rule describes, both to train paths of a weight-sharing supernet (`random_ws`) and to
pick candidates trained from scratch (the `random` baseline). Pure Python (no torch): a caller
passes a `random.Random`, whose state it can save and restore.

Per cell type and `rule.kind`:

* ``topk``: every intermediate node with searched incoming edges keeps `k` of them, chosen
  uniformly among the k-subsets of its edges, and each kept edge one op chosen uniformly among
  the allowed ops. Every (subset, ops) pair is equally likely, and distinct pairs are distinct
  genotypes, so the cell is uniform over the cells the rule allows.
* ``argmax``: every searched edge keeps one op, uniformly among the allowed ops.

The allowed ops are `rule.ops` less `rule.exclude` (or every op with ``exclude=False``: Li &
Talwalkar's sampler allows `none`, randomNAS_release darts_wrapper_discrete.py:258-272). A cell
that breaks `rule.limits` is drawn again (rejection keeps the distribution uniform over the
cells that meet them); a rule whose limits are (almost) never met raises `DerivationError`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from math import comb

from spacec.arch.derive import ARGMAX, CellRule, DerivationError
from spacec.arch.genotype import CellGenotype, Genotype

MAX_ATTEMPTS = 10_000  # draws of one cell before the limits are declared unreachable


def allowed_ops(rule: CellRule, exclude: bool = True) -> tuple[str, ...]:
    """The ops a sampled edge may carry, in the rule's column order."""
    return tuple(op for op in rule.ops if not exclude or op not in rule.exclude)


def sample_cell(rule: CellRule, rng: random.Random, exclude: bool = True) -> CellGenotype:
    """One cell drawn uniformly among those `rule` allows (see the module docstring)."""
    ops = allowed_ops(rule, exclude)
    for _ in range(MAX_ATTEMPTS):
        searched = _draw(rule, rng, ops)
        if _meets_limits(searched, rule):
            return CellGenotype(edges=tuple(rule.fixed) + searched, output=rule.output_nodes,
                                reduce=rule.reduce)
    limits = ", ".join(f"{op} <= {limit}" for op, limit in rule.limits)
    raise DerivationError(f"no cell meeting the limits ({limits}) in {MAX_ATTEMPTS} draws")


def _draw(rule: CellRule, rng: random.Random, ops: tuple[str, ...]) -> tuple:
    if rule.kind == ARGMAX:
        rows = list(range(len(rule.edges)))
    else:
        rows = []
        for node in rule.nodes:
            incoming = rule.rows_into(node)
            if incoming:
                rows.extend(sorted(rng.sample(incoming, rule.k)))
    return tuple((rng.choice(ops), *rule.edges[row]) for row in rows)


def _meets_limits(edges: tuple, rule: CellRule) -> bool:
    counts = Counter(op for op, _, _ in edges)
    return all(counts[op] <= limit for op, limit in rule.limits)


def sample_genotype(space: str, rules: Mapping[str, CellRule], rng: random.Random,
                    exclude: bool = True) -> Genotype:
    """A genotype with every cell type drawn independently, cells in `rules` order."""
    return Genotype(space=space, cells=tuple((name, sample_cell(rule, rng, exclude))
                                             for name, rule in rules.items()))


def count_cells(rule: CellRule, exclude: bool = True) -> int:
    """How many cells `rule` allows, ignoring its limits (for tests and reports)."""
    ops = len(allowed_ops(rule, exclude))
    if rule.kind == ARGMAX:
        return ops ** len(rule.edges)
    total = 1
    for node in rule.nodes:
        incoming = len(rule.rows_into(node))
        if incoming:
            total *= comb(incoming, rule.k) * ops ** rule.k
    return total

