"""Analytic truth of synthetic loops: the loop columns of ``truth.csv`` and ``truth_frames.csv``.

Every value comes from the shapes, not from the rendered masks: the shape of a frame is
``params.shape_at(phase)``, whose volumes, section area and length have closed forms
(:class:`echo_batch.synth.shapes.LVShape`). The masks are rasterised from the same shape, so the
expert LV area of each frame follows ``lv_area_mm2`` to within the pixel sampling.
"""

from __future__ import annotations

from echo_batch.domain import VIEWS, View
from echo_batch.synth.loops import PatientLoops
from echo_batch.synth.params import PatientParams

FRAME_COLUMNS = (
    "patient_id",
    "view",
    "frame",
    "time_ms",
    "phase",
    "volume_ml",
    "volume_single_ml",
    "lv_area_mm2",
    "lv_length_mm",
    "beat",
    "is_ed",
    "is_es",
)
"""Columns of ``truth_frames.csv``, in order."""


def _tag(view: View) -> str:
    return "2ch" if view == View.A2C else "4ch"


def _frames_text(frames: tuple[int, ...]) -> str:
    return " ".join(str(f) for f in frames)


def loop_columns(loops: PatientLoops, *, frame_time_known: bool = True) -> dict[str, object]:
    """The loop columns of one patient's ``truth.csv`` row (appended after the stills' columns).

    Args:
        loops: the patient's loops.
        frame_time_known: the input carries the frame rate (False for the 2019 layout, whose cfg
            has none): otherwise ``frame_time_*_ms`` is empty.

    Returns:
        ``has_stills``, then per view tag (``2ch``, ``4ch``): ``loop_kind_{tag}`` (full|half),
        ``n_beats_{tag}``, ``ed_frames_{tag}`` / ``es_frames_{tag}`` (0-based, space-separated,
        one per beat, in beat order), ``reversed_{tag}``, ``heart_rate_{tag}_bpm`` (None for half
        sequences: one beat has no ED-to-ED interval) and ``frame_time_{tag}_ms``.
    """
    columns: dict[str, object] = {"has_stills": loops.has_stills}
    for view in VIEWS:
        loop, tag = loops.loop(view), _tag(view)
        columns |= {
            f"loop_kind_{tag}": loop.kind.value,
            f"n_beats_{tag}": len(loop.ed_frames),
            f"ed_frames_{tag}": _frames_text(loop.ed_frames),
            f"es_frames_{tag}": _frames_text(loop.es_frames),
            f"reversed_{tag}": loop.reversed,
            f"heart_rate_{tag}_bpm": loop.heart_rate_bpm,
            f"frame_time_{tag}_ms": loop.frame_time_ms if frame_time_known else None,
        }
    return columns


def frame_rows(
    params: PatientParams, loops: PatientLoops, *, frame_time_known: bool = True
) -> list[dict[str, object]]:
    """One ``truth_frames.csv`` row per frame of each loop of a patient.

    Args:
        params: the patient.
        loops: its loops.
        frame_time_known: see :func:`loop_columns` (``time_ms`` empty when False).

    Returns:
        Rows keyed by :data:`FRAME_COLUMNS`: ``frame`` 0-based in the stored order, ``time_ms``
        from the first frame, ``phase`` (0 = ED shape, 1 = ES shape), ``volume_ml`` the true 3-D
        volume (the same in both views; EDV and ESV exactly at the ED and ES frames),
        ``volume_single_ml`` the view's single-plane Simpson limit, ``lv_area_mm2`` the view's
        analytic LV section area, ``lv_length_mm`` base midpoint to apex, ``beat`` 0-based (-1
        outside complete beats), ``is_ed`` / ``is_es``.
    """
    rows: list[dict[str, object]] = []
    for view in VIEWS:
        loop = loops.loop(view)
        eds, ess = set(loop.ed_frames), set(loop.es_frames)
        for frame, (phase, beat) in enumerate(zip(loop.phases, loop.beat, strict=True)):
            shape = params.shape_at(float(phase))
            rows.append(
                {
                    "patient_id": params.patient_id,
                    "view": view.value,
                    "frame": frame,
                    "time_ms": frame * loop.frame_time_ms if frame_time_known else None,
                    "phase": float(phase),
                    "volume_ml": shape.volume_ml,
                    "volume_single_ml": shape.single_plane_volume_ml(view),
                    "lv_area_mm2": shape.section_area_mm2(view),
                    "lv_length_mm": shape.length_mm,
                    "beat": int(beat),
                    "is_ed": frame in eds,
                    "is_es": frame in ess,
                }
            )
    return rows
