"""The op and block registries against the DARTS / NAS-Bench-201 reference semantics."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from spacec.registry import Registry, UnknownName
from spacec.runtime.nn.blocks import BLOCKS, concat_channels
from spacec.runtime.nn.ops import OPS, MixedEdge, build_op

N, C, H = 2, 4, 8  # tiny: batch, channels, spatial size

# One valid argument set per registered op; a new op must be added here.
EXAMPLE_ARGS: dict[str, dict[str, int]] = {
    "zero": {},
    "identity": {},
    "max_pool": {"kernel": 3},
    "avg_pool": {"kernel": 3},
    "sep_conv": {"kernel": 3},
    "dil_conv": {"kernel": 3, "dilation": 2},
    "relu_conv_bn": {"kernel": 3},
    "conv_7x1_1x7": {},
    "factorized_reduce": {},
}

# DARTS genotypes.PRIMITIVES, in the reference's column order.
DARTS_PRIMITIVES = [
    [("zero", {})],  # none
    [("max_pool", {"kernel": 3})],
    [("avg_pool", {"kernel": 3})],
    [("identity", {})],  # skip_connect
    [("sep_conv", {"kernel": 3})],
    [("sep_conv", {"kernel": 5})],
    [("dil_conv", {"kernel": 3, "dilation": 2})],
    [("dil_conv", {"kernel": 5, "dilation": 2})],
]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def strides_of(name: str) -> list[int]:
    fixed = OPS[name].meta["fixed_stride"]
    return [1, 2] if fixed is None else [fixed]


# --- registry -------------------------------------------------------------------------------


def test_duplicate_registration_raises():
    reg = Registry("widget")
    reg.register("a")(lambda: None)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a")(lambda: None)


def test_unknown_name_lists_sorted_choices():
    reg = Registry("widget")
    for name in ("c", "a", "b"):
        reg.register(name, colour=name)(lambda: None)
    with pytest.raises(UnknownName) as info:
        reg["x"]
    assert isinstance(info.value, KeyError)
    assert str(info.value) == "unknown widget 'x'; known: a, b, c"
    with pytest.raises(KeyError, match="known: a, b, c"):
        reg.get("x")
    assert reg.names() == ("a", "b", "c") == tuple(reg)
    assert "a" in reg and "x" not in reg and len(reg) == 3
    assert reg["b"].meta["colour"] == "b"
    with pytest.raises(TypeError):
        reg["b"].meta["colour"] = "d"  # metadata is read-only


def test_registry_does_not_import_torch():
    code = "import sys, spacec.registry; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_op_declares_its_metadata():
    assert set(EXAMPLE_ARGS) == set(OPS.names())
    for name in OPS:
        meta = OPS[name].meta
        assert set(meta) == {"args", "leading_relu", "norm_in_supernet", "is_zero", "fixed_stride"}
        assert meta["args"] == tuple(EXAMPLE_ARGS[name])
    assert {n for n in OPS if OPS[n].meta["leading_relu"]} == {
        "sep_conv",
        "dil_conv",
        "relu_conv_bn",
        "conv_7x1_1x7",
        "factorized_reduce",
    }
    assert {n for n in OPS if OPS[n].meta["norm_in_supernet"]} == {"max_pool", "avg_pool"}
    assert [n for n in OPS if OPS[n].meta["is_zero"]] == ["zero"]


# --- every op -------------------------------------------------------------------------------


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize(
    "name, stride", [(name, stride) for name in OPS.names() for stride in strides_of(name)]
)
def test_op_builds_with_right_shape_and_gradient(name, stride, affine):
    op = build_op([(name, EXAMPLE_ARGS[name])], C, C, stride, affine)
    x = torch.randn(N, C, H, H, requires_grad=True)
    out = op(x)
    assert out.shape == (N, C, H // stride, H // stride)
    out.square().sum().backward()
    assert x.grad is not None
    assert all(p.grad is not None for p in op.parameters())
    if name == "zero":
        assert not out.any() and not x.grad.any()
    else:
        assert x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "name, stride",
    [
        (name, stride)
        for name in OPS.names()
        for stride in strides_of(name)
        if name not in ("max_pool", "avg_pool") and (name, stride) != ("identity", 1)
    ],
)
def test_op_changes_channels(name, stride):
    op = build_op([(name, EXAMPLE_ARGS[name])], C, 2 * C, stride, affine=True)
    assert op(torch.randn(N, C, H, H)).shape == (N, 2 * C, H // stride, H // stride)


@pytest.mark.parametrize("name", ["max_pool", "avg_pool", "identity"])
def test_ops_that_cannot_change_channels_say_so(name):
    with pytest.raises(ValueError, match="channels"):
        build_op([(name, EXAMPLE_ARGS[name])], C, 2 * C, 1, affine=False)


@pytest.mark.parametrize("name", [n for n in OPS.names() if OPS[n].meta["leading_relu"]])
def test_input_relu_false_is_the_op_on_a_rectified_input(name):
    stride = strides_of(name)[-1]
    steps = [(name, EXAMPLE_ARGS[name])]
    full = build_op(steps, C, C, stride, affine=True).double()
    headless = build_op(steps, C, C, stride, affine=True, input_relu=False).double()
    assert full.state_dict().keys() == headless.state_dict().keys()
    headless.load_state_dict(full.state_dict())
    x = torch.randn(N, C, H, H, dtype=torch.float64)
    torch.testing.assert_close(headless(torch.relu(x)), full(x), rtol=0, atol=1e-12)
    assert not any(isinstance(m, nn.ReLU) for m in list(headless.modules())[:3])


def test_zero_follows_the_reference_shapes():
    x = torch.randn(N, C, H, H)
    assert build_op([("zero", {})], C, C, 2, False)(x).shape == (N, C, H // 2, H // 2)
    assert build_op([("zero", {})], C, C, 1, False)(x).shape == x.shape
    odd = torch.randn(N, C, 7, 7)  # x[:, :, ::2, ::2] rounds up, like the padded pools
    assert build_op([("zero", {})], C, C, 2, False)(odd).shape == (N, C, 4, 4)
    wide = build_op([("zero", {})], C, 3 * C, 2, False)(x)
    assert wide.shape == (N, 3 * C, H // 2, H // 2) and not wide.any()


# Parameter counts at C = 16, stride 1 (identity: stride 2), derived by hand.
# depthwise k x k: 16 k^2; pointwise 1x1: 16 * 16 = 256; affine BN: 2 * 16 = 32.
# sep_conv k: 2 * (16 k^2 + 256 + BN)  -> k=3: 2 * (144 + 256 + 32) = 864; no affine 800
#                                          k=5: 2 * (400 + 256 + 32) = 1376; k=7: 2 * (784 + 288) = 2144
# dil_conv k: 16 k^2 + 256 + BN        -> k=3: 144 + 256 + 32 = 432; k=5: 400 + 288 = 688
# skip_connect at stride 2 = FactorizedReduce: 2 convs 16 -> 8 (2 * 128 = 256) + BN 32 = 288
# conv_7x1_1x7: 2 * (16 * 16 * 7) + 32 = 3584 + 32 = 3616
# relu_conv_bn k=1: 256 + 32 = 288 (DARTS preprocessing); k=3: 16 * 16 * 9 + 32 = 2336
PARAM_COUNTS_C16 = [
    ("zero", {}, 1, True, 0),
    ("max_pool", {"kernel": 3}, 1, True, 0),
    ("avg_pool", {"kernel": 3}, 1, True, 0),
    ("identity", {}, 1, True, 0),
    ("identity", {}, 2, True, 288),
    ("identity", {}, 2, False, 256),
    ("sep_conv", {"kernel": 3}, 1, True, 864),
    ("sep_conv", {"kernel": 3}, 1, False, 800),
    ("sep_conv", {"kernel": 5}, 1, True, 1376),
    ("sep_conv", {"kernel": 7}, 1, True, 2144),
    ("dil_conv", {"kernel": 3, "dilation": 2}, 1, True, 432),
    ("dil_conv", {"kernel": 5, "dilation": 2}, 1, True, 688),
    ("conv_7x1_1x7", {}, 1, True, 3616),
    ("relu_conv_bn", {"kernel": 1}, 1, True, 288),
    ("relu_conv_bn", {"kernel": 3}, 1, True, 2336),
    ("factorized_reduce", {}, 2, True, 288),
]


@pytest.mark.parametrize("name, args, stride, affine, expected", PARAM_COUNTS_C16)
def test_darts_parameter_counts(name, args, stride, affine, expected):
    assert n_params(build_op([(name, args)], 16, 16, stride, affine)) == expected


# --- build_op -------------------------------------------------------------------------------


def test_composition_reduces_in_its_first_step_only():
    steps = [("relu_conv_bn", {"kernel": 1}), ("sep_conv", {"kernel": 3})]
    op = build_op(steps, C, 2 * C, 2, affine=False)
    assert isinstance(op, nn.Sequential) and len(op) == 2
    assert op(torch.randn(N, C, H, H)).shape == (N, 2 * C, H // 2, H // 2)
    assert op[1].op[1].stride == (1, 1) and op[1].op[1].in_channels == 2 * C


def test_wrong_argument_names_the_primitive_and_its_arguments():
    with pytest.raises(
        TypeError,
        match=r"dil_conv\(\) got unexpected argument\(s\) size; "
        r"valid arguments: kernel, dilation",
    ):
        build_op([("dil_conv", {"kernel": 3, "size": 2})], C, C, 1, False)
    with pytest.raises(TypeError, match=r"sep_conv\(\) missing argument\(s\) kernel"):
        build_op([("sep_conv", {})], C, C, 1, False)
    with pytest.raises(TypeError, match="valid arguments: none"):
        build_op([("identity", {"kernel": 3})], C, C, 1, False)


def test_bad_values_and_names_are_rejected():
    with pytest.raises(UnknownName, match="unknown operation 'sep_conv_3x3'; known: avg_pool"):
        build_op([("sep_conv_3x3", {})], C, C, 1, False)
    with pytest.raises(ValueError, match="odd"):
        build_op([("sep_conv", {"kernel": 4})], C, C, 1, False)
    with pytest.raises(ValueError, match="stride 2"):
        build_op([("factorized_reduce", {})], C, C, 1, False)
    with pytest.raises(ValueError, match="no leading ReLU"):
        build_op([("max_pool", {"kernel": 3})], C, C, 1, False, input_relu=False)
    with pytest.raises(ValueError, match="at least one"):
        build_op([], C, C, 1, False)


# --- MixedEdge ------------------------------------------------------------------------------


def naive_mixed_op(candidates, C_in, C_out, stride):
    """The reference MixedOp: every candidate with its own ReLU, BN after pools, no skipping."""
    ops = nn.ModuleList()
    for steps in candidates:
        op = build_op(steps, C_in, C_out, stride, affine=False)
        if OPS[steps[-1][0]].meta["norm_in_supernet"]:
            op = nn.Sequential(op, nn.BatchNorm2d(C_out, affine=False))
        ops.append(op)
    return ops


CANDIDATE_SETS = {
    "darts": DARTS_PRIMITIVES,  # shares one ReLU among the four convs
    "no_relu": [[("zero", {})], [("max_pool", {"kernel": 3})], [("identity", {})]],
    "composed": [
        [("avg_pool", {"kernel": 3}), ("relu_conv_bn", {"kernel": 1})],
        [("relu_conv_bn", {"kernel": 1}), ("max_pool", {"kernel": 3})],
        [("sep_conv", {"kernel": 3})],
    ],
}


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("candidate_set", list(CANDIDATE_SETS))
def test_mixed_edge_equals_the_naive_weighted_sum(candidate_set, stride):
    candidates = CANDIDATE_SETS[candidate_set]
    edge = MixedEdge(candidates, C, C, stride).double()
    naive = naive_mixed_op(candidates, C, C, stride).double()
    naive.load_state_dict({k.removeprefix("ops."): v for k, v in edge.state_dict().items()})

    x = torch.randn(N, C, H, H, dtype=torch.float64, requires_grad=True)
    alpha = torch.randn(len(candidates), dtype=torch.float64, requires_grad=True)
    out = edge(x, alpha.softmax(0))
    grads = torch.autograd.grad(out.square().sum(), [x, alpha, *edge.parameters()])
    expected = sum(w * op(x) for w, op in zip(alpha.softmax(0), naive, strict=True))
    expected_grads = torch.autograd.grad(expected.square().sum(), [x, alpha, *naive.parameters()])

    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for key, value in naive.state_dict().items():  # BN running statistics move identically
        torch.testing.assert_close(edge.state_dict()["ops." + key], value, rtol=0, atol=1e-12)


def test_mixed_edge_state_dict_keys_are_column_indexed():
    keys = MixedEdge(DARTS_PRIMITIVES, C, C, 2).state_dict().keys()
    assert "ops.1.1.running_mean" in keys  # max_pool column, its supernet BN
    assert "ops.3.conv_1.weight" in keys  # skip_connect at stride 2 = FactorizedReduce
    assert "ops.4.op.1.weight" in keys  # sep_conv keeps the reference's indices
    assert not any(k.startswith("ops.0.") for k in keys)  # zero column: no state


def test_all_zero_edge_keeps_the_weights_in_the_graph():
    edge = MixedEdge([[("zero", {})], [("zero", {})]], C, 2 * C, 2)
    alpha = torch.zeros(2, requires_grad=True)
    out = edge(torch.randn(N, C, H, H), alpha.softmax(0))
    assert out.shape == (N, 2 * C, H // 2, H // 2) and not out.any()
    (grad,) = torch.autograd.grad(out.sum(), alpha)
    assert not grad.any()


def test_mixed_edge_checks_the_number_of_weights():
    edge = MixedEdge(DARTS_PRIMITIVES, C, C, 1)
    with pytest.raises(ValueError, match="expected 8 weights"):
        edge(torch.randn(N, C, H, H), torch.ones(7) / 7)


# --- blocks ---------------------------------------------------------------------------------

# name -> (args, C_in, C_out, stride, input size, expected output shape)
BLOCK_CASES = {
    "conv_bn": ({"kernel": 3}, 3, 12, 1, 8, (N, 12, 8, 8)),
    "relu_conv_bn": ({"kernel": 1}, 12, 4, 1, 8, (N, 4, 8, 8)),
    "factorized_reduce": ({}, 12, 4, 2, 8, (N, 4, 4, 4)),
    "identity": ({}, 4, 4, 1, 8, (N, 4, 8, 8)),
    "res_block": ({}, 4, 8, 2, 8, (N, 8, 4, 4)),
    "classifier": ({}, 8, 10, 1, 4, (N, 10)),
    "bn_relu_classifier": ({}, 8, 10, 1, 4, (N, 10)),
    "auxiliary_cifar": ({}, 8, 10, 1, 8, (N, 10)),
    "auxiliary_imagenet": ({}, 8, 10, 1, 7, (N, 10)),
    "stem_imagenet": ({}, 3, 8, 4, 16, (N, 8, 4, 4)),
    "stem_imagenet_1": ({}, 8, 8, 2, 4, (N, 8, 2, 2)),
}


@pytest.mark.parametrize("name", BLOCKS.names())
def test_block_builds_with_right_shape(name):
    assert set(BLOCK_CASES) == set(BLOCKS.names())
    args, C_in, C_out, stride, size, expected = BLOCK_CASES[name]
    assert BLOCKS[name].meta["args"] == tuple(args)
    block = BLOCKS[name].builder(C_in, C_out, stride, True, **args)
    x = torch.randn(N, C_in, size, size, requires_grad=True)
    out = block(x)
    assert out.shape == expected
    out.square().sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in block.parameters())


@pytest.mark.parametrize("stride", [1, 2])
def test_res_block_matches_nas_bench_201(stride):
    block = BLOCKS["res_block"].builder(16, 32, stride, True)
    # conv_a 16*32*9 + BN 64 = 4672; conv_b 32*32*9 + BN 64 = 9280; shortcut: stride 2 ->
    # avgpool + 1x1 conv 16*32 = 512; stride 1 with a channel change -> ReLUConvBN 512 + 64
    assert n_params(block) == 4672 + 9280 + (512 if stride == 2 else 576)
    same = BLOCKS["res_block"].builder(8, 8, 1, True)
    x = torch.randn(N, 8, H, H)
    torch.testing.assert_close(same(x), x + same.conv_b(same.conv_a(x)))


def test_auxiliary_heads_match_darts():
    # CIFAR, C = 16, 10 classes: conv 16*128 = 2048, BN 256, conv 128*768*2*2 = 393216,
    # BN 1536, linear 768*10 + 10 = 7690 -> 404746; ImageNet drops the 768-channel BN.
    cifar = BLOCKS["auxiliary_cifar"].builder(16, 10, 1, True)
    imagenet = BLOCKS["auxiliary_imagenet"].builder(16, 10, 1, True)
    assert n_params(cifar) == 404746
    assert n_params(imagenet) == 404746 - 1536
    assert [type(m).__name__ for m in imagenet.features] == [
        "ReLU",
        "AvgPool2d",
        "Conv2d",
        "BatchNorm2d",
        "ReLU",
        "Conv2d",
        "ReLU",
    ]


def test_stems_are_always_affine_and_check_their_stride():
    stem = BLOCKS["conv_bn"].builder(3, 48, 1, False, kernel=3)
    assert stem[1].affine and n_params(stem) == 3 * 48 * 9 + 2 * 48
    with pytest.raises(ValueError, match="stride 4"):
        BLOCKS["stem_imagenet"].builder(3, 48, 2, True)


# ---- the faster, same-arithmetic convolutions ---------------------------------------------------
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    ("kernel", "stride", "size"), [(3, 1, 8), (5, 1, 8), (3, 2, 8), (5, 2, 6), (3, 1, 7)]
)
def test_dilated_depthwise_matches_nn_conv2d(kernel, stride, size, channels_last):
    from spacec.runtime.nn.accelerate import DilatedDepthwiseConv2d

    torch.manual_seed(0)
    C, pad = 4, 2 * (kernel - 1) // 2
    fast = DilatedDepthwiseConv2d(C, C, kernel, stride, pad, dilation=2, groups=C, bias=False)
    plain = nn.Conv2d(C, C, kernel, stride, pad, dilation=2, groups=C, bias=False).double()
    fast = fast.double()
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(2, C, size, size, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = fast(x1), plain(x2)
    torch.testing.assert_close(y1, y2)
    (y1 * y1).sum().backward()
    (y2 * y2).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad)


def _depthwise_pair(kernel: int, stride: int, channels: int = 16):
    from spacec.runtime.nn.accelerate import DepthwiseConv2d

    torch.manual_seed(0)
    plain = nn.Conv2d(channels, channels, kernel, stride, kernel // 2, groups=channels,
                      bias=False)
    fast = DepthwiseConv2d(channels, channels, kernel, stride, kernel // 2, groups=channels,
                           bias=False)
    fast.load_state_dict(plain.state_dict())
    return fast, plain


def _blocked_calls(monkeypatch) -> list[int]:
    from spacec.runtime.nn import accelerate

    calls: list[int] = []
    original = accelerate._weight_grad_by_blocks

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(accelerate, "_weight_grad_by_blocks", counted)
    return calls


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize(("stride", "size"), [(1, 8), (1, 11), (2, 16), (2, 17), (1, 4)])
def test_a_5x5_depthwise_weight_gradient_summed_by_blocks_is_nn_conv2ds(stride, size, layout,
                                                                        monkeypatch):
    # accelerate.DepthwiseConv2d: the forward pass and the input gradient are nn.Conv2d's own
    # calls (bit for bit); the weight gradient, from 5x3 blocks, differs by summation order only.
    calls = _blocked_calls(monkeypatch)
    fast, plain = _depthwise_pair(5, stride)
    x = torch.randn(3, 16, size, size).contiguous(memory_format=layout)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = fast(x1), plain(x2)
    assert torch.equal(y1, y2)
    grad = torch.randn_like(y1)
    y1.backward(grad)
    y2.backward(grad)
    assert torch.equal(x1.grad, x2.grad)
    exact = torch.ops.aten.convolution_backward(
        grad.double(), x.double(), plain.weight.double(), None, [stride] * 2, [2, 2], [1, 1],
        False, [0, 0], 16, [False, True, False])[1]
    torch.testing.assert_close(fast.weight.grad.double(), exact, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-5, atol=1e-4)
    # From 8 output columns up the blocks sum it; narrower, oneDNN's generic kernel is faster.
    assert len(calls) == (y1.shape[-1] >= 8)


def test_the_blocked_weight_gradient_is_only_taken_where_it_is_measured_faster(monkeypatch):
    calls = _blocked_calls(monkeypatch)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    for kernel, stride in ((3, 1), (7, 1), (5, 3)):
        fast, plain = _depthwise_pair(kernel, stride)
        fast(x).sum().backward()
        assert not calls, (kernel, stride)
    fast, _ = _depthwise_pair(5, 1)
    with torch.no_grad():  # evaluation: nothing to differentiate
        fast(x)
    fast.weight.requires_grad_(False)  # an α-only pass: no weight gradient
    fast(x).sum().backward()
    fast.weight.requires_grad_(True)
    fast.double()(x.double()).sum().backward()  # oneDNN's float32 kernels only
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast.float()(x).float().sum().backward()
    assert not calls
    fast(x).sum().backward()
    assert len(calls) == 1


def test_a_dilated_5x5_depthwise_convolution_sums_its_weight_gradient_by_blocks(monkeypatch):
    # dil_conv 5x5: the polyphase form's undilated convolution runs through depthwise_conv2d.
    from spacec.runtime.nn.accelerate import DilatedDepthwiseConv2d

    calls = _blocked_calls(monkeypatch)
    torch.manual_seed(0)
    fast = DilatedDepthwiseConv2d(16, 16, 5, 1, 4, dilation=2, groups=16, bias=False)
    plain = nn.Conv2d(16, 16, 5, 1, 4, dilation=2, groups=16, bias=False)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(2, 16, 16, 16).contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(2, 16, 16, 16)
    fast(x1).backward(grad)
    plain(x2).backward(grad)
    assert calls
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("size", [8, 7])
def test_pointwise_stride_two_matches_nn_conv2d(size):
    from spacec.runtime.nn.ops import PointwiseConv2d

    torch.manual_seed(0)
    fast = PointwiseConv2d(6, 4, 1, stride=2, padding=0, bias=False).double()
    plain = nn.Conv2d(6, 4, 1, stride=2, padding=0, bias=False).double()
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(2, 6, size, size, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last
    )
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.testing.assert_close(fast(x1), plain(x2))
    fast(x1).pow(2).sum().backward()
    plain(x2).pow(2).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_a_cells_concatenation_hands_every_state_its_gradient_in_the_states_layout(layout):
    # torch.cat's backward hands out channel slices, in channels_last contiguous in no layout:
    # a BatchNorm's backward fed one takes torch's slow strided CPU kernel (blocks.ChannelConcat).
    states = [torch.randn(2, c, 5, 5).contiguous(memory_format=layout).requires_grad_()
              for c in (3, 4, 2)]
    out = concat_channels(states)
    assert torch.equal(out, torch.cat(states, dim=1))
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, states, grad)
    expected = torch.autograd.grad(torch.cat(states, dim=1), states, grad)
    for part, want in zip(got, expected, strict=True):
        assert torch.equal(part, want)
        assert part.is_contiguous(memory_format=layout)


def test_a_cells_concatenation_without_a_backward_pass_is_a_plain_cat():
    states = [torch.randn(2, c, 5, 5, requires_grad=True) for c in (3, 4)]
    with torch.no_grad():
        assert torch.equal(concat_channels(states), torch.cat(states, dim=1))
    with warnings.catch_warnings():  # torch 2.14 deprecates tracing (the export command's)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(lambda a, b: concat_channels([a, b]), tuple(states),
                                 check_trace=False)
    assert "aten::cat" in str(traced.graph)
    assert torch.equal(traced(*states), torch.cat(states, dim=1))


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("offset", [0, 1])
def test_a_subsampled_input_gets_its_gradient_in_its_own_layout(layout, offset):
    # Slicing's backward builds NCHW zeros; a channels_last ReLU's backward fed them takes a
    # slow mixed-layout kernel (layout.Subsampled). Same values as slicing, x's layout.
    from spacec.runtime.nn.layout import Subsampled

    x = torch.randn(2, 3, 7, 6).contiguous(memory_format=layout).requires_grad_()
    sampled = Subsampled.apply(x, offset, (2, 2))
    expected = x[:, :, offset::2, offset::2]
    assert torch.equal(sampled, expected)
    assert sampled.is_contiguous(memory_format=layout)
    grad = torch.randn_like(sampled)
    (got,) = torch.autograd.grad(sampled, x, grad)
    (want,) = torch.autograd.grad(expected, x, grad)
    assert torch.equal(got, want)
    assert got.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("kernel", [3, 5])
def test_a_strided_dilated_convolution_hands_its_input_a_channels_last_gradient(kernel):
    # dil_conv with stride 2 = dilation: the polyphase form reads phase (0, 0) alone
    # (accelerate.DilatedDepthwiseConv2d.phases), a copy whose gradient keeps x's layout.
    op = build_op([("dil_conv", {"kernel": kernel, "dilation": 2})], C, C, 2, affine=False,
                  input_relu=False)
    conv = op.op[1]
    assert conv.polyphase((N, C, H, H)) and conv.stride == (2, 2)
    x = torch.randn(N, C, H, H).contiguous(memory_format=torch.channels_last).requires_grad_()
    (grad,) = torch.autograd.grad(op(x).square().sum(), x)
    assert grad.is_contiguous(memory_format=torch.channels_last)


def test_factorized_reduce_hands_its_input_a_channels_last_gradient():
    # Without its ReLU (the supernet's edges share one): what reaches that ReLU's backward.
    op = build_op([("factorized_reduce", {})], C, 2 * C, 2, affine=False, input_relu=False)
    x = torch.randn(N, C, H, H).contiguous(memory_format=torch.channels_last).requires_grad_()
    (grad,) = torch.autograd.grad(op(x).square().sum(), x)
    assert grad.is_contiguous(memory_format=torch.channels_last)


def test_a_mixed_edges_sum_adds_into_its_own_tensor_never_into_a_candidates_output():
    # sigmoid keeps its output for backward: adding into a candidate's output would break it.
    from spacec.runtime.nn.ops import _summed

    inputs = [torch.randn(2, 3, requires_grad=True) for _ in range(4)]
    terms = [x.sigmoid() for x in inputs]
    versions = [t._version for t in terms]
    out, owned = None, False
    for term in terms:
        out, owned = _summed(out, term, owned)
    assert [t._version for t in terms] == versions
    plain = ((terms[0] + terms[1]) + terms[2]) + terms[3]
    assert torch.equal(out, plain)
    grad = torch.randn(2, 3)
    got = torch.autograd.grad(out, inputs, grad, retain_graph=True)
    want = torch.autograd.grad(plain, inputs, grad)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    # A term of another dtype or shape is added out of place, as `out + term` would broadcast.
    wider, owned = _summed(out, torch.ones(1, 2, 3), owned)
    assert wider.shape == (1, 2, 3) and out._version == 2
