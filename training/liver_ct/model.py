"""The 2.5-D liver/spleen U-Net: 3 input channels (a slice and its neighbours ~3 mm above and below),
3 output classes (background, liver, spleen), four 2x poolings (input sides multiples of 16)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ConvBlock(nn.Sequential):
    """Two 3 x 3 convolutions, each followed by BatchNorm and ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class LiverUNet(nn.Module):
    def __init__(self, channels: tuple[int, ...] = (12, 24, 48, 96, 192), in_channels: int = 3, num_classes: int = 3) -> None:
        super().__init__()
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
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x)
            if i < len(self.encoders) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = decoder(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def build_model(config: dict) -> LiverUNet:
    return LiverUNet(tuple(config.get("channels", (12, 24, 48, 96, 192))))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
