"""`spacec search` and `spacec derive`: architecture search runs and genotypes from α.

Registered on the `spacec` group at the bottom of spacec/cli.py. This module imports spacec.cli
only when a command runs (spacec.cli imports this module, and `python -m spacec.cli` runs it as
__main__), and the runtime (torch) likewise, so `import spacec` stays torch-free.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from spacec.load import parse_overrides

# runtime.architect.ARCH_MODES and ARCH_ORDERS (tests check they agree; importing them here
# would import torch).
MODES = ("bilevel", "coordinate", "joint")
ORDERS = ("1", "2")

# CLI option -> dotted config key (runtime.config); options left unset keep the config's value.
OPTION_KEYS = {
    "data": "data.name",
    "data_dir": "data.data_dir",
    "order": "arch.order",
    "mode": "arch.mode",
    "seed": "run.seed",
    "epochs": "optim.epochs",
    "batch_size": "data.batch_size",
    "limit": "data.limit",
    "device": "run.device",
    "out": "run.out",
    "checkpoint_every": "run.checkpoint_every",
    "threads": "run.threads",
}
# What --resume accepts besides the run directory.
RESUME_OPTIONS = ("resume", "device", "quiet")

# The same option as spacec.cli.set_option.
set_option = click.option(
    "--set", "sets", multiple=True, metavar="NAME=VALUE",
    help="Override a parameter of the space (repeatable), e.g. --set C=36 --set layers=20.",
)


def user_errors(command: Callable) -> Callable:
    """spacec.cli.user_errors, looked up when the command runs."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from spacec.cli import user_errors as clean_exits

        return clean_exits(command)(*args, **kwargs)

    return wrapper


@click.command()
@click.argument("space", required=False)
@click.option("--config", "config_name", default="quick", show_default=True,
              help="A preset (quick: a few minutes on 2 CPU cores; paper: the DARTS paper's "
                   "settings; a sequence space's are rnn_quick and rnn_paper) or a YAML file.")
@click.option("--data", help="Dataset: sample (embedded CIFAR-10 subset; a WikiText-2 slice for "
              "a sequence space), cifar10, imagefolder; ptb, wikitext2 (sequence spaces).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the dataset lives (cifar10 is downloaded there when absent; ptb, "
                   "wikitext2: a folder with train.txt, valid.txt and test.txt).")
@click.option("--order", type=click.Choice(ORDERS), help="1: first-order α gradient, "
              "2: second order (one unrolled SGD step).")
@click.option("--mode", type=click.Choice(MODES), help="bilevel (DARTS), or the paper's "
              "ablations: coordinate descent or joint optimisation on train∪val.")
@click.option("--seed", type=int, help="Seed of weights, α, data order and augmentation.")
@click.option("--epochs", type=int, help="Search epochs.")
@click.option("--batch-size", type=int, help="Images (text: columns) per batch (w and α "
              "batches alike).")
@click.option("--limit", type=int, help="Use only the first N training images (text: the first "
              "N tokens of each split).")
@click.option("--device", help="cpu, cuda or cuda:N.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Parent folder of the run directory.  [config default: runs]")
@click.option("--checkpoint-every", type=int, help="Also checkpoint every N steps.")
@click.option("--threads", type=int, help="CPU threads for torch.")
@set_option
@click.option("--cfg", "assignments", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Set any config field (repeatable), e.g. --cfg optim.lr=0.05.")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path),
              help="Continue the run in this directory from its last checkpoint.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
@user_errors
def search(ctx: click.Context, space: str | None, config_name: str, sets: tuple[str, ...],
           assignments: tuple[str, ...], resume: Path | None, quiet: bool, **options: Any) -> None:
    """Search an architecture in SPACE (default: darts_cnn) with DARTS.

    Writes a run directory (config.yaml, metrics.jsonl, alphas/, genotype.json, checkpoint.pt)
    and prints the derived genotype.
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from runtime.search import resume_search, start_search

    with logging_redirect_tqdm():
        if resume is not None:
            reject_with_resume(ctx)
            result = resume_search(resume, device=options["device"], quiet=quiet)
        else:
            cfg = search_config(space, config_name, sets, assignments, options)
            result = start_search(cfg, quiet=quiet)
    from runtime.show import draw_run

    pictures = draw_run(result.run_dir)  # the derived cells and the α heatmaps, as PNG
    click.echo(str(result.genotype))
    click.echo(f"pictures: {', '.join(path.name for path in pictures)}")
    click.echo(f"run directory: {result.run_dir}")


def reject_with_resume(ctx: click.Context) -> None:
    given = [
        name for name in ctx.params
        if name not in RESUME_OPTIONS
        and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    ]
    if given:
        names = ", ".join(_option_name(ctx, name) for name in given)
        raise click.UsageError(f"--resume continues a run with its recorded configuration; "
                               f"drop {names} (only --device and --quiet apply)")


def _option_name(ctx: click.Context, name: str) -> str:
    for param in ctx.command.params:
        if param.name == name:
            return param.opts[0] if param.opts[0].startswith("-") else param.name.upper()
    return name


def search_config(space: str | None, config_name: str, sets: tuple[str, ...],
                  assignments: tuple[str, ...], options: dict[str, Any]):
    """The command line's options mapped onto the chosen preset or YAML file."""
    from runtime.config import load_config, parse_assignment, presets

    overrides: dict[str, Any] = dict(parse_assignment(text) for text in assignments)
    if space is not None:
        overrides["space.name"] = space_reference(space)
        config_name = space_preset(config_name, space, presets())
    for option, key in OPTION_KEYS.items():
        value = options.get(option)
        if value is None:
            continue
        if option == "order":
            value = int(value)
        elif option == "data_dir":
            value = str(Path(value).expanduser().resolve())
        elif option == "out":
            value = str(value)
        overrides[key] = value
    for name, value in parse_overrides(sets).items():
        overrides[f"space.overrides.{name}"] = value
    return load_config(config_name, overrides)


def space_preset(config_name: str, space: str, available: Any) -> str:
    """The preset `config_name` means for SPACE: a sequence space's own (``rnn_quick``) if any."""
    from runtime.config import domain_preset
    from spacec.load import compile_file, locate

    return domain_preset(config_name, compile_file(locate(space)).spec.domain, available)


def space_reference(space: str) -> str:
    """A path stays valid from any folder (for --resume and derive); shipped names stay names."""
    path = Path(space).expanduser()
    return str(path.resolve()) if path.is_file() else space


@click.command()
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
    from runtime.search import derive_from_alphas, derive_from_run

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
