"""The cost model (spacec.cost) against torch: parameters, multiply-adds, shapes, saved tensors.

Every catalogue cost program is checked against the module the runtime registries build
(`OPS[name].builder(C_in, C_out, stride, affine, **args)`, `BLOCKS[...]`) on a few sizes: the
parameter count, the multiply-adds counted by forward hooks (runtime/tools/flops.py), the output
shape, and the bytes autograd saves for backward, captured with saved_tensors_hooks. Whole
networks (shipped spaces at small sizes, random small spaces, derived networks, the recurrent
language model) are checked the same way, and a one-edge space pins the accounting by hand.
"""

from __future__ import annotations

import random
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode

import spacec
from spacec import catalog, cost
from spacec.arch.genotype import Genotype, resolve
from spacec.cli import main
from spacec.cost.methods import method
from spacec.cost.network import DerivedWalk, RecurrentWalk, SupernetWalk
from spacec.cost.programs import SUPERNET_PROGRAMS, leads_with_relu, step_of, supernet_candidate
from spacec.cost.tracer import Tracer
from spacec.errors import ReportedError, SpaceError
from spacec.runtime.nn.blocks import BLOCKS
from spacec.runtime.nn.memory import Remade, set_memory
from spacec.runtime.nn.ops import OPS, build_op

try:  # the hook-based count (runtime/tools/flops.py; runtime/nn/flops.py since the seams)
    from spacec.runtime.nn.flops import count_parameters, multiply_adds
except ModuleNotFoundError:
    from spacec.runtime.tools.flops import count_parameters, multiply_adds

pytestmark = pytest.mark.usefixtures("single_thread")

DARTS = method("darts")
BLOCK_TABLES = catalog.BLOCK_TABLES


