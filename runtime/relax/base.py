"""The relaxation seam: how a supernet's searched edges turn architecture tensors into outputs.

A `Relaxation` decides, for every cell type of a compiled space:

- which architecture tensors the cell owns (`arch_shapes`: α [edges, ops] for every relaxation;
  more where a method needs them, e.g. per-edge weights) and how they start (`init_arch`);
- once per forward pass, what the cell's edges receive from those tensors (`cell_weights`: for
  the softmax relaxation softmax(α), one row per edge);
- how an image edge computes its output from its candidates and its row (`edge` builds the edge
  module: `edge(x, weights[row])`), and how a recurrent node mixes its incoming edges
  (`mix_node`);
- how its schedule moves with the search (`set_progress`, e.g. a temperature), and what it
  changes during the weight step alone (`weight_step`, e.g. SDARTS's perturbation);
- its own random stream, for relaxations that sample (`seed`: seeded from the run's seed, its
  state in `state_dict`, so that a resumed run draws what an uninterrupted one would, and every
  process of a multi-process run draws the same sample; `Sampling` below);
- how derivation ranks edges and candidates: `strengths` names a pure function registered in
  `spacec.arch.derive.STRENGTHS`, so that `spacec derive` needs no torch.

Generated supernets receive a relaxation object when they are built and call only these methods
(a supernet asks `space_weights` once per forward pass, which asks `cell_weights` of every cell);
a new relaxation is one class registered in `RELAXATIONS`, no generated code changes.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from spacec.arch.derive import ALPHA, DEFAULT_STRENGTHS, CellRule
from spacec.registry import Registry
from spacec.runtime.nn import recurrent
from spacec.runtime.nn.ops import Candidate, MixedEdge

RELAXATIONS = Registry("relaxation")

ALPHA_INIT_SCALE = 1e-3  # α ~ 1e-3 * N(0, 1), as the DARTS code initialises it


class Relaxation:
    """A relaxation with DARTS' edges; subclasses say how α becomes each edge's weights."""

    name: ClassVar[str] = ""
    # A function of spacec.arch.derive.STRENGTHS; None: no α (the run records its genotype).
    strengths: ClassVar[str | None] = DEFAULT_STRENGTHS
    # Whether every candidate (and every architecture tensor) takes part in every forward pass.
    # False for a relaxation that runs a sample of the candidates: on several processes,
    # DistributedDataParallel then looks for parameters without a gradient after each backward.
    all_candidates_used: ClassVar[bool] = True

    def arch_shapes(self, rule: CellRule) -> dict[str, tuple[int, ...]]:
        """The architecture tensors of a cell, by name (α first), and their shapes."""
        return {ALPHA: rule.shape}

    def init_arch(self, tensor: str, shape: tuple[int, ...]) -> Tensor:
        return ALPHA_INIT_SCALE * torch.randn(*shape)

    def cell_weights(self, tensors: Mapping[str, Tensor], rule: CellRule) -> Any:
        """What the cell's edges receive, indexable by α row (and by row slices)."""
        raise NotImplementedError

    def space_weights(self, arch: Mapping[str, Mapping[str, Tensor]],
                      rules: Mapping[str, CellRule]) -> dict[str, Any]:
        """Cell type -> what its edges receive, for one forward pass of the whole supernet."""
        return {cell: self.cell_weights(tensors, rules[cell]) for cell, tensors in arch.items()}

    def edge(self, candidates: Sequence[Candidate], C_in: int, C_out: int, stride: int) -> nn.Module:
        """An image edge mixing `candidates` (α column order): `module(x, weights[row])`."""
        return MixedEdge(candidates, C_in, C_out, stride)

    def mix_node(self, states: Tensor, c: Tensor, h: Tensor, weights: Any,
                 columns: Sequence[tuple[int, str]]) -> Tensor:
        """A recurrent node: its incoming edges' highways mixed by their rows of `weights`."""
        return recurrent.mix_edges(states, c, h, weights, columns)

    def set_progress(self, epoch: int, epochs: int) -> None:
        """Called at the start of every search epoch (0-based) of `epochs`."""

    @contextlib.contextmanager
    def weight_step(self) -> Iterator[None]:
        """The weight step's forward and backward run inside this (the α step's never do)."""
        yield

    def seed(self, seed: int) -> None:
        """Seed the relaxation's own random stream from the run's seed (if it samples)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(f"relaxation {self.name!r} keeps no state, got keys {sorted(state)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def stream_seed(seed: int, stream: str) -> int:
    """A seed for the random stream named `stream` of a run seeded with `seed` (64 bits)."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


class Sampling(Relaxation):
    """A relaxation that draws random numbers from its own CPU generator.

    Drawing on the CPU (and moving the few numbers to the model's device) makes a sample
    independent of the device. `seed` seeds it from the run's seed; its state travels in
    `state_dict`, so checkpoints resume the stream exactly.
    """

    def __init__(self) -> None:
        self.generator = torch.Generator()
        self.generator.manual_seed(stream_seed(0, self.name))

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(stream_seed(seed, self.name))

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = set(state) - {"generator"}
        if unknown or "generator" not in state:
            raise ValueError(f"relaxation {self.name!r} expects its generator state, got keys "
                             f"{sorted(state)}")
        self.generator.set_state(state["generator"])


def register_relaxation(name: str) -> Callable[[type[Relaxation]], type[Relaxation]]:
    """Register a Relaxation class under `name` (duplicate names are rejected)."""

    def register(cls: type[Relaxation]) -> type[Relaxation]:
        cls.name = name
        return RELAXATIONS.register(name)(cls)

    return register


def relaxation_of(relaxation: Relaxation | str | None) -> Relaxation:
    """A relaxation instance from an instance, a registered name, or None (softmax)."""
    if isinstance(relaxation, Relaxation):
        return relaxation
    return RELAXATIONS[relaxation or "softmax"].builder()
