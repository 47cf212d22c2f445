"""The architect against exact autograd, on a tiny float64 supernet with BatchNorm."""

from __future__ import annotations

import copy
import gc

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from spacec.runtime.search.architect import ArchConfig, Architect

CELL_TYPES = ("normal", "reduce")
ETA = 0.1  # w learning rate η; larger than DARTS' 0.025 so that the implicit term matters
MOMENTUM = 0.9  # DARTS CNN search --momentum
W_DECAY = 3e-4  # DARTS CNN search --weight_decay
RNN_CLIP = 0.25  # DARTS RNN search --clip


class MixedEdge(nn.Module):
    """Softmax(α)-weighted sum of tanh-conv-BN, average pooling and identity.

    tanh rather than DARTS' ReLU: a central difference across a ReLU kink is no second
    derivative (with ReLU this tiny model shows relative errors of order 1 at R = 1e-2), and the
    tests compare against exact second derivatives.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels, affine=False)

    def forward(self, x: Tensor, op_weights: Tensor) -> Tensor:
        ops = (
            self.bn(self.conv(torch.tanh(x))),
            F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False),
            x,
        )
        return sum(w * op for w, op in zip(op_weights, ops, strict=True))


class TinySupernet(nn.Module):
    """Stem conv + BN, one mixed edge per cell type, global pooling, linear classifier."""

    def __init__(self, tied: bool = False, channels: int = 3, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, channels, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(channels)
        self.edges = nn.ModuleList([MixedEdge(channels) for _ in CELL_TYPES])
        if tied:
            self.edges[1].conv.weight = self.edges[0].conv.weight
        self.head = nn.Linear(channels, classes)
        self.alphas = nn.ParameterDict(
            {cell: nn.Parameter(0.5 * torch.randn(3)) for cell in CELL_TYPES}
        )

    def arch_parameters(self) -> dict[str, nn.Parameter]:
        return dict(self.alphas.items())

    def named_weights(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("alphas.")]

    def weights(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weights()]

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.stem_bn(self.stem(x)))
        for cell, edge in zip(CELL_TYPES, self.edges, strict=True):
            h = edge(h, F.softmax(self.alphas[cell], dim=-1))
        return self.head(h.mean(dim=(2, 3)))


def cross_entropy(call, batch):
    inputs, targets = batch
    return F.cross_entropy(call(inputs), targets)


def make_batch(seed: int, size: int = 8) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(size, 2, 4, 4, generator=gen, dtype=torch.float64)
    return inputs, torch.randint(0, 3, (size,), generator=gen)


TRAIN, VAL = make_batch(1), make_batch(2)


def make_setup(
    tied: bool = False, momentum: float = MOMENTUM, warm_steps: int = 2
) -> tuple[TinySupernet, torch.optim.SGD]:
    """A model after `warm_steps` real SGD steps: momentum buffers and BN statistics are set."""
    torch.manual_seed(0)
    model = TinySupernet(tied=tied).double().train()
    w_opt = torch.optim.SGD(model.weights(), lr=ETA, momentum=momentum, weight_decay=W_DECAY)
    for step in range(warm_steps):
        w_opt.zero_grad()
        cross_entropy(model, make_batch(100 + step)).backward()
        w_opt.step()
    return model, w_opt


def architect(model, w_opt, **cfg) -> Architect:
    return Architect(model, w_opt, cross_entropy, ArchConfig(**cfg))


# -- exact references, built with torch autograd on a copy of the model ------------------------


def split(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Weights and α (α requiring grad), detached copies keyed by named_parameters() names."""
    weights = {n: p.detach().clone() for n, p in model.named_weights()}
    alphas = {
        n: p.detach().clone().requires_grad_()
        for n, p in model.named_parameters()
        if n.startswith("alphas.")
    }
    return weights, alphas


def loss_at(model, weights, alphas, batch) -> Tensor:
    return cross_entropy(lambda x: functional_call(model, {**weights, **alphas}, (x,)), batch)


