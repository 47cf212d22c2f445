"""Word-level language modelling: the ``sequence`` task of the search and training loops.

The DARTS recurrent search and evaluation (Liu, Simonyan & Yang, ICLR 2019, Sect. 3.1.2 and
3.2; quark0/darts rnn/train_search.py and rnn/train.py, which follow AWD-LSTM, Merity, Keskar &
Socher 2018, salesforce/awd-lstm-lm main.py) run through the same loops as the image task
(spacec.runtime.search.loop, spacec.runtime.train.loop). What is particular to text lives here:

Data (`LanguageData`, the ``data`` section of a ``task: sequence`` configuration). A corpus is
a folder with ``train.txt``, ``valid.txt`` and ``test.txt`` (spacec.runtime.domains.text.corpus): the WikiText-2 slice
shipped with the package (``sample``), or ``ptb`` / ``wikitext2`` read from ``data_dir``. The
vocabulary comes from the training file; the space's ``ntoken`` is set to its size. Each split
is laid out in ``batch_size`` columns (`spacec.runtime.domains.text.corpus.batchify`) and read in consecutive BPTT
segments of AWD-LSTM's random length (35, or 17.5 with probability 0.05, plus normal noise of
std 5; at least 5, at most 55; rnn/train_search.py comments the normal draw out and uses
int(mean), which ``bptt_std: 0`` reproduces). Epoch e's lengths are drawn from a generator
seeded with (seed, e), so an epoch's steps are a pure function of the seed: resumable at any
step.

Hidden state. Every stream (the w stream on train, the α stream on valid) carries its recurrent
state from one segment to the next, detached (`repackage_hidden`: truncated BPTT), and starts
each epoch from zeros, as the reference's ``hidden`` and ``hidden_valid``. The loss functions
stay stateless (spacec.runtime.search.architect calls them several times per step): the state entering a
segment travels in the batch (`TextBatch.hidden`) and the state leaving it is written to the
stream's `HiddenCarry`, which the next batch of that stream reads. For the α stream this is the
state the α loss produced, at w (first order) or at the unrolled w' (second order), as in the
reference. The α stream advances by the same lengths as the w stream and wraps to its start
(state reset) when its text runs out; the reference instead reads 35 rows at the w stream's row
modulo the valid rows, so its α segments overlap or skip text when the length is not 35.

Losses. The w step minimises NLL + ``ar_alpha`` · mean(dropped output²) + ``tar_beta`` ·
mean((h_t − h_{t−1})²) over the raw cell outputs (activation and temporal activation
regularisation; DARTS uses --alpha 0, --beta 1e-3); the α step and the metrics use plain NLL.
The learning rate of a step is scaled by ``seq_len / bptt`` (`StepBatches.lr_scale`), which the
second-order α step uses as its η too. Evaluation reads the whole valid (or test) split in
segments of exactly ``bptt`` rows at batch ``eval_batch_size`` (``test_batch_size``), carrying the
state, and reports the exact mean NLL per predicted token and its perplexity exp(NLL) (the
reference divides by all rows, one more than it predicts).

Second order. `spacec.runtime.search.architect.Architect` with ``unrolled_clip`` 0.25 does the mathematically
correct unrolled step: plain SGD (no momentum) at the scaled η, the training gradient and v
clipped to 0.25, the finite difference taken at the ORIGINAL weights w ± R·v, and the tied
embedding and decoder substituted together (``functional_call`` ties them). Three quirks of the
reference's rnn/architect.py are deliberately not reproduced: its unrolled model is rebuilt by
``load_state_dict`` from ``named_parameters()``, which lists the tied weight once as
``encoder.weight``, so the stale ``decoder.weight`` entry of the state dict is loaded last and the
unrolled model keeps the OLD tied embedding; it adds weight decay to v; and it perturbs the
unrolled weights w' instead of w for the finite difference.

Evaluation training (spacec.runtime.train.loop with this task): NT-ASGD (Merity et al. 2018, Sect. 3):
SGD until the validation loss has not improved on the best of all but the last ``nonmono``
evaluations, then `torch.optim.ASGD` with t0=0, lambd=0 (`NonMonotoneSwitch`,
`averaged_sgd`), evaluating with the averaged weights (`averaged_weights`); the test split is
evaluated at the end with the best weights (lowest validation loss).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spacec.arch.genotype import Genotype
from spacec.load import compile_file, locate
from spacec.runtime.domains.image.data import DataError, derive_seed
from spacec.runtime.domains.task import LossOutput, StepBatches, Task, register_task
from spacec.runtime.domains.text.corpus import (
    BPTT,
    BPTT_HALF_PROBABILITY,
    BPTT_MAX_EXTRA,
    BPTT_STD,
    BpttStep,
    Corpus,
    batchify,
    bptt_lengths,
    get_batch,
    sample_corpus_dir,
)
from spacec.runtime.nn.recurrent import repackage_hidden
from spacec.runtime.run.checkpoint import load_checkpoint
from spacec.runtime.run.common import RunDir, check_finite, resolve_device, seed_everything
from spacec.runtime.run.config import ConfigError, register_data_config
from spacec.runtime.search.loop import space_overrides
from spacec.runtime.tools.flops import count_parameters
from spacec.runtime.train.loop import (
    BEST_NAME,
    CHECKPOINT_KIND,
    TEST_SPLIT,
    EvalSplit,
    TrainConfig,
    Trainer,
    register_trainer,
)

log = logging.getLogger(__name__)

TASK = "sequence"  # the domain of language-model spaces (spacec.catalog.NETWORK_DOMAINS)
DROPOUTS = ("dropout", "dropouth", "dropoutx", "dropouti", "dropoute")
# math.exp overflows beyond this; a loss this large is a diverged run anyway.
_MAX_LOG_PERPLEXITY = 700.0


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class LanguageData:
    """The ``data`` section of a sequence task: the corpus, its batching, the regularisation.

    Defaults: DARTS' recurrent search, quark0/darts rnn/train_search.py (evaluation,
    rnn/train.py, differs in ``batch_size`` 64). The dropouts are the language model's
    constructor arguments (spacec.runtime.nn.recurrent.RecurrentLM); its sizes come from the space.
    """

    name: str = "sample"  # a key of CORPUS_SOURCES
    data_dir: str | None = None  # folder with train.txt, valid.txt, test.txt (not for "sample")
    batch_size: int = 256  # --batch_size 256 (train.py: 64); also the α stream's batch
    eval_batch_size: int = 10  # eval_batch_size = 10 (validation)
    test_batch_size: int = 1  # test_batch_size = 1 (train.py's final test evaluation)
    bptt: int = BPTT  # --bptt 35: mean segment length; lr is scaled by seq_len / bptt
    bptt_half_probability: float = BPTT_HALF_PROBABILITY  # bptt / 2 if random() >= 0.95
    # seq_len = int(normal(mean, 5)) (train.py, AWD-LSTM); train_search.py comments the draw
    # out and uses int(mean): bptt_std 0 reproduces that.
    bptt_std: float = BPTT_STD
    max_seq_len_delta: int = BPTT_MAX_EXTRA  # --max_seq_len_delta 20: seq_len <= bptt + 20
    limit: int | None = None  # use only the first `limit` tokens of each split (smoke runs)
    dropout: float = 0.75  # --dropout: locked dropout on the cell's output
    dropouth: float = 0.25  # --dropouth: on h_{t-1} and the states the node maps read
    dropoutx: float = 0.75  # --dropoutx: on x_t entering the cell
    dropouti: float = 0.2  # --dropouti: locked dropout on the embedded input
    dropoute: float = 0.0  # --dropoute 0: whole word vectors (both scripts' default)
    ar_alpha: float = 0.0  # --alpha 0: activation regularisation (dropped outputs)
    tar_beta: float = 1e-3  # --beta 1e-3: temporal activation regularisation (raw outputs)

    def __post_init__(self) -> None:
        source = corpus_source(self.name)
        if source.needs_data_dir and self.data_dir is None:
            raise DataError(f"corpus {self.name!r} needs data_dir (a folder with "
                            "train.txt, valid.txt and test.txt)")
        if not source.needs_data_dir and self.data_dir is not None:
            raise DataError(f"corpus {self.name!r} ships with the package; data_dir must be unset")
        for name in ("batch_size", "eval_batch_size", "test_batch_size", "bptt"):
            if getattr(self, name) < 1:
                raise DataError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.bptt_half_probability <= 1:
            raise DataError("bptt_half_probability must lie in [0, 1], "
                            f"got {self.bptt_half_probability}")
        if self.bptt_std < 0 or self.max_seq_len_delta < 0:
            raise DataError("bptt_std and max_seq_len_delta must be >= 0")
        if self.limit is not None and self.limit < 2:
            raise DataError(f"limit must be None or >= 2 tokens, got {self.limit}")
        for name in DROPOUTS:
            if not 0 <= getattr(self, name) < 1:
                raise DataError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if self.ar_alpha < 0 or self.tar_beta < 0:
            raise DataError("ar_alpha and tar_beta must be >= 0")

    def dropouts(self) -> dict[str, float]:
        """Keyword arguments of the language model's constructor."""
        return {name: getattr(self, name) for name in DROPOUTS}


