"""Relaxations of a supernet's searched edges (see `spacec.runtime.relax.base`)."""

from spacec.runtime.relax import softmax  # noqa: F401  (registers the softmax relaxation)
from spacec.runtime.relax.base import RELAXATIONS, Relaxation, register_relaxation, relaxation_of

__all__ = ["RELAXATIONS", "Relaxation", "register_relaxation", "relaxation_of"]
