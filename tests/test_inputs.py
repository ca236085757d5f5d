"""Inputs other than CAMUS folders: a manifest CSV over any layout, and the EchoNet-Dynamic
layout, through discovery and a whole run.

Oracles: a manifest listing a CAMUS cohort's loop files gives the results of the folder run of
the same files; a manifest's spacing scales lengths, areas and volumes by known factors and leaves
EF unchanged. Known answers: EchoNet's traced frames measured with the tracings as expert masks
give the synthetic truth's single-plane EF; no length, area or volume is written without a
spacing.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from echo_batch.domain import (
    FramesMode,
    InputFormat,
    LoopKind,
    SegmentationSource,
    SpacingSource,
    View,
)
from echo_batch.errors import InputError
from echo_batch.io.cfg import parse_cfg
from echo_batch.io.discovery import discover
from echo_batch.report import write_report
from echo_batch.run.options import ChunkOptions, RunOptions
from echo_batch.run.serial import run_cohort
from echo_batch.synth.cohort import synth_cohort
from echo_batch.synth.echonet import synth_echonet

GT_DETECTED = ChunkOptions(segmentation=SegmentationSource.GT, frames=FramesMode.DETECTED)
MANIFEST_COLUMNS = ("patient_id", "view", "path", "frame_time_ms", "spacing_row_mm")


@pytest.fixture(scope="module")
def loop_cohort(tmp_path_factory) -> Path:
    """Four synthetic CAMUS-layout patients with loops (96 px)."""
    return synth_cohort(
        tmp_path_factory.mktemp("loops") / "data", 4, seed=5, max_side=96, loops=True
    )


def _loop_rows(cohort: Path) -> list[dict[str, object]]:
    """Manifest rows for every loop file of a CAMUS-layout cohort, with the cfg's frame time."""
    rows = []
    for folder in sorted((cohort / "database_nifti").iterdir()):
        for view in ("2CH", "4CH"):
            loops = sorted(folder.glob(f"*_{view}_*sequence.nii.gz"))
            loops = [p for p in loops if not p.name.endswith("_gt.nii.gz")]
            if not loops:
                continue
            cfg = parse_cfg(folder / f"Info_{view}.cfg")
            gt = loops[0].with_name(loops[0].name.replace(".nii.gz", "_gt.nii.gz"))
            rows.append(
                {
                    "patient_id": folder.name,
                    "view": view,
                    "path": os.path.relpath(loops[0], cohort),
                    "gt_path": os.path.relpath(gt, cohort),
                    "frame_time_ms": 1000.0 / cfg.frame_rate_hz if cfg.frame_rate_hz else "",
                }
            )
    return rows