# ---- measuring torch -------------------------------------------------------------------------
def saved_bytes(run, exclude=()):
    """Bytes of the distinct storages autograd saves while `run()` runs, less `exclude`'s
    (parameters, buffers, data: they exist anyway). Returns (bytes, run's result)."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in skip:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    # What a memory setting's own hooks keep (spacec.runtime.nn.memory.Remade), which hooks
    # outside do not see.
    original = Remade._pack
    held = []  # kept by the hooks unless settled later (Remade.deferred)

    def counted(self, tensor):
        packed = original(self, tensor)
        if packed is tensor:
            pack(tensor)
        elif getattr(packed, "name", "") is None:  # held by a token (not made again, not unread)
            held.append(packed)
        return packed

    with (mock.patch.object(Remade, "_pack", counted),
          torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)):
        result = run()
    for token in held:
        if token.tensor is not None:
            pack(token.tensor)
    return sum(storages.values()), result


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def traced(program, shape, *args, weights_grad=True, input_grad=True, **kwargs):
    t = Tracer(weights_grad=weights_grad)
    x = t.tensor(shape, input_grad)
    out = program(t, x, *args, **kwargs)
    return t, out


# ---- every primitive and block ---------------------------------------------------------------
def test_every_primitive_and_block_has_a_cost_program():
    image = {name for name, s in catalog.PRIMITIVES.items() if s.domain == "image"}
    blocks = set().union(*(set(table) for table in BLOCK_TABLES.values()))
    assert image | blocks == set(catalog.COSTS)
    sequence = {name for name, s in catalog.PRIMITIVES.items() if s.domain == "sequence"}
    recurrent = sequence | set(catalog.JOINT_PRIMITIVES) | set(catalog.SHARED_BLOCKS)
    assert recurrent | set(catalog.SEARCH_NORMS) == set(catalog.SEQUENCE_COSTS)


@pytest.mark.parametrize("name", sorted(OPS.names()))
def test_op_metadata_matches_the_runtime(name):
    assert leads_with_relu(name) == OPS[name].meta["leading_relu"]
    assert (name in catalog.NORM_IN_SUPERNET) == OPS[name].meta["norm_in_supernet"]


@pytest.mark.parametrize("name", sorted(OPS.names()))
def test_norm_ended_candidates_are_the_runtime_chains(name):
    # The cost model's NORM_ENDED_IN_SUPERNET is where the runtime makes a candidate's α weight
    # its last BatchNorm's weight (ops.split_final_norm), at every stride the op takes.
    from spacec.runtime.nn.ops import _supernet_candidate, split_final_norm

    for C_in, C_out, stride, args, _ in OP_CASES[name]:
        module = _supernet_candidate(((name, args),), C_in, C_out, stride, False, True)
        assert (split_final_norm(module) is not None) == (
            name in catalog.NORM_ENDED_IN_SUPERNET), (name, stride)


# (C_in, C_out, stride, args, height) per primitive: both strides, width changes, odd sizes and
# the paths a runtime module picks by size (polyphase dilated convolutions, strided 1x1s).
OP_CASES = {
    "zero": [(4, 4, 1, {}, 6), (4, 4, 2, {}, 6), (4, 8, 2, {}, 5)],
    "identity": [(4, 4, 1, {}, 6), (4, 8, 2, {}, 6)],
    "max_pool": [(4, 4, 1, {"kernel": 3}, 6), (4, 4, 2, {"kernel": 3}, 7)],
    "avg_pool": [(4, 4, 1, {"kernel": 3}, 6), (4, 4, 2, {"kernel": 5}, 6)],
    "sep_conv": [(4, 4, 1, {"kernel": 3}, 6), (4, 8, 2, {"kernel": 5}, 7)],
    "dil_conv": [
        (4, 4, 1, {"kernel": 3, "dilation": 2}, 8),  # polyphase
        (4, 4, 2, {"kernel": 5, "dilation": 2}, 8),  # polyphase, stride = dilation
        (4, 4, 1, {"kernel": 3, "dilation": 2}, 7),  # odd: the dilated convolution itself
        (4, 8, 2, {"kernel": 3, "dilation": 3}, 9),  # stride differs from the dilation
    ],
    "relu_conv_bn": [
        (4, 6, 1, {"kernel": 1}, 6),
        (4, 4, 2, {"kernel": 1}, 6),  # the subsampled pointwise convolution
        (4, 8, 2, {"kernel": 3}, 7),
    ],
    "conv_7x1_1x7": [(4, 4, 1, {}, 8), (4, 8, 2, {}, 8)],
    "factorized_reduce": [(4, 8, 2, {}, 6), (6, 4, 2, {}, 8)],
}


def op_cases():
    for name, cases in OP_CASES.items():
        for C_in, C_out, stride, args, size in cases:
            for affine in (False, True):
                yield pytest.param(name, C_in, C_out, stride, args, size, affine,
                                   id=f"{name}-{C_in}-{C_out}-s{stride}-{size}-affine{affine}")


def test_every_op_has_cases():
    assert set(OP_CASES) == set(OPS.names())


def _channels_last(x):
    return x.contiguous(memory_format=torch.channels_last)


def check_module(module, program, C_in, C_out, stride, affine, args, size, batch=2,
                 supernet_form=None, supernet_program=None):
    """Parameters, multiply-adds, output shape and saved bytes of `program` against `module`.

    The saved bytes are checked on `supernet_form` with `supernet_program` when given (the
    supernet's speed-ups change what some primitives save, nothing else)."""
    shape = (batch, C_in, size, size)
    t, out = traced(program, shape, C_in, C_out, stride, affine, **args)
    assert t.parameters == n_params(module)
    per_image, _ = traced(program, (1, C_in, size, size), C_in, C_out, stride, affine, **args)
    assert per_image.multiply_adds == multiply_adds(module, (C_in, size, size))
    module = supernet_form or module
    program = supernet_program or program
    module.train()
    x = _channels_last(torch.randn(shape)).requires_grad_(True)
    exclude = [*module.parameters(), *module.buffers()]
    t, out = traced(program, shape, C_in, C_out, stride, affine, **args)
    nbytes, y = saved_bytes(lambda: module(x), exclude)
    assert out.shape == tuple(y.shape)
    assert t.saved_bytes == nbytes
    # The α step's view of the same op: weights detached, only the input requires grad.
    for p in module.parameters():
        p.requires_grad_(False)
    t, _ = traced(program, shape, C_in, C_out, stride, affine, weights_grad=False, **args)
    assert t.saved_bytes == saved_bytes(lambda: module(x), exclude)[0]


@pytest.mark.parametrize(("name", "C_in", "C_out", "stride", "args", "size", "affine"),
                         list(op_cases()))
def test_op_costs_match_the_module(name, C_in, C_out, stride, args, size, affine):
    module = OPS[name].builder(C_in, C_out, stride, affine, **args)
    supernet_form = build_op([(name, args)], C_in, C_out, stride, affine)
    check_module(module, catalog.COSTS[name], C_in, C_out, stride, affine, args, size,
                 supernet_form=supernet_form,
                 supernet_program=SUPERNET_PROGRAMS.get(name, catalog.COSTS[name]))


@pytest.mark.parametrize("name", sorted(n for n in OPS.names() if OPS[n].meta["leading_relu"]))
def test_op_without_its_leading_relu(name):
    C_in, C_out, stride, args, size = OP_CASES[name][-1]
    module = build_op([(name, args)], C_in, C_out, stride, False, input_relu=False)
    program = SUPERNET_PROGRAMS.get(name, catalog.COSTS[name])
    shape = (2, C_in, size, size)
    t, out = traced(program, shape, C_in, C_out, stride, False, input_relu=False, **args)
    assert t.parameters == n_params(module)
    x = _channels_last(torch.randn(shape)).requires_grad_(True)
    nbytes, y = saved_bytes(lambda: module(x), [*module.parameters(), *module.buffers()])
    assert (t.saved_bytes, out.shape) == (nbytes, tuple(y.shape))


# (role, name, C_in, C_out, stride, args, size) for every block of every role.
BLOCK_CASES = [
    ("stem", "conv_bn", 3, 8, 1, {"kernel": 3}, 8),
    ("stem", "stem_imagenet", 3, 8, 4, {}, 16),
    ("stem", "stem_imagenet_1", 8, 8, 2, {}, 7),
    ("preprocess", "relu_conv_bn", 6, 4, 1, {"kernel": 1}, 6),
    ("preprocess", "identity", 4, 4, 1, {}, 6),
    ("reduce input", "factorized_reduce", 6, 4, 2, {}, 6),
    ("reduce input", "relu_conv_bn", 6, 4, 2, {"kernel": 3}, 6),
    ("fixed block", "res_block", 4, 8, 2, {}, 8),
    ("fixed block", "res_block", 4, 8, 1, {}, 6),
    ("fixed block", "res_block", 4, 4, 1, {}, 6),
    ("head", "classifier", 8, 10, 1, {}, 4),
    ("head", "bn_relu_classifier", 8, 10, 1, {}, 4),
    ("auxiliary head", "auxiliary_cifar", 8, 10, 1, {}, 8),
    ("auxiliary head", "auxiliary_imagenet", 8, 10, 1, {}, 7),
]


def test_every_block_of_every_role_has_cases():
    covered = {(role, name) for role, name, *_ in BLOCK_CASES}
    assert covered == {(role, name) for role, table in BLOCK_TABLES.items() for name in table}


@pytest.mark.parametrize(("role", "name", "C_in", "C_out", "stride", "args", "size"), BLOCK_CASES,
                         ids=[f"{c[0]}:{c[1]}-s{c[4]}-{c[2]}-{c[3]}" for c in BLOCK_CASES])
def test_block_costs_match_the_module(role, name, C_in, C_out, stride, args, size):
    affine = role in ("preprocess", "reduce input")
    module = BLOCKS[name].builder(C_in, C_out, stride, not affine, **args)
    check_module(module, catalog.COSTS[name], C_in, C_out, stride, not affine, args, size)


def test_sizes_a_block_cannot_take_are_shape_errors():
    from spacec.cost.tracer import ShapeError

    with pytest.raises(ShapeError, match="would reduce 4x4 to 0x0"):
        traced(catalog.COSTS["auxiliary_cifar"], (1, 8, 4, 4), 8, 10, 1, True)
    with pytest.raises(ShapeError, match="768 inputs gets 6912"):  # 16x16: 3x3 features
        traced(catalog.COSTS["auxiliary_cifar"], (1, 8, 16, 16), 8, 10, 1, True)
    with pytest.raises(ShapeError, match="halves only even sizes, not 7x7"):
        traced(catalog.COSTS["res_block"], (1, 4, 7, 7), 4, 8, 2, True)


# ---- whole supernets -------------------------------------------------------------------------
def supernet_saved(model, images, labels, weights_grad, alpha_grad):
    """Saved bytes of the architect's functional forward at (weights_grad, alpha_grad)."""
    alphas = {id(a) for a in model.arch_parameters().values()}
    params = {
        n: p.detach().requires_grad_(alpha_grad if id(p) in alphas else weights_grad)
        for n, p in model.named_parameters()
    }
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    run = lambda: F.cross_entropy(  # noqa: E731
        functional_call(model, {**params, **buffers}, (images,)), labels
    )
    return saved_bytes(run, [*params.values(), *buffers.values(), images, labels])[0]


def check_supernet(space, batch=2, passes=((True, True), (False, True), (True, False)),
                   memory="fast"):
    torch.manual_seed(0)
    model = set_memory(space.supernet(), memory)
    costs = cost.supernet_costs(space.ir)
    assert costs.parameters == sum(p.numel() for p in model.weights())
    assert costs.alpha == sum(a.numel() for a in model.arch_parameters().values())
    model.eval()
    assert costs.multiply_adds == multiply_adds(model, space.input_shape)
    model.train()
    images = torch.randn(batch, *space.input_shape)
    labels = torch.randint(2, (batch,))
    for weights_grad, alpha_grad in passes:
        t = Tracer(weights_grad=weights_grad)
        SupernetWalk(space.ir, t, batch, DARTS, alpha_grad,
                     recompute=cost.MEMORY_SETTINGS[memory].builder.recompute).forward()
        assert t.saved_bytes == supernet_saved(model, images, labels, weights_grad, alpha_grad), (
            weights_grad, alpha_grad)


SMALL = {
    "darts_cnn": {"C": 4, "layers": 3},
    "nas_bench_201": {"C": 4, "N": 1},
    "example_three_inputs": {"C": 4, "layers": 6},
    "darts_imagenet": {"C": 4, "layers": 3, "classes": 10},
}


def test_small_spaces_cover_the_shipped_image_spaces(compiled):
    images = {n for n in spacec.shipped_spaces() if compiled(n).spec.domain == "image"}
    assert set(SMALL) == images


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shipped_supernets(name, compiled):
    # Every pass once (darts_cnn); the others with both gradients, the w step's pass.
    passes = ((True, True), (False, True), (True, False)) if name == "darts_cnn" else (
        (True, True),)
    check_supernet(compiled(name, **SMALL[name]), passes=passes)


def test_the_papers_figures_without_torch(compiled):
    darts = cost.supernet_costs(compiled("darts_cnn").ir)
    assert (darts.parameters, darts.alpha) == (1_930_618, 2 * 14 * 8)
    rnn = cost.supernet_costs(compiled("darts_rnn").ir)
    assert rnn.parameters == 4_810_000
    v2 = resolve("DARTS_V2", "darts_cnn")
    assert cost.derived_costs(compiled("darts_cnn", C=36, layers=20).ir, v2).parameters == (
        3_349_342)
    imagenet = cost.derived_costs(compiled("darts_imagenet").ir, resolve("DARTS_V2",
                                                                         "darts_imagenet"))
    assert imagenet.parameters == 4_718_752
    assert round(imagenet.multiply_adds / 1e6, 1) == 529.9


# NAS-Bench-201 keeps one operation per edge, `none` included (the derived module's Zero).
NB201_CELL = {"edges": [["none", "x", "n0"], ["skip_connect", "x", "n1"],
                        ["nor_conv_3x3", "n0", "n1"], ["avg_pool_3x3", "x", "n2"],
                        ["nor_conv_1x1", "n0", "n2"], ["none", "n1", "n2"]],
              "output": ["n2"], "reduce": "node"}
DERIVED = [
    ("darts_cnn", {"C": 4, "layers": 3}, "DARTS_V2"),
    ("darts_cnn", {"C": 4, "layers": 3}, "DARTS_V1"),
    ("nas_bench_201", {"C": 4, "N": 1},
     {"space": "nas_bench_201", "cells": {"normal": NB201_CELL}}),
]


@pytest.mark.parametrize(("name", "sizes", "genotype"), DERIVED,
                         ids=["darts_v2", "darts_v1", "nas_bench_201"])
def test_derived_networks(name, sizes, genotype, compiled):
    space = compiled(name, **sizes)
    chosen = (resolve(genotype, name) if isinstance(genotype, str)
              else Genotype.from_dict(genotype))
    torch.manual_seed(0)
    network = space.discrete_network(chosen, auxiliary=True, drop_path_prob=0.2)
    costs = cost.derived_costs(space.ir, chosen)
    assert costs.parameters == count_parameters(network)
    assert costs.multiply_adds == multiply_adds(network, space.input_shape)
    network.train()
    images, labels = torch.randn(2, *space.input_shape), torch.randint(2, (2,))

    def step():
        logits, logits_aux = network.forward_with_auxiliary(images)
        loss = F.cross_entropy(logits, labels)
        return loss if logits_aux is None else loss + 0.4 * F.cross_entropy(logits_aux, labels)

    exclude = [*network.parameters(), *network.buffers(), images, labels]
    t = Tracer(weights_grad=True)
    DerivedWalk(space.ir, t, 2, chosen, auxiliary=True, drop_path=True).forward()
    assert t.saved_bytes == saved_bytes(step, exclude)[0]


# ---- random small spaces ---------------------------------------------------------------------
CANDIDATES = [
    "zero", "identity", "max_pool(kernel=3)", "avg_pool(kernel=3)", "sep_conv(kernel=3)",
    "dil_conv(kernel=3, dilation=2)", "relu_conv_bn(kernel=1)", "conv_7x1_1x7",
    "relu_conv_bn(kernel=1) >> sep_conv(kernel=3)", "max_pool(kernel=3) >> relu_conv_bn(kernel=3)",
]  # fmt: skip


def random_space(seed: int) -> str:
    """A valid small image space: DARTS-like (reductions) or NAS-Bench-201-like (res blocks)."""
    rng = random.Random(seed)
    ops = rng.sample(CANDIDATES, rng.randint(2, 5))
    lines = ["param C = 4", "ops o {"]
    lines += [f"    c{i} = {op}" for i, op in enumerate(ops)]
    lines.append("}")
    nodes = rng.randint(1, 3)
    output = rng.choice(["concat(*)", f"mean({', '.join(f'n{i}' for i in range(nodes))})",
                         f"n{nodes - 1}"])
    if rng.random() < 0.5:
        count = rng.randint(1, 3)
        inputs = ", ".join(f"i{k}" for k in range(count))
        lines += [f"cell normal {{ inputs {inputs} nodes {nodes} edges dense : o "
                  f"output {output} derive argmax }}",
                  "cell reduce extends normal { stride 2 from inputs }"]
        bodies = ["normal, reduce, normal", "normal * 2, reduce"]
        bodies += ["reduce * 2, normal"] if count < 3 else []  # inputs at most 1 reduction behind
        body = rng.choice(bodies)
        settings = [f"reduce_input {rng.choice(['factorized_reduce', 'relu_conv_bn(kernel=3)'])}"]
    else:
        lines.append(f"cell normal {{ inputs x nodes {nodes} edges dense : o output n{nodes - 1} "
                     "derive argmax }")
        body = "normal, res_block(stride=2), normal"
        settings = ["preprocess identity"]
    head = rng.choice(["classifier", "bn_relu_classifier"])
    stem = rng.choice(["conv_bn(kernel=3, channels=C)", "conv_bn(kernel=1, channels=2 * C)"])
    if "preprocess identity" in settings:
        stem = "conv_bn(kernel=3, channels=C)"
    lines.append(
        f"network image_classifier {{ channels C image_size {rng.choice([8, 12])} stem {stem} "
        + " ".join(settings) + f" body {body} head {head}(classes=3) }}"
    )
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("seed", range(8))
def test_random_small_spaces(seed, load_text):
    space = load_text(random_space(seed))
    check_supernet(space, passes=((True, True), (False, True)))


# ---- a space worked out by hand --------------------------------------------------------------
ONE_EDGE = """
space one_edge
param C = 2
ops o {
    skip = identity
    conv = relu_conv_bn(kernel=1)
}
cell c { inputs x nodes 1 edges dense : o output n0 derive argmax }
network image_classifier {
    channels C
    image_size 4
    stem conv_bn(kernel=1, channels=C)
    preprocess identity
    body c
    head classifier(classes=2)
}
"""


def test_one_edge_by_hand(load_text):
    space = load_text(ONE_EDGE)
    costs = cost.supernet_costs(space.ir)
    # stem: 1x1 conv 3 -> 2 (6) + BN (4); edge: 1x1 conv 2 -> 2 (4), BN without affine;
    # head: linear 2 -> 2 with bias (6). α: 1 edge x 2 candidates.
    assert (costs.parameters, costs.alpha) == (20, 2)
    # 16 pixels: stem 16 * 2 * 3, edge 16 * 2 * 2, linear 2 * 2
    assert costs.multiply_adds == 96 + 64 + 4
    # Saved floats per image: the input's channels-last copy (48, by the stem convolution);
    # the stem convolution's output (32, by its BatchNorm); the edge's ReLU output (32, by the
    # ReLU and the 1x1 convolution); the skip candidate's output, the stem's output (32, by
    # α's multiplication); the 1x1 convolution's output (32, by its BatchNorm, whose weight
    # is the candidate's α weight: its output is not kept); the pooled features (2, by the
    # linear layer) and the log-probabilities (2). Per batch: the two BatchNorms' mean and
    # inverse std (2 x 2 x 2), the edge BatchNorm's weight (the α weight once per channel, 2),
    # softmax(α) (2) and the loss's total weight (1).
    per_image, per_batch = 4 * (48 + 32 + 32 + 32 + 32 + 2 + 2), 4 * (8 + 2 + 2 + 1)
    for batch in (1, 3):
        t = Tracer(weights_grad=True)
        SupernetWalk(space.ir, t, batch, DARTS, alpha_grad=True).forward()
        assert t.saved_bytes == batch * per_image + per_batch
    check_supernet(space, batch=3)

    prediction = cost.predict_search(space.ir, 3, order=2, device="cuda")
    terms = prediction.breakdown
    weights = 20 * 4
    assert prediction.peak.name == "α step: ∇ L_val(w')"
    assert terms["weights"] == terms["SGD momentum"] == terms["weight gradients"] == weights
    assert terms["training gradient"] == terms["unrolled weights w'"] == weights
    assert terms["validation gradient"] == weights
    assert terms["α"] == 2 * 4 and terms["α optimiser states"] == 2 * 2 * 4
    assert terms["buffers"] == terms["buffer clones"] == 2 * (2 * 2 * 4 + 8)
    assert terms["data"] == 2 * 3 * (3 * 16 * 4 + 8)  # a train and a validation batch
    # On the GPU every tensor takes whole 512-byte blocks: the 14 saved tensors above take one
    # each, but the input's copy (3 x 48 floats, 576 bytes) takes two.
    assert terms["activations"] == 15 * 512
    assert terms["allocator and runtime"] == 0
    assert prediction.total == sum(terms.values())


def test_steps_add_their_phases(compiled):
    space = compiled("darts_cnn", C=4, layers=3)
    predictions = {step: cost.predict_search(space.ir, 8, step=step) for step in cost.STEPS}
    weights = predictions["weights"]
    assert [p.name for p in weights.phases] == [p.name for p in predictions["first"].phases[1:]]
    first_alpha = dict(predictions["first"].phases[0].terms)
    assert first_alpha["activations"] < weights.breakdown["activations"]  # no weight gradients
    assert predictions["second"].total > predictions["first"].total
    assert predictions["first"].per_sample > 0
    at_16 = cost.predict_search(space.ir, 16, step="first")
    linear = predictions["first"].total + 8 * predictions["first"].per_sample
    assert abs(at_16.total - linear) < 1024  # linear in the batch, up to the rounding of bytes


# ---- recurrent language models ---------------------------------------------------------------
class MatrixProducts(TorchDispatchMode):
    """Multiply-adds of every matrix product (mm, addmm) run under it: M x K x N each."""

    def __init__(self):
        super().__init__()
        self.multiply_adds = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default,
                    torch.ops.spacec.matmul.default):  # the last: oneDNN's (runtime/nn/gemm.py)
            left, right = (args[0], args[1]) if func is torch.ops.spacec.matmul.default \
                else (args[-2], args[-1])
            self.multiply_adds += left.shape[0] * left.shape[1] * right.shape[1]
        return func(*args, **(kwargs or {}))


