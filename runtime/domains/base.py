"""The domain seam: what a kind of data (images, text) brings to the search and training loops.

A `Domain` is registered once, under the domain name of the spaces it serves
(`spacec.catalog.NETWORK_DOMAINS`: "image", "sequence"). It names its ``data`` configuration
class and preset prefix, and builds the two tasks the loops run on:

- a search task (`SearchTask`) for `spacec.runtime.search.loop`: batches by step (resumable by
  position), the loss the architect differentiates through a functional call, the weight step's
  loss with its regularisers, the end-of-epoch validation;
- a training task (`TrainTask`) for `spacec.runtime.train.loop`: the same, for a derived
  network trained from scratch, plus the final test figures and the report.

Both loops are written once and call only these methods; a new domain is one folder that
registers one `Domain`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from spacec.registry import Registry, UnknownName
from spacec.runtime.errors import ConfigError


@dataclass(frozen=True)
class StepBatches:
    """The data of one step."""

    train: Any  # the w step's batch (also the train batch of a second-order α step)
    val: Any | None = None  # the α step's batch; None when the strategy reads one stream
    lr_scale: float = 1.0  # multiplies the w learning rate for this step only


@dataclass(frozen=True)
class LossOutput:
    loss: Tensor
    metrics: dict[str, float]  # batch means, e.g. {"loss": 2.3, "acc": 0.1}
    weight: float  # what the batch counts for in epoch means (samples, tokens)


@dataclass(frozen=True)
class BatchPlan:
    """Which streams a search strategy reads (spacec.runtime.search.strategy).

    ``union``: the weight stream (and the α stream) read the training and the architecture split
    together instead of one split each; ``arch_stream``: an α batch comes with every step.
    """

    union: bool
    arch_stream: bool
    alpha: bool = True  # False: no α at all (random_ws samples paths)

    def splits_text(self, train: str, held_out: str) -> str:
        """What each split trains, given each split's size (`train`, `held_out`) as text:
        bilevel ``N train w, M train α``; single-level (α on the weight batch) ``N train w and
        α, M validate``; on the union of both ``N + M train w and α``."""
        if not self.alpha:
            return f"{train} train w, {held_out} validate"
        if self.union:
            return f"{train} + {held_out} train w and α"
        if self.arch_stream:
            return f"{train} train w, {held_out} train α"
        return f"{train} train w and α, {held_out} validate"


class Task(abc.ABC):
    """What both loops ask of a domain's data."""

    domain: ClassVar[str]

    @abc.abstractmethod
    def space_params(self, space: Any) -> dict[str, int | float]:
        """Parameters of `space` (the compiled space as written) that the data determines
        (text: the one the network's `tokens` names, the vocabulary's size); an image's classes
        and size are the space's (`check_space`)."""

    def network_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the network beyond the space's parameters (text: dropouts)."""
        return {}

    def bind(self, model: nn.Module) -> None:
        """Called once the model is built, before any batch (text: its initial state)."""
        return None

    def check_space(self, compiled: Any) -> None:
        """Called by both loops with the compiled space before the model is built, before
        anything is written: raise (DataError, saying what was found and what to do) where the
        data and the space disagree."""
        return None

    @abc.abstractmethod
    def steps_in_epoch(self, epoch: int) -> int:
        """Steps of 0-based `epoch` (text: random BPTT lengths vary them by epoch)."""

    @abc.abstractmethod
    def batches(self, epoch: int, start_step: int) -> Iterator[StepBatches]:
        """Steps `start_step`.. of 0-based `epoch`, on the task's device.

        A pure function of (seed, epoch, start_step) and the task's `state_dict`, so that a
        resumed run sees exactly the batches an uninterrupted one would have.
        """

    @abc.abstractmethod
    def train_loss(self, model: nn.Module, batch: Any) -> LossOutput:
        """The weight step's loss on `batch` (with the domain's regularisers) and its metrics."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Metrics of the epoch's evaluation split (no gradients). A search task also takes
        ``max_batches``: only the split's first batches (random_ws's quick scores)."""

    def epoch_metrics(self, means: Mapping[str, float]) -> dict[str, float]:
        """An epoch's mean training metrics as recorded (text adds perplexity)."""
        return dict(means)

    def describe(self) -> str:
        return self.domain

    def state_dict(self) -> dict[str, Any]:
        """Task state a checkpoint must carry beyond (epoch, step)."""
        return {}

    def data_fingerprint(self) -> dict[str, Any]:
        """What a checkpoint records of the data, for a resumed run to check it reads the same
        data again (spacec.runtime.run.checkpoint.check_same_data): sizes, classes, digests."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(f"task {self.domain!r} keeps no state, got keys {sorted(state)}")


class SearchTask(Task):
    """A domain's data for the search loop."""

    @abc.abstractmethod
    def loss(self, call: Callable[..., Tensor], batch: Any) -> Tensor:
        """The loss the architect differentiates; `call(*inputs)` runs the model (no state)."""

    @abc.abstractmethod
    def loss_and_metrics(self, call: Callable[..., Tensor], batch: Any) -> LossOutput:
        """The same loss, with the batch's metrics."""

    def train_loss(self, model: nn.Module, batch: Any) -> LossOutput:
        return self.loss_and_metrics(model, batch)

    def largest_batch(self, batch: int) -> int:
        """The most samples one of this process's steps holds, for a configured per-process
        `batch` (fewer where the data has fewer: what the memory prediction is made for)."""
        return batch