register_data_config(TASK, LanguageData)


@dataclass(frozen=True)
class CorpusSource:
    """A corpus name: what it is and whether it is read from ``data_dir``."""

    description: str
    needs_data_dir: bool


CORPUS_SOURCES: dict[str, CorpusSource] = {}


def register_corpus_source(name: str, source: CorpusSource) -> None:
    if name in CORPUS_SOURCES:
        raise ValueError(f"corpus source {name!r} is already registered")
    CORPUS_SOURCES[name] = source


def corpus_source(name: str) -> CorpusSource:
    if name not in CORPUS_SOURCES:
        raise DataError(f"unknown corpus {name!r}; known: {', '.join(sorted(CORPUS_SOURCES))}")
    return CORPUS_SOURCES[name]


register_corpus_source("sample", CorpusSource(
    "a slice of WikiText-2 shipped with the package (CC BY-SA 3.0)", needs_data_dir=False))
register_corpus_source("ptb", CorpusSource(
    "Penn Treebank, Mikolov's preprocessed ptb.{train,valid,test}.txt", needs_data_dir=True))
register_corpus_source("wikitext2", CorpusSource(
    "WikiText-2 (tokenized, wiki.{train,valid,test}.tokens)", needs_data_dir=True))


def open_corpus(cfg: LanguageData) -> Corpus:
    """The configured corpus, its splits cut to ``limit`` tokens; DataError names any problem."""
    source = corpus_source(cfg.name)
    folder = Path(cfg.data_dir).expanduser() if source.needs_data_dir else sample_corpus_dir()
    corpus = Corpus.from_dir(folder)
    if cfg.limit is None:
        return corpus
    return replace(corpus, train=corpus.train[: cfg.limit], valid=corpus.valid[: cfg.limit],
                   test=corpus.test[: cfg.limit])


