"""The image domain's training task: a derived network trained from scratch (DARTS Sect. 3.2).

As quark0/darts cnn/train.py and train_imagenet.py: every step, cross-entropy (label-smoothed
when configured) on the logits plus ``auxiliary_weight`` times the same loss on the auxiliary
head's logits. Every epoch is evaluated on the evaluation split: the test set (``test``), or a
held-out part of the training set (``val``, the selection protocol's split, spacec select).
On several processes (a `Shard`) each reads its share of every batch and its part of the
evaluation split; the reported figures are added up over all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from spacec.runtime.domains.base import LossOutput, StepBatches, TrainTask
from spacec.runtime.domains.image.data import (
    ImageData,
    ImageInfo,
    eval_loaders,
    holdout_loaders,
    pin_for,
    start_epoch,
)
from spacec.runtime.nn.flops import multiply_adds
from spacec.runtime.run.distributed import Shard
from spacec.runtime.run.meter import Meter

log = logging.getLogger(__name__)

# (data config, seed, shard=...) -> (training loader, evaluation loader, info)
Loaders = Callable[..., tuple[DataLoader, DataLoader, ImageInfo]]
# The evaluation split of every epoch -> how its loaders are opened.
SPLITS: dict[str, Loaders] = {"test": eval_loaders, "val": holdout_loaders}


def input_shape(info: ImageInfo) -> tuple[int, int, int]:
    return (info.in_channels, info.image_size, info.image_size)


class ImageTrainTask(TrainTask):
    """Image classification with cross-entropy and DARTS' auxiliary head."""

    domain = "image"
    forward_methods = ("forward_with_auxiliary",)

    def __init__(self, cfg: ImageData, optim: Any, split: str, seed: int,
                 device: torch.device, shard: Shard | None = None) -> None:
        self.cfg = cfg
        self.optim = optim
        self.split = split
        self.device = device
        self.shard = shard or Shard()
        self.train_loader, self.eval_loader, self.info = SPLITS[split](cfg, seed,
                                                                       shard=self.shard)
        pin_for(device, self.train_loader, self.eval_loader)
        self.auxiliary_weight = optim.auxiliary_weight
        if optim.nonmono is not None:
            from spacec.runtime.errors import ConfigError

            raise ConfigError("optim.nonmono (NT-ASGD) applies to language models; set it to null")

    def space_params(self, declared: Mapping[str, int | float]) -> dict[str, int | float]:
        return {"classes": self.info.num_classes} if "classes" in declared else {}

    def network_kwargs(self) -> dict[str, Any]:
        return {"auxiliary": self.optim.auxiliary_weight > 0, "drop_path_prob": 0.0}

    def bind(self, model: nn.Module) -> None:
        if self.auxiliary_weight > 0 and getattr(model, "auxiliary_head", None) is None:
            log.warning("the space has no auxiliary head; auxiliary_weight %g is ignored",
                        self.auxiliary_weight)
            self.auxiliary_weight = 0.0

    def check_space(self, compiled: Any) -> None:
        """Warn when the space's input size differs from the data's."""
        expected = compiled.input_shape
        if expected[1:] != input_shape(self.info)[1:]:
            log.warning("space %s expects %dx%d images; the data has %dx%d", compiled.name,
                        expected[1], expected[2], self.info.image_size, self.info.image_size)

    def steps_in_epoch(self, epoch: int) -> int:
        # A whole pass: len(loader) would count only what a resumed epoch has left.
        loader = self.train_loader
        return loader.sampler.batches_per_pass(loader.batch_size, loader.drop_last)

    def batches(self, epoch: int, start_step: int) -> Iterator[StepBatches]:
        start_epoch(self.train_loader, epoch, start_step)
        for images, labels in self.train_loader:
            yield StepBatches(train=(images.to(self.device, non_blocking=True),
                                     labels.to(self.device, non_blocking=True)))

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.optim.label_smoothing)

    def train_loss(self, model: nn.Module, batch: Any) -> LossOutput:
        images, labels = batch
        logits, logits_aux = model.forward_with_auxiliary(images)
        loss = self._loss(logits, labels)
        if self.auxiliary_weight > 0 and logits_aux is not None:
            loss = loss + self.auxiliary_weight * self._loss(logits_aux, labels)
        correct = (logits.detach().argmax(dim=1) == labels).float().mean().item()
        return LossOutput(loss, {"loss": loss.item(), "acc": correct}, len(labels))

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Loss (plain cross-entropy), top-1 and top-5 accuracy on the evaluation split."""
        meter = Meter()
        model.eval()
        try:
            with torch.no_grad():
                for images, labels in self.eval_loader:
                    images = images.to(self.device, non_blocking=True)
                    labels = labels.to(self.device, non_blocking=True)
                    logits = model(images)
                    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
                    meter.update({
                        "loss": F.cross_entropy(logits, labels).item(),
                        "acc": (top[:, 0] == labels).float().mean().item(),
                        "acc5": (top == labels[:, None]).any(dim=1).float().mean().item(),
                    }, len(labels))
        finally:
            model.train()
        return self.shard.reduce_meter(meter).means()

    def describe(self) -> str:
        info = self.info
        return (f"{info.name}: {info.train_count} training images, {info.val_count} "
                f"{self.split} images, {info.num_classes} classes")

    def data_record(self) -> dict[str, Any]:
        return {"input_shape": list(input_shape(self.info))}

    def report_fields(self, model: nn.Module) -> dict[str, Any]:
        shape = input_shape(self.info)
        return {
            "data": self.info.name,
            "multiply_adds": multiply_adds(model, shape, device=str(self.device)),
            "input_shape": list(shape),
        }


def report_lines(report: Mapping[str, Any]) -> list[str]:
    """An image training report as lines for a terminal."""
    split = report["split"]
    best, last = report.get(f"best_{split}_acc"), report.get(f"last_{split}_acc")

    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    params = ", ".join(f"{k}={v}" for k, v in report["space_params"].items())
    return [
        f"run directory: {report['run_dir']}",
        f"{report['space']} ({params}) on {report['data']}, {report['epochs']} epochs",
        f"{split} accuracy: best {percent(best)} (epoch {report['best_epoch']}), "
        f"last {percent(last)}",
        f"parameters: {report['parameters']:,} (excluding the auxiliary head)",
        f"multiply-adds: {report['multiply_adds'] / 1e6:.1f}M at {tuple(report['input_shape'])}",
        f"wall time: {report['wall_seconds']:.1f} s",
    ]
