"""The strategy seam: what one search step does, and which batches it needs.

The DARTS paper (Liu et al., ICLR 2019, Sect. 3.3) compares three ways of moving α and w:

    strategy    batches each step                   step
    bilevel     w batch b_t, α batch b_v            α step on b_v (order 1 or 2), then w on b_t
    coordinate  b_t and b_v both from train∪val     α step on b_v (first order), then w on b_t
    joint       one batch b from train∪val          α and w from one backward pass on b

and two that methods bring:

    single      one batch b from the weights split  α and w from one backward pass on b (SNAS:
                                                    w and α from the same training batch)
    sample      one batch b from the weights split  a new random architecture, then its path's
                                                    w step on b (random_ws; no α)

A `Strategy` declares its `BatchPlan` (the domain's search task lays its streams out by it), the
α-gradient orders it supports, performs one step on the `Search` it is given (its model,
architect, optimisers, task and meters), and says which genotype the search has reached
(`genotype`: derivation from α, or random_ws's ranking at the end). While a method keeps α
frozen (`Search.arch_updates`), steps move w alone. A new strategy is one class registered in
`STRATEGIES`; the configuration names it (``arch.mode``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from spacec.arch.genotype import Genotype
from spacec.registry import Registry
from spacec.runtime.domains.base import BatchPlan, LossOutput, SearchTask, StepBatches

if TYPE_CHECKING:  # pragma: no cover
    from spacec.runtime.search.loop import Search

log = logging.getLogger(__name__)

STRATEGIES = Registry("search strategy")


class Strategy:
    """One kind of search step."""

    name: ClassVar[str] = ""
    plan: ClassVar[BatchPlan]
    orders: ClassVar[tuple[int, ...]] = (1,)  # α-gradient orders the strategy supports
    # Whether an epoch's validation runs one architecture of many (the path trained last), whose
    # divergence says nothing of the shared weights: then it is left out, not a stop.
    validates_a_sample: ClassVar[bool] = False

    def architect_loss(
        self, task: SearchTask, forward: Callable[[], AbstractContextManager]
    ) -> Callable[[Callable[..., Tensor], Any], Tensor]:
        """The loss the architect differentiates (the task's, unless the strategy records it).
        `forward` is where a weight step's forward pass runs (run.precision's autocast): the
        architecture step's own passes stay outside it."""
        return task.loss

    def step(self, search: Search, batches: StepBatches, lr: float, where: str) -> None:
        raise NotImplementedError

    def genotype(self, search: Search, final: bool) -> Genotype:
        """The genotype after an epoch (`final`: the last one): derived from α."""
        return search.model.genotype(search.derive_options)


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    def register(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        return STRATEGIES.register(name)(cls)

    return register


@register_strategy("bilevel")
class Bilevel(Strategy):
    """DARTS: α on the architecture split (first or second order), then w on the weights split."""

    plan = BatchPlan(union=False, arch_stream=True)
    orders = (1, 2)

    def step(self, search: Search, batches: StepBatches, lr: float, where: str) -> None:
        if search.arch_updates():
            stats = search.architect.step(batches.train, batches.val, lr)
            search.guard.check_loss(stats["val_loss"], "the validation loss (α step)", where)
            search.arch_meter.update({"val_loss": stats["val_loss"]})
        search.weight_step(batches.train, where)


@register_strategy("coordinate")
class Coordinate(Bilevel):
    """Coordinate descent on train∪val: the α and the w batch from the same data, first order."""

    plan = BatchPlan(union=True, arch_stream=True)
    orders = (1,)


class _RecordedLoss:
    """An architect loss that keeps the metrics of its last call (joint_step calls it once).
    The joint step is a weight step too: its forward pass runs where a weight step's does."""

    def __init__(self, task: SearchTask, forward: Callable[[], AbstractContextManager]) -> None:
        self.task = task
        self.forward = forward
        self.last: LossOutput | None = None

    def __call__(self, call: Callable[..., Tensor], batch: Any) -> Tensor:
        with self.forward():
            out = self.task.loss_and_metrics(call, batch)
        self.last = LossOutput(out.loss.detach(), out.metrics, out.weight)
        return out.loss


@register_strategy("joint")
class Joint(Strategy):
    """Single-level optimisation on train∪val: α and w move together from one backward pass."""

    plan = BatchPlan(union=True, arch_stream=False)

    def architect_loss(
        self, task: SearchTask, forward: Callable[[], AbstractContextManager]
    ) -> _RecordedLoss:
        self.recorded = _RecordedLoss(task, forward)
        return self.recorded

    def step(self, search: Search, batches: StepBatches, lr: float, where: str) -> None:
        search.architect.joint_step(
            batches.train, w_grad_clip=search.cfg.optim.grad_clip,
            update_arch=search.arch_updates(),
            # as the weight step clips: stopping first on a gradient that is not finite
            clip=lambda weights, max_norm: search.guard.clip_gradients(weights, max_norm, where))
        out = self.recorded.last
        search.guard.check_loss(out.metrics["loss"], "the training loss (joint step)", where)
        search.train_meter.update(out.metrics, out.weight)


@register_strategy("single")
class Single(Joint):
    """Single-level optimisation on the weights split alone (SNAS: one loop over the training
    queue, one backward, then the w and the α step; SNAS-Series train_search.py:394-512)."""

    plan = BatchPlan(union=False, arch_stream=False)


@register_strategy("sample")
class Sample(Strategy):
    """Random search with weight sharing (Li & Talwalkar, UAI 2019; randomNAS_release
    random_weight_share.py:72-116): every step trains the path of a new uniformly sampled
    architecture (the relaxation's `resample`); after the last epoch `rank` picks the result."""

    plan = BatchPlan(union=False, arch_stream=False, alpha=False)
    validates_a_sample = True

    def step(self, search: Search, batches: StepBatches, lr: float, where: str) -> None:
        search.model.relaxation.resample(search.model.RULES)
        search.weight_step(batches.train, where)

    def genotype(self, search: Search, final: bool) -> Genotype:
        """Before the end, the architecture trained last; at the end, the ranking's winner."""
        relaxation = search.model.relaxation
        if relaxation.chosen is None and final:
            relaxation.chosen = rank(search)
        if relaxation.chosen is not None:
            return relaxation.chosen
        return relaxation.genotype(search.model.SPACE)


def rank(search: Search) -> Genotype:
    """Score `samples` random architectures on the first `eval_batches` batches of the
    evaluation split with the shared weights, re-score the `top` best on the whole split, and
    return the best (random_weight_share.py:81-116). Scores are the domain's (image: accuracy,
    higher is better; text: loss, lower is better)."""
    params, model = search.cfg.method, search.model
    relaxation, rules = model.relaxation, model.RULES
    best = search.domain.best
    saved = dict(relaxation.cells)

    def score(cells: dict, batches: int | None) -> float:
        relaxation.use(cells, rules)
        return search.task.evaluate(model, max_batches=batches)[best.metric]

    def key(entry: tuple[float, int]) -> tuple[float, int]:
        value, index = entry
        if not math.isfinite(value):  # a path that diverges ranks last (NaN would not sort)
            return (math.inf, index)
        return (-value if best.higher else value, index)  # the earlier sample wins ties

    samples = [relaxation.sample(rules) for _ in range(params.samples)]
    quick = sorted(((score(cells, params.eval_batches), i) for i, cells in enumerate(samples)),
                   key=key)
    finalists = [index for _, index in quick[: params.top]]
    full = sorted(((score(samples[i], None), i) for i in finalists), key=key)
    value, winner = full[0]
    log.info("random_ws: %d architectures scored on %d batch(es); the best of the top %d on the "
             "whole split: sample %d, %s %.4f", params.samples, params.eval_batches,
             len(finalists), winner, best.metric, value)
    relaxation.use(saved or samples[winner], rules)
    return Genotype(space=model.SPACE, cells=tuple(samples[winner].items()))


def strategy(name: str) -> Strategy:
    """A new instance of the registered strategy `name`."""
    return STRATEGIES[name].builder()
