"""Spread of a measurement between the members of an ensemble (pure functions)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

LV_LABEL = 1


def member_sd(values: Sequence[float | None]) -> float | None:
    """Sample standard deviation (n - 1) of the members' values.

    Args:
        values: one value per member; None (a member that could not measure) is left out.

    Returns:
        The SD in the values' unit, or None with fewer than two values.
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if len(finite) < 2:
        return None
    return float(np.std(finite, ddof=1))


def mean_pairwise_lv_dice(members: Sequence[np.ndarray]) -> float | None:
    """Mean Dice of the LV cavity (label 1) over every pair of member label maps.

    Args:
        members: ``(H, W)`` integer label maps of the same image, one per member.

    Returns:
        The mean over the ``M (M - 1) / 2`` pairs, in [0, 1] (1 for a pair where neither map
        has any LV); None with fewer than two members.
    """
    if len(members) < 2:
        return None
    masks = [np.asarray(m) == LV_LABEL for m in members]
    sizes = [int(m.sum()) for m in masks]
    scores = []
    for (a, size_a), (b, size_b) in itertools.combinations(zip(masks, sizes, strict=True), 2):
        total = size_a + size_b
        scores.append(1.0 if total == 0 else 2.0 * int((a & b).sum()) / total)
    return float(np.mean(scores))
