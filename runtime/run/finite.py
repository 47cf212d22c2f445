"""The NaN guard: nothing non-finite is ever committed to a run directory.

A loop asks its `Guard` at two moments. Every step, whether the loss it is about to
back-propagate is finite (`check_loss`). Before anything is written, at every checkpoint and at
the end of every epoch, whether the whole state it would commit is (`inspect`): weights,
BatchNorm buffers, α and every other architecture tensor, the optimisers' and the architect's
states, the relaxation's state, the meters, and the epoch's figures. A failed check raises
`TrainingError` naming what went non-finite (tensor names as in the model's state dict, e.g.
``cells.3.edges.2.op.bn.running_var``; optimiser states by their parameter's name; the epoch's
figures by their metrics key) and where. Since nothing non-finite was written, the checkpoint on
disk is the last good one; the guard records its position (`committed`) and the message says
how to continue from it.

On several processes every process takes part in every check and they decide together
(`Session.any_process`): all stop at the same point, none is left waiting in a collective for
one that stopped.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spacec.runtime.errors import TrainingError
from spacec.runtime.run.rundir import CHECKPOINT_NAME

# How many names a message lists before "and N more".
SHOWN_NAMES = 6
# The state dict's entry holding the model: its tensors are named as the model names them.
MODEL_ENTRY = "model"
_OPTIMISER_STATE = re.compile(r"^(?P<owner>\w+)\.state\.(?P<index>\d+)\.(?P<what>.+)$")


def nonfinite_names(state: Any, prefix: str = "") -> list[str]:
    """Dotted names of the NaN or infinite floats and floating-point tensors in `state` (nested
    mappings, lists and tuples), in the order they appear. One device synchronisation per device,
    not one per tensor."""
    numbers: list[tuple[str, float]] = []
    tensors: list[tuple[str, torch.Tensor]] = []
    _leaves(state, prefix, numbers, tensors)
    bad = {name for name, value in numbers if not math.isfinite(value)}
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = defaultdict(list)
    for name, tensor in tensors:
        by_device[tensor.device].append((name, tensor))
    for items in by_device.values():
        finite = torch.stack([torch.isfinite(tensor).all() for _, tensor in items])
        if not bool(finite.all()):
            bad.update(name for (name, _), ok in zip(items, finite.tolist(), strict=True)
                       if not ok)
    order = [name for name, _ in numbers] + [name for name, _ in tensors]
    return [name for name in order if name in bad]


def _leaves(value: Any, name: str, numbers: list, tensors: list) -> None:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            tensors.append((name, value.detach()))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and _overflowed(key, value):
                continue  # an exponential of a finite figure (a perplexity) may overflow
            _leaves(item, f"{name}.{key}" if name else str(key), numbers, tensors)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _leaves(item, f"{name}.{index}" if name else str(index), numbers, tensors)
    elif isinstance(value, float):
        numbers.append((name, value))


def optimiser_parameter_names(optimiser: torch.optim.Optimizer, module: nn.Module) -> list[str]:
    """The names (in `module`) of an optimiser's parameters, in the order its state dict numbers
    them (every group's parameters, group after group)."""
    names = {id(param): name for name, param in module.named_parameters()}
    return [names.get(id(param), f"parameter {index}")
            for index, param in enumerate(p for group in optimiser.param_groups
                                          for p in group["params"])]


def position(epoch: int, step: int) -> str:
    """A checkpoint's place in the run, as a user reads it (epochs from 1)."""
    if step:
        return f"epoch {epoch + 1}, step {step}"
    return f"after epoch {epoch}" if epoch else "the initial state, before epoch 1"


class Guard:
    """The NaN guard of one run: the checks, and where the last good checkpoint is.

    `session`: the run's `Session` (its collectives); `command`: the command that resumes the
    run (``search``, ``train``).
    """

    def __init__(self, session: Any, command: str) -> None:
        self.session = session
        self.command = command
        self.run_dir: Path | None = None
        self.kept: tuple[int, int] | None = None  # (epoch, step) of the checkpoint on disk

    def committed(self, run_dir: Path, epoch: int, step: int) -> None:
        """A checkpoint at (`epoch`, `step`) is on disk in `run_dir` (written or read back)."""
        self.run_dir, self.kept = Path(run_dir), (epoch, step)

    def check_loss(self, value: float, what: str, where: str) -> None:
        """TrainingError unless `value` (this process's loss) is finite on every process."""
        bad = not math.isfinite(value)
        if not self.session.any_process(bad):
            return
        detail = f"{what} is {value} at {where}"
        if self.session.world_size > 1:
            values = self.session.gather(value)
            ranks = [str(rank) for rank, v in enumerate(values) if not math.isfinite(v)]
            detail = (f"{what} is {', '.join(str(values[int(r)]) for r in ranks)} at {where} "
                      f"on process {', '.join(ranks)} of {self.session.world_size}")
        raise TrainingError(f"{detail}; {self.aftermath()}")

    def clip_gradients(self, named: Iterable[tuple[str, Tensor]], max_norm: float | None,
                       where: str) -> None:
        """Clip the weights' gradient to `max_norm` (None: no clipping), as
        ``torch.nn.utils.clip_grad_norm_`` does; but first, TrainingError when the gradient is
        not finite on any process, naming the parameters whose gradient is: clipping by a NaN
        norm would spread it to every weight, and the next loss would be blamed."""
        named = [(name, p) for name, p in named if p.grad is not None]
        if not named:
            return
        params = [p for _, p in named]
        total = _total_norm([p.grad for p in params])
        bad = not math.isfinite(float(total))
        if self.session.any_process(bad):
            names = [name for name, p in named if not bool(torch.isfinite(p.grad).all())]
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5
                                            else "")
            detail = (f"the weights' gradient is not finite at {where}"
                      + (f" ({shown})" if names else " (on another process)"))
            raise TrainingError(f"{detail}; {self.aftermath()}")
        if max_norm is not None:
            _clip_with_norm(params, max_norm, total)

    def inspect(self, state: Mapping[str, Any], record: Mapping[str, Any] | None = None,
                optimisers: Mapping[str, Sequence[str]] | None = None) -> list[str]:
        """What is non-finite in `record` (an epoch's figures, by key) and in `state` (a
        checkpoint's contents), on any process; empty when everything is finite.

        `optimisers`: state entry -> its optimiser's parameter names
        (`optimiser_parameter_names`), so that their states are named by parameter.
        """
        found = [key for key, value in (record or {}).items()
                 if isinstance(value, float) and not math.isfinite(value)
                 and not _overflowed(key, record)]
        found += [_readable(name, optimisers or {}) for name in nonfinite_names(state)]
        if not self.session.any_process(bool(found)):
            return []
        merged: list[str] = []
        for names in self.session.gather(found):
            merged.extend(name for name in names if name not in merged)
        return merged

    def check_epoch(self, state: Mapping[str, Any], record: Mapping[str, Any], where: str,
                    events: Any, optimisers: Mapping[str, Sequence[str]] | None = None) -> None:
        """TrainingError when anything in `state` or `record` (an epoch's figures) is not
        finite; the record, with what was not finite under "nonfinite", goes to `events` (a
        `spacec.runtime.run.events.Events`: rank 0's writes, the others' have no sinks) first."""
        bad = self.inspect(state, record, optimisers)
        if bad:
            events.epoch({**record, "nonfinite": bad})
            raise self.error(bad, where)

    def error(self, names: Sequence[str], where: str) -> TrainingError:
        """The TrainingError of non-finite `names` found at `where`."""
        shown = ", ".join(names[:SHOWN_NAMES])
        if len(names) > SHOWN_NAMES:
            shown += f" and {len(names) - SHOWN_NAMES} more"
        return TrainingError(f"non-finite values at {where}: {shown}; {self.aftermath()}")

    def aftermath(self) -> str:
        """What is left and how to go on: only what is true of the run directory."""
        if self.run_dir is None or self.kept is None:
            return "stopping; no checkpoint was written"
        return (f"stopping without checkpointing them. The last good checkpoint "
                f"({position(*self.kept)}) is kept in {self.run_dir / CHECKPOINT_NAME}: "
                f"`spacec {self.command} --resume {self.run_dir}` continues from it (if it "
                "fails the same way, start a new run with a lower learning rate)")


