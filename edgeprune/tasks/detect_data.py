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

Example::

    split = open_detection("coco8/data.yaml", input_shape=(1, 3, 320, 320))
    x, t = split.train.get([0, 1])       # (2, 3, 320, 320), (M, 6)
    split.train.classes                  # ['person', 'bicycle', ...]
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.data.dataset import AUGMENTS, DataError, Dataset, DataSplit
from edgeprune.tasks.letterbox import PAD_VALUE, Letterbox, xywh_to_xyxy, xyxy_to_xywh

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
EDGE_TOLERANCE = 0.01  # a box corner may pass the image edge by 1 % of its side (annotation tools round)


class DetectionDataset(Dataset):
    """Images with boxes (or without), letterboxed to the model's input when a batch asks for them.

    ``labels[i]``: ``(K, 6)`` float64 ``[class, x1, y1, x2, y2, crowd]`` in
    source pixels, or the whole list None (unlabelled).
    """

    def __init__(self, files: list[Path], sizes: list[tuple[int, int]], labels: list[np.ndarray] | None, *,
                 input_size: tuple[int, int], channels: int = 3, classes: list[str] | None = None,
                 source: str = "") -> None:
        self.files = list(files)
        self.sizes = list(sizes)
        self.labels = labels
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.channels = int(channels)
        self.classes = classes
        self.source = source
        self._num_classes = len(classes) if classes else None

    # -- the Dataset interface ------------------------------------------------------
    def _n(self) -> int:
        return len(self.files)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    @property
    def y(self) -> None:  # no class per image: boxes are in ``labels``
        return None

    def letterbox(self, i: int) -> Letterbox:
        return Letterbox.fit(self.sizes[i], self.input_size)

    def _pixels(self, i: int) -> np.ndarray:
        """Image ``i`` decoded, RGB (or grey) uint8 (h, w, C)."""
        from edgeprune.errors import require

        image_mod = require("PIL.Image", "detect", "reading image files")
        ops = require("PIL.ImageOps", "detect", "reading image files")
        path = self.files[i]
        try:
            with image_mod.open(path) as im:
                im = ops.exif_transpose(im).convert("L" if self.channels == 1 else "RGB")
                a = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{path}: cannot decode this image ({type(exc).__name__}: {exc}); "
                            "remove or replace the file") from None
        if tuple(a.shape[:2]) != self.sizes[i]:
            raise DataError(f"{path}: the image changed since the data set was opened "
                            f"({a.shape[1]}x{a.shape[0]}, was {self.sizes[i][1]}x{self.sizes[i][0]})")
        return a if a.ndim == 3 else a[:, :, None]

    def _fetch(self, idx: np.ndarray):
        import torch

        imgs = [self.letterbox(int(i)).image(self._pixels(int(i))) for i in idx]
        x = torch.from_numpy(np.ascontiguousarray(np.stack(imgs).transpose(0, 3, 1, 2))).float() / 255.0
        return x.contiguous()

    def targets(self, idx: Sequence[int]):
        """``(M, 6)`` float32 ``[batch index, class, cx, cy, w, h]``, normalised to the input (crowd boxes left out)."""
        import torch

        hh, ww = self.input_size
        rows = []
        for b, i in enumerate(idx):
            lab = self.labels[int(i)]
            lab = lab[lab[:, 5] == 0]
            if not len(lab):
                continue
            box = xyxy_to_xywh(self.letterbox(int(i)).to_input(lab[:, 1:5])) / np.array([ww, hh, ww, hh])
            rows.append(np.concatenate([np.full((len(lab), 1), b), lab[:, :1], box], axis=1))
        t = np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 6), np.float32)
        return torch.from_numpy(t)

    def get(self, indices: Sequence[int] | np.ndarray):
        idx = np.asarray(indices, dtype=np.int64)
        return self._fetch(idx), (self.targets(idx) if self.labelled else None)

    def ground_truth(self, i: int) -> np.ndarray:
        """Image ``i``'s boxes, ``(K, 6)`` ``[class, x1, y1, x2, y2, crowd]`` in source pixels."""
        if not self.labelled:
            raise DataError(f"{self.source}: unlabelled images have no ground truth")
        return self.labels[int(i)]

    def subset(self, indices: Sequence[int] | np.ndarray, *, source: str | None = None,
               drop_labels: bool = False) -> DetectionDataset:
        idx = [int(i) for i in np.asarray(indices, dtype=np.int64)]
        labels = None if (drop_labels or self.labels is None) else [self.labels[i] for i in idx]
        return DetectionDataset([self.files[i] for i in idx], [self.sizes[i] for i in idx], labels,
                                input_size=self.input_size, channels=self.channels,
                                classes=None if drop_labels else self.classes, source=source or self.source)

    def concat(self, other: DetectionDataset, *, source: str | None = None) -> DetectionDataset:
        """This set followed by ``other`` (same input size; labels kept only when both have them)."""
        labels = self.labels + other.labels if self.labelled and other.labelled else None
        return DetectionDataset(self.files + other.files, self.sizes + other.sizes, labels, input_size=self.input_size,
                                channels=self.channels, classes=self.classes or other.classes,
                                source=source or self.source)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, augment: str | None = None,
                limit: int | None = None, start: int = 0) -> Iterator[Any]:
        """``(x, targets)`` (labelled) or ``x``; ``augment`` moves the boxes with the pixels (see :func:`augment`)."""
        n = len(self) if limit is None else min(limit, len(self))
        order = np.random.default_rng(seed).permutation(len(self))[:n] if shuffle else np.arange(n)
        for b, i in enumerate(range(0, n, batch_size)):
            if b < start:
                continue
            x, t = self.get(order[i : i + batch_size])
            if augment and augment != "none":
                x, t = augment_batch(x, t, augment, seed=seed * 100_003 + b)
            yield (x, t) if t is not None else x

    def numpy(self, limit: int | None = None) -> tuple[np.ndarray, None]:
        n = len(self) if limit is None else min(limit, len(self))
        xs = [self._fetch(np.arange(i, min(i + 64, n))).numpy() for i in range(0, n, 64)]
        return (np.concatenate(xs) if xs else np.zeros((0, self.channels, *self.input_size), np.float32)), None

    def describe(self) -> dict[str, Any]:
        boxes = sum(len(b) for b in self.labels) if self.labels is not None else None
        return {"source": self.source, "samples": len(self), "labelled": self.labelled, "boxes": boxes,
                "num_classes": self.num_classes}


