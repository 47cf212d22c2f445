"""`spacec list`, `check`, `compile` and `info`: the compiler's commands.

`list`, `check` and `compile` never import torch. `info` builds the supernet to count its
weights, and the derived network to count its multiply-adds, so it imports the runtime.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from spacec import ir
from spacec.cli.app import main, user_errors, write_output
from spacec.cli.options import compile_space, set_option
from spacec.load import CompiledSpace, shipped_spaces

# Cells `spacec check` names with their α shapes (a generated space may have thousands).
CELLS_LISTED = 10


@main.command("list")
def list_spaces() -> None:
    """The spaces shipped with spacec, one line each."""
    spaces = shipped_spaces()
    width = max(map(len, spaces), default=0) + 2
    for name, path in spaces.items():
        click.echo(f"{name:<{width}}{_summary(path)}")


def _summary(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


@main.command()
@click.argument("space")
@set_option
@user_errors
def check(space: str, sets: tuple[str, ...]) -> None:
    """Check SPACE (a shipped name or a .space path); report every error, compiler-style."""
    compiled = compile_space(space, sets)
    shown = compiled.spec.cells[:CELLS_LISTED]
    cells = ", ".join(
        f"{c.name} [{len(c.edges)}, {len(compiled.spec.opset(c.opset).candidates)}]" for c in shown
    )
    more = len(compiled.spec.cells) - len(shown)
    cells += f", and {more} more cells" if more else ""
    click.echo(f"{compiled.spec.path}: ok ({compiled.name}: {cells})")


@main.command("compile")
@click.argument("space")
@set_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of standard output.",
)
@click.option(
    "--genotype",
    metavar="GENOTYPE",
    help="Emit the standalone derived network for this genotype (a preset such as "
    "DARTS_V2, a genotype.json file or a run directory) instead of the supernet.",
)
@click.option(
    "--emit",
    type=click.Choice(["source", "dag", "dot", "listing"]),
    default="source",
    show_default=True,
    help="source: the PyTorch supernet module; dag: each cell's DAG "
    "as node-link JSON; dot: Graphviz; listing: the IR as text.",
)
@user_errors
def compile_command(
    space: str, sets: tuple[str, ...], genotype: str | None, output: Path | None, emit: str
) -> None:
    """Compile SPACE into a readable PyTorch supernet module (or print its IR).

    With --genotype, emit the derived network instead: a standalone module importing only torch.
    """
    compiled = compile_space(space, sets)
    text = {
        "source": lambda: compiled.discrete_source(genotype) if genotype else compiled.source,
        "dag": lambda: ir.to_json(compiled.ir),
        "dot": lambda: ir.to_dot(compiled.ir),
        "listing": compiled.listing,
    }[emit]()
    write_output(text, output)


@main.command()
@click.argument("space")
@set_option
@click.option(
    "--genotype",
    metavar="GENOTYPE",
    help="Also report the derived network of this genotype: parameters and FLOPs.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
def info(space: str, sets: tuple[str, ...], genotype: str | None, as_json: bool) -> None:
    """Size and shape of SPACE's supernet: weights, α shapes, ops, nodes and edges per cell; the
    search method the space names, if it names one."""
    compiled = compile_space(space, sets)
    report = space_report(compiled)
    if genotype:
        report["derived"] = derived_report(compiled, genotype)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"space {report['space']} ({report['path']})")
    click.echo(f"parameters: {', '.join(f'{k}={v}' for k, v in report['parameters'].items())}")
    if compiled.spec.method is not None:
        click.echo(f"search method: {compiled.spec.method.text()} (the space's default)")
    click.echo(f"supernet weights: {report['supernet_weights']:,}")
    for name, cell in report["cells"].items():
        click.echo(
            f"cell {name}: α {cell['alpha_shape']}, {cell['nodes']} nodes, {cell['edges']} searched "
            f"edges{', reduction' if cell['reduction'] else ''}; ops: {', '.join(cell['ops'])}"
        )
    if "derived" in report:
        derived = report["derived"]
        cost = (
            f", {derived['multiply_adds'] / 1e6:.1f}M multiply-adds at {derived['input_shape']}"
            if "multiply_adds" in derived
            else ""
        )
        click.echo(
            f"derived network ({derived['genotype']}): {derived['parameters']:,} parameters "
            f"(excluding the auxiliary head){cost}"
        )


def derived_report(compiled: CompiledSpace, reference: str) -> dict:
    from spacec.runtime.nn.flops import count_parameters, multiply_adds

    network = compiled.discrete_network(reference)
    report = {"genotype": reference, "parameters": count_parameters(network)}
    if compiled.spec.domain == "image":  # a language model's cost is per token, not per image
        shape = compiled.input_shape
        report |= {"multiply_adds": multiply_adds(network, shape), "input_shape": list(shape)}
    return report


def space_report(compiled: CompiledSpace) -> dict:
    import torch

    torch.manual_seed(0)
    network = compiled.supernet()
    cells = {}
    for cell in compiled.spec.cells:
        ops = compiled.spec.opset(cell.opset).names
        cells[cell.name] = {
            "alpha_shape": [len(cell.edges), len(ops)],
            "inputs": list(cell.inputs),
            "nodes": len(cell.nodes),
            "edges": len(cell.edges),
            "reduction": cell.reduction,
            "ops": list(ops),
            "derive": cell.rule.kind,
            "k": cell.rule.k,
        }
    return {
        "space": compiled.name,
        "path": compiled.spec.path,
        "sha256": compiled.spec.sha256,
        "parameters": dict(compiled.spec.params),
        "supernet_weights": sum(p.numel() for p in network.weights()),
        "alpha_parameters": sum(p.numel() for p in network.arch_parameters().values()),
        "method": None
        if compiled.spec.method is None
        else {"name": compiled.spec.method.name, "params": compiled.spec.method.values()},
        "cells": cells,
    }
