"""Drawings of genotypes and of a search's α.

`draw_genotype` draws every cell of a genotype into one PNG, SVG or PDF file: with Graphviz when
its `dot` program is on PATH, otherwise with matplotlib. Either way the cell's inputs, its
intermediate nodes (in genotype order) and its output are told apart by colour, and every edge
carries the name of its operation. `draw_alpha` draws one cell type's α as a heatmap: a softmax
over each row (edge), op names along the x axis, edges `src→dst` along the y axis.

`draw_run(run_dir)` writes ``cell_<type>.png`` for every cell of the run's genotype and, for a
search run, ``alpha_<type>.png`` of the last saved epoch's α (candidates weighted as the run's
method ranks them) and ``<tensor>_<type>.png`` of any other architecture tensor its method owns
(PC-DARTS's per-edge β), into the run directory.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from spacec.arch.derive import (
    ALPHA,
    CellRule,
    DerivationError,
    cell_tensors,
    edge_vector,
    softmax,
    strengths_function,
)
from spacec.arch.genotype import CellGenotype, Genotype, resolve
from spacec.errors import ReportedError
from spacec.files import atomic_write_with

log = logging.getLogger(__name__)

FORMATS = ("png", "svg", "pdf")
DPI = 150
# Node colours, the palette of quark0/darts visualize.py: inputs green, nodes blue, output yellow.
INPUT_COLOUR = "#c1ffc1"  # darkseagreen2
NODE_COLOUR = "#add8e6"  # lightblue
OUTPUT_COLOUR = "#eee8aa"  # palegoldenrod
OUTPUT_NAME = "output"


class DrawingError(ReportedError, ValueError):
    """A drawing cannot be made (unknown format, no genotype, dot failed); names the cause."""


# ---------------------------------------------------------------- cell structure


@dataclass(frozen=True)
class CellLayout:
    """The three kinds of node of a drawn cell, in drawing order."""

    inputs: tuple[str, ...]  # sources that no edge of the cell produces
    nodes: tuple[str, ...]  # intermediate nodes, in genotype order
    output: str  # the name of the output node in the drawing


def cell_layout(cell: CellGenotype) -> CellLayout:
    # The output's nodes too: a node without a chosen edge (FairDARTS' official rule keeps
    # only the edges over its threshold) is drawn, unconnected.
    nodes = tuple(dict.fromkeys((*cell.nodes(), *cell.output)))
    inputs = tuple(dict.fromkeys(src for _, src, _ in cell.edges if src not in nodes))
    output = OUTPUT_NAME
    while output in nodes or output in inputs:
        output = f"_{output}"
    return CellLayout(inputs=inputs, nodes=nodes, output=output)


def output_label(cell: CellGenotype) -> str:
    return OUTPUT_NAME if cell.reduce == "node" else f"{OUTPUT_NAME} ({cell.reduce})"


def drawing_format(path: Path) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise DrawingError(
            f"{path}: unknown drawing format {suffix or '(no suffix)'!r}; use one of "
            f"{', '.join('.' + f for f in FORMATS)}"
        )
    return suffix


# ---------------------------------------------------------------- graphviz


def genotype_dot(genotype: Genotype) -> str:
    """Graphviz source: one cluster per cell type."""
    lines = ["digraph genotype {", '  rankdir="LR";', '  node [style="filled,rounded", '
             'shape=box, fontname="Helvetica"];', '  edge [fontname="Helvetica", fontsize=10];']
    for name, cell in genotype.cells:
        lines.extend(_cluster(name, cell))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _cluster(name: str, cell: CellGenotype) -> list[str]:
    layout = cell_layout(cell)

    def node_id(node: str) -> str:
        return _quote(f"{name}/{node}")

    lines = [f"  subgraph {_quote('cluster_' + name)} {{", f"    label={_quote('cell ' + name)};"]
    for node in layout.inputs:
        lines.append(f"    {node_id(node)} [label={_quote(node)}, fillcolor={_quote(INPUT_COLOUR)}];")
    for node in layout.nodes:
        lines.append(f"    {node_id(node)} [label={_quote(node)}, fillcolor={_quote(NODE_COLOUR)}];")
    lines.append(f"    {node_id(layout.output)} [label={_quote(output_label(cell))}, "
                 f"fillcolor={_quote(OUTPUT_COLOUR)}];")
    for op, src, dst in cell.edges:
        lines.append(f"    {node_id(src)} -> {node_id(dst)} [label={_quote(op)}];")
    for node in cell.output:
        lines.append(f"    {node_id(node)} -> {node_id(layout.output)} [style=dashed, color=gray];")
    lines.append("  }")
    return lines


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _draw_with_dot(dot: str, genotype: Genotype, path: Path, fmt: str) -> None:
    def draw(temp: Path) -> None:
        try:
            subprocess.run([dot, f"-T{fmt}", "-o", str(temp)], input=genotype_dot(genotype),
                           text=True, check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as error:
            stderr = getattr(error, "stderr", "") or ""
            raise DrawingError(f"{path}: graphviz failed ({error}) {stderr.strip()}".strip()) from None

    atomic_write_with(path, draw)  # an unwritable path is a FileError naming it


# ---------------------------------------------------------------- matplotlib


SPACING = 1.6  # distance between neighbouring nodes on the line, in data units
ARC = 0.32  # arc3 curvature: an edge's arc rises SPACING * span * ARC / 2 above the line


def _positions(layout: CellLayout) -> dict[str, tuple[float, float]]:
    """Every node on one horizontal line: inputs, intermediate nodes, then the output."""
    order = (*layout.inputs, *layout.nodes, layout.output)
    return {node: (SPACING * index, 0.0) for index, node in enumerate(order)}


def _draw_node(ax, xy: tuple[float, float], label: str, colour: str) -> None:
    width, height = 0.25 + 0.085 * len(label), 0.42
    ax.add_patch(FancyBboxPatch((xy[0] - width / 2, xy[1] - height / 2), width, height,
                                boxstyle="round,pad=0.03", facecolor=colour, edgecolor="black",
                                linewidth=0.8, zorder=3))
    ax.text(*xy, label, ha="center", va="center", fontsize=9, zorder=4)


def _draw_edge(ax, start, end, label: str | None, rad: float, dashed: bool = False) -> float:
    """An arc from `start` to `end`; returns the height of its middle above the line."""
    ax.add_patch(FancyArrowPatch(start, end, connectionstyle=f"arc3,rad={rad}",
                                 arrowstyle="-|>", mutation_scale=10, shrinkA=12, shrinkB=12,
                                 linewidth=0.7 if dashed else 1.0,
                                 linestyle="--" if dashed else "-",
                                 color="gray" if dashed else "black", zorder=2))
    # The midpoint of matplotlib's arc3 curve, a quadratic Bézier whose control point lies at
    # the chord's midpoint + rad * (dy, -dx).
    dx, dy = end[0] - start[0], end[1] - start[1]
    x = (start[0] + end[0]) / 2 + rad * dy / 2
    y = (start[1] + end[1]) / 2 - rad * dx / 2
    if label is not None:
        ax.text(x, y, label, ha="center", va="center", fontsize=7, zorder=5,
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none",
                      "alpha": 0.9})
    return y


def draw_cell(ax, name: str, cell: CellGenotype) -> None:
    """Draw one cell on a matplotlib Axes: nodes on a line, edges as labelled arcs.

    A node's inputs alternate above and below the line; an arc's height grows with the
    distance it spans, so the labels of different edges land at different places.
    """
    layout = cell_layout(cell)
    positions = _positions(layout)
    heights = [0.0]
    seen: dict[str, int] = {}
    for op, src, dst in cell.edges:
        nth = seen.get(dst, 0)
        seen[dst] = nth + 1
        rad = -ARC if nth % 2 == 0 else ARC  # negative: the arc of a rightward edge rises
        heights.append(_draw_edge(ax, positions[src], positions[dst], op, rad))
    for node in cell.output:
        heights.append(_draw_edge(ax, positions[node], positions[layout.output], None,
                                  ARC / 2, dashed=True))
    for node in layout.inputs:
        _draw_node(ax, positions[node], node, INPUT_COLOUR)
    for node in layout.nodes:
        _draw_node(ax, positions[node], node, NODE_COLOUR)
    _draw_node(ax, positions[layout.output], output_label(cell), OUTPUT_COLOUR)
    xs = [x for x, _ in positions.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 1.0)
    ax.set_ylim(min(heights) - 0.5, max(heights) + 0.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"cell {name}", fontsize=11)


def _cell_figure(cells: Sequence[tuple[str, CellGenotype]]) -> Figure:
    widest = max(len(cell_layout(cell).inputs) + len(cell_layout(cell).nodes) + 1 for _, cell in cells)
    figure = Figure(figsize=(1.0 + 1.3 * widest, 3.6 * len(cells)), layout="constrained")
    axes = figure.subplots(len(cells), 1, squeeze=False)[:, 0]
    for ax, (name, cell) in zip(axes, cells, strict=True):
        draw_cell(ax, name, cell)
    return figure


def _save(figure: Figure, path: Path) -> None:
    """Atomically; an unwritable path is a FileError naming it and the reason (spacec.files)."""
    atomic_write_with(path, lambda temp: figure.savefig(temp, dpi=DPI, format=drawing_format(path)))


# ---------------------------------------------------------------- entry points


def draw_genotype(genotype: Genotype, path: Path, cell_types: Sequence[str] | None = None,
                  engine: str = "auto") -> Path:
    """Draw the cells of `genotype` (all, or `cell_types`) into `path` (.png, .svg or .pdf).

    `engine`: "dot" (Graphviz; DrawingError without it), "matplotlib", or "auto" (dot when on
    PATH).
    """
    path = Path(path)
    fmt = drawing_format(path)
    cells = genotype.cells if cell_types is None else tuple(
        (name, genotype.cell(name)) for name in cell_types)
    if not cells:
        raise DrawingError("no cells to draw")
    dot = shutil.which("dot") if engine in ("auto", "dot") else None
    if engine == "dot" and dot is None:
        raise DrawingError("graphviz's dot program is not on PATH")
    if engine not in ("auto", "dot", "matplotlib"):
        raise DrawingError(f"unknown engine {engine!r}; use auto, dot or matplotlib")
    if dot is not None:
        _draw_with_dot(dot, Genotype(space=genotype.space, cells=tuple(cells)), path, fmt)
    else:
        _save(_cell_figure(cells), path)
    log.info("wrote %s", path)
    return path


def softmax_rows(rows: Sequence[Sequence[float]]) -> list[list[float]]:
    out = []
    for row in rows:
        top = max(row)
        exps = [math.exp(value - top) for value in row]
        total = sum(exps)
        out.append([value / total for value in exps])
    return out


def draw_alpha(alpha: Sequence[Sequence[float]], ops: Sequence[str],
               edges: Sequence[tuple[str, str]], path: Path, title: str) -> Path:
    """Heatmap of one cell type's α: softmax over each row (one row per edge)."""
    if len(alpha) != len(edges) or any(len(row) != len(ops) for row in alpha):
        raise DrawingError(
            f"{title}: α has shape {len(alpha)}x{len(alpha[0]) if alpha else 0}, expected "
            f"{len(edges)} edges x {len(ops)} ops"
        )
    return draw_weights(softmax_rows(alpha), ops, edges, path, title, "softmax(α)")


