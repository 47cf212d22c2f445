"""IR -> Python source of a supernet module or of a derived network, through jinja2 templates.

A supernet module imports torch and the `runtime` package; a derived network (a genotype's
discrete network) imports only torch and the standard library: it holds a verbatim copy of the
runtime's definitions of the primitives it uses, which this module reads from the runtime's
source files as text (never importing the runtime). Generated code names nothing that came from
a .space file except validated identifiers (checked in `spacec.check`) and string literals
written with `repr`, carries a header with the source path, its sha256 and the spacec version,
and marks lines with `# file.space:LINE`. Same IR and parameters -> same bytes.
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import itertools
import json
import keyword
import re
import sys
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import networkx as nx

from spacec import __version__, spec
from spacec import ir as irmod
from spacec.arch.derive import check_genotype
from spacec.arch.genotype import GenotypeError
from spacec.arch.rules import cell_rules, rule_fields

if TYPE_CHECKING:
    import jinja2

TEMPLATES = {
    "image_classifier": "supernet_image.py.j2",
    "language_model": "supernet_sequence.py.j2",
}


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    import jinja2  # here: `spacec check` and the runtime's imports need no templates

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
    env.filters["op_assignment"] = op_assignment
    env.filters["docstring"] = docstring
    env.filters["comment_lines"] = comment_lines
    env.filters["py_string_lines"] = py_string_lines
    return env


# Generated lines fit in the project's line length, as hand-written code does (pyproject.toml's
# ruff line-length; tests/test_codegen.py runs ruff over every shipped space's modules).
WIDTH = 100


def docstring(text: str, indent: int = 0, width: int = WIDTH) -> str:
    """The text as a docstring: one line when it fits the width, else its words wrapped, with
    the closing quotes on a line of their own. The first line is not indented (the template
    places it)."""
    pad = " " * indent
    if indent + len(text) + 6 <= width:
        return f'"""{text}"""'
    # Wrapped short of the closing quotes' width: at least two lines (ruff format joins a
    # lone line with its quotes).
    lines = textwrap.wrap(text, width - indent - 3, initial_indent='"""', break_long_words=False,
                          break_on_hyphens=False)
    return "\n".join([lines[0], *(pad + line for line in lines[1:]), pad + '"""'])


def comment_lines(text: str, width: int = WIDTH) -> str:
    """`# text` at the left margin, wrapped to the width (continuations indented)."""
    return "\n".join(textwrap.wrap(text, width, initial_indent="# ", subsequent_indent="#   ",
                                    break_long_words=False, break_on_hyphens=False))


def py_string_lines(text: str, indent: int, before: str = "", width: int = WIDTH) -> str:
    """A string literal that follows `before` on its line; when too long, a parenthesised run
    of literals split after ", ", each line within the width (as one writes it by hand)."""
    if len(before) + len(py_literal(text)) <= width:
        return py_literal(text)
    parts = [part + ", " for part in text.split(", ")]
    parts[-1] = parts[-1].removesuffix(", ")
    pieces = [""]
    for part in parts:
        if pieces[-1] and indent + len(py_literal(pieces[-1] + part)) > width:
            pieces.append("")
        pieces[-1] += part
    pad = " " * indent
    return "(\n" + "\n".join(pad + py_literal(piece) for piece in pieces) + "\n)"


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
        "relaxation_of",
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
FUNCTION_LOCALS = frozenset(
    {"self", "weights", "x_mask", "h_mask", "C", "mixed", "plan", "super", "relaxation"}
)


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
    cells = [_cell_view(space.cell(name), ir.cells[name], space, names, consts)
             for name in ir.cells]
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
        "cells": cells,
        "network": _network_view(space),
        # ops.build_op builds the fixed edges: without any, the module does not import ops
        "fixed_ops": any(node["fixed"] for cell in cells for node in cell["nodes"]),
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


# ---- definitions copied from the runtime ---------------------------------------------------------
# The standalone derived network holds a verbatim copy of the runtime's definitions of what it
# uses (one definition per primitive: see runtime/nn/ops.py for the rules a definition follows).
# The compiler reads them as text and never imports the runtime: compiling needs no torch.
# The files, in spacec.runtime's folder; copies keep this order, and each file's own order.
DEFINITION_FILES = ("nn/layout.py", "nn/ops.py", "nn/blocks.py", "nn/recurrent.py")
DEFINITION_MODULES = frozenset(
    "spacec.runtime." + path.removesuffix(".py").replace("/", ".") for path in DEFINITION_FILES
)
STANDALONE_PACKAGES = ("torch",)  # what copied code may import besides the standard library


