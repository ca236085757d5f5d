"""Segmentation with members: one or several networks, each run on test-time variants of each image.

A member is one network on one variant. The labels of the result come from the members' mean
class probabilities; each member's own labels come with them, so that every measurement can be
repeated per member and its spread reported as the uncertainty of the result (``ef_pct_sd`` and
friends). :class:`VariantEngine` is one network (``--uncertainty``); :class:`EnsembleEngine`
runs the networks of an ensemble bundle (:mod:`echo_batch.model.ensemble_bundle`).
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
"""Images whose member probabilities are held at once with five members (16 x 5 x 224 x 224 x 4
classes float32: 64 MB); with more members the group shrinks to keep that bound."""

GROUP_MEMBERS = GROUP * 5
"""Member probability maps held at once (images x members)."""


@dataclass(frozen=True)
class MemberSegmentation(Segmentation):
    """A :class:`Segmentation` from the members' mean probabilities, with each member's labels.

    Attributes:
        members: one ``(H, W)`` uint8 label map per member, on the native grid, in the order
            of the engine's variants.
    """

    members: tuple[np.ndarray, ...] = ()


class EnsembleEngine:
    """An engine that segments every image with every network on every test-time variant.

    Args:
        engines: the networks' engines (their batching, device and precision); members are
            ordered network by network, and within a network variant by variant.
        variants: the test-time variants every network runs (the first is usually the plain
            pass).
        model_id: id of the ensemble (default: the single network's id).
    """

    def __init__(
        self,
        engines: Sequence[SegmentationEngine],
        variants: Sequence[Variant] = DEFAULT_VARIANTS,
        model_id: str | None = None,
    ) -> None:
        if not engines:
            raise ValueError("an ensemble needs at least one network")
        if not variants:
            raise ValueError("an ensemble needs at least one variant")
        if len({e.input_size for e in engines}) > 1:
            raise ValueError("the networks of an ensemble must share their input grid")
        if model_id is None and len(engines) > 1:
            raise ValueError("an ensemble of several networks needs its own model id")
        self.engines = tuple(engines)
        self.variants = tuple(variants)
        self.batch_size = engines[0].batch_size
        self.input_size = engines[0].input_size
        self._model_id = model_id

    @property
    def model_id(self) -> str:
        """Id of the ensemble (or of the single network's bundle)."""
        return self._model_id or self.engines[0].model_id

    @property
    def precision(self) -> str:
        """Arithmetic of the forward passes (that of the networks' engines)."""
        return self.engines[0].precision

    @property
    def n_members(self) -> int:
        """Networks x variants."""
        return len(self.engines) * len(self.variants)

    def member_probabilities(self, grid_images: np.ndarray) -> np.ndarray:
        """Class probabilities of every member, on the plain grid.

        Args:
            grid_images: ``(N, rows, cols)`` float32 normalised grid images (see ``to_grid``).

        Returns:
            ``(M, N, rows, cols, C)`` float32, one slice per member (network-major).
        """
        plain = torch.from_numpy(np.ascontiguousarray(grid_images, dtype=np.float32))[:, None]
        out = []
        for engine in self.engines:
            for variant in self.variants:
                varied = apply(plain, variant)[:, 0].numpy()
                probs = torch.from_numpy(engine.probabilities(np.ascontiguousarray(varied)))
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
        group_size = max(1, min(GROUP, GROUP_MEMBERS // self.n_members))
        for start in range(0, len(images), group_size):  # memory: group x members maps
            group = images[start : start + group_size]
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


class VariantEngine(EnsembleEngine):
    """One network on every test-time variant (``--uncertainty``).

    Args:
        engine: the engine that runs the network.
        variants: the members (the first is usually the plain pass).
    """

    def __init__(
        self, engine: SegmentationEngine, variants: Sequence[Variant] = DEFAULT_VARIANTS
    ) -> None:
        super().__init__((engine,), variants)
        self.engine = engine
