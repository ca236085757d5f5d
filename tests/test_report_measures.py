"""The report's section on the per-study measurements: distributions, reference values, agreement.

Known answers: a hand-made OUT of four patients whose values are chosen so that every figure
(mean, SD, median, quartiles, the model-vs-expert bias, SD and r, the shares of flagged atria) is
computed here by hand; an OUT without the columns (schema < 1.4) has no section.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from echo_batch.clinical import STUDY_REFERENCE_VALUES
from echo_batch.report import write_report
from echo_batch.report.measures import distribution, measures_summary, reference_text
from echo_batch.store.files import PATIENTS_FILE, write_results
from echo_batch.store.records import ImageRecord, PatientRecord

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _patient(pid: str, la: float | None, la_gt: float | None, flags: list[str]) -> PatientRecord:
    return PatientRecord(
        pid,
        "none",
        "ok",
        ef_pct=55.0,
        qc_pass=True,
        qc_flags=flags,
        model_id="m@1",
        la_volume_ml=la,
        la_volume_gt_ml=la_gt,
        gls_contour_pct=None if la is None else -la / 4,
        gls_contour_gt_pct=None if la_gt is None else -la_gt / 4,
        fac_2ch_pct=40.0,
    )


PATIENTS = [
    _patient("p1", 40.0, 42.0, []),
    _patient("p2", 60.0, 58.0, ["la_cut"]),
    _patient("p3", 80.0, 84.0, ["la_cut", "la_length_mismatch_2ch_4ch"]),
    _patient("p4", None, 50.0, []),  # no model LA volume: out of the shares and the pairs
]


def test_distribution_by_hand():
    stats = distribution([40.0, 60.0, 80.0, None, float("nan")])
    assert stats == {
        "n": 3,
        "mean": 60.0,
        "sd": 20.0,  # sqrt((400 + 0 + 400) / 2)
        "median": 60.0,
        "p25": 50.0,  # numpy linear percentiles
        "p75": 70.0,
        "min": 40.0,
        "max": 80.0,
    }
    assert distribution([]) is None
    assert distribution([5.0])["sd"] is None


def test_summary_by_hand():
    import pandas as pd

    summary = measures_summary(pd.DataFrame([p.__dict__ for p in PATIENTS]))
    assert summary["distributions"]["la_volume_ml"]["n"] == 3
    assert summary["distributions"]["fac_2ch_pct"]["mean"] == 40.0
    assert summary["distributions"]["fac_4ch_pct"] is None
    # atria not cut: p1 only (p4 has no model volume)
    assert summary["distributions_la_whole"]["la_volume_ml"]["n"] == 1
    assert summary["la_cut_share"] == pytest.approx(2 / 3)
    assert summary["la_length_mismatch_share"] == pytest.approx(1 / 3)
    la = summary["agreement"]["la_volume_vs_expert"]
    # differences -2, +2, -4: bias -4/3, SD sqrt(((2/3)^2 + (10/3)^2 + (8/3)^2) / 2) = sqrt(28/3)
    assert la["n"] == 3
    assert la["bias"] == pytest.approx(-4 / 3)
    assert la["sd"] == pytest.approx((28 / 3) ** 0.5)
    gls = summary["agreement"]["gls_contour_vs_expert"]
    assert gls["bias"] == pytest.approx(1 / 3)  # -la/4 against -la_gt/4
    assert gls["r"] == pytest.approx(la["r"])
    assert summary["agreement"]["fac_2ch_vs_expert"] is None  # no expert FAC
    assert "Lang et al. 2005" in summary["references"]["la_volume_ml"]
    assert measures_summary(pd.DataFrame({"ef_pct": [50.0]})) is None


def test_every_reference_value_has_a_source_and_a_column():
    from dataclasses import fields

    columns = {f.name for f in fields(PatientRecord)}
    for ref in STUDY_REFERENCE_VALUES:
        assert ref.column in columns
        assert ref.source and ref.population
        assert (ref.low is None) == (ref.high is None)
        assert ref.low is None or ref.low < ref.high
        assert ref.mean is not None or ref.low is not None
    assert reference_text("la_volume_ml") == (
        "women: 22 to 52 (Lang et al. 2005, ASE/EAE chamber quantification, LA volume reference "
        "range); men: 18 to 58 (Lang et al. 2005, ASE/EAE chamber quantification, LA volume "
        "reference range)"
    )
    assert reference_text("fac_2ch_pct") == ""


def test_report_page_and_summary(tmp_path):
    images = [ImageRecord(p.patient_id, "2CH", "ES", "ok") for p in PATIENTS]
    write_results(tmp_path, PATIENTS, images, model_id="m@1")
    index = write_report(tmp_path)
    page = index.read_text(encoding="utf-8")
    assert 'id="measures"' in page and "not speckle tracking" in page
    assert "Model masks against expert masks" in page and "67 %" in page  # la_cut share
    summary = json.loads((index.parent / "summary.json").read_text())
    assert summary["measures"]["agreement"]["la_volume_vs_expert"]["n"] == 3
    assert (index.parent / "plots" / "measures.png").read_bytes().startswith(PNG_MAGIC)


def test_an_out_without_the_columns_has_no_section(tmp_path):
    write_results(tmp_path, PATIENTS, [], model_id="m@1")
    table = pq.read_table(tmp_path / PATIENTS_FILE)
    names = table.column_names
    pq.write_table(
        table.drop_columns(names[names.index("la_volume_ml") :]), tmp_path / PATIENTS_FILE
    )
    index = write_report(tmp_path)
    assert 'id="measures"' not in index.read_text(encoding="utf-8")
    assert json.loads((index.parent / "summary.json").read_text())["measures"] is None
    assert not (index.parent / "plots" / "measures.png").exists()
