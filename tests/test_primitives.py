"""One definition per primitive: the supernet's form and the standalone derived network's agree.

The runtime builds a primitive as the supernet does (through the registry and `build_op`: the
shared-ReLU variant, the speed-up pass of runtime/nn/accelerate.py); the derived network holds a
copy of the same definition's source, which spacec.codegen extracts from the runtime's files.
Every registered op and block and every recurrent piece the derived language model copies is run
in both forms with the same weights and input: outputs must be equal, exactly unless the
supernet's speed-up pass changed the order of summation (then to float64 rounding). The cases
come from the registries, so a new primitive is covered without editing this file.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import subprocess
import sys
import textwrap
from functools import cache
from types import ModuleType

import pytest
import torch
from torch import nn

import spacec
from spacec import codegen
from spacec.arch.derive import derive
from spacec.load import load_generated
from spacec.runtime.nn import recurrent
from spacec.runtime.nn.accelerate import DepthwiseConv2d, DilatedDepthwiseConv2d, accelerate
from spacec.runtime.nn.blocks import BLOCKS
from spacec.runtime.nn.ops import OPS, MixedEdge, build_op

pytestmark = pytest.mark.usefixtures("single_thread")

N, C, H = 2, 4, 8  # batch, channels, spatial size (divisible by the dilation below)
# One valid value per builder argument name (the catalogue's image arguments are all integers).
ARG_VALUES = {"kernel": 3, "dilation": 2}
# Blocks that read another input size: the ImageNet auxiliary head expects the 7x7 map.
INPUT_SIZES = {"auxiliary_imagenet": 7}
# Small values for the parameters the shipped spaces declare (as in tests/test_spaces.py).
TINY = {"C": 4, "layers": 3, "N": 1, "ntoken": 50, "ninp": 16, "nhid": 16}
SHIPPED = sorted(spacec.shipped_spaces())
# What a standalone derived network may import.
STANDALONE_IMPORTS = {"torch", "__future__"} | set(sys.stdlib_module_names)


@cache
def standalone(*roots: str) -> ModuleType:
    """A module holding only what codegen copies for `roots`, loaded as generated code is."""
    code = codegen.standalone_code(roots)
    source = "\n\n\n".join(
        ["from __future__ import annotations\n\n" + code.imports, *code.definitions]
    )
    return load_generated(source + "\n", "standalone_" + "_".join(sorted(roots)))


def imported_packages(source: str) -> set[str]:
    """Top-level packages that `source` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add((node.module or "").split(".")[0])
    return found


def example_args(meta) -> dict[str, int]:
    return {name: ARG_VALUES[name] for name in meta["args"]}


def randomised(module: nn.Module) -> nn.Module:
    """Parameters and BatchNorm statistics away from their initial values, in float64."""
    module.double()
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor))
    return module


def same_classes(a: nn.Module, b: nn.Module) -> bool:
    return [type(m).__name__ for m in a.modules()] == [type(m).__name__ for m in b.modules()]


def assert_same_outputs(runtime, copy, shape, exact: bool, shared_relu: bool = False) -> None:
    """Same weights and input, then both forms in training mode (batch statistics, running
    statistics updated, input gradient) and in evaluation mode. `shared_relu`: the runtime form
    was built without its leading ReLU, which the supernet applies to the input instead."""
    assert runtime.state_dict().keys() == copy.state_dict().keys()
    torch.manual_seed(1)
    randomised(runtime)
    copy.double().load_state_dict(runtime.state_dict())
    check = torch.testing.assert_close
    tolerance = {"rtol": 0, "atol": 0} if exact else {"rtol": 1e-12, "atol": 1e-12}
    for training in (True, False):
        runtime.train(training)
        copy.train(training)
        x1 = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        x2 = x1.detach().clone().requires_grad_()
        out1 = runtime(torch.relu(x1) if shared_relu else x1)
        out2 = copy(x2)
        check(out1, out2, **tolerance)
        out1.square().sum().backward()
        out2.square().sum().backward()
        check(x1.grad, x2.grad, **tolerance)
        for key, value in runtime.state_dict().items():
            check(value, copy.state_dict()[key], **tolerance)


