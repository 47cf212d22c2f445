"""Fit the CPU allocator's constants of the cost model to measured peaks.

On the CPU the cost model predicts a step's resident memory as

    live + CPU_RETAINED[recompute] * activations + CPU_RUNTIME

(spacec/cost/memory.py). The live bytes and the activations kept for backward come from the
IR; the constants, a share per memory setting's recompute kind and a fixed part, describe
glibc's heap and torch's runtime on the machine, and they move when the runtime changes what it
allocates (an in-place sum frees fewer temporaries). This script re-predicts every measured
configuration of the JSON files that `benchmarks/cost_model.py --json` wrote, keeping those
terms apart, and fits the constants: for every fixed part on a grid, each kind's share on its
own rows, keeping the fit with the fewest rows outside ±20% and then the least squares of
log(predicted / measured). It prints the table under the constants in spacec today and
under the fitted ones, then how well constants fitted without a space predict that space;
it changes nothing.
A sampling method's step measured on the sample drawn at the start (`--sample drawn`) is left
out: its prediction is a bound, the heaviest sample's peak (`--sample worst` measures that).

    python benchmarks/cost_fit.py benchmarks/results/cost_model_refit_cpu.json
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cost_model
from timing import GIB

from spacec.cost import memory

MIB = 2**20
TERMS: list[tuple[int, int, str]] = []  # (live, activations, recompute) of every phase

memory.register_device(memory.Device(
    "cpu_terms",
    memory.DEVICES["cpu"].builder.tensor_bytes,
    lambda live, activations, recompute: TERMS.append((live, activations, recompute)) or live,
    "the CPU's tensors, the allocator's terms recorded instead of added",
))


def phase_terms(job: dict) -> list[tuple[int, int, str]]:
    """The terms of every phase of `job`'s step at its batch size, as the CPU would add them."""
    TERMS.clear()
    cost_model.predict(job, device="cpu_terms")
    return TERMS[:len(TERMS) // 2]  # the prediction also runs batch + 1, for the growth


def kind_of(row) -> str:
    """The recompute kind of a row's memory setting (every phase of a step has the same)."""
    _, _, terms = row
    return terms[0][2]


def resident(terms, retained: dict[str, float], runtime: int) -> float:
    return max(live + retained[kind] * activations + runtime
               for live, activations, kind in terms)


def score(rows, retained: dict[str, float], runtime: int) -> tuple[int, float]:
    """How many rows fall outside ±20%, then the sum of squared log(predicted / measured)."""
    logs = [math.log(resident(terms, retained, runtime) / measured)
            for _, measured, terms in rows]
    return sum(not 0.8 <= math.exp(x) <= 1.2 for x in logs), sum(x * x for x in logs)


def fit(rows) -> tuple[dict[str, float], int]:
    """The shares (one per recompute kind, each fitted on its own rows) and the runtime."""
    kinds = sorted({kind_of(row) for row in rows})
    shares = [s / 100 for s in range(0, 101)]
    best = None
    for runtime in (m * 4 * MIB for m in range(17)):
        retained = {}
        for kind in kinds:
            own = [row for row in rows if kind_of(row) == kind]
            retained[kind] = min(shares, key=lambda s: score(own, {kind: s}, runtime))
        candidate = (score(rows, retained, runtime), retained, runtime)
        if best is None or candidate[0] < best[0]:
            best = candidate
    return best[1], best[2]


def held_out(rows) -> list[str]:
    """Each space predicted with the constants fitted to the other spaces' rows alone."""
    lines = []
    for space in sorted({job["space"] for job, _, _ in rows}):
        others = [row for row in rows if row[0]["space"] != space]
        own = [row for row in rows if row[0]["space"] == space]
        retained, runtime = fit(others)
        if any(kind_of(row) not in retained for row in own):
            continue  # a setting only this space measured
        ratios = [resident(terms, retained, runtime) / measured for _, measured, terms in own]
        lines.append(f"{space}: {len(own)} rows, fitted without them "
                     f"({', '.join(f'{k!r}: {v:.2f}' for k, v in retained.items())}, "
                     f"{runtime // MIB} MiB): {min(ratios):.2f}-{max(ratios):.2f}, "
                     f"{sum(not 0.8 <= r <= 1.2 for r in ratios)} outside ±20%")
    return lines


def table(rows, retained: dict[str, float], runtime: int) -> str:
    misses, squares = score(rows, retained, runtime)
    ratios = [resident(terms, retained, runtime) / measured for _, measured, terms in rows]
    lines = [f"CPU_RETAINED = {{{', '.join(f'{k!r}: {v:.2f}' for k, v in retained.items())}}}, "
             f"CPU_RUNTIME = {runtime // MIB} MiB: {misses} of {len(rows)} outside ±20%, "
             f"ratios {min(ratios):.2f}-{max(ratios):.2f}, "
             f"rms log ratio {math.sqrt(squares / len(rows)):.3f}",
             f"{'space':15} {'batch':>5}  {'step':7} {'method':11} {'memory':9} "
             f"{'predicted':>9} {'measured':>9} {'ratio':>6}  ±20%"]
    for job, measured, terms in rows:
        predicted = resident(terms, retained, runtime)
        ratio = predicted / measured
        lines.append(f"{job['space']:15} {job['batch']:5}  {job['step']:7} "
                     f"{job.get('method', '-'):11} {job.get('memory', '-'):9} "
                     f"{predicted / GIB:9.2f} {measured / GIB:9.2f} {ratio:6.2f}  "
                     f"{'yes' if 0.8 <= ratio <= 1.2 else 'no'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+",
                        help="cost_model.py --json files (a configuration measured twice: the "
                             "later file's)")
    args = parser.parse_args()
    rows = []
    for result in cost_model.reused(args.results).values():
        drawn = (result.get("method") in cost_model.SAMPLING
                 and result.get("sample", "drawn") == "drawn")
        if result["device"] == "cpu" and not drawn:
            rows.append((result, result["measured_bytes"], phase_terms(result)))
    print("today:")
    print(table(rows, memory.CPU_RETAINED, memory.CPU_RUNTIME))
    print("\nfitted (fewest outside ±20%, then the least squares of the log ratios):")
    print(table(rows, *fit(rows)))
    print("\nheld out, space by space:")
    print("\n".join(held_out(rows)))


if __name__ == "__main__":
    main()
