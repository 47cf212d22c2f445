"""Tests of runtime/recurrent.py against hand-written DARTS RNN cells (quark0/darts rnn/)."""

from __future__ import annotations

import math
import pickle
import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import spacec
from spacec.runtime.nn import recurrent as recurrent_module
from spacec.runtime.nn.recurrent import (
    ACTIVATION_SLOPES,
    ACTIVATIONS,
    INITRANGE,
    HighwayInit,
    LockedDropout,
    NodeNorm,
    RecurrentLM,
    SharedHighway,
    decoded_nll,
    decoded_nll_reference,
    dropout_mask,
    embedded_dropout,
    highway_edge,
    mix_edges,
    mix_edges_reference,
    repackage_hidden,
)
from spacec.runtime.relax.softmax import Softmax

# rnn/genotypes.py
PRIMITIVES = ("none", "tanh", "relu", "sigmoid", "identity")
COLUMNS = tuple((k, name) for k, name in enumerate(PRIMITIVES) if name != "none")
DARTS_V2 = (
    ("sigmoid", 0),
    ("relu", 1),
    ("relu", 1),
    ("identity", 1),
    ("tanh", 2),
    ("sigmoid", 5),
    ("tanh", 3),
    ("relu", 5),
)
NO_DROPOUT = {"dropout": 0.0, "dropouth": 0.0, "dropoutx": 0.0, "dropouti": 0.0, "dropoute": 0.0}


class TinySupernet(RecurrentLM):
    """What the compiler generates for a dense search cell of `steps` nodes."""

    def __init__(self, ntoken: int, ninp: int, nhid: int, steps: int = 3, mix=mix_edges,
                 **kwargs) -> None:
        super().__init__(ntoken, ninp, nhid, **kwargs)
        self.mix = mix
        self.init_node = HighwayInit(ninp, nhid)
        self.node_maps = nn.ModuleList(SharedHighway(nhid) for _ in range(steps))
        self.norm = NodeNorm(nhid)  # one for s0 and all nodes, as the reference's `self.bn`
        edges = steps * (steps + 1) // 2
        alpha = 1e-3 * torch.randn(edges, len(PRIMITIVES))
        self.alphas = nn.ParameterDict({"recurrent": nn.Parameter(alpha)})

    def arch_parameters(self) -> dict[str, nn.Parameter]:
        return dict(self.alphas)

    def step_context(self) -> torch.Tensor:
        return F.softmax(self.alphas["recurrent"], dim=-1)

    def cell_step(self, x_t, h_prev, x_mask, h_mask, probs):
        states = self.norm(self.init_node(x_t, h_prev, x_mask, h_mask)).unsqueeze(0)
        offset = 0
        for node, node_map in enumerate(self.node_maps):
            c, h = node_map(states, h_mask)
            rows = probs[offset : offset + node + 1]
            s = self.norm(self.mix(states, c, h, rows, COLUMNS))
            states = torch.cat([states, s.unsqueeze(0)])
            offset += node + 1
        return states[1:].mean(dim=0)


class TinyDerived(RecurrentLM):
    """What the compiler generates for a derived cell (rnn/model.py DARTSCell)."""

    def __init__(self, ntoken: int, ninp: int, nhid: int, recurrent=DARTS_V2, **kwargs) -> None:
        super().__init__(ntoken, ninp, nhid, **kwargs)
        self.recurrent = recurrent
        self.init_node = HighwayInit(ninp, nhid)
        self.node_maps = nn.ModuleList(SharedHighway(nhid) for _ in recurrent)

    def cell_step(self, x_t, h_prev, x_mask, h_mask, context):
        states = [self.init_node(x_t, h_prev, x_mask, h_mask)]
        for (fn, source), node_map in zip(self.recurrent, self.node_maps, strict=True):
            c, h = node_map(states[source], h_mask)
            states.append(highway_edge(states[source], c, h, fn))
        return torch.stack(states[1:]).mean(dim=0)


def weight_count(model: nn.Module) -> int:
    """Parameters other than α (the reference keeps α outside `parameters()`); tied counted once."""
    alphas = (
        {id(p) for p in model.arch_parameters().values()}
        if isinstance(model, TinySupernet)
        else set()
    )
    return sum(p.numel() for p in model.parameters() if id(p) not in alphas)


