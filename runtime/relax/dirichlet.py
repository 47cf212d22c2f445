"""DrNAS (Chen et al., ICLR 2021): mixing weights sampled from a Dirichlet distribution.

Source: xiangning-chen/DrNAS utils.py:167-172, DARTS-space/model_search.py:176-177. Every forward
pass draws each edge's weights w ~ Dir(β) with concentration β = ELU(α) + 1, by the
reparameterised sample (`rsample`), so the loss's gradient reaches α through w. Edges then mix
their candidates with w as DARTS mixes with softmax(α). Derivation ranks softmax(α), as the
official code does (model_search.py:227-253), not the Dirichlet mean.

The sample is torch's Dirichlet `rsample` (a Dirichlet draw, and the implicit reparameterisation
gradient of `torch._dirichlet_grad`) drawn from the relaxation's own generator on the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from spacec.arch.derive import ALPHA, CellRule
from spacec.runtime.relax.base import Sampling, register_relaxation


class _DirichletSample(torch.autograd.Function):
    """x ~ Dir(concentration), differentiable in the concentration (torch.distributions'
    `_Dirichlet`, with an explicit generator)."""

    @staticmethod
    def forward(ctx: Any, concentration: Tensor, generator: torch.Generator) -> Tensor:
        sample = torch._sample_dirichlet(concentration, generator=generator)
        ctx.save_for_backward(sample, concentration)
        return sample

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        sample, concentration = ctx.saved_tensors
        total = concentration.sum(-1, keepdim=True).expand_as(concentration)
        dsample = torch._dirichlet_grad(sample, concentration, total)
        return dsample * (grad - (sample * grad).sum(-1, keepdim=True)), None


def dirichlet_rsample(concentration: Tensor, generator: torch.Generator) -> Tensor:
    """One reparameterised Dirichlet sample per row, drawn on the CPU with `generator`."""
    cpu = concentration.to("cpu", torch.float64 if concentration.dtype == torch.float64
                           else torch.float32)
    return _DirichletSample.apply(cpu, generator).to(concentration.device, concentration.dtype)


def concentration(alpha: Tensor) -> Tensor:
    """DrNAS's β = ELU(α) + 1 (positive for every α)."""
    return F.elu(alpha) + 1


@register_relaxation("dirichlet")
class Dirichlet(Sampling):
    """w ~ Dir(ELU(α) + 1) on every edge, resampled every forward pass."""

    def cell_weights(self, tensors: Mapping[str, Tensor], rule: CellRule) -> Tensor:
        return dirichlet_rsample(concentration(tensors[ALPHA]), self.generator)
