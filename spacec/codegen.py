"""IR -> Python source of a supernet module, through jinja2 templates.

The generated module imports only torch and the `runtime` package, names nothing that came from
a .space file except validated identifiers (checked in `spacec.check`) and string literals
written with `repr`, carries a header with the source path, its sha256 and the spacec version,
and marks lines with `# file.space:LINE`. Same IR and parameters -> same bytes.
"""

from __future__ import annotations

import builtins
import json
import keyword
from functools import lru_cache

import jinja2
import networkx as nx

from spacec import __version__, spec
from spacec import ir as irmod

TEMPLATES = {
    "image_classifier": "supernet_image.py.j2",
    "language_model": "supernet_sequence.py.j2",
}


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("spacec", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["py"] = py_literal
    env.filters["sum_lines"] = sum_lines
    env.filters["py_field"] = py_field
    return env


def sum_lines(terms: list[str], target: str, indent: int, width: int = 100) -> str:
    """`target = a + b + c`, wrapped one term per line the way ruff formats it when too long."""
    pad = " " * indent
    line = f"{pad}{target} = {' + '.join(terms)}"
    if len(line) <= width or len(terms) == 1:
        return line
    body = "\n".join(f"{pad}    {'+ ' if i else ''}{term}" for i, term in enumerate(terms))
    return f"{pad}{target} = (\n{body}\n{pad})"


def py_literal(value) -> str:
    """A Python literal for a value built from names and numbers (never arbitrary text)."""
    if isinstance(value, spec.Quantity):
        return str(value.value)
    if isinstance(value, str):
        return json.dumps(value)  # a valid Python literal, double-quoted as ruff formats it
    if isinstance(value, int | float | bool) or value is None:
        return repr(value)
    if isinstance(value, tuple | list):
        inner = ", ".join(py_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, frozenset | set):
        return (
            "frozenset({" + ", ".join(py_literal(v) for v in sorted(value)) + "})"
            if value
            else "frozenset()"
        )
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no literal for {type(value).__name__}")


def py_field(value, key: str, indent: int, width: int = 100) -> str:
    """`key=literal,` on one line, or one element per line when that is too long (as ruff does)."""
    pad = " " * indent
    line = f"{pad}{key}={py_literal(value)},"
    if len(line) <= width or not isinstance(value, tuple):
        return line
    items = "".join(f"{pad}    {py_literal(item)},\n" for item in value)
    return f"{pad}{key}=(\n{items}{pad}),"


# Names the generated code itself uses at module level or inside generated functions.
MODULE_GLOBALS = frozenset(
    {
        "annotations",
        "partial",
        "torch",
        "nn",
        "blocks",
        "layout",
        "ops",
        "recurrent",
        "CellRule",
        "SearchSpaceMixin",
        "cell_input",
        "new_alphas",
        "SPACE",
        "SOURCE_SHA256",
        "CELL_TYPES",
        "CELL_SHAPES",
        "MAX_INPUTS",
        "RULES",
        "Network",
        "body",
    }
)
FUNCTION_LOCALS = frozenset({"self", "weights", "x_mask", "h_mask", "C", "mixed", "plan", "super"})


class Namespace:
    """Unique, legal Python names (as torch.fx's Graph namespace): a clash gets a numeric suffix."""

    def __init__(self, taken=()):
        self.taken = set(taken) | set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins))
        self.names: dict[str, str] = {}

    def create(self, wanted: str) -> str:
        if wanted in self.names:
            return self.names[wanted]
        candidate, n = wanted, 0
        while candidate in self.taken or not candidate.isidentifier():
            n += 1
            candidate = f"{wanted}_{n}"
        self.taken.add(candidate)
        self.names[wanted] = candidate
        return candidate


def class_name(cell: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in cell.split("_") if part) + "Cell"


def generate(ir: irmod.IR, source_label: str | None = None) -> str:
    """Render the supernet module for a built IR."""
    space = ir.space
    template = environment().get_template(TEMPLATES[space.network.kind])
    return template.render(**_context(ir, source_label or space.path))


def _context(ir: irmod.IR, source_label: str) -> dict:
    space = ir.space
    file = source_label.rsplit("/", 1)[-1]
    names = Namespace(MODULE_GLOBALS)
    opsets = [_opset_view(space.opset(name), names) for name in _used_opsets(space)]
    consts = {view["name"]: view for view in opsets}
    return {
        "version": __version__,
        "source": source_label,
        "file": file,
        "sha256": space.sha256,
        "space": space,
        "params": [(name, value) for name, value in space.params],
        "network_params": _network_params(space),
        "body_params": _body_params(space),
        "opsets": opsets,
        "cells": [
            _cell_view(space.cell(name), ir.cells[name], space, names, consts) for name in ir.cells
        ],
        "network": _network_view(space),
    }


def _used_opsets(space: spec.Space) -> list[str]:
    return list(dict.fromkeys(cell.opset for cell in space.cells))


def _opset_view(opset: spec.OpSet, names: Namespace) -> dict:
    return {
        "name": opset.name,
        "const": names.create(opset.name.upper()),
        "steps_const": names.create(opset.name.upper() + "_STEPS"),
        "line": opset.line,
        "file": opset.source.rsplit("/", 1)[-1],
        "candidates": [
            {"name": c.name, "steps": [_step_literal(s) for s in c.steps], "line": c.line}
            for c in opset.candidates
        ],
    }


def _step_literal(step: spec.Step) -> str:
    args = {key: getattr(value, "value", value) for key, value in step.args}
    return f"({py_literal(step.primitive)}, {py_literal(args)})"


