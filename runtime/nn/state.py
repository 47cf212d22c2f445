"""A module's parameters and buffers by name, found once, and calls on substituted tensors.

The architect reads the supernet's tensors by name and runs it on substituted ones several
times a step (as ``torch.func.functional_call`` does). Each of those walked the module tree: a
darts_cnn supernet has some 4,900 modules, 1,400 parameters and 2,800 buffers, and one α-loss
call's bookkeeping took 30-46 ms of Python (1.3 ms here; the second-order step makes four such
calls: 0.93x its time on 2 CPU threads, benchmarks/RESULTS.md), the more of a step on a GPU,
where the step is bound by issuing operations. Here the tree is walked once per module: where
each tensor lives (its owning submodule and attribute) is kept, and reading or substituting
the tensors goes to those places directly.

The structure is taken as it is at the first call (which submodule owns which tensor, and which
parameters are tied, i.e. one tensor under several names); the tensors themselves are read
afresh on every call, so ``module.to(...)`` or ``load_state_dict`` afterwards are seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

Place = tuple[nn.Module, str]  # (owning submodule, attribute)


@dataclass(frozen=True)
class Places:
    """Where a module's tensors live. `parameters` and `buffers`: each name as
    ``named_parameters()`` / ``named_buffers()`` give it (a tied tensor under its first name
    only) -> every place that holds that tensor (a tied one: several)."""

    parameters: dict[str, tuple[Place, ...]]
    buffers: dict[str, tuple[Place, ...]]


def places(module: nn.Module) -> Places:
    """`module`'s `Places`, found on the first call and kept on the module."""
    found = module.__dict__.get("_spacec_places")
    if found is None:
        found = module.__dict__["_spacec_places"] = Places(
            _named_places(module, "_parameters"), _named_places(module, "_buffers"))
    return found


def _named_places(module: nn.Module, kind: str) -> dict[str, tuple[Place, ...]]:
    named: dict[str, list[Place]] = {}
    name_of: dict[int, str] = {}  # id(tensor) -> its first name
    for prefix, sub in module.named_modules():
        for attr, tensor in getattr(sub, kind).items():
            if tensor is None:
                continue
            name = name_of.setdefault(id(tensor), f"{prefix}.{attr}" if prefix else attr)
            named.setdefault(name, []).append((sub, attr))
    return {name: tuple(held) for name, held in named.items()}


def parameters(module: nn.Module) -> dict[str, Tensor]:
    """``dict(module.named_parameters())``, without walking the module tree."""
    return {name: held[0][0]._parameters[held[0][1]]
            for name, held in places(module).parameters.items()}


def buffers(module: nn.Module) -> dict[str, Tensor]:
    """``dict(module.named_buffers())``, without walking the module tree."""
    return {name: held[0][0]._buffers[held[0][1]]
            for name, held in places(module).buffers.items()}


@contextmanager
def substituted(module: nn.Module, tensors: Mapping[str, Tensor]) -> Iterator[None]:
    """Within, `module` holds `tensors` (named as `parameters` and `buffers` name them; a tied
    parameter's every place takes the tensor given for it) instead of its own; afterwards its
    own again, also if the call raised. Names `module` does not have are refused."""
    found = places(module)
    swaps: list[tuple[dict[str, Any], str, Any]] = []
    try:
        for name, tensor in tensors.items():
            held, kind = found.parameters.get(name), "_parameters"
            if held is None:
                held, kind = found.buffers.get(name), "_buffers"
            if held is None:
                raise KeyError(f"{type(module).__name__} has no parameter or buffer {name!r}")
            for owner, attr in held:
                slots = getattr(owner, kind)
                swaps.append((slots, attr, slots[attr]))
                slots[attr] = tensor
        yield
    finally:
        for slots, attr, original in reversed(swaps):
            slots[attr] = original


def call_with(module: nn.Module, tensors: Mapping[str, Tensor], *args: Any,
              **kwargs: Any) -> Any:
    """``module(*args, **kwargs)`` on `tensors` instead of its own parameters and buffers
    (those it is not given: its own), as ``torch.func.functional_call(module, tensors, args,
    kwargs, tie_weights=True)`` computes it."""
    with substituted(module, tensors):
        return module(*args, **kwargs)
