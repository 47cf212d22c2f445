"""Training a derived network from scratch (DARTS Sect. 3.2, "architecture evaluation").

The network is the standalone derived network the compiler generates for a space and a
genotype (`CompiledSpace.discrete_network`). Every step, as in quark0/darts cnn/train.py and
cnn/train_imagenet.py: cross-entropy (label-smoothed when configured) on the logits, plus
``auxiliary_weight`` times the same loss on the auxiliary head's logits; SGD with momentum and
weight decay; the gradient's total norm clipped. The learning rate is set per epoch by the
schedule (cosine to ``lr_min`` for CIFAR-10, ×γ every ``decay_period`` epochs for ImageNet), and
drop path's probability grows linearly, ``drop_path_prob · epoch / epochs`` for 0-based epochs.
After every epoch the network is evaluated (on the test set; `spacec.runtime.tools.select` evaluates on a
held-out part of the training set instead) and a metrics record is appended.

A run directory (spacec.runtime.run.common) holds ``config.yaml``, ``genotype.json``, ``space.json``,
``metrics.jsonl``, ``checkpoint.pt`` (the last state, everything needed to resume),
``best.pt`` (the state after the epoch with the best evaluation accuracy) and, at the end,
``report.json``. Checkpoints are written atomically; a non-finite loss stops the run with
`TrainingError` and leaves them as they were.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader

from spacec.arch.genotype import Genotype, GenotypeError, resolve
from spacec.files import atomic_write_text
from spacec.load import CompiledSpace, compile_file, locate
from spacec.registry import Registry, UnknownName
from spacec.runtime.domains.image.data import ImageData, ImageInfo, eval_loaders, start_epoch
from spacec.runtime.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from spacec.runtime.run.common import (
    Meter,
    RunDir,
    TrainingError,
    capture_rng,
    check_finite,
    format_metrics,
    progress_bar,
    progress_enabled,
    resolve_device,
    restore_rng,
    seed_everything,
)
from spacec.runtime.run.config import (
    ConfigError,
    RunConfig,
    SpaceConfig,
    apply_overrides,
    build_section,
    check_data_for_task,
    check_sgd_settings,
    data_config_class,
    plain_data,
    read_yaml,
)
from spacec.runtime.search.loop import cosine_lr, space_overrides
from spacec.runtime.tools.flops import count_parameters, multiply_adds

__all__ = ["TEST_SPLIT", "EvalSplit", "TrainConfig", "Trainer", "TrainingError",
           "load_train_config", "network_from_checkpoint", "resume_training", "start_training"]

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "train"
BEST_NAME = "best.pt"
REPORT_NAME = "report.json"
PRESET_SUFFIX = ".yaml"
TRAIN_PREFIX = "train_"
SCHEDULES = ("cosine", "exponential", "constant")
CHECKPOINT_KEYS = ("config", "genotype", "split", "space_sha256", "space_source",
                    "space_params", "input_shape", "epoch", "step", "model", "optimizer", "meter",
                    "epoch_seconds", "wall_seconds", "best", "rng")


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TrainOptimConfig:
    """How the weights are trained: optimiser, schedule, auxiliary loss, drop path.

    Defaults: quark0/darts cnn/train.py (CIFAR-10).
    """

    epochs: int = 600  # --epochs 600
    lr: float = 0.025  # --learning_rate 0.025
    # CosineAnnealingLR(optimizer, epochs): eta_min is left at its default, 0.
    lr_min: float = 0.0
    momentum: float = 0.9  # --momentum 0.9
    weight_decay: float = 3e-4  # --weight_decay 3e-4
    grad_clip: float | None = 5.0  # --grad_clip 5
    # "cosine": CosineAnnealingLR(epochs, lr_min) (train.py); "exponential": StepLR(decay_period,
    # gamma) (train_imagenet.py). Both stepped at the start of an epoch: epoch 0 trains at lr.
    # "constant": lr throughout (DARTS rnn/train.py).
    schedule: str = "cosine"
    gamma: float = 0.97  # exponential only: train_imagenet.py --gamma 0.97
    decay_period: int = 1  # exponential only: train_imagenet.py --decay_period 1
    label_smoothing: float = 0.0  # train.py uses none; train_imagenet.py --label_smooth 0.1
    # --auxiliary --auxiliary_weight 0.4; 0 builds the network without its auxiliary head.
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.2  # --drop_path_prob 0.2, reached linearly at the last epoch
    # Sequence task: NT-ASGD, switch to averaged SGD once the validation loss is worse than the
    # best of all but the last `nonmono` epochs (rnn/train.py --nonmono 5); None: SGD throughout.
    nonmono: int | None = None

    def __post_init__(self) -> None:
        check_sgd_settings(self, SCHEDULES)
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must lie in (0, 1], got {self.gamma}")
        if self.decay_period < 1:
            raise ValueError(f"decay_period must be >= 1, got {self.decay_period}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.auxiliary_weight < 0:
            raise ValueError(f"auxiliary_weight must be >= 0, got {self.auxiliary_weight}")
        if not 0 <= self.drop_path_prob < 1:
            raise ValueError(f"drop_path_prob must lie in [0, 1), got {self.drop_path_prob}")
        if self.nonmono is not None and self.nonmono < 1:
            raise ValueError(f"nonmono must be >= 1 or null, got {self.nonmono}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (the genotype is kept beside it).

    The sections are those of a search's configuration (spacec.runtime.run.config) less ``arch``.
    """

    task: str = "image"  # the space's domain; picks the data config and the trainer
    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: Any = field(default_factory=ImageData)  # spacec.runtime.run.config.DATA_CONFIGS[task]
    optim: TrainOptimConfig = field(default_factory=TrainOptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        check_data_for_task(self.task, self.data)


SECTIONS: dict[str, type] = {
    "space": SpaceConfig,
    "data": ImageData,
    "optim": TrainOptimConfig,
    "run": RunConfig,
}


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    sections = {name: plain_data(dataclasses.asdict(getattr(cfg, name))) for name in SECTIONS}
    return {"task": cfg.task, **sections}


def config_from_dict(data: Any, source: str = "<config>") -> TrainConfig:
    """A `TrainConfig` from parsed YAML; `source` names the file in errors."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    unknown = [str(key) for key in data if key not in ("task", *SECTIONS)]
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)}; "
                          f"valid: task, {', '.join(SECTIONS)}")
    task = data.get("task", TrainConfig.task)
    try:
        classes = {**SECTIONS, "data": data_config_class(task)}
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{source}: task: {error}") from None
    return TrainConfig(task=task, **{name: build_section(cls, data.get(name), source, name)
                                     for name, cls in classes.items()})


def presets(prefix: str = TRAIN_PREFIX) -> dict[str, Path]:
    """Preset name -> shipped YAML file (``runtime/configs/<prefix><name>.yaml``)."""
    found = {}
    for entry in resources.files("spacec.runtime.configs").iterdir():
        name = entry.name
        if name.startswith(prefix) and name.endswith(PRESET_SUFFIX):
            found[name[len(prefix):-len(PRESET_SUFFIX)]] = Path(str(entry))
    return dict(sorted(found.items()))


def load_train_config(name_or_path: str = "quick", overrides: Mapping[str, Any] | None = None,
                      prefix: str = TRAIN_PREFIX) -> TrainConfig:
    """A preset (``quick``, ``paper``, ``imagenet``) or a YAML file, with dotted overrides."""
    shipped = presets(prefix)
    if name_or_path in shipped:
        path = shipped[name_or_path]
    elif Path(name_or_path).expanduser().is_file():
        path = Path(name_or_path).expanduser()
    else:
        raise ConfigError(f"{name_or_path}: no such preset or file; presets: {', '.join(shipped)}")
    data = read_yaml(path)
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    merged = apply_overrides(data or {}, overrides or {})
    return config_from_dict(merged, str(path) if not overrides else f"{path} (with overrides)")


def config_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)


def read_train_config(path: Path) -> TrainConfig:
    return config_from_dict(read_yaml(path), str(path))


# ---------------------------------------------------------------- schedules


def exponential_lr(epoch: int, cfg: TrainOptimConfig) -> float:
    """StepLR(decay_period, gamma) stepped at the start of each epoch: lr · γ^(epoch // period)."""
    return cfg.lr * cfg.gamma ** (epoch // cfg.decay_period)


LR_SCHEDULES: dict[str, Callable[[int, TrainOptimConfig], float]] = {
    "cosine": lambda epoch, cfg: cosine_lr(epoch, cfg.epochs, cfg.lr, cfg.lr_min),
    "exponential": exponential_lr,
    "constant": lambda epoch, cfg: cfg.lr,
}


def learning_rate(epoch: int, cfg: TrainOptimConfig) -> float:
    """The learning rate of 0-based `epoch`."""
    return LR_SCHEDULES[cfg.schedule](epoch, cfg)


def drop_path_prob(epoch: int, epochs: int, final: float) -> float:
    """train.py: ``model.drop_path_prob = args.drop_path_prob * epoch / args.epochs``."""
    return final * epoch / epochs


# ---------------------------------------------------------------- evaluation splits


Loaders = Callable[[ImageData, int], tuple[DataLoader, DataLoader, ImageInfo]]


@dataclass(frozen=True)
class EvalSplit:
    """Which images a run is evaluated on: the test set, or a held-out part of the training set."""

    name: str  # prefix of the evaluation metrics: "test" or "val"
    loaders: Loaders  # (data config, seed) -> (training loader, evaluation loader, info)


TEST_SPLIT = EvalSplit("test", lambda cfg, seed: eval_loaders(cfg, seed))


# ---------------------------------------------------------------- the network


def compile_for_training(cfg: TrainConfig, classes: int | None) -> CompiledSpace:
    """The space compiled at the configuration's parameters (and the data's class count)."""
    path = locate(cfg.space.name).resolve()
    plain = compile_file(path)
    if plain.spec.domain != "image":
        raise ConfigError(f"space {plain.name} is a {plain.spec.domain} space; spacec train "
                          "trains image classifiers")
    from_data = {"classes": classes} if classes is not None and "classes" in plain.params else {}
    return compile_file(path, space_overrides(plain.params, cfg, from_data))


def build_network(compiled: CompiledSpace, genotype: Genotype, auxiliary: bool) -> nn.Module:
    """The derived network; GenotypeError names every way the genotype does not fit the space."""
    return compiled.discrete_network(genotype, auxiliary=auxiliary, drop_path_prob=0.0)


def network_from_checkpoint(state: Mapping[str, Any], auxiliary: bool = False) -> nn.Module:
    """The derived network of a training checkpoint, with its weights (eval mode).

    Without `auxiliary` the auxiliary head, used only in training, is left out.
    """
    cfg = config_from_dict(state["config"], "checkpoint")
    genotype = Genotype.from_dict(state["genotype"])
    source = Path(state["space_source"])
    if not source.is_file():  # written on another machine: the space by its configured name
        source = locate(cfg.space.name)
    compiled = compile_file(source, dict(state["space_params"]))
    if compiled.spec.sha256 != state["space_sha256"]:
        log.warning("%s changed since the checkpoint was written; rebuilding from it anyway",
                    source)
    network = build_network(compiled, genotype, auxiliary)
    weights = state["model"]
    if not auxiliary:
        weights = {k: v for k, v in weights.items() if not k.startswith("auxiliary_head.")}
    try:
        network.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"the checkpoint's weights do not fit {cfg.space.name} "
                              f"({str(error).splitlines()[0]})") from None
    return network.eval()


def input_shape(info: ImageInfo) -> tuple[int, int, int]:
    return (info.in_channels, info.image_size, info.image_size)


# ---------------------------------------------------------------- the loop


@dataclass
class Best:
    """The best evaluation accuracy so far and the epoch (1-based) it was reached."""

    accuracy: float = -math.inf
    epoch: int = 0


class Trainer:
    """One training run: the network, its optimiser, the data and the position.

    This class trains image classifiers (task ``image``). Another task trains through the same
    loop with a subclass registered for it (`register_trainer`; spacec.runtime.domains.text.language's
    `LanguageTrainer` for ``sequence``), which overrides `build`, the data hooks
    (`_attach_data`, `_data_state`, `_start_epoch`, `_batches`, `_step`), `evaluate`, the
    end-of-epoch hooks (`_record_extras`, `_update_best`, `_after_evaluation`), `report` and
    `report_lines`.
    """

    TASK: ClassVar[str] = "image"
    BEST: ClassVar[type] = Best  # the record of the best epoch, as kept in checkpoints
    CHECKPOINT_KEYS: ClassVar[tuple[str, ...]] = CHECKPOINT_KEYS

    def __init__(self, cfg: TrainConfig, compiled: CompiledSpace, genotype: Genotype,
                 network: nn.Module, data: Any, split: EvalSplit, device: torch.device) -> None:
        self.cfg = cfg
        self.compiled = compiled
        self.genotype = genotype
        self.network = network
        self.split = split
        self.device = device
        optim = cfg.optim
        self.optimizer = torch.optim.SGD(network.parameters(), lr=optim.lr,
                                         momentum=optim.momentum, weight_decay=optim.weight_decay)
        self._attach_data(data)
        self.epoch = 0  # 0-based epoch in progress (== epochs finished)
        self.step = 0  # steps finished in that epoch
        self.meter = Meter()
        self.epoch_seconds = 0.0
        self.wall_seconds = 0.0  # training and evaluation time of every finished epoch
        self.best = self.BEST()

    def _attach_data(self, loaders: tuple[DataLoader, DataLoader, ImageInfo]) -> None:
        """What `build` opened: here (training loader, evaluation loader, info)."""
        self.train_loader, self.eval_loader, self.info = loaders
        if self.cfg.optim.nonmono is not None:
            raise ConfigError("optim.nonmono (NT-ASGD) applies to language models; set it to null")
        self.auxiliary_weight = self.cfg.optim.auxiliary_weight
        if self.auxiliary_weight > 0 and getattr(self.network, "auxiliary_head", None) is None:
            log.warning("space %s has no auxiliary head; auxiliary_weight %g is ignored",
                        self.compiled.name, self.auxiliary_weight)
            self.auxiliary_weight = 0.0
        self.steps_per_epoch = len(self.train_loader)

    @classmethod
    def build(cls, cfg: TrainConfig, genotype: Genotype, split: EvalSplit = TEST_SPLIT) -> Trainer:
        """Open the data, compile the space, build the network; nothing is written."""
        try:
            device = resolve_device(cfg.run.device)
        except ValueError as error:
            raise ConfigError(f"run.device: {error}") from None
        if cfg.run.threads is not None:
            torch.set_num_threads(cfg.run.threads)
        # A genotype that does not fit the space is reported before any data is opened.
        compile_for_training(cfg, None).discrete_source(genotype)
        seed_everything(cfg.run.seed)
        loaders = split.loaders(cfg.data, cfg.run.seed)
        info = loaders[2]
        compiled = compile_for_training(cfg, info.num_classes)
        network = build_network(compiled, genotype, cfg.optim.auxiliary_weight > 0)
        expected = compiled.input_shape
        if expected[1:] != input_shape(info)[1:]:
            log.warning("space %s expects %dx%d images; the data has %dx%d", compiled.name,
                        expected[1], expected[2], info.image_size, info.image_size)
        log.info("%s: %d training images, %d %s images, %d classes", info.name,
                 info.train_count, info.val_count, split.name, info.num_classes)
        return cls(cfg, compiled, genotype, network.to(device), loaders, split, device)

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": CHECKPOINT_KIND,
            "config": config_to_dict(self.cfg),
            "genotype": self.genotype.to_dict(),
            "split": self.split.name,
            "space_sha256": self.compiled.spec.sha256,
            "space_source": str(locate(self.cfg.space.name).resolve()),
            "space_params": dict(self.compiled.spec.params),
            **self._data_state(),
            "epoch": self.epoch,
            "step": self.step,
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "meter": self.meter.state_dict(),
            "epoch_seconds": self.epoch_seconds,
            "wall_seconds": self.wall_seconds,
            "best": dataclasses.asdict(self.best),
            "rng": capture_rng(cuda=self.device.type == "cuda"),
        }

    def load_state_dict(self, state: Mapping[str, Any], where: Path) -> None:
        if state["space_sha256"] != self.compiled.spec.sha256:
            raise CheckpointError(f"{where}: the space {self.compiled.spec.path} changed since "
                                  "the checkpoint was written (its sha256 differs)")
        if state["split"] != self.split.name:
            raise CheckpointError(f"{where}: a run evaluated on {state['split']!r}, "
                                  f"not {self.split.name!r}")
        try:
            self.network.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.meter.load_state_dict(state["meter"])
            self.best = self.BEST(**state["best"])
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{where}: does not fit this run "
                                  f"({type(error).__name__}: {str(error).splitlines()[0]})") from None
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.epoch_seconds = float(state["epoch_seconds"])
        self.wall_seconds = float(state["wall_seconds"])
        if not 0 <= self.step < max(1, self.steps_per_epoch):
            raise CheckpointError(f"{where}: step {self.step} is outside an epoch of "
                                  f"{self.steps_per_epoch} steps")
        restore_rng(state["rng"])

    def _data_state(self) -> dict[str, Any]:
        """Checkpoint entries about the data (export reads the input shape)."""
        return {"input_shape": list(input_shape(self.info))}

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.state_dict())

    # -- the loop ------------------------------------------------------------------------------

    def run(self, run_dir: RunDir, quiet: bool = True) -> dict[str, Any]:
        """Train until the last epoch; returns the report (also written to report.json)."""
        while self.epoch < self.cfg.optim.epochs:
            self._run_epoch(run_dir, progress_enabled(quiet))
        report = self.report(run_dir)
        run_dir.write_json(run_dir.path / REPORT_NAME, report)
        return report

    def _run_epoch(self, run_dir: RunDir, show: bool) -> None:
        epoch, epochs = self.epoch, self.cfg.optim.epochs
        lr = learning_rate(epoch, self.cfg.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._start_epoch(epoch)
        self.network.train()
        every = self.cfg.run.checkpoint_every
        started = time.perf_counter()
        with progress_bar(self.steps_per_epoch, self.step, f"epoch {epoch + 1}/{epochs}",
                          show) as bar:
            for batch in self._batches(epoch):
                where = f"epoch {epoch + 1} step {self.step + 1}"
                self._step(batch, lr, where)
                self.step += 1
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in self.meter.means().items()},
                                refresh=False)
                if self.step % self.cfg.run.log_every == 0:
                    log.info("%s/%d: %s", where, self.steps_per_epoch,
                             format_metrics(self.meter.means()))
                global_step = epoch * self.steps_per_epoch + self.step
                if every and global_step % every == 0 and self.step < self.steps_per_epoch:
                    now = time.perf_counter()
                    self.epoch_seconds += now - started
                    started = now
                    self.save(run_dir.checkpoint_path)
        self.epoch_seconds += time.perf_counter() - started
        self._finish_epoch(run_dir, lr)

    def _start_epoch(self, epoch: int) -> None:
        self.network.drop_path_prob = drop_path_prob(epoch, self.cfg.optim.epochs,
                                                     self.cfg.optim.drop_path_prob)

    def _batches(self, epoch: int) -> Iterator[Any]:
        """The batches of `epoch` from step `self.step` on, on the device."""
        start_epoch(self.train_loader, epoch, self.step)
        for images, labels in self.train_loader:
            yield (images.to(self.device, non_blocking=True),
                   labels.to(self.device, non_blocking=True))

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.cfg.optim.label_smoothing)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], lr: float, where: str) -> None:
        """One training step at the epoch's learning rate `lr` (already set)."""
        images, labels = batch
        self.optimizer.zero_grad(set_to_none=True)
        logits, logits_aux = self.network.forward_with_auxiliary(images)
        loss = self._loss(logits, labels)
        if self.auxiliary_weight > 0 and logits_aux is not None:
            loss = loss + self.auxiliary_weight * self._loss(logits_aux, labels)
        value = check_finite(loss.item(), "the training loss", where)
        loss.backward()
        if self.cfg.optim.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.network.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        correct = (logits.detach().argmax(dim=1) == labels).float().mean().item()
        self.meter.update({"loss": value, "acc": correct}, len(labels))

    def evaluate(self) -> dict[str, float]:
        """Loss (plain cross-entropy), top-1 and top-5 accuracy on the evaluation split."""
        meter = Meter()
        self.network.eval()
        try:
            with torch.no_grad():
                for images, labels in self.eval_loader:
                    images = images.to(self.device, non_blocking=True)
                    labels = labels.to(self.device, non_blocking=True)
                    logits = self.network(images)
                    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
                    meter.update({
                        "loss": F.cross_entropy(logits, labels).item(),
                        "acc": (top[:, 0] == labels).float().mean().item(),
                        "acc5": (top == labels[:, None]).any(dim=1).float().mean().item(),
                    }, len(labels))
        finally:
            self.network.train()
        return meter.means()

    def _finish_epoch(self, run_dir: RunDir, lr: float) -> None:
        number = self.epoch + 1
        evaluated = time.perf_counter()
        scores = self.evaluate()
        self.epoch_seconds += time.perf_counter() - evaluated
        record = {
            "epoch": number,
            "epochs": self.cfg.optim.epochs,
            "steps": self.steps_per_epoch,
            **{f"train_{k}": v for k, v in self.meter.means().items()},
            **{f"{self.split.name}_{k}": v for k, v in scores.items()},
            "lr": lr,
            **self._record_extras(),
            "seconds": round(self.epoch_seconds, 3),
        }
        run_dir.append_metrics(record)
        self.wall_seconds += self.epoch_seconds
        self.epoch, self.step = number, 0
        self.meter, self.epoch_seconds = Meter(), 0.0
        improved = self._update_best(scores, number)
        if improved:
            # best.pt first: a crash before checkpoint.pt re-runs this epoch and rewrites both.
            self.save(run_dir.path / BEST_NAME)
        self._after_evaluation(scores)
        self.save(run_dir.checkpoint_path)
        shown = {k: v for k, v in record.items() if k not in ("epoch", "epochs", "steps")}
        log.info("epoch %d/%d: %s%s", number, record["epochs"], format_metrics(shown),
                 " (best)" if improved else "")

    def _record_extras(self) -> dict[str, Any]:
        return {"drop_path_prob": self.network.drop_path_prob}

    def _update_best(self, scores: Mapping[str, float], epoch: int) -> bool:
        """Keep `scores` of 1-based `epoch` if they beat the best so far; True if they did."""
        if scores["acc"] <= self.best.accuracy:
            return False
        self.best = Best(scores["acc"], epoch)
        return True

    def _after_evaluation(self, scores: Mapping[str, float]) -> None:
        """After an epoch's evaluation and best.pt, before its checkpoint (NT-ASGD's switch)."""
        return None

    # -- the report ----------------------------------------------------------------------------

    def report(self, run_dir: RunDir) -> dict[str, Any]:
        """Accuracy (best and last), parameters, multiply-adds and time of the finished run."""
        records = [r for r in run_dir.read_metrics() if isinstance(r.get("epoch"), int)]
        last = records[-1] if records else {}
        split = self.split.name
        shape = input_shape(self.info)
        return {
            "run_dir": str(run_dir.path),
            "space": self.compiled.name,
            "space_params": dict(self.compiled.spec.params),
            "genotype": self.genotype.to_dict(),
            "data": self.info.name,
            "split": split,
            "epochs": self.epoch,
            f"best_{split}_acc": self.best.accuracy if self.best.epoch else None,
            "best_epoch": self.best.epoch,
            f"last_{split}_acc": last.get(f"{split}_acc"),
            f"last_{split}_acc5": last.get(f"{split}_acc5"),
            # DARTS counts parameters without the auxiliary head (utils.count_parameters_in_MB).
            "parameters": count_parameters(self.network),
            "multiply_adds": multiply_adds(self.network, shape, device=str(self.device)),
            "input_shape": list(shape),
            "wall_seconds": round(self.wall_seconds, 3),
        }

    @staticmethod
    def report_lines(report: Mapping[str, Any]) -> list[str]:
        """The report as lines for a terminal."""
        split = report["split"]
        best, last = report.get(f"best_{split}_acc"), report.get(f"last_{split}_acc")

        def percent(value: float | None) -> str:
            return "n/a" if value is None else f"{100 * value:.2f}%"

        return [
            f"run directory: {report['run_dir']}",
            f"{report['space']} ({', '.join(f'{k}={v}' for k, v in report['space_params'].items())})"
            f" on {report['data']}, {report['epochs']} epochs",
            f"{split} accuracy: best {percent(best)} (epoch {report['best_epoch']}), "
            f"last {percent(last)}",
            f"parameters: {report['parameters']:,} (excluding the auxiliary head)",
            f"multiply-adds: {report['multiply_adds'] / 1e6:.1f}M at "
            f"{tuple(report['input_shape'])}",
            f"wall time: {report['wall_seconds']:.1f} s",
        ]


