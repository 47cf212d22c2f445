"""The compiler's torch-free catalogue agrees with the runtime's registries; spacec needs no torch.

Documented mappings between a catalogue signature and a runtime builder
`builder(C_in, C_out, stride, affine, **args)`: a stem's `channels` and a head's `classes` are the
builder's C_out, a fixed block's `stride` is the builder's stride, an auxiliary head's `after` is
the body position it reads (used by the network, not the builder).
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from spacec import catalog
from spacec.arch.derive import KINDS
from spacec.arch.genotype import REDUCTIONS
from spacec.errors import SpaceError
from spacec.runtime.nn import recurrent
from spacec.runtime.nn.blocks import BLOCKS
from spacec.runtime.nn.ops import OPS

# Catalogue arguments that are not builder keyword arguments, per table (see the docstring).
MAPPED_ARGS = {
    "stem": {"channels"},
    "head": {"classes"},
    "fixed block": {"stride"},
    "auxiliary head": {"after", "classes"},
    "preprocess": set(),
    "reduce input": set(),
}
BLOCK_TABLES = catalog.BLOCK_TABLES


def image_primitives() -> dict[str, catalog.Signature]:
    return {n: s for n, s in catalog.PRIMITIVES.items() if s.domain == "image"}


# ---- candidate operations ----------------------------------------------------------------------
def test_image_primitives_are_exactly_the_registered_ops():
    assert set(image_primitives()) == set(OPS.names())


@pytest.mark.parametrize("name", sorted(image_primitives()))
def test_primitive_arguments_match_the_builder(name):
    signature = catalog.PRIMITIVES[name]
    assert tuple(signature.args) == tuple(OPS[name].meta["args"])
    assert all(kind == catalog.INT for kind in signature.args.values())
    assert signature.required == tuple(OPS[name].meta["args"])  # the runtime requires them all


def test_zero_primitives_are_the_registered_zero_ops():
    registered = {name for name in OPS.names() if OPS[name].meta["is_zero"]}
    assert set(catalog.ZERO_PRIMITIVES) == registered


def test_activations_are_the_recurrent_activations():
    assert set(catalog.ACTIVATIONS.options) == set(recurrent.ACTIVATIONS)
    assert catalog.PRIMITIVES["activation"].args == {"fn": catalog.ACTIVATIONS}
    assert catalog.PRIMITIVES["activation"].domain == "sequence"


def test_sequence_catalogue_entries_have_runtime_modules():
    highway_init = catalog.JOINT_PRIMITIVES["highway_init"]
    assert set(highway_init.args) <= set(inspect.signature(recurrent.HighwayInit).parameters)
    assert highway_init.args["fn"] == catalog.ACTIVATIONS
    assert set(catalog.SHARED_BLOCKS) == {"highway"}
    assert hasattr(recurrent, "SharedHighway")
    assert set(catalog.SEARCH_NORMS) == {"batch_norm"}
    assert hasattr(recurrent, "NodeNorm")
    for table in (catalog.JOINT_PRIMITIVES, catalog.SHARED_BLOCKS, catalog.SEARCH_NORMS):
        assert all(s.domain == "sequence" for s in table.values())


# ---- macro-network blocks -------------------------------------------------------------------------
def block_entries():
    for role, table in BLOCK_TABLES.items():
        for name in table:
            yield pytest.param(role, name, id=f"{role}:{name}")


@pytest.mark.parametrize(("role", "name"), list(block_entries()))
def test_block_is_registered_with_the_same_arguments(role, name):
    assert name in BLOCKS, f"{role} {name!r} has no runtime builder"
    signature = BLOCK_TABLES[role][name]
    builder_args = set(signature.args) - MAPPED_ARGS[role]
    assert builder_args == set(BLOCKS[name].meta["args"])
    assert MAPPED_ARGS[role] <= set(signature.args)
    if role in ("head", "auxiliary head"):
        assert BLOCKS[name].meta["is_head"]


def test_every_runtime_block_is_named_by_the_catalogue():
    named = set().union(*(set(table) for table in BLOCK_TABLES.values()))
    assert set(BLOCKS.names()) == named


@pytest.mark.parametrize("name", sorted(catalog.STEMS))
def test_stem_strides_match_the_runtime(name):
    fixed = BLOCKS[name].meta["fixed_stride"]
    assert catalog.STEM_STRIDES[name] == (fixed or 1)


def test_reducing_stems_are_stems():
    assert set(catalog.STEMS) >= catalog.REDUCING_STEMS


def test_rules_and_reductions_are_the_runtimes():
    assert set(catalog.DERIVE_RULES) == set(KINDS)
    assert set(catalog.REDUCES) | {"node"} == set(REDUCTIONS)


def test_network_settings_name_known_roles():
    roles = {"int", "cell", "decoder", "stem", "preprocess", "reduce_input", "head", "auxiliary"}
    for kind, settings in catalog.NETWORK_SETTINGS.items():
        assert kind in catalog.NETWORK_DOMAINS
        assert {role for role, _ in settings.values()} <= roles
        for key in catalog.NETWORK_DEFAULTS.get(kind, {}):
            assert key in settings and not settings[key][1], f"{key} has a default: not required"


# ---- constraints the runtime enforces, the checker must enforce too --------------------------------
CONSTRAINTS = [
    pytest.param("ops o { none = zero  conv = sep_conv(kernel=2) }", "", id="even-kernel"),
    pytest.param(
        "ops o { none = zero  fr = factorized_reduce }", "", id="factorized-reduce-at-stride-1"
    ),
    pytest.param(
        "ops o { none = zero  conv = sep_conv(kernel=3) }",
        "preprocess factorized_reduce",
        id="factorized-reduce-preprocess",
    ),
]


@pytest.mark.parametrize(("ops", "setting"), CONSTRAINTS)
def test_runtime_constraints_are_checked(ops, setting, load_text):
    text = (
        f"param C = 4\n{ops}\n"
        "cell c { inputs a, b nodes 2 edges dense : o output concat(*) derive argmax }\n"
        f"network image_classifier {{ channels C stem conv_bn(kernel=3, channels=C) {setting}\n"
        "  body c * 2 head classifier(classes=10) }\n"
    )
    try:
        space = load_text(text)
    except SpaceError:
        return
    space.supernet()


# ---- the compiler does not need torch -------------------------------------------------------------
def test_compiler_does_not_import_torch():
    script = (
        "import sys\n"
        "import spacec, spacec.cli, spacec.parse, spacec.check, spacec.ir, spacec.codegen\n"
        "import spacec.catalog, spacec.load\n"
        "for name in sorted(spacec.shipped_spaces()):\n"
        "    space = spacec.load(name)\n"
        "    space.source, space.listing(), spacec.ir.to_json(space.ir), spacec.ir.to_dot(space.ir)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_every_block_setting_names_one_of_the_block_tables():
    roles = {role for settings in catalog.NETWORK_SETTINGS.values() for role, _ in settings.values()}
    assert roles - {"int", "cell", "decoder"} == set(catalog.SETTING_BLOCKS)
    tables = [id(table) for table in BLOCK_TABLES.values()]
    assert all(id(table) in tables for table in catalog.SETTING_BLOCKS.values())
