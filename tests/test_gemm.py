"""The float32 CPU products' backend (spacec.runtime.nn.gemm) and the recurrent supernet's use
of it (spacec.runtime.nn.accelerate): same results as torch.mm up to rounding, chosen per
process, stated in the effective configuration."""

from __future__ import annotations

import ast
import shutil

import pytest
import torch
from torch import nn

import spacec
from spacec.runtime.nn import accelerate, gemm, recurrent
from spacec.runtime.run import config as run_config

needs_onednn = pytest.mark.skipif(not gemm.onednn_available(), reason="torch without oneDNN")


@pytest.fixture
def backend():
    """Select a backend for one test; the process's choice is restored after it."""
    before = gemm._choice, gemm._asked
    yield gemm.select
    gemm._choice, gemm._asked = before


def _pair(m=7, k=13, n=5, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=gen, dtype=dtype, requires_grad=True)
    b = torch.randn(k, n, generator=gen, dtype=dtype, requires_grad=True)
    return a, b


def _is_gemm(node) -> bool:
    """Whether an autograd node is the backward of spacec::matmul (autograd's name for it)."""
    return "spacec_matmul" in node.name()


def _value_and_grads(fn, a, b, seed=1):
    a.grad = b.grad = None
    out = fn(a, b)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    (out * weight).sum().backward()
    return out.detach(), a.grad, b.grad


@needs_onednn
@pytest.mark.parametrize("layout", ["plain", "a transposed", "b transposed"])
def test_onednn_matmul_and_its_gradients_equal_torch_mm(backend, layout):
    assert backend(gemm.ONEDNN).backend == gemm.ONEDNN
    a, b = _pair()
    if layout == "a transposed":
        a = a.detach().t().contiguous().t().requires_grad_()
    if layout == "b transposed":
        b = b.detach().t().contiguous().t().requires_grad_()
    got = _value_and_grads(gemm.matmul, a, b)
    want = _value_and_grads(torch.mm, a, b)
    assert got[0].grad_fn is None  # detached copies compared
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert _is_gemm(gemm.matmul(a, b).grad_fn)  # the custom operator, not torch.mm


@needs_onednn
def test_gradient_of_one_input_only(backend):
    backend(gemm.ONEDNN)
    a, b = _pair()
    b.requires_grad_(False)
    gemm.matmul(a, b).sum().backward()
    torch.testing.assert_close(a.grad, torch.ones(7, 5) @ b.t())
    assert b.grad is None


