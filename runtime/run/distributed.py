"""One run on several processes: torch.distributed under torchrun, and the share each process reads.

Nothing here manages processes or moves bytes itself: torchrun (torch.distributed.run) starts
the processes and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
`torch.distributed` joins them (NCCL between CUDA devices, gloo on the CPU) and
DistributedDataParallel averages the weights' gradients. This module is the runtime's one
door to them. With one process (no torchrun, or ``--nproc-per-node 1``) no process group is
created and every helper here does nothing: the single-process path is the one it always was.

The conventions of a run on N processes (issue 10):

- **One architecture.** Every process seeds torch's global generators with the run's seed, so
  weights, α and every tensor a relaxation owns start equal (DDP also broadcasts them from rank 0
  when it wraps the model), and a method's sampling draws the same numbers on every rank (so do
  dropout and drop path: each process's part of a batch gets the masks the others' parts get).
  Data loading must therefore never draw from those generators: in a run on several
  processes, image augmentation draws from a generator seeded by each image's position in its
  pass (`spacec.runtime.domains.image.data.SeededItems`). The architect averages α's gradients
  over the processes before its optimiser steps (`all_reduce_mean_`), so α stays bitwise equal.
- **Global batch.** The configured batch is the global one: each process reads a contiguous
  1/N of every global batch (`Shard.batch_positions`; text: 1/N of the columns), so step k of an
  epoch reads the same samples whatever N is. Learning rates apply to that global batch and are
  never rescaled.
- **BatchNorm.** Every process normalises with its own batch's statistics; DDP broadcasts rank 0's
  running statistics before each training forward, and `sync_buffers` does so before an
  evaluation, so every rank evaluates the same network. ``run.sync_bn`` converts BatchNorm to
  SyncBatchNorm, which PyTorch implements for CUDA devices only.
- **Run directory.** Only rank 0 writes it; every collective (metrics, checkpoint contents)
  runs on every rank at the same step.
- **Failures.** When a process dies, torchrun stops the others; a process that notices first
  (a collective fails) raises `DistributedError`. Checkpoints are written atomically by rank 0,
  so the last one stays whole and ``--resume`` continues from it, on any number of processes.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from spacec.runtime.errors import ConfigError, DistributedError
from spacec.runtime.run.meter import Meter

log = logging.getLogger(__name__)

# torch.distributed's default timeout of a collective (default_pg_timeout: 30 minutes).
DEFAULT_TIMEOUT_S = 1800.0
# Words in the messages of failed collectives (gloo's "Connection reset by peer", NCCL's
# watchdog...): such a RuntimeError means another process stopped, not a bug of this one.
_COMMUNICATION_MARKERS = ("gloo", "nccl", "connection", "timed out", "timeout", "peer")


@dataclass(frozen=True)
class ProcessEnv:
    """This process's place among the run's processes, as torchrun describes it."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the process's index on its machine: its CUDA device
    local_world_size: int = 1  # the run's processes on this machine

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ProcessEnv:
        """RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE (set by torchrun); one process
        when they are absent."""
        environ = os.environ if environ is None else environ
        if "WORLD_SIZE" not in environ:
            return cls()
        try:
            world_size = int(environ["WORLD_SIZE"])
            rank = int(environ.get("RANK", "0"))
            local_rank = int(environ.get("LOCAL_RANK", str(rank)))
            local_world_size = int(environ.get("LOCAL_WORLD_SIZE", "1"))
        except ValueError:
            raise ConfigError("RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be "
                              "integers (torchrun sets them)") from None
        if (world_size < 1 or not 0 <= rank < world_size or local_rank < 0
                or not 1 <= local_world_size <= world_size):
            raise ConfigError(f"RANK={rank}, WORLD_SIZE={world_size}, LOCAL_RANK={local_rank}, "
                              f"LOCAL_WORLD_SIZE={local_world_size} do not describe a process "
                              "of the run")
        return cls(rank, world_size, local_rank, local_world_size)


