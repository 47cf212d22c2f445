"""Memory settings (spacec.runtime.nn.memory) and the GPU path's switches, checked on the CPU.

Every memory setting must give the plain path's numbers (`fast`, autograd keeping everything):
gradients of the weights and of α, BatchNorm running statistics, and α after a few first- and
second-order search steps, for DARTS' softmax edges, GDAS's sampled edges and PC-DARTS's
partial edges; and it must keep less for the backward pass. The plain path itself (a candidate's
α weight as its last BatchNorm's weight) must equal weight · candidate(x) computed op by op. The GPU switches (bf16 autocast, NCHW/NHWC, torch.compile, pinned loaders) are
checked against the fp32 eager path.
"""

from __future__ import annotations

import copy
import gc
import math
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from test_cost import saved_bytes as saved_storage_bytes  # counts what Remade's hooks keep
from test_recurrent import SPARSE_SPACE, loss_and_gradients
from torch.utils.data import DataLoader

import spacec
from spacec.cli import main
from spacec.cli import options as cli_options
from spacec.runtime.domains.image.data import pin_for
from spacec.runtime.errors import ConfigError
from spacec.runtime.nn import memory
from spacec.runtime.nn.memory import BALANCED, FAST, LOW, MemoryNotApplicable, set_memory
from spacec.runtime.nn.ops import MixedEdge, split_final_norm
from spacec.runtime.relax.gumbel import HardGumbel
from spacec.runtime.relax.partial import PartialChannels
from spacec.runtime.run.config import MEMORY_SETTINGS, PRECISIONS, RunConfig
from spacec.runtime.run.session import CompiledNetwork, Session
from spacec.runtime.search.architect import ArchConfig, Architect

SAVING = (BALANCED, LOW)
RELAXATIONS = {"softmax": lambda: None, "gdas": lambda: HardGumbel(),
               "pc_darts": lambda: PartialChannels(k=2)}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def supernet(compiled, memory: str, relaxation: str = "softmax", seed: int = 0):
    torch.manual_seed(seed)
    made = RELAXATIONS[relaxation]()
    if made is not None:
        made.seed(seed)
    model = compiled("darts_cnn", C=4, layers=3).supernet(relaxation=made)
    return set_memory(model, memory)


def batch(seed: int = 1, size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(size, 3, 8, 8, generator=generator),
            torch.randint(10, (size,), generator=generator))


def loss_fn(call, data):
    images, labels = data
    return F.cross_entropy(call(images), labels)


