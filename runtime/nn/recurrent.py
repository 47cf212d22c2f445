"""Building blocks of the DARTS recurrent cell and the language model around it.

Source: Liu, Simonyan & Yang, "DARTS" (ICLR 2019), github.com/quark0/darts: rnn/model.py
(`DARTSCell`, `RNNModel`), rnn/model_search.py (`DARTSCellSearch`) and rnn/utils.py; the
regularisers come from AWD-LSTM (Merity, Keskar & Socher, 2018, github.com/salesforce/awd-lstm-lm:
locked_dropout.py, embed_regularize.py). Every formula below is the reference's, evaluated in the
same order, so a cell built from these blocks reproduces the reference numerically.

The compiler generates the cell topology (which node reads which) as a `RecurrentLM` subclass
whose `cell_step` calls these blocks. A search cell (rnn/model_search.py) reads::

    probs = step_context()                      # softmax(α), once per forward
    s0 = norm(init(x_t, h_prev, x_mask, h_mask))          # HighwayInit, NodeNorm
    states = s0[None]
    for node j (own SharedHighway map_j, α rows `offset : offset + j`):
        c, h = map_j(states, h_mask)            # every earlier state through node j's map
        s_j = norm(mix_edges(states, c, h, probs[rows], columns))
        states = cat([states, s_j[None]])
    h_t = mean(states[-CONCAT:])

The reference search cell has ONE BatchNorm (`self.bn`) applied to s0 and to every node, so its
running statistics mix all of them; generated code reproduces that by sharing one `NodeNorm`.
A derived cell (rnn/model.py) gives each node one input: ``highway_edge(s_i, *map_j(s_i, h_mask),
fn)``, without normalisation.

The derived network imports none of this: the compiler copies the definitions it uses
(`HighwayInit`, `SharedHighway`, `highway_edge`, `RecurrentLM` and what they need) verbatim into
the standalone module, so every definition here follows the rules stated in ops.py (torch and
the standard library only, no spacec name).

Shapes: B batch, T time steps, n states read by a node; `nhid` hidden, `ninp` embedding size.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

# Range of the uniform init of every weight of the cell and of the (tied) embedding:
# rnn/model.py `INITRANGE` (AWD-LSTM uses 0.1 for the embedding; DARTS uses 0.04 throughout).
INITRANGE = 0.04

Activation = Callable[[Tensor], Tensor]


# DARTSCell._get_activation; named functions (not lambdas) so that modules holding them pickle.
def _tanh(x: Tensor) -> Tensor:
    return torch.tanh(x)


def _relu(x: Tensor) -> Tensor:
    return torch.relu(x)


def _sigmoid(x: Tensor) -> Tensor:
    return torch.sigmoid(x)


def _identity(x: Tensor) -> Tensor:
    return x


class UnknownActivation(KeyError):
    """An activation name that is not in the table; the message lists the known ones."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in quotes.
        return f"unknown activation {self.name!r}; known: {', '.join(self.known)}"


class _ActivationTable(Mapping[str, Activation]):
    """Read-only name -> function table, iterated in name order; unknown names list the known."""

    def __init__(self, functions: Mapping[str, Activation]) -> None:
        self._functions = dict(functions)

    def __getitem__(self, name: str) -> Activation:
        if name not in self._functions:
            raise UnknownActivation(name, tuple(sorted(self._functions)))
        return self._functions[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._functions))

    def __len__(self) -> int:
        return len(self._functions)

    def __repr__(self) -> str:
        return f"ACTIVATIONS({', '.join(self)})"


# The activations a recurrent edge may apply (the catalogue's `fn` choices; tests check both agree).
ACTIVATIONS: Mapping[str, Activation] = _ActivationTable(
    {"tanh": _tanh, "relu": _relu, "sigmoid": _sigmoid, "identity": _identity}
)


def _uniform_weight(rows: int, cols: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(rows, cols).uniform_(-INITRANGE, INITRANGE))


def _check_rate(name: str, rate: float) -> None:
    # A rate of 1 would divide the kept units by zero.
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {rate!r}")


