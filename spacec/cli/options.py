"""The options `spacec search`, `train` and `select` share, and how they map onto a configuration.

The options are declared here (click); which dotted configuration key each sets is the one table
the Python API shares, spacec.runtime.configure.OPTION_KEYS (imported when a command runs: it
needs torch). Options left unset keep the preset's (or YAML file's) value. `search` and `train`
hand the command line to the Python API (spacec.runtime.api); `config_overrides` turns it into
the dotted overrides `spacec select` applies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from spacec.arch.methods import method_names
from spacec.cost import AUTO as AUTO_MEMORY
from spacec.load import CompiledSpace, compile_file, locate, parse_overrides

# The search strategies and α-gradient orders (spacec.runtime.search.strategy.STRATEGIES and
# spacec.runtime.search.architect.ARCH_ORDERS; a test checks they agree: importing them here
# would import torch).
MODES = ("bilevel", "coordinate", "joint", "sample", "single")
ORDERS = ("1", "2")
# spacec.runtime.run.config.MEMORY_SETTINGS and PRECISIONS (a test checks they agree).
MEMORY_SETTINGS = ("fast", "balanced", "low")
PRECISIONS = ("fp32", "bf16")

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
                 help="Where the dataset lives (imagefolder: DIR/CLASS/*.png, or DIR/train/CLASS "
                      "with optional val/ and test/ beside it; cifar10 is downloaded there when "
                      "absent; ptb, wikitext2: train.txt, valid.txt and test.txt)."),
    click.option("--val-dir", type=click.Path(file_okay=False, path_type=Path),
                 help="imagefolder: the validation images (class folders), when not val/ "
                      "beside DATA_DIR/train."),
    click.option("--test-dir", type=click.Path(file_okay=False, path_type=Path),
                 help="imagefolder: the test images (class folders), when not test/ beside "
                      "DATA_DIR/train; only reported, never used to choose."),
    click.option("--image-size", type=int, help="Resize every image to N x N (N: the space's "
                 "input size). Without it images are used at their own size."),
    click.option("--seed", type=int, help="Seed of weights, α, data order and augmentation."),
    click.option("--epochs", type=int, help="Epochs."),
    click.option("--batch-size", type=int, help="Images (text: columns) per batch."),
    click.option("--limit", type=int, help="Use only the first N training images (text: the "
                 "first N tokens of each split)."),
    click.option("--device", help="auto (CUDA when available, else the CPU), cpu, cuda, cuda:N "
                 "or mps.  [config default: auto]"),
    click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                 help="Parent folder of the run directory.  [config default: runs]"),
    click.option("--checkpoint-every", type=int, help="Also checkpoint every N steps."),
    click.option("--threads", type=int, help="CPU threads for torch.  [default: torch's]"),
    click.option("--tensorboard/--no-tensorboard", default=None,
                 help="TensorBoard event files in the run directory (`tensorboard --logdir "
                      "runs`).  [default: when tensorboard is installed]"),
    click.option("--precision", type=click.Choice(PRECISIONS),
                 help="fp32, or bf16: the weights' forward passes under bf16 autocast (α, its "
                      "softmax and the architecture step stay fp32).  [config default: fp32]"),
    click.option("--channels-last/--no-channels-last", default=None,
                 help="NHWC tensors (default) or NCHW."),
    click.option("--compile/--no-compile", "compile", default=None,
                 help="torch.compile the network the weight (training) step calls; a "
                      "recurrent network's time step, in every step.  [config default: off]"),
    set_option,
    click.option("--cfg", "assignments", multiple=True, metavar="SECTION.KEY=VALUE",
                 help="Set any config field (repeatable), e.g. --cfg optim.lr=0.05."),
    click.option("-q", "--quiet", is_flag=True, help="No progress bar (the epoch lines stay)."),
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
    click.option("--memory", type=click.Choice((AUTO_MEMORY, *MEMORY_SETTINGS)),
                 help="What the supernet keeps for the backward pass, same arithmetic: fast "
                      "(everything), balanced (recomputes the max poolings', the depthwise "
                      "convolutions' and the ReLUs' outputs), low (recomputes every edge: "
                      "least memory, slowest); image supernets only (a recurrent search "
                      "refuses the last two); auto: the fastest whose step is predicted to "
                      "fit the free memory (the run prints its choice).  "
                      "[config default: auto]"),
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


def given(options: dict[str, Any]) -> dict[str, Any]:
    """The options given on the command line (click passes the others as None)."""
    return {key: value for key, value in options.items() if value is not None}


def assignments_of(assignments: tuple[str, ...]) -> dict[str, Any]:
    """`--cfg SECTION.KEY=VALUE` strings as dotted overrides."""
    from spacec.runtime.run.config import parse_assignment

    return dict(parse_assignment(text) for text in assignments)


def config_overrides(space: str | None, sets: tuple[str, ...], assignments: tuple[str, ...],
                     options: dict[str, Any]) -> dict[str, Any]:
    """A command line as dotted overrides of a configuration (`--cfg` first, options after),
    through the Python API's one option table (spacec.runtime.configure.OPTION_KEYS)."""
    from spacec.runtime.configure import OPTION_KEYS, assemble_overrides

    known = {key: value for key, value in given(options).items() if key in OPTION_KEYS}
    return assemble_overrides(space, known, parse_overrides(sets), assignments_of(assignments))


def compile_space(space: str, sets: tuple[str, ...]) -> CompiledSpace:
    """The compiled space, its warnings written to standard error, compiler-style."""
    compiled = compile_file(locate(space), parse_overrides(sets))
    for warning in compiled.spec.warnings:
        click.echo(warning.render({compiled.spec.path: compiled.text}), err=True)
    return compiled


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
    """The option as given: a switch's off form where that was given (--no-tensorboard)."""
    for param in ctx.command.params:
        if param.name == name:
            if not param.opts[0].startswith("-"):
                return param.name.upper()
            off = getattr(param, "secondary_opts", [])
            if off and getattr(param, "is_flag", False) and ctx.params.get(name) is False:
                return off[0]
            return param.opts[0]
    return name
