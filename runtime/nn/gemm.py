"""Float32 matrix products on the CPU through oneDNN where it is faster than torch.mm.

torch.mm on the CPU calls the BLAS torch was built with: MKL in the x86 wheels. MKL picks its
kernels by CPU vendor, and on AMD processors it runs its AVX2 kernels even where the CPU has
AVX-512; oneDNN, which ships in the same wheel, picks by instruction set. On the 2-core Zen 5
EPYC of 2026-12-03 (torch 2.14.1, 1 thread) oneDNN's fp32 products of the recurrent search's
shapes ran at 1.3-2.3x MKL's speed (benchmarks/gemm.py). Same arithmetic: float32 products
summed in float32, in another order (results equal up to rounding; tests/test_gemm.py).

Which of the two runs is a process-wide choice (`select`, the run section's `matmul`): `aten`
(torch.mm), `onednn`, or `auto`, which times both once on a product of the recurrent search's
size and takes oneDNN where it is at least `AUTO_MARGIN` times faster. The choice applies to
float32 CPU tensors outside autocast only; everything else goes to torch.mm.

Two ways in, both used by the speed-ups of accelerate.py (a supernet's, and those `spacec
train` applies to a derived network), never by the definitions the derived network copies:
  * `matmul(a, b)`: a differentiable a @ b, a custom operator (`spacec::matmul`) so that
    torch.compile keeps it as one opaque call (inductor's own oneDNN lowering wants constant
    weights) and autograd differentiates it by two more such products;
  * `OneDNNDecoderProducts`: the products of the recurrent loss head (`recurrent.DecodedNLL`),
    which runs outside compiled graphs and is differentiated by hand.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import torch
from torch import Tensor

ATEN, ONEDNN, AUTO = "aten", "onednn", "auto"
SETTINGS = (AUTO, ATEN, ONEDNN)
# auto takes oneDNN where it is at least this much faster than torch.mm: below, the two are
# within what timing noise can flip, and aten (torch's own choice) is kept.
AUTO_MARGIN = 1.15
# The product auto times: a node map of darts_rnn's search cell at batch 16 over 8 states
# ([128, 300] @ [300, 600]), the shape most of the recurrent search's products have.
_PROBE_SHAPE = (128, 300, 600)
_PROBE_ROUNDS = 5


@dataclasses.dataclass(frozen=True)
class Choice:
    """What `select` settled on: the backend, the setting it came from and why."""

    backend: str
    setting: str
    reason: str

    def line(self) -> str:
        head = self.backend if self.setting != AUTO else f"{AUTO}: {self.backend}"
        return f"{head} ({self.reason})"


_choice: Choice | None = None
# What `choice` resolves when a product first needs one: a run's setting and how its processes
# agree on it (`select_for_run`); auto, in this process alone, until a run says otherwise.
_asked: tuple[str, Callable[[str], list[str]] | None] = (AUTO, None)


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available()


def select(setting: str = AUTO) -> Choice:
    """Make `setting` the process's choice (auto is timed now) and return it."""
    _check(setting)
    if setting == ATEN:
        return settle(Choice(ATEN, ATEN, "torch.mm, as asked"))
    if not onednn_available():
        return settle(Choice(ATEN, setting, "this torch has no oneDNN"))
    if setting == ONEDNN:
        return settle(Choice(ONEDNN, ONEDNN, "as asked"))
    return settle(_timed_choice())


def select_for_run(setting: str, gather: Callable[[str], list[str]]) -> None:
    """A run's setting, decided when its network first sends products here
    (spacec.runtime.nn.accelerate.accelerate_network, as every process builds it), not before:
    a run whose network has none (an image network) neither times nor gathers. `gather(backend)`
    returns every process's backend; processes that timed differently under auto all take
    torch.mm, so that every process computes the same."""
    global _choice, _asked
    _check(setting)
    _choice, _asked = None, (setting, gather)


def _check(setting: str) -> None:
    if setting not in SETTINGS:
        raise ValueError(f"matmul must be one of {', '.join(SETTINGS)}, got {setting!r}")


def settle(made: Choice) -> Choice:
    """Make `made` the process's choice as it is (`select` and `choice` decide)."""
    global _choice
    _choice = made
    return made


def choice() -> Choice:
    """The process's choice, decided now if it is not yet (`select_for_run`)."""
    if _choice is not None:
        return _choice
    setting, gather = _asked
    made = select(setting)
    if gather is not None and len(set(gather(made.backend))) > 1:
        made = settle(Choice(ATEN, setting,
                             "the run's processes timed oneDNN differently; all take torch.mm"))
    return made


