"""QC flags from the threshold table."""

from __future__ import annotations

from echo_batch.measure import PatientVolumes
from echo_batch.quality import QC_THRESHOLDS, QCFlag, is_blocking, patient_flags
from echo_batch.records import ImageRecord


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
