"""Synthetic cine loops: per patient and view, which frames a loop holds and where ED and ES are.

A loop is a sequence of shape phases (:mod:`echo_batch.synth.waveform`) on the frame grid; the
renderer draws each frame from its phase. Nothing here renders or writes.

Kinds (:class:`echo_batch.domain.LoopKind`):

- ``full``: 1-4 complete beats at 40-180 bpm and 25-60 fps. The clip starts after an ED (at
  least two frames before its first beat's ED, possibly mid-systole, so that its first minimum
  has no ED before it) and ends at least two frames after the last beat's ES, at most one frame
  before the following ES (a following ED may be in the clip, its beat incomplete). A beat is an
  ED, its ES and the rise after it; the RR interval is constant within a loop (whole frames, so
  every ED and ES falls on a frame and the heart rate is exactly ``60 * fps / rr``).
- ``half``: one ED -> ES stretch like a CAMUS half sequence, with 0-2 late-diastolic frames
  (smaller LV, the atrial kick) before ED; about one in five is stored ES -> ED (the whole array
  reversed, so the late-diastolic frames come last).

Per patient: about one in five has loops only ("still-less": no ED/ES stills, no ED/ES in the
cfg); about three in ten has half sequences instead of full loops (all of them for the 2019
layout, whose ``_sequence.mhd`` files are half sequences in CAMUS). Per view: frame rate, beats,
start and end, reversal. Everything derives from ``numpy.random.default_rng((seed, index,
LOOP_STREAM))``, a stream the stills never touch, so a patient's shapes, probe and truth are the
same with and without loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from echo_batch.domain import VIEWS, LoopKind, View
from echo_batch.synth.params import PatientParams
from echo_batch.synth.waveform import (
    ISOVOLUMIC_CONTRACTION_MS,
    CycleTiming,
    cycle_phase,
    cycle_timing,
    ejection_time_ms,
)

LOOP_STREAM = 101
"""Third key of the loops' random stream (the renderer uses 1 and 2)."""
STILL_LESS_SHARE = 0.2
HALF_SHARE = 0.3
REVERSED_SHARE = 0.2  # of half sequences
HEART_RATE_BPM = (40.0, 180.0)
FRAME_RATE_HZ = (25, 60)
MAX_BEATS = 4
MAX_LATE_DIASTOLIC = 2


@dataclass(frozen=True)
class ViewLoop:
    """The loop of one view.

    Attributes:
        view: 2CH or 4CH.
        kind: full loop or half sequence.
        frame_rate_hz: frames per second (a whole number).
        timing: the cardiac cycle on the frame grid.
        phases: ``(T,)`` shape phase of each stored frame (0 = ED shape, 1 = ES shape).
        beat: ``(T,)`` int, the 0-based beat of each frame (from its ED up to the next ED), -1
            outside complete beats (before the first ED, from an incomplete beat's ED on, the
            late-diastolic frames of a half sequence).
        ed_frames: 0-based ED frame of each beat, in beat order.
        es_frames: 0-based ES frame of each beat, in beat order.
        reversed: stored ES -> ED (half sequences only).
        late_diastolic: frames before ED in time (half sequences only).
    """

    view: View
    kind: LoopKind
    frame_rate_hz: float
    timing: CycleTiming
    phases: np.ndarray
    beat: np.ndarray
    ed_frames: tuple[int, ...]
    es_frames: tuple[int, ...]
    reversed: bool = False
    late_diastolic: int = 0

    @property
    def n_frames(self) -> int:
        """Frames in the loop."""
        return len(self.phases)

    @property
    def frame_time_ms(self) -> float:
        """Time between frames, ms."""
        return 1000.0 / self.frame_rate_hz

    @property
    def heart_rate_bpm(self) -> float | None:
        """``60 * fps / rr`` for full loops (constant RR); None for a half sequence."""
        if self.kind == LoopKind.HALF:
            return None
        return 60.0 * self.frame_rate_hz / self.timing.rr_frames


@dataclass(frozen=True)
class PatientLoops:
    """The loops of one patient.

    Attributes:
        has_stills: the patient also has ED/ES stills (the first beat's ED and ES frames) and
            ED/ES in its cfgs; False for a still-less patient.
        views: loops of 2CH and 4CH, in that order.
    """

    has_stills: bool
    views: tuple[ViewLoop, ViewLoop]

    def loop(self, view: View) -> ViewLoop:
        """Loop of ``view``."""
        return self.views[VIEWS.index(view)]


