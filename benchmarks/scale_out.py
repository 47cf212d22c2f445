"""Speed of a search step on one process and on several (torchrun, DDP), for a fixed global batch.

Each configuration is a number of processes and torch threads per process: by default one
process with one thread, one process with two threads, and two processes with one thread each
(the same two cores, used by threads or by processes). Every configuration runs under torchrun
(``python -m torch.distributed.run --standalone``) in fresh interpreters; with one process no
process group exists, which is spacec's single-process path. A worker builds the search of the
``quick`` preset (darts_cnn, C=8, 5 cells, the whole CIFAR-10 sample) at the global batch `--batch`
and times the search loop's steps, data loading included (the loop's own batches), after
`--warmup` untimed steps; rank 0 reports the median wall seconds per step and the CPU seconds
per step of all processes together (the work: a second process adds communication and the
replicated parts of the step). Configurations are interleaved, `--repeats` rounds, so that a
machine's changing load falls on all of them alike; the load average is recorded beside each
run, because on a shared machine the scheduler's share of the cores, not the code, can decide
the wall time (two processes get two shares).

    python benchmarks/scale_out.py                       # batch 32, first order, 3 rounds
    python benchmarks/scale_out.py --batch 64 --order 2 --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# (processes, threads per process)
CONFIGS = ((1, 1), (1, 2), (2, 1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="global batch (quick preset: 32)")
    parser.add_argument("--order", type=int, choices=(1, 2), default=1)
    parser.add_argument("--C", type=int, default=8)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=[f"{p}x{t}" for p, t in CONFIGS],
                        help="PROCESSESxTHREADS, e.g. 2x1")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------- one measurement (torchrun)


def measure(job: dict) -> dict | None:
    """The search steps of `job` on this process; rank 0's figures (None on the others)."""
    from spacec.runtime.search.config import load_config
    from spacec.runtime.search.loop import Search

    cfg = load_config("quick", {
        "space.overrides.C": job["C"], "space.overrides.layers": job["layers"],
        "data.batch_size": job["batch"], "data.limit": None, "arch.order": job["order"],
        "run.threads": job["threads"], "run.out": "unused"})
    search = Search.build(cfg)
    lr = search.learning_rate(0)
    batches = itertools.chain.from_iterable(search.task.batches(epoch, 0)
                                            for epoch in itertools.count())
    times, cpu = [], 0.0
    for index in range(job["warmup"] + job["steps"]):
        search.session.barrier()  # every process starts the step together
        started, cpu_started = time.perf_counter(), time.process_time()
        search._step(next(batches), lr, f"step {index + 1}")
        search.session.barrier()  # the step ends when the slowest process ends it
        if index >= job["warmup"]:
            times.append(time.perf_counter() - started)
            cpu += time.process_time() - cpu_started
    (cpu_total,) = search.session.shard.sum([cpu])  # every process's CPU time
    if search.session.rank != 0:
        return None
    return {"median_s": statistics.median(times), "times_s": times,
            "cpu_s_per_step": cpu_total / job["steps"],
            "processes": search.session.world_size, "threads": job["threads"]}


def run_config(processes: int, job: dict) -> dict:
    """`job` on `processes` processes under torchrun, in fresh interpreters."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(processes), __file__, "--worker", json.dumps(job)]
    env = {**os.environ, "OMP_NUM_THREADS": str(job["threads"])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        result = measure(json.loads(args.worker))
        if result is not None:
            print(json.dumps(result), flush=True)
        return
    configs = [tuple(int(n) for n in text.split("x")) for text in args.configs]
    runs: dict[str, list[float]] = {f"{p}x{t}": [] for p, t in configs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    loads: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(args.repeats):
        for processes, threads in configs:  # interleaved: one of each per round
            job = {"batch": args.batch, "order": args.order, "C": args.C,
                   "layers": args.layers, "warmup": args.warmup, "steps": args.steps,
                   "threads": threads}
            name = f"{processes}x{threads}"
            load_before = os.getloadavg()[0]
            result = run_config(processes, job)
            load = (load_before + os.getloadavg()[0]) / 2
            runs[name].append(result["median_s"])
            cpu[name].append(result["cpu_s_per_step"])
            loads[name].append(load)
            print(f"round {round_index + 1}: {processes} process(es) x {threads} thread(s): "
                  f"{result['median_s']:.3f} s/step, {result['cpu_s_per_step']:.3f} CPU s/step "
                  f"(load average {load:.1f})", flush=True)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    print(f"\nglobal batch {args.batch}, order {args.order}, darts_cnn C={args.C} "
          f"{args.layers} cells; median over {args.repeats} rounds of each round's median "
          f"of {args.steps} steps")
    for name, value in medians.items():
        processes, threads = name.split("x")
        print(f"  {processes} process(es) x {threads} thread(s): {value:.3f} s/step, "
              f"{statistics.median(cpu[name]):.3f} CPU s/step, load average "
              f"{statistics.mean(loads[name]):.1f}")
    base = medians.get("1x1")
    if base is not None and "2x1" in medians:
        print(f"speed-up, 2 processes vs 1 process (1 thread): {base / medians['2x1']:.2f}x")
    if "1x2" in medians and "2x1" in medians:
        print(f"speed-up, 2 processes vs 1 process (2 threads): "
              f"{medians['1x2'] / medians['2x1']:.2f}x")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: v for k, v in vars(args).items()
                                                  if k not in ("json", "worker")},
                                         "seconds_per_step": runs, "medians": medians,
                                         "cpu_seconds_per_step": cpu, "load_average": loads,
                                         "cpu_count": os.cpu_count()},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
