"""The strategy seam: what one search step does, and which batches it needs.

The DARTS paper (Liu et al., ICLR 2019, Sect. 3.3) compares three ways of moving α and w:

    strategy    batches each step                   step
    bilevel     w batch b_t, α batch b_v            α step on b_v (order 1 or 2), then w on b_t
    coordinate  b_t and b_v both from train∪val     α step on b_v (first order), then w on b_t
    joint       one batch b from train∪val          α and w from one backward pass on b

A `Strategy` declares its `BatchPlan` (the domain's search task lays its streams out by it), the
α-gradient orders it supports, and performs one step on the `Search` it is given (its model,
architect, optimisers, task and meters). A new strategy is one class registered in
`STRATEGIES`; the configuration names it (``arch.mode``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from spacec.registry import Registry
from spacec.runtime.domains.base import BatchPlan, LossOutput, SearchTask, StepBatches
from spacec.runtime.run.meter import check_finite

if TYPE_CHECKING:  # pragma: no cover
    from spacec.runtime.search.loop import Search

STRATEGIES = Registry("search strategy")


class Strategy:
    """One kind of search step."""

    name: ClassVar[str] = ""
    plan: ClassVar[BatchPlan]
    orders: ClassVar[tuple[int, ...]] = (1,)  # α-gradient orders the strategy supports

    def architect_loss(self, task: SearchTask) -> Callable[[Callable[..., Tensor], Any], Tensor]:
        """The loss the architect differentiates (the task's, unless the strategy records it)."""
        return task.loss

    def step(self, search: Search, batches: StepBatches, lr: float, where: str) -> None:
        raise NotImplementedError


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
        stats = search.architect.step(batches.train, batches.val, lr)
        check_finite(stats["val_loss"], "the validation loss (α step)", where)
        search.arch_meter.update({"val_loss": stats["val_loss"]})
        search.weight_step(batches.train, where)


@register_strategy("coordinate")
class Coordinate(Bilevel):
    """Coordinate descent on train∪val: the α and the w batch from the same data, first order."""

    plan = BatchPlan(union=True, arch_stream=True)
    orders = (1,)


class _RecordedLoss:
    """An architect loss that keeps the metrics of its last call (joint_step calls it once)."""

    def __init__(self, task: SearchTask) -> None:
        self.task = task
        self.last: LossOutput | None = None

    def __call__(self, call: Callable[..., Tensor], batch: Any) -> Tensor:
        out = self.task.loss_and_metrics(call, batch)
        self.last = LossOutput(out.loss.detach(), out.metrics, out.weight)
        return out.loss


@register_strategy("joint")
class Joint(Strategy):
    """Single-level optimisation on train∪val: α and w move together from one backward pass."""

    plan = BatchPlan(union=True, arch_stream=False)

    def architect_loss(self, task: SearchTask) -> _RecordedLoss:
        self.recorded = _RecordedLoss(task)
        return self.recorded

    def step(self, search: Search, batches: StepBatches, lr: float, where: str) -> None:
        search.architect.joint_step(batches.train, w_grad_clip=search.cfg.optim.grad_clip)
        out = self.recorded.last
        check_finite(out.metrics["loss"], "the training loss (joint step)", where)
        search.train_meter.update(out.metrics, out.weight)


def strategy(name: str) -> Strategy:
    """A new instance of the registered strategy `name`."""
    return STRATEGIES[name].builder()
