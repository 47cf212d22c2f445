"""The text domain's search task: DARTS' recurrent search data (rnn/train_search.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from spacec.runtime.domains.base import BatchPlan, LossOutput, SearchTask, StepBatches
from spacec.runtime.domains.text.corpus import SPLIT_FILES, TRAINING_ROWS, BpttStep, batchify
from spacec.runtime.domains.text.data import (
    TASK,
    HiddenCarry,
    InitHidden,
    LanguageData,
    TextBatch,
    check_vocabulary,
    corpus_fingerprint,
    corpus_label,
    epoch_steps,
    evaluate_nll,
    evaluation_columns,
    following_starts,
    global_hidden,
    local_hidden,
    open_corpus,
    scores,
    segment_loss,
    split_label,
    text_batch,
    training_columns,
    training_loss,
    vocabulary_param,
    with_perplexity,
)
from spacec.runtime.run.distributed import Shard


class LanguageSearchTask(SearchTask):
    """Word-level language modelling for the DARTS search (rnn/train_search.py).

    Streams by the strategy's `BatchPlan`: w batches from train and α batches from valid
    (bilevel); or both from train followed by valid, the α stream starting half way through that
    text (coordinate descent); or one stream of train followed by valid (joint). The
    end-of-epoch evaluation reads valid at ``eval_batch_size``. On several processes each reads
    its share of the columns (spacec.runtime.domains.text.data).
    """

    domain = TASK

    def __init__(self, cfg: LanguageData, plan: BatchPlan, seed: int, device: torch.device,
                 shard: Shard | None = None) -> None:
        corpus = open_corpus(cfg)
        self.cfg = cfg
        self.plan = plan
        self.seed = seed
        self.device = device
        self.shard = shard = shard or Shard()
        self.vocabulary_size = len(corpus.vocabulary)
        self.corpus_tokens = (corpus.train.numel(), corpus.valid.numel())
        self.fingerprint = corpus_fingerprint(corpus)
        batch = cfg.batch_size
        train, valid = SPLIT_FILES[:2]
        if not plan.union:
            weights_text, weights_files = corpus.train, (train,)
            arch_text = corpus.valid if plan.arch_stream else None
        else:
            weights_text, weights_files = torch.cat([corpus.train, corpus.valid]), (train, valid)
            arch_text = None
            if plan.arch_stream:
                arch_text = torch.roll(weights_text, -(weights_text.numel() // 2))
        what = "data.batch_size"

        def columns(text: torch.Tensor, *files: str) -> torch.Tensor:
            laid_out = batchify(text, batch, TRAINING_ROWS, split_label(cfg, *files), what)
            return training_columns(laid_out, shard, what).to(device)

        self.weights_source = columns(weights_text, *weights_files)
        self.arch_source = None if arch_text is None else columns(arch_text, *(
            weights_files if plan.union else (valid,)))
        eval_source, self.eval_shard = evaluation_columns(
            batchify(corpus.valid, cfg.eval_batch_size, what=split_label(cfg, valid),
                     setting="data.eval_batch_size"), shard)
        self.eval_source = eval_source.to(device)
        self.train_carry = HiddenCarry()
        self.arch_carry = HiddenCarry()
        self._init_hidden: InitHidden | None = None
        self._steps: dict[int, tuple[BpttStep, ...]] = {}

    def space_params(self, space: Any) -> dict[str, int | float]:
        return vocabulary_param(space, self.vocabulary_size)

    def check_space(self, compiled: Any) -> None:
        check_vocabulary(compiled, self.vocabulary_size, corpus_label(self.cfg))

    def network_kwargs(self) -> dict[str, Any]:
        return self.cfg.dropouts()

    def bind(self, model: nn.Module) -> None:
        self._init_hidden = model.init_hidden

    def _epoch_steps(self, epoch: int) -> tuple[BpttStep, ...]:
        if epoch not in self._steps:
            self._steps = {epoch: epoch_steps(self.weights_source.size(0), self.cfg, self.seed,
                                              epoch)}
        return self._steps[epoch]

    def steps_in_epoch(self, epoch: int) -> int:
        return len(self._epoch_steps(epoch))

    def batches(self, epoch: int, start_step: int) -> Iterator[StepBatches]:
        if self._init_hidden is None:
            raise RuntimeError("LanguageSearchTask.bind(model) must be called before batches()")
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

    def evaluate(self, model: nn.Module, max_batches: int | None = None) -> dict[str, float]:
        source = self.eval_source
        if max_batches is not None:  # the first segments of bptt steps
            source = source[: max_batches * self.cfg.bptt + 1]
        return scores(evaluate_nll(model, source, self.cfg.bptt, self.eval_shard))

    def epoch_metrics(self, means: Mapping[str, float]) -> dict[str, float]:
        return with_perplexity(means)

    def describe(self) -> str:
        train, valid = self.corpus_tokens
        splits = self.plan.splits_text(f"{train} tokens", f"{valid} tokens")
        return (f"{corpus_label(self.cfg)}: {self.vocabulary_size} words, {splits}, batch "
                f"{self.cfg.batch_size}, {self.steps_in_epoch(0)} steps in epoch 1")

    def data_fingerprint(self) -> dict[str, Any]:
        return dict(self.fingerprint)

    def state_dict(self) -> dict[str, Any]:
        """The streams' states of every column (on several processes, a collective)."""
        return {"train_hidden": global_hidden(self.train_carry.hidden, self.shard),
                "arch_hidden": global_hidden(self.arch_carry.hidden, self.shard)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = set(state) - {"train_hidden", "arch_hidden"}
        if unknown:
            raise ValueError(f"unknown task state {sorted(unknown)}")
        for carry, key in ((self.train_carry, "train_hidden"), (self.arch_carry, "arch_hidden")):
            carry.hidden = local_hidden(state.get(key), self.shard, self.device)
