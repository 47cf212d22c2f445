"""A run's session: where and how it computes, which process it is, and the space it compiled.

One `Session` per run, made from the configuration's ``run`` section before anything else: it
resolves the device, sets torch's threads, seeds every global generator, and knows the process's
rank and the world size (1 in a single process; several under torchrun, which it joins: see
spacec.runtime.run.distributed for the conventions). Every loop asks it whether it is the main
process (the one that writes the run directory), which part of the data its process reads
(`shard`), and uses it to wrap the network for training (`replicate`: DistributedDataParallel)
and to average values across processes. With one process every collective is a no-op. It also
compiles the run's space, once per set of parameters.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from spacec.errors import ReportedError
from spacec.load import CompiledSpace, compile_file, locate
from spacec.runtime.errors import ConfigError
from spacec.runtime.run import distributed
from spacec.runtime.run.config import RunConfig, is_shipped_space
from spacec.runtime.run.console import screen_info
from spacec.runtime.run.distributed import ProcessEnv, Replica, Shard
from spacec.runtime.run.meter import Meter
from spacec.runtime.run.rng import seed_everything

log = logging.getLogger(__name__)
T = TypeVar("T")


AUTO = "auto"  # CUDA when available, else the CPU (Apple's MPS only when asked for by name)


def resolve_device(name: str) -> torch.device:
    """The torch device for a config's ``device``; ConfigError if the one asked for is absent."""
    if name == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device: device {name!r} requested but CUDA is not available "
                          "(use --device auto or cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"run.device: device {name!r} requested but MPS is not available")
    return device


def process_device(device: torch.device, env: ProcessEnv) -> torch.device:
    """The device of this process: on several processes, CUDA device LOCAL_RANK (torchrun)."""
    if env.world_size == 1 or device.type != "cuda":
        return device
    if env.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"process {env.rank} has LOCAL_RANK {env.local_rank}, but this machine "
                          f"has {torch.cuda.device_count()} CUDA device(s): start at most that "
                          "many processes per machine")
    if device.index not in (None, env.local_rank):
        log.warning("run.device %s: process %d uses cuda:%d (its LOCAL_RANK)", device, env.rank,
                    env.local_rank)
    local = torch.device("cuda", env.local_rank)
    torch.cuda.set_device(local)
    return local


def _check_sync_bn(run_cfg, env: ProcessEnv, device: torch.device) -> bool:
    if not run_cfg.sync_bn:
        return False
    if env.world_size == 1:
        log.info("run.sync_bn: one process, nothing to synchronise")
        return False
    if device.type != "cuda":
        raise ConfigError("run.sync_bn: PyTorch's SyncBatchNorm runs on CUDA devices only; on "
                          "the CPU (gloo) each process normalises with its own batch's "
                          "statistics, which is the default: drop --sync-bn")
    return True


