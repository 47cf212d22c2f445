"""Edges that compute one sampled candidate: GDAS's hard Gumbel samples and random_ws's paths.

A sampling relaxation hands every cell a `SampledRows`: for each α row the sampled column (None:
the edge is not part of the sampled architecture) and, for GDAS, the straight-through weights
[edges, ops] whose forward value is the one-hot of the sample. `SampledEdge` then runs only the
sampled candidate, which is where the memory and time go: the other candidates build no graph.

With weights (GDAS, D-X-Y/AutoDL-Projects xautodl/models/cell_searchs/search_cells.py:72-86,
`forward_gdas`) an edge returns Σ_k (w_k·o_k(x) if k is the sample else w_k): the sampled output
times its weight, plus the other weights as scalars. Their value is exactly 0 (one_hot − p + p),
so the output equals w_s·o_s(x), while their gradient reaches every α of the edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from spacec.runtime.nn import recurrent
from spacec.runtime.nn.ops import Candidate, MixedEdge, leads_with_relu


@dataclass(frozen=True)
class SampledRow:
    """One edge's sample: its column (None: not in the architecture) and its weights."""

    index: int | None
    weights: Tensor | None = None  # [ops] straight-through weights; None: unweighted


@dataclass(frozen=True)
class SampledRows:
    """A cell's samples, indexable by α row (a `SampledRow`) and by row slices (`SampledRows`)."""

    index: tuple[int | None, ...]
    weights: Tensor | None = None  # [edges, ops]

    def __getitem__(self, key: int | slice) -> SampledRow | SampledRows:
        weights = None if self.weights is None else self.weights[key]
        if isinstance(key, slice):
            return SampledRows(self.index[key], weights)
        return SampledRow(self.index[key], weights)

    def __len__(self) -> int:
        return len(self.index)


def others(weights: Tensor, index: int) -> Tensor:
    """Σ_{k ≠ index} weights[k]: the scalar terms of the unsampled candidates (value 0 for GDAS's
    straight-through weights, computed without the sampled one so that it stays exactly 0)."""
    return torch.cat([weights[:index], weights[index + 1:]]).sum()


class SampledEdge(MixedEdge):
    """A DARTS edge (same candidates and state_dict keys as `MixedEdge`) that runs only the
    sampled candidate of its `SampledRow`."""

    def __init__(self, candidates: Sequence[Candidate], C_in: int, C_out: int, stride: int,
                 affine: bool = False) -> None:
        super().__init__(candidates, C_in, C_out, stride, affine)
        self._relu_first = tuple(leads_with_relu(steps) for steps in candidates)

    def mix(self, x: Tensor, row: SampledRow) -> Tensor:  # type: ignore[override]
        if row.index is None:
            return x.new_zeros(())  # not in the sampled architecture: adds nothing
        index = row.index
        out = self.ops[index](F.relu(x) if self._relu_first[index] else x)
        if row.weights is None:
            return out
        return row.weights[index] * out + others(row.weights, index)


def mix_sampled(states: Tensor, c: Tensor, h: Tensor, rows: SampledRows,
                columns: Sequence[tuple[int, str]]) -> Tensor:
    """A recurrent node from sampled rows: each incoming edge adds its sampled activation's
    highway (weighted as `SampledEdge` weights it); a zero candidate adds nothing."""
    activation = dict(columns)
    mixed = torch.zeros_like(states[0])
    for source, index in enumerate(rows.index):
        if index is None:
            continue
        if index in activation:
            term = recurrent.highway_edge(states[source], c[source], h[source], activation[index])
            if rows.weights is not None:
                term = rows.weights[source, index] * term
            mixed = mixed + term
        if rows.weights is not None:
            mixed = mixed + others(rows.weights[source], index)
    return mixed
