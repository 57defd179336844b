"""The small MNIST CNN of hendrycks/outlier-exposure (`MNIST/` snapshots).

conv1 1->10 5x5 -> maxpool 2 -> GELU; conv2 10->20 5x5 -> maxpool 2 -> GELU;
flatten 320 -> fc1 50 -> GELU -> fc2 10. GELU is the sigmoid approximation x*sigmoid(1.702x).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MnistConvNet"]


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


class MnistConvNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 5)
        self.conv2 = nn.Conv2d(10, 20, 5)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x):
        x = _gelu(F.max_pool2d(self.conv1(x), 2))
        x = _gelu(F.max_pool2d(self.conv2(x), 2))
        x = _gelu(self.fc1(x.flatten(1)))
        return self.fc2(x)
