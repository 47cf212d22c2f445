"""Checked space -> IR: one networkx DiGraph per cell type plus the macro network's layout.

Schema of a cell graph (`IR.cells[name]`):
  graph attributes
    name, line            the cell type and where it is declared
    inputs, nodes         input and intermediate node names, in order
    ops                   α column names (the cell's operation set, in declared order)
    opset                 the set's name
    combine, reduce       how a node sums its inputs; how the output is formed ("concat", "mean", "node")
    output                the nodes the output reduces over
    rule                  the derivation rule: {"kind", "k", "exclude", "limits"}
    reduction             True when edges leaving the inputs have stride 2
    share, search_norm    (primitive, args) or None
  nodes
    every input and intermediate node: role ("input" | "intermediate"), order (position)
    "output": role "output", order = number of nodes
  edges (src -> dst)
    kind "searched": row (α row), ops (candidate names), stride, shared (the node that owns
                     the shared weights, or None), line
    kind "fixed":    steps ((primitive, args), ...), joint (the sources that one op reads
                     together, or None), stride, line
    kind "output":   from each output node to "output"

`lint(ir)` checks these invariants after every build; `listing(ir)` prints the IR in topological
order, deterministically, for humans and golden tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import networkx as nx

from spacec import catalog, spec
from spacec.arch import layout
from spacec.errors import Diagnostic, SpaceError, Span

OUTPUT = "output"


@dataclass(frozen=True)
class IR:
    space: spec.Space
    cells: dict[str, nx.DiGraph]
    layout: tuple  # planned body of an image network at the compiled parameters, else ()

    @property
    def name(self) -> str:
        return self.space.name


def build(space: spec.Space) -> IR:
    cells = {cell.name: cell_graph(cell, space) for cell in space.cells}
    planned = tuple(plan_body(space, cells)) if space.network.kind == "image_classifier" else ()
    ir = IR(space, cells, planned)
    lint(ir)
    return ir


def cell_graph(cell: spec.Cell, space: spec.Space) -> nx.DiGraph:
    opset = space.opset(cell.opset)
    graph = nx.DiGraph()
    # Set, not passed to DiGraph(): networkx's backend dispatch of keyword arguments costs more
    # than the rest of a small cell's graph.
    graph.graph.update(
        name=cell.name,
        line=cell.line,
        inputs=cell.inputs,
        nodes=cell.nodes,
        ops=opset.names,
        opset=opset.name,
        combine=cell.combine,
        reduce=cell.reduce,
        output=cell.output,
        rule={
            "kind": cell.rule.kind,
            "k": cell.rule.k,
            "exclude": list(cell.rule.exclude),
            "limits": [list(limit) for limit in cell.rule.limits],
        },
        reduction=cell.reduction,
        share=_step_tuple(cell.share),
        search_norm=_step_tuple(cell.search_norm),
    )
    inputs = cell.inputs
    add_node = graph.add_node  # one call per node: cheaper than add_nodes_from's (node, data)
    for order, name in enumerate(inputs + cell.nodes):
        add_node(name, role="input" if name in inputs else "intermediate", order=order)
    add_node(OUTPUT, role="output", order=len(inputs) + len(cell.nodes))
    # Every edge in one call, in the order the schema lists them: fixed, searched, output.
    edges = [
        (
            source,
            fixed.dst,
            {
                "kind": "fixed",
                "steps": tuple([_step_tuple(s) for s in fixed.steps]),
                "joint": fixed.sources if fixed.joint else None,
                "stride": fixed.stride,
                "line": fixed.line,
            },
        )
        for fixed in cell.fixed
        for source in fixed.sources
    ]
    ops = opset.names
    shared = cell.share is not None
    edges += [
        (
            edge.src,
            edge.dst,
            {
                "kind": "searched",
                "row": row,
                "ops": ops,
                "stride": edge.stride,
                "shared": edge.dst if shared else None,
                "line": edge.line,
            },
        )
        for row, edge in enumerate(cell.edges)
    ]
    edges += [(node, OUTPUT, {"kind": "output"}) for node in cell.output]
    graph.add_edges_from(edges)
    return graph


def _step_tuple(step: spec.Step | None):
    if step is None:
        return None
    return step.primitive, tuple((k, getattr(v, "value", v)) for k, v in step.args)


def searched_edges(graph: nx.DiGraph) -> list[tuple[str, str, dict]]:
    """Searched edges in α row order."""
    edges = [(u, v, d) for u, v, d in graph.edges(data=True) if d["kind"] == "searched"]
    return sorted(edges, key=lambda e: e[2]["row"])


def incoming(graph: nx.DiGraph, node: str) -> list[tuple[str, dict]]:
    """A node's incoming edges, sources in node order."""
    preds = sorted(graph.predecessors(node), key=lambda n: graph.nodes[n]["order"])
    return [(p, graph.edges[p, node]) for p in preds]