def test_recurrent_supernet_and_derived(compiled):
    space = compiled("darts_rnn", ntoken=50, ninp=8, nhid=8)
    torch.manual_seed(0)
    model = space.supernet()
    costs = cost.supernet_costs(space.ir)
    assert costs.parameters == sum(p.numel() for p in model.weights())
    assert costs.alpha == 36 * 5
    derived = space.discrete_network("DARTS")
    derived_costs = cost.derived_costs(space.ir, resolve("DARTS", "darts_rnn"))
    assert derived_costs.parameters == n_params(derived)
    for network, expected in ((model, costs), (derived, derived_costs)):
        network.eval()
        words = torch.randint(50, (1, 1))
        with MatrixProducts() as counter, torch.no_grad():
            network(words, network.init_hidden(1))
        assert counter.multiply_adds == expected.multiply_adds  # per token


def test_recurrent_search_activations(compiled, monkeypatch):
    from spacec.runtime.nn import recurrent

    # A recurrent step run earlier in this process left its logits' storage to be lent
    # (recurrent._SpareLogits): the saved logits would be a view of that larger storage.
    monkeypatch.setattr(recurrent, "_SPARE_LOGITS", recurrent._SpareLogits())
    space = compiled("darts_rnn", ntoken=50, ninp=8, nhid=8)
    torch.manual_seed(0)
    model = space.supernet()
    model.train()
    steps, batch = 4, 3
    words, targets = torch.randint(50, (steps, batch)), torch.randint(50, (steps * batch,))
    hidden = model.init_hidden(batch)

    def w_loss():  # as runtime/domains/text/data.py training_loss: the fused loss head
        nll, _, raw, _ = model(words, hidden, True, targets)
        tar = (raw[-1][1:] - raw[-1][:-1]).pow(2).mean()
        return nll + 1e-3 * tar

    exclude = [*model.parameters(), *model.buffers(), words, targets, *hidden]
    measured, _ = saved_bytes(w_loss, exclude)
    t = Tracer(weights_grad=True)
    RecurrentWalk(space.ir, t, batch, steps, alpha_grad=True, regularise=True).forward()
    assert t.saved_bytes == measured  # the dropout masks included, drawn inside the forward


