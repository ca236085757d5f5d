"""Cardiac cycle from a per-frame LV volume curve: beats, ED and ES frames, heart rate.

Pure numpy/scipy on a ``(T,)`` curve; nothing here reads files or knows about images.

* **Half sequences** (CAMUS ``*_half_sequence``): one ED->ES stretch, stored ED->ES or ES->ED,
  possibly with 0-2 late-diastolic frames (smaller LV) before ED. The direction is the sign of the
  curve's rank correlation with time; ES = the valid frame nearest the end the curve falls to (a
  CAMUS half sequence ends at ES by definition); ED = the largest valid volume in the other half
  of the clip, moved to the far end of its plateau (frames within ``HALF_PLATEAU`` of it); the
  clip gives one beat and no heart rate.
* **Full loops** (1-5 beats): a lightly smoothed curve, ED peaks found with
  :func:`scipy.signal.find_peaks` (minimum distance from the frame time, prominence relative to the
  curve's range), each ED refined to the raw maximum near the smoothed peak, ES = raw minimum
  between an ED and the next one.

ED is the largest and ES the smallest LV volume of a beat (ASE/EACVI 2015 chamber quantification
guideline, Lang et al., J Am Soc Echocardiogr 2015;28:1-39); EchoNet-Dynamic likewise takes ES at
the minima of the LV curve and averages EF over beats (Ouyang et al., Nature 2020).

Frames whose volume is NaN or whose ``valid`` entry is False are never ED or ES; for the smoothing
only, the curve is interpolated linearly across them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy.signal import find_peaks, savgol_filter
from scipy.stats import rankdata

MS_PER_MINUTE = 60_000.0
MAX_HEART_RATE_BPM = 220.0  # DESIGN.md 9.2: heart rates 30-220 bpm; sets the ED-to-ED distance
# Without a frame time, a clip is assumed to hold at most 5 beats (DESIGN.md 9.2: full loops of
# 1-5 beats): 5 complete beats and partial ones at both ends fit when ED-to-ED > T / 6 frames.
MAX_BEATS_PER_CLIP = 5
# Savitzky-Golay window: a third of the shortest allowed beat (>= 3 frames) averages frame-to-frame
# segmentation jitter while staying narrower than an ED peak or an ES trough.
SMOOTH_BEAT_FRACTION = 1.0 / 3.0
# An ED peak must stand out by this share of the smoothed curve's range: a beat's stroke is most of
# the range, while segmentation jitter and diastasis bumps are a few percent of it.
MIN_PROMINENCE = 0.3
# An open peak (on or near the first or last frame, with no fall beyond it inside the clip) counts
# as ED only within this share of the range from the closed ED peaks (or the curve's maximum): a
# clip that starts or ends mid-systole, or in the diastasis plateau, stays far lower.
EDGE_ED_TOLERANCE = 0.1
# A last beat without a next ED counts only when the volume rises again after ES by this share of
# its ED-to-ES drop (on the smoothed curve): a complete systole, not a clip ending mid-ejection.
MIN_RISE_AFTER_ES = 0.25
# Half sequences: the frames within this share of the range from the largest volume, contiguous
# with it, form the ED plateau, and its frame farthest from ES is taken. Near ED the LV changes by
# less than a pixel between frames (camus224-loops README); a CAMUS half sequence runs from the
# annotated ED to the annotated ES, so the annotated ED is the plateau end towards the clip's start
# (the frames after it towards ES are isovolumic contraction). 0.05 chosen on the validation loops
# (camus224-loops/validation): with the model's curves it detects as well as 0.02, and with expert
# curves plus noise of 2 % of the range it keeps more frames right than 0.02.
HALF_PLATEAU = 0.05
MIN_FRAMES_HALF = 2  # an ED and an ES
MIN_FRAMES_FULL = 4  # an ED, a fall, ES and a rise


class NoBeatReason(StrEnum):
    """Why :func:`detect_cycle` found no beat (``Cycle.reason``)."""

    TOO_SHORT = "too_short"  # fewer valid frames than a beat needs
    FLAT = "flat"  # the valid volumes do not vary
    NO_ED = "no_ed"  # no ED peak stands out of the curve
    NO_COMPLETE_SYSTOLE = "no_complete_systole"  # EDs found, but no ES followed by a rise


@dataclass(frozen=True)
class Beat:
    """One cardiac beat of a clip (0-based frame indices).

    Attributes:
        ed: end-diastole, the largest LV volume of the beat.
        es: end-systole, the smallest LV volume after ``ed`` (before it in a half sequence
            stored ES->ED).
        next_ed: the following beat's ED; None for the last beat of a loop and for a half
            sequence.
    """

    ed: int
    es: int
    next_ed: int | None


@dataclass(frozen=True)
class Cycle:
    """The beats of one clip and how they were found.

    Attributes:
        beats: the beats in time order; empty when none could be found.
        smoothed: ``(T,)`` the curve used for detection, in the unit of the input volumes (the raw
            volumes for a half sequence); NaN at rejected frames.
        heart_rate_bpm: ``60000 / mean ED-to-ED interval`` (sub-frame ED times), when a frame time
            was given and the loop has at least two EDs; else None.
        reason: why no beat was found; None when beats were found.
    """

    beats: tuple[Beat, ...]
    smoothed: np.ndarray
    heart_rate_bpm: float | None
    reason: NoBeatReason | None


def detect_cycle(
    volumes: np.ndarray,
    frame_time_ms: float | None = None,
    *,
    half_sequence: bool = False,
    valid: np.ndarray | None = None,
) -> Cycle:
    """Find the beats, ED and ES frames of a clip from its LV volume curve.

    Args:
        volumes: ``(T,)`` single-plane LV volume per frame, any unit (mL, or pixel units without a
            spacing); NaN where the LV could not be measured.
        frame_time_ms: time between frames, ms; None when unknown. Without it the ED-to-ED
            distance comes from the clip length (at most 5 beats per clip) and there is no heart
            rate.
        half_sequence: the clip is one ED->ES stretch (either direction), not a full loop.
        valid: ``(T,)`` bool, False for frames rejected by QC; None means all frames are valid.

    Returns:
        The :class:`Cycle`.

    Raises:
        ValueError: ``volumes`` is not 1-D, ``valid`` has another shape, or ``frame_time_ms`` is
            not positive.
    """
    v = np.asarray(volumes, dtype=float)
    if v.ndim != 1:
        raise ValueError(f"volumes must be (T,), got shape {v.shape}")
    ok = np.isfinite(v)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != v.shape:
            raise ValueError(f"valid has shape {valid.shape}, volumes {v.shape}")
        ok &= valid
    if frame_time_ms is not None and not frame_time_ms > 0:
        raise ValueError(f"frame_time_ms must be positive, got {frame_time_ms}")
    raw = np.where(ok, v, np.nan)

    if ok.sum() < (MIN_FRAMES_HALF if half_sequence else MIN_FRAMES_FULL):
        return Cycle((), raw, None, NoBeatReason.TOO_SHORT)
    if np.nanmax(raw) - np.nanmin(raw) <= 1e-9 * max(abs(np.nanmax(raw)), 1e-12):
        return Cycle((), raw, None, NoBeatReason.FLAT)
    if half_sequence:
        return Cycle((_half_sequence_beat(raw),), raw, None, None)
    return _full_loop(raw, frame_time_ms)


def beat_of_frames(cycle: Cycle, n_frames: int) -> np.ndarray:
    """Beat index of every frame.

    A beat holds its frames from ED up to (not including) the next ED, or to the end of the clip
    when it has no next ED (so does a half sequence stored ED->ES); a half sequence stored ES->ED
    holds its frames from ES to ED. Frames before the first ED (or after the ED of a half sequence
    stored ES->ED: late diastole of the previous beat) belong to no beat.

    Args:
        cycle: the result of :func:`detect_cycle` for the clip.
        n_frames: ``T``, the clip's number of frames.

    Returns:
        ``(T,)`` int, the beat index (0-based, time order) or -1 for frames outside any beat.
    """
    out = np.full(n_frames, -1, dtype=int)
    for i, beat in enumerate(cycle.beats):
        if beat.es < beat.ed:  # half sequence stored ES->ED
            out[beat.es : beat.ed + 1] = i
        elif beat.next_ed is None:
            out[beat.ed :] = i
        else:
            out[beat.ed : beat.next_ed] = i
    return out


def _half_sequence_beat(raw: np.ndarray) -> Beat:
    """ED and ES of a half sequence; ``raw`` ``(T,)`` NaN where invalid (at least 2 valid frames).

    A CAMUS half sequence runs from ED to ES (Leclerc et al., IEEE TMI 2019; the cfg of every one of
    the 400 training patients of camus224 puts ES on the last frame, or the first for the one
    stored ES->ED), so ES is taken at the end the curve falls to, not at the curve's minimum: on
    the frames between, a segmentation that undershoots would otherwise become ES. The direction is
    the sign of the rank (Spearman) correlation of the valid volumes with time, which one
    mis-segmented end frame cannot flip. ED is the largest valid volume in the half of the clip
    away from ES (0-2 late-diastolic frames with a smaller LV may precede it), moved to the far end
    of its plateau (:func:`_plateau_end`).
    """
    frames = np.flatnonzero(np.isfinite(raw))
    forward = _falls(raw[frames], frames)
    es = int(frames[-1] if forward else frames[0])
    middle = (frames[0] + frames[-1]) / 2
    side = frames[frames <= middle] if forward else frames[frames >= middle]
    ed = int(side[np.argmax(raw[side])])
    tol = HALF_PLATEAU * float(np.nanmax(raw) - np.nanmin(raw))
    return Beat(ed=_plateau_end(raw, ed, -1 if forward else 1, tol), es=es, next_ed=None)


def _falls(values: np.ndarray, frames: np.ndarray) -> bool:
    """Whether ``values`` ``(N,)`` at ``frames`` ``(N,)`` fall with time (a half sequence ED->ES).

    The sign of the Spearman correlation; on a tie (zero), the largest value before the smallest.
    """
    rho = np.corrcoef(rankdata(values), frames)[0, 1]
    if np.isfinite(rho) and rho != 0:
        return bool(rho < 0)
    return bool(np.argmax(values) < np.argmin(values))


def _plateau_end(y: np.ndarray, top: int, step: int, tol: float) -> int:
    """Last frame, walking from ``top`` by ``step``, of the valid run within ``tol`` of its top."""
    i = top
    while 0 <= i + step < y.size and y[i + step] >= y[top] - tol:  # NaN compares False: stops
        i += step
    return i


def _full_loop(raw: np.ndarray, frame_time_ms: float | None) -> Cycle:
    """Beats of a full loop; ``raw`` ``(T,)`` is NaN at invalid frames (at least 4 valid)."""
    n = raw.size
    ok = np.isfinite(raw)
    idx = np.arange(n)
    filled = np.interp(idx, idx[ok], raw[ok])  # smoothing only: never an ED/ES candidate

    if frame_time_ms is not None:
        min_distance = MS_PER_MINUTE / MAX_HEART_RATE_BPM / frame_time_ms
    else:
        min_distance = n / (MAX_BEATS_PER_CLIP + 1)
    window = max(3, int(min_distance * SMOOTH_BEAT_FRACTION) | 1)  # odd
    window = min(window, n if n % 2 else n - 1)
    smooth = savgol_filter(filled, window, polyorder=min(2, window - 2), mode="interp")
    radius = max(1, window // 2)  # how far the smoothing can move an extreme
    smoothed_out = np.where(ok, smooth, np.nan)

    peaks = _ed_peaks(raw, smooth, min_distance, radius)
    eds = sorted({e for p in peaks if (e := _extreme_near(raw, p, radius, np.nanargmax)) >= 0})
    if not eds:
        return Cycle((), smoothed_out, None, NoBeatReason.NO_ED)

    beats = []
    for ed, next_ed in zip(eds, [*eds[1:], None], strict=True):
        stop = n if next_ed is None else next_ed
        es = _extreme_in(raw, ed + 1, stop, np.nanargmin)
        if es < 0:
            continue
        if next_ed is None and not _complete_systole(smooth, ed, es):
            continue
        beats.append(
            Beat(ed=int(ed), es=int(es), next_ed=None if next_ed is None else int(next_ed))
        )
    if not beats:
        return Cycle((), smoothed_out, None, NoBeatReason.NO_COMPLETE_SYSTOLE)
    return Cycle(tuple(beats), smoothed_out, _heart_rate(raw, eds, frame_time_ms), None)


def _ed_peaks(raw: np.ndarray, smooth: np.ndarray, min_distance: float, radius: int) -> list[int]:
    """ED candidates: peaks of the smoothed curve (frame indices, before refinement).

    A closed peak (the curve falls by the prominence on both sides within the clip) is an ED. An
    open peak (on an edge frame, or near an edge with no fall beyond it; found by padding the
    curve with its minimum) is an ED only when it reaches the level of the closed peaks (or the
    maximum) within ``EDGE_ED_TOLERANCE`` of the range, and on the edge frame itself only when
    :func:`_edge_is_ed` holds: a diastasis plateau or a mid-systolic start is not an ED.

    The levels are compared on the raw curve, at the raw maximum within ``radius`` of each peak
    (where the ED is refined to): the smoothing lowers an interior peak, while on the last frames
    its end fit follows the raw curve, so a pointed ED near the clip's start could fall below a
    level set by an edge frame on the smoothed curve alone.
    """
    span = float(smooth.max() - smooth.min())
    kw = {"distance": max(1.0, min_distance), "prominence": MIN_PROMINENCE * span}
    closed = set(find_peaks(smooth, **kw)[0].tolist())
    padded = np.concatenate(([smooth.min()], smooth, [smooth.min()]))
    candidates = (find_peaks(padded, **kw)[0] - 1).tolist()

    def top(p: int) -> float:  # raw ED level near a peak (-inf: no valid frame near it)
        ed = _extreme_near(raw, p, radius, np.nanargmax)
        return float(raw[ed]) if ed >= 0 else -np.inf

    level = np.median([top(p) for p in sorted(closed)]) if closed else np.nanmax(raw)
    floor = level - EDGE_ED_TOLERANCE * float(np.nanmax(raw) - np.nanmin(raw))
    last = smooth.size - 1
    return [
        p
        for p in candidates
        if p in closed or (top(p) >= floor and (0 < p < last or _edge_is_ed(raw, p)))
    ]


def _extreme_in(raw: np.ndarray, start: int, stop: int, arg) -> int:
    """Index of the extreme (``arg``: ``np.nanargmax``/``nanargmin``) of ``raw[start:stop]``.

    Returns -1 when no frame of the range is valid.

    Ties go to the earliest frame: the first of a plateau in time (isovolumic contraction follows
    ED, isovolumic relaxation follows ES).
    """
    start, stop = max(start, 0), min(stop, raw.size)
    if start >= stop or not np.isfinite(raw[start:stop]).any():
        return -1
    return start + int(arg(raw[start:stop]))


def _extreme_near(raw: np.ndarray, centre: int, radius: int, arg) -> int:
    """The extreme of the valid raw frames within ``radius`` of ``centre``; -1 if none is valid."""
    return _extreme_in(raw, centre - radius, centre + radius + 1, arg)


def _edge_is_ed(raw: np.ndarray, edge: int) -> bool:
    """Whether a peak on the first or last frame is the beat's ED, not a frame just after it.

    The top of the parabola through the three raw edge frames must not lie more than half a frame
    outside the clip, else the true ED lies outside it. (The smoothed curve is not used here: near
    an edge its fit flattens the peak and moves the top by a frame or two.)
    """
    top = _vertex(raw, edge)
    if top is None:
        return False
    return top >= -0.5 if edge == 0 else top <= edge + 0.5


def _complete_systole(smooth: np.ndarray, ed: int, es: int) -> bool:
    """Whether a last beat (no next ED) holds a complete systole, judged on the smoothed curve.

    The fall after ED must be as large as an ED peak's prominence, and the curve must rise again
    after ES by ``MIN_RISE_AFTER_ES`` of that fall: a clip ending mid-ejection does not.
    """
    if es >= smooth.size - 1:
        return False
    bottom = smooth[ed:].min()
    fall = smooth[ed] - bottom
    span = smooth.max() - smooth.min()
    return fall >= MIN_PROMINENCE * span and smooth[es:].max() - bottom >= MIN_RISE_AFTER_ES * fall


def _heart_rate(raw: np.ndarray, eds: list[int], frame_time_ms: float | None) -> float | None:
    """``60000 / mean ED-to-ED interval`` over the clip's EDs ``eds`` (frames, ascending).

    Every ED counts, also one that starts no complete beat. Each ED time is refined to a sub-frame
    time (:func:`_ed_time`): integer frames alone would err by up to a frame per interval (18 bpm at
    180 bpm and 30 fps). EDs on the first or last frame are left out when two interior EDs remain:
    the true ED may lie just outside the clip. None without a frame time or two EDs.
    """
    if frame_time_ms is None or len(eds) < 2:
        return None
    interior = [e for e in eds if 0 < e < raw.size - 1]
    if len(interior) >= 2:
        eds = interior
    times = [_ed_time(raw, e) for e in eds]
    interval_ms = (times[-1] - times[0]) / (len(times) - 1) * frame_time_ms
    return MS_PER_MINUTE / interval_ms if interval_ms > 0 else None


def _ed_time(raw: np.ndarray, i: int) -> float:
    """Sub-frame time of the ED at frame ``i``: :func:`_vertex`, kept within half a frame of it."""
    t = _vertex(raw, i)
    return float(i) if t is None else float(np.clip(t, i - 0.5, i + 0.5))


def _vertex(y: np.ndarray, i: int) -> float | None:
    """Position (frames) of the top of the parabola through frame ``i`` and its neighbours.

    At a clip edge the parabola goes through the first or last three frames, so the top may lie
    outside the clip. None when the three values do not form a peak (NaN, flat or convex).
    """
    j = min(max(i, 1), y.size - 2)
    a, b, c = y[j - 1], y[j], y[j + 1]
    curvature = a - 2 * b + c
    if not (math.isfinite(curvature) and curvature < 0):
        return None
    return j + 0.5 * (a - c) / curvature
