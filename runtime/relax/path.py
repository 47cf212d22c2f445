"""Random search with weight sharing (Li & Talwalkar, UAI 2019): one sampled path at a time.

Source: liamcli/randomNAS_release searchers/random_weight_share.py:72-79. There is no α: every
training batch trains one discrete architecture, drawn uniformly among those the space's rule
allows (`spacec.arch.sample`), on the supernet's shared weights. The relaxation holds the
current architecture (`resample` draws the next, `use` sets one to score it) and gives each edge
the sampled column of its row, or None where the edge is not part of the architecture
(`spacec.runtime.relax.sampled`): only the architecture's candidates run, unweighted.

Its random stream is a `random.Random` seeded from the run's seed; its state, the current
architecture and the search's final choice (`chosen`, set by the strategy's ranking) travel in
`state_dict`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from spacec.arch.derive import CellRule
from spacec.arch.genotype import CellGenotype, Genotype
from spacec.arch.sample import sample_cell
from spacec.runtime.nn.ops import Candidate
from spacec.runtime.relax.base import Relaxation, register_relaxation, stream_seed
from spacec.runtime.relax.sampled import SampledEdge, SampledRows, mix_sampled


def path_rows(cell: CellGenotype, rule: CellRule) -> SampledRows:
    """Each α row's column in `cell` (None where the cell does not use the edge)."""
    chosen = {(src, dst): rule.ops.index(op) for op, src, dst in cell.edges
              if (src, dst) in rule.edges}
    return SampledRows(tuple(chosen.get(edge) for edge in rule.edges))


@register_relaxation("path")
class RandomPath(Relaxation):
    """The supernet runs the path of one architecture (module docstring)."""

    strengths = None  # no α: the run records its genotype
    all_candidates_used = False  # one candidate per edge runs

    def __init__(self, exclude: bool = True) -> None:
        self.exclude = exclude  # respect the rule's `exclude` when sampling
        self.rng = random.Random(stream_seed(0, "path"))
        self.cells: dict[str, CellGenotype] = {}
        self.chosen: Genotype | None = None  # the search's result, once ranked
        self._rows: dict[str, SampledRows] = {}

    def arch_shapes(self, rule: CellRule) -> dict[str, tuple[int, ...]]:
        return {}

    def seed(self, seed: int) -> None:
        self.rng.seed(stream_seed(seed, "path"))

    def sample(self, rules: Mapping[str, CellRule]) -> dict[str, CellGenotype]:
        """A fresh architecture from the relaxation's stream (the current one is unchanged)."""
        return {name: sample_cell(rule, self.rng, self.exclude) for name, rule in rules.items()}

    def resample(self, rules: Mapping[str, CellRule]) -> None:
        self.use(self.sample(rules), rules)

    def use(self, cells: Mapping[str, CellGenotype], rules: Mapping[str, CellRule]) -> None:
        """Run the path of `cells` (cell type -> cell) from now on."""
        self.cells = dict(cells)
        self._rows = {name: path_rows(cells[name], rule) for name, rule in rules.items()}

    def genotype(self, space: str) -> Genotype:
        """The current architecture."""
        return Genotype(space=space, cells=tuple(self.cells.items()))

    def space_weights(self, arch: Mapping[str, Mapping[str, Tensor]],
                      rules: Mapping[str, CellRule]) -> dict[str, Any]:
        if not self._rows:
            if self.cells:  # restored from a checkpoint
                self.use(self.cells, rules)
            else:
                self.resample(rules)
        return {cell: self._rows[cell] for cell in rules}

    def cell_weights(self, tensors: Mapping[str, Tensor], rule: CellRule) -> Any:
        raise NotImplementedError("the path relaxation weighs whole architectures "
                                  "(space_weights)")

    def edge(self, candidates: Sequence[Candidate], C_in: int, C_out: int, stride: int) -> nn.Module:
        return SampledEdge(candidates, C_in, C_out, stride)

    def mix_node(self, states: Tensor, c: Tensor, h: Tensor, weights: Any,
                 columns: Sequence[tuple[int, str]]) -> Tensor:
        return mix_sampled(states, c, h, weights, columns)

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {
            "rng": [version, list(internal), gauss],
            "cells": {name: cell.to_dict() for name, cell in self.cells.items()},
            "chosen": None if self.chosen is None else self.chosen.to_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if set(state) != {"rng", "cells", "chosen"}:
            raise ValueError(f"relaxation 'path' expects rng, cells and chosen, got "
                             f"{sorted(state)}")
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.cells = {name: CellGenotype.from_dict(cell, name)
                      for name, cell in state["cells"].items()}
        self._rows = {}
        self.chosen = None if state["chosen"] is None else Genotype.from_dict(state["chosen"])

    def __repr__(self) -> str:
        return f"RandomPath(exclude={self.exclude})"
