"""Speed-ups the supernet applies to built primitives; the definitions stay plain PyTorch.

The primitives (ops.py, blocks.py) are written once and copied verbatim into the standalone
derived network, so a speed-up that only the search needs lives here instead, as a pass over a
built module: it changes the class of some submodules to a faster subclass with the same
parameters and the same result. Changing `__class__` keeps the parameters, their order and the
state_dict keys, and draws no random numbers, so a supernet initialises exactly as it would
without the pass. `ops.build_op` applies `accelerate` to every candidate it builds (the
supernet's mixed and fixed edges); every supernet applies `accelerate_network` to itself once
built (`SearchSpaceMixin.init_arch`), and `spacec train` to its derived network: it sends a
recurrent network's matrix products through `gemm` (oneDNN's where the process chose it) by
giving the modules with the `product` seam their own `product` instead of a new class.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from spacec.runtime.nn import gemm, recurrent
from spacec.runtime.nn.layout import subsample
from spacec.runtime.nn.memory import autocast_enabled

# Depthwise kernels whose weight gradient `_weight_grad_by_blocks` computes. oneDNN (torch
# 2.14.1, CPU) computes the depthwise weight gradient with its depthwise kernel for kernels up to
# 3 columns wide (of any height) and otherwise with its generic grouped convolution, 16 channels
# to a block: for 5x5, 4-10x the forward's time. Summed from 5x3 blocks it takes 0.40-0.55x of
# that from 8 output columns up (at 4, twice as long: benchmarks/depthwise_grad.py). 7x7, in
# three blocks, was not faster in every measurement and is left to oneDNN.
_BLOCKED_KERNELS = (5,)
_MIN_BLOCKED_WIDTH = 8


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     stride: int, padding: int) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, 1, channels)`` for a depthwise convolution;
    where its weight gradient is faster summed by blocks (a 5x5 kernel without bias, "same"
    padding, stride 1 or 2, on the CPU in float32, recording a graph), through
    `_DepthwiseConv`."""
    if bias is None and _blocked_applies(x, weight, stride, padding):
        return _DepthwiseConv.apply(x, weight, stride, padding)
    return F.conv2d(x, weight, bias, stride, padding, 1, x.shape[1])


def _blocked_applies(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> bool:
    k = weight.shape[-1]
    return (
        k in _BLOCKED_KERNELS and weight.shape == (x.shape[1], 1, k, k) and padding == k // 2
        and stride in (1, 2) and weight.requires_grad and torch.is_grad_enabled()
        and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
        and not torch.compiler.is_compiling() and not autocast_enabled("cpu")
    )  # fmt: skip


def _convolution_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                          stride: int, padding: tuple[int, int],
                          mask: list[bool]) -> tuple[torch.Tensor | None, ...]:
    return torch.ops.aten.convolution_backward(
        grad, x, weight, None, [stride] * 2, list(padding), [1, 1], False, [0, 0], x.shape[1],
        mask,
    )


