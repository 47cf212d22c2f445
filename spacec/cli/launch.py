"""``--nproc-per-node N``: the same command started again by torchrun on N processes of this machine.

torchrun (torch.distributed.run) starts, watches and stops the processes; this spares typing
``torchrun --standalone --nproc-per-node N -m spacec <command> ...``. On several machines, run
torchrun yourself with its ``--nnodes`` and ``--rdzv-*`` options (README, "Scaling out").
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from typing import Any

import click

from spacec.cli.app import UserError

log = logging.getLogger(__name__)

OPTION = "--nproc-per-node"


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (which sets TORCHELASTIC_RUN_ID)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def without_option(argv: Sequence[str]) -> list[str]:
    """`argv` less ``--nproc-per-node N`` (or ``--nproc-per-node=N``)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == OPTION:
            skip = True
        elif not arg.startswith(f"{OPTION}="):
            kept.append(arg)
    return kept


def split_batch(cfg: Any, nproc: int) -> None:
    """ConfigError, before any process starts, unless the `nproc` processes can split the
    configuration's global batch evenly (each would report it otherwise)."""
    from spacec.runtime.run.distributed import Shard

    if nproc > 1:  # start_processes refuses the rest
        Shard(0, nproc).per_rank(cfg.data.batch_size, "data.batch_size")


def start_processes(nproc: int | None, argv: Sequence[str]) -> bool:
    """Run the command line `argv` (the arguments after the program) on `nproc` processes
    under torchrun; False (nothing started) when `nproc` is None or 1.

    Returns True once every process has finished; UserError names the ones that failed.
    """
    if nproc is None or nproc == 1:
        return False
    if nproc < 1:
        raise click.BadParameter(f"{nproc} is not a number of processes", param_hint=OPTION)
    if under_torchrun():
        raise click.UsageError(f"{OPTION} starts torchrun; under torchrun, leave it out")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = ["--standalone", "--nproc-per-node", str(nproc), "-m", "spacec",
            *without_option(argv)]
    log.info("torchrun %s", " ".join(args))
    try:
        run(parse_args(args))
    except ChildFailedError as error:
        failed = ", ".join(f"rank {rank} (exit code {failure.exitcode})"
                           for rank, failure in sorted(error.failures.items()))
        raise UserError(f"{nproc} processes under torchrun: {failed} failed; their messages "
                        "are above") from None
    except SignalException as error:
        # Ctrl-C (or a kill) reached torchrun's agent, which stopped the processes; each has
        # said what it left (an interrupted run resumes). As one process's Ctrl-C ends.
        if error.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        click.echo(f"spacec: stopped by {signal.Signals(error.sigval).name}", err=True)
        raise SystemExit(128 + int(error.sigval)) from None
    return True
