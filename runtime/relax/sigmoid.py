"""FairDARTS (Chu et al., ECCV 2020): every candidate weighs an independent sigmoid of its α.

Source: xiaomi-automl/FairDARTS fairdarts/model_search.py:108-110, ō(x) = Σ_o σ(α_o)·o(x): the
candidates of an edge no longer compete through a softmax. The zero-one loss that pushes σ(α)
towards 0 or 1 is the method's (spacec.runtime.search.methods); derivation ranks σ(α).
FairDARTS's own op set has no `none`; a zero candidate adds nothing to an edge whatever its
weight, and the method leaves it out of the zero-one loss (and says so), which is as close to
the official op set as a space with a zero op gets.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from spacec.arch.derive import ALPHA, CellRule
from spacec.runtime.relax.base import Relaxation, register_relaxation


@register_relaxation("sigmoid")
class Sigmoid(Relaxation):
    strengths = "sigmoid"

    def cell_weights(self, tensors: Mapping[str, Tensor], rule: CellRule) -> Tensor:
        return torch.sigmoid(tensors[ALPHA])
