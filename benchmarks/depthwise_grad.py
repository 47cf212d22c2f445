"""The 5x5 depthwise weight gradient summed by blocks (runtime/nn/accelerate.py) against oneDNN's.

oneDNN (torch 2.14.1, CPU) computes a depthwise weight gradient with its depthwise kernel only
for kernels up to 3 columns wide; a 5x5's goes through its generic grouped convolution. spacec
sums it from two 5x3 blocks instead (`accelerate._weight_grad_by_blocks`). Two measurements:

- ``kernels``: the weight gradient alone, oneDNN's and the blocks', at the shapes darts_cnn's
  search runs at batch ``--batch`` (C=16, 8 cells: sep_conv_5x5 at 32, 16 and 8 pixels, stride 1
  and 2; dil_conv_5x5's polyphase form, 4x the batch at half the size), medians of ``--repeat``
  calls, in process CPU time;
- ``step``: a search step of darts_cnn (``--kinds``: weights, first, second; ``--memory``), in
  one process, the two paths alternating step by step (oneDNN, blocks, blocks, oneDNN, ...) for
  ``--pairs`` pairs, so that the machine's load hits both alike. The blocks are switched off by
  emptying `accelerate._BLOCKED_KERNELS` (the module's own switch; the rest of the step is the
  same code). Reported: median CPU seconds of each, the ratio of the medians and the median of
  the pairs' ratios. α and w do not move between steps (η = 0 for the α step's unrolling, no
  SGD step), so every step does the same work.

    python benchmarks/depthwise_grad.py
    python benchmarks/depthwise_grad.py --kinds weights first --memory fast balanced --pairs 20
"""

from __future__ import annotations

import argparse
import statistics
import time

SHAPES = [  # (batch multiple, channels, size, stride) of darts_cnn's 5x5 depthwise convolutions
    (1, 16, 32, 1), (1, 32, 16, 1), (1, 64, 8, 1), (1, 32, 32, 2), (1, 64, 16, 2),
    (4, 16, 16, 1), (4, 32, 8, 1), (4, 64, 4, 1),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", nargs="+", choices=("kernels", "step"),
                        default=["kernels", "step"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--C", type=int, default=16, help="initial channels (paper: 16)")
    parser.add_argument("--layers", type=int, default=8, help="cells (paper: 8)")
    parser.add_argument("--kinds", nargs="+", choices=("weights", "first", "second"),
                        default=["weights"])
    parser.add_argument("--memory", nargs="+", default=["fast"])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def cpu_median(call, repeat: int) -> float:
    call()
    call()
    times = []
    for _ in range(repeat):
        started = time.process_time()
        call()
        times.append(time.process_time() - started)
    return statistics.median(times)


def kernels(args: argparse.Namespace) -> None:
    print(f"{'batch':>6}{'C':>5}{'size':>6}{'stride':>8}{'oneDNN ms':>11}{'blocks ms':>11}"
          f"{'ratio':>8}{'max rel diff':>14}")
    for multiple, channels, size, stride in SHAPES:
        print(kernel_row(args, multiple * args.batch, channels, size, stride))


def kernel_row(args: argparse.Namespace, batch: int, channels: int, size: int,
               stride: int) -> str:
    import torch

    from spacec.runtime.nn import accelerate

    x = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, 1, 5, 5)
    grad = torch.randn(batch, channels, size // stride, size // stride)
    grad = grad.contiguous(memory_format=torch.channels_last)

    def onednn():
        return accelerate._convolution_backward(grad, x, weight, stride, (2, 2),
                                                [False, True, False])[1]

    def blocks():
        return accelerate._weight_grad_by_blocks(grad, x, 5, stride, 2)

    plain, blocked = cpu_median(onednn, args.repeat), cpu_median(blocks, args.repeat)
    diff = ((blocks() - onednn()).abs().max() / onednn().abs().max()).item()
    return (f"{batch:>6}{channels:>5}{size:>6}{stride:>8}{plain * 1e3:>11.3f}"
            f"{blocked * 1e3:>11.3f}{blocked / plain:>8.2f}{diff:>14.1e}")


def search_step(args: argparse.Namespace, memory: str, kind: str):
    import torch
    import torch.nn.functional as F

    import spacec
    from spacec.runtime.nn.memory import set_memory
    from spacec.runtime.search.architect import ArchConfig, Architect

    torch.manual_seed(0)
    model = set_memory(spacec.load("darts_cnn", C=args.C, layers=args.layers).supernet(), memory)
    optimizer = torch.optim.SGD(model.weights(), lr=0.025, momentum=0.9, weight_decay=3e-4)

    def loss_fn(call, batch):
        return F.cross_entropy(call(batch[0]), batch[1])

    architect = Architect(model, optimizer, loss_fn, ArchConfig(order=2 if kind == "second" else 1))
    train = (torch.randn(args.batch, 3, 32, 32), torch.randint(10, (args.batch,)))
    val = (torch.randn(args.batch, 3, 32, 32), torch.randint(10, (args.batch,)))

    def step() -> None:
        if kind != "weights":
            architect.step(train, val, 0.0)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model, train).backward()

    return step


def steps(args: argparse.Namespace) -> None:
    from spacec.runtime.nn import accelerate

    blocked_kernels = accelerate._BLOCKED_KERNELS
    print(f"{'memory':<10}{'step':<9}{'oneDNN s':>10}{'blocks s':>10}{'ratio':>8}"
          f"{'pair ratio':>12}{'pairs':>7}")
    for memory in args.memory:
        for kind in args.kinds:
            step = search_step(args, memory, kind)
            step()
            step()
            times: dict[bool, list[float]] = {False: [], True: []}
            for pair in range(args.pairs):
                for blocked in ((False, True) if pair % 2 == 0 else (True, False)):
                    accelerate._BLOCKED_KERNELS = blocked_kernels if blocked else ()
                    started = time.process_time()
                    step()
                    times[blocked].append(time.process_time() - started)
            accelerate._BLOCKED_KERNELS = blocked_kernels
            plain, blocked = statistics.median(times[False]), statistics.median(times[True])
            pair_ratio = statistics.median(b / a for a, b in zip(times[False], times[True],
                                                                 strict=True))
            print(f"{memory:<10}{kind:<9}{plain:>10.3f}{blocked:>10.3f}{blocked / plain:>8.3f}"
                  f"{pair_ratio:>12.3f}{args.pairs:>7}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}")
    if "kernels" in args.measure:
        kernels(args)
    if "step" in args.measure:
        steps(args)


if __name__ == "__main__":
    main()
