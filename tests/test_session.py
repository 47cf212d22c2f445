"""The run session: one compile per parameter set of a run's space (the session's cache)."""

from __future__ import annotations

from pathlib import Path

import spacec
from spacec.arch.derive import derive


def test_a_run_compiles_its_space_once_per_parameter_set(tmp_path, monkeypatch):
    """The session caches compiled spaces: the declared space, then the run's parameters."""
    from spacec.runtime.run import session as session_module
    from spacec.runtime.train.config import load_train_config
    from spacec.runtime.train.loop import start_training

    compiled = []
    real = session_module.compile_file

    def counting(path, overrides=None):
        compiled.append((Path(path).name, tuple(sorted((overrides or {}).items()))))
        return real(path, overrides)

    monkeypatch.setattr(session_module, "compile_file", counting)
    cfg = load_train_config("quick", {"space.name": "nas_bench_201", "space.overrides": {
        "C": 4, "N": 1}, "optim.epochs": 1, "data.limit": 16, "data.batch_size": 8,
        "run.out": str(tmp_path), "run.threads": 1})
    start_training(cfg, str(_nb201_genotype(tmp_path)))
    assert len(compiled) == len(set(compiled)) == 2, compiled


def _nb201_genotype(folder: Path) -> Path:
    space = spacec.load("nas_bench_201")
    alphas = {cell: [[0.0] * len(rule.ops) for _ in rule.edges]
              for cell, rule in space.rules.items()}
    path = folder / "genotype.json"
    path.write_text(derive(space.name, alphas, space.rules).to_json(), encoding="utf-8")
    return path
