"""Small dataset objects: arrays in memory, image files read lazily, or the user's torch Dataset.

All of them give the same interface, so that pruning (Taylor importance),
fine-tuning, calibration and accuracy read data the same way:

- ``len(ds)``, ``ds.labelled``, ``ds.num_classes``, ``ds.classes``, ``ds.source``;
- ``ds.y``: every label as an int64 array (None when unlabelled), known
  without decoding a single image;
- ``ds.get(indices)``: ``(x, y)`` as torch tensors, x float32 NCHW already
  preprocessed for the model, y int64 or None;
- ``ds.batches(batch_size, shuffle=False, seed=0, augment=None)``: ``(x, y)``
  pairs for labelled data, ``x`` alone otherwise (what
  :func:`edgeprune.prune.importance.accumulate_taylor_grads` takes);
- ``ds.numpy(limit)``: ``(x, y)`` numpy arrays, for calibration and checks;
- ``ds.subset(indices)``: a view, no copy.

Example::

    for x, y in split.train.batches(64, shuffle=True, seed=epoch, augment="shift"):
        ...
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import DataError, require

# Lazy imports: the imports inside functions below load torch, which importing this module does not;
# they load only when a function that needs them runs.

AUGMENTS = ("none", "shift", "flip+shift")


def image_errors(image_mod) -> tuple[type[BaseException], ...]:
    """What Pillow raises for a file it cannot, or must not, decode (a decompression bomb)."""
    return (OSError, ValueError, SyntaxError, image_mod.DecompressionBombError)


def image_error(path: Any, exc: BaseException) -> DataError:
    """The one line for an image file Pillow refused: which file, why, and what to do."""
    if type(exc).__name__ == "DecompressionBombError":
        pixels = exc.args[0].split(" pixels")[0].rsplit("(", 1)[-1] if exc.args else "too many"
        return DataError(f"{path}: this image is too large to decode ({pixels} pixels, more than Pillow decodes "
                         "safely); resize it or remove the file")
    return DataError(f"{path}: cannot decode this image ({type(exc).__name__}: {exc}); remove or replace the file")


def check_finite(x: np.ndarray, source: str) -> None:
    """Infinities or NaN in data are one line naming the source (training on them gives NaN weights)."""
    bad = ~np.isfinite(x)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{source}: {int(bad.sum())} value(s) are NaN or infinite (the first in sample {where[0]}, "
                        f"at {where[1:]}); fix or drop those samples")


class Dataset:
    """The shared interface; subclasses implement ``_n`` and ``_fetch``."""

    source: str = ""
    classes: list[str] | None = None
    _labels: np.ndarray | None = None
    _num_classes: int | None = None

    def __len__(self) -> int:
        return self._n()

    def _n(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fetch(self, idx: np.ndarray):  # -> torch float NCHW  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def y(self) -> np.ndarray | None:
        return self._labels

    @property
    def x(self) -> np.ndarray:
        """Every input, preprocessed, as one float32 NCHW array (decodes every image: for small sets)."""
        return self.numpy()[0]

    @property
    def labelled(self) -> bool:
        return self._labels is not None

    @property
    def num_classes(self) -> int | None:
        if self._num_classes is not None:
            return self._num_classes
        if self.classes is not None:
            return len(self.classes)
        return int(self._labels.max()) + 1 if self.labelled and len(self._labels) else None

    def get(self, indices: Sequence[int] | np.ndarray):
        import torch

        idx = np.asarray(indices, dtype=np.int64)
        x = self._fetch(idx)
        y = torch.from_numpy(self._labels[idx].astype(np.int64)) if self.labelled else None
        return x, y

    def subset(self, indices: Sequence[int] | np.ndarray, *, source: str | None = None,
               drop_labels: bool = False) -> Subset:
        return Subset(self, np.asarray(indices, dtype=np.int64), source=source, drop_labels=drop_labels)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, augment: str | None = None,
                limit: int | None = None, start: int = 0, part: tuple[int, int] | None = None) -> Iterator[Any]:
        """Batches of ``(x, y)`` (labelled) or ``x``. ``start`` skips batches (a resumed epoch).

        ``part=(rank, world)``: only rank's share of every batch (:func:`shard_bounds`), with the
        augmentation the whole batch gets, so ``world`` processes together see one process's batches.
        A share with no rows (a last batch smaller than ``world``) yields the batch's first row.
        """
        n = len(self) if limit is None else min(limit, len(self))
        order = np.random.default_rng(seed).permutation(len(self))[:n] if shuffle else np.arange(n)
        for b, i in enumerate(range(0, n, batch_size)):
            if b < start:
                continue
            idx = order[i : i + batch_size]
            rows = slice(0, len(idx))
            if part is not None:
                lo, hi = shard_bounds(len(idx), *part)
                rows = slice(lo, hi) if hi > lo else slice(0, 1)
            x, y = self.get(idx[rows])
            if augment and augment != "none":
                x = _augment(x, augment, seed=seed * 100_003 + b, rows=rows, total=len(idx))
            yield (x, y) if y is not None else x

    def numpy(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        n = len(self) if limit is None else min(limit, len(self))
        xs = [self.get(np.arange(i, min(i + 256, n)))[0].numpy() for i in range(0, n, 256)]
        x = np.concatenate(xs) if xs else np.zeros((0,), np.float32)
        return x, (self._labels[:n].astype(np.int64) if self.labelled else None)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "samples": len(self), "labelled": self.labelled,
                "num_classes": self.num_classes}


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of an ``n``-row batch that process ``rank`` of ``world`` takes (every row exactly once)."""
    return rank * n // world, (rank + 1) * n // world