TRAINERS = Registry("trainer")


def register_trainer(task: str) -> Callable[[type[Trainer]], type[Trainer]]:
    """Register the training loop of a task (duplicate names are rejected)."""

    def register(cls: type[Trainer]) -> type[Trainer]:
        cls.TASK = task
        return TRAINERS.register(task)(cls)

    return register


register_trainer("image")(Trainer)


def trainer_class(task: str) -> type[Trainer]:
    """The trainer of `task` (a task defined in another module is imported on first use)."""
    try:
        data_config_class(task)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    try:
        return TRAINERS[task].builder
    except UnknownName as error:
        raise ConfigError(str(error)) from None


def space_trainer(cfg: TrainConfig) -> tuple[type[Trainer], CompiledSpace]:
    """The trainer for the configured space, and the space as declared; ConfigError when the
    configuration's task is not the space's domain."""
    plain = compile_file(locate(cfg.space.name).resolve())
    if plain.spec.domain != cfg.task:
        raise ConfigError(f"space {plain.name} is a {plain.spec.domain} space; the configuration's "
                          f"task is {cfg.task!r} (use a {plain.spec.domain} preset, or set task: "
                          f"{plain.spec.domain} and matching data)")
    return trainer_class(cfg.task), plain


# ---------------------------------------------------------------- run directories


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    report: dict[str, Any]


