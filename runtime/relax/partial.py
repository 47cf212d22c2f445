"""PC-DARTS (Xu et al., ICLR 2020): partial channel connections and edge normalisation.

Source: yuhuixu1993/PC-DARTS model_search.py. An edge sends the first C/K channels of its input
through the candidates (built at C/K channels, line 33) and lets the rest bypass them, max-pooled
2×2 on a stride-2 edge; the two parts are concatenated and shuffled in K groups (lines 39-50)::

    f_ij(x) = shuffle_K([Σ_o softmax(α_ij)_o · o(x[:, :C/K]), bypass(x[:, C/K:])])

Edge normalisation: every searched edge also has a logit β (initialised 1e-3·N(0, 1), lines
174-175), and node j sums softmax(β)_ij · f_ij over its searched incoming edges, the softmax taken
over those edges (lines 85, 141-158). The cell's α and β thus become one [edges, ops + 1] tensor
of weights: softmax(α) and, in the last column, the edge's weight. β is the cell's "beta" tensor
(flat name "<cell>.beta"). Derivation ranks softmax(α)·softmax(β) (line 197): the
"edge_normalized" strengths. With edge_norm off the cell has α only and every edge weighs 1.

Partial channels need channels: recurrent cells are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spacec.arch.derive import ALPHA, DEFAULT_STRENGTHS, EDGE_TENSOR, CellRule
from spacec.runtime.errors import ConfigError
from spacec.runtime.nn.ops import Candidate, MixedEdge
from spacec.runtime.relax.base import Relaxation, register_relaxation


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """PC-DARTS's `channel_shuffle`: channels viewed as [groups, C/groups], transposed, flattened.

    Done on the channels-last view, so a channels-last input gives a channels-last output.
    """
    batch, channels, height, width = x.shape
    nhwc = x.permute(0, 2, 3, 1)
    shuffled = nhwc.reshape(batch, height, width, groups, channels // groups).transpose(3, 4)
    return shuffled.reshape(batch, height, width, channels).permute(0, 3, 1, 2)


class PartialEdge(MixedEdge):
    """A mixed edge over the first C/K channels (candidates and state_dict keys as a `MixedEdge`
    of C/K channels); with `edge_weighted` its row ends with the edge's weight."""

    def __init__(self, candidates: Sequence[Candidate], C_in: int, C_out: int, stride: int,
                 k: int, edge_weighted: bool) -> None:
        if C_in != C_out:
            raise ValueError(f"pc_darts: an edge must keep its channels, got {C_in} -> {C_out}")
        if C_in % k:
            raise ConfigError(f"pc_darts: k={k} must divide the edge's {C_in} channels "
                              "(set method.k or the space's channels)")
        super().__init__(candidates, C_in // k, C_out // k, stride)
        self.k = k
        self.part = C_in // k
        self.edge_weighted = edge_weighted
        self.bypass = nn.MaxPool2d(2, 2) if stride == 2 else nn.Identity()

    def mix(self, x: Tensor, weights: Tensor) -> Tensor:
        # The edge's weight multiplies both parts before they are joined, which equals weighing
        # the joined output (up to rounding) but keeps no edge-sized tensor for the backward
        # pass: the candidates' outputs and the bypassed input are kept anyway.
        mixing = weights[:-1] * weights[-1] if self.edge_weighted else weights
        mixed = super().mix(x[:, : self.part], mixing)
        if self.k == 1:
            return mixed
        rest = self.bypass(x[:, self.part:])
        if self.edge_weighted:
            rest = weights[-1] * rest
        return channel_shuffle(torch.cat([mixed, rest], dim=1), self.k)

    def extra_repr(self) -> str:
        return f"k={self.k}, edge_weighted={self.edge_weighted}"


@lru_cache(maxsize=64)
def node_spans(rule: CellRule) -> tuple[tuple[int, int], ...]:
    """The α rows entering each node, as [start, end) spans covering every row in order."""
    spans, row = [], 0
    for node in rule.nodes:
        rows = rule.rows_into(node)
        if rows:
            if rows != tuple(range(row, row + len(rows))):
                raise ValueError(f"the rows of node {node} are not contiguous: {rows}")
            spans.append((row, row + len(rows)))
            row += len(rows)
    return tuple(spans)


def edge_weights(beta: Tensor, rule: CellRule) -> Tensor:
    """softmax(β) over the searched edges entering each node, one weight per edge."""
    return torch.cat([F.softmax(beta[start:end], dim=-1) for start, end in node_spans(rule)])


@register_relaxation("partial_channels")
class PartialChannels(Relaxation):
    """PC-DARTS (module docstring)."""

    def __init__(self, k: int = 4, edge_norm: bool = True) -> None:
        self.k = k
        self.edge_norm = edge_norm
        self.strengths = "edge_normalized" if edge_norm else DEFAULT_STRENGTHS

    def arch_shapes(self, rule: CellRule) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {ALPHA: rule.shape}
        if self.edge_norm:
            shapes[EDGE_TENSOR] = (len(rule.edges),)
        return shapes

    def cell_weights(self, tensors: Mapping[str, Tensor], rule: CellRule) -> Tensor:
        mixing = F.softmax(tensors[ALPHA], dim=-1)
        if not self.edge_norm:
            return mixing
        return torch.cat([mixing, edge_weights(tensors[EDGE_TENSOR], rule)[:, None]], dim=1)

    def edge(self, candidates: Sequence[Candidate], C_in: int, C_out: int, stride: int) -> nn.Module:
        return PartialEdge(candidates, C_in, C_out, stride, self.k, self.edge_norm)

    def mix_node(self, states: Tensor, c: Tensor, h: Tensor, weights: Any,
                 columns: Sequence[tuple[int, str]]) -> Tensor:
        raise ConfigError("pc_darts does not apply to recurrent cells: partial channel "
                          "connections split an image edge's channels")

    def __repr__(self) -> str:
        return f"PartialChannels(k={self.k}, edge_norm={self.edge_norm})"
