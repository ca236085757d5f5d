"""Test-time variants of an input that keep the anatomy: a small zoom and an intensity gamma.

Each variant is applied to the normalised grid images before the forward pass and undone on the
class probabilities after it, so that every variant's probabilities lie on the same grid as the
plain pass. The spread of the measurements between variants is the uncertainty of a result
(Wang et al. 2019, "Aleatoric uncertainty estimation with test-time augmentation for medical
image segmentation with convolutional neural networks", Neurocomputing 338:34-45). No flips and
no rotations: the apex stays at the top and the views keep their left-right order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

_EPS = 1e-6


@dataclass(frozen=True)
class Variant:
    """One test-time variant.

    Attributes:
        scale: zoom about the grid centre (< 1 shrinks the image inside the grid, > 1 enlarges
            it and crops its border).
        gamma: exponent applied to the intensities rescaled to [0, 1] (< 1 brightens the dark
            tissue, > 1 darkens it).
    """

    scale: float = 1.0
    gamma: float = 1.0

    def __post_init__(self) -> None:
        if not 0.5 <= self.scale <= 2.0:
            raise ValueError(f"variant scale must lie in [0.5, 2], got {self.scale}")
        if not 0.25 <= self.gamma <= 4.0:
            raise ValueError(f"variant gamma must lie in [0.25, 4], got {self.gamma}")

    @property
    def identity(self) -> bool:
        """True for the plain pass."""
        return self.scale == 1.0 and self.gamma == 1.0

    @property
    def name(self) -> str:
        """Short stable name, e.g. ``s0.90-g1.00``."""
        return f"s{self.scale:.2f}-g{self.gamma:.2f}"

    def to_dict(self) -> dict[str, float]:
        """JSON-friendly form (bundle metadata, run settings)."""
        return {"scale": self.scale, "gamma": self.gamma}


def _zoom(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Resample ``(n, c, H, W)`` so that content at normalised position ``p`` moves to
    ``scale * p`` (about the centre); positions that fall outside the input read zero."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _renormalise(x: torch.Tensor) -> torch.Tensor:
    """Per-image z-score of ``(n, 1, H, W)``, as the grid images the network was trained on."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (x - mean) / std.clamp(min=_EPS)


def apply(x: torch.Tensor, variant: Variant) -> torch.Tensor:
    """The variant of a batch of normalised grid images.

    Args:
        x: ``(n, 1, H, W)`` float32, per-image z-scored (see ``model.preprocess.to_grid``).
        variant: the change to make.

    Returns:
        ``(n, 1, H, W)`` float32, z-scored again (the input itself for the identity).
    """
    if variant.identity:
        return x
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    unit = (x - lo) / (hi - lo).clamp(min=_EPS)  # [0, 1]; the darkest value becomes 0
    if variant.gamma != 1.0:
        unit = unit.clamp(min=0.0) ** variant.gamma
    if variant.scale != 1.0:
        unit = _zoom(unit, variant.scale)  # the uncovered border is black, as outside a sector
    return _renormalise(unit)


def invert(probs: torch.Tensor, variant: Variant) -> torch.Tensor:
    """Class probabilities of a variant brought back onto the plain grid.

    Args:
        probs: ``(n, C, H, W)`` softmax output of the variant's pass (class 0 background).
        variant: the variant that produced it.

    Returns:
        ``(n, C, H, W)`` probabilities on the plain grid; where the variant did not see the
        image (the border cropped by a zoom above 1) the background has probability 1.
    """
    if variant.scale == 1.0:
        return probs
    back = _zoom(probs, 1.0 / variant.scale)
    unseen = (1.0 - back.sum(dim=1, keepdim=True)).clamp(min=0.0)
    back[:, :1] += unseen
    return back