def corpus_label(cfg: LanguageData) -> str:
    return cfg.name if cfg.data_dir is None else f"{cfg.name} ({cfg.data_dir})"


# ---------------------------------------------------------------- batches and hidden state


class HiddenCarry:
    """The recurrent state between consecutive segments of one stream, always detached."""

    def __init__(self) -> None:
        self.hidden: list[Tensor] | None = None  # None: zeros at the next segment

    def store(self, hidden: Sequence[Tensor]) -> None:
        self.hidden = repackage_hidden(list(hidden))

    def reset(self) -> None:
        self.hidden = None


@dataclass(frozen=True)
class TextBatch:
    """One BPTT segment: inputs, next-token targets, the state entering it and where the state
    leaving it goes."""

    data: Tensor  # [T, B] word ids
    targets: Tensor  # [T * B] the next words
    hidden: list[Tensor]  # [[1, B, nhid]], detached
    carry: HiddenCarry  # the stream's state; the loss stores the segment's final state here

    @property
    def tokens(self) -> int:
        return self.targets.numel()


InitHidden = Callable[[int], list[Tensor]]


def text_batch(source: Tensor, start: int, seq_len: int, carry: HiddenCarry,
               init_hidden: InitHidden) -> TextBatch:
    data, targets = get_batch(source, start, seq_len)
    hidden = carry.hidden if carry.hidden is not None else init_hidden(source.size(1))
    return TextBatch(data, targets, hidden, carry)