def cell_shapes(space: spec.Space) -> dict[str, layout.CellShape]:
    return {
        cell.name: layout.CellShape(
            inputs=len(cell.inputs),
            reduction=cell.reduction,
            multiplier=len(cell.output) if cell.reduce == "concat" else 1,
        )
        for cell in space.cells
    }


def body_sequence(space: spec.Space) -> list:
    """The body at the compiled parameters: cell names and `layout.BlockItem`s."""
    sequence: list = []
    for item in space.network.body:
        if isinstance(item, spec.FixedBlock):
            args = tuple((k, getattr(v, "value", v)) for k, v in item.step.args if k != "stride")
            sequence.append(layout.BlockItem(item.step.primitive, item.stride, args))
        else:
            positions = [p.value for p in item.positions]
            sequence += layout.repeat(item.cell, item.count.value, item.replace_with, positions)
    return sequence


def stems(space: spec.Space) -> list[spec.Step]:
    stem = space.network.get("stem")
    return list(stem) if isinstance(stem, tuple) else [stem]


def stem_outputs(space: spec.Space) -> list[tuple[int, bool]]:
    """(channels, halves the resolution) of each stem, at the compiled parameters."""
    return [
        (step.kwargs()["channels"].value, step.primitive in catalog.REDUCING_STEMS)
        for step in stems(space)
    ]


def plan_body(space: spec.Space, cells: dict[str, nx.DiGraph]) -> list:
    network = space.network
    return layout.plan(
        body_sequence(space),
        cell_shapes(space),
        stem_outputs(space),
        channels=network.get("channels").value,
    )


# ---- lint ------------------------------------------------------------------------------------
def lint(ir: IR) -> None:
    """Check the IR's invariants; raise SpaceError pointing at the construct that breaks one."""
    problems: list[Diagnostic] = []
    path = ir.space.path
    for name, graph in ir.cells.items():
        where = Span(path, graph.graph["line"], 1)
        problems += [
            Diagnostic(where, f"cell '{name}': {message}") for message in _lint_cell(graph)
        ]
    problems += _lint_layout(ir)
    if problems:
        raise SpaceError(problems)


def _lint_cell(graph: nx.DiGraph) -> list[str]:
    """What breaks the schema in one cell graph: one pass over the nodes, one over the
    successors of each (the raw adjacency dicts, in the graph's edge order)."""
    messages = []
    nodes = dict(graph.nodes(data=True))
    order = {}
    inputs = set()
    outputs = 0
    for node, data in nodes.items():
        order[node] = data["order"]
        role = data["role"]
        if role == "input":
            inputs.add(node)
        elif role == "output":
            outputs += 1
    fed: set[str] = set()  # nodes with an incoming edge
    rows = []  # searched edges' α rows
    forward = True  # every edge goes forward in node order: then there is no cycle
    edge_messages = []
    for u, successors in graph.adjacency():
        if not successors:
            continue
        fed.update(successors)
        u_order = order[u]
        for v, data in successors.items():
            kind = data["kind"]
            if u_order >= order[v]:
                forward = False
                if kind != "output":
                    edge_messages.append(f"edge {u} -> {v} goes backwards")
            if kind == "searched":
                rows.append(data["row"])
            if data.get("stride", 1) == 2 and u not in inputs:
                edge_messages.append(f"stride 2 on edge {u} -> {v}, which does not leave an input")
    if not forward and not nx.is_directed_acyclic_graph(graph):
        messages.append("the cell graph has a cycle")
    if outputs != 1:
        messages.append(f"expected one output node, found {outputs}")
    for node, data in nodes.items():
        role = data["role"]
        if role == "input" and node in fed:
            messages.append(f"input '{node}' has incoming edges")
        if role == "intermediate" and node not in fed:
            messages.append(f"node '{node}' has no incoming edge")
    rows.sort()
    if rows != list(range(len(rows))):
        messages.append("α rows are not numbered 0 .. n-1")
    return messages + edge_messages


