"""The synthetic truth cohort: layout, cfgs, labels, analytic areas and volumes, determinism."""

from __future__ import annotations

import csv
import math
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest

from echo_batch.domain import (
    IMAGE_KEYS,
    INSTANTS,
    VIEWS,
    ImageKey,
    Instant,
    Label,
    Release,
    Split,
    View,
)
from echo_batch.io.cfg import parse_cfg
from echo_batch.io.discovery import discover
from echo_batch.io.image import read_image, read_sequence
from echo_batch.synth import (
    CLASSIC_SPACING_MM,
    SECTOR_HALF_ANGLE_DEG,
    LVShape,
    PatientParams,
    PatientTruth,
    plan_cohort,
    rasterise_view,
    render_sequence,
    sample_patient,
    synth_cohort,
)

SMALL = 128  # grid side for the written cohorts: fast, still meaningful


@pytest.fixture(scope="module")
def nifti_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_cohort(tmp_path_factory.mktemp("nifti"), 3, seed=5, fmt="nifti", max_side=SMALL)


@pytest.fixture(scope="module")
def mhd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_cohort(tmp_path_factory.mktemp("mhd"), 2, seed=5, fmt="mhd", max_side=SMALL)


def _untilted(params: PatientParams) -> PatientParams:
    return replace(params, views=tuple(replace(s, tilt_deg=0.0) for s in params.views))


def _truth_rows(root: Path) -> dict[str, dict[str, str]]:
    with (root / "truth.csv").open() as handle:
        return {row["patient_id"]: row for row in csv.DictReader(handle)}


# ---------------------------------------------------------------- written cohorts


