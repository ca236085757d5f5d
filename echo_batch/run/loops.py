"""Cine loops inside a chunk: read a view's loop, measure every frame, find ED and ES, summarise
the beats, and describe every frame as a ``frames.parquet`` row.

The chunk function (:mod:`echo_batch.run.chunk`) segments the frames together with the stills of
the same pass, then takes the ED and ES frames chosen here as the patient's images, so that the
volumes, EF, CAMUS-compatible EF, QC and expert comparison of a loop are computed by exactly the
code that measures stills. Per frame only the cycle measurements run (landmarks, single-plane
volume, the image QC that decides whether a frame may be ED or ES).
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field

import numpy as np

from echo_batch.domain import ImageFiles, LoopKind, PatientRef, SpacingSource, View
from echo_batch.errors import InputError
from echo_batch.io.clips import read_patient_loop
from echo_batch.io.image import EchoImage, EchoSequence
from echo_batch.measure.cycle import Beat, Cycle, beat_of_frames, detect_cycle
from echo_batch.measure.landmarks import GeometryFailure, ViewGeometry, measure_lv
from echo_batch.measure.patient import biplane_ml, single_plane_ml
from echo_batch.measure.volumes import ejection_fraction_pct
from echo_batch.qc.flags import QCFlag, image_flags, image_qc, is_blocking
from echo_batch.store.records import FrameRecord

logger = logging.getLogger(__name__)

MIN_VALID_SHARE = 0.5  # below this share of QC-clean frames, any measurable frame may be ED/ES
# Flags on the size of the LV describe the heart, not the segmentation: they must not keep a frame
# from being ED or ES (an area floor would reject a small heart's true ES first, the smallest frame,
# and bias its EF down; seen on synthetic loops: 31 of 36 wrong ES frames at 128 px). They are still
# raised on the chosen frames' image rows.
_SIZE_FLAGS = frozenset({QCFlag.LV_LENGTH_IMPLAUSIBLE.value, QCFlag.LV_AREA_IMPLAUSIBLE.value})
SIZE_FLAGS = _SIZE_FLAGS  # meaningless without a spacing: dropped from loops that have none
# Nor does a low model confidence: its threshold is set to send a reviewer the lowest 10-15 % of
# patients (qc/flags.py), not to judge one frame against its neighbours, and the frames around ES
# (the smallest cavity, the most boundary pixels) score lowest. Rejecting them moved ES 2-5 frames
# into systole on 9 of the 100 semi-real testing loops (camus224-loops, 2026-12-05) and biased the
# EF down, while the stills run measures the same ES image and flags it. The chosen frames' image
# rows still carry the flag, and so does the patient, as for stills.
_NOT_FOR_SELECTION = _SIZE_FLAGS | {QCFlag.LOW_CONFIDENCE.value}


@dataclass
class LoopWork:
    """One view's loop while a chunk is processed.

    Attributes:
        view: the loop's view.
        files: the loop file and its optional per-frame expert masks.
        kind: half sequence (one ED -> ES stretch) or full loop.
        frame_time_ms: time between frames (None when unknown).
        frames: the decoded loop, ``(T, H, W)``.
        gt: the decoded per-frame expert label maps, ``(T, H, W)`` uint8.
        masks: per frame, the ``(H, W)`` label map that is measured.
        confidences: per frame, the model's confidence (None for expert masks).
        members: per frame, each ensemble member's label map (``--uncertainty``), else None.
        error: why the loop could not be used.
        spacing_source: where the loop's spacing came from (``NONE``: measured on
            :data:`NOMINAL_SPACING`, no length, area or volume is reported).
        spacing_problem: why a calibration in the file was refused.
        traced: the frames ``gt`` holds expert masks for (None: every frame); EchoNet's
            tracings cover two frames, the others are empty.
    """

    view: View
    files: ImageFiles
    kind: LoopKind
    frame_time_ms: float | None = None
    frames: EchoSequence | None = None
    gt: EchoSequence | None = None
    masks: list[np.ndarray] | None = None
    confidences: list[float | None] = field(default_factory=list)
    members: list[tuple[np.ndarray, ...]] | None = None
    error: str | None = None
    spacing_source: SpacingSource = SpacingSource.HEADER
    spacing_problem: str | None = None
    traced: frozenset[int] | None = None

    def truth(self, index: int) -> EchoImage | None:
        """The expert mask of frame ``index`` as a still, or None where the frame has none."""
        if self.gt is None or (self.traced is not None and index not in self.traced):
            return None
        return self.still(index, labels=True)

    @property
    def scaled(self) -> bool:
        """True when the loop has a trusted spacing (lengths and volumes mean mm and mL)."""
        return self.spacing_source != SpacingSource.NONE

    @property
    def n_frames(self) -> int:
        """Frames of the decoded loop (0 before reading or after a failure)."""
        return 0 if self.frames is None else int(self.frames.array.shape[0])

    def still(self, index: int, labels: bool = False) -> EchoImage:
        """Frame ``index`` (or its expert mask) as a still image on the loop's grid."""
        source = self.gt if labels else self.frames
        assert source is not None
        return EchoImage(
            array=source.array[index],
            spacing=source.geometry.spacing,
            path=source.path,
            known_geometry=source.geometry,
        )


