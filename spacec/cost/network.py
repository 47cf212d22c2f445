"""One forward pass of a compiled network, traced: the supernet or a derived network.

Each walk mirrors the module the compiler generates (spacec/templates/supernet_*.py.j2,
discrete_*.py.j2) step for step: the stems, the body of the planned layout (`ir.layout`) with
each cell's inputs brought to its width and resolution, its nodes summing their edges, its output
concatenated (or averaged); the fixed blocks; the head; the loss. Cells repeat at the same sizes,
so a cell is traced once per (type, width, input sizes) and replayed (`Tracer.call`).

Every walk can log the shape of what it passes (`Record`), and reports a size torch would refuse
as a `PlacedError`: the `ShapeError` and where in the network it happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx

from spacec import catalog
from spacec import ir as irmod
from spacec.arch import layout
from spacec.arch.derive import TOPK
from spacec.arch.genotype import Genotype
from spacec.cost.methods import Method, ends_in_norm, heaviest_kept, weighted_candidate
from spacec.cost.programs import (
    DERIVED_PROGRAMS,
    SUPERNET_PROGRAMS,
    Step,
    run_chain,
    run_step,
    step_of,
    supernet_candidate,
)
from spacec.cost.tracer import FLOAT, INDEX, ShapeError, Sym, Tracer

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Record:
    """The shapes (per sample) around one piece of an image network."""

    where: str  # "stem", "body", "head" or "auxiliary"
    index: int  # the stem's number, or the body position
    kind: str  # "stem", "cell", "block", "head" or "auxiliary"
    name: str  # the block or cell type
    inputs: tuple[Shape, ...]  # cells: each input after preprocessing; else the block's input
    nodes: tuple[Shape, ...]  # cells: each intermediate node
    output: Shape


class PlacedError(Exception):
    """A `ShapeError` at a place of the network: the first piece whose sizes do not work."""

    def __init__(self, error: ShapeError, where: str, index: int, kind: str, name: str,
                 size: Shape):
        super().__init__(error.message)
        self.error = error
        self.where = where
        self.index = index
        self.kind = kind
        self.name = name
        self.size = size  # the per-sample shape entering the piece


def _per_sample(x: Sym) -> Shape:
    return x.shape[1:]


class _ImageWalk:
    """Shared by the supernet and derived-network walks: stems, body loop, head and loss."""

    def __init__(self, ir: irmod.IR, t: Tracer, batch: int, records: list[Record] | None):
        self.ir = ir
        self.space = ir.space
        self.network = ir.space.network
        self.t = t
        self.batch = batch
        self.records = records
        self.max_inputs = max(len(cell.inputs) for cell in self.space.cells)

    def record(self, *fields) -> None:
        if self.records is not None:
            self.records.append(Record(*fields))

    def input(self) -> Sym:
        size = self.network.get("image_size").value
        channels = self.network.get("in_channels").value
        return self.t.tensor((self.batch, channels, size, size))

    def stems(self, x: Sym) -> list[Sym]:
        t = self.t
        t.scope = "stems"
        x = t.copy(x)  # x.contiguous(memory_format=torch.channels_last)
        states, in_channels = [], self.network.get("in_channels").value
        for number, spec_step in enumerate(irmod.stems(self.space)):
            name, args = step_of(spec_step)
            kwargs = {k: v for k, v in args if k != "channels"}
            out = dict(args)["channels"]
            stride = catalog.STEM_STRIDES[name]
            program = catalog.COSTS[name]
            entering = x
            x = self.placed(
                lambda x=x, c=in_channels, o=out, s=stride, p=program, k=kwargs: p(
                    self.t, x, c, o, s, True, **k
                ),
                ("stem", number, "stem", name, entering),
            )
            self.record("stem", number, "stem", name, (_per_sample(entering),), (), _per_sample(x))
            states.append(x)
            in_channels = out
        return states

    def body(self, states: list[Sym]) -> list[Sym]:
        t = self.t
        for item in self.ir.layout:
            t.scope = f"body {item.index}"
            if isinstance(item, layout.PlannedBlock):
                entering = states[-1]
                out = self.placed(
                    lambda item=item, x=entering: catalog.COSTS[item.name](
                        self.t, x, item.in_channels, item.out_channels, item.stride, True,
                        **dict(item.args),
                    ),
                    ("body", item.index, "block", item.name, entering),
                )
                self.record(
                    "body", item.index, "block", item.name, (_per_sample(entering),), (),
                    _per_sample(out),
                )
                states = [out]
                self.after(item.index, states)
                continue
            n_inputs = len(self.space.cell(item.name).inputs)
            first = len(states) - n_inputs
            inputs = [states[max(0, first + i)] for i in range(n_inputs)]
            outputs = self.placed(
                lambda item=item, inputs=inputs: self.cell(item, inputs),
                ("body", item.index, "cell", item.name, inputs[-1]),
            )
            out, prepared, nodes = outputs[0], outputs[1 : 1 + n_inputs], outputs[1 + n_inputs :]
            self.record(
                "body", item.index, "cell", item.name, tuple(map(_per_sample, prepared)),
                tuple(map(_per_sample, nodes)), _per_sample(out),
            )
            states = [*states, out][-self.max_inputs :]
            self.after(item.index, states)
        return states

    def after(self, index: int, states: list[Sym]) -> None:
        """Called after each body item (the derived network taps its auxiliary head here)."""

    def head(self, states: list[Sym]) -> Sym:
        t = self.t
        t.scope = "head"
        head = self.network.get("head")
        name, args = step_of(head)
        entering = states[-1]
        logits = self.placed(
            lambda: catalog.COSTS[name](
                self.t, entering, entering.shape[1], dict(args)["classes"], 1, True
            ),
            ("head", 0, "head", name, entering),
        )
        self.record("head", 0, "head", name, (_per_sample(entering),), (), _per_sample(logits))
        return logits

    def loss(self, logits: Sym) -> None:
        """F.cross_entropy: log_softmax keeps its output, nll_loss a scalar total weight."""
        t = self.t
        t.scope = "loss"
        if logits.grad:
            t.save(t.tensor(logits.shape), t.tensor((), itemsize=4))

    def placed(self, compute, where: tuple):
        try:
            return compute()
        except ShapeError as error:
            label, index, kind, name, entering = where
            raise PlacedError(error, label, index, kind, name, _per_sample(entering)) from None

    # -- a cell ----------------------------------------------------------------------------------
    def cell(self, item: layout.PlannedCell, inputs: Sequence[Sym]) -> tuple[Sym, ...]:
        raise NotImplementedError

    def prepare(self, t: Tracer, item: layout.PlannedCell, x: Sym, number: int, affine: bool
                ) -> Sym:
        """Cell input `number` brought to the cell's width and resolution (DARTS preprocess0/1)."""
        source = item.inputs[number]
        setting = "reduce_input" if source.behind else "preprocess"
        step = step_of(self.network.get(setting))
        try:
            return run_step(t, x, step, source.channels, item.C, 1 + source.behind, affine)
        except ShapeError as error:
            cell = self.space.cell(item.name)
            error.context.append(f"{setting} {step[0]} of input {cell.inputs[number]}")
            raise

    @staticmethod
    def reduce(t: Tracer, cell, values: dict[str, Sym]) -> Sym:
        outputs = [values[name] for name in cell.output]
        if cell.reduce == "concat":
            return t.cat(outputs)
        if cell.reduce == "mean":
            return t.stack_mean(outputs)
        return outputs[0]


