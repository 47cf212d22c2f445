"""The search loop (DARTS, Liu, Simonyan & Yang, ICLR 2019, Alg. 1) on any compiled space.

One loop for every space, domain, method and strategy. The method (spacec.runtime.search.methods)
brings the supernet's relaxation, loss terms for the α and the weight step, and epochs with α
frozen; the strategy says what a step does. Every step reads the batches the
strategy's plan asks of the domain's search task and lets the strategy move α and w (for DARTS'
bilevel strategy, as quark0/darts cnn/train_search.py: the α step on a validation batch through
`spacec.runtime.search.architect.Architect`, first or second order; then the w step on a training
batch: SGD with momentum, weight decay, the gradient's total norm clipped, the learning rate of
the epoch's schedule). At the start of every epoch the supernet's relaxation moves its schedule;
at the end the loop evaluates on the validation split, derives the genotype, writes α, the
genotype and a metrics record to the run directory, and checkpoints; it can also checkpoint every
N steps. A checkpoint holds everything a resumed run needs to continue exactly as an
uninterrupted one: model (weights, architecture tensors, BatchNorm buffers), both optimisers, the
relaxation's state, the position (epoch, step), the partial epoch's metrics, the task's state and
every RNG state. On CPU, a resumed run and an uninterrupted one with the same seed give identical
α. Exceptions: ``num_workers > 0`` (worker augmentation restarts from the pass's seed on resume)
and CUDA kernels that are not deterministic.

On several processes (torchrun; spacec.runtime.run.distributed) the same loop runs on every
process: the weight step through DistributedDataParallel (`Session.replicate`), the architect
averaging its α gradients, each process reading its share of every global batch; metrics and
checkpoint contents are gathered on every process at the same step, and only rank 0 writes the
run directory. A checkpoint holds the global state, so a run resumes on any number of processes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spacec.arch.derive import check_genotype
from spacec.arch.genotype import Genotype
from spacec.arch.methods import describe
from spacec.load import CompiledSpace
from spacec.runtime.domains import SearchTask, StepBatches, domain
from spacec.runtime.errors import CheckpointError, ConfigError
from spacec.runtime.nn import gemm
from spacec.runtime.nn.memory import BALANCED, set_memory
from spacec.runtime.run.checkpoint import check_same_data, load_checkpoint, save_checkpoint
from spacec.runtime.run.config import resume_view
from spacec.runtime.run.console import EPOCH_RECORD, SCREEN
from spacec.runtime.run.distributed import stopping_cleanly
from spacec.runtime.run.events import Events, open_events, tensorboard_enabled
from spacec.runtime.run.finite import Guard, optimiser_parameter_names, position
from spacec.runtime.run.fits import (
    Fit,
    agreed_memory,
    check_search_memory,
    resolved_memory,
)
from spacec.runtime.run.heap import frozen_setup
from spacec.runtime.run.meter import Meter, format_metrics, progress_bar, progress_enabled
from spacec.runtime.run.rng import capture_rng, restore_rng
from spacec.runtime.run.rundir import RunDir, open_run_dir
from spacec.runtime.run.schedules import learning_rate
from spacec.runtime.run.session import Session
from spacec.runtime.search.architect import Architect
from spacec.runtime.search.config import SearchConfig, read_config, to_dict, write_config
from spacec.runtime.search.methods import method
from spacec.runtime.search.strategy import Strategy, strategy

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "search"
_CHECKPOINT_KEYS = ("config", "space_sha256", "epoch", "step", "model", "w_optimizer",
                    "architect", "relaxation", "meters", "epoch_seconds", "task", "rng")


@dataclass(frozen=True)
class SearchResult:
    run_dir: Path
    genotype: Genotype
    epochs: int


class Search:
    """One search: the supernet, its two optimisers, the strategy, the task and the position."""

    fit: Fit | None = None  # the predicted peak memory of a step (spacec.runtime.run.fits)

    def __init__(self, cfg: SearchConfig, session: Session, compiled: CompiledSpace,
                 task: SearchTask, model: nn.Module, strategy: Strategy) -> None:
        self.cfg = cfg
        self.session = session
        self.compiled = compiled
        self.task = task
        self.model = model
        self.strategy = strategy
        # What training forwards call: the model, or its DDP replica on several processes.
        # With run.compile, its torch.compile version (the architect's functional calls run on
        # the model itself, in fp32; a recurrent model compiles its time step in place, so they
        # run that compiled too).
        self.trainable = session.compiled(
            session.replicate(model, model.relaxation.all_candidates_used))
        optim = cfg.optim
        self.w_optimizer = torch.optim.SGD(
            model.weights(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
        )
        self.method = method(cfg.method.name)
        self.domain = domain(cfg.task)
        self.derive_options = self.method.info.derive_options(cfg.method)
        self.warmup = self.method.warmup_epochs(cfg.method)
        self.terms = self.method.terms(cfg.method, compiled)
        # A method without α (random_ws) has no architect.
        self.architect = None
        if model.arch_parameters():
            self.architect = Architect(
                model, self.w_optimizer, strategy.architect_loss(task, session.autocast),
                cfg.arch,
                reduce=session.all_reduce_mean if session.distributed else None,
                wrapped=self.trainable,
            )
            if self.terms.arch is not None:
                self.architect.arch_penalty = lambda alphas: self.terms.arch(self.epoch, alphas)
        self.epoch = 0  # 0-based epoch in progress (== epochs finished)
        self.step = 0  # steps finished in that epoch
        self.train_meter = Meter()
        self.arch_meter = Meter()
        self.epoch_seconds = 0.0
        self.guard = Guard(session, "search")  # nothing non-finite is written
        self.events = Events()  # where epochs go (the run's sinks while `run` runs)

    @property
    def device(self) -> torch.device:
        return self.session.device

    @classmethod
    def build(cls, cfg: SearchConfig, session: Session | None = None) -> Search:
        """Compile the space, open the data, build the supernet; nothing is written."""
        session = session or Session.start(cfg.run)
        tensorboard_enabled(cfg.run.tensorboard)  # asked for and not installed: before anything
        plain = session.compile(cfg.space.name)
        if plain.spec.domain != cfg.task:
            raise ConfigError(
                f"space {plain.name} is a {plain.spec.domain} space; the configuration's "
                f"task is {cfg.task!r} (set task: {plain.spec.domain} and matching data)"
            )
        chosen_method = method(cfg.method.name)
        if chosen_method.relaxation is None:
            raise ConfigError(f"method {cfg.method.name!r} trains its candidates from scratch, "
                              "without a supernet: `spacec search --method "
                              f"{cfg.method.name}` runs it (spacec.runtime.tools.select."
                              "random_search)")
        chosen = strategy(cfg.arch.mode)
        task = domain(cfg.task).search_task(cfg.data, chosen.plan, session.seed, session.device,
                                            shard=session.shard)
        session.describe_batch(cfg.data.batch_size, "data.batch_size")
        compiled = session.compile_run_space(cfg.space, task.space_params(plain))
        task.check_space(compiled)
        # The predicted peak of a step against the free memory, before the supernet exists.
        def check(memory: str) -> Fit | None:
            per_rank = session.shard.per_rank(cfg.data.batch_size, "data.batch_size")
            return check_search_memory(
                compiled.ir, task.largest_batch(per_rank),
                cfg.arch.order, cfg.method.name, dataclasses.asdict(cfg.method), memory,
                getattr(cfg.data, "bptt", None), session.device, session.local_world_size)

        fit = check(cfg.run.memory)
        # `auto`: each process chose for its own free memory; all keep what the leanest keeps.
        memory = agreed_memory(session.gather(resolved_memory(cfg.run.memory, fit)))
        if fit is not None and fit.memory != memory:
            fit = dataclasses.replace(check(memory), chosen=True,
                                      reason="another process of this run has less memory free")
        # The backend of a recurrent network's float32 CPU products (run.matmul), one for all
        # the run's processes, decided as the network is built.
        gemm.select_for_run(cfg.run.matmul, session.gather)
        if memory == BALANCED and session.precision != "fp32":
            log.warning("run.memory %s with run.precision %s: the weight steps' forward passes "
                        "run under autocast, where %s recomputes nothing and keeps what fast "
                        "keeps; the architecture steps' float32 passes recompute", memory,
                        session.precision, memory)
        relaxation = chosen_method.build_relaxation(cfg.method)
        relaxation.seed(session.seed)
        model = compiled.supernet(relaxation=relaxation, **task.network_kwargs())
        set_memory(model, memory)
        model = session.lay_out(model.to(session.device))
        task.bind(model)
        log.info("space %s (%s), %s", compiled.name, compiled.spec.path, task.describe())
        built = cls(cfg, session, compiled, task, model, chosen)
        built.fit = fit  # the predicted peak memory (None: not predicted)
        return built

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": CHECKPOINT_KIND,
            "config": to_dict(self.cfg),
            "space_sha256": self.compiled.spec.digest,
            "epoch": self.epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "w_optimizer": self.w_optimizer.state_dict(),
            "architect": {} if self.architect is None else self.architect.state_dict(),
            "relaxation": self.model.relaxation.state_dict(),
            # Every process's updates (a collective on several processes).
            "meters": {"train": self.session.reduce_meter(self.train_meter).state_dict(),
                       "arch": self.session.reduce_meter(self.arch_meter).state_dict()},
            "epoch_seconds": self.epoch_seconds,
            "task": self.task.state_dict(),
            "data_fingerprint": self.task.data_fingerprint(),
            "rng": capture_rng(cuda=self.session.cuda),
        }

    def load_state_dict(self, state: Mapping[str, Any], where: Path) -> None:
        if state["space_sha256"] != self.compiled.spec.digest:
            raise CheckpointError(f"{where}: the space {self.compiled.spec.path} changed since the "
                                  "checkpoint was written (its sha256 differs)")
        check_same_data(state.get("data_fingerprint"), self.task.data_fingerprint(), where)
        try:
            self.model.load_state_dict(state["model"])
            self.w_optimizer.load_state_dict(state["w_optimizer"])
            if self.architect is not None:
                self.architect.load_state_dict(state["architect"])
            self.model.relaxation.load_state_dict(state["relaxation"])
            if self.session.is_main:  # the meters hold every process's updates: count them once
                self.train_meter.load_state_dict(state["meters"]["train"])
                self.arch_meter.load_state_dict(state["meters"]["arch"])
            self.task.load_state_dict(state["task"])
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{where}: does not fit this search "
                                  f"({type(error).__name__}: {str(error).splitlines()[0]})") from None
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.epoch_seconds = float(state["epoch_seconds"])
        steps = self.task.steps_in_epoch(self.epoch)
        if not 0 <= self.step < max(1, steps):
            raise CheckpointError(f"{where}: step {self.step} is outside an epoch of "
                                  f"{steps} steps")
        restore_rng(state["rng"], one_device_per_process=self.session.distributed)
        self.guard.committed(Path(where).parent, self.epoch, self.step)

    def save(self, run_dir: RunDir) -> None:
        """Checkpoint: every process gathers the state, rank 0 writes it, unless something in
        it is not finite (TrainingError; the checkpoint on disk stays the last good one)."""
        state = self.state_dict()
        bad = self.guard.inspect(state, optimisers=self.optimiser_names())
        if bad:
            raise self.guard.error(bad, f"the checkpoint of {position(self.epoch, self.step)}")
        if self.session.is_main:
            save_checkpoint(run_dir.checkpoint_path, state)
        self.guard.committed(run_dir.path, self.epoch, self.step)

    def optimiser_names(self) -> dict[str, list[str]]:
        """The state entries of the optimisers, with their parameters' names (for messages)."""
        names = {"w_optimizer": optimiser_parameter_names(self.w_optimizer, self.model)}
        if self.architect is not None:
            names["architect"] = optimiser_parameter_names(self.architect.optimizer, self.model)
        return names

    # -- the loop ------------------------------------------------------------------------------

    def run(self, run_dir: RunDir, quiet: bool = True,
            on_step: Callable[[int], None] | None = None) -> Genotype:
        """Train until the last epoch; `on_step(global_step)` runs after every step."""
        show = progress_enabled(quiet) and self.session.is_main
        fresh = (self.epoch, self.step) == (0, 0)
        with open_events(run_dir, self.cfg.run.tensorboard, self.session.is_main,
                         first_step=0 if fresh else self.epoch + 1) as self.events:
            if fresh and self.session.is_main:
                self.events.alphas(0, self.model.arch_values())
            with frozen_setup():
                while self.epoch < self.cfg.optim.epochs:
                    self._run_epoch(run_dir, show, on_step)
        self.events = Events()
        return self.genotype(final=True)

    def genotype(self, final: bool = False) -> Genotype:
        """The genotype reached so far (`final`: after the last epoch), as the strategy says."""
        return self.strategy.genotype(self, final)

    def arch_updates(self) -> bool:
        """Whether α moves this epoch (False during the method's warm-up)."""
        return self.epoch >= self.warmup

    def learning_rate(self, epoch: int) -> float:
        return learning_rate(epoch, self.cfg.optim)

    def _run_epoch(self, run_dir: RunDir, show: bool,
                   on_step: Callable[[int], None] | None) -> None:
        epoch, epochs = self.epoch, self.cfg.optim.epochs
        self.model.set_search_progress(epoch, epochs)
        steps = self.task.steps_in_epoch(epoch)
        lr = self.learning_rate(epoch)
        every = self.cfg.run.checkpoint_every
        started = time.perf_counter()
        with progress_bar(steps, self.step, f"epoch {epoch + 1}/{epochs}", show) as bar:
            for batches in self.task.batches(epoch, self.step):
                where = f"epoch {epoch + 1} step {self.step + 1}"
                self._step(batches, lr, where)
                self.step += 1
                global_step = epoch * steps + self.step
                bar.update(1)
                bar.set_postfix(self._postfix(), refresh=False)
                if self.step % self.cfg.run.log_every == 0:
                    log.info("%s/%d: %s", where, steps, format_metrics(self.train_meter.means()))
                if every and global_step % every == 0 and self.step < steps:
                    now = time.perf_counter()
                    self.epoch_seconds += now - started
                    started = now
                    self.save(run_dir)
                if on_step is not None:
                    on_step(global_step)
        self.epoch_seconds += time.perf_counter() - started
        self._finish_epoch(run_dir, lr)

    def _postfix(self) -> dict[str, str]:
        return {name: f"{value:.3f}" for name, value in self.train_meter.means().items()}

    def _step(self, batches: StepBatches, lr: float, where: str) -> None:
        step_lr = lr * batches.lr_scale
        for group in self.w_optimizer.param_groups:
            group["lr"] = step_lr
        self.strategy.step(self, batches, step_lr, where)

    def weight_step(self, batch: Any, where: str) -> None:
        """One SGD step of the weights on `batch` (α unchanged), the gradient norm clipped.

        The relaxation may change what the edges receive meanwhile (SDARTS's perturbation);
        the method may add a term to the loss (FairDARTS).
        """
        self.w_optimizer.zero_grad(set_to_none=True)
        with self.model.relaxation.weight_step():
            with self.session.autocast():  # run.precision; α's softmax stays fp32
                out = self.task.train_loss(self.trainable, batch)
            self.guard.check_loss(out.metrics["loss"], "the training loss (w step)", where)
            loss = out.loss
            if self.terms.weights is not None:
                loss = loss + self.terms.weights(self.epoch, self.model.arch_parameters())
            loss.backward()
        self.guard.clip_gradients(self.model.named_weights(), self.cfg.optim.grad_clip, where)
        self.w_optimizer.step()
        self.train_meter.update(out.metrics, out.weight)

    def _finish_epoch(self, run_dir: RunDir, lr: float) -> None:
        number = self.epoch + 1
        where = f"the end of epoch {number}"
        train = self.task.epoch_metrics(self.session.reduce_meter(self.train_meter).means())
        arch = self.session.reduce_meter(self.arch_meter).means()

        def record_of(val: Mapping[str, float]) -> dict[str, Any]:
            return {
                "epoch": number,
                "epochs": self.cfg.optim.epochs,
                "steps": self.task.steps_in_epoch(self.epoch),
                **{f"train_{k}": v for k, v in train.items()},
                **{f"val_{k}": v for k, v in val.items()},
                **{f"arch_{k}": v for k, v in arch.items()},
                "lr": lr,
                **({} if self.architect is None
                   else {"arch_lr": self.architect.optimizer.param_groups[0]["lr"]}),
                "seconds": round(self.epoch_seconds, 3),
            }

        # Before anything of the epoch is evaluated or written: everything the checkpoint would
        # hold, then the epoch's figures. A NaN stop leaves the epoch's record (nulls, and what
        # was not finite) and nothing else of it; a resumed run drops that record.
        self.guard.check_epoch(self.state_dict(), record_of({}), where, self.events,
                               self.optimiser_names())
        evaluated = time.perf_counter()
        self.session.sync_buffers(self.model)  # every process evaluates rank 0's network
        val = self.task.evaluate(self.model)
        self.epoch_seconds += time.perf_counter() - evaluated
        if self.strategy.validates_a_sample and not all(map(math.isfinite, val.values())):
            log.warning("%s: the architecture trained last does not give finite validation "
                        "figures (%s); it is one sample of many and the shared weights are "
                        "finite, so the search goes on without the epoch's validation figures",
                        where, format_metrics(val))
            val = {}
        record = record_of(val)
        self.guard.check_epoch({}, record, where, self.events)
        genotype = self.genotype(final=number == self.cfg.optim.epochs)
        record["genotype"] = genotype.to_dict()
        if self.session.is_main:
            self.events.alphas(number, self.model.arch_values())
            run_dir.write_json(run_dir.genotype_path, genotype.to_dict())
            self.events.epoch(record)
        self.epoch, self.step = number, 0
        self.train_meter, self.arch_meter, self.epoch_seconds = Meter(), Meter(), 0.0
        self.save(run_dir)
        shown = {k: v for k, v in record.items() if k not in ("epoch", "epochs", "steps",
                                                              "genotype")}
        # The record itself, for whoever shows epochs (spacec.runtime.run.console).
        log.info("epoch %d/%d: %s", number, record["epochs"], format_metrics(shown),
                 extra={EPOCH_RECORD: record})
        log.info("genotype after epoch %d:\n%s", number, genotype)
        problems = check_genotype(genotype, self.compiled.rules)
        if problems:
            log.warning("the genotype after epoch %d does not fit the space's rule (the method's "
                        "official derivation): %s", number, "; ".join(problems))


