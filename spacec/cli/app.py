"""The `spacec` click group and how a command ends: every user error is a message, never a traceback.

Errors a user can cause (a malformed space, a missing dataset, a bad genotype, ...) derive from
`spacec.errors.ReportedError`; a command wrapped in `user_errors` prints their message and exits
with their `exit_code`: 2 for a space or usage error, 1 for a run that failed (data, checkpoint,
NaN loss).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from pathlib import Path

import click

from spacec import __version__
from spacec.errors import ReportedError, SpaceError
from spacec.files import atomic_write_text

log = logging.getLogger("spacec")


class UserError(click.ClickException):
    """A failure caused by input, reported without a traceback."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        message = self.format_message()
        # A message placed like a compiler's (`file:line:col: error: ...`, e.g. a file that is
        # not UTF-8) is shown as a space's errors are, not as 'spacec: error: f:1:1: error:'.
        prefix = "" if _PLACED.match(message) else "spacec: error: "
        click.echo(f"{prefix}{message}", err=True)


_PLACED = re.compile(r"[^\n]*:\d+:\d+: error: ")


def user_errors(command):
    """Turn the project's error types into clean exits."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SpaceError as error:
            click.echo(error.render(), err=True)
            sys.exit(error.exit_code)
        except ReportedError as error:
            raise UserError(str(error), exit_code=error.exit_code) from None
        except KeyboardInterrupt:
            click.echo("spacec: interrupted", err=True)
            sys.exit(130)
        except ModuleNotFoundError as error:
            if (error.name or "").split(".")[0] not in NEEDS_INSTALLING:
                raise
            package = NEEDS_INSTALLING[error.name.split(".")[0]]
            raise UserError(f"this command needs {package}, which is not installed "
                            f"(pip install {package})") from None

    return wrapper


_PROGRAM = False  # set by `run`; commands invoked in-process (click's CliRunner) leave it unset


def run() -> None:
    """The `spacec` program (the console script and `python -m spacec`): `main`, in a process
    that ends when the command does, so a command may end it early (`exit_now`)."""
    global _PROGRAM
    _PROGRAM = True
    main()


def exit_now() -> None:
    """End the `spacec` program here, successfully, without freeing what it built: as mypy
    does, for a command whose work is done and whose output is written. A compiled 5 MB space
    is 400,000 objects; freeing them one by one is a tenth of a second of `spacec check`. Only
    for commands that hold nothing but the compiler's objects: atexit handlers do not run, so
    nothing may be left to flush or to close but standard output and error, flushed here.
    Called in-process (`_PROGRAM` unset), it does nothing, and the command returns as usual."""
    if _PROGRAM:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


# Packages that only some commands need: a missing one is reported as such, not as a traceback.
NEEDS_INSTALLING = {"torch": "torch", "torchvision": "torchvision"}


def write_output(text: str, output: Path | None) -> None:
    """Text to standard output, or atomically to a file."""
    if output is None:
        click.echo(text, nl=False)
        return
    atomic_write_text(output, text)
    log.info("wrote %s", output)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spacec")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """spacec: a search-space language and compiler for differentiable architecture search."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
