"""A small 2-D U-Net for lung/heart segmentation of chest radiographs (input 1 x 256 x 256, 4 classes).

With ``input_pool`` = 2 the network first averages 2 x 2 blocks and runs the U-Net at 128 x 128,
then resamples its logits bilinearly back to 256 x 256: about a quarter of the compute, which is
what makes 5-fold training fit on 2 shared CPU cores; the input and output contract stay 256 x 256.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from nets import UNetLevels, count_parameters  # noqa: E402  (training/chest_xray/nets.py)

__all__ = ["UNet", "build_model", "count_parameters"]


class UNet(UNetLevels):
    """U-Net: encoder blocks at each level, max-pool down, transposed-conv up, skip concatenation.

    ``channels`` gives the width per level, finest first; len(channels) - 1 pooling steps.
    """

    def __init__(
        self, in_channels: int = 1, n_classes: int = 4, channels: tuple[int, ...] = (8, 16, 32, 64, 128), input_pool: int = 1
    ) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.input_pool = int(input_pool)
        self._build_levels(in_channels, self.channels)
        self.head = nn.Conv2d(channels[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.input_pool > 1:
            x = F.avg_pool2d(x, self.input_pool)
        logits = self.head(self._run_levels(x))
        if self.input_pool > 1:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits


def build_model(config: dict | None = None) -> UNet:
    config = config or {}
    return UNet(channels=tuple(config.get("channels", (8, 16, 32, 64, 128))), input_pool=int(config.get("input_pool", 1)))
