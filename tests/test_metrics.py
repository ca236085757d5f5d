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
    # The 36 boundary pixels of a, each to b's boundary (columns cost 2 mm, rows 0.5 mm):
    #   left column, 10 pixels: 3 columns to b's left column            -> 6 mm x 10
    #   top row, columns 6, 7: 2 and 1 columns to b's corner (5, 8)      -> 4, 2 mm
    #   top row, columns 8..14: on b's top row                           -> 0 x 7
    #   bottom row: the same                                             -> 4, 2, 0 x 7
    #   right column, rows 6..13, inside b: nearest b's top/bottom row   -> 0.5 1 1.5 2 2 1.5 1 0.5
    # b -> a is the mirror image, so both directions hold the same 36 values.
    # HD = 6. HD95: sorted, 14 zeros ... ten 6s at indices 26..35; 0.95 * 35 = 33.25 -> 6.
    # MAD = (60 + 2 * (4 + 2) + 2 * (0.5 + 1 + 1.5 + 2)) / 36 = 82 / 36.
    assert hd == pytest.approx(6.0)
    assert hd95 == pytest.approx(6.0)
    assert mad == pytest.approx(82 / 36)


def test_one_pixel_bump_gives_hd95_below_hd():
    # . . . . . . .      pred: 3x3 square (rows 1-3, columns 1-3)
    # . P P P . . .      truth: the same square plus (2, 4) to the right of the middle row
    # . P P P T . .      spacing 0.8 mm rows, 0.5 mm columns
    # . P P P . . .
    pred = np.zeros((5, 7), bool)
    pred[1:4, 1:4] = True
    truth = pred.copy()
    truth[2, 4] = True
    hd, hd95, mad = contour_distances_mm(pred, truth, spacing=(0.8, 0.5))
    # pred boundary: the 8-pixel ring. (2, 3) is interior in truth (its 4 neighbours are truth),
    # so truth's boundary is the ring without (2, 3), plus (2, 4): 8 pixels.
    # pred -> truth: 7 ring pixels at 0; (2, 3) -> (2, 4) one column = 0.5 (a row would be 0.8).
    # truth -> pred: 7 at 0; (2, 4) -> (2, 3) = 0.5.
    # HD = 0.5. HD95 of [0 x 7, 0.5]: position 0.95 * 7 = 6.65 -> 0 + 0.65 * 0.5 = 0.325 in both
    # directions. MAD = (0.5 + 0.5) / 16 = 0.0625.
    assert hd == pytest.approx(0.5)
    assert hd95 == pytest.approx(0.325)
    assert mad == pytest.approx(0.0625)


def test_square_against_wider_rectangle_hand_computed():
    # pred: 3x3 square, rows 1-3, columns 1-3; truth: 3x5 rectangle, rows 1-3, columns 1-5;
    # spacing 0.8 mm rows, 0.5 mm columns.
    pred = np.zeros((5, 7), bool)
    truth = np.zeros((5, 7), bool)
    pred[1:4, 1:4] = True
    truth[1:4, 1:6] = True
    hd, hd95, mad = contour_distances_mm(pred, truth, spacing=(0.8, 0.5))
    # pred boundary: 8-pixel ring. Rows 1 and 3 and (2, 1) lie on truth's boundary: 0 x 7.
    # (2, 3) is inside truth: 1 row to (1, 3) = 0.8, 2 columns to (2, 1) or (2, 5) = 1.0 -> 0.8.
    # truth boundary: rows 1 and 3 (10 pixels) and (2, 1), (2, 5): 12 pixels.
    # Columns 1-3 of rows 1, 3 and (2, 1) lie on pred's ring: 0 x 7.
    # (1, 4), (3, 4): one column to pred = 0.5; (1, 5), (3, 5): two columns = 1.0;
    # (2, 5): two columns to (2, 3) = 1.0 (the corner (1, 3) is hypot(0.8, 1.0) = 1.28).
    # HD = 1.0.
    # HD95 pred -> truth, [0 x 7, 0.8]: position 6.65 -> 0.65 * 0.8 = 0.52;
    #      truth -> pred, [0 x 7, 0.5, 0.5, 1, 1, 1]: position 0.95 * 11 = 10.45 -> 1.0;
    #      the larger: 1.0.
    # MAD = (0.8 + 0.5 + 0.5 + 1 + 1 + 1) / 20 = 0.24.
    to_truth, to_pred = surface_distances_mm(pred, truth, (0.8, 0.5))
    assert sorted(to_truth) == pytest.approx([0] * 7 + [0.8])
    assert sorted(to_pred) == pytest.approx([0] * 7 + [0.5, 0.5, 1.0, 1.0, 1.0])
    assert (hd, hd95, mad) == pytest.approx((1.0, 1.0, 0.24))


