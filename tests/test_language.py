"""The sequence task: DARTS' recurrent search and evaluation on word-level text.

spacec.runtime.domains.text through the shared loops (spacec.runtime.search.loop, spacec.runtime.train.loop) and the `spacec search`
/ `spacec train` commands. Models are tiny (embedding = hidden = 8), corpora a few thousand
tokens of the packaged WikiText-2 slice or a toy text; one torch thread.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch.func import functional_call

import spacec
from spacec.arch.derive import derive
from spacec.cli import main
from spacec.cli.search import search_config
from spacec.runtime.domains.text.corpus import BPTT_MIN, batchify
from spacec.runtime.domains.text.data import (
    HiddenCarry,
    LanguageData,
    epoch_steps,
    evaluate_nll,
    following_starts,
    open_corpus,
    text_batch,
    training_loss,
)
from spacec.runtime.domains.text.search import LanguageSearchTask
from spacec.runtime.errors import DataError
from spacec.runtime.nn import state
from spacec.runtime.nn.recurrent import HighwayInit, SharedHighway
from spacec.runtime.run.checkpoint import load_checkpoint
from spacec.runtime.run.rundir import RunDir
from spacec.runtime.search.config import load_config, presets
from spacec.runtime.search.loop import CHECKPOINT_KIND as SEARCH_KIND
from spacec.runtime.search.loop import Search, resume_search, start_search
from spacec.runtime.search.strategy import STRATEGIES
from spacec.runtime.train.config import load_train_config
from spacec.runtime.train.config import presets as train_presets
from spacec.runtime.train.loop import CHECKPOINT_KIND as TRAIN_KIND
from spacec.runtime.train.loop import Trainer, resume_training, start_training
from spacec.runtime.train.nt_asgd import NonMonotoneSwitch, averaged_sgd, averaged_weights

SIZE = 8
NODES = tuple(f"s{index}" for index in range(1, 9))
NO_DROPOUT = {"dropout": 0.0, "dropouth": 0.0, "dropoutx": 0.0, "dropouti": 0.0,
              "dropoute": 0.0}
CPU = torch.device("cpu")
PTB = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"
# A tiny run of either preset: an 8-unit model, 400 tokens per split in 8 columns read in
# segments of 10 ± 5 rows (about 6 steps per epoch).
TINY = {"space.overrides.ninp": SIZE, "space.overrides.nhid": SIZE, "data.limit": 400,
        "data.batch_size": 8, "data.bptt": 10, "optim.epochs": 2, "run.threads": 1,
        "run.log_every": 1000}
TINY_CLI = ("--set", f"ninp={SIZE}", "--set", f"nhid={SIZE}", "--limit", "400", "--batch-size",
            "8", "--cfg", "data.bptt=10", "--epochs", "2", "--threads", "1", "--quiet")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    """Tiny recurrent steps are many small kernels: a second thread only spins."""


def tiny_supernet(ntoken: int = 50, **dropouts: float):
    space = spacec.load("darts_rnn", ntoken=ntoken, ninp=SIZE, nhid=SIZE)
    return space.supernet(**{**NO_DROPOUT, **dropouts})


def tiny_derived(ntoken: int, genotype: str = "DARTS", **dropouts: float):
    space = spacec.load("darts_rnn", ntoken=ntoken, ninp=SIZE, nhid=SIZE)
    return space.discrete_network(genotype, **{**NO_DROPOUT, **dropouts})


def write_corpus(folder: Path, train: str, valid: str | None = None,
                 test: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("train", train), ("valid", valid or train), ("test", test or train)):
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    return folder


# ---------------------------------------------------------------- the models


def test_parameter_counts_are_the_reference_implementations():
    # rnn/train_search.py logs 4,810,000 weights at ntoken 10000, 300/300 (α is not a
    # parameter there); rnn/train.py's DARTS cell at 850/850 is the paper's 23M model.
    search = spacec.load("darts_rnn").supernet()
    assert sum(p.numel() for p in search.weights()) == 4_810_000
    evaluation = spacec.load("darts_rnn", ninp=850, nhid=850).discrete_network("DARTS")
    assert sum(p.numel() for p in evaluation.parameters()) == 22_960_000


def test_supernet_shapes():
    model = tiny_supernet(ntoken=30)
    words = torch.randint(30, (7, 3))
    log_prob, hidden, raw, dropped = model(words, model.init_hidden(3), True)
    assert log_prob.shape == (7, 3, 30)
    assert torch.allclose(log_prob.exp().sum(-1), torch.ones(7, 3))
    assert [h.shape for h in hidden] == [(1, 3, SIZE)]
    assert raw[0].shape == dropped[0].shape == (7, 3, SIZE)
    assert torch.equal(hidden[0][0], raw[0][-1])
    assert model.arch_parameters()["recurrent"].shape == (36, 5)


def test_gradients_reach_alpha_and_every_shared_linear_map():
    torch.manual_seed(0)
    model = tiny_supernet(ntoken=30, dropout=0.5, dropouth=0.25)
    words = torch.randint(30, (6, 4))
    log_prob, _ = model(words, model.init_hidden(4))
    torch.nn.functional.nll_loss(log_prob.view(-1, 30), words.roll(-1, 0).view(-1)).backward()
    alpha = model.arch_parameters()["recurrent"]
    assert alpha.grad is not None and bool((alpha.grad != 0).all())  # every edge, every op
    maps = [m for m in model.modules() if isinstance(m, (HighwayInit, SharedHighway))]
    assert len(maps) == 9  # s0's init map and one map per searched node
    for linear in maps:
        assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0
    assert model.encoder.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("seed", range(5))
def test_k1_derivation_keeps_one_earlier_non_zero_input_per_node(seed):
    model = tiny_supernet()
    generator = torch.Generator().manual_seed(seed)
    alpha = torch.randn(36, 5, generator=generator)
    alpha[:, 0] += 3.0 * (seed % 2)  # in odd seeds 'none' is every edge's strongest op
    with torch.no_grad():
        model.arch_parameters()["recurrent"].copy_(alpha)
    cell = model.genotype().cell("recurrent")
    rule = model.RULES["recurrent"]
    order = ("s0", *NODES)
    assert cell.output == NODES and cell.reduce == "mean"
    weights = alpha.softmax(-1)
    for node in NODES:
        ((op, source),) = cell.inputs_of(node)
        assert op != "none" and order.index(source) < order.index(node)
        rows = [i for i, (_, dst) in enumerate(rule.edges) if dst == node]
        strength = {rule.edges[i][0]: weights[i, 1:].max().item() for i in rows}
        assert source == max(strength, key=strength.get)
        (row,) = [i for i in rows if rule.edges[i][0] == source]
        assert op == rule.ops[1 + int(weights[row, 1:].argmax())]
    assert derive("darts_rnn", {"recurrent": alpha.tolist()}, model.RULES) == model.genotype()


def test_the_unrolled_model_substitutes_the_tied_embedding_and_decoder_together():
    # The reference's unrolled RNN keeps the old decoder copy of the tied weight; the
    # architect's functional call must not (as torch.func.functional_call does not): with a zero
    # embedding every word is equally likely.
    model = tiny_supernet(ntoken=30).eval()
    names = [name for name, _ in model.named_parameters()]
    assert "encoder.weight" in names and "decoder.weight" not in names  # listed once
    words = torch.randint(30, (4, 2))
    zero = torch.zeros_like(model.encoder.weight)
    uniform = torch.full((4, 2, 30), -math.log(30))
    log_prob, _ = functional_call(model, {"encoder.weight": zero}, (words, model.init_hidden(2)))
    assert torch.allclose(log_prob, uniform)
    log_prob, _ = state.call_with(model, {"encoder.weight": zero}, words, model.init_hidden(2))
    assert torch.allclose(log_prob, uniform)
    assert model.decoder.weight is model.encoder.weight and model.encoder.weight.abs().sum() > 0


# ---------------------------------------------------------------- data


def test_sample_corpus_and_limit():
    corpus = open_corpus(LanguageData(limit=500))
    assert corpus.train.numel() == corpus.valid.numel() == corpus.test.numel() == 500
    assert "<unk>" in corpus.vocabulary and "<eos>" in corpus.vocabulary


@pytest.mark.parametrize(("files", "message"), [
    ({"train": "a b\n", "valid": "a c\n", "test": "a\n"}, "token 'c' not in the training"),
    ({"train": "", "valid": "a\n", "test": "a\n"}, "empty file"),
    ({"train": "a b\n", "valid": "a\n"}, "missing file"),
])
def test_bad_corpora_are_data_errors(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / f"{name}.txt").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        open_corpus(LanguageData(name="ptb", data_dir=str(tmp_path)))


def test_unknown_words_become_unk_when_the_corpus_has_it(tmp_path):
    write_corpus(tmp_path, "a <unk> b\n", valid="a zebra\n")
    corpus = open_corpus(LanguageData(name="wikitext2", data_dir=str(tmp_path)))
    assert corpus.valid.tolist() == [corpus.vocabulary.index(w) for w in ("a", "<unk>", "<eos>")]


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": "ptb"}, "needs data_dir"),
    ({"name": "sample", "data_dir": "x"}, "ships with the package"),
    ({"name": "penn"}, "unknown corpus 'penn'; known: ptb, sample, wikitext2"),
    ({"batch_size": 0}, "batch_size must lie in \\[1, 2147483647\\]"),
    ({"dropoute": 1.0}, "dropoute must lie in"),
])
def test_bad_data_configs(fields, message):
    with pytest.raises(DataError, match=message):
        LanguageData(**fields)


def test_missing_directory_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="missing directory"):
        open_corpus(LanguageData(name="ptb", data_dir=str(tmp_path / "nope")))


# ---------------------------------------------------------------- BPTT segments and hidden state


def test_epoch_lengths_are_awd_lstm_draws_and_a_pure_function_of_seed_and_epoch():
    cfg = LanguageData()
    steps = epoch_steps(4000, cfg, seed=3, epoch=1)
    assert steps == epoch_steps(4000, cfg, seed=3, epoch=1)
    assert steps != epoch_steps(4000, cfg, seed=3, epoch=2)
    lengths = [s.seq_len for s in steps]
    assert all(BPTT_MIN <= n <= 35 + 20 for n in lengths) and len(set(lengths)) > 5
    assert [s.start for s in steps] == [sum(lengths[:i]) for i in range(len(steps))]
    assert steps[-1].start < 4000 - 2 <= steps[-1].start + steps[-1].seq_len
    fixed = epoch_steps(4000, LanguageData(bptt_std=0, bptt_half_probability=0), 3, 1)
    assert {s.seq_len for s in fixed} == {35}


def test_the_alpha_stream_wraps_to_its_start_with_a_fresh_state():
    steps = epoch_steps(400, LanguageData(bptt_std=0, bptt_half_probability=0), 0, 0)
    # 80 rows: the segment at row 70 is cut to the 9 rows that have a target, then it wraps.
    assert following_starts(steps[:5], 80) == ((0, False), (35, False), (70, False), (0, True),
                                               (35, False))


def sample_task(mode: str = "bilevel", **fields) -> LanguageSearchTask:
    cfg = LanguageData(**{"batch_size": 4, "limit": 800, "bptt": 10, **fields})
    return LanguageSearchTask(cfg, STRATEGIES[mode].builder.plan, seed=0, device=CPU)


def test_the_hidden_state_is_carried_across_segments_and_detached():
    task = sample_task()
    model = tiny_supernet(ntoken=task.vocabulary_size).eval()
    task.bind(model)
    steps = iter(task.batches(0, 0))
    first = next(steps)
    assert first.lr_scale == first.train.data.shape[0] / 10
    for batch in (first.train, first.val):
        assert torch.equal(batch.hidden[0], torch.zeros(1, 4, SIZE))
    task.loss(model, first.val)  # the α step
    task.train_loss(model, first.train)  # the w step
    second = next(steps)
    for old, new, source in ((first.train, second.train, task.weights_source),
                             (first.val, second.val, task.arch_source)):
        state = new.hidden[0]
        assert not state.requires_grad and state.grad_fn is None
        with torch.no_grad():  # the state leaving `old` is the one entering `new`
            _, expected = model(old.data, old.hidden)
        assert torch.allclose(state, expected[0]) and state.abs().sum() > 0
        assert torch.equal(new.data[0], source[old.data.shape[0]])  # the next rows
    assert not torch.equal(second.train.hidden[0], second.val.hidden[0])  # separate streams
    restarted = next(iter(task.batches(1, 0)))
    assert torch.equal(restarted.train.hidden[0], torch.zeros(1, 4, SIZE))


def test_the_task_resumes_mid_epoch_with_its_states():
    task = sample_task()
    model = tiny_supernet(ntoken=task.vocabulary_size).eval()
    task.bind(model)
    for index, step in enumerate(task.batches(0, 0)):
        task.loss(model, step.val)
        task.train_loss(model, step.train)
        if index == 2:
            state = task.state_dict()
            expected = next(iter(task.batches(0, 3)))
            break
    other = sample_task()
    other.bind(model)
    other.load_state_dict(state)
    resumed = next(iter(other.batches(0, 3)))
    for a, b in ((expected.train, resumed.train), (expected.val, resumed.val)):
        assert torch.equal(a.data, b.data) and torch.equal(a.hidden[0], b.hidden[0])


@pytest.mark.parametrize("mode", ["coordinate", "joint"])
def test_ablation_modes_read_train_and_valid(mode):
    task = sample_task(mode)
    assert task.weights_source.numel() == 4 * (1600 // 4)
    assert (task.arch_source is None) == (mode == "joint")
    if mode == "coordinate":
        assert not torch.equal(task.arch_source[0], task.weights_source[0])


# ---------------------------------------------------------------- training


def test_perplexity_on_a_two_word_corpus_goes_down(tmp_path):
    # "a b a b ...": after "a" always "b" and back; a model that learns it nears perplexity 1.
    torch.manual_seed(0)
    folder = write_corpus(tmp_path, "a b " * 400 + "\n")
    cfg = LanguageData(name="ptb", data_dir=str(folder), batch_size=4, bptt=8, eval_batch_size=2)
    corpus = open_corpus(cfg)
    model = tiny_derived(len(corpus.vocabulary))
    train, valid = batchify(corpus.train, 4), batchify(corpus.valid, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=20.0)  # the paper's lr and clip
    carry = HiddenCarry()
    perplexities = [math.exp(evaluate_nll(model, valid, 8))]
    for epoch in range(2):
        carry.reset()
        for step in epoch_steps(train.size(0), cfg, seed=0, epoch=epoch):
            batch = text_batch(train, step.start, step.seq_len, carry, model.init_hidden)
            optimizer.zero_grad()
            training_loss(model, batch, cfg).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            optimizer.step()
        perplexities.append(math.exp(evaluate_nll(model, valid, 8)))
    assert perplexities[0] > 2.5  # about the vocabulary size (3) at initialisation
    assert perplexities[-1] < 1.2 and perplexities[-1] < perplexities[0]


# ---------------------------------------------------------------- NT-ASGD


def test_the_nt_asgd_trigger_is_train_py_s():
    switch = NonMonotoneSwitch(nonmono=2)
    assert not switch.should_switch([5.0, 4.0], 6.0)  # needs more than nonmono losses
    assert not switch.should_switch([5.0, 4.0, 3.0], 4.5)  # better than min([5.0])
    assert switch.should_switch([5.0, 4.0, 3.0], 5.5)
    assert switch.should_switch([5.0, 4.0, 3.0, 2.0], 4.5)  # min([5.0, 4.0]) = 4.0


def test_averaged_weights_are_the_mean_of_the_asgd_iterates():
    weight = torch.nn.Parameter(torch.zeros(3))
    model = torch.nn.Module()
    model.weight = weight
    optimizer = averaged_sgd(model.parameters(), lr=0.5, weight_decay=0.0)
    iterates = []
    for step in range(4):
        optimizer.zero_grad()
        (weight * torch.tensor([1.0, 2.0, 3.0]) * (step + 1)).sum().backward()
        optimizer.step()
        iterates.append(weight.detach().clone())
    # torch's ASGD: ax copies the first two iterates, then averages from the second on.
    expected = torch.stack(iterates[1:]).mean(0)
    current = weight.detach().clone()
    with averaged_weights(model, optimizer):
        assert torch.allclose(weight, expected)
    assert torch.equal(weight, current)
    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    with averaged_weights(model, plain):
        assert torch.equal(weight, current)


# ---------------------------------------------------------------- presets


def test_a_sequence_space_reads_the_rnn_presets():
    assert {"rnn_quick", "rnn_paper"} <= set(presets())
    assert {"rnn_quick", "rnn_paper"} <= set(train_presets())
    quick = search_config("darts_rnn", "quick", (), (), {})
    assert quick.task == "sequence" and quick.space.name == "darts_rnn"
    assert search_config(None, "quick", (), (), {}).task == "image"
    assert search_config("darts_cnn", "paper", (), (), {}).task == "image"


def test_the_paper_search_preset_is_train_search_py():
    cfg = search_config("darts_rnn", "paper", (), (), {})
    data, optim, arch = cfg.data, cfg.optim, cfg.arch
    assert cfg.space.overrides == {}  # the space's 300 / 300
    assert (data.batch_size, data.eval_batch_size, data.bptt) == (256, 10, 35)
    assert (data.bptt_half_probability, data.bptt_std, data.max_seq_len_delta) == (0.05, 5, 20)
    assert data.dropouts() == {"dropout": 0.75, "dropouth": 0.25, "dropoutx": 0.75,
                               "dropouti": 0.2, "dropoute": 0.0}
    assert (data.ar_alpha, data.tar_beta) == (0.0, 1e-3)
    assert (optim.epochs, optim.lr, optim.momentum, optim.weight_decay, optim.grad_clip,
            optim.schedule) == (50, 20.0, 0.0, 5e-7, 0.25, "constant")
    assert (arch.order, arch.mode, arch.lr, arch.betas, arch.weight_decay,
            arch.unrolled_clip) == (2, "bilevel", 3e-3, (0.9, 0.999), 1e-3, 0.25)
    assert cfg.run.seed == 2


def test_the_paper_training_preset_is_train_py():
    cfg = load_train_config("rnn_paper")
    data, optim = cfg.data, cfg.optim
    assert cfg.task == "sequence" and cfg.space.optional_overrides == {"ninp": 850, "nhid": 850}
    assert (data.batch_size, data.eval_batch_size, data.test_batch_size) == (64, 10, 1)
    assert data.dropouts() == {"dropout": 0.75, "dropouth": 0.25, "dropoutx": 0.75,
                               "dropouti": 0.2, "dropoute": 0.0}  # train.py's --dropoute 0
    assert (optim.lr, optim.momentum, optim.weight_decay, optim.grad_clip, optim.schedule,
            optim.nonmono) == (20.0, 0.0, 8e-7, 0.25, "constant", 5)
    assert cfg.run.seed == 1267


# ---------------------------------------------------------------- the search loop


def tiny_search(tmp_path: Path, **extra):
    return load_config("rnn_quick", {**TINY, "run.out": str(tmp_path / "runs"), **extra})


class Killed(Exception):
    """Stands in for the process dying."""


@pytest.mark.slow
def test_a_killed_search_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    # Resuming restores the hidden states of both streams mid-epoch, and the BPTT lengths.
    whole = start_search(tiny_search(tmp_path / "a", **{"run.checkpoint_every": 2}))
    real_step = Search._step

    def dies_in_epoch_2(self, batches, lr, where):
        if self.epoch == 1 and self.step == 3:  # a checkpoint was written at step 1 or 2
            raise Killed
        real_step(self, batches, lr, where)

    monkeypatch.setattr(Search, "_step", dies_in_epoch_2)
    with pytest.raises(Killed):
        start_search(tiny_search(tmp_path / "b", **{"run.checkpoint_every": 2}))
    monkeypatch.setattr(Search, "_step", real_step)
    (killed,) = (tmp_path / "b" / "runs").iterdir()
    state = load_checkpoint(killed / "checkpoint.pt", SEARCH_KIND)
    assert state["epoch"] == 1 and state["step"] > 0
    assert state["task"]["train_hidden"][0].shape == (1, 8, SIZE)
    resumed = resume_search(killed)
    assert resumed.genotype == whole.genotype
    for epoch in (1, 2):
        assert (RunDir(killed).alphas_path(epoch).read_text()
                == RunDir(whole.run_dir).alphas_path(epoch).read_text())


@pytest.mark.slow
def test_cli_search_on_the_embedded_sample_writes_a_run_directory_and_resumes(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["search", "darts_rnn", *TINY_CLI, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    assert run.name.startswith("darts_rnn-") and result.stdout.startswith("space darts_rnn\n")
    assert {"alphas", "checkpoint.pt", "config.yaml", "genotype.json", "metrics.jsonl",
            "space.json"} <= {p.name for p in run.iterdir()}
    assert RunDir(run).alpha_epochs() == [0, 1, 2]
    alphas = json.loads(RunDir(run).alphas_path(2).read_text())
    assert set(alphas) == {"recurrent"} and len(alphas["recurrent"]) == 36
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        assert record["val_ppl"] == pytest.approx(math.exp(record["val_loss"]))
        assert record["train_ppl"] == pytest.approx(math.exp(record["train_loss"]))
        assert record["lr"] == 20.0 and "arch_val_loss" in record
    assert json.loads((run / "space.json").read_text())["params"]["ntoken"] > 1000
    derived = runner.invoke(main, ["derive", str(run)])
    assert derived.exit_code == 0 and derived.output.strip() in result.output
    resumed = runner.invoke(main, ["search", "--resume", str(run), "--quiet"])
    assert resumed.exit_code == 0 and resumed.stdout == result.stdout


@pytest.mark.parametrize(("extra", "message"), [
    (["--data", "ptb"], "needs data_dir"),
    (["--data", "ptb", "--data-dir", "/nonexistent/penn"], "missing directory"),
    (["--data", "penn"], "unknown corpus 'penn'"),
])
def test_cli_data_problems_exit_1_without_a_traceback(tmp_path, extra, message):
    result = CliRunner().invoke(main, ["search", "darts_rnn", "--out", str(tmp_path), *extra])
    assert result.exit_code == 1, result.output
    assert "spacec: error:" in result.output and message in result.output
    assert "Traceback" not in result.output and not any(tmp_path.iterdir())


@pytest.mark.parametrize("memory", ["balanced", "low"])
def test_cli_a_recomputing_memory_setting_is_refused_not_ignored(tmp_path, memory):
    # It recomputes image cells' mixed edges; a recurrent supernet has none.
    result = CliRunner().invoke(main, ["search", "darts_rnn", *TINY_CLI, "--memory", memory,
                                       "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert f"run.memory: memory setting '{memory}' recomputes the mixed edges" in result.output
    assert "Traceback" not in result.output and not any(tmp_path.iterdir())


def test_cli_training_refuses_a_recomputing_memory_setting(tmp_path):
    result = CliRunner().invoke(main, ["train", "darts_rnn", "--genotype", "DARTS", *TINY_CLI,
                                       "--cfg", "run.memory=low", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "run.memory: memory setting 'low' recomputes the mixed edges" in result.output
    assert "Traceback" not in result.output and not any(tmp_path.iterdir())


def test_cli_an_empty_training_file_exits_1(tmp_path):
    folder = write_corpus(tmp_path / "corpus", "a b\n")
    (folder / "train.txt").write_text("\n\n")
    result = CliRunner().invoke(main, ["train", "darts_rnn", "--genotype", "DARTS", "--data",
                                       "wikitext2", "--data-dir", str(folder)])
    assert result.exit_code == 1 and "empty file" in result.output


@pytest.mark.slow
@pytest.mark.skipif(not PTB.is_dir(), reason="the shared PTB copy is not here")
def test_ptb_gives_the_reference_vocabulary_and_the_papers_models():
    plan = STRATEGIES["bilevel"].builder.plan
    task = LanguageSearchTask(LanguageData(name="ptb", data_dir=str(PTB)), plan, 0, CPU)
    assert task.vocabulary_size == 10_000
    assert task.space_params(spacec.load("darts_rnn")) == {"ntoken": 10_000}
    cfg = load_train_config("rnn_paper", {"data.name": "ptb", "data.data_dir": str(PTB)})
    trainer = Trainer.build(cfg, resolve_darts())
    assert sum(p.numel() for p in trainer.network.parameters()) == 22_960_000
    assert trainer.task.text.train.shape == (929_589 // 64, 64)


# ---------------------------------------------------------------- the training loop


def tiny_training(tmp_path: Path, **extra):
    return load_train_config("rnn_quick", {**TINY, "run.out": str(tmp_path / "runs"), **extra})


def test_cli_train_darts_reports_perplexity(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["train", "darts_rnn", "--genotype", "DARTS", *TINY_CLI,
                                  "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    assert "validation perplexity: best" in result.output
    assert "test perplexity:" in result.output
    report = json.loads((run / "report.json").read_text())
    assert report["task"] == "sequence" and report["epochs"] == 2
    assert report["test_ppl"] == pytest.approx(math.exp(report["test_loss"]))
    assert 1 < report["test_ppl"] < 1.5 * report["space_params"]["ntoken"]
    genotype = json.loads((run / "genotype.json").read_text())
    assert genotype == resolve_darts().to_dict()  # DARTS means the paper's PTB cell here
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["asgd"] for r in records] == [False, False]
    resumed = runner.invoke(main, ["train", "--resume", str(run), "--quiet"])
    assert resumed.exit_code == 0 and resumed.stdout == result.stdout


def resolve_darts():
    from spacec.arch.genotype import resolve

    return resolve("DARTS", "darts_rnn")


@pytest.mark.slow
def test_nt_asgd_switches_and_a_killed_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    # nonmono 1 with a trigger that fires after the second epoch: epoch 3 runs ASGD.
    monkeypatch.setattr(NonMonotoneSwitch, "should_switch",
                        lambda self, history, loss: len(history) == 1)
    extra = {"optim.epochs": 3, "optim.nonmono": 1, "run.checkpoint_every": 2}
    whole = start_training(tiny_training(tmp_path / "a", **extra), "DARTS")
    records = RunDir(whole.run_dir).read_metrics()
    assert [r["asgd"] for r in records] == [False, False, True]
    assert whole.report["averaged_sgd_from_epoch"] == 3
    state = load_checkpoint(whole.run_dir / "checkpoint.pt", TRAIN_KIND)
    assert "ax" in next(iter(state["optimizer"]["state"].values()))

    real_step = Trainer._step

    def dies_in_epoch_3(self, batch, lr, where):
        if self.epoch == 2 and self.step == 3:  # a checkpoint was written at step 1 or 2
            raise Killed
        real_step(self, batch, lr, where)

    monkeypatch.setattr(Trainer, "_step", dies_in_epoch_3)
    with pytest.raises(Killed):
        start_training(tiny_training(tmp_path / "b", **extra), "DARTS")
    monkeypatch.setattr(Trainer, "_step", real_step)
    (killed,) = (tmp_path / "b" / "runs").iterdir()
    assert load_checkpoint(killed / "checkpoint.pt", TRAIN_KIND)["nt_asgd"]["averaging_since"]
    resumed = resume_training(killed)
    assert RunDir(killed).read_metrics()[-1]["val_loss"] == records[-1]["val_loss"]
    assert resumed.report["test_loss"] == whole.report["test_loss"]


def test_the_data_sets_the_parameter_tokens_names_and_a_written_size_must_match(tmp_path):
    """`tokens` may name any parameter (the data sets it) or be written as a number (the data
    must have that many words): never an embedding smaller than the vocabulary."""
    text = spacec.shipped_spaces()["darts_rnn"].read_text(encoding="utf-8")
    renamed = tmp_path / "renamed.space"
    renamed.write_text(re.sub(r"\bntoken\b", "vocab", text))
    written = tmp_path / "written.space"
    written.write_text(re.sub(r"tokens\s+ntoken", "tokens 500", text))
    corpus = write_corpus(tmp_path / "corpus", " ".join(f"w{i % 40}" for i in range(400)))
    args = ["--data", "wikitext2", "--data-dir", str(corpus), "--set", "ninp=8", "--set",
            "nhid=8", "--epochs", "1", "--batch-size", "4", "--threads", "1", "-q"]
    result = CliRunner().invoke(main, ["search", str(renamed), *args, "--out",
                                       str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "vocab=41 (the data)" in result.output  # 40 words and the end of line
    refused = CliRunner().invoke(main, ["search", str(written), *args, "--out",
                                        str(tmp_path / "refused")])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "the network's tokens is 500, and the data" in refused.output
    assert "has 41 words" in refused.output and not (tmp_path / "refused").exists()


def test_a_search_resumed_on_changed_text_is_refused(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", " ".join(f"w{i % 40}" for i in range(400)))
    args = ["--data", "wikitext2", "--data-dir", str(corpus), "--set", "ninp=8", "--set",
            "nhid=8", "--epochs", "1", "--batch-size", "4", "--threads", "1", "-q"]
    result = CliRunner().invoke(main, ["search", "darts_rnn", *args, "--out",
                                       str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    (corpus / "train.txt").write_text(" ".join(f"w{(i // 2) % 40}" for i in range(400)))
    refused = CliRunner().invoke(main, ["search", "--resume", str(run), "-q"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "the data changed since the checkpoint was written (the train split's text)" \
        in refused.output
