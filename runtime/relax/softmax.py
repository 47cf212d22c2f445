"""DARTS' relaxation: every edge mixes all its candidates with softmax(α) weights (Liu et al.,
ICLR 2019, Eq. 2)."""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor

from spacec.arch.derive import ALPHA, CellRule
from spacec.runtime.relax.base import Relaxation, register_relaxation


@register_relaxation("softmax")
class Softmax(Relaxation):
    """ō(x) = Σ_o softmax(α)_o · o(x) on every edge; derivation ranks by softmax(α)."""

    def cell_weights(self, tensors: Mapping[str, Tensor], rule: CellRule) -> Tensor:
        return F.softmax(tensors[ALPHA], dim=-1)
