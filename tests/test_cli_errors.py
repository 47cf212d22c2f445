"""Every command, given bad arguments, exits non-zero with a message that names the cause.

A table of bad arguments for every command of `spacec` (list, check, compile, info, search,
derive, train, select, show, export) and every kind of option value: missing files, folders for
files, unknown presets and spaces, malformed --set and --cfg, bad genotypes and α files, run
directories that are not, negative sizes, unwritable outputs. Each runs through click's runner on
`spacec.cli.main`; some also run as real processes (`python -m spacec`). None may print a
traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from spacec.arch.genotype import resolve
from spacec.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")

SPACE = """\
space tiny
param C = 4
param layers = 3
ops o {
    none = zero
    skip = identity
    conv = sep_conv(kernel=3)
}
cell normal {
    inputs a, b
    nodes 2
    edges dense : o
    output concat(*)
    derive topk(k=2, exclude=[none])
}
cell reduce extends normal {
    stride 2 from inputs
}
network image_classifier {
    channels C
    stem conv_bn(kernel=3, channels=C)
    body normal * layers with reduce at [1]
    head classifier(classes=10)
}
"""
TINY = ("--epochs", "1", "--limit", "16", "--batch-size", "8", "--threads", "1", "-q")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder of inputs: good, bad, and not what they claim to be."""
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "tiny.space").write_text(SPACE)
    (folder / "latin1.space").write_bytes(SPACE.replace("space tiny", "# café").encode("latin-1"))
    (folder / "bad.json").write_text("{not json")
    (folder / "latin1.json").write_bytes(b'{"space": "caf\xe9"}')
    (folder / "other.json").write_text(json.dumps({**resolve("DARTS_V2").to_dict(), "space": "x"}))
    (folder / "alphas.json").write_text(json.dumps({"normal": [[0.0]]}))
    (folder / "a_folder").mkdir()
    (folder / "a_file").write_text("")
    return folder


@dataclass(frozen=True)
class Bad:
    args: tuple[str, ...]
    message: str  # what the output must say
    status: int = 1  # 2: usage errors and errors in a space


