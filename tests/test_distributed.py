"""Search and training on several processes (torch.distributed, gloo on the CPU; issue 10).

Unit tests first (how each process's share of the data is cut, no processes). Then runs on two
processes, kept few because every launch costs seconds on a small machine: one pair of processes
forked from this one runs every search check in a row (`search_checks`), one runs `spacec
train` (`train_checks`); one test starts the real `spacec search --nproc-per-node 2`, that is
torchrun. Forked workers inherit the imported modules, and join the process group from
torchrun's environment variables (RANK, WORLD_SIZE, ...) exactly as under torchrun.
"""

from __future__ import annotations

import copy
import json
import math
import multiprocessing
import os
import queue as queue_module
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch.func import functional_call

from spacec.cli import main
from spacec.cli.launch import without_option
from spacec.runtime.domains.image.data import (
    EpochSampler,
    ImageData,
    SeededItems,
    ShardedEpochSampler,
    search_loaders,
    start_epoch,
)
from spacec.runtime.domains.text.corpus import batchify
from spacec.runtime.domains.text.data import evaluation_columns, training_columns
from spacec.runtime.errors import ConfigError
from spacec.runtime.run.checkpoint import load_checkpoint
from spacec.runtime.run.config import RunConfig
from spacec.runtime.run.distributed import ProcessEnv, Shard
from spacec.runtime.run.session import Session

WORLD = 2
LAUNCH_TIMEOUT_S = 300  # a hung pair of processes fails the test instead of hanging it


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """Runs set torch's thread count (run.threads); give other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- each process's share


def test_batch_positions_split_every_global_batch_and_cut_the_last_to_a_multiple():
    ranks = [Shard(rank, 3) for rank in range(3)]
    assert [list(s.batch_positions(12, 24)) for s in ranks] == [
        list(range(12, 16)), list(range(16, 20)), list(range(20, 24))]
    # A last batch of 5 samples on 3 processes: 3 of them are read, one each.
    assert [list(s.batch_positions(24, 29)) for s in ranks] == [[24], [25], [26]]
    assert [list(s.batch_positions(24, 26)) for s in ranks] == [[], [], []]
    assert [list(s.part(7)) for s in ranks] == [[0, 1], [2, 3], [4, 5, 6]]


def test_the_global_batch_must_split_evenly():
    assert Shard(1, 4).per_rank(64, "data.batch_size") == 16
    with pytest.raises(ConfigError, match="data.batch_size 30 is the global batch.*multiple of 4"):
        Shard(0, 4).per_rank(30, "data.batch_size")


def _shares(world: int, count: int = 22, batch: int = 8, epoch: int = 3, skip_batches: int = 0,
            drop_last: bool = False) -> list[list[tuple[int, int]]]:
    """Each process's (index, seed) pairs of one pass, batch by batch."""
    out = []
    for rank in range(world):
        sampler = ShardedEpochSampler(range(100, 100 + count), 7, Shard(rank, world), batch,
                                      drop_last)
        sampler.set_epoch(epoch)
        per_rank = batch // world
        sampler.skip(skip_batches * per_rank)
        pairs = list(sampler)
        out.append([pairs[i:i + per_rank] for i in range(0, len(pairs), per_rank)])
    return out


def test_every_step_reads_the_single_process_batch_whatever_the_number_of_processes():
    whole = EpochSampler(range(100, 122), 7)
    whole.set_epoch(3)
    order = list(whole)
    single = [order[i:i + 8] for i in range(0, 22, 8)]  # 8, 8 and a last batch of 6
    for world in (2, 4):
        shares = _shares(world)
        steps = [sum((shares[rank][step] for rank in range(world)), [])
                 for step in range(len(shares[0]))]
        indices = [[index for index, _ in step] for step in steps]
        # The last batch of 6 is cut to a multiple of the processes (6 on 2, 4 on 4).
        assert indices == [*single[:2], single[2][:6 - 6 % world]]
    # Augmentation seeds follow the position in the pass, not the process that reads it.
    two = [pair for rank in _shares(2) for batch in rank for pair in batch]
    four = [pair for rank in _shares(4) for batch in rank for pair in batch]
    assert set(four) <= set(two)


def test_a_resumed_share_continues_where_it_stopped_and_drop_last_drops_the_partial_batch():
    full = _shares(2)
    assert _shares(2, skip_batches=1) == [rank[1:] for rank in full]
    assert [len(rank) for rank in _shares(2, drop_last=True)] == [2, 2]