def _total_norm(grads: list[Tensor]) -> Tensor:
    """The gradients' total 2-norm, as clip_grad_norm_ computes it."""
    get_total_norm = getattr(nn.utils, "get_total_norm", None)  # torch >= 2.6
    if get_total_norm is not None:
        return get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def _clip_with_norm(params: list[Tensor], max_norm: float, total: Tensor) -> None:
    clip = getattr(nn.utils, "clip_grads_with_norm_", None)  # torch >= 2.6
    if clip is not None:
        clip(params, max_norm, total)
    else:  # computes the same norm again
        nn.utils.clip_grad_norm_(params, max_norm)


# Figures computed as exp(another figure): a finite but large loss overflows its perplexity to
# inf, which metrics.jsonl records as null; the state itself is sound (a diverging but finite run).
_EXPONENTIAL_OF = {"ppl": "loss"}


def _overflowed(key: str, record: Mapping[str, Any]) -> bool:
    """Whether `key` is an exponential figure whose source figure is finite."""
    prefix, _, figure = key.rpartition("_")
    source = _EXPONENTIAL_OF.get(figure)
    if source is None:
        return False
    value = record.get(f"{prefix}_{source}" if prefix else source)
    return isinstance(value, float) and math.isfinite(value)


def _readable(name: str, optimisers: Mapping[str, Sequence[str]]) -> str:
    """A state entry's name as a user knows it: model tensors by their own name, optimiser
    states by their parameter's name."""
    if name.startswith(MODEL_ENTRY + "."):
        return name[len(MODEL_ENTRY) + 1:]
    found = _OPTIMISER_STATE.match(name)
    if found and found["owner"] in optimisers:
        names = optimisers[found["owner"]]
        index = int(found["index"])
        if index < len(names):
            return f"{found['owner']} {found['what']} of {names[index]}"
    return name
