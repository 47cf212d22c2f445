"""Candidate operations of a DARTS cell edge, with the reference code's exact semantics.

Source: Liu, Simonyan & Yang, "DARTS" (ICLR 2019), github.com/quark0/darts, files
cnn/operations.py (the primitives), cnn/model_search.py (MixedOp) and cnn/model.py.
Module structure mirrors the reference classes (`op` Sequentials, `conv_1`/`conv_2`/`bn`), so
state_dict keys line up with checkpoints of the paper code.

These are the only definitions of the primitives. The supernet builds them through the registry
(`build_op`, `MixedEdge`); the compiler copies their source verbatim into the standalone derived
network (spacec.codegen reads this file as text and copies the top-level definitions a network
needs, and what they need, in file order). Hence the rules for a definition (a builder and every
class, function or constant it uses):
  * its body names only torch, `nn`, `F`, the standard library and other top-level definitions
    of this file or of layout.py / blocks.py / recurrent.py, never a spacec name;
  * registration stays in decorators (not copied), and a builder is named as it is registered.
tests/test_primitives.py runs every registered primitive in both forms and requires equal
outputs. Speed-ups only the supernet wants are a pass over built modules (accelerate.py).

Every builder has one signature, `builder(C_in, C_out, stride, affine, **args) -> nn.Module`.
Entry metadata, derived from that signature where possible:
  args             names of the arguments a space file passes (all required)
  leading_relu     the op starts with a ReLU; its builder takes `input_relu=False` to omit it
  norm_in_supernet the search MixedOp follows it with BatchNorm2d(C, affine=False)
  is_zero          the op outputs zeros (DARTS 'none')
  fixed_stride     the only stride the op supports, or None for any stride
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spacec.registry import Entry, Registry, keyword_args
from spacec.runtime.nn.accelerate import DepthwiseConv2d, DilatedDepthwiseConv2d, accelerate
from spacec.runtime.nn.layout import subsample
from spacec.runtime.nn.memory import (
    BALANCED,
    FAST,
    LOW,
    Before,
    autocast_enabled,
    convolved_lean,
    norm_relu_before,
    pooled_lean,
    recomputed,
    shared_relu,
    through_lean,
)

OPS = Registry("operation")

# The builder keyword that omits a leading ReLU; not a space-file argument.
INPUT_RELU = "input_relu"

Step = tuple[str, Mapping[str, Any]]
Candidate = Sequence[Step]


def _primitive(
    name: str,
    *,
    norm_in_supernet: bool = False,
    is_zero: bool = False,
    fixed_stride: int | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register an op; `args` and `leading_relu` are read off the builder's keyword-only params."""

    def store(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        return OPS.register(
            name,
            args=keyword_args(builder, exclude=(INPUT_RELU,)),
            leading_relu=INPUT_RELU in keyword_args(builder),
            norm_in_supernet=norm_in_supernet,
            is_zero=is_zero,
            fixed_stride=fixed_stride,
        )(builder)

    return store


def _input_relu(enabled: bool) -> nn.Module:
    # An Identity stand-in keeps Sequential indices, hence state_dict keys, unchanged.
    return nn.ReLU(inplace=False) if enabled else nn.Identity()


def _check_odd_kernel(op: str, kernel: int) -> None:
    # Padding kernel // 2 keeps the spatial size only for odd kernels.
    if not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"{op}: kernel must be a positive odd integer, got {kernel!r}")