def test_search_loaders_share_their_batches_and_count_global_steps():
    cfg = ImageData(limit=44, batch_size=8)  # 22 images a split: steps of 8, 8, 6
    single, _, _ = search_loaders(cfg, seed=1)
    shares = [search_loaders(cfg, seed=1, shard=Shard(rank, 2))[0] for rank in range(2)]
    assert len(single) == 3 and [len(loader) for loader in shares] == [3, 3]
    for loader in shares:
        start_epoch(loader, 2, batches_done=1)
    sizes = [[len(labels) for _, labels in loader] for loader in shares]
    assert sizes == [[4, 3], [4, 3]]
    assert isinstance(shares[0].dataset, SeededItems)


@pytest.mark.parametrize("world", [1, 2])
def test_a_training_epoch_counts_its_whole_pass_after_a_resumed_one(world):
    from spacec.runtime.domains.image.train import ImageTrainTask
    from spacec.runtime.train.config import TrainOptimConfig

    task = ImageTrainTask(ImageData(limit=64, batch_size=16, train_portion=1.0),
                          TrainOptimConfig(), "val", 0,
                          torch.device("cpu"), shard=Shard(0, world))
    assert task.steps_in_epoch(0) == 4
    assert len(list(task.batches(0, 3))) == 1  # resumed after 3 of its 4 steps
    assert task.steps_in_epoch(1) == 4


def test_seeded_items_never_move_the_global_generator_and_repeat_with_their_seed():
    cfg = ImageData(limit=8, batch_size=4)
    loader, _, _ = search_loaders(cfg, seed=0, shard=Shard(0, 2))
    items = loader.dataset
    torch.manual_seed(3)
    before = torch.get_rng_state()
    first, _ = items[(2, 11)]
    assert torch.equal(torch.get_rng_state(), before)
    again, _ = items[(2, 11)]
    other, _ = items[(2, 12)]
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_text_columns_are_shared_out_and_evaluation_splits_only_when_they_divide():
    text = torch.arange(103)
    whole = batchify(text, 4)
    parts = [training_columns(whole, Shard(rank, 2), "data.batch_size") for rank in range(2)]
    assert torch.equal(torch.cat(parts, dim=1), whole)
    with pytest.raises(ConfigError, match="data.batch_size 4 is the global batch"):
        training_columns(whole, Shard(0, 3), "data.batch_size")
    one, shard = evaluation_columns(batchify(text, 1), Shard(1, 2))
    assert shard is None and one.size(1) == 1  # every process evaluates the single column
    two, shard = evaluation_columns(batchify(text, 10), Shard(1, 2))
    assert shard == Shard(1, 2) and two.size(1) == 5