def read_loop(ref: PatientRef, view: View, need_gt: bool, frame_time_ms: float | None) -> LoopWork:
    """Read one view's loop (and its expert masks); a failure is the loop's error, never raised."""
    files = ref.sequences[view]
    loop = LoopWork(view=view, files=files, kind=ref.loop_kinds[view], frame_time_ms=frame_time_ms)
    try:
        found = read_patient_loop(ref, view)
        loop.frames, loop.gt, loop.traced = found.frames, found.gt, found.traced
        loop.spacing_source, loop.spacing_problem = found.spacing_source, found.spacing_problem
        loop.frame_time_ms = loop.frame_time_ms or found.frame_time_ms
        if files.gt is None and loop.traced is None and need_gt:
            loop.error = f"{ref.patient_id} {view.value} loop: no ground truth file"
    except InputError as exc:
        loop.error = f"{ref.patient_id} {view.value} loop: {exc}"
    except Exception as exc:  # a reader defect must not take the other loops down
        logger.exception("%s: reading the %s loop failed", ref.patient_id, view.value)
        loop.error = (
            f"{ref.patient_id} {view.value} loop: {files.image}: {type(exc).__name__}: {exc}"
        )
    if loop.error is not None:
        loop.frames = loop.gt = None
    return loop


@dataclass(frozen=True)
class LoopMeasure:
    """Every frame of one loop measured, and its cardiac cycle.

    Attributes:
        geometries: per frame, the LV landmarks or why they failed.
        volumes: ``(T,)`` single-plane volume per frame, mL (NaN where the LV failed).
        valid: ``(T,)`` frames that may be ED or ES (measurable, no blocking QC flag).
        cycle: the beats found (ED and ES frame per beat).
    """

    geometries: tuple[ViewGeometry | GeometryFailure, ...]
    volumes: np.ndarray
    valid: np.ndarray
    cycle: Cycle


def measure_loop(loop: LoopWork) -> LoopMeasure:
    """Landmarks, volume and QC of every frame, then the cycle (ED/ES per beat)."""
    assert loop.frames is not None and loop.masks is not None
    spacing = loop.frames.geometry.spacing
    geometries, volumes, clean = [], [], []
    for mask, confidence in zip(loop.masks, loop.confidences, strict=True):
        geometry = measure_lv(mask, spacing)
        geometries.append(geometry)
        if isinstance(geometry, ViewGeometry):
            volumes.append(single_plane_ml(geometry))
            flags = image_flags(image_qc(mask, spacing, geometry), confidence)
            clean.append(not is_blocking([f for f in flags if f not in _NOT_FOR_SELECTION]))
        else:
            volumes.append(np.nan)
            clean.append(False)
    volume = np.asarray(volumes, float)
    measurable = np.isfinite(volume)
    valid = np.asarray(clean, bool)
    if valid.sum() < MIN_VALID_SHARE * measurable.sum():
        valid = measurable  # QC rejects most frames (e.g. an unusual view): trust the geometry
    cycle = detect_cycle(
        volume,
        loop.frame_time_ms,
        half_sequence=loop.kind == LoopKind.HALF,
        valid=valid,
    )
    return LoopMeasure(tuple(geometries), volume, valid, cycle)


