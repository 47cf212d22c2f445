"""Search methods, as the cost model sees them: what an edge runs and keeps, and α's size.

A method registers once under its name (the `--method` of `spacec info`; the names of
spacec.arch.methods.METHOD_INFO and the runtime's METHODS), with:
  mix               a program `mix(t, x, weights, candidates, C, stride, run, **options)`: one
                    searched edge of the supernet; `weights` is the edge's row of mixing
                    weights; `run(t, x, steps, C, stride, input_relu, weight)` is one term of
                    the edge's sum, weight · candidate(x) (the memory setting decides whether
                    its activations are kept or recomputed)
  arch_tensors      (cell, opset, **options) -> {tensor name: shape}: the architecture
                    parameters it keeps per cell type (DARTS: α [edges, ops])
  optimizer_states  tensors the architecture optimiser keeps per architecture parameter
                    (Adam: exp_avg and exp_avg_sq)
  build             the same signature as `mix`, visiting every module the edge holds (its
                    parameters), when the edge runs fewer than it holds (default: `mix`)
  options           the method's parameters that change its cost, with their defaults
  steps             maps an order to the kind of search step it runs (memory.STEPS); the
                    orders and domains it allows are its description's (spacec.arch.methods)
  extra_columns     columns a cell's weights row has beyond one per candidate (PC-DARTS's edge
                    weight, DARTS-'s skip weight)
  fits_memory       offered as a way to fit a search into less memory (a partial-channel
                    method: the same search space at a fraction of the activations)
  weight_step_alpha whether the w step's pass carries α's gradient (not for SDARTS-RS)
  runs_a_path       a step trains one sampled architecture: k edges into a node (random_ws)

Methods whose edges compute what DARTS's do (SNAS, DrNAS, SDARTS-RS, FairDARTS, β-DARTS: other
mixing weights, other loss terms) share its `mix`. The sampling methods (GDAS, random_ws) run one
candidate per edge, which one changes every step: their prediction takes every edge's most
expensive candidate (what the step needs when the sample draws it), an upper bound; random_ws
runs only the sampled architecture's edges, the k heaviest into each node under a top-k rule.

The recurrent search (RecurrentWalk) mixes every activation of a node as DARTS does for every
method: an upper bound for the sampling ones. PC-DARTS applies to image cells only.

The runtime's edges are spacec.runtime.relax's (MixedEdge, PartialEdge, SampledEdge,
AuxiliarySkipEdge). tests/test_cost.py checks DARTS's program against the saved tensors of whole
supernets, every method's parameters and α against the supernet the runtime builds for it, and
the others' activations by hand on one-edge spaces; benchmarks/cost_model.py measures every
method's step against its prediction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from spacec import catalog, spec
from spacec.arch.methods import describe
from spacec.cost.programs import Step, is_zero, leads_with_relu, supernet_candidate
from spacec.cost.tracer import Sym, Tracer
from spacec.errors import ReportedError
from spacec.registry import Registry

# run(t, x, steps, C, stride, input_relu, weight) -> weight · the candidate's output
Run = Callable[[Tracer, Sym, Sequence[Step], int, int, bool, Sym], Sym]
Mix = Callable[..., Sym]
IMAGE, SEQUENCE = "image", "sequence"  # spacec.catalog.NETWORK_DOMAINS


class CostError(ReportedError):
    """A prediction asked for something the method or the space does not do (an order the
    method does not allow, a method or memory setting the space's domain does not take)."""


@dataclass(frozen=True)
class Method:
    name: str
    mix: Mix
    arch_tensors: Callable[..., Mapping[str, tuple[int, ...]]]
    optimizer_states: int
    build: Mix | None = None
    options: tuple[tuple[str, object], ...] = ()
    steps: tuple[tuple[int, str], ...] = ((1, "first"), (2, "second"))
    extra_columns: int = 0
    fits_memory: bool = False
    # The w step's forward carries α's gradient (DARTS computes it and the step discards it);
    # False: the edges get detached weights (SDARTS-RS's perturbed copy), so a candidate's
    # output is not kept for α.
    weight_step_alpha: bool = True
    # Each step trains one sampled architecture (random_ws): under a top-k rule only k edges
    # into a node run, the others add nothing.
    runs_a_path: bool = False

    @property
    def orders(self) -> tuple[int, ...]:
        """The α step's orders the method allows (its description, spacec.arch.methods)."""
        return describe(self.name).orders

    @property
    def domains(self) -> tuple[str, ...]:
        return describe(self.name).domains

    @property
    def modules(self) -> Mix:
        return self.build or self.mix

    @property
    def label(self) -> str:
        """The name with its cost options: pc_darts(k=4)."""
        if not self.options:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self.options)})"

    def edge(self, t: Tracer, x: Sym, weights: Sym, candidates, C: int, stride: int, run: Run,
             build: bool = False) -> Sym:
        mix = self.modules if build else self.mix
        return mix(t, x, weights, candidates, C, stride, run, **dict(self.options))

    def tensors(self, cell: spec.Cell, opset: spec.OpSet) -> Mapping[str, tuple[int, ...]]:
        return self.arch_tensors(cell, opset, **dict(self.options))

    def step(self, order: int) -> str:
        if order not in self.orders:
            allowed = " or ".join(map(str, self.orders))
            raise CostError(f"{self.name} searches with --order {allowed}, not {order}")
        return dict(self.steps)[order]

    def check_domain(self, domain: str) -> None:
        if domain not in self.domains:
            raise CostError(f"{self.name} does not apply to {domain} spaces "
                            f"(only {', '.join(self.domains)})")