def augment_batch(x, targets, how: str, *, seed: int):
    """Training augmentation for detection: horizontal flips and shifts, the boxes moved with the pixels.

    ``shift`` translates each image by up to 1/8 of its side, filling with
    the letterbox grey (what the model sees as padding anyway); a box cut by
    the edge keeps its visible part, and is dropped when less than 40 % of
    it (or less than 2 px) stays. Seeded per batch, like classification's.
    """
    import torch

    if how not in AUGMENTS:
        raise DataError(f"augment '{how}': choose one of {', '.join(AUGMENTS)}")
    g = torch.Generator().manual_seed(int(seed) % (2**63))
    n, _, h, w = x.shape
    t = None if targets is None else targets.clone()
    if "flip" in how:
        flip = torch.rand(n, generator=g) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        if t is not None and len(t):
            f = flip[t[:, 0].long()]
            t[f, 2] = 1.0 - t[f, 2]
    if "shift" in how:
        pad = max(1, min(h, w) // 8)
        dy = torch.randint(-pad, pad + 1, (n,), generator=g)
        dx = torch.randint(-pad, pad + 1, (n,), generator=g)
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=PAD_VALUE / 255.0)
        x = torch.stack([padded[i, :, pad - dy[i] : pad - dy[i] + h, pad - dx[i] : pad - dx[i] + w] for i in range(n)])
        if t is not None and len(t):
            b = t[:, 0].long()
            xyxy = torch.from_numpy(xywh_to_xyxy(t[:, 2:6].numpy())).float()
            xyxy += torch.stack([dx[b] / w, dy[b] / h, dx[b] / w, dy[b] / h], 1)
            area0 = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
            xyxy = xyxy.clamp(0.0, 1.0)
            bw, bh = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
            keep = (bw * w >= 2) & (bh * h >= 2) & (bw * bh >= 0.4 * area0)
            t = torch.cat([t[:, :2], torch.from_numpy(xyxy_to_xywh(xyxy.numpy())).float()], 1)[keep]
    return x.contiguous(), t


