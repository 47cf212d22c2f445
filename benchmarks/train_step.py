"""Images per second of the DARTS evaluation network: training steps and inference.

The network is the derived network `spacec train --config paper` trains (darts_cnn at C=36, 20
cells, DARTS_V2 by default, with its auxiliary head). A training step is the loop's work per
batch (spacec.runtime.train.loop): forward with the auxiliary head, both losses, backward, gradient
clipping, an SGD step, with drop path on. Inference is the eval-mode forward without gradients.
Batches are random CIFAR-sized tensors (data loading is not timed); each figure is the batch
size over the median time of ``--steps`` steps after ``--warmup`` warm-up steps.

    python benchmarks/train_step.py                                  # CPU (and CUDA if present)
    python benchmarks/train_step.py --batch 96 --steps 10 --json out.json
    python benchmarks/train_step.py --C 16 --layers 8 --genotype DARTS_V1 --devices cpu
    python benchmarks/train_step.py --devices cuda --batch 96 --precision bf16 --compile

On CUDA it also reports steps per second and the peak allocation (torch.cuda.max_memory_allocated).
The switches are the run section's (precision, channels_last, compile), applied by the session.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import step_seconds

import spacec
from spacec.runtime.nn.flops import count_parameters
from spacec.runtime.run.session import Session

# quark0/darts cnn/train.py: the optimiser, clip, auxiliary weight and final drop path.
LR, MOMENTUM, WEIGHT_DECAY, GRAD_CLIP, AUXILIARY_WEIGHT, DROP_PATH = 0.025, 0.9, 3e-4, 5.0, 0.4, 0.2
CLASSES = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="darts_cnn")
    parser.add_argument("--genotype", default="DARTS_V2")
    parser.add_argument("--C", type=int, default=36, help="initial channels (paper: 36)")
    parser.add_argument("--layers", type=int, default=20, help="cells (paper: 20)")
    parser.add_argument("--batch", type=int, default=16, help="paper trains with 96")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--devices", nargs="+", default=None,
                        help="default: cpu, and cuda when available")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: forward passes under bf16 autocast (run.precision)")
    parser.add_argument("--channels-first", action="store_true",
                        help="NCHW instead of the generated network's NHWC (run.channels_last)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def median_seconds(step: Callable[[], None], warmup: int, steps: int, device: torch.device
                   ) -> float:
    return statistics.median(step_seconds(step, warmup, steps, device))


def measure(args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    space = spacec.load(args.space, C=args.C, layers=args.layers, classes=CLASSES)
    network = space.discrete_network(args.genotype, auxiliary=True,
                                     drop_path_prob=DROP_PATH).to(device)
    optimizer = torch.optim.SGD(network.parameters(), lr=LR, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)
    session = Session(device=device, seed=0, precision=args.precision,
                      channels_last=not args.channels_first, compile_network=args.compile)
    session.lay_out(network)
    call = session.compiled(network, ("forward_with_auxiliary",))
    images = torch.randn(args.batch, *space.input_shape, device=device)
    labels = torch.randint(0, CLASSES, (args.batch,), device=device)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with session.autocast():
            logits, logits_aux = call.forward_with_auxiliary(images)
            loss = F.cross_entropy(logits, labels)
            if logits_aux is not None:
                loss = loss + AUXILIARY_WEIGHT * F.cross_entropy(logits_aux, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), GRAD_CLIP)
        optimizer.step()

    def inference_step() -> None:
        with torch.no_grad(), session.autocast():
            call(images)

    network.train()
    train_seconds = median_seconds(train_step, args.warmup, args.steps, device)
    network.eval()
    inference_seconds = median_seconds(inference_step, args.warmup, args.steps, device)
    memory = {}
    if device.type == "cuda":
        memory["cuda_max_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return {
        "precision": args.precision,
        "channels_last": not args.channels_first,
        "compile": args.compile,
        "train_steps_per_second": 1 / train_seconds,
        **memory,
        "device": str(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "batch": args.batch,
        "train_images_per_second": args.batch / train_seconds,
        "inference_images_per_second": args.batch / inference_seconds,
        "train_step_seconds": train_seconds,
        "inference_step_seconds": inference_seconds,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = args.devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    space = spacec.load(args.space, C=args.C, layers=args.layers, classes=CLASSES)
    parameters = count_parameters(space.discrete_network(args.genotype, auxiliary=True))
    print(f"{args.space} {args.genotype}, C={args.C}, {args.layers} cells: {parameters:,} "
          f"parameters (excluding the auxiliary head); median of {args.steps} steps after "
          f"{args.warmup} warm-up")
    print(f"{'device':<8} {'threads':>7} {'batch':>5} {'train img/s':>12} {'infer img/s':>12} "
          f"{'train s/step':>12}")
    results = []
    for name in devices:
        result = measure(args, torch.device(name))
        results.append({"space": args.space, "genotype": args.genotype, "C": args.C,
                        "layers": args.layers, "parameters": parameters, **result})
        print(f"{result['device']:<8} {result['threads'] or '-':>7} {result['batch']:>5} "
              f"{result['train_images_per_second']:>12.1f} "
              f"{result['inference_images_per_second']:>12.1f} "
              f"{result['train_step_seconds']:>12.3f}")
    text = json.dumps(results, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return results


if __name__ == "__main__":
    main()