@pytest.mark.parametrize("fmt", ["nifti", "mhd"])
def test_cohort_is_discovered_complete(fmt: str, request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue(f"{fmt}_root")
    manifest = discover(root)
    release = Release.CAMUS2023 if fmt == "nifti" else Release.CAMUS2019
    assert [p.patient_id for p in manifest.patients] == [
        f"patient{i:04d}" for i in range(1, len(manifest.patients) + 1)
    ]
    assert not manifest.problems
    truth = _truth_rows(root)
    for patient in manifest.patients:
        assert patient.split.value == truth[patient.patient_id]["split"]
        assert patient.release == release
        assert not patient.problems
        assert patient.complete and patient.has_gt
        assert set(patient.images) == set(IMAGE_KEYS)
        assert set(patient.sequences) == set(VIEWS)
        assert all(f.image and f.gt for f in patient.sequences.values())
        assert set(patient.cfgs) == set(VIEWS)
    if fmt == "nifti":
        splits = {p.split for p in manifest.patients}
        assert splits == {Split.TRAINING, Split.VALIDATION, Split.TESTING}
    else:
        assert {p.split for p in manifest.patients} == {Split.TRAINING}


@pytest.mark.parametrize("fmt", ["nifti", "mhd"])
def test_cfgs_stills_and_sequences_agree(fmt: str, request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue(f"{fmt}_root")
    truth = _truth_rows(root)
    for patient in discover(root).patients:
        row = truth[patient.patient_id]
        for view in VIEWS:
            info = parse_cfg(patient.cfgs[view])
            tag = view.value.lower()
            assert info.n_frames == int(row[f"n_frames_{tag}"])
            assert {info.ed_frame, info.es_frame} == {1, info.n_frames}
            assert (info.ed_frame > info.es_frame) == (row["es_before_ed"] == "True")
            assert info.ef_pct == pytest.approx(float(row["ef_pct"]), abs=1e-3)
            if fmt == "mhd":
                assert info.edv_ml == pytest.approx(float(row["edv_ml"]), abs=1e-3)
                assert info.esv_ml == pytest.approx(float(row["esv_ml"]), abs=1e-3)
            else:
                assert info.frame_rate_hz is not None and info.frame_rate_hz > 0
            seq = read_sequence(patient.sequences[view].image)
            seq_gt = read_sequence(patient.sequences[view].gt, labels=True)
            assert seq.array.shape[0] == info.n_frames == seq_gt.array.shape[0]
            for instant, frame in ((Instant.ED, info.ed_frame), (Instant.ES, info.es_frame)):
                files = patient.images[ImageKey(view, instant)]
                still = read_image(files.image)
                gt = read_image(files.gt, labels=True)
                np.testing.assert_array_equal(still.array, seq.array[frame - 1])
                np.testing.assert_array_equal(gt.array, seq_gt.array[frame - 1])
                assert gt.spacing == pytest.approx(
                    (float(row[f"spacing_row_{tag}_mm"]), float(row[f"spacing_col_{tag}_mm"])),
                    rel=1e-6,
                )


def test_truth_table_matches_plan(nifti_root: Path) -> None:
    rows = _truth_rows(nifti_root)
    plan = plan_cohort(3, seed=5, max_side=SMALL)
    assert list(rows) == [p.patient_id for p, _ in plan]
    assert list(next(iter(rows.values()))) == [f.name for f in fields(PatientTruth)]
    for params, truth in plan:
        row = rows[params.patient_id]
        assert float(row["edv_ml"]) == truth.edv_ml  # full precision
        assert row["split"] == params.split.value
    split_ids = {
        s: (nifti_root / "database_split" / f"subgroup_{s}.txt").read_text().split()
        for s in ("training", "validation", "testing")
    }
    assert sorted(pid for ids in split_ids.values() for pid in ids) == sorted(rows)


def test_written_labels(nifti_root: Path) -> None:
    for patient in discover(nifti_root).patients:
        for files in patient.images.values():
            labels = read_image(files.gt, labels=True).array
            assert set(np.unique(labels)) == {0, 1, 2, 3}
            lv_rows = np.nonzero(labels == Label.LV)[0]
            la_rows = np.nonzero(labels == Label.LA)[0]
            assert lv_rows.mean() < la_rows.mean()  # apex at the top, atrium below
            assert lv_rows.min() < la_rows.min()


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    roots = [synth_cohort(tmp_path / n, 1, seed=9, max_side=96) for n in ("a", "b")]
    other = synth_cohort(tmp_path / "c", 1, seed=10, max_side=96)
    name = "database_nifti/patient0001/patient0001_4CH_half_sequence.nii.gz"
    arrays = [read_sequence(root / name).array for root in (*roots, other)]
    np.testing.assert_array_equal(arrays[0], arrays[1])
    assert arrays[0].shape != arrays[2].shape or not np.array_equal(arrays[0], arrays[2])
    assert (roots[0] / "truth.csv").read_bytes() == (roots[1] / "truth.csv").read_bytes()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        synth_cohort(tmp_path, 1, fmt="png")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        synth_cohort(tmp_path, 0)


# ---------------------------------------------------------------- pure functions


def test_plan_is_deterministic_and_independent_of_cohort_size() -> None:
    a = plan_cohort(4, seed=3)
    b = plan_cohort(4, seed=3)
    assert a == b
    assert sample_patient(2, seed=3).ed == plan_cohort(7, seed=3)[1][0].ed
    assert sample_patient(2, seed=4).ed != a[1][0].ed


def test_rasterise_is_deterministic() -> None:
    params = sample_patient(1, seed=2, max_side=96)
    first = rasterise_view(params, View.A2C, Instant.ES)
    second = rasterise_view(params, View.A2C, Instant.ES)
    for x, y in zip(first, second, strict=True):
        assert x.dtype == np.uint8
        assert x.tobytes() == y.tobytes()


def test_population_ranges() -> None:
    plan = plan_cohort(300, seed=0)
    ef = np.array([t.ef_pct for _, t in plan])
    assert ef.min() >= 15.0 and ef.max() <= 75.0
    assert ef.min() < 20.0 and ef.max() > 70.0
    spacings = {s.spacing for p, _ in plan for s in p.views}
    assert CLASSIC_SPACING_MM in spacings and CLASSIC_SPACING_MM[::-1] in spacings
    assert any(r == c for r, c in spacings)
    assert any(p.es_before_ed for p, _ in plan) and not all(p.es_before_ed for p, _ in plan)
    for params, truth in plan:
        ed, es = params.ed, params.es
        assert 35.0 <= ed.c_mm <= 55.0 and 18.0 <= ed.a_mm <= 30.0 and 18.0 <= ed.b_mm <= 30.0
        assert abs(ed.a_mm - ed.b_mm) >= 1.4
        assert 0.0 <= ed.base_frac <= 0.3 and es.base_frac == ed.base_frac
        assert 0.08 <= 1.0 - es.c_mm / ed.c_mm <= 0.17
        assert es.a_mm <= ed.a_mm and es.b_mm <= ed.b_mm
        assert 8.0 <= ed.myo_mm <= es.myo_mm <= 12.0
        assert all(abs(s.tilt_deg) <= 20.0 for s in params.views)
        assert all(s.depth_mm >= 120.0 for s in params.views)
        assert all(10 <= s.n_frames <= 20 for s in params.views)
        assert truth.length_ed_2ch_mm == truth.length_ed_4ch_mm == ed.length_mm
        assert params.views[0].tilt_deg != params.views[1].tilt_deg


def test_closed_forms_match_numerical_integrals() -> None:
    shape = LVShape(
        a_mm=22.0,
        b_mm=27.0,
        c_mm=44.0,
        base_frac=0.2,
        myo_mm=9.0,
        la_width_ratio=1.2,
        la_depth_mm=18.0,
    )
    z = np.linspace(-0.2 * 44.0, 44.0, 200_001)
    disk = 1.0 - z**2 / 44.0**2
    assert shape.volume_ml == pytest.approx(np.trapezoid(math.pi * 22 * 27 * disk, z) / 1e3)
    for view, s in ((View.A2C, 22.0), (View.A4C, 27.0)):
        assert shape.single_plane_volume_ml(view) == pytest.approx(
            np.trapezoid(math.pi * s * s * disk, z) / 1e3
        )
        assert shape.section_area_mm2(view) == pytest.approx(
            np.trapezoid(2 * s * np.sqrt(np.clip(disk, 0, None)), z), rel=1e-6
        )
    # Biplane (elliptical disks) is the geometric mean of the two single-plane limits.
    assert shape.volume_ml == pytest.approx(
        math.sqrt(shape.single_plane_volume_ml(View.A2C) * shape.single_plane_volume_ml(View.A4C))
    )
    assert shape.length_mm == pytest.approx(44.0 * 1.2)


@pytest.mark.parametrize("spacing", [CLASSIC_SPACING_MM, CLASSIC_SPACING_MM[::-1], (0.3, 0.3)])
def test_lv_area_matches_analytic_section(spacing: tuple[float, float]) -> None:
    for index in (1, 2):
        params = sample_patient(index, seed=11)
        for view in VIEWS:
            setup = params.setup(view)
            grid = (
                round(setup.depth_mm / spacing[0]) + 1,
                round(setup.shape[1] * setup.spacing[1] / spacing[1]),
            )
            for instant in INSTANTS:
                labels, image = rasterise_view(params, view, instant, spacing, grid)
                shape = params.ed if instant == Instant.ED else params.es
                area = np.count_nonzero(labels == Label.LV) * spacing[0] * spacing[1]
                assert area == pytest.approx(shape.section_area_mm2(view), rel=0.01)
                myo = image[labels == Label.MYO].mean()
                assert myo > 2.0 * image[labels == Label.LV].mean()


def test_single_plane_limit_from_rasterised_rows() -> None:
    """Disks of the mask's row widths (untilted LV) integrate to the single-plane truth."""
    params = _untilted(sample_patient(3, seed=1))
    spacing = (0.2, 0.2)
    for view in VIEWS:
        setup = params.setup(view)
        grid = (round(setup.depth_mm / 0.2) + 1, round(setup.shape[1] * setup.spacing[1] / 0.2))
        for instant in INSTANTS:
            labels, _ = rasterise_view(params, view, instant, spacing, grid)
            lv = labels == Label.LV
            widths = lv.sum(axis=1) * spacing[1]
            volume = np.sum(math.pi / 4.0 * widths**2) * spacing[0] / 1e3
            shape = params.ed if instant == Instant.ED else params.es
            assert volume == pytest.approx(shape.single_plane_volume_ml(view), rel=0.015)
            rows = np.nonzero(lv.any(axis=1))[0]
            length = (rows.max() - rows.min() + 1) * spacing[0]
            assert length == pytest.approx(shape.length_mm, abs=2 * spacing[0])
            # The wall is w thick beside the equator and never below the base plane.
            myo_rows = np.nonzero((labels == Label.MYO).any(axis=1))[0]
            assert myo_rows.max() <= rows.max()
            la_rows = np.nonzero((labels == Label.LA).any(axis=1))[0]
            assert la_rows.min() == rows.max() + 1


def test_sequence_runs_ed_to_es_with_shrinking_lv() -> None:
    params = sample_patient(1, seed=4, max_side=96)
    for es_first in (False, True):
        p = replace(params, es_before_ed=es_first)
        labels, images = render_sequence(p, View.A4C)
        assert labels.shape == images.shape == (p.setup(View.A4C).n_frames, 96, 96)
        areas = (labels == Label.LV).sum(axis=(1, 2))
        assert np.all(np.diff(areas[::-1] if es_first else areas) <= 0)
        ed = rasterise_view(p, View.A4C, Instant.ED)
        es = rasterise_view(p, View.A4C, Instant.ES)
        ed_frame, es_frame = (-1, 0) if es_first else (0, -1)
        np.testing.assert_array_equal(labels[ed_frame], ed[0])
        np.testing.assert_array_equal(images[ed_frame], ed[1])
        np.testing.assert_array_equal(labels[es_frame], es[0])
        np.testing.assert_array_equal(images[es_frame], es[1])


def test_heart_inside_sector_and_image_zero_outside() -> None:
    for params, _ in plan_cohort(6, seed=8, max_side=128):
        for view in VIEWS:
            setup = params.setup(view)
            labels, image = rasterise_view(params, view, Instant.ES)
            row_mm, col_mm = setup.spacing
            height, width = labels.shape
            y = np.arange(height)[:, None] * row_mm
            x = (np.arange(width)[None, :] - (width - 1) / 2.0) * col_mm
            angle = np.degrees(np.arctan2(np.abs(x), y))
            radius = np.hypot(x, y)
            outside = (angle > SECTOR_HALF_ANGLE_DEG + 0.1) | (radius > setup.depth_mm + 0.01)
            assert not image[outside].any()
            assert not labels[(angle > SECTOR_HALF_ANGLE_DEG) | (radius > setup.depth_mm)].any()
            assert image[~outside].mean() > 20.0