def epoch_steps(rows: int, cfg: LanguageData, seed: int, epoch: int) -> tuple[BpttStep, ...]:
    """The BPTT segments of 0-based `epoch` over a source of `rows` rows (AWD-LSTM lengths)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "bptt", epoch))
    return tuple(bptt_lengths(rows, cfg.bptt, generator=generator,
                              p_half=cfg.bptt_half_probability, std=cfg.bptt_std,
                              max_extra=cfg.max_seq_len_delta))


def following_starts(steps: Sequence[BpttStep], rows: int) -> tuple[tuple[int, bool], ...]:
    """(start row, reset state first) of a second stream advancing by the same lengths.

    It wraps to its first row, and so restarts from a zero state, when no target is left.
    """
    starts, cursor = [], 0
    for step in steps:
        reset = cursor > rows - 2
        if reset:
            cursor = 0
        starts.append((cursor, reset))
        cursor += step.seq_len
    return tuple(starts)


# ---------------------------------------------------------------- losses and evaluation


def nll(log_prob: Tensor, targets: Tensor) -> Tensor:
    """Mean negative log-likelihood of log_prob [T, B, ntoken] for targets [T * B]."""
    return F.nll_loss(log_prob.view(-1, log_prob.size(-1)), targets)


def activation_penalty(raw: Tensor, dropped: Tensor, ar_alpha: float, tar_beta: float) -> Tensor:
    """AWD-LSTM's AR (on dropped outputs) + TAR (on raw outputs), outputs [T, B, nhid]."""
    penalty = raw.new_zeros(())
    if ar_alpha:
        penalty = penalty + ar_alpha * dropped.pow(2).mean()
    if tar_beta and raw.size(0) > 1:  # one step has no temporal difference
        penalty = penalty + tar_beta * (raw[1:] - raw[:-1]).pow(2).mean()
    return penalty


def segment_loss(call: Callable[..., Any], batch: TextBatch) -> Tensor:
    """The α loss (and the metric): plain NLL of one segment; stores the state leaving it."""
    log_prob, hidden = call(batch.data, batch.hidden)
    batch.carry.store(hidden)
    return nll(log_prob, batch.targets)


def training_loss(model: nn.Module, batch: TextBatch, cfg: LanguageData) -> LossOutput:
    """The w step's loss on one segment: NLL + AR + TAR; metrics report the raw NLL."""
    log_prob, hidden, raw_outputs, dropped_outputs = model(batch.data, batch.hidden, True)
    batch.carry.store(hidden)
    raw_loss = nll(log_prob, batch.targets)
    loss = raw_loss + activation_penalty(raw_outputs[-1], dropped_outputs[-1], cfg.ar_alpha,
                                         cfg.tar_beta)
    return LossOutput(loss, {"loss": raw_loss.item()}, batch.tokens)


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < _MAX_LOG_PERPLEXITY else math.inf


