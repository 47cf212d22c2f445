"""The one error type of the compiler, rendered like a compiler's diagnostics.

Every stage reports problems as `Diagnostic`s that carry a source span; a stage that finds any
raises a single `SpaceError` holding all of them, sorted by position, so a user sees every error in
a file at once:

    spaces/my.space:12:14: error: unknown operation set 'darts_op'
        edges dense : darts_op
                      ^~~~~~~~
    hint: did you mean 'darts_ops'? known sets: darts_ops
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Span:
    """Where a piece of source text sits: 1-based line and column, and its length in characters."""

    path: str
    line: int
    column: int
    length: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


NO_SPAN = Span("<command line>", 0, 0, 0)


@dataclass(frozen=True)
class Diagnostic:
    span: Span
    message: str
    hint: str = ""

    def render(self, sources: Mapping[str, str]) -> str:
        lines = (
            [f"{self.span}: error: {self.message}"]
            if self.span.line
            else [f"{self.span.path}: error: {self.message}"]
        )
        text = sources.get(self.span.path)
        if text is not None and 0 < self.span.line <= len(text.splitlines()):
            source_line = text.splitlines()[self.span.line - 1].expandtabs(1)
            caret = " " * (self.span.column - 1) + "^" + "~" * max(0, self.span.length - 1)
            lines += ["    " + source_line, "    " + caret]
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


class ReportedError(Exception):
    """Base of every error a user's input can cause: the command line prints its message and
    exits with `exit_code`, never with a traceback. Each layer derives its own kinds from it
    (data, configuration, checkpoints, genotypes, ...)."""

    exit_code = 1


class SpaceError(ReportedError):
    """One or more problems in a .space file (or in parameter overrides applied to it)."""

    exit_code = 2

    def __init__(self, diagnostics: Iterable[Diagnostic], sources: Mapping[str, str] | None = None):
        self.diagnostics = tuple(sorted(diagnostics, key=lambda d: (d.span, d.message)))
        self.sources = dict(sources or {})
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render(self.sources) for d in self.diagnostics)

    def __str__(self) -> str:
        return self.render()


def suggest(name: str, known: Iterable[str], what: str) -> str:
    """A hint naming the closest known name (if any) and the valid choices."""
    choices = sorted(set(known))
    close = difflib.get_close_matches(name, choices, n=1)
    listing = f"known {what}: {', '.join(choices)}" if choices else f"no {what} are defined"
    return f"did you mean '{close[0]}'? {listing}" if close else listing
