"""The options `spacec search`, `train` and `select` share, and how they map onto a configuration.

One table, `OPTION_KEYS`, says which dotted configuration key each option sets; options left unset
keep the preset's (or YAML file's) value. `config_overrides` turns a command line into the dotted
overrides that `load_config` applies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from spacec.arch.methods import method_names
from spacec.load import CompiledSpace, compile_file, locate, parse_overrides

# The search strategies and α-gradient orders (spacec.runtime.search.strategy.STRATEGIES and
# spacec.runtime.search.architect.ARCH_ORDERS; a test checks they agree: importing them here
# would import torch).
MODES = ("bilevel", "coordinate", "joint", "sample", "single")
ORDERS = ("1", "2")
# spacec.runtime.run.config.MEMORY_SETTINGS and PRECISIONS (a test checks they agree).
MEMORY_SETTINGS = ("fast", "balanced", "low")
PRECISIONS = ("fp32", "bf16")

# CLI option -> dotted config key.
OPTION_KEYS = {
    "method": "method.name",
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
    "sync_bn": "run.sync_bn",
    "memory": "run.memory",
    "precision": "run.precision",
    "channels_last": "run.channels_last",
    "compile": "run.compile",
}
# How an option's value is written into the configuration.
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "order": int,
    "data_dir": lambda value: str(Path(value).expanduser().resolve()),
    "out": str,
}
# What --resume accepts besides the run directory.
RESUME_OPTIONS = ("resume", "device", "quiet", "nproc_per_node")

set_option = click.option(
    "--set", "sets", multiple=True, metavar="NAME=VALUE",
    help="Override a parameter of the space (repeatable), e.g. --set C=36 --set layers=20.",
)

_DATA_HELP = ("Dataset: sample (embedded CIFAR-10 subset; a WikiText-2 slice for a sequence "
              "space), cifar10, imagefolder, imagenet (training only); ptb, wikitext2 (sequence "
              "spaces).")
_SHARED = [
    click.option("--data", help=_DATA_HELP),
    click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                 help="Where the dataset lives (cifar10 is downloaded there when absent; ptb, "
                      "wikitext2: a folder with train.txt, valid.txt and test.txt)."),
    click.option("--seed", type=int, help="Seed of weights, α, data order and augmentation."),
    click.option("--epochs", type=int, help="Epochs."),
    click.option("--batch-size", type=int, help="Images (text: columns) per batch."),
    click.option("--limit", type=int, help="Use only the first N training images (text: the "
                 "first N tokens of each split)."),
    click.option("--device", help="cpu, cuda or cuda:N."),
    click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                 help="Parent folder of the run directory.  [config default: runs]"),
    click.option("--checkpoint-every", type=int, help="Also checkpoint every N steps."),
    click.option("--threads", type=int, help="CPU threads for torch."),
    click.option("--precision", type=click.Choice(PRECISIONS),
                 help="fp32, or bf16: the weights' forward passes under bf16 autocast (α, its "
                      "softmax and the architecture step stay fp32).  [config default: fp32]"),
    click.option("--channels-last/--no-channels-last", default=None,
                 help="NHWC tensors (default) or NCHW."),
    click.option("--compile/--no-compile", "compile", default=None,
                 help="torch.compile the network the weight (training) step calls.  [config "
                      "default: off]"),
    set_option,
    click.option("--cfg", "assignments", multiple=True, metavar="SECTION.KEY=VALUE",
                 help="Set any config field (repeatable), e.g. --cfg optim.lr=0.05."),
    click.option("-q", "--quiet", is_flag=True, help="No progress bar."),
]
# Runs on several processes (spacec.runtime.run.distributed): `search` and `train`.
_DISTRIBUTED = [
    click.option("--nproc-per-node", type=int, metavar="N",
                 help="Run on N processes of this machine, started by torchrun (the same as "
                      "`torchrun --standalone --nproc-per-node N -m spacec ...`). The batch "
                      "size stays the global batch: each process reads 1/N of it."),
    click.option("--sync-bn", is_flag=True, default=None,
                 help="On several CUDA processes: BatchNorm statistics over the global batch "
                      "(SyncBatchNorm). Default: each process normalises with its own part "
                      "(on the CPU, the only choice)."),
]
_SEARCH_ONLY = [
    click.option("--method", type=click.Choice(method_names()),
                 help="The search method (`spacec methods` lists them); its settings for the "
                      "preset are merged in."),
    click.option("--order", type=click.Choice(ORDERS), help="1: first-order α gradient, "
                 "2: second order (one unrolled SGD step)."),
    click.option("--memory", type=click.Choice(MEMORY_SETTINGS),
                 help="What the supernet keeps for the backward pass, same arithmetic: fast "
                      "(everything), balanced (recomputes the cheap candidates), low "
                      "(recomputes every edge: least memory, slower).  [config default: "
                      "fast]"),
    click.option("--mode", type=click.Choice(MODES), help="bilevel (DARTS), or the paper's "
                 "ablations: coordinate descent or joint optimisation on train∪val; single "
                 "(SNAS: one batch of the weights split), sample (random_ws)."),
]


def run_options(search: bool = False, distributed: bool = False) -> Callable:
    """Decorator adding the shared options (and the architecture options with `search`, the
    options of runs on several processes with `distributed`)."""
    options = (_SEARCH_ONLY if search else []) + _SHARED + (_DISTRIBUTED if distributed else [])

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def config_overrides(space: str | None, sets: tuple[str, ...], assignments: tuple[str, ...],
                     options: dict[str, Any]) -> dict[str, Any]:
    """A command line as dotted overrides of a configuration (`--cfg` first, options after)."""
    from spacec.runtime.run.config import parse_assignment

    overrides: dict[str, Any] = dict(parse_assignment(text) for text in assignments)
    if space is not None:
        overrides["space.name"] = space_reference(space)
    for option, key in OPTION_KEYS.items():
        value = options.get(option)
        if value is not None:
            overrides[key] = _CONVERT.get(option, lambda v: v)(value)
    for name, value in parse_overrides(sets).items():
        overrides[f"space.overrides.{name}"] = value
    return overrides


def compile_space(space: str, sets: tuple[str, ...]) -> CompiledSpace:
    return compile_file(locate(space), parse_overrides(sets))


def space_reference(space: str) -> str:
    """A path stays valid from any folder (for --resume and derive); shipped names stay names."""
    path = Path(space).expanduser()
    return str(path.resolve()) if path.is_file() else space


def space_preset(config_name: str, space: str, preset_for: Callable[[str, str], str]) -> str:
    """The preset `config_name` means for SPACE: its domain's own (``rnn_quick``) if any."""
    return preset_for(config_name, compile_file(locate(space)).spec.domain)


def reject_with_resume(ctx: click.Context) -> None:
    """--resume continues a run as recorded: other options (but --device, -q) are refused."""
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
