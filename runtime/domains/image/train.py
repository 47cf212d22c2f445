"""The image domain's training task: a derived network trained from scratch (DARTS Sect. 3.2).

As quark0/darts cnn/train.py and train_imagenet.py: every step, cross-entropy (label-smoothed
when configured) on the logits plus ``auxiliary_weight`` times the same loss on the auxiliary
head's logits. Every epoch is evaluated on the validation split (a validation folder, or the
part of the training images ``train_portion`` holds out; the selection protocol's split too,
spacec select), which chooses the best epoch; without one (``train_portion`` 1, DARTS' own
setting) the last epoch is kept. The test set is evaluated once, at the end, with the weights
kept: it is reported, never used to choose (DARTS' train.py evaluates it every epoch).
On several processes (a `Shard`) each reads its share of every batch and its part of the
evaluation splits; the reported figures are added up over all of them.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from spacec.cost import multiply_adds_text
from spacec.runtime.domains.base import LossOutput, StepBatches, TrainTask
from spacec.runtime.domains.image.data import (
    ImageData,
    ImageInfo,
    check_against_space,
    describe_images,
    pin_for,
    start_epoch,
    training_loaders,
)
from spacec.runtime.errors import DataError
from spacec.runtime.nn.flops import multiply_adds
from spacec.runtime.run.distributed import Shard
from spacec.runtime.run.meter import Meter

log = logging.getLogger(__name__)

TOP5 = 5  # top-5 accuracy is reported for more than 5 classes only


def input_shape(info: ImageInfo) -> tuple[int, int, int]:
    return (info.in_channels, info.image_size, info.image_size)


def _count(loader: DataLoader) -> int:
    """The images this process reads in a whole pass of `loader`."""
    sampler = loader.sampler
    return len(getattr(sampler, "positions", getattr(sampler, "indices", ())))


def smallest_batch(loader: DataLoader) -> int:
    """The fewest images a training batch of `loader` holds in a pass (the last one's)."""
    count, batch = _count(loader), loader.batch_size
    if loader.drop_last or count < batch:
        return batch if loader.drop_last else count
    return count % batch or batch


def _batch_sizes_near(loader: DataLoader, wanted: int = 2) -> list[int]:
    """Batch sizes near `loader`'s whose last batch holds more than one image."""
    count, batch = _count(loader), loader.batch_size
    found = [b for distance in range(1, batch) for b in (batch - distance, batch + distance)
             if 1 < b <= count and count % b != 1]
    return sorted(found[:wanted])


def norm_refusing_one_image(model: nn.Module, shape: tuple[int, ...]) -> str | None:
    """The name of a BatchNorm that cannot normalise a batch of one image of `shape` in
    training (it would see one value per channel: torch refuses that), or None.

    Found on a copy of `model` on the meta device: shapes only, no arithmetic and no memory,
    and the model's own statistics untouched. A network the meta device cannot run is not
    judged (None)."""
    probe = copy.deepcopy(model).to("meta").train()
    entered: list[str] = []
    for name, module in probe.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(lambda module, args, name=name: entered.append(name))
    try:
        probe.forward_with_auxiliary(torch.empty(1, *shape, device="meta"))
    except ValueError as error:
        if "more than 1 value per channel" in str(error) and entered:
            return entered[-1]
    except Exception:  # noqa: BLE001 - an operation without a meta kernel: nothing to tell
        return None
    return None


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
        loaders = training_loaders(cfg, seed, shard=self.shard)
        self.train_loader, self.info = loaders.train, loaders.info
        self.eval_loader, self.test_loader = loaders.val, loaders.test
        pin_for(device, self.train_loader, self.eval_loader, self.test_loader)
        self.auxiliary_weight = optim.auxiliary_weight
        if optim.nonmono is not None:
            from spacec.runtime.errors import ConfigError

            raise ConfigError("optim.nonmono (NT-ASGD) applies to language models; set it to null")

    def space_params(self, space: Any) -> dict[str, int | float]:
        return {}  # the space decides classes and input size; `check_space` holds the data to it

    def network_kwargs(self) -> dict[str, Any]:
        return {"auxiliary": self.optim.auxiliary_weight > 0, "drop_path_prob": 0.0}

    def bind(self, model: nn.Module) -> None:
        if self.auxiliary_weight > 0 and getattr(model, "auxiliary_head", None) is None:
            # The effective configuration says so ("no auxiliary head").
            log.info("the space has no auxiliary head; auxiliary_weight %g is not used",
                     self.auxiliary_weight)
            self.auxiliary_weight = 0.0
        if smallest_batch(self.train_loader) == 1:
            self._check_one_image(model)

    def _check_one_image(self, model: nn.Module) -> None:
        """Refuse, before the run starts, a network that cannot train on the one image of this
        process's last batch (it would stop at the end of the first epoch)."""
        norm = norm_refusing_one_image(model, input_shape(self.info))
        if norm is None:
            return
        loader = self.train_loader
        fixes = ["data.drop_last: true (--cfg data.drop_last=true: each epoch then leaves out "
                 "its last image, another one each epoch)"]
        if not self.shard.distributed:
            fixes.insert(0, "a batch size that leaves more than one (e.g. "
                         f"{', '.join(map(str, _batch_sizes_near(loader)))})")
        if norm.startswith("auxiliary_head."):
            fixes.append("train without the auxiliary head (--cfg optim.auxiliary_weight=0)")
        where = "this process's" if self.shard.distributed else "the"
        raise DataError(
            f"data: {where} last training batch of every epoch holds 1 image "
            f"({_count(loader)} training images at batch {loader.batch_size}), and the network "
            f"cannot train on one image: its BatchNorm {norm} would normalise a single value per "
            f"channel (a 1x1 map). Use {', '.join(fixes[:-1])} or {fixes[-1]}")

    def check_space(self, compiled: Any) -> None:
        check_against_space(self.info, compiled, self.cfg)

    def data_fingerprint(self) -> dict[str, Any]:
        return dict(self.info.fingerprint)

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
        """The validation split's loss and accuracy; nothing without one (the loop then keeps
        the last epoch)."""
        return {} if self.eval_loader is None else self._scores(model, self.eval_loader)

    def final_scores(self, model: nn.Module) -> dict[str, float]:
        """The test set's figures, with the weights the loop kept; nothing without a test set."""
        return {} if self.test_loader is None else self._scores(model, self.test_loader)

    def _scores(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """Loss (plain cross-entropy), top-1 and, for more than 5 classes, top-5 accuracy."""
        meter = Meter()
        model.eval()
        try:
            with torch.no_grad():
                for images, labels in loader:
                    images = images.to(self.device, non_blocking=True)
                    labels = labels.to(self.device, non_blocking=True)
                    logits = model(images)
                    scores = {"loss": F.cross_entropy(logits, labels).item(),
                              "acc": (logits.argmax(dim=1) == labels).float().mean().item()}
                    if logits.shape[1] > TOP5:
                        top = logits.topk(TOP5, dim=1).indices
                        scores["acc5"] = (top == labels[:, None]).any(dim=1).float().mean().item()
                    meter.update(scores, len(labels))
        finally:
            model.train()
        return self.shard.reduce_meter(meter).means()

    def describe(self) -> str:
        info = self.info
        validation = (f"{info.val_count} validate{info.held_out_note()}"
                      if self.eval_loader is not None
                      else "no validation split (the last epoch is kept)")
        test = (f"{info.test_count} test (reported at the end)" if self.test_loader is not None
                else "no test set" + ("" if not self.cfg.report_test else
                                      " (give one with --test-dir DIR, or test/ beside train/)"))
        return describe_images(info, f"{info.train_count} train, {validation}, {test}")

    def data_record(self) -> dict[str, Any]:
        """The test-time preprocessing (spacec.runtime.domains.image.data.preprocessing_record):
        input shape, class names, resize and crop, normalisation."""
        return {**self.info.preprocessing, "input_shape": list(input_shape(self.info))}

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
    if best is None:
        chosen = "no validation split: the last epoch's weights are kept"
    else:
        chosen = (f"{split} accuracy: best {percent(best)} (epoch {report['best_epoch']}), "
                  f"last {percent(last)}")
    if report.get("test_acc") is None:
        test = "test accuracy: not evaluated (no test set: --test-dir DIR gives one)"
    else:
        top5 = report.get("test_acc5")
        test = (f"test accuracy: {percent(report['test_acc'])}"
                + (f" (top-5 {percent(top5)})" if top5 is not None else "")
                + f" with the weights of epoch {report['best_epoch']}")
    return [
        f"run directory: {report['run_dir']}",
        f"{report['space']} ({params}) on {report['data']}, {report['epochs']} epoch"
        f"{'' if report['epochs'] == 1 else 's'}",
        chosen,
        test,
        f"parameters: {report['parameters']:,} (excluding the auxiliary head)",
        f"multiply-adds: {multiply_adds_text(report['multiply_adds'])} at "
        f"{tuple(report['input_shape'])}",
        f"wall time: {report['wall_seconds']:.1f} s",
    ]