def tokens(steps: int, batch: int, ntoken: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(ntoken, (steps, batch), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tensors here are tiny: on a loaded machine, intra-op threads cost far more than they give.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def supernet() -> TinySupernet:
    torch.manual_seed(0)
    return TinySupernet(ntoken=11, ninp=6, nhid=6, steps=3)


# ---- activations --------------------------------------------------------------------------------


def test_activations_are_the_reference_four():
    x = torch.linspace(-3, 3, 13)
    assert sorted(ACTIVATIONS) == ["identity", "relu", "sigmoid", "tanh"]
    assert torch.equal(ACTIVATIONS["tanh"](x), torch.tanh(x))
    assert torch.equal(ACTIVATIONS["relu"](x), torch.relu(x))
    assert torch.equal(ACTIVATIONS["sigmoid"](x), torch.sigmoid(x))
    assert ACTIVATIONS["identity"](x) is x


def test_unknown_activation_lists_the_known_ones():
    with pytest.raises(KeyError) as info:
        ACTIVATIONS["gelu"]
    assert str(info.value) == "unknown activation 'gelu'; known: identity, relu, sigmoid, tanh"
    with pytest.raises(KeyError, match="known: identity"):
        HighwayInit(4, 4, fn="gelu")


# ---- cell blocks --------------------------------------------------------------------------------


def test_highway_init_is_the_reference_formula():
    torch.manual_seed(1)
    init = HighwayInit(ninp=3, nhid=4, fn="relu")
    assert init.weight.shape == (7, 8)
    assert init.weight.abs().max() <= INITRANGE
    x, h = torch.randn(5, 3), torch.randn(5, 4)
    x_mask, h_mask = dropout_mask((5, 3), 0.5), dropout_mask((5, 4), 0.5)
    ch = torch.cat([x * x_mask, h * h_mask], dim=-1) @ init.weight
    c0, h0 = ch[:, :4].sigmoid(), ch[:, 4:].relu()
    assert torch.allclose(init(x, h, x_mask, h_mask), h + c0 * (h0 - h))
    ch = torch.cat([x, h], dim=-1) @ init.weight
    assert torch.allclose(init(x, h), h + ch[:, :4].sigmoid() * (ch[:, 4:].relu() - h))


def test_shared_highway_masks_its_input_and_keeps_leading_dims():
    torch.manual_seed(2)
    node_map = SharedHighway(4)
    states, h_mask = torch.randn(3, 5, 4), dropout_mask((5, 4), 0.25)
    c, h = node_map(states, h_mask)
    assert c.shape == h.shape == (3, 5, 4)
    for i in range(3):
        ch = (states[i] * h_mask) @ node_map.weight
        assert torch.allclose(c[i], ch[:, :4].sigmoid())
        assert torch.allclose(h[i], ch[:, 4:])
    c2, h2 = node_map(states[0])
    assert c2.shape == (5, 4)
    assert torch.allclose(h2, states[0] @ node_map.weight[:, 4:])


def test_mix_edges_equals_an_explicit_double_loop():
    torch.manual_seed(3)
    n, batch, nhid = 3, 4, 5
    states, c, h = (
        torch.randn(n, batch, nhid),
        torch.rand(n, batch, nhid),
        torch.randn(n, batch, nhid),
    )
    weights = torch.softmax(torch.randn(n, len(PRIMITIVES)), dim=-1)
    expected = torch.zeros(batch, nhid)
    for i in range(n):
        for k, name in enumerate(PRIMITIVES):
            if name != "none":
                edge = highway_edge(states[i], c[i], h[i], name)
                expected += weights[i, k] * edge
    assert torch.allclose(mix_edges(states, c, h, weights, COLUMNS), expected, atol=1e-6)
    assert torch.equal(mix_edges(states, c, h, weights, ()), torch.zeros(batch, nhid))


@pytest.mark.parametrize("mix", [mix_edges, mix_edges_reference])
def test_mix_edges_rejects_mismatched_weight_rows(mix):
    states = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="3 rows of weights for 2 source states"):
        mix(states, states, states, torch.zeros(3, 5), COLUMNS)


def mix_inputs(n: int, dtype=torch.float64, seed: int = 5) -> list[torch.Tensor]:
    """states, c (a gate in (0, 1)), h, and weights rows (softmax) of a node with n sources."""
    generator = torch.Generator().manual_seed(seed)
    shape = (n, 3, 4)
    states = torch.randn(shape, generator=generator, dtype=dtype)
    c = torch.rand(shape, generator=generator, dtype=dtype)
    h = torch.randn(shape, generator=generator, dtype=dtype)
    weights = torch.softmax(torch.randn(n, 5, generator=generator, dtype=dtype), dim=-1)
    return [x.requires_grad_() for x in (states, c, h, weights)]


# Every activation, a subset whose columns are not consecutive, and a constant-slope one alone.
MIX_COLUMNS = [COLUMNS, ((2, "relu"), (4, "identity"), (1, "sigmoid")), ((4, "identity"),)]


@pytest.mark.parametrize("columns", MIX_COLUMNS, ids=["all", "subset", "identity"])
@pytest.mark.parametrize("n", [1, 4])
def test_fused_mix_equals_the_reference_loop_and_its_gradients(n, columns):
    inputs = mix_inputs(n)
    fused = mix_edges(*inputs, columns)
    plain = mix_edges_reference(*inputs, columns)
    assert torch.allclose(fused, plain, rtol=1e-12, atol=1e-12)
    grad = torch.randn(fused.shape, generator=torch.Generator().manual_seed(1), dtype=fused.dtype)
    for got, want in zip(torch.autograd.grad(fused, inputs, grad),
                         torch.autograd.grad(plain, inputs, grad), strict=True):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    # The 'none' column (0) and the unlisted ones get exactly zero gradient.
    d_weights = torch.autograd.grad(mix_edges(*inputs, columns), inputs[3], grad)[0]
    unlisted = [k for k in range(5) if k not in {column for column, _ in columns}]
    assert torch.equal(d_weights[:, unlisted], torch.zeros(n, len(unlisted), dtype=fused.dtype))


def test_fused_mix_passes_gradcheck():
    assert torch.autograd.gradcheck(lambda *x: mix_edges(*x, MIX_COLUMNS[1]), mix_inputs(3))


def test_fused_mix_computes_only_the_gradients_asked_for():
    states, c, h, weights = mix_inputs(2)
    (d_h,) = torch.autograd.grad(mix_edges(states, c.detach(), h, weights.detach(), COLUMNS), h,
                                 torch.ones(3, 4, dtype=states.dtype))
    expected = torch.autograd.grad(mix_edges_reference(states, c, h, weights, COLUMNS), h,
                                   torch.ones(3, 4, dtype=states.dtype))[0]
    assert torch.allclose(d_h, expected, rtol=1e-12, atol=1e-12)


def test_fused_mix_refuses_a_second_derivative():
    inputs = mix_inputs(2)
    (d_h,) = torch.autograd.grad(mix_edges(*inputs, COLUMNS).sum(), inputs[2], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        d_h.sum().backward()


def test_activation_slopes_are_the_autograd_derivatives():
    assert list(ACTIVATION_SLOPES) == list(ACTIVATIONS)
    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.7], dtype=torch.float64, requires_grad=True)
    for name, fn in ACTIVATIONS.items():
        y = fn(x)
        (expected,) = torch.autograd.grad(y.sum(), x)
        slope = torch.as_tensor(ACTIVATION_SLOPES[name](x.detach(), y.detach()), dtype=x.dtype)
        assert torch.allclose(slope.expand_as(x), expected, rtol=1e-12, atol=1e-12), name