# ---------------------------------------------------------------- entry points


def method_record(search: Search) -> dict[str, Any]:
    """What `spacec derive RUN` needs to know of the method: how it ranks candidates (no
    strengths: the run records its genotype) and its departures from the space's rule."""
    relaxation = search.model.relaxation
    return {"name": search.cfg.method.name, "relaxation": relaxation.name,
            "strengths": relaxation.strengths, "derive": search.derive_options.to_dict()}


def start_search(cfg: SearchConfig, quiet: bool = True,
                 on_step: Callable[[int], None] | None = None, search: Search | None = None,
                 header: str = "") -> SearchResult:
    """A new run: build everything (failing before anything is written), then search.

    `search`: already built from `cfg`; `header`: comment lines that open config.yaml.
    """
    search = search or Search.build(cfg)
    session = search.session
    # Rank 0 makes the run directory and writes it; the others learn where it is.
    made = RunDir.create(Path(cfg.run.out), search.compiled.name) if session.is_main else None
    run_dir = RunDir(session.broadcast_object(made and made.path))
    if session.is_main:
        log.info("run directory %s", run_dir.path, extra={SCREEN: True})
    with run_dir.tracking(str(search.device), session.is_main), stopping_cleanly(run_dir.path):
        if session.is_main:
            write_config(cfg, run_dir.config_path, header)
            run_dir.write_space_record(search.compiled.spec, search.cfg.space.name)
            run_dir.write_json(run_dir.method_record_path, method_record(search))
        search.save(run_dir)
        genotype = search.run(run_dir, quiet, on_step)
    return SearchResult(run_dir.path, genotype, search.epoch)


