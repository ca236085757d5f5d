"""Per-study measurements through the chunk function and the store (issue 19).

* A synthetic cohort at native spacing, expert masks: the patient columns against the analytic
  truth (LA volume within 3 %, contour GLS and FAC within 0.5 points), the image columns (border
  length, LA area), no null reason and no atrium flag.
* Why a value is null is in ``error`` (status unchanged); an atrium cut by the sector is flagged
  on its image and patient without blocking ``qc_pass``.
* A model run (an engine that returns altered expert masks): model columns from the model's masks,
  ``*_gt`` columns from the expert masks, equal to the expert-mask run's values.
* Loops (``--frames detected``): the columns of the detected ED/ES frames equal those of the
  annotated frames where the two agree; EchoNet without spacing: LA volumes, lengths and areas
  null, FAC (a ratio) against the truth.
* The store: a schema 1.3 part (without the new columns) compacts with them null.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from echo_batch.domain import FramesMode, Instant, Label, SegmentationSource, View
from echo_batch.io.discovery import discover
from echo_batch.io.image import read_image
from echo_batch.io.writers import write_image
from echo_batch.measure.study import SCALED_COLUMNS, StudyMeasures
from echo_batch.run.chunk import process_chunk
from echo_batch.run.options import ChunkOptions
from echo_batch.store.files import PATIENTS_FILE, schema_version
from echo_batch.store.parts import OutputStore
from echo_batch.store.records import SCHEMA_VERSION, ChunkResult, ImageRecord, PatientRecord
from echo_batch.synth import plan_cohort, synth_cohort

SEED = 11
N_PATIENTS = 3
GT = ChunkOptions(segmentation=SegmentationSource.GT)
STUDY_COLUMNS = list(StudyMeasures().columns())
GT_COLUMNS = [
    "la_volume_gt_ml",
    "la_volume_al_gt_ml",
    "gls_contour_gt_pct",
    "fac_2ch_gt_pct",
    "fac_4ch_gt_pct",
]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Three synthetic patients at native spacing (0.15-0.35 mm pixels)."""
    return synth_cohort(tmp_path_factory.mktemp("study") / "data", N_PATIENTS, seed=SEED)


@pytest.fixture(scope="module")
def gt_run(cohort) -> ChunkResult:
    return process_chunk(discover(cohort).patients, GT)


def _patients(result: ChunkResult) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.asdict(p) for p in result.patients]).set_index("patient_id")


def test_expert_masks_of_phantoms_give_the_analytic_values(gt_run):
    patients = _patients(gt_run)
    for params, _ in plan_cohort(N_PATIENTS, seed=SEED):
        row = patients.loc[params.patient_id]
        ed, es = params.ed, params.es
        assert row.status == "ok" and row.error is None
        assert row.la_volume_ml == pytest.approx(es.la_volume_ml, rel=0.03)
        for view in View:
            tag = view.value.lower()
            true_gls = 100 * (es.border_length_mm(view) / ed.border_length_mm(view) - 1)
            assert row[f"gls_contour_{tag}_pct"] == pytest.approx(true_gls, abs=0.5)
            true_fac = 100 * (1 - es.section_area_mm2(view) / ed.section_area_mm2(view))
            assert row[f"fac_{tag}_pct"] == pytest.approx(true_fac, abs=0.5)
            true_las = 100 * (1 - es.length_mm / ed.length_mm)
            assert row[f"long_axis_shortening_{tag}_pct"] == pytest.approx(true_las, abs=1.0)
            assert row[f"la_length_{tag}_mm"] == pytest.approx(es.la_length_mm, abs=0.5)
            assert row[f"la_area_{tag}_mm2"] == pytest.approx(es.la_area_mm2(view), rel=0.02)
        assert row.gls_contour_pct == pytest.approx(
            (row.gls_contour_2ch_pct + row.gls_contour_4ch_pct) / 2
        )
        for measured, expert in zip(
            ["la_volume_ml", "la_volume_al_ml", "gls_contour_pct", "fac_2ch_pct", "fac_4ch_pct"],
            GT_COLUMNS,
            strict=True,
        ):
            assert row[expert] == row[measured]  # a gt run: the expert masks are the masks
        assert not {"la_cut", "la_length_mismatch_2ch_4ch"} & set(row.qc_flags)
    images = pd.DataFrame([dataclasses.asdict(r) for r in gt_run.images])
    truth = {p.patient_id: p for p, _ in plan_cohort(N_PATIENTS, seed=SEED)}
    for image in images.itertuples():
        params = truth[image.patient_id]
        shape = params.ed if image.instant == "ED" else params.es
        view = View(image.view)
        assert image.lv_border_length_mm == pytest.approx(shape.border_length_mm(view), rel=0.01)
        assert image.la_area_mm2 == pytest.approx(shape.la_area_mm2(view), rel=0.02)
        assert image.la_length_mm == pytest.approx(shape.la_length_mm, abs=0.5)


