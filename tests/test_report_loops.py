"""Cohort report of cine loops: frame offsets by hand, volume curves, loop frames in the gallery."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from echo_batch.domain import Instant, View
from echo_batch.io.discovery import discover
from echo_batch.io.image import read_sequence
from echo_batch.measure.landmarks import ViewGeometry, measure_lv
from echo_batch.measure.patient import single_plane_ml
from echo_batch.report import write_report
from echo_batch.report.gallery import _load_panels
from echo_batch.report.loops import (
    frame_column,
    frame_offsets,
    has_loops,
    loop_summary,
    offset_table,
)
from echo_batch.report.stats import RunData, load_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VIEWS = ("2CH", "4CH")
INSTANTS = ("ED", "ES")


def _frames(pid: str, view: str, n: int, eds: list[int], ess: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": pid,
            "view": view,
            "frame": np.arange(n),
            "is_ed": np.isin(np.arange(n), eds),
            "is_es": np.isin(np.arange(n), ess),
            "qc_rejected": False,
        }
    )


def _hand_case() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three patients with hand-picked frames.

    p1 2CH: EDs 3 and 20, ESs 10 and 27, annotated ED 4 / ES 10, results use the second beat
    (20, 27): offsets -1 and 0, both in another beat. p1 4CH has no frame rows: the chosen frames
    (5, 12) stand for the detected ones against annotated 5 / 15: offsets 0 and -3.
    p2 2CH: ED 0, ES 8, annotated 2 / 8: offsets -2, 0. p2 4CH: EDs 2 and 6 (annotated 4: a tie,
    the earlier one counts, -2, and the results use the other, 6), ES 9 annotated 9: 0.
    p3: stills, no annotated frames: no offset.
    """
    patients = pd.DataFrame(
        {
            "patient_id": ["p1", "p2", "p3"],
            "ef_pct": [50.0, 40.0, 60.0],
            "ef_annotated_pct": [53.0, 39.0, None],
            "frames_source": ["detected", "detected", "annotated"],
            "ed_frame_2ch": [20, 0, None],
            "es_frame_2ch": [27, 8, None],
            "ed_frame_4ch": [5, 6, None],
            "es_frame_4ch": [12, 9, None],
            "ed_frame_2ch_annotated": [4, 2, None],
            "es_frame_2ch_annotated": [10, 8, None],
            "ed_frame_4ch_annotated": [5, 4, None],
            "es_frame_4ch_annotated": [15, 9, None],
        }
    )
    frames = pd.concat(
        [
            _frames("p1", "2CH", 30, [3, 20], [10, 27]),
            _frames("p2", "2CH", 10, [0], [8]),
            _frames("p2", "4CH", 12, [2, 6], [9]),
        ],
        ignore_index=True,
    )
    frames.loc[[0, 1], "qc_rejected"] = True
    return patients, frames


def test_frame_offsets_known_answer():
    patients, frames = _hand_case()
    offsets = frame_offsets(patients, frames)
    got = {(r.patient_id, r.view, r.instant): r.offset for r in offsets.itertuples()}
    assert got == {
        ("p1", "2CH", "ED"): -1,
        ("p1", "2CH", "ES"): 0,
        ("p1", "4CH", "ED"): 0,
        ("p1", "4CH", "ES"): -3,
        ("p2", "2CH", "ED"): -2,
        ("p2", "2CH", "ES"): 0,
        ("p2", "4CH", "ED"): -2,
        ("p2", "4CH", "ES"): 0,
    }
    table = {(r["view"], r["instant"]): r for r in offset_table(offsets)}
    ed_2ch = table[("2CH", "ED")]
    assert ed_2ch["n"] == 2 and ed_2ch["mean"] == pytest.approx(-1.5)
    assert ed_2ch["sd"] == pytest.approx(np.std([-1, -2], ddof=1))
    assert (ed_2ch["exact_share"], ed_2ch["within_1_share"], ed_2ch["beyond_1_share"]) == (
        0.0,
        0.5,
        0.5,
    )
    assert ed_2ch["other_beat_share"] == 0.5  # p1 uses beat 2, p2 the annotated one
    assert table[("4CH", "ED")]["other_beat_share"] == 0.5  # p2's tie: detected 2, used 6
    pooled = table[("all", "all")]
    assert pooled["n"] == 8 and pooled["mean"] == pytest.approx(-1.0)
    assert pooled["max_abs"] == 3 and pooled["mean_abs"] == pytest.approx(8 / 8)
    assert pooled["exact_share"] == 4 / 8
    assert pooled["within_1_share"] == 5 / 8
    assert pooled["beyond_1_share"] == 3 / 8


