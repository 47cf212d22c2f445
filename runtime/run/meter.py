"""What every loop reports: epoch means of metrics, progress bars (the NaN guard:
spacec.runtime.run.finite)."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from tqdm import tqdm


class Meter:
    """Weighted running means of named metrics over an epoch (weights: samples, tokens)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def update(self, metrics: Mapping[str, float], weight: float = 1.0) -> None:
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * weight
            self.weights[name] = self.weights.get(name, 0.0) + weight

    def means(self) -> dict[str, float]:
        return {name: self.sums[name] / self.weights[name] for name in self.sums
                if self.weights[name] > 0}

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {"sums": dict(self.sums), "weights": dict(self.weights)}

    def load_state_dict(self, state: Mapping[str, Mapping[str, float]]) -> None:
        self.sums = dict(state["sums"])
        self.weights = dict(state["weights"])


def progress_enabled(quiet: bool) -> bool:
    """Progress bars go to stderr, only when it is a terminal and not silenced."""
    return not quiet and sys.stderr.isatty()


def progress_bar(total: int, initial: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, disable=not enabled,
                leave=False, dynamic_ncols=True, unit="step")


def format_metrics(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{name}={value:.4g}" for name, value in metrics.items())