def _cell_view(
    cell: spec.Cell, graph: nx.DiGraph, space: spec.Space, names: Namespace, consts: dict[str, dict]
) -> dict:
    opset = space.opset(cell.opset)
    zero_columns = {i for i, c in enumerate(opset.candidates) if c.is_zero}
    local = Namespace(MODULE_GLOBALS | FUNCTION_LOCALS)
    var = {name: local.create(name) for name in cell.inputs + cell.nodes}
    nodes = []
    for node in cell.nodes:
        searched = [
            (src, data) for src, data in irmod.incoming(graph, node) if data["kind"] == "searched"
        ]
        fixed = [
            (src, data) for src, data in irmod.incoming(graph, node) if data["kind"] == "fixed"
        ]
        joint = [data for _, data in fixed if data["joint"]]
        nodes.append(
            {
                "name": var[node],
                "searched": [
                    {
                        "src": var[src],
                        "row": data["row"],
                        "stride": data["stride"],
                        "line": data["line"],
                    }
                    for src, data in searched
                ],
                "rows": (searched[0][1]["row"], searched[-1][1]["row"] + 1) if searched else None,
                "fixed": [
                    {
                        "src": var[src],
                        "stride": data["stride"],
                        "line": data["line"],
                        "steps": py_literal(tuple((s[0], dict(s[1])) for s in data["steps"])),
                    }
                    for src, data in fixed
                    if not data["joint"]
                ],
                "joint": (
                    {
                        "sources": [var[n] for n in joint[0]["joint"]],
                        "primitive": joint[0]["steps"][0][0],
                        "args": dict(joint[0]["steps"][0][1]),
                        "line": joint[0]["line"],
                    }
                    if joint
                    else None
                ),
            }
        )
    rule = cell.rule
    return {
        "name": cell.name,
        "cls": names.create(class_name(cell.name)),
        "activations_const": names.create(cell.name.upper() + "_ACTIVATIONS"),
        "line": cell.line,
        "inputs": [var[n] for n in cell.inputs],
        "nodes": nodes,
        "edges": [
            {"src": var[e.src], "dst": var[e.dst], "stride": e.stride, "row": i, "line": e.line}
            for i, e in enumerate(cell.edges)
        ],
        "opset_steps": consts[opset.name]["steps_const"],
        "ops": opset.names,
        "active_columns": [
            (i, _activation(c)) for i, c in enumerate(opset.candidates) if i not in zero_columns
        ],
        "reduce": cell.reduce,
        "output": [var[n] for n in cell.output],
        "reduction": cell.reduction,
        "share": cell.share is not None,
        "search_norm": cell.search_norm is not None,
        "rule": {
            "inputs": cell.inputs,
            "nodes": cell.nodes,
            "edges": tuple((e.src, e.dst) for e in cell.edges),
            "ops": opset.names,
            "kind": rule.kind,
            "k": rule.k,
            "exclude": frozenset(rule.exclude),
            "limits": rule.limits,
            "output": cell.output,
            "reduce": cell.reduce,
            "fixed": tuple(
                (f.steps[0].primitive, src, f.dst) for f in cell.fixed for src in f.sources
            ),
        },
    }


def _activation(candidate: spec.Candidate) -> str:
    step = candidate.steps[0]
    return dict(step.args).get("fn", step.primitive)


def _network_params(space: spec.Space) -> list[tuple[str, object]]:
    """Parameters the network section uses: they become the model's constructor arguments."""
    used: set[str] = set()
    for _, value in space.network.settings:
        used |= _names_in(value)
    for item in space.network.body:
        if isinstance(item, spec.CellRun):
            for quantity in (item.count, *item.positions):
                used |= _names_in(quantity)
        else:
            used |= _names_in(item.step)
    return [(name, value) for name, value in space.params if name in used]


def _body_params(space: spec.Space) -> list[str]:
    used: set[str] = set()
    for item in space.network.body:
        if isinstance(item, spec.CellRun):
            for quantity in (item.count, *item.positions):
                used |= _names_in(quantity)
        else:
            used |= _names_in(item.step)
    return [name for name, _ in space.params if name in used]


def _names_in(value) -> set[str]:
    import re

    if isinstance(value, spec.Quantity):
        return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", value.py))
    if isinstance(value, spec.Step):
        return set().union(*(_names_in(v) for _, v in value.args)) if value.args else set()
    return set()


def _network_view(space: spec.Space) -> dict:
    network = space.network
    view: dict = {"kind": network.kind, "line": network.line}
    for key, value in network.settings:
        view[key] = _setting_view(value)
    body = []
    for item in network.body:
        if isinstance(item, spec.FixedBlock):
            args = {k: v for k, v in item.step.args if k != "stride"}
            body.append(
                {
                    "block": item.step.primitive,
                    "stride": item.stride,
                    "args": "("
                    + "".join(f"({py_literal(k)}, {v.py}), " for k, v in args.items())
                    + ")",
                    "line": item.line,
                }
            )
        else:
            body.append(
                {
                    "cell": item.cell,
                    "count": item.count.py,
                    "replace_with": item.replace_with,
                    "positions": [p.py for p in item.positions],
                    "line": item.line,
                }
            )
    view["body"] = body
    return view


def _setting_view(value):
    if isinstance(value, spec.Quantity):
        return value.py
    if isinstance(value, spec.Step):
        return {
            "name": value.primitive,
            "args": {
                k: v.py if isinstance(v, spec.Quantity) else py_literal(v) for k, v in value.args
            },
        }
    return value
