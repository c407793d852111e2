"""``--data SPEC`` -> one dataset: which kind of thing the user pointed at, checked up front.

Tried in this order:

1. a built-in name (``fashion-mnist``, ``digits``): handled by :mod:`edgeprune.data.builtin`;
2. a folder: one sub-folder per class (labelled; classes are the sorted
   sub-folder names, labels their index), or images directly inside
   (unlabelled: the measure becomes agreement with the original model);
3. a ``.npy`` (``x`` only) or ``.npz`` (``x``, optional ``y``; also
   accepted: ``images``/``data`` and ``labels``/``targets``);
4. a Python factory ``package.module:function`` returning a torch
   ``Dataset`` (items ``x`` or ``(x, y)``), an array ``x``, a pair
   ``(x, y)`` or a dict with ``x``/``y``.

Arrays: ``uint8`` means raw pixels, preprocessed like images (resize,
channels, normalisation). Float arrays shaped exactly like the model's input
(NCHW, or NHWC) are taken as model inputs already; other float arrays are
taken as pixels in [0, 1].

Every problem is one line naming the file: an empty folder, a class folder
with no images, a file that is not an image, an array whose shape or
labels cannot feed the model.

Example::

    ds = open_source("photos/", preprocess=pre, input_shape=(1, 3, 64, 64))
    ds.classes      # ['cat', 'dog']
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.data.builtin import BUILTIN
from edgeprune.data.dataset import (
    ArrayDataset,
    DataError,
    Dataset,
    ImageDataset,
    TorchDataset,
    check_finite,
    image_error,
    image_errors,
)
from edgeprune.errors import require
from edgeprune.safeload import np_load
from edgeprune.userfn import import_function

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_X_KEYS = ("x", "images", "data")
_Y_KEYS = ("y", "labels", "targets")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _check_headers(files: list[Path]) -> None:
    """Open every file's header (cheap): a file that is not an image fails here, naming it."""
    image_mod = require("PIL.Image", "quantize", "reading image files")
    for p in files:
        try:
            with image_mod.open(p):
                pass
        except image_errors(image_mod) as exc:
            raise image_error(p, exc) from None


def _from_folder(folder: Path, preprocess) -> Dataset:
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_class = {d.name: _images_in(d) for d in subdirs}
    if any(per_class.values()):
        empty = [n for n, f in per_class.items() if not f]
        if empty:
            raise DataError(f"{folder / empty[0]}: class folder with no images ({', '.join(IMAGE_SUFFIXES[:5])}, ...); "
                            "add images or remove the folder")
        classes = list(per_class)
        files = [f for n in classes for f in per_class[n]]
        y = np.concatenate([np.full(len(per_class[n]), k, dtype=np.int64) for k, n in enumerate(classes)])
        _check_headers(files)
        return ImageDataset(files, y, preprocess=preprocess, source=f"{folder} (class folders)", classes=classes)
    files = _images_in(folder)
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES[:5])}, ...) in this folder "
                        "or in class sub-folders")
    _check_headers(files)
    return ImageDataset(files, None, preprocess=preprocess, source=f"{folder} (unlabelled images)")


def _numbers(a, what: str, source: str) -> np.ndarray:
    """``a`` as a numpy array of real numbers (ints or floats), else one line saying what it holds."""
    try:
        a = np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: the {what} are not an array of numbers ({exc})") from None
    if a.dtype == object:
        raise DataError(f"{source}: the {what} hold Python objects (dtype object), which edgeprune never unpickles; "
                        "save numbers (uint8 pixels, float32 inputs, integer labels)")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise DataError(f"{source}: the {what} are {a.dtype} values, not numbers; give uint8 pixels, float32 "
                        "inputs and integer labels")
    return a


def _arrays(x, y, *, preprocess, input_shape, source: str) -> Dataset:
    x = _numbers(x, "images", source)
    if np.issubdtype(x.dtype, np.floating):
        check_finite(x, source)
    if y is not None:
        y = _numbers(y, "labels", source)
        if np.issubdtype(y.dtype, np.floating):
            check_finite(y, f"{source} (labels)")
        if y.ndim == 2 and y.shape[1] > 1:  # one-hot
            y = y.argmax(1)
        y = y.reshape(-1)
        if len(y) != len(x):
            raise DataError(f"{source}: {len(x)} images but {len(y)} labels")
        if not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{source}: labels must be whole class numbers, got {y.dtype} values like {y.flat[0]}")
        y = y.astype(np.int64)
    want = tuple(input_shape[1:])
    if tuple(x.shape) == want:  # a single sample
        x = x[None]
    if x.ndim not in (3, 4) or not len(x):
        raise DataError(f"{source}: array of shape {x.shape} is not a batch of images "
                        f"(expected N x H x W, N x H x W x C or N x C x H x W; the model takes {tuple(input_shape)})")
    if x.dtype != np.uint8 and x.ndim == 4:
        if tuple(x.shape[1:]) == want:
            return ArrayDataset(x, y, preprocess=preprocess, source=source, passthrough=True)
        if tuple(x.shape[1:]) == (want[1], want[2], want[0]):
            return ArrayDataset(x.transpose(0, 3, 1, 2), y, preprocess=preprocess, source=source, passthrough=True)
    if x.ndim == 4 and x.shape[1] not in (1, 3, 4) and x.shape[3] not in (1, 3, 4):
        raise DataError(f"{source}: samples of shape {x.shape[1:]} do not fit the model's input {tuple(input_shape)}: "
                        "expected images with 1, 3 or 4 channels (NCHW or NHWC)")
    if x.dtype != np.uint8:
        lo, hi = float(np.min(x)), float(np.max(x))
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise DataError(f"{source}: float pixels range {lo:.3g}..{hi:.3g}; give uint8 (0-255), floats in [0, 1], "
                            f"or model inputs shaped exactly {tuple(input_shape)} (N first)")
        x = x.astype(np.float32)
    return ArrayDataset(x, y, preprocess=preprocess, source=source)


