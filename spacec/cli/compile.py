"""`spacec list`, `check`, `compile` and `info`: the compiler's commands.

None of them imports torch: `info` computes parameters, multiply-adds, shapes and the predicted
peak memory of a step from the IR (spacec.cost).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import click

from spacec import cost, ir, parse
from spacec.arch.genotype import resolve
from spacec.cli.app import exit_now, main, user_errors, write_output
from spacec.cli.options import compile_space, set_option
from spacec.load import CompiledSpace, compile_file, locate, parse_overrides, shipped_spaces
from spacec.runtime.run.derivation import run_params

# Cells `spacec check` names with their α shapes (a generated space may have thousands).
CELLS_LISTED = 10


@main.command("list")
def list_spaces() -> None:
    """The spaces shipped with spacec, one line each."""
    spaces = shipped_spaces()
    width = max(map(len, spaces), default=0) + 2
    for name, path in spaces.items():
        click.echo(f"{name:<{width}}{_summary(path)}")


def _summary(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def compiler_only(command):
    """A command that compiles a space and writes what it made, and nothing else: it runs with
    Python's cyclic collector paused, and as the `spacec` program it ends without freeing what
    it built (`exit_now`).

    Nothing the compiler builds holds a reference cycle, so reference counting frees it all;
    the collector, triggered by allocations, would only walk the new objects again and again (a
    5 MB space: 400,000 objects, a third of a second each time; 18% of `info` on a 1 MB space).
    In-process, the command's objects are freed when it returns, before the collector resumes.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        with parse.collector_paused():
            command(*args, **kwargs)
            exit_now()

    return wrapper


def _refuse_overwriting_inputs(output: Path | None, space: str, genotype: str | None) -> None:
    """-o naming the space's own file (or the genotype's) would replace it with the output."""
    if output is None:
        return
    inputs = {"the space": locate(space)}
    if genotype is not None and Path(genotype).is_file():
        inputs["the genotype"] = Path(genotype)
    for what, path in inputs.items():
        if output.resolve() == path.resolve():
            raise click.BadParameter(f"{output} is {what}'s own file: writing there would "
                                     "replace it with the output", param_hint="-o/--output")


@main.command()
@click.argument("space")
@set_option
@user_errors
@compiler_only
def check(space: str, sets: tuple[str, ...]) -> None:
    """Check SPACE (a shipped name or a .space path); report every error, compiler-style."""
    click.echo(_check_report(compile_space(space, sets)))


def _check_report(compiled: CompiledSpace) -> str:
    shown = compiled.spec.cells[:CELLS_LISTED]
    cells = ", ".join(
        f"{c.name} [{len(c.edges)}, {len(compiled.spec.opset(c.opset).candidates)}]" for c in shown
    )
    more = len(compiled.spec.cells) - len(shown)
    cells += f", and {more} more cells" if more else ""
    return f"{compiled.spec.path}: ok ({compiled.name}: {cells})"


@main.command("compile")
@click.argument("space")
@set_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of standard output.",
)
@click.option(
    "--genotype",
    metavar="GENOTYPE",
    help="Emit the standalone derived network for this genotype (a preset such as "
    "DARTS_V2, a genotype.json file or a run directory, whose network is at the run's "
    "parameters) instead of the supernet.",
)
@click.option(
    "--emit",
    type=click.Choice(["source", "dag", "dot", "listing"]),
    default="source",
    show_default=True,
    help="source: the PyTorch supernet module; dag: each cell's DAG "
    "as node-link JSON; dot: Graphviz; listing: the IR as text.",
)
@user_errors
@compiler_only
def compile_command(
    space: str, sets: tuple[str, ...], genotype: str | None, output: Path | None, emit: str
) -> None:
    """Compile SPACE into a readable PyTorch supernet module (or print its IR).

    With --genotype, emit the derived network instead: a standalone module importing only torch.
    """
    _refuse_overwriting_inputs(output, space, genotype)
    if genotype is not None and emit != "source":
        raise click.UsageError(f"--genotype gives the derived network's module (--emit source); "
                               f"--emit {emit} shows the space's IR, which no genotype changes")
    compiled = (_at_the_runs_sizes(space, sets, genotype) if genotype is not None
                else compile_space(space, sets))
    text = {
        "source": lambda: compiled.discrete_source(genotype) if genotype else compiled.source,
        "dag": lambda: ir.to_json(compiled.ir),
        "dot": lambda: ir.to_dot(compiled.ir),
        "listing": compiled.listing,
    }[emit]()
    write_output(text, output)


