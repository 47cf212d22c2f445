"""Time and memory of one search step on the darts_cnn supernet, against an in-run baseline.

Three kinds of DARTS step, each the search loop's work per batch: ``weights`` (the w step alone:
forward, backward, clip, SGD), ``first`` (first-order α step + w step) and ``second``
(second-order α step + w step), on random CIFAR-sized batches. Each kind runs for every variant:

    reference        the same supernet in the reference code's arithmetic layout (quark0/darts
                     model_search.py: NCHW, a ReLU inside every candidate, the zero op computed
                     and multiplied, direct dilated convolutions; benchmarks/reference_layout.py),
                     driven by the same architect
    fast, balanced, low   spacec's supernet at each memory setting (run.memory)
    then             with ``--then REV``: the same step as git revision REV of this repository
                     takes it, with its code and its own worker (REV's benchmarks/search_step.py,
                     at its default settings), e.g. the code of the day issue 11 was filed
                     (3930e86), to tell whether a setting is slower than the code was then

Every (batch, kind, variant) runs in its own subprocess, so that its peak RSS is its own, and the
variants are interleaved (reference, fast, balanced, low, then again, ``--rounds`` times), so a
change of the machine's load hits them alike. spacec's variants step as the search loop does,
with the objects of the setup frozen out of Python's cyclic collector
(spacec.runtime.run.heap.frozen_setup); the reference variant, as the reference code does,
without (``--no-freeze``: spacec's too); the seconds the collector ran per step are printed as
each measurement ends and kept in the JSON (``collector_s_per_step``). Reported: the median
wall time and CPU time of a step (``--steps`` steps after ``--warmup``; the median over rounds),
the peak RSS (and on CUDA the peak allocation, torch.cuda.max_memory_allocated, and steps/s,
images/s), and every variant's ratios to the reference's. The load average is recorded
(`uptime`): on a shared machine, the CPU time is the steadier figure.

With ``--method NAME`` (or ``all``) the step is instead the search loop's own step for that
method (`Search._step`: its relaxation, strategy and loss terms, warm-up off) on batches of
the embedded CIFAR-10 sample, read before timing, at ``--memory`` and each ``--order`` (default:
first; no baseline). ``--switches`` then times the run section's speed switches against each other,
interleaved: ``fp32`` (the default run), ``bf16`` (run.precision), ``nchw`` (run.channels_last
off), ``compile`` (run.compile), ``cudagraphs`` (run.compile with compile_mode
reduce-overhead: CUDA graphs on a GPU) and combinations such as ``bf16+compile``.

    python benchmarks/search_step.py --batch 16                     # C=16, 8 cells
    python benchmarks/search_step.py --C 4 --layers 5 --batch 8 --steps 2 --json out.json
    python benchmarks/search_step.py --then 3930e86 --variants reference then fast balanced
    python benchmarks/search_step.py --method darts pc_darts gdas --batch 64
    python benchmarks/search_step.py --method darts --devices cuda --batch 64 --order 2 \
        --switches fp32 bf16 bf16+compile
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from timing import (
    CollectorTime,
    peak_memory,
    run_in_subprocess,
    step_seconds,
    tree_of_revision,
)

KINDS = ("weights", "first", "second")
REFERENCE, THEN = "reference", "then"
SETTINGS = ("fast", "balanced", "low")  # spacec.runtime.run.config.MEMORY_SETTINGS
VARIANTS = (REFERENCE, THEN, *SETTINGS)
# The memory setting a `then` revision's worker is given: what every revision's default runs on
# this benchmark's batches (`fast`, and since `auto` became the default, `fast` wherever it
# fits; the first revision had no setting, and its worker reads none).
THEN_SETTING = "fast"
# --switches: the run section's overrides each switch sets (spacec.runtime.run.config.RunConfig)
SWITCHES = {"fp32": {}, "bf16": {"run.precision": "bf16"}, "nchw": {"run.channels_last": False},
            "compile": {"run.compile": True},
            "cudagraphs": {"run.compile": True, "run.compile_mode": "reduce-overhead"}}
# DARTS train_search.py: the w optimiser and its clip; CIFAR images.
LR, MOMENTUM, WEIGHT_DECAY, GRAD_CLIP = 0.025, 0.9, 3e-4, 5.0
IMAGE_SHAPE, CLASSES = (3, 32, 32), 10


def parse_switches(text: str) -> str:
    unknown = [name for name in text.split("+") if name not in SWITCHES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown switch {unknown[0]!r} (known: "
                                         f"{', '.join(SWITCHES)})")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="darts_cnn")
    parser.add_argument("--C", type=int, default=16, help="initial channels (paper: 16)")
    parser.add_argument("--layers", type=int, default=8, help="cells (paper: 8)")
    parser.add_argument("--batch", type=int, nargs="+", default=[16])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS,
                        default=[v for v in VARIANTS if v != THEN])
    parser.add_argument("--then", metavar="REV",
                        help="git revision the variant `then` runs (e.g. 3930e86)")
    parser.add_argument("--method", nargs="+", metavar="NAME",
                        help="search methods (`spacec methods`), or all: time each method's "
                             "step instead of the DARTS kinds")
    parser.add_argument("--memory", choices=SETTINGS, default="balanced",
                        help="the memory setting of --method runs")
    parser.add_argument("--order", type=int, nargs="+", choices=(1, 2), default=[1],
                        help="with --method: the α gradient's order (each one given)")
    parser.add_argument("--switches", nargs="+", default=["fp32"], type=parse_switches,
                        help="with --method: speed switches to compare, e.g. fp32 bf16+compile")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--devices", nargs="+", default=None,
                        help="default: cpu, and cuda when available")
    parser.add_argument("--no-freeze", dest="freeze", action="store_false",
                        help="spacec's variants without the search loop's frozen setup "
                             "(spacec.runtime.run.heap), to measure what it saves")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------- one measurement (subprocess)


def build(job: dict, device):
    """The network of `job`'s variant, on `device`."""
    if job["variant"] == REFERENCE:
        from reference_layout import ReferenceNetwork

        return ReferenceNetwork(C=job["C"], layers=job["layers"]).to(device)
    import spacec
    from spacec.runtime.nn.memory import set_memory

    model = spacec.load(job["space"], C=job["C"], layers=job["layers"]).supernet()
    return set_memory(model, job["variant"]).to(device)


