"""A small YOLOv8-style detector written here (no ultralytics dependency).

The parts that break pruning tools are all present, with ultralytics' names:

- ``Conv``: Conv2d-BatchNorm-SiLU (children ``conv``, ``bn``, ``act``);
- ``C2f``: ``cv1`` whose output is split with ``chunk(2, 1)``, bottlenecks
  with residual adds on the second half, then a concat of every piece into
  ``cv2``; this is the block plain torch-pruning cannot prune
  (:mod:`edgeprune.prune.rewrite` rewrites it);
- ``SPPF``: three chained 5x5 max-pools concatenated;
- a neck with nearest upsampling and concats across scales;
- ``Detect``: a decoupled head (box and class branches per scale), one
  output tensor per scale, ``(1, 4*reg_max + classes, H, W)``.

Widths are yolov8n's (16-256 channels). No trained weights ship offline, so
the built-in model is randomly initialised (seeded).
"""

from __future__ import annotations

import torch
from torch import nn


class Conv(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c2, 3)
        self.cv2 = Conv(c2, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class Detect(nn.Module):
    """Decoupled head: raw per-scale maps (box distribution + class logits)."""

    def __init__(self, nc: int, ch: tuple[int, ...], reg_max: int = 16) -> None:
        super().__init__()
        self.nc, self.reg_max = nc, reg_max
        c2, c3 = max(16, ch[0] // 4, reg_max * 4), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
            for x in ch
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch
        )

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return tuple(
            torch.cat((b(x), c(x)), 1) for x, b, c in zip(xs, self.cv2, self.cv3, strict=True)
        )


class YoloSmall(nn.Module):
    """Backbone (indices 0-9), neck (10-17) and head (18), as in yolov8n.yaml."""

    def __init__(self, nc: int = 80, w: tuple[int, ...] = (16, 32, 64, 128, 256)) -> None:
        super().__init__()
        a, b, c, d, e = w
        self.model = nn.ModuleList(
            [
                Conv(3, a, 3, 2),
                Conv(a, b, 3, 2),
                C2f(b, b, 1, True),  # 0-2
                Conv(b, c, 3, 2),
                C2f(c, c, 2, True),  # 3-4  P3
                Conv(c, d, 3, 2),
                C2f(d, d, 2, True),  # 5-6  P4
                Conv(d, e, 3, 2),
                C2f(e, e, 1, True),
                SPPF(e, e, 5),  # 7-9  P5
                nn.Upsample(scale_factor=2.0, mode="nearest"),
                C2f(e + d, d, 1),  # 10-11
                nn.Upsample(scale_factor=2.0, mode="nearest"),
                C2f(d + c, c, 1),  # 12-13 out P3
                Conv(c, c, 3, 2),
                C2f(c + d, d, 1),  # 14-15 out P4
                Conv(d, d, 3, 2),
                C2f(d + e, e, 1),  # 16-17 out P5
                Detect(nc, (c, d, e)),  # 18
            ]
        )
        self.nc = nc
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):  # distinct per-channel scales, as after training
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.normal_(m.bias, 0.0, 0.1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        x = m[2](m[1](m[0](x)))
        p3 = m[4](m[3](x))
        p4 = m[6](m[5](p3))
        p5 = m[9](m[8](m[7](p4)))
        h4 = m[11](torch.cat((m[10](p5), p4), 1))
        o3 = m[13](torch.cat((m[12](h4), p3), 1))
        o4 = m[15](torch.cat((m[14](o3), h4), 1))
        o5 = m[17](torch.cat((m[16](o4), p5), 1))
        return m[18]([o3, o4, o5])


def yolo_small(nc: int = 80) -> YoloSmall:
    return YoloSmall(nc=nc)