def test_process_environment_and_sync_bn_on_the_cpu():
    assert ProcessEnv.from_environment({}) == ProcessEnv()
    assert ProcessEnv.from_environment(
        {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == ProcessEnv(3, 4, 1)
    assert ProcessEnv.from_environment(
        {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    ) == ProcessEnv(3, 4, 1, 2)
    with pytest.raises(ConfigError, match="do not describe"):
        ProcessEnv.from_environment({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(ConfigError, match="do not describe"):
        ProcessEnv.from_environment({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_WORLD_SIZE": "3"})
    with pytest.raises(ConfigError, match="SyncBatchNorm runs on CUDA devices only"):
        Session.start(RunConfig(sync_bn=True, threads=1), {"WORLD_SIZE": "2", "RANK": "0"})
    assert Session.start(RunConfig(sync_bn=True, threads=1), {}).sync_bn is False


def test_nproc_per_node_is_left_out_of_the_relaunched_command():
    argv = ["search", "--nproc-per-node", "2", "--epochs", "1", "--nproc-per-node=3", "-q"]
    assert without_option(argv) == ["search", "--epochs", "1", "-q"]


@pytest.mark.parametrize(("signum", "code", "said"), [
    (signal.SIGINT, 130, "spacec: interrupted"), (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_a_signal_to_the_processes_ends_as_one_process_would(monkeypatch, signum, code, said):
    """Ctrl-C reaches torchrun's agent as a SignalException once the processes stopped (each
    has said what it left): the command ends as one process's Ctrl-C does, no traceback."""
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException

    def stopped(args):
        raise SignalException(f"Process got signal: {signum}", sigval=signum)

    monkeypatch.setattr(torchrun, "run", stopped)
    result = CliRunner().invoke(main, ["search", "--nproc-per-node", "2", "--epochs", "1"])
    assert result.exit_code == code, result.output
    assert said in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", [
    ["search", "nas_bench_201"], ["train", "darts_cnn", "--genotype", "DARTS_V2"]])
def test_a_batch_the_processes_cannot_split_is_refused_once_before_they_start(monkeypatch,
                                                                              command):
    import torch.distributed.run as torchrun

    monkeypatch.setattr(torchrun, "run", lambda args: pytest.fail("processes were started"))
    result = CliRunner().invoke(main, [*command, "--batch-size", "7", "--nproc-per-node", "2",
                                       "--epochs", "1"])
    assert result.exit_code == 1, result.output
    assert result.output.count("data.batch_size 7 is the global batch, split evenly over the "
                               "2 processes: make it a multiple of 2") == 1


def test_resume_takes_nproc_per_node_but_not_sync_bn(tmp_path):
    result = CliRunner().invoke(main, ["search", "--resume", str(tmp_path), "--sync-bn"])
    assert result.exit_code == 2 and "drop --sync-bn" in result.output


# ---------------------------------------------------------------- two processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, body: Callable[..., dict], tmp: Path, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD))
    code = 0
    try:
        queue.put((rank, "done", body(rank, tmp, lambda found: queue.put((rank, "ok", found)))))
    except BaseException:  # noqa: BLE001  (reported to the parent, which fails the test)
        queue.put((rank, "error", traceback.format_exc()))
        code = 1
    queue.close()
    queue.join_thread()
    os._exit(code)  # never return into the forked copy of pytest


def on_two_processes(body: Callable[..., dict], tmp: Path) -> dict[int, dict]:
    """`body(rank, tmp, report)` on two forked processes; what each reported (`report(dict)`,
    then its return value), merged by rank. A process that raises fails the test, one that
    exits without finishing reports ``{"exit_code": N}``; after `LAUNCH_TIMEOUT_S` the test
    fails and the processes are killed: no hang."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    port = _free_port()
    workers = [context.Process(target=_worker, args=(rank, port, body, tmp, queue))
               for rank in range(WORLD)]
    for worker in workers:
        worker.start()
    results: dict[int, dict] = {rank: {} for rank in range(WORLD)}
    finished: set[int] = set()
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    try:
        while len(finished) < WORLD:
            assert time.monotonic() < deadline, f"processes {set(results) - finished} hang"
            try:
                rank, status, value = queue.get(timeout=1)
            except queue_module.Empty:
                for rank, worker in enumerate(workers):
                    if rank not in finished and worker.exitcode is not None:
                        results[rank]["exit_code"] = worker.exitcode
                        finished.add(rank)
                continue
            assert status != "error", f"process {rank} failed:\n{value}"
            results[rank].update(value)
            if status == "done":
                finished.add(rank)
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    return results


def tiny_search(out: Path, **overrides: Any):
    from spacec.runtime.search.config import load_config

    return load_config("quick", {
        "space.name": "nas_bench_201", "space.overrides.C": 2, "space.overrides.N": 1,
        "data.batch_size": 8, "data.limit": 32, "optim.epochs": 2, "run.threads": 1,
        "run.seed": 5, "run.out": str(out), **overrides})


def tiny_text_search(out: Path, **overrides: Any):
    from spacec.runtime.search.config import load_config

    return load_config("rnn_quick", {
        "space.overrides.ninp": 8, "space.overrides.nhid": 8, "data.batch_size": 4,
        "data.limit": 480, "optim.epochs": 1, "run.threads": 1, "run.out": str(out),
        **overrides})


class Killed(Exception):
    """Stands in for the processes being stopped."""


def _gathered(value: Any) -> list[Any]:
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def _states(search) -> dict[str, Any]:
    """Everything that must be bitwise equal on every process."""
    return {
        "params": {n: p.detach().clone() for n, p in search.model.named_parameters()},
        "w_optimizer": copy.deepcopy(search.w_optimizer.state_dict()["state"]),
        "architect": search.architect.state_dict()["state"],
        # Equal global generators: dropout and a method's samples are the same on every process.
        "rng": torch.get_rng_state(),
    }


def _bitwise_equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_bitwise_equal(a[k], b[k]) for k in a)
    return a == b


def _loss_at(model, tensors: dict[str, torch.Tensor], batch) -> torch.Tensor:
    images, labels = batch
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return F.cross_entropy(functional_call(model, {**tensors, **buffers}, (images,)), labels)


def _mean_grad(model, tensors, wrt: dict[str, torch.Tensor], batches) -> dict[str, torch.Tensor]:
    """The mean over `batches` (one per process) of ∇ of the loss w.r.t. `wrt`."""
    total = {n: torch.zeros_like(t) for n, t in wrt.items()}
    for batch in batches:
        grads = torch.autograd.grad(_loss_at(model, tensors, batch), list(wrt.values()))
        for name, grad in zip(wrt, grads, strict=True):
            total[name] += grad / len(batches)
    return total


def _reference_step(model, cfg, train: list, val: list, lr: float
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """DARTS' step computed in one process from each process's batches (BatchNorm statistics of
    each batch alone, gradients averaged), written from the equations, not from the architect:
    (α's gradient, every parameter after the step), by parameter name."""
    named = dict(model.named_parameters())
    alpha_names = {name for name in named if name.startswith("arch.")}
    alphas = {n: named[n].detach().clone().requires_grad_() for n in alpha_names}
    weights = {n: p.detach().clone() for n, p in named.items() if n not in alpha_names}
    if cfg.arch.order == 1:
        d_alpha = _mean_grad(model, {**weights, **alphas}, alphas, val)
    else:  # w' = w − η(g + wd·w) (no momentum buffer yet); dα − η (g⁺ − g⁻) / 2R at w ± R v
        leaves = {n: w.clone().requires_grad_() for n, w in weights.items()}
        g = _mean_grad(model, {**leaves, **alphas}, leaves, train)
        unrolled = {n: (w - lr * (g[n] + cfg.optim.weight_decay * w)).detach().requires_grad_()
                    for n, w in weights.items()}
        both = _mean_grad(model, {**unrolled, **alphas}, {**alphas, **unrolled}, val)
        v = {n: both[n] for n in unrolled}
        radius = cfg.arch.fd_scale / torch.linalg.vector_norm(torch.cat([t.flatten()
                                                                         for t in v.values()]))
        plus = _mean_grad(model, {**{n: w + radius * v[n] for n, w in weights.items()}, **alphas},
                          alphas, train)
        minus = _mean_grad(model, {**{n: w - radius * v[n] for n, w in weights.items()}, **alphas},
                           alphas, train)
        d_alpha = {n: both[n] - lr * (plus[n] - minus[n]) / (2 * radius) for n in alphas}
    adam = torch.optim.Adam([named[n] for n in alpha_names], lr=cfg.arch.lr, betas=cfg.arch.betas,
                            weight_decay=cfg.arch.weight_decay)
    for name in alpha_names:
        named[name].grad = d_alpha[name]
    adam.step()
    # The weight step at the new α: each process's batch through the model, gradients averaged.
    params = [p for n, p in named.items() if n not in alpha_names]
    grads = [torch.zeros_like(p) for p in params]
    for batch in train:
        images, labels = batch
        step = torch.autograd.grad(F.cross_entropy(model(images), labels), params)
        grads = [total + grad / len(train) for total, grad in zip(grads, step, strict=True)]
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad
    torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
    torch.optim.SGD(params, lr=lr, momentum=cfg.optim.momentum,
                    weight_decay=cfg.optim.weight_decay).step()
    return d_alpha, {n: p.detach() for n, p in named.items()}


def _relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    scale = max(t.abs().max().item() for t in b.values())
    return max((a[n] - b[n]).abs().max().item() for n in b) / scale


def _one_step_against_reference_then_identity(rank: int, tmp: Path, **arch: Any) -> dict:
    """One step compared with `_reference_step` (rank 0 reports), one more, then every state
    compared across the processes."""
    from spacec.runtime.search.loop import Search

    cfg = tiny_search(tmp / f"unused-{rank}", **{f"arch.{k}": v for k, v in arch.items()})
    search = Search.build(cfg)
    steps = search.task.batches(0, 0)
    first = next(steps)
    everyone = _gathered((first.train, first.val))
    lr = search.learning_rate(0)
    out: dict[str, Any] = {}
    if arch.get("mode", "bilevel") == "bilevel":
        d_alpha, after = _reference_step(copy.deepcopy(search.model), cfg,
                                         [train for train, _ in everyone],
                                         [val for _, val in everyone], lr)
        full_name = {id(p): n for n, p in search.model.named_parameters()}
        grads = search.architect.arch_gradient(first.train, first.val, lr)
        mine = {full_name[id(p)]: grads[key] for key, p in search.model.arch_parameters().items()}
        out["alpha_grad_diff"] = _relative_difference(mine, d_alpha)
        search._step(first, lr, "step 1")
        named = {n: p.detach() for n, p in search.model.named_parameters()}
        alphas = [n for n in named if n.startswith("arch.")]
        weights = [n for n in named if n not in alphas]
        out["alpha_diff"] = _relative_difference(named, {n: after[n] for n in alphas})
        out["weight_diff"] = _relative_difference(named, {n: after[n] for n in weights})
    else:
        search._step(first, lr, "step 1")
    search._step(next(steps), lr, "step 2")
    states = _gathered(_states(search))
    out["identical"] = all(_bitwise_equal(states[0], other) for other in states[1:])
    out["find_unused"] = search.trainable.ddp.find_unused_parameters
    out["ranks_differ_in_data"] = not torch.equal(everyone[0][0][0], everyone[1][0][0])
    return out


def _kill_at(step: int, rank_to_die: int | None = None):
    def on_step(global_step: int) -> None:
        if global_step == step:
            if rank_to_die is None:
                raise Killed
            if int(os.environ["RANK"]) == rank_to_die:
                os._exit(1)

    return on_step


def _search_checks(rank: int, tmp: Path, report: Callable[[dict], None]) -> dict[str, Any]:
    from spacec.runtime.errors import DistributedError
    from spacec.runtime.search.loop import resume_search, start_search

    results: dict[str, Any] = {
        "order1": _one_step_against_reference_then_identity(rank, tmp, order=1),
        "order2": _one_step_against_reference_then_identity(rank, tmp, order=2),
        "joint": _one_step_against_reference_then_identity(rank, tmp, mode="joint"),
    }
    # A relaxation that leaves candidates unused turns on DDP's search for unused parameters.
    from spacec.runtime.relax.softmax import Softmax
    from spacec.runtime.search.loop import Search

    Softmax.all_candidates_used = False  # this forked process only
    sampling = Search.build(tiny_search(tmp))
    sampling._step(next(sampling.task.batches(0, 0)), 0.025, "step 1")
    results["find_unused"] = sampling.trainable.ddp.find_unused_parameters
    del Softmax.all_candidates_used
    # A quick search, whole; the same killed after step 3 (mid epoch 2) and resumed.
    whole = start_search(tiny_search(tmp / "whole"))
    with pytest.raises(Killed):
        start_search(tiny_search(tmp / "killed", **{"run.checkpoint_every": 1}),
                     on_step=_kill_at(3))
    (killed,) = (tmp / "killed").iterdir()
    resumed = resume_search(killed)
    results["whole"] = str(whole.run_dir)
    results["resumed"] = str(resumed.run_dir)
    results["genotypes"] = [str(whole.genotype), str(resumed.genotype)]
    # The same with text: columns shared out, the streams' states gathered in checkpoints.
    text_whole = start_search(tiny_text_search(tmp / "text-whole"))
    with pytest.raises(Killed):
        start_search(tiny_text_search(tmp / "text-killed", **{"run.checkpoint_every": 1}),
                     on_step=_kill_at(2))
    (text_killed,) = (tmp / "text-killed").iterdir()
    if rank == 0:  # a copy of the killed run, for the test to resume on one process
        shutil.copytree(text_killed, tmp / "text-copy")
    results["text"] = [str(text_whole.run_dir), str(resume_search(text_killed).run_dir)]
    report(results)
    results = {}
    # Process 1 dies after step 3's checkpoint: process 0 must stop with a clear message.
    try:
        start_search(tiny_search(tmp / "died", **{"run.checkpoint_every": 1}),
                     on_step=_kill_at(3, rank_to_die=1))
    except DistributedError as error:
        results["died"] = str(error)
    return results


@pytest.fixture(scope="module")
def search_checks(tmp_path_factory) -> tuple[dict[int, Any], Path]:
    tmp = tmp_path_factory.mktemp("distributed-search")
    return on_two_processes(_search_checks, tmp), tmp


def _run_record(run_dir: Path) -> dict[str, Any]:
    metrics = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
               for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    alphas = {p.name: p.read_text() for p in sorted((run_dir / "alphas").iterdir())}
    return {"metrics": metrics, "alphas": alphas,
            "genotype": (run_dir / "genotype.json").read_text()}


@pytest.mark.parametrize("order", ["order1", "order2"])
def test_one_step_on_two_processes_is_the_step_of_the_averaged_gradients(search_checks, order):
    results, _ = search_checks
    check = results[0][order]
    assert check["ranks_differ_in_data"]
    # Relative to the largest entry; float32 sums in another order (and, for the second order,
    # a finite difference that magnifies them) stay far below these bounds.
    assert check["alpha_grad_diff"] < 1e-4, check
    assert check["alpha_diff"] < 1e-5, check
    assert check["weight_diff"] < 1e-5, check


@pytest.mark.parametrize("case", ["order1", "order2", "joint"])
def test_alpha_weights_and_optimiser_states_are_bitwise_equal_on_every_process(search_checks,
                                                                              case):
    results, _ = search_checks
    assert results[0][case]["identical"]


def test_ddp_looks_for_unused_parameters_only_when_the_relaxation_says_so(search_checks):
    results, _ = search_checks
    assert results[0]["order1"]["find_unused"] is False  # softmax: every candidate runs
    assert results[0]["find_unused"] is True


def test_a_two_process_search_writes_one_run_and_resumes_exactly(search_checks):
    results, tmp = search_checks
    assert results[0]["whole"] == results[1]["whole"]  # both processes know rank 0's folder
    assert [len(list((tmp / name).iterdir())) for name in ("whole", "killed")] == [1, 1]
    whole, resumed = Path(results[0]["whole"]), Path(results[0]["resumed"])
    assert len(set(results[0]["genotypes"] + results[1]["genotypes"])) == 1
    assert _run_record(resumed) == _run_record(whole)
    assert [r["epoch"] for r in _run_record(whole)["metrics"]] == [1, 2]


def test_a_two_process_text_search_resumes_exactly_and_on_one_process(search_checks):
    from spacec.runtime.search.loop import CHECKPOINT_KIND, resume_search

    results, tmp = search_checks
    whole, resumed = (Path(path) for path in results[0]["text"])
    assert _run_record(resumed) == _run_record(whole)
    copy_dir = tmp / "text-copy"
    state = load_checkpoint(copy_dir / "checkpoint.pt", CHECKPOINT_KIND)
    assert (state["epoch"], state["step"]) == (0, 2)
    assert state["task"]["train_hidden"][0].shape[1] == 4  # the state of every column
    assert resume_search(copy_dir).epochs == 1  # here: one process


def test_a_dead_process_stops_the_other_and_the_run_resumes_on_one_process(search_checks):
    from spacec.runtime.search.loop import CHECKPOINT_KIND, resume_search

    results, tmp = search_checks
    assert results[1]["exit_code"] == 1  # process 1 died (os._exit(1))
    message = results[0]["died"]
    assert "process 0 of 2 stopped" in message and "--resume" in message
    (run_dir,) = (tmp / "died").iterdir()
    state = load_checkpoint(run_dir / "checkpoint.pt", CHECKPOINT_KIND)
    assert (state["epoch"], state["step"]) == (1, 1)  # the checkpoint after step 3
    result = resume_search(run_dir)  # here: one process
    assert result.epochs == 2
    assert [r["epoch"] for r in _run_record(run_dir)["metrics"]] == [1, 2]


def _nan_checks(rank: int, tmp: Path, report: Callable[[dict], None]) -> dict[str, Any]:
    """The NaN guard's collectives, then a search whose BatchNorm statistics turn NaN on
    process 1 alone (after the last forward of epoch 1, so that DDP's broadcast of rank 0's
    buffers does not overwrite them): both processes must stop at the same point."""
    from spacec.runtime.errors import TrainingError
    from spacec.runtime.run.config import RunConfig
    from spacec.runtime.run.finite import Guard
    from spacec.runtime.run.session import Session
    from spacec.runtime.search.loop import Search, start_search

    out: dict[str, Any] = {}
    guard = Guard(Session.start(RunConfig(device="cpu", threads=1)), "search")
    try:
        guard.check_loss(math.nan if rank == 1 else 0.5, "the training loss", "epoch 2 step 1")
    except TrainingError as error:
        out["loss"] = str(error)
    nan_on_1 = torch.tensor([1.0, math.nan if rank == 1 else 2.0])
    out["inspect"] = guard.inspect({"model": {"w": nan_on_1, "b": torch.ones(2)}},
                                   {"val_loss": 1.0})
    out["clean"] = guard.inspect({"model": {"b": torch.ones(2)}}, {"val_loss": 1.0})

    real_step = Search._step
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2 and rank == 1:
            for name, buffer in self.model.named_buffers():
                if name.endswith("running_var"):
                    buffer.fill_(math.nan)

    Search._step = step  # this forked process only
    try:
        start_search(tiny_search(tmp / "nan"))
    except TrainingError as error:
        out["search"] = str(error)
    return out


def test_a_nan_on_one_process_stops_every_process_at_the_same_point(tmp_path):
    from spacec.runtime.search.loop import CHECKPOINT_KIND

    results = on_two_processes(_nan_checks, tmp_path)
    for rank in (0, 1):
        assert "on process 1 of 2" in results[rank]["loss"]
        assert results[rank]["inspect"] == ["w"] and results[rank]["clean"] == []
        assert "non-finite values at the end of epoch 1: " in results[rank]["search"]
        assert "running_var" in results[rank]["search"]
    (run_dir,) = (tmp_path / "nan").iterdir()
    state = load_checkpoint(run_dir / "checkpoint.pt", CHECKPOINT_KIND)
    assert (state["epoch"], state["step"]) == (0, 0)
    assert "the initial state, before epoch 1" in results[0]["search"]


def _train_checks(rank: int, tmp: Path, report: Callable[[dict], None]) -> dict[str, Any]:
    out = tmp / "train"
    result = CliRunner().invoke(main, [
        "train", "darts_cnn", "--genotype", "DARTS_V2", "--set", "C=4", "--set", "layers=3",
        "--batch-size", "16", "--limit", "32", "--epochs", "1", "--threads", "1", "-q",
        "--out", str(out)], catch_exceptions=False)
    return {"exit_code": result.exit_code, "output": result.output}


def test_spacec_train_on_two_processes_reports_the_global_accuracy(tmp_path):
    from spacec.runtime.domains.image.data import eval_loaders
    from spacec.runtime.run.checkpoint import load_checkpoint as load
    from spacec.runtime.train.loop import CHECKPOINT_KIND, network_from_checkpoint

    results = on_two_processes(_train_checks, tmp_path)
    assert [results[rank]["exit_code"] for rank in range(WORLD)] == [0, 0]
    assert "test accuracy" in results[0]["output"] and results[1]["output"] == ""
    (run_dir,) = (tmp_path / "train").iterdir()
    report = json.loads((run_dir / "report.json").read_text())
    # The accuracy of the final network on the whole test set, in this one process.
    network = network_from_checkpoint(load(run_dir / "checkpoint.pt", CHECKPOINT_KIND))
    _, test_loader, _ = eval_loaders(ImageData(limit=32, batch_size=16), seed=0)
    correct = total = 0
    with torch.no_grad():
        for images, labels in test_loader:
            correct += (network(images).argmax(dim=1) == labels).sum().item()
            total += len(labels)
    assert total == 200  # the sample's test set, 100 images on each process
    assert math.isclose(report["test_acc"], correct / total, rel_tol=1e-9)


def test_spacec_search_nproc_per_node_runs_under_torchrun(tmp_path):
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "spacec", "search", "nas_bench_201", "--set", "C=2",
               "--set", "N=1", "--batch-size", "8", "--limit", "32", "--epochs", "1",
               "--threads", "1", "-q", "--out", str(out), "--nproc-per-node", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = out.iterdir()
    assert done.stdout.count("run directory:") == 1  # rank 0 alone prints
    assert f"run directory: {run_dir}" in done.stdout
    assert (run_dir / "cell_normal.png").is_file()
    assert [r["epoch"] for r in _run_record(run_dir)["metrics"]] == [1]
    # the epoch line as one process writes it (its figures were ordered by name: 'train acc
    # 0.0% loss 2.506' beside one process's 'train loss 2.58 acc 0.0%')
    (epoch,) = [line for line in done.stderr.splitlines() if line.startswith("epoch 1/1:")]
    assert epoch.startswith("epoch 1/1: train loss ") and "| val loss " in epoch, epoch
