"""A small 2-D U-Net for lung/heart segmentation of chest radiographs (input 1 x 256 x 256, 4 classes).

With ``input_pool`` = 2 the network first averages 2 x 2 blocks and runs the U-Net at 128 x 128,
then resamples its logits bilinearly back to 256 x 256: about a quarter of the compute, which is
what makes 5-fold training fit on 2 shared CPU cores; the input and output contract stay 256 x 256.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _norm(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels)


class ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            _norm(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            _norm(c_out),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net: encoder blocks at each level, max-pool down, transposed-conv up, skip concatenation.

    ``channels`` gives the width per level, finest first; len(channels) - 1 pooling steps.
    """

    def __init__(
        self, in_channels: int = 1, n_classes: int = 4, channels: tuple[int, ...] = (8, 16, 32, 64, 128), input_pool: int = 1
    ) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.input_pool = int(input_pool)
        self.encoders = nn.ModuleList()
        c_prev = in_channels
        for c in channels:
            self.encoders.append(ConvBlock(c_prev, c))
            c_prev = c
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for c_coarse, c_fine in zip(channels[::-1][:-1], channels[::-1][1:]):
            self.ups.append(nn.ConvTranspose2d(c_coarse, c_fine, 2, stride=2))
            self.decoders.append(ConvBlock(2 * c_fine, c_fine))
        self.head = nn.Conv2d(channels[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.input_pool > 1:
            x = F.avg_pool2d(x, self.input_pool)
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x)
            if i < len(self.encoders) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = decoder(torch.cat([up(x), skip], dim=1))
        logits = self.head(x)
        if self.input_pool > 1:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits


def build_model(config: dict | None = None) -> UNet:
    config = config or {}
    return UNet(channels=tuple(config.get("channels", (8, 16, 32, 64, 128))), input_pool=int(config.get("input_pool", 1)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
