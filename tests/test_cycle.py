"""Cycle detection (measure/cycle.py): known-answer curves, edge cases, a randomized batch.

The synthetic loops below sample an analytic relative LV volume (1 at ED, 0 at ES) whose ED and ES
instants are known; the expected ED (ES) frame of a beat is whichever of the two frames around the
ED (ES) instant has the larger (smaller) sampled volume.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from echo_batch.measure.cycle import (
    Beat,
    Cycle,
    NoBeatReason,
    beat_of_frames,
    detect_cycle,
)

# validation split only: camus224-loops/testing is held out for the report
LOOPS_TRUTH = Path(__file__).resolve().parents[2] / "shared/camus224-loops/validation/truth.csv"


def cosine(phase: np.ndarray, systole: float) -> np.ndarray:
    """Relative volume of a cosine beat: ED at phase 0, ES at phase 0.5 (``systole`` unused)."""
    return (1 + np.cos(2 * np.pi * phase)) / 2


def physiological(phase: np.ndarray, systole: float) -> np.ndarray:
    """Relative volume of a physiological beat (ED at phase 0, ES at ``systole``).

    Ejection is a half cosine; diastole is isovolumic relaxation (8 % of it), rapid filling
    (exponential, 75 % of the stroke) and the atrial kick (the last 20 %, 25 % of the stroke), so
    the ED peak and the ES trough are asymmetric: smoothing moves them.
    """
    phase = np.mod(phase, 1.0)
    out = np.empty_like(phase)
    sys = phase <= systole
    out[sys] = (1 + np.cos(np.pi * phase[sys] / systole)) / 2
    y = (phase[~sys] - systole) / (1 - systole)
    filling = np.clip((y - 0.08) / 0.92, 0, 1)
    rapid = 0.75 * (1 - np.exp(-filling / 0.12)) / (1 - math.exp(-1 / 0.12))
    kick = np.where(y > 0.8, 0.25 * (1 - np.cos(np.pi * (y - 0.8) / 0.2)) / 2, 0.0)
    out[~sys] = rapid + kick
    return out


@dataclass(frozen=True)
class Loop:
    """A sampled synthetic loop and its truth."""

    volumes: np.ndarray  # (T,) mL: ESV + stroke * relative volume (+ noise)
    clean: np.ndarray  # (T,) mL without noise
    frame_time_ms: float
    heart_rate_bpm: float
    beats: tuple[Beat, ...]  # beats whose ED and next ED instants both lie inside the clip
    ed_times: np.ndarray  # (K,) every ED instant near the clip, in frames


def make_loop(
    hr_bpm: float,
    fps: float,
    n_beats: int,
    offset: float,
    tail: float,
    shape=physiological,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> Loop:
    """A loop of ``n_beats`` complete beats.

    The first ED comes ``offset`` periods after the first frame, the last frame ``tail`` periods
    after the last ED. EDV 120 mL, ESV 50 mL; ``noise`` is the SD of additive Gaussian noise, as
    a share of the stroke.
    """
    dt, period = 1000.0 / fps, 60_000.0 / hr_bpm
    systole = float(np.clip(0.35 + 0.0015 * (hr_bpm - 60), 0.3, 0.55))
    n = int((offset + n_beats + tail) * period / dt) + 1
    t = np.arange(n) * dt
    clean = 50.0 + 70.0 * shape(t / period - offset, systole)
    volumes = clean + (rng.normal(0, noise * 70.0, n) if noise else 0.0)
    ks = np.arange(-1, n_beats + 3)
    ed_times = (offset + ks) * period / dt
    es_times = ed_times + (0.5 if shape is cosine else systole) * period / dt

    def frame(x: float, sign: float) -> int | None:
        if not 0 <= x <= n - 1:
            return None
        lo, hi = math.floor(x), math.ceil(x)  # a tie (to 1e-9 mL) goes to the earlier frame
        return hi if sign * (clean[hi] - clean[lo]) > 1e-9 else lo

    beats = []
    for ed_t, es_t, next_t in zip(ed_times, es_times, ed_times[1:], strict=False):
        ed, es, next_ed = frame(ed_t, 1), frame(es_t, -1), frame(next_t, 1)
        if ed is not None and next_ed is not None:
            beats.append(Beat(ed, es, next_ed))
    return Loop(volumes, clean, dt, hr_bpm, tuple(beats), ed_times)


# --- full loops: known answers ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [cosine, physiological])
@pytest.mark.parametrize("hr_bpm", [40.0, 75.0, 120.0, 180.0])
@pytest.mark.parametrize("fps", [30.0, 60.0])
@pytest.mark.parametrize("n_beats", [1, 2, 4])
@pytest.mark.parametrize("offset", [0.31, 0.72])
def test_clean_loops_give_every_beat_exactly(shape, hr_bpm, fps, n_beats, offset) -> None:
    # the clip starts mid-cycle (offset) and ends 0.25 period after the last ED, mid-systole: the
    # last ED is no beat, and the minimum before the first ED belongs to no beat either
    loop = make_loop(hr_bpm, fps, n_beats, offset, tail=0.25, shape=shape)
    cycle = detect_cycle(loop.volumes, loop.frame_time_ms)
    assert cycle.reason is None
    assert cycle.beats == loop.beats
    assert len(cycle.beats) == n_beats
    assert cycle.heart_rate_bpm == pytest.approx(hr_bpm, abs=3.0)
    assert all(type(x) is int for b in cycle.beats for x in (b.ed, b.es, b.next_ed))


def test_refinement_takes_the_raw_ed_that_smoothing_moved() -> None:
    # a steep rise to ED then a slow fall: the 3-point smoothing (no frame time: ED-to-ED >= 3
    # frames) puts the peaks at 4 and 14, one frame late; the raw maxima within +-1 are 3 and 13
    v = np.array([50, 60, 80, 100, 99, 97, 94, 90, 70, 55, 50, 60, 80, 100, 99, 97, 94, 90], float)
    cycle = detect_cycle(v)
    assert [int(np.argmax(cycle.smoothed[:8])), int(np.argmax(cycle.smoothed[10:])) + 10] == [4, 14]
    assert cycle.beats == (Beat(3, 10, 13),)


def test_es_is_the_raw_minimum_not_the_smoothed_one() -> None:
    # asymmetric physiological beats at 60 fps: the smoothed troughs lie 2 frames after the raw ES
    loop = make_loop(60.0, 60.0, 2, offset=0.4, tail=0.25)
    cycle = detect_cycle(loop.volumes, loop.frame_time_ms)
    smoothed_es = [int(np.argmin(cycle.smoothed[b.ed : b.next_ed])) + b.ed for b in loop.beats]
    assert smoothed_es == [b.es + 2 for b in loop.beats]
    assert cycle.beats == loop.beats


def test_hand_computed_loop_without_frame_time() -> None:
    # 14 frames, no frame time: ED-to-ED >= 14/6 frames, so a 3-frame window (moving average).
    # Smoothed peaks at 2 and 10 (90, 93.3); raw maxima within +-1: 100 at 2, 101 at 10; raw
    # minimum between them: 50 at 6. After ED 10 the clip ends falling (52 at the last frame):
    # no complete systole, so ED 10 ends the first beat and starts none.
    v = np.array([60, 80, 100, 90, 70, 55, 50, 58, 75, 99, 101, 80, 60, 52], float)
    cycle = detect_cycle(v)
    assert cycle.smoothed[[2, 10]] == pytest.approx([90.0, 280 / 3])
    assert cycle.beats == (Beat(2, 6, 10),)
    assert cycle.heart_rate_bpm is None
    assert beat_of_frames(cycle, 14).tolist() == [-1, -1] + [0] * 8 + [-1] * 4


def test_first_minimum_without_ed_is_no_beat_and_es_follows_ed() -> None:
    # starts mid-systole: the global minimum (frame 2) precedes the first ED and is no ES
    v = np.array([80, 55, 40, 60, 90, 100, 85, 60, 45, 50, 70, 95, 100, 96, 75, 60], float)
    cycle = detect_cycle(v, 40.0)
    assert cycle.beats[0] == Beat(5, 8, 12)
    assert all(b.ed < b.es < (b.next_ed or len(v)) for b in cycle.beats)
    assert beat_of_frames(cycle, len(v))[:5].tolist() == [-1] * 5


def test_pointed_ed_near_the_start_is_compared_at_its_raw_level() -> None:
    # 30 fps: a 3-frame window. A pointed ED (100) at frame 2, a straight fall to ES (50) at 11, a
    # straight rise to 100 on the last frame. Smoothed, the ED peak is (90 + 100 + 94.44) / 3 =
    # 94.81 and too little prominent on its left (84.17) to be closed, while the last frame's end
    # fit keeps 100: against the smoothed maximum minus 0.1 of the smoothed range (95.39) the ED
    # was dropped and the loop had no beat (a synthetic 96-px loop, seed 2, did this). At its raw
    # level, 100 >= 100 - 0.1 * 50, it is an ED; the last frame is no ED (no peak in its 3 frames).
    v = np.array([85, 90, *(100 - 50 * np.arange(10) / 9), *(50 + 50 * np.arange(1, 9) / 8)])
    cycle = detect_cycle(v, 1000.0 / 30.0)
    assert cycle.smoothed[[2, 19]] == pytest.approx([(90 + 100 + 100 - 50 / 9) / 3, 100.0])
    assert cycle.beats == (Beat(2, 11, None),)


def test_last_beat_counts_only_after_a_complete_systole() -> None:
    base = [100, 99, 85, 65, 52, 50, 60, 75, 88, 98, 100, 98, 84, 64, 51]
    ends_at_es = detect_cycle(np.array(base, float), 40.0)  # clip ends at the minimum
    assert ends_at_es.beats == (Beat(0, 5, 10),)
    rises = detect_cycle(np.array([*base, 50, 58, 70], float), 40.0)  # volume rises again
    assert rises.beats == (Beat(0, 5, 10), Beat(10, 15, None))
    assert beat_of_frames(rises, 18).tolist() == [0] * 10 + [1] * 8


def test_noise_bump_is_not_a_beat() -> None:
    loop = make_loop(60.0, 50.0, 2, offset=0.3, tail=0.25, shape=cosine)
    bumped = loop.volumes.copy()
    i = loop.beats[0].es + 4  # a 10 %-of-stroke bump on the filling limb
    bumped[i : i + 2] += 7.0
    assert detect_cycle(bumped, loop.frame_time_ms).beats == loop.beats


@pytest.mark.parametrize("how", ["nan", "rejected"])
def test_unmeasurable_or_rejected_ed_and_es_give_the_next_best_frame(how: str) -> None:
    loop = make_loop(75.0, 50.0, 2, offset=0.3, tail=0.25, shape=cosine)
    b = loop.beats[1]
    volumes, valid = loop.volumes.copy(), np.ones(loop.volumes.size, bool)
    if how == "nan":
        volumes[[b.ed, b.es]] = np.nan
    else:
        valid[[b.ed, b.es]] = False
    cycle = detect_cycle(volumes, loop.frame_time_ms, valid=valid)
    got = cycle.beats[1]
    best_ed = max((b.ed - 1, b.ed + 1), key=lambda f: loop.clean[f])
    best_es = min((b.es - 1, b.es + 1), key=lambda f: loop.clean[f])
    assert (got.ed, got.es) == (best_ed, best_es)
    assert cycle.beats[0].next_ed == best_ed
    assert np.isnan(cycle.smoothed[[b.ed, b.es]]).all()
    assert np.isfinite(np.delete(cycle.smoothed, [b.ed, b.es])).all()


def test_noisy_loops_keep_beats_and_ef() -> None:
    """Noise of 3 % of the stroke (SD): every beat found, ED and ES near, EF within 2 points."""
    rng = np.random.default_rng(7)
    for hr_bpm, fps in [(50.0, 30.0), (70.0, 60.0), (110.0, 45.0), (170.0, 50.0)]:
        loop = make_loop(hr_bpm, fps, 3, offset=0.3, tail=0.25, noise=0.03, rng=rng)
        cycle = detect_cycle(loop.volumes, loop.frame_time_ms)
        assert len(cycle.beats) == len(loop.beats)
        for got, true in zip(cycle.beats, loop.beats, strict=True):
            assert abs(got.ed - true.ed) <= 3 and abs(got.es - true.es) <= 3
            ef = 100 * (loop.clean[got.ed] - loop.clean[got.es]) / loop.clean[got.ed]
            assert ef == pytest.approx(100 * 70 / 120, abs=3.0)


def _batch(n: int, noise_max: float, seed: int) -> dict[str, float]:
    """Detection figures on ``n`` random loops (40-180 bpm, 30-60 fps, 1-4 beats, any phase)."""
    rng = np.random.default_rng(seed)
    truth = found = ed_exact = es_exact = ed_1 = es_1 = spurious = hr_bad = ef_bad = n_det = 0
    hr_max = 0.0
    for i in range(n):
        hr, fps = rng.uniform(40, 180), rng.uniform(30, 60)
        loop = make_loop(
            hr, fps, int(rng.integers(1, 5)), rng.uniform(0, 1), rng.uniform(0, 0.9),
            shape=(physiological, cosine)[i % 2], noise=rng.uniform(0, noise_max), rng=rng,
        )  # fmt: skip
        cycle = detect_cycle(loop.volumes, loop.frame_time_ms)
        quarter = 0.25 * fps * 60 / hr  # a quarter period, frames
        for true in loop.beats:
            truth += 1
            near = [b for b in cycle.beats if abs(b.ed - true.ed) <= quarter]
            if near:
                got = near[0]
                found += 1
                ed_exact += got.ed == true.ed
                es_exact += got.es == true.es
                ed_1 += abs(got.ed - true.ed) <= 1
                es_1 += abs(got.es - true.es) <= 1
        for b in cycle.beats:
            n_det += 1
            spurious += not np.any(np.abs(loop.ed_times - b.ed) <= quarter)
            ef = 100 * (loop.clean[b.ed] - loop.clean[b.es]) / loop.clean[b.ed]
            ef_bad += abs(ef - 100 * 70 / 120) > 2
        if cycle.heart_rate_bpm is not None:
            hr_bad += abs(cycle.heart_rate_bpm - hr) > 3
            hr_max = max(hr_max, abs(cycle.heart_rate_bpm - hr))
    return {
        "found": found / truth, "ed_exact": ed_exact / found, "es_exact": es_exact / found,
        "ed_1": ed_1 / found, "es_1": es_1 / found, "spurious": spurious, "hr_bad": hr_bad / n,
        "hr_max": hr_max, "ef_bad": ef_bad / n_det, "truth": truth,
    }  # fmt: skip


def test_randomized_batch_clean() -> None:
    """1,000 random clean loops, 2,427 beats inside the clips (measured: all found, ED and ES on
    the exact frame for all; no spurious beat; EF per beat within 2 points for all; heart rate
    within 3 bpm for 999 loops, 3.2 bpm off for one: a single interval whose second ED is the
    clip's last frame at 12 frames per beat, where the extrapolated sub-frame time errs most)."""
    r = _batch(1000, 0.0, seed=0)
    assert r["found"] == r["ed_exact"] == r["es_exact"] == 1.0
    assert r["spurious"] == 0
    assert r["ef_bad"] == 0
    assert r["hr_bad"] <= 0.002 and r["hr_max"] < 4.0


def test_randomized_batch_noisy() -> None:
    """1,000 random loops with noise SD 0-3 % of the stroke, 2,404 beats (measured: 99.8 % of beats
    found, no spurious beat; ED exact 71 %, within 1 frame 97 %; ES exact 61 %, within 1 frame
    94 %: on a flat peak the noise picks the frame; EF per beat within 2 points for 98 %; heart
    rate off by more than 3 bpm for 3.7 % of loops, at most 7.9 bpm)."""
    r = _batch(1000, 0.03, seed=1)
    assert r["found"] >= 0.99
    assert r["spurious"] == 0
    assert r["ed_1"] >= 0.95 and r["es_1"] >= 0.92
    assert r["ef_bad"] <= 0.03
    assert r["hr_bad"] <= 0.05


# --- half sequences --------------------------------------------------------------------------


def half_sequence(n_late: int, reverse: bool, n: int = 16) -> np.ndarray:
    """CAMUS-like half sequence: ``n_late`` smaller late-diastolic frames, ED, cosine fall to ES."""
    a = (1 - np.cos(np.pi * np.arange(n) / (n - 1))) / 2
    v = [100.0 - 8.0 * (n_late - i) for i in range(n_late)] + list(120.0 - 70.0 * a)
    return np.array(v[::-1] if reverse else v)


@pytest.mark.parametrize("n_late", [0, 1, 2])
@pytest.mark.parametrize("reverse", [False, True])
def test_half_sequence_both_directions(n_late: int, reverse: bool) -> None:
    v = half_sequence(n_late, reverse)
    last = v.size - 1
    ed, es = (last - n_late, 0) if reverse else (n_late, last)
    cycle = detect_cycle(v, 40.0, half_sequence=True)
    assert cycle.beats == (Beat(ed, es, None),)
    assert cycle.heart_rate_bpm is None
    beat = beat_of_frames(cycle, v.size)
    assert (beat == 0).sum() == v.size - n_late and (beat == -1).sum() == n_late


def test_half_sequence_plateau_goes_to_the_clip_ends() -> None:
    # 1-pixel wobble on the plateaus (as in camus224-loops validation 0200 4CH: 4057, 4056, 4056)
    v = np.array([3931, 4056, 4056, 4057, 3954, 3500, 3000, 2700, 2621, 2620, 2620], float)
    assert detect_cycle(v, half_sequence=True).beats == (Beat(1, 10, None),)
    v[1] = np.nan  # a frame that cannot be ED: the plateau ends before it
    assert detect_cycle(v, half_sequence=True).beats == (Beat(2, 10, None),)


def test_half_sequence_rejected_extremes_are_skipped() -> None:
    v = half_sequence(1, reverse=False)
    valid = np.ones(v.size, bool)
    valid[[1, v.size - 1]] = False
    beat = detect_cycle(v, half_sequence=True, valid=valid).beats[0]
    assert (beat.ed, beat.es) == (2, v.size - 2)


@pytest.mark.parametrize("reverse", [False, True])
def test_half_sequence_es_is_the_end_not_a_mid_clip_undershoot(reverse: bool) -> None:
    # a blended mid-systolic frame segmented too small must not become ES: a CAMUS half sequence
    # ends at ES (the cfg of all 400 training patients of camus224)
    v = half_sequence(1, reverse=False)
    v[9] = v.min() - 10.0
    v = v[::-1] if reverse else v
    last = v.size - 1
    expected = Beat(last - 1, 0, None) if reverse else Beat(1, last, None)
    assert detect_cycle(v, half_sequence=True).beats == (expected,)


def test_half_sequence_direction_survives_one_wrong_end_frame() -> None:
    # the ES frame segmented larger than ED (a leak into the atrium): the trend of the other
    # frames still says ED->ES, so ED stays at the start and ES at the end
    v = half_sequence(0, reverse=False)
    v[-1] = v.max() + 5.0
    assert detect_cycle(v, half_sequence=True).beats == (Beat(0, v.size - 1, None),)


def test_half_sequence_two_frames() -> None:
    assert detect_cycle(np.array([50.0, 90.0]), half_sequence=True).beats == (Beat(1, 0, None),)
    assert detect_cycle(np.array([90.0, 50.0]), half_sequence=True).beats == (Beat(0, 1, None),)


@pytest.mark.shared
@pytest.mark.skipif(not LOOPS_TRUTH.is_file(), reason="../shared/camus224-loops absent")
def test_half_sequences_of_camus224_loops_validation_with_noise() -> None:
    """Expert LV areas plus Gaussian noise of 5 % of the loop's range (20 draws): ED and ES
    right for at least 95 % (measured 96.0 %; with ES at the curve's minimum: 92.1 %)."""
    rng = np.random.default_rng(0)
    with LOOPS_TRUTH.open() as f:
        rows = list(csv.DictReader(f))
    right = total = 0
    for _ in range(20):
        for row in rows:
            for view in ("2ch", "4ch"):
                lv = np.array(row[f"lv_px_{view}"].split(), float)
                ed, es = int(row[f"ed_frame_{view}"]), int(row[f"es_frame_{view}"])
                noisy = lv + rng.normal(0.0, 0.05 * (lv.max() - lv.min()), lv.size)
                (beat,) = detect_cycle(noisy, half_sequence=True).beats
                for got, true in ((beat.ed, ed), (beat.es, es)):
                    total += 1
                    right += abs(got - true) <= 1 or lv[got] == lv[true]
    assert right >= 0.95 * total, right / total


@pytest.mark.shared
@pytest.mark.skipif(not LOOPS_TRUTH.is_file(), reason="../shared/camus224-loops absent")
def test_half_sequences_of_camus224_loops_validation() -> None:
    """Expert LV pixels per frame as the volume: ED and ES right for all 50 validation loops
    (within 1 frame or the same expert LV area; measured: all 50 on the exact frames)."""
    right = 0
    with LOOPS_TRUTH.open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for view in ("2ch", "4ch"):
            lv = np.array(row[f"lv_px_{view}"].split(), float)
            ed, es = int(row[f"ed_frame_{view}"]), int(row[f"es_frame_{view}"])
            (beat,) = detect_cycle(lv, half_sequence=True).beats
            right += all(
                abs(got - true) <= 1 or lv[got] == lv[true]
                for got, true in ((beat.ed, ed), (beat.es, es))
            )
    assert right == 2 * len(rows) == 50


# --- no beat, bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("volumes", "half", "reason"),
    [
        (np.full(30, 80.0), False, NoBeatReason.FLAT),
        (np.full(12, 80.0), True, NoBeatReason.FLAT),
        (np.array([80.0, np.nan, 80.0, 80.0, 80.0]), False, NoBeatReason.FLAT),
        (np.array([100.0, 60.0, 90.0]), False, NoBeatReason.TOO_SHORT),
        (np.array([100.0]), True, NoBeatReason.TOO_SHORT),
        (np.full(20, np.nan), False, NoBeatReason.TOO_SHORT),
        (np.array([60, 90, 100, 90, 70, 55, 50.0]), False, NoBeatReason.NO_COMPLETE_SYSTOLE),
        (np.linspace(50.0, 120.0, 20), False, NoBeatReason.NO_ED),
        (np.linspace(120.0, 50.0, 20), False, NoBeatReason.NO_ED),  # no top at the edge
    ],
)
def test_no_beat_has_a_reason(volumes: np.ndarray, half: bool, reason: NoBeatReason) -> None:
    cycle = detect_cycle(volumes, 20.0, half_sequence=half)
    assert isinstance(cycle, Cycle)
    assert (cycle.beats, cycle.heart_rate_bpm, cycle.reason) == ((), None, reason)
    assert cycle.smoothed.shape == volumes.shape
    assert (beat_of_frames(cycle, volumes.size) == -1).all()


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError):
        detect_cycle(np.ones((3, 4)))
    with pytest.raises(ValueError):
        detect_cycle(np.ones(10), valid=np.ones(9, bool))
    with pytest.raises(ValueError):
        detect_cycle(np.ones(10), 0.0)