def frame_records(patient_id: str, loop: LoopWork, measure: LoopMeasure) -> list[FrameRecord]:
    """One ``frames.parquet`` row per frame of the loop."""
    largest = np.nanmax(measure.volumes) if np.isfinite(measure.volumes).any() else np.nan
    beats = beat_of_frames(measure.cycle, loop.n_frames)
    eds = {b.ed for b in measure.cycle.beats}
    ess = {b.es for b in measure.cycle.beats}
    rows = []
    for index, geometry in enumerate(measure.geometries):
        ok = isinstance(geometry, ViewGeometry)
        mask = loop.masks[index] if loop.masks is not None else None
        volume = float(measure.volumes[index]) if ok else None
        rows.append(
            FrameRecord(
                patient_id=patient_id,
                view=loop.view.value,
                frame=index,
                time_ms=None if loop.frame_time_ms is None else index * loop.frame_time_ms,
                lv_area_px=None if mask is None else float(np.count_nonzero(mask == 1)),
                lv_area_mm2=geometry.area_mm2 if ok and loop.scaled else None,
                lv_length_mm=geometry.length_mm if ok and loop.scaled else None,
                volume_single_ml=volume if loop.scaled else None,
                volume_rel=None if volume is None else volume / largest,
                confidence=loop.confidences[index] if loop.confidences else None,
                beat=int(beats[index]) if beats[index] >= 0 else None,
                is_ed=index in eds,
                is_es=index in ess,
                qc_rejected=not bool(measure.valid[index]),
                error=None if ok else geometry.reason,
            )
        )
    return rows


@dataclass(frozen=True)
class BeatSummary:
    """The beats of a patient's loops combined into its EF.

    Beats of the 2CH and 4CH loops (two recordings) are paired in time order; the biplane EF of
    each pair uses each view's own ED and ES frames. With one view only, its beats are used
    single-plane.

    Attributes:
        chosen: per view, the beat whose frames become the patient's ED and ES images (the pair
            with the median EF, so that the images show a typical beat).
        ef_pct: mean biplane EF over the pairs (None without a pair).
        edv_ml: mean biplane EDV over the pairs.
        esv_ml: mean biplane ESV over the pairs.
        single: per view, mean single-plane ``(EDV, ESV, EF)`` over its beats.
        n_beats: pairs behind ``ef_pct``, or the beats of the only view.
        ef_sd_pct: sample SD of the per-beat EF (None below 2 beats).
        heart_rate_bpm: mean of the views' heart rates (None without a frame time).
    """

    chosen: dict[View, Beat]
    ef_pct: float | None
    edv_ml: float | None
    esv_ml: float | None
    single: dict[View, tuple[float, float, float]]
    n_beats: int
    ef_sd_pct: float | None
    heart_rate_bpm: float | None


def summarise_beats(measures: dict[View, LoopMeasure]) -> BeatSummary:
    """Per-beat volumes and EF of a patient's loops (views without a beat are left out)."""
    beats = {v: m.cycle.beats for v, m in measures.items() if m.cycle.beats}
    single: dict[View, tuple[float, float, float]] = {}
    per_view_efs: dict[View, list[float]] = {}
    for view, view_beats in beats.items():
        geos = measures[view].geometries
        rows = [(single_plane_ml(geos[b.ed]), single_plane_ml(geos[b.es])) for b in view_beats]
        efs = [ejection_fraction_pct(ed, es) for ed, es in rows]
        per_view_efs[view] = efs
        single[view] = (
            float(np.mean([r[0] for r in rows])),
            float(np.mean([r[1] for r in rows])),
            float(np.mean(efs)),
        )
    rates = [m.cycle.heart_rate_bpm for m in measures.values() if m.cycle.heart_rate_bpm]
    heart_rate = float(np.mean(rates)) if rates else None
    if View.A2C in beats and View.A4C in beats:
        pairs = list(zip(beats[View.A2C], beats[View.A4C], strict=False))
        g2, g4 = measures[View.A2C].geometries, measures[View.A4C].geometries
        volumes = [
            (biplane_ml(g2[a.ed], g4[b.ed]), biplane_ml(g2[a.es], g4[b.es])) for a, b in pairs
        ]
        efs = [ejection_fraction_pct(ed, es) for ed, es in volumes]
        median = _median_index(efs)
        return BeatSummary(
            chosen={View.A2C: pairs[median][0], View.A4C: pairs[median][1]},
            ef_pct=float(np.mean(efs)),
            edv_ml=float(np.mean([v[0] for v in volumes])),
            esv_ml=float(np.mean([v[1] for v in volumes])),
            single=single,
            n_beats=len(pairs),
            ef_sd_pct=statistics.stdev(efs) if len(efs) > 1 else None,
            heart_rate_bpm=heart_rate,
        )
    chosen = {v: beats[v][_median_index(per_view_efs[v])] for v in beats}
    only = next(iter(per_view_efs.values()), [])
    return BeatSummary(
        chosen=chosen,
        ef_pct=None,
        edv_ml=None,
        esv_ml=None,
        single=single,
        n_beats=len(only),
        ef_sd_pct=statistics.stdev(only) if len(only) > 1 else None,
        heart_rate_bpm=heart_rate,
    )


def _median_index(values: list[float]) -> int:
    """Index of the lower median of ``values`` (the first beat for one or two)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    return order[(len(order) - 1) // 2]
