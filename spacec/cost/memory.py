"""Predicted peak memory of one search step, or one training step, before anything is allocated.

A step is a sequence of phases (`Phase`): a forward and backward pass whose saved activations are
alive, or an optimiser update, each with the weight-sized tensors alive beside it. The peak of a
step is the largest phase's total:

  persistent   weights, SGD momentum, α with its optimiser states and gradient, BatchNorm
               buffers, the data batches (train and, for a search, validation)
  phase        the activations autograd keeps for backward (traced by spacec.cost.network,
               then kept or recomputed as the memory setting says), the backward working set
               (the gradients of the largest activation and of its input), and the
               weight-sized copies alive then: weight gradients, and for the second-order step
               the training gradient, the unrolled weights w', the validation gradient and
               w ± R·v (runtime/search/architect.py), the functional calls' buffer clones
  allocator    what the device's allocator holds beyond the live tensors (`Device`)

Three registries, each keyed by name so that a new method, setting or device adds an entry and
no if-chain: `spacec.cost.methods.METHODS` (what an edge runs and keeps, α's size),
`MEMORY_SETTINGS` (what of a mixed edge backward recomputes, the runtime's `run.memory`:
`fast` nothing; `balanced` the max poolings', the depthwise convolutions' and the ReLUs' outputs;
`low` each whole edge; recurrent spaces are predicted with `fast` only) and `DEVICES` (cpu, cuda).
The step kinds (`STEPS`: weights, first, second; `TRAIN_STEP`) follow the search loop and the
architect; a method may change them (`Method.weight_step_alpha`).

Recurrent spaces: the prediction traces the cell at every time step of a segment of `bptt`
tokens; the per-op rules are the same as for images, so it is an estimate of the same kind,
checked against a measurement by benchmarks/cost_model.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from spacec import ir as irmod
from spacec.arch.genotype import Genotype
from spacec.cost.methods import IMAGE, SEQUENCE, CostError, Method, method
from spacec.cost.network import DerivedWalk, PlacedError, RecurrentWalk, SupernetWalk
from spacec.cost.shapes import space_error
from spacec.cost.tracer import FLOAT, INDEX, Tracer
from spacec.registry import Registry

GIB = 2**30


# ---- phases and steps ------------------------------------------------------------------------
@dataclass(frozen=True)
class Pass:
    """A forward and backward pass: which parameters require grad during it."""

    weights_grad: bool
    alpha_grad: bool


@dataclass(frozen=True)
class Phase:
    name: str
    activations: Pass | None  # the pass whose saved activations are alive; None: an update
    copies: tuple[tuple[str, int], ...] = ()  # weight-sized tensors alive: (what, how many)
    buffer_clones: int = 0  # the architect clones every buffer (runtime/search/architect.py)


_W_STEP = (
    # The loop's w step: zero_grad(set_to_none) frees the gradients, backward makes them anew.
    Phase("w step: forward and backward", Pass(True, True), (("weight gradients", 1),)),
    # SGD's foreach update adds weight decay into a new list of tensors (torch.optim.SGD).
    Phase("w step: SGD update", None, (("weight gradients", 1), ("SGD temporaries", 1))),
)
STEPS: dict[str, tuple[Phase, ...]] = {
    "weights": _W_STEP,
    "first": (
        Phase("α step: ∇α L_val(w)", Pass(False, True), (("weight gradients", 1),), 1),
        *_W_STEP,
    ),
    "second": (
        Phase(
            "α step: ∇w L_train(w)",
            Pass(True, False),
            (("weight gradients", 1), ("training gradient", 1)),
            1,
        ),
        Phase(
            "α step: ∇ L_val(w')",
            Pass(True, True),
            (
                ("weight gradients", 1),
                ("training gradient", 1),
                ("unrolled weights w'", 1),
                ("validation gradient", 1),
            ),
            1,
        ),
        Phase(
            "α step: ∇α L_train(w ± R·v)",
            Pass(False, True),
            (
                ("weight gradients", 1),
                ("training gradient", 1),
                ("unrolled weights w'", 1),
                ("validation gradient", 1),
                ("w ± R·v", 2),
            ),
            1,
        ),
        *_W_STEP,
    ),
}
ORDERS = {1: "first", 2: "second"}


def _method_phases(phases: tuple[Phase, ...], search_method: Method) -> tuple[Phase, ...]:
    """`phases` as `search_method` runs them: its w step without α's gradient where the method
    detaches the weights it mixes with (`Method.weight_step_alpha`)."""
    if search_method.weight_step_alpha:
        return phases
    plain = Pass(True, False)
    return tuple(dataclasses.replace(phase, activations=plain) if phase in _W_STEP
                 and phase.activations is not None else phase for phase in phases)


TRAIN_STEP = (
    Phase("forward and backward", Pass(True, False), (("weight gradients", 1),)),
    Phase("SGD update", None, (("weight gradients", 1), ("SGD temporaries", 1))),
)


# ---- memory settings and devices -------------------------------------------------------------
@dataclass(frozen=True)
class MemorySetting:
    """What of a mixed edge the backward pass recomputes instead of keeping (the runtime's
    ``run.memory``, spacec.runtime.nn.memory): `recompute` is "" (`fast`: keep everything),
    "depthwise" (`balanced`: a lone max pooling candidate's output and indices, and in a
    candidate ending in a norm each depthwise convolution's output and polyphase stack and
    each ReLU's output after a BatchNorm, made again in backward, as is the edge's shared
    ReLU where only such candidates read it; a sampling method's edge runs its candidate
    plainly) or "edge" (`low`: the whole mixed edge checkpointed: it keeps its input and
    weights row only; its output is kept where its consumer keeps it).
    While backward reruns a segment, what that segment saves lives again: the largest such
    segment is added to the activations. `level` orders the settings, most memory first."""

    name: str
    recompute: str
    level: int
    doc: str = ""


MEMORY_SETTINGS = Registry("memory setting")


def register_memory_setting(setting: MemorySetting) -> MemorySetting:
    MEMORY_SETTINGS.register(setting.name)(setting)
    return setting


register_memory_setting(MemorySetting(
    "fast", "", 0, "every tensor autograd saves stays until backward"))
register_memory_setting(MemorySetting(
    "balanced", "depthwise", 1,
    "the max poolings', the depthwise convolutions' and the ReLUs' outputs made again in "
    "backward"))
register_memory_setting(MemorySetting(
    "low", "edge", 2, "each mixed edge recomputed in backward: its input kept, nothing inside"))


@dataclass(frozen=True)
class Device:
    """How a device's allocator holds the live bytes.

    `tensor_bytes(n)`: what one tensor of n bytes occupies; `resident(live, activations,
    recompute)`: the memory the process holds at a peak of `live` bytes of tensors,
    `activations` of them the activations kept for backward (what the allocator churns through
    every step), under a memory setting whose recompute kind is `recompute` ("" for `fast`).
    """

    name: str
    tensor_bytes: Callable[[int], int]
    resident: Callable[[int, int, str], int]
    measured_by: str
    doc: str = ""


DEVICES = Registry("device")


def register_device(device: Device) -> Device:
    DEVICES.register(device.name)(device)
    return device


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _share(fraction: float, nbytes: int) -> int:
    """`fraction` of `nbytes` in integers (to a thousandth): exact however large the batch."""
    return nbytes * round(fraction * 1000) // 1000


# c10's CPU allocator aligns every block to 64 bytes (c10/core/alignment.h, gAlignment).
CPU_ALIGNMENT = 64
# glibc malloc keeps freed memory in its heap instead of returning it: a step's resident peak
# exceeds its live peak by a share of the activations it keeps for backward, the holes its
# freed temporaries leave between them. The share depends on what the memory setting frees in
# the forward pass (its recompute kind): `fast` frees little between the tensors it keeps;
# `balanced` frees a candidate's ReLU, depthwise and max pooling outputs between them, so nearly as
# much again stays resident; `low` frees each edge's insides. Fitted to the peaks measured on
# 2026-12-02 (2 threads, every method and memory setting, darts_cnn, nas_bench_201,
# darts_imagenet, a derived network's training, the recurrent search) by
# benchmarks/cost_fit.py: benchmarks/results/cost_model_refit_cpu.*. The model until then added
# a share of the bytes `balanced` and `low` free in the forward pass; with the activations'
# share by setting, the best such share is none. `balanced`'s share refitted on 2026-12-03, when
# it began keeping the average poolings' outputs (0.86 -> 0.59; its darts rows measured again on
# a Zen 5 EPYC, the rest as before: benchmarks/results/cost_model_refit_avg_kept_fit_cpu.txt).
# A kind not fitted yet takes the largest share.
CPU_RETAINED = {"": 0.16, "depthwise": 0.59, "edge": 0.63}
# Fixed runtime state a step adds beyond tensors and beyond the baseline the measurement takes
# after the same step on a tiny network: the autograd graph's nodes (fitted with the shares).
CPU_RUNTIME = 4 * 2**20
# The CUDA caching allocator rounds every block up to 512 bytes (c10/cuda/CUDACachingAllocator).
CUDA_BLOCK = 512

register_device(
    Device(
        "cpu",
        lambda n: _round_up(n, CPU_ALIGNMENT),
        lambda live, activations, recompute: (
            live + _share(CPU_RETAINED.get(recompute, max(CPU_RETAINED.values())), activations)
            + CPU_RUNTIME),
        "peak resident set size of the process, less its size before the model is built",
        "glibc malloc through c10's CPU allocator",
    )
)
register_device(
    Device(
        "cuda",
        lambda n: _round_up(n, CUDA_BLOCK),
        lambda live, activations, recompute: live,
        "torch.cuda.max_memory_allocated (the CUDA context and cached blocks excluded)",
        "the CUDA caching allocator; cuDNN workspaces are not counted",
    )
)


# ---- the prediction --------------------------------------------------------------------------
@dataclass(frozen=True)
class PhasePeak:
    name: str
    total: int  # bytes, the device's resident figure
    terms: tuple[tuple[str, int], ...]  # what is live at the phase's peak, bytes


@dataclass(frozen=True)
class Prediction:
    """A step's predicted peak, its breakdown, and how it scales with the batch."""

    what: str  # "search" or "train"
    space: str
    step: str  # weights | first | second | train
    method: str
    memory: str
    device: str
    batch: int
    phases: tuple[PhasePeak, ...]
    per_sample: int  # bytes the peak grows by per sample of batch (activations, data)
    settings: tuple[tuple[str, object], ...] = field(default=())
    method_name: str = ""  # the registered name (`method` is its label, with its options)
    method_options: tuple[tuple[str, object], ...] = ()

    @property
    def peak(self) -> PhasePeak:
        return max(self.phases, key=lambda p: p.total)

    @property
    def total(self) -> int:
        return self.peak.total

    @property
    def breakdown(self) -> dict[str, int]:
        return dict(self.peak.terms)

    @property
    def fixed(self) -> int:
        """Bytes of the peak that do not grow with the batch (weights, their states, ...). At
        an absurd batch (10**20) the per-sample growth's alignment rounding, times the batch,
        outweighs them: never below none."""
        return max(0, self.total - self.per_sample * self.batch)

    def largest_batch(self, available: int) -> int:
        """The largest batch whose predicted peak fits `available` bytes (0: none)."""
        fixed = self.fixed
        if self.per_sample <= 0:
            return self.batch if self.total <= available else 0
        return max(0, (available - fixed) // self.per_sample)

    def to_dict(self) -> dict:
        return {
            "what": self.what,
            "step": self.step,
            "method": self.method,
            "method_options": dict(self.method_options),
            "memory": self.memory,
            "device": self.device,
            "batch": self.batch,
            "total_bytes": self.total,
            "peak_phase": self.peak.name,
            "breakdown_bytes": self.breakdown,
            "phases": {p.name: p.total for p in self.phases},
            "per_sample_bytes": self.per_sample,
            **dict(self.settings),
        }


@dataclass(frozen=True)
class _Traced:
    """One pass traced at one batch size."""

    by_scope: dict[str, int]
    largest: int  # bytes of the largest activation
    recompute_peak: int  # bytes a recomputed segment saves again while its backward runs


def _run(ir: irmod.IR, trace: Callable[[Tracer], None], t: Tracer) -> Tracer:
    """Trace one pass; a size the network cannot take is the space's error (a SpaceError)."""
    try:
        trace(t)
    except PlacedError as error:
        raise space_error(ir, error) from None
    return t


def _pass_bytes(ir: irmod.IR, trace: Callable[[Tracer], None], weights_grad: bool,
                device: Device) -> _Traced:
    t = _run(ir, trace, Tracer(weights_grad=weights_grad, tensor_bytes=device.tensor_bytes))
    return _Traced(t.saved_by_scope(), t.largest, t.recompute_peak)


def _persistent(sizes: Mapping[str, int], momentum: bool, method_states: int) -> list:
    weights = sizes["weights"]
    terms = [("weights", weights)]
    if momentum:
        terms.append(("SGD momentum", weights))
    if sizes.get("alpha"):
        terms += [
            ("α", sizes["alpha"]),
            ("α gradients", sizes["alpha"]),
            ("α optimiser states", method_states * sizes["alpha"]),
        ]
    terms.append(("buffers", sizes["buffers"]))
    return terms


def _phase_peaks(
    phases: tuple[Phase, ...],
    passes: Mapping[Pass, _Traced],
    persistent: list,
    data: int,
    sizes: Mapping[str, int],
    device: Device,
    recompute: str = "",
) -> tuple[PhasePeak, ...]:
    peaks = []
    for phase in phases:
        terms = [*persistent, ("data", data)]
        terms += [(what, count * sizes["weights"]) for what, count in phase.copies]
        if phase.buffer_clones:
            terms.append(("buffer clones", phase.buffer_clones * sizes["buffers"]))
        activations = 0
        if phase.activations is not None:
            traced = passes[phase.activations]
            activations = sum(traced.by_scope.values())
            terms += [("activations", activations),
                      ("recomputed in backward", traced.recompute_peak),
                      ("backward working set", 2 * traced.largest)]
            activations += traced.recompute_peak
        merged: dict[str, int] = {}
        for what, nbytes in terms:
            merged[what] = merged.get(what, 0) + nbytes
        live = sum(merged.values())
        total = device.resident(live, activations, recompute)
        merged["allocator and runtime"] = total - live
        peaks.append(PhasePeak(phase.name, total, tuple(merged.items())))
    return tuple(peaks)


def _sizes(ir: irmod.IR, trace: Callable[[Tracer], None], alpha: int) -> dict[str, int]:
    """Parameter and buffer bytes, from a trace at batch 1."""
    t = _run(ir, trace, Tracer(weights_grad=True))
    return {
        "weights": t.parameters * FLOAT,
        "alpha": alpha * FLOAT,
        "buffers": t.buffers,
    }


def alpha_count(ir: irmod.IR, search_method: Method) -> int:
    total = 0
    for cell in ir.space.cells:
        for shape in search_method.tensors(cell, ir.space.opset(cell.opset)).values():
            count = 1
            for dim in shape:
                count *= dim
            total += count
    return total


def _image_data(ir: irmod.IR, batch: int) -> int:
    network = ir.space.network
    size = network.get("image_size").value
    channels = network.get("in_channels").value
    return batch * (channels * size * size * FLOAT + INDEX)


def _text_data(batch: int, bptt: int, nhid: int) -> int:
    # a segment of word ids and its targets, and the hidden state carried in
    return 2 * bptt * batch * INDEX + batch * nhid * FLOAT


def predict_search(
    ir: irmod.IR,
    batch: int,
    order: int = 1,
    step: str | None = None,
    method_name: str = "darts",
    memory: str = "fast",
    device: str = "cpu",
    bptt: int = 35,
    momentum: bool | None = None,
    method_options: Mapping[str, object] | None = None,
) -> Prediction:
    """Peak memory of one search step (`step`: weights, first or second; default: the one the
    method runs at `order`). `method_options` replace the method's cost options (PC-DARTS's k).

    `momentum`: whether the w optimiser keeps a momentum buffer (default: the DARTS searches',
    0.9 for images, none for the recurrent search).
    """
    search_method = method(method_name, **dict(method_options or {}))
    sequence = ir.space.network.kind == "language_model"
    search_method.check_domain(SEQUENCE if sequence else IMAGE)
    kind = step or search_method.step(order)
    setting = MEMORY_SETTINGS[memory].builder
    if sequence and setting.recompute:
        raise CostError(f"--memory {memory} recomputes the mixed edges of image cells; a "
                        "recurrent search is predicted with --memory fast only")
    dev = DEVICES[device].builder
    phases = _method_phases(STEPS[kind], search_method)

    def tracer_at(b: int, p: Pass, steps: int = bptt,
                  build: bool = False) -> Callable[[Tracer], None]:
        if sequence:
            # the w step adds TAR to its loss (a pass with both gradients is the w step's)
            return lambda t: RecurrentWalk(ir, t, b, steps, p.alpha_grad,
                                           regularise=p.alpha_grad and p.weights_grad).forward()
        return lambda t: SupernetWalk(ir, t, b, search_method, p.alpha_grad, build=build,
                                      recompute="" if build else setting.recompute).forward()

    sizes = _sizes(ir, tracer_at(1, Pass(True, True), 1, build=True),
                   alpha_count(ir, search_method))
    if momentum is None:
        momentum = not sequence
    persistent = _persistent(sizes, momentum, search_method.optimizer_states)
    needed = {phase.activations for phase in phases if phase.activations is not None}

    def peaks_at(b: int) -> tuple[PhasePeak, ...]:
        passes = {p: _pass_bytes(ir, tracer_at(b, p), p.weights_grad, dev) for p in needed}
        nhid = ir.space.network.get("hidden").value if sequence else 0
        data = 2 * (_text_data(b, bptt, nhid) if sequence else _image_data(ir, b))
        return _phase_peaks(phases, passes, persistent, data, sizes, dev, setting.recompute)

    peaks = peaks_at(batch)
    return Prediction(
        "search", ir.name, kind, search_method.label, memory, device, batch, peaks,
        _per_sample(peaks, peaks_at(batch + 1)),
        (("bptt", bptt),) if sequence else (),
        search_method.name, tuple(search_method.options),
    )


def predict_train(
    ir: irmod.IR,
    genotype: Genotype,
    batch: int,
    auxiliary: bool = True,
    drop_path: bool = True,
    device: str = "cpu",
) -> Prediction:
    """Peak memory of one `spacec train` step of the derived network (image spaces). It has no
    mixed edges, so no memory setting applies: everything is kept (`fast`).

    Defaults: DARTS train.py, the auxiliary head on and drop path active (its later epochs).
    """
    dev = DEVICES[device].builder

    def tracer_at(b: int) -> Callable[[Tracer], None]:
        return lambda t: DerivedWalk(ir, t, b, genotype, auxiliary, drop_path).forward()

    sizes = _sizes(ir, tracer_at(1), 0)
    persistent = _persistent(sizes, True, 0)
    train_pass = TRAIN_STEP[0].activations

    def peaks_at(b: int) -> tuple[PhasePeak, ...]:
        passes = {train_pass: _pass_bytes(ir, tracer_at(b), True, dev)}
        return _phase_peaks(TRAIN_STEP, passes, persistent, _image_data(ir, b), sizes, dev)

    peaks = peaks_at(batch)
    return Prediction(
        "train", ir.name, "train", "derived", "fast", device, batch, peaks,
        _per_sample(peaks, peaks_at(batch + 1)),
        (("auxiliary", auxiliary), ("drop_path", drop_path)),
    )


def _per_sample(at_batch: tuple[PhasePeak, ...], one_more: tuple[PhasePeak, ...]) -> int:
    return max(p.total for p in one_more) - max(p.total for p in at_batch)