class DefinitionError(RuntimeError):
    """The runtime's definitions break a rule of copying (a bug in the runtime, not in a space)."""


@dataclass(frozen=True)
class Definition:
    """A top-level class, function or constant of a definitions file."""

    name: str
    order: int  # position in the files' order; copies keep it, so a name is defined before use
    source: str  # its lines as written, with the comment lines right above, without decorators
    needs: frozenset[str]  # every name it loads (locals too: only top-level names matter)
    file: str  # one of DEFINITION_FILES
    line: int  # of the statement (a def's or class's own line, below its decorators)
    lines: tuple[int, int]  # first (its comments included) and last line of `source` in the file
    is_constant: bool  # an assignment, not a def or class

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class ImportedName:
    """A name a definitions file binds by an import statement."""

    name: str
    module: str
    member: str | None  # None: `import module [as name]`
    alias: str | None

    @property
    def standalone(self) -> bool:
        """Whether a module that imports only torch and the standard library may import it."""
        top = self.module.split(".")[0]
        return top in STANDALONE_PACKAGES or top in sys.stdlib_module_names


@dataclass(frozen=True)
class DefinitionIndex:
    definitions: Mapping[str, Definition]
    imports: Mapping[str, ImportedName]

    def names(self) -> frozenset[str]:
        return frozenset(self.definitions) | frozenset(self.imports)


@dataclass(frozen=True)
class StandaloneCode:
    """What a standalone module needs: its import lines and the copied definitions, in order."""

    imports: str
    definitions: tuple[str, ...]
    names: tuple[str, ...]  # the copied definitions' names, in the same order


def runtime_folder() -> Path:
    """The folder of the installed spacec.runtime package, found without importing it."""
    found = importlib.util.find_spec("spacec.runtime")
    if found is None or not found.submodule_search_locations:
        raise DefinitionError("cannot find the spacec.runtime package")
    return Path(next(iter(found.submodule_search_locations)))


def definition_index() -> DefinitionIndex:
    """Every top-level definition and import of the runtime's definitions files (parsed once)."""
    return index_definitions(runtime_folder())


@lru_cache(maxsize=4)
def index_definitions(folder: Path) -> DefinitionIndex:
    """Every top-level definition and import of the DEFINITION_FILES under `folder`."""
    definitions: dict[str, Definition] = {}
    imports: dict[str, ImportedName] = {}
    for relative in DEFINITION_FILES:
        text = (folder / relative).read_text(encoding="utf-8")
        for node in ast.parse(text, filename=relative).body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                for entry in _imported_names(node, relative):
                    if entry.module in DEFINITION_MODULES:
                        continue  # a definition of another file: copied, not imported
                    known = imports.setdefault(entry.name, entry)
                    if known != entry:
                        raise DefinitionError(
                            f"{relative}: {entry.name} is imported twice, "
                            f"differently ({known.module}, {entry.module})"
                        )
                continue
            for name in _defined_names(node):
                if name in definitions:
                    raise DefinitionError(
                        f"{relative}:{node.lineno}: {name} is already defined "
                        f"at {definitions[name].where}"
                    )
                source = _definition_source(node, text.splitlines())
                definitions[name] = Definition(
                    name=name,
                    order=len(definitions),
                    source=source,
                    needs=_loaded_names(node),
                    file=relative,
                    line=node.lineno,
                    lines=(node.end_lineno - source.count("\n"), node.end_lineno),
                    is_constant=isinstance(node, ast.Assign | ast.AnnAssign),
                )
    clash = set(definitions) & set(imports)
    if clash:
        raise DefinitionError(f"names both defined and imported: {', '.join(sorted(clash))}")
    return DefinitionIndex(definitions, imports)


def _imported_names(node: ast.Import | ast.ImportFrom, relative: str) -> list[ImportedName]:
    if isinstance(node, ast.Import):
        return [
            ImportedName(a.asname or a.name.split(".")[0], a.name, None, a.asname)
            for a in node.names
        ]
    if node.module == "__future__":
        return []
    if node.level or node.module is None:
        raise DefinitionError(f"{relative}:{node.lineno}: relative imports cannot be copied")
    return [ImportedName(a.asname or a.name, node.module, a.name, a.asname) for a in node.names]