# ---- every registered op: the supernet's candidate against the copied definition ------------
def op_cases():
    for name in OPS.names():
        meta = OPS[name].meta
        strides = [meta["fixed_stride"]] if meta["fixed_stride"] else [1, 2]
        for stride in strides:
            for affine in (False, True):
                for input_relu in (True, False) if meta["leading_relu"] else (True,):
                    shared = "" if input_relu else "-shared_relu"
                    yield pytest.param(
                        name, stride, affine, input_relu,
                        id=f"{name}-stride{stride}-affine{int(affine)}{shared}",
                    )  # fmt: skip


@pytest.mark.parametrize(("name", "stride", "affine", "input_relu"), list(op_cases()))
def test_op_forms_agree(name, stride, affine, input_relu):
    args = example_args(OPS[name].meta)
    steps = [(name, args)]
    torch.manual_seed(0)
    runtime = build_op(steps, C, C, stride, affine, input_relu=input_relu)
    torch.manual_seed(0)
    copy = getattr(standalone(name), name)(C, C, stride, affine, **args)
    # Same random initialisation: the definition draws the same numbers in both forms.
    for key, value in runtime.state_dict().items():
        assert torch.equal(value, copy.state_dict()[key]), key
    # Exact unless the speed-up pass replaced a convolution (same arithmetic, other sum order).
    exact = not any(isinstance(m, DilatedDepthwiseConv2d) for m in runtime.modules())
    assert_same_outputs(runtime, copy, (N, C, H, H), exact, shared_relu=not input_relu)


# ---- every registered block: the supernet builds blocks with the registry's builder ----------
def block_cases():
    for name in BLOCKS.names():
        meta = BLOCKS[name].meta
        if meta["fixed_stride"]:
            strides = [meta["fixed_stride"]]
        else:
            strides = [1] if meta["is_head"] else [1, 2]
        for stride in strides:
            for affine in (False, True):
                yield pytest.param(
                    name, stride, affine, id=f"{name}-stride{stride}-affine{int(affine)}"
                )


@pytest.mark.parametrize(("name", "stride", "affine"), list(block_cases()))
def test_block_forms_agree(name, stride, affine):
    args = example_args(BLOCKS[name].meta)
    size = INPUT_SIZES.get(name, H)
    torch.manual_seed(0)
    runtime = BLOCKS[name].builder(C, C, stride, affine, **args)
    torch.manual_seed(0)
    copy = getattr(standalone(name), name)(C, C, stride, affine, **args)
    for key, value in runtime.state_dict().items():
        assert torch.equal(value, copy.state_dict()[key]), key
    assert same_classes(runtime, copy)
    assert_same_outputs(runtime, copy, (N, C, size, size), exact=True)


# ---- the recurrent pieces the derived language model copies -----------------------------------
NINP, NHID, STEPS, TOKENS = 3, 5, 4, 11


def _highway_init(form, fn):
    return form.HighwayInit(NINP, NHID, fn=fn).double()


def _run_highway_init(module, fn):
    torch.manual_seed(2)
    x, h = torch.randn(N, NINP, dtype=torch.float64), torch.randn(N, NHID, dtype=torch.float64)
    x_mask = recurrent.dropout_mask((N, NINP), 0.5, dtype=torch.float64)
    h_mask = recurrent.dropout_mask((N, NHID), 0.5, dtype=torch.float64)
    return [module(x, h), module(x, h, x_mask, h_mask)]


def _shared_highway(form, fn):
    return form.SharedHighway(NHID).double()


def _run_shared_highway(module, fn):
    torch.manual_seed(2)
    states = torch.randn(3, N, NHID, dtype=torch.float64)
    h_mask = recurrent.dropout_mask((N, NHID), 0.5, dtype=torch.float64)
    return [*module(states), *module(states, h_mask)]


def _highway_edge(form, fn):
    return form


