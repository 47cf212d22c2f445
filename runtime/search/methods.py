"""Search methods: what each published method brings to the one search loop, by name.

A method is described without torch in `spacec.arch.methods` (citation, parameters with their
sourced defaults, domains, strategies, derivation); here it is implemented. A `Method` names
the relaxation its supernet mixes candidates with (spacec.runtime.relax), built from the
method's parameters, the loss terms it adds to the α and the weight step (`Terms`), and the
epochs during which α stays frozen. The configuration's ``method`` section picks one
(``spacec search --method NAME``); `spacec methods` lists them. A new method is a `MethodInfo`
registered in `spacec.arch.methods.METHOD_INFO` and a `Method` registered in `METHODS`.

    method       relaxation         loss terms                         α frozen
    darts        softmax            -                                  -
    pc_darts     partial_channels   -                                  warmup_epochs (15)
    gdas         gumbel_hard        -                                  -
    snas         gumbel_soft        -                                  -
    drnas        dirichlet          (L2: the α optimiser's decay)      warmup_epochs (10)
    darts_minus  auxiliary_skip     -                                  -
    sdarts_rs    perturbed_softmax  -                                  -
    fair_darts   sigmoid            zero-one loss, α and weight step   -
    beta_darts   softmax            β-decay, α step                    -
    random_ws    path               (no α)                             -
    random       (no supernet: spacec.runtime.tools.select.random_search)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from spacec.arch.methods import MethodInfo, MethodParams, describe
from spacec.registry import Registry
from spacec.runtime.relax import Relaxation, relaxation_of
from spacec.runtime.relax.auxskip import AuxiliarySkip
from spacec.runtime.relax.dirichlet import Dirichlet
from spacec.runtime.relax.gumbel import HardGumbel, SoftGumbel
from spacec.runtime.relax.partial import PartialChannels
from spacec.runtime.relax.path import RandomPath
from spacec.runtime.relax.perturbed import PerturbedSoftmax
from spacec.runtime.relax.sigmoid import Sigmoid
from spacec.runtime.relax.softmax import Softmax

log = logging.getLogger(__name__)

METHODS = Registry("search method")

# (epoch, the architecture tensors by flat name) -> a scalar added to a step's loss
Penalty = Callable[[int, Mapping[str, Tensor]], Tensor]


@dataclass(frozen=True)
class Terms:
    """Loss terms a method adds: to the α step's loss, and to the weight step's."""

    arch: Penalty | None = None
    weights: Penalty | None = None


NO_TERMS = Terms()


def no_terms(params: MethodParams, space: Any) -> Terms:
    return NO_TERMS


@dataclass(frozen=True)
class Method:
    """The implementation of a described method (`spacec.arch.methods.MethodInfo`)."""

    name: str
    # A registered relaxation's name, or a builder from the method's parameters; None: the
    # method runs no supernet (random).
    relaxation: str | Callable[[Any], Relaxation] | None
    # (parameters, compiled space) -> the loss terms
    terms: Callable[[Any, Any], Terms] = no_terms
    warmup: Callable[[Any], int] | None = None  # epochs with α frozen, from the parameters

    @property
    def info(self) -> MethodInfo:
        return describe(self.name)

    def build_relaxation(self, params: MethodParams | None = None) -> Relaxation:
        params = params if params is not None else self.info.params()
        if self.relaxation is None:
            raise ValueError(f"method {self.name!r} searches without a supernet")
        if isinstance(self.relaxation, str):
            return relaxation_of(self.relaxation)
        return self.relaxation(params)

    def warmup_epochs(self, params: MethodParams) -> int:
        return 0 if self.warmup is None else self.warmup(params)


def register_method(method: Method) -> Method:
    """Register `method`; its description must be registered first (`spacec.arch.methods`)."""
    describe(method.name)
    METHODS.register(method.name)(method)
    return method


def method(name: str) -> Method:
    return METHODS[name].builder


# ---------------------------------------------------------------- loss terms


def _alphas(tensors: Mapping[str, Tensor]) -> list[Tensor]:
    """Every cell's α (flat names without a dot), in order."""
    return [tensor for key, tensor in tensors.items() if "." not in key]


