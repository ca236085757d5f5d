"""Uncertainty columns of a patient from its members' masks (echo_batch.run.members)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from echo_batch.io.discovery import discover
from echo_batch.io.image import read_image
from echo_batch.measure.landmarks import ViewGeometry, measure_lv
from echo_batch.measure.patient import patient_volumes
from echo_batch.run.chunk import _camus_ef
from echo_batch.run.members import member_spread

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "camus224-test"


def camus_ef(masks, spacings):
    found = _camus_ef(masks, spacings, None)
    return getattr(found, "ef_pct", None)


@pytest.fixture(scope="module")
def expert():
    ref = discover(SAMPLE).patients[0]
    masks, spacings = {}, {}
    for key, files in ref.images.items():
        gt = read_image(files.gt, patient_dir=ref.folder, labels=True)
        masks[key], spacings[key] = gt.array, gt.spacing
    return masks, spacings


def _grown(labels: np.ndarray, pixels: int) -> np.ndarray:
    """The label map with its LV cavity dilated (pixels > 0) or eroded (< 0) into the myocardium."""
    lv = (labels == 1).astype(np.uint8)
    kernel = np.ones((2 * abs(pixels) + 1,) * 2, np.uint8)
    changed = cv2.dilate(lv, kernel) if pixels > 0 else cv2.erode(lv, kernel)
    out = labels.copy()
    out[(labels == 1) & (changed == 0)] = 2
    out[(changed == 1) & (labels == 2)] = 1
    return out


def _plain_ef(masks, spacings):
    geometries = {
        k: g for k, m in masks.items() if isinstance(g := measure_lv(m, spacings[k]), ViewGeometry)
    }
    return patient_volumes(geometries).ef_pct


def test_identical_members_have_no_spread(expert):
    masks, spacings = expert
    spread = member_spread(
        {k: [m, m.copy(), m.copy()] for k, m in masks.items()}, spacings, camus_ef
    )
    assert spread.n_members == 3
    assert spread.ef_pct_sd == 0.0
    assert spread.ef_camus_pct_sd == 0.0
    assert all(d == 1.0 for d in spread.lv_dice.values())


def test_the_spread_is_the_sd_of_each_member_measured_the_plain_way(expert):
    masks, spacings = expert
    # member 1: every LV one pixel larger; member 2: end-systolic LVs two pixels smaller
    members = {
        k: [m, _grown(m, 1), _grown(m, -2) if k.instant.value == "ES" else m]
        for k, m in masks.items()
    }
    spread = member_spread(members, spacings, camus_ef)
    per_member = [{k: maps[i] for k, maps in members.items()} for i in range(3)]
    efs = [_plain_ef(m, spacings) for m in per_member]
    camus = [camus_ef(m, spacings) for m in per_member]
    assert len(set(np.round(efs, 6))) == 3  # the members really differ
    assert spread.ef_pct_sd == pytest.approx(np.std(efs, ddof=1))
    assert spread.ef_camus_pct_sd == pytest.approx(np.std(camus, ddof=1))
    assert spread.ef_pct_sd > 0.5
    assert all(0.5 < d < 1.0 for d in spread.lv_dice.values())


def test_members_of_unequal_counts_are_refused(expert):
    masks, spacings = expert
    members = {k: [m] * (2 if i else 3) for i, (k, m) in enumerate(masks.items())}
    with pytest.raises(ValueError, match="member counts"):
        member_spread(members, spacings, camus_ef)
    assert member_spread({}, spacings, camus_ef).n_members is None