def evaluate_nll(model: nn.Module, source: Tensor, bptt: int) -> float:
    """Mean NLL per predicted token over a batchified split, in eval mode, carrying the state."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        with torch.no_grad():
            hidden = model.init_hidden(source.size(1))
            for start in range(0, source.size(0) - 1, bptt):
                data, targets = get_batch(source, start, bptt)
                log_prob, hidden = model(data, hidden)
                total += nll(log_prob, targets).item() * targets.numel()
                tokens += targets.numel()
    finally:
        model.train(was_training)
    return total / tokens


def scores(loss: float) -> dict[str, float]:
    return {"loss": loss, "ppl": perplexity(loss)}


# ---------------------------------------------------------------- the search task


def _hidden_state(hidden: list[Tensor] | None) -> list[Tensor] | None:
    return None if hidden is None else [h.detach().cpu() for h in hidden]


@register_task(TASK)
class LanguageTask(Task):
    """Word-level language modelling for the DARTS search (rnn/train_search.py).

    Streams by architect mode: ``bilevel`` reads w batches from train and α batches from
    valid; ``coordinate`` reads both from train followed by valid, the α stream starting half
    way through that text; ``joint`` reads one stream of train followed by valid. The
    end-of-epoch evaluation reads valid at ``eval_batch_size``.
    """

    def __init__(self, cfg: LanguageData, mode: str, seed: int, device: torch.device) -> None:
        corpus = open_corpus(cfg)
        self.cfg = cfg
        self.seed = seed
        self.device = device
        self.vocabulary_size = len(corpus.vocabulary)
        self.corpus_tokens = (corpus.train.numel(), corpus.valid.numel())
        batch = cfg.batch_size
        if mode == "bilevel":
            weights_text, arch_text = corpus.train, corpus.valid
        else:
            weights_text = torch.cat([corpus.train, corpus.valid])
            arch_text = None
            if mode == "coordinate":
                arch_text = torch.roll(weights_text, -(weights_text.numel() // 2))
        self.weights_source = batchify(weights_text, batch).to(device)
        self.arch_source = None if arch_text is None else batchify(arch_text, batch).to(device)
        self.eval_source = batchify(corpus.valid, cfg.eval_batch_size).to(device)
        self.train_carry = HiddenCarry()
        self.arch_carry = HiddenCarry()
        self._init_hidden: InitHidden | None = None
        self._epoch = 0
        self._steps: dict[int, tuple[BpttStep, ...]] = {}

    def space_overrides(self, declared: Mapping[str, int | float]) -> dict[str, int | float]:
        return {"ntoken": self.vocabulary_size} if "ntoken" in declared else {}

    def model_kwargs(self) -> dict[str, Any]:
        return self.cfg.dropouts()

    def bind_model(self, model: nn.Module) -> None:
        self._init_hidden = model.init_hidden

    def _epoch_steps(self, epoch: int) -> tuple[BpttStep, ...]:
        if epoch not in self._steps:
            self._steps = {epoch: epoch_steps(self.weights_source.size(0), self.cfg, self.seed,
                                              epoch)}
        return self._steps[epoch]

    def steps_in_epoch(self, epoch: int) -> int:
        return len(self._epoch_steps(epoch))

    @property
    def steps_per_epoch(self) -> int:
        """Steps of the epoch last read (lengths are random: see `steps_in_epoch`)."""
        return self.steps_in_epoch(self._epoch)

    def batches(self, epoch: int, start_step: int) -> Iterator[StepBatches]:
        if self._init_hidden is None:
            raise RuntimeError("LanguageTask.bind_model(model) must be called before batches()")
        self._epoch = epoch
        steps = self._epoch_steps(epoch)
        arch_starts = (None if self.arch_source is None
                       else following_starts(steps, self.arch_source.size(0)))
        if start_step == 0:
            self.train_carry.reset()
            self.arch_carry.reset()
        for index in range(start_step, len(steps)):
            step = steps[index]
            train = text_batch(self.weights_source, step.start, step.seq_len, self.train_carry,
                               self._init_hidden)
            val = None
            if arch_starts is not None:
                start, reset = arch_starts[index]
                if reset:
                    self.arch_carry.reset()
                val = text_batch(self.arch_source, start, step.seq_len, self.arch_carry,
                                 self._init_hidden)
            yield StepBatches(train=train, val=val, lr_scale=step.seq_len / self.cfg.bptt)

    def loss(self, call: Callable[..., Tensor], batch: TextBatch) -> Tensor:
        return segment_loss(call, batch)

    def loss_and_metrics(self, call: Callable[..., Tensor], batch: TextBatch) -> LossOutput:
        loss = self.loss(call, batch)
        return LossOutput(loss, {"loss": loss.item()}, batch.tokens)

    def train_loss(self, model: nn.Module, batch: TextBatch) -> LossOutput:
        return training_loss(model, batch, self.cfg)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return scores(evaluate_nll(model, self.eval_source, self.cfg.bptt))

    def epoch_metrics(self, means: Mapping[str, float]) -> dict[str, float]:
        return with_perplexity(means)

    def describe(self) -> str:
        train, valid = self.corpus_tokens
        return (f"{corpus_label(self.cfg)}: {self.vocabulary_size} words, {train} tokens "
                f"train w, {valid} tokens train α, batch {self.cfg.batch_size}, "
                f"{self.steps_in_epoch(0)} steps in epoch 1")

    def state_dict(self) -> dict[str, Any]:
        return {"train_hidden": _hidden_state(self.train_carry.hidden),
                "arch_hidden": _hidden_state(self.arch_carry.hidden)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = set(state) - {"train_hidden", "arch_hidden"}
        if unknown:
            raise ValueError(f"unknown task state {sorted(unknown)}")
        for carry, key in ((self.train_carry, "train_hidden"), (self.arch_carry, "arch_hidden")):
            hidden = state.get(key)
            carry.hidden = None if hidden is None else [h.to(self.device) for h in hidden]


def with_perplexity(means: Mapping[str, float]) -> dict[str, float]:
    """Epoch means with ``ppl`` = exp(mean NLL per token) beside ``loss``."""
    out = dict(means)
    if "loss" in out:
        out["ppl"] = perplexity(out["loss"])
    return out


# ---------------------------------------------------------------- NT-ASGD


@dataclass(frozen=True)
class NonMonotoneSwitch:
    """NT-ASGD's trigger (AWD-LSTM main.py, DARTS rnn/train.py): switch from SGD to averaged
    SGD when the latest validation loss is worse than the best of all but the last `nonmono`
    earlier ones (``len(history) > nonmono and loss > min(history[:-nonmono])``)."""

    nonmono: int = 5  # --nonmono 5

    def __post_init__(self) -> None:
        if self.nonmono < 1:
            raise ValueError(f"nonmono must be >= 1, got {self.nonmono}")

    def should_switch(self, history: Sequence[float], loss: float) -> bool:
        """`history`: the validation losses of the earlier SGD epochs, oldest first."""
        return len(history) > self.nonmono and loss > min(history[: -self.nonmono])


def averaged_sgd(params: Any, lr: float, weight_decay: float) -> torch.optim.ASGD:
    """torch.optim.ASGD(t0=0, lambd=0): plain SGD steps, weights averaged from the first step."""
    return torch.optim.ASGD(params, lr=lr, t0=0, lambd=0.0, weight_decay=weight_decay)


def is_averaging(optimizer: torch.optim.Optimizer) -> bool:
    return isinstance(optimizer, torch.optim.ASGD)


@contextmanager
def averaged_weights(model: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Inside the block the model holds ASGD's averages ``ax`` (no-op for other optimisers)."""
    if not is_averaging(optimizer):
        yield
        return
    saved = []
    with torch.no_grad():
        for param in model.parameters():
            average = optimizer.state.get(param, {}).get("ax")
            if average is not None:
                saved.append((param, param.detach().clone()))
                param.copy_(average)
    try:
        yield
    finally:
        with torch.no_grad():
            for param, value in saved:
                param.copy_(value)


