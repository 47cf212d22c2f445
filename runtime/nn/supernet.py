"""What every compiled supernet shares: its architecture parameters and the cell-input adapters.

A generated supernet class mixes in `SearchSpaceMixin` and defines `SPACE` (the space's name),
`RULES` (cell type -> `CellRule`, the derivation rule) and `self.alphas`, an `nn.ParameterDict`
holding one α tensor [edges, ops] per cell type. α are registered parameters (they follow `.to()`
and `state_dict`) but are kept apart from the network weights: `arch_parameters()` returns them,
`weights()` everything else.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from spacec.arch.derive import CellRule, derive
from spacec.arch.genotype import Genotype
from spacec.arch.layout import CellInput
from spacec.runtime.nn import blocks

ALPHA_INIT_SCALE = 1e-3  # α ~ 1e-3 * N(0, 1), as the DARTS code initialises it


def new_alphas(shapes: Mapping[str, tuple[int, int]]) -> nn.ParameterDict:
    return nn.ParameterDict(
        {
            name: nn.Parameter(ALPHA_INIT_SCALE * torch.randn(*shape))
            for name, shape in shapes.items()
        }
    )


class SearchSpaceMixin:
    """Architecture-parameter bookkeeping for a generated supernet (an nn.Module)."""

    SPACE: str
    RULES: Mapping[str, CellRule]
    alphas: nn.ParameterDict

    def arch_parameters(self) -> dict[str, nn.Parameter]:
        """Cell type -> α [edges, ops]; rows in the space's edge order, columns in its op order."""
        return dict(self.alphas.items())

    def named_weights(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if not n.startswith("alphas."))

    def weights(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weights()]

    def arch_weights(self) -> dict[str, torch.Tensor]:
        """The softmax relaxation: each edge's mixing weights over its candidate ops."""
        return {name: F.softmax(alpha, dim=-1) for name, alpha in self.alphas.items()}

    def genotype(self) -> Genotype:
        """Derive the discrete architecture from the current α by the space's rules."""
        alphas = {name: alpha.detach().cpu().tolist() for name, alpha in self.alphas.items()}
        return derive(self.SPACE, alphas, self.RULES)


def cell_input(
    preprocess: tuple[str, Mapping],
    reduce_input: tuple[str, Mapping],
    source: CellInput,
    C: int,
    affine: bool,
) -> nn.Module:
    """Bring one cell input to the cell's width and resolution (DARTS preprocess0/1)."""
    name, args = reduce_input if source.behind else preprocess
    return blocks.BLOCKS[name].builder(source.channels, C, 1 + source.behind, affine, **args)