METHODS = Registry("search method")


def register_method(method: Method) -> Method:
    METHODS.register(method.name)(method)
    return method


def known_options(name: str, params: Mapping[str, object]) -> dict[str, object]:
    """Those of a run's or a space's method parameters that the cost program of method `name`
    takes (PC-DARTS's k, ...); nothing for a method without a program."""
    if name not in METHODS:
        return {}
    known = dict(METHODS[name].builder.options)
    return {key: value for key, value in params.items() if key in known}


def method(name: str, **options: object) -> Method:
    """The method registered as `name`, with `options` replacing its defaults (CostError for
    an option it does not have)."""
    found = METHODS[name].builder
    if not options:
        return found
    defaults = dict(found.options)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        known = ", ".join(defaults) or "none"
        raise CostError(f"{name} has no option {', '.join(unknown)} (its options: {known})")
    for key, value in options.items():
        _check_option(name, key, value, defaults[key])
    return dataclasses.replace(found, options=tuple({**defaults, **options}.items()))


def _check_option(name: str, key: str, value: object, default: object) -> None:
    """An option's value is of its default's kind (true/false, a positive integer), as the
    run's configuration checks it (spacec.arch.methods)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise CostError(f"{name}: option {key} expects true or false, got {value!r}")
    elif isinstance(default, int) and (
        isinstance(value, bool) or not isinstance(value, int) or value <= 0
    ):
        raise CostError(f"{name}: option {key} expects a positive integer, got {value!r}")


# ---- edges -----------------------------------------------------------------------------------
def weighted_candidate(t: Tracer, x: Sym, steps: Sequence[Step], C: int, stride: int,
                       input_relu: bool, weight: Sym) -> Sym:
    """weight · candidate(x), nothing recomputed (runtime/nn/ops.py `MixedEdge.weighted`): a
    candidate ending in an affine-free norm takes the weight as that norm's weight
    (`scaled_norm`); any other's output is multiplied, and kept by the product."""
    out = supernet_candidate(t, x, steps, C, stride, input_relu)
    if ends_in_norm(steps):
        return t.scaled_norm(out, weight)
    return t.mul(out, t.view(weight, ()))


def ends_in_norm(steps: Sequence[Step]) -> bool:
    return bool(steps) and steps[-1][0] in catalog.NORM_ENDED_IN_SUPERNET


