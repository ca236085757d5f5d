"""QC flags from the threshold table: known-answer image measurements and patient criteria."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fixtures import make_patient

from echo_batch.domain import ImageKey, Instant, Label, View
from echo_batch.measure.landmarks import ViewGeometry, measure_lv
from echo_batch.measure.patient import PatientVolumes
from echo_batch.qc.flags import (
    QC_THRESHOLDS,
    QCFlag,
    image_flags,
    image_qc,
    is_blocking,
    length_mismatch,
    patient_flags,
)
from echo_batch.store.records import ImageRecord


def _images(confidence: float = 0.96, status: str = "ok") -> list[ImageRecord]:
    return [ImageRecord("p", "2CH", "ED", status, confidence=confidence)]


def test_plausible_patient_has_no_flag():
    volumes = PatientVolumes(edv_ml=120.0, esv_ml=60.0, ef_pct=50.0)
    assert patient_flags(volumes, _images()) == []


def test_each_flag_is_raised_by_its_condition():
    assert patient_flags(PatientVolumes(100.0, 100.0, 0.0), _images()) == [
        "ef_out_of_range",
        "esv_ge_edv",
    ]
    assert patient_flags(PatientVolumes(100.0, 10.0, 90.0), _images()) == ["ef_out_of_range"]
    low = QC_THRESHOLDS[QCFlag.LOW_CONFIDENCE].value - 0.01
    assert patient_flags(PatientVolumes(100.0, 50.0, 50.0), _images(low)) == ["low_confidence"]
    assert patient_flags(PatientVolumes(), _images(status="failed")) == ["image_failed"]


def test_ground_truth_images_without_confidence_are_not_flagged():
    images = [ImageRecord("p", "2CH", "ED", "ok", segmentation="gt", confidence=None)]
    assert patient_flags(PatientVolumes(100.0, 40.0, 60.0), images) == []


def test_every_threshold_has_a_source_and_blocking_is_known():
    for flag, threshold in QC_THRESHOLDS.items():
        assert threshold.source, flag
    assert is_blocking(["esv_ge_edv"])
    assert not is_blocking([])


# --------------------------------------------------------------------------- image criteria

SPACING = (0.5, 0.5)


def synthetic_heart(shape: tuple[int, int] = (224, 224)) -> np.ndarray:
    """``(H, W)`` labels of an apical view at 0.5 mm: LV 60 mm long, myocardium, atrium below.

    LV: ellipse centred at (60, 56) mm, semi-axes 35 x 18 mm, cut at the base y = 85 mm;
    myocardium: 8 mm thick around it down to the base; atrium: ellipse below the base.
    """
    y, x = np.indices(shape) * np.array(SPACING)[:, None, None]
    labels = np.zeros(shape, np.uint8)
    above_base = y <= 85
    inner = ((y - 60) / 35) ** 2 + ((x - 56) / 18) ** 2 <= 1
    outer = ((y - 60) / 43) ** 2 + ((x - 56) / 26) ** 2 <= 1
    atrium = ((y - 92) / 16) ** 2 + ((x - 56) / 18) ** 2 <= 1
    labels[outer & above_base] = Label.MYO
    labels[inner & above_base] = Label.LV
    labels[atrium & ~above_base] = Label.LA
    return labels


def _flags(labels: np.ndarray, spacing=SPACING, confidence=None) -> list[str]:
    return image_flags(image_qc(labels, spacing, measure_lv(labels, spacing)), confidence)


def test_synthetic_heart_is_anatomically_valid():
    labels = synthetic_heart()
    geo = measure_lv(labels, SPACING)
    qc = image_qc(labels, SPACING, geo)
    assert qc.lv_extra_share == 0 and qc.lv_hole_mm2 == 0
    assert qc.lv_background_mm == 0 and qc.apex_background_share == 0
    assert qc.la_gap_mm == pytest.approx(0.5, abs=0.3)  # the atrium touches the base
    assert qc.lv_length_mm == pytest.approx(60, abs=1.5)
    assert image_flags(qc) == []


def test_hole_area_is_counted_in_mm2():
    labels = synthetic_heart()
    labels[110:113, 100:104] = Label.BG  # 12 pixels inside the LV cavity
    qc = image_qc(labels, (0.4, 0.7))
    assert qc.lv_hole_mm2 == pytest.approx(12 * 0.4 * 0.7)
    assert QCFlag.LV_HOLES.value in image_flags(qc)


def test_background_frontier_length_hand_computed():
    labels = np.zeros((8, 8), np.uint8)
    labels[1:6, 1:6] = Label.MYO
    labels[2:4, 2:5] = Label.LV
    labels[4, 2:5] = Label.BG  # the 3 pixels under the LV are background
    qc = image_qc(labels, (0.4, 0.7))
    # three edges between up/down neighbours, each as long as a pixel is wide (0.7 mm)
    assert qc.lv_background_mm == pytest.approx(3 * 0.7)
    assert qc.lv_hole_mm2 == 0


def test_share_outside_the_largest_component():
    labels = synthetic_heart()
    main = int((labels == Label.LV).sum())
    labels[5:7, 5:10] = Label.LV  # a 10-pixel fragment far away
    qc = image_qc(labels, SPACING)
    assert qc.lv_extra_share == pytest.approx(10 / (main + 10))


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (
            lambda m: np.where((m == Label.LV) & (np.indices(m.shape)[0] == 120), Label.MYO, m),
            QCFlag.LV_FRAGMENTED,
        ),
        (
            lambda m: np.where((m != Label.BG) & (np.indices(m.shape)[0] < 70), Label.BG, m),
            QCFlag.APEX_NOT_CAPPED,
        ),
        (
            lambda m: np.where((m != Label.BG) & (np.indices(m.shape)[0] < 70), Label.BG, m),
            QCFlag.LV_NOT_ENCLOSED,
        ),
        (lambda m: np.where(m == Label.LA, Label.LV, m), QCFlag.LA_NOT_AT_BASE),
        (lambda m: np.where(m == Label.LA, Label.BG, m), QCFlag.LA_NOT_AT_BASE),
        (
            lambda m: np.select([m == Label.LV, m == Label.MYO], [Label.MYO, Label.LV], m),
            QCFlag.LV_NOT_ENCLOSED,
        ),
    ],
    ids=["split", "apex-cut-capping", "apex-cut-frontier", "leak", "no-atrium", "lv-myo-swap"],
)
def test_each_corruption_raises_its_flag(corrupt, expected):
    labels = corrupt(synthetic_heart()).astype(np.uint8)
    assert expected.value in _flags(labels)


def test_atrium_away_from_the_base():
    labels = synthetic_heart()
    la = labels == Label.LA
    labels[la] = Label.BG
    labels[np.roll(la, 20, axis=0)] = Label.LA  # 20 rows = 10 mm lower
    qc = image_qc(labels, SPACING, measure_lv(labels, SPACING))
    assert qc.la_gap_mm == pytest.approx(10.5, abs=1.0)
    assert QCFlag.LA_NOT_AT_BASE.value in image_flags(qc)


def test_length_and_area_use_the_spacing():
    labels = synthetic_heart()
    assert _flags(labels, (0.5, 0.5)) == []
    big = _flags(labels, (1.5, 1.5))  # the same pixels three times larger: 180 mm long
    assert {QCFlag.LV_LENGTH_IMPLAUSIBLE.value, QCFlag.LV_AREA_IMPLAUSIBLE.value} <= set(big)
    small = _flags(labels, (0.2, 0.2))  # 24 mm long
    assert QCFlag.LV_LENGTH_IMPLAUSIBLE.value in small


def test_confidence_and_empty_mask():
    low = QC_THRESHOLDS[QCFlag.LOW_CONFIDENCE].value - 0.001
    assert _flags(synthetic_heart(), confidence=low) == [QCFlag.LOW_CONFIDENCE.value]
    assert image_flags(image_qc(np.zeros((20, 20), np.uint8), SPACING)) == []


# --------------------------------------------------------------------------- patient criteria


def _geometries(len_2ch: float, len_4ch: float) -> dict[ImageKey, ViewGeometry]:
    geo = measure_lv(synthetic_heart(), SPACING)
    return {
        ImageKey(view, instant): dataclasses.replace(
            geo, length_mm=len_2ch if view == View.A2C else len_4ch
        )
        for view in View
        for instant in Instant
    }


def test_length_mismatch_is_reported_but_not_blocking():
    assert length_mismatch(_geometries(80.0, 90.0)) == pytest.approx(10 / 90)
    volumes = PatientVolumes(120.0, 60.0, 50.0)
    flags = patient_flags(volumes, _images(), _geometries(80.0, 90.0))
    assert flags == [QCFlag.LENGTH_MISMATCH.value]
    assert not is_blocking(flags)
    assert patient_flags(volumes, _images(), _geometries(80.0, 85.0)) == []
    assert length_mismatch({}) is None


def test_single_plane_ef_disagreement():
    single = {View.A2C: (100.0, 40.0, 60.0), View.A4C: (100.0, 70.0, 30.0)}
    flags = patient_flags(PatientVolumes(100.0, 55.0, 45.0, single=single), _images())
    assert flags == [QCFlag.VIEW_EF_DISAGREEMENT.value]
    assert is_blocking(flags)
    single[View.A4C] = (100.0, 55.0, 45.0)
    assert patient_flags(PatientVolumes(100.0, 47.5, 52.5, single=single), _images()) == []


def test_poor_image_quality_is_reported_not_blocking():
    volumes = PatientVolumes(120.0, 60.0, 50.0)
    flags = patient_flags(volumes, _images(), image_quality="Poor")
    assert flags == [QCFlag.POOR_IMAGE_QUALITY.value]
    assert not is_blocking(flags)
    assert patient_flags(volumes, _images(), image_quality="Good") == []


def test_image_flags_reach_the_patient_and_block():
    images = [ImageRecord("p", "2CH", "ED", "ok", qc_flags=["lv_holes"]), *_images()]
    flags = patient_flags(PatientVolumes(120.0, 60.0, 50.0), images)
    assert flags == ["lv_holes"]
    assert is_blocking(flags)
    assert is_blocking(["not_a_known_flag"])  # unknown flags never pass silently


def test_every_flag_has_a_threshold_row():
    assert set(QC_THRESHOLDS) == set(QCFlag)
    for threshold in QC_THRESHOLDS.values():
        assert threshold.upper is None or threshold.upper > threshold.value


def test_pipeline_writes_image_and_patient_flags(tmp_path):
    from echo_batch.domain import SegmentationSource
    from echo_batch.io.discovery import discover
    from echo_batch.run.chunk import process_chunk
    from echo_batch.run.options import ChunkOptions

    make_patient(tmp_path, "patient0001")  # tiny 12 x 10 pixel heart: implausibly small LV
    refs = discover(tmp_path).patients
    result = process_chunk(refs, ChunkOptions(segmentation=SegmentationSource.GT))
    (patient,) = result.patients
    assert all(QCFlag.LV_LENGTH_IMPLAUSIBLE.value in im.qc_flags for im in result.images)
    assert QCFlag.LV_LENGTH_IMPLAUSIBLE.value in patient.qc_flags
    assert patient.qc_pass is False


def test_docs_table_lists_every_flag_with_its_blocking():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "quality.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (?:image|patient) \| (yes|no) \|", text, re.M))
    assert set(rows) == {f.value for f in QCFlag}
    for flag, blocking in rows.items():
        assert (blocking == "yes") == QC_THRESHOLDS[QCFlag(flag)].blocking, flag
