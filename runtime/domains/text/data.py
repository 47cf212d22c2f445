"""Word-level language modelling: the ``sequence`` domain of the search and training loops.

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
embedding and decoder substituted together (spacec.runtime.nn.state.call_with sets a tied
tensor in each of its places). Three quirks of the reference's rnn/architect.py are
deliberately not reproduced: its unrolled model is rebuilt by
``load_state_dict`` from ``named_parameters()``, which lists the tied weight once as
``encoder.weight``, so the stale ``decoder.weight`` entry of the state dict is loaded last and the
unrolled model keeps the OLD tied embedding; it adds weight decay to v; and it perturbs the
unrolled weights w' instead of w for the finite difference.

Several processes (a `Shard` of N > 1, spacec.runtime.run.distributed): ``batch_size`` is the
global number of columns; each process reads its contiguous 1/N of the columns of every split it
trains on (`training_columns`), so a step reads the same text whatever N is. Evaluation splits are
cut the same way when N divides their columns, their sums then added up; otherwise every process
evaluates every column (`evaluation_columns`). A checkpoint holds the state of every column
(`global_hidden`), so that a run resumes on any number of processes.

Evaluation training (spacec.runtime.train.loop with this task): NT-ASGD (Merity et al. 2018, Sect. 3):
SGD until the validation loss has not improved on the best of all but the last ``nonmono``
evaluations, then `torch.optim.ASGD` with t0=0, lambd=0 (`NonMonotoneSwitch`,
`averaged_sgd`), evaluating with the averaged weights (`averaged_weights`); the test split is
evaluated at the end with the best weights (lowest validation loss).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spacec.runtime.domains.base import LossOutput
from spacec.runtime.domains.image.data import derive_seed
from spacec.runtime.domains.text.corpus import (
    BPTT,
    BPTT_HALF_PROBABILITY,
    BPTT_MAX_EXTRA,
    BPTT_STD,
    BpttStep,
    Corpus,
    bptt_lengths,
    get_batch,
    sample_corpus_dir,
)
from spacec.runtime.errors import DataError
from spacec.runtime.nn.recurrent import repackage_hidden
from spacec.runtime.run.config import MAX_BATCH
from spacec.runtime.run.distributed import Shard

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
            if not 1 <= getattr(self, name) <= MAX_BATCH:
                raise DataError(f"{name} must lie in [1, {MAX_BATCH}], got "
                                f"{getattr(self, name)}")
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


def vocabulary_param(space: Any, vocabulary: int) -> dict[str, int]:
    """The parameter the network's `tokens` setting names (`tokens ntoken`, whatever the name),
    set to the data's vocabulary; none where `tokens` is a number or an expression, which
    `check_vocabulary` then holds to the data."""
    tokens = dict(space.spec.network.settings).get("tokens")
    name = getattr(tokens, "py", "")
    return {name: vocabulary} if name in space.params else {}


def check_vocabulary(space: Any, vocabulary: int, data: str) -> None:
    """A network whose `tokens` the data could not set must have the data's vocabulary: its
    embedding would be indexed past its end, or have rows no word reads."""
    tokens = dict(space.spec.network.settings)["tokens"].value
    if tokens != vocabulary:
        raise DataError(
            f"{space.spec.path}: the network's tokens is {tokens}, and the data ({data}) has "
            f"{vocabulary} words: name a parameter there (`param ntoken = {tokens}` ... "
            f"`tokens ntoken`) for the data to set, or give data of {tokens} words")


def corpus_fingerprint(corpus: Corpus) -> dict[str, Any]:
    """A corpus as a resumed run checks it: its words and each split's tokens, and a digest
    of the training tokens."""
    digest = hashlib.sha256(corpus.train.numpy().tobytes()).hexdigest()
    return {"words": len(corpus.vocabulary), "train": corpus.train.numel(),
            "valid": corpus.valid.numel(), "test": corpus.test.numel(), "train_tokens": digest}


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


def split_label(cfg: LanguageData, *files: str) -> str:
    """``wikitext2 (/data/wt2): train.txt + valid.txt (the first 500 tokens of each, data.limit)``:
    the text a batch layout is made of, for its errors."""
    limit = "" if cfg.limit is None else f" (the first {cfg.limit} tokens of each, data.limit)"
    return f"{corpus_label(cfg)}: {' + '.join(files)}{limit}"


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
    loss, hidden = call(batch.data, batch.hidden, False, batch.targets)
    batch.carry.store(hidden)
    return loss


def training_loss(model: nn.Module, batch: TextBatch, cfg: LanguageData) -> LossOutput:
    """The w step's loss on one segment: NLL + AR + TAR; metrics report the raw NLL."""
    raw_loss, hidden, raw_outputs, dropped_outputs = model(batch.data, batch.hidden, True,
                                                           batch.targets)
    batch.carry.store(hidden)
    loss = raw_loss + activation_penalty(raw_outputs[-1], dropped_outputs[-1], cfg.ar_alpha,
                                         cfg.tar_beta)
    return LossOutput(loss, {"loss": raw_loss.item()}, batch.tokens)


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < _MAX_LOG_PERPLEXITY else math.inf


def training_columns(source: Tensor, shard: Shard, what: str) -> Tensor:
    """This process's columns of a batchified split it trains on (all of them for one process)."""
    shard.per_rank(source.size(1), what)
    return shard.columns(source)


def evaluation_columns(source: Tensor, shard: Shard) -> tuple[Tensor, Shard | None]:
    """This process's columns of a batchified evaluation split and the shard its sums are added
    over; every column (and nothing to add) when the processes do not divide them."""
    if not shard.distributed or source.size(1) % shard.world:
        return source, None
    return shard.columns(source), shard


def global_hidden(hidden: list[Tensor] | None, shard: Shard) -> list[Tensor] | None:
    """A stream's state of every column, from this process's (a collective), on the CPU."""
    if hidden is None:
        return None
    return hidden_state([shard.gather_columns(h) for h in hidden])


def local_hidden(hidden: list[Tensor] | None, shard: Shard, device: torch.device
                 ) -> list[Tensor] | None:
    """This process's columns of a checkpoint's `global_hidden`, on `device`."""
    if hidden is None:
        return None
    return [shard.columns(h).to(device) for h in hidden]


def evaluate_nll(model: nn.Module, source: Tensor, bptt: int, shard: Shard | None = None) -> float:
    """Mean NLL per predicted token over a batchified split, in eval mode, carrying the state.

    With `shard` (`evaluation_columns`), `source` is this process's columns and the mean is
    taken over every process's.
    """
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        with torch.no_grad():
            hidden = model.init_hidden(source.size(1))
            for start in range(0, source.size(0) - 1, bptt):
                data, targets = get_batch(source, start, bptt)
                loss, hidden = model(data, hidden, False, targets)
                total += loss.item() * targets.numel()
                tokens += targets.numel()
    finally:
        model.train(was_training)
    if shard is not None:
        total, tokens = shard.sum([total, tokens])
    return total / tokens


def scores(loss: float) -> dict[str, float]:
    return {"loss": loss, "ppl": perplexity(loss)}


def hidden_state(hidden: list[Tensor] | None) -> list[Tensor] | None:
    return None if hidden is None else [h.detach().cpu() for h in hidden]


def with_perplexity(means: Mapping[str, float]) -> dict[str, float]:
    """Epoch means with ``ppl`` = exp(mean NLL per token) beside ``loss``."""
    out = dict(means)
    if "loss" in out:
        out["ppl"] = perplexity(out["loss"])
    return out
