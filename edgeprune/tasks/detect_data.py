"""Detection data users have: a YOLO-format folder (with its ``data.yaml``), COCO JSON, or plain images.

``open_detection(spec, input_shape=...)`` reads what ``--data`` points at
and returns a :class:`~edgeprune.data.dataset.DataSplit` of
:class:`DetectionDataset` (the same split object classification uses, so a
stage reads ``split.train`` / ``split.val`` / ``split.heldout`` either way):

=====================================  ===================================================
``--data``                             read as
=====================================  ===================================================
``data.yaml`` (or a folder holding     Ultralytics' dataset file: ``path`` (root; relative
one)                                   to the yaml's folder), ``train`` / ``val`` / ``test``
                                       (an image folder, a ``.txt`` list of images, or a
                                       list of either), ``names`` (list or ``{id: name}``).
                                       Labels: each image's path with its last ``images``
                                       folder replaced by ``labels`` and the suffix by
                                       ``.txt`` (Ultralytics' rule); polygon (segment)
                                       lines count as their boxes
a folder with ``images/`` and          one set, split train/val seeded; class names from
``labels/`` (no yaml)                  ``classes.txt`` if present, else the model's count
``instances.json`` (COCO)              ``images`` / ``annotations`` / ``categories``; image
                                       files at ``file_name`` relative to the JSON's folder,
                                       its parent's ``<split>/`` (``annotations/instances_val
                                       2017.json`` -> ``val2017/``) or ``images/``; category
                                       ids mapped to 0..n-1 in id order; ``iscrowd`` boxes
                                       kept for evaluation only
a folder of images (no ``labels/``)    unlabelled: distillation and agreement only
=====================================  ===================================================

Every label is checked when the data is opened, before any work: a
malformed line, a box outside the image, a class id the names do not
have, an image without its label file (a background image needs an empty
one, as Ultralytics writes) are one :class:`DataError` line naming the file
(and how many other files have problems; every problem is in
``error.details["problems"]``).

Inputs are letterboxed to the model's size (:mod:`edgeprune.tasks.letterbox`),
RGB (or grey for a 1-channel model), scaled to [0, 1], no mean/std: what
Ultralytics feeds its models. ``ds.get(idx)`` returns ``(x, targets)``:
``targets`` is ``(M, 6)`` float32 ``[image index in batch, class, cx, cy, w, h]``
normalised to the letterboxed input (Ultralytics' collated batch), ``None``
when unlabelled. Ground truth for evaluation stays in source pixels
(:meth:`DetectionDataset.ground_truth`), mapped back from the model's
input with :meth:`DetectionDataset.letterbox`.

The readers are :mod:`edgeprune.tasks.detect_formats`, the dataset value
:mod:`edgeprune.tasks.detect_dataset`; this module decides which reader a
``--data`` value needs and makes the split.

Example::

    split = open_detection("coco8/data.yaml", input_shape=(1, 3, 320, 320))
    x, t = split.train.get([0, 1])       # (2, 3, 320, 320), (M, 6)
    split.train.classes                  # ['person', 'bicycle', ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.data import load_data
from edgeprune.data.builtin import BUILTIN
from edgeprune.data.dataset import DataError, Dataset, DataSplit
from edgeprune.data.fmnist_det import builtin_path
from edgeprune.tasks.detect_dataset import DetectionDataset, augment_batch
from edgeprune.tasks.detect_formats import (
    _from_coco,
    _from_yaml,
    _from_yolo_folder,
    _unlabelled,
    label_path,
    read_yolo_labels,
)
from edgeprune.tasks.letterbox import PAD_VALUE


def _seeded_split(ds: DetectionDataset, fraction: float, seed: int) -> tuple[DetectionDataset, DetectionDataset]:
    if len(ds) < 2:
        raise DataError(f"{ds.source}: {len(ds)} image; at least 2 are needed (one to train on, one held out)")
    perm = np.random.default_rng(seed).permutation(len(ds))
    k = max(1, round(len(ds) * fraction))
    return (ds.subset(np.sort(perm[k:]), source=f"{ds.source} train split"),
            ds.subset(np.sort(perm[:k]), source=f"{ds.source} val split"))


def open_detection(spec: str | Path, *, input_shape: tuple[int, ...], num_classes: int | None = None,
                   val_fraction: float = 0.1, seed: int = 0, limit: int | None = None,
                   images: str | Path | None = None, val_data: str | Path | None = None) -> DataSplit:
    """``--data`` for a detector -> a DataSplit of DetectionDataset (see the module docstring).

    ``num_classes`` (the model's) turns a data set with another class count
    into one error; ``images`` gives a COCO JSON's image folder explicitly;
    ``val_data`` (``--val-data``) is the validation set instead of a seeded
    share of ``spec`` (its own val split when it is a data.yaml, else all of it).
    """
    if val_data is not None:
        kw = {"input_shape": input_shape, "num_classes": num_classes, "val_fraction": val_fraction, "seed": seed}
        main, other = open_detection(spec, **kw), open_detection(val_data, **kw)
        given = other.val if other.info.get("kind") in ("yolo-yaml", "builtin") else other.train.concat(other.val)
        if main.info.get("kind") not in ("yolo-yaml", "builtin"):
            main.train = main.train.concat(main.val, source=f"{spec}")
        if main.train.classes and given.classes and main.train.classes != given.classes and given.labelled:
            raise DataError(f"--val-data {val_data}: classes {given.classes[:4]} differ from --data's "
                            f"{main.train.classes[:4]}")
        main.val = given
        main.info.update(split="given", val_data=str(val_data))
        if limit:
            main.train, main.val = (d.subset(np.arange(min(limit, len(d)))) for d in (main.train, main.val))
        return main

    input_size = (int(input_shape[2]), int(input_shape[3]))
    channels = int(input_shape[1])
    text = str(spec)
    path = Path(text).expanduser()
    info: dict[str, Any] = {"source": text, "preprocess": f"letterbox {input_size[0]}x{input_size[1]} "
                                                         f"(pad {PAD_VALUE}), RGB/255"}
    if text in DETECT_BUILTIN:
        path = builtin_path(text)
        info["kind"] = "builtin"
    yaml_file = path if path.suffix in (".yaml", ".yml") else (path / "data.yaml" if path.is_dir() else None)
    if yaml_file is not None and yaml_file.is_file():
        parts = _from_yaml(yaml_file, input_size=input_size, channels=channels)
        info.setdefault("kind", "yolo-yaml")
        info["split"] = f"given by {yaml_file.name}"
        if "test" not in parts and "val" in parts:
            info["note"] = "no test split in the yaml: val is the held-out set (early stopping also reads it)"
        split = DataSplit(parts["train"], parts["val"], parts.get("test"), info=info)
    elif path.suffix.lower() == ".json" and path.is_file():
        ds = _from_coco(path, input_size=input_size, channels=channels,
                        images=Path(images).expanduser() if images else None)
        train, val = _seeded_split(ds, val_fraction, seed)
        info.update(kind="coco-json", split="seeded", seed=seed, val_fraction=val_fraction)
        split = DataSplit(train, val, None, info=info)
    elif path.is_dir() and (path / "images").is_dir() and (path / "labels").is_dir():
        ds = _from_yolo_folder(path, input_size=input_size, channels=channels, num_classes=num_classes)
        train, val = _seeded_split(ds, val_fraction, seed)
        info.update(kind="yolo-folder", split="seeded", seed=seed, val_fraction=val_fraction)
        split = DataSplit(train, val, None, info=info)
    elif path.is_dir():
        ds = _unlabelled(path, input_size=input_size, channels=channels)
        train, val = _seeded_split(ds, val_fraction, seed)
        info.update(kind="image-folder", split="seeded", seed=seed, val_fraction=val_fraction)
        split = DataSplit(train, val, None, info=info)
    elif not path.exists():
        raise DataError(f"--data {text}: not found (a data.yaml, a folder with images/ and labels/, a COCO "
                        f"instances .json, a folder of images, or a built-in data set: "
                        f"{', '.join((*BUILTIN, *DETECT_BUILTIN))})")
    else:
        raise DataError(f"--data {text}: not a data.yaml, a COCO .json or a folder of images")
    for part in (split.train, split.val, split.test):
        if part is not None and part.labelled and num_classes is not None and part.num_classes not in (None, num_classes):
            raise DataError(f"{part.source}: {part.num_classes} classes ({', '.join((part.classes or [])[:4])}, ...) "
                            f"but the model detects {num_classes}")
    if limit:
        split.train = split.train.subset(np.arange(min(limit, len(split.train))))
        split.val = split.val.subset(np.arange(min(limit, len(split.val))))
        if split.test is not None:
            split.test = split.test.subset(np.arange(min(limit, len(split.test))))
        info["limit"] = limit
    return split


DETECT_BUILTIN = ("fmnist-det",)

__all__ = ["DETECT_BUILTIN", "DetectionDataset", "augment_batch", "label_path", "open_detection",
           "read_yolo_labels"]


def _detection_source(spec: Any) -> bool:
    """A detector's ``--data`` that :mod:`edgeprune.tasks.detect_data` reads (boxes, or letterboxed images)."""
    if isinstance(spec, Dataset):
        return False
    path = Path(str(spec)).expanduser()
    if str(spec) in DETECT_BUILTIN or path.suffix in (".yaml", ".yml", ".json") or (path / "data.yaml").is_file():
        return True
    return path.is_dir() and not any(p.is_dir() for p in path.iterdir() if p.name not in ("images", "labels"))



def open_split(spec: Any, *, input_shape: tuple[int, ...], num_classes: int | None = None, normalize: Any = None,
               val_data: Any = None, val_fraction: float = 0.1, seed: int = 0, limit: int | None = None) -> DataSplit:
    """The detect task's ``open_data``: a detector's own formats through :func:`open_detection` (boxes,
    letterbox); anything else (class folders, arrays, factories) through :func:`edgeprune.data.load_data`,
    labels dropped (a detector is then measured by agreement with its original)."""
    if _detection_source(spec) and (val_data is None or _detection_source(val_data)):
        return open_detection(spec, input_shape=input_shape, num_classes=num_classes, val_fraction=val_fraction,
                              seed=seed, limit=limit, val_data=val_data)
    return load_data(spec, input_shape=input_shape, task="detect", normalize=normalize, val_data=val_data,
                     val_fraction=val_fraction, seed=seed, limit=limit)
