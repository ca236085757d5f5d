"""End to end on synthetic cohorts of known volume: synth -> discover -> run --segmentation gt."""

from __future__ import annotations

import pandas as pd
import pytest

from echo_batch.domain import SegmentationSource
from echo_batch.run.options import ChunkOptions, RunOptions
from echo_batch.run.serial import run_cohort
from echo_batch.synth import synth_cohort
from echo_batch.synth.truth import compare_to_truth


@pytest.mark.parametrize(("fmt", "n"), [("mhd", 4), ("nifti", 2)])
def test_gt_run_recovers_true_volumes_and_ef(tmp_path, fmt, n):
    root = synth_cohort(tmp_path / "cohort", n, seed=11, fmt=fmt)
    run_cohort(RunOptions(root, tmp_path / "out", ChunkOptions(segmentation=SegmentationSource.GT)))
    patients = pd.read_parquet(tmp_path / "out" / "patients.parquet")
    truth = pd.read_csv(root / "truth.csv")
    assert (patients.status == "ok").all()
    result = compare_to_truth(patients, truth)
    assert result["biplane_volume"]["max_abs"] <= 0.03
    assert result["ef_pts"]["max_abs"] <= 2.0
    assert result["single_plane_volume"]["max_abs"] <= 0.03
    if fmt == "mhd":  # the 2019 cfg carries the true volumes: the reference columns are filled
        joined = patients.set_index("patient_id").join(
            truth.set_index("patient_id"), suffixes=("", "_t")
        )
        assert (joined.edv_ref_ml - joined.edv_ml_t).abs().max() < 0.01
        assert (joined.ef_ref_pct - joined.ef_pct_t).abs().max() < 0.01


def test_compare_to_truth_detects_a_wrong_volume():
    truth = pd.DataFrame(
        {
            "patient_id": ["p1"],
            **{c: [100.0] for c in ("edv_ml", "edv_2ch_ml", "edv_4ch_ml")},
            **{c: [50.0] for c in ("esv_ml", "esv_2ch_ml", "esv_4ch_ml")},
            "ef_pct": [50.0],
        }
    )
    measured = truth.copy()
    measured.loc[0, "edv_ml"] = 110.0  # 10 % too large
    result = compare_to_truth(measured, truth)
    assert result["biplane_volume"]["max_abs"] == pytest.approx(0.10)
    assert result["biplane_volume"]["share_within"] == 0.5
    assert result["ef_pts"]["max_abs"] == 0.0