def _sum(t: Tracer, terms: Sequence[Sym]) -> Sym:
    out = terms[0]
    for term in terms[1:]:
        out = t.add(out, term)
    return out


def _lone_pool(steps) -> bool:
    # A lone average pooling sets the flag too; the tracer's average pooling ignores it.
    return len(steps) == 1 and steps[0][0] in catalog.NORM_IN_SUPERNET


def _balanced_term(t: Tracer, x: Sym, steps, C: int, stride: int, input_relu: bool,
                   weight: Sym) -> Sym:
    """`MixedEdge.weighted` under `balanced`: a candidate ending in a norm keeps neither a
    lone max pooling's output and indices (memory.pooled_lean) nor its depthwise convolutions'
    outputs and polyphase stacks (memory.convolved_lean) nor its ReLUs' outputs after a
    BatchNorm (memory.norm_relu_before): they are made again in backward."""
    if not ends_in_norm(steps):
        return weighted_candidate(t, x, steps, C, stride, input_relu, weight)
    flag = "remake_pooling" if _lone_pool(steps) else "remake_depthwise"
    setattr(t, flag, True)
    try:
        return weighted_candidate(t, x, steps, C, stride, input_relu, weight)
    finally:
        setattr(t, flag, False)


_balanced_term.remakes_shared_relu = True  # type: ignore[attr-defined]  (methods.darts_mix)