def test_loop_summary_known_answer_and_none_for_stills():
    patients, frames = _hand_case()
    run = RunData(Path("."), patients, pd.DataFrame(), {}, frames)
    summary = loop_summary(run)
    assert (summary["patients"], summary["loops"], summary["frames"]) == (2, 3, 52)
    assert summary["qc_rejected_frames"] == 2
    assert summary["patients_by_frames_source"] == {"detected": 2, "annotated": 1}
    ef = summary["ef_detected_vs_annotated"]
    assert ef["n"] == 2
    assert ef["bias"] == pytest.approx(np.mean([-3.0, 1.0]))
    assert ef["sd"] == pytest.approx(np.std([-3.0, 1.0], ddof=1))
    stills = patients[["patient_id", "ef_pct"]]
    assert not has_loops(RunData(Path("."), stills, pd.DataFrame(), {}))
    assert loop_summary(RunData(Path("."), stills, pd.DataFrame(), {})) is None
    assert frame_column(View.A4C, Instant.ES, annotated=True) == "es_frame_4ch_annotated"


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory) -> tuple[Path, Path]:
    """DATA of 8 synthetic patients with loops (seed 3: full loops of 1-4 beats and half
    sequences, 2 patients without stills, QC-rejected frames) and the OUT of a
    ``--segmentation gt --frames detected`` run on it."""
    from echo_batch.run.options import ChunkOptions, RunOptions
    from echo_batch.run.serial import run_cohort
    from echo_batch.synth import synth_cohort

    root = tmp_path_factory.mktemp("loops")
    data = synth_cohort(root / "data", 8, seed=3, fmt="nifti", max_side=96, loops=True)
    out = root / "out"
    options = ChunkOptions(segmentation="gt", frames="detected")
    run_cohort(RunOptions(data, out, options, report=False))
    return data, out


def _hand_offsets(patients: pd.DataFrame, frames: pd.DataFrame) -> list[tuple]:
    """(view, instant, offset, other beat) per annotated frame, by plain loops over the rows."""
    marked: dict[tuple, list[int]] = {}
    for r in frames.to_dict("records"):
        for instant, flag in (("ED", "is_ed"), ("ES", "is_es")):
            if r[flag]:
                marked.setdefault((r["patient_id"], r["view"], instant), []).append(r["frame"])
    found = []
    for p in patients.to_dict("records"):
        for view in VIEWS:
            for instant in INSTANTS:
                name = f"{instant.lower()}_frame_{view.lower()}"
                annotated = p[f"{name}_annotated"]
                if pd.isna(annotated):
                    continue
                best = None
                for frame in sorted(marked[(p["patient_id"], view, instant)]):
                    if best is None or abs(frame - annotated) < abs(best - annotated):
                        best = frame
                found.append((view, instant, best - annotated, best != p[name]))
    return found


def test_report_of_loops_offsets_ef_and_curves(loop_run):
    _, out = loop_run
    index = write_report(out, worst=8)
    summary = json.loads((index.parent / "summary.json").read_text())
    run = load_run(out)
    loops = summary["loops"]
    assert loops["frames"] == len(run.frames) and loops["patients"] == 8
    assert loops["qc_rejected_frames"] == int(run.frames.qc_rejected.sum())

    hand = _hand_offsets(run.patients, run.frames)
    assert hand, "the fixture has patients with annotated frames"
    table = {(r["view"], r["instant"]): r for r in loops["offsets"]}
    for key in [(v, i) for v in VIEWS for i in INSTANTS] + [("all", "all")]:
        rows = [h for h in hand if key == ("all", "all") or h[:2] == key]
        offsets = np.array([h[2] for h in rows], float)
        row = table[key]
        assert row["n"] == len(rows)
        assert row["mean"] == pytest.approx(offsets.mean())
        assert row["exact_share"] == pytest.approx(np.mean(offsets == 0))
        assert row["within_1_share"] == pytest.approx(np.mean(np.abs(offsets) <= 1))
        assert row["beyond_1_share"] == pytest.approx(np.mean(np.abs(offsets) > 1))
        assert row["other_beat_share"] == pytest.approx(np.mean([h[3] for h in rows]))

    both = run.patients.dropna(subset=["ef_pct", "ef_annotated_pct"])
    diff = (both.ef_pct - both.ef_annotated_pct).to_numpy()
    ef = loops["ef_detected_vs_annotated"]
    assert ef["n"] == len(diff) >= 2
    assert ef["bias"] == pytest.approx(diff.mean())
    assert ef["sd"] == pytest.approx(diff.std(ddof=1))

    page = index.read_text(encoding="utf-8")
    assert 'id="loops"' in page and "Detected minus annotated ED/ES frames" in page
    sources = set(re.findall(r'<img src="([^"]+)"', page))
    assert len(summary["gallery"]) == 8
    for case in summary["gallery"]:
        pid = case["patient_id"]
        assert case["source"] == "expert masks (this run measured them)"
        assert case["curve"] == f"gallery/{pid}_cycle.png"
        for src in (case["curve"], f"gallery/{pid}.png"):
            assert src in sources
            assert (index.parent / src).read_bytes().startswith(PNG_MAGIC)


