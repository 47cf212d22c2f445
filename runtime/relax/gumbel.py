"""Gumbel-softmax relaxations: GDAS's hard straight-through sample and SNAS's soft one.

GDAS (Dong & Yang, CVPR 2019; D-X-Y/AutoDL-Projects search_model_gdas.py:115-126)::

    g = -log(Exp(1));  p = softmax((log_softmax(α) + g) / τ);  s = argmax p
    w = one_hot(s) - p.detach() + p        (resampled while g or p holds an inf or a NaN)

and every edge computes only candidate s (`spacec.runtime.relax.sampled`). τ falls linearly from
τ_max to τ_min over the epochs, τ = τ_max - (τ_max - τ_min)·epoch/(E - 1) (exps/NAS-Bench-201-algos/
GDAS.py:237-238). Derivation: softmax(α).

SNAS (Xie et al., ICLR 2019; SNAS-Series SNAS/model_search.py:665-669): every candidate weighs
softmax((α + G)/λ) with G = -log(-log U), U ~ Uniform(0, 1), α playing SNAS's log α; λ falls as
(1 - epoch/E)(λ_0 - λ_min) + λ_min (SNAS/utils.py:140-148). Derivation: softmax(α), which
normalises SNAS's α = exp(log α).

Both draw their noise from the relaxation's own generator (`Sampling`), once per cell type and
forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spacec.arch.derive import ALPHA, CellRule
from spacec.runtime.errors import TrainingError
from spacec.runtime.nn.ops import Candidate
from spacec.runtime.relax.base import Sampling, register_relaxation
from spacec.runtime.relax.sampled import SampledEdge, SampledRows, mix_sampled

MAX_DRAWS = 100  # redraws of a sample holding inf/NaN before the α are declared broken


def _finite(*tensors: Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


@register_relaxation("gumbel_hard")
class HardGumbel(Sampling):
    """GDAS: one sampled candidate per edge, straight-through weights (module docstring)."""

    all_candidates_used = False  # one candidate per edge runs

    def __init__(self, tau_max: float = 10.0, tau_min: float = 0.1) -> None:
        super().__init__()
        self.tau_max, self.tau_min = tau_max, tau_min
        self.tau = tau_max

    def set_progress(self, epoch: int, epochs: int) -> None:
        self.tau = self.tau_max - (self.tau_max - self.tau_min) * epoch / max(epochs - 1, 1)

    def gumbel(self, shape: Sequence[int]) -> Tensor:
        """-log(Exp(1)) noise from the relaxation's generator, on the CPU."""
        return -torch.empty(tuple(shape)).exponential_(generator=self.generator).log()

    def cell_weights(self, tensors: Mapping[str, Tensor], rule: CellRule) -> SampledRows:
        alpha = tensors[ALPHA]
        logits = F.log_softmax(alpha, dim=-1)
        for _ in range(MAX_DRAWS):
            gumbels = self.gumbel(alpha.shape).to(alpha.device, alpha.dtype)
            probs = F.softmax((logits + gumbels) / self.tau, dim=-1)
            if _finite(gumbels, probs):
                break
        else:
            raise TrainingError(f"GDAS: no finite Gumbel sample in {MAX_DRAWS} draws "
                                "(are the architecture weights finite?)")
        index = probs.argmax(dim=-1)
        hard = F.one_hot(index, alpha.shape[-1]).to(probs.dtype) - probs.detach() + probs
        return SampledRows(tuple(index.tolist()), hard)

    def edge(self, candidates: Sequence[Candidate], C_in: int, C_out: int, stride: int) -> nn.Module:
        return SampledEdge(candidates, C_in, C_out, stride)

    def mix_node(self, states: Tensor, c: Tensor, h: Tensor, weights: Any,
                 columns: Sequence[tuple[int, str]]) -> Tensor:
        return mix_sampled(states, c, h, weights, columns)

    def __repr__(self) -> str:
        return f"HardGumbel(tau={self.tau:g})"


@register_relaxation("gumbel_soft")
class SoftGumbel(Sampling):
    """SNAS: soft relaxed one-hot weights on every candidate (module docstring)."""

    def __init__(self, tau_max: float = 1.0, tau_min: float = 0.03,
                 anneal_epochs: int | None = None) -> None:
        super().__init__()
        self.tau_max, self.tau_min, self.anneal_epochs = tau_max, tau_min, anneal_epochs
        self.tau = tau_max

    def set_progress(self, epoch: int, epochs: int) -> None:
        total = self.anneal_epochs or epochs
        self.tau = (1 - epoch / total) * (self.tau_max - self.tau_min) + self.tau_min

    def gumbel(self, shape: Sequence[int]) -> Tensor:
        """-log(-log U), U ~ Uniform(0, 1), from the relaxation's generator, on the CPU."""
        uniform = torch.rand(tuple(shape), generator=self.generator)
        return -torch.log(-torch.log(uniform))

    def cell_weights(self, tensors: Mapping[str, Tensor], rule: CellRule) -> Tensor:
        alpha = tensors[ALPHA]
        for _ in range(MAX_DRAWS):
            gumbels = self.gumbel(alpha.shape).to(alpha.device, alpha.dtype)
            weights = F.softmax((alpha + gumbels) / self.tau, dim=-1)
            if _finite(gumbels, weights):
                return weights
        raise TrainingError(f"SNAS: no finite Gumbel sample in {MAX_DRAWS} draws "
                            "(are the architecture weights finite?)")

    def __repr__(self) -> str:
        return f"SoftGumbel(tau={self.tau:g})"
