"""Typed output rows (the columns README.md "Outputs" lists); the Parquet schemas derive from them.

Units are part of the field names (``_ml``, ``_mm``, ``_mm2``, ``_pct``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field

import pyarrow as pa

# 1.1: images.parquet qc_flags; 1.2: patients.parquet measure_config (what produced each row, so
# that a resumed run never takes rows of other settings for its own); 1.3: cine loops
# (frames.parquet, the frames and beats columns of patients.parquet, images.parquet frame); 1.4:
# per-study measurements (LA volume, contour GLS, FAC, long-axis shortening; LV border length and
# LA area and length per image); 1.5: uncertainty (``--uncertainty``: ef_pct_sd, ef_camus_pct_sd,
# n_members; images.parquet lv_dice_members)
SCHEMA_VERSION = "1.5"

UNITS = {
    "_ml": "mL",
    "_mm2": "mm^2",
    "_mm": "mm",
    "_pct": "percent",
    "_ms": "ms",
    "_bpm": "beats/min",
    "_px": "pixels",
}


@dataclass(frozen=True)
class ImageRecord:
    """One row of ``images.parquet``: one (patient, view, instant) still frame.

    Attributes:
        patient_id: patient folder name.
        view: "2CH" or "4CH".
        instant: "ED" or "ES".
        status: "ok" or "failed".
        error: reason of a failure, naming the file, or None.
        segmentation: "model" or "gt": which mask was measured.
        height: rows of the native image, pixels.
        width: columns of the native image, pixels.
        spacing_row_mm: row (depth) pixel size.
        spacing_col_mm: column (lateral) pixel size.
        lv_area_mm2: LV cavity area.
        lv_length_mm: LV long axis, base midpoint to apex.
        volume_single_ml: single-plane Simpson volume (20 disks).
        volume_area_length_ml: single-plane area-length volume, for comparison.
        dice_lv: Dice of the LV cavity against ground truth (null without it).
        dice_myo: Dice of the myocardium against ground truth.
        dice_la: Dice of the left atrium against ground truth.
        hd_lv_mm: Hausdorff distance of the LV contour (maximum).
        hd95_lv_mm: 95th percentile Hausdorff distance of the LV contour.
        mad_lv_mm: mean absolute distance of the LV contour.
        confidence: mean max-probability of the model inside the predicted heart (null for gt).
        qc_flags: quality flags of this image (:mod:`echo_batch.qc.flags`); they also appear in
            the patient's ``qc_flags``. Nullable, so that files of schema 1.0 (without it)
            still resume.
        frame: 0-based frame of the loop this ED or ES image was taken from (null for a still).
        lv_border_length_mm: LV endocardial border, hinge to hinge through the apex (smoothed;
            :mod:`echo_batch.measure.deformation`).
        la_area_mm2: left-atrial area (largest atrium component).
        la_length_mm: left-atrial length, mitral annulus mid-point to the roof, perpendicular to
            the annulus.
        lv_dice_members: mean LV Dice over every pair of ensemble members' masks of this image
            (``--uncertainty``; null otherwise): 1 when the members agree.
    """

    patient_id: str
    view: str
    instant: str
    status: str
    error: str | None = None
    segmentation: str = "model"
    height: int | None = None
    width: int | None = None
    spacing_row_mm: float | None = None
    spacing_col_mm: float | None = None
    lv_area_mm2: float | None = None
    lv_length_mm: float | None = None
    volume_single_ml: float | None = None
    volume_area_length_ml: float | None = None
    dice_lv: float | None = None
    dice_myo: float | None = None
    dice_la: float | None = None
    hd_lv_mm: float | None = None
    hd95_lv_mm: float | None = None
    mad_lv_mm: float | None = None
    confidence: float | None = None
    qc_flags: list[str] | None = field(default_factory=list)
    frame: int | None = None
    lv_border_length_mm: float | None = None
    la_area_mm2: float | None = None
    la_length_mm: float | None = None
    lv_dice_members: float | None = None


@dataclass(frozen=True)
class PatientRecord:
    """One row of ``patients.parquet``.

    Attributes:
        patient_id: patient folder name.
        split: official split or "none".
        status: "ok" (both views, biplane EF), "partial" (single-plane results only) or "failed".
        error: reasons of failures and missing data, or None.
        edv_ml: end-diastolic volume, biplane Simpson (guideline h per instant).
        esv_ml: end-systolic volume, biplane Simpson.
        ef_pct: EF from the biplane volumes (primary result).
        edv_2ch_ml: single-plane Simpson EDV in the 2-chamber view.
        esv_2ch_ml: single-plane Simpson ESV in the 2-chamber view.
        ef_2ch_pct: EF from the 2-chamber single-plane volumes.
        edv_4ch_ml: single-plane Simpson EDV in the 4-chamber view.
        esv_4ch_ml: single-plane Simpson ESV in the 4-chamber view.
        ef_4ch_pct: EF from the 4-chamber single-plane volumes.
        edv_camus_ml: CAMUS-compatible biplane EDV (rounded to mL).
        esv_camus_ml: CAMUS-compatible biplane ESV (rounded to mL).
        ef_camus_pct: CAMUS-compatible EF (rounded to an integer).
        ef_category: EF category of ``ef_pct`` (clinical table).
        ef_ref_pct: EF of the cfg file (reference), null if none.
        edv_ref_ml: ``LVedv`` of a 2019 cfg, null if none.
        esv_ref_ml: ``LVesv`` of a 2019 cfg, null if none.
        ef_gt_pct: ``ef_pct`` computed on the ground-truth masks, null if none.
        ef_camus_gt_pct: ``ef_camus_pct`` computed on the ground-truth masks, null if none.
        image_quality: ``ImageQuality`` of the 2CH cfg.
        qc_pass: False when a blocking quality flag is set.
        qc_flags: quality flags that were raised.
        model_id: bundle name and weight hash, or "gt".
        measure_config: the settings that produced the row (model id, CAMUS grid), canonical
            JSON with sorted keys (:func:`echo_batch.store.parts.measure_config`), stamped by the
            store when the row is written; null in files of schema < 1.2 (unknown settings).
        input_format: format of the patient's files ("camus2019", "camus2023").
        spacing_source: where the pixel spacing came from ("header", or "none": volumes null).
        frames_source: "annotated" (stills or cfg frame indices) or "detected" (from the loops).
        ed_frame_2ch: 0-based ED frame of the 2CH loop that the results use (null for stills).
        es_frame_2ch: 0-based ES frame of the 2CH loop.
        ed_frame_4ch: 0-based ED frame of the 4CH loop.
        es_frame_4ch: 0-based ES frame of the 4CH loop.
        ed_frame_2ch_annotated: with ``--frames detected`` on annotated input, the annotated
            0-based ED frame of the 2CH loop (cfg), for the agreement with the detected one.
        es_frame_2ch_annotated: likewise, ES of 2CH.
        ed_frame_4ch_annotated: likewise, ED of 4CH.
        es_frame_4ch_annotated: likewise, ES of 4CH.
        ef_annotated_pct: with ``--frames detected`` on annotated input, the biplane EF measured
            on the annotated frames (the stills where present).
        n_beats: beats behind the EF (pairs of 2CH and 4CH beats, or the beats of one view).
        ef_beats_sd_pct: standard deviation of the per-beat EF (null for fewer than 2 beats).
        heart_rate_bpm: from the ED-to-ED intervals when the frame time is known.
        la_volume_ml: left-atrial volume at LV end-systole, biplane method of disks (formulas:
            :mod:`echo_batch.measure.study`; why a value is null: ``error``).
        la_volume_al_ml: left-atrial volume at LV end-systole, biplane area-length
            ``0.85 A_2CH A_4CH / L`` (L the shorter LA length).
        la_volume_2ch_ml: left-atrial volume, single-plane method of disks, 2CH.
        la_volume_4ch_ml: left-atrial volume, single-plane method of disks, 4CH.
        la_length_2ch_mm: LA length at LV end-systole, 2CH.
        la_length_4ch_mm: LA length at LV end-systole, 4CH.
        la_area_2ch_mm2: LA area at LV end-systole, 2CH.
        la_area_4ch_mm2: LA area at LV end-systole, 4CH.
        gls_contour_pct: contour-based longitudinal strain, mean of 2CH and 4CH: relative change
            of the LV endocardial border length from ED to ES, negative when it shortens (an
            approximation of GLS, not speckle tracking).
        gls_contour_2ch_pct: contour-based longitudinal strain, 2CH.
        gls_contour_4ch_pct: contour-based longitudinal strain, 4CH.
        fac_2ch_pct: LV fractional area change ``(A_ED - A_ES) / A_ED``, 2CH.
        fac_4ch_pct: LV fractional area change, 4CH.
        long_axis_shortening_2ch_pct: LV long-axis shortening ``(L_ED - L_ES) / L_ED``, 2CH.
        long_axis_shortening_4ch_pct: LV long-axis shortening, 4CH.
        la_volume_gt_ml: ``la_volume_ml`` on the ground-truth masks, null if none.
        la_volume_al_gt_ml: ``la_volume_al_ml`` on the ground-truth masks.
        gls_contour_gt_pct: ``gls_contour_pct`` on the ground-truth masks.
        fac_2ch_gt_pct: ``fac_2ch_pct`` on the ground-truth masks.
        fac_4ch_gt_pct: ``fac_4ch_pct`` on the ground-truth masks.
        ef_pct_sd: SD of ``ef_pct`` between the ensemble's members (``--uncertainty``: each
            member's masks measured alone; null otherwise or with fewer than two measurable
            members), EF points. ``ef_pct`` itself then comes from the members' mean
            probabilities.
        ef_camus_pct_sd: SD of ``ef_camus_pct`` between the members, EF points.
        n_members: members behind the SDs (null without ``--uncertainty``).
    """

    patient_id: str
    split: str
    status: str
    error: str | None = None
    edv_ml: float | None = None
    esv_ml: float | None = None
    ef_pct: float | None = None
    edv_2ch_ml: float | None = None
    esv_2ch_ml: float | None = None
    ef_2ch_pct: float | None = None
    edv_4ch_ml: float | None = None
    esv_4ch_ml: float | None = None
    ef_4ch_pct: float | None = None
    edv_camus_ml: float | None = None
    esv_camus_ml: float | None = None
    ef_camus_pct: float | None = None
    ef_category: str | None = None
    ef_ref_pct: float | None = None
    edv_ref_ml: float | None = None
    esv_ref_ml: float | None = None
    ef_gt_pct: float | None = None
    ef_camus_gt_pct: float | None = None
    image_quality: str | None = None
    qc_pass: bool = False
    qc_flags: list[str] = field(default_factory=list)
    model_id: str = ""
    measure_config: str | None = None
    input_format: str | None = None
    spacing_source: str | None = None
    frames_source: str | None = None
    ed_frame_2ch: int | None = None
    es_frame_2ch: int | None = None
    ed_frame_4ch: int | None = None
    es_frame_4ch: int | None = None
    ed_frame_2ch_annotated: int | None = None
    es_frame_2ch_annotated: int | None = None
    ed_frame_4ch_annotated: int | None = None
    es_frame_4ch_annotated: int | None = None
    ef_annotated_pct: float | None = None
    n_beats: int | None = None
    ef_beats_sd_pct: float | None = None
    heart_rate_bpm: float | None = None
    la_volume_ml: float | None = None
    la_volume_al_ml: float | None = None
    la_volume_2ch_ml: float | None = None
    la_volume_4ch_ml: float | None = None
    la_length_2ch_mm: float | None = None
    la_length_4ch_mm: float | None = None
    la_area_2ch_mm2: float | None = None
    la_area_4ch_mm2: float | None = None
    gls_contour_pct: float | None = None
    gls_contour_2ch_pct: float | None = None
    gls_contour_4ch_pct: float | None = None
    fac_2ch_pct: float | None = None
    fac_4ch_pct: float | None = None
    long_axis_shortening_2ch_pct: float | None = None
    long_axis_shortening_4ch_pct: float | None = None
    la_volume_gt_ml: float | None = None
    la_volume_al_gt_ml: float | None = None
    gls_contour_gt_pct: float | None = None
    fac_2ch_gt_pct: float | None = None
    fac_4ch_gt_pct: float | None = None
    ef_pct_sd: float | None = None
    ef_camus_pct_sd: float | None = None
    n_members: int | None = None


@dataclass(frozen=True)
class FrameRecord:
    """One row of ``frames.parquet``: one segmented frame of a loop.

    Attributes:
        patient_id: patient folder name.
        view: "2CH" or "4CH".
        frame: 0-based frame index in the loop file.
        time_ms: time of the frame from the loop's start (null without a frame time).
        lv_area_px: LV cavity area, pixels (the largest LV component, holes filled).
        lv_area_mm2: LV cavity area (null without spacing).
        lv_length_mm: LV long axis, base midpoint to apex (null without spacing).
        volume_single_ml: single-plane Simpson volume (null without spacing).
        volume_rel: single-plane volume divided by the largest volume of the loop (defined
            without spacing too).
        confidence: mean max-probability of the model inside the predicted heart (null for gt).
        beat: 0-based beat the frame belongs to (from its ED to the next ED), null outside beats.
        is_ed: the frame is the ED of its beat.
        is_es: the frame is the ES of its beat.
        qc_rejected: the frame's LV could not be measured or failed a blocking QC check, so it
            was never taken as ED or ES.
        error: why the frame's LV could not be measured, or None.
    """

    patient_id: str
    view: str
    frame: int
    time_ms: float | None = None
    lv_area_px: float | None = None
    lv_area_mm2: float | None = None
    lv_length_mm: float | None = None
    volume_single_ml: float | None = None
    volume_rel: float | None = None
    confidence: float | None = None
    beat: int | None = None
    is_ed: bool = False
    is_es: bool = False
    qc_rejected: bool = False
    error: str | None = None


_ARROW_TYPES: dict[object, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    list[str]: pa.list_(pa.string()),
}


def _arrow_field(name: str, hint: object) -> pa.Field:
    nullable = False
    if isinstance(hint, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(hint))
        (hint,) = args
    unit = next((u for suffix, u in UNITS.items() if name.endswith(suffix)), None)
    meta = {b"unit": unit.encode()} if unit else None
    return pa.field(name, _ARROW_TYPES[hint], nullable=nullable, metadata=meta)


def arrow_schema(record_type: type) -> pa.Schema:
    """Arrow schema of a record dataclass, with units as field metadata.

    Args:
        record_type: :class:`PatientRecord` or :class:`ImageRecord`.

    Returns:
        Schema with one field per dataclass field, in order.
    """
    hints = typing.get_type_hints(record_type)
    fields = [_arrow_field(f.name, hints[f.name]) for f in dataclasses.fields(record_type)]
    return pa.schema(fields)


def to_table(records: typing.Sequence[object], record_type: type) -> pa.Table:
    """Records to an Arrow table with the derived schema."""
    names = [f.name for f in dataclasses.fields(record_type)]
    columns = {name: [getattr(r, name) for r in records] for name in names}
    return pa.Table.from_pydict(columns, schema=arrow_schema(record_type))


@dataclass
class ChunkResult:
    """Records of one chunk of patients, as the chunk function returns them and the store writes
    them, and the seconds the chunk spent per stage (load, segment, measure).

    Attributes:
        patients: one record per patient of the chunk, in input order.
        images: one record per image attempted.
        frames: one record per segmented loop frame.
        seconds: wall seconds per stage.
    """

    patients: list[PatientRecord] = field(default_factory=list)
    images: list[ImageRecord] = field(default_factory=list)
    frames: list[FrameRecord] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
