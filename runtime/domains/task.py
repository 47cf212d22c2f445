"""What the search loop needs to know about a kind of data: the `Task` interface.

The loop (spacec.runtime.search.loop) is the same for every space; a task supplies what differs between
images and text: the data and its order (`batches`, resumable by position), the loss the
architect differentiates (`loss`), the training loss with its metrics (`train_loss`), the
end-of-epoch validation (`evaluate`), per-step batch handling (`StepBatches.lr_scale`; state
carried between steps goes in `state_dict`), and the space parameters the data fixes
(`space_overrides`). Tasks are registered by name; the name is the domain of the spaces they
serve (`spacec.catalog.NETWORK_DOMAINS`: "image", "sequence"; the sequence task is
spacec.runtime.domains.text.language's `LanguageTask`).

Batch order, by architect mode (spacec.runtime.search.architect): ``bilevel`` draws the w batch from the
weights split and the α batch from the architecture split; ``coordinate`` draws both from
train∪val (two independent orders); ``joint`` draws one batch from train∪val.
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from spacec.registry import Registry, UnknownName
from spacec.runtime.domains.image.data import (
    DataError,
    EpochSampler,
    ImageData,
    derive_seed,
    search_loaders,
    start_epoch,
)
from spacec.runtime.run.common import Meter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepBatches:
    """The data of one search step."""

    train: Any  # the w step's batch (also the train batch of a second-order α step)
    val: Any | None  # the α step's batch; None in joint mode
    lr_scale: float = 1.0  # multiplies the w learning rate for this step only


@dataclass(frozen=True)
class LossOutput:
    loss: Tensor
    metrics: dict[str, float]  # batch means, e.g. {"loss": 2.3, "acc": 0.1}
    weight: float  # what the batch counts for in epoch means (samples, tokens)


class Task(abc.ABC):
    """One kind of data for the search loop. Built as ``cls(data_cfg, mode, seed, device)``."""

    name: ClassVar[str]

    @abc.abstractmethod
    def space_overrides(self, declared: Mapping[str, int | float]) -> dict[str, int | float]:
        """Space parameters the data determines, among the `declared` ones (e.g. classes)."""

    @property
    @abc.abstractmethod
    def steps_per_epoch(self) -> int: ...

    def steps_in_epoch(self, epoch: int) -> int:
        """Steps of 0-based `epoch` (a text task's random BPTT lengths vary them by epoch)."""
        return self.steps_per_epoch

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the supernet beyond the space's parameters (a text task's
        dropouts)."""
        return {}

    def bind_model(self, model: nn.Module) -> None:
        """Called once the model is built, before any batch (a text task's initial state)."""
        return None

    @abc.abstractmethod
    def batches(self, epoch: int, start_step: int) -> Iterator[StepBatches]:
        """Steps `start_step`.. of 0-based `epoch`, on the task's device.

        A pure function of (seed, epoch, start_step) and the task's `state_dict`, so that a
        resumed run sees exactly the batches an uninterrupted one would have.
        """

    @abc.abstractmethod
    def loss(self, call: Callable[..., Tensor], batch: Any) -> Tensor:
        """The loss the architect differentiates; `call(*inputs)` runs the model (no state)."""

    @abc.abstractmethod
    def loss_and_metrics(self, call: Callable[..., Tensor], batch: Any) -> LossOutput:
        """The same loss, with the batch's metrics."""

    def train_loss(self, model: nn.Module, batch: Any) -> LossOutput:
        """The w step's loss (a task may add regularisers here)."""
        return self.loss_and_metrics(model, batch)

    @abc.abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics at the end of an epoch (no gradients)."""

    def epoch_metrics(self, means: Mapping[str, float]) -> dict[str, float]:
        """An epoch's mean training metrics as recorded (a text task adds perplexity)."""
        return dict(means)

    def describe(self) -> str:
        return self.name

    def state_dict(self) -> dict[str, Any]:
        """Task state a checkpoint must carry beyond (epoch, step)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(f"task {self.name!r} keeps no state, got keys {sorted(state)}")


TASKS = Registry("task")


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Register a Task class under the domain it serves (duplicate names are rejected)."""

    def register(cls: type[Task]) -> type[Task]:
        cls.name = name
        return TASKS.register(name)(cls)

    return register


def task_class(name: str) -> type[Task]:
    try:
        return TASKS[name].builder
    except UnknownName as error:
        raise ValueError(str(error)) from None


# ---------------------------------------------------------------- image classification


class _Stream:
    """A shuffled loader read as an endless sequence of batches, addressable by step.

    Epoch e's steps read passes ``e * P, e * P + 1, ...`` of the loader's sampler, where P is
    how many passes an epoch needs; a pass's order is the sampler's pure function of its index.
    """

    def __init__(self, loader: DataLoader, steps_per_epoch: int) -> None:
        self.loader = loader
        self.per_pass = full_length(loader)
        self.passes_per_epoch = math.ceil(steps_per_epoch / self.per_pass)

    def iterate(self, epoch: int, start_step: int) -> Iterator[Any]:
        step = start_step
        while True:
            pass_index, offset = divmod(step, self.per_pass)
            start_epoch(self.loader, epoch * self.passes_per_epoch + pass_index, offset)
            for batch in self.loader:
                yield batch
                step += 1


def full_length(loader: DataLoader) -> int:
    """Batches in one whole pass of a shuffled loader, whatever its sampler has skipped."""
    sampler = loader.sampler
    if not isinstance(sampler, EpochSampler):
        raise TypeError(f"loader is not shuffled by an EpochSampler ({type(sampler).__name__})")
    count, batch_size = len(sampler.indices), loader.batch_size
    length = count // batch_size if loader.drop_last else math.ceil(count / batch_size)
    if length == 0:
        raise DataError(f"batch size {batch_size} exceeds the {count} images of a split "
                        "with drop_last set")
    return length


def _loader(dataset: Any, sampler: Any, batch_size: int, cfg: ImageData, seed: int) -> DataLoader:
    # A loader's own generator: DataLoader otherwise draws its worker base seed from torch's
    # global RNG whenever an iterator starts, which would shift the augmentation stream on resume.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=cfg.num_workers,
                      drop_last=cfg.drop_last,
                      generator=torch.Generator().manual_seed(derive_seed(seed, "workers")))


