"""Checkpoint files: written atomically, read back with every problem named.

A checkpoint is one ``torch.save`` of a dict of plain data and tensors (read back with
``weights_only=True``, so loading one never runs code from the file). Writing goes to a temporary
file in the same folder, is flushed to disk, then renamed over the old checkpoint with
``os.replace``: a crash at any moment leaves either the previous checkpoint or the new one, never
a torn file. Its ``format`` entry is `FORMAT`; ``kind`` says which loop wrote it.
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from spacec.errors import visible
from spacec.files import atomic_write_bytes
from spacec.runtime.errors import CheckpointError

FORMAT = 1




def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Write `state` (with ``format`` added) to `path` atomically."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def check_same_data(recorded: Mapping[str, Any] | None, now: Mapping[str, Any],
                    where: Path) -> None:
    """The data a checkpoint recorded (the task's `data_fingerprint`) against the data opened
    to resume it: other data would make the resumed run another run. A checkpoint written
    before these records (None) is not checked."""
    if not recorded or dict(recorded) == dict(now):
        return
    changed = []
    for key in sorted(set(recorded) | set(now)):
        before, after = recorded.get(key), now.get(key)
        if before == after:
            continue
        if key.endswith("_files"):
            changed.append(f"the {key.split('_')[0]} split's files (their names or sizes)")
        elif key.endswith("_tokens"):
            changed.append(f"the {key.split('_')[0]} split's text")
        else:
            changed.append(f"{key}: {before} -> {after}")
    raise CheckpointError(f"{where}: the data changed since the checkpoint was written "
                          f"({'; '.join(changed)}): resuming would continue on other data. Put "
                          "the data back as it was, or start a new run")


def load_checkpoint(
    path: Path, kind: str, required: Iterable[str] = (), map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; CheckpointError unless it is whole.

    `kind` must match the ``kind`` entry the writer stored; `required` lists entries that must be
    present.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint (missing file)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (
        OSError,
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        ValueError,
        KeyError,
        AttributeError,
        TypeError,
        UnicodeDecodeError,
    ) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint ({_why_unreadable(error)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(state).__name__})")
    if state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {state.get('format')!r}, this version reads {FORMAT}"
        )
    if state.get("kind") != kind:
        raise CheckpointError(f"{path}: a {state.get('kind')!r} checkpoint, expected {kind!r}")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    return state


def _why_unreadable(error: BaseException) -> str:
    """Why torch could not read a file, in our words where torch's would mislead: its refusal to
    unpickle arbitrary objects comes with advice to turn the protection off, which a user should
    never be told to do."""
    text = str(error).strip()
    if isinstance(error, pickle.UnpicklingError) and "weights_only" in text.lower().replace(" ", "_"):
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            return (f"it holds a Python object ({found.group(1)}) besides tensors and plain data, "
                    "which spacec does not load, since loading it could run code from the file; "
                    "not a checkpoint spacec wrote")
        return "not a checkpoint file: torch cannot read it as one"
    first = text.splitlines()[0] if text else "no details"
    return f"{type(error).__name__}: {visible(first)}"
