"""Training a derived network from scratch (DARTS Sect. 3.2, "architecture evaluation").

The network is the standalone derived network the compiler generates for a space and a
genotype (`CompiledSpace.discrete_network`). One loop for every domain: the domain's training
task (spacec.runtime.domains) supplies the batches, the loss with its regularisers, the
evaluation and the report's figures. Every step: SGD with momentum and weight decay on the
task's loss, the gradient's total norm clipped, the learning rate of the epoch's schedule
(scaled per step where the task asks, as text does by segment length). Drop path's probability,
where the network has one, grows linearly, ``drop_path_prob · epoch / epochs`` for 0-based
epochs. After every epoch the network is evaluated on the task's evaluation split and a metrics
record is appended; with ``optim.nonmono`` set, NT-ASGD (spacec.runtime.train.nt_asgd) may switch
to averaged SGD, whose averages are then evaluated.

A run directory (spacec.runtime.run.rundir) holds ``config.yaml``, ``genotype.json``,
``space.json``, ``metrics.jsonl``, ``checkpoint.pt`` (the last state, everything needed to
resume), ``best.pt`` (the state after the best epoch: the domain says by which figure) and, at the
end, ``report.json`` (with the held-back split's figures, where the task has one, computed with
best.pt's weights). Checkpoints are written atomically. Nothing non-finite is written
(spacec.runtime.run.finite): a non-finite loss, or a non-finite value in what an epoch's end or a
checkpoint would write (weights, BatchNorm buffers, optimiser states, figures), stops the run
with `TrainingError` and leaves the checkpoints as they were.

On several processes (torchrun; spacec.runtime.run.distributed) every process runs this loop on
its share of each batch, the training forward through DistributedDataParallel; evaluations add
up every process's figures (the reported accuracy is the global one), and only rank 0 writes
the run directory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spacec.arch.genotype import Genotype, GenotypeError, resolve
from spacec.files import atomic_write_text, make_dirs
from spacec.load import CompiledSpace, locate
from spacec.runtime.domains import StepBatches, TrainTask, domain
from spacec.runtime.errors import CheckpointError, ConfigError
from spacec.runtime.nn import gemm
from spacec.runtime.nn.accelerate import accelerate_network, float32_dilated_under_cpu_autocast
from spacec.runtime.nn.flops import count_parameters
from spacec.runtime.nn.memory import set_memory
from spacec.runtime.run.checkpoint import check_same_data, load_checkpoint, save_checkpoint
from spacec.runtime.run.config import resume_view
from spacec.runtime.run.console import EPOCH_RECORD, SCREEN
from spacec.runtime.run.distributed import stopping_cleanly
from spacec.runtime.run.events import Events, open_events, tensorboard_enabled
from spacec.runtime.run.finite import Guard, optimiser_parameter_names, position
from spacec.runtime.run.fits import Fit, check_train_memory, resolved_memory
from spacec.runtime.run.heap import frozen_setup
from spacec.runtime.run.meter import Meter, format_metrics, progress_bar, progress_enabled
from spacec.runtime.run.rng import capture_rng, restore_rng
from spacec.runtime.run.rundir import CHECKPOINT_NAME, RunDir, open_run_dir
from spacec.runtime.run.schedules import drop_path_prob, learning_rate
from spacec.runtime.run.session import Session
from spacec.runtime.train.config import (
    TrainConfig,
    config_to_dict,
    config_yaml,
    read_train_config,
)
from spacec.runtime.train.nt_asgd import (
    NonMonotoneSwitch,
    averaged_sgd,
    averaged_weights,
    checkpoint_averages,
    is_averaging,
)

__all__ = ["TrainResult", "Trainer", "describe_report", "network_from_checkpoint",
           "resume_training", "start_training"]

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "train"
CHECKPOINT_KEYS = ("config", "genotype", "split", "space_sha256", "space_source", "space_params",
                   "data", "epoch", "step", "model", "optimizer", "meter", "epoch_seconds",
                   "wall_seconds", "best", "task", "nt_asgd", "rng")


@dataclass
class Best:
    """The best epoch so far (1-based; 0: none yet) and its evaluation figures."""

    epoch: int = 0
    scores: dict[str, float] | None = None


class Trainer:
    """One training run: the network, its optimiser, the task and the position."""

    fit: Fit | None = None  # the predicted peak memory of a step (spacec.runtime.run.fits)

    def __init__(self, cfg: TrainConfig, session: Session, compiled: CompiledSpace,
                 genotype: Genotype, network: nn.Module, task: TrainTask) -> None:
        self.cfg = cfg
        self.session = session
        self.compiled = compiled
        self.genotype = genotype
        self.network = network
        self.task = task
        # What training forwards call: the network, or its DDP replica on several processes.
        # With run.compile, its torch.compile version.
        self.trainable = session.compiled(
            session.replicate(network, methods=task.forward_methods), task.forward_methods)
        self.best_rule = domain(cfg.task).best
        optim = cfg.optim
        self.optimizer = torch.optim.SGD(network.parameters(), lr=optim.lr,
                                         momentum=optim.momentum, weight_decay=optim.weight_decay)
        self.switch = None if optim.nonmono is None else NonMonotoneSwitch(optim.nonmono)
        self.history: list[float] = []  # validation losses of the SGD epochs (NT-ASGD)
        self.averaging_since = 0  # the epoch after which ASGD took over; 0: not (yet)
        self.epoch = 0  # 0-based epoch in progress (== epochs finished)
        self.step = 0  # steps finished in that epoch
        self.meter = Meter()
        self.epoch_seconds = 0.0
        self.wall_seconds = 0.0  # training and evaluation time of every finished epoch
        self.best = Best()
        self.guard = Guard(session, "train")  # nothing non-finite is written
        self.events = Events()  # where epochs go (the run's sinks while `run` runs)

    @property
    def device(self) -> torch.device:
        return self.session.device

    @property
    def split(self) -> str:
        return self.task.split

    @classmethod
    def build(cls, cfg: TrainConfig, genotype: Genotype, split: str | None = None,
              session: Session | None = None) -> Trainer:
        """Open the data, compile the space, build the network; nothing is written.

        `split`: the evaluation split of every epoch (the domain's first by default).
        """
        session = session or Session.start(cfg.run)
        tensorboard_enabled(cfg.run.tensorboard)  # asked for and not installed: before anything
        kind = domain(cfg.task)
        split = split or kind.splits[0]
        if split not in kind.splits:
            raise ConfigError(f"a {cfg.task} run is evaluated on {', '.join(kind.splits)}; "
                              f"not on {split!r}")
        # A genotype that does not fit the space is reported before any data is opened.
        session.compile(cfg.space.name).discrete_source(genotype)
        task = kind.train_task(cfg.data, cfg.optim, split, session.seed, session.device,
                               shard=session.shard)
        session.describe_batch(cfg.data.batch_size, "data.batch_size")
        compiled = session.compile_run_space(
            cfg.space, task.space_params(session.compile(cfg.space.name)))
        task.check_space(compiled)
        # The predicted peak of a step against the free memory, before the network exists.
        fit = check_train_memory(compiled.ir, genotype,
                                 session.shard.per_rank(cfg.data.batch_size, "data.batch_size"),
                                 getattr(cfg.optim, "auxiliary_weight", 0) > 0,
                                 getattr(cfg.optim, "drop_path_prob", 0) > 0,
                                 session.device, session.local_world_size)
        # The backend of a recurrent network's float32 CPU products (run.matmul), one for all
        # the run's processes, decided as the network is built.
        gemm.select_for_run(cfg.run.matmul, session.gather)
        network = accelerate_network(compiled.discrete_network(genotype, **task.network_kwargs()))
        if session.precision != "fp32" and session.device.type == "cpu":
            float32_dilated_under_cpu_autocast(network)
        # No mixed edge: `auto` keeps everything; a setting that recomputes is refused.
        set_memory(network, resolved_memory(cfg.run.memory, None))
        task.bind(network)
        log.info("%s", task.describe())
        built = cls(cfg, session, compiled, genotype,
                    session.lay_out(network.to(session.device)), task)
        built.fit = fit  # the predicted peak memory (None: not predicted)
        return built

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": CHECKPOINT_KIND,
            "config": config_to_dict(self.cfg),
            "genotype": self.genotype.to_dict(),
            "split": self.split,
            "space_sha256": self.compiled.spec.digest,
            "space_source": str(locate(self.cfg.space.name).resolve()),
            "space_params": dict(self.compiled.spec.params),
            "data": self.task.data_record(),
            "epoch": self.epoch,
            "step": self.step,
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "meter": self.session.reduce_meter(self.meter).state_dict(),  # every process's
            "epoch_seconds": self.epoch_seconds,
            "wall_seconds": self.wall_seconds,
            "best": {"epoch": self.best.epoch, "scores": self.best.scores},
            "task": self.task.state_dict(),
            "data_fingerprint": self.task.data_fingerprint(),
            "nt_asgd": {"history": list(self.history), "averaging_since": self.averaging_since},
            "rng": capture_rng(cuda=self.session.cuda),
        }

    def load_state_dict(self, state: Mapping[str, Any], where: Path) -> None:
        if state["space_sha256"] != self.compiled.spec.digest:
            raise CheckpointError(f"{where}: the space {self.compiled.spec.path} changed since "
                                  "the checkpoint was written (its sha256 differs)")
        if state["split"] != self.split:
            raise CheckpointError(f"{where}: a run evaluated on {state['split']!r}, "
                                  f"not {self.split!r}")
        check_same_data(state.get("data_fingerprint"), self.task.data_fingerprint(), where)
        averaging_since = int(state["nt_asgd"]["averaging_since"])
        if averaging_since and not is_averaging(self.optimizer):
            self.optimizer = self._averaged_sgd()  # so that ASGD's state loads into ASGD
        try:
            self.network.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.session.is_main:  # the meter holds every process's updates: count them once
                self.meter.load_state_dict(state["meter"])
            self.best = Best(int(state["best"]["epoch"]), state["best"]["scores"])
            self.task.load_state_dict(state["task"])
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{where}: does not fit this run "
                                  f"({type(error).__name__}: {str(error).splitlines()[0]})") from None
        self.history = [float(loss) for loss in state["nt_asgd"]["history"]]
        self.averaging_since = averaging_since
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.epoch_seconds = float(state["epoch_seconds"])
        self.wall_seconds = float(state["wall_seconds"])
        steps = self.task.steps_in_epoch(self.epoch)
        if not 0 <= self.step < max(1, steps):
            raise CheckpointError(f"{where}: step {self.step} is outside an epoch of "
                                  f"{steps} steps")
        restore_rng(state["rng"], one_device_per_process=self.session.distributed)
        self.guard.committed(Path(where).parent, self.epoch, self.step)

    def save(self, path: Path) -> None:
        """Checkpoint: every process gathers the state, rank 0 writes it, unless something in
        it is not finite (TrainingError; the files on disk stay the last good ones)."""
        state = self.state_dict()
        bad = self.guard.inspect(state, optimisers=self.optimiser_names())
        if bad:
            raise self.guard.error(bad, f"the checkpoint of {position(self.epoch, self.step)}")
        if self.session.is_main:
            save_checkpoint(path, state)
        if Path(path).name == CHECKPOINT_NAME:  # not best.pt
            self.guard.committed(Path(path).parent, self.epoch, self.step)

    def optimiser_names(self) -> dict[str, list[str]]:
        """The optimiser's state entry, with its parameters' names (for messages)."""
        return {"optimizer": optimiser_parameter_names(self.optimizer, self.network)}

    # -- the loop ------------------------------------------------------------------------------

    def run(self, run_dir: RunDir, quiet: bool = True) -> dict[str, Any]:
        """Train until the last epoch; returns the report (also written to report.json)."""
        show = progress_enabled(quiet) and self.session.is_main
        with open_events(run_dir, self.cfg.run.tensorboard, self.session.is_main,
                         first_step=self.epoch + 1) as self.events, frozen_setup():
            while self.epoch < self.cfg.optim.epochs:
                self._run_epoch(run_dir, show)
        self.events = Events()
        report = self.report(run_dir)
        if self.session.is_main:
            run_dir.write_json(run_dir.report_path, report)
        return report

    def _run_epoch(self, run_dir: RunDir, show: bool) -> None:
        epoch, epochs = self.epoch, self.cfg.optim.epochs
        lr = learning_rate(epoch, self.cfg.optim)
        if hasattr(self.network, "drop_path_prob"):
            self.network.drop_path_prob = drop_path_prob(epoch, epochs,
                                                         self.cfg.optim.drop_path_prob)
        self.network.train()
        steps = self.task.steps_in_epoch(epoch)
        every = self.cfg.run.checkpoint_every
        started = time.perf_counter()
        with progress_bar(steps, self.step, f"epoch {epoch + 1}/{epochs}", show) as bar:
            for batch in self.task.batches(epoch, self.step):
                where = f"epoch {epoch + 1} step {self.step + 1}"
                self._step(batch, lr, where)
                self.step += 1
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in self.meter.means().items()},
                                refresh=False)
                if self.step % self.cfg.run.log_every == 0:
                    log.info("%s/%d: %s", where, steps, format_metrics(self.meter.means()))
                global_step = epoch * steps + self.step
                if every and global_step % every == 0 and self.step < steps:
                    now = time.perf_counter()
                    self.epoch_seconds += now - started
                    started = now
                    self.save(run_dir.checkpoint_path)
        self.epoch_seconds += time.perf_counter() - started
        self._finish_epoch(run_dir, lr)

    def _step(self, batch: StepBatches, lr: float, where: str) -> None:
        """One training step at the epoch's learning rate `lr`, scaled as the batch asks."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr * batch.lr_scale
        self.optimizer.zero_grad(set_to_none=True)
        with self.session.autocast():  # run.precision
            out = self.task.train_loss(self.trainable, batch.train)
        self.guard.check_loss(out.metrics["loss"], "the training loss", where)
        out.loss.backward()
        self.guard.clip_gradients(self.network.named_parameters(), self.cfg.optim.grad_clip,
                                  where)
        self.optimizer.step()
        self.meter.update(out.metrics, out.weight)

    def evaluate(self) -> dict[str, float]:
        """The task's evaluation split, with ASGD's averaged weights once it runs."""
        self.session.sync_buffers(self.network)  # every process evaluates rank 0's network
        with averaged_weights(self.network, self.optimizer):
            return self.task.evaluate(self.network)

    def _finish_epoch(self, run_dir: RunDir, lr: float) -> None:
        number = self.epoch + 1
        where = f"the end of epoch {number}"
        train = self.task.epoch_metrics(self.session.reduce_meter(self.meter).means())

        def record_of(scores: Mapping[str, float]) -> dict[str, Any]:
            return {
                "epoch": number,
                "epochs": self.cfg.optim.epochs,
                "steps": self.task.steps_in_epoch(self.epoch),
                **{f"train_{k}": v for k, v in train.items()},
                **{f"{self.split}_{k}": v for k, v in scores.items()},
                "lr": lr,
                **self._record_extras(),
                "seconds": round(self.epoch_seconds, 3),
            }

        # Before anything of the epoch is evaluated or written: everything the checkpoint would
        # hold, then the epoch's figures. A NaN stop leaves the epoch's record (nulls, and what
        # was not finite) and nothing else of it; a resumed run drops that record.
        self.guard.check_epoch(self.state_dict(), record_of({}), where, self.events,
                               self.optimiser_names())
        evaluated = time.perf_counter()
        scores = self.evaluate()
        self.epoch_seconds += time.perf_counter() - evaluated
        record = record_of(scores)
        self.guard.check_epoch({}, record, where, self.events)
        if self.session.is_main:
            self.events.epoch(record)
        self.wall_seconds += self.epoch_seconds
        self.epoch, self.step = number, 0
        self.meter, self.epoch_seconds = Meter(), 0.0
        # Without an evaluation split (the task's scores are empty) the last epoch is kept.
        value = scores.get(self.best_rule.metric)
        improved = value is None or self.best_rule.better(
            value, self.best.scores and self.best.scores[self.best_rule.metric])
        if improved:
            self.best = Best(number, dict(scores))
            # best.pt first: a crash before checkpoint.pt re-runs this epoch and rewrites both.
            self.save(run_dir.best_path)
        self._nt_asgd(scores)
        self.save(run_dir.checkpoint_path)
        shown = {k: v for k, v in record.items() if k not in ("epoch", "epochs", "steps")}
        log.info("epoch %d/%d: %s%s", number, record["epochs"], format_metrics(shown),
                 " (best)" if improved else "",
                 extra={EPOCH_RECORD: {**record, "best": improved}})

    def _record_extras(self) -> dict[str, Any]:
        extras: dict[str, Any] = {}
        if hasattr(self.network, "drop_path_prob"):
            extras["drop_path_prob"] = self.network.drop_path_prob
        if self.switch is not None:
            extras["asgd"] = is_averaging(self.optimizer)
        return extras

    def _nt_asgd(self, scores: Mapping[str, float]) -> None:
        """After an epoch's evaluation and best.pt, before its checkpoint: NT-ASGD's switch."""
        if self.switch is None or is_averaging(self.optimizer):
            return
        if self.switch.should_switch(self.history, scores["loss"]):
            log.info("epoch %d: validation loss %.4g is above the best before the last %d "
                     "epochs; switching to averaged SGD", self.epoch, scores["loss"],
                     self.switch.nonmono)
            self.optimizer = self._averaged_sgd()
            self.averaging_since = self.epoch
        self.history.append(scores["loss"])

    def _averaged_sgd(self) -> torch.optim.ASGD:
        # rnn/train.py: ASGD(lr=args.lr, t0=0, lambd=0., weight_decay=args.wdecay).
        return averaged_sgd(self.network.parameters(), self.cfg.optim.lr,
                            self.cfg.optim.weight_decay)

    # -- the report ----------------------------------------------------------------------------

    @contextmanager
    def best_weights(self, run_dir: RunDir) -> Iterator[None]:
        """Inside the block the network holds best.pt's weights (ASGD's averages where it ran);
        the current ones otherwise. The network is restored after. On several processes rank 0
        reads best.pt and sends its weights to the others."""
        path = run_dir.best_path
        if not self.session.broadcast_object(path.is_file()):
            yield
            return
        current = {name: value.clone() for name, value in self.network.state_dict().items()}
        try:
            if self.session.is_main:
                best = load_checkpoint(path, CHECKPOINT_KIND, CHECKPOINT_KEYS)
                self.network.load_state_dict(best["model"])
                with torch.no_grad():
                    for param, average in checkpoint_averages(self.network, best):
                        param.copy_(average)  # in place: a tied weight changes everywhere
            self.session.sync_module(self.network)
            yield
        finally:
            self.network.load_state_dict(current)

    def report(self, run_dir: RunDir) -> dict[str, Any]:
        """The figures of the finished run: best and last evaluation, the held-back split's
        (with the best weights), parameters, the domain's own figures and time."""
        records = [r for r in run_dir.read_metrics() if isinstance(r.get("epoch"), int)]
        last = records[-1] if records else {}
        with self.best_weights(run_dir):
            final = self.task.final_scores(self.network)
        split = self.split
        best_scores = self.best.scores or {}
        metrics = [key.removeprefix(f"{split}_") for key in last if key.startswith(f"{split}_")]
        report: dict[str, Any] = {
            "run_dir": str(run_dir.path),
            "task": self.cfg.task,
            "space": self.compiled.name,
            "space_params": dict(self.compiled.spec.params),
            "genotype": self.genotype.to_dict(),
            "split": split,
            "epochs": self.epoch,
            **{f"best_{split}_{k}": best_scores.get(k) for k in (best_scores or metrics)},
            "best_epoch": self.best.epoch,
            **{f"last_{split}_{k}": last.get(f"{split}_{k}") for k in metrics},
            **{f"test_{k}": v for k, v in final.items()},
            # DARTS counts parameters without the auxiliary head (utils.count_parameters_in_MB).
            "parameters": count_parameters(self.network),
            **self.task.report_fields(self.network),
            "wall_seconds": round(self.wall_seconds, 3),
        }
        if self.switch is not None:
            report["averaged_sgd_from_epoch"] = (self.averaging_since + 1
                                                 if self.averaging_since else None)
        return self.session.broadcast_object(report)  # rank 0's: it read the metrics it wrote


# ---------------------------------------------------------------- the derived network


def network_from_checkpoint(state: Mapping[str, Any], auxiliary: bool = False) -> nn.Module:
    """The derived network of an image training checkpoint, with its weights (eval mode).

    Without `auxiliary` the auxiliary head, used only in training, is left out.
    """
    from spacec.load import compile_file
    from spacec.runtime.train.config import config_from_dict

    cfg = config_from_dict(state["config"], "checkpoint")
    genotype = Genotype.from_dict(state["genotype"])
    source = Path(state["space_source"])
    if not source.is_file():  # written on another machine: the space by its configured name
        source = locate(cfg.space.name)
    compiled = compile_file(source, dict(state["space_params"]))
    if compiled.spec.digest != state["space_sha256"]:
        log.warning("%s changed since the checkpoint was written; rebuilding from it anyway",
                    source)
    network = compiled.discrete_network(genotype, auxiliary=auxiliary, drop_path_prob=0.0)
    weights = state["model"]
    if not auxiliary:
        weights = {k: v for k, v in weights.items() if not k.startswith("auxiliary_head.")}
    try:
        network.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"the checkpoint's weights do not fit {cfg.space.name} "
                              f"({str(error).splitlines()[0]})") from None
    return network.eval()