def keyed(alphas: dict[str, Tensor], grads) -> dict[str, Tensor]:
    return {n.removeprefix("alphas."): g for n, g in zip(alphas, grads, strict=True)}


def momentum_terms(model, w_opt) -> dict[str, Tensor]:
    """momentum·buf per weight, zero where SGD has no buffer yet."""
    terms = {}
    for name, p in model.named_weights():
        buf = w_opt.state.get(p, {}).get("momentum_buffer")
        momentum = w_opt.param_groups[0]["momentum"]
        terms[name] = momentum * buf if buf is not None else torch.zeros_like(p)
    return terms


def clip_total_norm(tensors: list[Tensor], max_norm: float) -> tuple[list[Tensor], float]:
    norm = torch.sqrt(sum((t**2).sum() for t in tensors)).item()
    coef = min(1.0, max_norm / (norm + 1e-6))
    return [t * coef for t in tensors], coef


def exact_mixed_hvp(model, batch, vector) -> dict[str, Tensor]:
    """∇²_{α,w} L(w, α) · vector by double backward."""
    ref = copy.deepcopy(model)
    weights, alphas = split(ref)
    weights = {n: w.requires_grad_() for n, w in weights.items()}
    grads = torch.autograd.grad(
        loss_at(ref, weights, alphas, batch), list(weights.values()), create_graph=True
    )
    inner = sum((g * vector[n]).sum() for n, g in zip(weights, grads, strict=True))
    return keyed(alphas, torch.autograd.grad(inner, list(alphas.values())))


def true_unrolled_gradient(model, w_opt, eta) -> dict[str, Tensor]:
    """d/dα L_val(w'(α), α) with w'(α) = w − η(momentum·buf + ∇w L_train(w, α) + wd·w)."""
    momentum = momentum_terms(model, w_opt)
    ref = copy.deepcopy(model)
    weights, alphas = split(ref)
    weights = {n: w.requires_grad_() for n, w in weights.items()}
    grads = torch.autograd.grad(
        loss_at(ref, weights, alphas, TRAIN), list(weights.values()), create_graph=True
    )
    unrolled = {
        n: w - eta * (momentum[n] + g + W_DECAY * w)
        for (n, w), g in zip(weights.items(), grads, strict=True)
    }
    val_loss = loss_at(ref, unrolled, alphas, VAL)
    return keyed(alphas, torch.autograd.grad(val_loss, list(alphas.values())))


def chain_rule_gradient(model, w_opt, eta, clip=None) -> tuple[dict[str, Tensor], float, float]:
    """∇α L_val(w', α) − η·c ∇²_{α,w} L_train(w, α) · v, v = ∇w' L_val(w', α), factors exact.

    With `clip`, g and v are clipped (coefficients c and c_v, also returned); else c = c_v = 1.
    """
    momentum = momentum_terms(model, w_opt)
    ref = copy.deepcopy(model)
    weights, alphas = split(ref)
    leaves = {n: w.clone().requires_grad_() for n, w in weights.items()}
    grads = torch.autograd.grad(loss_at(ref, leaves, alphas, TRAIN), list(leaves.values()))
    coef = coef_v = 1.0
    if clip is not None:
        grads, coef = clip_total_norm(list(grads), clip)
    unrolled = {
        n: (w - eta * (momentum[n] + g + W_DECAY * w)).requires_grad_()
        for (n, w), g in zip(weights.items(), grads, strict=True)
    }
    val_grads = torch.autograd.grad(
        loss_at(ref, unrolled, alphas, VAL), [*alphas.values(), *unrolled.values()]
    )
    d_alpha = keyed(alphas, val_grads[: len(alphas)])
    vector = list(val_grads[len(alphas) :])
    if clip is not None:
        vector, coef_v = clip_total_norm(vector, clip)
    hvp = exact_mixed_hvp(model, TRAIN, dict(zip(unrolled, vector, strict=True)))
    return {k: d_alpha[k] - eta * coef * hvp[k] for k in d_alpha}, coef, coef_v


