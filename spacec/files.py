"""Every file spacec reads as text or writes goes through here, so that a failure is one message.

Writes are atomic (a temporary file in the same folder, flushed, then renamed over the target): a
crash at any moment leaves the old file or the new one, never a half-written one, and a failed
write leaves no temporary file behind. Any OS failure becomes a `FileError` naming the path and
the OS's reason ("cannot write /x/y.py: Permission denied"), never a traceback.

Text is read as UTF-8; a file that is not says where its first invalid byte sits, as
`file:line:col`, with the line it is on (`NotUtf8Error`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spacec.errors import ReportedError, excerpt, visible


class FileError(ReportedError):
    """A file or folder that cannot be read, written or created; the message names the path and
    the reason."""


def reason(error: OSError) -> str:
    """The OS's words for a failure ("Permission denied"), without Python's decoration."""
    return error.strerror or str(error)


def _failure(action: str, path: Path, error: OSError) -> FileError:
    return FileError(f"cannot {action} {visible(str(path))}: {reason(error)}")


# ---- folders -----------------------------------------------------------------------------------
def make_dirs(path: Path) -> list[Path]:
    """Create `path` and its missing parents; return the folders created, outermost first (so a
    caller that fails later can remove exactly what it made)."""
    path = Path(path)
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        if folder.exists():  # a file where a folder should be: say so, not "File exists"
            raise FileError(
                f"cannot create folder {visible(str(path))}: {visible(str(folder))} is a file"
            )
        missing.append(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        remove_dirs(missing[::-1])
        raise _failure("create folder", path, error) from None
    return missing[::-1]


def check_writable(path: Path) -> None:
    """FileError now when writing `path` later surely fails (a file where a folder should be, a
    folder that does not let us write); creates nothing. For outputs written at the end of a
    long command."""
    path = Path(path)
    if path.is_dir():
        raise FileError(f"cannot write {visible(str(path))}: it is a folder")
    for folder in path.parents:
        if folder.is_dir():
            if not os.access(folder, os.W_OK | os.X_OK):
                raise FileError(f"cannot write {visible(str(path))}: {visible(str(folder))} is "
                                "not writable")  # fmt: skip
            return
        if folder.exists():
            raise FileError(f"cannot write {visible(str(path))}: {visible(str(folder))} is a file")


def remove_dirs(folders: list[Path]) -> None:
    """Remove folders made by `make_dirs` (innermost first), if they are still empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


# ---- atomic writes -----------------------------------------------------------------------------
def atomic_write_bytes(path: Path, data: bytes) -> None:
    def write(temp: Path) -> None:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    atomic_write_with(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: Path, write: Callable[[Path], None]) -> None:
    """`write(temp)` fills a temporary file beside `path`, which then replaces `path`.

    For writers that want a file name (torch.jit's save, matplotlib's savefig, the ONNX
    exporter). An OSError from any step is a FileError; any other exception propagates, and the
    temporary file is removed either way.
    """
    path = Path(path)
    if path.is_dir():
        raise FileError(f"cannot write {visible(str(path))}: it is a folder")
    if path.exists() and not path.is_file():  # a device, a pipe, a socket: not replaced
        raise FileError(f"cannot write {visible(str(path))}: it is not a regular file")
    created = make_dirs(path.parent)
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        remove_dirs(created)
        raise _failure("write", path, error) from None
    os.close(fd)
    try:
        write(Path(temp))
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes the file private (0600)
        os.replace(temp, path)
    except OSError as error:
        Path(temp).unlink(missing_ok=True)
        remove_dirs(created)
        raise _failure("write", path, error) from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        remove_dirs(created)
        raise


def append_text(path: Path, text: str) -> None:
    """Append to a file (metrics.jsonl's records)."""
    try:
        with Path(path).open("a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as error:
        raise _failure("write", path, error) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---- reading -----------------------------------------------------------------------------------
def read_bytes(path: Path) -> bytes:
    path = Path(path)
    if path.is_dir():
        raise FileError(f"{visible(str(path))}: is a folder, not a file")
    try:
        return path.read_bytes()
    except OSError as error:
        raise _failure("read", path, error) from None


def read_text(path: Path) -> str:
    """A UTF-8 text file's content; FileError (NotUtf8Error for bad bytes) otherwise."""
    return decode_utf8(read_bytes(path), str(path))


@dataclass(frozen=True)
class Position:
    """Where the first invalid byte of a UTF-8 text sits: 1-based line and column (columns count
    characters), its byte value, and how many bytes are invalid there."""

    line: int
    column: int
    byte: int
    length: int


class NotUtf8Error(FileError):
    """A text file holds bytes that are not UTF-8; names `path:line:col` and shows the line."""

    def __init__(self, path: str, position: Position, line_text: str):
        self.path = path
        self.position = position
        self.line_text = line_text  # the line, invalid bytes written \\xNN
        where = f"{visible(path)}:{position.line}:{position.column}"
        shown = excerpt(line_text, position.column, 4 * position.length)
        super().__init__(
            "\n".join(
                [
                    f"{where}: error: not UTF-8 text (byte 0x{position.byte:02x})",
                    *shown,
                    "hint: save the file as UTF-8",
                ]  # fmt: skip
            )
        )


def decode_utf8(data: bytes, path: str) -> str:
    """`data` as UTF-8 text; NotUtf8Error at the first invalid byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        position, line_text = locate_invalid(data, error.start, error.end)
        raise NotUtf8Error(path, position, line_text) from None


def locate_invalid(data: bytes, start: int, end: int) -> tuple[Position, str]:
    """The line and column of byte offset `start` (the first invalid byte), and its line with
    invalid bytes shown as \\xNN."""
    line_start = data.rfind(b"\n", 0, start) + 1
    line_end = data.find(b"\n", start)
    line_end = len(data) if line_end < 0 else line_end
    before = data[line_start:start].decode("utf-8")  # valid: the first invalid byte is at start
    line_text = data[line_start:line_end].decode("utf-8", "backslashreplace").removesuffix("\r")
    position = Position(data.count(b"\n", 0, start) + 1, len(before) + 1, data[start], end - start)
    return position, line_text