def _from_file(path: Path, preprocess, input_shape) -> Dataset:
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    try:
        loaded = np_load(path, error=DataError)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable numpy file ({exc})") from None
    if isinstance(loaded, np.ndarray):
        return _arrays(loaded, None, preprocess=preprocess, input_shape=input_shape, source=str(path))
    with loaded:
        xk = next((k for k in _X_KEYS if k in loaded.files), None)
        if xk is None:
            raise DataError(f"{path}: no images array (looked for {', '.join(_X_KEYS)}; found {', '.join(loaded.files)})")
        yk = next((k for k in _Y_KEYS if k in loaded.files), None)
        try:
            x, y = loaded[xk], (loaded[yk] if yk else None)
        except ValueError as exc:  # an object array: numpy refuses to unpickle it (allow_pickle=False)
            raise DataError(f"{path}: its arrays hold Python objects ({exc}); edgeprune never unpickles data: "
                            "save numbers (uint8 pixels, float32 inputs, integer labels)") from None
    return _arrays(x, y, preprocess=preprocess, input_shape=input_shape, source=str(path))


def _from_factory(spec: str, preprocess, input_shape) -> Dataset:
    fn = import_function(spec, where=f"--data {spec}", error=DataError)
    try:
        result = fn()
    except Exception as exc:  # the user's code: their exception, one line, the traceback with --debug
        raise DataError(f"--data {spec}: your function raised {type(exc).__name__}: {exc}") from exc
    if isinstance(result, dict):
        xk = next((k for k in _X_KEYS if k in result), None)
        if xk is None:
            raise DataError(f"--data {spec}: returned a dict without images (looked for {', '.join(_X_KEYS)}; "
                            f"found {', '.join(map(str, result)) or 'no keys'}); return {{'x': images, 'y': labels}}")
        yk = next((k for k in _Y_KEYS if k in result), None)
        return _arrays(result[xk], result.get(yk) if yk else None, preprocess=preprocess, input_shape=input_shape,
                       source=spec)
    if isinstance(result, (tuple, list)) and len(result) == 2 and hasattr(result[0], "shape"):
        return _arrays(result[0], result[1], preprocess=preprocess, input_shape=input_shape, source=spec)
    if hasattr(result, "shape"):
        return _arrays(result, None, preprocess=preprocess, input_shape=input_shape, source=spec)
    if hasattr(result, "__getitem__") and hasattr(result, "__len__"):
        if not len(result):
            raise DataError(f"--data {spec}: the dataset it returned is empty")
        return TorchDataset(result, input_shape=input_shape, source=spec)
    raise DataError(f"--data {spec}: returned {type(result).__name__}; return a torch Dataset, an array, or (x, y)")


def open_source(spec: str, *, preprocess, input_shape: tuple[int, ...]) -> Dataset:
    """One dataset from a user ``spec`` (not a built-in name); see the module docstring."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        return _from_folder(path, preprocess)
    if path.suffix.lower() in (".npy", ".npz"):
        return _from_file(path, preprocess, input_shape)
    if _FACTORY.match(text) and not path.exists():
        return _from_factory(text, preprocess, input_shape)
    if not path.exists():
        raise DataError(f"--data {text}: not found (a folder, a .npy/.npz file, a pkg.module:function factory, "
                        f"or a built-in data set: {', '.join(BUILTIN)})")
    raise DataError(f"--data {text}: not a folder of images, a .npy/.npz file or a pkg.module:function factory")


def common_image_size(spec: Any) -> tuple[tuple[int, int], str] | None:
    """``((H, W), what)``: the most common size of the images ``spec`` names (a folder, .npy/.npz), or None.

    Reads headers only (at most 64 images): the input size of a model that does not say its own.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        files = [f for d in subdirs for f in _images_in(d)[:8]][:64] or _images_in(path)[:64]
        if not files:
            return None
        try:
            from PIL import Image
        except ImportError:
            return None
        sizes: Counter = Counter()
        for f in files:
            try:
                with Image.open(f) as im:
                    sizes[(im.height, im.width)] += 1
            except image_errors(Image):  # loading the data names the file
                continue
        if not sizes:
            return None
        (h, w), n = sizes.most_common(1)[0]
        return (h, w), f"the common size of the images in {path} ({n} of {sum(sizes.values())} read are {h}x{w})"
    if path.suffix.lower() in (".npy", ".npz") and path.is_file():
        try:
            loaded = np_load(path, error=DataError, mmap_mode="r" if path.suffix.lower() == ".npy" else None)
        except (ValueError, OSError, DataError):
            return None
        if isinstance(loaded, np.ndarray):
            x = loaded
        else:
            with loaded:
                key = next((k for k in _X_KEYS if k in loaded.files), None)
                if key is None:
                    return None
                try:
                    x = loaded[key]
                except ValueError:  # an object array: loading it says so, naming the file
                    return None
        if x.ndim == 3:
            return (int(x.shape[1]), int(x.shape[2])), f"the images in {path} ({x.shape[1]}x{x.shape[2]})"
        if x.ndim == 4:
            h, w = (x.shape[2], x.shape[3]) if x.shape[1] in (1, 3, 4) else (x.shape[1], x.shape[2])
            return (int(h), int(w)), f"the images in {path} ({h}x{w})"
    return None
