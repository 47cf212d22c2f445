"""Tokens per second of the recurrent search and of the recurrent evaluation training.

Three kinds of step, each the work the loops do per batch (spacec.runtime.search.loop, spacec.runtime.train.loop with
the sequence domain, spacec.runtime.domains.text):

- ``search1``: first-order α step (NLL on a valid segment) + w step (NLL + TAR, clip, SGD) on
  the darts_rnn supernet;
- ``search2``: the same with the second-order α step (unrolled SGD step, both gradients clipped);
- ``train``: one w step of the derived network of the paper's cell (DARTS) at evaluation size.

Tokens per second count the w batch (batch × bptt words) per second of a whole step, median
over ``--steps`` steps after ``--warmup`` warm-ups, on random word ids (no data loading), the
hidden state carried from step to step as in training. Every (device, kind) runs in its own
subprocess so peak memory is that configuration's.

The search kinds are measured against an in-run baseline: the same supernet, weights and step,
with the reference's node mix (rnn/model_search.py `DARTSCellSearch.cell`: for every candidate,
states + c * (act(h) - states) over all sources, weighted and summed, recorded op by op:
`recurrent.mix_edges_reference`) in place of the fused one (`recurrent.mix_edges`), and the
reference's loss head (rnn/model_search.py `_loss`: decoder, log_softmax, nll_loss, op by op:
`recurrent.decoded_nll_reference`) in place of the fused one (`recurrent.decoded_nll`), and
torch.mm's products where spacec's may be oneDNN's (`reference_products`; `run.matmul`). Both
models live in one process and their steps alternate (baseline, spacec, baseline, ...), so load on a
shared machine hits both alike; ``ratio`` is the baseline's median time over spacec's, by wall
clock and by process CPU time. The baseline uses spacec's architect, whose first-order α step
asks autograd for ∇α alone; the reference's calls ``loss.backward()`` and also computes every
weight gradient, so against the reference code itself the first-order ratio would be higher.
The ``train`` kind's baseline is the derived network as the compiler generates it (its
products by torch.mm), spacec's the same network with the speed-ups `spacec train` applies
(`accelerate.accelerate_network`: its products through spacec.runtime.nn.gemm, oneDNN's where
``run.matmul: auto`` chooses it). Peak memory is the two models' together. ``--no-baseline``
skips the baseline.

``--compile`` times spacec's model with its time step through ``torch.compile`` (what ``spacec
search --compile`` runs: `RecurrentLM.compile_steps`), against the same eager baseline; the
warm-up then includes compiling, whose seconds the table shows. ``--compile-mode`` passes
torch.compile's mode (``spacec search --compile --cfg run.compile_mode=...``); the table's step
reads ``autotune`` for a mode other than the default. ``--unroll K`` compiles K consecutive time
steps as one graph (``run.compile_unroll``, whose default it takes); the step then reads
``compiled/K``.

The default run is short (a few steps at reduced batch) because the machine it was written on is
shared by other jobs and its timings are noisy; for figures worth comparing, use more steps, the
paper's batch (``--batch 256`` search, ``--train-batch 64``) and an otherwise idle machine:

    python benchmarks/rnn_tokens.py                              # CPU (and CUDA when present)
    python benchmarks/rnn_tokens.py --steps 10 --batch 256 --train-batch 64 --json out.json
    python benchmarks/rnn_tokens.py --kinds train --train-size 200 --devices cpu
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

from timing import peak_memory, run_in_subprocess

KINDS = ("search1", "search2", "train")
# DARTS rnn/train_search.py and rnn/train.py: SGD lr 20 (scaled by seq_len / bptt, here 1),
# weight decay 5e-7 (search) / 8e-7 (train), clip 0.25, PTB's 10,000 words, bptt 35.
LR, SEARCH_WDECAY, TRAIN_WDECAY, CLIP, NTOKEN, BPTT = 20.0, 5e-7, 8e-7, 0.25, 10000, 35


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--search-size", type=int, default=300,
                        help="embedding = hidden size of the supernet (paper: 300)")
    parser.add_argument("--train-size", type=int, default=850,
                        help="embedding = hidden size of the derived network (paper: 850)")
    parser.add_argument("--batch", type=int, default=32, help="search batch (paper: 256)")
    parser.add_argument("--train-batch", type=int, default=16, help="training batch (paper: 64)")
    parser.add_argument("--ntoken", type=int, default=NTOKEN, help="vocabulary (PTB: 10,000)")
    parser.add_argument("--bptt", type=int, default=BPTT)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true",
                        help="spacec's model with its time step compiled (torch.compile)")
    parser.add_argument("--unroll", type=int, default=None,
                        help="with --compile: time steps per compiled graph (spacec's "
                             "run.compile_unroll; default: its default)")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile's mode with --compile (spacec's run.compile_mode), "
                             "e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="do not time the in-run baseline")
    parser.add_argument("--devices", nargs="+", default=None,
                        help="default: cpu, and cuda when available")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------- one measurement (subprocess)


def reference_layout():
    """The softmax relaxation with the reference's op-by-op node mix (the in-run baseline's)."""
    from spacec.runtime.nn import recurrent
    from spacec.runtime.relax.softmax import Softmax

    class ReferenceLayout(Softmax):
        def mix_node(self, states, c, h, weights, columns):
            return recurrent.mix_edges_reference(states, c, h, weights, columns)

    return ReferenceLayout()


def reference_products(model) -> None:
    """The baseline's products by torch.mm, as the reference's: its cell maps' own `product`,
    which the supernet's speed-ups (spacec.runtime.nn.accelerate) gave them, taken away."""
    for sub in model.modules():
        sub.__dict__.pop("product", None)