def test_node_norm_is_batch_norm_without_affine():
    norm = NodeNorm(7)
    assert isinstance(norm, nn.BatchNorm1d)
    assert not norm.affine and list(norm.parameters()) == []
    out = norm(torch.randn(16, 7) * 3 + 2)
    assert torch.allclose(out.mean(0), torch.zeros(7), atol=1e-5)


@pytest.mark.parametrize("mix", [mix_edges_reference, mix_edges])
def test_search_cell_matches_the_reference_cell(supernet, mix):
    # DARTSCellSearch.cell, transcribed: one loop over PRIMITIVES per node, masked map input.
    # The plain loop reproduces it bit for bit; the fused mix regroups the sum (float rounding).
    model = supernet
    model.mix = mix
    x, h_prev = torch.randn(4, 6), torch.randn(4, 6)
    x_mask, h_mask = dropout_mask((4, 6), 0.75), dropout_mask((4, 6), 0.25)
    probs = F.softmax(model.alphas["recurrent"], dim=-1)
    bn = model.norm
    xh = torch.cat([x * x_mask, h_prev * h_mask], dim=-1) @ model.init_node.weight
    s0 = bn(h_prev + xh[:, :6].sigmoid() * (xh[:, 6:].tanh() - h_prev))
    states, offset = s0.unsqueeze(0), 0
    for i, node_map in enumerate(model.node_maps):
        ch = (states * h_mask).view(-1, 6).mm(node_map.weight).view(i + 1, -1, 12)
        c, h = ch[..., :6].sigmoid(), ch[..., 6:]
        s = torch.zeros_like(s0)
        for k, name in enumerate(PRIMITIVES):
            if name == "none":
                continue
            unweighted = states + c * (ACTIVATIONS[name](h) - states)
            s += torch.sum(probs[offset : offset + i + 1, k][:, None, None] * unweighted, dim=0)
        states = torch.cat([states, bn(s).unsqueeze(0)])
        offset += i + 1
    expected = states[-3:].mean(dim=0)
    got = model.cell_step(x, h_prev, x_mask, h_mask, probs)
    if mix is mix_edges_reference:
        assert torch.equal(got, expected)
    else:
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_derived_cell_matches_the_reference_cell():
    # DARTSCell.cell with DARTS_V2, transcribed.
    torch.manual_seed(4)
    model = TinyDerived(ntoken=9, ninp=5, nhid=5)
    x, h_prev, h_mask = torch.randn(3, 5), torch.randn(3, 5), dropout_mask((3, 5), 0.25)
    xh = torch.cat([x, h_prev * h_mask], dim=-1) @ model.init_node.weight
    states = [h_prev + xh[:, :5].sigmoid() * (xh[:, 5:].tanh() - h_prev)]
    for i, (name, pred) in enumerate(DARTS_V2):
        ch = (states[pred] * h_mask) @ model.node_maps[i].weight
        c, h = ch[:, :5].sigmoid(), ACTIVATIONS[name](ch[:, 5:])
        states.append(states[pred] + c * (h - states[pred]))
    expected = torch.mean(torch.stack([states[i] for i in range(1, 9)], -1), -1)
    got = model.cell_step(x, h_prev, None, h_mask, None)
    assert torch.allclose(got, expected, atol=1e-6)


