"""Every optional statement of the language, left out, works through every command.

A space that leaves out an optional statement gets the statement's default, and a default must be
the same kind of checked value as the written statement (issue 12: a space without `preprocess`
could be searched, but its derived network crashed the code generator).

Two tiny spaces write every optional statement out (IMAGE, SEQUENCE: each with its default value,
where it has one). Each variant leaves one out. Through the real command line (click's runner on
`spacec.cli.main`), every variant is checked, compiled, derived from α, compiled and measured as a
derived network; the two spaces that leave out *everything* optional go on through search,
derive, train and export. Only the command line and `spacec.load` are used (the runtime's
internals are being restructured).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

import spacec
from spacec.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")

# Every optional statement written out; `# [name]` marks what a variant removes or rewrites.
IMAGE = """\
space opt                                        # [space]
param C = 4                                      # [param]
param layers = 3                                 # [param]
ops o {                                          # [ops]
    none = zero
    skip = identity
    conv = sep_conv(kernel=3)
    pool = max_pool(kernel=3)
}                                                # [ops]
cell normal {
    inputs a, b
    nodes 2
    edges dense from b : o                       # [dense-from]
    fixed a -> n1 : identity                     # [fixed]
    combine sum                                  # [combine]
    output concat(*)
    derive topk(k=1, exclude=[none])             # [exclude]
    limit skip <= 1                              # [limit]
}
cell reduce extends normal {                     # [extends]
    stride 2 from inputs                         # [stride]
}
network image_classifier {
    in_channels 3                                # [in_channels]
    image_size 32                                # [image_size]
    channels C
    stem stem_imagenet(channels=C)
    preprocess relu_conv_bn(kernel=1)            # [preprocess]
    reduce_input factorized_reduce               # [reduce_input]
    body normal * layers with reduce at [1], res_block(stride=1)  # [with] # [block-stride]
    head classifier(classes=10)
    auxiliary auxiliary_cifar(after=0, classes=10)                 # [auxiliary]
}
"""
# (The ImageNet stem brings 32x32 images to 8x8, the auxiliary head's input size, before the
# first cell, so that leaving out `stride` keeps a network that can be built.)
SEQUENCE = """\
space opt_rnn                                    # [space]
param ntoken = 50                                # [param]
param ninp = 8                                   # [param]
param nhid = 8                                   # [param]
ops r {
    tanh = activation(fn=tanh)
    relu = activation(fn=relu)
    sigmoid = activation(fn=sigmoid)
}
cell recurrent {
    inputs x, h_prev
    nodes s0, s1, s2
    fixed (x, h_prev) -> s0 : highway_init(fn=tanh)   # [fixed]
    edges dense from s0 : r                           # [dense-from]
    share highway per node
    combine sum                                       # [combine]
    search_norm batch_norm                            # [search_norm]
    output mean(s1, s2)
    derive argmax(exclude=[sigmoid])                  # [exclude]
    limit relu <= 1                                   # [limit]
}
network language_model {
    tokens ntoken
    embedding ninp
    hidden nhid
    step recurrent
    decoder tied
}
"""

# What leaving out a marked statement does to its lines: drop them, or rewrite them.
REWRITES = {
    "dense-from": lambda line: line.replace("dense from b :", "dense :").replace(
        "dense from s0 :", "dense :"
    ),
    "exclude": lambda line: line.replace("topk(k=1, exclude=[none])", "topk(k=1)").replace(
        "argmax(exclude=[sigmoid])", "argmax"
    ),
    "extends": lambda line: line.replace(" extends normal {", " {\n" + _NORMAL_BODY),
    "with": lambda line: line.replace(" with reduce at [1]", ""),
    "block-stride": lambda line: line.replace("res_block(stride=1)", "res_block"),
}
_NORMAL_BODY = IMAGE[IMAGE.index("    inputs a, b") : IMAGE.index("}\ncell reduce")]
_PARAMS = {"C": "4", "layers": "3", "ntoken": "50", "ninp": "8", "nhid": "8"}
OPS_LIBRARY = IMAGE[IMAGE.index("ops o {") : IMAGE.index("cell normal")]


def without(text: str, name: str) -> str:
    """`text` with the statement(s) marked `# [name]` left out (dropped or rewritten)."""
    if name == "dense-from":  # every pair then has a searched edge: no fixed edge fits too
        text = without(text, "fixed")
    if name == "fixed" and "dense from s0" in text:  # s0 is then fed by searched edges
        text = _rewrite(text, "dense-from")
    if name == "ops":  # the whole set; Variant.write imports it instead
        return text.replace(OPS_LIBRARY, "")
    if name == "param":  # no parameters: their values written where they are used
        text = "".join(line for line in text.splitlines(keepends=True) if "# [param]" not in line)
        return re.sub(r"\b(" + "|".join(_PARAMS) + r")\b", lambda m: _PARAMS[m.group(1)], text)
    return _rewrite(text, name)


def _rewrite(text: str, name: str) -> str:
    lines = []
    for line in text.splitlines(keepends=True):
        if f"# [{name}]" in line:
            line = (
                re.sub(rf" *# \[{re.escape(name)}\]", "", REWRITES[name](line))
                if name in REWRITES
                else ""
            )
        lines.append(line)
    return "".join(lines)


IMAGE_OPTIONAL = ["space", "param", "ops", "dense-from", "fixed", "combine", "exclude", "limit",
                  "extends", "stride", "in_channels", "image_size", "preprocess", "reduce_input",
                  "with", "block-stride", "auxiliary"]  # fmt: skip
SEQUENCE_OPTIONAL = ["space", "param", "fixed", "dense-from", "combine", "search_norm", "exclude",
                     "limit"]  # fmt: skip


@dataclass(frozen=True)
class Variant:
    id: str
    text: str
    sets: tuple[str, ...]  # --set options that shrink it (empty where it has no parameters)

    def write(self, folder: Path) -> Path:
        path = folder / "space.space"
        text = self.text
        if "ops o {" not in text and "ops r {" not in text and "cell normal" in text:
            (folder / "lib.space").write_text(OPS_LIBRARY, encoding="utf-8")
            text = 'import o from "lib.space"\n' + text  # `ops` left out: the set is imported
        path.write_text(text, encoding="utf-8")
        return path


def variants() -> list:
    found = [Variant("image-full", IMAGE, ("--set", "C=4"))]
    found += [
        Variant(
            f"image-without-{name}",
            without(IMAGE, name),
            () if name == "param" else ("--set", "C=4"),
        )
        for name in IMAGE_OPTIONAL
    ]
    found.append(Variant("sequence-full", SEQUENCE, ("--set", "nhid=8")))
    found += [
        Variant(
            f"sequence-without-{name}",
            without(SEQUENCE, name),
            () if name == "param" else ("--set", "nhid=8"),
        )
        for name in SEQUENCE_OPTIONAL
    ]
    return [pytest.param(v, id=v.id) for v in found]


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 0, result.output
    return result.stdout


def random_alphas(path: Path, sets: tuple[str, ...], seed: int = 0) -> dict:
    """α of the right shape for every cell of the space at `path` (seeded)."""
    overrides = dict(pair.split("=") for pair in sets[1::2])
    space = spacec.load(str(path), **{k: int(v) for k, v in overrides.items()}).spec
    rng = random.Random(seed)
    return {
        cell.name: [
            [rng.uniform(-1, 1) for _ in space.opset(cell.opset).candidates] for _ in cell.edges
        ]
        for cell in space.cells
    }


def test_every_marker_is_a_variant():
    for text, names in ((IMAGE, IMAGE_OPTIONAL), (SEQUENCE, SEQUENCE_OPTIONAL)):
        assert markers(text) == set(names)
        for name in names:
            assert without(text, name) != text


@pytest.mark.parametrize("variant", variants())
def test_an_omitted_optional_statement_works_through_the_compiler_commands(variant, tmp_path):
    path = variant.write(tmp_path)
    assert ": ok (" in cli("check", path, *variant.sets)
    cli("compile", path, *variant.sets, "-o", tmp_path / "supernet.py")
    compile(Path(tmp_path / "supernet.py").read_text(), "supernet.py", "exec")
    alphas = tmp_path / "alphas.json"
    alphas.write_text(json.dumps(random_alphas(path, variant.sets)))
    genotype = tmp_path / "genotype.json"
    genotype.write_text(cli("derive", path, "--alphas", alphas, "--json", *variant.sets))
    cli("compile", path, "--genotype", genotype, *variant.sets, "-o", tmp_path / "derived.py")
    # info builds the supernet and the derived network (and runs the derived image network).
    report = json.loads(cli("info", path, "--genotype", genotype, "--json", *variant.sets))
    assert report["supernet_weights"] > 0 and report["derived"]["parameters"] > 0


# The defaults IMAGE writes out: leaving one out must compile to the same checked value.
NETWORK_DEFAULTS = ["in_channels", "image_size", "preprocess", "reduce_input"]


@pytest.mark.parametrize("name", NETWORK_DEFAULTS)
def test_a_network_default_is_the_value_written_out(name, tmp_path):
    written = spacec.load(str(Variant("w", IMAGE, ()).write(tmp_path))).spec.network.get(name)
    left_out = spacec.load(str(Variant("o", without(IMAGE, name), ()).write(tmp_path)))
    assert left_out.spec.network.get(name) == written


def test_a_call_argument_default_is_the_value_written_out(tmp_path):
    written = spacec.load(str(Variant("w", IMAGE, ()).write(tmp_path))).spec.network.body[-1]
    default = spacec.load(str(Variant("o", without(IMAGE, "block-stride"), ()).write(tmp_path)))
    assert default.spec.network.body[-1].step == written.step


# ---- everything optional left out, through search, derive, train and export ---------------
IMAGE_MINIMAL = IMAGE
for _name in sorted(IMAGE_OPTIONAL, key=lambda name: name != "extends"):  # extends first: it
    # copies the parent's statements, which the others then leave out
    if _name not in ("stride", "with", "param", "ops"):  # keep a reduction (for the default
        # of reduce_input) ...
        IMAGE_MINIMAL = without(IMAGE_MINIMAL, _name)
SEQUENCE_MINIMAL = SEQUENCE
for _name in SEQUENCE_OPTIONAL:
    if _name != "param":  # ... and the parameters the presets and --set size
        SEQUENCE_MINIMAL = without(SEQUENCE_MINIMAL, _name)

TINY_IMAGE = ("--set", "C=4", "--set", "layers=3", "--epochs", "1", "--limit", "32",
              "--batch-size", "16", "--threads", "1", "-q")  # fmt: skip
TINY_SEQUENCE = ("--set", "ninp=8", "--set", "nhid=8", "--epochs", "1", "--limit", "400",
                 "--batch-size", "8", "--cfg", "data.bptt=10", "--threads", "1", "-q")  # fmt: skip


def markers(text: str) -> set[str]:
    return {part.split("]")[0] for part in text.split("# [")[1:]}


def test_the_minimal_spaces_leave_out_every_optional_statement():
    assert markers(IMAGE_MINIMAL) == {"stride", "with", "param", "ops"}
    assert markers(SEQUENCE_MINIMAL) == {"param"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "tiny"),
    [pytest.param(IMAGE_MINIMAL, TINY_IMAGE, id="image"),
     pytest.param(SEQUENCE_MINIMAL, TINY_SEQUENCE, id="sequence")],
)  # fmt: skip
def test_a_space_without_optional_statements_searches_trains_and_exports(text, tiny, tmp_path):
    path = tmp_path / "minimal.space"
    path.write_text(text, encoding="utf-8")
    cli("search", path, *tiny, "--out", tmp_path / "search")
    (run,) = (tmp_path / "search").iterdir()
    assert cli("derive", run).startswith("space ")
    cli("compile", path, "--genotype", run, *tiny[:4], "-o", tmp_path / "derived.py")
    cli("train", path, "--genotype", run, *tiny, "--out", tmp_path / "train")
    (trained,) = (tmp_path / "train").iterdir()
    result = CliRunner().invoke(
        main, ["export", str(trained), "--format", "torchscript", "-o", str(tmp_path / "m.pt")]
    )
    assert "Traceback" not in result.output
    if "language_model" in text:  # export takes image classifiers, and says so
        assert result.exit_code == 1 and "export takes image classifiers" in result.output
    else:
        assert result.exit_code == 0, result.output
        assert (tmp_path / "m.pt").stat().st_size > 0