@pytest.mark.parametrize(("dtype", "autocast"), [(torch.float64, False), (torch.float32, True)])
def test_products_outside_float32_or_under_autocast_are_torch_mm(backend, dtype, autocast):
    backend(gemm.ONEDNN)
    a, b = _pair(dtype=dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        assert not gemm.applies(a, b)
        out = gemm.matmul(a, b)
    assert type(out.grad_fn).__name__ == "MmBackward0"


@pytest.mark.parametrize("shape", [(0, 5), (4, 0)])
def test_empty_products_are_torch_mms(backend, shape):
    backend(gemm.ONEDNN)
    a = torch.randn(*shape, requires_grad=True)
    b = torch.randn(shape[1], 3, requires_grad=True)
    out = gemm.matmul(a, b)
    out.sum().backward()
    assert torch.equal(out, a @ b) and a.grad.shape == a.shape and b.grad.shape == b.shape


@needs_onednn
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile on the CPU needs a C++ compiler")
def test_torch_compile_keeps_the_product_and_its_gradients(backend, tmp_path, monkeypatch):
    # Inductor lowers oneDNN's linear only with constant weights; the custom operator stays one
    # opaque call instead, forward and backward.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    backend(gemm.ONEDNN)

    def loss(a, b):
        return torch.sigmoid(gemm.matmul(a * 2, b)).sum()

    a, b = _pair()
    torch._dynamo.reset()
    try:
        got = _value_and_grads(lambda a, b: torch.compile(loss)(a, b), a, b)
    finally:
        torch._dynamo.reset()
    want = _value_and_grads(loss, a, b)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_aten_is_torch_mm_exactly(backend):
    assert backend(gemm.ATEN).line() == "aten (torch.mm, as asked)"
    a, b = _pair()
    assert torch.equal(gemm.matmul(a, b), torch.mm(a, b))
    assert type(gemm.matmul(a, b).grad_fn).__name__ == "MmBackward0"


@needs_onednn
def test_auto_times_both_and_says_so(backend):
    made = backend(gemm.AUTO)
    assert made.setting == gemm.AUTO and made.backend in (gemm.ATEN, gemm.ONEDNN)
    assert "x torch.mm's speed on this CPU" in made.reason
    assert made.line().startswith(f"auto: {made.backend} (oneDNN ")


def test_auto_keeps_torch_mm_unless_onednn_is_clearly_faster(backend, monkeypatch):
    monkeypatch.setattr(gemm, "onednn_available", lambda: True)
    for speedup, expected in ((1.0, gemm.ATEN), (gemm.AUTO_MARGIN - 0.01, gemm.ATEN),
                              (gemm.AUTO_MARGIN, gemm.ONEDNN), (2.5, gemm.ONEDNN)):
        monkeypatch.setattr(gemm, "_speedup", lambda speedup=speedup: speedup)
        made = backend(gemm.AUTO)
        assert made.backend == expected, speedup
        assert f"oneDNN {speedup:.2f}x torch.mm's speed" in made.reason


def test_auto_is_timed_once_per_process_unless_selected_again(backend, monkeypatch):
    timed = []
    monkeypatch.setattr(gemm, "onednn_available", lambda: True)
    monkeypatch.setattr(gemm, "_speedup", lambda: timed.append(1) or 2.0)
    gemm.select_for_run(gemm.AUTO, lambda value: [value])  # whatever an earlier test ran
    assert gemm.choice().backend == gemm.ONEDNN
    gemm.choice()
    assert len(timed) == 1


def test_without_onednn_every_setting_is_torch_mm(backend, monkeypatch):
    monkeypatch.setattr(gemm, "onednn_available", lambda: False)
    for setting in (gemm.AUTO, gemm.ONEDNN):
        made = backend(setting)
        assert made.backend == gemm.ATEN and made.reason == "this torch has no oneDNN"


def test_settings_agree_with_the_run_config_and_are_checked(backend):
    assert run_config.MATMUL_SETTINGS == gemm.SETTINGS
    assert run_config.RunConfig().matmul == gemm.AUTO
    with pytest.raises(ValueError, match="matmul must be one of auto, aten, onednn"):
        run_config.RunConfig(matmul="mkl")
    with pytest.raises(ValueError, match="matmul must be one of"):
        backend("mkl")
    assert "matmul" in run_config.RESUME_MAY_CHANGE


# ---------------------------------------------------------------- the loss head


def _head(ntoken=37, nhid=6, rows=23, seed=0):
    gen = torch.Generator().manual_seed(seed)
    decoder = nn.Linear(nhid, ntoken)
    with torch.no_grad():
        decoder.weight.copy_(torch.randn(ntoken, nhid, generator=gen))
        decoder.bias.copy_(torch.randn(ntoken, generator=gen))
    hidden = torch.randn(rows, nhid, generator=gen, requires_grad=True)
    return hidden, decoder, torch.randint(ntoken, (rows,), generator=gen)


def _loss_and_grads(loss_fn, hidden, decoder, targets):
    for p in (hidden, *decoder.parameters()):
        p.grad = None
    loss = loss_fn(hidden, decoder, targets)
    (2.0 * loss).backward()
    return loss.detach(), hidden.grad, decoder.weight.grad, decoder.bias.grad


@needs_onednn
@pytest.mark.parametrize(("rows", "block_rows", "block_bytes"),
                         [(23, 256, 1 << 20), (23, 5, 1 << 20), (23, 5, 4 * 37 * 2), (9, 4, 64)])
def test_onednn_loss_head_is_the_reference_loss_and_gradient(backend, monkeypatch, rows,
                                                             block_rows, block_bytes):
    # Product blocks of `block_rows` rows (the last one shorter), cut again into cache blocks.
    backend(gemm.ONEDNN)
    monkeypatch.setattr(gemm.OneDNNDecoderProducts, "rows", block_rows)
    monkeypatch.setattr(recurrent, "_HEAD_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(recurrent, "_SPARE_LOGITS", recurrent._SpareLogits())
    hidden, decoder, targets = _head(rows=rows)
    got = _loss_and_grads(accelerate.fast_decoded_nll, hidden, decoder, targets)
    want = _loss_and_grads(recurrent.decoded_nll_reference, hidden, decoder, targets)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


@needs_onednn
def test_onednn_loss_head_without_bias_and_alpha_only(backend, monkeypatch):
    backend(gemm.ONEDNN)
    monkeypatch.setattr(gemm.OneDNNDecoderProducts, "rows", 4)
    hidden, decoder, targets = _head(rows=10)
    decoder.bias = None
    decoder.weight.requires_grad_(False)  # an α-only pass: the hidden state's gradient alone
    hidden.grad = None
    accelerate.fast_decoded_nll(hidden, decoder, targets).backward()
    got = hidden.grad
    hidden.grad = None
    recurrent.decoded_nll_reference(hidden, decoder, targets).backward()
    torch.testing.assert_close(got, hidden.grad, rtol=1e-5, atol=1e-6)
    assert decoder.weight.grad is None


# ---------------------------------------------------------------- the recurrent supernet


def _supernet(seed=0, dtype=torch.float32):
    space = spacec.load("darts_rnn", ntoken=50, ninp=12, nhid=12)
    torch.manual_seed(seed)
    # No dropout: its masks are drawn in the model's dtype, so float64 would draw others.
    rates = dict.fromkeys(("dropout", "dropouth", "dropoutx", "dropouti", "dropoute"), 0.0)
    return space.supernet(**rates).to(dtype)


def _step_grads(model):
    torch.manual_seed(5)
    words = torch.randint(50, (6, 4))
    model.train()
    model.zero_grad(set_to_none=True)
    loss, _ = model(words, model.init_hidden(4), targets=torch.randint(50, (24,)))
    loss.backward()
    return loss.detach().double(), {n: p.grad.double() for n, p in model.named_parameters()}


def _relative_error(grads, exact):
    error = sum(((grads[n] - exact[n]) ** 2).sum() for n in exact) ** 0.5
    return float(error / sum((g**2).sum() for g in exact.values()) ** 0.5)


def _own_products(model):
    """The modules whose `product` is their own (the speed-up's), not their class's."""
    return [m for m in model.modules() if "product" in m.__dict__]


def test_the_supernet_computes_its_products_through_gemm():
    model = _supernet()
    maps = [m for m in model.modules()
            if isinstance(m, (recurrent.HighwayInit, recurrent.SharedHighway))]
    # darts_rnn's cell: the init map and one shared map per node (8), all of them sent to gemm.
    assert len(maps) == 9 and _own_products(model) == maps
    assert all(m.product.__func__ is accelerate._gemm_product for m in maps)
    assert model.decode_nll is accelerate.fast_decoded_nll
    # The pass keeps the parameters: the same names and values as plain blocks would have.
    plain = _supernet()
    for sub in plain.modules():
        sub.__dict__.pop("product", None)
    assert model.state_dict().keys() == plain.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, plain.state_dict()[key])


@needs_onednn
def test_a_supernet_step_with_onednn_equals_torch_mm(backend):
    backend(gemm.ONEDNN)
    fast = _step_grads(_supernet())
    backend(gemm.ATEN)
    plain = _step_grads(_supernet())
    exact = _step_grads(_supernet(dtype=torch.float64))  # float64: torch.mm whatever the choice
    torch.testing.assert_close(fast[0], plain[0], rtol=1e-5, atol=1e-6)
    assert fast[1].keys() == plain[1].keys() == exact[1].keys()
    for name, grad in fast[1].items():
        torch.testing.assert_close(grad, plain[1][name], rtol=1e-4, atol=1e-6, msg=name)
    # Rounding only: oneDNN's step is as close to float64's as torch.mm's.
    assert _relative_error(fast[1], exact[1]) < 2 * _relative_error(plain[1], exact[1]) + 1e-7


def _derived(seed=0, dtype=torch.float32):
    space = spacec.load("darts_rnn", ntoken=50, ninp=12, nhid=12)
    torch.manual_seed(seed)
    rates = dict.fromkeys(("dropout", "dropouth", "dropoutx", "dropouti", "dropoute"), 0.0)
    return space.discrete_network("DARTS", **rates).to(dtype)


def test_a_derived_network_gets_the_products_through_its_seam():
    network = accelerate.accelerate_network(_derived())
    seamed = _own_products(network)
    # DARTS's cell: the init map and one shared map per node (8), each a copy of the blocks.
    assert len(seamed) == 9
    assert {type(m).__name__ for m in seamed} == {"HighwayInit", "SharedHighway"}
    assert all(type(m).__module__.startswith("spacec_generated.") for m in seamed)
    assert network.decode_nll is accelerate.fast_decoded_nll
    assert network.state_dict().keys() == _derived().state_dict().keys()
    # An image network has no such seam: nothing changes.
    image = spacec.load("darts_cnn", C=4, layers=3).discrete_network("DARTS_V2")
    accelerate.accelerate_network(image)
    assert not any("product" in m.__dict__ for m in image.modules())
    assert "decode_nll" not in image.__dict__


@needs_onednn
def test_a_derived_network_step_with_onednn_equals_torch_mm(backend):
    backend(gemm.ONEDNN)
    fast_network = accelerate.accelerate_network(_derived())
    fast = _step_grads(fast_network)
    assert any(_is_gemm(node) for node in _graph_nodes(fast_network))
    plain = _step_grads(_derived())
    exact = _step_grads(_derived(dtype=torch.float64))
    torch.testing.assert_close(fast[0], plain[0], rtol=1e-5, atol=1e-6)
    for name, grad in fast[1].items():
        torch.testing.assert_close(grad, plain[1][name], rtol=1e-4, atol=1e-6, msg=name)
    assert _relative_error(fast[1], exact[1]) < 2 * _relative_error(plain[1], exact[1]) + 1e-7


def _graph_nodes(model):
    """The autograd nodes of one forward pass's loss, by a walk from its grad_fn."""
    torch.manual_seed(5)
    loss, _ = model(torch.randint(50, (2, 4)), model.init_hidden(4),
                    targets=torch.randint(50, (8,)))
    seen, pending = [], [loss.grad_fn]
    while pending:
        node = pending.pop()
        if node is None or node in seen:
            continue
        seen.append(node)
        pending.extend(next_fn for next_fn, _ in node.next_functions)
    return seen


def test_the_derived_network_copies_the_plain_products():
    source = spacec.load("darts_rnn").discrete_source("DARTS")
    assert "xh.mm(self.weight)" in source and "states.mm(self.weight)" in source
    imported = [node for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.Import | ast.ImportFrom)]
    modules = {alias.name for node in imported if isinstance(node, ast.Import)
               for alias in node.names} | {node.module for node in imported
                                           if isinstance(node, ast.ImportFrom)}
    assert not any(str(name).startswith("spacec") for name in modules), modules
    assert "_linear_pointwise" not in source and "spacec::matmul" not in source