def backend_for(device: torch.device) -> str:
    """NCCL between CUDA devices, gloo on the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def init(env: ProcessEnv, device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Join the default process group of a run on several processes (a no-op for one)."""
    if env.world_size == 1:
        return
    if dist.is_initialized():  # a second run in the same processes (the Python API, tests)
        if (dist.get_rank(), dist.get_world_size()) != (env.rank, env.world_size):
            raise ConfigError(f"this process is rank {dist.get_rank()} of "
                              f"{dist.get_world_size()}, not {env.rank} of {env.world_size}")
        return
    options: dict[str, Any] = {}
    # NCCL binds its communicator to the process's device (torch >= 2.3 takes device_id).
    if device.type == "cuda" and "device_id" in inspect.signature(
            dist.init_process_group).parameters:
        options["device_id"] = device
    dist.init_process_group(backend_for(device), rank=env.rank, world_size=env.world_size,
                            timeout=timedelta(seconds=timeout_s), **options)
    atexit.register(shutdown)
    log.info("process %d of %d joined (%s, timeout %g s)", env.rank, env.world_size,
             backend_for(device), timeout_s)


def shutdown() -> None:
    """Leave the process group (at exit; harmless when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """Whether this process writes the run directory and prints (rank 0, or the only one)."""
    return rank() == 0


# ---------------------------------------------------------------- what each process reads


@dataclass(frozen=True)
class Shard:
    """Which part of the data process `rank` of `world` reads, and how its figures are summed.

    Training streams split every global batch: the first 1/N of its samples go to rank 0, the
    next to rank 1, and so on. A pass's last, partial batch is cut to a multiple of N first (at
    most N−1 samples are left out, none when N divides it), so that every process holds as many
    samples and DDP's mean of the processes' gradients is the gradient of the global batch.
    Evaluation splits are cut in N contiguous parts (sizes differ by at most one) whose sums
    are added up (`sum`).
    """

    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def per_rank(self, batch: int, what: str) -> int:
        """Each process's part of the global batch `batch`; ConfigError unless N divides it."""
        if batch % self.world:
            raise ConfigError(f"{what} {batch} is the global batch, split evenly over the "
                              f"{self.world} processes: make it a multiple of {self.world}")
        return batch // self.world

    def batch_positions(self, start: int, stop: int) -> range:
        """This process's positions of the global batch that holds positions [start, stop)."""
        per_rank = (stop - start) // self.world
        first = start + self.rank * per_rank
        return range(first, first + per_rank)

    def part(self, count: int) -> range:
        """This process's contiguous part of ``range(count)`` (an evaluation split)."""
        return range(count * self.rank // self.world, count * (self.rank + 1) // self.world)

    def columns(self, tensor: Tensor, dim: int = 1) -> Tensor:
        """This process's contiguous 1/N of `tensor`'s columns (text laid out in columns)."""
        if not self.distributed:
            return tensor
        width = self.per_rank(tensor.size(dim), "the number of columns")
        return tensor.narrow(dim, self.rank * width, width).contiguous()

    def gather_columns(self, tensor: Tensor, dim: int = 1) -> Tensor:
        """Every process's `columns`, put back together (a collective: every rank calls it)."""
        if not self.distributed:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=dim)

    def sum(self, values: Sequence[float]) -> list[float]:
        """`values` added up over the processes (in float64; a collective)."""
        if not self.distributed:
            return list(values)
        total = torch.tensor(list(values), dtype=torch.float64, device=_collective_device())
        dist.all_reduce(total)
        return total.tolist()

    def reduce_meter(self, meter: Meter) -> Meter:
        """The meter of every process's updates together (a collective)."""
        if not self.distributed:
            return meter
        # In the order the meters met them (rank 0's first), as one process's meter keeps
        # them: the epoch line reads the same on one process and on several.
        gathered = _all_gather_objects(list(meter.sums))
        names = list(dict.fromkeys(name for names in gathered for name in names))
        sums = self.sum([meter.sums.get(n, 0.0) for n in names]
                        + [meter.weights.get(n, 0.0) for n in names])
        total = Meter()
        total.sums = dict(zip(names, sums[:len(names)], strict=True))
        total.weights = dict(zip(names, sums[len(names):], strict=True))
        return total


