"""What the benchmark scripts share: the timing loop, the memory readings, and running one
measurement per subprocess (so each configuration's peak memory is its own)."""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30


def step_seconds(step: Callable[[], None], warmup: int, steps: int, device) -> list[float]:
    """Wall seconds of each of `steps` calls of `step` after `warmup` untimed calls (CUDA work
    is waited for, so a step's time includes its kernels)."""
    import torch  # only the measuring process needs it

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


class CollectorTime:
    """Seconds Python's cyclic garbage collector runs while this is entered (`gc.callbacks`)."""

    def __init__(self) -> None:
        self.seconds, self._started = 0.0, 0.0

    def _note(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> CollectorTime:
        gc.callbacks.append(self._note)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._note)


def peak_memory(device) -> dict[str, float]:
    """This process's peak resident memory, and the peak CUDA allocation on a GPU, in GiB."""
    memory = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB}
    if device.type == "cuda":
        import torch

        memory["cuda_max_allocated_gib"] = torch.cuda.max_memory_allocated(device) / GIB
    return memory


def run_in_subprocess(script: str, job: dict, env: dict[str, str] | None = None) -> dict:
    """Run `script --worker JOB` in a fresh interpreter (with `env` added to the environment)
    and return the JSON its last line prints."""
    done = subprocess.run(
        [sys.executable, script, "--worker", json.dumps(job)],
        capture_output=True,
        text=True,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )
    if done.returncode != 0:
        raise RuntimeError(f"measurement {job} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# pyproject.toml's [tool.setuptools.package-dir]: the directories an install maps into spacec.
MAPPED_PACKAGES = {"runtime": "runtime", "grammars": "grammars", "spaces": "spaces"}


def tree_of_revision(revision: str, into: Path) -> Path:
    """The code of git `revision` of this repository, importable as it would be installed: its
    files (git archive) under `into`, the directories the install maps into the package linked
    into spacec/. Put the returned directory first on PYTHONPATH to run that revision."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{revision}^{{commit}}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    tree = into / sha[:12]
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    for inside, source in MAPPED_PACKAGES.items():
        link = tree / "spacec" / inside
        if (tree / source).is_dir() and not link.exists():
            link.symlink_to(Path("..") / source)
    return tree
