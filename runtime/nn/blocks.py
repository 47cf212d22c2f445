"""Macro-network pieces: stems, cell-input preprocessing, residual blocks and heads.

Same builder signature as the ops, `builder(C_in, C_out, stride, affine, **args)`; for a head
C_out is the number of classes. Sources: DARTS (github.com/quark0/darts, cnn/model.py,
cnn/model_search.py) and NAS-Bench-201 (Dong & Yang, ICLR 2020; ResNetBasicblock and the
TinyNetwork's `lastact`). Stems, residual blocks and heads always use affine BatchNorm, as
both reference codes do, whatever `affine` says; the preprocessing blocks honour it (the
DARTS search network preprocesses with affine=False).

These definitions are copied verbatim into the standalone derived network, like the ops; they
follow the rules stated in ops.py (torch and the standard library only, registration in
decorators, a builder named as it is registered), and may use the definitions of ops.py and
layout.py.

Entry metadata:
  args          names of the arguments a space file passes (all required)
  fixed_stride  the only stride the block supports, or None (heads ignore the stride)
  is_head       the block maps a feature map to logits (N, C_out)
  leading_relu  the block starts with a ReLU and takes `input_relu=False` to omit it
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from spacec.registry import Registry, keyword_args
from spacec.runtime.nn.layout import memory_layout, records_backward
from spacec.runtime.nn.ops import INPUT_RELU, OPS, ReLUConvBN

BLOCKS = Registry("block")

# DARTS AuxiliaryHead{CIFAR,ImageNet}: 128 then 768 channels before the linear layer.
AUX_HIDDEN = 128
AUX_FEATURES = 768


def _block(
    name: str, *, fixed_stride: int | None = None, is_head: bool = False
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def store(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        return BLOCKS.register(
            name,
            args=keyword_args(builder, exclude=(INPUT_RELU,)),
            fixed_stride=fixed_stride,
            is_head=is_head,
            leading_relu=INPUT_RELU in keyword_args(builder),
        )(builder)

    return store


def _check_stride(block: str, stride: int, expected: int) -> None:
    if stride != expected:
        raise ValueError(f"{block} always has stride {expected}, got {stride}")


def _reuse_op(name: str) -> None:
    entry = OPS[name]
    _block(name, fixed_stride=entry.meta["fixed_stride"])(entry.builder)


# Cell-input preprocessing (DARTS Cell.preprocess0/1) is built from the ops themselves.
_reuse_op("relu_conv_bn")
_reuse_op("factorized_reduce")
_reuse_op("identity")


@_block("conv_bn")
def conv_bn(C_in: int, C_out: int, stride: int, affine: bool, *, kernel: int) -> nn.Module:
    """The DARTS CIFAR stem (also NAS-Bench-201's): conv, then BatchNorm with affine=True."""
    return nn.Sequential(
        nn.Conv2d(C_in, C_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(C_out),
    )


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's ResNetBasicblock: shortcut + conv_b(conv_a(x))."""

    def __init__(self, C_in: int, C_out: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"res_block supports stride 1 or 2, got {stride}")
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride, 1, affine=True)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine=True)
        self.downsample = self._shortcut(C_in, C_out, stride)

    @staticmethod
    def _shortcut(C_in: int, C_out: int, stride: int) -> nn.Module:
        if stride == 2:
            return nn.Sequential(
                nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
                nn.Conv2d(C_in, C_out, 1, stride=1, padding=0, bias=False),
            )
        if C_in != C_out:
            return ReLUConvBN(C_in, C_out, 1, 1, 0, affine=True)
        return nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


@_block("res_block")
def res_block(C_in: int, C_out: int, stride: int, affine: bool) -> nn.Module:
    return ResNetBasicBlock(C_in, C_out, stride)


def _pool_and_linear(C_in: int, num_classes: int) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C_in, num_classes)]


@_block("classifier", is_head=True)
def classifier(C_in: int, C_out: int, stride: int, affine: bool) -> nn.Module:
    """DARTS head: global average pooling and a linear layer to C_out classes."""
    return nn.Sequential(*_pool_and_linear(C_in, C_out))


@_block("bn_relu_classifier", is_head=True)
def bn_relu_classifier(C_in: int, C_out: int, stride: int, affine: bool) -> nn.Module:
    """NAS-Bench-201 head: `lastact` (BN, ReLU), then the DARTS head."""
    return nn.Sequential(nn.BatchNorm2d(C_in), nn.ReLU(), *_pool_and_linear(C_in, C_out))