# ---- sizes checked at compile time -----------------------------------------------------------
TOO_DEEP = """
space too_deep
param C = 2
ops o {
    none = zero
    skip = identity
    conv = sep_conv(kernel=3)
}
cell normal { inputs a, b nodes 2 edges dense : o output concat(n0, n1) derive argmax }
cell reduce extends normal { stride 2 from inputs }
network image_classifier {
    channels C
    stem conv_bn(kernel=3, channels=C)
    body normal, reduce * 5, normal, reduce
    head classifier(classes=10)
}
"""


def test_cells_of_one_operation_set_share_its_steps(compiled):
    """The walk makes each operation set's candidates once, not once per cell: a generated space
    of 8,670 cells over 87 sets made 5.2 million of them, three quarters of `spacec check`."""
    space = compiled("darts_cnn", C=4, layers=3)
    walk = SupernetWalk(space.ir, Tracer(weights_grad=False), 1, DARTS, alpha_grad=False)
    normal, reduce = (walk.candidates[cell.name] for cell in space.spec.cells)
    assert space.spec.cells[0].opset == space.spec.cells[1].opset and normal is reduce
    assert normal == tuple(
        tuple(step_of(s) for s in c.steps) for c in space.spec.opset(space.spec.cells[0].opset).candidates
    )


def test_a_network_reducing_past_1x1_is_a_check_error(load_text):
    with pytest.raises(SpaceError) as caught:
        load_text(TOO_DEEP)
    assert str(caught.value).endswith(
        "t.space:14:38: error: body item 7 (cell 'reduce') would reduce 1x1 to 0x0 "
        "(candidate skip, edge a -> n0); the input is 32x32 (image_size)\n"
        "        body normal, reduce * 5, normal, reduce\n"
        "                                         ^~~~~~"
    )
    load_text(TOO_DEEP.replace("reduce * 5", "reduce * 4"))  # 2x2 -> 1x1 is fine


def test_odd_sizes_that_break_a_reduction_are_check_errors(load_text):
    odd = TOO_DEEP.replace("channels C\n", "channels C\n    image_size 20\n")
    with pytest.raises(SpaceError, match=r"body item 3 \(cell 'reduce'\): factorized_reduce "
                       r"halves only even sizes, not 5x5 \(candidate skip, edge a -> n0\); "
                       r"the input is 20x20 \(image_size\)"):
        load_text(odd)
    blocks = ("space b\nparam C = 2\nops o { none = zero  conv = relu_conv_bn(kernel=3) }\n"
              "cell n { inputs x nodes 1 edges dense : o output n0 derive argmax }\n"
              "network image_classifier { channels C image_size 6 stem conv_bn(kernel=3, "
              "channels=C) preprocess identity body n, res_block(stride=2), n, "
              "res_block(stride=2) head classifier(classes=2) }\n")
    with pytest.raises(SpaceError, match=r"body item 3 \(block res_block\): res_block\(stride=2\) "
                       r"halves only even sizes, not 3x3"):
        load_text(blocks)


