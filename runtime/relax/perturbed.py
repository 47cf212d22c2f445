"""SDARTS-RS (Chen & Hsieh, ICML 2020): softmax(α) randomly perturbed during the weight step.

Source: xiangning-chen/SmoothDARTS sota/cnn/train_search.py:213-234, model_search.py:160-177,
attacker/perturb.py `Random_alpha`. For the weight step only, every edge mixes with

    Ā = clip(softmax(α) + U(-ε, ε)),  clip: clamp to [0, 1], renormalise each row

(a row clamped to all zeros keeps its largest entry as 1). The α step sees plain softmax(α).
The official code overwrites α with Ā and restores it afterwards; here α is never written:
`weight_step` only switches which weights the edges receive, so α after the step is exactly what
it was. ε grows linearly, ε = ε_min + (ε_max - ε_min)·epoch/E (train_search.py:170). The noise
comes from the relaxation's generator. Derivation: softmax(α), the DARTS rule.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from spacec.arch.derive import ALPHA, CellRule
from spacec.runtime.relax.base import Sampling, register_relaxation


def clip_rows(weights: Tensor) -> Tensor:
    """Clamp to [0, 1] and renormalise every row; an all-zero row becomes one-hot at its
    largest entry before clamping."""
    clamped = weights.clamp(0, 1)
    empty = clamped.sum(-1, keepdim=True) == 0
    if bool(empty.any()):
        top = F.one_hot(weights.argmax(-1), weights.shape[-1]).to(weights.dtype)
        clamped = torch.where(empty, top, clamped)
    return clamped / clamped.sum(-1, keepdim=True)


@register_relaxation("perturbed_softmax")
class PerturbedSoftmax(Sampling):
    """softmax(α); in the weight step clip(softmax(α) + U(-ε, ε)) (module docstring)."""

    def __init__(self, eps_min: float = 0.03, eps_max: float = 0.3) -> None:
        super().__init__()
        self.eps_min, self.eps_max = eps_min, eps_max
        self.epsilon = eps_min
        self.perturbing = False

    def set_progress(self, epoch: int, epochs: int) -> None:
        self.epsilon = self.eps_min + (self.eps_max - self.eps_min) * epoch / epochs

    @contextlib.contextmanager
    def weight_step(self) -> Iterator[None]:
        self.perturbing = True
        try:
            yield
        finally:
            self.perturbing = False

    def cell_weights(self, tensors: Mapping[str, Tensor], rule: CellRule) -> Tensor:
        weights = F.softmax(tensors[ALPHA], dim=-1)
        if not self.perturbing:
            return weights
        noise = torch.rand(tuple(weights.shape), generator=self.generator) * 2 - 1
        noise = (self.epsilon * noise).to(weights.device, weights.dtype)
        return clip_rows(weights.detach() + noise)

    def __repr__(self) -> str:
        return f"PerturbedSoftmax(epsilon={self.epsilon:g})"
