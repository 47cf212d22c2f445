"""The cost model's predicted peak memory against the measured peak, step by step.

For each (space, batch, step, method, memory setting) the prediction comes from the IR alone
(spacec.cost, no torch), made as a run makes it (runtime/run/fits.py: the method's cost options
as the `paper` preset sets them); the run's own prediction is recorded beside it. The
measurement comes from a fresh subprocess that builds the search as `spacec search` does
(`Search.build` on the `paper` preset: the method's relaxation and strategy, the memory
setting, the order) on random images of the space's input size (the `memory` dataset), runs
``--warmup`` steps of the search loop (`Search._step`: the α step on a validation batch, then
the w step with the method's loss terms, clipping and SGD) and then one more. A method with a
warm-up (PC-DARTS, DrNAS) has it set to 0, so its α step runs. `train` steps are the training
loop's own step (`Trainer._step` of the `paper` train preset: forward with the auxiliary head,
both losses, clipping, SGD, drop path at its final probability) on the derived network.

Both figures leave the process's baseline out the same way: the measured figure is the peak
resident set size less the resident size once torch, the space and the CPU kernels are loaded
(the same step run once on the space at C=4, batch 2) but before the model is built; the
prediction never counts the interpreter. On a GPU, the CUDA figure is max_memory_allocated over
the measured step (nothing is on the device before the model).

Why peak RSS on the CPU: the cost model predicts what the process needs from the machine, which
is what decides whether a run fits, and glibc keeps freed activations in its heap, so tracing
the live tensors (tracemalloc does not see torch's allocations; the profiler's memory view sees
tensors only) would leave out what the process actually holds. The delta against a baseline
taken after the same step on a tiny network keeps torch's code pages and kernel caches out.

    python benchmarks/cost_model.py                                  # darts on the three spaces
    python benchmarks/cost_model.py --spaces darts_cnn --batch 16 --methods all --json out.json
    python benchmarks/cost_model.py --spaces darts_cnn --memory fast balanced low
    python benchmarks/cost_model.py --limit-gib 8     # skip what the prediction says won't fit
    python benchmarks/cost_model.py --spaces darts_cnn darts_imagenet --steps train
    python benchmarks/cost_model.py --spaces --rnn       # the recurrent search only (darts)
    python benchmarks/cost_model.py --reuse a.json b.json  # re-predict, keep the measurements

A method runs the steps it allows (`--steps first second`: GDAS, SNAS, DrNAS and random_ws are
first order; random_ws's step is the w step on one path). Configurations whose prediction
exceeds ``--limit-gib`` are listed as not measured. The table gives predicted / measured and
whether that is within ±20% (the issue's accuracy target).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from pathlib import Path

from timing import GIB, run_in_subprocess

SEARCH_STEPS = ("weights", "first", "second")
# The recurrent search at the quick preset's sizes (runtime/configs/search_rnn_quick.yaml: the
# embedded WikiText-2 slice's 11,322 words, 32 units, batch 32, bptt 35).
RNN_QUICK = {"ntoken": 11322, "ninp": 32, "nhid": 32}
RNN_BATCH, RNN_BPTT = 32, 35
# `train` steps train the evaluation network: DARTS' CIFAR-10 one at C=36, 20 cells (train.py).
TRAIN_OVERRIDES = {"darts_cnn": {"C": 36, "layers": 20}}
SAMPLING = ("gdas", "random_ws")  # methods whose step runs a sample of the candidates


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="*",
                        default=["darts_cnn", "nas_bench_201", "darts_imagenet"])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--steps", nargs="+", default=["first", "second"],
                        choices=[*SEARCH_STEPS, "train"])
    parser.add_argument("--genotype", default="DARTS_V2", help="the derived network to train")
    parser.add_argument("--rnn", action="store_true",
                        help="also the recurrent search at the quick preset's sizes")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--methods", nargs="+", default=["darts"],
                        help="search methods (`spacec methods`), or all")
    parser.add_argument("--sample", nargs="+", default=["drawn"], choices=["drawn", "worst"],
                        help="GDAS's and random_ws's samples: as drawn at the start of a search, "
                             "or the prediction's bound (the heaviest candidates)")
    parser.add_argument("--memory", nargs="+", default=["fast"],
                        choices=["fast", "balanced", "low"], help="memory settings")
    parser.add_argument("--reuse", type=Path, nargs="+", default=[],
                        help="JSON files of earlier runs: their measurements are reused for the "
                        "same configurations, the predictions made anew")
    parser.add_argument("--limit-gib", type=float, default=16.0,
                        help="measure only what the prediction puts below this")
    parser.add_argument("--predict-only", action="store_true", help="measure nothing")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------- prediction (no torch)


def predict(job: dict, device: str | None = None) -> dict:
    """The prediction a run of `job` prints at start (runtime/run/fits.py), made here from the
    IR: the order's step, the method's cost options as the `paper` preset sets them. `device`:
    the cost model's device to predict for, if not the job's (a registered `cost.Device`)."""
    import spacec
    from spacec import cost
    from spacec.arch.genotype import resolve

    device = device or job["device"]
    space = spacec.load(job["space"], **job["overrides"])
    if job["step"] == "train":
        genotype = resolve(job["genotype"], space.name)
        prediction = cost.predict_train(space.ir, genotype, job["batch"], device=device)
    else:
        prediction = cost.predict_search(space.ir, job["batch"], step=job["step"],
                                         device=device, bptt=job.get("bptt", RNN_BPTT),
                                         method_name=job["method"], memory=job["memory"],
                                         method_options=method_options(job))
    return prediction.to_dict()


def method_options(job: dict) -> dict:
    """The cost options of `job`'s method as a run of it sets them (the preset's settings)."""
    from spacec import cost

    if job["space"] == "darts_rnn":
        return {}
    from spacec.runtime.search.config import load_config

    cfg = load_config("paper", search_overrides(job))
    return cost.known_options(job["method"], dataclasses.asdict(cfg.method))


# ---------------------------------------------------------------- measurement (subprocess)


def resident_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_resident_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def tiny(job: dict) -> dict:
    """The same step on the same space at a tiny width and batch (the kernels it pages in)."""
    import spacec

    overrides = dict(job["overrides"])
    if job["space"] == "darts_rnn":
        overrides.update(ninp=4, nhid=4)
    elif "C" in spacec.load(job["space"]).params:
        overrides["C"] = 4  # divisible by PC-DARTS's k
    return {**job, "overrides": overrides, "batch": 2}


def train_step(job: dict, device):
    """The training loop's own step (`Trainer._step`: forward with the auxiliary head, both
    losses, clipping, SGD; drop path at the paper's final probability) of the `paper` preset on
    random images (module docstring)."""
    from spacec.arch.genotype import resolve
    from spacec.runtime.train.config import load_train_config
    from spacec.runtime.train.loop import Trainer

    space = hold_random_images(job)
    overrides = {"space.name": job["space"], "data.name": "memory",
                 "data.batch_size": job["batch"], "data.train_portion": 0.5,
                 "run.threads": job["threads"], "run.device": job["device"], "run.out": "/tmp",
                 "run.tensorboard": False}
    overrides.update({f"space.overrides.{k}": v for k, v in job["overrides"].items()})
    trainer = Trainer.build(load_train_config("paper", overrides),
                            resolve(job["genotype"], space.name))
    trainer.network.drop_path_prob = trainer.cfg.optim.drop_path_prob
    trainer.network.train()
    batch = next(iter(trainer.task.batches(0, 0)))
    job["run_prediction"] = trainer.fit.prediction.to_dict() if trainer.fit else None

    def step() -> None:
        trainer._step(batch, trainer.cfg.optim.lr, "benchmark")

    return step


def hold_random_images(job: dict):
    """The `memory` dataset: 4 batches of random images of the space's size, every class
    present; returns the space."""
    import torch
    from torch.utils.data import TensorDataset

    import spacec
    from spacec.runtime.domains.image.data import hold_in_memory

    space = spacec.load(job["space"], **job["overrides"])
    classes = dict(space.spec.params).get("classes", 10)
    count = 4 * job["batch"]  # the train and validation halves, two batches each
    labels = torch.arange(count) % classes
    data = TensorDataset(torch.randn(count, *space.input_shape), labels)
    hold_in_memory(data, data, None)
    return space


def search_overrides(job: dict) -> dict:
    """The `paper` preset for `job`: its space, sizes, method, order, memory setting and batch,
    on the `memory` dataset (random images the space's size, held by this process)."""
    from spacec.arch.methods import describe

    overrides = {"space.name": job["space"], "method.name": job["method"],
                 "data.name": "memory", "data.batch_size": job["batch"],
                 "arch.order": 2 if job["step"] == "second" else 1,
                 "run.memory": job["memory"], "run.threads": job["threads"],
                 "run.device": job["device"], "run.out": "/tmp", "run.tensorboard": False}
    overrides.update({f"space.overrides.{k}": v for k, v in job["overrides"].items()})
    if "warmup_epochs" in describe(job["method"]).defaults():
        overrides["method.warmup_epochs"] = 0  # the α step runs from the first step
    return overrides


def search_step(job: dict, device):
    """The search loop's own step (`Search._step`: the method's relaxation, strategy, loss
    terms and memory setting, the α step then the w step) on random images."""
    from spacec.runtime.search.config import load_config
    from spacec.runtime.search.loop import Search

    space = hold_random_images(job)
    search = Search.build(load_config("paper", search_overrides(job)))
    batches = next(iter(search.task.batches(0, 0)))
    search.model.set_search_progress(0, search.cfg.optim.epochs)
    lr = search.learning_rate(0)
    job["run_prediction"] = search.fit.prediction.to_dict() if search.fit else None
    if job.get("sample") == "worst":
        draw_the_heaviest(search.model, space)
        if job["method"] == "random_ws":  # the path the strategy samples from now on
            search.model.relaxation.rng = HeaviestPath(space)

    def step() -> None:
        search._step(batches, lr, "benchmark")

    return step


class HeaviestPath(random.Random):
    """random_ws's sampler drawing the cost model's bound: the heaviest candidate on the first k
    edges into each node (its inputs' first: in a reduction cell the stride-2 edges from the
    cell's inputs, which keep the larger tensors; in a normal cell all edges weigh the same)."""

    def __init__(self, space) -> None:
        super().__init__(0)
        self.heaviest = {opset.name: opset.candidates[_heaviest_column(opset)].name
                         for opset in space.spec.opsets}

    def choice(self, seq):
        found = [name for name in seq if name in self.heaviest.values()]
        return found[0] if found else seq[0]

    def sample(self, population, k, **_):
        return list(population)[:k]


def _heaviest_column(opset) -> int:
    from spacec.cost.methods import heaviest
    from spacec.cost.programs import step_of
    from spacec.cost.tracer import Tracer

    candidates = [tuple(step_of(s) for s in c.steps) for c in opset.candidates]
    return heaviest(candidates, Tracer().tensor((1, 16, 8, 8), True), 16, 1)


def draw_the_heaviest(model, space) -> None:
    """Make GDAS's hard samples (nearly) always the candidate the cost model's bound assumes:
    that column's α far above the others' (the Gumbel noise of a float32 draw stays below 17)."""
    import torch

    arch = model.arch_parameters()
    with torch.no_grad():
        for cell in space.spec.cells:
            if cell.name in arch:  # random_ws has no α
                arch[cell.name][:, _heaviest_column(space.spec.opset(cell.opset))] = 100.0


def image_step(job: dict, device):
    return train_step(job, device) if job["step"] == "train" else search_step(job, device)


def recurrent_step(job: dict, device):
    from rnn_tokens import build_step

    kind = {"first": "search1", "second": "search2"}[job["step"]]
    overrides = job["overrides"]
    rnn_job = {**job, "kind": kind, "size": overrides["nhid"], "ntoken": overrides["ntoken"]}
    model, step = build_step(rnn_job, device)
    model.train()
    return step


def measure(job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    device = torch.device(job["device"])
    build = recurrent_step if job["space"] == "darts_rnn" else image_step
    # The baseline: torch and the CPU kernels this step runs are loaded (their code pages are
    # the library's, not the model's), by the same step on a tiny version of the network.
    build(tiny(job), device)()
    baseline = resident_bytes()
    step = build(job, device)  # a search or training step records the run's prediction in `job`
    for _ in range(job["warmup"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    step()
    result = {"measured_bytes": peak_resident_bytes() - baseline, "baseline_bytes": baseline,
              "run_prediction": job.get("run_prediction")}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        result["measured_bytes"] = torch.cuda.max_memory_allocated(device)
    return result


# ---------------------------------------------------------------- table


def search_kinds(method: str, steps: list[str]) -> list[str]:
    """Of the asked search steps, those `method` runs (its orders; random_ws: the w step)."""
    from spacec import cost

    found = cost.METHODS[method].builder
    runs = [found.step(order) for order in found.orders]
    kinds = [step for step in steps if step in runs]
    if not kinds and any(step in ("first", "second") for step in steps):
        kinds = [step for step in runs if step not in steps][:1]  # random_ws: its one step
    return kinds


def all_methods(names: list[str]) -> list[str]:
    from spacec import cost

    return sorted(cost.METHODS) if names == ["all"] else names


def jobs(args: argparse.Namespace) -> list[dict]:
    common = {"device": args.device, "threads": args.threads, "warmup": args.warmup,
              "genotype": args.genotype}
    found = []
    for space in args.spaces:
        for batch in args.batch:
            if "train" in args.steps:
                found.append({**common, "space": space, "batch": batch, "step": "train",
                              "overrides": TRAIN_OVERRIDES.get(space, {}), "method": "darts",
                              "memory": "fast"})
            for method in all_methods(args.methods):
                for step in search_kinds(method, [s for s in args.steps if s != "train"]):
                    for memory in args.memory:
                        for sample in args.sample if method in SAMPLING else ["drawn"]:
                            found.append({**common, "space": space, "overrides": {},
                                          "batch": batch, "step": step, "method": method,
                                          "memory": memory, "sample": sample})
    if args.rnn:
        for step in ("first", "second"):
            found.append({**common, "space": "darts_rnn", "overrides": RNN_QUICK,
                          "batch": RNN_BATCH, "bptt": RNN_BPTT, "step": step, "method": "darts",
                          "memory": "fast"})
    return found


TOLERANCE = 0.2  # the accuracy target: within ±20% of the measured peak


def table(results: list[dict]) -> str:
    header = (f"{'space':<15}{'batch':>6}  {'step':<8}{'method':<12}{'memory':<9}"
              f"{'predicted GiB':>14}{'measured GiB':>13}{'ratio':>7}  {'±20%':<5} "
              "peak phase (predicted)")
    lines = [header, "-" * len(header)]
    for r in results:
        predicted = r["prediction"]["total_bytes"]
        measured = r.get("measured_bytes")
        if measured:
            ratio = predicted / measured
            within = "yes" if abs(ratio - 1) <= TOLERANCE else "no"
            shown = f"{measured / GIB:>13.2f}{ratio:>7.2f}  {within:<5}"
        else:
            shown = f"{r.get('why', 'not measured'):>13}{'-':>7}  {'-':<5}"
        lines.append(f"{r['space']:<15}{r['batch']:>6}  {r['step']:<8}"
                     f"{'-' if r['step'] == 'train' else _method(r):<12}"
                     f"{'-' if r['step'] == 'train' else r['memory']:<9}"
                     f"{predicted / GIB:>14.2f}{shown} {r['prediction']['peak_phase']}")
    return "\n".join(lines)


def _method(result: dict) -> str:
    return result["method"] + ("*" if result.get("sample") == "worst" else "")


def _key(job: dict) -> tuple:
    return (job["space"], json.dumps(job["overrides"], sort_keys=True), job["batch"],
            job["step"], job.get("method", "darts"), job.get("memory", "fast"), job["device"],
            job.get("sample", "drawn"))


def reused(paths: list[Path]) -> dict[tuple, dict]:
    found = {}
    for path in paths:
        for result in json.loads(path.read_text(encoding="utf-8")):
            if result.get("measured_bytes"):
                found[_key(result)] = result
    return found


def check_same_prediction(result: dict) -> None:
    """The run's own prediction (what `spacec search` printed) is the one in the table."""
    ran = result.get("run_prediction")
    if ran and ran["total_bytes"] != result["prediction"]["total_bytes"]:
        print(f"note: the run predicted {ran['total_bytes'] / GIB:.2f} GiB, this script "
              f"{result['prediction']['total_bytes'] / GIB:.2f} GiB ({ran['method']})",
              file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return
    earlier = reused(args.reuse)
    todo = jobs(args)  # `--spaces` with no name: only the reused configurations
    planned = {_key(job) for job in todo}
    todo += [{k: v for k, v in r.items() if k not in ("prediction", "measured_bytes",
                                                      "baseline_bytes")}
             for key, r in earlier.items() if key not in planned]
    results = []
    for job in todo:
        prediction = predict(job)
        result = {**job, "prediction": prediction}
        if _key(job) in earlier:
            result["measured_bytes"] = earlier[_key(job)]["measured_bytes"]
            result["baseline_bytes"] = earlier[_key(job)]["baseline_bytes"]
        elif args.predict_only:
            result["why"] = "not run"
        elif prediction["total_bytes"] > args.limit_gib * GIB:
            result["why"] = "over limit"
        else:
            try:
                result.update(run_in_subprocess(__file__, job))
            except RuntimeError as error:  # one failed configuration does not end the table
                result["why"] = "failed"
                print(error, file=sys.stderr, flush=True)
            else:
                check_same_prediction(result)
                print(f"{job['space']} batch {job['batch']} {job['step']} {job['method']} "
                      f"{job['memory']}: predicted {prediction['total_bytes'] / GIB:.2f} GiB, "
                      f"measured {result['measured_bytes'] / GIB:.2f} GiB", file=sys.stderr,
                      flush=True)
        results.append(result)
        if args.json:  # after every configuration: a long run that is cut short keeps its work
            args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"peak memory of one step on {args.device} ({args.threads} threads), predicted from "
          f"the IR vs measured after {args.warmup} warm-up step(s); baseline excluded")
    print(table(results))
    if any(r.get("sample") == "worst" for r in results):
        print("*: the sample made the prediction's bound for a sampling method (GDAS: the "
              "heaviest candidate on every edge; random_ws: on the first k edges into each node)")


if __name__ == "__main__":
    main()