def draw_weights(weights: Sequence[Sequence[float]], ops: Sequence[str],
                 edges: Sequence[tuple[str, str]], path: Path, title: str, label: str) -> Path:
    """Heatmap of one cell type's candidate weights (one row per edge), as derivation ranks
    them; `label` names the colour scale."""
    figure = Figure(figsize=(1.2 + 0.75 * len(ops), 1.2 + 0.32 * len(edges)),
                    layout="constrained")
    ax = figure.subplots()
    # The data's own range: early in a search all weights sit near 1/ops, and a 0-based scale
    # would paint them one colour.
    flat = [w for row in weights for w in row]
    image = ax.imshow(weights, cmap="viridis", vmin=min(flat), vmax=max(flat), aspect="auto")
    ax.set_xticks(range(len(ops)), labels=list(ops), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(edges)), labels=[f"{src}→{dst}" for src, dst in edges], fontsize=8)
    ax.set_xlabel("operation")
    ax.set_ylabel("edge")
    ax.set_title(title, fontsize=10)
    figure.colorbar(image, ax=ax, label=label)
    _save(figure, Path(path))
    log.info("wrote %s", path)
    return Path(path)


def draw_run(run_dir: Path) -> list[Path]:
    """``cell_<type>.png`` for the run's genotype and, for a search run, ``alpha_<type>.png`` of
    its last saved α, written into `run_dir`; returns the files written."""
    run_dir = Path(run_dir)
    genotype = resolve(str(run_dir))
    written = [draw_genotype(genotype, run_dir / f"cell_{name}.png", [name])
               for name in genotype.cell_types]
    written.extend(_draw_run_alphas(run_dir))
    return written


