"""Test-time-variant ensemble on real images with the default bundle (echo_batch.model.ensemble)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from echo_batch.io.discovery import discover
from echo_batch.io.image import read_image
from echo_batch.model import ensemble
from echo_batch.model.ensemble import DEFAULT_VARIANTS, VariantEngine
from echo_batch.model.inference import SegmentationEngine
from echo_batch.model.tta import Variant

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "camus224-test"


@pytest.fixture(scope="module")
def engine() -> SegmentationEngine:
    return SegmentationEngine.from_path(None, device="cpu", precision="fp32", threads=1)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    ref = discover(SAMPLE).patients[0]
    found = [read_image(f.image, patient_dir=ref.folder).array for f in ref.images.values()]
    # one image off the grid: its member labels are resampled to its own native shape
    found.append(cv2.resize(found[0], (300, 260), interpolation=cv2.INTER_LINEAR))
    return found[:3] + found[-1:]


def test_a_single_plain_member_is_the_engine_itself(engine, images):
    plain = engine.segment(images)
    alone = VariantEngine(engine, (Variant(),)).segment(images)
    for p, a in zip(plain, alone, strict=True):
        assert np.array_equal(p.labels, a.labels)
        assert np.array_equal(a.members[0], p.labels)
        assert a.confidence == pytest.approx(p.confidence, abs=1e-5)


def test_members_in_groups_equal_members_one_image_at_a_time(engine, images, monkeypatch):
    monkeypatch.setattr(ensemble, "GROUP", 3)  # 4 images: a group of 3 and a group of 1
    both = VariantEngine(engine, DEFAULT_VARIANTS[:3])
    together = both.segment(images)
    for image, result in zip(images, together, strict=True):
        single = both.segment([image])[0]
        assert result.labels.shape == image.shape
        assert np.array_equal(result.labels, single.labels)
        assert len(result.members) == 3
        for m, s in zip(result.members, single.members, strict=True):
            assert m.shape == image.shape
            assert np.array_equal(m, s)


def test_the_ensemble_agrees_with_the_plain_pass_but_its_members_differ(engine, images):
    plain = engine.segment(images[:2])
    members = VariantEngine(engine, DEFAULT_VARIANTS).segment(images[:2])
    for p, m in zip(plain, members, strict=True):
        assert np.mean(p.labels == m.labels) > 0.95  # variants that keep the anatomy
        assert np.array_equal(m.members[0], p.labels)  # the first member is the plain pass
        changed = [np.mean(v != p.labels) for v in m.members[1:]]
        assert all(0 < c < 0.1 for c in changed), changed