def _check_positive(op: str, what: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{op}: {what} must be a positive integer, got {value!r}")


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution; with stride s it convolves the input subsampled by s, which is the
    same arithmetic. This also keeps strided 1x1 convolutions off a oneDNN path whose backward
    corrupts the heap on channels_last inputs (seen with torch 2.14.1 on the CPU: glibc aborts
    with "free(): invalid next size" in FactorizedReduce's backward). `offset`: convolve
    x[:, :, offset:, offset:] (FactorizedReduce's second half)."""

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        if self.kernel_size != (1, 1) or self.padding != (0, 0) or self.stride == (1, 1):
            return super().forward(x[:, :, offset:, offset:] if offset else x)
        sampled = subsample(x, offset, self.stride)
        return F.conv2d(sampled, self.weight, self.bias, 1, 0, self.dilation, self.groups)


class Zero(nn.Module):
    """DARTS 'none': zeros shaped like the op's output, still attached to the input's graph."""

    def __init__(self, C_in: int, C_out: int, stride: int) -> None:
        super().__init__()
        self.C_in = C_in
        self.C_out = C_out
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.C_out == self.C_in:
            return x.mul(0.0)
        return x[:, :1].mul(0.0).expand(-1, self.C_out, -1, -1).contiguous()

    def extra_repr(self) -> str:
        return f"C_in={self.C_in}, C_out={self.C_out}, stride={self.stride}"


class FactorizedReduce(nn.Module):
    """Halve the spatial size with two offset 1x1 stride-2 convs, each giving C_out // 2 channels.

    Like the reference, the two halves only line up for even input sizes.
    """

    def __init__(self, C_in: int, C_out: int, affine: bool, input_relu: bool = True) -> None:
        super().__init__()
        if C_out % 2:
            raise ValueError(f"factorized_reduce: C_out must be even, got {C_out}")
        self.relu = _input_relu(input_relu)
        self.conv_1 = PointwiseConv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = PointwiseConv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        out = torch.cat([self.conv_1(x), self.conv_2(x, offset=1)], dim=1)
        return self.bn(out)


class ReLUConvBN(nn.Module):
    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel: int,
        stride: int,
        padding: int,
        affine: bool,
        input_relu: bool = True,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            _input_relu(input_relu),
            # A 1x1 kernel takes the subsampling route (see PointwiseConv2d); others are plain.
            (PointwiseConv2d if kernel == 1 else nn.Conv2d)(
                C_in, C_out, kernel, stride=stride, padding=padding, bias=False
            ),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU, dilated depthwise conv, pointwise conv, BN."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool,
        input_relu: bool = True,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            _input_relu(input_relu),
            nn.Conv2d(
                C_in,
                C_in,
                kernel,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=C_in,
                bias=False,
            ),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Two stacked ReLU-depthwise-pointwise-BN units; only the first one strides.

    The reference applies the separable convolution twice (Liu et al. 2019, sec. A.1.1,
    following Zoph et al. 2018); the channel change happens in the last pointwise conv.
    """

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel: int,
        stride: int,
        padding: int,
        affine: bool,
        input_relu: bool = True,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            _input_relu(input_relu),
            nn.Conv2d(C_in, C_in, kernel, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


@_primitive("zero", is_zero=True)
def zero(C_in: int, C_out: int, stride: int, affine: bool) -> nn.Module:
    _check_positive("zero", "stride", stride)
    return Zero(C_in, C_out, stride)


@_primitive("identity")
def identity(C_in: int, C_out: int, stride: int, affine: bool) -> nn.Module:
    """DARTS 'skip_connect': the identity, or a FactorizedReduce where the edge reduces.

    Its leading ReLU (reducing form only) is never shared: `leading_relu` is per entry, not
    per stride, and one ReLU over a reduction-edge input is cheap.
    """
    if stride == 1:
        if C_in != C_out:
            raise ValueError(
                f"identity cannot change channels ({C_in} -> {C_out}) at stride 1; "
                "use relu_conv_bn(kernel=1)"
            )
        return nn.Identity()
    if stride != 2:
        raise ValueError(f"identity supports stride 1 or 2, got {stride}")
    return FactorizedReduce(C_in, C_out, affine)


def _same_channels(op: str, C_in: int, C_out: int) -> None:
    if C_in != C_out:
        raise ValueError(f"{op} cannot change channels ({C_in} -> {C_out})")


@_primitive("max_pool", norm_in_supernet=True)
def max_pool(C_in: int, C_out: int, stride: int, affine: bool, *, kernel: int) -> nn.Module:
    _same_channels("max_pool", C_in, C_out)
    _check_odd_kernel("max_pool", kernel)
    return nn.MaxPool2d(kernel, stride=stride, padding=kernel // 2)


@_primitive("avg_pool", norm_in_supernet=True)
def avg_pool(C_in: int, C_out: int, stride: int, affine: bool, *, kernel: int) -> nn.Module:
    _same_channels("avg_pool", C_in, C_out)
    _check_odd_kernel("avg_pool", kernel)
    return nn.AvgPool2d(kernel, stride=stride, padding=kernel // 2, count_include_pad=False)


@_primitive("sep_conv")
def sep_conv(
    C_in: int, C_out: int, stride: int, affine: bool, *, kernel: int, input_relu: bool = True
) -> nn.Module:
    _check_odd_kernel("sep_conv", kernel)
    return SepConv(C_in, C_out, kernel, stride, kernel // 2, affine, input_relu)


@_primitive("dil_conv")
def dil_conv(
    C_in: int,
    C_out: int,
    stride: int,
    affine: bool,
    *,
    kernel: int,
    dilation: int,
    input_relu: bool = True,
) -> nn.Module:
    _check_odd_kernel("dil_conv", kernel)
    _check_positive("dil_conv", "dilation", dilation)
    padding = dilation * (kernel - 1) // 2
    return DilConv(C_in, C_out, kernel, stride, padding, dilation, affine, input_relu)


@_primitive("relu_conv_bn")
def relu_conv_bn(
    C_in: int, C_out: int, stride: int, affine: bool, *, kernel: int, input_relu: bool = True
) -> nn.Module:
    _check_odd_kernel("relu_conv_bn", kernel)
    return ReLUConvBN(C_in, C_out, kernel, stride, kernel // 2, affine, input_relu)


@_primitive("conv_7x1_1x7")
def conv_7x1_1x7(
    C_in: int, C_out: int, stride: int, affine: bool, *, input_relu: bool = True
) -> nn.Module:
    # The reference keeps C channels throughout; with C_in != C_out the second conv changes
    # them, as the last pointwise conv does in SepConv.
    return nn.Sequential(
        _input_relu(input_relu),
        nn.Conv2d(C_in, C_in, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
        nn.Conv2d(C_in, C_out, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
        nn.BatchNorm2d(C_out, affine=affine),
    )


@_primitive("factorized_reduce", fixed_stride=2)
def factorized_reduce(
    C_in: int, C_out: int, stride: int, affine: bool, *, input_relu: bool = True
) -> nn.Module:
    if stride != 2:
        raise ValueError(f"factorized_reduce always has stride 2, got {stride}")
    return FactorizedReduce(C_in, C_out, affine, input_relu)


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of a branch with probability drop_prob, rescaling the rest.

    Not an op: the derived network applies it to its edges' outputs in training
    (cnn/utils.py `drop_path`, one Bernoulli draw per sample).
    """
    keep = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


def _checked_args(entry: Entry, args: Mapping[str, Any]) -> None:
    expected = tuple(entry.meta["args"])
    valid = ", ".join(expected) if expected else "none"
    unexpected = sorted(set(args) - set(expected))
    if unexpected:
        raise TypeError(
            f"{entry.name}() got unexpected argument(s) {', '.join(unexpected)}; "
            f"valid arguments: {valid}"
        )
    missing = [name for name in expected if name not in args]
    if missing:
        raise TypeError(
            f"{entry.name}() missing argument(s) {', '.join(missing)}; valid arguments: {valid}"
        )


def _build_step(
    step: Step, C_in: int, C_out: int, stride: int, affine: bool, input_relu: bool
) -> nn.Module:
    name, args = step
    entry = OPS[name]
    _checked_args(entry, args)
    if entry.meta["leading_relu"]:
        return entry.builder(C_in, C_out, stride, affine, **args, input_relu=input_relu)
    if not input_relu:
        raise ValueError(f"{name} has no leading ReLU to omit")
    return entry.builder(C_in, C_out, stride, affine, **args)


def build_op(
    steps: Candidate,
    C_in: int,
    C_out: int,
    stride: int,
    affine: bool,
    *,
    input_relu: bool = True,
) -> nn.Module:
    """Build a candidate `a >> b >> ...`: the first step maps (C_in, stride), the rest keep C_out.

    `input_relu=False` omits the first step's leading ReLU (the caller applies it). The result
    is the supernet's form: the definitions, then the supernet's speed-ups (accelerate.py).
    """
    if not steps:
        raise ValueError("a candidate needs at least one operation")
    modules = [_build_step(steps[0], C_in, C_out, stride, affine, input_relu)]
    modules += [_build_step(step, C_out, C_out, 1, affine, True) for step in steps[1:]]
    return accelerate(modules[0] if len(modules) == 1 else nn.Sequential(*modules))


def is_zero_candidate(steps: Candidate) -> bool:
    # Only an all-zero chain may be skipped: earlier non-zero steps could hold BatchNorm
    # statistics that a forward pass updates.
    return all(OPS[name].meta["is_zero"] for name, _ in steps)


def leads_with_relu(steps: Candidate) -> bool:
    return bool(steps) and OPS[steps[0][0]].meta["leading_relu"]


def needs_supernet_norm(steps: Candidate) -> bool:
    # The reference adds the norm after pools because their outputs, unlike the other
    # candidates', are not batch-normalised; so it depends on the chain's last step.
    return bool(steps) and OPS[steps[-1][0]].meta["norm_in_supernet"]


def _supernet_candidate(
    steps: Candidate, C_in: int, C_out: int, stride: int, affine: bool, input_relu: bool
) -> nn.Module:
    op = build_op(steps, C_in, C_out, stride, affine, input_relu=input_relu)
    if needs_supernet_norm(steps):
        return nn.Sequential(op, nn.BatchNorm2d(C_out, affine=False))
    return op


# Candidates whose forward is exactly `self.op(x)`, with `op` an nn.Sequential.
_WRAPPED_CHAINS = (SepConv, DilConv, ReLUConvBN)


def _chain(module: nn.Module) -> list[nn.Module] | None:
    """The modules `module` applies one after the other, or None if it is not such a chain."""
    if isinstance(module, _WRAPPED_CHAINS):
        module = module.op
    if type(module) is not nn.Sequential:
        return None
    steps = []
    for sub in module:
        inner = _chain(sub) if isinstance(sub, (nn.Sequential, *_WRAPPED_CHAINS)) else [sub]
        if inner is None:
            return None
        steps += inner
    return steps


def split_final_norm(
    module: nn.Module,
) -> tuple[tuple[nn.Module, ...], nn.BatchNorm2d] | None:
    """(the modules before, the norm) if `module` is a chain ending in an affine-free
    BatchNorm2d, as every DARTS candidate but the identity is in the supernet; else None."""
    steps = _chain(module)
    if not steps or type(steps[-1]) is not nn.BatchNorm2d or steps[-1].affine:
        return None
    return tuple(steps[:-1]), steps[-1]


def _is_depthwise(module: nn.Module) -> bool:
    return (type(module) in (nn.Conv2d, DepthwiseConv2d, DilatedDepthwiseConv2d)
            and module.groups == module.in_channels == module.out_channels)


def _depthwise_pair(body: Sequence[nn.Module], step: int) -> bool:
    """Whether body[step] is a depthwise convolution that a convolution reads next."""
    return (step + 1 < len(body) and _is_depthwise(body[step])
            and isinstance(body[step + 1], nn.Conv2d))


def _norm_relu(body: Sequence[nn.Module], step: int) -> bool:
    """Whether body[step:step + 2] is a BatchNorm2d in training mode and a ReLU."""
    return (step + 1 < len(body) and type(body[step]) is nn.BatchNorm2d
            and body[step].training and type(body[step + 1]) is nn.ReLU)


def _lean_chain(body: Sequence[nn.Module], x: torch.Tensor,
                finish: Callable[[torch.Tensor], torch.Tensor],
                before: Before | None = None) -> torch.Tensor:
    """`finish(body(before.run(x) if before else x))` under `balanced`: a lone max pooling's
    output and indices, the output of every depthwise convolution that a convolution reads
    next, and the output of `before` (the edge's shared ReLU) and of every ReLU after a
    BatchNorm are computed again in the backward pass instead of kept
    (spacec.runtime.nn.memory; an average pooling's output is kept)."""
    body = [module for module in body if type(module) is not nn.Identity]
    if len(body) == 1 and isinstance(body[0], nn.MaxPool2d) and before is None:
        return pooled_lean(body[0], x, finish)
    step = 0
    while step < len(body):
        if _depthwise_pair(body, step):
            x = convolved_lean(body[step], body[step + 1], x, before)
            before, step = None, step + 2
        elif before is not None:
            x, before = through_lean(before, body[step], x), None
            step += 1
        elif _norm_relu(body, step):
            before, step = norm_relu_before(body[step]), step + 2
        else:
            x = body[step](x)
            step += 1
    return finish(x) if before is None else through_lean(before, finish, x)


def scaled_norm(norm: nn.BatchNorm2d, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """`scale * norm(x)` for an affine-free BatchNorm2d, as one batch_norm with the scale as
    its per-channel weight. The same arithmetic, but autograd keeps the norm's input only (a
    separate product would also keep the norm's output, for the scale's gradient), and the
    product costs no pass of its own. The rest is BatchNorm2d.forward's, step for step."""
    momentum = 0.0 if norm.momentum is None else norm.momentum
    if norm.training and norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:
            momentum = 1.0 / float(norm.num_batches_tracked)
    batch_stats = norm.training or (norm.running_mean is None and norm.running_var is None)
    keep_running = not norm.training or norm.track_running_stats
    return F.batch_norm(
        x,
        norm.running_mean if keep_running else None,
        norm.running_var if keep_running else None,
        # Contiguous: torch's CPU batch_norm backward on channels_last input reads a stride-0
        # weight as if it were contiguous (torch 2.14.1: gradients off by 1e25).
        scale.expand(norm.num_features).contiguous(),
        None,
        batch_stats,
        momentum,
        norm.eps,
    )


def _summed(out: torch.Tensor | None, term: torch.Tensor,
            owned: bool) -> tuple[torch.Tensor, bool]:
    """out + term, and whether the result is the sum's own tensor. Once it is (from the second
    term on), later terms are added into it in place: no backward reads a sum, and no new
    tensor is made for every term (the same additions in the same order; `fast`'s measured
    peak is 4-11% lower, benchmarks/results/cost_model_layout_sum_cpu.txt)."""
    if out is None:
        return term, False
    if owned and term.dtype == out.dtype and term.shape == out.shape:
        return out.add_(term), True
    return out + term, True


class MixedEdge(nn.Module):
    """DARTS MixedOp: sum_i weights[i] * op_i(x), candidates in alpha column order.

    Speedups that keep the reference's arithmetic:
      * zero candidates are skipped, since weights[i] * 0 adds nothing (the reference would
        turn inf/nan inputs into nan there; we do not). If every candidate is zero the naive
        weighted sum is computed so the result still depends on `weights`.
      * candidates whose first layer is a ReLU are built without it and share one relu(x).
    `self.ops[i]` is column i (zero columns hold their parameter-free Zero module), so
    state_dict keys are `ops.<column>.<...>` and match independently built candidates.

    `memory` (spacec.runtime.nn.memory: fast, balanced, low) says what the edge keeps for the
    backward pass; `forward` applies it to `mix`, which subclasses (the relaxations' edges)
    override to change how the edge mixes, so every relaxation's edge gets the setting.
    """

    edge_memory = True  # spacec.runtime.nn.memory.set_memory sets `memory` on these modules
    memory = FAST

    def __init__(
        self,
        candidates: Sequence[Candidate],
        C_in: int,
        C_out: int,
        stride: int,
        affine: bool = False,
    ) -> None:
        super().__init__()
        if not candidates:
            raise ValueError("a mixed edge needs at least one candidate")
        self.ops = nn.ModuleList()
        active = []
        for column, steps in enumerate(candidates):
            shares_relu = leads_with_relu(steps)
            self.ops.append(
                _supernet_candidate(steps, C_in, C_out, stride, affine, not shares_relu)
            )
            if not is_zero_candidate(steps):
                active.append((column, shares_relu))
        self._active: tuple[tuple[int, bool], ...] = tuple(active)
        self._shares_relu = any(shares_relu for _, shares_relu in active)
        self._setting = FAST  # the setting of the call in progress

    def forward(self, x: torch.Tensor, weights: Any, memory: str | None = None) -> torch.Tensor:
        """The edge's output; `memory` overrides the edge's setting for this call."""
        setting = memory or self.memory
        if setting == LOW and torch.is_grad_enabled():
            return recomputed(self, self.mix, (x, weights), {"memory": FAST})
        self._setting = setting
        try:
            return self.mix(x, weights)
        finally:
            self._setting = FAST

    def weighted(self, column: int, x: torch.Tensor, weight: torch.Tensor,
                 relu: tuple[torch.Tensor, Before | None] | None = None) -> torch.Tensor:
        """weight * op_column(x), keeping for the backward pass what the setting says; `relu`
        (for a candidate built without its leading ReLU): the edge's shared relu(x) and, when
        the setting makes it again in backward, how (`memory.shared_relu`)."""
        # Found on every call, not kept: converting to SyncBatchNorm (--sync-bn) replaces the
        # norms after the edge is built (a SyncBatchNorm is not fused).
        split = split_final_norm(self.ops[column])
        if split is None:
            return weight * self.ops[column](x if relu is None else relu[0])
        body, norm = split
        if relu is not None:
            relu_x, before = relu
            if before is not None:
                # The chain reads relu(x) through `before`, and keeps x (kept anyway), not it.
                return _lean_chain(body, x, lambda y: scaled_norm(norm, y, weight), before)
            x = relu_x
        if self._lean(x):
            return _lean_chain(body, x, lambda y: scaled_norm(norm, y, weight))
        for module in body:
            x = module(x)
        return scaled_norm(norm, x, weight)

    def _lean(self, x: torch.Tensor) -> bool:
        """Whether this call recomputes step by step (`balanced`, recording, no autocast)."""
        return (self._setting == BALANCED and torch.is_grad_enabled()
                and not autocast_enabled(x.device.type))

    def mix(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """sum_i weights[i] * op_i(x) over the non-zero candidates."""
        if weights.shape != (len(self.ops),):
            raise ValueError(
                f"expected {len(self.ops)} weights (one per candidate), got shape "
                f"{tuple(weights.shape)}"
            )
        if not self._active:
            return sum(w * op(x) for w, op in zip(weights, self.ops, strict=True))
        # relu(x) once, for the candidates that share it, made before any candidate runs (the
        # order autograd's nodes are made in decides the order gradients are summed in).
        relu: tuple[torch.Tensor, Before | None] | None = None
        if self._shares_relu:
            relu = shared_relu(x) if self._lean(x) else (F.relu(x), None)
        # One unbind, not one index per candidate: backward then stacks the candidates' weight
        # gradients in one operation (and a zero for each zero candidate), where indexing would
        # scatter each into a vector of zeros of its own and add the vectors up (on a GPU, where
        # the search step is bound by launches, that is 2-3 kernels per candidate; README,
        # "On a GPU").
        column_weights = weights.unbind()
        out, owned = None, False
        for column, takes_relu in self._active:
            term = self.weighted(column, x, column_weights[column], relu if takes_relu else None)
            out, owned = _summed(out, term, owned)
        return out
