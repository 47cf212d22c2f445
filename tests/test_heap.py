"""The cyclic collector during a run's loop (spacec.runtime.run.heap.frozen_setup)."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from spacec.runtime.run.heap import frozen_setup
from spacec.runtime.search.config import load_config
from spacec.runtime.search.loop import start_search
from spacec.runtime.train.config import load_train_config
from spacec.runtime.train.loop import Trainer, start_training


@pytest.fixture(autouse=True)
def _no_freeze_left():
    assert gc.get_freeze_count() == 0
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    assert gc.get_freeze_count() == 0, "a test left objects frozen"


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_objects_made_before_are_frozen_and_handed_back_after():
    before = Node()
    with frozen_setup():
        assert gc.get_freeze_count() > 0
        during = Node()
        held_before, held_during = weakref.ref(before), weakref.ref(during)
        del before, during
        gc.collect()
        # What the loop made is collected; what existed on entry is not walked.
        assert held_during() is None
        assert held_before() is not None
    gc.collect()
    assert held_before() is None  # handed back: collected once unreachable


def test_cyclic_garbage_made_before_entry_is_collected_on_entry():
    garbage = Node()
    held = weakref.ref(garbage)
    del garbage
    with frozen_setup():
        assert held() is None


def test_an_exception_in_the_loop_unfreezes():
    with pytest.raises(RuntimeError, match="loop failed"), frozen_setup():
        raise RuntimeError("loop failed")
    assert gc.get_freeze_count() == 0


def test_nested_or_with_the_collector_disabled_it_changes_nothing():
    with frozen_setup():
        frozen = gc.get_freeze_count()
        Node()
        with frozen_setup():
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen  # the inner exit unfroze nothing
    gc.disable()
    try:
        with frozen_setup():
            assert gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_a_search_steps_with_its_setup_frozen(tmp_path):
    counts = []
    cfg = load_config("quick", {"space.name": "nas_bench_201", "space.overrides.C": 2,
                                "space.overrides.N": 1, "data.batch_size": 8, "data.limit": 16,
                                "optim.epochs": 1, "run.threads": 1,
                                "run.out": str(tmp_path / "runs")})
    start_search(cfg, on_step=lambda step: counts.append(gc.get_freeze_count()))
    assert counts and all(count > 0 for count in counts)


def test_a_training_steps_with_its_setup_frozen(tmp_path, monkeypatch):
    counts = []
    step = Trainer._step

    def counted(self, *args, **kwargs):
        counts.append(gc.get_freeze_count())
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_step", counted)
    cfg = load_train_config("quick", {"space.overrides": {"C": 4, "layers": 3},
                                      "data.limit": 16, "data.batch_size": 8,
                                      "optim.epochs": 1, "run.threads": 1,
                                      "run.out": str(tmp_path / "runs")})
    start_training(cfg, "DARTS_V2")
    assert counts and all(count > 0 for count in counts)