# What a memory setting recomputes (memory.MEMORY_SETTINGS `recompute`) -> one term of a mixed
# edge; "edge" runs the terms plainly inside a recomputed edge (SupernetWalk._edge).
RECOMPUTED_CANDIDATES = {
    "": weighted_candidate,
    "depthwise": _balanced_term,
    "edge": weighted_candidate,
}


def _fixed_steps(data: dict) -> tuple[Step, ...]:
    return tuple(step_of(step) for step in data["steps"])


class SupernetWalk(_ImageWalk):
    """The generated supernet (supernet_image.py.j2) with a search method's mixed edges."""

    def __init__(self, ir, t, batch, method: Method, alpha_grad: bool, records=None,
                 build: bool = False, recompute: str = ""):
        super().__init__(ir, t, batch, records)
        self.method = method
        self.alpha_grad = alpha_grad
        # build: visit every module the method's edges hold (to count parameters)
        self.build = build
        # recompute: what of a mixed edge the backward pass recomputes instead of keeping
        self.recompute = recompute
        self.run = RECOMPUTED_CANDIDATES[recompute]
        # Each cell's candidates as steps, made once per operation set: a large space has
        # thousands of cells over a few sets (and `check_shapes` walks every compiled space).
        steps = {
            name: tuple(tuple(step_of(s) for s in c.steps) for c in self.space.opset(name).candidates)
            for name in {cell.opset for cell in self.space.cells}
        }
        self.candidates = {cell.name: steps[cell.opset] for cell in self.space.cells}

    def forward(self) -> Sym:
        t = self.t
        t.scope = "architecture"
        # arch_weights(): the softmax of every cell type's α, which keeps its output.
        self.weights = {}
        for cell in self.space.cells:
            shape = (len(cell.edges),
                     len(self.space.opset(cell.opset).candidates) + self.method.extra_columns)
            weights = t.tensor(shape, self.alpha_grad)
            if weights.grad:
                t.save(weights)
            self.weights[cell.name] = weights
        states = self.body(self.stems(self.input()))
        logits = self.head(states)
        self.loss(logits)
        return logits

    def cell(self, item: layout.PlannedCell, inputs: Sequence[Sym]) -> tuple[Sym, ...]:
        key = ("supernet cell", item.name, self.method, self.build, self.recompute, item.C,
               item.inputs)
        return self.t.call(key, self._cell_program(item), *inputs, self.weights[item.name])

    def _cell_program(self, item: layout.PlannedCell):
        cell = self.space.cell(item.name)
        graph = self.ir.cells[item.name]
        candidates = self.candidates[item.name]
        names = self.space.opset(cell.opset).names

        def program(t: Tracer, *xs: Sym) -> tuple[Sym, ...]:
            inputs, weights = xs[:-1], xs[-1]
            values = {
                name: self.prepare(t, item, x, number, affine=False)
                for number, (name, x) in enumerate(zip(cell.inputs, inputs, strict=True))
            }
            prepared = [values[name] for name in cell.inputs]
            for node in cell.nodes:
                incoming = irmod.incoming(graph, node)
                terms = []
                for src, data in incoming:
                    if data["kind"] == "fixed" and not data["joint"]:
                        terms.append(self._fixed(t, values[src], data, item.C, src, node))
                searched = [(src, data) for src, data in incoming if data["kind"] == "searched"]
                for src, data in self._running(t, cell, searched, values, candidates, item.C):
                    row = t.view(weights, (weights.shape[1],))
                    terms.append(
                        self._edge(t, values[src], row, candidates, names, item.C,
                                   data["stride"], src, node)
                    )
                values[node] = _sum(t, terms)
            out = self.reduce(t, cell, values)
            return (out, *prepared, *(values[node] for node in cell.nodes))

        return program

    def _running(self, t, cell, searched, values, candidates, C):
        """The searched edges into a node that run: all of them, or for a method that trains
        one sampled architecture (random_ws) the k a top-k rule keeps, the heaviest k."""
        if not self.method.runs_a_path or self.build or cell.rule.kind != TOPK:
            return searched
        if len(searched) <= cell.rule.k:
            return searched

        def cost(edge) -> int:
            src, data = edge
            return heaviest_kept(candidates, values[src], C, data["stride"], t.weights_grad)

        chosen = sorted(searched, key=cost, reverse=True)[:cell.rule.k]
        return [edge for edge in searched if edge in chosen]

    @staticmethod
    def _fixed(t, x, data, C, src, node) -> Sym:
        try:
            return run_chain(t, x, _fixed_steps(data), C, C, data["stride"], False,
                             overrides=SUPERNET_PROGRAMS)
        except ShapeError as error:
            error.context.append(f"fixed edge {src} -> {node}")
            raise

    def _edge(self, t, x, row, candidates, names, C, stride, src, node) -> Sym:
        key = ("edge", self.method, self.build, self.recompute, candidates, C, stride)
        call = t.recompute if self.recompute == "edge" else t.call
        try:
            return call(key, lambda t, x, w: self.method.edge(t, x, w, candidates, C, stride,
                                                              self.run, self.build), x, row)
        except ShapeError as error:
            error.context.append(f"edge {src} -> {node}")
            for name, steps in zip(names, candidates, strict=True):
                try:  # name the first candidate that fails alone
                    supernet_candidate(Tracer(), Tracer().tensor(x.shape), steps, C, stride, True)
                except ShapeError:
                    error.context.insert(0, f"candidate {name}")
                    break
            raise


