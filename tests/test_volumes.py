"""Volume formulas and EF: hand-computed answers and the cylinder from a rectangle mask."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echo_batch.measure.landmarks import boundary_contour, disk_diameters
from echo_batch.measure.volumes import (
    area_length_ml,
    biplane_disk_height_mm,
    ejection_fraction_pct,
    simpson_biplane_ml,
    simpson_single_plane_ml,
)


def test_single_plane_of_constant_diameters_is_a_cylinder() -> None:
    # 20 disks of 30 mm over 80 mm: pi * 15^2 * 80 mm^3 = 56.549 mL
    assert simpson_single_plane_ml(np.full(20, 30.0), 80.0) == pytest.approx(56.548668, rel=1e-6)


def test_single_plane_hand_computed() -> None:
    d = np.arange(1.0, 21.0)  # sum d^2 = 2870
    assert simpson_single_plane_ml(d, 40.0) == pytest.approx(math.pi / 4 * 2870 * 2.0 / 1000)


def test_biplane_equals_single_plane_when_both_views_agree() -> None:
    d = np.linspace(40, 5, 20)
    assert simpson_biplane_ml(d, d, 90.0 / 20) == pytest.approx(simpson_single_plane_ml(d, 90.0))


def test_biplane_elliptic_cylinder() -> None:
    # ellipse of axes 30 and 20 mm, 20 disks of 4 mm: pi/4 * 600 * 80 mm^3
    v = simpson_biplane_ml(np.full(20, 30.0), np.full(20, 20.0), 4.0)
    assert v == pytest.approx(math.pi * 15 * 10 * 80 / 1000)


def test_biplane_rejects_mismatched_disks() -> None:
    with pytest.raises(ValueError):
        simpson_biplane_ml(np.ones(20), np.ones(19), 1.0)


def test_guideline_disk_height_uses_the_longer_axis() -> None:
    assert biplane_disk_height_mm(80.0, 90.0) == pytest.approx(4.5)
    assert biplane_disk_height_mm(90.0, 80.0) == pytest.approx(4.5)


def test_area_length_of_an_ellipse_section() -> None:
    # prolate spheroid section: A = pi a c / 2 for the half ellipse, L = c; 8 A^2 / (3 pi L)
    a, c = 20.0, 50.0
    area = math.pi * a * c / 2
    assert area_length_ml(area, c) == pytest.approx(8 * area**2 / (3 * math.pi * c) / 1000)
    assert area_length_ml(area, c) == pytest.approx(2 / 3 * math.pi * a**2 * c / 1000)
    assert math.isnan(area_length_ml(100.0, 0.0))


@pytest.mark.parametrize(
    ("edv", "esv", "expected"),
    [(100.0, 40.0, 60.0), (120.0, 120.0, 0.0), (50.0, 60.0, -20.0), (80.0, 0.0, 100.0)],
)
def test_ejection_fraction(edv: float, esv: float, expected: float) -> None:
    assert ejection_fraction_pct(edv, esv) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("edv", "esv"), [(0.0, 10.0), (-5.0, 1.0), (None, 3.0), (50.0, None), (math.nan, 3.0)]
)
def test_ejection_fraction_undefined_is_nan(edv: float | None, esv: float | None) -> None:
    assert math.isnan(ejection_fraction_pct(edv, esv))


@pytest.mark.parametrize("spacing", [(0.5, 0.5), (0.4, 0.9), (1.1, 0.3)])
def test_rectangle_mask_gives_cylinder(spacing: tuple[float, float]) -> None:
    """Rectangle of n_rows x n_cols pixels: boundary n_cols * col_mm wide, n_rows * row_mm high."""
    sy, sx = spacing
    n_rows, n_cols = 120, 50
    mask = np.zeros((n_rows + 10, n_cols + 10), bool)
    mask[5 : 5 + n_rows, 5 : 5 + n_cols] = True
    contour_mm = boundary_contour(mask) * np.array([sy, sx])
    top, bottom = (5 - 0.5) * sy, (4.5 + n_rows) * sy
    mid_x = (4.5 + n_cols / 2) * sx
    d = disk_diameters(contour_mm, np.array([bottom, mid_x]), np.array([top, mid_x]))
    length = bottom - top
    expected = math.pi / 4 * (n_cols * sx) ** 2 * (n_rows * sy) / 1000
    assert length == pytest.approx(n_rows * sy)
    assert simpson_single_plane_ml(d, length) == pytest.approx(expected, rel=1e-9)