def _run_highway_edge(form, fn):
    torch.manual_seed(2)
    state, c, h = torch.randn(3, N, NHID, dtype=torch.float64)
    return [form.highway_edge(state, c.sigmoid(), h, fn)]


def _language_model(form, fn):
    """A RecurrentLM with a one-node cell: s0 = init(x, h), out = edge(s0, map(s0))."""

    class TinyLM(form.RecurrentLM):
        def __init__(self) -> None:
            super().__init__(TOKENS, NHID, NHID, tied=True, dropoute=0.1)
            self.init = form.HighwayInit(NHID, NHID, fn="tanh")
            self.node = form.SharedHighway(NHID)

        def cell_step(self, x, h_prev, x_mask, h_mask, context):
            s0 = self.init(x, h_prev, x_mask, h_mask)
            return form.highway_edge(s0, *self.node(s0, h_mask), fn)

    return TinyLM()


def _run_language_model(model, fn):
    outputs = []
    for training in (True, False):  # training draws every dropout mask: in the same order
        model.train(training)
        torch.manual_seed(3)
        tokens = torch.randint(0, TOKENS, (STEPS, N))
        log_prob, hidden, raw, dropped = model(tokens, model.init_hidden(N), return_h=True)
        log_prob.sum().backward()
        outputs += [log_prob, *hidden, *raw, *dropped, model.encoder.weight.grad]
    return outputs


# piece -> (build it from a form, run it, the definitions copied for it)
RECURRENT_CASES = {
    "HighwayInit": (_highway_init, _run_highway_init, ("HighwayInit",)),
    "SharedHighway": (_shared_highway, _run_shared_highway, ("SharedHighway",)),
    "highway_edge": (_highway_edge, _run_highway_edge, ("highway_edge",)),
    "RecurrentLM": (
        _language_model,
        _run_language_model,
        ("RecurrentLM", "HighwayInit", "SharedHighway", "highway_edge"),
    ),
}


def test_every_copied_recurrent_piece_has_a_case():
    roots = codegen.SEQUENCE_NETWORK_NEEDS | {"HighwayInit", "SharedHighway"}
    assert roots - {"torch", "nn"} == set(RECURRENT_CASES)


@pytest.mark.parametrize("fn", sorted(recurrent.ACTIVATIONS))
@pytest.mark.parametrize("piece", sorted(RECURRENT_CASES))
def test_recurrent_forms_agree(piece, fn):
    build, run, roots = RECURRENT_CASES[piece]
    torch.manual_seed(0)
    runtime = build(recurrent, fn)
    torch.manual_seed(0)
    copy = build(standalone(*roots), fn)
    if isinstance(runtime, nn.Module):
        assert runtime.state_dict().keys() == copy.state_dict().keys()
        for key, value in runtime.state_dict().items():  # the same initialisation
            assert torch.equal(value, copy.state_dict()[key]), key
        torch.manual_seed(1)
        copy.double().load_state_dict(randomised(runtime).state_dict())
    for got, expected in zip(run(copy, fn), run(runtime, fn), strict=True):
        assert torch.equal(got, expected)


# ---- the supernet's speed-up pass -------------------------------------------------------------
def test_acceleration_keeps_parameters_and_draws_no_random_numbers():
    torch.manual_seed(0)
    plain = OPS["dil_conv"].builder(C, C, 1, False, kernel=3, dilation=2)
    assert not any(isinstance(m, DilatedDepthwiseConv2d) for m in plain.modules())
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    rng = torch.get_rng_state()
    assert accelerate(plain) is plain
    assert torch.equal(torch.get_rng_state(), rng)
    assert plain.state_dict().keys() == before.keys()
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in before.items())
    assert [type(m) for m in plain.op] == [
        nn.ReLU,
        DilatedDepthwiseConv2d,
        nn.Conv2d,
        nn.BatchNorm2d,
    ]


def test_the_supernet_runs_dilated_convolutions_accelerated():
    edge = MixedEdge([[("dil_conv", {"kernel": 3, "dilation": 2})], [("identity", {})]], C, C, 1)
    assert any(isinstance(m, DilatedDepthwiseConv2d) for m in edge.modules())
    fixed = build_op([("dil_conv", {"kernel": 5, "dilation": 2})], C, C, 2, affine=False)
    assert any(isinstance(m, DilatedDepthwiseConv2d) for m in fixed.modules())


