"""Memory settings of the supernet: what a mixed edge keeps for the backward pass.

A DARTS mixed edge computes every candidate and returns their weighted sum; autograd keeps, for
every candidate, the outputs of its ReLUs, convolutions, poolings and BatchNorms (and the
BatchNorm output that the weight multiplies) until the backward pass reaches the edge. That is
most of a search step's memory. The setting says how much of it an edge keeps:

    fast      everything (plain autograd): no recomputation.
    balanced  everything but what the candidates without a convolution keep (a pooling, its
              BatchNorm and the product with the weight: about a quarter of a DARTS edge's
              activations, the int64 indices of max pooling among them): those candidates are
              run again in the backward pass, no convolution is.
    low       the edge's input only; the whole edge is recomputed in the backward pass, so at
              most one edge's activations exist at a time (one more forward of every edge).

The arithmetic is the same in every setting: recomputation replays the same operations on the
same tensors (`torch.utils.checkpoint`, non-reentrant), with the
torch RNG state of the first run. Two things a naive replay would get wrong are handled here:

  * BatchNorm in training mode updates its running statistics on every call: the replay runs on
    copies of the buffers, so running_mean, running_var and num_batches_tracked are
    updated once, as without recomputation;
  * the second-order architecture step runs the supernet through ``torch.func.functional_call``
    on substituted weights (w', w ± Rv), and autograd reaches the edge after that call returned:
    the replay uses the tensors the edge computed with, captured at the first run, not the
    module's parameters of the moment.

Recomputation needs nothing but first derivatives (the architect's second-order step uses a
finite difference, not a double backward). Without gradients (evaluation) every setting runs
the edge plainly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

FAST, BALANCED, LOW = "fast", "balanced", "low"
# The run section validates these names (spacec.runtime.run.config.MEMORY_SETTINGS, below this
# package; tests/test_memory.py checks they agree).
MEMORY_SETTINGS = (FAST, BALANCED, LOW)


def check_memory(setting: str) -> str:
    if setting not in MEMORY_SETTINGS:
        raise ValueError(f"unknown memory setting {setting!r}; valid: "
                         f"{', '.join(MEMORY_SETTINGS)}")
    return setting


def recomputed(module: nn.Module, compute: Callable[..., Tensor], args: tuple[Any, ...],
               kwargs: dict[str, Any], finish: Callable[[Tensor], Tensor] | None = None
               ) -> Tensor:
    """`finish(compute(*args))`, keeping only what it is given for the backward pass.

    `compute` runs on `module`'s parameters and buffers; the replay in the backward pass is
    ``module(*args, **kwargs)`` through ``functional_call`` on the parameters of this call and
    on copies of the buffers (module docstring), so `kwargs` must make the module's call do
    what `compute` does, without recomputation of its own.
    """
    # Made here, outside the checkpointed region (whose operations a replay must repeat).
    params, buffers = _slots(module)
    replayed = {name: getattr(owner, attr) for name, owner, attr in params}
    replayed.update((name, getattr(owner, attr).clone()) for name, owner, attr in buffers)
    calls = 0

    def run(*args: Any) -> Tensor:
        nonlocal calls
        calls += 1
        # The first run computes; a replay runs the module on the captured tensors.
        out = compute(*args) if calls == 1 else functional_call(module, replayed, args, kwargs)
        return out if finish is None else finish(out)

    # determinism_check: the replay is the same code on the same tensors (and checking the
    # metadata of every saved tensor costs Python time per tensor).
    return checkpoint(run, *args, use_reentrant=False, preserve_rng_state=True,
                      determinism_check="none")


Slot = tuple[str, nn.Module, str]  # (name in the module's state_dict, owner, attribute)


def _slots(module: nn.Module) -> tuple[list[Slot], list[Slot]]:
    """Where `module`'s parameters and buffers live (found once per module: walking the module
    tree on every call costs more Python time than the rest of the bookkeeping)."""
    slots = module.__dict__.get("_memory_slots")
    if slots is None:
        params, buffers = [], []
        for prefix, sub in module.named_modules():
            dot = f"{prefix}." if prefix else ""
            params += [(dot + attr, sub, attr) for attr, p in sub._parameters.items()
                       if p is not None]
            buffers += [(dot + attr, sub, attr) for attr, b in sub._buffers.items()
                        if b is not None]
        slots = module.__dict__["_memory_slots"] = (params, buffers)
    return slots


def set_memory(module: nn.Module, setting: str) -> nn.Module:
    """Give every mixed edge of `module` (spacec.runtime.nn.ops.MixedEdge and its subclasses,
    marked by ``edge_memory``) the memory `setting`; returns `module`."""
    check_memory(setting)
    for sub in module.modules():
        if getattr(type(sub), "edge_memory", False):
            sub.memory = setting
    return module
