"""Agreement statistics on hand-computed cases."""

from __future__ import annotations

import dataclasses
import math

import pytest

from echo_batch.qc.agreement import EF_COMPARISONS, agreement, ef_agreements
from echo_batch.store.records import PatientRecord


def test_agreement_hand_computed():
    stats = agreement([50.0, 62.0, 40.0, None], [52.0, 60.0, 40.0, 45.0])
    # differences -2, +2, 0 (the pair with None is skipped)
    assert stats["n"] == 3
    assert stats["mae"] == pytest.approx(4 / 3)
    assert stats["bias"] == pytest.approx(0.0)
    assert stats["sd"] == pytest.approx(2.0)
    assert stats["within_1"] == pytest.approx(1 / 3)
    assert stats["within_3"] == 1.0
    x, y = [50, 62, 40], [52, 60, 40]
    mx, my = sum(x) / 3, sum(y) / 3
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    r = cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
    assert stats["r"] == pytest.approx(r)


def test_agreement_needs_two_finite_pairs():
    assert agreement([1.0, float("nan")], [1.0, 2.0]) is None
    assert agreement([], []) is None


def test_ef_agreements_uses_the_documented_columns():
    patients = [
        PatientRecord("a", "none", "ok", ef_pct=60, ef_gt_pct=58, ef_camus_pct=50, ef_ref_pct=52),
        PatientRecord("b", "none", "ok", ef_pct=40, ef_gt_pct=40, ef_camus_pct=33, ef_ref_pct=30),
    ]
    result = ef_agreements(patients)
    assert result["ef_vs_expert"]["bias"] == pytest.approx(1.0)  # (2 + 0) / 2
    assert result["ef_camus_vs_cfg"]["bias"] == pytest.approx(0.5)  # (-2 + 3) / 2
    assert result["ef_vs_cfg"]["bias"] == pytest.approx(9.0)  # (8 + 10) / 2
    assert result["expert_camus_vs_cfg"] is None  # no ef_camus_gt_pct
    assert result["ef_camus_vs_expert"] is None
    assert list(result) == [c.name for c in EF_COMPARISONS]


def test_report_and_run_share_one_comparison_table():
    """The report's agreement figures and ``run.json``'s come from the same comparisons."""
    from echo_batch.report import stats

    assert stats.EF_COMPARISONS is EF_COMPARISONS
    assert len({c.name for c in EF_COMPARISONS}) == len(EF_COMPARISONS)
    columns = {f.name for f in dataclasses.fields(PatientRecord)}
    for comparison in EF_COMPARISONS:
        assert {comparison.measured, comparison.reference} <= columns, comparison
