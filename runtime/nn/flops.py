"""Multiply-add counts of a network, measured by running it once on a dummy input.

Counts the multiply-adds of convolutions and linear layers (the convention of the DARTS paper's
"multiply-add operations" and of NASNet/PNASNet): a convolution costs
output elements x (input channels / groups) x kernel area, a linear layer in x out per sample.
Normalisation, activations, pooling and additions are not counted.
"""

from __future__ import annotations

import torch
from torch import nn


def multiply_adds(model: nn.Module, input_shape: tuple[int, ...], device: str = "cpu") -> int:
    """Multiply-adds of one forward pass for a single sample of `input_shape` (C, H, W)."""
    total = 0

    def conv_hook(module: nn.Conv2d, inputs, output):
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total += output.numel() // output.shape[0] * (module.in_channels // module.groups) * kernel

    def linear_hook(module: nn.Linear, inputs, output):
        nonlocal total
        total += module.in_features * module.out_features

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total


def count_parameters(model: nn.Module, exclude: str = "auxiliary") -> int:
    """Parameters, excluding those whose name contains `exclude` (DARTS reports them so)."""
    return sum(p.numel() for name, p in model.named_parameters() if exclude not in name)
