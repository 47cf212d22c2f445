"""A long fuzz run of the whole compiler: every input compiles or is a clean error, nothing else.

The inputs are those of tests/test_fuzz.py, drawn with a seeded `random.Random` instead of
hypothesis so that 10^5 of them run in one process: arbitrary text, arbitrary bytes, soups of the
language's tokens, and valid spaces (the shipped ones, and two that write out, or leave out,
every optional statement) mutated token by token or line by line. Each input goes through
`spacec.load` (parse, check with imports, IR and lint) and code generation; each one that
compiles also derives a genotype from random α and generates its derived network, and every
`--supernet-every`-th one builds its supernet at tiny sizes and runs a forward pass.

Outcomes: "compiled" or "rejected" (a SpaceError, or for a genotype a GenotypeError or
DerivationError, i.e. a message); anything else is a failure, saved with its traceback under
--out.

    python benchmarks/fuzz.py --inputs 100000                    # hours on 2 shared cores
    python benchmarks/fuzz.py --inputs 2000 --supernet-every 5   # a quick look
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import spacec  # noqa: E402
from spacec.arch.derive import DerivationError, derive  # noqa: E402
from spacec.arch.genotype import GenotypeError  # noqa: E402
from spacec.errors import SpaceError  # noqa: E402

TOKEN = re.compile(r'[A-Za-z_]\w*|\d+(?:\.\d*)?|//|>>|->|<=|"[^"\n]*"|#[^\n]*|\n|\S')
KEYWORDS = ["space", "method", "import", "from", "param", "ops", "cell", "extends", "inputs",
            "nodes", "edges", "dense", "edge", "fixed", "combine", "output", "derive", "limit",
            "stride", "share", "per", "node", "search_norm", "network", "body", "with", "at",
            ]  # fmt: skip
PUNCTUATION = ["{", "}", "(", ")", "[", "]", ",", "=", ":", "*", "+", "-", "//", ">>", "->", "<="]
NAMES = ["a", "x", "n0", "n9", "s0", "h_prev", "normal", "reduce", "C", "layers", "N", "none",
         "o", "darts_ops", "sum", "concat", "mean", "topk", "argmax", "zero", "identity",
         "sep_conv", "res_block", "classifier", "inputs", "edges", "class", "None", "self",
         "torch", "weights", "RULES", "Network", "__import__", "in_channels", "image_size",
         "preprocess", "reduce_input", "auxiliary", "activation", "highway", "gdas", "pc_darts",
         "k"]  # fmt: skip
NUMBERS = ["0", "1", "2", "3", "4", "7", "12", "-1", "2.5", "1e3", "99999999999999999999"]
TINY = {"C": 2, "layers": 2, "N": 1, "ntoken": 12, "ninp": 4, "nhid": 4, "classes": 3}


def seeds() -> list[str]:
    shipped = spacec.shipped_spaces()
    texts = [path.read_text(encoding="utf-8") for path in shipped.values()]
    # A space naming its search method (no shipped space does).
    texts.append("method pc_darts(k=2, warmup_epochs=0)\n" +
                 shipped["nas_bench_201"].read_text(encoding="utf-8"))
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import test_optional  # the spaces of the optional-statement tests

        texts += [test_optional.IMAGE, test_optional.SEQUENCE, test_optional.IMAGE_MINIMAL,
                  test_optional.SEQUENCE_MINIMAL]  # fmt: skip
    except ImportError:
        pass
    return texts


# ---- inputs ------------------------------------------------------------------------------------
def arbitrary_text(rng: random.Random, _seeds) -> str:
    alphabet = "abcxyz019_ .,:;=(){}[]<>-+*/#\"'\n\t\r\x00\x1b\u202e\u00e9\u4e2d\U0001f600"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))


def arbitrary_bytes(rng: random.Random, _seeds) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))


def token_soup(rng: random.Random, _seeds) -> str:
    vocabulary = KEYWORDS + PUNCTUATION + NUMBERS + NAMES + ["\n", '"x.space"']
    return " ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 80)))


def mutated(rng: random.Random, texts: list[str]) -> str:
    tokens = TOKEN.findall(rng.choice(texts))
    for _ in range(rng.randint(1, 4)):
        tokens = mutate(rng, tokens)
    return " ".join(tokens).replace(" \n ", "\n")


def mutate(rng: random.Random, tokens: list[str]) -> list[str]:
    if not tokens:
        return [rng.choice(KEYWORDS + NAMES)]
    i, j = rng.randrange(len(tokens)), rng.randrange(len(tokens))
    kind = rng.randrange(8)
    if kind == 0:  # delete
        return tokens[:i] + tokens[i + 1 :]
    if kind == 1:  # duplicate
        return tokens[: i + 1] + tokens[i:]
    if kind == 2:  # swap
        tokens = list(tokens)
        tokens[i], tokens[j] = tokens[j], tokens[i]
        return tokens
    if kind == 3:  # a number changed
        numbers = [n for n, t in enumerate(tokens) if t[:1].isdigit()]
        if numbers:
            k = rng.choice(numbers)
            return tokens[:k] + [rng.choice(NUMBERS)] + tokens[k + 1 :]
        return tokens
    if kind == 4:  # a name changed, here or everywhere
        names = [n for n, t in enumerate(tokens) if t[:1].isalpha() or t[:1] == "_"]
        if not names:
            return tokens
        k, new = rng.choice(names), rng.choice(NAMES)
        if rng.random() < 0.5:
            return [new if t == tokens[k] else t for t in tokens]
        return tokens[:k] + [new] + tokens[k + 1 :]
    if kind == 5:  # insert
        return tokens[:i] + [rng.choice(KEYWORDS + PUNCTUATION + NUMBERS + NAMES)] + tokens[i:]
    lines = " ".join(tokens).split("\n")
    a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
    if kind == 6:  # a line deleted or duplicated
        lines = lines[:a] + lines[a + 1 :] if rng.random() < 0.5 else lines[: a + 1] + lines[a:]
    else:  # two lines swapped
        lines[a], lines[b] = lines[b], lines[a]
    return TOKEN.findall("\n".join(lines))


KINDS = {
    "text": (arbitrary_text, 1),
    "bytes": (arbitrary_bytes, 1),
    "tokens": (token_soup, 2),
    "mutated": (mutated, 6),
}


# ---- one input ---------------------------------------------------------------------------------
def run_one(path: Path, data: str | bytes, rng: random.Random) -> str:
    """The outcome of one input: "compiled" or "rejected"; raises on anything else."""
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    try:
        compiled = spacec.load(str(path))
        compiled.source  # noqa: B018 - code generation
    except SpaceError as error:
        str(error)  # renders
        return "rejected"
    alphas = {
        cell.name: [
            [rng.uniform(-2, 2) for _ in compiled.spec.opset(cell.opset).candidates]
            for _ in cell.edges
        ]  # fmt: skip
        for cell in compiled.spec.cells
    }
    try:
        genotype = derive(compiled.name, alphas, compiled.rules)
        compiled.discrete_source(genotype)
    except (GenotypeError, DerivationError):
        return "compiled, genotype rejected"
    return "compiled"


def build_supernet(path: Path, params: dict) -> None:
    import torch

    try:
        compiled = spacec.load(str(path), **{k: v for k, v in TINY.items() if k in params})
    except SpaceError:
        return
    torch.manual_seed(0)
    network = compiled.supernet().eval()
    with torch.no_grad():
        if compiled.spec.domain == "image":
            output = network(torch.randn(2, compiled.input_shape[0], 64, 64))
        else:
            output, _ = network(torch.randint(0, network.ntoken, (3, 2)), network.init_hidden(2))
    if not torch.isfinite(output).all():
        raise AssertionError("the supernet's output is not finite")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--supernet-every", type=int, default=10,
                        help="build the supernet of every N-th input that compiles")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"))
    parser.add_argument("--report-every", type=int, default=1000)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    texts = seeds()
    names = [name for name, (_, weight) in KINDS.items() for _ in range(weight)]
    outcomes: dict[str, Counter] = {name: Counter() for name in KINDS}
    failures, compiled_count, started = 0, 0, time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.space"
        for number in range(1, args.inputs + 1):
            kind = rng.choice(names)
            data = KINDS[kind][0](rng, texts)
            build = False
            try:
                outcome = run_one(path, data, random.Random(number))
                if outcome == "compiled":
                    compiled_count += 1
                    if compiled_count % args.supernet_every == 0:
                        build = True
                        build_supernet(path, spacec.load(str(path)).params)
                        outcome = "compiled, supernet built"
            except Exception:  # noqa: BLE001 - a failure is what this script looks for
                failures += 1
                outcome = "FAILURE"
                args.out.mkdir(parents=True, exist_ok=True)
                stem = args.out / f"failure-{number:06d}"
                suffix = ".bin" if isinstance(data, bytes) else ".space"
                stem.with_suffix(suffix).write_bytes(
                    data if isinstance(data, bytes) else data.encode("utf-8")
                )
                stem.with_suffix(".txt").write_text(
                    f"input {number} ({kind}), supernet {build}\n{traceback.format_exc()}"
                )
            outcomes[kind][outcome] += 1
            if number % args.report_every == 0 or number == args.inputs:
                elapsed = time.perf_counter() - started
                print(json.dumps({"inputs": number, "seconds": round(elapsed, 1),
                                  "inputs_per_second": round(number / elapsed, 1),
                                  "failures": failures,
                                  "outcomes": {k: dict(v) for k, v in outcomes.items()}}),
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
