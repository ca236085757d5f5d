"""DICOM through discovery and a whole run.

Oracle: real CAMUS stills written as uncompressed DICOM (a tissue region carrying the true
spacing) and listed by a manifest give the NIfTI run's EF and volumes; JPEG baseline at quality 95
stays within 1 EF point. The files carry a patient name and birth date: neither reaches any
output file or log line. Discovery of a folder of DICOM files: patients from PatientID, studies,
views from the tags, and every unusable file a problem naming it.
"""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from echo_batch.domain import InputFormat, View
from echo_batch.io.discovery import discover
from echo_batch.report import write_report
from echo_batch.run.options import RunOptions
from echo_batch.run.serial import run_cohort
from echo_batch.synth.dicom_convert import camus_stills_to_dicom, write_ultrasound_dicom

N_PATIENTS = 4
NAME, BIRTH = "Testperson^Jolanda", "19390214"
COMPARED = ["ef_pct", "edv_ml", "esv_ml", "ef_2ch_pct", "ef_4ch_pct", "edv_4ch_ml", "ef_camus_pct"]


def _manifest(folder: Path, rows: list[dict[str, object]]) -> Path:
    path = folder / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def converted(real_sample, tmp_path_factory) -> dict[str, Path]:
    """The first patients of the real sample as NIfTI, and as DICOM (raw, JPEG 95) + manifests."""
    root, ids = real_sample
    ids = ids[:N_PATIENTS]
    work = tmp_path_factory.mktemp("dicom-sample")
    nifti = work / "nifti" / "database_nifti"
    for pid in ids:
        shutil.copytree(root / "database_nifti" / pid, nifti / pid)
    found = {"nifti": nifti.parent}
    for name, quality in (("raw", None), ("jpeg95", 95)):
        folder = work / name
        folder.mkdir()
        rows = [
            row
            for pid in ids
            for row in camus_stills_to_dicom(
                nifti / pid, folder, jpeg_quality=quality, identity=(NAME, BIRTH)
            )
        ]
        found[name] = _manifest(folder, rows)
    return found


def _run(data: Path, out: Path) -> pd.DataFrame:
    run_cohort(RunOptions(data, out))  # the bundled model
    write_report(out)
    return pd.read_parquet(out / "patients.parquet").set_index("patient_id").sort_index()