show_run = draw_run


def _draw_run_alphas(run_dir: Path) -> list[Path]:
    """The last epoch's heatmaps of a search run, candidates weighted as its method's derivation
    ranks them (softmax(α) for DARTS); none for a training run."""
    from spacec.runtime.run.derivation import read_alphas, run_space, run_strengths
    from spacec.runtime.run.rundir import RunDir

    runs = RunDir(run_dir)
    epochs = runs.alpha_epochs() if runs.config_path.is_file() else []
    if not epochs:
        return []
    name = run_strengths(runs)
    if name is None:  # a method without α (random_ws)
        return []
    path = runs.alphas_path(epochs[-1])
    rules = run_space(runs).rules
    strengths = strengths_function(name)
    try:
        tensors = cell_tensors(read_alphas(path), rules)
        weights = {cell: strengths(tensors[cell], rule) for cell, rule in rules.items()}
    except DerivationError as error:
        raise DrawingError(f"{path}: {error}") from None
    label = "softmax(α)" if name == "softmax" else f"{name} weight"
    written = [draw_weights(weights[cell], rule.ops, rule.edges, run_dir / f"alpha_{cell}.png",
                            f"α of cell {cell} after epoch {epochs[-1]}", label)
               for cell, rule in rules.items()]
    for cell, rule in rules.items():
        for tensor, values in tensors[cell].items():
            if tensor != ALPHA:
                written.append(draw_edge_tensor(
                    values, rule, tensor, run_dir / f"{tensor}_{cell}.png",
                    f"{tensor} of cell {cell} after epoch {epochs[-1]}"))
    return written


