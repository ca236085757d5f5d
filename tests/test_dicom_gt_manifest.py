"""DICOM loops with expert label loops given by a manifest's ``gt_path``.

Oracle: the loops of a synthetic CAMUS-layout cohort written as uncompressed DICOM files (a
tissue region carrying the NIfTI spacing, the cfg's frame time) and listed by a manifest with
their NIfTI label loops give, with ``--segmentation gt --frames detected``, exactly the folder
run's patient and frame rows, spacing from the region. A label loop whose shape differs from the
loop as read is refused naming the label file. The scale run's manifest replication
(``benchmarks/scale_run.py``) against hand-written rows.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from echo_batch.domain import FramesMode, SegmentationSource, SpacingSource, View
from echo_batch.errors import InputError
from echo_batch.io.clips import read_patient_loop
from echo_batch.io.discovery import discover
from echo_batch.io.writers import write_image
from echo_batch.run.options import ChunkOptions, RunOptions
from echo_batch.run.serial import run_cohort
from echo_batch.synth.cohort import synth_cohort
from echo_batch.synth.dicom_convert import camus_loops_to_dicom

REPO = Path(__file__).resolve().parents[1]
GT_DETECTED = ChunkOptions(segmentation=SegmentationSource.GT, frames=FramesMode.DETECTED)
COLUMNS = ("patient_id", "view", "path", "spacing_row_mm", "spacing_col_mm", "gt_path")


def _write_manifest(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> tuple[Path, Path, list[dict[str, object]]]:
    """Three synthetic loop patients (80 px) as NIfTI folders, and as DICOM + a manifest."""
    work = tmp_path_factory.mktemp("dicom-gt")
    nifti = synth_cohort(work / "nifti", 3, seed=11, max_side=80, loops=True)
    dicom = work / "dicom"
    rows = [
        row
        for folder in sorted((nifti / "database_nifti").iterdir())
        for row in camus_loops_to_dicom(folder, dicom)
    ]
    return nifti, _write_manifest(dicom / "manifest.csv", rows), rows


def _results(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    key = ["patient_id", "view", "frame"]
    frames = pd.read_parquet(out / "frames.parquet")
    return (
        pd.read_parquet(out / "patients.parquet").set_index("patient_id").sort_index(),
        frames.sort_values(key).reset_index(drop=True),
    )


def test_dicom_loops_with_label_loops_give_the_nifti_run(cohorts, tmp_path):
    nifti, manifest, rows = cohorts
    assert len(rows) == 6 and all(row["gt_path"] for row in rows)
    found = discover(manifest)
    assert not found.problems
    run_cohort(RunOptions(nifti, tmp_path / "nifti", GT_DETECTED, report=False))
    run_cohort(RunOptions(manifest, tmp_path / "dicom", GT_DETECTED, report=False))
    folder, folder_frames = _results(tmp_path / "nifti")
    listed, listed_frames = _results(tmp_path / "dicom")
    assert (listed["spacing_source"] == SpacingSource.DICOM_REGION.value).all()
    assert (folder["status"] == "ok").sum() >= 2
    assert len(listed_frames) == sum(int(row["n_frames"]) for row in rows)
    exact = ["status", "ed_frame_2ch", "es_frame_2ch", "ed_frame_4ch", "es_frame_4ch", "n_beats"]
    pd.testing.assert_frame_equal(listed[exact], folder[exact])
    # the region's spacing is a 16-character decimal string in cm: equal to ~1e-14
    close = ["ef_pct", "edv_ml", "esv_ml", "ef_2ch_pct", "ef_4ch_pct", "heart_rate_bpm"]
    np.testing.assert_allclose(listed[close], folder[close], rtol=1e-9)
    assert listed["ef_pct"].notna().sum() >= 2
    for column in ("lv_area_mm2", "volume_rel"):
        np.testing.assert_allclose(listed_frames[column], folder_frames[column], rtol=1e-9)


def test_a_label_loop_of_another_shape_is_refused_naming_it(cohorts, tmp_path):
    _, manifest, rows = cohorts
    row = dict(rows[0])
    gt = manifest.parent / str(row["gt_path"])
    short = manifest.parent / "gt" / "short_gt.nii.gz"
    from echo_batch.io.image import read_sequence

    labels = read_sequence(gt, labels=True)
    write_image(short, labels.array[:-1], labels.geometry.spacing)
    row["gt_path"] = os.path.relpath(short, manifest.parent)
    ref = discover(_write_manifest(manifest.parent / "short.csv", [row])).patients[0]
    with pytest.raises(InputError, match=r"short_gt\.nii\.gz.*differs from the loop"):
        read_patient_loop(ref, View(row["view"]))


@pytest.fixture(scope="module")
def scale_run():
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("scale_run", REPO / "benchmarks" / "scale_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifest_replication_renames_patients_and_files(scale_run, tmp_path):
    base = [
        {"patient_id": "p01", "view": "2CH", "path": "dicom/p01_2CH.dcm", "gt_path": "gt/p01_g"},
        {"patient_id": "p01", "view": "4CH", "path": "dicom/p01_4CH.dcm", "gt_path": ""},
        {"patient_id": "p02", "view": "4CH", "path": "x.dcm", "gt_path": "gt/p02_4CH_gt.nii.gz"},
    ]
    rows = scale_run.replica_rows(base, 3)
    assert [(r["patient_id"], r["view"], r["path"], r["gt_path"]) for r in rows] == [
        ("p01", "2CH", "dicom/p01_2CH.dcm", "gt/p01_g"),
        ("p01", "4CH", "dicom/p01_4CH.dcm", ""),
        ("p02", "4CH", "x.dcm", "gt/p02_4CH_gt.nii.gz"),
        ("p01c001", "2CH", "dicom/p01c001_2CH.dcm", "gt/p01c001_g"),
        ("p01c001", "4CH", "dicom/p01c001_4CH.dcm", ""),
    ]
    assert rows[3]["source"] == "dicom/p01_2CH.dcm" and rows[3]["gt_source"] == "gt/p01_g"

    # on disk: hard links under the new names, a manifest of the new ids
    src = tmp_path / "base"
    for row in base:
        for key in ("path", "gt_path"):
            if row[key]:
                (src / row[key]).parent.mkdir(parents=True, exist_ok=True)
                (src / row[key]).write_text(row[key])
    scale_run.write_rows(
        src / scale_run.FILES, [{**r, "n_frames": 5} for r in base], [*COLUMNS, "n_frames"]
    )
    dest = scale_run.replicate_manifest(src, 5, tmp_path / "x5")
    listed = scale_run.read_rows(dest / scale_run.MANIFEST)
    ids = ["p01", "p01", "p02", "p01c001", "p01c001", "p02c001", "p01c002", "p01c002"]
    assert [r["patient_id"] for r in listed] == ids
    assert (dest / "dicom" / "p01c001_4CH.dcm").stat().st_ino == (
        src / "dicom" / "p01_4CH.dcm"
    ).stat().st_ino
    assert (dest / "gt" / "p02c001_4CH_gt.nii.gz").read_text() == "gt/p02_4CH_gt.nii.gz"
    assert (dest / "x.dcm").is_file() and not (dest / "p02c001.dcm").exists()
