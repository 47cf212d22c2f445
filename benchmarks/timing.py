"""The timing loop every benchmark script shares: warm up, then time each step on its own."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def step_seconds(
    step: Callable[[], None], warmup: int, steps: int, device: torch.device
) -> list[float]:
    """Wall seconds of each of `steps` calls of `step` after `warmup` untimed calls (CUDA work
    is waited for, so a step's time includes its kernels)."""

    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    synchronise()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        synchronise()
        times.append(time.perf_counter() - started)
    return times
