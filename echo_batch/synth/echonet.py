"""Synthetic cohorts in the EchoNet-Dynamic layout, with known EF, volumes and ED/ES frames.

Layout (what :mod:`echo_batch.io.echonet` reads)::

    OUT/FileList.csv          one row per video: FileName (without ``.avi`` like the public
                              release, or with it), EF, ESV, EDV, FrameHeight, FrameWidth, FPS,
                              NumberOfFrames, Split (TRAIN | VAL | TEST)
    OUT/Videos/<name>.avi     112 x 112, grey in 3 equal channels, FFV1 (lossless) or MJPG
    OUT/VolumeTracings.csv    two traced frames per video (one beat's ED and ES), the long axis
                              then 20 disc chords each, traced on the true LV
    OUT/truth.csv             one row per video (see :data:`TRUTH_COLUMNS`)
    OUT/truth_frames.csv      one row per frame (the columns of
                              :data:`echo_batch.synth.loop_truth.FRAME_COLUMNS`, view 4CH)

Video ``k`` (1-based) is patient ``k`` of :func:`echo_batch.synth.sampling.plan_cohort` on a
112-pixel square grid (``max_side=112``): its shapes, probe, splits and volume truth are those of
that patient; its 4-chamber view is rendered as a full loop
(:func:`echo_batch.synth.loops.full_loop`, frames drawn at the phases of
:mod:`echo_batch.synth.waveform`) of 1-4 beats at 40-180 bpm, 50 frames/s for four videos in five
and 25-60 frames/s for the others. Those draws, the file name and
the tracing choices come from ``numpy.random.default_rng((seed, k, ECHONET_STREAM))``, a stream
the CAMUS writers never touch.

The FileList's EF, EDV and ESV are the 4-chamber single-plane Simpson values of the truth
(``ef_4ch_pct``, ``edv_4ch_ml``, ``esv_4ch_ml``): EchoNet-Dynamic's references come from
4-chamber tracings too, and EF measured on one view converges to these, not to the 3-D EF
(``ef_pct``, also in ``truth.csv``). Every beat's ED and ES frames have exactly these volumes.

Tracings: on the traced beat's ED and ES frames, the long axis from the apex to the middle of the
mitral chord, then 20 chords perpendicular to it (in mm), equally spaced from the mitral chord to
the apex (the last one of zero length), their ends on the analytic LV boundary, in pixels
(``X`` column, ``Y`` row, a pixel's centre at integer coordinates). Measured on 300 videos (ED and
ES): the polygon's area is 0.45-0.50 % below the analytic LV section (the chords cut the curved
wall), and its mask (:func:`echo_batch.io.tracings.tracing_mask`) differs from the rendered expert
LV mask by at most 1.6 % of its pixels (95th percentile 0.8 %), Dice >= 0.99. Half the videos list
their ES frame first, so that a reader must tell ED from ES by area.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo_batch.domain import Split, View
from echo_batch.io.echonet import FILELIST, FILELIST_COLUMNS, TRACINGS, VIDEOS
from echo_batch.io.tracings import TRACING_COLUMNS
from echo_batch.io.video import VideoCodec, write_video
from echo_batch.io.writers import write_text
from echo_batch.synth.loop_truth import FRAME_COLUMNS
from echo_batch.synth.loops import (
    FRAME_RATE_HZ,
    HEART_RATE_BPM,
    MAX_BEATS,
    ViewLoop,
    _rr_frames,
    full_loop,
)
from echo_batch.synth.params import PatientParams, PatientTruth
from echo_batch.synth.render import render_phases
from echo_batch.synth.sampling import plan_cohort
from echo_batch.synth.shapes import _axes
from echo_batch.synth.waveform import ISOVOLUMIC_CONTRACTION_MS, cycle_timing, ejection_time_ms

__all__ = [
    "ECHONET_STREAM",
    "SIDE",
    "TRUTH_COLUMNS",
    "EchoNetVideo",
    "lv_tracing",
    "plan_echonet",
    "synth_echonet",
]

logger = logging.getLogger(__name__)

ECHONET_STREAM = 202
"""Third key of the EchoNet videos' random stream (the renderer uses 1 and 2, loops 101)."""
SIDE = 112
"""Frame height and width, pixels (EchoNet-Dynamic's)."""
COMMON_FPS = 50
COMMON_FPS_SHARE = 0.8
ES_FIRST_SHARE = 0.5
N_CHORDS = 20
VIEW = View.A4C
SPLIT_NAMES = {Split.TRAINING: "TRAIN", Split.VALIDATION: "VAL", Split.TESTING: "TEST"}

