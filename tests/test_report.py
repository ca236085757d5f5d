"""Cohort report: known-answer statistics, the page and its plots, gallery sources, the CLI."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from echo_batch.cli import app
from echo_batch.io.image import read_image
from echo_batch.measure.landmarks import ViewGeometry, measure_lv
from echo_batch.report import write_report, write_report_safely
from echo_batch.report.gallery import disk_chords
from echo_batch.report.stats import (
    EF_COMPARISONS,
    agreement_stats,
    flag_counts,
    flagged_groups,
    grouped_agreement,
    load_run,
    primary_comparison,
    worst_cases,
)
from echo_batch.store.files import FRAMES_FILE, IMAGES_FILE, PATIENTS_FILE, write_results
from echo_batch.store.records import FrameRecord, ImageRecord, PatientRecord, to_table

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "camus224-test"
CAMUS_VS_CFG = EF_COMPARISONS[0]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _patients() -> pd.DataFrame:
    """Six patients with hand-picked CAMUS EF errors -4, +2, 0, +10, -6 and no reference."""
    rows = [
        # id, measured, reference, qc_pass, flags, quality
        ("p1", 46.0, 50.0, True, [], "Good"),
        ("p2", 62.0, 60.0, True, ["poor_image_quality"], "Poor"),
        ("p3", 35.0, 35.0, True, [], "Medium"),
        ("p4", 55.0, 45.0, False, ["low_confidence"], "Poor"),
        ("p5", 24.0, 30.0, False, ["lv_holes", "low_confidence"], "Good"),
        ("p6", 50.0, None, True, [], None),
    ]
    return pd.DataFrame(
        {
            "patient_id": [r[0] for r in rows],
            "status": "ok",
            "ef_camus_pct": [r[1] for r in rows],
            "ef_ref_pct": [r[2] for r in rows],
            "qc_pass": [r[3] for r in rows],
            "qc_flags": [r[4] for r in rows],
            "image_quality": [r[5] for r in rows],
            "model_id": "m@1",
        }
    )


def test_agreement_known_answer():
    stats = agreement_stats(_patients(), CAMUS_VS_CFG)
    diffs = np.array([-4.0, 2.0, 0.0, 10.0, -6.0])
    assert stats["n"] == 5
    assert stats["bias"] == pytest.approx(diffs.mean())
    assert stats["sd"] == pytest.approx(diffs.std(ddof=1))
    assert stats["mae"] == pytest.approx(np.abs(diffs).mean())
    assert stats["loa_high"] == pytest.approx(diffs.mean() + 1.96 * diffs.std(ddof=1))
    assert primary_comparison(_patients()) == CAMUS_VS_CFG


def test_flagged_and_unflagged_groups_known_answer():
    groups = flagged_groups(_patients(), CAMUS_VS_CFG)
    assert groups["flagged"] == 2
    assert groups["flagged_share"] == pytest.approx(2 / 6)
    assert groups["any_flag_share"] == pytest.approx(3 / 6)  # p2 has a non-blocking flag
    assert groups["flagged_stats"]["mae"] == pytest.approx((10 + 6) / 2)
    assert groups["unflagged_stats"]["mae"] == pytest.approx((4 + 2 + 0) / 3)


def test_grouped_agreement_by_quality_and_reference_category():
    by_quality = grouped_agreement(_patients(), CAMUS_VS_CFG, "image_quality")
    assert [g["group"] for g in by_quality] == ["Good", "Medium", "Poor", "unknown"]
    poor = by_quality[2]
    assert poor["patients"] == 2 and poor["stats"]["mae"] == pytest.approx(6.0)
    assert by_quality[1]["stats"] is None  # one pair only
    by_category = grouped_agreement(_patients(), CAMUS_VS_CFG, "reference_category")
    counts = {g["group"]: g["patients"] for g in by_category}
    # references 50, 60, 35, 45, 30 and one missing
    assert counts == {"reduced": 2, "mildly_reduced": 1, "preserved": 2, "unknown": 1}


def test_worst_cases_and_flag_counts():
    worst = worst_cases(_patients(), CAMUS_VS_CFG, 3)
    assert list(worst.patient_id) == ["p4", "p5", "p1"]
    assert list(worst.abs_error) == [10.0, 6.0, 4.0]
    images = pd.DataFrame({"qc_flags": [["lv_holes"], [], ["lv_holes"]]})
    counts = {r["flag"]: r for r in flag_counts(_patients(), images)}
    assert counts["low_confidence"]["patients"] == 2
    assert counts["lv_holes"]["patients"] == 1 and counts["lv_holes"]["images"] == 2
    assert counts["poor_image_quality"]["blocking"] is False


def test_disk_chords_have_the_measured_diameters():
    path = SAMPLE / "database_nifti" / "patient0027" / "patient0027_4CH_ED_gt.nii.gz"
    if not path.is_file():
        pytest.skip(f"bundled sample not found: {path}")
    image = read_image(path, labels=True)
    geo = measure_lv(image.array, image.spacing)
    assert isinstance(geo, ViewGeometry)
    chords = disk_chords(geo.contour_mm, geo.base_mid_mm, geo.apex_mm)
    lengths = np.linalg.norm(chords[:, 1] - chords[:, 0], axis=1)
    np.testing.assert_allclose(lengths, geo.diameters_mm, rtol=1e-9, atol=1e-9)
    # each chord is perpendicular to the long axis
    axis = geo.apex_mm - geo.base_mid_mm
    np.testing.assert_allclose((chords[:, 1] - chords[:, 0]) @ axis, 0.0, atol=1e-6)


@pytest.fixture(scope="module")
def model_out(tmp_path_factory) -> Path:
    """OUT of a model run on 6 bundled patients, with the predicted masks saved."""
    if not (SAMPLE / "database_nifti").is_dir():
        pytest.skip(f"bundled sample not found: {SAMPLE}")
    from echo_batch.io.discovery import discover
    from echo_batch.run.options import ChunkOptions, RunOptions
    from echo_batch.run.serial import run_cohort

    manifest = discover(SAMPLE)
    manifest = dataclasses.replace(manifest, patients=manifest.patients[:6])
    out = tmp_path_factory.mktemp("run")
    options = RunOptions(SAMPLE, out, ChunkOptions(device="cpu"), save_masks=True)
    run_cohort(options, manifest=manifest)
    return out


def _img_sources(index: Path) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', index.read_text(encoding="utf-8"))


def test_report_of_a_model_run(model_out):
    index = write_report(model_out, worst=3)
    assert index == model_out / "report" / "index.html"
    sources = _img_sources(index)
    expected = {
        "plots/ef_distribution.png",
        "plots/agreement_ef_camus_vs_cfg.png",
        "plots/agreement_ef_vs_expert.png",
        "plots/segmentation.png",
        "plots/qc_flags.png",
        "plots/by_quality.png",
    }
    assert expected <= set(sources)
    assert len([s for s in sources if s.startswith("gallery/")]) == 3
    for src in sources:
        data = (index.parent / src).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, src
    summary = json.loads((index.parent / "summary.json").read_text())
    run = load_run(model_out)
    want = agreement_stats(run.patients, CAMUS_VS_CFG)
    assert summary["agreement"]["ef_camus_vs_cfg"]["mae"] == pytest.approx(want["mae"])
    assert summary["primary"] == "ef_camus_vs_cfg"
    page = index.read_text(encoding="utf-8")
    for text in (f"{want['r']:.3f}", f"{want['mae']:.2f}", "patients flagged", "lv_holes"):
        assert text in page
    assert {g["source"] for g in summary["gallery"]} == {
        "predicted masks saved by the run (OUT/masks)"
    }


class _StubEngine:
    """Stands in for the segmentation engine: returns empty masks, reports another model."""

    model_id = "other-model@000000000000"
    precision = "fp32"

    def segment(self, images):
        from echo_batch.model.inference import Segmentation

        return [Segmentation(np.zeros(i.shape, np.uint8), 0.0) for i in images]


def test_gallery_recompute_checks_the_model(model_out, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(model_out, out, ignore=shutil.ignore_patterns("masks", "report"))
    import echo_batch.run.chunk

    monkeypatch.setattr(echo_batch.run.chunk, "get_engine", lambda options: _StubEngine())
    write_report(out, worst=2)
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert all("NOT the model of the run" in g["source"] for g in summary["gallery"])
    write_report(out, worst=2, recompute=False)
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert all("--save-masks" in g["source"] for g in summary["gallery"])
    assert len(list((out / "report" / "gallery").glob("*.png"))) == 2  # stale files removed


def _as_schema_1_2(out: Path) -> None:
    """Rewrite OUT as echo-batch 1.2 wrote it: no frames.parquet, no 1.3 columns, version 1.2."""
    (out / FRAMES_FILE).unlink()
    names = [f.name for f in dataclasses.fields(PatientRecord)]
    added = {
        PATIENTS_FILE: names[names.index("measure_config") + 1 :],
        IMAGES_FILE: ["frame"],
    }
    for name, columns in added.items():
        table = pq.read_table(out / name).drop_columns(columns)
        metadata = {**table.schema.metadata, b"echo_batch.schema_version": b"1.2"}
        pq.write_table(table.replace_schema_metadata(metadata), out / name)


def test_report_of_stills_is_the_same_in_schema_1_2_and_1_3(model_out, tmp_path):
    """A stills OUT (empty frames.parquet) and the same OUT of schema 1.2 give the same summary,
    without a loop section; frame rows added for a stills patient add the loop figures and its
    volume curve and change nothing else."""
    run = load_run(model_out)
    worst = worst_cases(run.patients, primary_comparison(run.patients), 1).patient_id.iloc[0]
    summaries = {}
    for kind in ("empty frames", "1.2", "frame rows"):
        out = tmp_path / kind.replace(" ", "_")
        shutil.copytree(model_out, out, ignore=shutil.ignore_patterns("report"))
        assert pq.read_table(out / FRAMES_FILE).num_rows == 0, "the run wrote an empty one"
        if kind == "frame rows":
            rows = [FrameRecord(worst, "2CH", k, volume_single_ml=90.0 - k) for k in range(5)]
            pq.write_table(to_table(rows, FrameRecord), out / FRAMES_FILE)
        elif kind == "1.2":
            _as_schema_1_2(out)
        result = CliRunner().invoke(app, ["report", str(out), "--worst", "2", "--no-recompute"])
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "report" / "summary.json").read_text())
        assert summary.pop("out") == str(out)
        assert len(summary["gallery"]) == 2
        page = (out / "report" / "index.html").read_text(encoding="utf-8")
        assert ('id="loops"' in page) == (kind == "frame rows")
        summaries[kind] = summary
    # schema 1.3 says where the inputs came from; 1.2 had no such columns
    assert summaries["1.2"].pop("inputs") == {}
    n = summaries["empty frames"]["patients"]
    for kind in ("empty frames", "frame rows"):
        assert summaries[kind].pop("inputs") == {
            "input_format": {"camus2023": n},
            "spacing_source": {"header": n},
            "frames_source": {"annotated": n},
        }
    # schema 1.4 adds the per-study measurements (LA volume, contour GLS, FAC); 1.2 had none
    assert summaries["1.2"].pop("measures") is None
    measures = summaries["empty frames"].pop("measures")
    assert measures["distributions"]["la_volume_ml"]["n"] == n
    assert summaries["frame rows"].pop("measures") == measures
    assert summaries["empty frames"] == summaries["1.2"]
    assert summaries["1.2"]["loops"] is None
    assert all("curve" not in g for g in summaries["1.2"]["gallery"])
    with_rows = summaries["frame rows"]
    loops = with_rows.pop("loops")
    assert (loops["patients"], loops["frames"], loops["offsets"]) == (1, 5, [])
    assert with_rows["gallery"][0] == {
        **summaries["1.2"]["gallery"][0],
        "curve": f"gallery/{worst}_cycle.png",
    }
    with_rows["gallery"][0].pop("curve")
    assert with_rows == {k: v for k, v in summaries["1.2"].items() if k != "loops"}
    curve = tmp_path / "frame_rows" / "report" / "gallery" / f"{worst}_cycle.png"
    assert curve.read_bytes().startswith(PNG_MAGIC)


def test_report_without_references_or_run_json(tmp_path):
    patients = [
        PatientRecord("patient0001", "none", "ok", ef_pct=55.0, qc_pass=True, model_id="gt"),
        PatientRecord("patient0002", "none", "failed", error="bad file", model_id="gt"),
    ]
    images = [ImageRecord("patient0001", "2CH", "ED", "ok", segmentation="gt")]
    write_results(tmp_path, patients, images, model_id="gt")
    index = write_report(tmp_path)
    page = index.read_text(encoding="utf-8")
    assert "No reference EF" in page
    for src in _img_sources(index):
        assert (index.parent / src).read_bytes().startswith(PNG_MAGIC)


def test_report_failure_is_only_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert write_report_safely(tmp_path / "absent") is None
    assert "report not written" in caplog.text


def test_cli_report(model_out, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "not the OUT of a run" in result.output
    result = runner.invoke(app, ["report", str(model_out), "--worst", "1", "--no-recompute"])
    assert result.exit_code == 0, result.output
    assert (model_out / "report" / "index.html").is_file()


def test_importing_the_report_has_no_side_effects():
    code = (
        "import sys, echo_batch.report, echo_batch.report.build;"
        "assert 'matplotlib' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