def darts_step(job: dict, device) -> Callable[[], None]:
    """One DARTS step of `job`'s kind (weights, first, second) on `job`'s variant and size, as
    a function: the model, its SGD and the architect built, a train and a validation batch
    drawn."""
    import torch
    import torch.nn.functional as F

    from spacec.runtime.search.architect import ArchConfig, Architect

    torch.manual_seed(0)
    model = build(job, device)
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

    return step


def setup_as_run(job: dict):
    """What the search loop runs its steps in (spacec.runtime.run.heap.frozen_setup: the
    objects of the setup left out of the cyclic collector's walks); the reference variant, the
    reference code's layout, runs without."""
    if job.get("variant") == REFERENCE or not job.get("freeze", True):
        return contextlib.nullcontext()
    from spacec.runtime.run.heap import frozen_setup

    return frozen_setup()


def measure(job: dict) -> dict:
    """Run one configuration in this process and return its figures."""
    if job.get("method"):
        return measure_method(job)
    import torch

    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    step = darts_step(job, device)
    cpu_times = []

    def timed_step() -> None:
        started = time.process_time()
        step()
        cpu_times.append(time.process_time() - started)

    with setup_as_run(job), CollectorTime() as collector:
        times = step_seconds(timed_step, job["warmup"], job["steps"], device)
    return {**job, "median_s": statistics.median(times), "min_s": min(times),
            "cpu_median_s": statistics.median(cpu_times[job["warmup"]:]),
            "collector_s_per_step": collector.seconds / (job["warmup"] + job["steps"]),
            **peak_memory(device)}


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
    if job.get("order", 1) != 1:
        overrides["arch.order"] = job["order"]
    for name in job.get("switches", "fp32").split("+"):
        overrides.update(SWITCHES[name])
    return Search.build(load_config("quick", overrides))