# -- reading files ------------------------------------------------------------------

class _Problems:
    """Every bad label found while opening, reported as one line (the first) with the count."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        self.items.append(text)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        more = len(self.items) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''}: fix them all, see the error's details)" \
            if more else ""
        raise DataError(self.items[0] + tail, details={"problems": self.items[:1000]})


def _image_size(path: Path) -> tuple[int, int]:
    """(h, w) of the image as shown (EXIF orientation applied), from its header."""
    from edgeprune.errors import require

    image_mod = require("PIL.Image", "detect", "reading image files")
    try:
        with image_mod.open(path) as im:
            w, h = im.size
            orient = im.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot decode this image ({type(exc).__name__}); remove or replace the file") from None
    return (w, h) if orient in (5, 6, 7, 8) else (h, w)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder in the path becomes ``labels``, the suffix ``.txt``."""
    parts = list(image.parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def read_yolo_labels(path: Path, size: tuple[int, int], num_classes: int | None, problems: _Problems,
                     names_from: str) -> np.ndarray:
    """One label file -> ``(K, 6)`` source-pixel boxes; each problem is added to ``problems``."""
    h, w = size
    rows = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(f"{path}: cannot read this label file ({type(exc).__name__})")
        return np.zeros((0, 6))
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            vals = [float(v) for v in fields]
        except ValueError:
            vals = []
        polygon = len(vals) >= 7 and len(vals) % 2 == 1  # a segment label: its box, as Ultralytics reads it
        if not (len(vals) == 5 or polygon) or not all(np.isfinite(vals)):
            problems.add(f"{path} line {n}: expected 'class cx cy w h' (5 numbers) or 'class x1 y1 x2 y2 ...' "
                         f"(a polygon), got '{line.strip()[:60]}'")
            continue
        if polygon:
            xs, ys = np.asarray(vals[1::2]), np.asarray(vals[2::2])
            if xs.min() < 0 or ys.min() < 0 or xs.max() > 1 or ys.max() > 1:
                problems.add(f"{path} line {n}: polygon point outside the image (values must be within 0-1)")
                continue
            vals = [vals[0], (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2, np.ptp(xs), np.ptp(ys)]
        c, cx, cy, bw, bh = vals
        if c != int(c) or c < 0 or (num_classes is not None and c >= num_classes):
            known = f"0-{num_classes - 1}" if num_classes else "whole numbers from 0"
            problems.add(f"{path} line {n}: class {fields[0]} is not in {names_from} ({known})")
            continue
        x1, y1, x2, y2 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
        if (min(cx, cy, bw, bh) < 0 or max(cx, cy, bw, bh) > 1 or min(x1, y1) < -EDGE_TOLERANCE
                or max(x2, y2) > 1 + EDGE_TOLERANCE):
            problems.add(f"{path} line {n}: box {cx:g} {cy:g} {bw:g} {bh:g} is outside the image "
                         "(YOLO boxes are centre x, y, width, height normalised to 0-1 by the image's size)")
            continue
        box = np.clip([x1 * w, y1 * h, x2 * w, y2 * h], 0, [w, h, w, h])
        if box[2] <= box[0] or box[3] <= box[1]:
            problems.add(f"{path} line {n}: box {cx:g} {cy:g} {bw:g} {bh:g} has no area")
            continue
        rows.append([c, *box, 0.0])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6)


def _yolo_set(files: list[Path], *, num_classes: int | None, names_from: str, problems: _Problems,
              need_labels: bool = True) -> tuple[list[tuple[int, int]], list[np.ndarray]]:
    sizes, labels = [], []
    for f in files:
        size = _image_size(f)
        sizes.append(size)
        lp = label_path(f)
        if not lp.is_file():
            if need_labels:
                problems.add(f"{f}: no label file {lp}; an image without objects needs an empty one")
            labels.append(np.zeros((0, 6)))
            continue
        labels.append(read_yolo_labels(lp, size, num_classes, problems, names_from))
    return sizes, labels


def _names(value, where: str) -> list[str]:
    if isinstance(value, dict):
        try:
            ids = sorted(int(k) for k in value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: 'names' keys must be class ids 0..n-1") from None
        if ids != list(range(len(ids))):
            raise DataError(f"{where}: 'names' ids must be 0..{len(ids) - 1} without gaps, got {ids[:6]}")
        return [str(value.get(i, value.get(str(i)))) for i in ids]
    if isinstance(value, (list, tuple)) and value:
        return [str(v) for v in value]
    raise DataError(f"{where}: 'names' must list the class names (a list, or {{0: name, ...}})")


def _split_files(entry, root: Path, where: str, key: str) -> list[Path]:
    entries = entry if isinstance(entry, (list, tuple)) else [entry]
    files: list[Path] = []
    for e in entries:
        p = Path(str(e)).expanduser()
        p = p if p.is_absolute() else root / p
        if not p.exists() and str(e).startswith("../"):  # Roboflow's exports: '../train/images' beside the yaml
            p = root / str(e)[3:]
        if p.is_dir():
            found = _images_under(p)
            if not found:
                raise DataError(f"{where}: '{key}' folder {p} has no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...)")
            files += found
        elif p.is_file() and p.suffix == ".txt":
            for line in p.read_text().splitlines():
                if line.strip():
                    q = Path(line.strip())
                    q = q if q.is_absolute() else p.parent / q  # './images/x.jpg': beside the list, as Ultralytics
                    if not q.is_file():
                        raise DataError(f"{p}: lists {line.strip()}, which is not a file ({q})")
                    files.append(q)
        else:
            raise DataError(f"{where}: '{key}' is {e}: no such folder or .txt list (looked at {p})")
    return files


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: not a readable YAML file ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected keys path/train/val/names (Ultralytics' dataset file)")
    return data


def _from_yaml(path: Path, *, input_size, channels) -> dict[str, DetectionDataset]:
    data = _read_yaml(path)
    root = Path(str(data.get("path") or ".")).expanduser()
    root = root if root.is_absolute() else (path.parent / root)
    if "names" not in data:
        raise DataError(f"{path}: no 'names' (the class names, e.g. names: {{0: person, 1: car}})")
    names = _names(data["names"], str(path))
    if "nc" in data and int(data["nc"]) != len(names):
        raise DataError(f"{path}: nc is {data['nc']} but 'names' lists {len(names)} classes")
    for key in ("train", "val"):
        if not data.get(key):
            raise DataError(f"{path}: no '{key}' (an image folder or a .txt list, relative to {root})")
    problems = _Problems()
    parts: dict[str, DetectionDataset] = {}
    for key in ("train", "val", "test"):
        if not data.get(key):
            continue
        files = _split_files(data[key], root, str(path), key)
        sizes, labels = _yolo_set(files, num_classes=len(names), names_from=f"{path.name}'s names", problems=problems)
        parts[key] = DetectionDataset(files, sizes, labels, input_size=input_size, channels=channels, classes=names,
                                      source=f"{path} {key}")
    problems.raise_if_any()
    return parts


def _from_yolo_folder(folder: Path, *, input_size, channels, num_classes: int | None) -> DetectionDataset:
    files = _images_under(folder / "images")
    if not files:
        raise DataError(f"{folder / 'images'}: no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...)")
    names = None
    if (folder / "classes.txt").is_file():
        names = [n.strip() for n in (folder / "classes.txt").read_text().splitlines() if n.strip()]
    nc = len(names) if names else num_classes
    problems = _Problems()
    where = f"{folder / 'classes.txt'}" if names else ("the model's classes" if nc else "")
    sizes, labels = _yolo_set(files, num_classes=nc, names_from=where, problems=problems)
    problems.raise_if_any()
    if names is None:
        top = max((int(b[:, 0].max()) + 1 for b in labels if len(b)), default=1)
        names = [str(i) for i in range(max(top, nc or 0))]
    return DetectionDataset(files, sizes, labels, input_size=input_size, channels=channels, classes=names,
                            source=f"{folder} (YOLO labels)")


def _coco_image_root(path: Path, data: dict) -> Path:
    first = next((im.get("file_name") for im in data.get("images", []) if im.get("file_name")), None)
    stem = path.stem.split("_", 1)[1] if path.stem.startswith("instances_") else path.stem
    candidates = [path.parent, path.parent.parent / stem, path.parent / "images", path.parent.parent / "images",
                  path.parent / stem]
    for c in candidates:
        if first is None or (c / first).is_file():
            return c
    raise DataError(f"{path}: cannot find its images (looked for {first} in "
                    f"{', '.join(str(c) for c in candidates)}); put the JSON beside its image folder")


def _from_coco(path: Path, *, input_size, channels, images: Path | None = None) -> DetectionDataset:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
            data.get("categories"), list):
        raise DataError(f"{path}: not a COCO instances file (expected 'images', 'annotations', 'categories')")
    try:
        cats = sorted(data["categories"], key=lambda c: int(c["id"]))
        cat_index = {int(c["id"]): k for k, c in enumerate(cats)}
        names = [str(c.get("name", c["id"])) for c in cats]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: every category needs an integer 'id' (and a 'name')") from None
    root = images or _coco_image_root(path, data)
    problems = _Problems()
    ims: dict[int, dict] = {}
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            problems.add(f"{path}: an image entry without 'id' and 'file_name': {str(im)[:60]}")
            continue
        ims[im["id"]] = im
    files, sizes, labels, order = [], [], [], {}
    for iid, im in ims.items():
        f = root / str(im["file_name"])
        if not f.is_file():
            problems.add(f"{path}: image {iid} is {im['file_name']}, not found in {root}")
            continue
        order[iid] = len(files)
        files.append(f)
        sizes.append(_image_size(f))
        labels.append([])
    for k, a in enumerate(data.get("annotations") or []):
        where = f"{path} annotation {a.get('id', k) if isinstance(a, dict) else k}"
        if not isinstance(a, dict) or a.get("image_id") not in ims:
            problems.add(f"{where}: image_id {a.get('image_id') if isinstance(a, dict) else '?'} is not in 'images'")
            continue
        if a["image_id"] not in order:
            continue  # its image is missing: reported above
        try:
            cat = cat_index[int(a["category_id"])]
        except (KeyError, TypeError, ValueError):
            problems.add(f"{where}: category_id {a.get('category_id')} is not in 'categories'")
            continue
        bbox = a.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
            problems.add(f"{where}: bbox must be [x, y, width, height] in pixels, got {str(bbox)[:40]}")
            continue
        h, w = sizes[order[a["image_id"]]]
        x, y, bw, bh = (float(v) for v in bbox)
        tol_w, tol_h = EDGE_TOLERANCE * w, EDGE_TOLERANCE * h
        if bw <= 0 or bh <= 0 or x < -tol_w or y < -tol_h or x + bw > w + tol_w or y + bh > h + tol_h:
            problems.add(f"{where}: bbox {[round(v, 1) for v in bbox]} is outside its {w}x{h} image "
                         "(COCO boxes are [x, y, width, height] in pixels)")
            continue
        box = np.clip([x, y, x + bw, y + bh], 0, [w, h, w, h])
        labels[order[a["image_id"]]].append([cat, *box, float(bool(a.get("iscrowd", 0)))])
    problems.raise_if_any()
    if not files:
        raise DataError(f"{path}: no images listed")
    arrays = [np.asarray(b, dtype=np.float64).reshape(-1, 6) for b in labels]
    return DetectionDataset(files, sizes, arrays, input_size=input_size, channels=channels, classes=names,
                            source=f"{path} (COCO)")


def _unlabelled(folder: Path, *, input_size, channels) -> DetectionDataset:
    files = _images_under(folder)
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...) and no labels")
    sizes = [_image_size(f) for f in files]
    return DetectionDataset(files, sizes, None, input_size=input_size, channels=channels,
                            source=f"{folder} (unlabelled images)")


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
    from edgeprune.data.builtin import BUILTIN

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
        from edgeprune.data.fmnist_det import builtin_path

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
