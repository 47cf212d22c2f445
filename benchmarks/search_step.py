"""Time and memory of one search step on the darts_cnn supernet, for DARTS or any method.

Three kinds of DARTS step, each the search loop's work per batch: ``weights`` (the w step alone:
forward, backward, clip, SGD), ``first`` (first-order α step + w step) and ``second``
(second-order α step + w step), on random CIFAR-sized batches. With ``--method NAME`` (or
``all``) the step is instead the search loop's own step for that method (`Search._step`: its
relaxation, strategy and loss terms, first order, warm-up off) on batches of the embedded
CIFAR-10 sample, read before timing. Each (device, batch, kind or method) runs in its own
subprocess, so that the peak RSS reported is that configuration's; the time is the median over
``--steps`` steps after ``--warmup`` warm-up steps (data loading is not timed).

    python benchmarks/search_step.py                        # C=16, 8 cells, batch 16 and 64
    python benchmarks/search_step.py --C 4 --layers 5 --batch 8 --steps 2 --json out.json
    python benchmarks/search_step.py --method darts pc_darts gdas --batch 64

Targets printed beside the DARTS figures: the reference implementation (quark0/darts) on 2
threads, batch 16, C=16, 8 cells.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from timing import peak_memory, run_in_subprocess, step_seconds

KINDS = ("weights", "first", "second")
# Reference implementation, 2 CPU threads, batch 16: seconds per step and peak RSS in GiB.
TARGET_SECONDS = {"weights": 6.1, "first": 12.8, "second": 27.5}
TARGET_RSS_GIB = {"weights": 3.0, "first": 3.0, "second": 3.8}
TARGET_BATCH, TARGET_THREADS, TARGET_C, TARGET_LAYERS = 16, 2, 16, 8
# DARTS train_search.py: the w optimiser and its clip; CIFAR images.
LR, MOMENTUM, WEIGHT_DECAY, GRAD_CLIP = 0.025, 0.9, 3e-4, 5.0
IMAGE_SHAPE, CLASSES = (3, 32, 32), 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="darts_cnn")
    parser.add_argument("--C", type=int, default=16, help="initial channels (paper: 16)")
    parser.add_argument("--layers", type=int, default=8, help="cells (paper: 8)")
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--method", nargs="+", metavar="NAME",
                        help="search methods (`spacec methods`), or all: time each method's "
                             "step instead of the DARTS kinds")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--devices", nargs="+", default=None,
                        help="default: cpu, and cuda when available")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------- one measurement (subprocess)


def measure(job: dict) -> dict:
    """Run one configuration in this process and return its figures."""
    if job.get("method"):
        return measure_method(job)
    import torch
    import torch.nn.functional as F

    import spacec
    from spacec.runtime.search.architect import ArchConfig, Architect

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    device = torch.device(job["device"])
    model = spacec.load(job["space"], C=job["C"], layers=job["layers"]).supernet().to(device)
    optimizer = torch.optim.SGD(model.weights(), lr=LR, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)

    def loss_fn(call, batch):
        images, labels = batch
        return F.cross_entropy(call(images), labels)

    order = 2 if job["kind"] == "second" else 1
    architect = Architect(model, optimizer, loss_fn, ArchConfig(order=order))

    def batch():
        images = torch.randn(job["batch"], *IMAGE_SHAPE, device=device)
        return images, torch.randint(CLASSES, (job["batch"],), device=device)

    train, val = batch(), batch()

    def step() -> None:
        if job["kind"] != "weights":
            architect.step(train, val, LR)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model, train).backward()
        torch.nn.utils.clip_grad_norm_(model.weights(), GRAD_CLIP)
        optimizer.step()


    times = step_seconds(step, job["warmup"], job["steps"], device)
    result = {**job, "median_s": statistics.median(times), "min_s": min(times),
              **peak_memory(device)}
    return result


def method_search(job: dict):
    """The search loop of `job`'s method on darts_cnn-like sizes (quick preset, first order)."""
    from spacec.arch.methods import describe
    from spacec.runtime.search.config import load_config
    from spacec.runtime.search.loop import Search

    params = describe(job["method"]).defaults()
    overrides = {"space.name": job["space"], "space.overrides.C": job["C"],
                 "space.overrides.layers": job["layers"], "method.name": job["method"],
                 "data.batch_size": job["batch"], "data.limit": 4 * job["batch"],
                 "run.threads": job["threads"], "run.device": job["device"], "run.out": "/tmp"}
    if "warmup_epochs" in params:
        overrides["method.warmup_epochs"] = 0  # time the α step too
    return Search.build(load_config("quick", overrides))


def measure_method(job: dict) -> dict:
    import torch

    search = method_search(job)
    torch.manual_seed(0)
    batches = next(iter(search.task.batches(0, 0)))
    search.model.set_search_progress(0, search.cfg.optim.epochs)
    lr = search.learning_rate(0)

    def step() -> None:
        search._step(batches, lr, "benchmark")

    device = torch.device(job["device"])
    times = step_seconds(step, job["warmup"], job["steps"], device)
    return {**job, "kind": job["method"], "median_s": statistics.median(times),
            "min_s": min(times), **peak_memory(device)}


# ---------------------------------------------------------------- table


def target_of(result: dict) -> tuple[float, float] | None:
    comparable = (not result.get("method") and result["device"] == "cpu"
                  and result["batch"] == TARGET_BATCH
                  and result["threads"] == TARGET_THREADS and result["C"] == TARGET_C
                  and result["layers"] == TARGET_LAYERS)
    kind = result["kind"]
    return (TARGET_SECONDS[kind], TARGET_RSS_GIB[kind]) if comparable else None


def table(results: list[dict]) -> str:
    header = (f"{'device':<7}{'batch':>6}  {'step':<12}{'median s':>10}{'min s':>9}"
              f"{'RSS GiB':>9}{'CUDA GiB':>10}   target (reference, 2 threads, batch 16)")
    lines = [header, "-" * len(header)]
    for r in results:
        target = target_of(r)
        cuda = f"{r['cuda_max_allocated_gib']:.2f}" if "cuda_max_allocated_gib" in r else "-"
        beside = f"{target[0]:.1f} s, {target[1]:.1f} GiB" if target else "-"
        lines.append(f"{r['device']:<7}{r['batch']:>6}  {r['kind']:<12}{r['median_s']:>10.3f}"
                     f"{r['min_s']:>9.3f}{r['peak_rss_gib']:>9.2f}{cuda:>10}   {beside}")
    return "\n".join(lines)


def default_devices() -> list[str]:
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return
    devices = args.devices or default_devices()
    methods = args.method or []
    if "all" in methods:
        from spacec.arch.methods import describe, method_names

        methods = [name for name in method_names() if describe(name).shares_weights]
    results = []
    for device in devices:
        for batch in args.batch:
            for kind in methods or args.kinds:
                job = {"space": args.space, "C": args.C, "layers": args.layers, "batch": batch,
                       "kind": kind, "device": device, "threads": args.threads,
                       "warmup": args.warmup, "steps": args.steps,
                       "method": kind if methods else None}
                results.append(run_in_subprocess(__file__, job))
                print(f"measured {device} batch {batch} {kind}: "
                      f"{results[-1]['median_s']:.3f} s", file=sys.stderr, flush=True)
    print(f"{args.space}, C={args.C}, {args.layers} cells, {args.threads} CPU threads, median of "
          f"{args.steps} steps after {args.warmup} warm-ups")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
