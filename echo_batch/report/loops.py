"""Numbers of the cine-loop part of the report, from the Parquet outputs (pandas, no plotting).

A loop patient's results use ED and ES frames chosen in its loops (``ed_frame_2ch`` ...); with
``--frames detected`` on annotated input the annotated frames are recorded beside
(``ed_frame_2ch_annotated`` ..., ``ef_annotated_pct``). The frame offset of an annotated frame is
taken to the detected frame of the same instant nearest to it, over every beat of the loop
(``frames.parquet`` ``is_ed``/``is_es``): a loop of several beats has one ED per beat, and the
results use the beat of median EF, which need not be the annotated one. How often that beat
differs is reported beside (``other_beat_share``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from echo_batch.domain import INSTANTS, VIEWS, Instant, View
from echo_batch.qc.agreement import Comparison
from echo_batch.report.stats import RunData, agreement_stats

EF_DETECTED_VS_ANNOTATED = Comparison(
    "ef_detected_vs_annotated",
    "ef_pct",
    "ef_annotated_pct",
    "EF on the detected frames vs EF on the annotated frames",
)

# frames.parquet column that marks the detected frames of each instant
INSTANT_FLAGS: dict[Instant, str] = {Instant.ED: "is_ed", Instant.ES: "is_es"}

OFFSET_COLUMNS = ["patient_id", "view", "instant", "annotated", "detected", "chosen", "offset"]


def frame_column(view: View, instant: Instant, *, annotated: bool = False) -> str:
    """The ``patients.parquet`` column of a view's ED or ES loop frame, e.g. ``es_frame_4ch``."""
    name = f"{instant.value.lower()}_frame_{view.value.lower()}"
    return f"{name}_annotated" if annotated else name


def loop_frames(row: pd.Series, *, annotated: bool = False) -> dict[View, dict[Instant, int]]:
    """The loop frames a patient's results use (or the annotated ones), per view and instant.

    Args:
        row: one row of ``patients.parquet`` (any schema; columns may be missing).
        annotated: the annotated frames recorded beside detected ones instead of the used ones.

    Returns:
        ``{view: {instant: 0-based frame}}``; views without any frame are omitted (stills).
    """
    found: dict[View, dict[Instant, int]] = {}
    for view in VIEWS:
        for instant in INSTANTS:
            value = row.get(frame_column(view, instant, annotated=annotated))
            if value is not None and pd.notna(value):
                found.setdefault(view, {})[instant] = int(value)
    return found


def has_loops(run: RunData) -> bool:
    """True when the OUT holds frame rows or a patient whose results use loop frames."""
    if not run.frames.empty:
        return True
    return any(
        (column := frame_column(v, i)) in run.patients and run.patients[column].notna().any()
        for v in VIEWS
        for i in INSTANTS
    )


def _detected_by_loop(frames: pd.DataFrame) -> dict[tuple[str, str, Instant], np.ndarray]:
    """Detected frames (every beat) per (patient, view, instant), sorted."""
    found: dict[tuple[str, str, Instant], np.ndarray] = {}
    if frames.empty:
        return found
    for (pid, view), rows in frames.groupby(["patient_id", "view"], sort=False):
        for instant, flag in INSTANT_FLAGS.items():
            marked = rows.loc[rows[flag].fillna(False).astype(bool), "frame"]
            if len(marked):
                found[(str(pid), str(view), instant)] = np.sort(marked.to_numpy(dtype=int))
    return found


def _nearest(candidates: np.ndarray, target: int) -> int:
    """The candidate nearest to ``target`` (the earlier one on a tie)."""
    distance = np.abs(candidates - target)
    return int(candidates[int(np.argmin(distance))])