def _rr_frames(frame_rate_hz: int, heart_rate_bpm: float) -> int:
    """Whole frames per beat nearest the heart rate, kept inside :data:`HEART_RATE_BPM`."""
    lowest = -(-60 * frame_rate_hz // int(HEART_RATE_BPM[1]))  # ceil: at most 180 bpm
    highest = 60 * frame_rate_hz // int(HEART_RATE_BPM[0])  # floor: at least 40 bpm
    return min(max(round(60.0 * frame_rate_hz / heart_rate_bpm), lowest), highest)


def full_loop(
    view: View, frame_rate_hz: int, timing: CycleTiming, n_beats: int, start: float, end: float
) -> ViewLoop:
    """A loop of ``n_beats`` complete beats.

    Args:
        view: 2CH or 4CH.
        frame_rate_hz: frames per second.
        timing: the cycle (constant RR).
        n_beats: complete beats (>= 1).
        start: in [0, 1): where the first ED falls, from frame 2 (0) to frame ``rr - 1`` (-> 1).
        end: in [0, 1): where the clip ends, from two frames after the last ES (0) to one frame
            before the next ES (-> 1).

    Returns:
        ViewLoop of kind FULL.
    """
    rr, s = timing.rr_frames, timing.systole_frames
    first_ed = 2 + int(start * (rr - 2))
    last_es = first_ed + (n_beats - 1) * rr + s
    last_frame = last_es + 2 + int(end * (rr - 2))
    since_ed = np.arange(last_frame + 1) - first_ed
    beat = np.floor_divide(since_ed, rr)
    beat[(beat < 0) | (beat >= n_beats)] = -1
    eds = tuple(first_ed + k * rr for k in range(n_beats))
    return ViewLoop(
        view=view,
        kind=LoopKind.FULL,
        frame_rate_hz=float(frame_rate_hz),
        timing=timing,
        phases=cycle_phase(since_ed, timing),
        beat=beat,
        ed_frames=eds,
        es_frames=tuple(ed + s for ed in eds),
    )


def half_sequence(
    view: View, frame_rate_hz: int, timing: CycleTiming, late_diastolic: int, reverse: bool
) -> ViewLoop:
    """One ED -> ES stretch with ``late_diastolic`` frames before ED, stored forwards or reversed.

    Args:
        view: 2CH or 4CH.
        frame_rate_hz: frames per second.
        timing: the cycle (its systole and atrial kick are used).
        late_diastolic: frames before ED (0-2).
        reverse: store ES -> ED (the array reversed).

    Returns:
        ViewLoop of kind HALF with one beat.
    """
    s = timing.systole_frames
    since_ed = np.arange(-late_diastolic, s + 1)
    phases = cycle_phase(since_ed, timing)
    beat = np.where(since_ed >= 0, 0, -1)
    ed, es = late_diastolic, late_diastolic + s
    if reverse:
        phases, beat = phases[::-1].copy(), beat[::-1].copy()
        ed, es = len(phases) - 1 - ed, len(phases) - 1 - es
    return ViewLoop(
        view=view,
        kind=LoopKind.HALF,
        frame_rate_hz=float(frame_rate_hz),
        timing=timing,
        phases=phases,
        beat=beat,
        ed_frames=(ed,),
        es_frames=(es,),
        reversed=reverse,
        late_diastolic=late_diastolic,
    )


def sample_loops(params: PatientParams, *, half_only: bool = False) -> PatientLoops:
    """Draw the loops of a patient (pure, deterministic).

    Args:
        params: the patient (its seed, index and sex are used).
        half_only: every loop a half sequence (the 2019 layout); the other draws are unchanged.

    Returns:
        PatientLoops.
    """
    rng = np.random.default_rng((params.seed, params.index, LOOP_STREAM))
    has_stills = bool(rng.random() >= STILL_LESS_SHARE)
    half = bool(rng.random() < HALF_SHARE) or half_only
    heart_rate = float(rng.uniform(*HEART_RATE_BPM))
    p_atrial = float(rng.uniform(0.25, 0.35))
    drop = float(rng.uniform(0.02, 0.06))
    systole_ms = ejection_time_ms(heart_rate, params.sex) + ISOVOLUMIC_CONTRACTION_MS
    systole_ms *= float(rng.uniform(0.92, 1.08))
    loops = []
    for view in VIEWS:  # every draw is made whatever the kind, so the stream layout is fixed
        fps = int(rng.integers(FRAME_RATE_HZ[0], FRAME_RATE_HZ[1] + 1))
        n_beats = int(rng.integers(1, MAX_BEATS + 1))
        start, end = float(rng.random()), float(rng.random())
        late = int(rng.integers(0, MAX_LATE_DIASTOLIC + 1))
        reverse = bool(rng.random() < REVERSED_SHARE)
        timing = cycle_timing(_rr_frames(fps, heart_rate), fps, systole_ms, p_atrial, drop)
        if half:
            loops.append(half_sequence(view, fps, timing, late, reverse))
        else:
            loops.append(full_loop(view, fps, timing, n_beats, start, end))
    return PatientLoops(has_stills=has_stills, views=(loops[0], loops[1]))
