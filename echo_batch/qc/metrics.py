"""Segmentation metrics against ground truth (pure functions on label maps).

Definitions follow MONAI's ``compute_dice``, ``compute_hausdorff_distance`` (``directed=False``,
``percentile=95`` for HD95) and ``compute_average_surface_distance`` (``symmetric=True``), with
SciPy's exact Euclidean distance transform on the anisotropic pixel grid (``sampling=spacing``), as
MONAI does; MONAI itself is not a dependency. The CAMUS paper (Leclerc et al. 2019) reports the
maximum (HD) and the mean absolute distance (MAD) of the contours in mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from echo_batch.domain import Label


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


def dice_by_label(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice of the LV cavity, myocardium and atrium.

    Args:
        pred: ``(H, W)`` predicted labels.
        truth: ``(H, W)`` reference labels.

    Returns:
        ``{"dice_lv": ..., "dice_myo": ..., "dice_la": ...}`` (the ``ImageRecord`` field names).
    """
    return {
        "dice_lv": dice(pred, truth, Label.LV),
        "dice_myo": dice(pred, truth, Label.MYO),
        "dice_la": dice(pred, truth, Label.LA),
    }


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (the image border counts as outside)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _union_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, slice]:
    """Bounding box of ``a | b`` grown by one pixel (clipped to the image)."""
    rows = np.flatnonzero((a | b).any(axis=1))
    cols = np.flatnonzero((a | b).any(axis=0))
    r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, a.shape[0])
    c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, a.shape[1])
    return slice(r0, r1), slice(c0, c1)


def surface_distances_mm(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Directed distances between the boundaries of two binary masks, in mm.

    Boundary pixels are the mask pixels with a 4-neighbour outside the mask. The distance from a
    boundary pixel of one mask to the other mask's boundary is the Euclidean distance between pixel
    centres with the anisotropic spacing. Work is done on the bounding box of both masks plus one
    pixel, which leaves every distance unchanged.

    Args:
        pred: ``(H, W)`` bool predicted mask.
        truth: ``(H, W)`` bool reference mask.
        spacing: ``(row_mm, col_mm)``.

    Returns:
        ``(pred_to_truth, truth_to_pred)``: ``(Np,)`` and ``(Nt,)`` distances in mm, one per
        boundary pixel; None when either mask is empty.
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if not pred.any() or not truth.any():
        return None
    box = _union_box(pred, truth)
    pred_b, truth_b = _boundary(pred[box]), _boundary(truth[box])
    to_truth = ndimage.distance_transform_edt(~truth_b, sampling=spacing)[pred_b]
    to_pred = ndimage.distance_transform_edt(~pred_b, sampling=spacing)[truth_b]
    return to_truth, to_pred


def contour_distances_mm(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float]
) -> tuple[float, float, float] | None:
    """Hausdorff distance, its 95th percentile and the mean absolute distance of two contours, mm.

    Args:
        pred: ``(H, W)`` bool predicted mask.
        truth: ``(H, W)`` bool reference mask.
        spacing: ``(row_mm, col_mm)``.

    Returns:
        ``(hausdorff_mm, hausdorff95_mm, mean_absolute_distance_mm)``: the maximum over both
        directions of the boundary distances (:func:`surface_distances_mm`), the larger of the two
        directed 95th percentiles (linear interpolation, as ``numpy.percentile``), and the mean of
        all distances of both directions; None when either mask is empty.
    """
    distances = surface_distances_mm(pred, truth, spacing)
    if distances is None:
        return None
    to_truth, to_pred = distances
    hd = float(max(to_truth.max(), to_pred.max()))
    hd95 = float(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95)))
    mad = float(np.concatenate([to_truth, to_pred]).mean())
    return hd, hd95, mad