# ---------------------------------------------------------------- the run


def test_the_device_line_of_a_recurrent_search_names_the_products_backend(backend):
    from spacec.runtime.configure import device_line

    backend(gemm.ATEN)  # as a recurrent network's build decides it
    cpu = torch.device("cpu")
    line = device_line(run_config.RunConfig(threads=1, matmul="aten"), cpu)
    assert line.endswith("(run.threads); float32 products aten (torch.mm, as asked) (run.matmul)")
    assert "products" not in device_line(run_config.RunConfig(), torch.device("meta"))
    gemm.select_for_run(gemm.AUTO, lambda value: [value])  # a run whose network needs none
    assert "products" not in device_line(run_config.RunConfig(), cpu)


def test_a_search_selects_the_run_sections_backend(backend):
    from spacec.runtime.search.config import load_config
    from spacec.runtime.search.loop import Search

    for setting, expected in (("aten", gemm.ATEN), ("onednn", gemm.ONEDNN)):
        cfg = load_config("rnn_quick", {"space.overrides.ninp": 8, "space.overrides.nhid": 8,
                                        "data.batch_size": 2, "data.limit": 400,
                                        "run.device": "cpu", "run.matmul": setting})
        Search.build(cfg)
        if not gemm.onednn_available():
            expected = gemm.ATEN
        assert gemm.choice().backend == expected