def _augment(x, how: str, *, seed: int, rows: slice | None = None, total: int | None = None):
    """Training augmentation on a preprocessed batch: random shifts (up to 1/8 of the side), optional flips.

    Shifts pad by edge replication, so no black borders the model never sees
    at test time. Seeded per batch, so a resumed run sees the same batches.
    ``x`` may be ``rows`` of a ``total``-row batch: the draws are the whole batch's.
    """
    import torch

    if how not in AUGMENTS:
        raise DataError(f"augment '{how}': choose one of {', '.join(AUGMENTS)}")
    g = torch.Generator().manual_seed(int(seed) % (2**63))
    n, _, h, w = x.shape
    total = n if total is None else total
    rows = rows if rows is not None else slice(0, n)
    if "flip" in how:
        flip = (torch.rand(total, generator=g) < 0.5)[rows]
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    pad = max(1, min(h, w) // 8)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (total,), generator=g)[rows]
    dx = torch.randint(0, 2 * pad + 1, (total,), generator=g)[rows]
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


class ArrayDataset(Dataset):
    """Images in memory: raw pixels (uint8, or float in [0, 1]) preprocessed per batch, or model inputs as they are."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None, *, preprocess, source: str,
                 passthrough: bool = False, classes: list[str] | None = None, num_classes: int | None = None,
                 layout: str = "auto") -> None:
        self._x = x
        self._labels = None if y is None else np.asarray(y).astype(np.int64)
        self.preprocess = preprocess
        self.passthrough = passthrough
        self.source = source
        self.classes = classes
        self._num_classes = num_classes
        self._layout = layout

    def _n(self) -> int:
        return int(self._x.shape[0])

    def _fetch(self, idx: np.ndarray):
        import torch

        if self.passthrough:
            return torch.from_numpy(np.ascontiguousarray(self._x[idx], dtype=np.float32))
        return self.preprocess(self._x[idx], layout=self._layout)


class ImageDataset(Dataset):
    """Image files, decoded with Pillow when a batch asks for them (a folder of 100k photos costs no memory)."""

    def __init__(self, files: list[Path], y: np.ndarray | None, *, preprocess, source: str,
                 classes: list[str] | None = None) -> None:
        self.files = files
        self._labels = y
        self.preprocess = preprocess
        self.source = source
        self.classes = classes

    def _n(self) -> int:
        return len(self.files)

    def _fetch(self, idx: np.ndarray):
        image_mod = require("PIL.Image", "quantize", "reading image files")
        c = self.preprocess.channels
        h, w = self.preprocess.size
        out = []
        for i in idx:
            path = self.files[int(i)]
            try:
                with image_mod.open(path) as im:
                    im = im.convert("L" if c == 1 else "RGB")
                    if im.size != (w, h):
                        im = im.resize((w, h), image_mod.BILINEAR)
                    out.append(np.asarray(im, dtype=np.uint8))
            except image_errors(image_mod) as exc:
                raise image_error(path, exc) from None
        return self.preprocess(np.stack(out), layout="nhwc")


class TorchDataset(Dataset):
    """The user's ``torch.utils.data.Dataset``: items ``x`` or ``(x, y)``, x already a model input."""

    def __init__(self, ds, *, input_shape: tuple[int, ...], source: str) -> None:
        self._ds = ds
        self.source = source
        self._shape = tuple(input_shape[1:])
        n = len(ds)
        first = ds[0] if n else None
        labelled = isinstance(first, (tuple, list)) and len(first) >= 2
        if n:
            self._fetch(np.array([0]))  # the first item fits the model, or one line now
        labels = []
        for i in range(n if labelled else 0):
            item = ds[i]
            label = item[1] if isinstance(item, (tuple, list)) and len(item) >= 2 else None
            try:
                value = float(label.item() if hasattr(label, "item") else label)
            except (TypeError, ValueError):
                value = math.nan
            if not (math.isfinite(value) and value == int(value)):
                raise DataError(f"{source}: item {i}'s label is {label!r}; labels must be whole class numbers")
            labels.append(int(value))
        self._labels = np.array(labels, dtype=np.int64) if labelled else None

    def _n(self) -> int:
        return len(self._ds)

    def _fetch(self, idx: np.ndarray):
        import torch

        xs = []
        for i in idx:
            item = self._ds[int(i)]
            x = item[0] if isinstance(item, (tuple, list)) else item
            a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
            if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
                raise DataError(f"{self.source}: item {int(i)} is {type(x).__name__} of dtype {a.dtype}, not "
                                f"numbers; return model inputs shaped {self._shape} (a tensor or an array)")
            if tuple(a.shape) != self._shape:
                raise DataError(f"{self.source}: item {int(i)} has shape {tuple(a.shape)}, "
                                f"the model takes {self._shape}")
            xs.append(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)))
        out = torch.stack(xs)
        check_finite(out.numpy(), self.source)
        return out