@register_task("image")
class ImageTask(Task):
    """Image classification with cross-entropy (DARTS CNN search, train_search.py)."""

    def __init__(self, cfg: ImageData, mode: str, seed: int, device: torch.device) -> None:
        weights_loader, arch_loader, info = search_loaders(cfg, seed)
        self.info = info
        self.device = device
        dataset = weights_loader.dataset
        train_indices = weights_loader.sampler.indices
        val_indices = arch_loader.sampler.indices
        batch = weights_loader.batch_size
        if mode == "bilevel":
            train_loader, val_loader = weights_loader, arch_loader
        else:
            union = train_indices + val_indices
            union_seed = derive_seed(seed, "search-union")
            train_loader = _loader(dataset, EpochSampler(union, derive_seed(union_seed, "w")),
                                   batch, cfg, union_seed)
            val_loader = None
            if mode == "coordinate":
                sampler = EpochSampler(union, derive_seed(union_seed, "alpha"))
                val_loader = _loader(dataset, sampler, batch, cfg, union_seed)
        self._steps = full_length(train_loader)
        self.train_stream = _Stream(train_loader, self._steps)
        self.val_stream = None if val_loader is None else _Stream(val_loader, self._steps)
        # DARTS' infer() reads the architecture split, with the training transform.
        self.eval_loader = DataLoader(
            Subset(dataset, list(val_indices)), batch_size=batch, shuffle=False,
            num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(derive_seed(seed, "eval")),
        )

    def space_overrides(self, declared: Mapping[str, int | float]) -> dict[str, int | float]:
        return {"classes": self.info.num_classes} if "classes" in declared else {}

    @property
    def steps_per_epoch(self) -> int:
        return self._steps

    def batches(self, epoch: int, start_step: int) -> Iterator[StepBatches]:
        train = self.train_stream.iterate(epoch, start_step)
        val = None if self.val_stream is None else self.val_stream.iterate(epoch, start_step)
        for _ in range(start_step, self._steps):
            train_batch = self._to_device(next(train))
            val_batch = None if val is None else self._to_device(next(val))
            yield StepBatches(train=train_batch, val=val_batch)

    def _to_device(self, batch: Any) -> tuple[Tensor, Tensor]:
        images, labels = batch
        return images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def loss(self, call: Callable[..., Tensor], batch: Any) -> Tensor:
        images, labels = batch
        return F.cross_entropy(call(images), labels)

    def loss_and_metrics(self, call: Callable[..., Tensor], batch: Any) -> LossOutput:
        images, labels = batch
        logits = call(images)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return LossOutput(loss, {"loss": loss.item(), "acc": accuracy.item()}, len(labels))

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        meter = Meter()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for batch in self.eval_loader:
                    out = self.loss_and_metrics(model, self._to_device(batch))
                    meter.update(out.metrics, out.weight)
        finally:
            model.train(was_training)
        return meter.means()

    def describe(self) -> str:
        info = self.info
        return (f"{info.name}: {info.train_count} images train w, {info.val_count} train α, "
                f"{info.num_classes} classes, {self._steps} steps per epoch")