def test_identical_masks_are_at_distance_zero():
    a = np.zeros((10, 10), bool)
    a[2:8, 3:6] = True
    assert contour_distances_mm(a, a, (1.0, 1.0)) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("pred_pixels", "truth_pixels"),
    [([], [(4, 4)]), ([(4, 4)], []), ([], [])],
    ids=["empty-prediction", "empty-truth", "both-empty"],
)
def test_empty_mask_gives_no_distance(pred_pixels, truth_pixels):
    # A contour distance needs a boundary on both sides: None (a null hd_lv_mm / mad_lv_mm),
    # never 0 or inf, whichever side is empty.
    pred = np.zeros((8, 8), bool)
    truth = np.zeros((8, 8), bool)
    for pixel in pred_pixels:
        pred[pixel] = True
    for pixel in truth_pixels:
        truth[pixel] = True
    assert surface_distances_mm(pred, truth, (0.3, 0.4)) is None
    assert contour_distances_mm(pred, truth, (0.3, 0.4)) is None


def test_single_pixel_against_single_pixel_diagonal_anisotropic():
    pred = np.zeros((5, 5), bool)
    truth = np.zeros((5, 5), bool)
    pred[1, 1] = True
    truth[2, 2] = True  # one row (0.3 mm) and one column (0.4 mm) away: hypot = 0.5 mm
    assert contour_distances_mm(pred, truth, (0.3, 0.4)) == pytest.approx((0.5, 0.5, 0.5))


def test_single_pixel_inside_a_square_anisotropic():
    pred = np.zeros((5, 5), bool)
    truth = np.zeros((5, 5), bool)
    pred[2, 2] = True  # the centre of truth's ring
    truth[1:4, 1:4] = True
    hd, hd95, mad = contour_distances_mm(pred, truth, (0.3, 0.4))
    # truth's boundary is the 8-pixel ring around (2, 2); (2, 2) itself is interior.
    # pred -> truth: one row up or down = 0.3 (one column would be 0.4)         -> [0.3]
    # truth -> pred: (1, 2), (3, 2) 0.3; (2, 1), (2, 3) 0.4; 4 corners 0.5       -> 8 values
    # HD = 0.5. HD95: pred -> truth 0.3; truth -> pred sorted [.3 .3 .4 .4 .5 .5 .5 .5],
    # position 0.95 * 7 = 6.65 -> 0.5; the larger: 0.5.
    # MAD = (0.3 + 0.3 + 0.3 + 0.4 + 0.4 + 4 * 0.5) / 9 = 3.7 / 9.
    assert hd == pytest.approx(0.5)
    assert hd95 == pytest.approx(0.5)
    assert mad == pytest.approx(3.7 / 9)


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


def _oracle_cases() -> list[tuple[np.ndarray, np.ndarray, tuple[float, float]]]:
    """Mask pairs for the MONAI comparison: smooth blobs (some touching the border), nested and
    shifted squares, a single pixel, each with its own anisotropic spacing."""
    from scipy import ndimage

    rng = np.random.default_rng(1)
    cases = []
    for _ in range(4):
        a = ndimage.gaussian_filter(rng.random((48, 56)), 3) > 0.5
        b = ndimage.gaussian_filter(rng.random((48, 56)), 3) > 0.5
        cases.append((a, b, tuple(float(v) for v in rng.uniform(0.2, 1.5, 2))))
    outer = np.zeros((20, 20), bool)
    inner = np.zeros((20, 20), bool)
    outer[2:18, 3:15] = True
    inner[6:12, 5:9] = True
    cases.append((inner, outer, (0.4, 1.0)))
    shifted = np.roll(outer, (3, -2), axis=(0, 1))
    cases.append((outer, shifted, (0.308, 0.154)))
    pixel = np.zeros((20, 20), bool)
    pixel[0, 19] = True  # a corner pixel: the image border counts as outside in both
    cases.append((pixel, outer, (0.7, 0.3)))
    return cases


def _monai_distances(monai_metrics, pred, truth, spacing) -> tuple[float, float, float]:
    import torch

    tp = torch.as_tensor(pred)[None, None]
    tt = torch.as_tensor(truth)[None, None]
    hd = monai_metrics.compute_hausdorff_distance(tp, tt, spacing=spacing).item()
    hd95 = monai_metrics.compute_hausdorff_distance(tp, tt, percentile=95, spacing=spacing).item()
    mad = monai_metrics.compute_average_surface_distance(
        tp, tt, symmetric=True, spacing=spacing
    ).item()
    return hd, hd95, mad


# MONAI is in the dev extras (pyproject.toml): this comparison runs wherever the tests do.
# ``get_mask_edges`` warns about one of its own deprecated arguments; not ours to fix.
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_agrees_with_monai():
    """An independent implementation (MONAI's ``compute_hausdorff_distance`` and
    ``compute_average_surface_distance``) gives the same HD, HD95 and MAD in mm."""
    import monai.metrics as monai_metrics

    for pred, truth, spacing in _oracle_cases():
        ours = contour_distances_mm(pred, truth, spacing)
        want = _monai_distances(monai_metrics, pred, truth, spacing)
        assert ours == pytest.approx(want, rel=1e-6), spacing


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_monai_comparison_detects_a_wrong_spacing_order():
    """The oracle can fail: on anisotropic blobs, MONAI with the spacing swapped (the mistake a
    (x, y) vs (row, col) mix-up makes) disagrees with our figures by more than the tolerance."""
    import monai.metrics as monai_metrics

    pred, truth, spacing = _oracle_cases()[0]
    ours = contour_distances_mm(pred, truth, spacing)
    swapped = _monai_distances(monai_metrics, pred, truth, spacing[::-1])
    assert ours != pytest.approx(swapped, rel=1e-6)