def _write_run_files(run_dir: RunDir, trainer: Trainer) -> None:
    atomic_write_text(run_dir.config_path, config_yaml(trainer.cfg))
    run_dir.write_json(run_dir.genotype_path, trainer.genotype.to_dict())
    run_dir.write_space_record(trainer.compiled.spec, str(locate(trainer.cfg.space.name).resolve()))


def start_training(cfg: TrainConfig, genotype: Genotype | str, quiet: bool = True,
                   split: EvalSplit = TEST_SPLIT, run_dir: Path | None = None) -> TrainResult:
    """A new run: build everything (failing before anything is written), then train.

    `run_dir`: train into this (new or empty) folder instead of a fresh one under run.out.
    """
    trainer_cls, plain = space_trainer(cfg)
    if not isinstance(genotype, Genotype):
        genotype = resolve(str(genotype), plain.name)
    trainer = trainer_cls.build(cfg, genotype, split)
    if run_dir is None:
        folder = RunDir.create(Path(cfg.run.out), f"train-{trainer.compiled.name}")
    else:
        folder = RunDir(Path(run_dir).expanduser().resolve())
        folder.path.mkdir(parents=True, exist_ok=True)
        if any(folder.path.iterdir()):
            raise ConfigError(f"{folder.path}: not empty; choose a new folder or --resume it")
    log.info("run directory %s", folder.path)
    _write_run_files(folder, trainer)
    trainer.save(folder.checkpoint_path)
    return TrainResult(folder.path, trainer.run(folder, quiet))