def _defined_names(node: ast.stmt) -> list[str]:
    """Names a top-level statement defines; other statements (docstrings, registration calls)
    are not copied."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
        return [t.id for t in node.targets]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
        return [node.target.id]
    return []


def _definition_source(node: ast.stmt, lines: list[str]) -> str:
    """The statement's lines (a def from its `def` line: decorators register, they are not
    copied), with the comment lines directly above it or its decorators."""
    top = min((d.lineno for d in getattr(node, "decorator_list", ())), default=node.lineno)
    first = top
    while first > 1 and lines[first - 2].lstrip().startswith("#"):
        first -= 1
    comments = lines[first - 1 : top - 1]
    return "\n".join(comments + lines[node.lineno - 1 : node.end_lineno])


def _loaded_names(node: ast.stmt) -> frozenset[str]:
    """Names the statement loads, annotations included, decorators (not copied) excluded."""
    decorators = {id(n) for d in getattr(node, "decorator_list", ()) for n in ast.walk(d)}
    return frozenset(
        sub.id
        for sub in ast.walk(node)
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) and id(sub) not in decorators
    )


def standalone_code(roots: Iterable[str], index: DefinitionIndex | None = None) -> StandaloneCode:
    """The definitions named in `roots` and everything they use, with the imports they need.

    `roots` may name imported names too (`torch`, `nn`: what the generated code itself uses).
    Raises DefinitionError if a root is unknown or a copied definition uses a name imported from
    anywhere but torch and the standard library. `index` defaults to the runtime's.
    """
    index = definition_index() if index is None else index
    known = index.names()
    roots = sorted(set(roots))
    unknown = [name for name in roots if name not in known]
    if unknown:
        raise DefinitionError(f"no runtime definition named {', '.join(unknown)}")
    parent: dict[str, str | None] = dict.fromkeys(roots)  # who needs a name (None: a root)
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name not in index.definitions:
            continue
        for need in sorted(index.definitions[name].needs):
            if need in known and need not in parent:
                parent[need] = name
                pending.append(need)
    imported = [index.imports[name] for name in parent if name in index.imports]
    for entry in imported:
        if not entry.standalone:
            chain = [entry.name]
            while parent[chain[-1]] is not None:
                chain.append(parent[chain[-1]])
            users = [f"{n} ({index.definitions[n].where})" for n in reversed(chain[1:])]
            raise DefinitionError(
                f"{' -> '.join(users)} uses {entry.name} from {entry.module}: a definition "
                "copied into a standalone module may use only torch and the standard library"
            )
    copied = sorted(
        (index.definitions[name] for name in parent if name in index.definitions),
        key=lambda d: d.order,
    )
    return StandaloneCode(
        imports=_import_lines(imported),
        definitions=_blocks(copied),
        names=tuple(d.name for d in copied),
    )


def _blocks(copied: list[Definition]) -> tuple[str, ...]:
    """The copied sources, to be separated by two blank lines; constants that were neighbours in
    their file stay together with the blank lines they had (at most one)."""
    blocks: list[str] = []
    previous = None
    for definition in copied:
        gap = definition.lines[0] - previous.lines[1] if previous else 0
        together = (
            previous is not None
            and previous.is_constant
            and definition.is_constant
            and previous.file == definition.file
            and 1 <= gap <= 2
        )
        if together:
            blocks[-1] += "\n" * gap + definition.source
        else:
            blocks.append(definition.source)
        previous = definition
    return tuple(blocks)


def _import_lines(entries: list[ImportedName], width: int = 100) -> str:
    """Import statements for `entries`, grouped and sorted as ruff's isort sorts them: the
    standard library, then torch; in each group `import x` lines, then `from x import ...`."""
    groups = []
    for third_party in (False, True):
        group = [
            e for e in entries if (e.module.split(".")[0] in STANDALONE_PACKAGES) == third_party
        ]
        straight = sorted(
            {(e.module, e.alias) for e in group if e.member is None},
            key=lambda m: (m[0].lower(), m[0], m[1] or ""),
        )
        lines = [
            f"import {module}" + (f" as {alias}" if alias else "") for module, alias in straight
        ]
        members: dict[str, set[str]] = {}
        for e in group:
            if e.member is not None:
                members.setdefault(e.module, set()).add(
                    e.member + (f" as {e.alias}" if e.alias else "")
                )
        for module in sorted(members, key=lambda m: (m.lower(), m)):
            names = sorted(members[module], key=_member_key)
            line = f"from {module} import {', '.join(names)}"
            if len(line) > width:
                line = f"from {module} import (\n" + "".join(f"    {n},\n" for n in names) + ")"
            lines.append(line)
        if lines:
            groups.append("\n".join(lines))
    return "\n\n".join(groups)


def _member_key(member: str) -> tuple[int, str, str]:
    # isort's order-by-type: CONSTANTS, then Classes, then everything else.
    name = member.split(" as ")[0]
    kind = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
    return (kind, name.lower(), name)


# ---- the discrete (derived) network ----------------------------------------------------------
DISCRETE_TEMPLATES = {
    "image_classifier": "discrete_image.py.j2",
    "language_model": "discrete_sequence.py.j2",
}
# Runtime names the templates use besides the primitives (which codegen adds as it meets them).
IMAGE_NETWORK_NEEDS = frozenset({"torch", "nn", "drop_path", "concat_channels"})
SEQUENCE_NETWORK_NEEDS = frozenset({"torch", "nn", "RecurrentLM", "highway_edge"})


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
    names = Namespace(
        MODULE_GLOBALS | {"GENOTYPE"} | definition_index().names() | {n for n, _ in space.params}
    )
    needs = set(SEQUENCE_NETWORK_NEEDS)
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
            needs |= {"HighwayInit"} if joint else set()
            needs |= {"SharedHighway"} if edges else set()
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
        "genotype_json": json.dumps(genotype.to_dict(), separators=(", ", ": ")),
        "cells": cells,
        "network": network,
        "step_cls": step_cls,
        "standalone": standalone_code(needs),
    }


def _call(primitive: str, args: dict, *positional) -> str:
    pieces = [str(p) for p in positional] + [f"{k}={py_literal(v)}" for k, v in args.items()]
    return f"{primitive}({', '.join(pieces)})"


def _op_calls(steps, stride: int, used: set[str]) -> list[str]:
    """Source of the builder calls of one derived edge's op at width C, a call per step."""
    calls = []
    for index, step in enumerate(steps):
        primitive, args = step
        used.add(primitive)
        step_stride = stride if index == 0 else 1
        calls.append(_call(primitive, dict(args), "C", "C", step_stride, True))
    return calls


