"""The short-axis segmentation network: the chest radiograph U-Net trunk (``training/chest_xray/nets.py``), 4 classes."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chest_xray"))

from nets import UNetLevels, count_parameters  # noqa: E402

__all__ = ["SaxUNet", "build_model", "count_parameters"]


class SaxUNet(UNetLevels):
    def __init__(self, channels: tuple[int, ...] = (8, 16, 32, 64, 128), n_classes: int = 4, in_channels: int = 1) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.in_channels = in_channels
        self._build_levels(in_channels, self.channels)
        self.head = nn.Conv2d(self.channels[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._run_levels(x))


def build_model(config: dict | None = None) -> SaxUNet:
    config = config or {}
    return SaxUNet(channels=tuple(config.get("channels", (8, 16, 32, 64, 128))), in_channels=int(config.get("in_channels", 1)))