TRUTH_COLUMNS = (
    "patient_id",
    "split",
    "ef_pct",
    "edv_ml",
    "esv_ml",
    "ef_4ch_pct",
    "edv_4ch_ml",
    "esv_4ch_ml",
    "area_ed_4ch_mm2",
    "area_es_4ch_mm2",
    "area_ed_4ch_px",
    "area_es_4ch_px",
    "length_ed_4ch_mm",
    "length_es_4ch_mm",
    "spacing_row_4ch_mm",
    "spacing_col_4ch_mm",
    "height_4ch",
    "width_4ch",
    "n_frames_4ch",
    "frame_time_4ch_ms",
    "fps",
    "n_beats_4ch",
    "heart_rate_4ch_bpm",
    "ed_frames_4ch",
    "es_frames_4ch",
    "traced_ed_frame",
    "traced_es_frame",
    "tracings_es_first",
    "tilt_4ch_deg",
    "image_quality",
    "codec",
)
"""Columns of an EchoNet cohort's ``truth.csv``. ``patient_id`` is the video's file name without
``.avi``; ``*_4ch`` values are single-plane (Simpson limit) or 4-chamber section values, ``ef_pct``
``edv_ml`` ``esv_ml`` the true 3-D ones; ``area_*_px`` are the analytic section areas in pixels
of the (hidden) spacing; frames are 0-based, space-separated per beat."""


@dataclass(frozen=True)
class EchoNetVideo:
    """The plan of one synthetic EchoNet video (nothing rendered).

    Attributes:
        file_name: ``0X`` and 16 hex digits, like EchoNet-Dynamic's names (without ``.avi``).
        params: the patient shown.
        truth: its analytic truth.
        loop: the 4-chamber loop (a full loop).
        traced_beat: 0-based beat whose ED and ES frames are traced.
        es_first: ``VolumeTracings.csv`` lists the ES frame before the ED frame.
    """

    file_name: str
    params: PatientParams
    truth: PatientTruth
    loop: ViewLoop
    traced_beat: int
    es_first: bool

    @property
    def traced_frames(self) -> tuple[int, int]:
        """``(ED, ES)`` frames traced, 0-based."""
        return self.loop.ed_frames[self.traced_beat], self.loop.es_frames[self.traced_beat]


def _plan_video(params: PatientParams, truth: PatientTruth) -> EchoNetVideo:
    rng = np.random.default_rng((params.seed, params.index, ECHONET_STREAM))
    name = "0X" + "".join(f"{d:X}" for d in rng.integers(0, 16, size=16))
    if rng.random() < COMMON_FPS_SHARE:
        fps = COMMON_FPS
    else:
        fps = int(rng.integers(FRAME_RATE_HZ[0], FRAME_RATE_HZ[1] + 1))
    heart_rate = float(rng.uniform(*HEART_RATE_BPM))
    systole_ms = ejection_time_ms(heart_rate, params.sex) + ISOVOLUMIC_CONTRACTION_MS
    systole_ms *= float(rng.uniform(0.92, 1.08))
    timing = cycle_timing(
        _rr_frames(fps, heart_rate),
        fps,
        systole_ms,
        float(rng.uniform(0.25, 0.35)),
        float(rng.uniform(0.02, 0.06)),
    )
    n_beats = int(rng.integers(1, MAX_BEATS + 1))
    loop = full_loop(VIEW, fps, timing, n_beats, float(rng.random()), float(rng.random()))
    return EchoNetVideo(
        file_name=name,
        params=params,
        truth=truth,
        loop=loop,
        traced_beat=int(rng.integers(0, n_beats)),
        es_first=bool(rng.random() < ES_FIRST_SHARE),
    )


def plan_echonet(n_videos: int, seed: int = 0) -> list[EchoNetVideo]:
    """The videos of a synthetic EchoNet cohort, without rendering or writing (pure).

    Args:
        n_videos: number of videos.
        seed: cohort seed.

    Returns:
        One :class:`EchoNetVideo` per video, in patient order.

    Raises:
        ValueError: fewer than one video, or two videos drew the same file name.
    """
    if n_videos < 1:
        raise ValueError("n_videos must be at least 1")
    videos = [_plan_video(p, t) for p, t in plan_cohort(n_videos, seed, max_side=SIDE)]
    if len({v.file_name for v in videos}) != len(videos):
        raise ValueError(f"seed {seed}: two videos drew the same file name")
    return videos


