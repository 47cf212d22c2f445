"""IR -> Python source of a supernet module, through jinja2 templates.

The generated module imports only torch and the `runtime` package, names nothing that came from
a .space file except validated identifiers (checked in `spacec.check`) and string literals
written with `repr`, carries a header with the source path, its sha256 and the spacec version,
and marks lines with `# file.space:LINE`. Same IR and parameters -> same bytes.
"""

from __future__ import annotations

import builtins
import itertools
import json
import keyword
import re
from functools import lru_cache

import jinja2
import networkx as nx

from spacec import __version__, spec
from spacec import ir as irmod
from spacec.arch.derive import check_genotype
from spacec.arch.genotype import GenotypeError
from spacec.arch.rules import cell_rules, rule_fields

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
    env.filters["py_assign"] = py_assign
    env.filters["with_comment"] = with_comment
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
        # Quoted as ruff formats it: double quotes unless the text holds some.
        return repr(value) if '"' in value and "'" not in value else json.dumps(value)
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
    """`key=literal,` (a keyword argument), wrapped as ruff wraps it when too long."""
    return _wrapped(f"{key}=", value, ",", indent, width)


def _wrapped(prefix: str, value, suffix: str, indent: int, width: int) -> str:
    """`prefix literal suffix` on one line, or a tuple one element per line when that is too
    long (the way ruff formats it)."""
    pad = " " * indent
    line = f"{pad}{prefix}{py_literal(value)}{suffix}"
    if len(line) <= width or not isinstance(value, tuple):
        return line
    items = "".join(f"{pad}    {py_literal(item)},\n" for item in value)
    return f"{pad}{prefix}(\n{items}{pad}){suffix}"


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

    def create(self, wanted: str) -> str:
        """A fresh name: two requests for the same name get two different names."""
        wanted = wanted.lstrip("_") or "name"  # no __dunder__ or class-private mangling
        candidate, n = wanted, 0
        while candidate in self.taken or not candidate.isidentifier():
            n += 1
            candidate = f"{wanted}_{n}"
        self.taken.add(candidate)
        return candidate


def py_assign(value, target: str, indent: int, width: int = 100) -> str:
    """`target = literal`, wrapped as ruff wraps it when too long."""
    return _wrapped(f"{target} = ", value, "", indent, width)


def comment_safe(text: str) -> str:
    """A file name as it may appear in generated comments and docstrings: no quotes, no
    newlines, no backslashes, whatever the name on disk holds."""
    return re.sub(r"[^\w.\-+ ]", "_", text)


def with_comment(code: str, comment: str, indent: int, width: int = 100) -> str:
    """`code  # comment`, or the comment on its own line above when that is too long."""
    pad = " " * indent
    line = f"{pad}{code}  # {comment}"
    return line if len(line) <= width else f"{pad}# {comment}\n{pad}{code}"


def class_name(cell: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in cell.split("_") if part) + "Cell"


def generate(ir: irmod.IR, source_label: str | None = None) -> str:
    """Render the supernet module for a built IR."""
    space = ir.space
    template = environment().get_template(TEMPLATES[space.network.kind])
    return template.render(**_context(ir, source_label or space.path))


def _context(ir: irmod.IR, source_label: str) -> dict:
    space = ir.space
    file = comment_safe(source_label.rsplit("/", 1)[-1])
    names = Namespace(MODULE_GLOBALS | {name for name, _ in space.params})
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
    zero_columns = {i for i, c in enumerate(opset.candidates) if c.is_zero}
    return {
        "name": opset.name,
        # once per set, not per cell: a space may have many cells over one large set
        "active_columns": [
            (i, _activation(c)) for i, c in enumerate(opset.candidates) if i not in zero_columns
        ],
        "const": names.create(opset.name.upper()),
        "steps_const": names.create(opset.name.upper() + "_STEPS"),
        "line": opset.line,
        "file": comment_safe(opset.source.rsplit("/", 1)[-1]),
        "candidates": [
            {"name": c.name, "steps": _steps_literal(c.steps), "line": c.line}
            for c in opset.candidates
        ],
    }


