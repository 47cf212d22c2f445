"""A layer algebra on symbolic tensors: shapes, parameters, multiply-adds and saved activations.

The catalogue's cost programs (spacec.catalog.COSTS) describe every primitive as the sequence of
layers its runtime module runs. A `Tracer` executes such a program on `Sym`s, tensors that are
only a shape, a requires-grad flag and a storage, and records what torch would:

- the output shape, or a `ShapeError` where torch would fail (a size reaching zero, halves that do
  not line up, a linear layer fed the wrong width);
- parameters and buffers created (a parameter requires grad when `weights_grad`);
- multiply-adds of convolutions, linear layers and matrix products over the whole batch
  (runtime/tools/flops.py's convention: output elements x input channels per group x kernel
  area; in x out per row), so a trace at batch 1 gives the per-sample figure;
- the storages autograd saves for backward, deduplicated (a view keeps its whole storage alive),
  by the rules of torch's derivative formulas: an op records a graph only when an input or a
  parameter requires grad; convolutions and linear layers save their input, BatchNorm its input
  and two per-channel statistics, ReLU/sigmoid/tanh their output, max pooling its input and
  int64 indices, average pooling its input; a linear layer or matrix product keeps its input
  only for its weight's gradient, and `a * b` the factor the other side's gradient needs.
  Parameters and buffers that are saved are not counted (they exist anyway);
- recomputation (`recompute`, torch.utils.checkpoint): a segment whose forward saves nothing
  but its inputs, and whose own saved tensors live again while backward reruns it
  (`recompute_peak`: the largest such segment, alive on top of what the others saved); and
  single outputs made again in backward instead of kept (`remake_pooling`,
  `remake_depthwise`), each alive again only while its own backward runs;
- `scaled_norm`: an affine-free BatchNorm whose per-channel weight is a mixing weight, which
  keeps the norm's input (not also its output, as a separate product would).

Shapes are tuples whose first dimension is the batch; image tensors are (N, C, H, W). Nothing here
imports torch: the formulas are checked against torch by tests/test_cost.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

FLOAT = 4  # bytes of a float32 element
INDEX = 8  # bytes of an int64 element (max-pooling indices, class labels, counters)


class ShapeError(ValueError):
    """An op torch would refuse at these sizes; the message names the op and the sizes.

    `sizes` is (h, w, out_h, out_w) when a spatial size would reach zero; `context` collects,
    innermost first, where the op sits (a candidate, an edge) as callers re-raise it.
    """

    def __init__(self, message: str, sizes: tuple[int, int, int, int] | None = None):
        super().__init__(message)
        self.message = message
        self.sizes = sizes
        self.context: list[str] = []


@dataclass(eq=False)
class Storage:
    nbytes: int


@dataclass(eq=False)
class Sym:
    """A symbolic tensor."""

    shape: tuple[int, ...]
    grad: bool  # requires grad (autograd records ops on it)
    storage: Storage
    norm_input: Sym | None = None  # an affine-free BatchNorm's output: that norm's input
    from_norm: bool = False  # a BatchNorm's output (a ReLU after it is made again: balanced)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def spatial(self) -> tuple[int, int]:
        return self.shape[-2], self.shape[-1]


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else value


def size_text(shape: Sequence[int]) -> str:
    """(N, C, H, W) -> '16x16'; a feature vector -> its width."""
    return "x".join(str(s) for s in shape[-2:]) if len(shape) == 4 else str(shape[-1])


@dataclass
class Summary:
    """What one call of a sub-program did, replayable on other tensors of the same shapes."""

    outputs: tuple[tuple[tuple[int, ...], bool, tuple[str, int]], ...]  # shape, grad, slot
    slots: tuple[tuple[int, bool], ...]  # internal storages the outputs use: (bytes, saved)
    saved_inputs: frozenset[int]
    own_saved: int  # bytes of saved internal storages no output uses
    parameters: int
    buffers: int
    multiply_adds: int
    largest: int
    recompute_peak: int


@dataclass
class Tracer:
    """Runs cost programs on symbolic tensors and accumulates their costs.

    `weights_grad`: the parameters created require grad (a weight step or the weight-gradient
    pass of a second-order step), else they are detached (an α-only pass).
    """

    weights_grad: bool = True
    tensor_bytes: Callable[[int], int] = lambda n: n  # what the allocator takes for n bytes
    parameters: int = 0
    buffers: int = 0  # bytes
    multiply_adds: int = 0  # over the batch
    largest: int = 0  # bytes of the largest tensor created
    recompute_peak: int = 0  # bytes a recomputed segment saves again during backward (largest)
    saved: dict[int, int] = field(default_factory=dict)  # id(storage) -> bytes
    scopes: dict[int, str] = field(default_factory=dict)  # id(storage) -> scope that saved it
    scope: str = ""
    # Outputs `balanced` computes again in backward instead of keeping (runtime/nn/memory.py):
    # a max pooling's output and indices (pooled_lean); a depthwise convolution's output and the
    # polyphase stack a dilated one reads (convolved_lean); a ReLU's output after a BatchNorm
    # (norm_relu_before). While set, the ops mark what they make; a marked storage is alive
    # again only while its backward runs.
    remake_pooling: bool = False
    remake_depthwise: bool = False
    _remade: set = field(default_factory=set, repr=False)  # ids of storages made again
    _keep: list = field(default_factory=list, repr=False)  # keeps saved storages' ids unique
    _cache: dict = field(default_factory=dict, repr=False)

    # -- bookkeeping -----------------------------------------------------------------------------
    def tensor(self, shape: Sequence[int], grad: bool = False, itemsize: int = FLOAT) -> Sym:
        """A fresh tensor (an input, or any op's new output)."""
        shape = tuple(shape)
        nbytes = self.tensor_bytes(math.prod(shape) * itemsize)
        self.largest = max(self.largest, nbytes)
        return Sym(shape, grad, Storage(nbytes))

    def view(self, x: Sym, shape: Sequence[int]) -> Sym:
        return Sym(tuple(shape), x.grad, x.storage)

    def save(self, *tensors: Sym | Storage) -> None:
        for item in tensors:
            storage = item.storage if isinstance(item, Sym) else item
            if id(storage) in self._remade:
                # alive again only while its backward runs
                self.recompute_peak = max(self.recompute_peak, storage.nbytes)
                continue
            if id(storage) not in self.saved:
                self.saved[id(storage)] = storage.nbytes
                self.scopes[id(storage)] = self.scope
                self._keep.append(storage)

    @property
    def saved_bytes(self) -> int:
        return sum(self.saved.values())

    def saved_by_scope(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for key, nbytes in self.saved.items():
            totals[self.scopes[key]] = totals.get(self.scopes[key], 0) + nbytes
        return totals

    def _parameter(self, count: int) -> None:
        self.parameters += count

    def _records(self, *inputs: Sym, params: bool = False) -> bool:
        """Whether autograd records this op: an input, or a parameter it uses, requires grad."""
        return any(x.grad for x in inputs) or (params and self.weights_grad)

    def fail(self, message: str, sizes: tuple[int, int, int, int] | None = None) -> None:
        """A program's own precondition (what its runtime module would reject)."""
        raise ShapeError(message, sizes)

    # -- layers ----------------------------------------------------------------------------------
    def conv(
        self,
        x: Sym,
        out_channels: int,
        kernel: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int = 1,
        groups: int = 1,
    ) -> Sym:
        """nn.Conv2d without bias."""
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(padding)
        if min(c, out_channels, groups, kh, kw, sh, sw, dilation) < 1:
            raise ShapeError(f"a convolution of {c} -> {out_channels} channels")
        if c % groups or out_channels % groups:
            raise ShapeError(f"a convolution of {c} channels in {groups} groups")
        out_h = (h + 2 * ph - dilation * (kh - 1) - 1) // sh + 1
        out_w = (w + 2 * pw - dilation * (kw - 1) - 1) // sw + 1
        if out_h < 1 or out_w < 1:
            raise ShapeError(
                f"a {kh}x{kw} convolution (stride {sh}) would reduce {h}x{w} to "
                f"{max(out_h, 0)}x{max(out_w, 0)}",
                (h, w, max(out_h, 0), max(out_w, 0)),
            )
        self._parameter(out_channels * c // groups * kh * kw)
        self.multiply_adds += n * out_channels * out_h * out_w * (c // groups) * kh * kw
        out = self.tensor((n, out_channels, out_h, out_w), self._records(x, params=True))
        if out.grad:
            self.save(x)
        if self.remake_depthwise and groups == c == out_channels:
            self._remade_storage(out)
        return out

    def _remade_storage(self, x: Sym) -> None:
        self._remade.add(id(x.storage))
        self._keep.append(x.storage)

    def pointwise(self, x: Sym, out_channels: int, stride: int = 1) -> Sym:
        """runtime PointwiseConv2d: a strided 1x1 convolution of the subsampled input (a copy)."""
        if stride == 1:
            return self.conv(x, out_channels, 1)
        return self.conv(self.copy(self.subsample(x, stride)), out_channels, 1)

    def dilated_depthwise(
        self, x: Sym, kernel: int, stride: int, padding: int, dilation: int
    ) -> Sym:
        """runtime DilatedDepthwiseConv2d: polyphase sub-images when the sizes allow it."""
        n, c, h, w = x.shape
        d = dilation
        polyphase = (
            d > 1 and kernel % 2 == 1 and padding == d * (kernel - 1) // 2
            and stride in (1, d) and h % d == 0 and w % d == 0
        )  # fmt: skip
        if not polyphase:
            return self.conv(x, c, kernel, stride, padding, dilation, groups=c)
        pad = (kernel - 1) // 2
        if stride == d:  # phase (0, 0) alone, copied (runtime layout.subsample)
            phase = self.copy(self.subsample(x, d))
            if self.remake_depthwise:
                self._remade_storage(phase)
            out = self.conv(phase, c, kernel, 1, pad, groups=c)
        else:
            phases = self.tensor((n * d * d, c, h // d, w // d), x.grad)  # the reshape's copy
            if self.remake_depthwise:
                self._remade_storage(phases)
            phased = self.conv(phases, c, kernel, 1, pad, groups=c)
            out = self.tensor((n, c, h, w), phased.grad)  # reshaped back: another copy
            if self.remake_depthwise:
                self._remade_storage(out)
        return out

    def bn(self, x: Sym, affine: bool) -> Sym:
        """BatchNorm in training mode: running mean, variance and a counter are buffers."""
        c = x.shape[1]
        if affine:
            self._parameter(2 * c)
        self.buffers += 2 * c * FLOAT + INDEX
        out = self.tensor(x.shape, self._records(x, params=affine))
        if out.grad:
            self._save_norm(x)
        if not affine:
            out.norm_input = x
        out.from_norm = True
        return out

    def scaled_norm(self, out: Sym, weight: Sym) -> Sym:
        """weight · out, where `out` is an affine-free BatchNorm's output, as runtime
        scaled_norm computes it: the weight, expanded to one per channel, is the norm's weight.
        The norm records if its input or the weight requires grad, and then keeps its input,
        its statistics and that weight vector; nothing keeps its output."""
        x = out.norm_input
        if x is None:
            raise ValueError("scaled_norm takes the output of an affine-free BatchNorm")
        c = x.shape[1]
        if not (out.grad or weight.grad):
            return out
        if not out.grad:
            self._save_norm(x)
        self.save(self.tensor((c,)))  # the weight, one per channel (a copy)
        return Sym(out.shape, True, out.storage)

    def _save_norm(self, x: Sym) -> None:
        """What BatchNorm's backward keeps: its input, save_mean and save_invstd."""
        c = x.shape[1]
        self.save(x, self.tensor((c,)), self.tensor((c,)))

    def relu(self, x: Sym, remade: bool = False) -> Sym:
        """`remade`: its output is made again in backward (`balanced`: an edge's shared ReLU,
        memory.shared_relu); under `remake_depthwise`, so is a ReLU's after a BatchNorm
        (memory.norm_relu_before)."""
        out = self.tensor(x.shape, x.grad)
        if remade or (self.remake_depthwise and x.from_norm):
            self._remade_storage(out)
        if out.grad:
            self.save(out)
        return out

    def sigmoid(self, x: Sym) -> Sym:
        return self._saves_output(x)

    def tanh(self, x: Sym) -> Sym:
        return self._saves_output(x)

    def activation(self, x: Sym, fn: str) -> Sym:
        """One of the recurrent cell's activations (the identity returns its input)."""
        return x if fn == "identity" else self._saves_output(x)

    def _saves_output(self, x: Sym) -> Sym:
        out = self.tensor(x.shape, x.grad)
        if out.grad:
            self.save(out)
        return out

    def max_pool(self, x: Sym, kernel: int, stride: int, padding: int) -> Sym:
        out = self._pooled(x, kernel, stride, padding, "max pooling")
        if self.remake_pooling:
            self._remade_storage(out)
        if out.grad:
            indices = self.tensor(out.shape, itemsize=INDEX)
            if self.remake_pooling:
                # pooled again together: the indices wait while the norm's backward reads
                # the output (memory.pooled_lean)
                self._remade_storage(indices)
                self.recompute_peak = max(self.recompute_peak,
                                          out.storage.nbytes + indices.storage.nbytes)
            self.save(x, indices)
        return out

    def avg_pool(self, x: Sym, kernel: int, stride: int, padding: int) -> Sym:
        out = self._pooled(x, kernel, stride, padding, "average pooling")
        if out.grad:
            self.save(x)
        return out

    def _pooled(self, x: Sym, kernel: int, stride: int, padding: int, what: str) -> Sym:
        n, c, h, w = x.shape
        out_h = (h + 2 * padding - kernel) // stride + 1
        out_w = (w + 2 * padding - kernel) // stride + 1
        if out_h < 1 or out_w < 1:
            raise ShapeError(
                f"{kernel}x{kernel} {what} (stride {stride}) would reduce {h}x{w} to "
                f"{max(out_h, 0)}x{max(out_w, 0)}",
                (h, w, max(out_h, 0), max(out_w, 0)),
            )
        return self.tensor((n, c, out_h, out_w), x.grad)

    def global_avg_pool(self, x: Sym) -> Sym:
        """nn.AdaptiveAvgPool2d(1): its backward needs only the input's shape."""
        n, c, _, _ = x.shape
        return self.tensor((n, c, 1, 1), x.grad)

    def flatten(self, x: Sym) -> Sym:
        return self.view(x, (x.shape[0], math.prod(x.shape[1:])))

    def linear(self, x: Sym, out_features: int, in_features: int | None = None) -> Sym:
        """nn.Linear with bias; `in_features` when the layer's width is fixed by the module."""
        width = x.shape[-1]
        in_features = width if in_features is None else in_features
        if width != in_features:
            raise ShapeError(f"a linear layer of {in_features} inputs gets {width} features")
        self._parameter(in_features * out_features + out_features)
        self.multiply_adds += math.prod(x.shape[:-1]) * in_features * out_features
        out = self.tensor((*x.shape[:-1], out_features), self._records(x, params=True))
        if self.weights_grad:  # only the weight's gradient needs the input
            self.save(x)
        return out

    def decoded_nll(self, x: Sym, out_features: int) -> Sym:
        """A language model's loss head: nn.Linear, log-softmax and NLL as one autograd node
        (spacec.runtime.nn.recurrent.DecodedNLL). Its linear layer counts as one (parameters,
        multiply-adds, its input kept only for the weight's gradient); it also keeps the logits'
        storage (turned into exponentials) and one sum per row. Its backward pass only reads
        that storage (the division by the sums and the one-hot term go on the products' small
        sides), so no second [N, ntoken] tensor is made."""
        largest = self.largest
        logits = self.linear(x, out_features)
        self.largest = largest
        if logits.grad:
            self.save(logits, self.tensor(logits.shape[:-1]))
        return self.tensor((), logits.grad)

    def matmul(self, x: Sym, out_features: int) -> Sym:
        """x [rows, in] @ W [in, out] with W a parameter (the recurrent cell's maps)."""
        width = x.shape[-1]
        self._parameter(width * out_features)
        rows = math.prod(x.shape[:-1])
        self.multiply_adds += rows * width * out_features
        out = self.tensor((*x.shape[:-1], out_features), self._records(x, params=True))
        if self.weights_grad:
            self.save(x)
        return out

    # -- tensor ops ------------------------------------------------------------------------------
    def cat(self, xs: Sequence[Sym], dim: int = 1) -> Sym:
        first = xs[0].shape
        axis = dim % len(first)
        for x in xs[1:]:
            if x.shape[:axis] + x.shape[axis + 1 :] != first[:axis] + first[axis + 1 :]:
                raise ShapeError(
                    f"concatenating {size_text(first)} and {size_text(x.shape)} tensors"
                )
        shape = (*first[:axis], sum(x.shape[axis] for x in xs), *first[axis + 1 :])
        return self.tensor(shape, any(x.grad for x in xs))

    def add(self, a: Sym, b: Sym) -> Sym:
        return self.tensor(self._same(a, b, "adding"), a.grad or b.grad)

    def sub(self, a: Sym, b: Sym) -> Sym:
        return self.tensor(self._same(a, b, "subtracting"), a.grad or b.grad)

    def mul(self, a: Sym, b: Sym) -> Sym:
        """a * b (b may broadcast): each side's gradient needs the other factor."""
        out = self.tensor(self._broadcast(a, b), a.grad or b.grad)
        if a.grad:
            self.save(b)
        if b.grad:
            self.save(a)
        return out

    def scale(self, x: Sym) -> Sym:
        """x times (or divided by) a Python number: nothing saved."""
        return self.tensor(x.shape, x.grad)

    def stack_mean(self, xs: Sequence[Sym]) -> Sym:
        """torch.stack(xs).mean(0): the stack is a temporary, nothing saved."""
        shape = xs[0].shape
        for x in xs[1:]:
            self._same(xs[0], x, "averaging")
        return self.tensor(shape, any(x.grad for x in xs))

    def stack(self, xs: Sequence[Sym]) -> Sym:
        shape = xs[0].shape
        for x in xs[1:]:
            self._same(xs[0], x, "stacking")
        return self.tensor((len(xs), *shape), any(x.grad for x in xs))

    def split(self, x: Sym, parts: int) -> tuple[Sym, ...]:
        """torch.split of the last dimension into equal views."""
        width = x.shape[-1] // parts
        return tuple(self.view(x, (*x.shape[:-1], width)) for _ in range(parts))

    def sum_rows(self, x: Sym) -> Sym:
        """x.sum(dim=0)."""
        return self.tensor(x.shape[1:], x.grad)

    def copy(self, x: Sym) -> Sym:
        """A contiguous copy (e.g. .contiguous() of a strided view)."""
        return self.tensor(x.shape, x.grad)

    def subsample(self, x: Sym, step: int) -> Sym:
        """x[:, :, ::step, ::step] (a view)."""
        n, c, h, w = x.shape
        return self.view(x, (n, c, -(-h // step), -(-w // step)))

    def crop(self, x: Sym, offset: int) -> Sym:
        """x[:, :, offset:, offset:] (a view)."""
        n, c, h, w = x.shape
        if h <= offset or w <= offset:
            raise ShapeError(
                f"dropping the first {offset} row and column of {h}x{w} leaves "
                f"{max(h - offset, 0)}x{max(w - offset, 0)}",
                (h, w, max(h - offset, 0), max(w - offset, 0)),
            )
        return self.view(x, (n, c, h - offset, w - offset))

    def narrow_channels(self, x: Sym, channels: int) -> Sym:
        return self.view(x, (x.shape[0], channels, *x.shape[2:]))

    def expand_channels(self, x: Sym, channels: int) -> Sym:
        return self.view(x, (x.shape[0], channels, *x.shape[2:]))

    @staticmethod
    def _same(a: Sym, b: Sym, what: str) -> tuple[int, ...]:
        if a.shape != b.shape:
            raise ShapeError(f"{what} {size_text(a.shape)} and {size_text(b.shape)} tensors")
        return a.shape

    @staticmethod
    def _broadcast(a: Sym, b: Sym) -> tuple[int, ...]:
        if len(b.shape) < len(a.shape):
            return a.shape
        return tuple(max(x, y) for x, y in zip(a.shape, b.shape, strict=True))

    # -- sub-programs, cached by their inputs' shapes --------------------------------------------
    def call(self, key: Hashable, program: Callable[..., object], *inputs: Sym) -> object:
        """`program(tracer, *inputs)` on this tracer, computed once per key and input signature.

        A search space repeats the same edge at the same sizes many times: the first call runs
        the program on a fresh tracer and keeps a `Summary`; later calls replay it (the same
        parameters, multiply-adds and saved bytes, outputs of the same shapes).
        """
        signature = (key, self.weights_grad, tuple((x.shape, x.grad) for x in inputs))
        summary = self._cache.get(signature)
        if summary is None:
            summary = self._summarise(program, inputs)
            self._cache[signature] = summary
        return self._replay(summary, inputs)

    def _summarise(self, program: Callable[..., object], inputs: Sequence[Sym]) -> Summary:
        inner = Tracer(weights_grad=self.weights_grad, tensor_bytes=self.tensor_bytes)
        inner._cache = self._cache
        fresh = [Sym(x.shape, x.grad, Storage(x.storage.nbytes)) for x in inputs]
        result = program(inner, *fresh)
        outputs = result if isinstance(result, tuple) else (result,)
        input_of = {id(x.storage): i for i, x in enumerate(fresh)}
        slots: dict[int, int] = {}
        slot_list: list[tuple[int, bool]] = []
        described = []
        for out in outputs:
            key = id(out.storage)
            if key in input_of:
                described.append((out.shape, out.grad, ("input", input_of[key])))
                continue
            if key not in slots:
                slots[key] = len(slot_list)
                slot_list.append((out.storage.nbytes, key in inner.saved))
            described.append((out.shape, out.grad, ("internal", slots[key])))
        saved_inputs = frozenset(i for key, i in input_of.items() if key in inner.saved)
        own = sum(
            nbytes for key, nbytes in inner.saved.items() if key not in input_of and key not in slots
        )
        return Summary(
            tuple(described),
            tuple(slot_list),
            saved_inputs,
            own,
            inner.parameters,
            inner.buffers,
            inner.multiply_adds,
            inner.largest,
            inner.recompute_peak,
        )

    def _replay(self, summary: Summary, inputs: Sequence[Sym]) -> object:
        self.parameters += summary.parameters
        self.buffers += summary.buffers
        self.multiply_adds += summary.multiply_adds
        self.largest = max(self.largest, summary.largest)
        self.recompute_peak = max(self.recompute_peak, summary.recompute_peak)
        for index in summary.saved_inputs:
            self.save(inputs[index])
        if summary.own_saved:
            self.save(Storage(summary.own_saved))
        storages = [Storage(nbytes) for nbytes, _ in summary.slots]
        for storage, (_, saved) in zip(storages, summary.slots, strict=True):
            if saved:
                self.save(storage)
        outputs = []
        for shape, grad, (kind, index) in summary.outputs:
            storage = inputs[index].storage if kind == "input" else storages[index]
            outputs.append(Sym(shape, grad, storage))
        return tuple(outputs) if len(outputs) > 1 else outputs[0]

    # -- recomputation ---------------------------------------------------------------------------
    def recompute(self, key: Hashable, program: Callable[..., Sym], *inputs: Sym) -> Sym:
        """torch.utils.checkpoint(program, *inputs) (non-reentrant): the forward keeps its inputs
        (the recomputation's closure holds them) and saves nothing else; backward reruns the
        program, whose saved tensors other than those inputs then live until its own backward
        is done (`recompute_peak`). Parameters and multiply-adds count once (one forward)."""
        return self.call(("recompute", key), lambda t, *xs: t._checkpointed(key, program, xs),
                         *inputs)

    def _checkpointed(self, key: Hashable, program: Callable[..., Sym], inputs) -> Sym:
        segment = Tracer(weights_grad=self.weights_grad, tensor_bytes=self.tensor_bytes)
        segment._cache = self._cache
        out = segment.call(key, program, *inputs)
        self.parameters += segment.parameters
        self.buffers += segment.buffers
        self.multiply_adds += segment.multiply_adds
        self.largest = max(self.largest, segment.largest)
        given = {id(x.storage) for x in inputs}
        again = sum(n for storage, n in segment.saved.items() if storage not in given)
        self.recompute_peak = max(self.recompute_peak, again + segment.recompute_peak)
        if id(out.storage) in given:
            return out  # the program returned one of its inputs (a view of it)
        result = self.tensor(out.shape, out.grad)
        if result.grad:
            self.save(*inputs)
        return result