def test_only_depthwise_convolutions_are_accelerated():
    torch.manual_seed(0)
    ops = [
        OPS[n].builder(C, C, OPS[n].meta["fixed_stride"] or 1, False, **example_args(OPS[n].meta))
        for n in OPS.names()
    ]
    ops.append(OPS["dil_conv"].builder(C, C, 1, False, kernel=3, dilation=1))  # not dilated
    before = [[type(m) for m in op.modules()] for op in ops]
    after = [[type(m) for m in accelerate(op).modules()] for op in ops]
    changed = {
        (old.__name__, new.__name__)
        for olds, news in zip(before, after, strict=True)
        for old, new in zip(olds, news, strict=True)
        if old is not new
    }
    assert changed == {("Conv2d", "DilatedDepthwiseConv2d"), ("Conv2d", "DepthwiseConv2d")}
    assert sum(new is DilatedDepthwiseConv2d for news in after for new in news) == 1
    # sep_conv's two depthwise convolutions and the undilated dil_conv's one
    assert sum(new is DepthwiseConv2d for news in after for new in news) == 3


# ---- the extraction -------------------------------------------------------------------------------
def test_every_registered_builder_is_the_definition_of_its_name():
    index = codegen.definition_index()
    for registry in (OPS, BLOCKS):
        for name in registry.names():
            builder = registry[name].builder
            assert builder.__name__ == name
            definition = index.definitions[name]
            code = [line for line in definition.source.splitlines() if not line.startswith("#")]
            assert code[0].startswith(f"def {name}(")  # the registering decorator is not copied
            assert sys.modules[builder.__module__].__file__.endswith(definition.file)


def test_copied_definitions_use_only_torch_and_the_standard_library():
    everything = set(OPS.names()) | set(BLOCKS.names()) | set(RECURRENT_CASES) | {"drop_path"}
    code = codegen.standalone_code(everything)
    assert imported_packages(code.imports) <= STANDALONE_IMPORTS
    assert all(imported_packages(source) == set() for source in code.definitions)


def test_extraction_follows_dependencies_in_file_order():
    code = codegen.standalone_code({"res_block"})
    assert code.names == (
        "records_backward", "memory_layout", "_subsampled", "Subsampled", "subsample",
        "_input_relu", "PointwiseConv2d", "ReLUConvBN", "ResNetBasicBlock", "res_block",
    )  # fmt: skip
    assert code.imports == "import torch\nimport torch.nn.functional as F\nfrom torch import nn"


def _fake_runtime(tmp_path, ops_text: str):
    folder = tmp_path / "runtime"
    (folder / "nn").mkdir(parents=True)
    for relative in codegen.DEFINITION_FILES:
        (folder / relative).write_text("", encoding="utf-8")
    (folder / "nn" / "ops.py").write_text(textwrap.dedent(ops_text), encoding="utf-8")
    return codegen.index_definitions(folder)


def test_a_definition_that_uses_a_spacec_name_is_refused(tmp_path):
    index = _fake_runtime(
        tmp_path,
        """
        import math

        from spacec.registry import Registry

        REGISTRY = Registry("x")


        # Registered below, but the body reads the registry: it cannot be copied.
        @REGISTRY.register("widget")
        def widget(n):
            return math.sqrt(n) + len(REGISTRY)


        @REGISTRY.register("gadget")
        def gadget(n):
            return math.floor(n)
    """,
    )
    widget = index.definitions["widget"].source.splitlines()
    assert widget[0].startswith("# Registered below") and widget[1] == "def widget(n):"
    code = codegen.standalone_code({"gadget"}, index)
    assert code.imports == "import math"
    assert code.definitions == ("def gadget(n):\n    return math.floor(n)",)
    message = r"widget \(nn/ops.py:11\) -> REGISTRY \(nn/ops.py:6\) uses Registry from spacec"
    with pytest.raises(codegen.DefinitionError, match=message):
        codegen.standalone_code({"widget"}, index)
    with pytest.raises(codegen.DefinitionError, match="no runtime definition named sprocket"):
        codegen.standalone_code({"sprocket"}, index)