class DerivedWalk(_ImageWalk):
    """The standalone derived network (discrete_image.py.j2) of a genotype, in training mode."""

    def __init__(self, ir, t, batch, genotype: Genotype, auxiliary: bool, drop_path: bool,
                 records=None):
        super().__init__(ir, t, batch, records)
        self.genotype = genotype
        self.auxiliary = auxiliary and self.network.get("auxiliary") is not None
        self.drop_path = drop_path
        self.steps = {
            cell.name: {
                c.name: tuple(step_of(s) for s in c.steps)
                for c in self.space.opset(cell.opset).candidates
            }
            for cell in self.space.cells
        }
        self.auxiliary_logits: Sym | None = None

    def forward(self) -> Sym:
        states = self.body(self.stems(self.input()))
        logits = self.head(states)
        self.loss(logits)
        if self.auxiliary_logits is not None:
            self.loss(self.auxiliary_logits)
        return logits

    def after(self, index: int, states: list[Sym]) -> None:
        aux = self.network.get("auxiliary")
        if not self.auxiliary or aux.kwargs()["after"].value != index:
            return
        t = self.t
        t.scope = "auxiliary"
        name, args = step_of(aux)
        entering = states[-1]
        self.auxiliary_logits = self.placed(
            lambda: catalog.COSTS[name](
                self.t, entering, entering.shape[1], dict(args)["classes"], 1, True
            ),
            ("auxiliary", index, "auxiliary", name, entering),
        )
        self.record(
            "auxiliary", index, "auxiliary", name, (_per_sample(entering),), (),
            _per_sample(self.auxiliary_logits),
        )

    def cell(self, item: layout.PlannedCell, inputs: Sequence[Sym]) -> tuple[Sym, ...]:
        chosen = self.genotype.cell(item.name)
        key = ("derived cell", item.name, chosen.edges, self.drop_path, item.C, item.inputs)
        return self.t.call(key, self._cell_program(item, chosen.edges), *inputs)

    def _cell_program(self, item: layout.PlannedCell, chosen):
        cell = self.space.cell(item.name)
        graph = self.ir.cells[item.name]
        steps_of = self.steps[item.name]

        def program(t: Tracer, *inputs: Sym) -> tuple[Sym, ...]:
            values = {
                name: self.prepare(t, item, x, number, affine=True)
                for number, (name, x) in enumerate(zip(cell.inputs, inputs, strict=True))
            }
            prepared = [values[name] for name in cell.inputs]
            for node in cell.nodes:  # each node's terms: fixed edges, then the chosen ones
                terms = []
                for fixed in cell.fixed:
                    if fixed.dst != node:
                        continue
                    steps = tuple(step_of(s) for s in fixed.steps)
                    for src in fixed.sources:
                        terms.append(self._op(t, values[src], steps, item.C, fixed.stride, src,
                                              node))
                for op, src, dst in chosen:
                    if dst != node or not _searched(graph, src, dst):
                        continue
                    stride = graph.edges[src, dst]["stride"]
                    steps = steps_of[op]
                    out = self._op(t, values[src], steps, item.C, stride, src, dst)
                    plain_identity = steps == (("identity", ()),) and stride == 1
                    if self.drop_path and not plain_identity:
                        # drop_path: x / keep * mask, the mask [N, 1, 1, 1] kept for backward
                        out = t.mul(t.scale(out), t.tensor((out.shape[0], 1, 1, 1)))
                    terms.append(out)
                if not terms:
                    raise ShapeError(f"derived node {node} has no incoming edge")
                values[node] = _sum(t, terms)
            out = self.reduce(t, cell, values)
            return (out, *prepared, *(values[node] for node in cell.nodes))

        return program

    @staticmethod
    def _op(t, x, steps, C, stride, src, dst) -> Sym:
        try:
            return run_chain(t, x, steps, C, C, stride, True, overrides=DERIVED_PROGRAMS)
        except ShapeError as error:
            error.context.append(f"edge {src} -> {dst}")
            raise


