"""Memory-layout helpers the primitives share: what a channels_last tensor's gradient needs.

On the CPU, torch's elementwise backward kernels (a ReLU's, a BatchNorm's) take a slow strided
path when the gradient and the saved tensor are laid out differently, and the backward passes of
slicing and of `torch.cat` hand back gradients in NCHW (slicing: zeros made contiguous) or in no
layout at all (a channel slice). The definitions here keep each gradient in its tensor's own
layout. Like ops.py and blocks.py, this is a definitions file: spacec.codegen copies what a
standalone derived network uses verbatim, so it follows the rules stated in ops.py (torch and
the standard library only). The search-only speed-ups (accelerate.py) use it as well.
"""

from __future__ import annotations

import torch


def records_backward() -> bool:
    """Whether what runs now may be differentiated: not under no_grad, tracing or exporting,
    which see plain operations instead of a custom autograd Function."""
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)()
    return torch.is_grad_enabled() and not torch.jit.is_tracing() and not exporting


def memory_layout(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-d tensor laid out so (and not contiguous as well), else contiguous."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    if channels_last and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _subsampled(x: torch.Tensor, offset: int, stride: tuple[int, int]) -> torch.Tensor:
    sampled = x[:, :, offset :: stride[0], offset :: stride[1]]
    return sampled.contiguous(memory_format=memory_layout(x))


class Subsampled(torch.autograd.Function):
    """x[:, :, offset::stride, offset::stride] as a copy in x's layout, whose backward scatters
    the gradient into zeros in that layout too. Slicing's backward makes those zeros contiguous
    (NCHW), and on the CPU a channels_last ReLU's backward fed an NCHW gradient takes torch's
    mixed-layout kernel (torch 2.14.1: 2.66 ms per call where both in channels_last take 0.14,
    FactorizedReduce in darts_cnn at batch 16; the stride-2 dilated convolutions' phases,
    accelerate.py). The same values."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, offset: int, stride: tuple[int, int]) -> torch.Tensor:
        ctx.offset, ctx.stride = offset, stride
        ctx.shape, ctx.layout = x.shape, memory_layout(x)
        return _subsampled(x, offset, stride)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        offset, (down, across) = ctx.offset, ctx.stride
        grad_x = torch.empty(
            ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout
        ).zero_()
        grad_x[:, :, offset::down, offset::across] = grad
        return grad_x, None, None


def subsample(x: torch.Tensor, offset: int, stride: tuple[int, int]) -> torch.Tensor:
    """x[:, :, offset::stride, offset::stride] as a copy in x's layout; when a backward pass
    may follow, through Subsampled (tracing and exporting see plain slicing)."""
    if records_backward():
        return Subsampled.apply(x, offset, stride)
    return _subsampled(x, offset, stride)