# ---------------------------------------------------------------- run directories


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    report: dict[str, Any]


def _check_task(cfg: TrainConfig, session: Session) -> str:
    """The configured space's name, after checking that the configuration's task is its domain."""
    plain = session.compile(cfg.space.name)
    if plain.spec.domain != cfg.task:
        raise ConfigError(f"space {plain.name} is a {plain.spec.domain} space; the configuration's "
                          f"task is {cfg.task!r} (use a {plain.spec.domain} preset, or set task: "
                          f"{plain.spec.domain} and matching data)")
    return plain.name


def _write_run_files(run_dir: RunDir, trainer: Trainer, header: str = "") -> None:
    atomic_write_text(run_dir.config_path, header + config_yaml(trainer.cfg))
    run_dir.write_json(run_dir.genotype_path, trainer.genotype.to_dict())
    run_dir.write_space_record(trainer.compiled.spec,
                               str(locate(trainer.cfg.space.name).resolve()))


def start_training(cfg: TrainConfig, genotype: Genotype | str, quiet: bool = True,
                   split: str | None = None, run_dir: Path | None = None,
                   trainer: Trainer | None = None, header: str = "") -> TrainResult:
    """A new run: build everything (failing before anything is written), then train.

    `split`: the evaluation split of every epoch (the domain's default: the validation split,
    held out of the training images or a validation set, for images; the validation text for
    language models). `run_dir`: train into this (new or empty) folder instead of a fresh one
    under run.out. `trainer`: already built from `cfg` and the genotype; `header`: comment
    lines that open config.yaml.
    """
    session = Session.start(cfg.run)
    space_name = _check_task(cfg, session)
    if not isinstance(genotype, Genotype):
        genotype = resolve(str(genotype), space_name)
    trainer = trainer or Trainer.build(cfg, genotype, split, session)
    made = _new_run_dir(cfg, trainer, run_dir) if session.is_main else None
    folder = RunDir(session.broadcast_object(made and made.path))  # rank 0 made it
    if session.is_main:
        log.info("run directory %s", folder.path, extra={SCREEN: True})
    with folder.tracking(str(trainer.device), session.is_main), stopping_cleanly(folder.path):
        if session.is_main:
            _write_run_files(folder, trainer, header)
        trainer.save(folder.checkpoint_path)
        report = trainer.run(folder, quiet)
    return TrainResult(folder.path, report)


