"""Speed-ups the supernet applies to built primitives; the definitions stay plain PyTorch.

The primitives (ops.py, blocks.py) are written once and copied verbatim into the standalone
derived network, so a speed-up that only the search needs lives here instead, as a pass over a
built module: it changes the class of some submodules to a faster subclass with the same
parameters and the same result. Changing `__class__` keeps the parameters, their order and the
state_dict keys, and draws no random numbers, so a supernet initialises exactly as it would
without the pass. `ops.build_op` applies `accelerate` to every candidate it builds (the
supernet's mixed and fixed edges).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spacec.runtime.nn.layout import subsample


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
            return super()._conv_forward(x, weight, bias)
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
        out = F.conv2d(phases, weight, bias, 1, pad, 1, self.groups)
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


def accelerate(module: nn.Module) -> nn.Module:
    """Re-class, in place, every dilated depthwise nn.Conv2d of `module` as a
    DilatedDepthwiseConv2d; returns `module`. Subclasses of nn.Conv2d are left alone."""
    for sub in module.modules():
        if is_dilated_depthwise(sub):
            sub.__class__ = DilatedDepthwiseConv2d
    return module