@main.command()
@click.argument("space")
@set_option
@click.option(
    "--genotype",
    metavar="GENOTYPE",
    help="Also report the derived network of this genotype: parameters, multiply-adds, and "
    "with --batch-size the predicted peak memory of a training step.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Predict the peak memory of one search step at this batch size.",
)
@click.option(
    "--method",
    type=click.Choice(cost.METHODS.names()),
    help="The search method whose step is predicted (default: the space's `method`, else darts).",
)
@click.option("--order", type=click.Choice(["1", "2"]), default="1", show_default=True,
              help="1: first-order α step, 2: second order (one unrolled SGD step).")
@click.option("--method-option", "method_options", metavar="KEY=VALUE", multiple=True,
              help="A cost option of the method, e.g. k=2 for pc_darts (repeatable).")
@click.option("--memory", type=click.Choice((*cost.MEMORY_SETTINGS.names(), cost.AUTO)),
              default="fast", show_default=True,
              help="fast: keep every activation for backward; balanced: recompute the max poolings', "
              "the depthwise convolutions' and the ReLUs' outputs; low: recompute each mixed "
              "edge; auto: the setting a run would choose here (the fastest whose step fits "
              "this machine's free RAM with 20% to spare; with --device cuda, whose free "
              "memory only a run can ask the GPU for: fast).")
@click.option("--device", type=click.Choice(cost.DEVICES.names()), default="cpu",
              show_default=True, help="The device whose allocator the prediction models.")