def darts_mix(t: Tracer, x: Sym, weights: Sym, candidates: Sequence[Sequence[Step]], C: int,
              stride: int, run: Run = weighted_candidate) -> Sym:
    """DARTS MixedOp as runtime/nn/ops.py `MixedEdge` computes it: zero candidates skipped,
    one ReLU shared by the candidates that start with one, sum of weights[i] * op_i(x)."""
    active = [steps for steps in candidates if not is_zero(steps)]
    if not active:
        out = None
        for steps in candidates:
            term = run(t, x, steps, C, stride, True, weights)
            out = term if out is None else t.add(out, term)
        return out
    sharing = [steps for steps in active if leads_with_relu(steps[0][0])]
    # `balanced` makes the shared ReLU's output again in backward (memory.shared_relu), and so
    # do the candidates reading it, where all of them recompute (end in a norm).
    remade = getattr(run, "remakes_shared_relu", False) and all(map(ends_in_norm, sharing))
    relu_x = t.relu(x, remade=remade) if sharing else x
    out = None
    for steps in active:
        takes_relu = leads_with_relu(steps[0][0])
        term = run(t, relu_x if takes_relu else x, steps, C, stride, not takes_relu, weights)
        out = term if out is None else t.add(out, term)
    return out


def _kept(steps: Sequence[Step], x: Sym, C: int, stride: int, weights_grad: bool
          ) -> tuple[int, int]:
    """What one candidate keeps for backward (bytes) and computes, on a scratch tracer."""
    scratch = Tracer(weights_grad=weights_grad)
    given = scratch.tensor(x.shape, x.grad)
    takes_relu = leads_with_relu(steps[0][0])
    supernet_candidate(scratch, scratch.relu(given) if takes_relu else given, steps, C, stride,
                       not takes_relu)
    return scratch.saved_bytes, scratch.multiply_adds


def heaviest(candidates: Sequence[Sequence[Step]], x: Sym, C: int, stride: int,
             weights_grad: bool = True) -> int:
    """The column of the candidate that keeps the most for backward on input `x`, of equals
    the one that computes the most: a sampling method's worst sample."""
    kept = [_kept(steps, x, C, stride, weights_grad) for steps in candidates]
    return kept.index(max(kept))


def heaviest_kept(candidates: Sequence[Sequence[Step]], x: Sym, C: int, stride: int,
                  weights_grad: bool = True) -> int:
    """What the heaviest candidate keeps for backward on input `x` (bytes)."""
    return max(_kept(steps, x, C, stride, weights_grad)[0] for steps in candidates)


def sampled_mix(t: Tracer, x: Sym, weights: Sym, candidates: Sequence[Sequence[Step]], C: int,
                stride: int, run: Run = weighted_candidate, weighted: bool = True) -> Sym:
    """runtime/relax/sampled.py `SampledEdge`: only the sampled candidate runs, on relu(x) if
    it starts with a ReLU; GDAS returns w_s·o_s(x) + Σ_{k≠s} w_k. The sample is the candidate
    that keeps the most for backward (module docstring). The candidate runs plainly whatever
    `run` does: `SampledEdge.mix` recomputes no candidate (`low` recomputes the whole edge)."""
    steps = candidates[heaviest(candidates, x, C, stride, t.weights_grad)]
    takes_relu = leads_with_relu(steps[0][0])
    out = supernet_candidate(t, t.relu(x) if takes_relu else x, steps, C, stride,
                             not takes_relu)
    if not weighted:
        return out
    others = t.tensor((), weights.grad)  # torch.cat(the other weights).sum(): a scalar
    return t.add(t.mul(out, t.view(weights, ())), t.view(others, out.shape))


def random_path_mix(t, x, weights, candidates, C, stride, run=weighted_candidate) -> Sym:
    """random_ws: the path's candidate, unweighted (runtime/relax/path.py)."""
    return sampled_mix(t, x, weights, candidates, C, stride, run, weighted=False)


