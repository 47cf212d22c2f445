"""The compiler's torch-free catalogue of what a .space file may name.

Each entry says which arguments a primitive, block or rule takes and of what type; the checker
validates calls against it and the runtime's registries are tested to agree with it
(tests/test_catalog.py), so the compiler never needs to import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

INT = "int"
NAMES = "names"  # a list of names, e.g. exclude=[none]
INDEX = "index"  # a non-negative integer (a position)


@dataclass(frozen=True)
class Choice:
    """An argument whose value is one of a few symbols, e.g. fn=tanh."""

    options: tuple[str, ...]


@dataclass(frozen=True)
class Signature:
    args: dict[str, object]  # argument name -> INT | NAMES | Choice
    defaults: dict[str, object] = field(default_factory=dict)
    domain: str = "image"  # "image" (convolutional cells) or "sequence" (recurrent cells)
    doc: str = ""
    odd: tuple[str, ...] = ()  # integer arguments that must be odd (padding k // 2 keeps the size)
    fixed_stride: int | None = None  # the only stride the primitive supports

    @cached_property  # asked for every call of the primitive a space writes
    def required(self) -> tuple[str, ...]:
        return tuple(name for name in self.args if name not in self.defaults)

    @cached_property  # likewise
    def names_by_default(self) -> tuple[str, ...]:
        """Arguments whose default is a non-empty list of names (the checker writes it at the
        call's position)."""
        return tuple(
            name for name, value in self.defaults.items() if value and self.args[name] == NAMES
        )


ACTIVATIONS = Choice(("tanh", "relu", "sigmoid", "identity"))

# Candidate operations on an edge (runtime/ops.py registers a builder under each name).
PRIMITIVES: dict[str, Signature] = {
    "zero": Signature({}, doc="the zero op: no connection (respects stride)"),
    "identity": Signature({}, doc="skip connection; factorized reduce when the edge has stride 2"),
    "max_pool": Signature(
        {"kernel": INT}, odd=("kernel",), doc="max pooling (BatchNorm after it in the supernet)"
    ),
    "avg_pool": Signature(
        {"kernel": INT}, odd=("kernel",), doc="average pooling (BatchNorm after it in the supernet)"
    ),
    "sep_conv": Signature({"kernel": INT}, odd=("kernel",), doc="separable convolution, twice"),
    "dil_conv": Signature(
        {"kernel": INT, "dilation": INT}, odd=("kernel",), doc="dilated separable convolution"
    ),
    "relu_conv_bn": Signature({"kernel": INT}, odd=("kernel",), doc="ReLU, convolution, BatchNorm"),
    "conv_7x1_1x7": Signature({}, doc="ReLU, 1x7 then 7x1 convolution, BatchNorm"),
    "factorized_reduce": Signature(
        {}, fixed_stride=2, doc="two shifted 1x1 stride-2 convolutions, concatenated"
    ),
    "activation": Signature(
        {"fn": ACTIVATIONS}, domain="sequence", doc="a recurrent edge: s + c * (fn(h) - s)"
    ),
}

# Ops that stand for "no connection": derivation rules may exclude them, zero work in the supernet.
ZERO_PRIMITIVES = frozenset({"zero"})

# Non-searched ops over several sources at once: `fixed (a, b) -> n : op`.
JOINT_PRIMITIVES: dict[str, Signature] = {
    "highway_init": Signature(
        {"fn": ACTIVATIONS},
        domain="sequence",
        doc="s0 = h + c0 * (fn(h0) - h) from one linear map of [x, h] (DARTS RNN)",
    ),
}

# Weights shared by all incoming edges of a node: `share highway per node`.
SHARED_BLOCKS: dict[str, Signature] = {
    "highway": Signature(
        {},
        domain="sequence",
        doc="one linear map hidden -> 2 hidden (gate c, candidate h) per node",
    ),
}

SEARCH_NORMS: dict[str, Signature] = {
    "batch_norm": Signature({}, domain="sequence", doc="BatchNorm (affine=False) on every node"),
}

COMBINES = ("sum",)
REDUCES = ("concat", "mean")

DERIVE_RULES: dict[str, Signature] = {
    "topk": Signature(
        {"k": INT, "exclude": NAMES},
        defaults={"exclude": ()},
        doc="keep the k strongest incoming edges of every node, then each edge's best op",
    ),
    "argmax": Signature(
        {"exclude": NAMES}, defaults={"exclude": ()}, doc="keep the best op of every edge"
    ),
}

# Macro-network blocks (runtime/blocks.py registers a builder under each name), by role.
STEMS: dict[str, Signature] = {
    "conv_bn": Signature(
        {"kernel": INT, "channels": INT}, odd=("kernel",), doc="convolution + BatchNorm"
    ),
    "stem_imagenet": Signature(
        {"channels": INT}, doc="DARTS ImageNet stem0: two stride-2 3x3 convolutions (stride 4)"
    ),
    "stem_imagenet_1": Signature(
        {"channels": INT}, doc="DARTS ImageNet stem1: ReLU, stride-2 3x3 convolution, BatchNorm"
    ),
}
# Stems whose output is at half the resolution of the previous stem's (a list of stems feeds the
# first cells like earlier cells' outputs would).
REDUCING_STEMS = frozenset({"stem_imagenet_1"})
STEM_STRIDES = {"conv_bn": 1, "stem_imagenet": 4, "stem_imagenet_1": 2}
PREPROCESS: dict[str, Signature] = {
    "relu_conv_bn": Signature(
        {"kernel": INT}, odd=("kernel",), doc="ReLU, convolution to the cell width, BatchNorm"
    ),
    "identity": Signature({}, doc="no preprocessing (channels must already match)"),
}
# How an input one reduction behind a cell is brought to its resolution (stride 2).
REDUCE_INPUTS: dict[str, Signature] = {
    "factorized_reduce": Signature({}, doc="halves the resolution, convolves to the cell width"),
    "relu_conv_bn": Signature(
        {"kernel": INT}, odd=("kernel",), doc="ReLU, stride-2 convolution to the cell width, BN"
    ),
}
FIXED_BLOCKS: dict[str, Signature] = {
    "res_block": Signature(
        {"stride": INT}, defaults={"stride": 1}, doc="ResNet basic block; stride 2 doubles channels"
    ),
}
HEADS: dict[str, Signature] = {
    "classifier": Signature({"classes": INT}, doc="global average pooling + linear"),
    "bn_relu_classifier": Signature(
        {"classes": INT}, doc="BatchNorm + ReLU, global average pooling + linear"
    ),
}

# Auxiliary classifiers of the evaluation network (ignored by the supernet): `after` is the body
# position whose output they read (DARTS: the cell at 2/3 of the depth).
AUXILIARY_HEADS: dict[str, Signature] = {
    "auxiliary_cifar": Signature(
        {"after": INDEX, "classes": INT}, doc="DARTS AuxiliaryHeadCIFAR (8x8 input)"
    ),
    "auxiliary_imagenet": Signature(
        {"after": INDEX, "classes": INT}, doc="DARTS AuxiliaryHeadImageNet (7x7 input)"
    ),
}

# Every table of macro-network blocks, by the role its blocks play.
BLOCK_TABLES: dict[str, dict[str, Signature]] = {
    "stem": STEMS,
    "preprocess": PREPROCESS,
    "reduce input": REDUCE_INPUTS,
    "fixed block": FIXED_BLOCKS,
    "head": HEADS,
    "auxiliary head": AUXILIARY_HEADS,
}

# The block table of each network setting whose value is a block (NETWORK_SETTINGS' roles).
SETTING_BLOCKS: dict[str, dict[str, Signature]] = {
    "stem": STEMS,
    "preprocess": PREPROCESS,
    "reduce_input": REDUCE_INPUTS,
    "head": HEADS,
    "auxiliary": AUXILIARY_HEADS,
}

# Network kinds and their settings: key -> (role, required).
NETWORK_SETTINGS: dict[str, dict[str, tuple[str, bool]]] = {
    "image_classifier": {
        "in_channels": ("int", False),
        "channels": ("int", True),
        "stem": ("stem", True),
        "preprocess": ("preprocess", False),
        "reduce_input": ("reduce_input", False),
        "head": ("head", True),
        "auxiliary": ("auxiliary", False),
        "image_size": ("int", False),
    },
    "language_model": {
        "tokens": ("int", True),
        "embedding": ("int", True),
        "hidden": ("int", True),
        "step": ("cell", True),
        "decoder": ("decoder", True),
    },
}
NETWORK_DOMAINS = {"image_classifier": "image", "language_model": "sequence"}
DECODERS = ("tied", "untied")
NETWORK_DEFAULTS = {
    "image_classifier": {
        "in_channels": 3,
        "image_size": 32,
        "preprocess": ("relu_conv_bn", (("kernel", 1),)),
        "reduce_input": ("factorized_reduce", ()),
    },
}

# Sizes past which a space is surely a mistake (and compiling it would exhaust memory).
MAX_NODES = 256
MAX_CELLS = 10_000

# Names a parameter cannot take: they become keyword arguments and locals of the generated
# network's constructor and body(), next to these names of the generated code.
RESERVED_PARAMETERS = frozenset(
    {
        "self",
        "super",
        "nn",
        "torch",
        "blocks",
        "layout",
        "ops",
        "recurrent",
        "body",
        "sequence",
        "stems",
        "preprocess",
        "reduce_input",
        "cells",
        "features",
        "relaxation",
        "relaxation_of",
        "dropouts",
        "CELL_SHAPES",
        "CELL_TYPES",
        "RULES",
        "SPACE",
        "SOURCE_SHA256",
        "MAX_INPUTS",
        "Network",
        "CellRule",
        "SearchSpaceMixin",
        "cell_input",
        "partial",
        "annotations",
    }
)

# Cell names key α in an nn.ParameterDict, which refuses the names of its own attributes.
MODULE_ATTRIBUTES = frozenset(
    {
        "T_destination",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "clear",
        "compile",
        "copy",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "fromkeys",
        "get",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "items",
        "keys",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "pop",
        "popitem",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "setdefault",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "update",
        "values",
        "xpu",
        "zero_grad",
    }
)


# ---- cost formulas ---------------------------------------------------------------------------
# Each primitive and block once more, as a program over abstract layers: the layers of its
# runtime module (runtime/nn/ops.py, blocks.py, recurrent.py), in the same order, with the same
# views and copies. `spacec.cost` runs a program on symbolic tensors (a shape and whether it
# requires grad, nothing allocated) to get its output shape, parameters, multiply-adds and the
# tensors autograd keeps for backward; tests/test_cost.py checks every program against the torch
# module the runtime builds, on a few sizes. A program has the runtime builder's signature,
# `program(t, x, C_in, C_out, stride, affine, **args)`, with `t` the layer algebra
# (spacec.cost.Tracer: conv, bn, relu, ...) and `x` the input; it returns the output. Programs
# whose runtime builder takes `input_relu` take it too (MixedEdge applies one shared ReLU).
# Batch is the first dimension, so the formulas hold at any batch size.


def _zero_cost(t, x, C_in, C_out, stride, affine):
    # Zero: subsample, then zeros (one channel expanded when the width changes).
    if stride != 1:
        x = t.subsample(x, stride)
    if C_out == C_in:
        return t.scale(x)
    return t.copy(t.expand_channels(t.scale(t.narrow_channels(x, 1)), C_out))


def _even_halves(t, x, what: str) -> None:
    """A stride-2 block whose two paths floor and ceil the size: 1 becomes 0, odd sizes differ."""
    height, width = x.shape[-2:]
    if height < 2 or width < 2:
        t.fail(f"{what} halves {height}x{width} to nothing", (height, width, height // 2, width // 2))
    if height % 2 or width % 2:
        t.fail(f"{what} halves only even sizes, not {height}x{width}")


def _factorized_reduce_cost(t, x, C_in, C_out, stride, affine, input_relu=True):
    if C_out % 2:
        t.fail(f"factorized_reduce needs an even number of channels, got {C_out}")
    _even_halves(t, x, "factorized_reduce")
    if input_relu:
        x = t.relu(x)
    first = t.pointwise(x, C_out // 2, 2)
    second = t.pointwise(t.crop(x, 1), C_out // 2, 2)
    return t.bn(t.cat([first, second]), affine)


def _identity_cost(t, x, C_in, C_out, stride, affine):
    if stride == 1:
        return x
    return _factorized_reduce_cost(t, x, C_in, C_out, stride, affine)


def _max_pool_cost(t, x, C_in, C_out, stride, affine, *, kernel):
    return t.max_pool(x, kernel, stride, kernel // 2)


def _avg_pool_cost(t, x, C_in, C_out, stride, affine, *, kernel):
    return t.avg_pool(x, kernel, stride, kernel // 2)


def _sep_conv_cost(t, x, C_in, C_out, stride, affine, *, kernel, input_relu=True):
    if input_relu:
        x = t.relu(x)
    x = t.conv(x, C_in, kernel, stride, kernel // 2, groups=C_in)
    x = t.bn(t.conv(x, C_in, 1), affine)
    x = t.conv(t.relu(x), C_in, kernel, 1, kernel // 2, groups=C_in)
    return t.bn(t.conv(x, C_out, 1), affine)


def _dil_conv_cost(t, x, C_in, C_out, stride, affine, *, kernel, dilation, input_relu=True):
    if input_relu:
        x = t.relu(x)
    x = t.conv(x, C_in, kernel, stride, dilation * (kernel - 1) // 2, dilation, groups=C_in)
    return t.bn(t.conv(x, C_out, 1), affine)


def _relu_conv_bn_cost(t, x, C_in, C_out, stride, affine, *, kernel, input_relu=True):
    if input_relu:
        x = t.relu(x)
    if kernel == 1:
        x = t.pointwise(x, C_out, stride)
    else:
        x = t.conv(x, C_out, kernel, stride, kernel // 2)
    return t.bn(x, affine)


def _conv_7x1_1x7_cost(t, x, C_in, C_out, stride, affine, input_relu=True):
    if input_relu:
        x = t.relu(x)
    x = t.conv(x, C_in, (1, 7), (1, stride), (0, 3))
    return t.bn(t.conv(x, C_out, (7, 1), (stride, 1), (3, 0)), affine)


def _conv_bn_cost(t, x, C_in, C_out, stride, affine, *, kernel):
    return t.bn(t.conv(x, C_out, kernel, stride, kernel // 2), True)


def _stem_imagenet_cost(t, x, C_in, C_out, stride, affine):
    x = t.relu(t.bn(t.conv(x, C_out // 2, 3, 2, 1), True))
    return t.bn(t.conv(x, C_out, 3, 2, 1), True)


def _stem_imagenet_1_cost(t, x, C_in, C_out, stride, affine):
    return t.bn(t.conv(t.relu(x), C_out, 3, 2, 1), True)


def _res_block_cost(t, x, C_in, C_out, stride, affine):
    # ResNetBasicBlock: downsample(x) + conv_b(conv_a(x)), every BatchNorm affine.
    if stride == 2:  # its 2x2 average pooling floors the size, conv_a rounds it up
        _even_halves(t, x, "res_block(stride=2)")
    branch = _relu_conv_bn_cost(t, x, C_in, C_out, stride, True, kernel=3)
    branch = _relu_conv_bn_cost(t, branch, C_out, C_out, 1, True, kernel=3)
    if stride == 2:
        shortcut = t.conv(t.avg_pool(x, 2, 2, 0), C_out, 1)
    elif C_in != C_out:
        shortcut = _relu_conv_bn_cost(t, x, C_in, C_out, 1, True, kernel=1)
    else:
        shortcut = x
    return t.add(shortcut, branch)


def _classifier_cost(t, x, C_in, C_out, stride, affine):
    return t.linear(t.flatten(t.global_avg_pool(x)), C_out)


def _bn_relu_classifier_cost(t, x, C_in, C_out, stride, affine):
    return _classifier_cost(t, t.relu(t.bn(x, True)), C_in, C_out, stride, affine)


# DARTS AuxiliaryHead: 128 then 768 channels before the linear layer (runtime/nn/blocks.py).
AUX_HIDDEN, AUX_FEATURES = 128, 768


def _auxiliary_cost(t, x, C_in, classes, pool_stride: int, norm_features: bool):
    x = t.avg_pool(t.relu(x), 5, pool_stride, 0)
    x = t.relu(t.bn(t.conv(x, AUX_HIDDEN, 1), True))
    x = t.conv(x, AUX_FEATURES, 2)
    if norm_features:
        x = t.bn(x, True)
    return t.linear(t.flatten(t.relu(x)), classes, in_features=AUX_FEATURES)


def _auxiliary_cifar_cost(t, x, C_in, C_out, stride, affine):
    return _auxiliary_cost(t, x, C_in, C_out, pool_stride=3, norm_features=True)


def _auxiliary_imagenet_cost(t, x, C_in, C_out, stride, affine):
    return _auxiliary_cost(t, x, C_in, C_out, pool_stride=2, norm_features=False)


# Image primitives and blocks by name (a block reusing an op, e.g. relu_conv_bn as preprocess,
# is the same program): every name of PRIMITIVES (image domain), STEMS, PREPROCESS,
# REDUCE_INPUTS, FIXED_BLOCKS, HEADS and AUXILIARY_HEADS has one (tests/test_cost.py).
COSTS = {
    "zero": _zero_cost,
    "identity": _identity_cost,
    "max_pool": _max_pool_cost,
    "avg_pool": _avg_pool_cost,
    "sep_conv": _sep_conv_cost,
    "dil_conv": _dil_conv_cost,
    "relu_conv_bn": _relu_conv_bn_cost,
    "conv_7x1_1x7": _conv_7x1_1x7_cost,
    "factorized_reduce": _factorized_reduce_cost,
    "conv_bn": _conv_bn_cost,
    "stem_imagenet": _stem_imagenet_cost,
    "stem_imagenet_1": _stem_imagenet_1_cost,
    "res_block": _res_block_cost,
    "classifier": _classifier_cost,
    "bn_relu_classifier": _bn_relu_classifier_cost,
    "auxiliary_cifar": _auxiliary_cifar_cost,
    "auxiliary_imagenet": _auxiliary_imagenet_cost,
}
# Candidates the supernet's mixed edge follows with BatchNorm(C, affine=False): the pools, whose
# outputs, unlike the other candidates', are not normalised (DARTS model_search.py MixedOp).
NORM_IN_SUPERNET = frozenset({"max_pool", "avg_pool"})
# Candidates whose supernet module is a chain of modules ending in that affine-free BatchNorm:
# a mixed edge makes the candidate's weight the norm's per-channel weight (runtime/nn/ops.py
# scaled_norm), and a candidate whose last step is one of these keeps nothing more for it.
# The identity's reducing form (FactorizedReduce) is not a chain (tests/test_cost.py).
NORM_ENDED_IN_SUPERNET = NORM_IN_SUPERNET | {"sep_conv", "dil_conv", "relu_conv_bn",
                                             "conv_7x1_1x7"}


# The recurrent pieces (runtime/nn/recurrent.py), on [rows, features] tensors: one time step.
def _highway_init_cost(t, x, h, x_mask, h_mask, ninp, nhid, *, fn):
    # HighwayInit: [c0, h0] = [x * x_mask, h * h_mask] W0; s0 = h + sigmoid(c0) * (fn(h0) - h)
    x_in = x if x_mask is None else t.mul(x, x_mask)
    h_in = h if h_mask is None else t.mul(h, h_mask)
    c0, h0 = t.split(t.matmul(t.cat([x_in, h_in], dim=-1), 2 * nhid), 2)
    return t.add(h, t.mul(t.sigmoid(c0), t.sub(t.activation(h0, fn), h)))


def _highway_cost(t, states, h_mask, nhid):
    # SharedHighway: every state a node reads through its one map; (sigmoid gate c, candidate h).
    masked = states if h_mask is None else t.mul(states, h_mask)
    c, h = t.split(t.matmul(masked, 2 * nhid), 2)
    return t.sigmoid(c), h


def _activation_cost(t, state, c, h, *, fn):
    # One highway edge: state + c * (fn(h) - state).
    return t.add(state, t.mul(c, t.sub(t.activation(h, fn), state)))


def _batch_norm_cost(t, x, nhid):
    return t.bn(x, False)


SEQUENCE_COSTS = {
    "highway_init": _highway_init_cost,
    "highway": _highway_cost,
    "activation": _activation_cost,
    "batch_norm": _batch_norm_cost,
}
