"""Same seed -> same α, metrics and genotype, bit for bit, as recorded before the runtime redesign.

Each case is a tiny `spacec search` run through the command line's entry point, in process (one
torch thread, CPU).
The golden files in tests/golden/regression/ were recorded on the main branch before the
runtime's seams were introduced (issue 8); every later change must reproduce them exactly.
Re-recorded twice since, each time for a change of rounding only: darts_rnn for the fused
recurrent mix; the image spaces when a candidate's α weight became its last BatchNorm's weight
(issue 11). For the latter, the previous path (the product) still reproduces the old files bit
for bit, one first- or second-order step moves α by 3e-4 and the two paths then differ by 2e-10,
and perturbing one candidate's input by one float32 step on every edge of the previous path
moves the recorded α as far by the second epoch (1.7e-4 of the largest α, first order) with the
same genotypes.

Floating-point results depend on the CPU's vector instruction set (oneDNN picks its kernels by
it): where the recording machine's torch version and CPU capability match this one's the
comparison is exact, bit for bit; elsewhere α and the metrics must agree to 1e-5 (relative) and
the genotypes exactly. Re-record (only when a change of the numbers is intended and explained)
with ``SPACEC_RECORD_REGRESSION=1 pytest tests/test_regression.py``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden" / "regression"
RECORD = os.environ.get("SPACEC_RECORD_REGRESSION") == "1"
TOLERANCE = 1e-5

COMMON = ["--threads", "1", "--device", "cpu", "--seed", "2", "--epochs", "2", "-q"]
CASES: dict[str, list[str]] = {
    "darts_cnn_order1": [
        "darts_cnn", "--set", "C=4", "--set", "layers=3", "--batch-size", "16",
        "--limit", "32", "--order", "1",
    ],
    "darts_cnn_order2": [
        "darts_cnn", "--set", "C=4", "--set", "layers=3", "--batch-size", "16",
        "--limit", "32", "--order", "2",
    ],
    "darts_cnn_joint": [
        "darts_cnn", "--set", "C=4", "--set", "layers=3", "--batch-size", "16",
        "--limit", "32", "--mode", "joint",
    ],
    "nas_bench_201": [
        "nas_bench_201", "--set", "C=4", "--set", "N=1", "--batch-size", "16", "--limit", "32",
    ],
    "example_three_inputs": [
        "example_three_inputs", "--set", "C=4", "--set", "layers=3", "--batch-size", "16",
        "--limit", "32",
    ],
    "darts_rnn": [
        "darts_rnn", "--set", "ninp=8", "--set", "nhid=8", "--batch-size", "4",
        "--limit", "800",
    ],
}


def _alphas(run_dir: Path) -> dict[str, object]:
    """Every saved α, by epoch file name, as exact float hex strings."""
    saved = {}
    for path in sorted((run_dir / "alphas").glob("epoch_*.json")):
        cells = json.loads(path.read_text(encoding="utf-8"))
        # α of a cell: its matrix, or the "alpha" entry when the file lists several tensors.
        alphas = {k: v["alpha"] if isinstance(v, dict) else v for k, v in cells.items()}
        saved[path.stem] = _hexed(alphas)
    return saved


def _hexed(value):
    if isinstance(value, float):
        return value.hex()
    if isinstance(value, dict):
        return {k: _hexed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hexed(v) for v in value]
    return value


def _metrics(run_dir: Path) -> list[dict[str, object]]:
    records = []
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        record.pop("seconds", None)  # wall time is not part of the result
        records.append(_hexed(record))
    return records


def _fingerprint() -> dict[str, str]:
    import torch

    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}


def _run(case: str, tmp_path: Path) -> dict[str, object]:
    import torch
    from click.testing import CliRunner

    from spacec.cli import main

    out = tmp_path / "runs"
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(main, ["search", *CASES[case], *COMMON, "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    (run_dir,) = out.iterdir()
    return {
        "alphas": _alphas(run_dir),
        "metrics": _metrics(run_dir),
        "genotype": json.loads((run_dir / "genotype.json").read_text(encoding="utf-8")),
    }


def _unhex(value):
    if isinstance(value, str):
        try:
            return float.fromhex(value)
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: _unhex(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unhex(v) for v in value]
    return value


def _close(a, b, where: str) -> None:
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE), f"{where}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            _close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{where}[{index}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_search_reproduces_the_recorded_run(case: str, tmp_path: Path) -> None:
    got = _run(case, tmp_path)
    golden = GOLDEN / f"{case}.json"
    if RECORD:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        record = {"fingerprint": _fingerprint(), "command": CASES[case] + COMMON, **got}
        golden.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        pytest.skip(f"recorded {golden.name}")
    expected = json.loads(golden.read_text(encoding="utf-8"))
    assert got["genotype"] == expected["genotype"]
    if expected["fingerprint"] == _fingerprint():
        assert got["alphas"] == expected["alphas"]
        assert got["metrics"] == expected["metrics"]
    else:
        _close(_unhex(got["alphas"]), _unhex(expected["alphas"]), "alphas")
        _close(_unhex(got["metrics"]), _unhex(expected["metrics"]), "metrics")
