"""Small test models shared by the exporter tests: the op mix users hit, and an op with no integer path."""

from __future__ import annotations

import torch
from torch import nn


class ConcatHardswishNet(nn.Module):
    """Depth-wise convs, a concat, ReLU6 and a residual add in one small model."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.pw = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.branch = nn.Sequential(nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(24, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.pw(self.dw(x))
        x = torch.cat([x, self.branch(x)], 1)
        return self.fc(torch.flatten(self.pool(self.head(x)), 1))


class WithConv1d(nn.Module):
    """A Conv1d: quantize_model leaves it float (it has no integer path), so every target must refuse it at 100 % coverage."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.c1 = nn.Conv1d(4, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.c(x))).flatten(2)
        return self.fc(self.c1(x).mean(2))
