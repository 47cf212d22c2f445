"""Word-level corpus, batching and AWD-LSTM sequence lengths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from spacec.cli import main
from spacec.runtime.domains.image.data import DataError
from spacec.runtime.domains.text.corpus import (
    TRAINING_ROWS,
    BpttStep,
    Corpus,
    Vocabulary,
    batchify,
    bptt_lengths,
    get_batch,
    sample_corpus_dir,
)

PTB = Path("/work/shared/data/ptb")


def write_corpus(folder: Path, train: str, valid: str, test: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("train.txt", train), ("valid.txt", valid), ("test.txt", test)):
        (folder / name).write_text(text, encoding="utf-8")
    return folder


# ---------------------------------------------------------------- corpus


@pytest.mark.skipif(not PTB.is_dir(), reason="Penn Treebank is not available here")
def test_penn_treebank_vocabulary_and_token_counts():
    corpus = Corpus.from_dir(PTB)
    assert len(corpus.vocabulary) == 10_000
    assert "<eos>" in corpus.vocabulary and "<unk>" in corpus.vocabulary
    assert (corpus.train.numel(), corpus.valid.numel(), corpus.test.numel()) == (
        929_589, 73_760, 82_430,
    )
    assert corpus.train.dtype == torch.long


def test_vocabulary_comes_from_training_only_in_first_seen_order(tmp_path: Path):
    folder = write_corpus(tmp_path, "a b\nb c <unk>\n", "a zebra\n", "c\n")
    corpus = Corpus.from_dir(folder)
    assert corpus.vocabulary.words == ("a", "b", "<eos>", "c", "<unk>")
    assert corpus.train.tolist() == [0, 1, 2, 1, 3, 4, 2]
    assert corpus.valid.tolist() == [0, 4, 2]  # zebra -> <unk>
    assert corpus.vocabulary.word(corpus.vocabulary.index("c")) == "c"


def test_vocabulary_lookups_and_distinct_words():
    vocabulary = Vocabulary.from_tokens(["x", "y", "x", "<eos>"])
    assert len(vocabulary) == 3 and vocabulary.index("<eos>") == 2 and vocabulary.word(1) == "y"
    assert "x" in vocabulary and "z" not in vocabulary
    with pytest.raises(ValueError, match="distinct"):
        Vocabulary(("x", "x"))


def test_out_of_vocabulary_word_without_unk_is_an_error(tmp_path: Path):
    folder = write_corpus(tmp_path, "a b\n", "a\nb zebra\n", "a\n")
    with pytest.raises(DataError) as raised:
        Corpus.from_dir(folder)
    message = str(raised.value)
    assert message.endswith(
        "valid.txt:2: token 'zebra' not in the training vocabulary and the corpus has no <unk>"
    )
    assert str(folder / "valid.txt") in message


def test_missing_and_empty_files_name_the_file(tmp_path: Path):
    with pytest.raises(DataError, match="missing directory"):
        Corpus.from_dir(tmp_path / "absent")
    folder = write_corpus(tmp_path / "corpus", "a\n", "a\n", "a\n")
    (folder / "test.txt").unlink()
    with pytest.raises(DataError, match=r"test\.txt: missing file"):
        Corpus.from_dir(folder)
    (folder / "test.txt").write_text("a\n")
    (folder / "valid.txt").write_text("\n  \n")
    with pytest.raises(DataError, match=r"valid\.txt: empty file"):
        Corpus.from_dir(folder)
    (folder / "train.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(DataError, match=r"train\.txt:1:1: not UTF-8 text \(byte 0xff\)"):
        Corpus.from_dir(folder)
    # Where the bad byte is, past the decoder's first chunk (its own offset counts from that).
    (folder / "train.txt").write_bytes(b"a b\n" * 5000 + b"c \xe9t\xe9\n")
    with pytest.raises(DataError, match=r"train\.txt:5001:3: not UTF-8 text \(byte 0xe9\)"):
        Corpus.from_dir(folder)
    # A byte-order mark is no part of the first word.
    (folder / "train.txt").write_bytes(b"\xef\xbb\xbfa b\n")
    (folder / "valid.txt").write_text("a\n")
    assert "a" in Corpus.from_dir(folder).vocabulary


def test_packaged_wikitext_sample_loads_and_carries_its_licence():
    folder = sample_corpus_dir()
    corpus = Corpus.from_dir(folder)
    assert len(corpus.vocabulary) > 1000 and "<unk>" in corpus.vocabulary
    assert corpus.train.numel() > 100_000 and corpus.valid.numel() > 10_000
    assert sum(path.stat().st_size for path in folder.glob("*.txt")) < 1024 * 1024
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert "CC BY-SA 3.0" in readme and "ShareAlike" in readme and "Merity" in readme


# ---------------------------------------------------------------- batching


def test_batchify_lays_contiguous_chunks_in_columns_and_drops_the_remainder():
    batched = batchify(torch.arange(103), 4)
    assert batched.shape == (25, 4)
    for column in range(4):
        assert batched[:, column].tolist() == list(range(25 * column, 25 * column + 25))
    with pytest.raises(DataError, match="too few"):
        batchify(torch.arange(5), 4)


def test_a_training_stream_has_at_least_one_step():
    """Two rows make an epoch of no step (AWD-LSTM's loop stops two rows before the end): a
    training stream needs three, and a search or training run with fewer refuses to start."""
    assert len(list(bptt_lengths(2, 35, seed=0))) == 0
    assert len(list(bptt_lengths(TRAINING_ROWS, 35, seed=0))) == 1
    assert batchify(torch.arange(64), 32).shape == (2, 32)  # enough to evaluate
    with pytest.raises(DataError, match=r"64 tokens are too few for batch size 32: at least 96"):
        batchify(torch.arange(64), 32, TRAINING_ROWS)
    for command in (["search", "darts_rnn"], ["train", "darts_rnn", "--genotype", "DARTS"]):
        result = CliRunner().invoke(main, [*command, "--epochs", "1", "--limit", "64",
                                           "--batch-size", "32", "--threads", "1", "-q"])
        assert result.exit_code == 1 and "at least 96 (3 rows of 32)" in result.output
        # the file and the setting: the message named neither
        assert ("sample: train.txt (the first 64 tokens of each, data.limit): 64 tokens are too "
                "few for data.batch_size 32") in result.output
    result = CliRunner().invoke(main, ["search", "darts_rnn", "--epochs", "1", "--limit", "100",
                                       "--cfg", "data.eval_batch_size=60", "-q"])
    assert result.exit_code == 1 and ("sample: valid.txt (the first 100 tokens of each, "
                                      "data.limit): 100 tokens are too few for "
                                      "data.eval_batch_size 60") in result.output


def test_get_batch_targets_are_the_inputs_shifted_by_one():
    source = batchify(torch.arange(103), 4)
    data, target = get_batch(source, 3, 10)
    assert data.shape == (10, 4) and target.shape == (40,)
    assert torch.equal(target.view(10, 4), source[4:14])
    assert torch.equal(data[1:], target.view(10, 4)[:-1])
    last_data, last_target = get_batch(source, 20, 10)  # only 4 rows have a next row
    assert last_data.shape == (4, 4) and last_target.shape == (16,)
    with pytest.raises(IndexError):
        get_batch(source, 24, 10)


# ---------------------------------------------------------------- AWD-LSTM sequence lengths


def test_bptt_lengths_follow_the_awd_lstm_rule():
    steps = list(bptt_lengths(10_000, seed=0))
    assert steps[0].start == 0
    assert all(b.start == a.start + a.seq_len for a, b in zip(steps, steps[1:], strict=False))
    assert all(5 <= step.seq_len <= 35 + 20 for step in steps)
    assert steps[-1].start < 10_000 - 2 <= steps[-1].start + steps[-1].seq_len
    halved = sum(step.seq_len < 25 for step in steps)  # mean 17.5 with probability 0.05
    assert 0 < halved < 0.2 * len(steps)
    assert [s.seq_len for s in bptt_lengths(200, seed=0, std=0, p_half=0.0)] == [35] * 6
    assert {s.seq_len for s in bptt_lengths(200, seed=0, std=0, p_half=1.0)} == {17}
    assert {s.seq_len for s in bptt_lengths(200, seed=0, std=100, p_half=0.0)} <= set(range(5, 56))


def test_bptt_lengths_are_deterministic_from_the_seed():
    assert list(bptt_lengths(5_000, seed=3)) == list(bptt_lengths(5_000, seed=3))
    assert list(bptt_lengths(5_000, seed=3)) != list(bptt_lengths(5_000, seed=4))
    generator = torch.Generator().manual_seed(3)
    assert list(bptt_lengths(5_000, generator=generator)) == list(bptt_lengths(5_000, seed=3))
    with pytest.raises(ValueError, match="exactly one"):
        bptt_lengths(100)


def test_bptt_lengths_resume_from_a_saved_state():
    uninterrupted = list(bptt_lengths(5_000, seed=11))
    schedule = bptt_lengths(5_000, seed=11)
    head = [next(schedule) for _ in range(10)]
    state = schedule.state_dict()
    resumed = bptt_lengths(5_000, seed=999)  # a different stream, overwritten by the state
    resumed.load_state_dict(state)
    assert head + list(resumed) == uninterrupted
    assert isinstance(uninterrupted[0], BpttStep)