def lv_tracing(params: PatientParams, phase: float) -> np.ndarray:
    """The expert tracing of the 4-chamber LV at a shape phase, as ``VolumeTracings.csv`` rows.

    Args:
        params: the patient (its 4CH setup: grid, spacing, probe, tilt).
        phase: shape phase (0 = ED shape, 1 = ES shape).

    Returns:
        ``(1 + N_CHORDS, 4)`` float64 ``X1, Y1, X2, Y2`` in pixels: the long axis (apex, then
        the middle of the mitral chord), then the chords from the mitral chord to the apex.
    """
    setup = params.setup(VIEW)
    shape = params.shape_at(phase)
    row_mm, col_mm = setup.spacing
    width = setup.shape[1]
    e, n = _axes(setup.tilt_deg)
    apex = np.array([(width - 1) * col_mm / 2.0 + setup.apex_lateral_mm, setup.apex_depth_mm])
    centre = apex - shape.c_mm * e
    s, c = shape.semi_axis_mm(VIEW), shape.c_mm
    z = np.linspace(-shape.base_frac * c, c, N_CHORDS)
    half = s * np.sqrt(np.clip(1.0 - (z / c) ** 2, 0.0, None))
    half[-1] = 0.0  # the apex, exactly
    mid = centre[None, :] + z[:, None] * e[None, :]
    ends_1 = mid + half[:, None] * n[None, :]
    ends_2 = mid - half[:, None] * n[None, :]
    chords = np.concatenate([ends_1, ends_2], axis=1)
    axis = np.concatenate([apex, mid[0]])[None, :]
    rows_mm = np.concatenate([axis, chords])
    return rows_mm / np.array([col_mm, row_mm, col_mm, row_mm])


