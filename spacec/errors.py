"""The one error type of the compiler, rendered like a compiler's diagnostics.

Every stage reports problems as `Diagnostic`s that carry a source span; a stage that finds any
raises a single `SpaceError` holding all of them, sorted by position, so a user sees every error in
a file at once:

    spaces/my.space:12:14: error: unknown operation set 'darts_op'
        edges dense : darts_op
                      ^~~~~~~~
    hint: did you mean 'darts_ops'? known sets: darts_ops

Rendering is linear in the number of errors shown: each source is split into lines once, at most
`MAX_DIAGNOSTICS` errors are kept (the rest are counted), excerpts of very long lines are cut to a
window around the error, and control characters from the input (NUL, escape sequences, bidi
overrides, ...) are shown escaped, never sent to the terminal as they are.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# How many errors a SpaceError keeps and shows; the rest are counted ("... and 12 more errors").
# A hundred is more than anyone reads, and bounds the time spent on a file made of errors.
MAX_DIAGNOSTICS = 100
# Characters of an excerpt shown on each side of the error when its line is longer than a screen.
EXCERPT_CONTEXT = 60
# Names listed in a hint before the list is cut short ("... (350 in all)").
MAX_LISTED_CHOICES = 20


@dataclass(frozen=True, order=True, slots=True)
class Span:
    """Where a piece of source text sits: 1-based line and column, and its length in characters."""

    path: str
    line: int
    column: int
    length: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


NO_SPAN = Span("<command line>", 0, 0, 0)


def visible(text: str, tab: str = "\\t") -> str:
    """`text` with every control or formatting character escaped (`\\x00`, `\\x1b`, `\\u202e`),
    so that input shown in a message cannot move the cursor, ring the bell or reorder the line."""
    if text.isprintable():
        return text
    return "".join(
        tab if char == "\t" else char if char.isprintable() else _escape(char) for char in text
    )


def _escape(char: str) -> str:
    code = ord(char)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


class SourceLines:
    """Each source's lines, split once (on "\\n" only, as the parser counts lines)."""

    def __init__(self, sources: Mapping[str, str]):
        self.sources = sources
        self.lines: dict[str, list[str]] = {}

    def line(self, path: str, number: int) -> str | None:
        if path not in self.lines:
            text = self.sources.get(path)
            if text is None:
                return None
            self.lines[path] = text.split("\n")
        lines = self.lines[path]
        return lines[number - 1].removesuffix("\r") if 0 < number <= len(lines) else None


@dataclass(frozen=True)
class Diagnostic:
    span: Span
    message: str
    hint: str = ""
    notes: tuple[str, ...] = ()
    # Notes about other places, each shown with its line and caret: (where, text), e.g. the
    # import statement that led to a file with an error ("imported from t.space:1:15").
    related: tuple[tuple[Span, str], ...] = ()
    severity: str = "error"  # or "warning": the space still compiles

    def render(self, sources: Mapping[str, str] | SourceLines) -> str:
        lines = SourceLines(sources) if not isinstance(sources, SourceLines) else sources
        where = str(self.span) if self.span.line else self.span.path
        rendered = [visible(f"{where}: {self.severity}: {self.message}")]
        rendered += _excerpt_at(lines, self.span)
        if self.hint:
            rendered.append(visible(f"hint: {self.hint}"))
        rendered += [visible(f"note: {note}") for note in self.notes]
        for span, note in self.related:
            rendered.append(visible(f"note: {note}"))
            rendered += _excerpt_at(lines, span)
        return "\n".join(rendered)


def _excerpt_at(lines: SourceLines, span: Span) -> list[str]:
    """The source line of `span` with a caret under it; nothing where the line is unknown."""
    source_line = lines.line(span.path, span.line) if span.line else None
    return [] if source_line is None else excerpt(source_line, span.column, span.length)


def excerpt(line: str, column: int, length: int) -> list[str]:
    """The source line (a window of it when long) and a caret line under `column`."""
    at = max(column - 1, 0)
    end = at + max(length, 1)
    start = max(0, at - EXCERPT_CONTEXT) if len(line) > 2 * EXCERPT_CONTEXT else 0
    stop = min(len(line), end + EXCERPT_CONTEXT) if len(line) > 2 * EXCERPT_CONTEXT else len(line)
    before = ("..." if start else "") + visible(line[start:at], tab=" ")
    marked = line[at:end]
    shown = visible(marked, tab=" ")
    after = visible(line[end:stop], tab=" ") + ("..." if stop < len(line) else "")
    width = max(1, max(length, 1) + len(shown) - len(marked))
    return ["    " + before + shown + after, "    " + " " * len(before) + "^" + "~" * (width - 1)]


class ReportedError(Exception):
    """Base of every error a user's input can cause: the command line prints its message and
    exits with `exit_code`, never with a traceback. Each layer derives its own kinds from it
    (data, configuration, checkpoints, genotypes, ...)."""

    exit_code = 1

    def __init__(self, *args: object) -> None:
        super().__init__(*(_unwrapped(arg) for arg in args))


# torch's DataLoader raises an error of a worker process again in the main one, as the same class
# with a message of its own: "Caught DataError in DataLoader worker process 0.", then the
# worker's whole traceback, ending in "module.DataError: the original message".
_WORKER = re.compile(r"Caught \w+ in DataLoader (worker process \d+)\.\n"
                     r"Original Traceback \(most recent call last\):\n.*?^[\w.]+: (.*)\Z",
                     re.DOTALL | re.MULTILINE)


def _unwrapped(arg: object) -> object:
    """The original message of an error raised again by torch's DataLoader, without the
    worker's traceback."""
    found = _WORKER.match(arg) if isinstance(arg, str) else None
    if found is None:
        return arg
    return f"{found.group(2).rstrip()} (in the data loader's {found.group(1)})"


class SpaceError(ReportedError):
    """One or more problems in a .space file (or in parameter overrides applied to it).

    Keeps the first `MAX_DIAGNOSTICS` diagnostics by position; `omitted` counts the others
    (given, or dropped here)."""

    exit_code = 2

    def __init__(
        self,
        diagnostics: Iterable[Diagnostic],
        sources: Mapping[str, str] | None = None,
        omitted: int = 0,
    ):
        ordered = sorted(diagnostics, key=lambda d: (d.span, d.message))
        self.diagnostics = tuple(ordered[:MAX_DIAGNOSTICS])
        self.omitted = omitted + len(ordered) - len(self.diagnostics)
        self.sources = dict(sources or {})
        self._rendered: str | None = None
        super().__init__()

    def render(self) -> str:
        if self._rendered is None:
            lines = SourceLines(self.sources)
            rendered = [d.render(lines) for d in self.diagnostics]
            if self.omitted:
                rendered.append(
                    f"... and {self.omitted} more error{'s' if self.omitted > 1 else ''} "
                    f"(the first {len(self.diagnostics)} are shown)"
                )
            self._rendered = "\n".join(rendered)
        return self._rendered

    def __str__(self) -> str:
        return self.render()

    def __reduce__(self):
        return type(self), (self.diagnostics, self.sources, self.omitted)


def suggest(name: str, known: Iterable[str], what: str) -> str:
    """A hint naming the closest known name (if any) and the valid choices."""
    choices = sorted(set(known))
    close = difflib.get_close_matches(name, choices, n=1)
    listed = choices[:MAX_LISTED_CHOICES]
    more = f", ... ({len(choices)} in all)" if len(choices) > len(listed) else ""
    listing = f"known {what}: {', '.join(listed)}{more}" if choices else f"no {what} are defined"
    return f"did you mean '{close[0]}'? {listing}" if close else listing