def measure_method(job: dict) -> dict:
    import torch

    from spacec.runtime.nn.memory import set_memory

    search = method_search(job)
    set_memory(search.model, job["memory"])
    torch.manual_seed(0)
    batches = next(iter(search.task.batches(0, 0)))
    search.model.set_search_progress(0, search.cfg.optim.epochs)
    lr = search.learning_rate(0)

    def step() -> None:
        search._step(batches, lr, "benchmark")

    device = torch.device(job["device"])
    with setup_as_run(job):
        times = step_seconds(step, job["warmup"], job["steps"], device)
    kind = job["method"] if job.get("order", 1) == 1 else f"{job['method']} 2nd"
    return {**job, "kind": kind, "median_s": statistics.median(times),
            "min_s": min(times), **peak_memory(device)}


# ---------------------------------------------------------------- summary and table


def summarise(rounds: list[dict]) -> dict:
    """One configuration's rounds: medians of the times, the smallest peak memory."""
    first = rounds[0]
    out = {k: v for k, v in first.items() if k not in ("median_s", "min_s", "cpu_median_s")}
    out["rounds"] = len(rounds)
    out["median_s"] = statistics.median(r["median_s"] for r in rounds)
    out["min_s"] = min(r["min_s"] for r in rounds)
    for key in ("cpu_median_s", "collector_s_per_step"):
        if key in first:
            out[key] = statistics.median(r[key] for r in rounds)
    for key in ("peak_rss_gib", "cuda_max_allocated_gib"):
        if key in first:
            out[key] = min(r[key] for r in rounds)
    if first["device"] != "cpu":
        out["steps_per_s"] = 1 / out["median_s"]
        out["images_per_s"] = first["batch"] / out["median_s"]
    return out


def add_ratios(results: list[dict]) -> None:
    """Each variant's time and memory over the reference's (same device, batch and kind) and,
    with --then, over the revision's; with --method, each switch's over the first switch's
    (same device, batch and method)."""
    reference: dict[tuple, dict] = {}
    then: dict[tuple, dict] = {}
    for r in results:
        key = (r["device"], r["batch"], r["kind"])
        if r.get("variant") == REFERENCE or (r.get("method") and key not in reference):
            reference[key] = r
        if r.get("variant") == THEN:
            then[key] = r
    for r in results:
        key = (r["device"], r["batch"], r["kind"])
        memory = "cuda_max_allocated_gib" if r["device"] != "cpu" else "peak_rss_gib"
        base = reference.get(key)
        if base is not None:
            r["time_ratio"] = r["median_s"] / base["median_s"]
            if "cpu_median_s" in r and "cpu_median_s" in base:
                r["cpu_time_ratio"] = r["cpu_median_s"] / base["cpu_median_s"]
            r["memory_ratio"] = r[memory] / base[memory]
        if key in then:
            r["then_time_ratio"] = r["median_s"] / then[key]["median_s"]
            r["then_memory_ratio"] = r[memory] / then[key][memory]


def table(results: list[dict]) -> str:
    then = any("then_time_ratio" in r for r in results)
    header = (f"{'device':<7}{'batch':>6}  {'step':<12} {'variant':<15}{'wall s':>8}{'cpu s':>8}"
              f"{'RSS GiB':>9}{'CUDA GiB':>10}{'time/ref':>10}{'cpu/ref':>9}{'mem/ref':>9}"
              + (f"{'time/then':>11}{'mem/then':>10}" if then else ""))
    lines = [header, "-" * len(header)]
    for r in results:
        cuda = f"{r['cuda_max_allocated_gib']:.2f}" if "cuda_max_allocated_gib" in r else "-"
        cpu = f"{r['cpu_median_s']:.2f}" if "cpu_median_s" in r else "-"

        def ratio(key: str, r: dict = r) -> str:
            return f"{r[key]:.2f}" if key in r else "-"

        variant = r.get("variant") or f"{r['memory']} {r.get('switches', '')}".strip()
        lines.append(f"{r['device']:<7}{r['batch']:>6}  {r['kind']:<12} "
                     f"{variant:<15}{r['median_s']:>8.2f}"
                     f"{cpu:>8}{r['peak_rss_gib']:>9.2f}{cuda:>10}{ratio('time_ratio'):>10}"
                     f"{ratio('cpu_time_ratio'):>9}{ratio('memory_ratio'):>9}"
                     + (f"{ratio('then_time_ratio'):>11}{ratio('then_memory_ratio'):>10}"
                        if then else ""))
    return "\n".join(lines)