def frame_offsets(patients: pd.DataFrame, frames: pd.DataFrame) -> pd.DataFrame:
    """Detected-minus-annotated frame offset per patient, view and instant.

    Args:
        patients: ``patients.parquet``.
        frames: ``frames.parquet`` (may be empty).

    Returns:
        One row per (patient, view, instant) with an annotated frame and a detected one:
        ``patient_id``, ``view``, ``instant``, ``annotated``, ``detected`` (the detected frame
        nearest to the annotated one, over every beat of the loop; the patient's chosen frame when
        the OUT has no frame rows for the loop), ``chosen`` (the frame the results use, or -1 when
        none) and ``offset`` (``detected - annotated``, frames). Empty when no patient has both.
    """
    detected = _detected_by_loop(frames)
    rows = []
    for _, patient in patients.iterrows():
        pid = str(patient["patient_id"])
        for view in VIEWS:
            for instant in INSTANTS:
                annotated = patient.get(frame_column(view, instant, annotated=True))
                if annotated is None or pd.isna(annotated):
                    continue
                chosen = patient.get(frame_column(view, instant))
                chosen = -1 if chosen is None or pd.isna(chosen) else int(chosen)
                candidates = detected.get((pid, view.value, instant))
                if candidates is not None:
                    nearest = _nearest(candidates, int(annotated))
                elif chosen >= 0:
                    nearest = chosen
                else:
                    continue
                offset = nearest - int(annotated)
                rows.append(
                    (pid, view.value, instant.value, int(annotated), nearest, chosen, offset)
                )
    return pd.DataFrame(rows, columns=OFFSET_COLUMNS)


def offset_stats(offsets: pd.DataFrame) -> dict[str, Any]:
    """Distribution of a group of frame offsets.

    Args:
        offsets: rows of :func:`frame_offsets` (at least one).

    Returns:
        ``n``; ``mean``, ``sd`` (None for one offset) and ``mean_abs`` of ``detected -
        annotated``, frames; ``max_abs``; the shares ``exact_share`` (offset 0),
        ``within_1_share`` (|offset| <= 1, exact included) and ``beyond_1_share`` (|offset| > 1);
        ``other_beat_share``: share whose results use another frame than the detected one nearest
        to the annotated frame (another beat of a multi-beat loop).
    """
    offset = offsets["offset"].to_numpy(dtype=float)
    size = np.abs(offset)
    return {
        "n": len(offset),
        "mean": float(offset.mean()),
        "sd": float(offset.std(ddof=1)) if len(offset) > 1 else None,
        "mean_abs": float(size.mean()),
        "max_abs": int(size.max()),
        "exact_share": float((size == 0).mean()),
        "within_1_share": float((size <= 1).mean()),
        "beyond_1_share": float((size > 1).mean()),
        "other_beat_share": float((offsets["chosen"] != offsets["detected"]).mean()),
    }


def offset_table(offsets: pd.DataFrame) -> list[dict[str, Any]]:
    """:func:`offset_stats` per view and instant (2CH ED, 2CH ES, 4CH ED, 4CH ES), then ``all``.

    Returns:
        One dict per non-empty group: ``view``, ``instant`` (``"all"`` for the pooled row) and
        the figures of :func:`offset_stats`; empty without offsets.
    """
    if offsets.empty:
        return []
    rows = []
    for view in VIEWS:
        for instant in INSTANTS:
            group = offsets[(offsets.view == view.value) & (offsets.instant == instant.value)]
            if len(group):
                rows.append({"view": view.value, "instant": instant.value, **offset_stats(group)})
    rows.append({"view": "all", "instant": "all", **offset_stats(offsets)})
    return rows


def loop_summary(run: RunData) -> dict[str, Any] | None:
    """The loop figures of the report (also in ``summary.json`` under ``loops``).

    Returns:
        None when the OUT holds no loop (stills only, or schema < 1.3); else ``patients`` (with
        frame rows), ``loops`` (patient and view pairs with frame rows), ``frames``,
        ``qc_rejected_frames``, ``patients_by_frames_source``, ``offsets`` (:func:`offset_table`)
        and ``ef_detected_vs_annotated`` (agreement of ``ef_pct - ef_annotated_pct``, None with
        fewer than 2 pairs).
    """
    if not has_loops(run):
        return None
    frames, patients = run.frames, run.patients
    source = patients.get("frames_source", pd.Series(dtype=object)).dropna()
    if frames.empty:
        patients_with_frames = loops = rejected = 0
    else:
        patients_with_frames = int(frames["patient_id"].nunique())
        loops = len(frames.groupby(["patient_id", "view"]))
        rejected = int(frames["qc_rejected"].fillna(False).astype(bool).sum())
    return {
        "patients": patients_with_frames,
        "loops": loops,
        "frames": len(frames),
        "qc_rejected_frames": rejected,
        "patients_by_frames_source": {str(k): int(v) for k, v in source.value_counts().items()},
        "offsets": offset_table(frame_offsets(patients, frames)),
        "ef_detected_vs_annotated": agreement_stats(patients, EF_DETECTED_VS_ANNOTATED),
    }
