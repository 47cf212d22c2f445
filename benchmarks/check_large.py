"""Seconds to check large spaces: valid ones, and files made of errors.

`spacec check` parses, checks, builds the IR and checks the sizes through the network
(`spacec.load.compile_file`). Its cost must grow linearly with the input (issue 12: a valid 5 MB
space took 37 s, and 5 MB of repeated errors did not finish in 2 minutes). This script writes
generated spaces of a few sizes, times each stage in this process, and times the command itself
(`python -m spacec check FILE` in a fresh process: with the interpreter's start, the imports and
the exit, what a user waits for; with compiled bytecode, as an installed spacec has it):

* valid: a space in the style of the shipped ones (comments, aligned statements) scaled up in
  every direction at once: parameters computed from each other, large operation sets, many
  cells (with `extends` chains and explicit edge lists), and a network using some of them;
* errors: the same kinds of statement with a mistake in each (unknown parameters, primitives,
  nodes and operation sets, duplicate definitions), so every line is an error.

    python benchmarks/check_large.py                 # 1, 2.5 and 5 MB of each
    python benchmarks/check_large.py --sizes 5 --kind valid

The per-megabyte column shows linearity: it stays flat as the size grows. Each file is timed a
few times (`--repeat`) and the fastest run is shown, as `timeit` does, with the command's median.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from operator import itemgetter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from spacec import check, cost, ir, parse  # noqa: E402
from spacec.errors import SpaceError  # noqa: E402
from spacec.load import _Importer, read_source  # noqa: E402

MB = 1_000_000
# Roughly the language's tokens (for a tokens-per-second figure; comments are not tokens).
TOKEN = re.compile(r'[A-Za-z_]\w*|\d+(?:\.\d*)?|//|>>|->|<=|"[^"\n]*"|\S')
COMMENT = re.compile(r"#[^\n]*")

HEADER = """\
# A generated space, in the style of the shipped ones, for timing the compiler on large input.
space large