def draw_edge_tensor(values: Sequence[float], rule: CellRule, tensor: str, path: Path, title: str) -> Path:
    """Heatmap of a per-edge architecture tensor (PC-DARTS's β): its raw values in one column,
    and beside them the weight each edge gets, a softmax over the edges entering its node."""
    try:
        raw = edge_vector(values, rule)
    except DerivationError as error:
        raise DrawingError(f"{title}: {error}") from None
    normalised = [0.0] * len(raw)
    for node in rule.nodes:
        rows = rule.rows_into(node)
        if rows:
            for row, weight in zip(rows, softmax([raw[r] for r in rows]), strict=True):
                normalised[row] = weight
    figure = Figure(figsize=(4.2, 1.2 + 0.32 * len(raw)), layout="constrained")
    left, right = figure.subplots(1, 2)
    labels = [f"{src}→{dst}" for src, dst in rule.edges]
    for ax, column, name in ((left, raw, tensor), (right, normalised, f"softmax({tensor}) by node")):
        image = ax.imshow([[v] for v in column], cmap="viridis", aspect="auto")
        ax.set_xticks([0], labels=[name], fontsize=8)
        ax.set_yticks(range(len(labels)), labels=labels if ax is left else [""] * len(labels),
                      fontsize=8)
        figure.colorbar(image, ax=ax)
    figure.suptitle(title, fontsize=10)
    _save(figure, Path(path))
    log.info("wrote %s", path)
    return Path(path)
