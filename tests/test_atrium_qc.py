"""Quality flags of the left atrium: cut by the sector or the image border, LA lengths apart.

Known answers: pixel edges of hand-built atria against the image border and a hand-drawn sector,
counted by hand with an anisotropic spacing; the thresholds of the flags at and around them.
"""

from __future__ import annotations

import numpy as np
import pytest

from echo_batch.domain import Label
from echo_batch.qc.atrium import la_edge_mm, sector_mask
from echo_batch.qc.flags import (
    QC_THRESHOLDS,
    QCFlag,
    atrium_image_flags,
    atrium_patient_flags,
    is_blocking,
)

SPACING = (0.5, 0.3)  # (row_mm, col_mm): an edge between left/right neighbours is 0.5 mm long


def _labels(rows: slice, cols: slice, shape=(40, 30)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[rows, cols] = Label.LA
    return labels


def test_atrium_inside_the_image_without_image_touches_nothing():
    assert la_edge_mm(_labels(slice(10, 20), slice(5, 15)), None, SPACING) == 0.0
    assert la_edge_mm(np.zeros((10, 10), np.uint8), None, SPACING) == 0.0


def test_atrium_on_the_bottom_border_by_hand():
    # 10 columns on the last row: 10 edges between vertical neighbours (row, row + 1 outside)
    labels = _labels(slice(30, 40), slice(5, 15))
    assert la_edge_mm(labels, None, SPACING) == pytest.approx(10 * 0.3)


def test_atrium_in_a_corner_by_hand():
    # bottom-right corner: 10 columns on the last row and 10 rows on the last column
    labels = _labels(slice(30, 40), slice(20, 30))
    assert la_edge_mm(labels, None, SPACING) == pytest.approx(10 * 0.3 + 10 * 0.5)


def test_only_the_largest_atrium_component_counts():
    labels = _labels(slice(10, 20), slice(5, 15))
    labels[39, 0:3] = Label.LA  # a speck on the border
    assert la_edge_mm(labels, None, SPACING) == 0.0


def test_sector_is_the_convex_hull_of_the_bright_pixels():
    image = np.zeros((40, 30), np.uint8)
    image[5:35, 10:20] = 200
    image[15:25, 12:18] = 0  # dark blood inside stays inside the hull
    image[0, 0] = 3  # noise below 2 % of the maximum is not the sector
    mask = sector_mask(image)
    assert mask[15:25, 12:18].all() and mask[5:35, 10:20].all()
    assert mask.sum() == 30 * 10
    assert sector_mask(np.zeros((5, 5))).all()  # no bright pixel: the whole image
    np.testing.assert_array_equal(sector_mask(image, (4, 9, 3, 4)), mask[4:7, 9:13])


def test_atrium_against_the_sector_edge_by_hand():
    image = np.zeros((40, 30), np.uint8)
    image[0:30, 5:25] = 100  # sector: rows 0-29, columns 5-24
    inside = _labels(slice(10, 20), slice(8, 18))
    assert la_edge_mm(inside, image, SPACING) == 0.0
    # rows 22-29 x columns 8-17: its bottom row (10 columns) lies on the sector's last row
    bottom = _labels(slice(22, 30), slice(8, 18))
    assert la_edge_mm(bottom, image, SPACING) == pytest.approx(10 * 0.3)
    # reaching columns 25-26, beyond the sector: every edge to an outside pixel counts, i.e. the
    # bottom row (columns 8-26), the right side (8 rows against column 27) and the tops of
    # columns 25-26 (row 21 there is outside the sector)
    wide = _labels(slice(22, 30), slice(8, 27))
    expected = 19 * 0.3 + 8 * 0.5 + 2 * 0.3
    assert la_edge_mm(wide, image, SPACING) == pytest.approx(expected)


def test_la_cut_flag_threshold():
    limit = QC_THRESHOLDS[QCFlag.LA_CUT].value
    assert atrium_image_flags(None) == []
    assert atrium_image_flags(0.0) == []
    assert atrium_image_flags(limit) == []
    assert atrium_image_flags(limit + 0.01) == ["la_cut"]


def test_la_length_mismatch_threshold_is_5_mm():
    assert QC_THRESHOLDS[QCFlag.LA_LENGTH_MISMATCH].value == 5.0
    assert "Lang et al. 2015" in QC_THRESHOLDS[QCFlag.LA_LENGTH_MISMATCH].source
    assert atrium_patient_flags(50.0, 55.0) == []
    assert atrium_patient_flags(50.0, 55.5) == ["la_length_mismatch_2ch_4ch"]
    assert atrium_patient_flags(56.0, 50.0) == ["la_length_mismatch_2ch_4ch"]
    assert atrium_patient_flags(None, 50.0) == []


def test_atrium_flags_never_block():
    assert not is_blocking(["la_cut", "la_length_mismatch_2ch_4ch"])