def build_step(job: dict, device, reference: bool = False, compile_steps: bool = False,
               compile_mode: str = "default", unroll: int = 1):
    """The model and a closure doing one step of `job['kind']` on fresh random segments;
    `reference`: the in-run baseline (the reference's node mix and loss head)."""
    import torch

    import spacec
    from spacec.runtime.domains.text.data import (
        HiddenCarry,
        LanguageData,
        TextBatch,
        segment_loss,
        training_loss,
    )
    from spacec.runtime.nn import recurrent
    from spacec.runtime.nn.accelerate import accelerate_network
    from spacec.runtime.search.architect import ArchConfig, Architect

    cfg = LanguageData()  # the search's dropouts, AR 0 and TAR 1e-3
    size, ntoken, bptt = job["size"], job["ntoken"], job["bptt"]
    space = spacec.load("darts_rnn", ntoken=ntoken, ninp=size, nhid=size)
    torch.manual_seed(0)  # the same initial weights for spacec and the baseline
    if job["kind"] == "train":
        model = space.discrete_network("DARTS", **cfg.dropouts()).to(device)
        if not reference:  # what spacec train runs (its products through spacec's gemm)
            accelerate_network(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, weight_decay=TRAIN_WDECAY)
        params, architect = list(model.parameters()), None
    else:
        relaxation = reference_layout() if reference else None
        model = space.supernet(relaxation=relaxation, **cfg.dropouts()).to(device)
        if reference:
            model.decode_nll = recurrent.decoded_nll_reference
            reference_products(model)
        optimizer = torch.optim.SGD(model.weights(), lr=LR, weight_decay=SEARCH_WDECAY)
        arch_cfg = ArchConfig(order=2 if job["kind"] == "search2" else 1, lr=3e-3,
                              betas=(0.9, 0.999), unrolled_clip=CLIP)
        params = model.weights()
        architect = Architect(model, optimizer, segment_loss, arch_cfg)
    if compile_steps:
        model.compile_steps(functools.partial(torch.compile, mode=compile_mode), unroll=unroll)
    carries = {"train": HiddenCarry(), "val": HiddenCarry()}

    def segment(stream: str) -> TextBatch:
        words = torch.randint(ntoken, (bptt + 1, job["batch"]), device=device)
        carry = carries[stream]
        hidden = carry.hidden if carry.hidden is not None else model.init_hidden(job["batch"])
        return TextBatch(words[:-1], words[1:].reshape(-1), hidden, carry)

    def step() -> None:
        train = segment("train")
        if architect is not None:
            architect.step(train, segment("val"), LR)
        optimizer.zero_grad(set_to_none=True)
        training_loss(model, train, cfg).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        optimizer.step()

    return model, step