def _collective_device() -> torch.device:
    """Where tensors of a collective live: NCCL moves CUDA tensors only."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_gather_objects(value: Any) -> list[Any]:
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


# ---------------------------------------------------------------- collectives


def all_reduce_mean_(tensors: Sequence[Tensor]) -> None:
    """Average `tensors` in place over the processes, in one flat all-reduce."""
    if world_size() == 1 or not tensors:
        return
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for tensor, averaged in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
        tensor.copy_(averaged.view_as(tensor))


def any_process(flag: bool) -> bool:
    """Whether `flag` holds on any process (one small all-reduce; every rank calls it)."""
    if world_size() == 1:
        return flag
    total = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(total, op=dist.ReduceOp.MAX)
    return bool(total.item() > 0)


def all_gather_objects(value: Any) -> list[Any]:
    """Every process's `value` (picklable), in rank order (a collective)."""
    if world_size() == 1:
        return [value]
    return _all_gather_objects(value)


def broadcast_(tensors: Sequence[Tensor], src: int = 0) -> None:
    """Overwrite `tensors` with rank `src`'s, in place."""
    if world_size() == 1:
        return
    for tensor in tensors:
        dist.broadcast(tensor.data, src)


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank `src`'s `value` (picklable), on every process."""
    if world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src)
    return holder[0]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def sync_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) on every process."""
    broadcast_(list(module.buffers()))


def sync_module(module: nn.Module) -> None:
    """Rank 0's parameters and buffers on every process."""
    broadcast_([*module.parameters(), *module.buffers()])


# ---------------------------------------------------------------- the training forward


class _MethodCall(nn.Module):
    """Runs the wrapped network's method named at call time, so that DistributedDataParallel
    sees every training forward, also one that is not ``forward`` (forward_with_auxiliary)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, *args: Any, method: str = "forward", **kwargs: Any) -> Any:
        return getattr(self.network, method)(*args, **kwargs)


class Replica:
    """What a training step calls in place of the network on several processes: the network's
    forward and its other training forwards (`methods`) run through DistributedDataParallel,
    whose backward averages the gradients of the network's parameters over the processes."""

    def __init__(self, network: nn.Module, ddp: nn.parallel.DistributedDataParallel,
                 methods: Sequence[str]) -> None:
        self.network = network
        self.ddp = ddp
        self._methods = tuple(methods)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.ddp(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._methods:
            raise AttributeError(f"{type(self).__name__} runs {', '.join(self._methods)} of the "
                                 f"network through DDP; not {name!r}")
        return functools.partial(self.ddp, method=name)


def replicate(network: nn.Module, device: torch.device, all_used: bool = True,
              methods: Sequence[str] = (), sync_bn: bool = False) -> nn.Module | Replica:
    """`network` as a training step calls it: itself with one process, else a `Replica`.

    `all_used`: every parameter gets a gradient in every training step; False (a relaxation
    that runs a sample of its candidates) turns on DDP's search for unused parameters.
    `sync_bn`: BatchNorm layers become SyncBatchNorm (in place; CUDA only).
    """
    if world_size() == 1:
        return network
    if sync_bn:
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(network)
        if converted is not network:
            raise ConfigError("sync_bn: the network itself is a BatchNorm layer")
    ddp = nn.parallel.DistributedDataParallel(
        _MethodCall(network),
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=not all_used,
    )
    return Replica(network, ddp, methods)


# ---------------------------------------------------------------- failures


def is_communication_error(error: BaseException) -> bool:
    """Whether `error` is a failed collective (another process stopped, the network failed)."""
    if isinstance(error, dist.DistError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(m in text for m in _COMMUNICATION_MARKERS)


@contextmanager
def stopping_cleanly(run_dir: Any) -> Iterator[None]:
    """Turn a failed collective into a `DistributedError` that says how to continue."""
    if world_size() == 1:
        yield
        return
    try:
        yield
    except RuntimeError as error:
        if not is_communication_error(error):
            raise
        first = (str(error).strip().splitlines() or ["no details"])[0]
        raise DistributedError(
            f"process {rank()} of {world_size()} stopped: a collective failed ({first}); another "
            f"process probably died or hung (see its messages). The last checkpoint in {run_dir} "
            f"is intact: continue with --resume {run_dir} (on any number of processes)"
        ) from None