def test_gallery_draws_the_loop_frames_that_were_measured(loop_run):
    """The panels of a loop patient are its loop's chosen frames: the expert mask drawn gives the
    single-plane volume images.parquet records for that image."""
    data, out = loop_run
    run = load_run(out)
    refs = {p.patient_id: p for p in discover(data).patients}
    still_less = [pid for pid, ref in refs.items() if not ref.images]
    assert still_less, "the fixture has patients whose only input is the loop"
    checked = 0
    for _, row in run.patients.iterrows():
        ref = refs[row.patient_id]
        panels = _load_panels(ref, row)
        assert len(panels) == 4
        for panel in panels:
            view, instant = panel.key.view.value, panel.key.instant.value
            assert panel.frame == row[f"{instant.lower()}_frame_{view.lower()}"]
            loop = read_sequence(ref.sequences[panel.key.view].image)
            np.testing.assert_array_equal(panel.image.array, loop.array[panel.frame])
            image = run.images[
                (run.images.patient_id == row.patient_id)
                & (run.images.view == view)
                & (run.images.instant == instant)
            ].iloc[0]
            assert image.frame == panel.frame
            geometry = measure_lv(panel.expert, panel.image.spacing)
            assert isinstance(geometry, ViewGeometry)
            assert single_plane_ml(geometry) == pytest.approx(image.volume_single_ml, rel=1e-9)
            checked += 1
    assert checked == 32


def test_missing_loop_file_keeps_the_curve_and_says_so(loop_run, tmp_path):
    data, out = loop_run
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    run = load_run(out)
    pid = run.patients.patient_id.iloc[0]
    for path in (copy / "database_nifti" / pid).glob(f"{pid}_2CH_*sequence.nii.gz"):
        path.unlink()
    report_out = tmp_path / "out"
    shutil.copytree(out, report_out, ignore=shutil.ignore_patterns("report"))
    index = write_report(report_out, worst=8, data=copy)
    summary = json.loads((index.parent / "summary.json").read_text())
    case = next(c for c in summary["gallery"] if c["patient_id"] == pid)
    assert case["source"].startswith("images could not be read")
    assert "no 2CH loop file" in case["source"]
    assert (index.parent / case["curve"]).read_bytes().startswith(PNG_MAGIC)
    assert "contours not available; the volume curve follows" in index.read_text(encoding="utf-8")
    assert not (index.parent / "gallery" / f"{pid}.png").exists()


def test_report_of_a_stills_only_synthetic_run(tmp_path):
    """Without loops: no loop section, no curve, the gallery as before."""
    from echo_batch.run.options import ChunkOptions, RunOptions
    from echo_batch.run.serial import run_cohort
    from echo_batch.synth import synth_cohort

    data = synth_cohort(tmp_path / "data", 4, seed=3, fmt="nifti", max_side=96)
    out = tmp_path / "out"
    run_cohort(RunOptions(data, out, ChunkOptions(segmentation="gt"), report=False))
    index = write_report(out, worst=2)
    summary = json.loads((index.parent / "summary.json").read_text())
    assert summary["loops"] is None
    assert [set(g) for g in summary["gallery"]] == [{"patient_id", "source"}] * 2
    assert not list((index.parent / "gallery").glob("*_cycle.png"))
    assert 'id="loops"' not in index.read_text(encoding="utf-8")
