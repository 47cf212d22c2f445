"""Exporting a trained derived network: TorchScript or ONNX, each checked against PyTorch.

The network is rebuilt from a training checkpoint (`spacec.runtime.train.loop.network_from_checkpoint`)
without its auxiliary head, which only training uses, and exported in eval mode:

* TorchScript: ``torch.jit.trace`` (the generated forward reads Python lists of states, which
  ``torch.jit.script`` does not compile); the saved file is loaded back and run.
* ONNX: ``torch.onnx.export`` (the torch.export-based exporter) with a dynamic batch dimension;
  the file is checked with ``onnx.checker`` and run by onnxruntime when it is installed, else by
  onnx's reference evaluator (pure numpy). onnx and onnxscript are the optional ``export`` extra.

Either way the exported model must reproduce the PyTorch network's logits on a random batch of
a size other than the one traced, or `ExportError` says by how much it misses.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spacec.errors import ReportedError
from spacec.files import atomic_write_with
from spacec.runtime.run.checkpoint import load_checkpoint
from spacec.runtime.run.rundir import BEST_NAME, CHECKPOINT_NAME
from spacec.runtime.train.loop import CHECKPOINT_KEYS, CHECKPOINT_KIND, network_from_checkpoint

log = logging.getLogger(__name__)

TRACE_BATCH = 2  # the batch size traced; the check runs a batch of CHECK_BATCH
CHECK_BATCH = 3
# float32 logits of the same network computed by different kernels agree to ~1e-6; 1e-4 leaves
# room for reordered sums without letting a wrong graph through.
ATOL = 1e-4
RTOL = 1e-4
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
EXTRA_HINT = "install the optional 'export' extra: pip install 'spacec[export]' (onnx, onnxscript)"


class ExportError(ReportedError):
    """An export failed, is missing an optional dependency, or does not match PyTorch."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float | None  # None: not checked numerically
    checked_with: str  # what ran the exported model, or why nothing did


def checkpoint_path(source: Path, which: str = "last") -> Path:
    """A run directory's checkpoint (`which`: last or best), or `source` itself if a file."""
    source = Path(source).expanduser()
    if source.is_dir():
        names = {"last": CHECKPOINT_NAME, "best": BEST_NAME}
        if which not in names:
            raise ExportError(f"unknown checkpoint {which!r}; use last or best")
        return source / names[which]
    return source


def load_network(source: Path, which: str = "last") -> tuple[nn.Module, tuple[int, int, int]]:
    """The eval-mode network of a training checkpoint and its input shape (C, H, W)."""
    path = checkpoint_path(source, which)
    state = load_checkpoint(path, CHECKPOINT_KIND, CHECKPOINT_KEYS)
    if "input_shape" not in state["data"]:  # a language model's training run: no image input
        raise ExportError(f"{path}: export takes image classifiers; this checkpoint holds a "
                          f"{state['config'].get('task', 'non-image')} network")
    shape = tuple(int(size) for size in state["data"]["input_shape"])
    return network_from_checkpoint(state), shape


def random_batch(batch: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


def max_difference(expected: torch.Tensor, actual: torch.Tensor, what: str) -> float:
    """The largest absolute difference; ExportError when outside tolerance."""
    if expected.shape != actual.shape:
        raise ExportError(f"{what}: output shape {tuple(actual.shape)}, PyTorch gives "
                          f"{tuple(expected.shape)}")
    difference = float((expected - actual).abs().max())
    if not torch.allclose(actual, expected, atol=ATOL, rtol=RTOL):
        raise ExportError(f"{what}: outputs differ from PyTorch by up to {difference:.3g} "
                          f"(tolerance {ATOL} + {RTOL}·|x|)")
    return difference


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(temp)` then rename over `path`: a failed export leaves no half-written file, and
    an unwritable path is a FileError naming it (spacec.files)."""
    atomic_write_with(path, write)


def _quietly(action: Callable[[], object]) -> object:
    """Run an exporter, logging (not raising) the deprecation notices torch's exporters emit."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = action()
    for warning in caught:
        log.debug("%s: %s", warning.category.__name__, warning.message)
    return result


# ---------------------------------------------------------------- TorchScript


def export_torchscript(network: nn.Module, shape: tuple[int, int, int], path: Path) -> ExportResult:
    network = network.eval()
    example = random_batch(TRACE_BATCH, shape, seed=0)
    with torch.no_grad():
        # check_trace re-runs and compares the trace itself; the check below does it on a
        # batch of another size, which also shows the batch dimension was not frozen.
        traced = _quietly(lambda: torch.jit.trace(network, example, check_trace=False))
    _write_atomically(path, lambda temp: traced.save(str(temp)))
    loaded = _quietly(lambda: torch.jit.load(str(path)))
    check = random_batch(CHECK_BATCH, shape, seed=1)
    with torch.no_grad():
        difference = max_difference(network(check), loaded(check), f"{path} (TorchScript)")
    return ExportResult(path, "torchscript", difference, "torch.jit.load")


# ---------------------------------------------------------------- ONNX


def _require_onnx():
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}: {EXTRA_HINT}")
    import onnx

    return onnx


def _onnx_runner(onnx, model_path: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """Something that runs the ONNX file: onnxruntime if installed, else onnx's reference."""
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(model_path),
                                               providers=["CPUExecutionProvider"])
        return (lambda x: torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0]),
                "onnxruntime")
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(onnx.load(str(model_path)))
    return (lambda x: torch.from_numpy(evaluator.run(None, {INPUT_NAME: x.numpy()})[0]),
            "onnx.reference.ReferenceEvaluator (onnxruntime is not installed)")


def export_onnx(network: nn.Module, shape: tuple[int, int, int], path: Path) -> ExportResult:
    onnx = _require_onnx()
    network = network.eval()
    example = random_batch(TRACE_BATCH, shape, seed=0)

    def write(temp: Path) -> None:
        _quietly(lambda: torch.onnx.export(
            network, (example,), str(temp), dynamo=True, verbose=False, external_data=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},)))
        onnx.checker.check_model(onnx.load(str(temp)), full_check=True)

    try:
        _write_atomically(path, write)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"{path}: the exported ONNX model is invalid ({error})") from None
    run, runner = _onnx_runner(onnx, path)
    check = random_batch(CHECK_BATCH, shape, seed=1)
    with torch.no_grad():
        difference = max_difference(network(check), run(check), f"{path} (ONNX)")
    return ExportResult(path, "onnx", difference, runner)


EXPORTERS: dict[str, Callable[[nn.Module, tuple[int, int, int], Path], ExportResult]] = {
    "torchscript": export_torchscript,
    "onnx": export_onnx,
}


def export(source: Path, fmt: str, output: Path, which: str = "last") -> ExportResult:
    """Export the network of a training run directory or checkpoint file to `output`."""
    if fmt not in EXPORTERS:
        raise ExportError(f"unknown format {fmt!r}; formats: {', '.join(EXPORTERS)}")
    network, shape = load_network(source, which)
    result = EXPORTERS[fmt](network, shape, Path(output))
    log.info("wrote %s (%s, max |Δ| %s)", result.path, fmt, result.max_abs_diff)
    return result
