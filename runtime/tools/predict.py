"""`spacec predict`: classify image files with a trained network, preprocessed as in training.

MODEL is a training run directory (its best.pt: the weights the run kept), a training checkpoint,
or a model written by `spacec export` (TorchScript or ONNX). Each file is read as RGB, resized
and cropped the way the run's test images were (the metadata: resize the shorter side, crop the
centre, either only where training did), turned into values in [0, 1] and given to the model,
which normalises them itself (an exported model holds the normalisation; a checkpoint is wrapped
in the same `spacec.runtime.tools.export.Classifier`). A file of another size than the network
takes, where training did not resize, is refused rather than silently stretched.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision import transforms

from spacec.errors import ReportedError
from spacec.runtime.domains.image.data import geometry_steps
from spacec.runtime.domains.image.folders import load_rgb
from spacec.runtime.errors import DataError
from spacec.runtime.tools import export as exporting

log = logging.getLogger(__name__)

BATCH = 64  # files classified per forward pass


class PredictError(ReportedError):
    """A model that cannot classify files (unknown format, no preprocessing recorded)."""


@dataclass(frozen=True)
class Prediction:
    path: Path
    ranked: tuple[tuple[str, float], ...]  # (class, probability), most probable first

    @property
    def label(self) -> str:
        return self.ranked[0][0]


Runner = Callable[[torch.Tensor], torch.Tensor]  # [N, 3, H, W] in [0, 1] -> logits [N, K]


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def open_model(source: Path) -> tuple[Runner, dict, str]:
    """(run the model, its metadata, what it is) for a run directory, checkpoint or export."""
    source = Path(source).expanduser()
    if not source.exists():
        raise PredictError(f"{source}: no such file or directory")
    if source.suffix == ".onnx":
        onnx = exporting.require_onnx()
        model = _readable(source, "ONNX", lambda: onnx.load(str(source)))
        meta, (run, runner) = _readable(source, "ONNX", lambda: (
            exporting.onnx_metadata(model), exporting.onnx_runner(onnx, model)))
        return run, _require(meta, source), f"ONNX model ({runner})"
    if source.is_file() and _is_torchscript(source):
        module, meta = _readable(source, "TorchScript",
                                 lambda: exporting.load_torchscript(source))
        return module, _require(meta, source), "TorchScript model"
    classifier, meta = exporting.load_classifier(source, "best")
    return classifier, _require(meta, source), "training checkpoint"


def _readable(source: Path, kind: str, load: Callable[[], Any]) -> Any:
    """`load()`, or PredictError naming `source` when it is not a readable `kind` model
    (onnx's and torch's loaders raise their own parse errors: a truncated or corrupt file,
    another format under the name, metadata that is not JSON)."""
    try:
        return load()
    except ReportedError:
        raise
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise PredictError(f"{source}: not a readable {kind} model "
                           f"({type(error).__name__}{': ' + reason if reason else ''})") from None


def _require(meta: dict | None, source: Path) -> dict:
    if meta is None:
        raise PredictError(f"{source}: holds no spacec metadata (class names, input size, "
                           "preprocessing): export it again with spacec export")
    if not meta.get("preprocessing_known") or meta.get("mean") is None:
        raise PredictError(f"{source}: its training data's preprocessing is not recorded (a "
                           "network trained on your own tensors, or an older checkpoint): spacec "
                           "cannot know how a file becomes its input")
    return meta


def read_images(paths: Sequence[Path], meta: dict) -> torch.Tensor:
    """Files as the network's input: [N, 3, H, W] with values in [0, 1]."""
    steps = transforms.Compose([*geometry_steps(meta.get("resize"), meta.get("crop")),
                                transforms.ToTensor()])
    channels, height, width = meta["input_shape"]
    images = []
    for path in paths:
        image = steps(load_rgb(str(path)))
        if tuple(image.shape) != (channels, height, width):
            raise DataError(f"{path}: a {image.shape[2]}x{image.shape[1]} image; the network "
                            f"takes {width}x{height} and was trained on images of that size, not "
                            f"resized: resize it to {width}x{height} first")
        images.append(image)
    return torch.stack(images)


def class_names(meta: dict, count: int) -> list[str]:
    names = meta.get("class_names")
    return list(names) if names and len(names) == count else [str(i) for i in range(count)]


def predict(source: Path, paths: Sequence[Path], top: int = 1) -> list[Prediction]:
    """The `top` most probable classes of every image file."""
    run, meta, _ = open_model(source)
    predictions = []
    for start in range(0, len(paths), BATCH):
        chunk = [Path(path) for path in paths[start:start + BATCH]]
        with torch.no_grad():
            probabilities = torch.softmax(run(read_images(chunk, meta)), dim=1)
        names = class_names(meta, probabilities.shape[1])
        values, indices = probabilities.topk(min(top, probabilities.shape[1]), dim=1)
        for path, row_values, row_indices in zip(chunk, values, indices, strict=True):
            ranked = tuple((names[int(i)], float(v)) for v, i in zip(row_values, row_indices,
                                                                      strict=True))
            predictions.append(Prediction(path, ranked))
    return predictions


def describe_predictions(predictions: Sequence[Prediction]) -> list[str]:
    """``path<TAB>class 91.2%[, class 5.1%]`` per file."""
    return ["\t".join([str(p.path), ", ".join(f"{name} {100 * probability:.1f}%"
                                              for name, probability in p.ranked)])
            for p in predictions]
