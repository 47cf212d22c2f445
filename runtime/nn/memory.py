"""Memory settings of the supernet: what a mixed edge keeps for the backward pass.

A DARTS mixed edge computes every candidate and returns their weighted sum; autograd keeps, for
every candidate, the inputs of its convolutions, poolings and BatchNorms and the outputs of its
ReLUs until the backward pass reaches the edge. That is most of a search step's memory. Every
setting first has the weight of a candidate ending in an affine-free BatchNorm (all of DARTS's
but the identity) be that norm's per-channel weight (spacec.runtime.nn.ops.scaled_norm), so
the norm's output is not kept for the weight's gradient: the same arithmetic up to rounding, a
fifth less kept for backward, one pass fewer. Then the setting says how much more an edge leaves out:

    fast      nothing: every tensor autograd saves stays until backward.
    balanced  a max pooling candidate's output and int64 indices (pooled again), the
              outputs of the depthwise convolutions (the pointwise convolutions' inputs), the
              stacked phases of the dilated ones, the edge's shared ReLU and every ReLU after
              a BatchNorm (normalised again from the norm's input, which the norm keeps
              anyway): computed again in the backward pass, for more time
              (benchmarks/search_step.py; README, "Memory settings"). An average pooling's
              output is kept: pooling again cost the most time per byte of all these
              (darts_cnn, batch 16: about 5% of a first-order step, for 2% of the reference
              layout's peak). In
              an α-only pass (weights that need no gradient) a convolution's input, saved
              only for its weight's gradient, is not made again at all: nothing reads it
              (`_Unread`).
    low       the edge's input only; the whole edge is recomputed in the backward pass, so at
              most one edge's activations exist at a time (one more forward of every edge).

The arithmetic is the same in every setting: recomputation replays the same operations on the
same tensors. `balanced` does it step by step with saved-tensor hooks (`Remade`):
autograd's own nodes stay in the graph, so a backward pass still computes only the gradients
it is asked for. `low` runs the edge without a graph and, in backward, again with one
(`_Recomputed`: one autograd node per edge, its input, weights row and parameters its inputs,
with the torch RNG state of the first run), differentiating that for what autograd asks; it
hands back the edge input's gradient summed over the candidates, so its numbers equal `fast`'s
up to the order of that sum (float rounding). Two things a naive replay would get wrong are
handled here:

  * BatchNorm in training mode updates its running statistics on every call: the replay runs on
    copies of the buffers, so running_mean, running_var and num_batches_tracked are
    updated once, as without recomputation (the step-by-step recomputations run no norm);
  * the second-order architecture step runs the supernet through ``torch.func.functional_call``
    on substituted weights (w', w ± Rv), and autograd reaches the edge after that call returned:
    the replay uses the tensors the edge computed with, captured at the first run, not the
    module's parameters of the moment.

Recomputation needs nothing but first derivatives (the architect's second-order step uses a
finite difference, not a double backward). Without gradients (evaluation) every setting runs
the edge plainly, and so does `balanced` under autocast (its saved-tensor hooks would make
float32 tensors again where autocast saved bf16 casts: a bf16 weight step keeps what `fast`
keeps); `low` recomputes there through torch.utils.checkpoint, which replays in the forward's
precision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint, get_device_states, set_device_states

from spacec.runtime.errors import ConfigError
from spacec.runtime.nn import state

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
               kwargs: dict[str, Any]) -> Tensor:
    """`compute(*args)`, keeping only what it is given for the backward pass.

    `compute` runs on `module`'s parameters and buffers without recording a graph; the replay
    in the backward pass is ``module(*args, **kwargs)`` on the parameters of this call and on
    copies of the buffers (module docstring; spacec.runtime.nn.state.call_with, and
    ``functional_call`` where torch's checkpoint replays, which Dynamo traces), so `kwargs` must
    make the module's call do what `compute` does, without recomputation of its own.

    Why not ``torch.utils.checkpoint(use_reentrant=False)``, which this replaced: it records
    the edge's graph in the forward pass (its nodes are what backward replays into), and those
    small nodes, allocated between the edge's freed temporaries, pinned them in glibc's heap:
    on nas_bench_201 at batch 64 a step held 0.93 GiB above its start where this holds 0.40-0.44
    (benchmarks/RESULTS.md). The checkpoint stays under torch.compile (Dynamo traces it), under
    autocast (it replays in the forward's precision) and for arguments `_split` cannot see
    into.
    """
    # Made here, outside the recomputed region (whose operations a replay must repeat).
    named = state.parameters(module)
    names, weights = list(named), list(named.values())
    copies = {name: buffer.clone() for name, buffer in state.buffers(module).items()}

    def given_state(given_weights: Sequence[Tensor]) -> dict[str, Tensor]:
        return {**dict(zip(names, given_weights, strict=True)), **copies}

    tensors, rebuilt = _split(args)
    device_type = tensors[0].device.type if tensors else "cpu"
    if rebuilt is None or torch.compiler.is_compiling() or autocast_enabled(device_type):
        return _checkpointed(module, compute, args, kwargs, given_state(weights))

    def replay(given: tuple[Tensor, ...], given_weights: tuple[Tensor, ...]) -> Tensor:
        return state.call_with(module, given_state(given_weights), *rebuilt(iter(given)), **kwargs)

    return _Recomputed.apply(lambda *given: compute(*rebuilt(iter(given))), replay,
                             len(tensors), *tensors, *weights)


def _checkpointed(module: nn.Module, compute: Callable[..., Tensor], args: tuple[Any, ...],
                  kwargs: dict[str, Any], replayed: dict[str, Tensor]) -> Tensor:
    """`recomputed` through torch.utils.checkpoint (it replays under autocast, and Dynamo
    traces it)."""
    calls = 0

    def run(*args: Any) -> Tensor:
        nonlocal calls
        calls += 1
        # The first run computes; a replay runs the module on the captured tensors.
        return compute(*args) if calls == 1 else functional_call(module, replayed, args, kwargs)

    # determinism_check: the replay is the same code on the same tensors.
    return checkpoint(run, *args, use_reentrant=False, preserve_rng_state=True,
                      determinism_check="none")


_PLAIN = (type(None), bool, int, float, str)


def _split(value: Any) -> tuple[list[Tensor], Callable[[Iterator[Tensor]], Any] | None]:
    """The tensors in `value` (through tuples, lists, dicts and dataclasses, such as a sampled
    edge's row) and how to build `value` again from others in their place, holding none of
    them; None for that when `value` holds anything else, which might hide a tensor (the
    caller then checkpoints)."""
    if isinstance(value, Tensor):
        return [value], next
    if isinstance(value, _PLAIN):
        return [], lambda given: value
    parts = _parts(value)
    if parts is None:
        return [], None
    items, build = parts
    split = {key: _split(item) for key, item in items.items()}
    if any(make is None for _, make in split.values()):
        return [], None
    makes = {key: make for key, (_, make) in split.items()}
    return ([t for found, _ in split.values() for t in found],
            lambda given: build({key: make(given) for key, make in makes.items()}))


def _parts(value: Any) -> tuple[dict[Any, Any], Callable[[dict[Any, Any]], Any]] | None:
    """A container's items by key and how to build one of its kind from items so keyed."""
    kind = type(value)
    if kind is dict:
        return value, dict
    if kind in (tuple, list):
        return dict(enumerate(value)), lambda made: kind(made.values())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
        return fields, lambda made: kind(**made)
    return None


class _Recomputed(torch.autograd.Function):
    """One autograd node for a recomputed region: the forward pass runs it without a graph,
    keeping its tensor inputs (the region's arguments, then its weights); the backward pass
    runs it again with a graph, on those inputs and with the forward's random state, and
    differentiates that for the inputs autograd asks for (an α-only pass: not the weights)."""

    @staticmethod
    def forward(ctx, compute, replay, count, *tensors):
        ctx.replay, ctx.count = replay, count
        ctx.devices, ctx.device_states = get_device_states(*tensors)
        ctx.cpu_state = torch.get_rng_state()
        ctx.save_for_backward(*tensors)
        return compute(*tensors[:count])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        needs = ctx.needs_input_grad[3:]
        inputs = [t.detach().requires_grad_(need) for t, need in zip(ctx.saved_tensors, needs,
                                                                        strict=True)]
        with torch.random.fork_rng(devices=ctx.devices), torch.enable_grad():
            torch.set_rng_state(ctx.cpu_state)
            set_device_states(ctx.devices, ctx.device_states)
            out = ctx.replay(tuple(inputs[:ctx.count]), tuple(inputs[ctx.count:]))
        wanted = [t for t, need in zip(inputs, needs, strict=True) if need]
        found = iter(torch.autograd.grad(out, wanted, grad, allow_unused=True))
        return (None, None, None, *(next(found) if need else None for need in needs))


class MemoryNotApplicable(ConfigError):
    """A setting that recomputes, for a network with no mixed edge to recompute (a recurrent
    supernet, a derived network): it would change nothing, and a run must not pretend it did."""

    def __init__(self, setting: str) -> None:
        super().__init__(
            f"run.memory: memory setting {setting!r} recomputes the mixed edges of an image "
            f"supernet, and this network has none: it keeps everything for backward, as "
            f"{FAST!r} does"
        )
        self.setting = setting


def set_memory(module: nn.Module, setting: str) -> nn.Module:
    """Give every mixed edge of `module` (spacec.runtime.nn.ops.MixedEdge and its subclasses,
    marked by ``edge_memory``) the memory `setting`; returns `module`. A setting other than
    `fast` on a module without mixed edges raises `MemoryNotApplicable`."""
    check_memory(setting)
    edges = [sub for sub in module.modules() if getattr(type(sub), "edge_memory", False)]
    if setting != FAST and not edges:
        raise MemoryNotApplicable(setting)
    for edge in edges:
        edge.memory = setting
    return module


# ---- hand-written recomputation of single steps (saved-tensor hooks) --------------------------
# `balanced` keeps, of what a candidate's pooling, depthwise convolution or ReLU makes, nothing
# but what is kept anyway (the pooling's or the ReLU's input, a norm's input), and computes the
# rest again when the backward pass asks for it. Unlike checkpointing a whole candidate,
# autograd's own nodes stay in the graph: each still computes only the gradients a backward
# pass needs (an α step asks for no weight gradient), and nothing is traced twice.


def autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument; CPU autocast has its own query
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


class Remade:
    """Saved-tensor hooks for one step of a candidate: the tensors `pick` names are not kept
    for the backward pass; `remake(name)` computes the named one again (and whatever else it
    computes on the way, kept until asked for) from what the step captured (its input and
    weight), when the backward pass unpacks it.

    The captured tensors must not change in place before the backward pass, as autograd
    requires of any tensor it keeps; their versions are checked here as autograd would.
    """

    def __init__(self, remake: Callable[[str], dict[str, Tensor]], *captured: Tensor) -> None:
        self.remake = remake
        self.captured = captured
        self.versions = tuple(t._version for t in captured)
        self.pick: Callable[[Tensor], str | None] = _keep
        # Names whose saved copies the backward pass never reads (`_Unread`).
        self.unread: frozenset[str] = frozenset()
        self.made: dict[str, Tensor] = {}
        self.tokens: dict[str, int] = {}  # name -> saved copies not yet asked for
        self.deferring = False
        self.pending: list[_Token] = []

    @contextmanager
    def hooks(self, pick: Callable[[Tensor], str | None]) -> Iterator[None]:
        """Within: `pick(tensor)` names the saved tensors to make again. Afterwards, `pick`
        (which refers to the step's outputs, to recognise them) is dropped, so that nothing
        here keeps those outputs alive."""
        self.pick = pick
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
                yield
        finally:
            self.pick = _keep

    def _pack(self, tensor: Tensor) -> Any:
        name = self.pick(tensor)
        if name in self.unread:
            return _Unread(tensor)
        if name is not None:
            self.tokens[name] = self.tokens.get(name, 0) + 1
            return _Token(self, name)
        if self.deferring:
            held = _Token(self, None, tensor)
            self.pending.append(held)
            return held
        return tensor

    @staticmethod
    def _unpack(packed: Any) -> Tensor:
        if isinstance(packed, _Unread):
            return packed.placeholder()
        if not isinstance(packed, _Token):
            return packed
        return packed.tensor if packed.name is None else packed.remade.get(packed.name)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Within: what the hooks keep is held where `settle` can still drop it (an op saves its
        own output before the caller sees that output)."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False

    def settle(self, output: Tensor, name: str) -> None:
        """The held copies of `output` are dropped and made again as `name` when asked for."""
        for held in self.pending:
            if _same(held.tensor, output):
                held.tensor, held.name = None, name
                self.tokens[name] = self.tokens.get(name, 0) + 1
        self.pending.clear()

    def get(self, name: str) -> Tensor:
        if name not in self.made:
            if tuple(t._version for t in self.captured) != self.versions:
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been modified "
                    "by an inplace operation (a tensor the memory setting 'balanced' computes "
                    "again in the backward pass)"
                )
            with torch.no_grad():
                made = self.remake(name)
            # What the remake made on the way is kept only for saved copies still to be asked.
            self.made.update((key, tensor) for key, tensor in made.items()
                             if key == name or self.tokens.get(key, 0) > 0)
        # Kept until every saved copy of it was asked for (a ReLU's output is saved by the ReLU
        # and by the convolution reading it), then handed over: autograd holds it while it
        # needs it.
        self.tokens[name] = self.tokens.get(name, 1) - 1
        return self.made[name] if self.tokens[name] > 0 else self.made.pop(name)


def _keep(tensor: Tensor) -> None:
    return None


class _Token:
    """A saved tensor as the hooks keep it: made again by `remade` as `name`, or (name None)
    held as `tensor`."""

    __slots__ = ("remade", "name", "tensor")

    def __init__(self, remade: Remade, name: str | None, tensor: Tensor | None = None) -> None:
        self.remade, self.name, self.tensor = remade, name, tensor


class _Unread:
    """A saved tensor the backward pass does not read: a convolution's input when its weight
    needs no gradient (an α-only pass runs on weights that do not require one). Autograd saves
    it all the same and hands it to the convolution's backward, which computes the input's
    gradient from the weight alone; so it is neither kept nor made again, and the backward
    gets uninitialised memory of its layout (the layout decides the gradient's, the contents
    nothing: tests/test_memory.py checks the gradients bit for bit)."""

    __slots__ = ("shape", "stride", "dtype", "device")

    def __init__(self, tensor: Tensor) -> None:
        self.shape, self.stride = tensor.shape, tensor.stride()
        self.dtype, self.device = tensor.dtype, tensor.device

    def placeholder(self) -> Tensor:
        return torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device=self.device)


def _weight_needs_grad(conv: nn.Module) -> bool:
    """Whether backward computes `conv`'s weight gradient, for which it reads the saved input."""
    return not isinstance(conv, nn.Conv2d) or conv.weight.requires_grad


def _same(a: Tensor, b: Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.dtype == b.dtype


def pooled_lean(pool: nn.MaxPool2d, x: Tensor, then: Callable[[Tensor], Tensor]) -> Tensor:
    """`then(pool(x))`, keeping neither the max pooling's output (the input of `then`, a norm)
    nor its int64 indices (twice the output's size): both are pooled again."""
    remade = Remade(lambda name: _pool_again(pool, x), x)
    outputs: list[Tensor] = []

    def pick(tensor: Tensor) -> str | None:
        if tensor.dtype == torch.int64 and tensor.dim() == 4:
            return "indices"
        if outputs and _same(tensor, outputs[0]):
            return "pooled"
        return None

    with remade.hooks(pick):
        pooled = pool(x)
        outputs.append(pooled)
        return then(pooled)


def _pool_again(pool: nn.MaxPool2d, x: Tensor) -> dict[str, Tensor]:
    pooled, indices = F.max_pool2d(x, pool.kernel_size, pool.stride, pool.padding,
                                   pool.dilation, pool.ceil_mode, return_indices=True)
    return {"pooled": pooled, "indices": indices}


class Before:
    """Cheap steps (a ReLU, or a BatchNorm and a ReLU) before a step of a candidate, whose
    output the backward pass makes again instead of keeping: `run` in the forward pass,
    `again` in the backward pass (the same arithmetic, no side effects). What a replay reads
    besides the candidate's input is `captured`. The lean steps keep `again` and `captured`,
    never `run` (which may hold the output itself)."""

    def __init__(self, run: Callable[[Tensor], Tensor], again: Callable[[Tensor], Tensor],
                 *captured: Tensor) -> None:
        self.run, self.again, self.captured = run, again, captured


def norm_relu_before(norm: nn.BatchNorm2d) -> Before:
    """relu(norm(y)) for a BatchNorm in training mode, the ReLU in place (the norm's backward
    reads its input, not its output): one tensor made instead of two. The replay normalises
    `y` by its batch statistics again (the same kernel on the same input), updating no running
    statistics, with the norm's weight and bias of this call."""
    weight, bias, eps = norm.weight, norm.bias, norm.eps

    def again(y: Tensor) -> Tensor:
        return F.relu_(F.batch_norm(y, None, None, weight, bias, True, 0.0, eps))

    captured = tuple(p for p in (weight, bias) if p is not None)
    return Before(lambda y: F.relu_(norm(y)), again, *captured)


def _made_before(remade: Remade, before: Before, x: Tensor) -> Tensor:
    # before.run(x), its saved copies of its output handed to `remade` as "input".
    with remade.deferred():
        made = before.run(x)
    remade.settle(made, "input")
    return made


def shared_relu(x: Tensor) -> tuple[Tensor, Before]:
    """relu(x), computed once for all of a mixed edge's candidates that start with a ReLU, and
    not kept by the ReLU: made again from `x` when its backward runs. Returns it and the
    `Before` through which the candidates' lean steps read it (they do not keep it either)."""
    remade = Remade(lambda name: {"input": F.relu(x)}, x)
    with remade.hooks(_keep):
        made = _made_before(remade, Before(F.relu, F.relu), x)
    return made, Before(lambda given: made, F.relu)


def through_lean(before: Before, then: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """`then(before.run(x))`, not keeping `before`'s output (a ReLU's, which the ReLU and
    `then`, a convolution or a norm, would keep): it is made again from `x` in backward."""
    again = before.again
    inputs: list[Tensor] = []

    def pick(tensor: Tensor) -> str | None:
        return "input" if inputs and _same(tensor, inputs[0]) else None

    remade = Remade(lambda name: {"input": again(x)}, x, *before.captured)
    with remade.hooks(pick):
        inputs.append(_made_before(remade, before, x))
        return then(inputs[0])


def convolved_lean(first: nn.Conv2d, second: nn.Module, x: Tensor,
                   before: Before | None = None) -> Tensor:
    """`second(first(before.run(x)))`, not keeping `first`'s output (the input `second` keeps
    for its weight's gradient), nor the stacked phases a polyphase convolution reads
    (spacec.runtime.nn.accelerate.DilatedDepthwiseConv2d), nor `before`'s output (the input
    `first` keeps): `first`, a depthwise convolution and cheap, and `before` run again, on the
    weights of this call (the second-order step substitutes weights). Without `before`, `x`
    is `first`'s input."""
    weight, bias = first.weight, first.bias
    phased = hasattr(first, "polyphase") and first.polyphase(x.shape)
    again = None if before is None else before.again
    inputs: list[Tensor] = []  # before's output
    running: list[bool] = []  # not empty while `first` runs
    outputs: list[Tensor] = []  # first's output

    def remake(name: str) -> dict[str, Tensor]:
        made = {} if again is None else {"input": again(x)}
        if name == "input":
            return made
        given = made.get("input", x)
        if not phased:
            return {**made, "hidden": first._conv_forward(given, weight, bias)}
        made["phases"] = first.phases(given)
        if name == "phases":
            return made
        return {**made, "hidden": first.from_phases(made["phases"], weight, bias, x.shape)}

    def pick(tensor: Tensor) -> str | None:
        if outputs:
            return "hidden" if _same(tensor, outputs[0]) else None
        if inputs and _same(tensor, inputs[0]):
            return "input"
        # A convolution saves its input and weight; a polyphase one's input is its phases.
        if phased and running and not _same(tensor, weight) and not _same(tensor, x):
            return "phases"
        return None

    remade = Remade(remake, x, weight, *(() if before is None else before.captured))
    # In an α-only pass `second` reads `first`'s output, and `first` its phases, for nothing.
    unread = set()
    if not _weight_needs_grad(second):
        unread.add("hidden")
    if phased and not _weight_needs_grad(first):
        unread.add("phases")
    remade.unread = frozenset(unread)
    with remade.hooks(pick):
        if before is not None:
            inputs.append(_made_before(remade, before, x))
        running.append(True)
        hidden = first(inputs[0] if inputs else x)
        running.clear()
        outputs.append(hidden)
        return second(hidden)
