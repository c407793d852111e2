"""MobileNetV3-Small, written the way torchvision writes it.

The blocks that matter: inverted residuals with hard-swish, a squeeze-excitation
whose gate is a hard-sigmoid (``SqueezeExcitation`` with ``fc1``/``fc2`` 1x1
convs), and a classifier ``Linear -> Hardswish -> Dropout -> Linear``.
"""

from __future__ import annotations

from functools import partial

from torch import nn


def _make_divisible(v, divisor=8, min_value=None):
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class Conv2dNormActivation(nn.Sequential):
    def __init__(self, in_ch, out_ch, kernel_size=3, stride=1, groups=1, norm_layer=None, activation_layer=nn.ReLU):
        norm_layer = norm_layer or nn.BatchNorm2d
        layers = [nn.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
                  norm_layer(out_ch)]
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_ch


class SqueezeExcitation(nn.Module):
    def __init__(self, input_channels, squeeze_channels, activation=nn.ReLU, scale_activation=nn.Hardsigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, input):
        scale = self.avgpool(input)
        scale = self.fc1(scale)
        scale = self.activation(scale)
        scale = self.fc2(scale)
        return self.scale_activation(scale) * input


class InvertedResidualConfig:
    def __init__(self, input_channels, kernel, expanded_channels, out_channels, use_se, activation, stride):
        self.input_channels = _make_divisible(input_channels)
        self.kernel = kernel
        self.expanded_channels = _make_divisible(expanded_channels)
        self.out_channels = _make_divisible(out_channels)
        self.use_se = use_se
        self.use_hs = activation == "HS"
        self.stride = stride


class InvertedResidual(nn.Module):
    def __init__(self, cnf, norm_layer, se_layer=None):
        super().__init__()
        se_layer = se_layer or partial(SqueezeExcitation, scale_activation=nn.Hardsigmoid)
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        layers = []
        activation_layer = nn.Hardswish if cnf.use_hs else nn.ReLU
        if cnf.expanded_channels != cnf.input_channels:
            layers.append(Conv2dNormActivation(cnf.input_channels, cnf.expanded_channels, 1,
                                               norm_layer=norm_layer, activation_layer=activation_layer))
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.expanded_channels, cnf.kernel, cnf.stride,
                                           groups=cnf.expanded_channels, norm_layer=norm_layer,
                                           activation_layer=activation_layer))
        if cnf.use_se:
            squeeze_channels = _make_divisible(cnf.expanded_channels // 4, 8)
            layers.append(se_layer(cnf.expanded_channels, squeeze_channels))
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.out_channels, 1, norm_layer=norm_layer,
                                           activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = cnf.out_channels

    def forward(self, input):
        result = self.block(input)
        if self.use_res_connect:
            result += input
        return result


class MobileNetV3(nn.Module):
    def __init__(self, settings, last_channel, num_classes=10, dropout=0.2):
        super().__init__()
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        layers = [Conv2dNormActivation(3, settings[0].input_channels, 3, 2, norm_layer=norm_layer,
                                       activation_layer=nn.Hardswish)]
        for cnf in settings:
            layers.append(InvertedResidual(cnf, norm_layer))
        lastconv_in = settings[-1].out_channels
        lastconv_out = 6 * lastconv_in
        layers.append(Conv2dNormActivation(lastconv_in, lastconv_out, 1, norm_layer=norm_layer,
                                           activation_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(lastconv_out, last_channel), nn.Hardswish(inplace=True), nn.Dropout(p=dropout, inplace=True),
            nn.Linear(last_channel, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = x.flatten(1)
        return self.classifier(x)


def mobilenet_v3_small() -> MobileNetV3:
    c = InvertedResidualConfig
    settings = [
        c(16, 3, 16, 16, True, "RE", 2),
        c(16, 3, 72, 24, False, "RE", 2),
        c(24, 3, 88, 24, False, "RE", 1),
        c(24, 5, 96, 40, True, "HS", 2),
        c(40, 5, 240, 40, True, "HS", 1),
        c(40, 5, 120, 48, True, "HS", 1),
        c(48, 5, 288, 96, True, "HS", 2),
        c(96, 5, 576, 96, True, "HS", 1),
    ]
    return MobileNetV3(settings, last_channel=1024)
