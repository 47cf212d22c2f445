"""spacec: a declarative search-space language and compiler for differentiable architecture search."""

__version__ = "0.1.0"

from spacec.errors import SpaceError  # noqa: E402
from spacec.load import CompiledSpace, load, shipped_spaces  # noqa: E402

__all__ = ["CompiledSpace", "SpaceError", "__version__", "load", "shipped_spaces"]
