"""Search methods described without torch: names, citations, parameters and derivations.

A `MethodInfo` says what a published method changes, which domains and strategies it applies
to, how a run of it derives its genotype (a strength function of `spacec.arch.derive.STRENGTHS`
and `DeriveOptions`), and which frozen dataclass holds its parameters, the ``method:`` section of
a search configuration (``method: {name: pc_darts, k: 4, warmup_epochs: 15}``: the section's
class follows its ``name``). Every default carries its source: the official code at the commits
listed in the project's notes (file:line).

The runtime registers one implementation per description (spacec.runtime.search.methods: the
relaxation, strategy and loss terms); `spacec methods` reads these descriptions without torch.

Derivation: every method derives by the space's rule by default (``derive: space``), which
keeps genotypes trainable (`spacec train` builds only genotypes the rule allows). Where a
method's official code derives otherwise, ``derive: official`` follows the code: GDAS may take
two ops from one input, SNAS, DrNAS and random_ws keep `none` candidates, FairDARTS keeps an op
only if σ(α) ≥ 0.85. Those genotypes can break the space's rule; the run says so when they do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from spacec.arch.derive import DEFAULT_STRENGTHS, RULE, DeriveOptions
from spacec.registry import Registry

IMAGE, SEQUENCE = "image", "sequence"  # spacec.catalog.NETWORK_DOMAINS
DERIVATIONS = ("space", "official")
# The search strategies (spacec.runtime.search.strategy.STRATEGIES; a test checks they agree).
GRADIENT_STRATEGIES = ("bilevel", "coordinate", "joint", "single")
SAMPLE_STRATEGY = "sample"

METHOD_INFO = Registry("search method")


# ---------------------------------------------------------------- parameters


@dataclass(frozen=True)
class MethodParams:
    """The ``method`` section: the method's name; subclasses add its parameters."""

    name: str = "darts"

    def __post_init__(self) -> None:
        expected = _name_of(type(self))
        if self.name != expected:
            raise ValueError(f"name {self.name!r} does not match {type(self).__name__} "
                             f"(method {expected!r})")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "derive" and value not in DERIVATIONS:
                raise ValueError(f"derive must be one of {', '.join(DERIVATIONS)}, got {value!r}")

    def values(self) -> dict[str, Any]:
        """The parameters but the name."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}


def _name_of(cls: type) -> str:
    return next(f.default for f in dataclasses.fields(cls) if f.name == "name")


def _positive(owner: str, **values: float | None) -> None:
    for key, value in values.items():
        if value is not None and not value > 0:
            raise ValueError(f"{owner}: {key} must be > 0, got {value}")


def _non_negative(owner: str, **values: float) -> None:
    for key, value in values.items():
        if value < 0:
            raise ValueError(f"{owner}: {key} must be >= 0, got {value}")


@dataclass(frozen=True)
class DartsParams(MethodParams):
    name: str = "darts"


@dataclass(frozen=True)
class PCDartsParams(MethodParams):
    name: str = "pc_darts"
    k: int = 4  # 1/K of the channels go through the candidates: model_search.py:31 (ImageNet: 2)
    # β per edge, softmax over a node's incoming edges (model_search.py:85,141-158,174-175);
    # false keeps partial channels alone (an ablation: K=1 without it is DARTS).
    edge_norm: bool = True
    warmup_epochs: int = 15  # α and β frozen before epoch 15: train_search.py:156 `epoch >= 15`

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("pc_darts", k=self.k)
        _non_negative("pc_darts", warmup_epochs=self.warmup_epochs)


@dataclass(frozen=True)
class GdasParams(MethodParams):
    name: str = "gdas"
    # τ linear from tau_max to tau_min over the epochs (exps/NAS-Bench-201-algos/GDAS.py:237-238);
    # 10 and 0.1: scripts-search/NAS-Bench-201-algos/GDAS.sh:41.
    tau_max: float = 10.0
    tau_min: float = 0.1
    # official: top-k (op, input) pairs, two ops may share an input (search_model_gdas_nasnet.py:
    # 128-143).
    derive: str = "space"

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("gdas", tau_max=self.tau_max, tau_min=self.tau_min)


@dataclass(frozen=True)
class SnasParams(MethodParams):
    name: str = "snas"
    tau_max: float = 1.0  # --temp 1 (SNAS train_search.py:74-76)
    tau_min: float = 0.03  # --temp_min 0.03 (same lines)
    # λ = (1 - epoch/E)(tau_max - tau_min) + tau_min with E hard-coded to 150 (SNAS/utils.py:
    # 140-148), the official search's epochs (train_search.py:31-42); null: the run's epochs.
    anneal_epochs: int | None = None
    derive: str = "space"  # official: `none` kept (SNAS/model_search.py:705)

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("snas", tau_max=self.tau_max, tau_min=self.tau_min,
                  anneal_epochs=self.anneal_epochs)


@dataclass(frozen=True)
class DrnasParams(MethodParams):
    name: str = "drnas"
    warmup_epochs: int = 10  # α updates from epoch 10: DARTS-space train_search.py:182
    # official: `none` kept, its exclusion commented out (DARTS-space/model_search.py:227-253).
    derive: str = "space"

    def __post_init__(self) -> None:
        super().__post_init__()
        _non_negative("drnas", warmup_epochs=self.warmup_epochs)


@dataclass(frozen=True)
class DartsMinusParams(MethodParams):
    name: str = "darts_minus"
    beta: float = 1.0  # β0 of the auxiliary skip: --skip_beta 1 (scripts/run_darts_minus.sh)
    # Linear decay β0·(T_max - epoch)/(T_max - T_start) (src/utils.py:171-192, --decay linear);
    # T_start=0 and T_max=T_stop=50, the search's epochs (src/search/args.py:76-82); null: the
    # run's epochs.
    t_start: int = 0
    t_max: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _non_negative("darts_minus", beta=self.beta, t_start=self.t_start)
        if self.t_max is not None and self.t_max <= self.t_start:
            raise ValueError(f"darts_minus: t_max must exceed t_start={self.t_start}, "
                             f"got {self.t_max}")


@dataclass(frozen=True)
class SdartsRsParams(MethodParams):
    name: str = "sdarts_rs"
    # ε linear from eps_min to eps_max: ε = 0.03 + (ε_max - 0.03)·epoch/E (SmoothDARTS
    # sota/cnn/train_search.py:170), --epsilon_alpha 0.3 (line 57).
    eps_min: float = 0.03
    eps_max: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        _non_negative("sdarts_rs", eps_min=self.eps_min, eps_max=self.eps_max)


@dataclass(frozen=True)
class FairDartsParams(MethodParams):
    name: str = "fair_darts"
    zero_one_weight: float = 10.0  # --aux_loss_weight 10 (fairdarts train_search.py:23-48)
    # official: keep the 2 strongest edges of a node, their op only if σ ≥ op_threshold
    # (--parse_method threshold_sparse, --op_threshold 0.85; fairdarts/utils.py:143-190).
    derive: str = "space"
    op_threshold: float = 0.85

    def __post_init__(self) -> None:
        super().__post_init__()
        _non_negative("fair_darts", zero_one_weight=self.zero_one_weight)
        if not 0 <= self.op_threshold <= 1:
            raise ValueError(f"fair_darts: op_threshold must lie in [0, 1], "
                             f"got {self.op_threshold}")


@dataclass(frozen=True)
class BetaDartsParams(MethodParams):
    name: str = "beta_darts"
    # λ(epoch) = lambda_max·epoch/ramp_epochs, `0 + 50*epoch/100` (Beta-DARTS
    # optimizers/darts/architect.py:81): a ramp independent of the run's length.
    lambda_max: float = 50.0
    ramp_epochs: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        _non_negative("beta_darts", lambda_max=self.lambda_max)
        _positive("beta_darts", ramp_epochs=self.ramp_epochs)


@dataclass(frozen=True)
class RandomWsParams(MethodParams):
    name: str = "random_ws"
    # After training: score `samples` random architectures on `eval_batches` validation batches,
    # re-score the `top` best on the whole split (random_weight_share.py:81-116).
    samples: int = 1000
    eval_batches: int = 10
    top: int = 10
    # official: `none` may be sampled (darts_wrapper_discrete.py:258-272; the paper's Sect. 4.2).
    derive: str = "space"

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("random_ws", samples=self.samples, eval_batches=self.eval_batches, top=self.top)


@dataclass(frozen=True)
class RandomParams(MethodParams):
    name: str = "random"
    # DARTS's random baseline kept the best of 24 random cells by validation error after a short
    # training (Liu et al., ICLR 2019, Table 1 note; not checked against the paper here).
    samples: int = 24
    select: str = "quick"  # the selection preset (select_<name>.yaml) or YAML file
    derive: str = "space"  # official: `none` may be sampled, as random_ws

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("random", samples=self.samples)
        if not self.select:
            raise ValueError("random: select must name a selection preset or file")


# ---------------------------------------------------------------- descriptions


@dataclass(frozen=True)
class MethodInfo:
    """What `spacec methods` lists, and what a configuration is checked against."""

    name: str
    citation: str
    summary: str  # what it changes, in a line
    params: type[MethodParams]
    domains: tuple[str, ...] = (IMAGE, SEQUENCE)
    strategies: tuple[str, ...] = GRADIENT_STRATEGIES  # allowed arch.mode values
    orders: tuple[int, ...] = (1, 2)  # allowed arch.order values
    strengths: str | None = DEFAULT_STRENGTHS  # None: no α; the run records its genotype
    # `derive: official`: the options of the official code, from the parameters.
    official: Callable[[MethodParams], DeriveOptions] | None = None
    official_rule: str = ""  # that rule in words
    shares_weights: bool = True  # False: candidates trained from scratch (no supernet)
    domain_notes: str = ""  # why a domain is left out

    def derive_options(self, params: MethodParams) -> DeriveOptions:
        if getattr(params, "derive", "space") == "official" and self.official is not None:
            return self.official(params)
        return RULE

    def defaults(self) -> dict[str, Any]:
        return self.params().values()


def register_info(info: MethodInfo) -> MethodInfo:
    if _name_of(info.params) != info.name:
        raise ValueError(f"{info.params.__name__} is named {_name_of(info.params)!r}, "
                         f"not {info.name!r}")
    METHOD_INFO.register(info.name)(info)
    return info


def describe(name: str) -> MethodInfo:
    """The description of method `name`; UnknownName lists the known ones."""
    return METHOD_INFO[name].builder


def method_names() -> tuple[str, ...]:
    return METHOD_INFO.names()


def applies(name: str, domain: str) -> bool:
    """Whether method `name` searches spaces of `domain` ("image", "sequence")."""
    return domain in describe(name).domains


def params_class(section: Any) -> type[MethodParams]:
    """The class of a raw ``method`` section: the one its ``name`` (default darts) picks."""
    name = section.get("name", "darts") if isinstance(section, Mapping) else "darts"
    if not isinstance(name, str) or name not in METHOD_INFO:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(method_names())}")
    return describe(name).params


def _keep_none(params: MethodParams) -> DeriveOptions:
    return DeriveOptions(keep_none=True)


register_info(MethodInfo(
    name="darts",
    citation="Liu, Simonyan & Yang, DARTS: Differentiable Architecture Search, ICLR 2019",
    summary="every edge mixes all candidates with softmax(α); bilevel, first or second order",
    params=DartsParams,
))
register_info(MethodInfo(
    name="pc_darts",
    citation="Xu et al., PC-DARTS: Partial Channel Connections for Memory-Efficient "
             "Architecture Search, ICLR 2020",
    summary="1/K of an edge's channels go through the candidates, the rest bypass (max-pooled "
            "on stride 2), channel shuffle; per-edge β softmax-normalised over a node's edges; "
            "derivation ranks softmax(α)·softmax(β)",
    params=PCDartsParams,
    domains=(IMAGE,),
    domain_notes="partial channel connections split image feature maps; a recurrent edge "
                 "mixes highway activations of one hidden state, which has no channels to split",
    strengths="edge_normalized",
))
register_info(MethodInfo(
    name="gdas",
    citation="Dong & Yang, Searching for A Robust Neural Architecture in Four GPU Hours "
             "(GDAS), CVPR 2019",
    summary="hard straight-through Gumbel-softmax of log_softmax(α): each edge computes only "
            "its sampled candidate; τ linear 10 → 0.1",
    params=GdasParams,
    orders=(1,),
    official=lambda params: DeriveOptions(pairs=True),
    official_rule="a node's k strongest (op, input) pairs: two ops may come from one input",
))
register_info(MethodInfo(
    name="snas",
    citation="Xie, Zheng, Liu & Lin, SNAS: Stochastic Neural Architecture Search, ICLR 2019",
    summary="soft Gumbel-softmax weights, τ linear 1 → 0.03; single-level: w and α from the "
            "same training batch",
    params=SnasParams,
    orders=(1,),
    official=_keep_none,
    official_rule="`none` competes with the other candidates",
))
register_info(MethodInfo(
    name="drnas",
    citation="Chen et al., DrNAS: Dirichlet Neural Architecture Search, ICLR 2021",
    summary="mixing weights ~ Dirichlet(ELU(α)+1), reparameterised sample every forward; L2 "
            "on α (the α optimiser's weight decay); α frozen for 10 epochs",
    params=DrnasParams,
    orders=(1,),
    official=_keep_none,
    official_rule="`none` competes with the other candidates",
))
register_info(MethodInfo(
    name="darts_minus",
    citation="Chu et al., DARTS-: Robustly Stepping out of Performance Collapse Without "
             "Indicators, ICLR 2021",
    summary="every edge adds β(t)·x, an auxiliary skip (FactorizedReduce on stride-2 edges) "
            "that is not a candidate; β linear 1 → 0 over the search",
    params=DartsMinusParams,
))
register_info(MethodInfo(
    name="sdarts_rs",
    citation="Chen & Hsieh, Stabilizing Differentiable Architecture Search via "
             "Perturbation-based Regularization (SDARTS), ICML 2020",
    summary="in the weight step only, softmax(α) + U(-ε, ε), clipped to [0, 1] and "
            "renormalised; ε linear 0.03 → 0.3",
    params=SdartsRsParams,
    strategies=("bilevel", "coordinate"),
))
register_info(MethodInfo(
    name="fair_darts",
    citation="Chu, Zhou, Zhang & Li, Fair DARTS: Eliminating Unfair Advantages in "
             "Differentiable Architecture Search, ECCV 2020",
    summary="independent sigmoid(α) per candidate; loss − w·mean((σ(α) − 0.5)²) in the α and "
            "the weight step",
    params=FairDartsParams,
    strengths="sigmoid",
    official=lambda params: DeriveOptions(threshold=params.op_threshold),
    official_rule="the 2 strongest edges of a node keep their op only if σ(α) ≥ 0.85",
))
register_info(MethodInfo(
    name="beta_darts",
    citation="Ye et al., β-DARTS: Beta-Decay Regularization for Differentiable Architecture "
             "Search, CVPR 2022",
    summary="α step loss + λ(epoch)·mean over edges of logsumexp(α), λ = 50·epoch/100",
    params=BetaDartsParams,
))
register_info(MethodInfo(
    name="random_ws",
    citation="Li & Talwalkar, Random Search and Reproducibility for Neural Architecture "
             "Search, UAI 2019",
    summary="no α: every batch trains one uniformly sampled architecture's path of the "
            "supernet; then N random architectures are scored with the shared weights",
    params=RandomWsParams,
    strategies=(SAMPLE_STRATEGY,),
    orders=(1,),
    strengths=None,
    official=_keep_none,
    official_rule="`none` may be sampled",
))
register_info(MethodInfo(
    name="random",
    citation="Li & Talwalkar, UAI 2019 (random search); the selection protocol of Liu et al., "
             "DARTS, ICLR 2019, Sect. 3.2",
    summary="no weight sharing: N random genotypes, each trained briefly from scratch and "
            "ranked on a held-out part of the training set",
    params=RandomParams,
    domains=(IMAGE,),
    domain_notes="the selection protocol (spacec select) trains and ranks image networks",
    strategies=(),
    orders=(1, 2),
    strengths=None,
    official=_keep_none,
    official_rule="`none` may be sampled",
    shares_weights=False,
))