def _copy_patient(cohort: Path, root: Path, pid: str) -> Path:
    shutil.copytree(cohort / "database_nifti" / pid, root / pid)
    return root / pid


def test_null_reasons_are_recorded_and_status_unchanged(cohort, tmp_path):
    pid = "patient0001"
    folder = _copy_patient(cohort, tmp_path, pid)
    path = folder / f"{pid}_4CH_ES_gt.nii.gz"
    gt = read_image(path)
    labels = np.where(gt.array == Label.LA, Label.BG, gt.array).astype(np.uint8)
    write_image(path, labels, gt.spacing)
    (row,) = process_chunk(discover(tmp_path).patients, GT).patients
    assert row.status == "ok"  # the EF is measured; the LV's own QC flags the missing atrium
    assert "la_not_at_base" in row.qc_flags
    assert row.la_volume_ml is None and row.la_volume_al_ml is None and row.la_volume_4ch_ml is None
    assert row.la_volume_2ch_ml is not None and row.fac_4ch_pct is not None
    assert row.error == (
        "no LA volume in 4CH ES: no atrium pixels; "
        "no biplane LA volume (needs the atrium in 2CH and 4CH at ES)"
    )


def test_an_atrium_cut_by_the_sector_is_flagged_without_blocking(cohort, tmp_path):
    pid = "patient0002"
    folder = _copy_patient(cohort, tmp_path, pid)
    path = folder / f"{pid}_2CH_ES.nii.gz"
    image = read_image(path)
    gt = read_image(folder / f"{pid}_2CH_ES_gt.nii.gz").array
    rows = np.flatnonzero((gt == Label.LA).any(axis=1))
    array = image.array.copy()
    array[(rows[0] + rows[-1]) // 2 :] = 0  # the sector now ends across the atrium
    write_image(path, array, image.spacing)
    result = process_chunk(discover(tmp_path).patients, GT)
    (row,) = result.patients
    flags = {(r.view, r.instant): r.qc_flags for r in result.images}
    assert "la_cut" in flags[("2CH", "ES")]
    assert "la_cut" not in flags[("4CH", "ES")] + flags[("2CH", "ED")]
    assert "la_cut" in row.qc_flags and row.qc_pass and row.la_volume_ml is not None


class _AlteredExpertEngine:
    """A model stand-in: the expert mask with its atrium's bottom half erased (found by image)."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]]):
        self.pairs = pairs

    def segment(self, images):
        from echo_batch.model.inference import Segmentation

        out = []
        for image in images:
            labels = next(gt for im, gt in self.pairs if np.array_equal(im, image)).copy()
            rows = np.flatnonzero((labels == Label.LA).any(axis=1))
            cut = labels[(rows[0] + rows[-1]) // 2 :]
            cut[cut == Label.LA] = Label.BG
            out.append(Segmentation(labels, 0.99))
        return out


def test_model_columns_from_the_model_and_gt_columns_from_the_expert_masks(cohort, gt_run):
    refs = discover(cohort).patients
    pairs = [
        (read_image(f.image).array, read_image(f.gt).array)
        for ref in refs
        for f in ref.images.values()
    ]
    model = process_chunk(
        refs,
        ChunkOptions(segmentation=SegmentationSource.MODEL),
        "stub@0",
        _AlteredExpertEngine(pairs),
    )
    measured, expert = _patients(model), _patients(gt_run)
    for column, gt_column in zip(
        ["la_volume_ml", "la_volume_al_ml", "gls_contour_pct", "fac_2ch_pct", "fac_4ch_pct"],
        GT_COLUMNS,
        strict=True,
    ):
        np.testing.assert_allclose(measured[gt_column], expert[column], rtol=1e-12)
    # half an atrium: less than 70 % of the volume; the LV is untouched
    assert (measured.la_volume_ml < 0.7 * measured.la_volume_gt_ml).all()
    np.testing.assert_allclose(measured.gls_contour_pct, measured.gls_contour_gt_pct)


def test_detected_loop_frames_give_the_annotated_frames_values(tmp_path):
    root = synth_cohort(tmp_path / "loops", 6, seed=2, max_side=96, loops=True)
    refs = discover(root).patients
    detected = _patients(
        process_chunk(
            refs, ChunkOptions(segmentation=SegmentationSource.GT, frames=FramesMode.DETECTED)
        )
    )
    annotated = _patients(
        process_chunk(
            refs, ChunkOptions(segmentation=SegmentationSource.GT, frames=FramesMode.ANNOTATED)
        )
    )
    frames = ["ed_frame_2ch", "es_frame_2ch", "ed_frame_4ch", "es_frame_4ch"]
    same = (
        detected[frames].to_numpy() == detected[[f"{f}_annotated" for f in frames]].to_numpy()
    ).all(axis=1) & annotated.la_volume_ml.notna().to_numpy()
    assert same.sum() >= 2
    assert detected.la_volume_ml.notna().sum() >= 5  # still-less patients too
    pd.testing.assert_frame_equal(
        detected.loc[same, STUDY_COLUMNS], annotated.loc[same, STUDY_COLUMNS], rtol=1e-12
    )


def test_without_spacing_lengths_and_volumes_are_null_and_ratios_kept(tmp_path):
    from echo_batch.synth.echonet import synth_echonet

    root = synth_echonet(tmp_path / "echonet", 3, seed=3)
    result = process_chunk(discover(root).patients, GT)
    patients = _patients(result)
    truth = pd.read_csv(root / "truth.csv").set_index("patient_id").loc[patients.index]
    for column in SCALED_COLUMNS:
        assert patients[column].isna().all(), column
    true_fac = 100 * (1 - truth.area_es_4ch_mm2 / truth.area_ed_4ch_mm2)
    np.testing.assert_allclose(patients.fac_4ch_pct, true_fac, atol=1.0)
    assert patients.gls_contour_4ch_pct.notna().all()
    images = pd.DataFrame([dataclasses.asdict(r) for r in result.images])
    for column in ("lv_border_length_mm", "la_area_mm2", "la_length_mm"):
        assert images[column].isna().all(), column
    assert all("no LA volume in 4CH ES: no atrium pixels" in e for e in patients.error)


def test_a_schema_1_3_part_compacts_with_the_new_columns_null(tmp_path):
    names = [f.name for f in dataclasses.fields(PatientRecord)]
    new = names[names.index("la_volume_ml") : names.index("fac_4ch_gt_pct") + 1]  # schema 1.4
    assert len(new) == 20
    store = OutputStore(tmp_path)
    stem = store.write_part(
        ChunkResult(
            patients=[PatientRecord("p1", "none", "ok", ef_pct=50.0, la_volume_ml=40.0)],
            images=[ImageRecord("p1", "2CH", "ES", "ok", la_area_mm2=900.0)],
        ),
        0,
    )
    for path in (tmp_path / "parts").glob(f"{stem}*.parquet"):
        table = pq.read_table(path)
        drop = [
            c
            for c in (*new, "lv_border_length_mm", "la_area_mm2", "la_length_mm")
            if c in table.column_names
        ]
        metadata = dict(table.schema.metadata)
        metadata[b"echo_batch.schema_version"] = b"1.3"
        pq.write_table(table.drop_columns(drop).replace_schema_metadata(metadata), path)
    store = OutputStore(tmp_path)
    store.write_part(
        ChunkResult(patients=[PatientRecord("p2", "none", "ok", ef_pct=60.0, la_volume_ml=55.0)]),
        1,
    )
    with store.lock():
        store.compact(["p1", "p2"], "gt")
    patients = pd.read_parquet(tmp_path / PATIENTS_FILE)
    assert patients.ef_pct.tolist() == [50.0, 60.0]
    assert patients.la_volume_ml.isna().tolist() == [True, False]
    assert patients.la_volume_ml.iloc[1] == 55.0
    assert pd.read_parquet(tmp_path / "images.parquet").la_area_mm2.isna().all()
    assert schema_version(tmp_path / PATIENTS_FILE) == tuple(map(int, SCHEMA_VERSION.split(".")))
    assert SCHEMA_VERSION == "1.5"
    assert Instant.ES.value == "ES"