# ---- whole derived networks -----------------------------------------------------------------------
def tiny_params(name: str) -> dict[str, int]:
    declared = dict(spacec.load(name).spec.params)
    return {key: value for key, value in TINY.items() if key in declared}


def tiny_space(name: str):
    return spacec.load(name, **tiny_params(name))


def some_genotype(space):
    """A genotype of the space derived from fixed pseudo-random α (different ops per edge)."""
    rng = random.Random(0)
    alphas = {
        cell: [[rng.random() for _ in rule.ops] for _ in rule.edges]
        for cell, rule in space.rules.items()
    }
    return derive(space.name, alphas, space.rules)


@pytest.fixture(scope="module")
def derived_sources() -> dict[str, str]:
    return {
        name: tiny_space(name).discrete_source(some_genotype(tiny_space(name))) for name in SHIPPED
    }


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], capture_output=True, text=True, timeout=120
    )


def test_derived_networks_are_ruff_clean(derived_sources, tmp_path):
    for name, source in derived_sources.items():
        (tmp_path / f"{name}_derived.py").write_text(source, encoding="utf-8")
    common = ["--isolated", "--line-length", "100"]
    done = ruff("format", "--check", *common, str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    lint = ["--select", "E,F,W,I,B,UP,SIM", "--ignore", "E501", "--target-version", "py310"]
    done = ruff("check", *common, *lint, str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr


# Compiles each (space, parameters, genotype) of argv[1] in a fresh interpreter (no torch needed).
_PRINT_DERIVED = textwrap.dedent("""
    import json, sys
    import spacec
    from spacec.arch.genotype import Genotype

    sources = {
        name: spacec.load(name, **params).discrete_source(Genotype.from_dict(genotype))
        for name, params, genotype in json.loads(sys.argv[1])
    }
    sys.stdout.write(json.dumps(sources))
""")


def test_derived_networks_are_identical_across_processes(derived_sources):
    jobs = []
    for name in SHIPPED:
        space = tiny_space(name)
        jobs.append((name, tiny_params(name), some_genotype(space).to_dict()))
    for seed in ("1", "2"):  # different string hashing: set and dict order must not leak
        done = subprocess.run(
            [sys.executable, "-c", _PRINT_DERIVED, json.dumps(jobs)],
            capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": seed},
            timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == derived_sources


# Imports each derived module in an interpreter where importing spacec fails, and runs it.
_WITHOUT_SPACEC = textwrap.dedent("""
    import importlib.util, json, sys

    class NoSpacec:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("spacec", "runtime"):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")

    sys.meta_path.insert(0, NoSpacec())
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    for path, kind, shape in json.loads(sys.argv[1]):
        spec = importlib.util.spec_from_file_location("derived", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        network = module.Network()
        if kind == "image_classifier":
            out = network(torch.randn(2, *shape))
        else:
            out, _ = network(torch.randint(0, network.ntoken, (3, 2)), network.init_hidden(2))
        out.sum().backward()
    imported = sorted({name.split(".")[0] for name in sys.modules})
    print(json.dumps(imported))
""")


def test_derived_networks_run_without_spacec(derived_sources, tmp_path):
    jobs = []
    for name, source in derived_sources.items():
        path = tmp_path / f"{name}_{hashlib.sha256(source.encode()).hexdigest()[:8]}.py"
        path.write_text(source, encoding="utf-8")
        space = tiny_space(name)
        kind = space.spec.network.kind
        jobs.append((str(path), kind, space.input_shape if kind == "image_classifier" else None))
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SPACEC, json.dumps(jobs)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    imported = set(json.loads(done.stdout))
    assert not imported & {"spacec", "runtime"}
    for source in derived_sources.values():
        assert imported_packages(source) <= STANDALONE_IMPORTS
