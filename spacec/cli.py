"""The `spacec` command line: one click group; every command maps its options onto one config.

Errors a user can cause (a malformed space, a missing dataset, a bad genotype, ...) end with a
message and a non-zero exit status, never a traceback: exit 2 for a space or usage error, 1 for a
run that failed (data, checkpoint, NaN loss).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from spacec import __version__
from spacec.errors import SpaceError
from spacec.load import compile_file, locate, parse_overrides, shipped_spaces

log = logging.getLogger("spacec")


class UserError(click.ClickException):
    """A failure caused by input, reported without a traceback."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"spacec: error: {self.format_message()}", err=True)


def user_errors(command):
    """Turn the project's error types into clean exits."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SpaceError as error:
            click.echo(error.render(), err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("spacec: interrupted", err=True)
            sys.exit(130)
        except click.ClickException:
            raise
        except Exception as error:
            message = _known_error_message(error)
            if message is None:
                raise
            raise UserError(message, exit_code=1) from None

    return wrapper


def _known_error_message(error: Exception) -> str | None:
    """Messages for the runtime's error types (imported lazily: they live on the torch side)."""
    for module, name in _KNOWN_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(error, cls):
            return str(error)
    return None


_KNOWN_ERRORS = (
    ("runtime.data", "DataError"),
    ("runtime.genotype", "GenotypeError"),
    ("runtime.derive", "DerivationError"),
    ("runtime.config", "ConfigError"),
    ("runtime.checkpoint", "CheckpointError"),
    ("runtime.train", "TrainingError"),
    ("runtime.run", "TrainingError"),
    ("runtime.show", "DrawingError"),
    ("runtime.export", "ExportError"),
)


def compile_space(space: str, sets: tuple[str, ...]):
    return compile_file(locate(space), parse_overrides(sets))


set_option = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a parameter of the space (repeatable), e.g. --set C=36 --set layers=20.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spacec")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """spacec: a search-space language and compiler for differentiable architecture search."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


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
    cells = ", ".join(
        f"{name} [{len(c.edges)}, {len(compiled.spec.opset(c.opset).candidates)}]"
        for name, c in ((c.name, c) for c in compiled.spec.cells)
    )
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
    from spacec import ir

    compiled = compile_space(space, sets)
    text = {
        "source": lambda: compiled.discrete_source(genotype) if genotype else compiled.source,
        "dag": lambda: ir.to_json(compiled.ir),
        "dot": lambda: ir.to_dot(compiled.ir),
        "listing": compiled.listing,
    }[emit]()
    write_output(text, output)


def write_output(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    from spacec.files import atomic_write_text

    atomic_write_text(output, text)
    log.info("wrote %s", output)


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
    """Size and shape of SPACE's supernet: weights, α shapes, ops, nodes and edges per cell."""
    compiled = compile_space(space, sets)
    report = space_report(compiled)
    if genotype:
        report["derived"] = derived_report(compiled, genotype)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"space {report['space']} ({report['path']})")
    click.echo(f"parameters: {', '.join(f'{k}={v}' for k, v in report['parameters'].items())}")
    click.echo(f"supernet weights: {report['supernet_weights']:,}")
    for name, cell in report["cells"].items():
        click.echo(
            f"cell {name}: α {cell['alpha_shape']}, {cell['nodes']} nodes, {cell['edges']} searched "
            f"edges{', reduction' if cell['reduction'] else ''}; ops: {', '.join(cell['ops'])}"
        )
    if "derived" in report:
        derived = report["derived"]
        click.echo(
            f"derived network ({derived['genotype']}): {derived['parameters']:,} parameters "
            f"(excluding the auxiliary head), {derived['multiply_adds'] / 1e6:.1f}M multiply-adds "
            f"at {derived['input_shape']}"
        )


def derived_report(compiled, reference: str) -> dict:
    from runtime.flops import count_parameters, multiply_adds

    network = compiled.discrete_network(reference)
    shape = compiled.input_shape
    return {
        "genotype": reference,
        "parameters": count_parameters(network),
        "multiply_adds": multiply_adds(network, shape),
        "input_shape": list(shape),
    }


def space_report(compiled) -> dict:
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
        "cells": cells,
    }


from spacec.cli_search import derive, search  # noqa: E402

main.add_command(search)
main.add_command(derive)

from spacec.cli_train import export_command, select_command, show, train  # noqa: E402

main.add_command(train)
main.add_command(select_command)
main.add_command(show)
main.add_command(export_command)

if __name__ == "__main__":  # pragma: no cover
    main()
