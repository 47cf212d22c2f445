"""The text domain's training task: a derived recurrent cell trained from scratch (rnn/train.py).

An epoch reads train in consecutive BPTT segments of random length, carrying the hidden state
(each epoch starts from a zero state, as train.py's train()); each step takes SGD at
lr · seq_len / bptt on NLL + AR + TAR. Every epoch is evaluated on valid; at the end the training
loop evaluates test with the weights it kept (the lowest validation loss; ASGD's averages once
NT-ASGD switched, spacec.runtime.train.nt_asgd), as train.py tests its best saved model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from spacec.runtime.domains.base import LossOutput, StepBatches, TrainTask
from spacec.runtime.domains.text.corpus import (
    SPLIT_FILES,
    TRAINING_ROWS,
    BpttStep,
    Corpus,
    batchify,
)
from spacec.runtime.domains.text.data import (
    TASK,
    HiddenCarry,
    LanguageData,
    check_vocabulary,
    corpus_fingerprint,
    corpus_label,
    epoch_steps,
    evaluate_nll,
    evaluation_columns,
    global_hidden,
    local_hidden,
    open_corpus,
    scores,
    split_label,
    text_batch,
    training_columns,
    training_loss,
    vocabulary_param,
    with_perplexity,
)
from spacec.runtime.run.distributed import Shard

log = logging.getLogger(__name__)

# TrainOptimConfig fields of image training that a language model has no use for.
IMAGE_ONLY = ("auxiliary_weight", "drop_path_prob", "label_smoothing")


@dataclass(frozen=True)
class TrainingText:
    """A corpus laid out for evaluation training (rnn/train.py): train at ``batch_size``,
    valid at ``eval_batch_size``, test at ``test_batch_size``; on several processes, this
    process's columns of each, and the shards the evaluation splits' sums are added over."""

    label: str
    vocabulary_size: int
    train: Tensor  # [rows, batch_size]
    valid: Tensor  # [rows, eval_batch_size]
    test: Tensor  # [rows, test_batch_size]
    valid_shard: Shard | None = None
    test_shard: Shard | None = None

    @classmethod
    def from_corpus(cls, corpus: Corpus, cfg: LanguageData, device: torch.device,
                    shard: Shard | None = None) -> TrainingText:
        shard = shard or Shard()
        files = dict(zip(("train", "valid", "test"), SPLIT_FILES, strict=True))

        def laid_out(split: str, batch: int, setting: str, rows: int = 2) -> Tensor:
            return batchify(getattr(corpus, split), batch, rows, split_label(cfg, files[split]),
                            setting)

        train = training_columns(laid_out("train", cfg.batch_size, "data.batch_size",
                                          TRAINING_ROWS), shard, "data.batch_size")
        valid, valid_shard = evaluation_columns(
            laid_out("valid", cfg.eval_batch_size, "data.eval_batch_size"), shard)
        test, test_shard = evaluation_columns(
            laid_out("test", cfg.test_batch_size, "data.test_batch_size"), shard)
        return cls(corpus_label(cfg), len(corpus.vocabulary), train.to(device), valid.to(device),
                   test.to(device), valid_shard, test_shard)


class LanguageTrainTask(TrainTask):
    """`spacec train` for a language model (DARTS rnn/train.py)."""

    domain = TASK
    split = "val"  # the corpus's valid.txt every epoch; test.txt once, at the end

    def __init__(self, cfg: LanguageData, optim: Any, split: str, seed: int,
                 device: torch.device, shard: Shard | None = None) -> None:
        self.cfg = cfg
        self.seed = seed
        self.shard = shard or Shard()
        corpus = open_corpus(cfg)
        self.fingerprint = corpus_fingerprint(corpus)
        self.text = TrainingText.from_corpus(corpus, cfg, device, self.shard)
        self.carry = HiddenCarry()
        self._steps: dict[int, tuple[BpttStep, ...]] = {}
        self._init_hidden = None
        log.info("%s: %d words; %d, %d, %d tokens train, valid, test", self.text.label,
                 self.text.vocabulary_size, corpus.train.numel(), corpus.valid.numel(),
                 corpus.test.numel())
        ignored = [name for name in IMAGE_ONLY if getattr(optim, name)]
        if ignored:
            log.warning("optim.%s apply to image training; ignored", ", optim.".join(ignored))

    def space_params(self, space: Any) -> dict[str, int | float]:
        return vocabulary_param(space, self.text.vocabulary_size)

    def check_space(self, compiled: Any) -> None:
        check_vocabulary(compiled, self.text.vocabulary_size, self.text.label)

    def network_kwargs(self) -> dict[str, Any]:
        return self.cfg.dropouts()

    def bind(self, model: nn.Module) -> None:
        self._init_hidden = model.init_hidden

    def _epoch_steps(self, epoch: int) -> tuple[BpttStep, ...]:
        if epoch not in self._steps:
            self._steps = {epoch: epoch_steps(self.text.train.size(0), self.cfg, self.seed, epoch)}
        return self._steps[epoch]

    def steps_in_epoch(self, epoch: int) -> int:
        return len(self._epoch_steps(epoch))

    def batches(self, epoch: int, start_step: int) -> Iterator[StepBatches]:
        if start_step == 0:
            self.carry.reset()  # each epoch starts from a zero state, as train.py's train()
        for step in self._epoch_steps(epoch)[start_step:]:
            batch = text_batch(self.text.train, step.start, step.seq_len, self.carry,
                               self._init_hidden)
            yield StepBatches(train=batch, lr_scale=step.seq_len / self.cfg.bptt)

    def train_loss(self, model: nn.Module, batch: Any) -> LossOutput:
        return training_loss(model, batch, self.cfg)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation loss and perplexity."""
        return scores(evaluate_nll(model, self.text.valid, self.cfg.bptt, self.text.valid_shard))

    def final_scores(self, model: nn.Module) -> dict[str, float]:
        """Test loss and perplexity."""
        return scores(evaluate_nll(model, self.text.test, self.cfg.bptt, self.text.test_shard))

    def epoch_metrics(self, means: Mapping[str, float]) -> dict[str, float]:
        return with_perplexity(means)

    def describe(self) -> str:
        return self.text.label

    def data_record(self) -> dict[str, Any]:
        return {"vocabulary_size": self.text.vocabulary_size}

    def report_fields(self, model: nn.Module) -> dict[str, Any]:
        return {"data": self.text.label}

    def data_fingerprint(self) -> dict[str, Any]:
        return dict(self.fingerprint)

    def state_dict(self) -> dict[str, Any]:
        """The state of every column (on several processes, a collective)."""
        return {"hidden": global_hidden(self.carry.hidden, self.shard)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.carry.hidden = local_hidden(state["hidden"], self.shard, self.text.train.device)


def report_lines(report: Mapping[str, Any]) -> list[str]:
    """A language-model training report as lines for a terminal."""

    def ppl(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    averaged = report.get("averaged_sgd_from_epoch")
    weights = (f"averaged over epochs {averaged}-{report['best_epoch']}"
               if averaged and averaged <= report["best_epoch"] else "")
    params = ", ".join(f"{k}={v}" for k, v in report["space_params"].items())
    return [
        f"run directory: {report['run_dir']}",
        f"{report['space']} ({params}) on {report['data']}, {report['epochs']} epochs",
        f"validation perplexity: best {ppl(report.get('best_val_ppl'))} "
        f"(epoch {report['best_epoch']}), last {ppl(report.get('last_val_ppl'))}",
        f"test perplexity: {ppl(report.get('test_ppl'))} (weights of epoch "
        f"{report['best_epoch']}{', ' + weights if weights else ''})",
        f"parameters: {report['parameters']:,}",
        f"wall time: {report['wall_seconds']:.1f} s",
    ]
