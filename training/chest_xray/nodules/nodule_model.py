"""A small fully-convolutional nodule-centre network (input 1 x 256 x 256, outputs at stride 2).

Stem: 3 x 3 conv at the input resolution, then a stride-2 3 x 3 conv; a U-Net over 128 x 128
(channels per level ``channels``, max-pool down, transposed-conv up, skip concatenation);
head: 3 x 3 conv + ReLU, then 1 x 1 conv to 2 channels:

* ``heatmap`` = sigmoid(channel 0): nodule-centre probability (trained with the CenterNet
  penalty-reduced focal loss on Gaussian blobs);
* ``diameter`` = exp(channel 1): nodule diameter in pixels of the 256 model grid.

Fully convolutional: trained on 128 x 128 crops of the 256 grid, run on the whole 256 x 256 image.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nets import UNetLevels, count_parameters  # noqa: E402  (training/chest_xray/nets.py, shared with the segmentation U-Net)

__all__ = ["Ensemble", "MirrorAverage", "MultiScale", "NoduleNet", "build_model", "count_parameters"]

HEATMAP_PRIOR_BIAS = -4.0


class NoduleNet(UNetLevels):
    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128, 128), stem: int = 16) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.stem = nn.Sequential(
            nn.Conv2d(1, stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem, stem, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        )
        self._build_levels(stem, self.channels)
        self.head = nn.Sequential(nn.Conv2d(channels[0], channels[0], 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(channels[0], 2, 1))
        with torch.no_grad():
            self.head[-1].bias[0] = HEATMAP_PRIOR_BIAS
            self.head[-1].bias[1] = 2.5  # exp(2.5) ~ 12 px ~ 17 mm at 1.4 mm per model pixel

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2, H/2, W/2): heatmap logit, log diameter (model pixels)."""
        return self.head(self._run_levels(self.stem(x)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.raw(x)
        return torch.sigmoid(out[:, :1]), torch.exp(out[:, 1:2].clamp(-3.0, 6.0))


class Ensemble(nn.Module):
    """Mean heatmap and mean diameter of several NoduleNets (same input and output contract)."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [m(x) for m in self.members]
        heat = torch.stack([o[0] for o in outputs]).mean(0)
        diameter = torch.stack([o[1] for o in outputs]).mean(0)
        return heat, diameter


class MultiScale(nn.Module):
    """Test-time scales in the graph: the model also runs on the image resampled by each factor in ``scales``
    (bilinear; sizes must stay multiples of 32); heatmaps resampled back to the output grid, combined by the
    pixel-wise maximum; the diameter (converted to the 256 grid) is taken from the scale that gave the maximum."""

    def __init__(self, model: nn.Module, scales: tuple[float, ...], size: int = 256) -> None:
        super().__init__()
        self.model = model
        self.scales = tuple(float(s) for s in scales)
        self.size = int(size)  # the fixed model input size (static, for the ONNX export)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heat, diameter = self.model(x)
        for s in self.scales:
            small = int(round(self.size * s))
            xs = nn.functional.interpolate(x, size=(small, small), mode="bilinear", align_corners=False, antialias=False)
            hs, ds = self.model(xs)
            out = (self.size // 2, self.size // 2)
            hs = nn.functional.interpolate(hs, size=out, mode="bilinear", align_corners=False)
            ds = nn.functional.interpolate(ds, size=out, mode="bilinear", align_corners=False) / s
            take = hs > heat
            heat = torch.where(take, hs, heat)
            diameter = torch.where(take, ds, diameter)
        return heat, diameter


class MirrorAverage(nn.Module):
    """Test-time mirroring in the graph: the mean of the outputs on the image and (mirrored back) on its left-right
    mirror. Exact on the output grid: the input size is even and the output is at stride 2."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heat, diameter = self.model(x)
        heat_m, diameter_m = self.model(torch.flip(x, dims=(3,)))
        return (heat + torch.flip(heat_m, dims=(3,))) / 2, (diameter + torch.flip(diameter_m, dims=(3,))) / 2


def build_model(config: dict | None = None) -> NoduleNet:
    config = config or {}
    return NoduleNet(channels=tuple(config.get("channels", (16, 32, 64, 128, 128))), stem=int(config.get("stem", 16)))
