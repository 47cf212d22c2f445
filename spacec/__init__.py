"""spacec: a declarative search-space language and compiler for differentiable architecture search.

``import spacec`` imports the compiler only (no torch). The Python API of the runtime,
``spacec.search``, ``spacec.train``, ``spacec.SearchRun`` and ``spacec.TrainRun``
(spacec.runtime.api), is imported, with torch, the first time one of them is used.
"""

__version__ = "0.1.0"

import importlib  # noqa: E402
import logging  # noqa: E402

from spacec.arch.derive import DerivationError  # noqa: E402
from spacec.arch.genotype import GenotypeError  # noqa: E402
from spacec.errors import ReportedError, SpaceError  # noqa: E402
from spacec.files import FileError  # noqa: E402
from spacec.load import CompiledSpace, load, shipped_spaces  # noqa: E402

# A library prints nothing unless asked: without a handler of the application's, records of
# the spacec loggers go nowhere (not to logging's last-resort stderr handler).
logging.getLogger("spacec").addHandler(logging.NullHandler())

# Names served by the runtime (torch), imported on first use: name -> module. Every error a
# user's input can cause derives from ReportedError: `except spacec.ReportedError` catches them.
_RUNTIME_API = {
    **{name: "spacec.runtime.api" for name in ("search", "train", "SearchRun", "TrainRun")},
    **{name: "spacec.runtime.errors" for name in ("CheckpointError", "ConfigError", "DataError",
                                                   "TrainingError")},
}

__all__ = ["CheckpointError", "CompiledSpace", "ConfigError", "DataError", "DerivationError",
           "FileError", "GenotypeError", "ReportedError", "SearchRun", "SpaceError",
           "TrainRun", "TrainingError", "__version__", "load", "search", "shipped_spaces",
           "train"]


def __getattr__(name: str):
    if name in _RUNTIME_API:
        value = getattr(importlib.import_module(_RUNTIME_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'spacec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_RUNTIME_API))
