"""Network building blocks shared by the chest radiograph models (the lung/heart U-Net, the nodule net).

``UNetLevels`` is the U-Net trunk both models run: a ``ConvBlock`` encoder per level, max-pool
down, transposed-conv up, skip concatenation, a ``ConvBlock`` decoder per level.  It adds its
modules as the attributes ``encoders``, ``ups`` and ``decoders`` of the model itself (not of a
sub-module), so the state-dict keys and the ONNX node names are those the shipped models were
trained and exported with, and the layers are created (and so randomly initialised) in the
model's own constructor order.
"""

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


class UNetLevels(nn.Module):
    """Base class of a model with a U-Net trunk; ``channels`` gives the width per level, finest first
    (len(channels) - 1 pooling steps)."""

    encoders: nn.ModuleList
    ups: nn.ModuleList
    decoders: nn.ModuleList

    def _build_levels(self, in_channels: int, channels: tuple[int, ...]) -> None:
        """Create the encoders, then the up-convolutions and decoders (this order fixes the initialisation)."""
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

    def _run_levels(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's features at the finest level: (N, channels[0], H, W) for an (N, in_channels, H, W) input."""
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x)
            if i < len(self.encoders) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = decoder(torch.cat([up(x), skip], dim=1))
        return x


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