def _new_run_dir(cfg: TrainConfig, trainer: Trainer, run_dir: Path | None) -> RunDir:
    if run_dir is None:
        return RunDir.create(Path(cfg.run.out), f"train-{trainer.compiled.name}")
    folder = RunDir(Path(run_dir).expanduser().resolve())
    make_dirs(folder.path)
    if any(folder.path.iterdir()):
        raise ConfigError(f"{folder.path}: not empty; choose a new folder or --resume it")
    return folder


def resume_training(path: Path, device: str | None = None, quiet: bool = True,
                    on_build: Callable[[Trainer], None] | None = None) -> TrainResult:
    """Continue the training run in `path` from its checkpoint; `on_build(trainer)` runs once
    the run is restored, before it continues."""
    run_dir = open_run_dir(path)
    cfg = read_train_config(run_dir.config_path)
    session = Session.start(replace(cfg.run, device=device) if device else cfg.run)
    _check_task(cfg, session)
    # Rank 0 reads the checkpoint (it wrote it) and sends it to the others.
    state = session.on_main(lambda: load_checkpoint(run_dir.checkpoint_path, CHECKPOINT_KIND,
                                                    CHECKPOINT_KEYS))
    if resume_view(state["config"]) != resume_view(config_to_dict(cfg)):
        raise CheckpointError(f"{run_dir.checkpoint_path}: written by a different configuration "
                              f"than {run_dir.config_path}")
    try:
        genotype = Genotype.from_dict(state["genotype"])
    except GenotypeError as error:
        raise CheckpointError(f"{run_dir.checkpoint_path}: {error}") from None
    if device is not None:
        cfg = replace(cfg, run=replace(cfg.run, device=device))
    trainer = Trainer.build(cfg, genotype, state["split"], session)
    trainer.load_state_dict(state, run_dir.checkpoint_path)
    if trainer.session.is_main:
        run_dir.keep_metrics_through(trainer.epoch)
    if on_build is not None:
        on_build(trainer)
    log.info("resuming %s at epoch %d, step %d", run_dir.path, trainer.epoch + 1, trainer.step)
    with run_dir.tracking(str(trainer.device), trainer.session.is_main), \
            stopping_cleanly(run_dir.path):
        report = trainer.run(run_dir, quiet)
    return TrainResult(run_dir.path, report)


def describe_report(report: Mapping[str, Any]) -> list[str]:
    """The report as lines for a terminal."""
    return domain(report.get("task", "image")).report_lines(report)