# ---- dropout ------------------------------------------------------------------------------------


def test_dropout_mask_values_and_rate():
    mask = dropout_mask((200, 50), 0.75, generator=torch.Generator().manual_seed(0))
    assert set(mask.unique().tolist()) == {0.0, 4.0}
    assert abs((mask > 0).float().mean().item() - 0.25) < 0.02
    assert torch.equal(dropout_mask((3, 4), 0.0), torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        dropout_mask((3, 4), 1.0)


def test_locked_dropout_shares_its_mask_across_time():
    drop = LockedDropout()
    x = torch.ones(7, 4, 9)
    out = drop(x, 0.5)
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    assert all(torch.equal(out[t], out[0]) for t in range(7))
    assert 0 < (out == 0).sum() < out.numel()
    assert drop(x, 0.0) is x
    drop.eval()
    assert drop(x, 0.5) is x


def test_locked_dropout_generator_makes_it_reproducible():
    x = torch.randn(3, 5, 6)
    first = LockedDropout()(x, 0.3, generator=torch.Generator().manual_seed(7))
    second = LockedDropout()(x, 0.3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)
    assert LockedDropout.mask(x.shape, 0.3).shape == (1, 5, 6)


def test_embedded_dropout_drops_whole_words_and_rescales():
    torch.manual_seed(5)
    embed = nn.Embedding(10, 4)
    words = torch.arange(10).repeat(6, 1)  # every word in every row
    out = embedded_dropout(embed, words, 0.5, generator=torch.Generator().manual_seed(1))
    for word in range(10):
        column = out[:, word]
        assert torch.equal(column, column[:1].expand_as(column))  # same fate everywhere
        kept = torch.allclose(column[0], embed.weight[word] * 2)
        assert kept or torch.equal(column[0], torch.zeros(4))
    dropped = (out[0] == 0).all(dim=-1).sum().item()
    assert 0 < dropped < 10
    assert torch.equal(embedded_dropout(embed, words, 0.0), embed(words))


# ---- the language model -------------------------------------------------------------------------


def test_forward_shapes_and_reference_layout(supernet):
    model = supernet
    hidden = model.init_hidden(4)
    assert len(hidden) == 1 and hidden[0].shape == (1, 4, 6) and not hidden[0].any()
    log_prob, new_hidden, raw, dropped = model(tokens(5, 4, 11), hidden, return_h=True)
    assert log_prob.shape == (5, 4, 11)
    assert torch.allclose(log_prob.exp().sum(-1), torch.ones(5, 4), atol=1e-5)
    assert len(new_hidden) == 1 and new_hidden[0].shape == (1, 4, 6)
    assert len(raw) == len(dropped) == 1
    assert raw[0].shape == dropped[0].shape == (5, 4, 6)
    assert torch.equal(new_hidden[0][0], raw[0][-1])
    assert len(model(tokens(5, 4, 11), hidden)) == 2


def test_forward_rejects_bad_hidden_and_empty_input(supernet):
    with pytest.raises(ValueError, match=r"shape \(1, 4, 6\)"):
        supernet(tokens(3, 4, 11), supernet.init_hidden(3))
    with pytest.raises(ValueError, match="no time steps"):
        supernet(torch.zeros(0, 4, dtype=torch.long), supernet.init_hidden(4))


def test_eval_forward_is_the_reference_computation(supernet):
    model = supernet.eval()
    data = tokens(4, 3, 11)
    hidden = [torch.randn(1, 3, 6)]
    log_prob, _ = model(data, hidden)
    h, outs = hidden[0][0], []
    for t in range(4):
        h = model.cell_step(model.encoder(data[t]), h, None, None, model.step_context())
        outs.append(h)
    logits = model.decoder(torch.stack(outs).view(-1, 6))
    assert torch.allclose(log_prob, F.log_softmax(logits, -1).view(4, 3, 11), atol=1e-6)


def test_gradient_reaches_alpha_w0_and_every_shared_map(supernet):
    model = supernet.train()
    model.dropoute = 0.1  # exercise every dropout on the way
    log_prob, _ = model(tokens(6, 5, 11), model.init_hidden(5))
    F.nll_loss(log_prob.view(-1, 11), tokens(6, 5, 11, seed=1).view(-1)).backward()
    grads = {
        "alpha": model.alphas["recurrent"].grad,
        "W0": model.init_node.weight.grad,
        "encoder": model.encoder.weight.grad,
        "decoder bias": model.decoder.bias.grad,
        **{f"W{i + 1}": m.weight.grad for i, m in enumerate(model.node_maps)},
    }
    for name, grad in grads.items():
        assert grad is not None and grad.abs().sum() > 0, name


def test_masks_are_drawn_once_per_forward_and_only_in_training():
    seen = []

    class Recording(TinyDerived):
        def cell_step(self, x_t, h_prev, x_mask, h_mask, context):
            seen.append((x_mask, h_mask))
            return super().cell_step(x_t, h_prev, x_mask, h_mask, context)

    torch.manual_seed(6)
    model = Recording(ntoken=7, ninp=4, nhid=4)
    model(tokens(5, 3, 7), model.init_hidden(3))
    assert len(seen) == 5
    x_mask, h_mask = seen[0]
    assert x_mask.shape == h_mask.shape == (3, 4)
    assert all(x is x_mask and h is h_mask for x, h in seen)
    seen.clear()
    model.eval()(tokens(5, 3, 7), model.init_hidden(3))
    assert all(x is None and h is None for x, h in seen)


def test_eval_is_deterministic_and_training_is_not(supernet):
    data, hidden = tokens(5, 4, 11), supernet.init_hidden(4)
    supernet.train()
    assert not torch.equal(supernet(data, hidden)[0], supernet(data, hidden)[0])
    supernet.eval()
    assert torch.equal(supernet(data, hidden)[0], supernet(data, hidden)[0])


def test_hidden_state_carries_across_calls(supernet):
    model = supernet.eval()
    data = tokens(8, 3, 11)
    whole, whole_hidden = model(data, model.init_hidden(3))
    first, hidden = model(data[:5], model.init_hidden(3))
    second, last_hidden = model(data[5:], repackage_hidden(hidden))
    assert torch.allclose(torch.cat([first, second]), whole, atol=1e-6)
    assert torch.allclose(last_hidden[0], whole_hidden[0], atol=1e-6)


def test_repackage_hidden_detaches_and_keeps_containers(supernet):
    _, hidden = supernet(tokens(3, 4, 11), supernet.init_hidden(4))
    assert hidden[0].grad_fn is not None
    detached = repackage_hidden(hidden)
    assert isinstance(detached, list) and detached[0].grad_fn is None
    assert not detached[0].requires_grad and torch.equal(detached[0], hidden[0])
    nested = repackage_hidden((hidden[0], [hidden[0]]))
    assert isinstance(nested, tuple) and isinstance(nested[1], list)
    assert nested[1][0].grad_fn is None
    with pytest.raises(TypeError, match="Tensor or a list/tuple"):
        repackage_hidden({"h": hidden[0]})


def test_tied_weights_are_one_tensor(supernet):
    assert supernet.decoder.weight is supernet.encoder.weight
    assert supernet.encoder.weight.abs().max() <= INITRANGE
    assert not supernet.decoder.bias.any()
    untied = TinySupernet(ntoken=11, ninp=6, nhid=6, tied=False)
    assert untied.decoder.weight is not untied.encoder.weight
    assert untied.decoder.weight.abs().max() <= INITRANGE


def test_tied_weights_need_equal_sizes_but_untied_do_not():
    with pytest.raises(ValueError, match="ninp == nhid"):
        TinySupernet(ntoken=11, ninp=4, nhid=6)
    model = TinySupernet(ntoken=11, ninp=4, nhid=6, tied=False)
    log_prob, hidden = model(tokens(3, 2, 11), model.init_hidden(2))
    assert log_prob.shape == (3, 2, 11) and hidden[0].shape == (1, 2, 6)


def test_dropout_rates_are_validated():
    with pytest.raises(ValueError, match="dropouth must be in"):
        TinySupernet(ntoken=11, ninp=6, nhid=6, dropouth=1.0)


def test_defaults_are_the_search_scripts():
    model = TinySupernet(ntoken=11, ninp=6, nhid=6)
    rates = (model.dropout, model.dropouth, model.dropoutx, model.dropouti, model.dropoute)
    assert rates == (0.75, 0.25, 0.75, 0.2, 0.0)


@pytest.mark.parametrize("ntoken, nhid, steps", [(11, 6, 3), (7, 4, 2)])
def test_parameter_count_formula(ntoken, nhid, steps):
    model = TinySupernet(ntoken=ntoken, ninp=nhid, nhid=nhid, steps=steps)
    expected = ntoken * nhid + (2 * nhid) ** 2 + steps * nhid * 2 * nhid + ntoken
    assert weight_count(model) == expected
    assert model.alphas["recurrent"].numel() == steps * (steps + 1) // 2 * len(PRIMITIVES)
    untied = TinySupernet(ntoken=ntoken, ninp=nhid, nhid=nhid, steps=steps, tied=False)
    assert weight_count(untied) == expected + ntoken * nhid


def test_parameter_counts_of_the_paper_models():
    # Search supernet, PTB (train_search.py: 300/300): α is a loose Variable in the reference.
    search = TinySupernet(ntoken=10000, ninp=300, nhid=300, steps=8)
    assert weight_count(search) == 3_000_000 + 360_000 + 1_440_000 + 10_000 == 4_810_000
    del search
    # Evaluation model (train.py: 850/850), the paper's 23M.
    evaluation = TinyDerived(ntoken=10000, ninp=850, nhid=850)
    assert weight_count(evaluation) == 8_500_000 + 2_890_000 + 11_560_000 + 10_000 == 22_960_000


def test_supernet_works_under_functional_call(supernet):
    # The architect runs the model through torch.func.functional_call on substituted tensors.
    model = supernet.eval()
    data, hidden = tokens(4, 3, 11), model.init_hidden(3)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    params["alphas.recurrent"] = params["alphas.recurrent"] * 10
    direct = model(data, hidden)[0]
    substituted = functional_call(model, params, (data, hidden))[0]
    assert not torch.allclose(direct, substituted)
    with torch.no_grad():
        model.alphas["recurrent"].mul_(10)
    assert torch.allclose(model(data, hidden)[0], substituted, atol=1e-6)


def test_modules_pickle_with_their_activation():
    init = pickle.loads(pickle.dumps(HighwayInit(3, 4, fn="identity")))
    assert init.fn == "identity" and "fn=identity" in repr(init)


def batchify(corpus: torch.Tensor, batch: int) -> torch.Tensor:
    return corpus[: corpus.numel() // batch * batch].view(batch, -1).t().contiguous()


def perplexity(model: RecurrentLM, data: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        log_prob, _ = model(data[:-1], model.init_hidden(data.shape[1]))
        loss = F.nll_loss(log_prob.view(-1, model.ntoken), data[1:].reshape(-1))
    return math.exp(loss.item())


def train(model: RecurrentLM, data: torch.Tensor, steps: int = 30, bptt: int = 8) -> list[float]:
    """The reference recipe (rnn/train.py: SGD lr 20, --clip 0.25, hidden carried and detached).

    Returns the training perplexity of every step.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=20.0)
    hidden, history = model.init_hidden(data.shape[1]), []
    for step in range(steps):
        start = (step * bptt) % (data.shape[0] - bptt - 1)
        inputs, targets = data[start : start + bptt], data[start + 1 : start + 1 + bptt]
        model.train()
        hidden = repackage_hidden(hidden)
        log_prob, hidden = model(inputs, hidden)
        loss = F.nll_loss(log_prob.view(-1, model.ntoken), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()
        history.append(math.exp(loss.item()))
    return history


def test_perplexity_falls_on_a_two_word_corpus():
    torch.manual_seed(0)
    data = batchify(torch.tensor([0, 1] * 62), batch=4)  # "a b a b ...", [31, 4]
    model = TinyDerived(ntoken=2, ninp=8, nhid=8, **NO_DROPOUT)
    before = perplexity(model, data)
    train(model, data)
    assert before > 1.9
    assert perplexity(model, data) < 1.5


def test_supernet_training_perplexity_falls_on_a_cyclic_corpus():
    # Not "a b a b": with two distinct inputs per batch, a BatchNorm'd feature is the sign of a
    # difference, so the supernet's loss jumps whenever that difference crosses zero. Five
    # words in five phases keep it smooth. Training mode: in eval the one shared NodeNorm
    # (as in the reference) applies running statistics pooled over s0 and every node.
    torch.manual_seed(0)
    data = batchify(torch.arange(5).repeat(42), batch=8)  # "a b c d e a ...", [26, 8]
    model = TinySupernet(ntoken=5, ninp=8, nhid=8, steps=2, **NO_DROPOUT)
    history = train(model, data)
    assert history[0] > 4.5
    assert statistics.median(history[-5:]) < 1.5


# ---- the fused node mix inside generated supernets -----------------------------------------------


class PlainSoftmax(Softmax):
    """The softmax relaxation with the reference's op-by-op node mix: the plain path."""

    def mix_node(self, states, c, h, weights, columns):
        return mix_edges_reference(states, c, h, weights, columns)


# A second recurrent space: explicit edges (not dense), a single output node, an untied decoder,
# and ops whose non-zero columns are not consecutive.
SPARSE_SPACE = """\
ops r { tanh = activation(fn=tanh)  none = zero  relu = activation(fn=relu)  identity = activation(fn=identity) }
cell rec {
    inputs x, h
    nodes s0, s1, s2, s3
    fixed (x, h) -> s0 : highway_init(fn=tanh)
    edge s0 -> s1 : r
    edge s0, s1 -> s2 : r
    edge s1, s2 -> s3 : r
    share highway per node
    search_norm batch_norm
    output s3
    derive topk(k=1, exclude=[none])
}
network language_model { tokens 13  embedding 6  hidden 5  step rec  decoder untied }
"""


def loss_and_gradients(model: nn.Module, words: torch.Tensor) -> tuple[torch.Tensor, dict]:
    model.train()
    torch.manual_seed(7)  # the same dropout masks in both models
    log_prob, _ = model(words[:-1], model.init_hidden(words.shape[1]))
    loss = F.nll_loss(log_prob.view(-1, model.ntoken), words[1:].reshape(-1))
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in model.named_parameters() if p.requires_grad])
    return loss.detach(), dict(zip(names, grads, strict=True))


@pytest.mark.parametrize("space_text", [None, SPARSE_SPACE], ids=["darts_rnn", "sparse"])
def test_fused_supernet_equals_the_plain_path(space_text, load_text):
    space = (load_text(space_text) if space_text
             else spacec.load("darts_rnn", ntoken=17, ninp=6, nhid=6))
    torch.manual_seed(0)
    fused = space.supernet()
    plain = space.supernet(relaxation=PlainSoftmax())
    plain.load_state_dict(fused.state_dict())
    with torch.no_grad():  # α away from uniform, so that every op's weight matters
        for alpha in fused.arch_parameters().values():
            alpha.normal_()
        plain.load_state_dict(fused.state_dict())
    words = tokens(5, 4, fused.ntoken, seed=2)
    fused_loss, fused_grads = loss_and_gradients(fused, words)
    plain_loss, plain_grads = loss_and_gradients(plain, words)
    assert torch.allclose(fused_loss, plain_loss, rtol=1e-6, atol=0)
    assert fused_grads.keys() == plain_grads.keys()
    assert any(name.startswith("arch.") for name in fused_grads)
    for name, grad in fused_grads.items():
        assert torch.allclose(grad, plain_grads[name], rtol=1e-4, atol=1e-7), name


def test_compile_steps_has_every_time_step_call_the_compiled_step(supernet):
    model = supernet.eval()
    data, hidden = tokens(5, 3, 11), [torch.randn(1, 3, 6)]
    expected, _ = model(data, hidden)
    wrapped, calls = [], []

    def compile_(step):
        wrapped.append(step)

        def compiled_step(*args):
            calls.append(args[0].shape)
            return step(*args)

        return compiled_step

    parameters = list(model.parameters())
    model.compile_steps(compile_)
    model.compile_steps(compile_)  # idempotent: the step is wrapped once
    assert len(wrapped) == 1 and wrapped[0] == TinySupernet.cell_step.__get__(model)
    got, _ = model(data, hidden)
    assert calls == [torch.Size([3, 6])] * 5  # one call per time step, the step's own input
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert all(a is b for a, b in zip(model.parameters(), parameters, strict=True))


@pytest.mark.parametrize("steps", [2, 5, 7])
def test_compile_steps_unrolled_runs_whole_runs_then_single_steps(supernet, steps):
    """With unroll 3 a sequence's steps go 3 at a time through one compiled function, the rest
    one at a time; the loss is bit for bit the eager one, and so is every gradient up to the
    order in which the inputs' slices sum the embedding's."""
    data, hidden = tokens(steps + 1, 3, 11), [torch.randn(1, 3, 6)]
    expected_loss, expected = loss_and_gradients(supernet, data)
    wrapped, calls = [], []

    def compile_(function):
        wrapped.append(function)

        def compiled(*args):
            calls.append(tuple(args[0].shape))
            return function(*args)

        return compiled

    supernet.compile_steps(compile_, unroll=3)
    assert len(wrapped) == 2 and vars(supernet)["_steps_per_graph"] == 3
    got_loss, got = loss_and_gradients(supernet, data)
    whole = steps // 3
    assert calls == [(3, 3, 6)] * whole + [(3, 6)] * (steps - 3 * whole)
    torch.testing.assert_close(got_loss, expected_loss, rtol=0, atol=0)
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-6, atol=1e-7, msg=name)
    calls.clear()
    supernet.eval()
    out, new_hidden = supernet(data[:-1], hidden)
    assert out.shape == (steps, 3, 11) and new_hidden[0].shape == (1, 3, 6)
    assert len(calls) == whole + steps - 3 * whole