def timed(step, device) -> tuple[float, float]:
    """Wall and process CPU seconds of one call of `step` (CUDA work waited for)."""
    import torch

    wall, cpu = time.perf_counter(), time.process_time()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(job: dict) -> dict:
    """Run one configuration in this process (with its baseline, interleaved) and return it."""
    import torch

    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    runs = {"spacec": build_step(job, device, compile_steps=job["compile"],
                                 compile_mode=job["compile_mode"], unroll=job["unroll"])}
    if job["baseline"]:
        runs = {"baseline": build_step(job, device, reference=True), **runs}
    load_before = os.getloadavg()
    warmup: dict[str, float] = {}
    for name, (model, step) in runs.items():
        model.train()
        warmup[name] = sum(timed(step, device)[0] for _ in range(job["warmup"]))
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(job["steps"]):
        for name, (_, step) in runs.items():  # A B A B ...
            times[name].append(timed(step, device))
    model = runs["spacec"][0]
    tokens = job["batch"] * job["bptt"]
    result = {**job, "weights": sum(p.numel() for n, p in model.named_parameters()
                                    if not n.startswith("arch.")),
              "load_before": load_before, "load_after": os.getloadavg(),
              "warmup_s": warmup["spacec"], **peak_memory(device)}
    for name, found in times.items():
        wall = statistics.median(w for w, _ in found)
        cpu = statistics.median(c for _, c in found)
        prefix = "" if name == "spacec" else "baseline_"
        result.update({f"{prefix}median_s": wall, f"{prefix}min_s": min(w for w, _ in found),
                       f"{prefix}cpu_median_s": cpu, f"{prefix}tokens_per_s": tokens / wall,
                       f"{prefix}times": found})
    if "baseline" in times:
        result["ratio"] = result["baseline_median_s"] / result["median_s"]
        result["cpu_ratio"] = result["baseline_cpu_median_s"] / result["cpu_median_s"]
    return result


# ---------------------------------------------------------------- table


def table(results: list[dict]) -> str:
    header = (f"{'device':<7}{'kind':<9}{'step':<12}{'size':>5}{'batch':>6}{'weights':>12}"
              f"{'warm-up s':>10}{'median s':>10}"
              f"{'tokens/s':>10}{'base tok/s':>11}{'ratio':>7}{'cpu ratio':>10}{'RSS GiB':>9}"
              f"{'CUDA GiB':>10}")
    lines = [header, "-" * len(header)]
    for r in results:
        cuda = f"{r['cuda_max_allocated_gib']:.2f}" if "cuda_max_allocated_gib" in r else "-"
        base = f"{r['baseline_tokens_per_s']:.0f}" if "ratio" in r else "-"
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        cpu_ratio = f"{r['cpu_ratio']:.2f}" if "ratio" in r else "-"
        step = "eager"
        if r.get("compile"):
            step = "compiled" if r["compile_mode"] == "default" else "autotune"
            step += f"/{r['unroll']}" if r.get("unroll", 1) > 1 else ""
        lines.append(f"{r['device']:<7}{r['kind']:<9}{step:<12}{r['size']:>5}{r['batch']:>6}"
                     f"{r['weights']:>12,}{r['warmup_s']:>10.1f}{r['median_s']:>10.3f}"
                     f"{r['tokens_per_s']:>10.0f}"
                     f"{base:>11}{ratio:>7}{cpu_ratio:>10}{r['peak_rss_gib']:>9.2f}{cuda:>10}")
    return "\n".join(lines)


def default_devices() -> list[str]:
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def jobs(args: argparse.Namespace, device: str) -> list[dict]:
    common = {"device": device, "ntoken": args.ntoken, "bptt": args.bptt,
              "threads": args.threads, "warmup": args.warmup, "steps": args.steps,
              "baseline": args.baseline, "compile": args.compile,
              "compile_mode": args.compile_mode, "unroll": args.unroll}
    found = []
    for kind in args.kinds:
        train = kind == "train"
        found.append({**common, "kind": kind,
                      "size": args.train_size if train else args.search_size,
                      "batch": args.train_batch if train else args.batch})
    return found


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.unroll is None:
        from spacec.runtime.run.config import RunConfig

        args.unroll = RunConfig().compile_unroll
    if args.compile and args.warmup < 1:
        raise SystemExit("--compile: at least one warm-up step (it compiles)")
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return
    results = []
    for device in args.devices or default_devices():
        for job in jobs(args, device):
            results.append(run_in_subprocess(__file__, job))
            print(f"measured {device} {job['kind']}: {results[-1]['tokens_per_s']:.0f} tokens/s",
                  file=sys.stderr, flush=True)
    loads = [load for r in results for load in (r["load_before"], r["load_after"])]
    print(f"darts_rnn, {args.ntoken} words, bptt {args.bptt}, {args.threads} CPU threads, median "
          f"of {args.steps} steps after {args.warmup} warm-up(s); tokens = the w batch's words; "
          f"{datetime.datetime.now().isoformat(timespec='seconds')}, load average (1 min) "
          f"{min(load[0] for load in loads):.2f}-{max(load[0] for load in loads):.2f} on "
          f"{os.cpu_count()} CPUs; ratio = baseline time / spacec time (search: the reference's "
          "node mix, loss head and torch.mm, eager; train: the generated network, torch.mm)")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
