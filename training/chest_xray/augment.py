"""Radiograph-appropriate augmentation, batched torch ops, driven by an explicit torch.Generator.

Geometry (image and labels together): rotation within +-7 degrees, isotropic scale
0.9-1.1, translation within +-8 % of the half-width (about +-10 pixels at 256);
image bilinear with border replication, labels nearest (outside -> background).
Intensity (image only, after geometry): gamma 0.7-1.4 on the 0..1 image, contrast
0.85-1.15 around 0.5, brightness +-0.08, Gaussian noise sigma 0-0.02.
No left-right (or up-down) flips: chest anatomy is not symmetric and labels are sided.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class AugmentConfig:
    rotation_deg: float = 7.0
    scale: tuple[float, float] = (0.9, 1.1)
    translation: float = 0.08  # fraction of the half-width (normalised coordinates)
    gamma: tuple[float, float] = (0.7, 1.4)
    contrast: tuple[float, float] = (0.85, 1.15)
    brightness: float = 0.08
    noise_sigma: float = 0.02

    def describe(self) -> dict:
        return {**asdict(self), "flips": "none (anatomy is not left-right symmetric)"}


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def augment_batch(
    images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, config: AugmentConfig = AugmentConfig()
) -> tuple[torch.Tensor, torch.Tensor]:
    """images (N,1,H,W) float in 0..1, labels (N,H,W) int64 -> augmented copies."""
    n = images.shape[0]
    angle = _uniform(n, -config.rotation_deg, config.rotation_deg, generator) * math.pi / 180.0
    scale = _uniform(n, *config.scale, generator)
    tx = _uniform(n, -config.translation, config.translation, generator)
    ty = _uniform(n, -config.translation, config.translation, generator)
    # affine_grid maps output coordinates to input coordinates: zoom in by `scale` = sample a smaller area.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    labels = F.grid_sample(labels[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0].round().long()

    gamma = _uniform(n, *config.gamma, generator).view(n, 1, 1, 1)
    contrast = _uniform(n, *config.contrast, generator).view(n, 1, 1, 1)
    brightness = _uniform(n, -config.brightness, config.brightness, generator).view(n, 1, 1, 1)
    sigma = _uniform(n, 0.0, config.noise_sigma, generator).view(n, 1, 1, 1)
    images = images.clamp(0.0, 1.0) ** gamma
    images = (images - 0.5) * contrast + 0.5 + brightness
    images = images + sigma * torch.randn(images.shape, generator=generator)
    return images.contiguous(), labels.contiguous()
