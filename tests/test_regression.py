"""Same seed -> same α, metrics and genotype, bit for bit, as recorded before the runtime redesign.

Each case is a tiny `spacec search` run through the command line's entry point, in process (one
torch thread, CPU).
The golden files in tests/golden/regression/ were recorded on the main branch before the
runtime's seams were introduced (issue 8); every later change must reproduce them exactly.
Re-recorded six times since, each time for a change of rounding only: darts_rnn for the fused
recurrent mix; the image spaces when a candidate's α weight became its last BatchNorm's weight
(issue 11); darts_rnn again for the fused loss head (`DecodedNLL`, issue 11: with the reference's
op-by-op head the previous AVX-512 recording is reproduced bit for bit), and a third time when
that head's backward pass moved the division by the row sums and the one-hot term onto the
products' small sides (issue 11: its gradients at 560 rows and 10,000 words moved from 1.4e-6 to
8e-8 of the largest away from float64's; with the recurrent search's SGD at lr 20 the tiny run's
α then differ by up to 0.017 after two epochs, and four of its eight chosen edges); the image spaces whose
cells concatenate their nodes (not nas_bench_201) when the concatenation's backward began
handing every node a channels_last gradient (`blocks.ChannelConcat`, issue 11): the same
gradient values, but a BatchNorm's backward then runs torch's channels_last kernel instead of
its strided one, which sums in another order; the AVX-512 recordings' α moved by at most 4.5e-5
after two epochs (2.3e-9 first order), every genotype the same; the AVX2 recordings of those
four files were dropped and wait to be recorded again on such a machine; and the three
darts_cnn files when a 5x5 depthwise convolution's weight gradient began to be summed from two
5x3 blocks on the CPU (`accelerate.DepthwiseConv2d`, issue 11): the same products in another
order; on the AMD EPYC (AVX-512) machine the recorded α moved by at most 2.0e-5 after two
epochs second order (1.8e-9 first order, 4.1e-9 joint), every genotype the same, and the Intel
Xeon's recordings of those three files were dropped and wait to be recorded again there. For
the image spaces' change, the previous path (the product) still reproduces the old files bit
for bit, one first- or second-order step moves α by 3e-4 and the two paths then differ by 2e-10,
and perturbing one candidate's input by one float32 step on every edge of the previous path
moves the recorded α as far by the second epoch (1.7e-4 of the largest α, first order) with the
same genotypes. Recordings added since, with no change of numbers (`SPACEC_RECORD_REGRESSION=add`):
a 2-core AMD EPYC with AVX2 only (Zen 3, kernel digest 6fe21cd7cee6099f) for every case but
nas_bench_201, whose first (AVX2) recording it reproduces bit for bit.

A recurrent supernet's products may run through oneDNN instead of torch.mm (`run.matmul`,
spacec.runtime.nn.gemm, issue 11; `auto`, the default, takes oneDNN where it is clearly
faster, as on AMD CPUs). The darts_rnn case asks for torch.mm, with which every one of its
recordings was made and is still reproduced bit for bit; darts_rnn_onednn asks for oneDNN and
was first recorded on the Zen 5 EPYC (kernel digest e5f23b21bd12cd51). On that machine the two
runs' α differ by up to 0.017 after two epochs (of 0.021 at most) and 7 of the 10 chosen edges:
the recurrent search's SGD at lr 20 carries a rounding that far at this size, as it did for the
loss head's change above; one step's gradients are equally close to float64's with either
backend (tests/test_gemm.py).

Floating-point results depend on the machine: torch's own kernels are chosen by the CPU's vector
instruction set, oneDNN's and MKL's by the CPU itself. Across machines they are not comparable
with a tolerance: Adam's first steps move each α by about its learning rate in the direction of
its gradient's sign, so a near-zero gradient whose sign a rounding flips moves that α by twice the
learning rate (on an AVX-512 machine, the AVX2 recording's second-order α differ by 6e-4 after
one epoch, and the recurrent genotype differs). So each golden file holds one recording per kind
of machine, told apart by a fingerprint: torch's version, its CPU capability, and the digest of
the bits a fixed set of the kernels these runs use computes on this machine (`_kernel_digest`;
the first recordings, from an AVX2 machine, have no digest and match on the first two parts).
Where this machine's fingerprint was recorded, the run must reproduce it bit for bit; elsewhere
the test is skipped and says how to record it.

Recording: ``SPACEC_RECORD_REGRESSION=1 pytest tests/test_regression.py`` replaces every
recording with this machine's (for a change of the numbers that is intended and explained: the
other machines' recordings are then stale, and those machines skip until recorded again);
``SPACEC_RECORD_REGRESSION=add`` adds or replaces only this machine's, for a machine not recorded
yet when the numbers have not changed (the other recordings must still pass where they were
made).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden" / "regression"
# "1": replace every recording with this machine's; "add": add or replace this machine's only.
RECORD = {"1": "all", "add": "add"}.get(os.environ.get("SPACEC_RECORD_REGRESSION", ""), "")

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
    # torch.mm's products, as every darts_rnn recording was made; oneDNN's in the next case.
    "darts_rnn": [
        "darts_rnn", "--set", "ninp=8", "--set", "nhid=8", "--batch-size", "4",
        "--limit", "800", "--cfg", "run.matmul=aten",
    ],
    "darts_rnn_onednn": [
        "darts_rnn", "--set", "ninp=8", "--set", "nhid=8", "--batch-size", "4",
        "--limit", "800", "--cfg", "run.matmul=onednn",
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

    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(),
            "kernels": _kernel_digest()}


def _kernel_digest() -> str:
    """The digest of what a fixed set of kernels computes here, forward and backward, on one
    thread: the convolutions (direct, depthwise, dilated, pointwise; NCHW and NHWC), poolings,
    training-mode BatchNorm, matrix products and the recurrent cell's activations, at the golden
    runs' sizes. Machines that agree on these bits agree on the runs'; it depends on the machine
    and torch, not on spacec's code, so a change of spacec's numbers is still a failure."""
    import torch
    import torch.nn.functional as F

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(0)

        def rand(*shape):
            return torch.randn(*shape, generator=gen).requires_grad_()

        digest = hashlib.sha256()
        for layout in (torch.contiguous_format, torch.channels_last):
            x = rand(16, 12, 32, 32).contiguous(memory_format=layout)
            direct, depthwise, pointwise = rand(12, 12, 3, 3), rand(12, 1, 5, 5), rand(12, 12, 1, 1)
            y = F.conv2d(F.relu(x), direct, padding=1)
            y = F.conv2d(y, depthwise, padding=4, dilation=2, groups=12)
            y = F.batch_norm(F.conv2d(y, pointwise), None, None, training=True)
            y = F.max_pool2d(y, 3, 1, 1) + F.avg_pool2d(y, 3, 1, 1, count_include_pad=False)
            logits = F.linear(F.adaptive_avg_pool2d(y, 1).flatten(1), rand(10, 12))
            loss = F.cross_entropy(logits, torch.arange(16) % 10)
            states, weight = rand(3, 16, 8), rand(8, 16)
            c, h = (states.reshape(-1, 8) @ weight).view(3, 16, 16).split(8, dim=-1)
            mixed = torch.bmm(rand(3, 1, 3), torch.stack([h.tanh(), h.relu(), h.sigmoid()], 1)
                              .reshape(3, 3, -1))
            loss = loss + (c.sigmoid() * mixed.view(3, 16, 8)).square().mean()
            grads = torch.autograd.grad(loss, [x, direct, depthwise, pointwise, states, weight])
            for value in (loss, *grads):
                digest.update(value.detach().contiguous().numpy().tobytes())
    finally:
        torch.set_num_threads(threads)
    return digest.hexdigest()[:16]


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


def _matches(recorded: dict[str, str], machine: dict[str, str]) -> bool:
    """Whether a recording was made on a machine like this one: every part of its fingerprint
    agrees (the first recordings have no kernel digest: torch and its CPU capability only)."""
    return all(machine.get(key) == value for key, value in recorded.items())


def test_a_recording_matches_the_machines_it_was_made_on_only() -> None:
    machine = {"torch": "2.14.1", "cpu": "AVX512", "kernels": "bcd291d942087f37"}
    assert _matches(machine, machine)
    assert _matches({"torch": "2.14.1", "cpu": "AVX512"}, machine)  # a first recording
    assert not _matches({**machine, "kernels": "0" * 16}, machine)
    assert not _matches({"torch": "2.14.1", "cpu": "AVX2"}, machine)
    assert _kernel_digest() == _kernel_digest()


@pytest.fixture(scope="module")
def fingerprint() -> dict[str, str]:
    return _fingerprint()


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_search_reproduces_the_recorded_run(case: str, tmp_path: Path, fingerprint) -> None:
    golden = GOLDEN / f"{case}.json"
    recordings = json.loads(golden.read_text(encoding="utf-8"))["recordings"]
    mine = [r for r in recordings if _matches(r["fingerprint"], fingerprint)]
    if not mine and not RECORD:
        pytest.skip(f"{case}: no recording for this machine ({fingerprint}); recorded for "
                    f"{[r['fingerprint'] for r in recordings]}; record it with "
                    "SPACEC_RECORD_REGRESSION=add where the recorded machines still pass")
    got = _run(case, tmp_path)
    if RECORD:
        kept = [r for r in recordings if r not in mine] if RECORD == "add" else []
        record = {"command": CASES[case] + COMMON,
                  "recordings": [*kept, {"fingerprint": fingerprint, **got}]}
        golden.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        pytest.skip(f"recorded {golden.name} for {fingerprint}")
    expected = max(mine, key=lambda r: len(r["fingerprint"]))  # the most specific recording
    assert got["genotype"] == expected["genotype"]
    assert got["alphas"] == expected["alphas"]
    assert got["metrics"] == expected["metrics"]
