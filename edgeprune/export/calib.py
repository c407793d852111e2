"""Calibration and verification inputs: what INT8 scales come from, and what every check runs on.

``--calib DATA`` accepts:

- a folder of images (``.jpg .jpeg .png .bmp .webp``, read with Pillow),
  each resized to the model's H x W (bilinear), converted to RGB (or to
  grey for one-channel models), scaled to [0, 1] and normalised as the
  model expects: ``"imagenet"`` (mean 0.485/0.456/0.406, std
  0.229/0.224/0.225, the torchvision convention: the default for 3-channel
  classifiers) or ``"unit"`` ([0, 1], the default for detectors and
  one-channel models);
- a ``.npy`` array, already in the model's input space: ``(N, C, H, W)``,
  ``(N, H, W, C)`` (transposed) or a single ``(C, H, W)`` sample;
- a Python factory ``package.module:function`` returning an array, a
  tensor, or an iterable of samples / ``(x, y)`` pairs (labels are ignored).

Counts: :data:`DEFAULT_COUNT` samples are used for calibration (more are
ignored, evenly spread), fewer than :data:`MIN_RECOMMENDED` gives a warning
(INT8 ranges from a handful of samples clip real inputs). Shapes that do not
fit the model raise :class:`~edgeprune.errors.ExportError` naming both.

Held-out verification inputs are never calibration inputs: when the user's
data has more than ``count + 16`` samples, the tail is kept for verification;
otherwise verification uses :func:`builtin_samples` with ``split="verify"``
(other random crops than the calibration ones).

With ``--data`` (any :func:`edgeprune.data.load_data` spec, see
:func:`samples_from_split`) calibration comes from the train split and
verification from the held-out split, with labels where the data has them,
so real accuracy is reported for every artifact. Without either, the
model's data hook (:func:`edgeprune.models.data_info`) decides: a model
trained on a built-in data set (digits-cnn, the Fashion-MNIST references)
calibrates on that set's train split and is verified on its test split.

Example::

    calib = load_calibration("images/", input_shape=(1, 3, 224, 224))
    calib.data.shape      # (128, 3, 224, 224)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import data as data_mod
from edgeprune.data.dataset import check_finite, image_error, image_errors
from edgeprune.data.preprocess import parse_normalize
from edgeprune.errors import ExportError, require
from edgeprune.models import data_info
from edgeprune.safeload import np_load
from edgeprune.userfn import import_function

DEFAULT_COUNT = 128
MIN_RECOMMENDED = 32
VERIFY_COUNT = 64
ACCURACY_COUNT = 2000  # held-out labelled images measured per artifact (a top-1 to within ~1 point)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class CalibrationWarning(UserWarning):
    """Too few calibration samples for trustworthy INT8 ranges."""


@dataclass
class SampleSet:
    """Model inputs (NCHW float32), where they came from, and labels when known."""

    data: np.ndarray
    source: str
    labels: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.data.shape[0])


def default_normalize(input_shape: tuple[int, ...], task: str = "classify") -> str:
    """'imagenet' for 3-channel classifiers, else 'unit'."""
    return "imagenet" if task == "classify" and input_shape[1] == 3 else "unit"


def _normalize(x01: np.ndarray, how: str) -> np.ndarray:
    if how == "imagenet":
        if x01.shape[1] != 3:
            raise ExportError(f"ImageNet normalisation needs 3 channels, the model takes {x01.shape[1]}")
        return ((x01 - IMAGENET_MEAN[None, :, None, None]) / IMAGENET_STD[None, :, None, None]).astype(np.float32)
    if how == "unit":
        return x01.astype(np.float32)

    try:
        mean, std = parse_normalize(how)
    except Exception:
        raise ExportError(f"unknown normalisation '{how}': use 'imagenet', 'unit' or MEAN/STD") from None
    c = x01.shape[1]
    mean = np.broadcast_to(np.asarray(mean, np.float32), (c,))[None, :, None, None]
    std = np.broadcast_to(np.asarray(std, np.float32), (c,))[None, :, None, None]
    return ((x01 - mean) / std).astype(np.float32)


def _fit(arr: np.ndarray, input_shape: tuple[int, ...], what: str) -> np.ndarray:
    """Bring ``arr`` to (N, C, H, W) matching ``input_shape``, or raise naming both shapes."""
    want = tuple(input_shape[1:])
    try:
        arr = np.asarray(arr)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{what}: not an array of numbers ({exc})") from None
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ExportError(f"{what}: the samples are {arr.dtype} values, not numbers; give float32 model inputs")
    if np.issubdtype(arr.dtype, np.floating):
        check_finite(arr, what)
    if arr.ndim == len(want):
        arr = arr[None]
    if arr.ndim == len(want) + 1:
        if tuple(arr.shape[1:]) == want:
            return arr.astype(np.float32)
        if arr.ndim == 4 and tuple(arr.shape[1:]) == (want[1], want[2], want[0]):
            return arr.transpose(0, 3, 1, 2).astype(np.float32)  # NHWC -> NCHW
    raise ExportError(
        f"{what}: samples of shape {tuple(arr.shape[1:]) if arr.ndim > 1 else tuple(arr.shape)} "
        f"(array {tuple(arr.shape)}) do not fit the model's input {tuple(input_shape)}: "
        f"expected (N, {', '.join(map(str, want))}) or NHWC"
    )


def _from_images(folder: Path, input_shape: tuple[int, ...], normalize: str, limit: int) -> np.ndarray:
    image_mod = require("PIL.Image", "quantize", "reading calibration images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ExportError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    c, h, w = input_shape[1:]
    out = []
    for p in files[:limit]:
        try:
            with image_mod.open(p) as im:
                im = im.convert("L" if c == 1 else "RGB").resize((w, h), image_mod.BILINEAR)
                a = np.asarray(im, dtype=np.float32) / 255.0
        except image_errors(image_mod) as exc:
            raise image_error(p, exc) from None
        out.append(a[None] if c == 1 else a.transpose(2, 0, 1))
    return _normalize(np.stack(out), normalize)


def _from_factory(spec: str, input_shape: tuple[int, ...]) -> np.ndarray:
    fn = import_function(spec, where=f"--calib {spec}", error=ExportError)
    try:
        result = fn()
    except Exception as exc:  # the user's code: their exception, one line (the traceback with --debug)
        raise ExportError(f"--calib {spec}: your function raised {type(exc).__name__}: {exc}") from exc
    if not hasattr(result, "__iter__") and not hasattr(result, "detach"):
        raise ExportError(f"--calib {spec}: returned {type(result).__name__}; return an array or a list of samples")
    if hasattr(result, "detach"):
        result = result.detach().cpu().numpy()
    if isinstance(result, np.ndarray):
        return _fit(result, input_shape, spec)
    samples = []
    for item in result:
        if isinstance(item, (tuple, list)):
            item = item[0]
        if hasattr(item, "detach"):
            item = item.detach().cpu().numpy()
        samples.append(_fit(np.asarray(item), input_shape, spec))
    if not samples:
        raise ExportError(f"calibration factory '{spec}' returned no samples")
    return np.concatenate(samples)


def _spread(n_have: int, n_want: int) -> np.ndarray:
    return np.linspace(0, n_have - 1, n_want).round().astype(int)


def builtin_samples(input_shape: tuple[int, ...], n: int, *, split: str, normalize: str, seed: int = 0) -> SampleSet:
    """Real photos, offline: random crops (1/3 to full height, random flips) of scikit-learn's two sample images.

    ``split="calib"`` and ``split="verify"`` draw with different seeds, so the
    two sets are different inputs from the same distribution (crops may
    overlap in pixels, like two photos of one scene). An earlier design
    split each photo into a left part for calibration and a right part for
    verification; that measured a distribution shift, not the conversion
    (MobileNetV2 full-INT8 TFLite: cosine 0.857 vs 0.966 with this split).
    One-channel models get the grey version.
    """
    datasets = require("sklearn.datasets", "torch", "built-in sample images")
    photos = [im.astype(np.float32) / 255.0 for im in datasets.load_sample_images().images]
    rng = np.random.default_rng(seed * 2 + (0 if split == "calib" else 1) + 12345)
    c, h, w = input_shape[1:]
    if c not in (1, 3):
        raise ExportError(f"built-in sample images fit 1- or 3-channel models, not {c}: pass --calib")
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        H, W = img.shape[:2]
        side = int(rng.integers(H // 3, H + 1))
        y0 = int(rng.integers(0, H - side + 1))
        x0 = int(rng.integers(0, W - side + 1))
        crop = img[y0 : y0 + side, x0 : x0 + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        yi = (np.arange(h) * side / h).astype(int)  # nearest resize: no extra dependency
        xi = (np.arange(w) * side / w).astype(int)
        crop = crop[yi][:, xi]
        crop = crop.mean(axis=2, keepdims=True) if c == 1 else crop
        out.append(crop.transpose(2, 0, 1))
    return SampleSet(_normalize(np.stack(out), normalize), f"built-in sample photos ({split} crops)")


def load_calibration(
    source: str | Path | np.ndarray | None,
    *,
    input_shape: tuple[int, ...],
    count: int = DEFAULT_COUNT,
    normalize: str = "imagenet",
) -> tuple[SampleSet, SampleSet | None]:
    """Calibration samples from ``source``, and held-out verification samples when it has spare ones.

    Returns ``(calib, verify_or_None)``. Warns (:class:`CalibrationWarning`)
    below :data:`MIN_RECOMMENDED` samples.
    """
    input_shape = tuple(int(d) for d in input_shape)
    if isinstance(source, np.ndarray):
        arr, what = _fit(source, input_shape, "calibration array"), "array"
    else:
        text = str(source)
        path = Path(text).expanduser()
        if path.is_dir():
            arr, what = _from_images(path, input_shape, normalize, limit=count + VERIFY_COUNT), f"images in {path}"
        elif path.suffix == ".npy":
            if not path.is_file():
                raise ExportError(f"{path}: calibration file not found")
            arr, what = _fit(np_load(path, error=ExportError), input_shape, str(path)), str(path)
        elif ":" in text and not path.exists():
            arr, what = _from_factory(text, input_shape), f"factory {text}"
        else:
            raise ExportError(
                f"--calib {text}: not a folder of images, a .npy file or a 'package.module:function' factory"
            )
    verify = None
    if len(arr) > count + 16:
        verify = SampleSet(arr[count : count + VERIFY_COUNT], f"{what} (held out)")
        arr = arr[:count]
    elif len(arr) > count:
        arr = arr[_spread(len(arr), count)]
    calib = SampleSet(arr, what)
    if len(arr) < MIN_RECOMMENDED:
        msg = (
            f"only {len(arr)} calibration samples from {what}; INT8 ranges from fewer than "
            f"{MIN_RECOMMENDED} often clip real inputs (use {DEFAULT_COUNT} or more)"
        )
        calib.warnings.append(msg)
        warnings.warn(msg, CalibrationWarning, stacklevel=2)
    return calib, verify


def samples_from_split(split, *, count: int = DEFAULT_COUNT, verify_count: int = VERIFY_COUNT,
                       accuracy_count: int = ACCURACY_COUNT) -> tuple[SampleSet, SampleSet]:
    """Calibration from ``split.train`` (``count`` spread over it), verification from ``split.heldout``.

    Labelled held-out data gives up to ``accuracy_count`` samples (accuracy
    needs many), unlabelled up to ``verify_count``; both evenly spread, so a
    folder sorted by class still gives every class.
    """
    train, held = split.train, split.heldout
    cal_x, _ = train.subset(_spread(len(train), min(count, len(train)))).numpy()
    n = min(len(held), accuracy_count if held.labelled else verify_count)
    ver_x, ver_y = held.subset(_spread(len(held), n)).numpy()
    cal = SampleSet(cal_x, f"{train.source}")
    ver = SampleSet(ver_x, f"{held.source} (held out)", labels=ver_y)
    return cal, ver


def model_samples(loaded: Any, *, count: int = DEFAULT_COUNT, verify_count: int = VERIFY_COUNT,
                  normalize: str | None = None, accuracy_count: int = ACCURACY_COUNT) -> tuple[SampleSet, SampleSet]:
    """Calibration and verification sets when no data was handed to the export: random crops of the
    built-in photos. The model's own data set, when it has one here, is loaded by the caller and handed
    over as a split (:func:`edgeprune.load.split_for_model`); when it is not here, a warning says how to
    fetch it."""
    shape = tuple(loaded.input_shape)
    info = data_info(loaded)
    norm = normalize or info.normalize or default_normalize(shape, getattr(loaded, "task", "classify"))
    if info.dataset and not data_mod.available(info.dataset):
        warnings.warn(f"{getattr(loaded, 'name', 'the model')} was trained on {info.dataset}, which is not here: "
                      f"checks ran on built-in photos instead; fetch it: bash scripts/fetch-data.sh {info.dataset}",
                      CalibrationWarning, stacklevel=2)
    return (builtin_samples(shape, count, split="calib", normalize=norm),
            builtin_samples(shape, verify_count, split="verify", normalize=norm))