def _csv_text(rows: list[dict[str, object]], names: tuple[str, ...]) -> str:
    """CSV with floats at full precision (``repr``) and None as an empty field."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(names), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def _frames_text(frames: tuple[int, ...]) -> str:
    return " ".join(str(f) for f in frames)


def _truth_row(video: EchoNetVideo, codec: VideoCodec) -> dict[str, object]:
    params, truth, loop = video.params, video.truth, video.loop
    row_mm, col_mm = params.setup(VIEW).spacing
    ed, es = video.traced_frames
    return {
        "patient_id": video.file_name,
        "split": truth.split,
        "ef_pct": truth.ef_pct,
        "edv_ml": truth.edv_ml,
        "esv_ml": truth.esv_ml,
        "ef_4ch_pct": truth.ef_4ch_pct,
        "edv_4ch_ml": truth.edv_4ch_ml,
        "esv_4ch_ml": truth.esv_4ch_ml,
        "area_ed_4ch_mm2": truth.area_ed_4ch_mm2,
        "area_es_4ch_mm2": truth.area_es_4ch_mm2,
        "area_ed_4ch_px": truth.area_ed_4ch_mm2 / (row_mm * col_mm),
        "area_es_4ch_px": truth.area_es_4ch_mm2 / (row_mm * col_mm),
        "length_ed_4ch_mm": truth.length_ed_4ch_mm,
        "length_es_4ch_mm": truth.length_es_4ch_mm,
        "spacing_row_4ch_mm": row_mm,
        "spacing_col_4ch_mm": col_mm,
        "height_4ch": truth.height_4ch,
        "width_4ch": truth.width_4ch,
        "n_frames_4ch": loop.n_frames,
        "frame_time_4ch_ms": loop.frame_time_ms,
        "fps": int(loop.frame_rate_hz),
        "n_beats_4ch": len(loop.ed_frames),
        "heart_rate_4ch_bpm": loop.heart_rate_bpm,
        "ed_frames_4ch": _frames_text(loop.ed_frames),
        "es_frames_4ch": _frames_text(loop.es_frames),
        "traced_ed_frame": ed,
        "traced_es_frame": es,
        "tracings_es_first": video.es_first,
        "tilt_4ch_deg": truth.tilt_4ch_deg,
        "image_quality": truth.image_quality,
        "codec": codec.value,
    }


def _frame_rows(video: EchoNetVideo) -> list[dict[str, object]]:
    """``truth_frames.csv`` rows of the video (the meanings of ``loop_truth.frame_rows``)."""
    loop, params = video.loop, video.params
    eds, ess = set(loop.ed_frames), set(loop.es_frames)
    rows: list[dict[str, object]] = []
    for frame, (phase, beat) in enumerate(zip(loop.phases, loop.beat, strict=True)):
        shape = params.shape_at(float(phase))
        rows.append(
            {
                "patient_id": video.file_name,
                "view": VIEW.value,
                "frame": frame,
                "time_ms": frame * loop.frame_time_ms,
                "phase": float(phase),
                "volume_ml": shape.volume_ml,
                "volume_single_ml": shape.single_plane_volume_ml(VIEW),
                "lv_area_mm2": shape.section_area_mm2(VIEW),
                "lv_length_mm": shape.length_mm,
                "beat": int(beat),
                "is_ed": frame in eds,
                "is_es": frame in ess,
            }
        )
    return rows


def _filelist_row(video: EchoNetVideo, avi_suffix: bool) -> dict[str, object]:
    truth, loop = video.truth, video.loop
    return {
        "FileName": video.file_name + (".avi" if avi_suffix else ""),
        "EF": truth.ef_4ch_pct,
        "ESV": truth.esv_4ch_ml,
        "EDV": truth.edv_4ch_ml,
        "FrameHeight": truth.height_4ch,
        "FrameWidth": truth.width_4ch,
        "FPS": int(loop.frame_rate_hz),
        "NumberOfFrames": loop.n_frames,
        "Split": SPLIT_NAMES[video.params.split],
    }


def _tracing_rows(video: EchoNetVideo) -> list[dict[str, object]]:
    ed, es = video.traced_frames
    rows: list[dict[str, object]] = []
    for frame in (es, ed) if video.es_first else (ed, es):
        phase = float(video.loop.phases[frame])
        for x1, y1, x2, y2 in lv_tracing(video.params, phase):
            rows.append(
                {
                    "FileName": f"{video.file_name}.avi",
                    "X1": float(x1),
                    "Y1": float(y1),
                    "X2": float(x2),
                    "Y2": float(y2),
                    "Frame": frame,
                }
            )
    return rows


def synth_echonet(
    out: Path | str,
    n_videos: int,
    seed: int = 0,
    *,
    codec: VideoCodec | str = VideoCodec.FFV1,
    avi_suffix: bool = False,
) -> Path:
    """Write a synthetic cohort in the EchoNet-Dynamic layout with its truth (module docstring).

    Args:
        out: output root (created when missing; files of the same names are replaced).
        n_videos: number of videos.
        seed: cohort seed; the same seed gives the same frames, tables and truth.
        codec: ``ffv1`` (lossless: a read gives the rendered frames exactly) or ``mjpg`` (lossy
            like the public files: mean absolute error about 2 grey levels, at most about 25).
        avi_suffix: write ``FileName`` with ``.avi`` in ``FileList.csv`` (some releases do);
            ``VolumeTracings.csv`` always has it, like the public release.

    Returns:
        ``out``, a folder :func:`echo_batch.io.echonet.read_filelist` reads.

    Raises:
        ValueError: fewer than one video or an unknown codec.
    """
    codec = VideoCodec(codec)
    out = Path(out)
    videos = plan_echonet(n_videos, seed)
    start = time.perf_counter()
    filelist, tracings, truths, frames = [], [], [], []
    for number, video in enumerate(videos, start=1):
        _, images = render_phases(video.params, VIEW, video.loop.phases)
        write_video(
            out / VIDEOS / f"{video.file_name}.avi", images, video.loop.frame_rate_hz, codec=codec
        )
        filelist.append(_filelist_row(video, avi_suffix))
        tracings.extend(_tracing_rows(video))
        truths.append(_truth_row(video, codec))
        frames.extend(_frame_rows(video))
        if number % 100 == 0:
            logger.info("synth echonet: %d/%d videos", number, n_videos)
    write_text(out / FILELIST, _csv_text(filelist, FILELIST_COLUMNS))
    write_text(out / TRACINGS, _csv_text(tracings, TRACING_COLUMNS))
    write_text(out / "truth.csv", _csv_text(truths, TRUTH_COLUMNS))
    write_text(out / "truth_frames.csv", _csv_text(frames, FRAME_COLUMNS))
    elapsed = time.perf_counter() - start
    n_frames = sum(v.loop.n_frames for v in videos)
    logger.info(
        "synth echonet: %d videos (%d frames, %s, seed %d) in %.1f s under %s",
        n_videos,
        n_frames,
        codec.value,
        seed,
        elapsed,
        out,
    )
    return out
