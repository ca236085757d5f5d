"""Segmentation metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echo_batch.metrics import contour_distances_mm, dice


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
