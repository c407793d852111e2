"""A small EfficientNet-B0, written the way torchvision writes it.

The blocks that matter: ``MBConv`` = 1x1 expansion (SiLU), depthwise conv,
squeeze-excitation (SiLU inside, sigmoid gate), 1x1 projection, and
``StochasticDepth`` (drop-path, row mode) on the residual branch.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn


def _make_divisible(v, divisor=8, min_value=None):
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def stochastic_depth(input, p, mode, training=True):
    if not training or p == 0.0:
        return input
    survival_rate = 1.0 - p
    size = [input.shape[0]] + [1] * (input.ndim - 1) if mode == "row" else [1] * input.ndim
    noise = torch.empty(size, dtype=input.dtype, device=input.device).bernoulli_(survival_rate)
    return input * noise.div_(survival_rate)


class StochasticDepth(nn.Module):
    def __init__(self, p, mode):
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, input):
        return stochastic_depth(input, self.p, self.mode, self.training)


class Conv2dNormActivation(nn.Sequential):
    def __init__(self, in_ch, out_ch, kernel_size=3, stride=1, groups=1, norm_layer=None, activation_layer=nn.SiLU):
        norm_layer = norm_layer or nn.BatchNorm2d
        layers = [nn.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
                  norm_layer(out_ch)]
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, input_channels, squeeze_channels, activation=nn.SiLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, input):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(input)))))
        return scale * input


class MBConv(nn.Module):
    def __init__(self, input_channels, out_channels, expand_ratio, kernel, stride, stochastic_depth_prob,
                 norm_layer):
        super().__init__()
        self.use_res_connect = stride == 1 and input_channels == out_channels
        layers = []
        expanded_channels = _make_divisible(input_channels * expand_ratio, 8)
        if expanded_channels != input_channels:
            layers.append(Conv2dNormActivation(input_channels, expanded_channels, 1, norm_layer=norm_layer))
        layers.append(Conv2dNormActivation(expanded_channels, expanded_channels, kernel, stride,
                                           groups=expanded_channels, norm_layer=norm_layer))
        squeeze_channels = max(1, input_channels // 4)
        layers.append(SqueezeExcitation(expanded_channels, squeeze_channels, activation=partial(nn.SiLU, inplace=True)))
        layers.append(Conv2dNormActivation(expanded_channels, out_channels, 1, norm_layer=norm_layer,
                                           activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")
        self.out_channels = out_channels

    def forward(self, input):
        result = self.block(input)
        if self.use_res_connect:
            result = self.stochastic_depth(result)
            result += input
        return result


class EfficientNet(nn.Module):
    # expand_ratio, kernel, stride, in, out, layers: EfficientNet-B0's first five stages
    SETTING = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 1),
               (6, 5, 1, 80, 112, 1)]

    def __init__(self, num_classes=10, stochastic_depth_prob=0.2, dropout=0.2):
        super().__init__()
        norm_layer = nn.BatchNorm2d
        layers = [Conv2dNormActivation(3, 32, 3, 2, norm_layer=norm_layer)]
        total = sum(s[-1] for s in self.SETTING)
        stage_block_id = 0
        for e, k, s, cin, cout, n in self.SETTING:
            stage = []
            for i in range(n):
                sd_prob = stochastic_depth_prob * float(stage_block_id) / total
                stage.append(MBConv(cin if i == 0 else cout, cout, e, k, s if i == 0 else 1, sd_prob, norm_layer))
                stage_block_id += 1
            layers.append(nn.Sequential(*stage))
        last_in = self.SETTING[-1][4]
        last_out = 4 * last_in
        layers.append(Conv2dNormActivation(last_in, last_out, 1, norm_layer=norm_layer))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(last_out, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                init_range = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -init_range, init_range)

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def efficientnet_b0_like() -> EfficientNet:
    return EfficientNet()
