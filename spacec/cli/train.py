"""`spacec train`, `spacec select`, `spacec show` and `spacec export`: derived networks.

The runtime (torch) is imported when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from spacec.cli.app import main, user_errors
from spacec.cli.launch import split_batch, start_processes
from spacec.cli.options import (
    assignments_of,
    config_overrides,
    given,
    reject_with_resume,
    run_options,
)
from spacec.load import parse_overrides

EXPORT_FORMATS = ("torchscript", "onnx")


@main.command()
@click.argument("space", required=False)
@click.option(
    "--genotype",
    metavar="GENOTYPE",
    help="The architecture: a preset (DARTS_V2), a genotype.json file or a search run directory "
    "(which also gives the space, when SPACE is left out, and its parameters).",
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

    Every epoch is evaluated on the validation split, which chooses the weights kept (best.pt);
    the test set is evaluated once, at the end. Prints the effective configuration and one line
    per epoch (on stderr), then the report; writes a run directory (config.yaml, genotype.json,
    metrics.jsonl, checkpoint.pt, best.pt, report.json, status.json). Under torchrun (or with
    --nproc-per-node) every process trains on its share of each batch, the evaluation is summed
    over all of them, and rank 0 writes the run directory.
    """
    import sys

    from tqdm.contrib.logging import logging_redirect_tqdm

    from spacec.runtime import api
    from spacec.runtime.configure import assemble
    from spacec.runtime.run.distributed import is_main_process

    nproc = options.pop("nproc_per_node")
    params, overrides = parse_overrides(sets), assignments_of(assignments)
    if resume is not None:
        reject_with_resume(ctx)
    elif genotype is None:
        raise click.UsageError("give --genotype GENOTYPE (and a SPACE unless the genotype is a "
                               "search run), or --resume RUN_DIR")
    elif nproc not in (None, 1) and space is not None:  # errors reported once, not per process
        split_batch(assemble("train", space, config_name, given(options), params, overrides,
                             "--set").cfg, nproc)
    if start_processes(nproc, sys.argv[1:]):
        return
    with logging_redirect_tqdm():
        result = api.train(space, genotype, config=config_name, params=params,
                           overrides=overrides, resume=resume, verbose=is_main_process(),
                           progress=not quiet, params_label="--set", **given(options))
    if not is_main_process():
        return  # rank 0 prints the report
    for line in api.describe_training(result.report):
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

    from tqdm.contrib.logging import logging_redirect_tqdm

    from spacec.files import atomic_write_text, check_writable
    from spacec.runtime.api import screen
    from spacec.runtime.run.console import showing
    from spacec.runtime.run.rundir import strict_json
    from spacec.runtime.tools.select import describe_selection, load_select_config, select

    if output is not None:
        check_writable(output)  # before the candidates train, not after
    cfg = load_select_config(config_name, config_overrides(space, sets, assignments, options))
    with logging_redirect_tqdm(), showing(screen(True)):  # one line per epoch of each candidate
        summary = select(candidates, cfg, quiet=quiet)
    if output is not None:
        atomic_write_text(output, strict_json(summary, indent=2) + "\n")
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
    type=click.Choice(["best", "last"]),
    default="best",
    show_default=True,
    help="For a run directory: best.pt (the weights the run kept: the best validation epoch, "
    "or the last without a validation split) or checkpoint.pt (the last epoch's).",
)
@user_errors
def export_command(source: Path, fmt: str, output: Path, which: str) -> None:
    """Export a trained network (a `spacec train` run directory or checkpoint file).

    The exported model takes RGB images in [0, 1] and normalises them itself; its class names,
    input size and preprocessing are stored inside (`spacec predict` reads them). It is run on a
    random batch and must match PyTorch's outputs.
    """
    from spacec.runtime.tools.export import export

    result = export(source, fmt, output, which)
    check = (
        "not checked numerically"
        if result.max_abs_diff is None
        else f"max |Δ| vs PyTorch {result.max_abs_diff:.2e} ({result.checked_with})"
    )
    click.echo(f"wrote {result.path} ({result.format}; {check})")


@main.command("predict")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False,
                                                                   path_type=Path))
@click.option("--top", type=int, default=1, show_default=True,
              help="Show the N most probable classes of each image.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
@user_errors
def predict_command(model: Path, images: tuple[Path, ...], top: int, as_json: bool) -> None:
    """Classify image files with a trained network.

    MODEL is a `spacec train` run directory (the weights it kept), a checkpoint, or a model
    written by `spacec export` (.pt TorchScript, .onnx). Each image is resized and cropped as
    the run's test images were; the classes are the training data's.
    """
    import json

    from spacec.runtime.tools.predict import describe_predictions, predict

    if top < 1:
        raise click.UsageError("--top must be at least 1")
    predictions = predict(model, list(images), top)
    if as_json:
        for p in predictions:
            click.echo(json.dumps({"path": str(p.path), "classes": [
                {"class": name, "probability": probability} for name, probability in p.ranked]}))
        return
    for line in describe_predictions(predictions):
        click.echo(line)

