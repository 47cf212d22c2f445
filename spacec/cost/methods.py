"""Search methods, as the cost model sees them: how an edge mixes its candidates, and α's size.

A method registers once under its name (the `--method` of `spacec info`), with:
  mix               a program `mix(t, x, weights, candidates, C, stride) -> Sym`: one searched
                    edge of the supernet; `weights` is the edge's row of mixing weights
  arch_tensors      cell -> {tensor name: shape}: the architecture parameters it keeps per cell
                    type (DARTS: α [edges, ops]); the first one's softmax feeds `mix`
  optimizer_states  tensors the architecture optimiser keeps per architecture parameter
                    (Adam: exp_avg and exp_avg_sq)
  build             the same signature as `mix`, visiting every module the edge holds (its
                    parameters), when the edge runs fewer than it holds (default: `mix`)

Only DARTS exists today (runtime/nn/ops.py `MixedEdge`). A partial-channel method (PC-DARTS)
or one that samples one candidate per edge (GDAS) adds its own entry: its `mix` traces only the
work it does, and the memory model needs nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from spacec import spec
from spacec.cost.programs import Step, is_zero, leads_with_relu, supernet_candidate
from spacec.cost.tracer import Sym, Tracer
from spacec.registry import Registry


@dataclass(frozen=True)
class Method:
    name: str
    mix: Callable[[Tracer, Sym, Sym, Sequence[Sequence[Step]], int, int], Sym]
    arch_tensors: Callable[[spec.Cell, spec.OpSet], Mapping[str, tuple[int, ...]]]
    optimizer_states: int
    doc: str = ""
    build: Callable[[Tracer, Sym, Sym, Sequence[Sequence[Step]], int, int], Sym] | None = None

    @property
    def modules(self) -> Callable[[Tracer, Sym, Sym, Sequence[Sequence[Step]], int, int], Sym]:
        return self.build or self.mix


METHODS = Registry("search method")


def register_method(method: Method) -> Method:
    METHODS.register(method.name)(method)
    return method


def darts_mix(
    t: Tracer, x: Sym, weights: Sym, candidates: Sequence[Sequence[Step]], C: int, stride: int
) -> Sym:
    """DARTS MixedOp as runtime/nn/ops.py `MixedEdge` computes it: zero candidates skipped,
    one ReLU shared by the candidates that start with one, sum of weights[i] * op_i(x)."""
    active = [(col, steps) for col, steps in enumerate(candidates) if not is_zero(steps)]
    if not active:
        out = None
        for steps in candidates:
            term = t.mul(supernet_candidate(t, x, steps, C, stride, True), t.view(weights, ()))
            out = term if out is None else t.add(out, term)
        return out
    shares_relu = any(leads_with_relu(steps[0][0]) for _, steps in active)
    relu_x = t.relu(x) if shares_relu else x
    out = None
    for _, steps in active:
        takes_relu = leads_with_relu(steps[0][0])
        y = supernet_candidate(t, relu_x if takes_relu else x, steps, C, stride, not takes_relu)
        term = t.mul(y, t.view(weights, ()))
        out = term if out is None else t.add(out, term)
    return out


def _alpha(cell: spec.Cell, opset: spec.OpSet) -> dict[str, tuple[int, ...]]:
    return {"alpha": (len(cell.edges), len(opset.candidates))}


DARTS = register_method(
    Method(
        "darts",
        darts_mix,
        _alpha,
        optimizer_states=2,  # Adam (runtime/search/architect.py): exp_avg, exp_avg_sq
        doc="softmax over every candidate of every edge (Liu et al., 2019)",
    )
)


def method(name: str) -> Method:
    return METHODS[name].builder
