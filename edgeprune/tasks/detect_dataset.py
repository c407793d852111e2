"""The dataset value for detection: images with boxes, letterboxed when a batch asks for them.

:class:`DetectionDataset` has the interface of :class:`edgeprune.data.dataset.Dataset`
(``len``, ``labelled``, ``classes``, ``num_classes``, ``source``, ``get``,
``batches``, ``numpy``, ``subset``), so a stage that reads a classification
split reads a detection split the same way. What differs:

- ``ds.get(idx)`` returns ``(x, targets)``: ``x`` float32 NCHW letterboxed to
  the model's input (:mod:`edgeprune.tasks.letterbox`), RGB (or grey for a
  1-channel model) in [0, 1], no mean/std (what Ultralytics feeds its
  models); ``targets`` ``(M, 6)`` float32 ``[image index in batch, class,
  cx, cy, w, h]`` normalised to the letterboxed input (Ultralytics'
  collated batch), crowd boxes left out; ``None`` when unlabelled;
- ``ds.y`` is None (no class per image); ground truth for evaluation stays
  in source pixels: :meth:`DetectionDataset.ground_truth`, mapped from the
  model's input with :meth:`DetectionDataset.letterbox`;
- ``batches(augment=...)`` moves the boxes with the pixels
  (:func:`augment_batch`).

Example::

    x, t = ds.get([0, 1])            # (2, 3, 320, 320), (M, 6)
    ds.letterbox(0).to_source(boxes_in_input_pixels)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.data.dataset import AUGMENTS, DataError, Dataset, shard_bounds
from edgeprune.errors import require
from edgeprune.tasks.letterbox import PAD_VALUE, Letterbox, xywh_to_xyxy, xyxy_to_xywh

# Lazy imports: the imports inside functions below load torch, which importing this module does not;
# they load only when a function that needs them runs.


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
                limit: int | None = None, start: int = 0, part: tuple[int, int] | None = None) -> Iterator[Any]:
        """``(x, targets)`` (labelled) or ``x``; ``augment`` moves the boxes with the pixels (see :func:`augment`).

        ``part=(rank, world)``: only rank's rows of every batch (:func:`~edgeprune.data.dataset.shard_bounds`)
        and their targets, image indices counted from the share's first row. The whole batch is read and
        augmented first, so that ``world`` processes together see exactly one process's batches (each
        decodes the whole batch: simple and exact; the training step, not the decoding, is what the
        processes share out). A share with no rows yields the batch's first row.
        """
        n = len(self) if limit is None else min(limit, len(self))
        order = np.random.default_rng(seed).permutation(len(self))[:n] if shuffle else np.arange(n)
        for b, i in enumerate(range(0, n, batch_size)):
            if b < start:
                continue
            x, t = self.get(order[i : i + batch_size])
            if augment and augment != "none":
                x, t = augment_batch(x, t, augment, seed=seed * 100_003 + b)
            if part is not None:
                x, t = _share(x, t, *shard_bounds(len(x), *part))
            yield (x, t) if t is not None else x

    def numpy(self, limit: int | None = None) -> tuple[np.ndarray, None]:
        n = len(self) if limit is None else min(limit, len(self))
        xs = [self._fetch(np.arange(i, min(i + 64, n))).numpy() for i in range(0, n, 64)]
        return (np.concatenate(xs) if xs else np.zeros((0, self.channels, *self.input_size), np.float32)), None

    def describe(self) -> dict[str, Any]:
        boxes = sum(len(b) for b in self.labels) if self.labels is not None else None
        return {"source": self.source, "samples": len(self), "labelled": self.labelled, "boxes": boxes,
                "num_classes": self.num_classes}


def _share(x, targets, lo: int, hi: int):
    """Rows ``[lo, hi)`` of a batch and their targets (``[image, class, x, y, w, h]`` rows), re-based to ``lo``."""
    if hi <= lo:
        lo, hi = 0, 1
    if targets is None:
        return x[lo:hi], None
    keep = (targets[:, 0] >= lo) & (targets[:, 0] < hi)
    t = targets[keep].clone()
    t[:, 0] -= lo
    return x[lo:hi], t


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


__all__ = ["DetectionDataset", "augment_batch"]
