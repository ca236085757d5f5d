"""The report's uncertainty section: hand-computed rankings (echo_batch.report.uncertainty)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from echo_batch.report.uncertainty import sd_ranking, uncertainty_plot, uncertainty_summary


def test_sd_ranking_by_hand():
    # 8 patients: the two largest SDs (4, 3) have errors 6 and -4 -> top quarter MAE 5;
    # the other six errors 1, -1, 2, 0, 1, -1 -> MAE 1; ratio 5
    error = np.array([6.0, -4.0, 1.0, -1.0, 2.0, 0.0, 1.0, -1.0])
    sd = np.array([4.0, 3.0, 1.0, 1.0, 0.5, 0.5, 0.5, 2.0])
    stats = sd_ranking(error, sd)
    assert stats["n"] == 8
    assert stats["top_quarter_mae"] == pytest.approx(5.0)
    assert stats["rest_mae"] == pytest.approx(1.0)
    assert stats["ratio"] == pytest.approx(5.0)
    # |error| <= 2 SD: 6<=8 yes, 4<=6 yes, 1<=2 yes, 1<=2 yes, 2<=1 no, 0<=1 yes, 1<=1 yes,
    # 1<=4 yes -> 7 of 8
    assert stats["within_2sd"] == pytest.approx(7 / 8)
    assert stats["mean_sd"] == pytest.approx(12.5 / 8)
    assert 0 < stats["spearman"] <= 1


def test_an_sd_that_says_nothing_has_a_ratio_near_one():
    rng = np.random.default_rng(0)
    error = rng.normal(0, 5, 4000)
    sd = rng.uniform(1, 3, 4000)  # independent of the error
    stats = sd_ranking(error, sd)
    assert stats["ratio"] == pytest.approx(1.0, abs=0.1)
    assert abs(stats["spearman"]) < 0.05


def test_too_few_patients_give_no_ranking():
    assert sd_ranking(np.ones(7), np.ones(7)) is None


def _patients(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    ref = rng.uniform(30, 70, n)
    sd = rng.uniform(0.5, 4, n)
    return pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(n)],
            "ef_camus_pct": ref + rng.normal(0, 1, n) * sd * 2,
            "ef_ref_pct": ref,
            "ef_camus_pct_sd": sd,
            "ef_pct": ref,
            "ef_pct_sd": [None] * n,
            "n_members": [5] * n,
        }
    )


def test_summary_of_a_run_with_and_without_sds(tmp_path):
    patients = _patients()
    summary = uncertainty_summary(patients)
    assert summary["members"] == 5
    assert set(summary["comparisons"]) == {"ef_camus_vs_cfg"}  # ef_pct_sd is all null
    assert summary["comparisons"]["ef_camus_vs_cfg"]["n"] == 12
    assert uncertainty_summary(patients.drop(columns=["ef_camus_pct_sd", "ef_pct_sd"])) is None
    path = uncertainty_plot(patients, summary, tmp_path / "u.png")
    assert path.is_file() and path.stat().st_size > 1000