# ---- recurrent language models ---------------------------------------------------------------
class RecurrentWalk:
    """The DARTS language model (runtime/nn/recurrent.py `RecurrentLM`) over `steps` tokens.

    `genotype` None: the supernet (supernet_sequence.py.j2), every node reading all earlier
    states through its one map and mixing the activations with softmax(α) weights, BatchNorm on
    every node; else the derived cell (discrete_sequence.py.j2), one map call per chosen edge.
    The masks are drawn as in training (dropouts on); `regularise` adds the w step's TAR term.
    """

    def __init__(self, ir: irmod.IR, t: Tracer, batch: int, steps: int, alpha_grad: bool,
                 genotype: Genotype | None = None, regularise: bool = False):
        self.ir = ir
        self.space = ir.space
        self.t = t
        self.batch = batch
        self.steps = steps
        self.alpha_grad = alpha_grad
        self.genotype = genotype
        self.regularise = regularise
        network = ir.space.network
        self.ntoken = network.get("tokens").value
        self.ninp = network.get("embedding").value
        self.nhid = network.get("hidden").value
        self.tied = network.get("decoder") == "tied"
        self.cell = ir.space.cell(network.get("step"))

    def forward(self) -> Sym:
        t, batch = self.t, self.batch
        t.parameters += self.ntoken * self.ninp  # the embedding
        t.scope = "embedding"
        # F.embedding keeps the word ids it looked up: data, counted as such, not here.
        emb = t.tensor((self.steps, batch, self.ninp), t.weights_grad)
        emb = t.mul(emb, t.tensor((1, batch, self.ninp)))  # locked dropout on the embedding
        x_mask = t.tensor((batch, self.ninp))
        h_mask = t.tensor((batch, self.nhid))
        weights = None
        if self.genotype is None:
            t.scope = "architecture"
            weights = t.tensor((len(self.cell.edges), len(self.space.opset(self.cell.opset).names)),
                               self.alpha_grad)
            if weights.grad:
                t.save(weights)
        buffers = t.buffers
        hidden = t.tensor((batch, self.nhid))
        outputs = []
        for step in range(self.steps):
            t.scope = f"step {step}"
            x_t = t.view(emb, (batch, self.ninp))
            hidden = self.cell_step(x_t, hidden, x_mask, h_mask, weights)
            outputs.append(hidden)
        # One NodeNorm serves every node at every step: its buffers exist once.
        norm = self.genotype is None and self.cell.search_norm is not None
        t.buffers = buffers + (2 * self.nhid * FLOAT + INDEX if norm else 0)
        t.scope = "decoder"
        raw = t.stack(outputs)
        dropped = t.mul(raw, t.tensor((1, batch, self.nhid)))
        flat = t.view(dropped, (self.steps * batch, self.nhid))
        loss = t.decoded_nll(flat, self.ntoken)  # the targets it reads are data
        if self.tied:
            t.parameters -= self.nhid * self.ntoken  # the decoder's weight is the embedding
        if self.regularise and raw.grad:
            # TAR: (raw[1:] - raw[:-1]).pow(2).mean(), pow keeps its input
            t.save(t.tensor(((self.steps - 1), batch, self.nhid)))
        return loss

    def cell_step(self, x, h, x_mask, h_mask, weights) -> Sym:
        key = ("recurrent cell", self.genotype is None, self.ninp, self.nhid,
               None if self.genotype is None else self.genotype.cell(self.cell.name).edges)
        inputs = (x, h, x_mask, h_mask) + (() if weights is None else (weights,))
        return self.t.call(key, self._cell_program(), *inputs)

    def _cell_program(self):
        cell, nhid, ninp = self.cell, self.nhid, self.ninp
        graph = self.ir.cells[cell.name]
        opset = self.space.opset(cell.opset)
        activations = [
            (column, dict(step_of(c.steps[0])[1]).get("fn", c.steps[0].primitive))
            for column, c in enumerate(opset.candidates)
            if not c.is_zero
        ]
        fn_of = {c.name: dict(step_of(c.steps[0])[1]).get("fn") for c in opset.candidates}
        supernet = self.genotype is None
        chosen = () if supernet else self.genotype.cell(cell.name).edges
        sequence = catalog.SEQUENCE_COSTS

        def program(t: Tracer, x, h, x_mask, h_mask, *rest) -> Sym:
            weights = rest[0] if rest else None
            values = {cell.inputs[0]: x, cell.inputs[1]: h}
            for node in cell.nodes:
                terms = []
                joint = next((f for f in cell.fixed if f.dst == node and f.joint), None)
                if joint is not None:
                    fn = dict(step_of(joint.steps[0])[1])["fn"]
                    terms.append(sequence["highway_init"](
                        t, x, h, x_mask, h_mask, ninp, nhid, fn=fn))
                if supernet:
                    sources = [src for src, d in irmod.incoming(graph, node)
                               if d["kind"] == "searched"]
                    if sources:
                        terms.append(self._mix(t, [values[s] for s in sources], h_mask,
                                               weights, len(sources), activations))
                else:
                    for op, src, dst in chosen:
                        if dst != node or not _searched(graph, src, dst):
                            continue
                        c, hh = sequence["highway"](t, values[src], h_mask, nhid)
                        terms.append(sequence["activation"](t, values[src], c, hh, fn=fn_of[op]))
                value = _sum(t, terms)
                if supernet and cell.search_norm is not None:
                    value = sequence["batch_norm"](t, value, nhid)
                values[node] = value
            outputs = [values[name] for name in cell.output]
            if cell.reduce == "mean":
                return t.stack_mean(outputs)
            if cell.reduce == "concat":
                return t.cat(outputs, dim=-1)
            return outputs[0]

        return program

    def _mix(self, t: Tracer, sources, h_mask, weights, n, activations) -> Sym:
        """A supernet node: stack its sources, one map, then the mix of the activations as the
        runtime's one autograd node computes it (spacec.runtime.nn.recurrent.HighwayMix): it keeps
        the states, c, h, the node's op weights [n, K], the K activations of h [n, K, B, nhid]
        and the gate's gap A - W s [n, B, nhid]; nothing else of the mix is recorded."""
        states = t.stack(sources)
        c, h = catalog.SEQUENCE_COSTS["highway"](t, states, h_mask, self.nhid)
        grad = states.grad or c.grad or weights.grad
        columns = len(activations)
        index = [column for column, _ in activations]
        consecutive = index == list(range(index[0], index[0] + columns)) if index else True
        # Consecutive columns are a view of the α weights (their storage); others a gather.
        node_weights = weights if consecutive else t.tensor((n, columns))
        acts = t.tensor((n, columns, *states.shape[1:]))
        gap = t.tensor(states.shape)
        if grad:
            t.save(states, c, h, node_weights, acts, gap)
        return t.tensor(states.shape[1:], grad)


def _searched(graph: nx.DiGraph, src: str, dst: str) -> bool:
    return graph.has_edge(src, dst) and graph.edges[src, dst]["kind"] == "searched"