def _steps_literal(steps: tuple[spec.Step, ...]) -> str:
    """A candidate's steps as a tuple literal, the way ruff formats it."""
    items = [_step_literal(step) for step in steps]
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _step_literal(step: spec.Step) -> str:
    args = {key: getattr(value, "value", value) for key, value in step.args}
    return f"({py_literal(step.primitive)}, {py_literal(args)})"


def _cell_view(
    cell: spec.Cell, graph: nx.DiGraph, space: spec.Space, names: Namespace, consts: dict[str, dict]
) -> dict:
    opset = space.opset(cell.opset)
    local = Namespace(MODULE_GLOBALS | FUNCTION_LOCALS)
    fixed_numbers = itertools.count()
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
                        "attr": f"fixed_{next(fixed_numbers)}",
                        "src": var[src],
                        "src_name": src,
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
        "active_columns": consts[opset.name]["active_columns"],
        "reduce": cell.reduce,
        "output": [var[n] for n in cell.output],
        "reduction": cell.reduction,
        "share": cell.share is not None,
        "search_norm": cell.search_norm is not None,
        "rule": rule_fields(cell, space),
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
        view[key] = None if key == "stem" else _setting_view(value)
    if network.kind == "image_classifier":
        view["stems"] = _stems_view(space)
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


def _stems_view(space: spec.Space) -> list[dict]:
    """Each stem: the builder, its input channels (the previous stem's output) and output."""
    from spacec import catalog
    from spacec import ir as irmod

    views, in_channels = [], _setting_view(space.network.get("in_channels"))
    for step in irmod.stems(space):
        args = {k: v.py for k, v in step.args if k != "channels"}
        out = step.kwargs()["channels"].py
        views.append(
            {
                "name": step.primitive,
                "in": in_channels,
                "out": out,
                "args": args,
                "stride": catalog.STEM_STRIDES[step.primitive],
                "reduces": step.primitive in catalog.REDUCING_STEMS,
            }
        )
        in_channels = out
    return views


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


# ---- the discrete (derived) network ----------------------------------------------------------
DISCRETE_TEMPLATES = {
    "image_classifier": "discrete_image.py.j2",
    "language_model": "discrete_sequence.py.j2",
}


def generate_discrete(ir: irmod.IR, genotype, source_label: str | None = None) -> str:
    """Render the standalone derived network for `genotype` (a spacec.arch.genotype.Genotype).

    The genotype must fit the space (spacec.arch.derive.check_genotype); the macro layout is the IR's,
    at the parameters the space was compiled with.
    """
    space = ir.space
    if space.network.kind not in DISCRETE_TEMPLATES:
        raise GenotypeError(f"no discrete-network generator for a {space.network.kind} yet")
    problems = check_genotype(genotype, cell_rules(space))
    if problems:
        raise GenotypeError(
            f"the genotype does not fit space '{space.name}':\n  " + "\n  ".join(problems)
        )
    template = environment().get_template(DISCRETE_TEMPLATES[space.network.kind])
    context = _discrete_context if space.network.kind == "image_classifier" else _recurrent_context
    return template.render(**context(ir, genotype, source_label or space.path))


