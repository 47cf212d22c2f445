"""The three layers: the compiler (torch-free), the runtime (torch), the command line on top.

- import-linter's contracts in pyproject.toml hold (the compiler imports neither the runtime, nor
  the CLI, nor torch; the runtime never imports the CLI; no import cycles between siblings);
- the runtime is installed as `spacec.runtime`, never as a top-level package named `runtime`;
- the compiler's commands (list, check, compile, derive, show, info) run where torch cannot be
  imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import spacec

ROOT = Path(__file__).parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def _stage_package(target: Path) -> Path:
    """The Python files of spacec laid out as installed (runtime/ under spacec/runtime).

    import-linter reads packages from the file system, where an editable install's folder
    mapping (tool.setuptools.package-dir) does not exist.
    """
    for source, dest in ((ROOT / "spacec", target / "spacec"),
                         (ROOT / "runtime", target / "spacec" / "runtime")):
        for path in source.rglob("*.py"):
            copy = dest / path.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
    return target


def test_import_contracts_hold(tmp_path):
    pytest.importorskip("importlinter")
    staged = _stage_package(tmp_path / "stage")
    env = {**os.environ, "PYTHONPATH": str(staged)}
    done = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
         str(PYPROJECT)],
        capture_output=True, text=True, cwd=staged, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout


def test_every_package_folder_is_installed():
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    mapped = {package: ROOT / folder for package, folder in config["package-dir"].items()}
    found = {"spacec"}
    for package, folder in [("spacec", ROOT / "spacec"), *mapped.items()]:
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            found.add(".".join((package, *parts)))
    found |= set(mapped)
    assert found == listed, f"not installed: {sorted(found - listed)}; no folder: {sorted(listed - found)}"


def test_no_top_level_runtime_package_is_installed(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "import runtime"], capture_output=True, text=True, cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode != 0
    assert "No module named 'runtime'" in done.stderr
    done = subprocess.run(
        [sys.executable, "-c", "import spacec.runtime.nn.ops"], capture_output=True, text=True,
        cwd=tmp_path, timeout=120,
    )
    assert done.returncode == 0, done.stderr


# A Python in which importing torch (or torchvision) fails, as where it is not installed.
WITHOUT_TORCH = """
import sys

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
        return None

sys.meta_path.insert(0, _NoTorch())
from spacec.cli import main
main(sys.argv[1:], prog_name="spacec")
"""


def _without_torch(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, *args], capture_output=True, text=True, cwd=cwd,
        timeout=120,
    )


def _alphas(name: str, value: float = 0.0) -> dict[str, list[list[float]]]:
    space = spacec.load(name)
    return {cell: [[value + 0.01 * col for col in range(len(rule.ops))] for _ in rule.edges]
            for cell, rule in space.rules.items()}


def _fake_run(folder: Path, name: str) -> Path:
    """A search run directory as `spacec search` leaves it, for `spacec derive RUN`."""
    space = spacec.load(name)
    (folder / "alphas").mkdir(parents=True)
    (folder / "config.yaml").write_text(f"space: {{name: {name}}}\n", encoding="utf-8")
    record = {"name": name, "source": name, "sha256": space.spec.sha256,
              "params": dict(space.spec.params)}
    (folder / "space.json").write_text(json.dumps(record), encoding="utf-8")
    (folder / "alphas" / "epoch_001.json").write_text(json.dumps(_alphas(name)), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["check", "darts_cnn"],
        ["compile", "darts_rnn"],
        ["compile", "darts_cnn", "--emit", "listing"],
        ["compile", "darts_cnn", "--genotype", "DARTS_V2"],
        ["derive", "nas_bench_201", "--alphas", "alphas.json"],
        ["derive", "RUN"],
        ["derive", "nas_bench_201", "--alphas", "alphas.json", "--method", "fair_darts"],
        ["methods"],
        ["show", "DARTS_V2", "-o", "cells.png", "--engine", "matplotlib"],
        ["runs", "."],
        ["info", "darts_cnn", "--batch-size", "16", "--order", "2", "--genotype", "DARTS_V2"],
        ["info", "darts_rnn", "--batch-size", "8", "--json"],
    ],
)
def test_compiler_commands_run_without_torch(args, tmp_path):
    (tmp_path / "alphas.json").write_text(json.dumps(_alphas("nas_bench_201")), encoding="utf-8")
    run = _fake_run(tmp_path / "run", "darts_cnn")
    args = [str(run) if arg == "RUN" else arg for arg in args]
    done = _without_torch(args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_a_command_that_needs_torch_says_so_without_it(tmp_path):
    done = _without_torch(["search", "--epochs", "1"], tmp_path)
    assert done.returncode != 0
    assert "torch" in done.stderr
