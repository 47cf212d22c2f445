"""Small real datasets shipped inside the package, for tests, examples and smoke runs.

- ``cifar10/cifar-10-batches-py/``: 1,000 training and 200 test images of CIFAR-10 in the
  original pickle format (read by the same code path as the full dataset).
- ``wikitext2/{train,valid,test}.txt``: the first lines of WikiText-2 (CC BY-SA 3.0).

Provenance, hashes and licences are in ``README.md`` next to this file and in
``wikitext2/README.md``; ``build_samples.py`` rebuilds every file byte for byte.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def sample_path(*parts: str) -> Path:
    """Filesystem path of a packaged sample file or folder, e.g. ``sample_path("wikitext2")``.

    Looked up with importlib.resources so that a regular (non-editable) install finds the files.
    """
    resource = files(__name__).joinpath(*parts)
    path = Path(str(resource))
    if not path.exists():
        raise FileNotFoundError(f"{path}: packaged sample data is missing (is the install complete?)")
    return path