def _recurrent_context(ir: irmod.IR, genotype, source_label: str) -> dict:
    space = ir.space
    names = Namespace(MODULE_GLOBALS | {"GENOTYPE"} | {name for name, _ in space.params})
    cells = []
    for cell in space.cells:
        chosen = genotype.cell(cell.name)
        opset = space.opset(cell.opset)
        fn_of = {c.name: _activation(c) for c in opset.candidates}
        local = Namespace(MODULE_GLOBALS | FUNCTION_LOCALS)
        var = {name: local.create(name) for name in cell.inputs + cell.nodes}
        searched = {(e.src, e.dst) for e in cell.edges}
        nodes = []
        for node in cell.nodes:
            joint = next((f for f in cell.fixed if f.dst == node and f.joint), None)
            edges = [
                {"src": var[src], "fn": fn_of[op]}
                for op, src, dst in chosen.edges
                if dst == node and (src, dst) in searched
            ]
            nodes.append(
                {
                    "name": var[node],
                    "joint": {"fn": dict(joint.steps[0].args)["fn"]} if joint else None,
                    "edges": edges,
                }
            )
        cells.append(
            {
                "name": cell.name,
                "cls": names.create(class_name(cell.name)),
                "line": cell.line,
                "inputs": [var[n] for n in cell.inputs],
                "nodes": nodes,
                "reduce": cell.reduce,
                "output": [var[n] for n in cell.output],
            }
        )
    network = _network_view(space)
    step_cls = next(c["cls"] for c in cells if c["name"] == network["step"])
    return {
        "version": __version__,
        "source": source_label,
        "file": comment_safe(source_label.rsplit("/", 1)[-1]),
        "sha256": space.sha256,
        "space": space,
        "params": list(space.params),
        "network_params": _network_params(space),
        "genotype_literal": py_literal(json.dumps(genotype.to_dict(), separators=(", ", ": "))),
        "cells": cells,
        "network": network,
        "step_cls": step_cls,
    }


def _call(primitive: str, args: dict, *positional) -> str:
    pieces = [str(p) for p in positional] + [f"{k}={py_literal(v)}" for k, v in args.items()]
    return f"{primitive}({', '.join(pieces)})"


def _op_build(steps, stride: int, used: set[str]) -> str:
    """Source that builds one derived edge's op at width C."""
    calls = []
    for index, step in enumerate(steps):
        primitive, args = step
        used.add(primitive)
        step_stride = stride if index == 0 else 1
        if primitive == "zero":
            calls.append(f"Zero(C, C, {step_stride})")
        else:
            calls.append(_call(primitive, dict(args), "C", "C", step_stride, True))
    return calls[0] if len(calls) == 1 else f"nn.Sequential({', '.join(calls)})"


def _discrete_context(ir: irmod.IR, genotype, source_label: str) -> dict:
    space = ir.space
    used: set[str] = set()
    names = Namespace(
        MODULE_GLOBALS
        | {
            "GENOTYPE",
            "Zero",
            "FactorizedReduce",
            "cell_input",
            "drop_path",
            "AuxiliaryHead",
            "ResNetBasicBlock",
        }
        | set(catalog_primitives())
    )
    cells = [
        _discrete_cell_view(
            space.cell(c.name), ir.cells[c.name], genotype.cell(c.name), space, names, used
        )
        for c in space.cells
    ]
    classes = {view["name"]: view["cls"] for view in cells}
    network = space.network
    body, body_inputs = [], []
    for item in ir.layout:
        if hasattr(item, "C"):
            inputs = tuple((s.channels, s.behind) for s in item.inputs)
            body.append(
                {"index": item.index, "build": f"{classes[item.name]}(inputs={inputs}, C={item.C})"}
            )
            body_inputs.append(len(item.inputs))
        else:
            used.add(item.name)
            if item.name == "res_block":
                used.add("relu_conv_bn")
            build = _call(
                item.name, dict(item.args), item.in_channels, item.out_channels, item.stride, True
            )
            body.append({"index": item.index, "build": build})
            body_inputs.append(0)
    stems, in_channels = [], network.get("in_channels").value
    for step in irmod.stems(space):
        from spacec import catalog

        used.add(step.primitive)
        out = step.kwargs()["channels"].value
        args = {k: v.value for k, v in step.args if k != "channels"}
        stems.append(
            _call(
                step.primitive, args, in_channels, out, catalog.STEM_STRIDES[step.primitive], True
            )
        )
        in_channels = out
    final = ir.layout[-1].out_channels if ir.layout else in_channels
    head = network.get("head")
    used.add(head.primitive)
    auxiliary = None
    if network.get("auxiliary") is not None:
        aux = network.get("auxiliary")
        after = aux.kwargs()["after"].value
        used.add(aux.primitive)
        auxiliary = {
            "after": after,
            "build": f"{aux.primitive}({ir.layout[after].out_channels}, "
            f"{aux.kwargs()['classes'].value})",
        }
    preprocess, reduce_input = network.get("preprocess"), network.get("reduce_input")
    used |= {preprocess.primitive, reduce_input.primitive}
    pre_args = {k: v.value for k, v in preprocess.args}
    red_args = {k: v.value for k, v in reduce_input.args}
    return {
        "version": __version__,
        "source": source_label,
        "file": comment_safe(source_label.rsplit("/", 1)[-1]),
        "sha256": space.sha256,
        "space": space,
        "params": list(space.params),
        "params_text": ", ".join(f"{k}={v}" for k, v in space.params),
        "genotype_literal": py_literal(json.dumps(genotype.to_dict(), separators=(", ", ": "))),
        "used": used,
        "cells": cells,
        "network": {"line": network.line},
        "stems": stems,
        "body": body,
        "body_inputs": tuple(body_inputs),
        "max_inputs": max([n for n in body_inputs if n] or [1]),
        "auxiliary": auxiliary,
        "head": _call(head.primitive, {}, final, head.kwargs()["classes"].value),
        "preprocess_call": _call(preprocess.primitive, pre_args, "C_in", "C", 1, True),
        "reduce_input_call": _call(reduce_input.primitive, red_args, "C_in", "C", 2, True),
        "preprocess_doc": f"{preprocess.primitive}, or {reduce_input.primitive} when it is a "
        "reduction behind",
    }


