"""The `spacec` command line, on top of the compiler and the runtime.

One module per command group, each registering its commands on `main` (spacec.cli.app):
`compile` (list, check, compile, info), `search` (search, derive), `train` (train, select,
show, export, predict), `runs` (runs, report). They share one option table and one option -> configuration mapping
(spacec.cli.options). The compiler's commands import neither torch nor the runtime's torch
modules, so that `spacec check`, `compile` and `derive` work where torch is not installed.
"""

from spacec.cli import compile, runs, search, train  # noqa: F401  (each registers its commands)
from spacec.cli.app import main, run

__all__ = ["main", "run"]