def relative_error(approx: dict[str, Tensor], exact: dict[str, Tensor]) -> float:
    diff = torch.cat([(approx[k] - exact[k]).flatten() for k in exact])
    return (diff.norm() / torch.cat([e.flatten() for e in exact.values()]).norm()).item()


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


# -- the mathematics ---------------------------------------------------------------------------


def test_finite_difference_matches_exact_mixed_second_derivative():
    model, w_opt = make_setup()
    gen = torch.Generator().manual_seed(3)
    vector = {
        n: torch.randn(p.shape, generator=gen, dtype=torch.float64)
        for n, p in model.named_weights()
    }
    exact = exact_mixed_hvp(model, TRAIN, vector)
    errors = [
        relative_error(
            architect(model, w_opt, order=2, fd_scale=r).hessian_vector_product(TRAIN, vector),
            exact,
        )
        for r in (1e-2, 1e-3, 1e-4)
    ]
    # Observed 1.3e-4, 1.3e-6, 1.3e-8: the O(R²) truncation error of the central difference.
    # At DARTS' R = 1e-2 it is set by this tiny model's third derivatives (BatchNorm over 128
    # values per channel), and it shrinks by 100 per decade of R, as it must.
    assert errors[0] < 1e-3
    assert errors[1] < 1e-5
    assert errors[2] < 1e-7


@pytest.mark.parametrize(
    "setup, training",
    [({}, True), ({"tied": True}, True), ({}, False), ({"warm_steps": 0}, True)],
    ids=["train-mode", "tied-weights", "eval-mode", "no-momentum-buffer"],
)
def test_second_order_gradient_matches_gradient_through_the_unrolled_step(setup, training):
    model, w_opt = make_setup(**setup)
    model.train(training)
    unrolled = true_unrolled_gradient(model, w_opt, ETA)
    chain_rule, _, _ = chain_rule_gradient(model, w_opt, ETA)
    # The Hessian in the chain rule is evaluated at w, where the recipe's finite difference
    # is taken: the recipe's target quantity *is* the gradient through the explicit one-step
    # update (observed ≤ 5e-17, rounding), so its only approximation is the finite difference.
    assert relative_error(chain_rule, unrolled) < 1e-12
    first_order = architect(model, w_opt, order=1).arch_gradient(TRAIN, VAL, ETA)
    assert relative_error(first_order, unrolled) > 1e-2  # the implicit term matters (~0.1)
    for fd_scale, tolerance in ((1e-2, 2e-4), (1e-4, 2e-8)):
        second_order = architect(model, w_opt, order=2, fd_scale=fd_scale)
        grads = second_order.arch_gradient(TRAIN, VAL, ETA)
        # Observed 4e-5 / 4e-9 (train mode, untied): the finite-difference error, damped by η.
        assert relative_error(grads, unrolled) < tolerance


def test_first_order_gradient_is_exactly_the_validation_gradient():
    model, w_opt = make_setup()
    grads = architect(model, w_opt, order=1).arch_gradient(TRAIN, VAL, ETA)
    ref = copy.deepcopy(model)
    exact = torch.autograd.grad(cross_entropy(ref, VAL), list(ref.alphas.values()))
    for key, g in zip(CELL_TYPES, exact, strict=True):
        assert torch.equal(grads[key], g)


