"""Raw pixels -> model inputs: channels, size, scale and normalisation, one batch at a time.

Every data kind ends here, so that a folder of JPEGs, a uint8 ``.npz`` and a
built-in data set reach the model through the same steps:

1. ``uint8`` pixels (0-255) are scaled to [0, 1]; float pixels are taken as
   already in [0, 1];
2. grey -> RGB by repeating the channel, RGB -> grey by ITU-R BT.601 luma,
   so that Fashion-MNIST feeds a 3-channel ImageNet network and a colour
   photo feeds a 1-channel one;
3. resized to the model's H x W (bilinear; antialiased when shrinking);
4. normalised: ``imagenet`` (torchvision's mean/std, what ImageNet-initialised
   networks expect), ``unit`` (left in [0, 1]) or an explicit
   ``(mean, std)`` per channel.

Arrays already in the model's input space (float NCHW with the model's exact
shape) skip steps 1-4: see :attr:`Preprocess.passthrough`.

Example::

    pre = Preprocess(channels=3, size=(64, 64), normalize="imagenet")
    x = pre(np.zeros((8, 28, 28), np.uint8))      # torch (8, 3, 64, 64) float32
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeprune.data.dataset import DataError

# Lazy imports: the imports inside functions below load torch, which importing this module does not;
# they load only when a function that needs them runs.

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("imagenet", "unit")
_LUMA = (0.299, 0.587, 0.114)


def parse_normalize(value) -> str | tuple[tuple[float, ...], tuple[float, ...]]:
    """'imagenet' | 'unit' | 'MEAN/STD' ('0.5/0.25' or '0.5,0.5,0.5/0.2,0.2,0.2') | (mean, std)."""
    if value is None or value in NORMALIZATIONS:
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return tuple(float(v) for v in np.atleast_1d(value[0])), tuple(float(v) for v in np.atleast_1d(value[1]))
    text = str(value)
    if "/" in text:
        mean, _, std = text.partition("/")
        try:
            m = tuple(float(v) for v in mean.split(","))
            s = tuple(float(v) for v in std.split(","))
        except ValueError:
            m = s = ()
        if m and s and min(s) > 0:
            return m, s
    raise DataError(f"normalisation '{value}': use imagenet, unit, or MEAN/STD such as 0.5/0.25")


@dataclass(frozen=True)
class Preprocess:
    """What the model expects: ``channels``, ``size`` (H, W) and the normalisation."""

    channels: int
    size: tuple[int, int]
    normalize: str | tuple = "unit"

    @classmethod
    def for_model(cls, input_shape: tuple[int, ...], normalize) -> Preprocess:
        return cls(int(input_shape[1]), (int(input_shape[2]), int(input_shape[3])), parse_normalize(normalize) or "unit")

    def _mean_std(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.normalize == "unit":
            return None
        if self.normalize == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
            if self.channels == 1:  # the luma of ImageNet's statistics
                mean, std = (float(np.dot(_LUMA, mean)),), (float(np.dot(_LUMA, std)),)
        else:
            mean, std = self.normalize
        mean = np.array(np.broadcast_to(np.asarray(mean, np.float32), (self.channels,)))
        std = np.array(np.broadcast_to(np.asarray(std, np.float32), (self.channels,)))
        return mean, std

    def describe(self) -> str:
        norm = self.normalize if isinstance(self.normalize, str) else f"mean {self.normalize[0]} std {self.normalize[1]}"
        return f"{self.channels}x{self.size[0]}x{self.size[1]}, {norm}"

    def __call__(self, pixels: np.ndarray, *, layout: str = "auto"):
        """A batch of raw pixels -> torch float32 NCHW. ``pixels``: (N,H,W), (N,H,W,C) or (N,C,H,W)."""
        import torch

        a = np.asarray(pixels)
        x = torch.from_numpy(np.ascontiguousarray(a)).float()
        if a.dtype == np.uint8:
            x = x / 255.0
        if x.ndim == 3:  # (N, H, W) grey
            x = x[:, None]
        elif x.ndim == 4 and (layout == "nhwc" or layout == "auto" and a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4)):
            x = x.permute(0, 3, 1, 2)
        if x.shape[1] == 4:  # RGBA: drop alpha
            x = x[:, :3]
        if x.shape[1] != self.channels:
            if x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            elif x.shape[1] == 3 and self.channels == 1:
                x = (x * torch.tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
            else:
                raise DataError(f"images with {x.shape[1]} channels cannot feed a {self.channels}-channel model")
        if tuple(x.shape[2:]) != self.size:
            shrink = x.shape[2] > self.size[0] or x.shape[3] > self.size[1]
            x = torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False,
                                                antialias=shrink)
        ms = self._mean_std()
        if ms is not None:
            x = (x - torch.from_numpy(ms[0]).view(1, -1, 1, 1)) / torch.from_numpy(ms[1]).view(1, -1, 1, 1)
        return x.contiguous()
