"""spacec.runtime.nn.state: a module's tensors by name without walking its tree each time, and
calls on substituted tensors, against torch's own named_parameters / functional_call."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

import spacec
from spacec.runtime.nn import state


def tiny_cnn():
    torch.manual_seed(0)
    return spacec.load("darts_cnn", C=4, layers=2).supernet()


def tiny_rnn():
    torch.manual_seed(0)
    return spacec.load("darts_rnn", ntoken=20, ninp=8, nhid=8).supernet()


@pytest.mark.parametrize("build", [tiny_cnn, tiny_rnn])
def test_the_names_and_tensors_are_torchs(build):
    model = build()
    assert list(state.parameters(model).items()) == list(model.named_parameters())
    assert list(state.buffers(model).items()) == list(model.named_buffers())


def test_a_tied_parameter_is_named_once_and_held_in_each_place():
    model = tiny_rnn()
    assert model.decoder.weight is model.encoder.weight
    assert "decoder.weight" not in state.parameters(model)
    places = state.places(model).parameters["encoder.weight"]
    assert {(type(owner).__name__, attr) for owner, attr in places} == {
        (type(model.encoder).__name__, "weight"), (type(model.decoder).__name__, "weight")}


def test_tensors_are_read_afresh_after_a_conversion():
    model = tiny_cnn()
    state.parameters(model)  # the places found and kept
    model.double()  # buffers are replaced by new tensors, parameters keep their objects
    assert list(state.buffers(model).items()) == list(model.named_buffers())
    assert all(t.dtype == torch.float64 for t in state.parameters(model).values())


def substitutes(model):
    """New values for every parameter and, for BatchNorm, fresh copies of the buffers."""
    torch.manual_seed(1)
    given = {name: torch.randn_like(p) for name, p in model.named_parameters()}
    given.update({name: b.clone() for name, b in model.named_buffers()})
    return given


def test_a_call_on_substituted_tensors_equals_functional_call():
    model = tiny_cnn()
    images = torch.randn(2, 3, 8, 8)
    own = {name: p.clone() for name, p in model.named_parameters()}
    given = substitutes(model)
    torch_given = {name: t.clone() for name, t in given.items()}
    ours = state.call_with(model, given, images)
    theirs = functional_call(model, torch_given, (images,))
    assert torch.equal(ours, theirs)
    # The same running statistics were updated in the substituted buffers, none of the model's.
    for name, _ in model.named_buffers():
        assert torch.equal(given[name], torch_given[name])
    for name, p in model.named_parameters():
        assert torch.equal(p, own[name])


def test_the_tied_weight_is_substituted_in_each_place():
    model = tiny_rnn().eval()
    words = torch.randint(20, (5, 2))
    given = {"encoder.weight": torch.randn_like(model.encoder.weight)}
    ours, _ = state.call_with(model, given, words, model.init_hidden(2))
    theirs, _ = functional_call(model, given, (words, model.init_hidden(2)))
    assert torch.equal(ours, theirs)
    assert model.decoder.weight is model.encoder.weight  # put back as it was


def test_gradients_flow_to_the_substituted_tensors():
    model = tiny_cnn()
    images = torch.randn(2, 3, 8, 8)
    given = {name: p.detach().clone().requires_grad_() for name, p in model.named_parameters()}
    torch_given = {name: p.detach().clone().requires_grad_() for name, p in given.items()}
    state.call_with(model, given, images).sum().backward()
    functional_call(model, torch_given, (images,)).sum().backward()
    for name in given:
        assert (given[name].grad is None) == (torch_given[name].grad is None), name
        if given[name].grad is not None:
            assert torch.equal(given[name].grad, torch_given[name].grad), name
    assert all(p.grad is None for p in model.parameters())


class Failing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def forward(self, x):
        raise RuntimeError("inside")


def test_the_module_gets_its_own_tensors_back_when_the_call_raises():
    model = Failing()
    weight = model.linear.weight
    with pytest.raises(RuntimeError, match="inside"):
        state.call_with(model, {"linear.weight": torch.zeros(2, 2)}, torch.ones(2))
    assert model.linear.weight is weight


def test_an_unknown_name_is_refused_and_nothing_is_left_substituted():
    model = Failing()
    weight = model.linear.weight
    given = {"linear.weight": torch.zeros(2, 2), "linear.scale": torch.ones(1)}
    with pytest.raises(KeyError, match="linear.scale"), state.substituted(model, given):
        pass
    assert model.linear.weight is weight