class TrainTask(Task):
    """A domain's data for training a derived network from scratch."""

    split: str  # the split evaluated every epoch, the prefix of its metrics ("test", "val")
    # Methods of the network besides forward that `train_loss` calls (image: the auxiliary
    # head's forward_with_auxiliary): on several processes they too run through DDP.
    forward_methods: ClassVar[tuple[str, ...]] = ()

    def final_scores(self, model: nn.Module) -> dict[str, float]:
        """Figures of the held-back split at the end, with the weights the loop chose (text:
        the test split; empty when the epoch split is already the test split)."""
        return {}

    def data_record(self) -> dict[str, Any]:
        """What a trained network's checkpoint keeps about its data (export reads it)."""
        return {}

    def report_fields(self, model: nn.Module) -> dict[str, Any]:
        """Domain figures of the final report (image: multiply-adds at the input shape)."""
        return {}


@dataclass(frozen=True)
class Best:
    """How the training loop picks its best epoch: the metric, and whether higher is better."""

    metric: str
    higher: bool

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.higher else value < best


@dataclass(frozen=True)
class Domain:
    """One kind of data, registered once."""

    name: str  # the spaces' domain: spacec.catalog.NETWORK_DOMAINS
    data_config: type  # the dataclass of the configuration's `data` section
    preset_prefix: str  # its presets: search_<prefix>quick.yaml, train_<prefix>paper.yaml, ...
    # (data config, batch plan, seed, device, shard=...) -> the search's task; `shard`
    # (spacec.runtime.run.distributed.Shard) is the part of the data this process reads
    search_task: Callable[..., SearchTask]
    # (data config, optim config, evaluation split, seed, device, shard=...) -> the training's task
    train_task: Callable[..., TrainTask]
    best: Best  # how training keeps its best epoch
    report_lines: Callable[[Mapping[str, Any]], list[str]]  # a training report for a terminal
    splits: tuple[str, ...] = ("test",)  # evaluation splits training may use every epoch
    # The dataset names its `data_config` takes (``data.name``), for a message naming the
    # domain of a dataset given to a space of another
    datasets: Callable[[], Iterable[str]] = tuple


DOMAINS = Registry("domain")


def register_domain(domain: Domain) -> Domain:
    DOMAINS.register(domain.name)(domain)
    return domain


def domain(name: str) -> Domain:
    """The registered domain `name`; ConfigError lists the known ones."""
    try:
        return DOMAINS[name].builder
    except UnknownName as error:
        raise ConfigError(str(error)) from None


def data_config_class(task: str) -> type:
    """The `data` section's class of a configuration's task (its domain); ValueError if none."""
    if task not in DOMAINS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(DOMAINS.names())}")
    return DOMAINS[task].builder.data_config