# ---------------------------------------------------------------- evaluation training


@dataclass
class BestLoss:
    """The lowest validation loss so far and the epoch (1-based) it was reached."""

    loss: float = math.inf
    epoch: int = 0


@dataclass(frozen=True)
class TrainingText:
    """A corpus laid out for evaluation training (rnn/train.py): train at ``batch_size``,
    valid at ``eval_batch_size``, test at ``test_batch_size``."""

    label: str
    vocabulary_size: int
    train: Tensor  # [rows, batch_size]
    valid: Tensor  # [rows, eval_batch_size]
    test: Tensor  # [rows, test_batch_size]

    @classmethod
    def from_corpus(cls, corpus: Corpus, cfg: LanguageData, device: torch.device) -> TrainingText:
        return cls(corpus_label(cfg), len(corpus.vocabulary),
                   batchify(corpus.train, cfg.batch_size).to(device),
                   batchify(corpus.valid, cfg.eval_batch_size).to(device),
                   batchify(corpus.test, cfg.test_batch_size).to(device))


def _corpus_splits(cfg: Any, seed: int) -> Any:
    raise TypeError("a language model's splits are read by LanguageTrainer, not by loaders")


# Evaluated every epoch: the corpus's valid.txt (test.txt once, at the end).
VALID_SPLIT = EvalSplit("val", _corpus_splits)
# TrainOptimConfig fields of image training that a language model has no use for.
_IMAGE_ONLY = ("auxiliary_weight", "drop_path_prob", "label_smoothing")


