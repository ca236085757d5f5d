"""Segmentation metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echo_batch.qc.metrics import contour_distances_mm, dice, dice_by_label, surface_distances_mm


def test_dice_hand_computed():
    pred = np.zeros((4, 4), np.uint8)
    truth = np.zeros((4, 4), np.uint8)
    pred[0, :3] = 1  # 3 pixels
    truth[0, 1:] = 1  # 3 pixels, 2 shared
    assert dice(pred, truth, 1) == pytest.approx(2 * 2 / 6)
    assert dice(pred, truth, 2) == 1.0  # absent from both
    assert dice(pred, np.zeros_like(truth), 1) == 0.0


def test_contour_distances_of_shifted_square_with_anisotropic_spacing():
    a = np.zeros((20, 20), bool)
    b = np.zeros((20, 20), bool)
    a[5:15, 5:15] = True
    b[5:15, 8:18] = True  # shifted 3 columns
    hd, hd95, mad = contour_distances_mm(a, b, spacing=(0.5, 2.0))
    # every boundary point of a is at most 3 columns (6 mm) from b's boundary and vice versa
    assert hd == pytest.approx(6.0)
    assert hd95 <= hd
    assert 0 < mad < hd


def test_contour_distances_identical_and_empty():
    a = np.zeros((10, 10), bool)
    a[2:8, 3:6] = True
    assert contour_distances_mm(a, a, (1.0, 1.0)) == (0.0, 0.0, 0.0)
    assert contour_distances_mm(a, np.zeros_like(a), (1.0, 1.0)) is None


def test_contour_distance_row_shift_uses_row_spacing():
    a = np.zeros((30, 30), bool)
    b = np.zeros((30, 30), bool)
    a[5:15, 5:15] = True
    b[9:19, 5:15] = True  # shifted 4 rows
    hd, _, _ = contour_distances_mm(a, b, spacing=(0.3, 1.0))
    assert math.isclose(hd, 1.2, rel_tol=1e-9)


def test_isolated_pixels_hand_computed():
    # single-pixel masks are their own boundary; spacing (0.5 mm rows, 2 mm columns)
    pred = np.zeros((10, 10), bool)
    truth = np.zeros((10, 10), bool)
    pred[2, 2] = True
    truth[2, 5] = True  # 3 columns away: 6 mm
    truth[6, 2] = True  # 4 rows away: 2 mm
    hd, hd95, mad = contour_distances_mm(pred, truth, spacing=(0.5, 2.0))
    # pred -> truth: [2]; truth -> pred: [6, 2]
    assert hd == pytest.approx(6.0)
    assert hd95 == pytest.approx(max(2.0, 2.0 + 0.95 * 4.0))  # numpy's linear percentile
    assert mad == pytest.approx((2 + 6 + 2) / 3)


def test_nested_squares_anisotropic_hand_computed():
    outer = np.zeros((20, 20), bool)
    inner = np.zeros((20, 20), bool)
    outer[5:15, 5:15] = True
    inner[7:13, 7:13] = True
    sy, sx = 0.4, 1.0
    to_outer, to_inner = surface_distances_mm(inner, outer, (sy, sx))
    # top/bottom inner pixels are 2 rows (0.8 mm) from the outer boundary; a left-edge inner pixel
    # in the middle rows (10, 7) is 2 columns (2 mm) from the outer left edge but only 4 rows
    # (1.6 mm) from the outer bottom edge (14, 7): with these pixels rows are cheaper
    assert to_outer.min() == pytest.approx(2 * sy)
    assert to_outer.max() == pytest.approx(4 * sy)
    # the outer corner (5, 5) is farthest from the inner boundary: inner corner (7, 7)
    assert to_inner.max() == pytest.approx(math.hypot(2 * sy, 2 * sx))
    hd, _, _ = contour_distances_mm(inner, outer, (sy, sx))
    assert hd == pytest.approx(math.hypot(2 * sy, 2 * sx))


def _brute_force(pred, truth, spacing):
    from scipy.spatial.distance import cdist

    from echo_batch.qc.metrics import _boundary

    scale = np.asarray(spacing)
    p = np.argwhere(_boundary(pred)) * scale
    t = np.argwhere(_boundary(truth)) * scale
    d = cdist(p, t)
    return d.min(axis=1), d.min(axis=0)


@pytest.mark.parametrize("seed", range(5))
def test_distances_equal_brute_force_on_random_blobs(seed):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    spacing = tuple(rng.uniform(0.2, 1.5, 2))
    masks = [
        ndimage.binary_opening(ndimage.gaussian_filter(rng.random((40, 50)), 3) > 0.5)
        for _ in range(2)
    ]
    if not (masks[0].any() and masks[1].any()):
        pytest.skip("empty blob for this seed")
    got = surface_distances_mm(masks[0], masks[1], spacing)
    want = _brute_force(masks[0], masks[1], spacing)
    np.testing.assert_allclose(got[0], want[0], atol=1e-9)
    np.testing.assert_allclose(got[1], want[1], atol=1e-9)


def test_masks_touching_the_image_border():
    a = np.zeros((8, 8), bool)
    b = np.zeros((8, 8), bool)
    a[0:4, 0:8] = True  # touches three image edges: those pixels are boundary
    b[0:6, 0:8] = True
    hd, _, _ = contour_distances_mm(a, b, (1.0, 1.0))
    assert hd == pytest.approx(2.0)  # bottom edges 2 rows apart; shared top/side edges at 0


def test_dice_by_label_hand_computed():
    truth = np.array([[1, 1, 2, 3], [1, 2, 2, 3]], np.uint8)
    pred = np.array([[1, 2, 2, 3], [1, 2, 0, 0]], np.uint8)
    got = dice_by_label(pred, truth)
    assert got["dice_lv"] == pytest.approx(2 * 2 / (2 + 3))
    assert got["dice_myo"] == pytest.approx(2 * 2 / (3 + 3))
    assert got["dice_la"] == pytest.approx(2 * 1 / (1 + 2))


def test_agrees_with_monai_when_installed():
    monai_metrics = pytest.importorskip("monai.metrics", reason="MONAI is not installed")
    import torch

    rng = np.random.default_rng(1)
    from scipy import ndimage

    a = ndimage.gaussian_filter(rng.random((48, 48)), 3) > 0.5
    b = ndimage.gaussian_filter(rng.random((48, 48)), 3) > 0.5
    spacing = (0.4, 0.9)
    hd, hd95, mad = contour_distances_mm(a, b, spacing)
    ta = torch.as_tensor(a)[None, None]
    tb = torch.as_tensor(b)[None, None]
    want_hd = monai_metrics.compute_hausdorff_distance(ta, tb, spacing=spacing).item()
    want_95 = monai_metrics.compute_hausdorff_distance(ta, tb, percentile=95, spacing=spacing)
    want_mad = monai_metrics.compute_average_surface_distance(
        ta, tb, symmetric=True, spacing=spacing
    ).item()
    assert hd == pytest.approx(want_hd)
    assert hd95 == pytest.approx(want_95.item())
    assert mad == pytest.approx(want_mad)
