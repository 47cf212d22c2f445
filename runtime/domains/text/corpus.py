"""Word-level language-model data, AWD-LSTM / DARTS RNN conventions.

A corpus folder holds ``train.txt``, ``valid.txt`` and ``test.txt``; every line is split on
whitespace and ends with an ``<eos>`` token (pytorch/examples ``word_language_model``). The
vocabulary comes from the training file alone; words of the other files that it lacks become
``<unk>`` when the corpus has that token (PTB and WikiText do), and are an error otherwise.

``batchify`` and ``get_batch`` lay the token stream out as AWD-LSTM does, and ``BpttLengths``
draws AWD-LSTM's random sequence lengths from a ``torch.Generator`` whose state, with the
position in the data, can be saved and restored so training is deterministic and resumable.
Nothing is cached on disk.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spacec.files import locate_invalid
from spacec.runtime.domains.image.data import DataError
from spacec.runtime.samples import sample_path

log = logging.getLogger(__name__)

EOS = "<eos>"
UNK = "<unk>"
SPLIT_FILES = ("train.txt", "valid.txt", "test.txt")

# AWD-LSTM (Merity et al. 2018, main.py) and DARTS RNN (train_search.py) defaults.
BPTT = 35  # mean sequence length
BPTT_HALF_PROBABILITY = 0.05  # use bptt / 2 as the mean this often
BPTT_STD = 5  # standard deviation of the sequence length
BPTT_MIN = 5  # no sequence shorter than this
BPTT_MAX_EXTRA = 20  # max_seq_len_delta: no sequence longer than bptt + this


# ---------------------------------------------------------------- vocabulary and corpus


@dataclass(frozen=True)
class Vocabulary:
    """Words in first-seen order; a word's index is its position."""

    words: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {word: position for position, word in enumerate(self.words)}
        if len(index) != len(self.words):
            raise ValueError("vocabulary words must be distinct")
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_tokens(cls, tokens: Iterable[str]) -> Vocabulary:
        return cls(tuple(dict.fromkeys(tokens)))

    @classmethod
    def from_file(cls, path: Path) -> Vocabulary:
        """The vocabulary of one (training) file, ``<eos>`` included."""
        return cls.from_tokens(token for tokens in _read_lines(path) for token in tokens)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def index(self, word: str) -> int:
        return self._index[word]

    def word(self, index: int) -> str:
        return self.words[index]


def _read_lines(path: Path) -> Iterator[list[str]]:
    """Tokens of each line of ``path``, ``<eos>`` appended; DataError if unreadable or empty."""
    if not path.is_file():
        raise DataError(f"{path}: missing file")
    try:
        # Text-mode line iteration, as the reference Corpus: only \n, \r and \r\n end a line.
        # utf-8-sig: a byte-order mark at the start is no part of the first word.
        with path.open(encoding="utf-8-sig") as handle:
            lines = [line.split() for line in handle]
    except UnicodeDecodeError:
        raise DataError(_not_utf8(path)) from None
    if not any(lines):
        raise DataError(f"{path}: empty file (no tokens)")
    for tokens in lines:
        yield [*tokens, EOS]