def test_compile_steps_refuses_an_unroll_below_one(supernet):
    with pytest.raises(ValueError, match="unroll must be >= 1, got 0"):
        supernet.compile_steps(lambda step: step, unroll=0)
    assert "cell_step" not in vars(supernet)


# ---------------------------------------------------------------- the fused loss head


def _head(ntoken=37, nhid=5, rows=23, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    decoder = nn.Linear(nhid, ntoken).to(dtype)
    with torch.no_grad():
        decoder.weight.copy_(torch.randn(ntoken, nhid, generator=gen, dtype=dtype))
        decoder.bias.copy_(torch.randn(ntoken, generator=gen, dtype=dtype))
    hidden = torch.randn(rows, nhid, generator=gen, dtype=dtype, requires_grad=True)
    targets = torch.randint(ntoken, (rows,), generator=gen)
    return hidden, decoder, targets


def _loss_and_grads(loss_fn, hidden, decoder, targets, scale=1.0):
    for p in (hidden, *decoder.parameters()):
        p.grad = None
    loss = loss_fn(hidden, decoder, targets)
    (scale * loss).backward()
    return loss.detach(), hidden.grad, decoder.weight.grad, decoder.bias.grad


@pytest.mark.parametrize("block_bytes", [1 << 20, 64, 8 * 37 * 5])  # one, per-row, 5-row blocks
def test_decoded_nll_is_the_reference_loss_and_gradient(monkeypatch, block_bytes):
    monkeypatch.setattr(recurrent_module, "_HEAD_BLOCK_BYTES", block_bytes)
    hidden, decoder, targets = _head()
    fused = _loss_and_grads(decoded_nll, hidden, decoder, targets, scale=3.0)
    reference = _loss_and_grads(decoded_nll_reference, hidden, decoder, targets, scale=3.0)
    for got, want in zip(fused, reference, strict=True):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_decoded_nll_float32_matches_within_rounding_and_skips_unneeded_gradients():
    hidden, decoder, targets = _head(ntoken=1000, nhid=16, rows=70, dtype=torch.float32)
    decoder.bias.requires_grad_(False)
    fused = _loss_and_grads(decoded_nll, hidden, decoder, targets)
    reference = _loss_and_grads(decoded_nll_reference, hidden, decoder, targets)
    assert fused[3] is None and reference[3] is None
    for got, want in zip(fused[:3], reference[:3], strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)


def test_decoded_nll_refuses_a_second_backward_through_spent_logits():
    hidden, decoder, targets = _head()
    loss = decoded_nll(hidden, decoder, targets)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward pass"):
        loss.backward()


def _saved_logits(loss):
    """The [N, ntoken] storage a DecodedNLL loss saved for its backward pass."""
    return loss.grad_fn.saved_tensors[2]


@pytest.fixture
def spare_logits(monkeypatch):
    spare = recurrent_module._SpareLogits()
    monkeypatch.setattr(recurrent_module, "_SPARE_LOGITS", spare)
    return spare


def test_decoded_nll_lends_its_logits_to_the_next_step_and_stays_exact(spare_logits):
    # Rows 23, then fewer (a view of the spare), then more (a new allocation, kept as spare).
    pointers = []
    for rows in (23, 11, 23, 31):
        hidden, decoder, targets = _head(rows=rows, seed=rows)
        loss = decoded_nll(hidden, decoder, targets)
        pointers.append(_saved_logits(loss).data_ptr())
        fused = _loss_and_grads(lambda *_, loss=loss: loss, hidden, decoder, targets, scale=2.0)
        reference = _loss_and_grads(decoded_nll_reference, hidden, decoder, targets, scale=2.0)
        for got, want in zip(fused, reference, strict=True):
            assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    assert pointers[1] == pointers[2] == pointers[0]
    assert pointers[3] != pointers[0]
    assert spare_logits.spare[torch.float64].numel() == 31 * 37


def test_decoded_nll_without_a_graph_hands_its_logits_back_at_once(spare_logits):
    hidden, decoder, targets = _head()
    with torch.no_grad():
        loss = decoded_nll(hidden, decoder, targets)
    assert torch.allclose(loss, decoded_nll_reference(hidden, decoder, targets), rtol=1e-12)
    assert spare_logits.spare[torch.float64].numel() == 23 * 37


def test_decoded_nll_losses_alive_together_keep_their_own_logits(spare_logits):
    heads = [_head(seed=seed) for seed in (1, 2)]
    _loss_and_grads(decoded_nll, *heads[0])  # leaves a spare behind
    losses = [decoded_nll(*head) for head in heads]
    assert _saved_logits(losses[0]).data_ptr() != _saved_logits(losses[1]).data_ptr()
    for loss, head in zip(reversed(losses), reversed(heads), strict=True):
        fused = _loss_and_grads(lambda *_, loss=loss: loss, *head)
        reference = _loss_and_grads(decoded_nll_reference, *head)
        for got, want in zip(fused, reference, strict=True):
            assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_forward_with_targets_returns_the_nll_of_its_log_probabilities(supernet):
    model = supernet.train()
    data, targets = tokens(6, 5, 11), tokens(6, 5, 11, seed=1).view(-1)
    torch.manual_seed(3)  # the same dropout masks for both calls
    log_prob, hidden, raw, dropped = model(data, model.init_hidden(5), True)
    torch.manual_seed(3)
    loss, hidden_t, raw_t, dropped_t = model(data, model.init_hidden(5), True, targets)
    assert loss.dim() == 0
    assert torch.allclose(loss, F.nll_loss(log_prob.view(-1, 11), targets), atol=1e-6)
    for a, b in zip((*hidden, *raw, *dropped), (*hidden_t, *raw_t, *dropped_t), strict=True):
        assert torch.equal(a, b)


def test_decode_nll_is_an_instance_seam(supernet):
    calls = []

    def head(hidden, decoder, targets):
        calls.append(hidden.shape)
        return decoded_nll_reference(hidden, decoder, targets)

    supernet.decode_nll = head
    supernet(tokens(3, 2, 11), supernet.init_hidden(2), False, tokens(3, 2, 11).view(-1))
    assert calls == [(6, 6)]
