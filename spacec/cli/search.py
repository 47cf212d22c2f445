"""`spacec search` and `spacec derive`: architecture search runs, and genotypes from α.

The runtime (torch) is imported when `search` runs; `derive` needs only the compiler and the
run directory's files, so it works without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from spacec.cli.app import main, user_errors
from spacec.cli.launch import start_processes
from spacec.cli.options import (
    config_overrides,
    reject_with_resume,
    run_options,
    set_option,
    space_preset,
)
from spacec.load import parse_overrides


@main.command()
@click.argument("space", required=False)
@click.option("--config", "config_name", default="quick", show_default=True,
              help="A preset (quick: a few minutes on 2 CPU cores; paper: the DARTS paper's "
                   "settings; a sequence space's are rnn_quick and rnn_paper) or a YAML file.")
@run_options(search=True, distributed=True)
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path),
              help="Continue the run in this directory from its last checkpoint.")
@click.pass_context
@user_errors
def search(ctx: click.Context, space: str | None, config_name: str, sets: tuple[str, ...],
           assignments: tuple[str, ...], resume: Path | None, quiet: bool, **options: Any) -> None:
    """Search an architecture in SPACE (default: darts_cnn) with DARTS.

    Writes a run directory (config.yaml, metrics.jsonl, alphas/, genotype.json, checkpoint.pt)
    and prints the derived genotype. Under torchrun (or with --nproc-per-node) every process
    searches its share of each batch and rank 0 writes the run directory.
    """
    import sys

    from tqdm.contrib.logging import logging_redirect_tqdm

    from spacec.runtime.run.distributed import is_main_process
    from spacec.runtime.search.loop import resume_search, start_search
    from spacec.runtime.tools.show import draw_run

    nproc = options.pop("nproc_per_node")
    if resume is not None:
        reject_with_resume(ctx)
    else:
        cfg = search_config(space, config_name, sets, assignments, options)  # errors reported once
    if start_processes(nproc, sys.argv[1:]):
        return
    with logging_redirect_tqdm():
        if resume is not None:
            result = resume_search(resume, device=options["device"], quiet=quiet)
        else:
            result = start_search(cfg, quiet=quiet)
    if not is_main_process():
        return  # rank 0 draws and prints
    pictures = draw_run(result.run_dir)  # the derived cells and the α heatmaps, as PNG
    click.echo(str(result.genotype))
    click.echo(f"pictures: {', '.join(path.name for path in pictures)}")
    click.echo(f"run directory: {result.run_dir}")


def search_config(space: str | None, config_name: str, sets: tuple[str, ...],
                  assignments: tuple[str, ...], options: dict[str, Any]):
    """The command line's options mapped onto the chosen preset or YAML file."""
    from spacec.runtime.search.config import load_config, preset_for

    if space is not None:
        config_name = space_preset(config_name, space, preset_for)
    return load_config(config_name, config_overrides(space, sets, assignments, options))


@main.command()
@click.argument("target")
@click.option("--epoch", type=int, help="Run directory: α after this epoch (default: the latest; "
              "0 is the initial α).")
@click.option("--alphas", type=click.Path(dir_okay=False, path_type=Path),
              help="Space: α as JSON {cell type: [[...] per edge]} in the space's edge order.")
@click.option("--json", "as_json", is_flag=True, help="Print the genotype as JSON.")
@set_option
@user_errors
def derive(target: str, epoch: int | None, alphas: Path | None, as_json: bool,
           sets: tuple[str, ...]) -> None:
    """The genotype of a run directory's α, or of a space's α given with --alphas.

    TARGET is a run directory written by `spacec search`, or a space (shipped name or .space
    path) together with --alphas FILE.
    """
    from spacec.runtime.run.derivation import derive_from_alphas, derive_from_run

    if Path(target).expanduser().is_dir():
        if alphas is not None or sets:
            raise click.UsageError("--alphas and --set apply to a space, not to a run directory")
        genotype, _ = derive_from_run(Path(target), epoch)
    else:
        if alphas is None:
            raise click.UsageError(f"{target} is not a run directory; to derive from a space, "
                                   "give its α with --alphas FILE")
        if epoch is not None:
            raise click.UsageError("--epoch applies to a run directory")
        genotype = derive_from_alphas(target, alphas, parse_overrides(sets))
    click.echo(genotype.to_json() if as_json else str(genotype))