def _not_utf8(path: Path) -> str:
    """Where the first byte that is not UTF-8 is, as line:column (the decoder's own position
    counts from the start of the chunk it was reading)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        position, _ = locate_invalid(data, error.start, error.end)
        return (f"{path}:{position.line}:{position.column}: not UTF-8 text (byte "
                f"0x{position.byte:02x}); save the file as UTF-8")
    return f"{path}: not UTF-8 text"


def encode_file(path: Path, vocabulary: Vocabulary) -> torch.Tensor:
    """The token ids of ``path`` as a LongTensor; unknown words become ``<unk>`` if it exists."""
    unk = vocabulary.index(UNK) if UNK in vocabulary else None
    ids: list[int] = []
    for line_number, tokens in enumerate(_read_lines(path), start=1):
        for token in tokens:
            if token in vocabulary:
                ids.append(vocabulary.index(token))
            elif unk is not None:
                ids.append(unk)
            else:
                raise DataError(
                    f"{path}:{line_number}: token {token!r} not in the training vocabulary "
                    f"and the corpus has no {UNK}"
                )
    return torch.tensor(ids, dtype=torch.long)


@dataclass(frozen=True)
class Corpus:
    """A tokenised corpus: the training vocabulary and three 1-d LongTensors of token ids."""

    vocabulary: Vocabulary
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor

    @classmethod
    def from_dir(cls, path: str | Path) -> Corpus:
        folder = Path(path)
        if not folder.is_dir():
            raise DataError(f"{folder}: missing directory")
        train_path, valid_path, test_path = (folder / name for name in SPLIT_FILES)
        vocabulary = Vocabulary.from_file(train_path)
        corpus = cls(
            vocabulary=vocabulary,
            train=encode_file(train_path, vocabulary),
            valid=encode_file(valid_path, vocabulary),
            test=encode_file(test_path, vocabulary),
        )
        log.info(
            "%s: %d words, %d/%d/%d tokens", folder, len(vocabulary),
            corpus.train.numel(), corpus.valid.numel(), corpus.test.numel(),
        )
        return corpus


def sample_corpus_dir() -> Path:
    """Folder of the packaged WikiText-2 slice (CC BY-SA 3.0; see its README.md)."""
    try:
        return sample_path("wikitext2")
    except FileNotFoundError as error:
        raise DataError(str(error)) from None


# ---------------------------------------------------------------- batching


# Rows a training stream needs for one step: AWD-LSTM's epoch (``BpttLengths``) ends when fewer
# than two rows remain after the position, so two rows would give an epoch of no step.
TRAINING_ROWS = 3


def batchify(data: torch.Tensor, batch_size: int, min_rows: int = 2, what: str = "the text",
             setting: str = "batch size") -> torch.Tensor:
    """Lay a 1-d token stream out as ``batch_size`` columns: [nbatch, batch_size].

    Column j holds the j-th contiguous chunk; the remainder that does not fill a row is dropped.
    At least `min_rows` rows (an input and its next token: 2; a training stream: TRAINING_ROWS).
    `what` (the file) and `setting` (the batch size's key) name them in the error.
    """
    rows = data.size(0) // batch_size
    if rows < min_rows:
        raise DataError(f"{what}: {data.size(0)} tokens are too few for {setting} {batch_size}: "
                        f"at least {min_rows * batch_size} ({min_rows} rows of {batch_size})")
    return data[: rows * batch_size].view(batch_size, rows).t().contiguous()


def get_batch(source: torch.Tensor, i: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``source[i:i+n]`` [n, bsz] and next-token targets flattened to [n * bsz].

    ``n = min(seq_len, len(source) - 1 - i)``: the last batch is shorter.
    """
    length = min(seq_len, source.size(0) - 1 - i)
    if length < 1:
        raise IndexError(f"position {i} leaves no target in a source of {source.size(0)} rows")
    data = source[i : i + length]
    target = source[i + 1 : i + 1 + length].reshape(-1)
    return data, target


@dataclass(frozen=True)
class BpttStep:
    """One training step: the batch starts at row ``start`` and is ``seq_len`` rows long.

    ``seq_len`` is the drawn length (AWD-LSTM scales the learning rate by ``seq_len / bptt``);
    ``get_batch`` shortens the last batch of an epoch to the rows that remain.
    """

    start: int
    seq_len: int


class BpttLengths:
    """AWD-LSTM's random sequence lengths over one epoch of ``source_len`` rows, resumable.

    Each step draws ``mean = bptt`` (or ``bptt / 2`` with probability ``p_half``), then
    ``seq_len = min(max(5, int(normal(mean, std))), bptt + max_extra)``, and advances the
    position by ``seq_len``; the epoch ends when fewer than two rows remain (as AWD-LSTM's
    ``while i < len - 1 - 1``). ``state_dict``/``load_state_dict`` save and restore the position
    and the generator, so a resumed run draws the same remaining steps.
    """

    def __init__(
        self,
        source_len: int,
        generator: torch.Generator,
        bptt: int = BPTT,
        p_half: float = BPTT_HALF_PROBABILITY,
        std: float = BPTT_STD,
        max_extra: int = BPTT_MAX_EXTRA,
    ) -> None:
        self.source_len = source_len
        self.generator = generator
        self.bptt = bptt
        self.p_half = p_half
        self.std = std
        self.max_extra = max_extra
        self.position = 0

    def __iter__(self) -> BpttLengths:
        return self

    def __next__(self) -> BpttStep:
        if self.position >= self.source_len - 1 - 1:
            raise StopIteration
        mean = self.bptt if self._uniform() >= self.p_half else self.bptt / 2
        drawn = int(mean + self.std * float(torch.randn((), generator=self.generator)))
        seq_len = min(max(BPTT_MIN, drawn), self.bptt + self.max_extra)
        step = BpttStep(self.position, seq_len)
        self.position += seq_len
        return step

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
        self.generator.set_state(state["generator"])


def bptt_lengths(
    source_len: int,
    bptt: int = BPTT,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    p_half: float = BPTT_HALF_PROBABILITY,
    std: float = BPTT_STD,
    max_extra: int = BPTT_MAX_EXTRA,
) -> BpttLengths:
    """``BpttLengths`` drawing from ``generator``, or from a new one seeded with ``seed``."""
    if (seed is None) == (generator is None):
        raise ValueError("pass exactly one of seed and generator")
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    return BpttLengths(source_len, generator, bptt, p_half, std, max_extra)
