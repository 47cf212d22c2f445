"""A checked space's derivation rules: one `CellRule` per cell type (pure, torch-free)."""

from __future__ import annotations

from spacec import spec
from spacec.arch.derive import CellRule


def rule_fields(cell: spec.Cell, space: spec.Space) -> dict:
    """The fields of `cell`'s CellRule (also written as a literal into generated supernets)."""
    rule = cell.rule
    return {
        "inputs": cell.inputs,
        "nodes": cell.nodes,
        "edges": tuple((e.src, e.dst) for e in cell.edges),
        "ops": space.opset(cell.opset).names,
        "kind": rule.kind,
        "k": rule.k,
        "exclude": frozenset(rule.exclude),
        "limits": rule.limits,
        "output": cell.output,
        "reduce": cell.reduce,
        "fixed": tuple((f.steps[0].primitive, src, f.dst) for f in cell.fixed for src in f.sources),
    }


def cell_rules(space: spec.Space) -> dict[str, CellRule]:
    """Cell type -> its derivation rule, in the space's cell order."""
    return {cell.name: CellRule(**rule_fields(cell, space)) for cell in space.cells}