def test_unrolled_clip_clips_the_training_gradient_and_v():
    model, w_opt = make_setup(momentum=0.0)  # the RNN search: plain SGD
    unclipped = architect(model, w_opt, order=2).arch_gradient(TRAIN, VAL, ETA)
    clipped = architect(model, w_opt, order=2, unrolled_clip=RNN_CLIP, fd_scale=1e-4)
    exact, coef, coef_v = chain_rule_gradient(model, w_opt, ETA, clip=RNN_CLIP)
    assert coef < 0.5 and coef_v < 1  # both clips are active here
    grads = clipped.arch_gradient(TRAIN, VAL, ETA)
    assert relative_error(grads, exact) < 1e-8  # observed 2e-9
    assert relative_error(grads, unclipped) > 1e-2
    loose = architect(model, w_opt, order=2, unrolled_clip=1e6).arch_gradient(TRAIN, VAL, ETA)
    for key in CELL_TYPES:  # a clip that does not bite changes nothing, to the bit
        assert torch.equal(loose[key], unclipped[key])


# -- side effects ------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("training", [True, False], ids=["train-mode", "eval-mode"])
def test_step_changes_only_alpha(order, training):
    model, w_opt = make_setup()
    model.train(training)
    for p in model.weights():
        p.grad = torch.full_like(p, 0.5)
    before = snapshot(model)
    buffers = {p: s["momentum_buffer"].clone() for p, s in w_opt.state.items()}
    stats = architect(model, w_opt, order=order).step(TRAIN, VAL, ETA)
    after = model.state_dict()
    for name, value in before.items():
        if name.startswith("alphas."):
            assert not torch.equal(after[name], value), name
        else:  # weights, BN running statistics and num_batches_tracked
            assert torch.equal(after[name], value), name
    assert model.training is training
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.weights())
    assert w_opt.state.keys() == buffers.keys()
    assert all(torch.equal(w_opt.state[p]["momentum_buffer"], b) for p, b in buffers.items())
    assert set(stats) == {"val_loss", "arch_grad_norm"}


def graph_tensors() -> list[Tensor]:
    """The tensors alive in this process that hold an autograd graph."""
    return [o for o in gc.get_objects()
            if issubclass(type(o), torch.Tensor) and o.grad_fn is not None]


def test_second_order_frees_the_validation_graph_before_the_finite_difference(monkeypatch):
    gc.collect()
    earlier = graph_tensors()  # other tests' leftovers, held so that their ids stay theirs
    known = {id(t) for t in earlier}
    alive = []
    finite_difference = Architect._finite_difference

    def spy(self, *args):
        alive.extend(t for t in graph_tensors() if id(t) not in known)
        return finite_difference(self, *args)

    monkeypatch.setattr(Architect, "_finite_difference", spy)
    model, w_opt = make_setup()
    architect(model, w_opt, order=2).step(TRAIN, VAL, ETA)
    assert alive == []


def test_arch_gradient_has_no_side_effects():
    model, w_opt = make_setup()
    before = snapshot(model)
    grads_before = {n: p.grad.clone() for n, p in model.named_parameters()}  # from the warm-up
    arch = architect(model, w_opt, order=2)
    arch.arch_gradient(TRAIN, VAL, ETA)
    assert all(torch.equal(model.state_dict()[n], t) for n, t in before.items())
    assert all(torch.equal(p.grad, grads_before[n]) for n, p in model.named_parameters())
    assert not arch.optimizer.state