# fmt: off
CASES = [
    # list
    Bad(("list", "extra"), "unexpected extra argument", 2),
    # check
    Bad(("check",), "Missing argument 'SPACE'", 2),
    Bad(("check", "{d}/missing.space"), "missing.space: error: no such file", 2),
    Bad(("check", "{d}/a_folder"), "a_folder: error: is a folder, not a .space file", 2),
    Bad(("check", "{d}/latin1.space"), "latin1.space:1:6: error: not UTF-8 text (byte 0xe9)", 2),
    Bad(("check", "darts_cnnn"), "no shipped space named 'darts_cnnn'", 2),
    Bad(("check", "{d}/tiny.space", "--set", "C"), "--set C: expected NAME=NUMBER", 2),
    Bad(("check", "{d}/tiny.space", "--set", "C=abc"), "'abc' is not a number", 2),
    Bad(("check", "{d}/tiny.space", "--set", "D=3"), "--set D: no such parameter", 2),
    Bad(("check", "{d}/tiny.space", "--set", "C=0"), "'channels' must be positive, got 0", 2),
    Bad(("check", "{d}/tiny.space", "--set", "C=-4"), "'channels' must be positive, got -4", 2),
    Bad(("check", "{d}/tiny.space", "--set", "C=1e999"), "--set C: inf is not a finite number", 2),
    Bad(("check", "{d}/tiny.space", "--set", "layers=0"), "needs a positive count, got 0", 2),
    # compile
    Bad(("compile", "{d}/tiny.space", "-o", "/proc/spacec-test/x.py"),
        "cannot create folder /proc/spacec-test: No such file or directory"),
    Bad(("compile", "{d}/tiny.space", "-o", "{d}/a_file/x.py"), "a_file is a file"),
    Bad(("compile", "{d}/tiny.space", "-o", "{d}/a_folder"), "is a directory", 2),
    Bad(("compile", "{d}/tiny.space", "--genotype", "DARTS_V9"), "neither a preset"),
    Bad(("compile", "{d}/tiny.space", "--genotype", "{d}/bad.json"),
        "bad.json:1:2: genotype is not valid JSON"),
    Bad(("compile", "{d}/tiny.space", "--genotype", "{d}/latin1.json"),
        "latin1.json:1:15: error: not UTF-8 text (byte 0xe9)"),
    Bad(("compile", "{d}/tiny.space", "--genotype", "{d}/other.json"),
        "a genotype of space 'x', not of 'tiny'"),
    Bad(("compile", "{d}/tiny.space", "--genotype", "DARTS_V2"),
        "(the genotype was derived for space 'darts_cnn')"),
    Bad(("compile", "{d}/tiny.space", "--emit", "bytes"), "Invalid value for '--emit'", 2),
    # info
    Bad(("info", "{d}/missing.space"), "no such file", 2),
    Bad(("info", "{d}/tiny.space", "--genotype", "{d}/a_folder"), "neither a preset"),
    # search
    Bad(("search", "{d}/tiny.space", "--config", "quik", *TINY), "quik: no such preset or file"),
    Bad(("search", "{d}/tiny.space", "--config", "{d}/bad.json", *TINY), "bad.json"),
    Bad(("search", "{d}/tiny.space", "--cfg", "optim", *TINY), "expected SECTION.KEY=VALUE"),
    Bad(("search", "{d}/tiny.space", "--cfg", "optim.nope=3", *TINY), "unknown key(s) nope"),
    Bad(("search", "{d}/tiny.space", "--cfg", "optim.lr=fast", *TINY),
        "optim.lr: expected a number, got 'fast'"),
    Bad(("search", "{d}/tiny.space", *TINY, "--epochs", "-1"), "epochs must be >= 1, got -1"),
    Bad(("search", "{d}/tiny.space", *TINY, "--batch-size", "0"), "batch_size must lie in [1, 2147483647], got 0"),
    Bad(("search", "{d}/tiny.space", *TINY, "--limit", "-5"), "limit must be None or >= 1"),
    Bad(("search", "{d}/tiny.space", *TINY, "--threads", "0"), "threads must lie in [1, 1024]"),
    Bad(("search", "{d}/tiny.space", *TINY, "--seed", "-1"), "seed must lie in [0, 2**63 - 1], got -1"),
    Bad(("search", "{d}/tiny.space", *TINY, "--checkpoint-every", "-1"),
        "checkpoint_every must be >= 0"),
    Bad(("search", "{d}/tiny.space", *TINY, "--device", "tpu"), "device must be auto, cpu, cuda"),
    Bad(("search", "{d}/tiny.space", *TINY, "--data", "mnist"), "unknown dataset 'mnist'"),
    Bad(("search", "{d}/tiny.space", *TINY, "--order", "3"), "Invalid value for '--order'", 2),
    Bad(("search", "{d}/tiny.space", *TINY, "--mode", "greedy"), "Invalid value for '--mode'", 2),
    Bad(("search", "{d}/tiny.space", *TINY, "--epochs", "two"), "'two' is not a valid integer", 2),
    Bad(("search", "{d}/tiny.space", *TINY, "--out", "{d}/a_file"), "is a file", 2),
    Bad(("search", "{d}/tiny.space", *TINY, "--out", "/proc/spacec-test"),
        "cannot create folder /proc/spacec-test: No such file or directory"),
    Bad(("search", "{d}/missing.space", *TINY), "missing.space: error: no such file", 2),
    Bad(("search", "{d}/tiny.space", "--set", "D=1", *TINY), "--set D: no such parameter", 2),
    Bad(("search", "--resume", "{d}/a_folder"), "not a run directory (no config.yaml)"),
    Bad(("search", "{d}/tiny.space", *TINY, "--method", "nope"), "Invalid value for '--method'",
        2),
    Bad(("search", "{d}/tiny.space", *TINY, "--nproc-per-node", "0"), "is not a number of", 2),
    # methods
    Bad(("methods", "nope"), "Invalid value for '[NAME]...': 'nope' is not one of", 2),
    Bad(("search", "--resume", "{d}/a_folder", "--epochs", "3"), "drop --epochs", 2),
    Bad(("search", "--resume", "{d}/a_folder", "--no-tensorboard"), "drop --no-tensorboard (", 2),
    Bad(("compile", "{d}/tiny.space", "--genotype", "DARTS_V2", "--emit", "dag"),
        "--emit dag shows the space's IR, which no genotype changes", 2),
    # derive
    Bad(("derive", "{d}/nowhere"), "is not a run directory", 2),
    Bad(("derive", "{d}/a_folder"), "not a run directory (no config.yaml)"),
    Bad(("derive", "{d}/a_folder", "--set", "C=4"), "--alphas, --method and --set apply to a space", 2),
    Bad(("derive", "{d}/tiny.space", "--alphas", "{d}/missing.json"),
        "cannot read {d}/missing.json: No such file or directory"),
    Bad(("derive", "{d}/tiny.space", "--alphas", "{d}/bad.json"), "bad.json:1:2: not valid JSON"),
    Bad(("derive", "{d}/tiny.space", "--alphas", "{d}/latin1.json"),
        "latin1.json:1:15: error: not UTF-8 text"),
    Bad(("derive", "{d}/tiny.space", "--alphas", "{d}/alphas.json"), "no α for cell type(s)"),
    Bad(("derive", "{d}/tiny.space", "--alphas", "{d}/alphas.json", "--epoch", "1"),
        "--epoch applies to a run directory", 2),
    # train
    Bad(("train", "{d}/tiny.space", *TINY), "give --genotype GENOTYPE", 2),
    Bad(("train", "{d}/tiny.space", "--genotype", "DARTS_V9", *TINY), "neither a preset"),
    Bad(("train", "{d}/tiny.space", "--genotype", "{d}/other.json", *TINY),
        "a genotype of space 'x', not of 'tiny'"),
    Bad(("train", "{d}/tiny.space", "--genotype", "DARTS_V2", "--config", "quik", *TINY),
        "quik: no such preset or file"),
    Bad(("train", "{d}/tiny.space", "--genotype", "DARTS_V2", *TINY, "--epochs", "0"),
        "epochs must be >= 1, got 0"),
    Bad(("train", "{d}/tiny.space", "--genotype", "DARTS_V2", *TINY, "--batch-size", "-8"),
        "batch_size must lie in [1, 2147483647], got -8"),
    Bad(("train", "--resume", "{d}/a_folder"), "not a run directory (no config.yaml)"),
    # select
    Bad(("select",), "Missing argument 'CANDIDATES...'", 2),
    Bad(("select", "DARTS_V9", *TINY), "neither a preset"),
    Bad(("select", "DARTS_V2", "-o", "{d}/a_file/summary.json", *TINY), "a_file is a file"),
    Bad(("select", "DARTS_V2", "--config", "quik", *TINY), "quik: no such preset or file"),
    # show
    Bad(("show", "DARTS_V9", "-o", "{d}/x.png"), "neither a preset"),
    Bad(("show", "DARTS_V2"), "is not a run directory; say where to draw it", 2),
    Bad(("show", "DARTS_V2", "-o", "{d}/x.gif"), "unknown drawing format 'gif'"),
    Bad(("show", "DARTS_V2", "--cell", "nope", "-o", "{d}/x.png"), "has no cell type 'nope'"),
    Bad(("show", "DARTS_V2", "-o", "/proc/spacec-test/x.png"),
        "cannot create folder /proc/spacec-test: No such file or directory"),
    Bad(("show", "{d}/a_folder"), "neither a preset"),
    # export
    Bad(("export", "{d}/missing", "--format", "onnx", "-o", "{d}/m.onnx"), "does not exist", 2),
    Bad(("export", "{d}/a_folder", "--format", "torchscript", "-o", "{d}/m.pt"),
        "a_folder/best.pt: no checkpoint (missing file)"),
    Bad(("export", "{d}/bad.json", "--format", "torchscript", "-o", "{d}/m.pt"),
        "unreadable checkpoint (not a checkpoint file"),
    Bad(("export", "{d}/a_folder", "--format", "tflite", "-o", "{d}/m"),
        "Invalid value for '--format'", 2),
    # predict
    Bad(("predict", "{d}/missing", "{d}/a_file"), "Path '{d}/missing' does not exist", 2),
    Bad(("predict", "{d}/bad.json", "{d}/a_file"), "unreadable checkpoint (not a checkpoint"),
    Bad(("predict", "{d}/a_folder", "{d}/a_file"), "a_folder/best.pt: no checkpoint"),
    Bad(("predict", "{d}/bad.json", "{d}/a_file", "--top", "0"), "--top must be at least 1", 2),
    # runs, report
    Bad(("runs", "{d}/missing"), "missing: no such folder"),
    Bad(("runs", "{d}/a_file"), "is a file", 2),
    Bad(("report",), "Missing argument 'RUNS...'", 2),
    Bad(("report", "{d}/a_folder"), "a_folder: not a run directory (no config.yaml)"),
]
# fmt: on
COMMANDS = (
    "list",
    "check",
    "compile",
    "info",
    "search",
    "derive",
    "train",
    "select",
    "show",
    "export",
    "predict",
    "methods",
    "runs",
    "report",
)  # fmt: skip


