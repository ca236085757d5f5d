"""Segmentation metrics against ground truth (pure functions on label maps)."""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, truth: np.ndarray, label: int) -> float:
    """Dice overlap of one label.

    Args:
        pred: ``(H, W)`` predicted labels.
        truth: ``(H, W)`` reference labels.
        label: label value to compare.

    Returns:
        ``2|P & T| / (|P| + |T|)``; 1.0 when the label is absent from both.
    """
    p = pred == label
    t = truth == label
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / denom