def test_step_is_one_adam_step_on_the_arch_gradient():
    model, w_opt = make_setup()
    cfg = ArchConfig(order=2, lr=1e-2)
    arch = Architect(model, w_opt, cross_entropy, cfg)
    grads = arch.arch_gradient(TRAIN, VAL, ETA)
    expected = {k: a.detach().clone().requires_grad_() for k, a in model.arch_parameters().items()}
    adam = torch.optim.Adam(
        expected.values(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )
    for key, alpha in expected.items():
        alpha.grad = grads[key]
    adam.step()
    arch.step(TRAIN, VAL, ETA)
    for key, alpha in model.arch_parameters().items():
        assert torch.equal(alpha, expected[key])


def test_state_dict_resumes_the_alpha_optimizer():
    model, w_opt = make_setup()
    arch = architect(model, w_opt, lr=1e-2)
    arch.step(TRAIN, VAL, ETA)
    resumed_model = copy.deepcopy(model)
    resumed_w_opt = torch.optim.SGD(resumed_model.weights(), lr=ETA)
    resumed = architect(resumed_model, resumed_w_opt, lr=1e-2)
    resumed.load_state_dict(arch.state_dict())
    fresh_model = copy.deepcopy(model)
    fresh = architect(fresh_model, torch.optim.SGD(fresh_model.weights(), lr=ETA), lr=1e-2)
    for each in (arch, resumed, fresh):
        each.step(TRAIN, VAL, ETA)
    for key in CELL_TYPES:
        assert torch.equal(resumed_model.alphas[key], model.alphas[key])
        assert not torch.equal(fresh_model.alphas[key], model.alphas[key])


# -- the Sect. 3.3 ablations -------------------------------------------------------------------


def test_coordinate_descent_steps_alpha_on_its_own_batch_only():
    model, w_opt = make_setup()
    coordinate = architect(model, w_opt)
    union_batch = make_batch(7)  # the search loop draws it from train ∪ val
    first_order = architect(model, w_opt, order=1).arch_gradient(TRAIN, union_batch, ETA)
    grads = coordinate.arch_gradient(make_batch(8), union_batch, ETA)
    assert all(torch.equal(grads[k], first_order[k]) for k in CELL_TYPES)
    before = snapshot(model)
    coordinate.step(TRAIN, union_batch, ETA)
    after = model.state_dict()
    for name, value in before.items():
        assert torch.equal(after[name], value) != name.startswith("alphas."), name


def test_joint_step_moves_alpha_and_w_from_one_backward():
    model, w_opt = make_setup()
    cfg = ArchConfig(lr=1e-2)
    ref = copy.deepcopy(model)
    ref_w_opt = torch.optim.SGD(ref.weights(), lr=ETA, momentum=MOMENTUM, weight_decay=W_DECAY)
    ref_w_opt.load_state_dict(copy.deepcopy(w_opt.state_dict()))  # shares tensors
    ref_adam = torch.optim.Adam(
        ref.arch_parameters().values(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )
    before = snapshot(model)

    arch = Architect(model, w_opt, cross_entropy, cfg)
    stats = arch.joint_step(TRAIN, w_grad_clip=0.1)

    ref.zero_grad()
    loss = cross_entropy(ref, TRAIN)
    loss.backward()
    assert torch.nn.utils.clip_grad_norm_(ref.weights(), 0.1) > 0.1  # the clip bites
    ref_adam.step()
    ref_w_opt.step()
    assert stats == {"train_loss": loss.item()}
    after, expected = model.state_dict(), ref.state_dict()
    for name, value in before.items():
        assert torch.equal(after[name], expected[name]), name
        assert not torch.equal(after[name], value), name  # a real step: BN statistics too


# -- configuration errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"order": 3}, r"unknown order 3; valid: \(1, 2\)"),
        ({"fd_scale": 0.0}, "fd_scale must be positive"),
        ({"unrolled_clip": 0.0}, "unrolled_clip must be positive"),
    ],
)
def test_invalid_configs_are_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        ArchConfig(**fields)


def test_w_optimizer_must_match_the_unrolled_step():
    model, _ = make_setup(warm_steps=0)
    with pytest.raises(ValueError, match="holds arch parameters"):
        architect(model, torch.optim.SGD(model.parameters(), lr=ETA))
    with pytest.raises(TypeError, match="order 2 unrolls an SGD step; got Adam"):
        architect(model, torch.optim.Adam(model.weights()), order=2)
    nesterov = torch.optim.SGD(model.weights(), lr=ETA, momentum=MOMENTUM, nesterov=True)
    with pytest.raises(ValueError, match="without nesterov"):
        architect(model, nesterov, order=2)
    with pytest.raises(ValueError, match=r"missing from the w optimizer.*'head\.bias'"):
        architect(model, torch.optim.SGD(model.weights()[:-1], lr=ETA), order=2)
