"""MobileNetV2 (Sandler et al. 2018) for 224-px ImageNet, in the layout of torchvision's
*quantizable* variant after batch-norm folding: every convolution carries the folded bias, and
the activation is ReLU (the quantizable model replaces ReLU6 by ReLU so that it can fuse
conv + ReLU). Parameter names follow torchvision's (``features.1.conv.0.0.weight``,
``classifier.1.weight``), the names of the packed parameters in the quantized TorchScript file
that ``scripts/convert_mobilenet_v2.py`` converts. The penultimate features are the 1280-d
pooled vector before ``classifier.1``.

``width_mult`` below 1 makes the same kind of network, smaller (the tests use one at 0.25).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MobileNetV2", "mobilenet_v2", "INVERTED_RESIDUAL_SETTING"]

#: (expansion t, output channels c, repeats n, first stride s) per stage, as in the paper's table 2
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))


def _divisible(v: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: round to a multiple of 8, never below 90% of ``v``."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_relu(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (+ folded BN bias) then ReLU, as ``Sequential(conv, ReLU)`` so the conv is ``.0``."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=True), nn.ReLU(inplace=True))


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = int(round(cin * expand))
        self.residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_relu(cin, hidden, 1))
        layers += [_conv_relu(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, cout, 1, bias=True)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        cin = _divisible(32 * width_mult)
        self.last_channel = _divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_conv_relu(3, cin, 3, 2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            cout = _divisible(c * width_mult)
            for i in range(n):
                features.append(_InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(_conv_relu(cin, self.last_channel, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        for m in self.modules():  # torchvision's initialisation (for training from scratch; the zoo loads weights)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(h)


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV2:
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult)
