"""The architecture optimiser of DARTS: updates α, never the network weights w.

Model interface (what the generated supernets provide):
  - ``model.arch_parameters() -> dict[str, nn.Parameter]``: the architecture tensors (α per cell
    type, and any other a relaxation owns), registered parameters of the model;
  - every other parameter is a weight and is trained by the caller's SGD ``w_optimizer``.
  - ``loss_fn(call, batch) -> Tensor``: ``call(*inputs)`` runs the forward pass. It is the model
    itself for a real training step and a functional call on substituted tensors
    inside the architect, which is what keeps this module independent of CNN vs RNN. The
    second-order step calls it four times per step, so it must not carry state between calls
    (an RNN's hidden state travels in the batch, not in the closure).

What a search step does with these methods is the strategy's business
(spacec.runtime.search.strategy): bilevel and coordinate descent call `step` (α) and then do
the w step themselves; joint optimisation calls `joint_step`, which moves α and w from one
backward pass (single-level, as the paper's Sect. 3.3 ablation and SNAS).

The second-order recipe is the one of the reference implementation (quark0/darts,
``cnn/architect.py`` and ``rnn/architect.py``):

    g  = ∇w L_train(w, α)                                   (clipped to ``unrolled_clip``: RNN)
    w' = w − η (momentum·buf + g + wd·w)                    the next SGD update, unapplied
    dα = ∇α L_val(w', α),  v = ∇w' L_val(w', α)             (v clipped to ``unrolled_clip``: RNN)
    R  = fd_scale / ‖v‖,   g± = ∇α L_train(w ± R v, α)      at the ORIGINAL weights w
    arch gradient = dα − η·c·(g⁺ − g⁻) / (2R)

where c = min(1, clip coefficient of g) (1 without clipping): w' depends on α through the
clipped gradient, so the chain rule carries the same factor. The reference RNN code multiplies
by the unclamped coefficient, which inflates the implicit term whenever no clipping happens.

Unlike the reference, nothing is deep-copied and nothing of the real model changes except α:
every forward pass of the architect is a functional call (spacec.runtime.nn.state.call_with,
as ``torch.func.functional_call`` computes it) on detached weight tensors and on
fresh clones of the buffers, so BatchNorm running statistics and ``num_batches_tracked`` stay
as they were (the reference's first-order step updated them on validation data), and neither
w, w.grad, nor the w optimizer's momentum buffers are touched. The model's train/eval mode is
whatever the caller set (the DARTS search keeps the supernet in train mode).

On several processes (spacec.runtime.run.distributed) every process holds its share of each
batch, and `reduce` (the session's all-reduce mean) makes every gradient the architect uses the
mean over the processes before it is used: the first-order ∇α; in the second-order step g (so
that w' is the same everywhere), dα and v (so that R = fd_scale / ‖v‖ is taken of the mean v)
and the finite difference. These steps run on the unwrapped model through the functional call,
never through DistributedDataParallel (which does not support double backward, pytorch#63812;
the finite-difference product needs none). The joint step is a training step: it runs through
`wrapped` (the DDP replica), whose backward averages the gradients of w and α alike.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from spacec.runtime.nn import state
from spacec.runtime.run.config import FLOAT32_MAX

LossFn = Callable[[Callable[..., Tensor], Any], Tensor]
TensorDict = dict[str, Tensor]
Reduce = Callable[[list[Tensor]], None]  # averages tensors in place over the processes

ARCH_ORDERS = (1, 2)
# Added to the norm before dividing, as in torch.nn.utils.clip_grad_norm_ and the reference's
# rnn `_clip`.
CLIP_EPS = 1e-6


@dataclass(frozen=True)
class ArchConfig:
    """How α is optimised. Defaults: DARTS CNN search (quark0/darts cnn/train_search.py)."""

    order: int = 1  # 1: first order (ξ = 0); 2: one unrolled SGD step (paper Eq. 7)
    # The search strategy (spacec.runtime.search.strategy.STRATEGIES): bilevel (DARTS), or the
    # paper's Sect. 3.3 ablations coordinate (descent on train∪val) and joint (single-level).
    mode: str = "bilevel"
    lr: float = 3e-4  # --arch_learning_rate (CNN); the RNN search uses 3e-3
    betas: tuple[float, float] = (0.5, 0.999)  # CNN architect; the RNN one keeps Adam's default
    weight_decay: float = 1e-3  # --arch_weight_decay (CNN), --arch_wdecay (RNN)
    unrolled_clip: float | None = None  # RNN search: --clip 0.25 on g and v (second order only)
    fd_scale: float = 0.01  # r in R = r / ‖v‖ (`_hessian_vector_product`, r=1e-2)

    def __post_init__(self) -> None:
        if self.order not in ARCH_ORDERS:
            raise ValueError(f"unknown order {self.order!r}; valid: {ARCH_ORDERS}")
        if self.fd_scale <= 0:
            raise ValueError(f"fd_scale must be positive, got {self.fd_scale}")
        if self.unrolled_clip is not None and self.unrolled_clip <= 0:
            raise ValueError(f"unrolled_clip must be positive or None, got {self.unrolled_clip}")
        # What torch.optim.Adam would refuse with a traceback, refused as a setting.
        if not (math.isfinite(self.lr) and 0 < self.lr <= FLOAT32_MAX):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and 0 <= self.weight_decay <= FLOAT32_MAX):
            raise ValueError(f"weight_decay must be a finite number >= 0, got "
                             f"{self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")


class Architect:
    """Owns the Adam optimiser of α and computes the architecture gradient of `ArchConfig`."""

    def __init__(
        self,
        model: nn.Module,
        w_optimizer: torch.optim.Optimizer,
        loss_fn: LossFn,
        cfg: ArchConfig | None = None,
        reduce: Reduce | None = None,
        wrapped: Callable[..., Any] | None = None,
    ) -> None:
        self.model = model
        self.w_optimizer = w_optimizer
        self.loss_fn = loss_fn
        self.cfg = cfg if cfg is not None else ArchConfig()
        self.reduce = reduce  # None: one process
        self.wrapped = model if wrapped is None else wrapped  # what the joint step's forward calls
        alphas = model.arch_parameters()
        self._alpha_names = _full_names(model, alphas)
        alpha_full_names = set(self._alpha_names.values())
        self._weight_names = [n for n, _ in model.named_parameters() if n not in alpha_full_names]
        _reject_alphas_in(w_optimizer, alphas.values())
        if self.cfg.order == 2:
            _check_unrollable(w_optimizer)
            self._weight_groups = _param_group_of_each(model, self._weight_names, w_optimizer)
        # A method's term added to the α step's loss (β-DARTS, FairDARTS): a function of the
        # architecture tensors keyed like arch_parameters(); None adds nothing.
        self.arch_penalty: Callable[[TensorDict], Tensor] | None = None
        self.optimizer = torch.optim.Adam(
            alphas.values(),
            lr=self.cfg.lr,
            betas=self.cfg.betas,
            weight_decay=self.cfg.weight_decay,
        )

    def step(self, train_batch: Any, val_batch: Any, lr: float) -> dict[str, float]:
        """One Adam step on α (bilevel, coordinate descent); w is left exactly as it was.

        `lr` is η, the w optimizer's current learning rate (used by order 2 only). Returns
        ``val_loss``, the loss on `val_batch` at the weights where ∇α was taken (w' for order 2),
        and ``arch_grad_norm``.
        """
        grads, stats = self._arch_gradient(train_batch, val_batch, lr)
        for key, alpha in self.model.arch_parameters().items():
            alpha.grad = grads[key]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return stats

    def arch_gradient(self, train_batch: Any, val_batch: Any, lr: float) -> TensorDict:
        """The gradient `step` would apply, keyed like ``arch_parameters()``; no side effects."""
        return self._arch_gradient(train_batch, val_batch, lr)[0]

    def joint_step(self, batch: Any, w_grad_clip: float | None = None,
                   update_arch: bool = True,
                   clip: Callable[[list[tuple[str, Tensor]], float | None], None] | None = None,
                   ) -> dict[str, float]:
        """Joint optimisation: one backward on `batch` at (w, α), then the α and the w step.

        This is a real training step: the model's own forward runs (BatchNorm statistics update
        as in any training step). `w_grad_clip` clips the weight gradient's total norm first,
        as the search loop does for its w step (DARTS: --grad_clip 5), by
        ``clip(named weights, w_grad_clip)`` where given (the search loop's
        Guard.clip_gradients, which first stops on a gradient that is not finite), else by
        clip_grad_norm_. Without `update_arch` (a method's warm-up) only w moves.
        """
        self.w_optimizer.zero_grad(set_to_none=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.wrapped, batch)
        if self.arch_penalty is not None and update_arch:
            loss = loss + self.arch_penalty(self.model.arch_parameters())
        loss.backward()
        named = state.parameters(self.model)
        weights = [(n, named[n]) for n in self._weight_names]
        if clip is not None:
            clip(weights, w_grad_clip)
        elif w_grad_clip is not None:
            nn.utils.clip_grad_norm_([p for _, p in weights], w_grad_clip)
        if update_arch:
            self.optimizer.step()
        self.w_optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"train_loss": loss.item()}

    def hessian_vector_product(self, train_batch: Any, vector: Mapping[str, Tensor]) -> TensorDict:
        """Central-difference estimate of ∇²_{α,w} L_train(w, α) · vector at the current w.

        `vector` is keyed by the weights' names in ``named_parameters()``; the result is keyed
        like ``arch_parameters()``.
        """
        weights, alphas = self._weights(), self._alphas()
        return self._keyed(self._finite_difference(weights, alphas, vector, train_batch))

    def state_dict(self) -> dict[str, Any]:
        """A snapshot of the α optimiser's state, for resumable runs.

        Deep-copied: torch's optimizer state_dict shares its tensors with the live state, which
        the next step updates in place.
        """
        return copy.deepcopy(self.optimizer.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)

    # -- gradients ---------------------------------------------------------------------------

    def _arch_gradient(
        self, train_batch: Any, val_batch: Any, lr: float
    ) -> tuple[TensorDict, dict[str, float]]:
        if self.cfg.order == 1:
            grads, val_loss = self._first_order(val_batch)
        else:
            grads, val_loss = self._second_order(train_batch, val_batch, lr)
        keyed = self._keyed(grads)
        return keyed, {"val_loss": val_loss, "arch_grad_norm": _total_norm(keyed.values()).item()}

    def _first_order(self, val_batch: Any) -> tuple[TensorDict, float]:
        alphas = _leaves(self._alphas())
        loss = self._loss_at(self._weights(), alphas, val_batch)
        return self._mean(_grad(self._penalised(loss, alphas), alphas)), loss.item()

    def _penalised(self, loss: Tensor, alphas: TensorDict) -> Tensor:
        """The α step's loss plus the method's term (alphas keyed by full names)."""
        if self.arch_penalty is None:
            return loss
        return loss + self.arch_penalty(self._keyed(alphas))

    def _second_order(
        self, train_batch: Any, val_batch: Any, lr: float
    ) -> tuple[TensorDict, float]:
        weights, alphas = self._weights(), self._alphas()
        weight_leaves = _leaves(weights)
        train_grads = self._mean(_grad(self._loss_at(weight_leaves, alphas, train_batch),
                                       weight_leaves))
        chain_coef = 1.0
        if self.cfg.unrolled_clip is not None:
            train_grads, chain_coef = _clip_total_norm(train_grads, self.cfg.unrolled_clip)
        unrolled = _leaves(self._virtual_step(weights, train_grads, lr))
        alpha_leaves = _leaves(alphas)
        val_loss = self._loss_at(unrolled, alpha_leaves, val_batch)
        val_grads = self._mean(
            _grad(self._penalised(val_loss, alpha_leaves), {**alpha_leaves, **unrolled}))
        # Only the value from here on: the spent graph's nodes, left alive through the finite
        # difference, sit between its freed activations and keep the CPU heap from reusing
        # them (nas_bench_201 at batch 64: 1.65 GiB resident instead of 1.30).
        val_loss_value = val_loss.item()
        del val_loss
        d_alpha = {n: val_grads[n] for n in alpha_leaves}
        vector = {n: val_grads[n] for n in unrolled}
        if self.cfg.unrolled_clip is not None:
            vector, _ = _clip_total_norm(vector, self.cfg.unrolled_clip)
        implicit = self._finite_difference(weights, alphas, vector, train_batch)
        grads = {n: d_alpha[n] - lr * chain_coef * implicit[n] for n in d_alpha}
        return grads, val_loss_value

    def _virtual_step(self, weights: TensorDict, grads: TensorDict, lr: float) -> TensorDict:
        """The update SGD (momentum, weight decay, no dampening) would apply next, unapplied."""
        named = state.parameters(self.model)
        stepped = {}
        for name, w in weights.items():
            group = self._weight_groups[name]
            direction = grads[name] + group["weight_decay"] * w
            buf = self._momentum_buffer(named[name])
            if buf is not None and group["momentum"] != 0:
                direction = group["momentum"] * buf + direction
            stepped[name] = w - lr * direction
        return stepped

    def _momentum_buffer(self, param: nn.Parameter) -> Tensor | None:
        # .get, not [], so that the optimizer's state (a defaultdict) gains no empty entry.
        return self.w_optimizer.state.get(param, {}).get("momentum_buffer")

    def _finite_difference(
        self, weights: TensorDict, alphas: TensorDict, vector: Mapping[str, Tensor], batch: Any
    ) -> TensorDict:
        """(∇α L(w + R v, α) − ∇α L(w − R v, α)) / 2R with R = fd_scale / ‖v‖."""
        norm = _total_norm(vector.values())
        if norm == 0:
            return {n: torch.zeros_like(a) for n, a in alphas.items()}
        radius = self.cfg.fd_scale / norm

        def grad_at(sign: float) -> TensorDict:
            # One perturbed copy of the weights at a time: w + Rv is freed before w - Rv exists.
            shifted = {n: w + sign * radius * vector[n] for n, w in weights.items()}
            alpha_leaves = _leaves(alphas)
            return _grad(self._loss_at(shifted, alpha_leaves, batch), alpha_leaves)

        grad_plus = grad_at(1.0)
        grad_minus = grad_at(-1.0)
        return self._mean({n: (grad_plus[n] - grad_minus[n]) / (2 * radius) for n in alphas})

    def _mean(self, grads: TensorDict) -> TensorDict:
        """`grads` averaged over the processes (as they are with one)."""
        if self.reduce is None:
            return grads
        # Copies: autograd may hand back expanded or shared tensors, unfit for in-place writes.
        averaged = {n: g.clone(memory_format=torch.contiguous_format) for n, g in grads.items()}
        self.reduce(list(averaged.values()))
        return averaged

    # -- functional evaluation ---------------------------------------------------------------

    def _loss_at(self, weights: TensorDict, alphas: TensorDict, batch: Any) -> Tensor:
        """loss_fn at substituted weights and α, on fresh buffer clones (the model stays as is)."""
        buffers = _copies(state.buffers(self.model))
        tensors = {**weights, **alphas, **buffers}

        def call(*inputs: Any) -> Tensor:
            return state.call_with(self.model, tensors, *inputs)

        return self.loss_fn(call, batch)

    def _weights(self) -> TensorDict:
        named = state.parameters(self.model)
        return {n: named[n].detach() for n in self._weight_names}

    def _alphas(self) -> TensorDict:
        named = state.parameters(self.model)
        return {full: named[full].detach() for full in self._alpha_names.values()}

    def _keyed(self, by_full_name: TensorDict) -> TensorDict:
        return {key: by_full_name[full] for key, full in self._alpha_names.items()}


def _copies(tensors: Mapping[str, Tensor]) -> TensorDict:
    """Copies of `tensors` (equal values), made by one operation for all the vectors of a dtype
    and device (`cat`, then `split` into views) and one for all the scalars (`stack`, then
    `unbind`) rather than one clone each: a supernet has thousands of small buffers (its
    norms' statistics and counters), and on a GPU, where the search step is bound by issuing
    operations, each clone is a launch. Tensors of other shapes are cloned."""
    groups: dict[tuple, list[str]] = {}
    copies = {}
    for name, tensor in tensors.items():
        if tensor.dim() > 1:
            copies[name] = tensor.clone()
        else:
            groups.setdefault((tensor.dim(), tensor.dtype, tensor.device), []).append(name)
    for (dim, _, _), names in groups.items():
        originals = [tensors[name] for name in names]
        if dim == 0:
            pieces = torch.stack(originals).unbind()
        else:
            pieces = torch.cat(originals).split([tensor.numel() for tensor in originals])
        copies.update(zip(names, pieces, strict=True))
    return copies


def _full_names(model: nn.Module, alphas: Mapping[str, nn.Parameter]) -> dict[str, str]:
    """Map each arch_parameters() key to the parameter's name in named_parameters()."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    missing = [key for key, a in alphas.items() if id(a) not in name_of]
    if missing:
        raise ValueError(f"arch parameters {missing} are not registered parameters of the model")
    return {key: name_of[id(a)] for key, a in alphas.items()}


def _reject_alphas_in(w_optimizer: torch.optim.Optimizer, alphas: Iterable[nn.Parameter]) -> None:
    alpha_ids = {id(a) for a in alphas}
    for group in w_optimizer.param_groups:
        if any(id(p) in alpha_ids for p in group["params"]):
            raise ValueError("the w optimizer holds arch parameters; build it on model.weights()")


def _check_unrollable(w_optimizer: torch.optim.Optimizer) -> None:
    """The virtual step reproduces plain SGD with momentum and weight decay only."""
    if not isinstance(w_optimizer, torch.optim.SGD):
        raise TypeError(f"order 2 unrolls an SGD step; got {type(w_optimizer).__name__}")
    for group in w_optimizer.param_groups:
        if group.get("nesterov") or group.get("dampening", 0) != 0 or group.get("maximize"):
            raise ValueError("order 2 supports SGD without nesterov, dampening or maximize")


def _param_group_of_each(
    model: nn.Module, names: list[str], w_optimizer: torch.optim.Optimizer
) -> dict[str, dict[str, Any]]:
    group_of = {id(p): g for g in w_optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    missing = [n for n in names if id(named[n]) not in group_of]
    if missing:
        raise ValueError(f"weights missing from the w optimizer (needed by order 2): {missing}")
    return {n: group_of[id(named[n])] for n in names}


def _leaves(tensors: Mapping[str, Tensor]) -> TensorDict:
    """Fresh autograd leaves sharing storage with `tensors`."""
    return {n: t.detach().requires_grad_(True) for n, t in tensors.items()}


def _grad(loss: Tensor, wrt: TensorDict) -> TensorDict:
    grads = torch.autograd.grad(
        loss, list(wrt.values()), allow_unused=True, materialize_grads=True
    )
    return dict(zip(wrt, grads, strict=True))


def _total_norm(tensors: Iterable[Tensor]) -> Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def _clip_total_norm(tensors: TensorDict, max_norm: float) -> tuple[TensorDict, float]:
    """Scale to at most `max_norm` in total; also returns the applied coefficient (≤ 1)."""
    coef = min(1.0, max_norm / (_total_norm(tensors.values()).item() + CLIP_EPS))
    return {n: t * coef for n, t in tensors.items()}, coef
