"""Exporting a trained derived network: TorchScript or ONNX, usable as they are, checked against
PyTorch.

The network is rebuilt from a training checkpoint (`spacec.runtime.train.loop.network_from_checkpoint`)
without its auxiliary head, which only training uses, and exported in eval mode inside a
`Classifier`: the exported model takes RGB images with values in [0, 1], shape (N, 3, H, W), and
normalises them itself with the training data's mean and standard deviation. The checkpoint's
data record travels with it (`metadata`): the class names, the input size and how a file becomes
an input (resize the shorter side, crop the centre: `spacec predict` does the same), in a
TorchScript file's extra file ``spacec.json`` and in an ONNX model's ``metadata_props["spacec"]``:

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
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spacec.errors import ReportedError
from spacec.files import atomic_write_with
from spacec.runtime.run.checkpoint import load_checkpoint
from spacec.runtime.run.rundir import BEST_NAME, CHECKPOINT_NAME, is_search_run
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
METADATA = "spacec.json"  # TorchScript: the extra file; ONNX: the metadata_props key "spacec"
ONNX_METADATA_KEY = "spacec"
METADATA_FORMAT = 1
INPUT_DESCRIPTION = "RGB images with values in [0, 1], shape (N, 3, H, W), normalised inside"
EXTRA_HINT = ("install the optional 'export' extra: pip install 'spacec[export]' (onnx, "
              "onnxscript, onnxruntime)")


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
    if source.is_dir() and is_search_run(source):
        raise ExportError(f"{source} is a search run: it holds a supernet, not a trained "
                          f"network; train its cell first (spacec train --genotype {source})")
    if source.is_dir():
        names = {"last": CHECKPOINT_NAME, "best": BEST_NAME}
        if which not in names:
            raise ExportError(f"unknown checkpoint {which!r}; use last or best")
        return source / names[which]
    return source


def load_network(source: Path, which: str = "last") -> tuple[nn.Module, tuple[int, int, int]]:
    """The eval-mode network of a training checkpoint and its input shape (C, H, W)."""
    state = _image_checkpoint(checkpoint_path(source, which))
    shape = tuple(int(size) for size in state["data"]["input_shape"])
    return network_from_checkpoint(state), shape


class Classifier(nn.Module):
    """A trained network that takes images as files give them: [0, 1] RGB, normalised here.

    ``mean``/``std`` None (a network trained on a user's own tensors): the input goes to the
    network unchanged.
    """

    def __init__(self, network: nn.Module, mean: list[float] | None, std: list[float] | None):
        super().__init__()
        self.network = network
        self.normalise = mean is not None and std is not None
        channels = len(mean) if self.normalise else 1
        self.register_buffer("mean", torch.tensor(mean or [0.0]).view(1, channels, 1, 1))
        self.register_buffer("std", torch.tensor(std or [1.0]).view(1, channels, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network((images - self.mean) / self.std)


def metadata(state: dict) -> dict:
    """What an exported model needs besides its graph: the checkpoint's data record (class
    names, input shape, test-time resize and crop, the normalisation it applies) and provenance."""
    record = dict(state["data"])
    known = "mean" in record  # checkpoints before preprocessing was recorded lack it
    return {
        "format": METADATA_FORMAT,
        "input": INPUT_DESCRIPTION if known and record.get("mean") is not None else
        "the tensors the network was trained on (no preprocessing recorded)",
        "input_shape": [int(size) for size in record["input_shape"]],
        "class_names": record.get("class_names"),
        "resize": record.get("resize"),
        "crop": record.get("crop"),
        "mean": record.get("mean"),
        "std": record.get("std"),
        "preprocessing_known": known,
        "space": state["config"]["space"]["name"],
        "space_params": dict(state["space_params"]),
        "genotype": state["genotype"],
    }


def _image_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint of an image classifier; ExportError for any other network."""
    state = load_checkpoint(path, CHECKPOINT_KIND, CHECKPOINT_KEYS)
    if "input_shape" not in state["data"]:  # a language model's training run: no image input
        raise ExportError(f"{path}: export takes image classifiers; this checkpoint holds a "
                          f"{state['config'].get('task', 'non-image')} network")
    return state


def load_classifier(source: Path, which: str = "last") -> tuple[Classifier, dict]:
    """The exportable classifier of a training run or checkpoint, and its metadata."""
    state = _image_checkpoint(checkpoint_path(source, which))
    meta = metadata(state)
    network = network_from_checkpoint(state)
    return Classifier(network, meta["mean"], meta["std"]).eval(), meta


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
    an unwritable path is a FileError naming it (spacec.files). The writer's file has the final
    name, in a temporary folder beside it: torch.jit.save names the archive's top folder after
    the file (a temporary name would stay inside the export)."""
    def named(temp: Path) -> None:
        folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=temp.parent))
        try:
            write(folder / path.name)
            os.replace(folder / path.name, temp)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    atomic_write_with(path, named)


def quietly(action: Callable[[], object]) -> object:
    """Run an exporter, logging (not raising) the deprecation notices torch's exporters emit."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = action()
    for warning in caught:
        log.debug("%s: %s", warning.category.__name__, warning.message)
    return result


