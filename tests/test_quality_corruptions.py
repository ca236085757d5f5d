"""QC on real expert masks: deliberate corruptions are caught, the expert masks themselves pass.

The corruptions are those of ``benchmarks/qc_corruptions.py`` (holes, a split LV, a missing apex,
swapped labels, an LV leaking into the atrium). The thresholds were derived on the training and
validation splits; these tests measure them on the testing split only (the bundled sample, and
the 50 testing patients of CAMUS-224 when ``../shared`` is present); the figure on the 450
training and validation patients is logged beside, not asserted.
"""

from __future__ import annotations

import importlib.util
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from echo_batch.domain import IMAGE_KEYS
from echo_batch.io.image import read_image
from echo_batch.measure.landmarks import ViewGeometry, measure_lv
from echo_batch.qc.flags import image_flags, image_qc, is_blocking

REPO = Path(__file__).resolve().parents[1]
MIN_DETECTION = 0.90
MAX_EXPERT_FLAGGED = 0.10

logger = logging.getLogger(__name__)


def _corruptions():
    spec = importlib.util.spec_from_file_location(
        "qc_corruptions", REPO / "benchmarks" / "qc_corruptions.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CORRUPTIONS


def _expert_masks(root: Path, ids: list[str]):
    for pid in ids:
        for key in IMAGE_KEYS:
            image = read_image(
                root / "database_nifti" / pid / f"{pid}_{key}_gt.nii.gz", labels=True
            )
            yield f"{pid}_{key}", image.array, image.spacing


def _caught(labels: np.ndarray, spacing: tuple[float, float]) -> bool:
    """What the pipeline does: an unmeasurable image fails, else blocking image flags."""
    geo = measure_lv(labels, spacing)
    if not isinstance(geo, ViewGeometry):
        return True
    return is_blocking(image_flags(image_qc(labels, spacing, geo)))


def test_corrupted_expert_masks_are_flagged(real_sample):
    root, ids = real_sample
    corruptions = _corruptions()
    rng = np.random.default_rng(0)
    caught: dict[str, list[bool]] = defaultdict(list)
    expert_flagged = []
    for name, labels, spacing in _expert_masks(root, ids):
        geo = measure_lv(labels, spacing)
        assert isinstance(geo, ViewGeometry), name
        expert_flagged.append(is_blocking(image_flags(image_qc(labels, spacing, geo))))
        for kind, corrupt in corruptions.items():
            caught[kind].append(_caught(corrupt(labels, spacing, geo, rng), spacing))
    rates = {kind: float(np.mean(hits)) for kind, hits in caught.items()}
    overall = float(np.mean([h for hits in caught.values() for h in hits]))
    assert overall >= MIN_DETECTION, rates
    for kind, rate in rates.items():
        assert rate >= MIN_DETECTION, (kind, rates)
    assert float(np.mean(expert_flagged)) <= MAX_EXPERT_FLAGGED


def test_corruption_changes_the_mask(real_sample):
    root, ids = real_sample
    _, labels, spacing = next(_expert_masks(root, ids[:1]))
    geo = measure_lv(labels, spacing)
    rng = np.random.default_rng(1)
    for kind, corrupt in _corruptions().items():
        assert not np.array_equal(corrupt(labels, spacing, geo, rng), labels), kind


def _split_ids(root: Path, split: str) -> list[str]:
    """Patient ids of one CAMUS split (``database_split/subgroup_{split}.txt``)."""
    return (root / "database_split" / f"subgroup_{split}.txt").read_text().split()


@pytest.mark.shared
def test_expert_masks_of_the_testing_split_rarely_flagged(camus224, record_property):
    """Held-out check of the QC thresholds: the expert masks of the 50 testing patients.

    The thresholds were derived on the training and validation patients, so their figure is no
    evidence that the thresholds generalise: it is logged and recorded (junit property
    ``expert_flagged_training_validation``), never asserted.
    """
    testing = _split_ids(camus224, "testing")
    flagged = [_caught(labels, spacing) for _, labels, spacing in _expert_masks(camus224, testing)]
    assert len(testing) == 50 and len(flagged) == 200
    # measured: 0 of 200 images (and 0 of the 1,800 training + validation images)
    assert float(np.mean(flagged)) <= 0.01

    derivation = _split_ids(camus224, "training") + _split_ids(camus224, "validation")
    assert not set(derivation) & set(testing)
    flagged_derivation = [
        _caught(labels, spacing) for _, labels, spacing in _expert_masks(camus224, derivation)
    ]
    share = float(np.mean(flagged_derivation))
    record_property("expert_flagged_training_validation", share)
    logger.info(
        "expert masks flagged: testing %d of %d; training + validation (threshold derivation, "
        "not a test) %d of %d",
        sum(flagged),
        len(flagged),
        sum(flagged_derivation),
        len(flagged_derivation),
    )