def test_processes_that_time_differently_all_take_torch_mm(backend, monkeypatch):
    monkeypatch.setattr(gemm, "onednn_available", lambda: True)
    monkeypatch.setattr(gemm, "_speedup", lambda: 2.0)  # this process: oneDNN
    gathered = []

    def other_takes_aten(value):
        gathered.append(value)
        return [value, gemm.ATEN]

    gemm.select_for_run(gemm.AUTO, other_takes_aten)
    assert gemm.decided() is None and not gathered  # nothing timed or gathered yet
    made = gemm.choice()
    assert made.backend == gemm.ATEN and gemm.choice() == made and gathered == [gemm.ONEDNN]
    assert "processes timed oneDNN differently" in made.line()
    gemm.select_for_run(gemm.AUTO, lambda value: [value, value])
    assert gemm.choice().backend == gemm.ONEDNN


def test_an_image_search_neither_times_nor_gathers(backend, monkeypatch):
    from spacec.runtime.search.config import load_config
    from spacec.runtime.search.loop import Search

    monkeypatch.setattr(gemm, "_speedup", lambda: pytest.fail("an image run timed the products"))
    cfg = load_config("quick", {"space.overrides.C": 4, "space.overrides.layers": 3,
                                "data.batch_size": 8, "data.limit": 16, "run.device": "cpu"})
    Search.build(cfg)
    assert gemm.decided() is None


