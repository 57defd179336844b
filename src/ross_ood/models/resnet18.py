"""ResNet-18 as in OpenOOD v1.5, with state-dict names compatible with its checkpoints.

``ResNet18_32x32`` (``openood/networks/resnet18_32x32.py``): 3x3 stem, no max-pool,
projection shortcuts named ``shortcut.0`` (conv) / ``shortcut.1`` (BN), head ``fc``.
``ResNet18_224x224`` (torchvision layout, ``openood/networks/resnet18_224x224.py``):
7x7 stride-2 stem, max-pool, shortcuts named ``downsample.0`` / ``downsample.1``, head ``fc``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

__all__ = ["ResNet18_32x32", "ResNet18_224x224"]


class _Block(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, short_name: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        proj = nn.Sequential()
        if stride != 1 or in_planes != planes:
            proj = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        self._short = short_name
        setattr(self, short_name, proj)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + getattr(self, self._short)(x))


class _ResNet18(nn.Module):
    def __init__(self, num_classes: int, large: bool):
        super().__init__()
        short = "downsample" if large else "shortcut"
        if large:
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.large = large
        planes = 64
        for i, width in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            layer = nn.Sequential(_Block(planes, width, stride, short), _Block(width, width, 1, short))
            setattr(self, f"layer{i + 1}", layer)
            planes = width
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        if self.large:
            out = F.max_pool2d(out, 3, 2, 1)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def ResNet18_32x32(num_classes: int = 10) -> nn.Module:  # noqa: N802 (OpenOOD's name)
    return _ResNet18(num_classes, large=False)


def ResNet18_224x224(num_classes: int = 200) -> nn.Module:  # noqa: N802
    return _ResNet18(num_classes, large=True)