def gradients_and_buffers(model) -> tuple[dict, dict]:
    model.zero_grad(set_to_none=True)
    loss_fn(model, batch()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return grads, {n: b.clone() for n, b in model.named_buffers()}


def assert_same(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-6, atol=1e-7,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("relaxation", sorted(RELAXATIONS))
@pytest.mark.parametrize("memory", SAVING)
def test_gradients_and_running_statistics_equal_the_plain_path(compiled, memory, relaxation):
    with precision_of(memory):  # `low` in float64: see precision_of
        plain_grads, plain_buffers = gradients_and_buffers(supernet(compiled, FAST, relaxation))
        grads, buffers = gradients_and_buffers(supernet(compiled, memory, relaxation))
    assert any(name.startswith("arch.") for name in grads)  # α received a gradient
    assert_same(grads, plain_grads)
    # The replay ran BatchNorm again: the statistics must have moved once, not twice.
    assert_same(buffers, plain_buffers)
    assert any(n.endswith("num_batches_tracked") and int(b) == 1 for n, b in buffers.items())


def trajectory(model, order: int, steps: int = 3) -> list[dict]:
    w_optimizer = torch.optim.SGD(model.weights(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    architect = Architect(model, w_optimizer, loss_fn, ArchConfig(order=order, lr=0.05))
    alphas = []
    for step in range(steps):
        train, val = batch(10 + step), batch(20 + step)
        architect.step(train, val, lr=0.1)
        w_optimizer.zero_grad(set_to_none=True)
        loss_fn(model, train).backward()
        w_optimizer.step()
        alphas.append({k: a.detach().clone() for k, a in model.arch_parameters().items()})
    return alphas


@contextmanager
def precision_of(memory: str) -> Iterator[None]:
    """float64 for `low`: its recomputed edge hands back its input's gradient summed over the
    candidates, where `fast` adds each candidate's into the input's gradient in turn, so in
    float32 a few Adam steps drift apart by rounding (1e-5 relative), and a single step's
    gradients may already differ by more than 1e-7; in float64 they agree to 1e-13, which a
    wrong replay (weights, random state, statistics) would not."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if memory == LOW else dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("memory", SAVING)
def test_alpha_trajectory_equals_the_plain_path(compiled, memory, order):
    # Order 2 runs the supernet through functional_call on w', w ± Rv: the replay in the
    # backward pass must use those tensors, not the module's parameters.
    with precision_of(memory):
        plain = trajectory(supernet(compiled, FAST), order)
        got = trajectory(supernet(compiled, memory), order)
    assert not torch.equal(plain[0]["normal"], plain[-1]["normal"])  # α moved
    for expected, alphas in zip(plain, got, strict=True):
        assert_same(alphas, expected)


@pytest.mark.parametrize("relaxation", ["gdas", "pc_darts"])
def test_methods_trajectory_with_the_lowest_setting(compiled, relaxation):
    with precision_of(LOW):
        plain = trajectory(supernet(compiled, FAST, relaxation), 1, steps=2)
        got = trajectory(supernet(compiled, LOW, relaxation), 1, steps=2)
    for expected, alphas in zip(plain, got, strict=True):
        assert_same(alphas, expected)


def saved_bytes(model) -> int:
    """Bytes of the distinct storages autograd keeps for one loss's backward pass outside
    checkpointed regions, with those a step-by-step recomputation's own hooks keep."""
    return saved_storage_bytes(lambda: loss_fn(model, batch()))[0]


def test_lower_settings_keep_less(compiled):
    kept = {m: saved_bytes(supernet(compiled, m)) for m in MEMORY_SETTINGS}
    assert kept[LOW] < kept[BALANCED] < kept[FAST]
    assert kept[LOW] < 0.5 * kept[FAST]


def test_balanced_leaves_no_relu_output_alive(compiled, monkeypatch):
    # The hooks not keeping a ReLU's output is half of it: nothing else (a replay's captured
    # tensors, a closure) may hold it either, or it stays in memory all the same.
    from spacec.runtime.nn import ops

    made = []

    def recording(wrapped):
        def wrapper(*args):
            result = wrapped(*args)
            before = result[1] if isinstance(result, tuple) else result
            run = before.run

            def recorded(x):
                out = run(x)
                made.append(weakref.ref(out))
                return out

            before.run = recorded
            return result
        return wrapper

    monkeypatch.setattr(ops, "shared_relu", recording(memory.shared_relu))
    monkeypatch.setattr(ops, "norm_relu_before", recording(memory.norm_relu_before))
    model = supernet(compiled, BALANCED)
    images, labels = batch()
    loss = F.cross_entropy(model(images), labels)  # the graph, and all it keeps, alive
    gc.collect()
    # every mixed edge's shared ReLU (14 edges a cell, 3 cells) and the middle ReLUs of its
    # separable convolutions
    assert len(made) > 3 * 14
    assert [ref for ref in made if ref() is not None] == []
    loss.backward()


def test_an_alpha_only_pass_makes_no_convolution_again(compiled, monkeypatch):
    # The first-order α step runs on weights that need no gradient: a pointwise convolution's
    # saved input (the depthwise output) is then never read, so `balanced` does not make it.
    from spacec.runtime.search import architect as architect_module

    calls = []
    conv2d = F.conv2d
    monkeypatch.setattr(F, "conv2d", lambda *args, **kw: calls.append(1) or conv2d(*args, **kw))
    in_backward = []
    grad = architect_module._grad

    def counted(loss, wrt):
        start = len(calls)
        result = grad(loss, wrt)
        in_backward.append(len(calls) - start)
        return result

    monkeypatch.setattr(architect_module, "_grad", counted)
    model = supernet(compiled, BALANCED)
    w_optimizer = torch.optim.SGD(model.weights(), lr=0.1, momentum=0.9)
    Architect(model, w_optimizer, loss_fn, ArchConfig(order=1)).arch_gradient(
        batch(10), batch(20), lr=0.1)
    assert in_backward == [0]
    start = len(calls)
    loss = loss_fn(model, batch())
    forward = len(calls) - start
    loss.backward()  # the weights' pass does make them again
    assert len(calls) - start - forward > 3 * 8  # a cell's separable and dilated convolutions


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_weight_as_the_norms_weight_equals_the_product(layout):
    # MixedEdge computes weight · BatchNorm(y) as one batch_norm whose weight is the α weight
    # once per channel. Against the candidates run as modules and multiplied, float for float.
    # channels_last: torch's CPU batch_norm backward misreads a stride-0 weight there.
    # (16 channels: with fewer, that kernel takes a path without the fault.)
    torch.manual_seed(0)
    candidates = [[("zero", {})], [("max_pool", {"kernel": 3})], [("avg_pool", {"kernel": 3})],
                  [("identity", {})], [("sep_conv", {"kernel": 3})],
                  [("dil_conv", {"kernel": 3, "dilation": 2})]]
    edge = MixedEdge(candidates, 16, 16, 1)
    x = torch.randn(4, 16, 8, 8).to(memory_format=layout)
    weights = torch.softmax(torch.randn(len(edge.ops)), 0)

    def grads(run):
        xs, ws = x.clone().requires_grad_(), weights.clone().requires_grad_()
        out = run(xs, ws)
        out.backward(torch.ones_like(out).to(memory_format=layout) / out.numel())
        return out.detach(), xs.grad, ws.grad

    def by_modules(xs, ws):
        relu = F.relu(xs)
        return sum(ws[c] * edge.ops[c](relu if shared else xs) for c, shared in edge._active)

    scaled = [c for c, op in enumerate(edge.ops) if split_final_norm(op) is not None]
    assert scaled == [1, 2, 4, 5]  # all but the zero and the identity
    for got, expected in zip(grads(edge), grads(by_modules), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("memory", SAVING)
def test_without_gradients_the_edges_run_plainly(compiled, memory):
    images, _ = batch()
    expected = supernet(compiled, FAST).eval()(images)
    model = supernet(compiled, memory).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(images), expected.detach(), rtol=0, atol=0)


def test_memory_setting_is_validated_and_reaches_the_cli():
    assert MEMORY_SETTINGS == cli_options.MEMORY_SETTINGS == memory.MEMORY_SETTINGS
    assert PRECISIONS == cli_options.PRECISIONS
    with pytest.raises(ValueError, match="memory must be one of"):
        RunConfig(memory="tiny")
    with pytest.raises(ValueError, match="precision must be one of"):
        RunConfig(precision="fp8")
    overrides = cli_options.config_overrides(None, (), (), {
        "memory": "low", "precision": "bf16", "channels_last": False, "compile": True})
    assert overrides == {"run.memory": "low", "run.precision": "bf16",
                         "run.channels_last": False, "run.compile": True}


def test_search_applies_the_run_settings(tmp_path):
    from spacec.runtime.search.config import load_config
    from spacec.runtime.search.loop import Search

    cfg = load_config("quick", {"space.overrides.C": 4, "space.overrides.layers": 3,
                                "data.batch_size": 4, "data.limit": 16, "run.memory": "low",
                                "run.channels_last": False, "run.out": str(tmp_path)})
    search = Search.build(cfg)
    edges = [m for m in search.model.modules() if hasattr(m, "edge_memory")]
    assert edges and all(edge.memory == LOW for edge in edges)
    stem = next(p for p in search.model.parameters() if p.dim() == 4)
    assert stem.is_contiguous() and search.model.memory_format == torch.contiguous_format


def test_balanced_under_bf16_says_what_the_weight_steps_keep(tmp_path, caplog):
    """Under autocast `balanced` runs its edges plainly: a run that asks for both is told so."""
    from spacec.runtime.search.config import load_config
    from spacec.runtime.search.loop import Search

    for precision in PRECISIONS:
        caplog.clear()
        cfg = load_config("quick", {"space.overrides.C": 4, "space.overrides.layers": 3,
                                    "data.batch_size": 4, "data.limit": 16,
                                    "run.memory": BALANCED, "run.precision": precision,
                                    "run.out": str(tmp_path)})
        Search.build(cfg)
        warned = "run.memory balanced with run.precision bf16" in caplog.text
        assert warned == (precision == "bf16")


# ---------------------------------------------------------------- the GPU path, on the CPU


def session(**switches) -> Session:
    return Session(device=torch.device("cpu"), seed=0, **switches)


def test_bf16_autocast_keeps_alpha_in_fp32_and_stays_close(compiled):
    model = supernet(compiled, FAST)
    images, labels = batch()
    expected = model(images)
    with session(precision="bf16").autocast():
        weights = model.cell_weights()
        got = model(images)
        assert got.dtype == torch.bfloat16
    assert all(w.dtype == torch.float32 for w in weights.values())
    # bf16 keeps 8 bits of mantissa: the logits agree to about 1e-2 of their scale.
    torch.testing.assert_close(got.float(), expected, rtol=0.05, atol=0.05)


def test_bf16_search_weight_step_moves_the_weights_as_fp32_does(tmp_path):
    from spacec.runtime.search.config import load_config
    from spacec.runtime.search.loop import Search

    moved = {}
    for precision in PRECISIONS:
        cfg = load_config("quick", {"space.overrides.C": 4, "space.overrides.layers": 3,
                                    "data.batch_size": 4, "data.limit": 16,
                                    "run.precision": precision, "run.out": str(tmp_path)})
        search = Search.build(cfg)
        before = [w.detach().clone() for w in search.model.weights()]
        search.weight_step(next(iter(search.task.batches(0, 0))).train, "test")
        moved[precision] = torch.cat([(w.detach() - b).flatten()
                                      for w, b in zip(search.model.weights(), before,
                                                      strict=True)])
    cosine = F.cosine_similarity(moved["fp32"], moved["bf16"], dim=0)
    assert cosine > 0.95


def test_bf16_recurrent_node_mix_runs_op_by_op_and_differentiates():
    """Under autocast a search node mixes op by op (the fused node's written-out backward would
    meet tensors of mixed precision): its value and gradients are the plain path's."""
    from spacec.runtime.nn.recurrent import mix_edges, mix_edges_reference

    generator = torch.Generator().manual_seed(0)
    states, c, h = (torch.randn(3, 4, 6, generator=generator, requires_grad=True)
                    for _ in range(3))
    weights = torch.softmax(torch.randn(3, 5, generator=generator), dim=1).requires_grad_()
    columns = ((1, "tanh"), (2, "relu"), (3, "sigmoid"), (4, "identity"))
    results = {}
    for mix in (mix_edges, mix_edges_reference):
        with session(precision="bf16").autocast():
            # the cell's products run in bf16 under autocast, and hand the mix bf16 tensors
            out = mix(states, c, torch.matmul(h, torch.eye(6)), weights, columns)
        grads = torch.autograd.grad(out.float().square().sum(), (states, c, h, weights))
        results[mix.__name__] = (out, grads)
    (out, grads), (expected, expected_grads) = results.values()
    assert out.dtype == expected.dtype
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize(("method", "order"), [("darts", 1), ("darts", 2), ("snas", 1)])
def test_bf16_recurrent_search_steps(tmp_path, method, order):
    """A recurrent search takes its steps under bf16 (every strategy's: the bilevel one's, and
    the single-level one's, whose one forward pass is its weight step's and runs under
    autocast as a weight step does); the loss of the step is finite."""
    from spacec.runtime.search.config import load_config
    from spacec.runtime.search.loop import Search

    cfg = load_config("rnn_quick", {
        "space.name": "darts_rnn", "space.overrides.ninp": 8, "space.overrides.nhid": 8,
        "data.batch_size": 4, "data.limit": 400, "method.name": method, "arch.order": order,
        "run.precision": "bf16", "run.out": str(tmp_path)})
    search = Search.build(cfg)
    autocast_in_forward = []
    search.model.register_forward_pre_hook(
        lambda module, args: autocast_in_forward.append(torch.is_autocast_enabled("cpu")))
    search._step(next(iter(search.task.batches(0, 0))), cfg.optim.lr, "test")
    assert all(map(math.isfinite, search.train_meter.means().values()))
    if method == "snas":  # one forward pass, the weight step's
        assert autocast_in_forward == [True]
    else:  # the α step's passes in float32, then the weight step's under autocast
        assert autocast_in_forward[-1] and not any(autocast_in_forward[:-1])


def test_a_dilated_depthwise_convolution_keeps_float32_under_cpu_autocast(tmp_path):
    """torch's CPU bf16 weight gradient of a dilated depthwise convolution can be NaN where
    float32's is finite: under CPU autocast a derived network computes those in float32 (the
    same values as a float32 convolution of the autocast input), and only under autocast."""
    from spacec.arch.genotype import resolve
    from spacec.runtime.nn.accelerate import (
        Float32DilatedConv2d,
        float32_dilated_under_cpu_autocast,
    )
    from spacec.runtime.train.config import load_train_config
    from spacec.runtime.train.loop import Trainer

    conv = torch.nn.Conv2d(4, 4, 5, padding=4, dilation=2, groups=4, bias=False)
    plain = torch.nn.Conv2d(4, 4, 5, padding=4, dilation=2, groups=4, bias=False)
    plain.load_state_dict(conv.state_dict())
    float32_dilated_under_cpu_autocast(conv)
    assert type(conv) is Float32DilatedConv2d
    x = torch.randn(2, 4, 16, 16).to(torch.bfloat16)
    with session(precision="bf16").autocast():
        got = conv(x)
        assert plain(x).dtype == torch.bfloat16
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, plain(x.float()), rtol=0, atol=0)
    torch.testing.assert_close(conv(x.float()), plain(x.float()), rtol=0, atol=0)  # no autocast
    got.sum().backward()
    assert conv.weight.grad.dtype == torch.float32 and torch.isfinite(conv.weight.grad).all()
    for precision in PRECISIONS:
        cfg = load_train_config("quick", {
            "space.overrides": {"C": 4, "layers": 3}, "data.limit": 16, "data.batch_size": 8,
            "run.precision": precision, "run.threads": 1, "run.out": str(tmp_path)})
        network = Trainer.build(cfg, resolve("DARTS_V2", "darts_cnn")).network
        kinds = {type(m) for m in network.modules()}
        assert (Float32DilatedConv2d in kinds) == (precision == "bf16")


def test_the_supernets_dilated_convolution_keeps_float32_where_it_is_not_polyphase():
    """Where the polyphase form does not apply (a side not divisible by the dilation), the
    supernet's dilated depthwise convolution is the dilated one torch computes, and under CPU
    autocast it keeps float32, as a derived network's (Float32DilatedConv2d)."""
    from spacec.runtime.nn.accelerate import DilatedDepthwiseConv2d, accelerate

    torch.manual_seed(0)
    plain = torch.nn.Conv2d(4, 4, 5, padding=4, dilation=2, groups=4, bias=False)
    conv = accelerate(copy.deepcopy(plain))
    assert type(conv) is DilatedDepthwiseConv2d
    odd, even = (torch.randn(2, 4, side, side).to(torch.bfloat16) for side in (7, 8))
    assert not conv.polyphase(odd.shape) and conv.polyphase(even.shape)
    with session(precision="bf16").autocast():
        got = conv(odd)
        assert conv(even).dtype == plain(odd).dtype == torch.bfloat16
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, plain(odd.float()), rtol=0, atol=0)
    got.sum().backward()
    assert conv.weight.grad.dtype == torch.float32 and torch.isfinite(conv.weight.grad).all()


def test_channels_first_gives_the_channels_last_outputs(compiled):
    images, _ = batch()
    expected = supernet(compiled, FAST)(images)
    model = session(channels_last=False).lay_out(supernet(compiled, FAST))
    got = model(images)
    assert all(p.is_contiguous() for p in model.parameters())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_compiled_network_calls_the_compiled_forward_and_methods(compiled):
    network = compiled("darts_cnn", C=4, layers=3).discrete_network("DARTS_V2", auxiliary=True)
    wrapped = session(compile_network=True).compiled(network, ("forward_with_auxiliary",))
    assert isinstance(wrapped, CompiledNetwork)
    assert wrapped.training == network.training  # other attributes are the network's
    assert session().compiled(network) is network


def test_compile_mode_reaches_torch_compile(compiled, monkeypatch):
    modes = []

    def fake_compile(function, mode="default"):
        modes.append(mode)
        return function

    monkeypatch.setattr(torch, "compile", fake_compile)
    network = compiled("darts_cnn", C=4, layers=3).discrete_network("DARTS_V2", auxiliary=True)
    session(compile_network=True, compile_mode="reduce-overhead").compiled(
        network, ("forward_with_auxiliary",))
    assert modes == ["reduce-overhead", "reduce-overhead"]  # the forward and the method
    with pytest.raises(ValueError, match="compile_mode must be one of default, reduce-overhead"):
        RunConfig(compile_mode="fastest")
    for unroll in (0, 2.5, True):
        with pytest.raises(ValueError, match="compile_unroll must be an integer >= 1"):
            RunConfig(compile_unroll=unroll)


def test_compile_on_the_cpu_without_a_cxx_compiler_is_refused_before_the_run(compiled,
                                                                              monkeypatch):
    network = compiled("darts_cnn", C=4, layers=3).discrete_network("DARTS_V2")
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(ConfigError, match="needs a C.. compiler"):
        session(compile_network=True).compiled(network)
    assert session().compiled(network) is network  # without compile, nothing is needed


@pytest.mark.slow
def test_torch_compile_gives_the_eager_outputs(compiled):
    torch.manual_seed(0)
    network = compiled("darts_cnn", C=4, layers=2).discrete_network("DARTS_V2").eval()
    images, _ = batch()
    expected = network(images)
    got = session(compile_network=True).compiled(network)(images)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_compiling_says_that_its_first_steps_take_minutes(caplog):
    network = torch.nn.Linear(2, 2)
    with caplog.at_level("INFO", logger="spacec.runtime.run.session"):
        assert session().compiled(network) is network
        assert caplog.text == ""  # without run.compile nothing is said
        session(compile_network=True).compiled(network)  # compiles lazily, at its first call
    assert "run.compile: the first steps compile the network's kernels" in caplog.text


def test_loaders_are_pinned_for_cuda_only():
    loader = DataLoader(list(range(4)), batch_size=2)
    pin_for(torch.device("cpu"), loader, None)
    assert not loader.pin_memory
    pin_for(torch.device("cuda", 0), loader, None)
    assert loader.pin_memory and not loader.pin_memory_device  # deprecated: torch warns


def test_cli_search_with_memory_and_precision(tmp_path):
    result = CliRunner().invoke(main, [
        "search", "darts_cnn", "--set", "C=4", "--set", "layers=3", "--batch-size", "4",
        "--limit", "16", "--epochs", "1", "--memory", "low", "--precision", "bf16",
        "--threads", "1", "-q", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_torch_compile_of_the_recurrent_step_gives_the_eager_step(load_text):
    """A recurrent network is compiled a few time steps at a time (RecurrentLM.compile_steps):
    a training forward (dropout, the search cell's shared BatchNorm) and its gradients, α's
    included, equal the eager ones."""
    space = load_text(SPARSE_SPACE)
    words = torch.randint(13, (5, 3), generator=torch.Generator().manual_seed(0))
    runs = {}
    for compile_network in (False, True):
        torch.manual_seed(0)
        model = space.supernet()
        # compiled in place: the architect's calls run it too
        # 4 steps at unroll 3: one compiled run of 3 steps, then one single step
        compiled = session(compile_network=compile_network, compile_unroll=3).compiled(model)
        assert compiled is model
        assert ("cell_step" in vars(model)) == ("cell_steps" in vars(model)) == compile_network
        loss, grads = loss_and_gradients(model, words)
        runs[compile_network] = (loss, grads,
                                 {name: b.clone() for name, b in model.named_buffers()})
    (eager, eager_grads, eager_buffers), (got, got_grads, got_buffers) = runs[False], runs[True]
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-5)
    assert eager_grads.keys() == got_grads.keys() and any("arch" in k for k in eager_grads)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert eager_buffers.keys() == got_buffers.keys() and eager_buffers
    for name, buffer in eager_buffers.items():
        torch.testing.assert_close(got_buffers[name], buffer, msg=name)


@pytest.mark.slow
def test_second_order_arch_gradient_through_the_compiled_recurrent_step(load_text):
    """The architecture step calls the network itself, so with compiled time steps (two to a
    graph here) its unrolled weights (w', w ± R·v, through functional_call) run the compiled
    steps: ∇α equals the eager one."""
    from spacec.runtime.domains.text.data import HiddenCarry, TextBatch, segment_loss

    space = load_text(SPARSE_SPACE)
    generator = torch.Generator().manual_seed(0)
    words = [torch.randint(13, (5, 3), generator=generator) for _ in range(2)]
    found = {}
    for compile_network in (False, True):
        torch.manual_seed(0)
        model = space.supernet()
        session(compile_network=compile_network, compile_unroll=2).compiled(model)
        w_optimizer = torch.optim.SGD(model.weights(), lr=1.0)
        architect = Architect(model, w_optimizer, segment_loss,
                              ArchConfig(order=2, lr=3e-3, unrolled_clip=0.25))
        train, val = (TextBatch(w[:-1], w[1:].flatten(), model.init_hidden(3), HiddenCarry())
                      for w in words)
        torch.manual_seed(1)
        found[compile_network] = architect.arch_gradient(train, val, 1.0)
    assert found[False].keys() == found[True].keys()
    for key, grad in found[False].items():
        assert grad.abs().sum() > 0
        torch.testing.assert_close(found[True][key], grad, rtol=1e-3, atol=1e-6, msg=key)


def test_a_recomputing_setting_on_a_network_without_mixed_edges_raises():
    recurrent = spacec.load("darts_rnn", ntoken=20, ninp=4, nhid=4).supernet()
    assert set_memory(recurrent, FAST) is recurrent
    for setting in (BALANCED, LOW):
        with pytest.raises(MemoryNotApplicable, match=f"'{setting}' recomputes"):
            set_memory(recurrent, setting)
