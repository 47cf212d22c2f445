"""`spacec show`: drawings of genotypes (Graphviz or matplotlib) and α heatmaps (spacec.runtime.tools.show)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from spacec.arch.genotype import Genotype, resolve
from spacec.cli import main
from spacec.runtime.tools import show
from spacec.runtime.tools.show import (
    DrawingError,
    cell_layout,
    draw_alpha,
    draw_genotype,
    draw_run,
    genotype_dot,
    softmax_rows,
)

MAGIC = {".png": b"\x89PNG", ".pdf": b"%PDF", ".svg": b"<?xml"}


@pytest.fixture
def no_dot(monkeypatch):
    monkeypatch.setattr(show.shutil, "which", lambda name: None)


def test_cell_layout_tells_inputs_nodes_and_output_apart():
    layout = cell_layout(resolve("DARTS_V2").cell("normal"))
    assert layout.inputs == ("c_k2", "c_k1")
    assert layout.nodes == ("n0", "n1", "n2", "n3")
    assert layout.output == "output"
    recurrent = cell_layout(resolve("DARTS_RNN").cell("recurrent"))
    assert recurrent.inputs == ("x", "h_prev")
    assert recurrent.nodes[0] == "s0"


def test_dot_source_has_a_cluster_per_cell_and_every_edge():
    genotype = resolve("DARTS_V2")
    text = genotype_dot(genotype)
    assert '"cluster_normal"' in text and '"cluster_reduce"' in text
    for name, cell in genotype.cells:
        for op, src, dst in cell.edges:
            assert f'"{name}/{src}" -> "{name}/{dst}" [label="{op}"];' in text
        assert f'"{name}/n3" -> "{name}/output" [style=dashed' in text


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_matplotlib_drawing(tmp_path, no_dot, suffix):
    path = draw_genotype(resolve("DARTS_V2"), tmp_path / f"cells{suffix}")
    data = path.read_bytes()
    assert data.startswith(MAGIC[suffix])
    if suffix == ".svg":
        text = data.decode()
        for label in ("sep_conv_3x3", "dil_conv_3x3", "max_pool_3x3", "c_k2", "output (concat)",
                      "cell normal", "cell reduce"):
            assert label in text


def test_a_cell_whose_nodes_have_no_chosen_edge_draws(tmp_path, no_dot):
    """FairDARTS' official rule keeps only the edges over its threshold: a cell may have none,
    and its nodes are drawn unconnected (a KeyError traceback ended the search before)."""
    data = resolve("DARTS_V2").to_dict()
    for cell in data["cells"].values():
        cell["edges"] = cell["edges"][:2]  # n0's edges only: n1..n3 have none
    genotype = Genotype.from_dict(data)
    assert cell_layout(genotype.cell("normal")).nodes == ("n0", "n1", "n2", "n3")
    assert draw_genotype(genotype, tmp_path / "sparse.svg").read_bytes().startswith(b"<?xml")
    for cell in data["cells"].values():
        cell["edges"] = []
    assert "n3" in genotype_dot(Genotype.from_dict(data))
    assert draw_genotype(Genotype.from_dict(data), tmp_path / "empty.png").stat().st_size > 0


def test_recurrent_genotype_draws(tmp_path, no_dot):
    assert draw_genotype(resolve("DARTS_RNN"), tmp_path / "rnn.png").stat().st_size > 0


def test_graphviz_is_used_when_dot_exists(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    # A stand-in for Graphviz: records its arguments and its input.
    fake.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\n'
                    'cat > "$(dirname "$0")/input"\necho drawn > "$3"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    out = draw_genotype(resolve("DARTS_V1"), tmp_path / "cells.svg")
    assert out.read_text() == "drawn\n"
    assert (fake.parent / "args").read_text().split()[0] == "-Tsvg"
    assert (fake.parent / "input").read_text() == genotype_dot(resolve("DARTS_V1"))


def test_engine_dot_without_graphviz_is_an_error(tmp_path, no_dot):
    with pytest.raises(DrawingError, match="dot program is not on PATH"):
        draw_genotype(resolve("DARTS_V2"), tmp_path / "c.png", engine="dot")


def test_unknown_format(tmp_path):
    with pytest.raises(DrawingError, match="unknown drawing format 'gif'"):
        draw_genotype(resolve("DARTS_V2"), tmp_path / "c.gif")


def test_alpha_heatmap(tmp_path):
    rows = [[0.0, 1.0, 2.0], [3.0, 3.0, 3.0]]
    weights = softmax_rows(rows)
    assert [sum(row) for row in weights] == pytest.approx([1.0, 1.0])
    assert weights[1] == pytest.approx([1 / 3] * 3)
    path = draw_alpha(rows, ["a", "b", "c"], [("x", "n0"), ("n0", "n1")], tmp_path / "a.svg",
                      "α")
    text = path.read_text()
    assert "x→n0" in text and "n0→n1" in text
    with pytest.raises(DrawingError, match="expected 2 edges x 2 ops"):
        draw_alpha(rows, ["a", "b"], [("x", "n0"), ("n0", "n1")], tmp_path / "b.png", "α")


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    """A real (tiny) search run directory."""
    from spacec.runtime.search.config import load_config
    from spacec.runtime.search.loop import start_search

    threads = torch.get_num_threads()
    tmp_path = tmp_path_factory.mktemp("search")
    cfg = load_config("quick", {
        "space.name": "darts_cnn", "space.optional_overrides": {"C": 4, "layers": 3},
        "data.limit": 32, "data.batch_size": 16, "optim.epochs": 1, "run.threads": 1,
        "run.out": str(tmp_path)})
    yield start_search(cfg).run_dir
    torch.set_num_threads(threads)


def test_draw_run_of_a_search(search_run, no_dot):
    written = draw_run(search_run)
    names = sorted(path.name for path in written)
    assert names == ["alpha_normal.png", "alpha_reduce.png", "cell_normal.png",
                     "cell_reduce.png"]
    for path in written:
        assert path.parent == Path(search_run)
        assert path.read_bytes().startswith(MAGIC[".png"])


def test_draw_run_of_a_training_run(tmp_path, no_dot):
    folder = tmp_path / "train-run"
    folder.mkdir()
    (folder / "genotype.json").write_text(resolve("DARTS_V2").to_json())
    assert sorted(p.name for p in draw_run(folder)) == ["cell_normal.png", "cell_reduce.png"]


def test_cli(tmp_path, no_dot):
    runner = CliRunner()
    result = runner.invoke(main, ["show", "DARTS_V2", "-o", str(tmp_path / "v2.pdf"),
                                  "--cell", "normal"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "v2.pdf").read_bytes().startswith(MAGIC[".pdf"])
    missing_output = runner.invoke(main, ["show", "DARTS_V2"])
    assert missing_output.exit_code == 2
    assert "-o FILE" in missing_output.output
    bad_cell = runner.invoke(main, ["show", "DARTS_V2", "-o", str(tmp_path / "x.png"),
                                    "--cell", "middle"])
    assert bad_cell.exit_code == 1
    assert "no cell type 'middle'" in bad_cell.output
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    result = runner.invoke(main, ["show", str(bad_json), "-o", str(tmp_path / "y.png")])
    assert result.exit_code == 1 and "not valid JSON" in result.output
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "genotype.json").write_text(json.dumps(resolve("DARTS_V1").to_dict()))
    drawn = runner.invoke(main, ["show", str(folder)])
    assert drawn.exit_code == 0, drawn.output
    assert "cell_normal.png" in drawn.output