def _lint_layout(ir: IR) -> list[Diagnostic]:
    if not ir.layout:
        return []
    network = ir.space.network
    where = Span(ir.space.path, network.line, 1)
    identity = network.get("preprocess").primitive == "identity"
    problems = []
    auxiliary = network.get("auxiliary")
    if auxiliary is not None:
        after = auxiliary.kwargs()["after"].value
        if after >= len(ir.layout):
            problems.append(
                Diagnostic(
                    where,
                    f"the auxiliary head reads body position {after}, "
                    f"but the body has {len(ir.layout)} items",
                )
            )
    for item in ir.layout:
        if isinstance(item, layout.PlannedBlock):
            continue
        for number, source in enumerate(item.inputs):
            if source.behind > 1:
                problems.append(
                    Diagnostic(
                        where,
                        f"cell {item.index} ('{item.name}'): input {number} is "
                        f"{source.behind} reductions behind; at most 1 is supported",
                    )
                )
            elif identity and (source.channels != item.C or source.behind):
                problems.append(
                    Diagnostic(
                        where,
                        f"cell {item.index} ('{item.name}'): `preprocess "
                        f"identity` needs inputs of {item.C} channels at the cell's "
                        f"resolution, input {number} has {source.channels}",
                        "use relu_conv_bn(kernel=1) to adapt the width",
                    )
                )
    return problems


# ---- printed forms ---------------------------------------------------------------------------
def listing(ir: IR) -> str:
    """A deterministic text listing of every cell in topological order, then the layout."""
    lines = [f"space {ir.name}  ({ir.space.path}, sha256 {ir.space.sha256[:12]})"]
    for name, graph in ir.cells.items():
        g = graph.graph
        lines.append(
            f"cell {name}: inputs {', '.join(g['inputs'])}; α [{_rows(graph)}, {len(g['ops'])}]"
            f"{'; reduction' if g['reduction'] else ''}"
        )
        for node in nx.lexicographical_topological_sort(
            graph, key=lambda n: graph.nodes[n]["order"]
        ):
            if graph.nodes[node]["role"] != "intermediate":
                continue
            parts = list(
                dict.fromkeys(_edge_text(src, data) for src, data in incoming(graph, node))
            )
            lines.append(f"  {node} = {g['combine']}({', '.join(parts)})")
        lines.append(f"  output = {g['reduce']}({', '.join(g['output'])})")
        rule = g["rule"]
        lines.append(
            f"  derive {rule['kind']}(k={rule['k']}, exclude={rule['exclude']})"
            + "".join(f"; limit {op} <= {n}" for op, n in rule["limits"])
        )
    for item in ir.layout:
        if isinstance(item, layout.PlannedBlock):
            lines.append(
                f"body[{item.index}] block {item.name}: {item.in_channels} -> {item.out_channels}"
                f", stride {item.stride}"
            )
        else:
            inputs = ", ".join(f"{s.channels}{'↓' * s.behind}" for s in item.inputs)
            lines.append(
                f"body[{item.index}] cell {item.name}: C={item.C}, inputs ({inputs}) -> "
                f"{item.out_channels}"
            )
    return "\n".join(lines) + "\n"


def _rows(graph: nx.DiGraph) -> int:
    return sum(1 for _, _, d in graph.edges(data=True) if d["kind"] == "searched")


def _edge_text(src: str, data: dict) -> str:
    stride = ", stride 2" if data.get("stride") == 2 else ""
    if data["kind"] == "searched":
        return f"mixed#{data['row']}({src}{stride})"
    op = " >> ".join(step[0] for step in data["steps"])
    return f"{op}({', '.join(data['joint']) if data['joint'] else src}{stride})"


def to_json(ir: IR) -> str:
    """Each cell as node-link JSON (networkx's format), deterministic."""
    cells = {name: nx.node_link_data(graph, edges="edges") for name, graph in ir.cells.items()}
    return (
        json.dumps(
            {"space": ir.name, "sha256": ir.space.sha256, "cells": cells},
            indent=2,
            sort_keys=True,
            default=list,
        )
        + "\n"
    )


def to_dot(ir: IR) -> str:
    """Graphviz DOT: one cluster per cell; searched edges dashed, labelled with their α row."""
    lines = [f'digraph "{ir.name}" {{', "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    for name, graph in ir.cells.items():
        lines.append(f'  subgraph "cluster_{name}" {{')
        lines.append(f'    label="{name}";')
        for node in sorted(graph.nodes, key=lambda n: graph.nodes[n]["order"]):
            shape = "ellipse" if graph.nodes[node]["role"] != "intermediate" else "box"
            lines.append(f'    "{name}.{node}" [label="{node}", shape={shape}];')
        for u, v, data in sorted(
            graph.edges(data=True),
            key=lambda e: (graph.nodes[e[1]]["order"], graph.nodes[e[0]]["order"]),
        ):
            if data["kind"] == "searched":
                attrs = f'style=dashed, label="α{data["row"]}"'
            elif data["kind"] == "fixed":
                attrs = f'label="{" >> ".join(s[0] for s in data["steps"])}"'
            else:
                attrs = "color=gray"
            lines.append(f'    "{name}.{u}" -> "{name}.{v}" [{attrs}];')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
