"""Data for every stage: one loader, one split, the same images wherever a stage needs them.

``load_data(spec, input_shape=...)`` returns a :class:`DataSplit`: ``train``
(fine-tuning, calibration, Taylor importance), ``val`` (early stopping) and,
for built-in data sets, ``test`` (held out: where accuracy is reported).
``split.heldout`` is ``test`` where there is one, else ``val``. Every stage
that takes ``--data`` calls this function with the same arguments and gets
the same split, so the images export measures accuracy on are the ones
fine-tuning never trained on.

``spec`` (see :mod:`edgeprune.data.sources`): a built-in name
(``fashion-mnist``, ``digits``), a folder with one sub-folder per class, a
flat folder of images (unlabelled: then the measure is agreement with the
original model), ``.npy``/``.npz``, or a factory ``pkg.mod:fn``. A
detector's own formats (``data.yaml``, ``images/`` + ``labels/``, COCO
``.json``, ``fmnist-det``) are its task's (:mod:`edgeprune.tasks`, whose
``open_data`` a caller asks: :func:`edgeprune.load.split_for_model`); here,
for ``task="detect"``, class-folder trees, arrays and factories are read
with their labels dropped.

User data is split train/val with a seeded, per-class (stratified)
permutation: ``val_fraction`` of each class goes to val. ``val_data`` gives
the validation set explicitly instead; with a built-in data set it is the
held-out data too (its test split is then not used), checked as ``--data`` is. Preprocessing (channels, size,
normalisation) follows the model: ``input_shape`` and ``normalize``
(``imagenet``, ``unit`` or ``MEAN/STD``; default: ImageNet for 3-channel
classifiers, else unit; built-in models carry theirs in
:attr:`edgeprune.models.ModelInfo.data`). ``limit`` caps every split (tests,
quick benchmarks). ``num_classes`` (the model's outputs) turns a class count
or a label the model cannot output into one clear error.

Example::

    split = load_data("photos/", input_shape=(1, 3, 64, 64), num_classes=2)
    for x, y in split.train.batches(64, shuffle=True):
        ...
    split.to_dict()   # {'source': 'photos/', 'kind': 'class-folders', 'sizes': {'train': 90, 'val': 10}, ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.data.builtin import BUILTIN, available, builtin_split, data_home
from edgeprune.data.dataset import DataError, Dataset, DataSplit
from edgeprune.data.preprocess import Preprocess, parse_normalize
from edgeprune.data.sources import open_source
from edgeprune.validate import check_all

DEFAULT_VAL_FRACTION = 0.1


def default_normalize(input_shape: tuple[int, ...], task: str = "classify") -> str:
    """'imagenet' for 3-channel classifiers, else 'unit' (the convention of edgeprune.export.calib)."""
    return "imagenet" if task == "classify" and int(input_shape[1]) == 3 else "unit"


def _kind(ds: Dataset, spec: Any) -> str:
    src = ds.source
    if src.endswith("(class folders)"):
        return "class-folders"
    if src.endswith("(unlabelled images)"):
        return "image-folder"
    if str(spec).endswith((".npy", ".npz")):
        return "arrays"
    return "factory"


def _stratified(y: np.ndarray | None, n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if y is None:
        perm = rng.permutation(n)
        k = max(1, round(n * fraction))
        return np.sort(perm[k:]), np.sort(perm[:k])
    val = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        if len(idx) >= 2:
            val.append(idx[: max(1, round(len(idx) * fraction))])
    val_idx = np.sort(np.concatenate(val)) if val else np.array([], dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    return train_idx, val_idx


def _check_labels(ds: Dataset, num_classes: int | None, what: str) -> None:
    if not ds.labelled or num_classes is None:
        return
    if ds.classes is not None and len(ds.classes) != num_classes:
        raise DataError(f"{what}: {len(ds.classes)} classes ({', '.join(ds.classes[:4])}"
                        f"{', ...' if len(ds.classes) > 4 else ''}) but the model outputs {num_classes}")
    y = ds.y
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise DataError(f"{what}: label {bad} is out of range: the model outputs {num_classes} classes (0-{num_classes - 1})")


def _described(ds: Dataset, pre: Preprocess) -> str:
    """The preprocessing ``ds`` really gets: arrays already shaped as model inputs get none."""
    if getattr(ds, "passthrough", False):
        return (f"none: the arrays are model inputs already ({pre.channels}x{pre.size[0]}x{pre.size[1]}, "
                "used as given, not normalised)")
    return pre.describe()


def _open(spec, *, pre: Preprocess, input_shape, task: str) -> Dataset:
    if isinstance(spec, Dataset):
        ds = spec
    else:
        ds = open_source(str(spec), preprocess=pre, input_shape=input_shape)
    if task != "classify" and ds.labelled:  # labels mean classes: a detector is measured by agreement
        ds = ds.subset(np.arange(len(ds)), drop_labels=True)
    return ds


def load_data(
    spec: str | Path | Dataset | DataSplit,
    *,
    input_shape: tuple[int, ...],
    task: str = "classify",
    normalize: Any = None,
    num_classes: int | None = None,
    val_data: str | Path | Dataset | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    limit: int | None = None,
) -> DataSplit:
    """See the module docstring."""
    if isinstance(spec, DataSplit):
        return spec
    input_shape = tuple(int(d) for d in input_shape)
    norm = parse_normalize(normalize) or default_normalize(input_shape, task)
    pre = Preprocess.for_model(input_shape, norm)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction {val_fraction}: must be between 0 and 1")
    if isinstance(spec, str) and spec in BUILTIN:
        split = builtin_split(spec, pre, limit=limit)
        if val_data is not None:  # the user's held-out data is what is measured (the test split is not)
            val = _open(val_data, pre=pre, input_shape=input_shape, task=task)
            _check_labels(val, num_classes, f"--val-data {val_data}")
            split.val, split.test = val, None
            split.info.update(split="given", val_data=str(val_data))
        for part in (split.train, split.heldout):
            _check_labels(part, num_classes, spec)
        return split
    ds = _open(spec, pre=pre, input_shape=input_shape, task=task)
    _check_labels(ds, num_classes, str(spec))
    info: dict[str, Any] = {"source": str(spec), "kind": _kind(ds, spec), "preprocess": _described(ds, pre)}
    if val_data is not None:
        val = _open(val_data, pre=pre, input_shape=input_shape, task=task)
        _check_labels(val, num_classes, str(val_data))
        if ds.classes and val.classes and ds.classes != val.classes:
            raise DataError(f"--val-data {val_data}: classes {val.classes[:4]} differ from --data's {ds.classes[:4]}")
        train = ds
        info.update(split="given", val_data=str(val_data))
    else:
        if len(ds) < 2:
            raise DataError(f"{spec}: {len(ds)} sample; at least 2 are needed (one to train on, one held out)")
        train_idx, val_idx = _stratified(ds.y, len(ds), val_fraction, seed)
        train = ds.subset(train_idx, source=f"{ds.source} train split")
        val = ds.subset(val_idx, source=f"{ds.source} val split")
        info.update(split="seeded, per class" if ds.labelled else "seeded", seed=seed, val_fraction=val_fraction)
    if limit:
        train = train.subset(np.arange(min(limit, len(train))))
        val = val.subset(np.arange(min(limit, len(val))))
        info["limit"] = limit
    return DataSplit(train, val, None, info=info)


__all__ = [
    "BUILTIN",
    "DataError",
    "DataOptions",
    "DataSplit",
    "Dataset",
    "Preprocess",
    "available",
    "data_home",
    "default_normalize",
    "load_data",
    "split_for",
]


@dataclass(frozen=True)
class DataOptions:
    """What ``--data``, ``--val-data``, ``--val-fraction`` and ``--limit`` say, the same on every command."""

    data: Any = None
    val_data: Any = None
    val_fraction: float = DEFAULT_VAL_FRACTION
    limit: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_all(val_fraction=self.val_fraction, limit=self.limit, seed=self.seed)


def split_for(model: Any, data: Any = None, *, default: str | None = None, val_data: Any = None,
              val_fraction: float = DEFAULT_VAL_FRACTION, limit: int | None = None,
              seed: int = 0) -> DataSplit | None:
    """The data a stage uses for ``model`` (a LoadedModel): ``data`` if given, else the built-in set ``default``.

    The model gives the input shape, task, preprocessing (``model.normalize``)
    and class count; ``default`` is the built-in data set the model's data
    hook names (used when it is here; None otherwise: the stage then falls
    back to what it does without data).

    Example::

        split = split_for(lm, "photos/")          # the user's folder, preprocessed for lm
        split = split_for(lm, default="digits")   # digits-cnn's own data set
    """
    if data is None:
        if not default or not available(default):
            return None
        data = default
    return load_data(data, input_shape=tuple(model.input_shape), task=getattr(model, "task", "classify"),
                     normalize=getattr(model, "normalize", None), num_classes=getattr(model, "num_classes", None),
                     val_data=val_data, val_fraction=val_fraction, limit=limit, seed=seed)
