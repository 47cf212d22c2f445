"""The equations of every search method, checked on single edges, cells and tiny searches.

PC-DARTS with K=1 is DARTS; GDAS runs only its sampled candidate yet reaches every α; the
temperature, β and ε schedules; Dirichlet weights (torch's rsample, their mean); DARTS-'s
auxiliary path; SDARTS's perturbation only in the weight step, α untouched; the FairDARTS and
β-DARTS loss terms against closed forms and finite differences; warm-ups; random_ws's path
training and ranking; the method section of the configuration and `spacec methods`.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from test_check_errors import BASE  # the small valid space the error tests extend

from spacec.arch.derive import STRENGTHS, check_genotype
from spacec.arch.methods import (
    GRADIENT_STRATEGIES,
    METHOD_INFO,
    SAMPLE_STRATEGY,
    describe,
    method_names,
)
from spacec.cli import main
from spacec.runtime.errors import ConfigError
from spacec.runtime.nn import recurrent
from spacec.runtime.nn.ops import MixedEdge
from spacec.runtime.relax.auxskip import AuxiliarySkip, AuxiliarySkipEdge, decayed
from spacec.runtime.relax.dirichlet import Dirichlet, dirichlet_rsample
from spacec.runtime.relax.gumbel import HardGumbel, SoftGumbel
from spacec.runtime.relax.partial import PartialChannels, PartialEdge, channel_shuffle
from spacec.runtime.relax.perturbed import PerturbedSoftmax, clip_rows
from spacec.runtime.relax.sampled import SampledEdge, SampledRows, mix_sampled
from spacec.runtime.relax.softmax import Softmax
from spacec.runtime.run.rundir import RunDir
from spacec.runtime.search.config import from_dict, load_config, method_settings, presets
from spacec.runtime.search.loop import Search
from spacec.runtime.search.methods import (
    METHODS,
    beta_darts_lambda,
    beta_decay,
    zero_one_loss,
)
from spacec.runtime.search.strategy import STRATEGIES

# Candidates of a DARTS edge, α column order: none, max pool, skip, sep conv, dil conv.
CANDIDATES = ((("zero", {}),), (("max_pool", {"kernel": 3}),), (("identity", {}),),
              (("sep_conv", {"kernel": 3}),), (("dil_conv", {"kernel": 3, "dilation": 2}),))
SEPARABLE = 3  # its column


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_search(tmp_path: Path, method: str, space: str = "nas_bench_201", **overrides) -> Search:
    """A Search of a tiny space on a few sample images (one torch thread)."""
    sizes = {"nas_bench_201": {"C": 2, "N": 1}, "darts_cnn": {"C": 4, "layers": 3},
             "darts_rnn": {"ninp": 8, "nhid": 8}}[space]
    rnn = space == "darts_rnn"
    data = {"data.limit": 400, "data.batch_size": 4} if rnn else {"data.limit": 32,
                                                                  "data.batch_size": 8}
    config = {"space.name": space, "method.name": method, "optim.epochs": 2,
              "run.out": str(tmp_path), "run.threads": 1, "run.seed": 3, **data,
              **{f"space.overrides.{k}": v for k, v in sizes.items()}, **overrides}
    return Search.build(load_config("rnn_quick" if rnn else "quick", config))


def first_batches(search: Search):
    return next(iter(search.task.batches(search.epoch, search.step)))


def arch_copy(search: Search) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in search.model.arch_parameters().items()}


# ---------------------------------------------------------------- PC-DARTS


def test_channel_shuffle_is_the_reference_view_transpose():
    x = torch.randn(2, 12, 3, 4)
    reference = x.view(2, 3, 4, 3, 4).transpose(1, 2).contiguous().view(2, 12, 3, 4)
    assert torch.equal(channel_shuffle(x, 3), reference)
    last = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(channel_shuffle(last, 3), reference)


@pytest.mark.parametrize("stride", [1, 2])
def test_a_partial_edge_with_k1_is_the_mixed_edge(stride):
    torch.manual_seed(0)
    mixed = MixedEdge(CANDIDATES, 4, 4, stride)
    partial = PartialEdge(CANDIDATES, 4, 4, stride, k=1, edge_weighted=True)
    partial.load_state_dict(mixed.state_dict())
    x, weights = torch.randn(3, 4, 8, 8), F.softmax(torch.randn(5), dim=0)
    assert torch.equal(partial(x, torch.cat([weights, torch.ones(1)])), mixed(x, weights))


@pytest.mark.parametrize("stride", [1, 2])
def test_only_a_kth_of_the_channels_go_through_the_candidates(stride):
    torch.manual_seed(0)
    edge = PartialEdge(CANDIDATES, 8, 8, stride, k=4, edge_weighted=True)
    x, weights = torch.randn(3, 8, 8, 8), F.softmax(torch.randn(5), dim=0)
    out = edge(x, torch.cat([weights, torch.tensor([0.25])]))
    through = MixedEdge.mix(edge, x[:, :2], weights)  # the candidates, on 2 channels
    rest = x[:, 2:] if stride == 1 else F.max_pool2d(x[:, 2:], 2, 2)
    assert torch.allclose(out, 0.25 * channel_shuffle(torch.cat([through, rest], 1), 4))
    changed = x.clone()
    changed[:, 2:] += 1.0  # the bypassed channels never reach a candidate
    assert torch.equal(MixedEdge.mix(edge, changed[:, :2], weights), through)


def test_pc_darts_with_k1_and_without_edge_weights_is_darts(compiled):
    space = compiled("darts_cnn", C=4, layers=3)
    torch.manual_seed(0)
    darts = space.supernet(relaxation=Softmax())
    pc = space.supernet(relaxation=PartialChannels(k=1, edge_norm=False))
    pc.load_state_dict(darts.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(pc(x), darts(x))


def test_equal_betas_weigh_every_edge_of_a_node_equally_and_derive_as_darts(compiled):
    space = compiled("darts_cnn", C=4, layers=3)
    model = space.supernet(relaxation=PartialChannels(k=1))
    with torch.no_grad():
        for name, tensor in model.arch_parameters().items():
            if name.endswith(".beta"):
                tensor.fill_(0.3)
    weights = model.cell_weights()["normal"][:, -1]  # node n_j has j + 2 incoming edges
    rule = space.rules["normal"]
    for node in rule.nodes:
        rows = list(rule.rows_into(node))
        assert torch.allclose(weights[rows], torch.full((len(rows),), 1 / len(rows)))
    darts = {k: v for k, v in model.arch_values().items() if "." not in k}
    from spacec.arch.derive import derive

    assert model.genotype() == derive(space.name, darts, space.rules)
    assert set(model.arch_values()) == {"normal", "reduce", "normal.beta", "reduce.beta"}


def test_k_must_divide_the_channels(compiled):
    with pytest.raises(ConfigError, match="k=3 must divide"):
        compiled("darts_cnn", C=4, layers=3).supernet(relaxation=PartialChannels(k=3))


def test_alpha_and_beta_stay_frozen_during_the_warmup(tmp_path):
    search = tiny_search(tmp_path, "pc_darts", **{"method.k": 2, "method.warmup_epochs": 1})
    before = arch_copy(search)
    search._step(first_batches(search), 0.025, "warm-up")
    assert all(torch.equal(before[k], v) for k, v in search.model.arch_parameters().items())
    search.epoch = 1
    search._step(first_batches(search), 0.025, "after")
    after = search.model.arch_parameters()
    assert set(before) == {"normal", "normal.beta"}
    assert all(not torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------- GDAS and SNAS


def counted(edge: torch.nn.Module) -> list[int]:
    calls = [0] * len(edge.ops)
    for column, op in enumerate(edge.ops):
        op.register_forward_hook(lambda *_, c=column: calls.__setitem__(c, calls[c] + 1))
    return calls


def test_gdas_runs_only_the_sampled_candidate_and_reaches_every_alpha():
    torch.manual_seed(0)
    relaxation = HardGumbel()
    relaxation.seed(4)
    alpha = torch.nn.Parameter(torch.randn(1, 5))
    edge = SampledEdge(CANDIDATES, 4, 4, 1)
    calls = counted(edge)
    # Sample until a candidate with weights is drawn (the zero one computes nothing either).
    for _ in range(20):
        rows = relaxation.cell_weights({"alpha": alpha}, None)
        if rows.index[0] != 0:
            break
    index = rows.index[0]
    x = torch.randn(2, 4, 6, 6)
    out = edge(x, rows[0])
    assert calls == [1 if c == index else 0 for c in range(5)]
    hard = rows.weights[0]
    assert torch.allclose(hard.detach(), F.one_hot(torch.tensor(index), 5).float(), atol=1e-6)
    assert bool((hard.detach()[[c for c in range(5) if c != index]] == 0).all())
    op = edge.ops[index]
    expected = hard[index] * op(F.relu(x) if index == SEPARABLE else x)
    assert torch.equal(out, expected)
    out.square().mean().backward()
    assert alpha.grad is not None and bool((alpha.grad != 0).all())


def test_gdas_sample_is_the_reference_formula():
    relaxation = HardGumbel(tau_max=10.0, tau_min=0.1)
    relaxation.set_progress(3, 11)
    assert relaxation.tau == pytest.approx(10 - 9.9 * 3 / 10)
    relaxation.seed(1)
    state = relaxation.generator.get_state()
    alpha = torch.randn(6, 5)
    rows = relaxation.cell_weights({"alpha": alpha}, None)
    generator = torch.Generator()
    generator.set_state(state)
    gumbels = -torch.empty(6, 5).exponential_(generator=generator).log()
    probs = F.softmax((F.log_softmax(alpha, -1) + gumbels) / relaxation.tau, dim=-1)
    assert rows.index == tuple(probs.argmax(-1).tolist())
    assert torch.allclose(rows.weights, F.one_hot(probs.argmax(-1), 5) - probs + probs)


def test_gdas_draws_again_when_a_sample_is_not_finite(monkeypatch):
    relaxation = HardGumbel()
    draws = []
    real = relaxation.gumbel

    def first_infinite(shape):
        draws.append(shape)
        noise = real(shape)
        return noise.fill_(math.inf) if len(draws) == 1 else noise

    monkeypatch.setattr(relaxation, "gumbel", first_infinite)
    rows = relaxation.cell_weights({"alpha": torch.zeros(3, 4)}, None)
    assert len(draws) == 2 and bool(torch.isfinite(rows.weights).all())


@pytest.mark.parametrize("epochs", [1, 250])
def test_temperature_schedules(epochs):
    gdas, snas = HardGumbel(10.0, 0.1), SoftGumbel(1.0, 0.03)
    taus = []
    for epoch in range(epochs):
        gdas.set_progress(epoch, epochs)
        snas.set_progress(epoch, epochs)
        taus.append((gdas.tau, snas.tau))
        assert snas.tau == pytest.approx((1 - epoch / epochs) * 0.97 + 0.03)
    assert taus[0] == (10.0, 1.0)
    if epochs > 1:
        assert taus[-1][0] == pytest.approx(0.1)  # GDAS reaches τ_min at the last epoch
        assert taus[125][0] == pytest.approx(10 - 9.9 * 125 / 249)
    official = SoftGumbel(1.0, 0.03, anneal_epochs=150)  # SNAS/utils.py:144 hard-codes 150
    official.set_progress(75, epochs)
    assert official.tau == pytest.approx(0.5 * 0.97 + 0.03)


def test_snas_weights_are_a_soft_gumbel_softmax_of_alpha():
    relaxation = SoftGumbel()
    relaxation.set_progress(0, 10)
    relaxation.seed(2)
    state = relaxation.generator.get_state()
    alpha = torch.randn(4, 5)
    weights = relaxation.cell_weights({"alpha": alpha}, None)
    generator = torch.Generator()
    generator.set_state(state)
    uniform = torch.rand(4, 5, generator=generator)
    expected = F.softmax((alpha - torch.log(-torch.log(uniform))) / relaxation.tau, dim=-1)
    assert torch.allclose(weights, expected)
    assert torch.allclose(weights.sum(-1), torch.ones(4))


def test_a_sampled_recurrent_node_mixes_only_each_edges_sampled_activation():
    states, c, h = torch.randn(3, 2, 4), torch.rand(3, 2, 4), torch.randn(3, 2, 4)
    columns = ((1, "tanh"), (2, "relu"))  # column 0 is `none`
    weights = torch.rand(3, 3, requires_grad=True)
    rows = SampledRows((1, 0, 2), weights)
    out = mix_sampled(states, c, h, rows, columns)
    expected = (weights[0, 1] * recurrent.highway_edge(states[0], c[0], h[0], "tanh")
                + weights[2, 2] * recurrent.highway_edge(states[2], c[2], h[2], "relu")
                + weights[0, [0, 2]].sum() + weights[1, [1, 2]].sum()
                + weights[2, [0, 1]].sum())
    assert torch.allclose(out, expected)
    unweighted = mix_sampled(states, c, h, SampledRows((1, None, 2)), columns)
    assert torch.allclose(unweighted, recurrent.highway_edge(states[0], c[0], h[0], "tanh")
                          + recurrent.highway_edge(states[2], c[2], h[2], "relu"))


# ---------------------------------------------------------------- DrNAS


def test_dirichlet_weights_sum_to_one_and_average_to_the_normalised_concentration():
    generator = torch.Generator().manual_seed(0)
    alpha = torch.tensor([[0.5, -0.3, 1.2, 0.0], [2.0, 0.1, -1.0, 0.4]])
    concentration = F.elu(alpha) + 1
    samples = torch.stack([dirichlet_rsample(concentration, generator) for _ in range(4000)])
    assert torch.allclose(samples.sum(-1), torch.ones(4000, 2), atol=1e-5)
    total = concentration.sum(-1, keepdim=True)
    mean = concentration / total
    standard_error = (mean * (1 - mean) / (total + 1) / len(samples)).sqrt()
    assert bool(((samples.mean(0) - mean).abs() < 4 * standard_error).all())


def test_dirichlet_sample_and_gradient_are_torchs_rsample():
    concentration = torch.tensor([[1.5, 0.7, 2.0], [0.9, 1.1, 3.0]], requires_grad=True)
    torch.manual_seed(11)
    reference = torch.distributions.Dirichlet(concentration).rsample()
    coefficients = torch.randn(2, 3)
    (expected,) = torch.autograd.grad((reference * coefficients).sum(), concentration)
    ours = dirichlet_rsample(concentration, torch.Generator().manual_seed(11))
    (grad,) = torch.autograd.grad((ours * coefficients).sum(), concentration)
    assert torch.equal(ours, reference)
    assert torch.allclose(grad, expected)
    relaxation = Dirichlet()
    weights = relaxation.cell_weights({"alpha": torch.zeros(3, 4)}, None)
    assert weights.shape == (3, 4) and bool((weights > 0).all())


# ---------------------------------------------------------------- DARTS-


def test_the_auxiliary_skip_decays_linearly_to_zero():
    assert [decayed(1.0, e, 0, 50) for e in (0, 25, 49, 50, 60)] == [1.0, 0.5, 0.02, 0.0, 0.0]
    assert decayed(2.0, 3, 5, 10) == 2.0  # before T_start
    relaxation = AuxiliarySkip()
    relaxation.set_progress(10, 40)
    weights = relaxation.cell_weights({"alpha": torch.zeros(2, 5)}, None)
    assert torch.equal(weights[:, -1], torch.full((2,), 0.75))
    assert torch.allclose(weights[:, :-1], torch.full((2, 5), 0.2))


@pytest.mark.parametrize("stride", [1, 2])
def test_the_auxiliary_path_is_the_identity_or_a_factorized_reduce(stride):
    torch.manual_seed(0)
    edge = AuxiliarySkipEdge(CANDIDATES, 4, 4, stride)
    mixed = MixedEdge(CANDIDATES, 4, 4, stride)
    mixed.load_state_dict({k: v for k, v in edge.state_dict().items()
                           if not k.startswith("skip.")})
    x, weights = torch.randn(2, 4, 8, 8), F.softmax(torch.randn(5), dim=0)
    out = edge(x, torch.cat([weights, torch.tensor([0.4])]))
    if stride == 1:
        assert isinstance(edge.skip, torch.nn.Identity)
        assert torch.allclose(out, mixed(x, weights) + 0.4 * x)
    else:
        assert type(edge.skip).__name__ == "FactorizedReduce"
        assert torch.allclose(out, mixed(x, weights) + 0.4 * edge.skip(x))
    assert torch.equal(edge(x, torch.cat([weights, torch.zeros(1)])), mixed(x, weights))


def test_a_recurrent_node_adds_beta_times_each_incoming_state():
    states, c, h = torch.randn(2, 3, 4), torch.rand(2, 3, 4), torch.randn(2, 3, 4)
    weights = torch.cat([F.softmax(torch.randn(2, 3), -1), torch.full((2, 1), 0.6)], dim=1)
    columns = ((1, "tanh"), (2, "sigmoid"))
    out = AuxiliarySkip().mix_node(states, c, h, weights, columns)
    expected = recurrent.mix_edges(states, c, h, weights[:, :3], columns) + 0.6 * states.sum(0)
    assert torch.allclose(out, expected)


# ---------------------------------------------------------------- SDARTS-RS


def test_clipping_clamps_and_renormalises_every_row():
    rows = torch.tensor([[0.5, -0.2, 0.9], [-0.1, -0.3, -0.2]])
    clipped = clip_rows(rows)
    assert torch.allclose(clipped[0], torch.tensor([0.5, 0.0, 0.9]) / 1.4)
    assert torch.equal(clipped[1], torch.tensor([1.0, 0.0, 0.0]))  # the largest entry wins


def test_the_perturbation_grows_linearly_and_applies_in_the_weight_step_only():
    relaxation = PerturbedSoftmax(0.03, 0.3)
    relaxation.set_progress(5, 10)
    assert relaxation.epsilon == pytest.approx(0.165)
    alpha = torch.randn(20, 8)
    plain = relaxation.cell_weights({"alpha": alpha}, None)
    assert torch.equal(plain, F.softmax(alpha, -1))
    state = relaxation.generator.get_state()
    with relaxation.weight_step():
        perturbed = relaxation.cell_weights({"alpha": alpha}, None)
    assert not relaxation.perturbing
    generator = torch.Generator()
    generator.set_state(state)
    noise = 0.165 * (torch.rand(20, 8, generator=generator) * 2 - 1)
    assert torch.allclose(perturbed, clip_rows(plain + noise))
    assert bool(noise.abs().max() <= 0.165) and bool(noise.abs().max() > 0.1)
    assert torch.allclose(perturbed.sum(-1), torch.ones(20))
    assert bool((perturbed >= 0).all()) and not torch.allclose(perturbed, plain)


def test_sdarts_perturbs_only_the_weight_step_and_leaves_alpha_exactly_as_it_was(tmp_path):
    search = tiny_search(tmp_path, "sdarts_rs")
    relaxation = search.model.relaxation
    relaxation.set_progress(1, 2)
    seen = []
    real = relaxation.cell_weights

    def spy(tensors, rule):
        seen.append(relaxation.perturbing)
        return real(tensors, rule)

    relaxation.cell_weights = spy
    batches = first_batches(search)
    search.architect.step(batches.train, batches.val, 0.025)
    assert seen == [False]
    after_arch_step = arch_copy(search)
    search.weight_step(batches.train, "test")
    assert seen == [False, True]
    for name, alpha in search.model.arch_parameters().items():
        assert torch.equal(alpha, after_arch_step[name])  # bit for bit


# ---------------------------------------------------------------- FairDARTS and β-DARTS


def test_the_zero_one_loss_and_its_gradient():
    alpha = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    loss = zero_one_loss(10.0, {"normal": alpha})
    sigma = torch.sigmoid(alpha.detach())
    assert loss.item() == pytest.approx(-10 * ((sigma - 0.5) ** 2).mean().item())
    (grad,) = torch.autograd.grad(loss, alpha)
    closed_form = -10 * 2 * (sigma - 0.5) * sigma * (1 - sigma) / alpha.numel()
    assert torch.allclose(grad, closed_form)
    masked = zero_one_loss(10.0, {"normal": alpha}, {"normal": torch.tensor([True] + [False] * 4)})
    (grad,) = torch.autograd.grad(masked, alpha)
    assert bool((grad[:, 0] == 0).all()) and bool((grad[:, 1:] != 0).all())


def test_the_beta_decay_regulariser_gradient_matches_finite_differences():
    torch.manual_seed(0)
    alphas = {"normal": torch.randn(5, 4, dtype=torch.float64, requires_grad=True),
              "reduce": torch.randn(3, 4, dtype=torch.float64, requires_grad=True),
              "normal.beta": torch.randn(5, dtype=torch.float64)}  # not an α: not regularised
    value = beta_decay(alphas)
    rows = torch.cat([torch.logsumexp(alphas[k], -1) for k in ("normal", "reduce")])
    assert value.item() == pytest.approx(rows.mean().item())
    grads = torch.autograd.grad(value, [alphas["normal"], alphas["reduce"]])
    step = 1e-6
    for key, grad in zip(("normal", "reduce"), grads, strict=True):
        flat = alphas[key].detach().clone().view(-1)
        for index in range(flat.numel()):
            shifted = []
            for sign in (1, -1):
                moved = flat.clone()
                moved[index] += sign * step
                shifted.append(beta_decay({**alphas, key: moved.view_as(alphas[key])}).item())
            numeric = (shifted[0] - shifted[1]) / (2 * step)
            assert grad.view(-1)[index].item() == pytest.approx(numeric, abs=1e-8)
    assert [beta_darts_lambda(describe("beta_darts").params(), e) for e in (0, 49, 99)] == [
        0.0, 24.5, 49.5]


@pytest.mark.parametrize("method", ["beta_darts", "fair_darts"])
def test_the_alpha_step_adds_the_methods_term(tmp_path, method):
    search = tiny_search(tmp_path, method)
    search.epoch = 1
    batches = first_batches(search)
    architect = search.architect
    with_term = architect.arch_gradient(batches.train, batches.val, 0.025)
    penalty, architect.arch_penalty = architect.arch_penalty, None
    without = architect.arch_gradient(batches.train, batches.val, 0.025)
    alphas = {k: v.detach().requires_grad_(True)
              for k, v in search.model.arch_parameters().items()}
    (term,) = torch.autograd.grad(penalty(alphas), [alphas["normal"]])
    assert torch.allclose(with_term["normal"] - without["normal"], term, atol=1e-7)
    assert bool((term != 0).any())


# ---------------------------------------------------------------- random_ws and single-level


def test_random_ws_trains_one_sampled_path_per_step(tmp_path):
    search = tiny_search(tmp_path, "random_ws", space="darts_cnn")
    assert search.architect is None and search.model.arch_parameters() == {}
    calls = []
    for edge in search.model.modules():
        if isinstance(edge, SampledEdge):
            for op in edge.ops:
                op.register_forward_hook(lambda *_: calls.append(1))
    search._step(first_batches(search), 0.025, "test")
    genotype = search.genotype()
    assert check_genotype(genotype, search.compiled.rules) == []
    # one candidate runs per edge of the sampled architecture, in every cell of the network
    cells = [item.name for item in search.model.plan if hasattr(item, "inputs")]
    assert cells == ["normal", "reduce", "reduce"]
    assert len(calls) == sum(len(genotype.cell(name).edges) for name in cells) == 3 * 8
    before = dict(genotype.cells)
    search._step(first_batches(search), 0.025, "test")
    assert dict(search.genotype().cells) != before  # every step draws a new architecture


def test_random_ws_ranking_keeps_the_best_of_the_finalists(tmp_path):
    search = tiny_search(tmp_path, "random_ws", **{"method.samples": 4, "method.eval_batches": 1,
                                                    "method.top": 2})
    relaxation = search.model.relaxation
    search._step(first_batches(search), 0.025, "test")
    state = relaxation.state_dict()
    chosen = search.genotype(final=True)
    assert relaxation.chosen == chosen and check_genotype(chosen, search.compiled.rules) == []
    relaxation.load_state_dict(state)  # draw the same 4 samples again and score them here
    rules = search.model.RULES
    samples = [relaxation.sample(rules) for _ in range(4)]

    def accuracy(cells, batches):
        relaxation.use(cells, rules)
        return search.task.evaluate(search.model, max_batches=batches)["acc"]

    quick = sorted(range(4), key=lambda i: (-accuracy(samples[i], 1), i))[:2]
    best = max(quick, key=lambda i: (accuracy(samples[i], None), -i))
    assert dict(chosen.cells) == samples[best]


def test_random_ws_ranks_a_diverging_path_last_and_goes_on(tmp_path, caplog):
    """A path whose validation is not finite (a random architecture on shared weights may
    diverge where others do not) ranks last, and, as the path an epoch validates, is left out
    of that epoch's figures with a warning instead of stopping the search (the reference
    validates no path between epochs)."""
    search = tiny_search(tmp_path, "random_ws", **{"method.samples": 3, "method.eval_batches": 1,
                                                    "method.top": 3, "optim.epochs": 1})
    relaxation, rules = search.model.relaxation, search.model.RULES
    state = relaxation.state_dict()
    samples = [relaxation.sample(rules) for _ in range(3)]
    relaxation.load_state_dict(state)  # the ranking draws these three again
    evaluate = search.task.evaluate
    scores = iter([])

    def diverging_first(model, max_batches=None):
        figures = evaluate(model, max_batches=max_batches)
        if relaxation.cells == samples[0] or next(scores, None) == "nan":
            return {key: math.nan for key in figures}
        return figures

    search.task.evaluate = diverging_first
    winner = search.genotype(final=True)
    assert dict(winner.cells) != samples[0]  # NaN accuracy would not have sorted last
    scores = iter(["nan"])  # the epoch's own validation diverges
    with caplog.at_level(logging.INFO, logger="spacec.runtime.search.loop"):
        search._finish_epoch(RunDir.create(tmp_path / "runs", "x"), 0.025)
    assert "does not give finite validation figures" in caplog.text
    (epoch_line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1/1")]
    assert "lr=" in epoch_line and "val_" not in epoch_line and search.epoch == 1


def test_single_level_moves_alpha_and_w_from_one_training_batch(tmp_path):
    search = tiny_search(tmp_path, "snas")
    assert search.cfg.arch.mode == "single" and search.strategy.plan.union is False
    batches = first_batches(search)
    assert batches.val is None
    before = arch_copy(search)
    weights = [w.detach().clone() for w in search.model.weights()]
    search._step(batches, 0.025, "test")
    assert not torch.equal(before["normal"], search.model.arch_parameters()["normal"])
    assert any(not torch.equal(a, b) for a, b in zip(weights, search.model.weights(),
                                                     strict=True))


# ---------------------------------------------------------------- configuration and CLI


def test_descriptions_and_implementations_agree():
    assert METHOD_INFO.names() == METHODS.names() == method_names()
    assert set(GRADIENT_STRATEGIES) | {SAMPLE_STRATEGY} == set(STRATEGIES.names())
    for name in method_names():
        info, implementation = describe(name), METHODS[name].builder
        assert set(info.strategies) <= set(STRATEGIES.names())
        if implementation.relaxation is None:
            assert not info.shares_weights
            continue
        relaxation = implementation.build_relaxation(info.params())
        assert relaxation.strengths == info.strengths
        assert info.strengths is None or info.strengths in STRENGTHS


def test_every_method_preset_loads_with_every_preset_it_names():
    for name in method_names():
        for preset in presets():
            if method_settings(name, preset):
                cfg = load_config(preset, {"method.name": name})
                assert cfg.method.name == name


def test_the_method_section_follows_its_name():
    cfg = from_dict({"method": {"name": "pc_darts", "k": 2}})
    assert type(cfg.method).__name__ == "PCDartsParams" and cfg.method.k == 2
    assert cfg.method.warmup_epochs == 15
    with pytest.raises(ConfigError, match=r"method: unknown key\(s\) k; valid: name, tau_max"):
        from_dict({"method": {"name": "gdas", "k": 2}})
    with pytest.raises(ConfigError, match="k must be > 0"):
        from_dict({"method": {"name": "pc_darts", "k": 0}})
    with pytest.raises(ConfigError, match="derive must be one of space, official"):
        from_dict({"method": {"name": "gdas", "derive": "paper"}})


def test_method_presets_merge_into_the_shipped_presets():
    quick = load_config("quick", {"method.name": "pc_darts"})
    assert (quick.arch.lr, quick.method.warmup_epochs, quick.data.batch_size) == (6e-4, 1, 32)
    paper = load_config("paper", {"method.name": "pc_darts", "method.k": 2})
    assert (paper.data.batch_size, paper.optim.lr, paper.arch.order) == (256, 0.1, 1)
    assert paper.method.k == 2  # the command line wins
    assert load_config("quick", {"method.name": "random_ws"}).arch.mode == "sample"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"method.name": "pc_darts", "space.name": "darts_rnn"},
     "'pc_darts' does not apply to sequence spaces"),
    ({"method.name": "random", "space.name": "darts_rnn"}, "'random' does not apply"),
    ({"method.name": "gdas", "arch.order": 2}, "first order"),
    ({"method.name": "random_ws", "arch.mode": "bilevel"}, "runs with arch.mode sample"),
    ({"method.name": "sdarts_rs", "arch.mode": "joint"}, "bilevel or coordinate"),
])
def test_methods_refuse_what_they_do_not_apply_to(overrides, message):
    preset = "rnn_quick" if overrides.get("space.name") == "darts_rnn" else "quick"
    data = {"task": "sequence"} if preset == "rnn_quick" else {}
    with pytest.raises(ConfigError, match=message):
        load_config(preset, {**overrides, **data})


def test_spacec_methods_lists_every_method():
    result = CliRunner().invoke(main, ["methods"])
    assert result.exit_code == 0, result.output
    for name in method_names():
        assert f"\n{name}: " in f"\n{result.output}"
    one = CliRunner().invoke(main, ["methods", "pc_darts"])
    assert "warmup_epochs=15" in one.output and "not the others" in one.output


# ---------------------------------------------------------------- a space's `method` statement

# A tiny image space that names its search method (`method` in the language: spacec.check): the
# small valid space the error tests extend, at C=4.
SPACE_WITH_METHOD = BASE.replace(
    "space tiny\nparam C = 8\n",
    "space tiny_pc\nmethod pc_darts(k=2, warmup_epochs=0)\nparam C = 4\n",
)
assert SPACE_WITH_METHOD != BASE


@pytest.fixture
def space_with_method(tmp_path) -> Path:
    path = tmp_path / "tiny_pc.space"
    path.write_text(SPACE_WITH_METHOD, encoding="utf-8")
    return path


def assembled(space, config="quick", options=None, overrides=None):
    from spacec.runtime.configure import assemble

    return assemble("search", str(space), config, options, None, overrides, "--set")


def test_the_spaces_method_comes_after_the_preset_and_before_the_command_line(
        space_with_method, tmp_path):
    # the preset (quick, with PC-DARTS's settings for it: arch lr 6e-4), then the space
    found = assembled(space_with_method)
    assert found.cfg.method == describe("pc_darts").params(k=2, warmup_epochs=0)
    assert found.cfg.arch.lr == 6e-4 and found.method_note == ""
    assert found.method == {"name": "space file", "k": "space file",
                            "warmup_epochs": "space file"}
    # paper: PC-DARTS's paper settings (batch 256, k=4) under the space's k=2
    paper = assembled(space_with_method, "paper").cfg
    assert (paper.data.batch_size, paper.method.k, paper.method.warmup_epochs) == (256, 2, 0)
    # the command line: --cfg method.k over the space's k, the rest of the space kept
    cfg = assembled(space_with_method, overrides={"method.k": 1})
    assert (cfg.cfg.method.k, cfg.cfg.method.warmup_epochs) == (1, 0)
    assert cfg.method["k"] == "--cfg" and cfg.method["name"] == "space file"
    # --method naming the space's method keeps its parameters; another drops them
    same = assembled(space_with_method, options={"method": "pc_darts"})
    assert same.cfg.method.k == 2 and same.method["name"] == "--method"
    other = assembled(space_with_method, options={"method": "gdas"},
                      overrides={"method.tau_max": 3})
    assert other.cfg.method == describe("gdas").params(tau_max=3.0)
    assert other.cfg.arch.lr == 3e-4  # quick's: GDAS has no quick settings of its own
    assert other.method_note == ("the space's `method pc_darts(k=2, warmup_epochs=0)` gives "
                                 "way to method gdas (--method)")
    # a configuration file of one's own: its method section wins, else the space's applies
    own = tmp_path / "own.yaml"
    own.write_text("method: {name: drnas, warmup_epochs: 3}\n")
    assert assembled(space_with_method, own).cfg.method == describe("drnas").params(
        warmup_epochs=3)
    own.write_text("optim: {epochs: 3}\n")
    assert assembled(space_with_method, own).cfg.method.k == 2


def test_a_preset_brings_the_methods_settings_on_the_command_lines_path_too():
    quick = assembled("darts_cnn", options={"method": "pc_darts"})
    assert (quick.cfg.arch.lr, quick.cfg.method.warmup_epochs) == (6e-4, 1)
    assert quick.method == {"name": "--method", "k": "preset quick",
                            "warmup_epochs": "preset quick"}
    plain = assembled("darts_cnn")
    assert plain.cfg.method.name == "darts" and plain.method == {"name": "default"}


@pytest.mark.slow
def test_a_search_of_a_space_naming_its_method_runs_that_method(space_with_method, tmp_path):
    import yaml

    def search(name: str, *extra: str) -> tuple[dict, dict, str]:
        out = tmp_path / name
        result = CliRunner().invoke(main, [
            "search", str(space_with_method), "--limit", "16", "--batch-size", "8",
            "--epochs", "1", "--threads", "1", "--device", "cpu", "--out", str(out), "-q",
            *extra])
        assert result.exit_code == 0, result.output
        (run,) = out.iterdir()
        config = yaml.safe_load((run / "config.yaml").read_text())
        return json.loads((run / "method.json").read_text()), config["method"], result.stderr

    record, method, shown = search("space")
    assert record["name"] == "pc_darts" and record["strengths"] == "edge_normalized"
    assert method == {"name": "pc_darts", "k": 2, "edge_norm": True, "warmup_epochs": 0}
    assert ("pc_darts (space file); k=2 (space file), edge_norm=True (default), "
            "warmup_epochs=0 (space file)") in shown
    record, method, shown = search("darts", "--method", "darts")
    assert record["name"] == "darts" and method == {"name": "darts"}
    assert "gives way to method darts (--method)" in shown
    record, method, shown = search("k1", "--cfg", "method.k=1")
    assert record["name"] == "pc_darts" and (method["k"], method["warmup_epochs"]) == (1, 0)
    assert "k=1 (--cfg)" in shown


def test_the_method_option_sets_the_method(tmp_path):
    from spacec.cli.options import config_overrides

    overrides = config_overrides("nas_bench_201", (), (), {"method": "gdas"})
    assert overrides["method.name"] == "gdas"


def test_a_run_derives_and_draws_as_its_method_does(tmp_path):
    from spacec.runtime.search.loop import start_search

    cfg = load_config("quick", {"space.name": "nas_bench_201", "space.overrides.C": 2,
                                "space.overrides.N": 1, "method.name": "pc_darts",
                                "method.k": 2, "method.warmup_epochs": 0, "optim.epochs": 1,
                                "data.limit": 16, "data.batch_size": 8,
                                "run.out": str(tmp_path), "run.threads": 1})
    result = start_search(cfg)
    record = json.loads((result.run_dir / "method.json").read_text())
    assert record["strengths"] == "edge_normalized"
    alphas = json.loads((result.run_dir / "alphas" / "epoch_001.json").read_text())
    assert set(alphas) == {"normal", "normal.beta"}
    derived = CliRunner().invoke(main, ["derive", str(result.run_dir), "--json"])
    assert derived.exit_code == 0, derived.output
    shown = CliRunner().invoke(main, ["show", str(result.run_dir)])
    assert shown.exit_code == 0, shown.output
    assert (result.run_dir / "beta_normal.png").is_file()


def test_spacec_derive_applies_the_runs_recorded_derivation_options(tmp_path, compiled):
    from spacec.arch.derive import DeriveOptions, derive
    from spacec.runtime.run.derivation import derive_from_run

    space = compiled("darts_cnn")
    run = tmp_path / "run"
    (run / "alphas").mkdir(parents=True)
    (run / "config.yaml").write_text("space: {name: darts_cnn}\n")
    (run / "space.json").write_text(json.dumps({
        "name": "darts_cnn", "source": "darts_cnn", "sha256": space.spec.sha256,
        "params": dict(space.spec.params)}))
    torch.manual_seed(0)
    alphas = {cell: torch.randn(*rule.shape).tolist() for cell, rule in space.rules.items()}
    (run / "alphas" / "epoch_001.json").write_text(json.dumps(alphas))
    official = DeriveOptions(pairs=True)
    (run / "method.json").write_text(json.dumps({
        "name": "gdas", "relaxation": "gumbel_hard", "strengths": "softmax",
        "derive": official.to_dict()}))
    genotype, epoch = derive_from_run(run)
    assert epoch == 1
    assert genotype == derive("darts_cnn", alphas, space.rules, "softmax", official)
    assert genotype != derive("darts_cnn", alphas, space.rules)  # some node takes two ops


def test_the_data_line_says_which_split_trains_alpha():
    """A single-level method (SNAS) trains α on the weight batch; the line said 'train α' of
    the held-out split, which only validates there."""
    from spacec.runtime.domains.base import BatchPlan

    assert BatchPlan(union=False, arch_stream=True).splits_text("16", "8") == \
        "16 train w, 8 train α"
    assert BatchPlan(union=False, arch_stream=False).splits_text("16", "8") == \
        "16 train w and α, 8 validate"
    assert BatchPlan(union=True, arch_stream=True).splits_text("16", "8") == \
        "16 + 8 train w and α"
    assert BatchPlan(union=False, arch_stream=False, alpha=False).splits_text("16", "8") == \
        "16 train w, 8 validate"  # random_ws: no α


@pytest.mark.parametrize(("method", "order"), [
    ("darts", 2), ("beta_darts", 1), ("fair_darts", 1), ("sdarts_rs", 1), ("darts_minus", 1),
])
def test_a_paper_preset_searches_at_the_methods_own_order(method, order):
    """Each method's official search's α-gradient order, in the image and recurrent paper
    presets (β-DARTS took DARTS' second order: both its scripts run without --unrolled)."""
    from spacec.runtime.search.config import load_config

    for preset in ("paper", "rnn_paper"):
        assert load_config(preset, {"method.name": method}).arch.order == order, preset