def test_what_the_check_refuses_torch_refuses(load_text, tmp_path):
    """The same space compiled without the size check fails in torch's forward."""
    from spacec import check, codegen, ir, parse
    from spacec.load import load_generated

    text = TOO_DEEP.replace("C = 2", "C = 2\nparam layers = 1")
    tree = parse.parse(text, "unchecked.space")
    network = load_generated(codegen.generate(ir.build(check.check(tree, {}))), "unchecked")
    with pytest.raises(RuntimeError):
        network.Network()(torch.randn(2, 3, 32, 32))


def test_an_auxiliary_head_that_does_not_fit_is_reported(write_space):
    text = spacec.shipped_spaces()["darts_cnn"].read_text(encoding="utf-8")
    path = write_space(text.replace("in_channels   3", "in_channels   3\n    image_size 64"))
    spacec.load(str(path))  # the supernet has no auxiliary head: the space compiles
    result = CliRunner().invoke(main, ["info", str(path), "--genotype", "DARTS_V2",
                                       "--batch-size", "4"])
    assert result.exit_code == 2
    assert ("the auxiliary head auxiliary_cifar after body item 5 (reading 16x16): a linear "
            "layer of 768 inputs gets 6912 features; the input is 64x64 (image_size)"
            in result.output)
    # The caret is under the `auxiliary` setting, not the network's first line.
    line = next(number for number, source in enumerate(path.read_text().splitlines(), 1)
                if source.strip().startswith("auxiliary"))
    column = path.read_text().splitlines()[line - 1].index("auxiliary") + 1
    assert f"{path.name}:{line}:{column}: error: the auxiliary head" in result.output