class _DepthwiseConv(torch.autograd.Function):
    """A depthwise convolution whose weight gradient is summed from column blocks 3 wide
    (`_weight_grad_by_blocks`): the same products, summed in another order. The forward pass
    and the input gradient are nn.Conv2d's (the same calls), and it keeps what nn.Conv2d keeps
    for backward: the input and the weight."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.stride, ctx.padding = stride, padding
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.stride, ctx.padding
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = _convolution_backward(grad, x, weight, stride, (padding, padding),
                                           [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            if grad.shape[-1] >= _MIN_BLOCKED_WIDTH:
                grad_weight = _weight_grad_by_blocks(grad, x, weight.shape[-1], stride, padding)
            else:
                grad_weight = _convolution_backward(grad, x, weight, stride, (padding, padding),
                                                    [False, True, False])[1]
        return grad_x, grad_weight, None, None


def _weight_grad_by_blocks(grad: torch.Tensor, x: torch.Tensor, kernel: int, stride: int,
                           padding: int) -> torch.Tensor:
    """The weight gradient of a depthwise k x k convolution (k odd, stride 1 or 2, padding
    k // 2) as the gradients of (k - 1) / 2 depthwise k x 3 convolutions: blocks of columns
    starting at 0, 2, ..., k - 3, overlapping by one (a later block's first column is dropped).

    The block starting at column j0 pairs output column o with input column o*s - p + j0 + t
    (t < 3). A k x 3 convolution with padding (p, 1), on the input widened by p - 1 zero
    columns on each side, pairs its output column o' with that same input column where
    o' = o + j0 / s: so the block is that convolution's weight gradient for `grad` moved right
    by j0 / s columns within zeros as wide as that convolution's output."""
    n, channels, rows, cols = grad.shape
    width, extra = x.shape[3], padding - 1
    widened = x.new_zeros((n, x.shape[2], width + 2 * extra, channels)).permute(0, 3, 1, 2)
    widened[:, :, :, extra:extra + width] = x
    moved = grad.new_empty((n, rows, (width + 2 * padding - 3) // stride + 1, channels))
    moved = moved.permute(0, 3, 1, 2)
    block = x.new_empty((channels, 1, kernel, 3))  # only its shape is read
    columns = []
    for start in range(0, kernel - 2, 2):
        shift = start // stride
        moved.zero_()
        moved[:, :, :, shift:shift + cols] = grad
        part = _convolution_backward(moved, widened, block, stride, (padding, 1),
                                     [False, True, False])[1]
        columns.append(part if start == 0 else part[..., 1:])
    return torch.cat(columns, dim=3)


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise convolution (no dilation) computed by `depthwise_conv2d`. Same parameters,
    same result; its weight gradient equals nn.Conv2d's up to summation order and is faster to
    compute on the CPU for a 5x5 kernel (benchmarks/RESULTS.md, "the 5×5 depthwise weight
    gradient")."""

    def _conv_forward(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if self.padding_mode != "zeros" or not _square(self):
            return super()._conv_forward(x, weight, bias)
        return depthwise_conv2d(x, weight, bias, self.stride[0], self.padding[0])


def _square(conv: nn.Conv2d) -> bool:
    """The same kernel size, stride and (numeric) padding along both axes."""
    return isinstance(conv.padding, tuple) and all(
        len(set(pair)) == 1 for pair in (conv.kernel_size, conv.stride, conv.padding))


class DilatedDepthwiseConv2d(nn.Conv2d):
    """A dilated depthwise convolution computed on polyphase sub-images. Same parameters, same
    result (up to summation order) as nn.Conv2d, much faster to differentiate on the CPU.

    With dilation d, stride 1 and "same" padding, the output at phase (p, q) (pixels with
    i % d == p, j % d == q) depends only on the input's phase (p, q), through an undilated
    convolution with padding (k - 1) // 2; with stride d only phase (0, 0) is read. The d * d
    phases are stacked on the batch axis, so one undilated depthwise convolution, whose backward
    oneDNN computes several times faster than the dilated one's, does the work. Any other
    configuration (or input size not divisible by d) falls back to nn.Conv2d.
    """

    def _conv_forward(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        # nn.Conv2d.forward calls this with the module's weight; spacec.runtime.nn.memory calls
        # it with the weight a recomputation captured.
        phases = self.phases(x)
        if phases is None:
            # The dilated convolution itself, computed as a derived network's (Float32DilatedConv2d)
            return float32_under_cpu_autocast(
                lambda given: nn.Conv2d._conv_forward(self, given, weight, bias), x)
        return self.from_phases(phases, weight, bias, x.shape)

    def polyphase(self, shape: torch.Size) -> bool:
        """Whether an input of `shape` is convolved in the polyphase form."""
        d = self.dilation[0]
        k, stride = self.kernel_size[0], self.stride[0]
        _, c, h, w = shape
        return (
            d > 1 and self.dilation == (d, d) and self.kernel_size == (k, k) and k % 2 == 1
            and self.padding == (d * (k - 1) // 2,) * 2 and self.stride == (stride, stride)
            and stride in (1, d) and h % d == 0 and w % d == 0 and self.groups == c
        )  # fmt: skip

    def phases(self, x: torch.Tensor) -> torch.Tensor | None:
        """The input's phases stacked on the batch axis (an NCHW view of NHWC memory; with
        stride d, phase (0, 0) alone, copied), what the undilated convolution reads; None where
        the polyphase form does not apply."""
        if not self.polyphase(x.shape):
            return None
        d, stride = self.dilation[0], self.stride[0]
        n, c, h, w = x.shape
        if stride == d:
            # A copy, not the strided view: slicing's backward would hand the input an NCHW
            # gradient, which a channels_last ReLU's backward takes a slow kernel for.
            return subsample(x, 0, (d, d))
        # Work in NHWC views so channels_last inputs stay channels_last without copies in conv2d.
        nhwc = x.permute(0, 2, 3, 1).reshape(n, h // d, d, w // d, d, c)
        return nhwc.permute(0, 2, 4, 1, 3, 5).reshape(n * d * d, h // d, w // d, c).permute(
            0, 3, 1, 2
        )

    def from_phases(
        self, phases: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
        shape: torch.Size,
    ) -> torch.Tensor:
        """The convolution's output, from `phases` (of an input of `shape`)."""
        d, pad = self.dilation[0], (self.kernel_size[0] - 1) // 2
        out = depthwise_conv2d(phases, weight, bias, 1, pad)  # groups == channels here
        if self.stride[0] == d:
            return out
        n, c, h, w = shape
        out = out.permute(0, 2, 3, 1).reshape(n, d, d, h // d, w // d, c)
        return out.permute(0, 3, 1, 4, 2, 5).reshape(n, h, w, c).permute(0, 3, 1, 2)


def is_dilated_depthwise(module: nn.Module) -> bool:
    """A plain nn.Conv2d with one group per input channel and a dilation above 1."""
    return (
        type(module) is nn.Conv2d
        and module.groups == module.in_channels == module.out_channels
        and any(d > 1 for d in module.dilation)
    )


def is_depthwise(module: nn.Module) -> bool:
    """A plain nn.Conv2d with one group per input channel and no dilation."""
    return (
        type(module) is nn.Conv2d
        and module.groups == module.in_channels == module.out_channels > 1
        and all(d == 1 for d in module.dilation)
    )


class Float32DilatedConv2d(nn.Conv2d):
    """A dilated depthwise convolution computed in float32 under CPU autocast. torch's CPU
    bfloat16 weight gradient of such a convolution (2.14.1; a 5x5 kernel, dilation 2, batch 8)
    came out NaN in its border taps on inputs where float32's is finite, and the derived
    network's training stopped at its first step; this one convolution keeps float32 (its
    output too: the next operation under autocast casts it as it casts any input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return float32_under_cpu_autocast(super().forward, x)


def float32_under_cpu_autocast(convolve: Callable[[torch.Tensor], torch.Tensor],
                               x: torch.Tensor) -> torch.Tensor:
    """`convolve(x)`, a dilated depthwise convolution; under CPU autocast in float32 (its
    output too), where torch's bf16 weight gradient can be NaN (Float32DilatedConv2d)."""
    if x.device.type == "cpu" and autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return convolve(x.float())
    return convolve(x)


def float32_dilated_under_cpu_autocast(module: nn.Module) -> nn.Module:
    """Re-class, in place, every plain dilated depthwise nn.Conv2d of `module` as a
    Float32DilatedConv2d (the same parameters and state_dict); returns `module`."""
    for sub in module.modules():
        if is_dilated_depthwise(sub):
            sub.__class__ = Float32DilatedConv2d
    return module


def accelerate(module: nn.Module) -> nn.Module:
    """Re-class, in place, every dilated depthwise nn.Conv2d of `module` as a
    DilatedDepthwiseConv2d and every other depthwise one as a DepthwiseConv2d; returns
    `module`. Subclasses of nn.Conv2d are left alone."""
    for sub in module.modules():
        if is_dilated_depthwise(sub):
            sub.__class__ = DilatedDepthwiseConv2d
        elif is_depthwise(sub):
            sub.__class__ = DepthwiseConv2d
    return module


# ---------------------------------------------------------------- a recurrent network's products


def fast_decoded_nll(hidden: torch.Tensor, decoder: nn.Linear,
                     targets: torch.Tensor) -> torch.Tensor:
    """`recurrent.decoded_nll` with oneDNN's products where `gemm.applies`."""
    if gemm.applies(hidden, decoder.weight):
        return recurrent.decoded_nll(hidden, decoder, targets, gemm.OneDNNDecoderProducts)
    return recurrent.decoded_nll(hidden, decoder, targets)


def _gemm_product(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return gemm.matmul(x, self.weight)


def _has_product_seam(module: nn.Module) -> bool:
    # HighwayInit's and SharedHighway's seam, x @ self.weight, also on their copies.
    weight = getattr(module, "weight", None)
    return callable(getattr(type(module), "product", None)) and isinstance(weight, nn.Parameter) \
        and weight.dim() == 2


def accelerate_network(network: nn.Module) -> nn.Module:
    """A whole network's speed-ups, in place; returns `network`. A recurrent network's products
    go through `gemm`: each module with the `product` seam gets `gemm.matmul` as its own
    `product`, and the network the loss head `fast_decoded_nll` unless the instance has a head
    of its own. One pass for both kinds of network: a supernet's maps are HighwayInit and
    SharedHighway, a derived network's the standalone module's copies of them (whose class this
    pass could not swap for a subclass of the originals). An image network has neither (its
    supernet's candidates were accelerated as they were built, `ops.build_op`)."""
    found = False
    for sub in network.modules():
        if _has_product_seam(sub):
            sub.product = types.MethodType(_gemm_product, sub)
            found = True
    if callable(getattr(type(network), "decode_nll", None)) \
            and "decode_nll" not in network.__dict__:
        network.decode_nll = fast_decoded_nll
        found = True
    if found:
        gemm.choice()  # auto is timed now, not in the first step
    return network