@dataclass
class Session:
    """Device, threads, seed and process of one run, and its compiled spaces."""

    device: torch.device
    seed: int
    threads: int | None = None
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # the run's processes on this machine (they share its RAM)
    sync_bn: bool = False  # BatchNorm as SyncBatchNorm in `replicate` (several CUDA processes)
    # The speed switches of the run section (spacec.runtime.run.config.RunConfig).
    precision: str = "fp32"
    channels_last: bool = True
    compile_network: bool = False
    compile_mode: str = "default"
    compile_unroll: int = RunConfig.compile_unroll  # a recurrent network's steps per graph
    _compiled: dict[tuple, CompiledSpace] = field(default_factory=dict, repr=False)

    @classmethod
    def start(cls, run_cfg, environ: Mapping[str, str] | None = None) -> Session:
        """From a ``run`` section (spacec.runtime.run.config.RunConfig): device, threads, seeds;
        under torchrun (its variables in `environ`, os.environ by default), the process group."""
        env = ProcessEnv.from_environment(environ)
        device = process_device(resolve_device(run_cfg.device), env)
        if run_cfg.threads is not None:
            torch.set_num_threads(run_cfg.threads)
        sync_bn = _check_sync_bn(run_cfg, env, device)
        if env.rank != 0:
            quiet_logging()
        distributed.init(env, device, run_cfg.dist_timeout)
        # The same seed on every process: equal weights and α, equal samples of a method.
        seed_everything(run_cfg.seed)
        return cls(device=device, seed=run_cfg.seed, threads=run_cfg.threads, rank=env.rank,
                   world_size=env.world_size, local_rank=env.local_rank,
                   local_world_size=env.local_world_size, sync_bn=sync_bn,
                   precision=run_cfg.precision, channels_last=run_cfg.channels_last,
                   compile_network=run_cfg.compile, compile_mode=run_cfg.compile_mode,
                   compile_unroll=run_cfg.compile_unroll)

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory and prints."""
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def shard(self) -> Shard:
        """The part of the data this process reads."""
        return Shard(self.rank, self.world_size)

    # -- the speed switches ------------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager:
        """Where a weight step's (or a training step's) forward pass runs: bf16 autocast on the
        session's device with ``precision: bf16``, else nothing. The backward pass runs outside
        it, as autocast's documentation asks; no loss scaling is needed for bf16."""
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def lay_out(self, network: nn.Module) -> nn.Module:
        """`network` in the run's memory format (the generated networks are built NHWC and
        convert their input to their `memory_format`); returns it."""
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        network.memory_format = layout
        return network.to(memory_format=layout)

    def compiled(self, network: nn.Module, methods: Sequence[str] = ()) -> Any:
        """What steps call in place of `network` (and its training forwards `methods`):
        themselves, or with ``compile: true`` their ``torch.compile`` versions, which share the
        module's parameters and state (nothing is copied); a recurrent network is returned
        itself, its time step compiled in place. One process only."""
        if not self.compile_network:
            return network
        if self.world_size > 1:
            raise ConfigError("run.compile: torch.compile runs on one process here; with "
                              "several processes set compile: false")
        _check_cpu_compiler(self.device)
        screen_info(log, "run.compile: the first steps compile the network's kernels, which "
                    "takes minutes while torch's kernel cache is cold (tens of minutes for an "
                    "image supernet on a few CPU cores); later runs reuse the cache")
        compile = functools.partial(torch.compile, mode=self.compile_mode)
        compile_steps = getattr(network, "compile_steps", None)
        if compile_steps is not None:
            # A recurrent network compiles its time step in place (RecurrentLM.compile_steps),
            # so the architecture step, which calls the network itself, runs it compiled too.
            compile_steps(compile, unroll=self.compile_unroll)
            return network
        return CompiledNetwork(network, methods, compile)
    # -- collectives (no-ops with one process) -----------------------------------------------

    def all_reduce_mean(self, tensors: Iterable[torch.Tensor]) -> None:
        """Average tensors in place across processes (nothing to do in a single process)."""
        if self.world_size == 1:
            return
        distributed.all_reduce_mean_(list(tensors))

    def reduce_meter(self, meter: Meter) -> Meter:
        """Every process's updates of `meter` together (the meter itself with one process)."""
        return self.shard.reduce_meter(meter)

    def replicate(self, network: nn.Module, all_used: bool = True,
                  methods: Sequence[str] = ()) -> nn.Module | Replica:
        """What training steps call in place of `network` (DistributedDataParallel on several
        processes; see spacec.runtime.run.distributed.replicate)."""
        if self.world_size == 1:
            return network
        return distributed.replicate(network, self.device, all_used, methods, self.sync_bn)

    def sync_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics) on every process, before an evaluation."""
        if self.world_size > 1:
            distributed.sync_buffers(module)

    def sync_module(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers on every process."""
        if self.world_size > 1:
            distributed.sync_module(module)

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's `value` on every process."""
        return distributed.broadcast_object(value) if self.world_size > 1 else value

    def on_main(self, read: Callable[[], T]) -> T:
        """`read()` run by rank 0 alone, its result (or the user error it raised) on every
        process: files only rank 0 may see (it writes them), such as a checkpoint."""
        if self.world_size == 1:
            return read()
        payload: tuple[Any, ReportedError | None] | None = None
        if self.is_main:
            try:
                payload = (read(), None)
            except ReportedError as error:
                payload = (None, error)
        value, error = self.broadcast_object(payload)
        if error is not None:
            raise error
        return value

    def any_process(self, flag: bool) -> bool:
        """Whether `flag` holds on any process: every process takes the same decision."""
        return distributed.any_process(flag) if self.world_size > 1 else flag

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value`, in rank order (``[value]`` with one process)."""
        return distributed.all_gather_objects(value) if self.world_size > 1 else [value]

    def barrier(self) -> None:
        if self.world_size > 1:
            distributed.barrier()

    def describe_batch(self, batch: int, what: str = "batch") -> None:
        """Log how the global batch is split (several processes)."""
        if self.world_size > 1:
            log.info("%d processes (%s): global %s %d = %d x %d per process; learning rates as "
                     "configured, for the global batch (never rescaled)", self.world_size,
                     distributed.backend_for(self.device), what, batch, self.world_size,
                     self.shard.per_rank(batch, what))

    # -- the space -------------------------------------------------------------------------

    def compile(self, space: str, overrides: Mapping[str, int | float] | None = None
                ) -> CompiledSpace:
        """`space` (a shipped name or a path) compiled at `overrides`, once per session."""
        path = locate(space).resolve()
        key = (str(path), tuple(sorted((overrides or {}).items())))
        if key not in self._compiled:
            self._compiled[key] = compile_file(path, dict(overrides or {}))
        return self._compiled[key]

    def compile_run_space(self, space_cfg, from_data: Mapping[str, int | float]
                          ) -> CompiledSpace:
        """The configured space (a ``space`` section) at the parameters a run uses: the
        optional overrides it declares, what the data fixes, then the explicit overrides."""
        declared = self.compile(space_cfg.name).params
        return self.compile(space_cfg.name, space_overrides(declared, space_cfg, from_data))


# What torch.compile's code generator for the CPU (inductor) may build its C++ kernels with.
CXX_COMPILERS = ("g++", "clang++", "c++")


def _check_cpu_compiler(device: torch.device) -> None:
    """torch.compile on the CPU builds C++ kernels at the first step: without a compiler it
    fails there, deep inside torch. Say so before the run starts."""
    if device.type != "cpu":
        return
    named = os.environ.get("CXX")
    if (named and shutil.which(named)) or any(shutil.which(c) for c in CXX_COMPILERS):
        return
    raise ConfigError("run.compile on the CPU needs a C++ compiler (g++ or clang++ on PATH, or "
                      "$CXX): torch.compile builds C++ kernels. Install one, or run without "
                      "--compile")


class CompiledNetwork:
    """`network` through ``torch.compile``: its forward, and the training forwards named in
    `methods` (forward_with_auxiliary); any other attribute is the network's own."""

    def __init__(self, network: nn.Module, methods: Sequence[str] = (),
                 compile: Callable[[Any], Any] = torch.compile) -> None:
        self.network = network
        self._forward = compile(network)
        self._methods = {name: compile(getattr(network, name)) for name in methods}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._forward(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._methods:
            return self._methods[name]
        return getattr(self.network, name)


def space_overrides(declared: Mapping[str, int | float], space_cfg,
                    from_data: Mapping[str, int | float]) -> dict[str, int | float]:
    """The parameter values a run compiles its space with (see SpaceConfig)."""
    shipped = is_shipped_space(space_cfg.name)  # a preset's sizes are made for those only
    optional = {k: v for k, v in space_cfg.optional_overrides.items()
                if k in declared and shipped}
    skipped = sorted(set(space_cfg.optional_overrides) - set(optional))
    if skipped:
        log.info("space %s: optional overrides %s skipped (%s)", space_cfg.name,
                 ", ".join(skipped), "not declared" if shipped else "not a shipped space")
    for name, value in from_data.items():
        given = space_cfg.overrides.get(name, value)
        if given != value:
            raise ConfigError(f"space.overrides: {name}={given}, but the data has {name}={value}")
    return {**optional, **from_data, **space_cfg.overrides}


def space_path(name: str) -> Path:
    return locate(name).resolve()


def quiet_logging() -> None:
    """Processes other than rank 0 report warnings and errors only (rank 0 reports progress)."""
    logger = logging.getLogger("spacec")
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