def zero_columns(space: Any) -> dict[str, Tensor]:
    """Cell type -> a boolean mask of its zero candidates (`none`), from a compiled space."""
    spec = space.spec
    return {cell.name: torch.tensor([c.is_zero for c in spec.opset(cell.opset).candidates])
            for cell in spec.cells}


def zero_one_loss(weight: float, alphas: Mapping[str, Tensor],
                  masks: Mapping[str, Tensor] | None = None) -> Tensor:
    """FairDARTS: -w · mean((σ(α) - 0.5)²) over every candidate but the zero ones
    (ConvSeparateLoss, fairdarts/separate_loss.py:14-16; their op set has no `none`)."""
    values = []
    for key, alpha in alphas.items():
        if "." in key:
            continue
        sigma = torch.sigmoid(alpha)
        if masks is not None and key in masks:
            sigma = sigma[:, ~masks[key].to(alpha.device)]
        values.append(sigma.reshape(-1))
    return -weight * torch.mean((torch.cat(values) - 0.5) ** 2)


def fair_darts_terms(params: Any, space: Any) -> Terms:
    masks = zero_columns(space) if space is not None else None
    zero = sorted({f"{cell}: {ops[i]}" for cell, mask in (masks or {}).items()
                   for ops in [space.rules[cell].ops] for i in range(len(ops)) if mask[i]})
    if zero:
        rule = ("" if getattr(params, "derive", None) == "official"
                else "; derivation follows the space's rule")
        log.warning("fair_darts: FairDARTS's op set has no zero op (fairdarts/genotypes.py:8-16); "
                    "this space's (%s) adds nothing to an edge whatever its σ(α), and is left "
                    "out of the zero-one loss%s", ", ".join(zero), rule)

    def zero_one(epoch: int, alphas: Mapping[str, Tensor]) -> Tensor:
        return zero_one_loss(params.zero_one_weight, alphas, masks)

    # In both steps (train_search.py:210-214, architect.py:20-32). Its gradient in the weight
    # step reaches only α, whose gradient that step discards: it changes the loss, not w.
    return Terms(arch=zero_one, weights=zero_one)


def beta_decay(alphas: Mapping[str, Tensor]) -> Tensor:
    """β-DARTS: the mean over every edge of every cell of logsumexp(α_edge) (`mlc_loss`,
    Beta-DARTS optimizers/darts/architect.py:55-59)."""
    return torch.cat([torch.logsumexp(alpha, dim=-1) for alpha in _alphas(alphas)]).mean()


def beta_darts_lambda(params: Any, epoch: int) -> float:
    """λ(epoch) = lambda_max · epoch / ramp_epochs (architect.py:81: 50 * epoch / 100)."""
    return params.lambda_max * epoch / params.ramp_epochs


def beta_darts_terms(params: Any, space: Any) -> Terms:
    def regulariser(epoch: int, alphas: Mapping[str, Tensor]) -> Tensor:
        return beta_darts_lambda(params, epoch) * beta_decay(alphas)

    return Terms(arch=regulariser)


# ---------------------------------------------------------------- the methods


register_method(Method("darts", "softmax"))
register_method(Method(
    "pc_darts",
    lambda p: PartialChannels(k=p.k, edge_norm=p.edge_norm),
    warmup=lambda p: p.warmup_epochs,
))
register_method(Method("gdas", lambda p: HardGumbel(tau_max=p.tau_max, tau_min=p.tau_min)))
register_method(Method("snas", lambda p: SoftGumbel(tau_max=p.tau_max, tau_min=p.tau_min,
                                                    anneal_epochs=p.anneal_epochs)))
register_method(Method("drnas", lambda p: Dirichlet(), warmup=lambda p: p.warmup_epochs))
register_method(Method("darts_minus",
                       lambda p: AuxiliarySkip(beta=p.beta, t_start=p.t_start, t_max=p.t_max)))
register_method(Method("sdarts_rs",
                       lambda p: PerturbedSoftmax(eps_min=p.eps_min, eps_max=p.eps_max)))
register_method(Method("fair_darts", lambda p: Sigmoid(), terms=fair_darts_terms))
register_method(Method("beta_darts", lambda p: Softmax(), terms=beta_darts_terms))
register_method(Method("random_ws", lambda p: RandomPath(exclude=p.derive != "official")))
register_method(Method("random", None))
