"""The image domain's search task: DARTS CNN search data (quark0/darts cnn/train_search.py).

Batch order, by the strategy's `BatchPlan`: the weight batch from the weights split and the α
batch from the architecture split (bilevel); or both from the union of the two splits, in two
independent orders (coordinate descent); or one stream over the union (joint). The end-of-epoch
evaluation reads the architecture split with the training transform, as DARTS' infer() does.
On several processes (a `Shard`), every stream reads this process's share of each global batch
and the evaluation its part of the split, its figures added up over the processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from spacec.runtime.domains.base import BatchPlan, LossOutput, SearchTask, StepBatches
from spacec.runtime.domains.image.data import (
    DataError,
    EpochSampler,
    ImageData,
    SeededItems,
    check_against_space,
    derive_seed,
    describe_images,
    evaluation_subset,
    pin_for,
    search_loaders,
    shuffled_loader,
    start_epoch,
)
from spacec.runtime.run.distributed import Shard
from spacec.runtime.run.meter import Meter


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


def _samples(sampler: EpochSampler) -> int:
    """The samples a pass of `sampler` gives this process."""
    return len(getattr(sampler, "positions", sampler.indices))


def full_length(loader: DataLoader) -> int:
    """Batches in one whole pass of a shuffled loader, whatever its sampler has skipped."""
    sampler = loader.sampler
    if not isinstance(sampler, EpochSampler):
        raise TypeError(f"loader is not shuffled by an EpochSampler ({type(sampler).__name__})")
    length = sampler.batches_per_pass(loader.batch_size, loader.drop_last)
    if length == 0:
        raise DataError(f"batch size {loader.batch_size} exceeds the {len(sampler.indices)} "
                        "images of a split with drop_last set")
    return length


class ImageSearchTask(SearchTask):
    """Image classification with cross-entropy (DARTS CNN search, train_search.py)."""

    domain = "image"

    def __init__(self, cfg: ImageData, plan: BatchPlan, seed: int, device: torch.device,
                 shard: Shard | None = None) -> None:
        self.shard = shard or Shard()
        weights_loader, arch_loader, info = search_loaders(cfg, seed, shard=self.shard)
        self.cfg = cfg
        self.info = info
        self.plan = plan
        self.device = device
        dataset = weights_loader.dataset
        if isinstance(dataset, SeededItems):
            dataset = dataset.dataset
        train_indices = weights_loader.sampler.indices
        val_indices = arch_loader.sampler.indices
        batch = cfg.batch_size  # the global batch (each loader reads this process's share)
        if not plan.union:
            train_loader = weights_loader
            val_loader = arch_loader if plan.arch_stream else None
        else:
            union = train_indices + val_indices
            union_seed = derive_seed(seed, "search-union")
            workers = derive_seed(union_seed, "workers")
            train_loader = shuffled_loader(dataset, union, derive_seed(union_seed, "w"), batch,
                                           cfg, workers, self.shard)
            val_loader = None
            if plan.arch_stream:
                val_loader = shuffled_loader(dataset, union, derive_seed(union_seed, "alpha"),
                                             batch, cfg, workers, self.shard)
        self._steps = full_length(train_loader)
        self.train_stream = _Stream(train_loader, self._steps)
        self.val_stream = None if val_loader is None else _Stream(val_loader, self._steps)
        # DARTS' infer() reads the architecture split, with the training transform.
        self.eval_loader = DataLoader(
            evaluation_subset(dataset, val_indices, self.shard, derive_seed(seed, "eval")),
            batch_size=weights_loader.batch_size, shuffle=False, num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(derive_seed(seed, "eval")),
        )
        pin_for(device, train_loader, val_loader, self.eval_loader)

    def space_params(self, space: Any) -> dict[str, int | float]:
        return {}  # the space decides classes and input size; `check_space` holds the data to it

    def check_space(self, compiled: Any) -> None:
        check_against_space(self.info, compiled, self.cfg)

    def data_fingerprint(self) -> dict[str, Any]:
        return dict(self.info.fingerprint)

    def steps_in_epoch(self, epoch: int) -> int:
        return self._steps

    def largest_batch(self, batch: int) -> int:
        streams = (self.train_stream, self.val_stream)
        held = [_samples(stream.loader.sampler) for stream in streams if stream is not None]
        return min(batch, max(held))

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

    def evaluate(self, model: nn.Module, max_batches: int | None = None) -> dict[str, float]:
        meter = Meter()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for index, batch in enumerate(self.eval_loader):
                    if max_batches is not None and index == max_batches:
                        break
                    out = self.loss_and_metrics(model, self._to_device(batch))
                    meter.update(out.metrics, out.weight)
        finally:
            model.train(was_training)
        return self.shard.reduce_meter(meter).means()

    def describe(self) -> str:
        info = self.info
        counts = self.plan.splits_text(str(info.train_count), str(info.val_count))
        return describe_images(info, counts + info.held_out_note(),
                               f"{self._steps} step{'s' if self._steps != 1 else ''} per epoch")
