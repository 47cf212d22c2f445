"""The compiler's torch-free catalogue of what a .space file may name.

Each entry says which arguments a primitive, block or rule takes and of what type; the checker
validates calls against it and the runtime's registries are tested to agree with it
(tests/test_catalog.py), so the compiler never needs to import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(name for name in self.args if name not in self.defaults)


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
