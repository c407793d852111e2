"""Letterboxing: an image of any size into the detector's input, keeping its aspect, and boxes there and back.

Ultralytics' ``LetterBox`` (``ultralytics/data/augment.py``), step for step,
so that a model trained with Ultralytics sees here the pixels it saw there:

1. ``r = min(H / h, W / w)`` (shrink or grow to fit, aspect kept);
2. resized to ``(round(w * r), round(h * r))`` with OpenCV's bilinear
   (``cv2.INTER_LINEAR``), only when the size changes;
3. padded to ``H x W`` with grey 114 on every channel, the padding split
   evenly (``top = round(dh / 2 - 0.1)``, ``left = round(dw / 2 - 0.1)``:
   Ultralytics' rounding, so an odd padding puts the extra pixel at the
   bottom/right).

Boxes go through the same map: ``x_in = x * rx + left``, ``y_in = y * ry + top``
with ``rx = new_w / w`` and ``ry = new_h / h`` (the per-axis ratios after
rounding, as Ultralytics scales its labels), and back with the inverse,
clipped to the source image. A round trip returns the boxes to within float
precision (tests/test_tasks_detect.py checks it).

Example::

    lb = Letterbox.fit((480, 640), (320, 320))   # source h, w -> input H, W
    x = lb.image(rgb_uint8)                      # (320, 320, 3) uint8
    lb.to_input(np.array([[0, 0, 640, 480]]))    # [[0, 40, 320, 280]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeprune.errors import require

PAD_VALUE = 114  # Ultralytics' letterbox grey


@dataclass(frozen=True)
class Letterbox:
    """The map from a source image (``src`` = h, w) into the model input (``dst`` = H, W)."""

    src: tuple[int, int]
    dst: tuple[int, int]
    new: tuple[int, int]  # resized h, w before padding
    top: int
    left: int

    @classmethod
    def fit(cls, src: tuple[int, int], dst: tuple[int, int]) -> Letterbox:
        h, w = int(src[0]), int(src[1])
        hh, ww = int(dst[0]), int(dst[1])
        r = min(hh / h, ww / w)
        nw, nh = round(w * r), round(h * r)
        top, left = round((hh - nh) / 2 - 0.1), round((ww - nw) / 2 - 0.1)
        return cls((h, w), (hh, ww), (nh, nw), top, left)

    @property
    def ratio(self) -> tuple[float, float]:
        """(rx, ry): input pixels per source pixel along x and y."""
        return self.new[1] / self.src[1], self.new[0] / self.src[0]

    def image(self, img: np.ndarray) -> np.ndarray:
        """``img`` (h, w, C) uint8 -> (H, W, C) uint8, letterboxed."""
        cv2 = require("cv2", "detect", "letterboxing images (OpenCV, as Ultralytics)")  # heavy: OpenCV
        if tuple(img.shape[:2]) != self.src:
            raise ValueError(f"image is {img.shape[:2]}, this letterbox is for {self.src}")
        if self.new != self.src:
            img = cv2.resize(img, (self.new[1], self.new[0]), interpolation=cv2.INTER_LINEAR)
        if img.ndim == 2:
            img = img[:, :, None]
        out = np.full((*self.dst, img.shape[2]), PAD_VALUE, dtype=np.uint8)
        out[self.top : self.top + self.new[0], self.left : self.left + self.new[1]] = img.reshape(*self.new, -1)
        return out

    def to_input(self, xyxy: np.ndarray) -> np.ndarray:
        """Boxes ``(K, 4)`` x1, y1, x2, y2 in source pixels -> input pixels."""
        rx, ry = self.ratio
        b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        return b * np.array([rx, ry, rx, ry]) + np.array([self.left, self.top, self.left, self.top])

    def to_source(self, xyxy: np.ndarray, *, clip: bool = True) -> np.ndarray:
        """Boxes ``(K, 4)`` in input pixels -> source pixels (clipped to the source image)."""
        rx, ry = self.ratio
        b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        b = (b - np.array([self.left, self.top, self.left, self.top])) / np.array([rx, ry, rx, ry])
        if clip:
            h, w = self.src
            b = np.clip(b, 0.0, np.array([w, h, w, h], dtype=np.float64))
        return b


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """Centre x, y, width, height -> corners (last axis of size 4)."""
    b = np.asarray(b, dtype=np.float64)
    half = b[..., 2:4] / 2
    return np.concatenate([b[..., :2] - half, b[..., :2] + half], axis=-1)


def xyxy_to_xywh(b: np.ndarray) -> np.ndarray:
    """Corners -> centre x, y, width, height (last axis of size 4)."""
    b = np.asarray(b, dtype=np.float64)
    return np.concatenate([(b[..., :2] + b[..., 2:4]) / 2, b[..., 2:4] - b[..., :2]], axis=-1)


__all__ = ["PAD_VALUE", "Letterbox", "xywh_to_xyxy", "xyxy_to_xywh"]