def resume_training(path: Path, device: str | None = None, quiet: bool = True) -> TrainResult:
    """Continue the training run in `path` from its checkpoint."""
    run_dir = RunDir(Path(path).expanduser().resolve())
    if not run_dir.config_path.is_file():
        raise ConfigError(f"{path}: not a run directory (no {run_dir.config_path.name})")
    cfg = read_train_config(run_dir.config_path)
    trainer_cls, _ = space_trainer(cfg)
    state = load_checkpoint(run_dir.checkpoint_path, CHECKPOINT_KIND, trainer_cls.CHECKPOINT_KEYS)
    if state["config"] != config_to_dict(cfg):
        raise CheckpointError(f"{run_dir.checkpoint_path}: written by a different configuration "
                              f"than {run_dir.config_path}")
    try:
        genotype = Genotype.from_dict(state["genotype"])
    except GenotypeError as error:
        raise CheckpointError(f"{run_dir.checkpoint_path}: {error}") from None
    if device is not None:
        cfg = replace(cfg, run=replace(cfg.run, device=device))
    trainer = trainer_cls.build(cfg, genotype, TEST_SPLIT)
    trainer.load_state_dict(state, run_dir.checkpoint_path)
    run_dir.keep_metrics_through(trainer.epoch)
    log.info("resuming %s at epoch %d, step %d", run_dir.path, trainer.epoch + 1, trainer.step)
    return TrainResult(run_dir.path, trainer.run(run_dir, quiet))


def describe_report(report: Mapping[str, Any]) -> list[str]:
    """The report as lines for a terminal."""
    return trainer_class(report.get("task", Trainer.TASK)).report_lines(report)
