"""Synthetic cine loops: the cycle waveform, the loop plan, the written loops and their truth.

Known answers by hand (waveform values, beat layouts, frame positions), the truth against the
written expert masks (LV pixel area per frame, ED/ES as the extremes), determinism, and a digest
of the default (no-loop) output taken before loops existed, so that the stills path cannot change
unnoticed.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from echo_batch.cli import app
from echo_batch.domain import VIEWS, ImageKey, Instant, Label, LoopKind, Release, View
from echo_batch.io.cfg import parse_cfg
from echo_batch.io.discovery import discover
from echo_batch.io.image import read_image, read_sequence
from echo_batch.synth import (
    PatientTruth,
    plan_cohort,
    rasterise_view,
    render_phases,
    sample_loops,
    sample_patient,
    synth_cohort,
)
from echo_batch.synth.loop_truth import FRAME_COLUMNS
from echo_batch.synth.loops import _rr_frames, full_loop, half_sequence
from echo_batch.synth.waveform import (
    EJECTION_CUSP,
    CycleTiming,
    cycle_phase,
    cycle_timing,
    ejection_time_ms,
)

SIDE = 96
SEED = 3
N_PATIENTS = 12  # seed 3: full and half loops, still-less patients and a reversed half sequence
DEFAULT_DIGEST = "3ccdf4ef3c57f96fee1b16bec1348321d42665526bf14041aaa2c3a18d3709d9"
"""Content of ``synth_cohort(OUT, 2, seed=9, max_side=64)`` (:func:`_digest`), taken with the
code of commit 8d8b376, before loops existed."""

TIMING = CycleTiming(
    rr_frames=10,
    systole_frames=4,
    filling_frames=2.0,
    kick_frames=2.0,
    p_diastasis=0.3,
    p_atrial=0.2,
)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _frames(text: str) -> list[int]:
    return [int(f) for f in text.split()]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loops")
    return synth_cohort(root, N_PATIENTS, seed=SEED, fmt="nifti", max_side=SIDE, loops=True)


@pytest.fixture(scope="module")
def truth(cohort: Path) -> dict[str, dict[str, str]]:
    return {row["patient_id"]: row for row in _rows(cohort / "truth.csv")}


@pytest.fixture(scope="module")
def frame_truth(cohort: Path) -> dict[tuple[str, str], list[dict[str, str]]]:
    out: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in _rows(cohort / "truth_frames.csv"):
        out.setdefault((row["patient_id"], row["view"]), []).append(row)
    return out


# ---------------------------------------------------------------- waveform, by hand


def test_waveform_known_values() -> None:
    """rr 10, S 4, F 2, A 2, p_d 0.3, p_a 0.2: every frame of the cycle by hand."""
    g = EJECTION_CUSP / (2.0 * math.pi)
    expected = [
        0.0,  # ED
        0.25 + g,  # ejection, tau = 1/4: 0.25 + γ sin(π/2) / 2π
        0.5,  # tau = 1/2: sin(π) = 0
        0.75 - g,  # tau = 3/4
        1.0,  # ES
        1.0 - 0.7 * 0.75,  # rapid filling, u = 1/2: 1 - (1 - p_d)(1 - 1/4)
        0.3,  # end of filling (u = 1): p_d
        0.25,  # diastasis from t = 6 to t = 8, halfway: (0.3 + 0.2) / 2
        0.2,  # start of the atrial kick: p_a
        0.2 * 0.75,  # kick, u = 1/2: p_a (1 - 1/4)
    ]
    phases = cycle_phase(np.arange(10), TIMING)
    np.testing.assert_allclose(phases, expected, atol=1e-12)
    assert phases[0] == 0.0 and phases[4] == 1.0  # exactly
    np.testing.assert_array_equal(cycle_phase(np.arange(10, 20), TIMING), phases)  # periodic


def test_waveform_extremes_are_strict_and_pieces_monotonic() -> None:
    timing = cycle_timing(90, 60.0, 385.0, p_atrial=0.25, diastasis_drop=0.04)
    t = np.linspace(0.0, 90.0, 9001)[:-1]
    p = cycle_phase(t, timing)
    s = timing.systole_frames
    assert np.all((p > 0.0) == (t != 0.0)) and np.all((p < 1.0) == (t != s))
    assert np.all(np.diff(p[t <= s]) > 0.0)  # ejection: the LV only shrinks
    assert np.all(np.diff(p[t >= s]) <= 0.0)  # diastole: it only fills
    # pointed extremes: at 60 fps and the smallest atrial share (0.25), the frame before ED
    # differs from it by p_a (1 - (1 - 1/A)²) = 0.25 (2 * 7.8 - 1) / 7.8² = 0.05999
    frames = cycle_phase(np.arange(90), timing)
    assert frames[-1] == pytest.approx(0.25 * (2 * 7.8 - 1) / 7.8**2)
    assert min(frames[1], 1.0 - frames[s - 1], 1.0 - frames[s + 1]) > frames[-1]


def test_cycle_timing_fits_any_rate() -> None:
    assert ejection_time_ms(60.0, "M") == pytest.approx(311.0)  # 413 - 1.7 * 60
    assert ejection_time_ms(60.0, "F") == pytest.approx(322.0)  # 418 - 1.6 * 60
    slow = cycle_timing(90, 60.0, 385.0, 0.25, 0.04)  # 40 bpm at 60 fps
    assert slow.systole_frames == 23  # 385 ms / 16.7 ms
    assert slow.filling_frames == pytest.approx(10.8) and slow.kick_frames == pytest.approx(7.8)
    assert slow.p_diastasis == pytest.approx(0.29)  # a long diastasis: the full drop
    fast = cycle_timing(9, 25.0, 150.0, 0.25, 0.04)  # 167 bpm at 25 fps: 5 frames of diastole
    assert fast.systole_frames == 4  # 150 ms / 40 ms = 3.75
    assert fast.filling_frames == pytest.approx(2.75)  # 0.55 * 5 < 180 ms / 40 ms
    assert fast.kick_frames == pytest.approx(2.25)  # 0.45 * 5 < 130 ms / 40 ms
    assert fast.p_diastasis == fast.p_atrial  # no room left for a diastasis
    assert cycle_timing(9, 25.0, 400.0, 0.25, 0.04).systole_frames == 6  # 3 frames of diastole
    with pytest.raises(ValueError):
        cycle_timing(4, 25.0, 100.0, 0.25, 0.04)


def test_rr_frames_keeps_the_heart_rate_in_range() -> None:
    assert _rr_frames(50, 100.0) == 30  # 60 * 50 / 100
    assert _rr_frames(25, 180.0) == 9  # 8.33 would be 187.5 bpm: 9 frames, 166.7 bpm
    assert _rr_frames(60, 40.0) == 90
    assert _rr_frames(60, 39.0) == 90


# ---------------------------------------------------------------- loop layouts, by hand


def test_full_loop_layout() -> None:
    loop = full_loop(View.A2C, 50, TIMING, n_beats=2, start=0.0, end=0.0)
    # first ED at frame 2, EDs every 10 frames, ES 4 after, clip ends 2 frames after the last ES
    assert loop.ed_frames == (2, 12) and loop.es_frames == (6, 16)
    assert loop.n_frames == 19
    assert loop.beat.tolist() == [-1, -1] + [0] * 10 + [1] * 7
    assert loop.heart_rate_bpm == pytest.approx(300.0)  # 60 * 50 / 10 (TIMING is not physiological)
    np.testing.assert_array_equal(loop.phases[2:12], cycle_phase(np.arange(10), TIMING))
    late = full_loop(View.A2C, 50, TIMING, n_beats=1, start=0.99, end=0.99)
    assert late.ed_frames == (9,) and late.es_frames == (13,)
    assert late.n_frames == 23  # ends one frame before the next ES (9 + 10 + 4)
    assert late.beat[19:].tolist() == [-1] * 4  # the next ED is in the clip, its beat incomplete
    assert late.phases[19] == 0.0


@pytest.mark.parametrize(("late", "ed", "es"), [(0, 0, 4), (2, 2, 6)])
def test_half_sequence_layout(late: int, ed: int, es: int) -> None:
    loop = half_sequence(View.A4C, 30, TIMING, late, reverse=False)
    assert loop.kind == LoopKind.HALF and loop.heart_rate_bpm is None
    assert (loop.ed_frames, loop.es_frames, loop.n_frames) == ((ed,), (es,), 5 + late)
    assert loop.phases[ed] == 0.0 and loop.phases[es] == 1.0
    assert np.all(loop.phases[:ed] > 0.0)  # late-diastolic frames: a smaller LV
    backwards = half_sequence(View.A4C, 30, TIMING, late, True)
    # stored ES -> ED: ES first, ED S = 4 frames later, the late-diastolic frames after it
    assert backwards.ed_frames == (4,) and backwards.es_frames == (0,)
    np.testing.assert_array_equal(backwards.phases, loop.phases[::-1])
    assert backwards.beat.tolist() == [0] * 5 + [-1] * late


# ---------------------------------------------------------------- the plan


def test_loop_population() -> None:
    plans = [sample_loops(p) for p, _ in plan_cohort(600, seed=1)]
    still_less = np.mean([not p.has_stills for p in plans])
    half = np.mean([p.views[0].kind == LoopKind.HALF for p in plans])
    assert 0.15 < still_less < 0.25 and 0.25 < half < 0.35
    loops = [loop for p in plans for loop in p.views]
    reversed_share = np.mean([x.reversed for x in loops if x.kind == LoopKind.HALF])
    assert 0.13 < reversed_share < 0.27
    full = [x for x in loops if x.kind == LoopKind.FULL]
    rates = np.array([x.heart_rate_bpm for x in full])
    assert rates.min() >= 40.0 and rates.max() <= 180.0 and rates.min() < 50 and rates.max() > 160
    assert {len(x.ed_frames) for x in full} == {1, 2, 3, 4}
    assert {int(x.frame_rate_hz) for x in loops} == set(range(25, 61))
    assert {x.late_diastolic for x in loops if x.kind == LoopKind.HALF} == {0, 1, 2}
    for x in full:
        assert x.ed_frames[0] >= 2 and x.es_frames[-1] + 2 < x.n_frames
        assert np.all(np.diff(x.ed_frames) == x.timing.rr_frames)
    for params, _ in plan_cohort(50, seed=1):
        assert all(x.kind == LoopKind.HALF for x in sample_loops(params, half_only=True).views)


def test_loops_are_deterministic_and_leave_the_patient_alone() -> None:
    params = sample_patient(7, seed=2)
    a, b = sample_loops(params), sample_loops(sample_patient(7, seed=2))
    assert a.has_stills == b.has_stills
    for x, y in zip(a.views, b.views, strict=True):
        np.testing.assert_array_equal(x.phases, y.phases)
        assert (x.ed_frames, x.es_frames) == (y.ed_frames, y.es_frames)
    others = [sample_loops(sample_patient(i, seed=2)).views[0].phases for i in range(1, 7)]
    assert len({x.tobytes() for x in others}) == 6  # patients differ


def test_render_phases_draws_each_phase_as_rasterise_view() -> None:
    params = sample_patient(2, seed=5, max_side=64)
    phases = np.array([0.0, 0.4, 1.0, 0.4, 0.0])
    labels, images = render_phases(params, View.A4C, phases)
    for frame, phase in enumerate(phases):
        expected = rasterise_view(params, View.A4C, float(phase))
        np.testing.assert_array_equal(labels[frame], expected[0])
        np.testing.assert_array_equal(images[frame], expected[1])


# ---------------------------------------------------------------- the written cohort


def test_fixture_covers_every_kind(truth: dict[str, dict[str, str]]) -> None:
    rows = truth.values()
    kinds = {row[f"loop_kind_{t}"] for row in rows for t in ("2ch", "4ch")}
    assert kinds == {"full", "half"}
    assert {row["has_stills"] for row in rows} == {"True", "False"}
    assert any(row[f"reversed_{t}"] == "True" for row in rows for t in ("2ch", "4ch"))
    assert any(int(row[f"n_beats_{t}"]) > 1 for row in rows for t in ("2ch", "4ch"))


def test_truth_columns_and_volume_truth_unchanged(
    truth: dict[str, dict[str, str]], cohort: Path
) -> None:
    row = next(iter(truth.values()))
    stills = [f.name for f in fields(PatientTruth)]
    loop_cols = ["has_stills"]
    for t in ("2ch", "4ch"):
        loop_cols += [f"loop_kind_{t}", f"n_beats_{t}", f"ed_frames_{t}", f"es_frames_{t}"]
        loop_cols += [f"reversed_{t}", f"heart_rate_{t}_bpm", f"frame_time_{t}_ms"]
    assert list(row) == stills + loop_cols
    for params, plain in plan_cohort(N_PATIENTS, seed=SEED, max_side=SIDE):
        row = truth[params.patient_id]
        for name in ("edv_ml", "esv_ml", "ef_pct", "edv_2ch_ml", "esv_4ch_ml", "ef_4ch_pct"):
            assert float(row[name]) == getattr(plain, name)  # same patients, full precision
    frame_header = (cohort / "truth_frames.csv").read_text().splitlines()[0]
    assert frame_header.split(",") == list(FRAME_COLUMNS)


def test_discovery_finds_the_loops(cohort: Path, truth: dict[str, dict[str, str]]) -> None:
    manifest = discover(cohort)
    assert len(manifest.patients) == N_PATIENTS and not manifest.problems
    for patient in manifest.patients:
        row = truth[patient.patient_id]
        assert patient.release == Release.CAMUS2023
        assert set(patient.sequences) == set(VIEWS)
        assert all(f.image is not None and f.gt is not None for f in patient.sequences.values())
        for view in VIEWS:
            kind = row[f"loop_kind_{view.value.lower()}"]
            name = patient.sequences[view].image.name
            expected = "_half_sequence.nii.gz" if kind == "half" else "_sequence.nii.gz"
            assert name == f"{patient.patient_id}_{view.value}{expected}"
        if row["has_stills"] == "True":
            assert patient.complete and not patient.problems
        else:
            assert not patient.images  # still-less: loops and cfgs only
            assert sorted(p.name for p in patient.folder.iterdir()) == sorted(
                [f"Info_{v.value}.cfg" for v in VIEWS]
                + [patient.sequences[v].image.name for v in VIEWS]
                + [patient.sequences[v].gt.name for v in VIEWS]
            )


def test_cfgs_stills_and_loops_agree(cohort: Path, truth: dict[str, dict[str, str]]) -> None:
    for patient in discover(cohort).patients:
        row = truth[patient.patient_id]
        params = sample_patient(int(patient.patient_id[-4:]), seed=SEED, max_side=SIDE)
        for view in VIEWS:
            tag = view.value.lower()
            info = parse_cfg(patient.cfgs[view])
            seq = read_sequence(patient.sequences[view].image)
            gt = read_sequence(patient.sequences[view].gt, labels=True)
            eds, ess = _frames(row[f"ed_frames_{tag}"]), _frames(row[f"es_frames_{tag}"])
            assert info.n_frames == seq.array.shape[0] == int(row[f"n_frames_{tag}"])
            assert info.frame_rate_hz == pytest.approx(1000.0 / float(row[f"frame_time_{tag}_ms"]))
            if row["has_stills"] == "False":
                assert info.ed_frame is None and info.es_frame is None
                continue
            assert (info.ed_frame, info.es_frame) == (eds[0] + 1, ess[0] + 1)  # 1-based
            for instant, frame in ((Instant.ED, eds[0]), (Instant.ES, ess[0])):
                files = patient.images[ImageKey(view, instant)]
                still, still_gt = read_image(files.image), read_image(files.gt, labels=True)
                np.testing.assert_array_equal(still.array, seq.array[frame])
                np.testing.assert_array_equal(still_gt.array, gt.array[frame])
                # the stills are those of the same seed without loops
                expected = rasterise_view(params, view, instant)
                np.testing.assert_array_equal(still_gt.array, expected[0])
                np.testing.assert_array_equal(still.array, expected[1])


def _rr_frames_of(row: dict[str, str], tag: str) -> int:
    """Frames per beat of a full loop from its truth row."""
    return round(60000.0 / float(row[f"heart_rate_{tag}_bpm"]) / float(row[f"frame_time_{tag}_ms"]))


def test_frame_truth_matches_the_written_masks(
    cohort: Path,
    truth: dict[str, dict[str, str]],
    frame_truth: dict[tuple[str, str], list[dict[str, str]]],
) -> None:
    """Per frame, the expert LV area follows the analytic area; ED and ES are its extremes."""
    n_beats = 0
    for patient in discover(cohort).patients:
        row = truth[patient.patient_id]
        for view in VIEWS:
            tag = view.value.lower()
            frames = frame_truth[(patient.patient_id, view.value)]
            gt = read_sequence(patient.sequences[view].gt, labels=True)
            row_mm, col_mm = gt.geometry.spacing
            pixels = (gt.array == Label.LV).sum(axis=(1, 2)).astype(float)
            analytic = np.array([float(f["lv_area_mm2"]) for f in frames])
            assert len(frames) == len(pixels) == int(row[f"n_frames_{tag}"])
            assert [int(f["frame"]) for f in frames] == list(range(len(frames)))
            np.testing.assert_allclose(pixels * row_mm * col_mm, analytic, rtol=0.04)
            eds, ess = _frames(row[f"ed_frames_{tag}"]), _frames(row[f"es_frames_{tag}"])
            assert [i for i, f in enumerate(frames) if f["is_ed"] == "True"] == eds
            assert [i for i, f in enumerate(frames) if f["is_es"] == "True"] == ess
            volume = np.array([float(f["volume_ml"]) for f in frames])
            beat = np.array([int(f["beat"]) for f in frames])
            for k, (ed, es) in enumerate(zip(eds, ess, strict=True)):
                n_beats += 1
                assert volume[ed] == float(row["edv_ml"]) and volume[es] == float(row["esv_ml"])
                assert beat[ed] == k and beat[es] == k
                # strict extremes of the expert area: in the whole half sequence, or within half a
                # beat of the frame in a full loop
                is_half = row[f"loop_kind_{tag}"] == "half"
                half = len(frames) if is_half else _rr_frames_of(row, tag) // 2
                for frame, sign in ((ed, 1.0), (es, -1.0)):
                    window = sign * pixels[max(0, frame - half) : frame + half + 1]
                    at = min(frame, half)
                    assert window[at] > np.delete(window, at).max()
            if row[f"loop_kind_{tag}"] == "full" and len(eds) > 1:
                rr_ms = np.diff(eds).mean() * float(row[f"frame_time_{tag}_ms"])
                assert float(row[f"heart_rate_{tag}_bpm"]) == pytest.approx(60000.0 / rr_ms)
            times = [float(f["time_ms"]) for f in frames]
            assert times[1] == pytest.approx(float(row[f"frame_time_{tag}_ms"]))
    assert n_beats > 2 * N_PATIENTS


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    roots = [synth_cohort(tmp_path / n, 2, seed=4, max_side=48, loops=True) for n in "ab"]
    files = sorted(p.relative_to(roots[0]) for p in roots[0].rglob("*") if p.is_file())
    assert Path("truth_frames.csv") in files
    assert files == sorted(p.relative_to(roots[1]) for p in roots[1].rglob("*") if p.is_file())
    for name in files:
        assert (roots[0] / name).read_bytes() == (roots[1] / name).read_bytes(), name


def _digest(root: Path) -> str:
    """Hash of a cohort's content: decoded arrays and spacings, cfgs, CSVs and split lists."""
    sha = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        sha.update(str(path.relative_to(root)).encode())
        if path.name.endswith(".nii.gz"):
            image = read_sequence(path) if "sequence" in path.name else read_image(path)
            header = repr((image.array.shape, image.geometry.spacing)).encode()
            sha.update(image.array.tobytes() + header)
        else:
            sha.update(path.read_bytes())
    return sha.hexdigest()