@register_trainer(TASK)
class LanguageTrainer(Trainer):
    """`spacec train` for a language model (DARTS rnn/train.py) through spacec.runtime.train.loop's loop.

    An epoch reads train in consecutive BPTT segments of random length, carrying the hidden
    state; each step takes SGD at lr · seq_len / bptt on NLL + AR + TAR with the gradient
    clipped. Then the validation loss (with ASGD's averaged weights once it runs): best.pt
    keeps the epoch with the lowest one, and NT-ASGD may switch the optimiser
    (`NonMonotoneSwitch`). The report adds the test loss of best.pt's weights, averaged when
    ASGD ran (train.py loads its best saved model for the test).
    """

    BEST = BestLoss
    CHECKPOINT_KEYS = (*(key for key in Trainer.CHECKPOINT_KEYS if key != "input_shape"),
                       "text", "nt_asgd")

    @classmethod
    def build(cls, cfg: TrainConfig, genotype: Genotype,
              split: EvalSplit = TEST_SPLIT) -> LanguageTrainer:
        """Open the corpus, compile the space (ntoken from the data), build the network."""
        if split.name != TEST_SPLIT.name:
            raise ConfigError("a language model is evaluated on its corpus's valid split every "
                              "epoch and on test at the end; selection is for image spaces")
        try:
            device = resolve_device(cfg.run.device)
        except ValueError as error:
            raise ConfigError(f"run.device: {error}") from None
        if cfg.run.threads is not None:
            torch.set_num_threads(cfg.run.threads)
        path = locate(cfg.space.name).resolve()
        plain = compile_file(path)
        # A genotype that does not fit the space is reported before any data is read.
        plain.discrete_source(genotype)
        seed_everything(cfg.run.seed)
        corpus = open_corpus(cfg.data)
        from_data = {"ntoken": len(corpus.vocabulary)} if "ntoken" in plain.params else {}
        compiled = compile_file(path, space_overrides(plain.params, cfg, from_data))
        network = compiled.discrete_network(genotype, **cfg.data.dropouts())
        text = TrainingText.from_corpus(corpus, cfg.data, device)
        log.info("%s: %d words; %d, %d, %d tokens train, valid, test", text.label,
                 text.vocabulary_size, corpus.train.numel(), corpus.valid.numel(),
                 corpus.test.numel())
        return cls(cfg, compiled, genotype, network.to(device), text, VALID_SPLIT, device)

    def _attach_data(self, text: TrainingText) -> None:
        self.text = text
        self.carry = HiddenCarry()
        nonmono = self.cfg.optim.nonmono
        self.switch = None if nonmono is None else NonMonotoneSwitch(nonmono)
        self.history: list[float] = []  # validation losses of the SGD epochs
        self.averaging_since = 0  # the epoch after which ASGD took over; 0: not (yet)
        self._steps: dict[int, tuple[BpttStep, ...]] = {}
        ignored = [name for name in _IMAGE_ONLY if getattr(self.cfg.optim, name)]
        if ignored:
            log.warning("optim.%s apply to image training; ignored", ", optim.".join(ignored))

    @property
    def steps_per_epoch(self) -> int:
        """Steps of the epoch in progress (random BPTT lengths vary them)."""
        return len(self._epoch_steps(self.epoch))

    def _epoch_steps(self, epoch: int) -> tuple[BpttStep, ...]:
        if epoch not in self._steps:
            self._steps = {epoch: epoch_steps(self.text.train.size(0), self.cfg.data,
                                              self.cfg.run.seed, epoch)}
        return self._steps[epoch]

    def _start_epoch(self, epoch: int) -> None:
        return None

    def _batches(self, epoch: int) -> Iterator[StepBatches]:
        if self.step == 0:
            self.carry.reset()  # each epoch starts from a zero state, as train.py's train()
        for step in self._epoch_steps(epoch)[self.step:]:
            batch = text_batch(self.text.train, step.start, step.seq_len, self.carry,
                               self.network.init_hidden)
            yield StepBatches(train=batch, val=None, lr_scale=step.seq_len / self.cfg.data.bptt)

    def _step(self, batch: StepBatches, lr: float, where: str) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * batch.lr_scale
        self.optimizer.zero_grad(set_to_none=True)
        out = training_loss(self.network, batch.train, self.cfg.data)
        check_finite(out.metrics["loss"], "the training loss", where)
        out.loss.backward()
        if self.cfg.optim.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.network.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.meter.update(out.metrics, out.weight)

    def evaluate(self) -> dict[str, float]:
        """Validation loss and perplexity, with the averaged weights once ASGD runs."""
        with averaged_weights(self.network, self.optimizer):
            return scores(evaluate_nll(self.network, self.text.valid, self.cfg.data.bptt))

    def _record_extras(self) -> dict[str, Any]:
        return {"train_ppl": perplexity(self.meter.means().get("loss", math.inf)),
                "asgd": is_averaging(self.optimizer)}

    def _update_best(self, scores: Mapping[str, float], epoch: int) -> bool:
        if scores["loss"] >= self.best.loss:
            return False
        self.best = BestLoss(scores["loss"], epoch)
        return True

    def _after_evaluation(self, scores: Mapping[str, float]) -> None:
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

    # -- checkpoints ---------------------------------------------------------------------------

    def _data_state(self) -> dict[str, Any]:
        return {"text": {"hidden": _hidden_state(self.carry.hidden)},
                "nt_asgd": {"history": list(self.history),
                            "averaging_since": self.averaging_since}}

    def load_state_dict(self, state: Mapping[str, Any], where: Path) -> None:
        averaging_since = int(state["nt_asgd"]["averaging_since"])
        if averaging_since and not is_averaging(self.optimizer):
            self.optimizer = self._averaged_sgd()  # so that ASGD's state loads into ASGD
        super().load_state_dict(state, where)
        self.history = [float(loss) for loss in state["nt_asgd"]["history"]]
        self.averaging_since = averaging_since
        hidden = state["text"]["hidden"]
        self.carry.hidden = None if hidden is None else [h.to(self.device) for h in hidden]

    # -- the report ----------------------------------------------------------------------------

    def test_loss(self, run_dir: RunDir) -> float:
        """Test NLL of best.pt's weights (ASGD's averages if it ran), the network unchanged."""
        path = run_dir.path / BEST_NAME
        if not path.is_file():
            return evaluate_nll(self.network, self.text.test, self.cfg.data.bptt)
        best = load_checkpoint(path, CHECKPOINT_KIND, self.CHECKPOINT_KEYS)
        current = {name: value.clone() for name, value in self.network.state_dict().items()}
        try:
            self.network.load_state_dict(best["model"])
            with torch.no_grad():
                for param, average in _averages(self.network, best):
                    param.copy_(average)  # in place: a tied weight changes everywhere
            return evaluate_nll(self.network, self.text.test, self.cfg.data.bptt)
        finally:
            self.network.load_state_dict(current)

    def report(self, run_dir: RunDir) -> dict[str, Any]:
        """Validation (best, last) and test perplexity, parameters and time of the run."""
        records = [r for r in run_dir.read_metrics() if isinstance(r.get("epoch"), int)]
        last = records[-1] if records else {}
        test = self.test_loss(run_dir)
        best = self.best.loss if self.best.epoch else None
        return {
            "run_dir": str(run_dir.path),
            "task": TASK,
            "space": self.compiled.name,
            "space_params": dict(self.compiled.spec.params),
            "genotype": self.genotype.to_dict(),
            "data": self.text.label,
            "split": self.split.name,
            "epochs": self.epoch,
            "best_val_loss": best,
            "best_val_ppl": None if best is None else perplexity(best),
            "best_epoch": self.best.epoch,
            "last_val_loss": last.get("val_loss"),
            "last_val_ppl": last.get("val_ppl"),
            "test_loss": test,
            "test_ppl": perplexity(test),
            "averaged_sgd_from_epoch": self.averaging_since + 1 if self.averaging_since else None,
            "parameters": count_parameters(self.network),
            "wall_seconds": round(self.wall_seconds, 3),
        }

    @staticmethod
    def report_lines(report: Mapping[str, Any]) -> list[str]:
        def ppl(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.2f}"

        averaged = report["averaged_sgd_from_epoch"]
        weights = (f"averaged over epochs {averaged}-{report['best_epoch']}"
                   if averaged and averaged <= report["best_epoch"] else "")
        params = ", ".join(f"{k}={v}" for k, v in report["space_params"].items())
        return [
            f"run directory: {report['run_dir']}",
            f"{report['space']} ({params}) on {report['data']}, {report['epochs']} epochs",
            f"validation perplexity: best {ppl(report['best_val_ppl'])} "
            f"(epoch {report['best_epoch']}), last {ppl(report['last_val_ppl'])}",
            f"test perplexity: {ppl(report['test_ppl'])} (weights of epoch "
            f"{report['best_epoch']}{', ' + weights if weights else ''})",
            f"parameters: {report['parameters']:,}",
            f"wall time: {report['wall_seconds']:.1f} s",
        ]


def _averages(network: nn.Module, state: Mapping[str, Any]) -> Iterator[tuple[Tensor, Tensor]]:
    """(parameter, ASGD average) pairs of a checkpoint whose optimiser was averaging."""
    if not state["nt_asgd"]["averaging_since"]:
        return
    optimizer = state["optimizer"]
    indices = [index for group in optimizer["param_groups"] for index in group["params"]]
    for index, param in zip(indices, network.parameters(), strict=True):
        average = optimizer["state"].get(index, {}).get("ax")
        if average is not None:
            yield param, average