@click.option("--bptt", type=click.IntRange(min=1), default=35, show_default=True,
              help="Tokens per segment (sequence spaces).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
@compiler_only
def info(
    space: str,
    sets: tuple[str, ...],
    genotype: str | None,
    batch_size: int | None,
    method: str | None,
    method_options: tuple[str, ...],
    order: str,
    memory: str,
    device: str,
    bptt: int,
    as_json: bool,
) -> None:
    """Size and cost of SPACE: weights, α, multiply-adds, shapes and (with --batch-size) the
    predicted peak memory of a search step, all computed from the compiled IR; the search method
    the space names, if it names one (the default of --method)."""
    compiled = compile_space(space, sets)
    options = parse_options(method_options)
    named = compiled.spec.method
    if method is None and named is not None and named.name in cost.METHODS:
        # The space's method with the parameters it fixes that the cost model knows (k, ...).
        options = {**cost.known_options(named.name, named.values()), **options}
    method = method or (named.name if named is not None and named.name in cost.METHODS
                        else "darts")
    report = space_report(compiled, method, options)
    if batch_size is not None:

        def predict(setting: str) -> cost.Prediction:
            return cost.predict_search(
                compiled.ir, batch_size, order=int(order), method_name=method, memory=setting,
                device=device, bptt=bptt, method_options=options,
            )

        report["memory"] = (chosen_memory(predict, device, compiled.ir) if memory == cost.AUTO
                            else predict(memory).to_dict())
    if genotype:
        at = _at_the_runs_sizes(space, sets, genotype)
        report["derived"] = derived_report(at, genotype, batch_size, device)
        if at.params != compiled.params:
            report["derived"]["space_parameters"] = at.params
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo("\n".join(info_lines(report)))


def _at_the_runs_sizes(space: str, sets: tuple[str, ...], genotype: str) -> CompiledSpace:
    """SPACE compiled for the derived network of `genotype`: at the parameters a run directory
    recorded where it ran this space (--set still wins), as train and derive take them."""
    path = locate(space)
    return compile_file(path, {**run_params(genotype, path), **parse_overrides(sets)})


def chosen_memory(predict: Callable[[str], cost.Prediction], device: str,
                  space_ir: ir.IR) -> dict:
    """`--memory auto`: the prediction under the setting a run on this machine would choose
    (spacec.cost.choose_memory), with the free memory it was chosen for and why; where no
    setting fits, the one that keeps least, and a run's refusal as the reason."""
    available = cost.available_ram() if device == "cpu" else None
    try:
        choice = cost.choose_memory(predict, available, space_ir)
        prediction, reason = choice.prediction, choice.reason
    except cost.NotEnoughMemory as refused:
        reason = "no setting fits, a run would refuse to start: " + str(refused).replace("\n", "; ")
        prediction = refused.prediction
    return {**prediction.to_dict(), "auto": {"available_bytes": available, "reason": reason}}


def parse_options(pairs: tuple[str, ...]) -> dict[str, object]:
    """KEY=VALUE pairs; a value is an integer, true/false, or else a string."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}",
                                     param_hint="--method-option")
        value: object = text
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        elif text.lstrip("-").isdigit():
            value = int(text)
        options[key] = value
    return options


def info_lines(report: dict) -> list[str]:
    per = report["multiply_adds_per"]
    lines = [
        f"space {report['space']} ({report['path']})",
        f"parameters: {', '.join(f'{k}={v}' for k, v in report['parameters'].items())}",
        f"supernet weights: {report['supernet_weights']:,}; α: {report['alpha_parameters']:,}",
        f"multiply-adds: {cost.multiply_adds_text(report['multiply_adds'])} per {per} (one "
        f"supernet forward, {report['method']}: {_RUNS.get(report['method_name'], 'every candidate')}; "
        f"{_COUNTED[per]})",
    ]
    if report["space_method"] is not None:
        lines.append(f"search method: {report['space_method']['text']} (the space's default)")
    for name, cell in report["cells"].items():
        lines.append(
            f"cell {name}: α {cell['alpha_shape']}, {cell['nodes']} nodes, {cell['edges']} searched "
            f"edges{', reduction' if cell['reduction'] else ''}; ops: {', '.join(cell['ops'])}"
        )
    if report["shapes"]:
        lines.append("shapes (channels x height x width per image):")
        lines += [f"  {line}" for line in shape_lines(report["shapes"])]
    if "memory" in report:
        lines += memory_lines(report["memory"], "search step")
    if "derived" in report:
        derived = report["derived"]
        image = derived["input_shape"] is not None
        lines.append(
            f"derived network ({derived['genotype']}): {derived['parameters']:,} parameters"
            f"{' (excluding the auxiliary head)' if image else ''}, "
            f"{cost.multiply_adds_text(derived['multiply_adds'])} multiply-adds per {per}"
            + (f" at {_shape(derived['input_shape'])}" if image else "")
        )
        if "space_parameters" in derived:
            lines.append("  at the run's parameters: " + ", ".join(
                f"{k}={v}" for k, v in derived["space_parameters"].items()))
        if "memory" in derived:
            lines += memory_lines(derived["memory"], "training step")
        if "memory_note" in derived:
            lines.append(f"  {derived['memory_note']}")
    return lines


# What a supernet forward runs, for the methods that do not run every candidate.
_RUNS = {
    "pc_darts": "every candidate on 1/k of the channels",
    "gdas": "each edge's most expensive candidate",
    "random_ws": "each edge's most expensive candidate",
}

# What the multiply-adds count (runtime/tools/flops.py's convention), per unit of input.
_COUNTED = {
    "image": "convolutions and linear layers",
    "token": "the cell's matrix products and the decoder",
}


def _shape(shape: list[int]) -> str:
    return "x".join(map(str, shape))


def shape_lines(records: list[dict]) -> list[str]:
    lines = []
    for record in records:
        where = (f"body[{record['index']}] {record['kind']} {record['name']}"
                 if record["where"] == "body"
                 else f"{record['where']} {record['name']}")
        if record["kind"] == "cell":
            inputs = ", ".join(_shape(s) for s in record["inputs"])
            nodes = sorted({_shape(s) for s in record["nodes"]})
            text = f"inputs {inputs}; nodes {', '.join(nodes)}; output {_shape(record['output'])}"
        else:
            text = f"{_shape(record['inputs'][0])} -> {_shape(record['output'])}"
        lines.append(f"{where:<24} {text}")
    return lines


def memory_lines(memory: dict, what: str) -> list[str]:
    step = {"first": "first-order", "second": "second-order", "weights": "weights-only",
            "train": "a"}[memory["step"]]
    method = f"{memory['method']} " if memory["what"] == "search" else ""
    auto = memory.get("auto")
    setting = memory["memory"] if auto is None else f"auto: {memory['memory']}"
    lines = [
        f"predicted peak memory of {'a ' if memory['what'] == 'search' else ''}{step} {method}"
        f"{what} at batch {memory['batch']} on {memory['device']} (memory {setting}): "
        f"{cost.gib(memory['total_bytes'])}, during {memory['peak_phase']}"
    ]
    if auto is not None:
        free = ("free memory unknown" if auto["available_bytes"] is None
                else f"{cost.gib(auto['available_bytes'])} free")
        lines.append(f"  for {free}" + (f": {auto['reason']}" if auto["reason"] else ""))
    width = max(map(len, memory["breakdown_bytes"]))
    for term, nbytes in sorted(memory["breakdown_bytes"].items(), key=lambda kv: -kv[1]):
        if nbytes:
            lines.append(f"  {term:<{width}}  {_mib(nbytes):>12}")
    lines.append(f"  (+{_mib(memory['per_sample_bytes'])} per additional sample)")
    return lines


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.1f} MiB"


def derived_report(
    compiled: CompiledSpace, reference: str, batch_size: int | None, device: str
) -> dict:
    genotype = resolve(reference, compiled.name)
    compiled.discrete_source(genotype)  # a genotype that does not fit the space is reported
    costs = cost.derived_costs(compiled.ir, genotype)
    image = compiled.spec.domain == "image"
    report = {
        "genotype": reference,
        "parameters": costs.parameters,
        "multiply_adds": costs.multiply_adds,
        "input_shape": list(compiled.input_shape) if image else None,
    }
    if batch_size is not None and image:
        prediction = cost.predict_train(compiled.ir, genotype, batch_size, device=device)
        report["memory"] = prediction.to_dict()
    elif batch_size is not None:
        report["memory_note"] = ("the training step of a recurrent network is not predicted "
                                 "(the cost model predicts image networks' training)")
    return report


def space_report(compiled: CompiledSpace, method: str = "darts",
                 options: dict[str, object] | None = None) -> dict:
    costs = cost.supernet_costs(compiled.ir, method, **(options or {}))
    cells = {}
    for cell in compiled.spec.cells:
        ops = compiled.spec.opset(cell.opset).names
        cells[cell.name] = {
            "alpha_shape": [len(cell.edges), len(ops)],
            "inputs": list(cell.inputs),
            "nodes": len(cell.nodes),
            "edges": len(cell.edges),
            "reduction": cell.reduction,
            "ops": list(ops),
            "derive": cell.rule.kind,
            "k": cell.rule.k,
        }
    image = compiled.spec.domain == "image"
    return {
        "space": compiled.name,
        "path": compiled.spec.path,
        "sha256": compiled.spec.sha256,
        "parameters": dict(compiled.spec.params),
        "space_method": None
        if compiled.spec.method is None
        else {"name": compiled.spec.method.name, "params": compiled.spec.method.values(),
              "text": compiled.spec.method.text()},
        "method": cost.METHODS[method].builder.label if not options
        else f"{method}({', '.join(f'{k}={v}' for k, v in options.items())})",
        "method_name": method,
        "supernet_weights": costs.parameters,
        "alpha_parameters": costs.alpha,
        "multiply_adds": costs.multiply_adds,
        "multiply_adds_per": "image" if image else "token",
        "input_shape": list(compiled.input_shape) if image else None,
        "cells": cells,
        "shapes": [
            {"where": r.where, "index": r.index, "kind": r.kind, "name": r.name,
             "inputs": [list(s) for s in r.inputs], "nodes": [list(s) for s in r.nodes],
             "output": list(r.output)}
            for r in cost.shapes(compiled.ir)
        ],
    }
