"""Batch augmentations that suit B-mode ultrasound, applied on the fly in torch.

Geometric: small rotations (probe tilt), isotropic scalings (depth setting, heart size) and
translations (LV position in the sector). Intensity: gain and contrast, gamma (log-compression and
dynamic-range settings), and spatially correlated multiplicative noise (speckle).

No left-right flip: apical views follow a fixed display convention (in the 4-chamber view the LV is
on one side of the septum, the RV on the other), so mirrored images are not what the model sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges (uniform unless stated).

    Attributes:
        p_spatial: probability of a random affine per image.
        max_rotation_deg: rotation range +-, degrees.
        max_scale: scaling in [1 - max_scale, 1 + max_scale].
        max_shift: translation +-, fraction of the half-width.
        max_gain: additive brightness +- (images in [0, 1]).
        max_contrast: contrast factor in [1 - max_contrast, 1 + max_contrast].
        gamma: gamma range.
        p_speckle: probability of multiplicative speckle-like noise.
        speckle_sigma: noise standard deviation before smoothing.
    """

    p_spatial: float = 0.8
    max_rotation_deg: float = 15.0
    max_scale: float = 0.15
    max_shift: float = 0.1
    max_gain: float = 0.1
    max_contrast: float = 0.25
    gamma: tuple[float, float] = (0.7, 1.5)
    p_speckle: float = 0.3
    speckle_sigma: float = 0.15


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def augment_batch(
    images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment one batch.

    Args:
        images: ``(N, 1, H, W)`` float32 in [0, 1].
        labels: ``(N, H, W)`` int64 labels.
        gen: random generator (fixed seed for reproducibility).
        cfg: ranges.

    Returns:
        Augmented ``(images, labels)`` of the same shapes; images stay in [0, 1].
    """
    n = images.shape[0]
    angle = torch.deg2rad(_uniform(n, -cfg.max_rotation_deg, cfg.max_rotation_deg, gen))
    scale = _uniform(n, 1 - cfg.max_scale, 1 + cfg.max_scale, gen)
    shift = torch.stack([_uniform(n, -cfg.max_shift, cfg.max_shift, gen) for _ in range(2)], dim=1)
    keep = torch.rand(n, generator=gen) >= cfg.p_spatial
    angle[keep], scale[keep], shift[keep] = 0.0, 1.0, 0.0
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", align_corners=False)
    labels = (
        F.grid_sample(labels[:, None].float(), grid, mode="nearest", align_corners=False)[:, 0]
        .round()
        .long()
    )
    contrast = _uniform(n, 1 - cfg.max_contrast, 1 + cfg.max_contrast, gen).view(n, 1, 1, 1)
    gain = _uniform(n, -cfg.max_gain, cfg.max_gain, gen).view(n, 1, 1, 1)
    images = ((images - 0.5) * contrast + 0.5 + gain).clamp(0, 1)
    log_gamma = _uniform(n, math.log(cfg.gamma[0]), math.log(cfg.gamma[1]), gen)
    images = images.pow(torch.exp(log_gamma).view(n, 1, 1, 1))
    speckle = torch.randn(images.shape, generator=gen) * cfg.speckle_sigma
    speckle = F.avg_pool2d(speckle, 3, stride=1, padding=1) * 3.0  # correlated, ~same std
    use = (torch.rand(n, generator=gen) < cfg.p_speckle).view(n, 1, 1, 1)
    images = torch.where(use, (images * (1 + speckle)).clamp(0, 1), images)
    return images, labels