def _write_manifest(path: Path, rows: list[dict[str, object]]) -> Path:
    names = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _results(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (
        pd.read_parquet(out / "patients.parquet").set_index("patient_id").sort_index(),
        pd.read_parquet(out / "frames.parquet"),
    )


def test_manifest_of_a_camus_cohort_gives_the_folder_run(loop_cohort, tmp_path):
    manifest = _write_manifest(loop_cohort / "loops.csv", _loop_rows(loop_cohort))
    found = discover(manifest)
    assert not found.problems
    assert [p.patient_id for p in found.patients] == sorted(
        p.name for p in (loop_cohort / "database_nifti").iterdir()
    )
    assert all(p.format == InputFormat.MANIFEST for p in found.patients)

    run_cohort(RunOptions(loop_cohort, tmp_path / "folder", GT_DETECTED, report=False))
    run_cohort(RunOptions(manifest, tmp_path / "manifest", GT_DETECTED, report=False))
    folder, folder_frames = _results(tmp_path / "folder")
    listed, listed_frames = _results(tmp_path / "manifest")
    assert (listed["input_format"] == "manifest").all()
    assert (folder["input_format"] == "camus2023").all()
    same = [
        "status",
        "ef_pct",
        "edv_ml",
        "ef_2ch_pct",
        "ef_4ch_pct",
        "ed_frame_2ch",
        "es_frame_2ch",
        "ed_frame_4ch",
        "es_frame_4ch",
        "n_beats",
        "heart_rate_bpm",
        "spacing_source",
    ]
    pd.testing.assert_frame_equal(listed[same], folder[same])
    assert folder["ef_pct"].notna().sum() >= 3
    key = ["patient_id", "view", "frame"]
    pd.testing.assert_frame_equal(
        listed_frames.sort_values(key).reset_index(drop=True),
        folder_frames.sort_values(key).reset_index(drop=True),
    )
    # the report finds the manifest's patients and draws their loop frames
    write_report(tmp_path / "manifest", worst=2)
    summary = json.loads((tmp_path / "manifest" / "report" / "summary.json").read_text())
    assert len(summary["gallery"]) == 2
    assert not any("not found" in g["source"] for g in summary["gallery"])
    report = tmp_path / "manifest" / "report"
    assert all((report / g["curve"]).is_file() for g in summary["gallery"])


def test_manifest_spacing_scales_volumes_and_keeps_ef(loop_cohort, tmp_path):
    rows = _loop_rows(loop_cohort)
    run_cohort(
        RunOptions(
            _write_manifest(loop_cohort / "plain.csv", rows),
            tmp_path / "plain",
            GT_DETECTED,
            report=False,
        )
    )
    plain, plain_frames = _results(tmp_path / "plain")
    # the cohort's header spacing, doubled: every length x2, area x4, volume x8, EF unchanged
    from echo_batch.io.image import read_sequence

    for row in rows:
        grid = read_sequence(loop_cohort / str(row["path"])).geometry.spacing
        row["spacing_row_mm"], row["spacing_col_mm"] = 2 * grid[0], 2 * grid[1]
    scaled_csv = _write_manifest(loop_cohort / "scaled.csv", rows)
    run_cohort(RunOptions(scaled_csv, tmp_path / "scaled", GT_DETECTED, report=False))
    scaled, scaled_frames = _results(tmp_path / "scaled")
    assert (scaled["spacing_source"] == SpacingSource.MANIFEST.value).all()
    assert (plain["spacing_source"] == SpacingSource.HEADER.value).all()
    # QC thresholds in mm may let other frames be ED/ES at another scale: compare the patients
    # whose frames stay (the frame rows below compare every frame)
    frames = ["ed_frame_2ch", "es_frame_2ch", "ed_frame_4ch", "es_frame_4ch"]
    ok = plain["ef_pct"].notna() & (scaled[frames] == plain[frames]).all(axis=1)
    assert ok.sum() >= 3
    np.testing.assert_allclose(scaled.loc[ok, "ef_pct"], plain.loc[ok, "ef_pct"], rtol=1e-9)
    np.testing.assert_allclose(scaled.loc[ok, "edv_ml"], 8 * plain.loc[ok, "edv_ml"], rtol=1e-9)
    key = ["patient_id", "view", "frame"]
    a = plain_frames.sort_values(key).reset_index(drop=True)
    b = scaled_frames.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(b["lv_area_mm2"], 4 * a["lv_area_mm2"], rtol=1e-9)
    np.testing.assert_allclose(b["lv_length_mm"], 2 * a["lv_length_mm"], rtol=1e-9)
    np.testing.assert_allclose(b["volume_rel"], a["volume_rel"], rtol=1e-9)


def test_manifest_bad_rows_are_problems_and_never_stop_the_others(loop_cohort, tmp_path):
    good = _loop_rows(loop_cohort)[:2]  # patient0001's two loops
    pid = good[0]["patient_id"]
    outside = loop_cohort.parent / "outside.nii.gz"  # beside the manifest's folder
    outside.write_bytes((loop_cohort / str(good[0]["path"])).read_bytes())
    (loop_cohort / "link.nii.gz").unlink(missing_ok=True)
    (loop_cohort / "link.nii.gz").symlink_to(outside)
    rows = [
        *good,
        {"patient_id": pid, "view": "2CH", "path": good[1]["path"]},  # a second 2CH file
        {"patient_id": "p_missing", "view": "4CH", "path": "nowhere/loop.nii.gz"},
        {"patient_id": "p_view", "view": "PLAX", "path": good[0]["path"]},
        {"patient_id": "p_escape", "view": "4CH", "path": "../outside.nii.gz"},
        {"patient_id": "p_link", "view": "4CH", "path": "link.nii.gz"},
        {"patient_id": "p_frames", "view": "4CH", "path": good[0]["path"], "ed_frame": "3"},
        {"patient_id": "p_numbers", "view": "4CH", "path": good[0]["path"], "ed_frame": "x"},
        {"patient_id": "../evil", "view": "4CH", "path": good[0]["path"]},
    ]
    manifest = _write_manifest(loop_cohort / "bad.csv", rows)
    found = discover(manifest)
    refs = {p.patient_id: p for p in found.patients}
    assert set(refs) == {pid, "p_missing", "p_view", "p_escape", "p_link", "p_frames", "p_numbers"}
    assert set(refs[pid].sequences) == {View.A2C, View.A4C}  # the first 2CH row kept
    text = "\n".join(p.reason for p in found.problems)
    for expected in (
        f"a second 2CH file for {pid}",
        "is missing",
        "unknown view 'PLAX'",
        "leaves the manifest's folder",
        "ed_frame and es_frame must be given together",
        "ed_frame 'x' is not a number",
        "'../evil' is not a usable patient id",
    ):
        assert expected in text, expected
    assert "p_link: line 8: path 'link.nii.gz' leaves the manifest's folder" in text
    for bad in ("p_missing", "p_view", "p_escape", "p_link", "p_frames", "p_numbers"):
        assert not refs[bad].sequences and refs[bad].problems

    out = tmp_path / "out"
    run_cohort(RunOptions(manifest, out, GT_DETECTED, report=False))
    patients = pd.read_parquet(out / "patients.parquet").set_index("patient_id")
    assert sorted(patients.index) == sorted(refs)  # every listed patient exactly once
    assert patients.loc[pid, "status"] == "ok"
    assert patients.loc["p_missing", "status"] == "failed"
    assert "is missing" in patients.loc["p_missing", "error"]

    # the same escape is allowed when the run is given the wider root explicitly
    wider = discover(manifest, files_root=loop_cohort.parent)
    assert View.A4C in {p.patient_id: p for p in wider.patients}["p_escape"].sequences


def test_manifest_that_cannot_be_read_names_its_file(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("patient,view\np1,2CH\n")
    with pytest.raises(InputError, match="required column"):
        discover(bad)


@pytest.fixture(scope="module")
def echonet(tmp_path_factory) -> Path:
    return synth_echonet(tmp_path_factory.mktemp("echonet") / "data", 5, seed=3)


def test_echonet_layout_is_discovered_with_its_tracings(echonet):
    found = discover(echonet)
    truth = pd.read_csv(echonet / "truth.csv").set_index("patient_id")
    assert [p.patient_id for p in found.patients] == sorted(truth.index)
    for ref in found.patients:
        meta = ref.clip_meta[View.A4C]
        assert ref.format == InputFormat.ECHONET and ref.loop_kinds[View.A4C] == LoopKind.FULL
        assert (meta.ed_frame, meta.es_frame) == (
            truth.loc[ref.patient_id, "traced_ed_frame"],
            truth.loc[ref.patient_id, "traced_es_frame"],
        )
        assert ref.ef_ref_pct == pytest.approx(truth.loc[ref.patient_id, "ef_4ch_pct"], abs=1e-3)
        assert meta.frame_time_ms == pytest.approx(truth.loc[ref.patient_id, "frame_time_4ch_ms"])


def test_echonet_traced_frames_give_the_true_ef_without_any_volume(echonet, tmp_path):
    out = tmp_path / "out"
    options = ChunkOptions(segmentation=SegmentationSource.GT)
    run_cohort(RunOptions(echonet, out, options))
    write_report(out)
    patients, frames = _results(out)
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["inputs"]["input_format"] == {"echonet": 5}
    assert summary["inputs"]["spacing_source"] == {"none": 5}
    page = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert "5 patient(s) have no trusted pixel spacing" in page
    truth = pd.read_csv(echonet / "truth.csv").set_index("patient_id").sort_index()
    assert list(patients.index) == list(truth.index)
    assert (patients["input_format"] == "echonet").all()
    assert (patients["spacing_source"] == "none").all()
    assert (patients["frames_source"] == "annotated").all()
    assert (patients["ed_frame_4ch"] == truth["traced_ed_frame"]).all()
    # single-plane EF of the traced polygons against the analytic 4CH truth
    np.testing.assert_allclose(patients["ef_4ch_pct"], truth["ef_4ch_pct"], atol=2.0)
    np.testing.assert_allclose(patients["ef_ref_pct"], truth["ef_4ch_pct"], atol=1e-3)
    for column in ("edv_ml", "esv_ml", "edv_4ch_ml", "esv_4ch_ml", "edv_camus_ml", "ef_camus_pct"):
        assert patients[column].isna().all(), column
    for column in ("lv_area_mm2", "lv_length_mm", "volume_single_ml"):
        assert frames[column].isna().all(), column
    traced = frames[frames["lv_area_px"] > 0]
    assert len(traced) == 2 * len(truth)  # the two traced frames; the others have no mask
    assert traced["volume_rel"].notna().all()
    images = pd.read_parquet(out / "images.parquet")
    assert images["volume_single_ml"].isna().all() and images["spacing_row_mm"].isna().all()
    assert not any("lv_length_implausible" in f for f in images["qc_flags"].explode().dropna())


def test_discover_command_shows_each_input_format_and_its_problems(echonet, loop_cohort):
    from typer.testing import CliRunner

    from echo_batch.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["discover", str(echonet), "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout[result.stdout.index("{") :])
    assert found["input_formats"] == {
        "echonet": {
            "patients": 5,
            "stills": 0,
            "loops": 5,
            "patients_with_problems": 0,
            "problems": 0,
        }
    }
    rows = [
        *_loop_rows(loop_cohort)[:1],
        {"patient_id": "p2", "view": "4CH", "path": "../elsewhere.nii.gz"},
    ]
    manifest = _write_manifest(loop_cohort / "cli.csv", rows)
    result = runner.invoke(app, ["discover", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "input format manifest: 2 patients, 0 stills, 1 loops, 1 problems" in result.stdout
    assert "p2: line 3: file" in result.stdout and "is missing" in result.stdout


@pytest.mark.parametrize(
    ("fmt", "extra", "loops"), [("dicom", ["--max-side", "48"], 2), ("echonet", [], 1)]
)
def test_synth_writes_a_cohort_that_discovery_reads_back(tmp_path, fmt, extra, loops):
    from typer.testing import CliRunner

    from echo_batch.cli import app

    runner = CliRunner()
    out = tmp_path / fmt
    result = runner.invoke(app, ["synth", str(out), "--format", fmt, "--patients", "2", *extra])
    assert result.exit_code == 0, result.output
    found = discover(out)
    assert len(found.patients) == 2 and not found.problems
    assert all(len(p.sequences) == loops and p.format.value == fmt for p in found.patients)


class _RectangleEngine:
    """Segments every frame as an LV rectangle ringed by myocardium and an atrium below it."""

    def segment(self, images):
        from echo_batch.model.inference import Segmentation

        out = []
        for image in images:
            labels = np.zeros(image.shape, np.uint8)
            h, w = image.shape
            labels[h // 6 : h // 2, w // 3 : 2 * w // 3] = 2
            labels[h // 6 + 3 : h // 2 - 3, w // 3 + 3 : 2 * w // 3 - 3] = 1
            labels[h // 2 : 3 * h // 4, w // 3 : 2 * w // 3] = 3
            out.append(Segmentation(labels=labels, confidence=0.9))
        return out


def test_echonet_tracings_score_the_lv_only(echonet):
    """A tracing outlines the cavity: Dice of the myocardium and atrium against it is not 0 but
    unknown (null); the LV Dice is measured on the traced frames."""
    from echo_batch.run.chunk import process_chunk

    refs = discover(echonet).patients[:2]
    result = process_chunk(refs, ChunkOptions(), model_id="rectangles", engine=_RectangleEngine())
    images = [r for r in result.images if r.status == "ok"]
    assert images and all(r.frame is not None for r in images)
    assert all(r.dice_lv is not None and 0 < r.dice_lv < 1 for r in images)
    assert all(r.dice_myo is None and r.dice_la is None for r in images)