class AuxiliaryHead(nn.Module):
    """DARTS auxiliary head: `features` to a 1x1 map of 768 channels, then `classifier`.

    The reference's ReLUs are in-place; here they are not. In the DARTS networks this changes
    nothing, since every later consumer of the tapped cell output starts with a ReLU.
    """

    def __init__(self, C_in: int, num_classes: int, pool_stride: int, norm_features: bool) -> None:
        super().__init__()
        layers = [
            nn.ReLU(),
            nn.AvgPool2d(5, stride=pool_stride, padding=0, count_include_pad=False),
            nn.Conv2d(C_in, AUX_HIDDEN, 1, bias=False),
            nn.BatchNorm2d(AUX_HIDDEN),
            nn.ReLU(),
            nn.Conv2d(AUX_HIDDEN, AUX_FEATURES, 2, bias=False),
        ]
        if norm_features:
            layers.append(nn.BatchNorm2d(AUX_FEATURES))
        layers.append(nn.ReLU())
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(AUX_FEATURES, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)  # (N, 768, 1, 1) for the sizes documented below
        return self.classifier(features.flatten(1))


@_block("auxiliary_cifar", is_head=True)
def auxiliary_cifar(C_in: int, C_out: int, stride: int, affine: bool) -> nn.Module:
    """AuxiliaryHeadCIFAR, for an 8x8 input (pool 5/3 -> 2x2, conv 2 -> 1x1)."""
    return AuxiliaryHead(C_in, C_out, pool_stride=3, norm_features=True)


@_block("auxiliary_imagenet", is_head=True)
def auxiliary_imagenet(C_in: int, C_out: int, stride: int, affine: bool) -> nn.Module:
    """AuxiliaryHeadImageNet, without the 768-channel BatchNorm, as in the paper's runs.

    The reference docstring says 14x14, but the head yields 768 features only for a 7x7
    input (pool 5/2 -> 2x2, conv 2 -> 1x1), which is the map size at 2/3 depth of the
    224-pixel network where DARTS attaches it.
    """
    return AuxiliaryHead(C_in, C_out, pool_stride=2, norm_features=False)


@_block("stem_imagenet", fixed_stride=4)
def stem_imagenet(C_in: int, C_out: int, stride: int, affine: bool) -> nn.Module:
    """DARTS ImageNet stem0: two stride-2 3x3 convs, through C_out // 2 channels."""
    _check_stride("stem_imagenet", stride, 4)
    return nn.Sequential(
        nn.Conv2d(C_in, C_out // 2, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(C_out // 2),
        nn.ReLU(),
        nn.Conv2d(C_out // 2, C_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(C_out),
    )


@_block("stem_imagenet_1", fixed_stride=2)
def stem_imagenet_1(C_in: int, C_out: int, stride: int, affine: bool) -> nn.Module:
    """DARTS ImageNet stem1: ReLU, stride-2 3x3 conv, BN."""
    _check_stride("stem_imagenet_1", stride, 2)
    return nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(C_in, C_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(C_out),
    )


class ChannelConcat(torch.autograd.Function):
    """torch.cat(states, dim=1), whose backward hands every state its gradient in the state's
    own memory layout. cat's own backward hands out channel slices of the output's gradient,
    which in channels_last are contiguous in no layout; a BatchNorm's backward that receives
    one (a candidate of a node only the concatenation reads) takes torch's strided CPU kernel,
    5-8x slower than its channels_last one (torch 2.14.1: 5.7 vs 0.69 ms at 16x16x32x32). The
    copy costs one pass over the gradient. Same values: only strides change."""

    @staticmethod
    def forward(ctx, *states: torch.Tensor) -> torch.Tensor:
        ctx.channels = [state.shape[1] for state in states]
        ctx.layouts = [memory_layout(state) for state in states]
        return torch.cat(states, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        parts = grad.split(ctx.channels, dim=1)
        return tuple(
            part.contiguous(memory_format=layout)
            for part, layout in zip(parts, ctx.layouts, strict=True)
        )


def concat_channels(states: list[torch.Tensor]) -> torch.Tensor:
    """A cell's output: its states side by side along the channels; when a backward pass may
    follow, through ChannelConcat (tracing and exporting see a plain cat)."""
    if records_backward():
        return ChannelConcat.apply(*states)
    return torch.cat(states, dim=1)
