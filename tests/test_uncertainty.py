"""Spread between ensemble members: hand-computed cases (echo_batch.measure.uncertainty)."""

from __future__ import annotations

import numpy as np
import pytest

from echo_batch.measure.uncertainty import mean_pairwise_lv_dice, member_sd


def test_member_sd_is_the_sample_sd_of_the_measured_members():
    # 50, 54, 58: mean 54, squared deviations 16 + 0 + 16 = 32, / (3 - 1) = 16, sd 4
    assert member_sd([50.0, 54.0, 58.0]) == pytest.approx(4.0)
    assert member_sd([50.0, None, 54.0, 58.0, float("nan")]) == pytest.approx(4.0)


@pytest.mark.parametrize("values", [[], [55.0], [55.0, None], [None, None]])
def test_member_sd_needs_two_measured_members(values):
    assert member_sd(values) is None


def test_identical_members_have_no_spread():
    assert member_sd([61.0] * 5) == 0.0
    lv = np.zeros((10, 10), np.uint8)
    lv[2:6, 2:6] = 1
    assert mean_pairwise_lv_dice([lv, lv.copy(), lv.copy()]) == 1.0


def test_pairwise_lv_dice_by_hand():
    a = np.zeros((10, 10), np.uint8)
    a[0:4, 0:4] = 1  # 16 px
    b = np.zeros((10, 10), np.uint8)
    b[0:4, 2:6] = 1  # 16 px, 8 shared with a
    c = np.zeros((10, 10), np.uint8)
    c[0:4, 0:4] = 2  # myocardium only: no LV at all
    # pairs: (a, b) 2*8/32 = 0.5; (a, c) 0; (b, c) 0 -> mean 1/6
    assert mean_pairwise_lv_dice([a, b, c]) == pytest.approx(0.5 / 3)
    assert mean_pairwise_lv_dice([a, b]) == pytest.approx(0.5)
    assert mean_pairwise_lv_dice([a]) is None