def test_a_training_run_selects_the_backend_and_accelerates_its_network(backend):
    from spacec.arch.genotype import resolve
    from spacec.runtime.train.config import load_train_config
    from spacec.runtime.train.loop import Trainer

    cfg = load_train_config("rnn_quick", {"space.overrides.ninp": 8, "space.overrides.nhid": 8,
                                          "data.batch_size": 2, "data.limit": 400,
                                          "run.device": "cpu", "run.matmul": "aten"})
    trainer = Trainer.build(cfg, resolve("DARTS", "darts_rnn"))
    assert gemm.choice().backend == gemm.ATEN
    network = trainer.network
    assert sum("product" in m.__dict__ for m in network.modules()) == 9
    assert network.decode_nll is accelerate.fast_decoded_nll


@needs_onednn
def test_the_heads_products_take_a_transposed_left_operand_swapped():
    gen = torch.Generator().manual_seed(3)
    exps, right = torch.rand(40, 30, generator=gen), torch.randn(40, 7, generator=gen)
    got = gemm.OneDNNDecoderProducts.mm(exps.t(), right)  # E^T [30, 40] @ [40, 7]
    torch.testing.assert_close(got, exps.t() @ right, rtol=1e-5, atol=1e-5)
    left = torch.randn(5, 40, generator=gen)
    torch.testing.assert_close(gemm.OneDNNDecoderProducts.mm(left, exps), left @ exps,
                               rtol=1e-5, atol=1e-5)
