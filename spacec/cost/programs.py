"""Running the catalogue's cost programs: one step, a chain of steps, and a supernet candidate.

A candidate `a >> b >> ...` is built like runtime/nn/ops.py's `build_op`: the first step maps
(C_in, stride) to C_out, the others keep C_out at stride 1; `input_relu=False` drops the first
step's leading ReLU (a mixed edge applies one ReLU for all its candidates). In the supernet a
candidate whose last step is a pool is followed by BatchNorm(C, affine=False).

The catalogue's programs describe the primitives' definitions. Two tables replace some of them
where a network runs a primitive differently, with the same parameters and multiply-adds but
other saved tensors: `SUPERNET_PROGRAMS`, the supernet's speed-ups (runtime/nn/accelerate.py:
dilated depthwise convolutions on polyphase sub-images), and `DERIVED_PROGRAMS`, the standalone
derived module's own versions.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from functools import cache

from spacec import catalog
from spacec.cost.tracer import Sym, Tracer

Step = tuple[str, tuple[tuple[str, object], ...]]  # (primitive, ((argument, value), ...))


@cache
def leads_with_relu(name: str) -> bool:
    """The primitive starts with a ReLU it can omit (its program takes `input_relu`)."""
    return "input_relu" in inspect.signature(catalog.COSTS[name]).parameters


def step_of(step) -> Step:
    """A spec.Step, or an IR step tuple, as (primitive, ((argument, int or name), ...))."""
    if isinstance(step, tuple):
        name, args = step
        return name, tuple((k, getattr(v, "value", v)) for k, v in args)
    return step.primitive, tuple((k, getattr(v, "value", v)) for k, v in step.args)


def run_step(
    t: Tracer,
    x: Sym,
    step: Step,
    C_in: int,
    C_out: int,
    stride: int,
    affine: bool,
    input_relu: bool = True,
    overrides: Mapping[str, Callable[..., Sym]] | None = None,
) -> Sym:
    """One primitive: the catalogue's program, or its replacement in `overrides`."""
    name, args = step
    if x.shape[1] != C_in:
        t.fail(f"{name} is built for {C_in} channels, its input has {x.shape[1]}")
    kwargs: dict[str, object] = dict(args)
    if not input_relu:
        kwargs["input_relu"] = False
    program = (overrides or {}).get(name, catalog.COSTS[name])
    return program(t, x, C_in, C_out, stride, affine, **kwargs)


def run_chain(
    t: Tracer,
    x: Sym,
    steps: Sequence[Step],
    C_in: int,
    C_out: int,
    stride: int,
    affine: bool,
    input_relu: bool = True,
    overrides: Mapping[str, Callable[..., Sym]] | None = None,
) -> Sym:
    """A candidate's steps in order (`build_op`)."""
    for index, step in enumerate(steps):
        if index == 0:
            x = run_step(t, x, step, C_in, C_out, stride, affine, input_relu, overrides)
        else:
            x = run_step(t, x, step, C_out, C_out, 1, affine, True, overrides)
    return x


def is_zero(steps: Sequence[Step]) -> bool:
    return all(name in catalog.ZERO_PRIMITIVES for name, _ in steps)


def supernet_candidate(
    t: Tracer, x: Sym, steps: Sequence[Step], C: int, stride: int, input_relu: bool
) -> Sym:
    """runtime/nn/ops.py `_supernet_candidate`: the op, and BatchNorm after a pool."""
    out = run_chain(t, x, steps, C, C, stride, False, input_relu, SUPERNET_PROGRAMS)
    if steps and steps[-1][0] in catalog.NORM_IN_SUPERNET:
        out = t.bn(out, False)
    return out


def _accelerated_dil_conv(t, x, C_in, C_out, stride, affine, *, kernel, dilation,
                          input_relu=True):
    # dil_conv with its depthwise convolution as runtime DilatedDepthwiseConv2d runs it.
    if input_relu:
        x = t.relu(x)
    x = t.dilated_depthwise(x, kernel, stride, dilation * (kernel - 1) // 2, dilation)
    return t.bn(t.conv(x, C_out, 1), affine)


def _standalone_zero(t, x, C_in, C_out, stride, affine):
    # The derived module's Zero: x[:, :, ::s, ::s][:, :1].mul(0.0).expand(-1, C_out, -1, -1)
    x = t.subsample(x, stride) if stride != 1 else x
    return t.expand_channels(t.scale(t.narrow_channels(x, 1)), C_out)


SUPERNET_PROGRAMS = {"dil_conv": _accelerated_dil_conv}
DERIVED_PROGRAMS = {"zero": _standalone_zero}