def decided() -> Choice | None:
    """The choice if some network's products needed one since the run's setting, else None."""
    return _choice


@torch.compiler.disable  # timed eagerly even when first asked from inside a compiled step
def _timed_choice() -> Choice:
    speedup = _speedup()
    backend = ONEDNN if speedup >= AUTO_MARGIN else ATEN
    return Choice(backend, AUTO, f"oneDNN {speedup:.2f}x torch.mm's speed on this CPU, "
                                 f"{torch.get_num_threads()} thread(s)")


def _speedup() -> float:
    """torch.mm's time over oneDNN's for the probe product, best of interleaved rounds."""
    m, k, n = _PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)  # the global random state stays untouched
    a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
    runs = {ATEN: lambda: torch.mm(a, b), ONEDNN: lambda: _onednn_mm(a, b)}
    best = dict.fromkeys(runs, float("inf"))
    for run in runs.values():  # warm both (oneDNN makes its kernel at first call)
        run()
    for _ in range(_PROBE_ROUNDS):  # interleaved, so that a disturbance hits both
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(4):
                run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best[ATEN] / best[ONEDNN]


def applies(*tensors: Tensor) -> bool:
    """Whether products of these tensors go to oneDNN: the choice is oneDNN, all are non-empty
    float32 CPU tensors (oneDNN makes no primitive for an empty one), and CPU autocast is off."""
    return (
        choice().backend == ONEDNN
        and all(t.device.type == "cpu" and t.dtype == torch.float32 and t.numel() > 0
                for t in tensors)
        and not torch.is_autocast_enabled("cpu")
    )


def _onednn_mm(a: Tensor, b: Tensor) -> Tensor:
    # oneDNN's linear computes a @ weight^T; b^T is a view, which it reads strided.
    return torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [], "")


def _onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


# ---------------------------------------------------------------- differentiable a @ b


@torch.library.custom_op("spacec::matmul", mutates_args=())
def _matmul_op(a: Tensor, b: Tensor) -> Tensor:
    return _onednn_mm(a, b)


@_matmul_op.register_fake
def _(a: Tensor, b: Tensor) -> Tensor:
    return a.new_empty((a.shape[0], b.shape[1]))


def _matmul_setup(ctx, inputs, output) -> None:
    a, b = inputs
    # As torch.mm's backward: each input only for the other's gradient.
    needs_a, needs_b = ctx.needs_input_grad[:2]
    ctx.save_for_backward(a if needs_b else None, b if needs_a else None)


def _matmul_backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
    a, b = ctx.saved_tensors
    needs_a, needs_b = ctx.needs_input_grad[:2]
    return (_matmul_op(grad, b.t()) if needs_a else None,
            _matmul_op(a.t(), grad) if needs_b else None)


_matmul_op.register_autograd(_matmul_backward, setup_context=_matmul_setup)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a [M, K] @ b [K, N], differentiable: oneDNN's where it `applies`, else torch.mm."""
    if applies(a, b):
        return _matmul_op(a, b)
    return torch.mm(a, b)


# ---------------------------------------------------------------- the loss head's products


class OneDNNDecoderProducts:
    """`recurrent.DecodedNLL`'s products by oneDNN (see `recurrent.AtenDecoderProducts`).

    The logits come in blocks of `rows` rows with the bias added by the product; the head
    turns each into exponentials in the logits' (reused) storage. A whole-batch product would
    need a fresh [N, ntoken] output every step, since oneDNN cannot write into given storage:
    at the paper's batch 256, 358 MB of new pages per pass. 256 rows measured fastest of 128,
    256 and 512 at batch 256 on the Zen 5 (the decoder weight is read once per block).
    """

    rows = 256

    @staticmethod
    def logits(hidden: Tensor, weight: Tensor, bias: Tensor | None,
               out: Tensor) -> tuple[Tensor, bool]:
        return _onednn_linear(hidden, weight, bias), True

    @staticmethod
    def mm(a: Tensor, b: Tensor) -> Tensor:
        if a.stride(0) == 1 and a.stride(1) != 1:
            # A transposed view on the left (the weight gradient's E^T): (b^T a^T)^T, a view of
            # the swapped product, which oneDNN computes in 0.66x the time at batch 256 (the
            # same sums, bit for bit here).
            return _onednn_mm(b.t(), a.t()).t()
        return _onednn_mm(a, b)
