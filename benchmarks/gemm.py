"""Float32 CPU products: torch.mm (MKL in torch's x86 wheels) against oneDNN, the two backends
of spacec.runtime.nn.gemm (run.matmul), on the recurrent search's shapes.

For each product of darts_rnn's first-order search step (nhid 300, 10,000 words, bptt 35) at the
given batches: a node map over n of the cell's states (forward [16n, 300] @ [300, 600], its input
gradient and its weight gradient), the init map ([B, 600] @ [600, 600]) and the loss head's
three products over the B x 35 rows. Both backends compute every product in one process,
interleaved (torch.mm, oneDNN, torch.mm, ...), best of ``--rounds``; ``ratio`` is torch.mm's time
over oneDNN's. Last, what ``run.matmul: auto`` chooses on this machine and why.

    python benchmarks/gemm.py                       # batch 16 and 256, 1 thread
    python benchmarks/gemm.py --batches 16 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

NHID, NTOKEN, BPTT = 300, 10000, 35


def shapes(batch: int, nhid: int = NHID, ntoken: int = NTOKEN,
           bptt: int = BPTT) -> list[tuple[str, int, int, int, bool, bool]]:
    """(what, M, K, N, a transposed, b transposed) of the step's products at `batch`; the
    head's ("head ..." and the two after it) as the loss head makes them (`HEAD_ROWS`)."""
    rows = batch * bptt
    found = []
    for n in (1, 4, 8):
        m = batch * n
        found += [(f"node map, {n} states", m, nhid, 2 * nhid, False, False),
                  ("  its input gradient", m, 2 * nhid, nhid, False, True),
                  ("  its weight gradient", nhid, m, 2 * nhid, True, False)]
    found += [("init map", batch, 2 * nhid, 2 * nhid, False, False),
              ("head logits", rows, nhid, ntoken, False, True),
              ("  input gradient", rows, ntoken, nhid, False, False),
              ("  weight gradient", ntoken, rows, nhid + 1, True, False)]
    return found


def operands(m: int, k: int, n: int, a_t: bool, b_t: bool):
    import torch

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(k, m, generator=gen).t() if a_t else torch.randn(m, k, generator=gen)
    b = torch.randn(n, k, generator=gen).t() if b_t else torch.randn(k, n, generator=gen)
    return a, b


def seconds_per_call(run, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        run()
    return (time.perf_counter() - start) / repeat


HEAD_ROWS = 3  # the last rows of `shapes`: the loss head's products


def measure(batch: int, rounds: int, nhid: int, ntoken: int) -> list[dict]:
    import torch

    from spacec.runtime.nn import gemm

    results = []
    found = shapes(batch, nhid, ntoken)
    for index, (what, m, k, n, a_t, b_t) in enumerate(found):
        a, b = operands(m, k, n, a_t, b_t)
        # The cell's products are `gemm.matmul`'s; the head's, OneDNNDecoderProducts' (which
        # computes a transposed left operand's product swapped).
        onednn = gemm.OneDNNDecoderProducts.mm if index >= len(found) - HEAD_ROWS \
            else gemm._onednn_mm
        runs = {"aten": lambda a=a, b=b: torch.mm(a, b),
                "onednn": lambda a=a, b=b, onednn=onednn: onednn(a, b)}
        flops = 2 * m * k * n
        repeat = max(1, int(2e8 // flops))
        for run in runs.values():
            run()
        seconds = dict.fromkeys(runs, float("inf"))
        for _ in range(rounds):  # interleaved
            for name, run in runs.items():
                seconds[name] = min(seconds[name], seconds_per_call(run, repeat))
        diff = (runs["aten"]() - runs["onednn"]()).abs().max().item()
        results.append({"batch": batch, "what": what, "m": m, "k": k, "n": n,
                        "aten_gflops": flops / seconds["aten"] / 1e9,
                        "onednn_gflops": flops / seconds["onednn"] / 1e9,
                        "ratio": seconds["aten"] / seconds["onednn"], "max_abs_diff": diff})
    return results


def table(results: list[dict]) -> str:
    header = (f"{'batch':>5}  {'product':<26}{'M x K x N':>20}{'torch.mm GF/s':>15}"
              f"{'oneDNN GF/s':>13}{'ratio':>7}{'max |diff|':>12}")
    lines = [header, "-" * len(header)]
    for r in results:
        size = f"{r['m']}x{r['k']}x{r['n']}"
        lines.append(f"{r['batch']:>5}  {r['what']:<26}{size:>20}{r['aten_gflops']:>15.0f}"
                     f"{r['onednn_gflops']:>13.0f}{r['ratio']:>7.2f}{r['max_abs_diff']:>12.1e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nhid", type=int, default=NHID)
    parser.add_argument("--ntoken", type=int, default=NTOKEN)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    from spacec.runtime.nn import gemm

    torch.set_num_threads(args.threads)
    results = [r for batch in args.batches
               for r in measure(batch, args.rounds, args.nhid, args.ntoken)]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {args.threads} thread(s), best of {args.rounds} interleaved "
          f"rounds; ratio = torch.mm's time / oneDNN's")
    print(table(results))
    chosen = gemm.select(gemm.AUTO)
    print(f"run.matmul auto here: {chosen.line()}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "auto": chosen.line()}, indent=2)
                             + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
