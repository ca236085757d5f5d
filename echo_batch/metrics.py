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


def _boundary(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, border_value=0)


def contour_distances_mm(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float]
) -> tuple[float, float, float] | None:
    """Distances between the boundaries of two binary masks, in mm.

    Boundary pixels are the mask pixels with a 4-neighbour outside the mask; distances use the
    anisotropic pixel spacing (Euclidean distance transform with ``sampling=spacing``).

    Args:
        pred: ``(H, W)`` bool predicted mask.
        truth: ``(H, W)`` bool reference mask.
        spacing: ``(row_mm, col_mm)``.

    Returns:
        ``(hausdorff_mm, hausdorff95_mm, mean_absolute_distance_mm)``: the maximum and the 95th
        percentile of the symmetric boundary distances, and their mean over both directions; None
        when either mask is empty.
    """
    from scipy.ndimage import distance_transform_edt

    pred_b, truth_b = _boundary(pred.astype(bool)), _boundary(truth.astype(bool))
    if not pred_b.any() or not truth_b.any():
        return None
    to_truth = distance_transform_edt(~truth_b, sampling=spacing)[pred_b]
    to_pred = distance_transform_edt(~pred_b, sampling=spacing)[truth_b]
    both = np.concatenate([to_truth, to_pred])
    hd = float(max(to_truth.max(), to_pred.max()))
    hd95 = float(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95)))
    return hd, hd95, float(both.mean())
