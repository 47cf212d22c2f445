"""A run's session: where and how it computes, which process it is, and the space it compiled.

One `Session` per run, made from the configuration's ``run`` section before anything else: it
resolves the device, sets torch's threads, seeds every global generator, and knows the process's
rank and the world size (1 in a single process; several under torchrun). Every loop asks it
whether it is the main process (the one that writes the run directory) and uses it to average
values across processes. It also compiles the run's space, once per set of parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spacec.load import CompiledSpace, compile_file, locate
from spacec.runtime.errors import ConfigError
from spacec.runtime.run.config import is_shipped_space
from spacec.runtime.run.rng import seed_everything

log = logging.getLogger(__name__)


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


@dataclass
class Session:
    """Device, threads, seed and process of one run, and its compiled spaces."""

    device: torch.device
    seed: int
    threads: int | None = None
    rank: int = 0
    world_size: int = 1
    _compiled: dict[tuple, CompiledSpace] = field(default_factory=dict, repr=False)

    @classmethod
    def start(cls, run_cfg) -> Session:
        """From a ``run`` section (spacec.runtime.run.config.RunConfig): device, threads, seeds."""
        device = resolve_device(run_cfg.device)
        if run_cfg.threads is not None:
            torch.set_num_threads(run_cfg.threads)
        seed_everything(run_cfg.seed)
        return cls(device=device, seed=run_cfg.seed, threads=run_cfg.threads)

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory and prints."""
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def all_reduce_mean(self, tensors: Iterable[torch.Tensor]) -> None:
        """Average tensors in place across processes (nothing to do in a single process)."""
        if self.world_size == 1:
            return

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
