"""Segmentation with members: one network run on test-time variants of each image.

The labels of the result come from the members' mean class probabilities; each member's own
labels come with them, so that every measurement can be repeated per member and its spread
reported as the uncertainty of the result (``ef_pct_sd`` and friends).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from echo_batch.model.inference import Segmentation, SegmentationEngine, to_native
from echo_batch.model.preprocess import to_grid
from echo_batch.model.tta import Variant, apply, invert

DEFAULT_VARIANTS: tuple[Variant, ...] = (
    Variant(),
    Variant(scale=0.9),
    Variant(scale=1.1),
    Variant(gamma=0.7),
    Variant(gamma=1.4),
)
"""The members of ``--uncertainty``: the plain pass, a zoom of 0.9 and 1.1 about the grid centre,
and an intensity gamma of 0.7 and 1.4. Chosen on the validation split of CAMUS-224 only (see
docs/model.md, "Uncertainty"); each costs one forward pass."""

GROUP = 16
"""Images whose member probabilities are held at once (16 x 5 members x 224 x 224 x 4 classes
float32: 64 MB)."""


@dataclass(frozen=True)
class MemberSegmentation(Segmentation):
    """A :class:`Segmentation` from the members' mean probabilities, with each member's labels.

    Attributes:
        members: one ``(H, W)`` uint8 label map per member, on the native grid, in the order
            of the engine's variants.
    """

    members: tuple[np.ndarray, ...] = ()


class VariantEngine:
    """An engine that segments every image once per test-time variant.

    Args:
        engine: the engine that runs the network (its batching, device and precision).
        variants: the members (the first is usually the plain pass).
    """

    def __init__(
        self, engine: SegmentationEngine, variants: Sequence[Variant] = DEFAULT_VARIANTS
    ) -> None:
        if not variants:
            raise ValueError("an ensemble needs at least one variant")
        self.engine = engine
        self.variants = tuple(variants)
        self.batch_size = engine.batch_size
        self.input_size = engine.input_size

    @property
    def model_id(self) -> str:
        """Id of the bundle in use."""
        return self.engine.model_id

    def member_probabilities(self, grid_images: np.ndarray) -> np.ndarray:
        """Class probabilities of every member, on the plain grid.

        Args:
            grid_images: ``(N, rows, cols)`` float32 normalised grid images (see ``to_grid``).

        Returns:
            ``(M, N, rows, cols, C)`` float32, one slice per variant.
        """
        plain = torch.from_numpy(np.ascontiguousarray(grid_images, dtype=np.float32))[:, None]
        out = []
        for variant in self.variants:
            varied = apply(plain, variant)[:, 0].numpy()
            probs = torch.from_numpy(self.engine.probabilities(np.ascontiguousarray(varied)))
            back = invert(probs.permute(0, 3, 1, 2), variant).permute(0, 2, 3, 1)
            out.append(back.numpy())
        return np.stack(out)

    def segment(self, images: Sequence[np.ndarray]) -> list[MemberSegmentation]:
        """Segment native images of any sizes; labels from the members' mean probabilities.

        Args:
            images: ``(H_i, W_i)`` intensity arrays.

        Returns:
            One MemberSegmentation per image, every label map on the image's native grid.
        """
        results: list[MemberSegmentation] = []
        for start in range(0, len(images), GROUP):  # memory: GROUP x members probability maps
            group = images[start : start + GROUP]
            grid = np.stack([to_grid(img, self.input_size) for img in group])
            probs = self.member_probabilities(grid)
            mean = probs.mean(axis=0)
            for k, image in enumerate(group):
                shape = tuple(image.shape)
                combined = to_native(mean[k], shape)
                members = tuple(to_native(p[k], shape).labels for p in probs)
                results.append(
                    MemberSegmentation(
                        labels=combined.labels, confidence=combined.confidence, members=members
                    )
                )
        return results
