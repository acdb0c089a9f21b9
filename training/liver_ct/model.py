"""The 2.5-D liver/spleen U-Net: 3 input channels (a slice and its neighbours ~3 mm above and below),
3 output classes (background, liver, spleen), four 2x poolings (input sides multiples of 16).

Its trunk is the chest radiograph models' ``UNetLevels`` (training/chest_xray/nets.py): the same
blocks, attribute names and construction order, so the state-dict keys and the initialisation are
those the shipped liver model was trained and exported with."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

NETS = Path(__file__).resolve().parents[1] / "chest_xray"
if str(NETS) not in sys.path:
    sys.path.append(str(NETS))  # appended: this folder's own model.py must stay first

from nets import UNetLevels, count_parameters  # noqa: E402  (training/chest_xray/nets.py)

__all__ = ["LiverUNet", "build_model", "count_parameters"]


class LiverUNet(UNetLevels):
    def __init__(self, channels: tuple[int, ...] = (12, 24, 48, 96, 192), in_channels: int = 3, num_classes: int = 3) -> None:
        super().__init__()
        self._build_levels(in_channels, channels)
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._run_levels(x))


def build_model(config: dict) -> LiverUNet:
    return LiverUNet(tuple(config.get("channels", (12, 24, 48, 96, 192))))