def collector_note(result: dict) -> str:
    """The garbage collector's share of a measurement, where it was timed (not a `then`
    revision's worker, whose code may not time it)."""
    if "collector_s_per_step" not in result:
        return ""
    return f", cyclic collector {result['collector_s_per_step'] * 1e3:.0f} ms/step"


def default_devices() -> list[str]:
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


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
    if methods and THEN in args.variants:
        raise SystemExit("search_step.py: the variant `then` times DARTS steps, not --method")
    with tempfile.TemporaryDirectory(prefix="spacec-then-") as scratch:
        then_tree = None
        if THEN in args.variants and not methods:
            if not args.then:
                raise SystemExit("search_step.py: the variant `then` needs --then REV")
            then_tree = tree_of_revision(args.then, Path(scratch))
        results, loads = measure_all(args, devices, methods, then_tree)
    add_ratios(results)
    then = f"; then: {args.then}" if then_tree is not None else ""
    print(f"{args.space}, C={args.C}, {args.layers} cells, {args.threads} CPU threads, median of "
          f"{args.steps} steps after {args.warmup} warm-up(s), {args.rounds} interleaved rounds; "
          f"load average (1, 5, 15 min) during the run: {'; '.join(loads)}{then}")
    print(table(results))
    if args.json:
        record = {"date": time.strftime("%Y-%m-%d %H:%M"), "load_averages": loads,
                  "then": args.then if then_tree is not None else None, "results": results}
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def run_job(job: dict, then_tree: Path | None) -> dict:
    """One measurement in its own process: by this script, or for the variant `then` by the
    revision's own worker on the revision's code."""
    if job["variant"] != THEN:
        return run_in_subprocess(__file__, job)
    assert then_tree is not None
    result = run_in_subprocess(str(then_tree / "benchmarks" / "search_step.py"),
                               {**job, "variant": THEN_SETTING, "memory": THEN_SETTING},
                               env={"PYTHONPATH": str(then_tree)})
    return {**result, "variant": THEN, "memory": THEN}


def measure_all(args: argparse.Namespace, devices: list[str], methods: list[str],
                then_tree: Path | None) -> tuple[list[dict], list[str]]:
    loads = [load_average()]
    results = []
    for device in devices:
        for batch in args.batch:
            kinds = [(m, o) for m in methods for o in args.order] or [(k, 1) for k in args.kinds]
            for kind, order in kinds:
                variants = args.switches if methods else args.variants
                rounds: dict[str, list[dict]] = {v: [] for v in variants}
                for _ in range(args.rounds):
                    for variant in variants:  # interleaved: A B C D A B C D
                        job = {"space": args.space, "C": args.C, "layers": args.layers,
                               "batch": batch, "kind": kind, "device": device,
                               "threads": args.threads, "warmup": args.warmup,
                               "freeze": args.freeze,
                               "steps": args.steps, "variant": None if methods else variant,
                               "memory": args.memory if methods else variant,
                               "method": kind if methods else None}
                        if methods:
                            job.update(order=order, switches=variant)
                        rounds[variant].append(run_job(job, then_tree))
                        print(f"measured {device} batch {batch} {kind} {variant}: "
                              f"{rounds[variant][-1]['median_s']:.3f} s, "
                              f"{rounds[variant][-1]['peak_rss_gib']:.2f} GiB"
                              + collector_note(rounds[variant][-1]),
                              file=sys.stderr, flush=True)
                results += [summarise(rounds[v]) for v in variants]
                loads.append(load_average())
    return results, loads


if __name__ == "__main__":
    main()