# ---------------------------------------------------------------- TorchScript


def export_torchscript(network: nn.Module, shape: tuple[int, int, int], path: Path,
                       meta: dict | None = None) -> ExportResult:
    network = network.eval()
    example = random_batch(TRACE_BATCH, shape, seed=0)
    with torch.no_grad():
        # check_trace re-runs and compares the trace itself; the check below does it on a
        # batch of another size, which also shows the batch dimension was not frozen.
        traced = quietly(lambda: torch.jit.trace(network, example, check_trace=False))
    extra = {} if meta is None else {METADATA: json.dumps(meta)}
    _write_atomically(path, lambda temp: traced.save(str(temp), _extra_files=extra))
    loaded = quietly(lambda: torch.jit.load(str(path)))
    check = random_batch(CHECK_BATCH, shape, seed=1)
    with torch.no_grad():
        difference = max_difference(network(check), loaded(check), f"{path} (TorchScript)")
    return ExportResult(path, "torchscript", difference, "torch.jit.load")


# ---------------------------------------------------------------- ONNX


def require_onnx():
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}: {EXTRA_HINT}")
    import onnx

    return onnx


def onnx_runner(onnx, model: Any) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """Something that runs the ONNX model (a ModelProto): onnxruntime if installed, else
    onnx's reference."""
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(model.SerializeToString(),
                                               providers=["CPUExecutionProvider"])
        return (lambda x: torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0]),
                "onnxruntime")
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(model)
    return (lambda x: torch.from_numpy(evaluator.run(None, {INPUT_NAME: x.numpy()})[0]),
            "onnx.reference.ReferenceEvaluator (onnxruntime is not installed)")


def export_onnx(network: nn.Module, shape: tuple[int, int, int], path: Path,
                meta: dict | None = None) -> ExportResult:
    onnx = require_onnx()
    network = network.eval()
    example = random_batch(TRACE_BATCH, shape, seed=0)

    def write(temp: Path) -> None:
        quietly(lambda: torch.onnx.export(
            network, (example,), str(temp), dynamo=True, verbose=False, external_data=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},)))
        model = onnx.load(str(temp))
        if meta is not None:
            onnx.helper.set_model_props(model, {ONNX_METADATA_KEY: json.dumps(meta)})
            onnx.save(model, str(temp))
        onnx.checker.check_model(model, full_check=True)

    try:
        _write_atomically(path, write)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"{path}: the exported ONNX model is invalid ({error})") from None
    run, runner = onnx_runner(onnx, onnx.load(str(path)))
    check = random_batch(CHECK_BATCH, shape, seed=1)
    with torch.no_grad():
        difference = max_difference(network(check), run(check), f"{path} (ONNX)")
    return ExportResult(path, "onnx", difference, runner)


EXPORTERS: dict[str, Callable[..., ExportResult]] = {
    "torchscript": export_torchscript,
    "onnx": export_onnx,
}


def export(source: Path, fmt: str, output: Path, which: str = "best") -> ExportResult:
    """Export the classifier of a training run directory (best.pt: the weights the run kept, or
    checkpoint.pt: the last) or checkpoint file to `output`, its metadata inside."""
    if fmt not in EXPORTERS:
        raise ExportError(f"unknown format {fmt!r}; formats: {', '.join(EXPORTERS)}")
    _check_not_a_source(Path(source), Path(output))
    classifier, meta = load_classifier(source, which)
    shape = tuple(meta["input_shape"])
    result = EXPORTERS[fmt](classifier, shape, Path(output), meta)
    log.info("wrote %s (%s, max |Δ| %s)", result.path, fmt, result.max_abs_diff)
    return result


def _check_not_a_source(source: Path, output: Path) -> None:
    """ExportError when `output` is the checkpoint exported from, or one its run keeps: the
    export would replace the weights it is made of."""
    source = source.expanduser()
    kept = ([source / name for name in (BEST_NAME, CHECKPOINT_NAME)] if source.is_dir()
            else [source])
    target = output.expanduser().resolve()
    if any(target == path.resolve() for path in kept):
        raise ExportError(f"{output}: the export would replace the checkpoint it is made from; "
                          "write it elsewhere (-o)")


def read_metadata(path: Path) -> dict | None:
    """The metadata stored in an exported model (TorchScript or ONNX), or None if it has none."""
    path = Path(path)
    if path.suffix == ".onnx":
        return onnx_metadata(require_onnx().load(str(path)))
    return load_torchscript(path)[1]


def onnx_metadata(model: Any) -> dict | None:
    """The metadata stored in an ONNX model (a ModelProto), or None if it has none."""
    text = {prop.key: prop.value for prop in model.metadata_props}.get(ONNX_METADATA_KEY)
    return None if text is None else json.loads(text)


def load_torchscript(path: Path) -> tuple[torch.jit.ScriptModule, dict | None]:
    """An exported TorchScript model and its metadata (None if it has none), read once."""
    extra = {METADATA: ""}
    module = quietly(lambda: torch.jit.load(str(path), map_location="cpu", _extra_files=extra))
    text = extra[METADATA] or None
    return module, None if text is None else json.loads(text)