def resume_search(path: Path, device: str | None = None, quiet: bool = True,
                  on_step: Callable[[int], None] | None = None,
                  on_build: Callable[[Search], None] | None = None) -> SearchResult:
    """Continue the run in `path` from its checkpoint; nothing is written if that cannot be read.

    `device` overrides the recorded one (the result may then differ from an uninterrupted run).
    `on_build(search)` runs once the search is restored, before it continues.
    """
    run_dir = open_run_dir(path)
    cfg = read_config(run_dir.config_path)
    if not describe(cfg.method.name).shares_weights:
        raise CheckpointError(
            f"{run_dir.path}: a {cfg.method.name} search trains each sample as a run of its own "
            f"and keeps no checkpoint of the search: resume a sample's training (spacec train "
            f"--resume {run_dir.path}/N-sample) or search again")
    if device is not None:
        cfg = replace(cfg, run=replace(cfg.run, device=device))
    session = Session.start(cfg.run)
    # Rank 0 reads the checkpoint (it wrote it) and sends it to the others.
    state = session.on_main(lambda: load_checkpoint(run_dir.checkpoint_path, CHECKPOINT_KIND,
                                                    _CHECKPOINT_KEYS))
    if resume_view(state["config"]) != resume_view(to_dict(cfg)):
        raise CheckpointError(f"{run_dir.checkpoint_path}: written by a different configuration "
                              f"than {run_dir.config_path}")
    search = Search.build(cfg, session)
    search.load_state_dict(state, run_dir.checkpoint_path)
    if search.session.is_main:
        run_dir.keep_metrics_through(search.epoch)
    if on_build is not None:
        on_build(search)
    log.info("resuming %s at epoch %d, step %d", run_dir.path, search.epoch + 1, search.step)
    with run_dir.tracking(str(search.device), search.session.is_main), \
            stopping_cleanly(run_dir.path):
        genotype = search.run(run_dir, quiet, on_step)
    return SearchResult(run_dir.path, genotype, search.epoch)