def catalog_primitives() -> list[str]:
    from spacec import catalog

    return [
        *catalog.PRIMITIVES,
        *catalog.STEMS,
        *catalog.PREPROCESS,
        *catalog.FIXED_BLOCKS,
        *catalog.HEADS,
        *catalog.AUXILIARY_HEADS,
    ]


def _discrete_cell_view(
    cell: spec.Cell, graph: nx.DiGraph, chosen, space: spec.Space, names: Namespace, used: set[str]
) -> dict:
    opset = space.opset(cell.opset)
    steps_of = {
        c.name: tuple(
            (s.primitive, {k: getattr(v, "value", v) for k, v in s.args}) for s in c.steps
        )
        for c in opset.candidates
    }
    local = Namespace(MODULE_GLOBALS | FUNCTION_LOCALS | {"drop_prob"})
    var = {name: local.create(name) for name in cell.inputs + cell.nodes}
    edges, terms = [], {node: [] for node in cell.nodes}
    fixed_numbers = itertools.count()
    for fixed in cell.fixed:
        for src in fixed.sources:
            attr = f"fixed_{next(fixed_numbers)}"
            steps = tuple(
                (s.primitive, {k: getattr(v, "value", v) for k, v in s.args}) for s in fixed.steps
            )
            edges.append(
                {
                    "attr": attr,
                    "build": _op_build(steps, fixed.stride, used),
                    "op": " >> ".join(s[0] for s in steps),
                    "src_name": src,
                    "dst_name": fixed.dst,
                }
            )
            terms[fixed.dst].append(f"self.{attr}({var[src]})")
    for number, (op, src, dst) in enumerate(
        e
        for e in chosen.edges
        if e[1:] in graph.edges and graph.edges[e[1], e[2]]["kind"] == "searched"
    ):
        stride = graph.edges[src, dst]["stride"]
        attr = f"edge_{number}"
        edges.append(
            {
                "attr": attr,
                "build": _op_build(steps_of[op], stride, used),
                "op": op,
                "src_name": src,
                "dst_name": dst,
            }
        )
        plain_identity = steps_of[op] == (("identity", {}),) and stride == 1
        call = f"self.{attr}({var[src]})"
        terms[dst].append(call if plain_identity else f"self.drop({call}, drop_prob)")
    return {
        "name": cell.name,
        "cls": names.create(class_name(cell.name)),
        "line": cell.line,
        "inputs": [var[n] for n in cell.inputs],
        "edges": edges,
        "nodes": [{"name": var[n], "terms": terms[n] or ["0"]} for n in cell.nodes],
        "reduce": cell.reduce,
        "output": [var[n] for n in cell.output],
    }