param C = 16                 # initial channels
param layers = 8             # cells in the network
param classes = 10
"""
PARAM = "param p{i:<6} = {j} + {k} * 2 // 1     # derived from an earlier parameter\n"
OPSET_HEAD = "\n# Operation set {n}: its candidates in α column order.\nops set{n} {{\n    none        = zero\n"
OPERATION = "    op{i:<8} = sep_conv(kernel=3) >> max_pool(kernel=3)    # candidate {i}\n"
CELL = """
# Cell {n}: every earlier node feeds each intermediate node.
cell cell{n} {{
    inputs   c_k2, c_k1             # outputs of cells k-2 and k-1
    nodes    4                      # intermediate nodes n0 .. n3
    edges    dense : set{s}
    combine  sum
    output   concat(n0, n1, n2, n3)
    derive   topk(k=2, exclude=[none])
}}
cell reduce{n} extends cell{n} {{ stride 2 from inputs }}   # its reduction cell
"""
WIDE_CELL_HEAD = (
    "\n# A wide cell with explicit edges.\ncell wide{n} {{\n    inputs a, b\n    nodes {nodes}\n"
)
WIDE_EDGE = "    edge {sources} -> n{node} : set0\n"
WIDE_TAIL = "    output mean(*)\n    derive argmax(exclude=[none])\n}\n"
CHAIN_ROOT = """
# The root of a long chain of `extends`: one edge.
cell chain_root {
    inputs   a
    nodes    1
    edge     a -> n0 : set0
    output   n0
    derive   argmax
}
"""
CHAIN = "cell chain{n} extends {parent} {{ combine sum }}   # a long chain of `extends`\n"
NETWORK = """
network image_classifier {
    channels      C
    stem          conv_bn(kernel=3, channels=3 * C)
    body          cell0 * layers with reduce0 at [layers // 3, 2 * layers // 3]
    head          classifier(classes=classes)
}
"""

ERRORS = [
    "param e{i} = undefined{i} + 1                  # an unknown parameter\n",
    "ops bad{i} {{ x = sep_con(kernel=3) }}          # an unknown primitive\n",
    "cell broken{i} {{ inputs a, b nodes 2 edges dense : missing{i} output n1 derive argmax }}\n",
    "cell edge{i} {{ inputs a nodes 1 edge zz -> n0 : set0 output n0 derive argmax }}\n",
    "param dup = {i}                                 # defined again and again\n",
]


def valid_space(size: int) -> str:
    """A valid space of about `size` bytes: 35% parameters, 40% operations, 10% cells, 5% wide
    cells with explicit edges, 10% an `extends` chain (about 70,000 searched edges in 5 MB, under
    the compiler's limit of 100,000)."""
    parts, total = [HEADER], len(HEADER)

    def add(text: str) -> None:
        nonlocal total
        parts.append(text)
        total += len(text)

    i = 0
    while total < size * 0.35:
        add(PARAM.format(i=i, j=f"p{i - 1}" if i else "C", k=i % 7))
        i += 1
    sets = 0
    while total < size * 0.75:
        add(OPSET_HEAD.format(n=sets))
        for op in range(300):
            add(OPERATION.format(i=op))
        add("}\n")
        sets += 1
    n = 0
    while total < size * 0.85:
        add(CELL.format(n=n, s=n % sets))
        n += 1
    w = 0
    while total < size * 0.9:
        nodes = 200
        add(WIDE_CELL_HEAD.format(n=w, nodes=nodes))
        for node in range(nodes):
            sources = ", ".join(["a", "b"] + [f"n{m}" for m in range(max(0, node - 8), node)])
            add(WIDE_EDGE.format(sources=sources, node=node))
        add(WIDE_TAIL)
        w += 1
    add(CHAIN_ROOT)
    c = 0
    while total < size:
        add(CHAIN.format(n=c, parent="chain_root" if c == 0 else f"chain{c - 1}"))
        c += 1
    add(NETWORK)
    return "".join(parts)


def error_space(size: int) -> str:
    """About `size` bytes in which every statement is an error."""
    parts, total, i = [HEADER, "ops set0 { none = zero }\n"], len(HEADER), 0
    while total < size:
        line = ERRORS[i % len(ERRORS)].format(i=i)
        parts.append(line)
        total += len(line)
        i += 1
    return "".join(parts) + NETWORK


def time_stages(path: Path) -> dict:
    """Seconds of each stage of `spacec check` on the file at `path` (wall clock; and the whole
    check's CPU seconds, steadier on a machine shared with other jobs)."""
    figures = {"bytes": path.stat().st_size}
    figures["tokens"] = len(TOKEN.findall(COMMENT.sub("", path.read_text(encoding="utf-8"))))
    cpu = time.process_time()
    started = time.perf_counter()
    text = read_source(path)
    figures["read"] = time.perf_counter() - started
    with parse.collector_paused():  # as spacec.load does
        try:
            started = time.perf_counter()
            tree = parse.parse(text, path.name)
            figures["parse"] = time.perf_counter() - started
            started = time.perf_counter()
            checked = check.check(tree, {}, resolve=_Importer(path))
            figures["check"] = time.perf_counter() - started
            started = time.perf_counter()
            built = ir.build(checked)
            figures["ir"] = time.perf_counter() - started
            started = time.perf_counter()
            cost.check_shapes(built, text)
            figures["shapes"] = time.perf_counter() - started
            figures["cells"] = len(built.cells)
            figures["edges"] = sum(len(c.edges) for c in checked.cells)
        except SpaceError as error:
            figures["check"] = time.perf_counter() - started
            started = time.perf_counter()
            figures["rendered_lines"] = len(str(error).splitlines())
            figures["render"] = time.perf_counter() - started
            figures["shown"], figures["omitted"] = len(error.diagnostics), error.omitted
    figures["total"] = sum(
        figures.get(k, 0.0) for k in ("read", "parse", "check", "ir", "shapes", "render")
    )
    figures["cpu"] = time.process_time() - cpu
    return figures


def bytecode_environment(cache: Path) -> dict[str, str]:
    """The environment for the command: Python's bytecode written to and read from `cache`.

    An installed spacec has its modules' bytecode (pip compiles it on install; an editable
    install writes it on the first import), but a machine may set PYTHONDONTWRITEBYTECODE, as
    this project's does: every start would then compile spacec's modules from source (0.1-0.2 s
    of the command). Writing the bytecode to a folder of the script's own leaves the checkout
    as it is."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    subprocess.run([sys.executable, "-c", "import spacec.cli"], cwd=ROOT, env=env, check=True)
    return env


def time_command(path: Path, env: dict[str, str]) -> float:
    """Wall seconds of `spacec check FILE` in a fresh interpreter (its exit status is 0 for a
    valid space, 1 for a file of errors)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "spacec", "check", str(path)], cwd=ROOT, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 2.5, 5], help="MB")
    parser.add_argument("--kind", choices=["valid", "errors", "both"], default="both")
    parser.add_argument("--no-command", dest="command", action="store_false",
                        help="time the stages only, not `spacec check` in a fresh process")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each file: the fastest is shown, with the median of the "
                        "command's (default 3)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat: at least 1")
    kinds = ["valid", "errors"] if args.kind == "both" else [args.kind]
    parse.parser()  # built once per process; not part of any file's time
    with tempfile.TemporaryDirectory() as folder:
        env = bytecode_environment(Path(folder) / "bytecode") if args.command else {}
        for kind in kinds:
            print(f"\n{kind} spaces")
            for size in args.sizes:
                path = Path(folder) / f"{kind}.space"
                make = valid_space if kind == "valid" else error_space
                path.write_text(make(int(size * MB)), encoding="utf-8")
                # The fastest of a few runs, as timeit reports: on a shared machine the slower
                # ones measure the other jobs.
                f = min((time_stages(path) for _ in range(args.repeat)), key=itemgetter("total"))
                if args.command:
                    commands = sorted(time_command(path, env) for _ in range(args.repeat))
                    f["command"], f["command_median"] = commands[0], statistics.median(commands)
                mb = f["bytes"] / MB
                stages = "  ".join(
                    f"{k} {f[k]:.2f}s" for k in ("parse", "check", "ir", "shapes", "render")
                    if k in f
                )
                detail = (
                    f"{f['cells']} cells, {f['edges']} searched edges"
                    if "cells" in f
                    else f"{f['shown']} errors shown, {f['omitted']} counted, "
                    f"{f['rendered_lines']} lines printed"
                )
                tokens = f"{f['tokens']:,} tokens, " if "tokens" in f else ""
                print(
                    f"  {mb:5.2f} MB ({tokens}{detail}): total {f['total']:.2f}s "
                    f"({f['total'] / mb:.2f} s/MB; CPU {f['cpu']:.2f}s)  [{stages}]"
                    + (
                        f"; spacec check {f['command']:.2f}s (median {f['command_median']:.2f}s)"
                        if "command" in f
                        else ""
                    )
                )


if __name__ == "__main__":
    main()
