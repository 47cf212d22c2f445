"""`spacec train`, `spacec select`, `spacec show` and `spacec export`: derived networks.

The runtime (torch) is imported when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from spacec.cli.app import main, user_errors
from spacec.cli.launch import start_processes
from spacec.cli.options import config_overrides, reject_with_resume, run_options, space_preset

EXPORT_FORMATS = ("torchscript", "onnx")


@main.command()
@click.argument("space", required=False)
@click.option(
    "--genotype",
    metavar="GENOTYPE",
    help="The architecture: a preset (DARTS_V2), a genotype.json file or a search run directory.",
)
@click.option(
    "--config",
    "config_name",
    default="quick",
    show_default=True,
    help="A preset (quick: minutes on a laptop; paper: the DARTS CIFAR-10 "
    "evaluation, or PTB for a sequence space, whose presets are rnn_quick and rnn_paper; "
    "imagenet: the mobile setting) or a YAML file.",
)
@run_options(distributed=True)
@click.option(
    "--resume",
    type=click.Path(file_okay=False, path_type=Path),
    help="Continue the run in this directory from its last checkpoint.",
)
@click.pass_context
@user_errors
def train(
    ctx: click.Context,
    space: str | None,
    genotype: str | None,
    config_name: str,
    sets: tuple[str, ...],
    assignments: tuple[str, ...],
    resume: Path | None,
    quiet: bool,
    **options: Any,
) -> None:
    """Train the derived network of a genotype in SPACE from scratch (DARTS Sect. 3.2).

    Writes a run directory (config.yaml, genotype.json, metrics.jsonl, checkpoint.pt, best.pt,
    report.json) and prints the report: test accuracy, parameters, multiply-adds, time. Under
    torchrun (or with --nproc-per-node) every process trains on its share of each batch, the
    evaluation is summed over all of them, and rank 0 writes the run directory.
    """
    import sys

    from tqdm.contrib.logging import logging_redirect_tqdm

    from spacec.runtime.run.distributed import is_main_process
    from spacec.runtime.train.config import load_train_config, preset_for
    from spacec.runtime.train.loop import describe_report, resume_training, start_training

    nproc = options.pop("nproc_per_node")
    if resume is not None:
        reject_with_resume(ctx)
    else:
        if space is None or genotype is None:
            raise click.UsageError("give a SPACE and --genotype GENOTYPE (or --resume RUN_DIR)")
        cfg = load_train_config(
            space_preset(config_name, space, preset_for),
            config_overrides(space, sets, assignments, options),
        )
    if start_processes(nproc, sys.argv[1:]):
        return
    with logging_redirect_tqdm():
        if resume is not None:
            result = resume_training(resume, device=options["device"], quiet=quiet)
        else:
            result = start_training(cfg, genotype, quiet=quiet)
    if not is_main_process():
        return  # rank 0 prints the report
    for line in describe_report(result.report):
        click.echo(line)


@main.command("select")
@click.argument("candidates", nargs=-1, required=True)
@click.option(
    "--space",
    help="Space for candidates that are not run directories "
    "(a run directory's own space is used otherwise).  [config default: darts_cnn]",
)
@click.option(
    "--config",
    "config_name",
    default="quick",
    show_default=True,
    help="A selection preset (quick; paper: 100 epochs on CIFAR-10, C=16, 8 cells) or a YAML file.",
)
@run_options()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the JSON summary here.",
)
@user_errors
def select_command(
    candidates: tuple[str, ...],
    space: str | None,
    config_name: str,
    sets: tuple[str, ...],
    assignments: tuple[str, ...],
    output: Path | None,
    quiet: bool,
    **options: Any,
) -> None:
    """Pick the best of several search runs by validation accuracy (DARTS Sect. 3.2).

    Each CANDIDATE (a search run directory, a genotype.json or a preset) is trained briefly from
    scratch and evaluated on a held-out part of the training set, never on the test set.
    """
    import json

    from tqdm.contrib.logging import logging_redirect_tqdm

    from spacec.files import atomic_write_text, check_writable
    from spacec.runtime.tools.select import describe_selection, load_select_config, select

    if output is not None:
        check_writable(output)  # before the candidates train, not after
    cfg = load_select_config(config_name, config_overrides(space, sets, assignments, options))
    with logging_redirect_tqdm():
        summary = select(candidates, cfg, quiet=quiet)
    if output is not None:
        atomic_write_text(output, json.dumps(summary, indent=2) + "\n")
    for line in describe_selection(summary):
        click.echo(line)


@main.command()
@click.argument("reference")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The drawing (.png, .svg or .pdf). Without it, a run directory gets "
    "cell_<type>.png (and alpha_<type>.png for a search) inside it.",
)
@click.option(
    "--cell", "cells", multiple=True, metavar="TYPE", help="Draw only this cell type (repeatable)."
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "dot", "matplotlib"]),
    default="auto",
    show_default=True,
    help="auto: Graphviz's dot when installed, else matplotlib.",
)
@user_errors
def show(reference: str, output: Path | None, cells: tuple[str, ...], engine: str) -> None:
    """Draw the cells of a genotype: a preset, a genotype.json file or a run directory."""
    from spacec.arch.genotype import resolve
    from spacec.runtime.tools.show import draw_genotype, draw_run

    if output is None:
        if not Path(reference).expanduser().is_dir():
            raise click.UsageError(
                f"{reference} is not a run directory; say where to draw it "
                "with -o FILE (.png, .svg or .pdf)"
            )
        if cells or engine != "auto":
            raise click.UsageError("--cell and --engine apply with -o FILE")
        written = draw_run(Path(reference).expanduser())
    else:
        written = [draw_genotype(resolve(reference), output, cells or None, engine)]
    for path in written:
        click.echo(str(path))


@main.command("export")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(EXPORT_FORMATS),
    required=True,
    help="torchscript (torch.jit.trace) or onnx (needs the 'export' extra).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The exported file.",
)
@click.option(
    "--checkpoint",
    "which",
    type=click.Choice(["last", "best"]),
    default="last",
    show_default=True,
    help="For a run directory: checkpoint.pt (the final weights) "
    "or best.pt (the epoch with the best test accuracy).",
)
@user_errors
def export_command(source: Path, fmt: str, output: Path, which: str) -> None:
    """Export a trained network (a `spacec train` run directory or checkpoint file).

    The exported model is run on a random batch and must match PyTorch's outputs.
    """
    from spacec.runtime.tools.export import export

    result = export(source, fmt, output, which)
    check = (
        "not checked numerically"
        if result.max_abs_diff is None
        else f"max |Δ| vs PyTorch {result.max_abs_diff:.2e} ({result.checked_with})"
    )
    click.echo(f"wrote {result.path} ({result.format}; {check})")
