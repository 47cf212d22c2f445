"""DARTS- (Chu et al., ICLR 2021): an auxiliary skip connection with a decaying weight β(t).

Source: Meituan-AutoML/DARTS- src/search/model_search.py:17-44. Every searched edge outputs

    Σ_o softmax(α)_o · o(x) + β(t) · skip(x)

where skip is the identity, or a FactorizedReduce (with its own weights) on a stride-2 edge. The
skip is not a candidate: α has no column for it and derivation (softmax(α), the DARTS rule)
never sees it. β is not learned; it decays linearly, β(t) = β0·(T_max - t)/(T_max - T_start)
from epoch T_start and is 0 from T_max on (DecayScheduler, src/utils.py:171-192; T_max = the
search's epochs by default). The cell's weights are softmax(α) with β(t) appended as a last
column. A recurrent node adds β(t)·s_i for every incoming state s_i.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spacec.arch.derive import ALPHA, CellRule
from spacec.runtime.nn import recurrent
from spacec.runtime.nn.ops import Candidate, FactorizedReduce, MixedEdge
from spacec.runtime.relax.base import Relaxation, register_relaxation


class AuxiliarySkipEdge(MixedEdge):
    """A `MixedEdge` plus β·skip(x); its row is the candidates' weights, then β."""

    def __init__(self, candidates: Sequence[Candidate], C_in: int, C_out: int, stride: int,
                 affine: bool = False) -> None:
        super().__init__(candidates, C_in, C_out, stride, affine)
        if stride == 1 and C_in == C_out:
            self.skip: nn.Module = nn.Identity()
        elif stride == 2:
            self.skip = FactorizedReduce(C_in, C_out, affine=False)
        else:
            raise ValueError(f"darts_minus: no auxiliary skip from {C_in} to {C_out} channels "
                             f"at stride {stride}")

    def mix(self, x: Tensor, weights: Tensor) -> Tensor:
        return super().mix(x, weights[:-1]) + weights[-1] * self.skip(x)


def decayed(beta: float, epoch: int, t_start: int, t_max: int) -> float:
    """β(epoch) of DARTS-'s linear DecayScheduler."""
    if epoch < t_start:
        return beta
    if epoch >= t_max:
        return 0.0
    return beta * (t_max - epoch) / (t_max - t_start)


@register_relaxation("auxiliary_skip")
class AuxiliarySkip(Relaxation):
    """DARTS- (module docstring)."""

    def __init__(self, beta: float = 1.0, t_start: int = 0, t_max: int | None = None) -> None:
        self.beta0, self.t_start, self.t_max = beta, t_start, t_max
        self.beta = beta

    def set_progress(self, epoch: int, epochs: int) -> None:
        self.beta = decayed(self.beta0, epoch, self.t_start, self.t_max or epochs)

    def cell_weights(self, tensors: Mapping[str, Tensor], rule: CellRule) -> Tensor:
        mixing = F.softmax(tensors[ALPHA], dim=-1)
        skip = torch.full((mixing.shape[0], 1), self.beta, dtype=mixing.dtype,
                          device=mixing.device)
        return torch.cat([mixing, skip], dim=1)

    def edge(self, candidates: Sequence[Candidate], C_in: int, C_out: int, stride: int) -> nn.Module:
        return AuxiliarySkipEdge(candidates, C_in, C_out, stride)

    def mix_node(self, states: Tensor, c: Tensor, h: Tensor, weights: Any,
                 columns: Sequence[tuple[int, str]]) -> Tensor:
        mixed = recurrent.mix_edges(states, c, h, weights[:, :-1], columns)
        return mixed + torch.sum(weights[:, -1, None, None] * states, dim=0)

    def __repr__(self) -> str:
        return f"AuxiliarySkip(beta={self.beta:g})"