def test_default_output_is_what_it_was_before_loops(tmp_path: Path) -> None:
    """Decoded arrays, spacings, cfgs and CSVs equal those of the code before loops."""
    root = synth_cohort(tmp_path / "plain", 2, seed=9, max_side=64)
    assert not (root / "truth_frames.csv").exists()
    assert _digest(root) == DEFAULT_DIGEST


def test_mhd_loops_are_half_sequences_without_frame_time(tmp_path: Path) -> None:
    root = synth_cohort(tmp_path / "mhd", 3, seed=2, fmt="mhd", max_side=48, loops=True)
    rows = _rows(root / "truth.csv")
    assert all(r[f"loop_kind_{t}"] == "half" for r in rows for t in ("2ch", "4ch"))
    assert all(r[f"frame_time_{t}_ms"] == "" for r in rows for t in ("2ch", "4ch"))
    for patient in discover(root).patients:
        assert patient.release == Release.CAMUS2019
        for view in VIEWS:
            assert patient.sequences[view].image.name.endswith(f"{view.value}_sequence.mhd")
            assert parse_cfg(patient.cfgs[view]).frame_rate_hz is None


def test_cli_loops_flag(tmp_path: Path) -> None:
    runner = CliRunner()
    plain, loops = tmp_path / "plain", tmp_path / "loops"
    args = ["--patients", "1", "--max-side", "48", "--seed", "4"]
    assert runner.invoke(app, ["synth", str(plain), *args]).exit_code == 0
    result = runner.invoke(app, ["synth", str(loops), *args, "--loops"])
    assert result.exit_code == 0, result.output
    assert not (plain / "truth_frames.csv").exists() and (loops / "truth_frames.csv").exists()
    api = synth_cohort(tmp_path / "api", 1, seed=4, max_side=48, loops=True)
    assert (api / "truth.csv").read_bytes() == (loops / "truth.csv").read_bytes()
