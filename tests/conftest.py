"""Shared fixtures for the compiler tests: compiled shipped spaces (cached) and temporary spaces."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

import spacec
from spacec import CompiledSpace


@cache
def _compiled(name: str, overrides: tuple[tuple[str, int], ...]) -> CompiledSpace:
    return spacec.load(name, **dict(overrides))


@pytest.fixture(scope="session")
def compiled() -> Callable[..., CompiledSpace]:
    """`compiled("darts_cnn", C=8)`: a shipped space compiled once per session and settings."""

    def get(name: str, **overrides: int) -> CompiledSpace:
        return _compiled(name, tuple(sorted(overrides.items())))

    return get


@pytest.fixture
def write_space(tmp_path: Path) -> Callable[..., Path]:
    """`write_space(text, name="t.space")`: a .space file in a fresh temporary folder."""

    def write(text: str, name: str = "t.space") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def load_text(write_space) -> Callable[..., CompiledSpace]:
    """`load_text(text, **overrides)`: write the text to a temporary file and load it."""

    def load(text: str, name: str = "t.space", **overrides: int) -> CompiledSpace:
        return spacec.load(str(write_space(text, name)), **overrides)

    return load


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for tiny models: on a busy 2-core machine, more threads spin and wait
    far longer than the work takes (a tiny supernet's first step went from ~40 s to ~1 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


WALKTHROUGH = Path(__file__).parents[1] / "examples" / "walkthrough.sh"


@pytest.fixture(scope="session")
def walkthrough_space() -> str:
    """The space the README's walkthrough writes (my_cells.space), read from its script."""
    text = WALKTHROUGH.read_text(encoding="utf-8")
    opening = "cat > my_cells.space <<'EOF'\n"
    start = text.index(opening) + len(opening)
    return text[start:text.index("\nEOF\n", start) + 1]
