"""Search methods: a relaxation and the figures that define a published method, by name.

A `Method` names the relaxation its supernet mixes candidates with (spacec.runtime.relax), cites
its source and says in a line what it changes. The configuration's ``method`` section picks one
(``spacec search --method NAME``); `spacec methods` lists them. A new method is one `Method`
registered in `METHODS` (and its relaxation, if it brings one).
"""

from __future__ import annotations

from dataclasses import dataclass

from spacec.registry import Registry
from spacec.runtime.relax import Relaxation, relaxation_of

METHODS = Registry("search method")


@dataclass(frozen=True)
class Method:
    name: str
    relaxation: str  # a registered relaxation (spacec.runtime.relax.RELAXATIONS)
    citation: str
    summary: str

    def build_relaxation(self) -> Relaxation:
        return relaxation_of(self.relaxation)


def register_method(method: Method) -> Method:
    METHODS.register(method.name)(method)
    return method


def method(name: str) -> Method:
    return METHODS[name].builder


register_method(Method(
    name="darts",
    relaxation="softmax",
    citation="Liu, Simonyan & Yang, DARTS: Differentiable Architecture Search, ICLR 2019",
    summary="every edge mixes all candidates with softmax(α); bilevel, first or second order",
))
