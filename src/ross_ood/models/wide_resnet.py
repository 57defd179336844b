"""Wide residual networks for 32-px inputs (Zagoruyko & Komodakis 2016): WRN-depth-width with
pre-activation basic blocks, no dropout. Module names follow RobustBench's ``WideResNet``
(``conv1, block1..3.layer.N.{bn1,conv1,bn2,conv2,convShortcut}, bn1, fc``), so its CIFAR
checkpoints of that class load with ``--checkpoint``; the penultimate features are the
pooled ``64 x width``-d vector before ``fc``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WideResNet", "wrn_16_4", "wrn_28_10"]


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout and stride == 1
        self.convShortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return out + (x if self.equal else self.convShortcut(a))


class _Stage(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(*[_Block(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth: int = 28, width: int = 10, num_classes: int = 10):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"wide ResNet depth must be 6n+4, got {depth}")
        n, c = (depth - 4) // 6, (16, 16 * width, 32 * width, 64 * width)
        self.conv1 = nn.Conv2d(3, c[0], 3, 1, 1, bias=False)
        self.block1 = _Stage(n, c[0], c[1], 1)
        self.block2 = _Stage(n, c[1], c[2], 2)
        self.block3 = _Stage(n, c[2], c[3], 2)
        self.bn1 = nn.BatchNorm2d(c[3])
        self.fc = nn.Linear(c[3], num_classes)
        for m in self.modules():  # the reference initialisation (training from scratch; the zoo loads weights)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.adaptive_avg_pool2d(F.relu(self.bn1(out)), 1).flatten(1)
        return self.fc(out)


def wrn_16_4(num_classes: int = 10) -> WideResNet:
    return WideResNet(16, 4, num_classes)


def wrn_28_10(num_classes: int = 10) -> WideResNet:
    return WideResNet(28, 10, num_classes)