def partial_mix(t: Tracer, x: Sym, weights: Sym, candidates: Sequence[Sequence[Step]], C: int,
                stride: int, run: Run = weighted_candidate, *, k: int, edge_norm: bool) -> Sym:
    """runtime/relax/partial.py `PartialEdge`: the candidates on the first C/k channels (built
    at C/k), the rest bypassing them (max-pooled 2x2 on a stride-2 edge), weighted by the edge
    weight when `edge_norm`, concatenated and channel-shuffled (the reshape copies)."""
    if C % k:
        t.fail(f"pc_darts: k={k} must divide the edge's {C} channels")
    part = C // k
    mixed = darts_mix(t, t.narrow_channels(x, part), weights, candidates, part, stride, run)
    if k == 1:
        return mixed
    rest = t.narrow_channels(x, C - part)  # a view of x
    if stride == 2:
        rest = t.max_pool(rest, 2, 2, 0)
    if edge_norm:
        rest = t.mul(rest, t.view(weights, ()))
    return t.copy(t.cat([mixed, rest]))


def auxiliary_skip_mix(t: Tracer, x: Sym, weights: Sym, candidates: Sequence[Sequence[Step]],
                       C: int, stride: int, run: Run = weighted_candidate) -> Sym:
    """runtime/relax/auxskip.py `AuxiliarySkipEdge`: the DARTS edge plus β·skip(x), the skip
    the identity or, on a stride-2 edge, a FactorizedReduce (with ReLU, no affine)."""
    mixed = darts_mix(t, x, weights, candidates, C, stride, run)
    skip = x if stride == 1 else catalog.COSTS["factorized_reduce"](t, x, C, C, stride, False)
    return t.add(mixed, t.mul(skip, t.view(weights, ())))


# ---- architecture tensors --------------------------------------------------------------------
def _alpha(cell: spec.Cell, opset: spec.OpSet) -> dict[str, tuple[int, ...]]:
    return {"alpha": (len(cell.edges), len(opset.candidates))}


def _alpha_and_beta(cell: spec.Cell, opset: spec.OpSet, *, k: int, edge_norm: bool
                    ) -> dict[str, tuple[int, ...]]:
    # PC-DARTS's β: one logit per edge (PartialChannels.arch_shapes)
    return {**_alpha(cell, opset), **({"beta": (len(cell.edges),)} if edge_norm else {})}


def _no_alpha(cell: spec.Cell, opset: spec.OpSet) -> dict[str, tuple[int, ...]]:
    return {}


# ---- the registry ----------------------------------------------------------------------------
ADAM = 2  # the α optimiser, Adam (runtime/search/architect.py): exp_avg, exp_avg_sq

# Every candidate of every edge runs, weighted: softmax (DARTS), soft Gumbel-softmax (SNAS),
# Dirichlet samples (DrNAS), softmax plus noise in the w step (SDARTS-RS), independent sigmoids
# (FairDARTS), softmax with a loss term (β-DARTS).
DARTS = register_method(Method("darts", darts_mix, _alpha, ADAM))
for _name in ("snas", "drnas", "fair_darts", "beta_darts"):
    register_method(Method(_name, darts_mix, _alpha, ADAM))
# runtime/relax/perturbed.py: the w step mixes with softmax(α).detach() + noise.
register_method(Method("sdarts_rs", darts_mix, _alpha, ADAM, weight_step_alpha=False))
register_method(Method(
    # the candidates on 1/k of an edge's channels, the rest bypass them;
    # k=4: PC-DARTS model_search.py:31 (ImageNet: 2); edge normalisation on (lines 174-175)
    "pc_darts", partial_mix, _alpha_and_beta, ADAM, options=(("k", 4), ("edge_norm", True)),
    extra_columns=1, fits_memory=True,
))
# One hard Gumbel sample per edge: only that candidate runs (its modules all exist).
register_method(Method("gdas", sampled_mix, _alpha, ADAM, build=darts_mix))
# The DARTS edge plus a decaying auxiliary skip β·x.
register_method(Method("darts_minus", auxiliary_skip_mix, _alpha, ADAM, extra_columns=1))
# No α: each batch trains one random path of the supernet, in the w step only.
register_method(Method("random_ws", random_path_mix, _no_alpha, 0, build=darts_mix,
                       steps=((1, "weights"),), runs_a_path=True))
