"""Relaxations of a supernet's searched edges (see `spacec.runtime.relax.base`).

    softmax            DARTS: softmax(α) on every candidate
    partial_channels   PC-DARTS: 1/K of the channels, per-edge β normalised over a node's edges
    gumbel_hard        GDAS: a straight-through hard Gumbel sample, one candidate computed
    gumbel_soft        SNAS: soft Gumbel-softmax weights
    dirichlet          DrNAS: weights ~ Dirichlet(ELU(α) + 1)
    auxiliary_skip     DARTS-: softmax(α) plus β(t)·x
    perturbed_softmax  SDARTS-RS: softmax(α), randomly perturbed in the weight step
    sigmoid            FairDARTS: independent sigmoid(α)
    path               random_ws: no α, one sampled architecture's path
"""

from spacec.runtime.relax import (  # noqa: F401  (each registers its relaxation)
    auxskip,
    dirichlet,
    gumbel,
    partial,
    path,
    perturbed,
    sigmoid,
    softmax,
)
from spacec.runtime.relax.base import (
    RELAXATIONS,
    Relaxation,
    Sampling,
    register_relaxation,
    relaxation_of,
)

__all__ = ["RELAXATIONS", "Relaxation", "Sampling", "register_relaxation", "relaxation_of"]
