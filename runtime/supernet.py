"""What every compiled supernet shares: its relaxation, architecture tensors and cell inputs.

A generated supernet class mixes in `SearchSpaceMixin`, defines `SPACE` (the space's name) and
`RULES` (cell type -> `CellRule`, the derivation rule), sets `self.relaxation` (see
`spacec.runtime.relax`) before building its cells, and calls `init_arch()` last. The
architecture tensors live in `self.arch`, one ParameterDict per cell type, named by the
relaxation (α is "alpha"): registered parameters (they follow `.to()` and `state_dict`) kept
apart from the network weights. `arch_parameters()` lists them flat: a cell's α under the cell's
name, any other tensor under "<cell>.<tensor>"; `weights()` is everything else.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from spacec.arch.derive import ALPHA, RULE, CellRule, DeriveOptions, derive
from spacec.arch.genotype import Genotype
from spacec.arch.layout import CellInput
from spacec.runtime.nn import blocks, state
from spacec.runtime.nn.accelerate import accelerate_network
from spacec.runtime.relax import Relaxation, relaxation_of

ARCH = "arch"  # the module holding the architecture tensors; their names start with "arch."

__all__ = ["SearchSpaceMixin", "arch_key", "cell_input", "relaxation_of"]


def arch_key(cell: str, tensor: str) -> str:
    """The flat name of a cell's architecture tensor: the cell for α, else "cell.tensor"."""
    return cell if tensor == ALPHA else f"{cell}.{tensor}"


class SearchSpaceMixin:
    """Architecture-tensor bookkeeping for a generated supernet (an nn.Module)."""

    SPACE: str
    RULES: Mapping[str, CellRule]
    relaxation: Relaxation
    arch: nn.ModuleDict

    def init_arch(self) -> None:
        """Create every cell type's architecture tensors, in the space's cell order; then
        apply the supernet's speed-ups (spacec.runtime.nn.accelerate.accelerate_network)."""
        self.arch = nn.ModuleDict()
        for cell, rule in self.RULES.items():
            shapes = self.relaxation.arch_shapes(rule)
            self.arch[cell] = nn.ParameterDict(
                {name: nn.Parameter(self.relaxation.init_arch(name, shape))
                 for name, shape in shapes.items()}
            )
        accelerate_network(self)

    def arch_parameters(self) -> dict[str, nn.Parameter]:
        """Flat names -> architecture tensors (α [edges, ops]: rows in the space's edge order,
        columns in its op order)."""
        return {arch_key(cell, name): tensor
                for cell, tensors in self.arch.items() for name, tensor in tensors.items()}

    def named_weights(self) -> Iterator[tuple[str, nn.Parameter]]:
        # state.parameters: named_parameters() without walking the module tree (every step
        # clips by these).
        return ((n, p) for n, p in state.parameters(self).items()
                if not n.startswith(f"{ARCH}."))

    def weights(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weights()]

    def cell_weights(self) -> dict[str, Any]:
        """Cell type -> what its edges receive this forward pass (the relaxation's), computed
        in the architecture tensors' precision also under autocast (run.precision bf16)."""
        device = next(iter(self.parameters())).device.type
        with torch.autocast(device_type=device, enabled=False):
            return self.relaxation.space_weights(self.arch, self.RULES)

    def arch_values(self) -> dict[str, Any]:
        """The architecture tensors as nested lists of floats, flat names (α JSON files)."""
        return {name: tensor.detach().cpu().tolist()
                for name, tensor in self.arch_parameters().items()}

    def genotype(self, options: DeriveOptions = RULE) -> Genotype:
        """Derive the discrete architecture from the architecture tensors by the space's rules
        (and a method's departures from them, `options`)."""
        return derive(self.SPACE, self.arch_values(), self.RULES, self.relaxation.strengths,
                      options)

    def set_search_progress(self, epoch: int, epochs: int) -> None:
        """At the start of a search epoch: the relaxation's schedule (temperatures, ...)."""
        self.relaxation.set_progress(epoch, epochs)


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
