"""Synthetic DICOM cohorts (synth/dicom.py) read back with the DICOM reader: the rendered frames
(exact uncompressed, within the JPEG error for baseline), the true spacing and frame time, the
views, patients grouped by PatientID from one flat folder, identities never read."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from echo_batch.domain import LoopKind, SpacingSource, View
from echo_batch.io.dicom import group_dicom, read_dicom_clip, read_dicom_header
from echo_batch.synth import plan_cohort, render_phases, sample_loops
from echo_batch.synth.dicom import (
    DICOM_TRUTH_COLUMNS,
    DicomEncoding,
    full_loops,
    synth_dicom_cohort,
    synthetic_identity,
)

N_PATIENTS, SEED, SIDE = 3, 5, 96


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return synth_dicom_cohort(tmp_path_factory.mktemp("dicom"), N_PATIENTS, SEED, max_side=SIDE)


@pytest.fixture(scope="module")
def plan():
    return {p.patient_id: p for p, _ in plan_cohort(N_PATIENTS, SEED, max_side=SIDE)}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_layout_and_truth_tables(cohort):
    files = sorted((cohort / "dicom").iterdir())
    assert [f.name for f in files] == [f"IM_{k:06d}.dcm" for k in range(1, 2 * N_PATIENTS + 1)]
    rows = _rows(cohort / "truth_dicom.csv")
    assert list(rows[0]) == list(DICOM_TRUTH_COLUMNS)
    assert sorted(r["file"] for r in rows) == [f"dicom/{f.name}" for f in files]
    patients = _rows(cohort / "truth.csv")
    assert [p["patient_id"] for p in patients] == ["patient0001", "patient0002", "patient0003"]
    assert {p["loop_kind_2ch"] for p in patients} | {p["loop_kind_4ch"] for p in patients} == {
        "full"
    }
    frames = _rows(cohort / "truth_frames.csv")
    for row in rows:
        n = sum(
            1 for f in frames if f["patient_id"] == row["patient_id"] and f["view"] == row["view"]
        )
        assert n == int(row["n_frames"])


def test_read_back_gives_the_rendered_frames_spacing_and_frame_time(cohort, plan):
    for row in _rows(cohort / "truth_dicom.csv"):
        params, view = plan[row["patient_id"]], View(row["view"])
        loop = full_loops(params).loop(view)
        _, images = render_phases(params, view, loop.phases)
        clip = read_dicom_clip(cohort / row["file"])
        assert clip.frames.shape == images.shape
        assert clip.spacing == params.setup(view).spacing  # cm in the file, mm back, exactly
        assert clip.spacing_source == SpacingSource.DICOM_REGION
        assert clip.frame_time_ms == pytest.approx(1000.0 / loop.frame_rate_hz, rel=1e-12)
        assert clip.view == view
        error = np.abs(clip.frames - images)
        if row["encoding"] == DicomEncoding.NONE:
            assert error.max() == 0  # overlays masked or cropped, nothing else changed
        else:
            assert row["encoding"] == DicomEncoding.JPEG
            assert error.mean() < 1.5 and np.percentile(error, 99) <= 8


def test_encodings_alternate_and_overlays_are_in_the_files(cohort):
    rows = {r["patient_id"]: r["encoding"] for r in _rows(cohort / "truth_dicom.csv")}
    assert rows == {"patient0001": "jpeg", "patient0002": "none", "patient0003": "jpeg"}
    row = next(r for r in _rows(cohort / "truth_dicom.csv") if r["encoding"] == "none")
    rgb = dcmread(cohort / row["file"]).pixel_array.astype(np.int32)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    r0, r1, c0, c1 = (int(row[f"region_{k}"]) for k in ("row0", "row1", "col0", "col1"))
    inside = spread[:, r0:r1, c0:c1]
    assert (spread > 100).sum() > (inside > 100).sum() > 0  # colour outside and inside the region


def test_patients_grouped_by_patient_id_from_one_flat_folder(cohort):
    headers = [read_dicom_header(p) for p in sorted((cohort / "dicom").iterdir())]
    groups = group_dicom(headers)
    assert list(groups) == ["patient0001", "patient0002", "patient0003"]
    for studies in groups.values():
        (files,) = studies.values()
        assert sorted(h.view for h in files) == [View.A2C, View.A4C]


def test_identities_are_in_the_files_but_never_read(cohort, plan):
    for path in sorted((cohort / "dicom").iterdir()):
        header = read_dicom_header(path)
        name, birth = synthetic_identity(plan[header.patient_id])
        ds = dcmread(path)
        assert (str(ds.PatientName), ds.PatientBirthDate) == (name, birth)
        text = repr(header) + repr(read_dicom_clip(path))
        for secret in (*name.split("^"), birth, ds.AccessionNumber, ds.InstitutionName):
            assert secret not in text


def test_full_loops_keep_full_draws_and_replace_half_sequences():
    kinds = set()
    for params, _ in plan_cohort(12, 0, max_side=64):
        drawn, loops = sample_loops(params), full_loops(params)
        assert not loops.has_stills
        for before, after in zip(drawn.views, loops.views, strict=True):
            kinds.add(before.kind)
            assert after.kind == LoopKind.FULL
            assert after.frame_rate_hz == before.frame_rate_hz
            assert after.timing == before.timing
            if before.kind == LoopKind.FULL:
                np.testing.assert_array_equal(after.phases, before.phases)
    assert kinds == {LoopKind.FULL, LoopKind.HALF}


def test_options_and_determinism(tmp_path):
    a = synth_dicom_cohort(tmp_path / "a", 1, 3, max_side=64, encoding=DicomEncoding.NONE)
    b = synth_dicom_cohort(
        tmp_path / "b", 1, 3, max_side=64, encoding=DicomEncoding.NONE, view_tags=False
    )
    again = synth_dicom_cohort(tmp_path / "c", 1, 3, max_side=64, encoding=DicomEncoding.NONE)
    for name in ("IM_000001.dcm", "IM_000002.dcm"):
        assert (a / "dicom" / name).read_bytes() == (again / "dicom" / name).read_bytes()
        assert read_dicom_header(b / "dicom" / name).view is None
        np.testing.assert_array_equal(
            read_dicom_clip(a / "dicom" / name).frames, read_dicom_clip(b / "dicom" / name).frames
        )
    with pytest.raises(ValueError, match="quality"):
        synth_dicom_cohort(tmp_path / "d", 1, jpeg_quality=0)
