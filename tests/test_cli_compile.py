"""The compiler's command line: list, check, compile (source, dag, dot, listing) and info."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
from click.testing import CliRunner

import spacec
from spacec import __version__
from spacec.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")

SHIPPED = sorted(spacec.shipped_spaces())
GOLDEN = Path(__file__).resolve().parent / "golden"


def spacec_cli(*args: str) -> str:
    """Run the CLI in-process; return its standard output (asserting exit status 0)."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result.stdout


def test_version():
    assert __version__ in spacec_cli("--version")


def test_list_names_every_shipped_space_with_its_summary():
    lines = spacec_cli("list").splitlines()
    assert [line.split()[0] for line in lines] == SHIPPED
    for line in lines:
        assert len(line.split(None, 1)) == 2, f"no summary: {line!r}"


@pytest.mark.parametrize("name", SHIPPED)
def test_check_shipped_space(name, compiled):
    out = spacec_cli("check", name)
    assert out.startswith(f"spaces/{name}.space: ok ({name}: ")
    for cell in compiled(name).spec.cells:
        assert f"{cell.name} [{len(cell.edges)}, " in out


@pytest.mark.parametrize("space", ["darts_cnn", "no_such_space"])
def test_check_pauses_the_collector_only_while_it_runs(space, monkeypatch):
    """`check` frees the compiled space before the cyclic collector resumes; it must resume,
    after a clean check and after an error alike."""
    import gc

    import spacec.cli.compile as commands

    during = []

    def compile_space(*args):
        during.append(gc.isenabled())
        return real(*args)

    real = commands.compile_space
    monkeypatch.setattr(commands, "compile_space", compile_space)
    CliRunner().invoke(main, ["check", space])
    assert during == [False]
    assert gc.isenabled()


@pytest.mark.parametrize("args", [["check", "darts_cnn"], ["info", "darts_cnn"],
                                  ["compile", "darts_cnn", "--emit", "listing"]])