def dropout_mask(
    shape: Sequence[int],
    p: float,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """A Bernoulli(1 - p) mask scaled by 1 / (1 - p), drawn as rnn/utils.py `mask2d` draws it.

    The cell's x_mask [B, ninp] and h_mask [B, nhid] are such masks, drawn once per forward and
    reused at every time step and (h_mask) on every node of the cell.
    """
    _check_rate("dropout rate", p)
    keep = 1.0 - p
    uniform = torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
    return torch.floor(uniform + keep) / keep


class HighwayInit(nn.Module):
    """Node s0 = h + sigmoid(c0) * (fn(h0) - h), [c0, h0] = [x, h] W0 (`_compute_init_state`)."""

    def __init__(self, ninp: int, nhid: int, fn: str = "tanh") -> None:
        super().__init__()
        self.ninp = ninp
        self.nhid = nhid
        self.fn = fn
        self._activation = ACTIVATIONS[fn]
        self.weight = _uniform_weight(ninp + nhid, 2 * nhid)

    def forward(
        self,
        x: Tensor,
        h_prev: Tensor,
        x_mask: Tensor | None = None,
        h_mask: Tensor | None = None,
    ) -> Tensor:
        # x [B, ninp], h_prev [B, nhid] -> s0 [B, nhid]; h_prev itself enters the highway unmasked.
        x_in = x if x_mask is None else x * x_mask
        h_in = h_prev if h_mask is None else h_prev * h_mask
        c0, h0 = torch.split(self.product(torch.cat([x_in, h_in], dim=-1)), self.nhid, dim=-1)
        return h_prev + c0.sigmoid() * (self._activation(h0) - h_prev)

    def product(self, xh: Tensor) -> Tensor:
        """[x, h] W0 (the search's speed-ups may compute it otherwise, the same arithmetic)."""
        return xh.mm(self.weight)

    def extra_repr(self) -> str:
        return f"ninp={self.ninp}, nhid={self.nhid}, fn={self.fn}"


class SharedHighway(nn.Module):
    """A node's map nhid -> 2 nhid (`_Ws[i]`), shared by all the node's incoming edges."""

    def __init__(self, nhid: int) -> None:
        super().__init__()
        self.nhid = nhid
        self.weight = _uniform_weight(nhid, 2 * nhid)

    def forward(self, states: Tensor, h_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """states [..., B, nhid] -> (sigmoid gate c, candidate h), each shaped like `states`.

        The map reads the masked states; the highway mixes the unmasked ones (`mix_edges`).
        """
        masked = states if h_mask is None else states * h_mask
        ch = self.product(masked.reshape(-1, self.nhid))
        c, h = torch.split(ch.view(*states.shape[:-1], 2 * self.nhid), self.nhid, dim=-1)
        return c.sigmoid(), h

    def product(self, states: Tensor) -> Tensor:
        """states [n, nhid] W (the search's speed-ups may compute it otherwise, the same
        arithmetic)."""
        return states.mm(self.weight)

    def extra_repr(self) -> str:
        return f"nhid={self.nhid}"


def highway_edge(state: Tensor, c: Tensor, h: Tensor, fn: str) -> Tensor:
    """One discrete edge of a derived cell: state + c * (fn(h) - state); c is already a gate."""
    return state + c * (ACTIVATIONS[fn](h) - state)


def _check_rows(weights: Tensor, states: Tensor) -> None:
    if weights.shape[0] != states.shape[0]:
        raise ValueError(
            f"mix_edges: {weights.shape[0]} rows of weights for {states.shape[0]} source states"
        )


def mix_edges_reference(
    states: Tensor,
    c: Tensor,
    h: Tensor,
    weights: Tensor,
    columns: Sequence[tuple[int, str]],
) -> Tensor:
    """`mix_edges` as the reference writes it: one highway per listed op, weighted, summed.

    rnn/model_search.py `DARTSCellSearch.cell`: for every op, states + c * (act(h) - states) over
    all sources, times the op's weights, summed over the sources. Autograd records every step;
    this is the plain path `mix_edges` is tested against (and benchmarks/rnn_tokens.py's
    baseline).
    """
    _check_rows(weights, states)
    mixed = torch.zeros_like(states[0])
    for column, name in columns:
        unweighted = states + c * (ACTIVATIONS[name](h) - states)
        mixed = mixed + torch.sum(weights[:, column, None, None] * unweighted, dim=0)
    return mixed


def mix_edges(
    states: Tensor,
    c: Tensor,
    h: Tensor,
    weights: Tensor,
    columns: Sequence[tuple[int, str]],
) -> Tensor:
    """A search node: sum over sources i and listed ops of weights[i, col] * highway(i, act).

    states, c, h [n, B, nhid] (c, h from the node's `SharedHighway`); weights [n, n_ops], the
    node's rows of softmax(α). `columns` lists (column of `weights`, activation name) for every
    non-zero op, in the order the reference loops over PRIMITIVES; a 'none' column is simply not
    listed, which is exactly its contribution. Returns [B, nhid].

    The same sum as `mix_edges_reference`, regrouped (`HighwayMix`): with W_i = Σ_op w[i, op]
    and A_i = Σ_op w[i, op] act(h_i), it is Σ_i W_i s_i + c_i (A_i - W_i s_i), so every
    activation is computed once per source and the ops' weighting is one batched product; the
    backward pass is written out instead of recorded op by op. Equal to the reference up to
    float rounding (tests/test_recurrent.py). Under autocast the reference path runs.
    """
    _check_rows(weights, states)
    if not columns:
        return torch.zeros_like(states[0])
    if torch.is_autocast_enabled(h.device.type):
        # Autocast picks each operation's precision (the batched product's in bf16, say); the
        # written-out backward pass runs outside it, on tensors of mixed precision.
        return mix_edges_reference(states, c, h, weights, columns)
    return HighwayMix.apply(states, c, h, weights, tuple(columns))


# d act(x) / dx of every activation of ACTIVATIONS, from its input x and output y: a tensor, or a
# number where it is constant (the fused node mix's backward pass; tests check them by autograd).
def _tanh_slope(x: Tensor, y: Tensor) -> Tensor | float:
    return 1.0 - y * y


def _relu_slope(x: Tensor, y: Tensor) -> Tensor | float:
    return (y > 0).to(y.dtype)  # 0 at x = 0, as torch.relu's backward


def _sigmoid_slope(x: Tensor, y: Tensor) -> Tensor | float:
    return y * (1.0 - y)


def _identity_slope(x: Tensor, y: Tensor) -> Tensor | float:
    return 1.0


ACTIVATION_SLOPES: Mapping[str, Callable[[Tensor, Tensor], Tensor | float]] = _ActivationTable(
    {
        "tanh": _tanh_slope,
        "relu": _relu_slope,
        "sigmoid": _sigmoid_slope,
        "identity": _identity_slope,
    }
)


def _column_index(columns: Sequence[tuple[int, str]]) -> slice | list[int]:
    """The listed columns as a slice where they are consecutive (a view, not a gather)."""
    index = [column for column, _ in columns]
    if index == list(range(index[0], index[0] + len(index))):
        return slice(index[0], index[0] + len(index))
    return index


class HighwayMix(torch.autograd.Function):
    """`mix_edges` in one autograd node: forward and backward of the regrouped sum.

    Shapes: n sources, K listed ops, X = B * nhid. Forward keeps the K activations of h in one
    tensor acts [n, K, X], so that A = w @ acts is one batched product (and the ops' gradient,
    acts @ (g c), another), and D = A - W s (the gate's gradient). Saved for backward: states,
    c, acts, D and h (only where an activation's slope needs its input). Once differentiable:
    the second-order α step differentiates by finite differences, never twice.
    """

    @staticmethod
    def forward(ctx, states, c, h, weights, columns):
        n, K = states.shape[0], len(columns)
        w = weights[:, _column_index(columns)]  # [n, K]
        acts = torch.stack([ACTIVATIONS[name](h) for _, name in columns], dim=1)
        total = w.sum(dim=1)[:, None, None]  # W_i [n, 1, 1]
        mixed = torch.bmm(w[:, None, :], acts.view(n, K, -1)).view_as(h)  # A
        gap = mixed.addcmul_(states, total, value=-1.0)  # D = A - W s
        out = c * gap
        out.addcmul_(states, total)
        ctx.columns = columns
        ctx.weights_shape = weights.shape
        ctx.save_for_backward(states, c, h, w, acts, gap)
        return out.sum(dim=0)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        states, c, h, w, acts, gap = ctx.saved_tensors
        n, K = w.shape
        needs_states, needs_c, needs_h, needs_weights, _ = ctx.needs_input_grad
        total = w.sum(dim=1)[:, None, None]
        gated = grad * c  # g c
        open_ = grad - gated  # g (1 - c)
        d_states = open_ * total if needs_states else None
        d_c = gap * grad if needs_c else None
        d_h = None
        if needs_h:
            slope, constant = None, torch.zeros_like(total)
            for k, (_, name) in enumerate(ctx.columns):
                part = ACTIVATION_SLOPES[name](h, acts[:, k])
                if isinstance(part, Tensor):
                    term = part * w[:, k, None, None]
                    slope = term if slope is None else slope.add_(term)
                else:
                    constant = constant + part * w[:, k, None, None]
            slope = constant if slope is None else slope.add_(constant)
            d_h = gated * slope
        d_weights = None
        if needs_weights:
            # d/dw[i, op] = Σ g (s_i + c_i (act(h_i) - s_i)) = Σ g (1 - c_i) s_i + Σ g c_i act(h_i)
            kept = torch.bmm(open_.view(n, 1, -1), states.reshape(n, -1, 1)).view(n, 1)
            applied = torch.bmm(acts.view(n, K, -1), gated.view(n, -1, 1)).view(n, K)
            d_weights = w.new_zeros(ctx.weights_shape)
            d_weights[:, _column_index(ctx.columns)] = applied + kept
        return d_states, d_c, d_h, d_weights, None


# Bytes of logits `DecodedNLL` works through at a time on the CPU (26 rows at PTB's 10,000
# words), so that a block stays in cache between its passes; on a GPU, all rows at once.
_HEAD_BLOCK_BYTES = 1 << 20


def _row_blocks(logits: Tensor) -> Iterator[slice]:
    rows, width = logits.shape
    row_bytes = width * logits.element_size()
    on_cpu = logits.device.type == "cpu"
    return _slices(rows, max(1, _HEAD_BLOCK_BYTES // row_bytes) if on_cpu else None)


def _slices(rows: int, step: int | None) -> Iterator[slice]:
    """Consecutive slices of `rows` rows, `step` at a time (None: all at once)."""
    step = max(1, rows if step is None else step)
    for start in range(0, rows, step):
        yield slice(start, min(start + step, rows))


class AtenDecoderProducts:
    """The products `DecodedNLL` makes, by torch.mm: the logits of all rows in one product
    written straight into the (reused) logits storage, `out` (`rows` None: one block), and the
    backward pass's products. The head adds the bias block by block, in cache: addmm would
    first copy it into every row of the [N, ntoken] output (at batch 256, 358 MB written once
    more per pass). The supernet's speed-ups may pass another products class
    (spacec.runtime.nn.gemm.OneDNNDecoderProducts)."""

    rows = None

    @staticmethod
    def logits(
        hidden: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor
    ) -> tuple[Tensor, bool]:
        """hidden [n, nhid] -> (its logits [n, ntoken], whether the bias is in them)."""
        return torch.mm(hidden, weight.t(), out=out), False

    @staticmethod
    def mm(a: Tensor, b: Tensor) -> Tensor:
        return a.mm(b)


def _offset(rows: slice, by: int) -> slice:
    return slice(rows.start + by, rows.stop + by)


class _SpareLogits:
    """The CPU storage of the last `DecodedNLL` whose backward pass is over, lent to the next.

    The logits are a step's largest tensor (358 MB at the paper's batch 256). glibc maps an
    allocation that large afresh and unmaps it when it is freed, so without this every
    forward pass would fault in its 87,500 pages again (about 0.3 s of system time in an
    8.7 s search step). One spare per dtype, the largest given back; a request it cannot hold
    allocates anew. A GPU's caching allocator does this already, so only CPU tensors come here.
    Like that allocator's blocks, the spare stays with the process after its last step.
    """

    def __init__(self) -> None:
        self.spare: dict[torch.dtype, Tensor] = {}

    def take(self, rows: int, cols: int, like: Tensor) -> Tensor:
        # A spare too small is dropped before the new allocation, so the two never coexist.
        spare = self.spare.pop(like.dtype, None) if like.device.type == "cpu" else None
        if spare is None or spare.numel() < rows * cols:
            del spare
            return like.new_empty((rows, cols))
        return spare[: rows * cols].view(rows, cols)

    def give_back(self, logits: Tensor) -> None:
        if logits.device.type != "cpu":
            return
        whole = (logits if logits._base is None else logits._base).view(-1)
        held = self.spare.get(logits.dtype)
        if held is None or held.numel() < whole.numel():
            self.spare[logits.dtype] = whole


_SPARE_LOGITS = _SpareLogits()


class DecodedNLL(torch.autograd.Function):
    """Mean NLL of `targets` under log_softmax(hidden W^T + b), as one autograd node.

    The same sum as ``F.nll_loss(F.log_softmax(decoder(hidden), -1), targets)``: with m the
    row's largest logit, E = exp(logits - m) and s = Σ E, NLL_i = log s_i + m_i - logits[i,
    target_i], and the gradient in the logits is (E / s - onehot) / N. The log-probabilities
    are never made (nothing but the loss reads them): the forward pass turns the logits into E
    in place, row block by row block while a block is in cache, and the backward pass never
    makes the logits' gradient either: the division by s and the one-hot term go on the
    products' small sides,

        d hidden = ((E W) / s - W[targets]) / N,
        [d W, d b] = (E^T [hidden / s, 1 / s] - onehot^T [hidden, 1]) / N,

    so the [N, ntoken] storage is only read, by the two products. Per step of the decoder one
    [N, ntoken] tensor is written where log_softmax, nll_loss and their backward passes write
    four (at the paper's batch 256, 358 MB each), with one exp per logit instead of two. On the
    CPU that storage is reused from step to step (`_SpareLogits`), so a second backward pass
    through the same graph (retain_graph) raises. The cost model traces the same
    (spacec.cost.tracer.Tracer.decoded_nll).

    The products are `products`' (AtenDecoderProducts: torch.mm, the logits of all rows
    written into that storage at once). One that makes the logits block by block in storage of
    its own (spacec.runtime.nn.gemm.OneDNNDecoderProducts) has E written into the reused
    storage instead, from the block while it is fresh.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, recorded, products=None):
        # `recorded`: whether autograd records this call (it runs forward without grad mode, and
        # fills needs_input_grad under no_grad too), i.e. whether a backward pass may follow.
        # `products`: who multiplies (AtenDecoderProducts unless given).
        products = AtenDecoderProducts if products is None else products
        logits = _SPARE_LOGITS.take(hidden.shape[0], weight.shape[0], hidden)
        picked = logits.new_empty(logits.shape[0])
        largest = logits.new_empty(logits.shape[0])
        sums = logits.new_empty(logits.shape[0])
        for outer in _slices(logits.shape[0], products.rows):
            block, biased = products.logits(hidden[outer], weight, bias, logits[outer])
            for inner in _row_blocks(block):
                part, rows = block[inner], _offset(inner, outer.start)
                if bias is not None and not biased:
                    part.add_(bias)
                torch.gather(part, 1, targets[rows, None], out=picked[rows, None])
                torch.amax(part, dim=1, out=largest[rows])
                exps = torch.exp(part.sub_(largest[rows, None]), out=logits[rows])
                torch.sum(exps, dim=1, out=sums[rows])
        ctx.spent = False
        ctx.products = products
        loss = (sums.log() + largest - picked).mean()
        if not recorded:
            _SPARE_LOGITS.give_back(logits)
            return loss
        # As a linear layer: its input only for the weight's gradient (an α-only pass).
        kept = hidden if ctx.needs_input_grad[1] else None
        ctx.save_for_backward(kept, weight, logits, sums, targets)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        if ctx.spent:
            raise RuntimeError(
                "DecodedNLL: a second backward pass through the same loss is not supported "
                "(its saved exponentials were handed to the next step)"
            )
        ctx.spent = True
        hidden, weight, exps, sums, targets = ctx.saved_tensors
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        mm = ctx.products.mm
        scale = grad / exps.shape[0]
        inverse = sums.reciprocal()
        d_hidden = d_weight = d_bias = None
        if needs_hidden:
            d_hidden = mm(exps, weight).mul_(inverse[:, None]).sub_(weight[targets]).mul_(scale)
        if needs_weight or needs_bias:
            d_weight, d_bias = _decoder_gradients(
                mm, exps, inverse, hidden, targets, scale, needs_weight, needs_bias
            )
        _SPARE_LOGITS.give_back(exps)
        return d_hidden, d_weight, d_bias, None, None, None


def _decoder_gradients(
    mm: Callable[[Tensor, Tensor], Tensor],
    exps: Tensor,
    inverse: Tensor,
    hidden: Tensor | None,
    targets: Tensor,
    scale: Tensor,
    needs_weight: bool,
    needs_bias: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """The decoder's weight and bias gradients, (E^T [hidden / s, 1 / s] - onehot^T
    [hidden, 1]) * scale: one product over E for both."""
    scaled, onehot = [], []
    if needs_weight:
        scaled.append(hidden * inverse[:, None])
        onehot.append(hidden)
    if needs_bias:
        scaled.append(inverse[:, None])
        onehot.append(inverse.new_ones(inverse.shape[0], 1))
    both = mm(exps.t(), torch.cat(scaled, dim=1))
    both.index_add_(0, targets, torch.cat(onehot, dim=1), alpha=-1.0).mul_(scale)
    d_weight = both[:, : hidden.shape[1]] if needs_weight else None
    return d_weight, (both[:, -1] if needs_bias else None)


def decoded_nll(
    hidden: Tensor, decoder: nn.Linear, targets: Tensor, products: Any = None
) -> Tensor:
    """Mean NLL of targets [N] under log_softmax(decoder(hidden)), hidden [N, nhid].

    `DecodedNLL` (its products by `products`, AtenDecoderProducts unless given), equal to
    `decoded_nll_reference` up to float rounding (tests/test_recurrent.py); under autocast the
    reference path runs, whose log-softmax autocast keeps in float32.
    """
    if torch.is_autocast_enabled(hidden.device.type):
        return decoded_nll_reference(hidden, decoder, targets)
    weight, bias = decoder.weight, decoder.bias
    recorded = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias)
    )
    return DecodedNLL.apply(hidden, weight, bias, targets, recorded, products)


def decoded_nll_reference(hidden: Tensor, decoder: nn.Linear, targets: Tensor) -> Tensor:
    """The decoder, log-softmax and NLL op by op, as the reference computes its loss
    (rnn/model_search.py `_loss`): the plain path `decoded_nll` is tested against."""
    return F.nll_loss(F.log_softmax(decoder(hidden), dim=-1), targets)


class NodeNorm(nn.BatchNorm1d):
    """BatchNorm1d(nhid, affine=False) over [B, nhid]: the search cell's `self.bn`."""

    def __init__(self, nhid: int) -> None:
        super().__init__(nhid, affine=False)


class LockedDropout(nn.Module):
    """Variational dropout (AWD-LSTM): one mask per sequence, shared by all time steps."""

    @staticmethod
    def mask(
        shape: Sequence[int],
        p: float,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """For x [T, B, D]: a mask [1, B, D] of Bernoulli(1 - p) / (1 - p), broadcast over T."""
        _check_rate("dropout rate", p)
        keep = 1.0 - p
        mask = torch.empty((1, *shape[1:]), device=device, dtype=dtype)
        return mask.bernoulli_(keep, generator=generator).div_(keep)

    def forward(self, x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
        if not self.training or not p:
            return x
        return x * self.mask(x.shape, p, x.device, generator, x.dtype)


def embedded_dropout(
    embed: nn.Embedding,
    words: Tensor,
    dropout: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Embedding dropout (AWD-LSTM): drop whole word vectors, rescale the rest by 1 / (1 - p).

    A dropped word is zero wherever it occurs in `words`. The caller passes 0 outside training.
    """
    weight = embed.weight
    if dropout:
        _check_rate("embedding dropout", dropout)
        keep = 1.0 - dropout
        rows = weight.new_empty((weight.shape[0], 1)).bernoulli_(keep, generator=generator)
        weight = rows.div_(keep) * weight
    return F.embedding(
        words,
        weight,
        embed.padding_idx,
        embed.max_norm,
        embed.norm_type,
        embed.scale_grad_by_freq,
        embed.sparse,
    )


Hidden = Any  # a Tensor, or a list/tuple of them (nested)


def repackage_hidden(hidden: Hidden) -> Hidden:
    """Detach hidden state from the graph that produced it (truncated BPTT); same container."""
    if isinstance(hidden, Tensor):
        return hidden.detach()
    if isinstance(hidden, (list, tuple)):
        return type(hidden)(repackage_hidden(part) for part in hidden)
    raise TypeError(f"hidden state must be a Tensor or a list/tuple of them, got {type(hidden)}")


class RecurrentLM(nn.Module, abc.ABC):
    """Embedding -> a recurrent cell unrolled over time -> (tied) decoder, as DARTS `RNNModel`.

    Subclasses (generated code) own the cell's modules and implement `cell_step`. Dropout
    defaults are those of the search, rnn/train_search.py; the evaluation script rnn/train.py
    passes the same five values (its --dropoute is 0 too; 0.1 is only `RNNModel`'s unused
    signature default).

    Layouts follow the reference: `hidden` is a list holding one [1, B, nhid] tensor (see
    `init_hidden`); `forward` returns log-probabilities [T, B, ntoken], and with `return_h` also
    `raw_outputs` and `dropped_outputs`, lists holding one [T, B, nhid] tensor each (the cell's
    outputs before and after output dropout, for activation regularisation).
    """

    def __init__(
        self,
        ntoken: int,
        ninp: int,
        nhid: int,
        tied: bool = True,
        *,  # the dropouts are keyword options
        dropout: float = 0.75,  # --dropout: locked, on the cell's output
        dropouth: float = 0.25,  # --dropouth: h_mask, on h_{t-1} and every state a node map reads
        dropoutx: float = 0.75,  # --dropoutx: x_mask, on x_t entering W0
        dropouti: float = 0.2,  # --dropouti: locked, on the embedded input
        dropoute: float = 0.0,  # --dropoute: whole word vectors of the embedding
    ) -> None:
        super().__init__()
        if tied and ninp != nhid:
            raise ValueError(f"tied weights need ninp == nhid, got ninp={ninp}, nhid={nhid}")
        rates = {
            "dropout": dropout,
            "dropouth": dropouth,
            "dropoutx": dropoutx,
            "dropouti": dropouti,
            "dropoute": dropoute,
        }
        for name, rate in rates.items():
            _check_rate(name, rate)
        self.ntoken = ntoken
        self.ninp = ninp
        self.nhid = nhid
        self.tied = tied
        self.dropout = dropout
        self.dropouth = dropouth
        self.dropoutx = dropoutx
        self.dropouti = dropouti
        self.dropoute = dropoute
        self.lockdrop = LockedDropout()
        self.encoder = nn.Embedding(ntoken, ninp)
        self.decoder = nn.Linear(nhid, ntoken)
        if tied:
            self.decoder.weight = self.encoder.weight
        self._init_weights()

    # The loss head `forward` uses given targets: (hidden [N, nhid], decoder, targets [N]) ->
    # mean NLL. An instance may set its own (benchmarks time the reference's op-by-op head).
    decode_nll = staticmethod(decoded_nll)

    def _init_weights(self) -> None:
        # RNNModel.init_weights
        with torch.no_grad():
            self.encoder.weight.uniform_(-INITRANGE, INITRANGE)
            self.decoder.bias.zero_()
            if not self.tied:
                self.decoder.weight.uniform_(-INITRANGE, INITRANGE)

    @abc.abstractmethod
    def cell_step(
        self,
        x_t: Tensor,
        h_prev: Tensor,
        x_mask: Tensor | None,
        h_mask: Tensor | None,
        context: Any,
    ) -> Tensor:
        """One time step: x_t [B, ninp], h_prev [B, nhid] -> h_t [B, nhid].

        Masks are None outside training; `context` is what `step_context` returned.
        """

    def step_context(self) -> Any:
        """Computed once per forward and handed to every `cell_step` (a supernet: softmax(α))."""
        return None

    def compile_steps(self, compile: Callable[[Callable], Callable], unroll: int = 1) -> None:
        """Have every time step call ``compile(self.cell_step)`` (e.g. ``torch.compile``).

        The unit compiled is one time step: its graph is made once and serves every step of
        every sequence, forward and backward. Compiling `forward` would trace the unrolled
        loop instead, a graph as long as the sequence (bptt 35: 35 cells of 8 nodes), made
        again for every sequence length. With `unroll` > 1, runs of that many consecutive
        steps are one compiled graph instead (`cell_steps`), and the steps a sequence has left
        over go one at a time: fewer calls, each of which costs the guards' checks, an autograd
        node and, in backward, one accumulation of every weight's gradient
        (benchmarks/RESULTS.md).
        Idempotent; the parameters are the module's own.
        """
        if unroll < 1:
            raise ValueError(f"unroll must be >= 1, got {unroll}")
        if "cell_step" in self.__dict__:
            return
        step = self.cell_step

        def cell_steps(
            xs: Tensor, h_prev: Tensor, x_mask: Tensor | None, h_mask: Tensor | None, context: Any
        ) -> Tensor:
            """`step` over xs [K, B, ninp] from h_prev [B, nhid]: the states [K, B, nhid]."""
            states = []
            for x_t in xs.unbind(0):
                h_prev = step(x_t, h_prev, x_mask, h_mask, context)
                states.append(h_prev)
            return torch.stack(states)

        self.cell_step = compile(step)
        if unroll > 1:
            self.cell_steps, self._steps_per_graph = compile(cell_steps), unroll

    def init_hidden(self, bsz: int) -> list[Tensor]:
        weight = self.encoder.weight
        return [weight.new_zeros(1, bsz, self.nhid)]

    def forward(
        self,
        input: Tensor,
        hidden: Sequence[Tensor],
        return_h: bool = False,
        targets: Tensor | None = None,
    ) -> tuple[Tensor, list[Tensor]] | tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
        """input [T, B] word ids, hidden [[1, B, nhid]] -> (log_prob [T, B, ntoken], hidden).

        With `targets` [T * B] (the next words, flattened as log_prob.view(-1, ntoken) is),
        the first value is instead their mean NLL, computed by `decode_nll` without making
        the log-probabilities (what a training or evaluation loss needs, at less memory).
        """
        steps, batch = input.shape
        if steps == 0:
            raise ValueError("input has no time steps")
        h_prev = self._initial_state(hidden, batch)
        emb = embedded_dropout(self.encoder, input, self.dropoute if self.training else 0.0)
        emb = self.lockdrop(emb, self.dropouti)
        x_mask, h_mask = self._step_masks(batch, emb)
        raw_output = self._unroll(emb, h_prev, x_mask, h_mask)
        new_hidden = [raw_output[-1].unsqueeze(0)]
        output = self.lockdrop(raw_output, self.dropout)
        flat = output.view(-1, self.nhid)
        if targets is None:
            decoded = F.log_softmax(self.decoder(flat), dim=-1).view(steps, batch, self.ntoken)
        else:
            decoded = self.decode_nll(flat, self.decoder, targets)
        if return_h:
            return decoded, new_hidden, [raw_output], [output]
        return decoded, new_hidden

    def _initial_state(self, hidden: Sequence[Tensor], batch: int) -> Tensor:
        if len(hidden) != 1 or tuple(hidden[0].shape) != (1, batch, self.nhid):
            shapes = [tuple(h.shape) for h in hidden]
            raise ValueError(
                f"hidden must be [tensor of shape (1, {batch}, {self.nhid})], got shapes {shapes}"
            )
        return hidden[0][0]

    def _step_masks(self, batch: int, emb: Tensor) -> tuple[Tensor | None, Tensor | None]:
        # DARTSCell.forward draws both masks in training even at rate 0 (then all ones).
        if not self.training:
            return None, None
        x_mask = dropout_mask((batch, self.ninp), self.dropoutx, emb.device, dtype=emb.dtype)
        h_mask = dropout_mask((batch, self.nhid), self.dropouth, emb.device, dtype=emb.dtype)
        return x_mask, h_mask

    def _unroll(
        self, emb: Tensor, h_prev: Tensor, x_mask: Tensor | None, h_mask: Tensor | None
    ) -> Tensor:
        context = self.step_context()
        outputs: list[Tensor] = []
        h_t = h_prev
        unroll = self.__dict__.get("_steps_per_graph", 1)
        if unroll > 1:
            unrolled = len(emb) - len(emb) % unroll
            for start in range(0, unrolled, unroll):
                run = self.cell_steps(emb[start : start + unroll], h_t, x_mask, h_mask, context)
                outputs.extend(run.unbind(0))
                h_t = outputs[-1]
            emb = emb[unrolled:]
        for x_t in emb:
            h_t = self.cell_step(x_t, h_t, x_mask, h_mask, context)
            outputs.append(h_t)
        return torch.stack(outputs)

    def extra_repr(self) -> str:
        return (
            f"ntoken={self.ntoken}, ninp={self.ninp}, nhid={self.nhid}, tied={self.tied}, "
            f"dropout={self.dropout}, dropouth={self.dropouth}, dropoutx={self.dropoutx}, "
            f"dropouti={self.dropouti}, dropoute={self.dropoute}"
        )