def expand(case: Bad, folder: Path) -> tuple[list[str], str]:
    return [arg.format(d=folder) for arg in case.args], case.message.format(d=folder)


def test_every_command_is_in_the_table():
    assert {case.args[0] for case in CASES} == set(COMMANDS)
    assert set(main.commands) == set(COMMANDS)


@pytest.mark.parametrize("case", [pytest.param(c, id=" ".join(c.args)[:60]) for c in CASES])
def test_bad_arguments_end_in_a_message(case, files):
    args, message = expand(case, files)
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output, result.output
    assert not result.exception or isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == case.status, result.output
    assert message in result.output, result.output
    assert not (files / "m.pt").exists() and not (files / "x.png").exists()


def run_real(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spacec", *args], capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip


# Cases for real processes: one per command whose failure comes before the runtime is imported.
# (The runtime's commands import torchvision, which imports torch._dynamo: ~4-9 s per process
# here; their cases run in-process above, through the same `main`.)
REAL = {
    "list": ("list", "extra"),
    "check": ("check", "{d}/latin1.space"),
    "compile": ("compile", "{d}/tiny.space", "-o", "/proc/spacec-test/x.py"),
    "info": ("info", "{d}/missing.space"),
    "derive": ("derive", "{d}/tiny.space", "--alphas", "{d}/bad.json"),
    "export": ("export", "{d}/missing", "--format", "onnx", "-o", "{d}/m.onnx"),
}


def test_bad_arguments_in_real_processes(files):
    """Real processes (`python -m spacec`): exit status, message, and no traceback anywhere."""
    cases = [next(case for case in CASES if case.args == args) for args in REAL.values()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda case: run_real(expand(case, files)[0]), cases))
    for case, process in zip(cases, done, strict=True):
        output = process.stdout + process.stderr
        assert "Traceback" not in output, output
        assert process.returncode == case.status, (case.args, output)
        assert expand(case, files)[1] in output, (case.args, output)


def test_a_deeply_nested_yaml_config_is_a_message(files):
    config = files / "deep.yaml"
    config.write_text("optim: " + "[" * 1500 + "]" * 1500 + "\n")
    result = CliRunner().invoke(main, ["search", str(files / "tiny.space"), "--config",
                                       str(config), *TINY])  # fmt: skip
    assert "Traceback" not in result.output and not isinstance(result.exception, RecursionError)
    assert result.exit_code == 1 and "deep.yaml" in result.output


@pytest.mark.parametrize("command", ["derive", "compile"])
def test_deeply_nested_json_is_a_message(command, files):
    deep = files / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    option = "--alphas" if command == "derive" else "--genotype"
    result = CliRunner().invoke(main, [command, str(files / "tiny.space"), option, str(deep)])
    assert result.exit_code == 1 and "deep.json: JSON nested too deeply" in result.output
