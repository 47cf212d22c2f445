"""Operations per search step: what bounds a step on a GPU that launches faster than it computes.

On a large GPU the DARTS search step at the paper's sizes is bound by launching kernels, not by
arithmetic (README, "On a GPU"), so the number of operations a step runs decides its time there.
The count is the same on every device but for the optimiser's and the clipping's per-tensor
loops, which CUDA runs as a few `foreach` kernels; it needs no GPU. This script counts, with
torch's profiler on the CPU, the top-level aten operations (those not called by another aten
operation) of one step of benchmarks/search_step.py's kinds, for the reference layout and
spacec's memory settings, at a small size (the count does not depend on channels or batch): all
of them, and those that are not views (`VIEWS`), which cost the CPU a dispatch but launch
nothing on a GPU.

    python benchmarks/op_count.py
    python benchmarks/op_count.py --kinds second --variants reference fast --top 20
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from search_step import KINDS, VARIANTS, darts_step  # noqa: E402

# Operations that make a view and launch no kernel on a GPU; the second column counts the others.
# Approximately: a `reshape` that cannot view copies (counted as a view here), and a `contiguous`
# or `to` that has nothing to do copies nothing (counted as work).
VIEWS = frozenset(f"aten::{name}" for name in (
    "view", "_unsafe_view", "reshape", "permute", "expand", "expand_as", "select", "slice",
    "narrow", "unbind", "split", "split_with_sizes", "chunk", "detach", "alias", "t",
    "transpose", "squeeze", "unsqueeze", "as_strided", "view_as", "flatten", "unflatten",
    "lift_fresh",
))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="darts_cnn")
    parser.add_argument("--C", type=int, default=4)
    parser.add_argument("--layers", type=int, default=8, help="cells (paper: 8)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=["first", "second"])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["reference", "fast"])
    parser.add_argument("--top", type=int, default=8, help="the most frequent operations shown")
    return parser.parse_args(argv)


def count(job: dict) -> collections.Counter:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from spacec.runtime.nn import accelerate

    step = darts_step(job, torch.device("cpu"))
    step()  # the momentum buffers exist from here on, as in every later step
    # Counted as a GPU runs the step: without the CPU's 5x5 depthwise weight gradient by blocks
    # (accelerate.py), three convolution gradients and their copies where a GPU runs one.
    blocked, accelerate._BLOCKED_KERNELS = accelerate._BLOCKED_KERNELS, ()
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
    finally:
        accelerate._BLOCKED_KERNELS = blocked
    found: collections.Counter = collections.Counter()
    for event in prof.events():
        parent = event.cpu_parent
        if event.name.startswith("aten::") and not (parent and parent.name.startswith("aten::")):
            found[event.name] += 1
    return found


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"{args.space}, C={args.C}, {args.layers} cells, batch {args.batch}: top-level aten "
          "operations in one step (CPU): all of them, then those that are not views")
    for kind in args.kinds:
        base = None
        for variant in args.variants:
            job = {"space": args.space, "C": args.C, "layers": args.layers,
                   "batch": args.batch, "kind": kind, "variant": variant}
            found = count(job)
            total = sum(found.values())
            kernels = sum(n for name, n in found.items() if name not in VIEWS)
            base = base or (total, kernels)
            common = ", ".join(f"{name[6:]} {n}" for name, n in found.most_common(args.top))
            print(f"{kind:<8}{variant:<10}{total:>8} ({total / base[0]:.2f}×){kernels:>8} "
                  f"({kernels / base[1]:.2f}×)  {common}")


if __name__ == "__main__":
    main()