class Subset(Dataset):
    """A view of ``parent`` at ``indices`` (splits are subsets: nothing is copied)."""

    def __init__(self, parent: Dataset, indices: np.ndarray, *, source: str | None = None,
                 drop_labels: bool = False) -> None:
        self.parent = parent
        self.indices = indices
        self.source = source or parent.source
        self.classes = None if drop_labels else parent.classes
        self._num_classes = None if drop_labels else parent.num_classes
        self._labels = None if (parent.y is None or drop_labels) else parent.y[indices]

    def _n(self) -> int:
        return int(len(self.indices))

    def _fetch(self, idx: np.ndarray):
        return self.parent._fetch(self.indices[idx])


@dataclass
class DataSplit:
    """train / val (early stopping) / test (held out, built-ins only); ``heldout`` is what accuracy is measured on.

    ``info`` records how the split was made (kind, seed, fractions, sizes)
    and goes into every JSON report, so that a reader sees which images were
    trained on and which were only ever measured.
    """

    train: Dataset
    val: Dataset
    test: Dataset | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def heldout(self) -> Dataset:
        """The test split where one exists, else val (never trained on; early stopping may have looked at it)."""
        return self.test if self.test is not None else self.val

    @property
    def heldout_name(self) -> str:
        return "test" if self.test is not None else "val"

    @property
    def labelled(self) -> bool:
        return self.heldout.labelled

    @property
    def num_classes(self) -> int | None:
        return self.train.num_classes or self.heldout.num_classes

    def to_dict(self) -> dict[str, Any]:
        sizes = {"train": len(self.train), "val": len(self.val)}
        if self.test is not None:
            sizes["test"] = len(self.test)
        return {**self.info, "sizes": sizes, "heldout": self.heldout_name, "labelled": self.labelled,
                "num_classes": self.num_classes}