def test_compiler_commands_as_the_program_end_after_writing_everything(args):
    """As the `spacec` program, the compiler's commands end the process without freeing the
    compiled space (`exit_now`): what they print is still written whole, with standard output a
    buffered pipe, and the exit status is 0. In-process, as in the other tests, `exit_now` does
    nothing."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    result = subprocess.run([sys.executable, "-m", "spacec", *args], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == spacec_cli(*args)


def test_compile_as_the_program_writes_its_file_whole(tmp_path, compiled):
    target = tmp_path / "supernet.py"
    result = subprocess.run([sys.executable, "-m", "spacec", "compile", "darts_cnn", "-o",
                             str(target)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert target.read_text() == compiled("darts_cnn").source


def test_compile_to_a_file_writes_the_module(tmp_path, compiled):
    target = tmp_path / "out" / "darts_cnn_supernet.py"  # the folder does not exist yet
    assert spacec_cli("compile", "darts_cnn", "-o", str(target)) == ""
    assert target.read_text() == compiled("darts_cnn").source
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary left over


def test_compile_to_stdout_is_the_source(compiled):
    assert spacec_cli("compile", "nas_bench_201") == compiled("nas_bench_201").source


def test_shipped_name_and_path_give_the_same_output():
    path = str(spacec.shipped_spaces()["darts_cnn"])
    for emit in ("source", "listing", "dag", "dot"):
        assert spacec_cli("compile", "darts_cnn", "--emit", emit) == spacec_cli(
            "compile", path, "--emit", emit
        )


@pytest.mark.parametrize("name", SHIPPED)
def test_emit_dag_is_node_link_json_per_cell(name, compiled):
    data = json.loads(spacec_cli("compile", name, "--emit", "dag"))
    space = compiled(name)
    assert data["space"] == name and data["sha256"] == space.spec.sha256
    assert set(data["cells"]) == set(space.dag)
    for cell, link in data["cells"].items():
        graph = nx.node_link_graph(link, edges="edges")
        original = space.dag[cell]
        assert graph.is_directed()
        assert set(graph.nodes) == set(original.nodes)
        assert set(graph.edges) == set(original.edges)
        for u, v, attrs in original.edges(data=True):
            assert graph.edges[u, v]["kind"] == attrs["kind"]
            if attrs["kind"] == "searched":
                assert graph.edges[u, v]["row"] == attrs["row"]
        assert graph.graph["ops"] == list(original.graph["ops"])


def test_emit_dot_has_a_cluster_per_cell(compiled):
    dot = spacec_cli("compile", "darts_cnn", "--emit", "dot")
    assert dot.startswith('digraph "darts_cnn" {\n') and dot.endswith("}\n")
    assert dot.count("{") == dot.count("}")
    for cell in ("normal", "reduce"):
        assert f'subgraph "cluster_{cell}" {{' in dot
        for row in range(14):
            assert f'[style=dashed, label="α{row}"];' in dot
    assert dot.count("style=dashed") == 28
    assert dot.count("color=gray") == 8  # 4 output edges per cell


def test_emit_listing_matches_the_golden_file():
    golden = GOLDEN / "darts_cnn.listing"
    listing = spacec_cli("compile", "darts_cnn", "--emit", "listing")
    assert listing == golden.read_text(encoding="utf-8"), (
        "the darts_cnn IR listing changed; if intended, review and regenerate with\n"
        "  spacec compile darts_cnn --emit listing > tests/golden/darts_cnn.listing"
    )


def test_info_json_reports_weights_and_alpha_shapes():
    report = json.loads(spacec_cli("info", "darts_cnn", "--json"))
    assert report["space"] == "darts_cnn"
    assert report["supernet_weights"] == 1_930_618
    assert report["alpha_parameters"] == 2 * 14 * 8
    assert report["parameters"] == {"C": 16, "layers": 8, "classes": 10, "stem_multiplier": 3}
    assert {name: cell["alpha_shape"] for name, cell in report["cells"].items()} == {
        "normal": [14, 8],
        "reduce": [14, 8],
    }
    assert report["cells"]["reduce"]["reduction"] and not report["cells"]["normal"]["reduction"]
    assert report["cells"]["normal"]["ops"][0] == "none"


def test_set_overrides_change_the_weight_count():
    default = json.loads(spacec_cli("info", "darts_cnn", "--json", "--set", "layers=5"))
    narrow = json.loads(
        spacec_cli("info", "darts_cnn", "--json", "--set", "layers=5", "--set", "C=8")
    )
    assert narrow["parameters"]["C"] == 8 and default["parameters"]["C"] == 16
    assert narrow["supernet_weights"] < default["supernet_weights"]
    assert narrow["cells"] == default["cells"]  # the DAGs do not depend on the width


def test_info_text():
    out = spacec_cli(
        "info", "darts_rnn", "--set", "ntoken=100", "--set", "ninp=8", "--set", "nhid=8"
    )
    assert "space darts_rnn (spaces/darts_rnn.space)" in out
    assert "cell recurrent: α [36, 5], 9 nodes, 36 searched edges; ops: none, tanh" in out


def test_compile_a_run_directorys_network_at_the_runs_sizes(tmp_path):
    from spacec.arch.genotype import PRESETS

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    (run / "genotype.json").write_text(json.dumps(PRESETS["DARTS_V2"].to_dict()))
    params = {"C": 8, "layers": 5, "classes": 10, "stem_multiplier": 3}
    (run / "space.json").write_text(json.dumps({"name": "darts_cnn", "source": "darts_cnn",
                                                "sha256": "", "params": params}))
    source = spacec_cli("compile", "darts_cnn", "--genotype", str(run))
    assert "# parameters: C=8, layers=5, classes=10, stem_multiplier=3" in source
    assert "body[4]" in source and "body[5]" not in source  # 5 layers, not the space's 8
    again = spacec_cli("compile", "darts_cnn", "--genotype", str(run), "--set", "layers=8")
    assert "# parameters: C=8, layers=8, classes=10, stem_multiplier=3" in again  # --set wins
    # A run of another space gives the genotype only (which must fit, as for any genotype).
    (run / "space.json").write_text(json.dumps({"name": "x", "source": "nas_bench_201",
                                                "sha256": "", "params": {"C": 4}}))
    assert "# parameters: C=16, layers=8" in spacec_cli("compile", "darts_cnn", "--genotype",
                                                          str(run))


def test_info_reports_a_run_directorys_network_at_the_runs_sizes(tmp_path):
    """info --genotype RUN sized the derived network at the space's defaults (C=16, 8 cells)
    where the run trained C=8, 5 cells; the supernet lines stay the space's."""
    from spacec.arch.genotype import PRESETS

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    (run / "genotype.json").write_text(json.dumps(PRESETS["DARTS_V2"].to_dict()))
    params = {"C": 8, "layers": 5, "classes": 10, "stem_multiplier": 3}
    (run / "space.json").write_text(json.dumps({"name": "darts_cnn", "source": "darts_cnn",
                                                "sha256": "", "params": params}))
    report = json.loads(spacec_cli("info", "darts_cnn", "--genotype", str(run), "--json"))
    assert report["parameters"]["C"] == 16  # the space's supernet
    assert report["derived"]["space_parameters"] == params
    preset = json.loads(spacec_cli("info", "darts_cnn", "--genotype", "DARTS_V2", "--set", "C=8",
                                   "--set", "layers=5", "--json"))
    assert report["derived"]["parameters"] == preset["derived"]["parameters"]
    text = spacec_cli("info", "darts_cnn", "--genotype", str(run))
    assert "  at the run's parameters: C=8, layers=5, classes=10, stem_multiplier=3" in text


def test_set_changes_the_compiled_source():
    source = spacec_cli("compile", "darts_cnn", "--set", "C=8")
    assert "def __init__(self, C=8, layers=8, classes=10, stem_multiplier=3, relaxation=None):" in source
    assert "# parameters: C=8, layers=8, classes=10, stem_multiplier=3" in source