def test_check_and_info_report_the_size_error(write_space):
    path = str(write_space(TOO_DEEP))
    for command in (["check", path], ["info", path], ["compile", path]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2
        assert "would reduce 1x1 to 0x0" in result.output
        assert "Traceback" not in result.output


# ---- fitting into memory ---------------------------------------------------------------------
def test_check_fits(compiled):
    space = compiled("darts_cnn", C=4, layers=3)
    prediction = cost.predict_search(space.ir, 64, order=2)
    assert cost.check_fits(prediction, prediction.total, space.ir) is prediction
    assert cost.fit_message(prediction, prediction.total) is None
    available = prediction.total // 2
    with pytest.raises(cost.NotEnoughMemory) as raised:
        cost.check_fits(prediction, available, space.ir)
    error = raised.value
    assert isinstance(error, ReportedError)
    assert (error.predicted, error.available) == (prediction.total, available)
    largest = error.largest_batch
    assert 1 <= largest < 64
    assert cost.predict_search(space.ir, largest, order=2).total <= available
    assert cost.predict_search(space.ir, largest + 1, order=2).total > available
    # The fixes offered leave the prediction's margin to spare where some can (here: all).
    spare = int(available / (1 + cost.MARGIN))
    roomy = prediction.largest_batch(spare)
    assert 1 <= roomy < largest
    fixes = {fix.options: fix.total for fix in error.fixes}
    assert f"--batch-size {roomy}" in fixes and f"--batch-size {largest}" not in fixes
    assert all(total * (1 + cost.MARGIN) <= available for total in fixes.values())
    # Every setting that recomputes more, and the partial-channel method, are offered at batch
    # 64 with their figure when (and only when) they fit with the margin; `low` and pc_darts
    # do here.
    for options, settings in (("--memory balanced", {"memory": "balanced"}),
                              ("--memory low", {"memory": "low"}),
                              ("--method pc_darts", {"method_name": "pc_darts"})):
        total = cost.predict_search(space.ir, 64, order=2, **settings).total
        assert total < prediction.total
        if total <= spare:
            assert fixes[options] == total
        else:
            assert options not in fixes
    assert {"--memory low", "--method pc_darts"} <= set(fixes)
    message = str(error)
    assert message.startswith("one second-order search step of darts_cnn at batch 64 (memory "
                              f"fast) needs about {prediction.total / cost.GIB:.2f} GiB on cpu")
    assert f"but only {available / cost.GIB:.2f} GiB is available" in message
    assert f"it would fit with 20% to spare with --batch-size {roomy} (" in message
    assert "--memory low (" in message
    assert message == cost.fit_message(prediction, available,
                                       cost.alternatives(space.ir, prediction))
    # Without the space, the batch size only; with too little memory, nothing.
    with pytest.raises(cost.NotEnoughMemory) as raised:
        cost.check_fits(prediction, available)
    assert [fix.options for fix in raised.value.fixes] == [f"--batch-size {roomy}"]
    with pytest.raises(cost.NotEnoughMemory, match="no batch size fits"):
        cost.check_fits(prediction, 1000, space.ir)


def test_alternatives_only_keep_less(compiled):
    space = compiled("darts_cnn", C=4, layers=3)
    low = cost.predict_search(space.ir, 8, memory="low")
    assert cost.alternatives(space.ir, low) == {
        "--method pc_darts": cost.predict_search(space.ir, 8, method_name="pc_darts",
                                                 memory="low")}
    balanced = cost.predict_search(space.ir, 8, memory="balanced")
    assert set(cost.alternatives(space.ir, balanced)) == {"--memory low", "--method pc_darts"}
    rnn = compiled("darts_rnn", ninp=4, nhid=4)
    assert cost.alternatives(rnn.ir, cost.predict_search(rnn.ir, 4, bptt=5)) == {}


def test_alternatives_need_less_than_the_step_they_replace(compiled):
    """Under GDAS a `balanced` step is predicted to need more than a `fast` one (it recomputes
    little of the one candidate an edge runs, and its freed temporaries stay resident; measured
    so too): it is no way to fit, and a refusal does not offer it."""
    space = compiled("darts_cnn", C=4, layers=3)
    fast = cost.predict_search(space.ir, 8, method_name="gdas", memory="fast")
    balanced = cost.predict_search(space.ir, 8, method_name="gdas", memory="balanced")
    assert balanced.total > fast.total
    offered = cost.alternatives(space.ir, fast)
    assert "--memory balanced" not in offered and "--memory low" in offered
    assert all(other.total < fast.total for other in offered.values())
    with pytest.raises(cost.NotEnoughMemory) as raised:
        cost.check_fits(fast, fast.total - 1, space.ir)
    assert "--memory balanced" not in str(raised.value)


def test_no_batch_size_fits_names_what_does_not_fit(compiled):
    space = compiled("darts_cnn", C=4, layers=3)
    prediction = cost.predict_search(space.ir, 8)
    # Room for the weights and the rest, not for one sample more.
    with pytest.raises(cost.NotEnoughMemory) as raised:
        cost.check_fits(prediction, prediction.fixed + prediction.per_sample // 2)
    assert "no batch size fits: one sample adds about" in str(raised.value)
    with pytest.raises(cost.NotEnoughMemory) as raised:
        cost.check_fits(prediction, prediction.fixed // 2)
    assert "what does not grow with the batch" in str(raised.value)


def test_an_absurd_batch_still_gets_a_batch_that_fits(compiled):
    """At a batch of 10**23 the prediction's arithmetic stays in integers, and the batch it
    offers is what fits, with its figure."""
    space = compiled("darts_cnn", C=4, layers=3)
    huge = cost.predict_search(space.ir, 10**23)
    ordinary = cost.predict_search(space.ir, 8)
    assert huge.per_sample == ordinary.per_sample
    available = 4 * cost.GIB
    with pytest.raises(cost.NotEnoughMemory) as raised:
        cost.check_fits(huge, available)
    spare = int(available / (1 + cost.MARGIN))  # the fixes leave the prediction's margin
    largest = ordinary.largest_batch(spare)
    fix = raised.value.fixes[0]
    assert fix.options == f"--batch-size {huge.largest_batch(spare)}"
    assert abs(huge.largest_batch(spare) - largest) <= 1 and 0 < fix.total <= spare


def test_available_ram(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   12345678 kB\n")
    assert cost.available_ram(str(meminfo)) == 12345678 * 1024
    assert cost.available_ram(str(tmp_path / "missing")) is None


# ---- spacec info -----------------------------------------------------------------------------
def test_info_says_a_recurrent_training_step_is_not_predicted():
    result = CliRunner().invoke(main, ["info", "darts_rnn", "--set", "ninp=8", "--set", "nhid=8",
                                       "--genotype", "DARTS", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "the training step of a recurrent network is not predicted" in result.output
    assert "predicted peak memory of a training step" not in result.output


def test_info_reports_costs_and_memory():
    import json

    result = CliRunner().invoke(main, ["info", "darts_cnn", "--set", "C=4", "--set", "layers=3",
                                       "--batch-size", "8", "--order", "2", "--genotype",
                                       "DARTS_V2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    memory = report["memory"]
    assert memory["step"] == "second" and memory["batch"] == 8
    assert sum(memory["breakdown_bytes"].values()) == memory["total_bytes"]
    assert report["shapes"][0]["output"] == [12, 32, 32]
    assert report["shapes"][-1] == {"where": "head", "index": 0, "kind": "head",
                                    "name": "classifier", "inputs": [[64, 8, 8]], "nodes": [],
                                    "output": [10]}
    assert report["derived"]["memory"]["step"] == "train"
    text = CliRunner().invoke(main, ["info", "darts_cnn", "--batch-size", "16"]).output
    assert "multiply-adds: 300.3M per image" in text
    assert "predicted peak memory of a first-order darts search step at batch 16" in text
    assert "body[2] cell reduce" in text


# ---- memory settings ------------------------------------------------------------------------
def test_memory_settings_by_hand(load_text):
    space = load_text(ONE_EDGE)
    # Kept per image (floats) beside what the edge keeps: the input's channels-last copy (48),
    # the stem convolution's output (32), the pooled features (2), the log-probabilities (2);
    # per batch: the stem BatchNorm's mean and inverse std (4), softmax(α) (2), the loss's
    # total weight (1). test_one_edge_by_hand has `fast`.
    others, per_batch = 48 + 32 + 2 + 2, 2 * 2 + 2 + 1
    expected = {
        # fast: the edge's input x (by the identity's product with α), relu(x) and the
        # convolution's output; per batch BatchNorm's statistics (4) and weight (2).
        "fast": (3 * 32, 6, 0, 0, 0),
        # balanced: relu(x) is made again in backward (the convolution is not depthwise, but
        # the ReLU is the edge's shared one, read by a candidate ending in a norm).
        "balanced": (2 * 32, 6, 32, 0, 1),
        # low: the edge keeps its input x only; recomputed: relu(x), the convolution's output,
        # BatchNorm's statistics and weight.
        "low": (32, 0, 2 * 32, 6, 5),
    }  # (kept per image, kept per batch, recomputed per image, recomputed per batch,
    #    recomputed tensors)
    _check_memory_settings(space, others, per_batch, expected)
    costs = cost.supernet_costs(space.ir)
    assert (costs.parameters, costs.multiply_adds) == (20, 96 + 64 + 4)


# Beside the pooling, the edge's dilated convolution keeps, under `fast`: relu(x), its polyphase
# stack (a copy of relu(x)), the depthwise convolution's output (by the pointwise one) and the
# pointwise output (by its BatchNorm); under `balanced` the pointwise output only, the rest made
# again in backward, one at a time.
POOLING_KEPT = {
    # average pooling: its input x and its output (by its BatchNorm), in every setting but low:
    # pooling again cost balanced the most time per byte of what it recomputes (memory.py).
    "avg_pool": {"fast": 6 * 32, "balanced": 3 * 32},
    # max pooling: x, its int64 indices (2 * 32 float32's worth) and its output under fast;
    # under balanced x only, the output and indices pooled again in backward.
    "max_pool": {"fast": 8 * 32, "balanced": 2 * 32},
}


@pytest.mark.parametrize("pool", sorted(POOLING_KEPT))
def test_settings_recompute_poolings_and_depthwise_convolutions(load_text, pool):
    space = load_text(ONE_EDGE.replace("skip = identity", f"pool = {pool}(kernel=3)")
                      .replace("conv = relu_conv_bn(kernel=1)", "dil = dil_conv(kernel=3, dilation=2)"))
    # Kept per image beside the edge: the input's channels-last copy (48), the stem
    # convolution's output (32), the pooled features (2), the log-probabilities (2); per batch:
    # the stem BatchNorm's statistics (4), softmax(α) (2), the loss's total weight (1).
    others, per_batch = 48 + 32 + 2 + 2, 2 * 2 + 2 + 1
    # Each candidate ends in a BatchNorm weighted by its α weight: per batch its statistics
    # (4) and that weight once per channel (2), twice.
    norms = 2 * (4 + 2)
    kept = POOLING_KEPT[pool]
    # balanced: the largest output made again at a time, a max pooling's with its indices
    again = 3 * 32 if pool == "max_pool" else 32
    expected = {
        "fast": (kept["fast"], norms, 0, 0, 0),
        # on the GPU at batch 3: a max pooling's output one 512-byte block, its indices two
        "balanced": (kept["balanced"], norms, again, 0, 3 if pool == "max_pool" else 1),
        # low: x only; recomputed: everything else fast keeps, and the norms.
        # (a max pooling's indices: two blocks more)
        "low": (32, 0, kept["fast"] - 32, norms, 5 + 4 + 2 + 2 * (pool == "max_pool")),
    }  # (kept per image, kept per batch, recomputed per image, recomputed per batch,
    #    recomputed tensors)
    _check_memory_settings(space, others, per_batch, expected)
    for memory in ("fast", "balanced"):
        check_supernet(space, batch=3, memory=memory)


def test_balanced_makes_the_relus_again(load_text):
    space = load_text(ONE_EDGE.replace("conv = relu_conv_bn(kernel=1)", "sep = sep_conv(kernel=3)"))
    others, per_batch = 48 + 32 + 2 + 2, 2 * 2 + 2 + 1  # as test_memory_settings_by_hand
    # Two BatchNorms: the middle one's statistics (4), the last one's and its α weight (4 + 2).
    norms = 4 + 4 + 2
    expected = {
        # fast: the edge's input x (by the identity's product with α), the shared relu(x), both
        # depthwise outputs, both pointwise outputs and the ReLU between the halves.
        "fast": (7 * 32, norms, 0, 0, 0),
        # balanced: x and the pointwise outputs (the norms' inputs) only; relu(x), the depthwise
        # outputs and relu(norm(.)) are made again in backward, one at a time.
        "balanced": (3 * 32, norms, 32, 0, 1),
    }  # (kept per image, kept per batch, recomputed per image, recomputed per batch,
    #    recomputed tensors)
    _check_memory_settings(space, others, per_batch, expected)
    for memory in ("fast", "balanced"):
        check_supernet(space, batch=3, memory=memory)


@pytest.mark.parametrize("memory", ["fast", "balanced", "low"])
def test_every_setting_keeps_what_the_runtime_keeps(memory, compiled):
    check_supernet(compiled("darts_cnn", C=4, layers=3), memory=memory,
                   passes=((True, True), (False, True)))


def _check_memory_settings(space, others: int, per_batch: int, expected: dict) -> None:
    for memory, (kept, kept_per_batch, again, again_per_batch, tensors) in expected.items():
        setting = cost.MEMORY_SETTINGS[memory].builder
        for batch in (1, 3):
            t = Tracer(weights_grad=True)
            SupernetWalk(space.ir, t, batch, DARTS, alpha_grad=True,
                         recompute=setting.recompute).forward()
            assert t.saved_bytes == 4 * (batch * (others + kept) + per_batch + kept_per_batch), \
                memory
            assert t.recompute_peak == 4 * (batch * again + again_per_batch), memory
        prediction = cost.predict_search(space.ir, 3, memory=memory, device="cuda")
        terms = prediction.breakdown
        # on the GPU every tensor recomputed takes one 512-byte block
        assert terms["recomputed in backward"] == tensors * 512
        assert prediction.total == sum(terms.values())


def test_recompute_keeps_the_inputs_and_reruns_the_inside():
    program = catalog.COSTS["sep_conv"]
    t, out = traced(program, (2, 4, 8, 8), 4, 4, 1, False, kernel=3)
    r = Tracer(weights_grad=True)
    x = r.tensor((2, 4, 8, 8), True)
    kept = r.recompute("sep", lambda t, x: program(t, x, 4, 4, 1, False, kernel=3), x)
    assert kept.shape == out.shape and kept.grad
    assert r.saved == {id(x.storage): x.storage.nbytes}  # only the input
    # backward reruns it: what the plain program saved (relu(x) onwards; x itself it does not)
    assert r.recompute_peak == t.saved_bytes
    assert (r.parameters, r.multiply_adds) == (t.parameters, t.multiply_adds)
    # a program that saves its input: the recomputation does not count it twice
    pool = catalog.COSTS["avg_pool"]
    p, _ = traced(pool, (2, 4, 8, 8), 4, 4, 1, False, kernel=3)
    assert p.saved_bytes == 2 * 4 * 8 * 8 * 4
    r = Tracer(weights_grad=True)
    x = r.tensor((2, 4, 8, 8), True)
    r.recompute("pool", lambda t, x: pool(t, x, 4, 4, 1, False, kernel=3), x)
    assert (r.saved_bytes, r.recompute_peak) == (2 * 4 * 8 * 8 * 4, 0)


def test_memory_settings_order_the_peak(compiled):
    space = compiled("darts_cnn", C=4, layers=3)
    for order in (1, 2):
        fast, balanced, low = (cost.predict_search(space.ir, 16, order=order, memory=m)
                               for m in ("fast", "balanced", "low"))
        assert low.total < balanced.total < fast.total
        assert fast.breakdown["recomputed in backward"] == 0
        assert low.breakdown["recomputed in backward"] > balanced.breakdown[
            "recomputed in backward"] > 0
    with pytest.raises(cost.CostError, match="recurrent search is predicted with --memory fast"):
        cost.predict_search(compiled("darts_rnn").ir, 4, memory="low")


# ---- methods ---------------------------------------------------------------------------------
ONE_REDUCING_EDGE = ONE_EDGE.replace("param C = 2", "param C = 4").replace(
    "cell c { inputs x", "cell c { reduction inputs x")


def test_partial_channels_by_hand(load_text):
    space = load_text(ONE_EDGE.replace("param C = 2", "param C = 4"))
    # pc_darts, k=2: the conv candidate at 2 channels: 1x1 conv 2 -> 2 (4 weights, 16 pixels x
    # 4 multiply-adds); stem 1x1 conv 3 -> 4 + BN (12 + 8); head linear 4 -> 2 (10).
    costs = cost.supernet_costs(space.ir, "pc_darts", k=2)
    assert costs.parameters == 12 + 8 + 4 + 10
    assert costs.multiply_adds == 16 * 4 * 3 + 16 * 2 * 2 + 4 * 2
    # α [1, 2] and PC-DARTS's β [1]; without edge normalisation, α only
    assert costs.alpha == 3
    assert cost.supernet_costs(space.ir, "pc_darts", k=2, edge_norm=False).alpha == 2
    darts = cost.supernet_costs(space.ir)
    assert darts.parameters == 12 + 8 + 16 + 10
    assert cost.supernet_costs(space.ir, "pc_darts", k=1).multiply_adds == darts.multiply_adds
    with pytest.raises(SpaceError, match="k=3 must divide the edge's 4 channels"):
        cost.supernet_costs(space.ir, "pc_darts", k=3)
    with pytest.raises(cost.CostError, match="pc_darts does not apply to sequence spaces"):
        cost.predict_search(spacec.load("darts_rnn").ir, 4, method_name="pc_darts")


def test_partial_channels_keep_less(compiled):
    space = compiled("darts_cnn", C=8, layers=3)
    darts = cost.predict_search(space.ir, 16)
    by_k = [cost.predict_search(space.ir, 16, method_name="pc_darts", method_options={"k": k})
            for k in (1, 2, 4)]
    activations = [p.breakdown["activations"] for p in by_k]
    assert activations[0] > activations[1] > activations[2]
    assert by_k[2].method == "pc_darts(k=4, edge_norm=True)"
    assert by_k[2].breakdown["weights"] < darts.breakdown["weights"]


def test_sampling_methods_run_one_candidate(compiled):
    space = compiled("darts_cnn", C=4, layers=3)
    darts, gdas, path = (cost.predict_search(space.ir, 8, method_name=m)
                         for m in ("darts", "gdas", "random_ws"))
    assert gdas.breakdown["weights"] == darts.breakdown["weights"]  # every candidate is held
    assert gdas.breakdown["activations"] < darts.breakdown["activations"] / 2
    assert path.step == "weights" and "α" not in path.breakdown
    with pytest.raises(cost.CostError, match="gdas searches with --order 1, not 2"):
        cost.predict_search(space.ir, 8, order=2, method_name="gdas")
    costs = cost.supernet_costs(space.ir, "gdas")
    assert costs.parameters == cost.supernet_costs(space.ir).parameters
    # each edge runs its most expensive candidate: sep_conv_5x5 (two 5x5 depthwise and two 1x1)
    t = Tracer(weights_grad=False)
    x = t.tensor((1, 4, 8, 8))
    opset = space.spec.opset(space.spec.cells[0].opset)
    candidates = tuple(tuple(step_of(s) for s in c.steps) for c in opset.candidates)
    method("gdas").edge(t, x, t.tensor((8,)), candidates, 4, 1, supernet_candidate)
    assert t.multiply_adds == 64 * 2 * (4 * 25 + 4 * 4)


def test_every_method_predicts_every_image_space(compiled):
    for name in sorted(SMALL):
        space = compiled(name, **SMALL[name])
        for method_name in cost.METHODS.names():
            prediction = cost.predict_search(space.ir, 4, method_name=method_name)
            assert prediction.total == sum(prediction.breakdown.values())
            assert prediction.method_name == method_name


def test_the_method_option_of_info():
    result = CliRunner().invoke(main, ["info", "darts_cnn", "--set", "C=4", "--set", "layers=3",
                                       "--batch-size", "4", "--method", "pc_darts",
                                       "--method-option", "k=2", "--memory", "low"])
    assert result.exit_code == 0, result.output
    assert "(one supernet forward, pc_darts(k=2): every candidate on 1/k" in result.output
    assert ("predicted peak memory of a first-order pc_darts(k=2, edge_norm=True) search step "
            "at batch 4 on cpu (memory low)") in result.output
    refused = CliRunner().invoke(main, ["info", "darts_cnn", "--method", "pc_darts",
                                        "--method-option", "q=2"])
    assert refused.exit_code == 1
    assert "pc_darts has no option q (its options: k, edge_norm)" in refused.output
    assert "Traceback" not in refused.output


@pytest.mark.parametrize(("option", "message"), [
    ("k=0", "option k expects a positive integer, got 0"),
    ("k=-2", "option k expects a positive integer, got -2"),
    ("k=", "option k expects a positive integer, got ''"),
    ("k= 4", "option k expects a positive integer, got ' 4'"),
    ("k=true", "option k expects a positive integer, got True"),
    ("edge_norm=abc", "option edge_norm expects true or false, got 'abc'"),
    ("edge_norm=5", "option edge_norm expects true or false, got 5"),
])
def test_info_refuses_a_method_option_of_the_wrong_kind(option, message):
    refused = CliRunner().invoke(main, ["info", "darts_cnn", "--batch-size", "4", "--method",
                                        "pc_darts", "--method-option", option])
    assert refused.exit_code == 1
    assert f"pc_darts: {message}" in refused.output
    assert "Traceback" not in refused.output and isinstance(refused.exception, SystemExit)


@pytest.mark.parametrize("name", sorted(cost.METHODS))
def test_every_methods_supernet_has_the_predicted_sizes(name, compiled):
    # The cost program of each method against the supernet the runtime builds for it (its
    # relaxation's edges and architecture tensors), at the method's default options.
    from spacec.arch.methods import describe
    from spacec.runtime.search.methods import method as runtime_method

    space = compiled("darts_cnn", C=4, layers=3)
    params = describe(name).params()
    model = space.supernet(relaxation=runtime_method(name).build_relaxation(params))
    costs = cost.supernet_costs(space.ir, name, **cost.known_options(name, params.values()))
    assert costs.parameters == sum(p.numel() for p in model.weights())
    assert costs.alpha == sum(a.numel() for a in model.arch_parameters().values())


def test_sdarts_weight_step_keeps_no_candidate_output_for_alpha(load_text):
    # SDARTS-RS mixes with a detached, perturbed softmax(α) in the w step (runtime/relax/
    # perturbed.py): α's multiplication keeps no candidate output there. On the one-edge space
    # that is one tensor fewer than DARTS keeps (the skip's output; the other candidate's α
    # weight is its BatchNorm's weight, kept either way), one 512-byte block on the GPU at
    # these sizes; the α step is DARTS's.
    space = load_text(ONE_EDGE)
    for batch in (1, 3):
        darts, sdarts = (cost.predict_search(space.ir, batch, method_name=name, device="cuda")
                         .to_dict()["phases"] for name in ("darts", "sdarts_rs"))
        w_step, a_step = "w step: forward and backward", "α step: ∇α L_val(w)"
        assert darts[w_step] - sdarts[w_step] == 512
        assert darts[a_step] == sdarts[a_step]


def test_random_ws_runs_the_k_edges_a_top_k_rule_keeps(load_text):
    # A random_ws step trains one sampled architecture: under a top-1 rule one edge into each
    # node runs (its heaviest candidate, the bound), not all of them. Edges x -> n0, x -> n1,
    # n0 -> n1: GDAS runs 3 conv candidates (1x1, 2 -> 2 channels, 16 pixels: 64 each), random_ws
    # 2; the stem (96) and the classifier (4) as in test_one_edge_by_hand.
    space = load_text(ONE_EDGE.replace("nodes 1", "nodes 2").replace("output n0 derive argmax",
                                                                     "output n1 derive topk(k=1)"))
    for name, edges in (("gdas", 3), ("random_ws", 2)):
        t = Tracer(weights_grad=True)
        SupernetWalk(space.ir, t, 1, method(name), alpha_grad=False).forward()
        assert t.multiply_adds == 96 + edges * 64 + 4, name
    assert (cost.supernet_costs(space.ir, "random_ws").parameters
            == cost.supernet_costs(space.ir).parameters)  # every module is held


def test_the_cpu_heap_keeps_a_share_of_the_activations_by_setting(load_text):
    # On the CPU, glibc keeps freed temporaries in its heap: a step's resident peak is its live
    # peak, plus the setting's share of the activations it keeps (the holes its freed
    # temporaries leave between them), plus the runtime's fixed part.
    from spacec.cost.memory import CPU_RETAINED, CPU_RUNTIME

    space = load_text(ONE_EDGE)
    fast, low = (cost.predict_search(space.ir, 3, memory=memory).breakdown
                 for memory in ("fast", "low"))
    # `low` keeps neither relu(x) nor the convolution's output (3 images x 32 floats), nor
    # BatchNorm's two statistics and its weight (2 floats each, 64-byte aligned blocks on the
    # CPU); both keep the input x
    assert fast["activations"] - low["activations"] == 2 * (4 * 3 * 32) + 3 * 64
    for terms, kind in ((fast, ""), (low, "edge")):
        working = terms["activations"] + terms["recomputed in backward"]
        assert terms["allocator and runtime"] == int(CPU_RETAINED[kind] * working) + CPU_RUNTIME


def test_a_recompute_kind_without_a_fitted_share_is_predicted_with_the_largest():
    from spacec.cost.memory import CPU_RETAINED, CPU_RUNTIME, DEVICES

    resident = DEVICES["cpu"].builder.resident
    assert resident(10**6, 10**6, "unfitted") == (
        10**6 + int(max(CPU_RETAINED.values()) * 10**6) + CPU_RUNTIME)
    assert resident(10**6, 10**6, "") < resident(10**6, 10**6, "unfitted")


def test_gdas_bound_is_what_the_heaviest_samples_save(compiled):
    # GDAS's prediction assumes every edge draws its heaviest candidate; with α making those
    # the samples, the supernet saves what the cost model traces, plus two α-sized tensors of
    # the sampling (log_softmax(α) and the softmax of the perturbed logits) it leaves out.
    from spacec.arch.methods import describe
    from spacec.cost.methods import heaviest
    from spacec.runtime.search.methods import method as runtime_method

    torch.manual_seed(0)
    space = compiled("darts_cnn", C=4, layers=3)
    model = space.supernet(relaxation=runtime_method("gdas").build_relaxation(
        describe("gdas").params()))
    model.train()
    arch, x = model.arch_parameters(), Tracer().tensor((1, 16, 8, 8), True)
    with torch.no_grad():
        for cell in space.spec.cells:
            candidates = [tuple(step_of(s) for s in c.steps)
                          for c in space.spec.opset(cell.opset).candidates]
            arch[cell.name][:, heaviest(candidates, x, 16, 1)] = 100.0
    images, labels = torch.randn(2, *space.input_shape), torch.randint(2, (2,))
    saved = saved_bytes(lambda: F.cross_entropy(model(images), labels),
                        [*model.parameters(), *model.buffers(), images, labels])[0]
    t = Tracer(weights_grad=True)
    SupernetWalk(space.ir, t, 2, method("gdas"), alpha_grad=True).forward()
    alpha_bytes = 4 * cost.supernet_costs(space.ir, "gdas").alpha
    assert saved - t.saved_bytes == 2 * alpha_bytes


def test_multiply_adds_read_in_the_unit_of_their_size():
    assert cost.multiply_adds_text(300_300_000) == "300.3M"
    assert cost.multiply_adds_text(7_240_000_000) == "7.2G"
    assert cost.multiply_adds_text(71_680_008_296_400) == "71.7T"  # was 71680008.3M
