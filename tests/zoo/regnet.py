"""A small RegNet, written the way torchvision writes ``RegNet`` (RegNetY: with squeeze-excitation).

The blocks that matter: ``ResBottleneckBlock`` = 1x1 conv, a *grouped* 3x3
conv (``groups = width // group_width``, neither 1 nor depthwise), SE, 1x1
conv, plus a projection shortcut when the shape changes.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


class Conv2dNormActivation(nn.Sequential):
    def __init__(self, in_ch, out_ch, kernel_size=3, stride=1, groups=1, activation=nn.ReLU):
        layers = [
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_ch


class SqueezeExcitation(nn.Module):
    def __init__(self, input_channels, squeeze_channels, activation=nn.ReLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, input):
        scale = self.avgpool(input)
        scale = self.fc1(scale)
        scale = self.activation(scale)
        scale = self.fc2(scale)
        return self.scale_activation(scale)

    def forward(self, input):
        return self._scale(input) * input


class BottleneckTransform(nn.Sequential):
    def __init__(self, width_in, width_out, stride, group_width, bottleneck_multiplier, se_ratio):
        w_b = int(round(width_out * bottleneck_multiplier))
        g = w_b // group_width
        layers = {
            "a": Conv2dNormActivation(width_in, w_b, kernel_size=1),
            "b": Conv2dNormActivation(w_b, w_b, kernel_size=3, stride=stride, groups=g),
        }
        if se_ratio:
            layers["se"] = SqueezeExcitation(w_b, int(round(se_ratio * width_in)))
        layers["c"] = Conv2dNormActivation(w_b, width_out, kernel_size=1, activation=None)
        super().__init__(OrderedDict(layers))


class ResBottleneckBlock(nn.Module):
    def __init__(self, width_in, width_out, stride, group_width=8, bottleneck_multiplier=1.0, se_ratio=0.25):
        super().__init__()
        self.proj = None
        if width_in != width_out or stride != 1:
            self.proj = Conv2dNormActivation(width_in, width_out, kernel_size=1, stride=stride, activation=None)
        self.f = BottleneckTransform(width_in, width_out, stride, group_width, bottleneck_multiplier, se_ratio)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x):
        if self.proj is not None:
            x = self.proj(x) + self.f(x)
        else:
            x = x + self.f(x)
        return self.activation(x)


class AnyStage(nn.Sequential):
    def __init__(self, width_in, width_out, stride, depth, group_width):
        super().__init__()
        for i in range(depth):
            self.add_module(f"block{i + 1}", ResBottleneckBlock(
                width_in if i == 0 else width_out, width_out, stride if i == 0 else 1, group_width))


class RegNet(nn.Module):
    def __init__(self, widths=(48, 104, 208, 440), depths=(1, 1, 2, 1), group_width=8, num_classes=10):
        super().__init__()
        self.stem = Conv2dNormActivation(3, 32, kernel_size=3, stride=2)
        blocks, w_in = [], 32
        for i, (w, d) in enumerate(zip(widths, depths, strict=True)):
            blocks.append((f"block{i + 1}", AnyStage(w_in, w, 2, d, group_width)))
            w_in = w
        self.trunk_output = nn.Sequential(OrderedDict(blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(w_in, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.trunk_output(x)
        x = self.avgpool(x)
        x = x.flatten(start_dim=1)
        return self.fc(x)


def regnety_400mf_like() -> RegNet:
    """RegNetY-400MF widths and group width 8, fewer blocks."""
    return RegNet()