def op_assignment(
    calls: list[str], target: str, comment: str, indent: int, width: int = 100
) -> str:
    """`target = call  # comment`, or `nn.Sequential(...)` of a chain of calls, laid out as ruff
    formats it: the comment moves above when the line is too long, then the chain wraps."""
    pad = " " * indent
    code = calls[0] if len(calls) == 1 else f"nn.Sequential({', '.join(calls)})"
    line = f"{pad}{target} = {code}"
    if len(line) + len(comment) + 4 <= width:
        return f"{line}  # {comment}"
    above = f"{pad}# {comment}\n"
    if len(line) <= width or len(calls) == 1:
        return above + line
    inner = ", ".join(calls)
    if len(pad) + 4 + len(inner) <= width:
        body = f"{pad}    {inner}\n"
    else:
        body = "".join(f"{pad}    {call},\n" for call in calls)
    return f"{above}{pad}{target} = nn.Sequential(\n{body}{pad})"


def _discrete_context(ir: irmod.IR, genotype, source_label: str) -> dict:
    space = ir.space
    used: set[str] = set()
    names = Namespace(MODULE_GLOBALS | {"GENOTYPE", "cell_input"} | definition_index().names())
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
            "build": _call(
                aux.primitive,
                {},
                ir.layout[after].out_channels,
                aux.kwargs()["classes"].value,
                1,
                True,
            ),
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
        "genotype_json": json.dumps(genotype.to_dict(), separators=(", ", ": ")),
        "standalone": standalone_code(used | IMAGE_NETWORK_NEEDS),
        "cells": cells,
        "network": {"line": network.line},
        "stems": stems,
        "body": body,
        "body_inputs": tuple(body_inputs),
        "max_inputs": max([n for n in body_inputs if n] or [1]),
        "auxiliary": auxiliary,
        "head": _call(head.primitive, {}, final, head.kwargs()["classes"].value, 1, True),
        "preprocess_call": _call(preprocess.primitive, pre_args, "C_in", "C", 1, True),
        "reduce_input_call": _call(reduce_input.primitive, red_args, "C_in", "C", 2, True),
        "preprocess_doc": f"{preprocess.primitive}, or {reduce_input.primitive} when it is a "
        "reduction behind",
    }


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
                    "calls": _op_calls(steps, fixed.stride, used),
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
                "calls": _op_calls(steps_of[op], stride, used),
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
