"""`spacec search`, `spacec derive` and `spacec methods`: architecture search runs, genotypes
from α, and the search methods.

The runtime (torch) is imported when `search` runs; `derive` needs only the compiler and the
run directory's files, and `methods` only the methods' descriptions (spacec.arch.methods), so
both work without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from spacec.arch.methods import method_names
from spacec.cli.app import main, user_errors
from spacec.cli.launch import split_batch, start_processes
from spacec.cli.options import (
    assignments_of,
    given,
    reject_with_resume,
    run_options,
    set_option,
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
    """Search an architecture in SPACE (default: darts_cnn) with DARTS or --method NAME.

    Prints the effective configuration and one line per epoch (on stderr), then the derived
    genotype; writes a run directory (config.yaml, metrics.jsonl, alphas/, genotype.json,
    checkpoint.pt, status.json) with pictures of the cells and of α. Under torchrun (or with
    --nproc-per-node) every process searches its share of each batch and rank 0 writes the run
    directory.
    """
    import sys

    from tqdm.contrib.logging import logging_redirect_tqdm

    from spacec.runtime import api
    from spacec.runtime.run.distributed import is_main_process
    from spacec.runtime.run.events import add_pictures
    from spacec.runtime.tools.show import draw_run

    nproc = options.pop("nproc_per_node")
    params, overrides = parse_overrides(sets), assignments_of(assignments)
    if resume is not None:
        reject_with_resume(ctx)
    elif nproc not in (None, 1):  # the configuration's errors reported once, not per process
        split_batch(search_config(space, config_name, sets, assignments, options), nproc)
    if start_processes(nproc, sys.argv[1:]):
        return
    with logging_redirect_tqdm():
        result = api.search(space, config=config_name, params=params, overrides=overrides,
                            resume=resume, verbose=is_main_process(), progress=not quiet,
                            params_label="--set", **given(options))
    if not is_main_process():
        return  # rank 0 draws and prints
    pictures = draw_run(result.run_dir)  # the derived cells and the α heatmaps, as PNG
    add_pictures(result.run_dir, pictures, result.config.optim.epochs)  # TensorBoard, if on
    click.echo(str(result.genotype))
    click.echo(f"pictures: {', '.join(path.name for path in pictures)}")
    click.echo(f"run directory: {result.run_dir}")


def search_config(space: str | None, config_name: str, sets: tuple[str, ...],
                  assignments: tuple[str, ...], options: dict[str, Any]):
    """The command line's options mapped onto the chosen preset or YAML file."""
    from spacec.runtime.configure import assemble

    return assemble("search", space, config_name, given(options), parse_overrides(sets),
                    assignments_of(assignments), "--set").cfg


@main.command()
@click.argument("target")
@click.option("--epoch", type=int, help="Run directory: α after this epoch (default: the latest; "
              "0 is the initial α).")
@click.option("--alphas", type=click.Path(dir_okay=False, path_type=Path),
              help="Space: α as JSON {cell type: [[...] per edge]} in the space's edge order.")
@click.option("--json", "as_json", is_flag=True, help="Print the genotype as JSON.")
@click.option("--method", "method_name", type=click.Choice(method_names()),
              help="Space: rank candidates as this method does (default: DARTS's softmax(α)).")
@set_option
@user_errors
def derive(target: str, epoch: int | None, alphas: Path | None, as_json: bool,
           method_name: str | None, sets: tuple[str, ...]) -> None:
    """The genotype of a run directory's α, or of a space's α given with --alphas.

    TARGET is a run directory written by `spacec search` (derived as its method derives), or a
    space (shipped name or .space path) together with --alphas FILE.
    """
    from spacec.runtime.run.derivation import derive_from_alphas, derive_from_run

    if Path(target).expanduser().is_dir():
        if alphas is not None or sets or method_name:
            raise click.UsageError("--alphas, --method and --set apply to a space, not to a run "
                                   "directory")
        genotype, _ = derive_from_run(Path(target), epoch)
    else:
        if alphas is None:
            raise click.UsageError(f"{target} is not a run directory; to derive from a space, "
                                   "give its α with --alphas FILE")
        if epoch is not None:
            raise click.UsageError("--epoch applies to a run directory")
        genotype = derive_from_alphas(target, alphas, parse_overrides(sets), method_name)
    click.echo(genotype.to_json() if as_json else str(genotype))


@main.command()
@click.argument("names", nargs=-1, metavar="[NAME]...", type=click.Choice(method_names()))
@user_errors
def methods(names: tuple[str, ...]) -> None:
    """The search methods (all, or NAMES): citation, what each changes, its parameters'
    defaults, the spaces and strategies it applies to, and how it derives.

    `spacec search SPACE --method NAME` runs one, with its settings for the preset merged in;
    its parameters are the configuration's `method` section (e.g. --cfg method.k=2). A space
    may name its own (`method pc_darts(k=2)` in the .space file); the command line wins.
    """
    from spacec.arch.methods import describe

    for index, name in enumerate(names or method_names()):
        if index:
            click.echo()
        for line in method_lines(describe(name)):
            click.echo(line)


def method_lines(info) -> list[str]:
    """A method's description (a `spacec.arch.methods.MethodInfo`) as lines for a terminal."""
    defaults = ", ".join(f"{key}={value}" for key, value in info.defaults().items())
    applies = f"{', '.join(info.domains)} spaces"
    if info.domain_notes:
        applies += f"; not the others: {info.domain_notes}"
    lines = [f"{info.name}: {info.citation}",
             f"  changes:    {info.summary}",
             f"  defaults:   {defaults or '-'}",
             f"  applies to: {applies}"]
    presets = method_presets(info.name)
    if presets:
        lines.append(f"  presets:    {', '.join(presets)} (runtime/configs/method_{info.name}.yaml)")
    if info.shares_weights:
        lines.append(f"  strategies: {', '.join(info.strategies)}; α-gradient order "
                     f"{' or '.join(map(str, info.orders))}")
    if info.strengths is None:
        lines.append("  derivation: none (no α): the run records its genotype")
    else:
        lines.append(f"  derivation: the space's rule on {info.strengths} weights")
    if info.official_rule:
        lines.append(f"              derive=official: as the official code, {info.official_rule}")
    return lines


def method_presets(name: str) -> list[str]:
    """The presets a method has settings for (runtime/configs/method_<name>.yaml; no torch)."""
    from importlib import resources

    import yaml

    entry = resources.files("spacec.runtime.configs") / f"method_{name}.yaml"
    if not entry.is_file():
        return []
    data = yaml.safe_load(entry.read_text(encoding="utf-8"))
    return list(data) if isinstance(data, dict) else []