def test_camus_stills_as_dicom_give_the_nifti_numbers_and_no_identity(converted, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    reference = _run(converted["nifti"], tmp_path / "nifti")
    raw = _run(converted["raw"], tmp_path / "raw")
    assert reference["ef_pct"].notna().sum() >= N_PATIENTS - 1
    assert (raw["input_format"] == InputFormat.MANIFEST.value).all()
    assert (raw["spacing_source"] == "dicom_region").all()
    assert (raw["frames_source"] == "annotated").all()
    np.testing.assert_allclose(raw[COMPARED], reference[COMPARED], atol=0.01)
    assert (raw["status"] == reference["status"]).all()

    jpeg = _run(converted["jpeg95"], tmp_path / "jpeg")
    ok = reference["ef_pct"].notna()
    assert np.all(np.abs(jpeg.loc[ok, "ef_pct"] - reference.loc[ok, "ef_pct"]) <= 1.0)

    # names and birth dates are in every DICOM file, and nowhere in any output or log line
    assert NAME.encode() in (converted["raw"].parent / f"{raw.index[0]}_2CH.dcm").read_bytes()
    needles = [NAME, NAME.replace("^", " "), "Testperson", "Jolanda", BIRTH, "1939-02-14"]
    for out in ("raw", "jpeg"):
        files = [p for p in (tmp_path / out).rglob("*") if p.is_file()]
        assert (tmp_path / out / "report" / "index.html") in files
        assert len(files) >= 8  # parquet files, run.json, the report and its figures
        for path in files:
            data = path.read_bytes()
            for needle in needles:
                assert needle.encode() not in data, (path, needle)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert text and not any(needle in text for needle in needles)


def _loop(n: int = 12, size: int = 48) -> np.ndarray:
    """A pulsing dark disc: enough pixels for a header and a decode, not for a measurement."""
    rows, cols = np.mgrid[:size, :size]
    frames = []
    for t in range(n):
        radius = 10 + 4 * np.cos(2 * np.pi * t / n)
        frames.append(np.where(np.hypot(rows - size / 2, cols - size / 2) < radius, 20, 160))
    return np.asarray(frames, np.uint8)


def test_a_folder_of_dicom_files_becomes_patients_studies_and_views(tmp_path):
    data = tmp_path / "export" / "any" / "layout"
    data.mkdir(parents=True)
    loop = _loop()
    write = write_ultrasound_dicom
    write(data / "a1.dcm", loop, (0.3, 0.3), patient_id="P1", view=View.A2C)
    write(data / "a2.dcm", loop, (0.3, 0.3), patient_id="P1", view=View.A4C)
    write(data / "a3.dcm", loop[:8], (0.3, 0.3), patient_id="P1", view=View.A4C)  # shorter
    write(data / "b1.dcm", loop, (0.3, 0.3), patient_id="P2", view=View.A4C, study_uid="1.2.3")
    write(data / "b2.dcm", loop, (0.3, 0.3), patient_id="P2", view=View.A4C, study_uid="1.2.4")
    write(data / "c1.dcm", loop[:1], (0.3, 0.3), patient_id="P3", view=View.A2C)  # a still
    (data / "notes.bin").write_bytes(b"not dicom at all")
    (data / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10")
    found = discover(tmp_path / "export")
    refs = {p.patient_id: p for p in found.patients}
    assert set(refs) == {"P1", "P2_study1", "P2_study2", "P3"}
    assert all(r.format == InputFormat.DICOM for r in refs.values())
    assert {v: f.image.name for v, f in refs["P1"].sequences.items()} == {
        View.A2C: "a1.dcm",
        View.A4C: "a2.dcm",
    }
    assert any("a3.dcm: a second 4CH loop (kept a2.dcm)" in p for p in refs["P1"].problems)
    assert not refs["P3"].sequences and "a single frame" in refs["P3"].problems[0]
    reasons = {p.path.name: p.reason for p in found.problems}
    assert "not a DICOM file" in reasons["notes.bin"]
    assert "broken.dcm" in reasons

    out = tmp_path / "out"
    run_cohort(RunOptions(tmp_path / "export", out, report=False))
    patients = pd.read_parquet(out / "patients.parquet").set_index("patient_id")
    assert sorted(patients.index) == sorted(refs)  # every study once, with a status
    assert patients.loc["P3", "status"] == "failed"
    assert "a single frame" in patients.loc["P3", "error"]
    assert (patients["input_format"] == "dicom").all()


def test_uncalibrated_dicom_frames_are_never_drawn(tmp_path):
    """A DICOM frame not cropped to a trusted tissue region may carry the scanner's screen text
    (names included): the report gallery draws its contours on black."""
    from echo_batch.domain import Instant
    from echo_batch.report.gallery import _loop_panels

    loop = _loop()
    for name, region in (("calibrated", True), ("uncalibrated", False)):
        folder = tmp_path / name
        folder.mkdir()
        write_ultrasound_dicom(
            folder / "a.dcm", loop, (0.3, 0.3), patient_id="P", view=View.A4C, region=region
        )
        (ref,) = discover(folder).patients
        panels = _loop_panels(ref, View.A4C, {Instant.ED: 0, Instant.ES: 6})
        assert [p.frame for p in panels] == [0, 6]
        drawn = [p.image.array for p in panels]
        if region:
            np.testing.assert_array_equal(drawn[0], loop[0])
        else:
            assert all(not a.any() for a in drawn)
