"""Ground-truth runs of the chunk function and the serial runner on real and damaged cohorts."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pandas as pd
import pytest

from echo_batch.domain import SegmentationSource, Status
from echo_batch.io.discovery import discover
from echo_batch.run.chunk import process_chunk
from echo_batch.run.options import ChunkOptions, RunOptions
from echo_batch.run.serial import run_cohort

GT = ChunkOptions(segmentation=SegmentationSource.GT)


@pytest.fixture(scope="module")
def sample_root(request) -> Path:
    root = Path(__file__).resolve().parents[1] / "examples" / "camus224-test"
    if not (root / "database_nifti").is_dir():
        pytest.skip(f"bundled sample missing at {root}")
    return root


def _copy_patients(sample_root: Path, dest: Path, n: int) -> list[str]:
    ids = sorted(p.name for p in (sample_root / "database_nifti").iterdir())[:n]
    for pid in ids:
        shutil.copytree(sample_root / "database_nifti" / pid, dest / pid)
    return ids


@pytest.fixture(scope="module")
def gt_run(sample_root, tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    out = tmp_path_factory.mktemp("gt-run")
    record = run_cohort(RunOptions(sample_root, out, GT, chunk_size=8))
    return (
        pd.read_parquet(out / "patients.parquet"),
        pd.read_parquet(out / "images.parquet"),
        record,
    )


def test_gt_run_has_every_patient_once_with_all_images(gt_run, sample_root):
    patients, images, record = gt_run
    ids = sorted(p.name for p in (sample_root / "database_nifti").iterdir())
    assert sorted(patients.patient_id) == ids
    assert patients.patient_id.is_unique
    assert (patients.status == "ok").all()
    assert (patients.model_id == "gt").all()
    assert len(images) == 4 * len(ids)
    assert (images.segmentation == "gt").all()
    assert record["summary"]["status"] == {"ok": len(ids)}


def test_gt_run_reproduces_the_independent_camus_reference(gt_run, sample_root):
    """reference.csv was computed by an independent re-implementation of the CAMUS script."""
    patients, _, _ = gt_run
    ref = pd.read_csv(sample_root / "reference.csv").set_index("patient")
    joined = patients.set_index("patient_id").join(ref[["ef_gt_ref", "edv_gt_ref", "esv_gt_ref"]])
    assert (joined.ef_camus_gt_pct == joined.ef_gt_ref).mean() >= 0.95
    assert (joined.edv_camus_ml - joined.edv_gt_ref).abs().max() <= 1
    assert (joined.ef_camus_pct == joined.ef_camus_gt_pct).all()  # gt run: same masks


def test_gt_run_guideline_ef_matches_the_per_instant_h_reference(gt_run, sample_root):
    patients, _, _ = gt_run
    ref = pd.read_csv(sample_root / "reference.csv").set_index("patient")
    joined = patients.set_index("patient_id").join(ref["ef_gt_ref_per_instant_h"])
    diff = joined.ef_pct - joined.ef_gt_ref_per_instant_h
    assert diff.abs().median() <= 1.5
    assert (joined.ef_pct == joined.ef_gt_pct).all()


def test_gt_run_carries_the_cfg_reference_and_units(gt_run):
    patients, images, _ = gt_run
    assert patients.ef_ref_pct.notna().all()
    assert patients.image_quality.isin(["Good", "Medium", "Poor"]).all()
    assert ((images.lv_area_mm2 > 500) & (images.lv_area_mm2 < 10_000)).all()
    assert ((images.lv_length_mm > 40) & (images.lv_length_mm < 140)).all()
    # single-plane volumes agree with the patient columns
    row = patients.iloc[0]
    ed = images[(images.patient_id == row.patient_id) & (images.view == "2CH")]
    assert ed[ed.instant == "ED"].volume_single_ml.iloc[0] == pytest.approx(row.edv_2ch_ml)


def test_missing_view_gives_partial_with_single_plane_results(sample_root, tmp_path):
    (pid,) = _copy_patients(sample_root, tmp_path, 1)
    for f in (tmp_path / pid).glob(f"{pid}_4CH_*"):
        f.unlink()
    (ref,) = discover(tmp_path).patients
    result = process_chunk([ref], GT)
    (patient,) = result.patients
    assert patient.status == Status.PARTIAL.value
    assert patient.ef_2ch_pct is not None
    assert patient.ef_4ch_pct is None and patient.ef_pct is None
    assert "missing images 4CH_ED, 4CH_ES" in patient.error
    assert len(result.images) == 2


def test_bad_file_fails_only_its_image_and_patient(sample_root, tmp_path):
    ids = _copy_patients(sample_root, tmp_path, 3)
    bad = tmp_path / ids[1] / f"{ids[1]}_4CH_ES.nii.gz"
    bad.write_bytes(b"this is not an image" * 10)
    manifest = discover(tmp_path)
    damaged = process_chunk(manifest.patients, GT)
    clean = {
        p.patient_id: p
        for p in process_chunk(
            [r for r in discover(sample_root).patients if r.patient_id in ids], GT
        ).patients
    }
    by_id = {p.patient_id: p for p in damaged.patients}
    assert list(by_id) == ids
    assert by_id[ids[1]].status == Status.PARTIAL.value
    assert bad.name in by_id[ids[1]].error
    assert by_id[ids[1]].ef_2ch_pct == clean[ids[1]].ef_2ch_pct
    for pid in (ids[0], ids[2]):  # identical apart from the split (no split file in tmp_path)
        assert dataclasses.replace(by_id[pid], split=clean[pid].split) == clean[pid]
    failed = [r for r in damaged.images if r.status == Status.FAILED.value]
    assert len(failed) == 1 and "not a readable image" in failed[0].error


def test_empty_lv_mask_is_a_failed_image_not_a_crash(sample_root, tmp_path):
    import numpy as np
    import SimpleITK as sitk

    (pid,) = _copy_patients(sample_root, tmp_path, 1)
    path = tmp_path / pid / f"{pid}_2CH_ED_gt.nii.gz"
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)
    arr[arr == 1] = 0
    out = sitk.GetImageFromArray(arr.astype(np.uint8))
    out.CopyInformation(img)
    sitk.WriteImage(out, str(path))
    (patient,) = process_chunk(discover(tmp_path).patients, GT).patients
    assert patient.status == Status.PARTIAL.value
    assert "2CH_ED: LV geometry failed" in patient.error
    assert patient.ef_4ch_pct is not None
