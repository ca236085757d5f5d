"""Quality-control flags with one table of thresholds and their sources.

Two levels:

* per image (:func:`image_qc` measures, :func:`image_flags` judges): anatomical validity of one
  label map after the criteria of Painchaud et al. 2020 for CAMUS (one LV component, no holes, LV
  enclosed by myocardium and atrium, myocardium capping the apex, atrium at the base), plausible
  LV length and area in mm, model confidence;
* per patient (:func:`patient_flags`): every image flag, failed images, 2CH/4CH long-axis mismatch
  and single-plane EF disagreement, ESV >= EDV, EF out of range, image quality of the cfg;
* the left atrium (:func:`atrium_image_flags`, :func:`atrium_patient_flags`): an atrium cut by the
  sector or the image border, LA lengths of the two views that disagree. They concern the
  left-atrial volume only and never block (``qc_pass`` is about the LV).

A flag is blocking when the number it concerns should not be trusted without review;
``qc_pass`` is False as soon as one blocking flag is set. Thresholds of the anatomical criteria were
derived on the expert masks of the CAMUS-224 training and validation splits only
(``benchmarks/qc_thresholds.py``; figures in ``docs/quality.md``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

from echo_batch.domain import ImageKey, Instant, Label, Status, View
from echo_batch.measure.landmarks import GeometryFailure, ViewGeometry, crop_padded
from echo_batch.measure.patient import PatientVolumes
from echo_batch.store.records import ImageRecord


class QCFlag(StrEnum):
    """Quality flags written to ``qc_flags`` (image flags also appear on their patient)."""

    IMAGE_FAILED = "image_failed"
    LV_FRAGMENTED = "lv_fragmented"
    LV_HOLES = "lv_holes"
    LV_NOT_ENCLOSED = "lv_not_enclosed"
    APEX_NOT_CAPPED = "apex_not_capped"
    LA_NOT_AT_BASE = "la_not_at_base"
    LV_LENGTH_IMPLAUSIBLE = "lv_length_implausible"
    LV_AREA_IMPLAUSIBLE = "lv_area_implausible"
    LOW_CONFIDENCE = "low_confidence"
    LENGTH_MISMATCH = "length_mismatch_2ch_4ch"
    VIEW_EF_DISAGREEMENT = "ef_2ch_4ch_disagree"
    ESV_GE_EDV = "esv_ge_edv"
    EF_OUT_OF_RANGE = "ef_out_of_range"
    POOR_IMAGE_QUALITY = "poor_image_quality"
    LA_CUT = "la_cut"
    LA_LENGTH_MISMATCH = "la_length_mismatch_2ch_4ch"


@dataclass(frozen=True)
class Threshold:
    """One QC threshold.

    Attributes:
        value: the limit (the lower limit of a range).
        unit: its unit.
        blocking: whether the flag makes ``qc_pass`` False.
        source: where the value comes from.
        upper: upper limit of a range, None for one-sided limits.
    """

    value: float
    unit: str
    blocking: bool
    source: str
    upper: float | None = None


_DERIVED = (
    "derived on the expert masks of the CAMUS-224 training + validation splits (1800 images, "
    "benchmarks/qc_thresholds.py; with all thresholds, 0 of the 2000 expert images of the 500 "
    "patients are flagged and 100 % of 10000 corrupted ones are caught)"
)
_PAINCHAUD = (
    "anatomical criteria for CAMUS of Painchaud et al., Cardiac segmentation with strong "
    "anatomical guarantees, IEEE TMI 2020"
)
_CAMUS_PROTOCOL = (
    "in the CAMUS expert annotations the myocardium encloses the LV up to the mitral hinges "
    "(Leclerc et al. 2019)"
)

QC_THRESHOLDS: dict[QCFlag, Threshold] = {
    QCFlag.IMAGE_FAILED: Threshold(
        0, "images", True, "any image whose LV could not be measured (no volume without it)"
    ),
    QCFlag.LV_FRAGMENTED: Threshold(
        0.01,
        "share of LV pixels",
        True,
        f"{_PAINCHAUD}: one LV component; share of LV pixels outside the largest 8-connected "
        f"component; {_DERIVED}: max 0",
    ),
    QCFlag.LV_HOLES: Threshold(
        2.0,
        "mm^2",
        True,
        f"{_PAINCHAUD}: no hole in the LV; area of non-LV pixels enclosed by the LV; "
        f"{_DERIVED}: max 0 mm^2",
    ),
    QCFlag.LV_NOT_ENCLOSED: Threshold(
        5.0,
        "mm",
        True,
        f"{_PAINCHAUD}: no LV-background frontier; pixel-edge length of the LV border on "
        f"background; {_DERIVED}: 99.5th percentile 1.6 mm, max 2.9 mm",
    ),
    QCFlag.APEX_NOT_CAPPED: Threshold(
        0.05,
        "share of apical LV border",
        True,
        f"{_CAMUS_PROTOCOL}; share of the LV border in the apical half of the long axis that lies "
        f"on background; {_DERIVED}: max 0",
    ),
    QCFlag.LA_NOT_AT_BASE: Threshold(
        3.0,
        "mm",
        True,
        f"{_CAMUS_PROTOCOL}, the atrium lies against the mitral base; distance from the base "
        f"mid-point to the nearest atrium pixel (no atrium: infinite); {_DERIVED}: 99.5th "
        "percentile 0.94 mm, max 1.34 mm",
    ),
    QCFlag.LV_LENGTH_IMPLAUSIBLE: Threshold(
        35.0,
        "mm",
        True,
        f"LV long axis in mm from the true spacing; {_DERIVED}: 44-107 mm at ED and ES; limits "
        "20 % outside",
        upper=130.0,
    ),
    QCFlag.LV_AREA_IMPLAUSIBLE: Threshold(
        250.0,
        "mm^2",
        True,
        f"LV area in mm^2 from the true spacing; {_DERIVED}: 411-6702 mm^2; limits 40 % outside",
        upper=9400.0,
    ),
    QCFlag.LOW_CONFIDENCE: Threshold(
        0.945,
        "probability",
        True,
        "default bundle on the CAMUS-224 validation split (200 images): confidence 0.930-0.968, "
        "Pearson r 0.62 with LV Dice; the 3.5 % of images below 0.945 had mean LV Dice 0.865 "
        "against 0.946 above, and the 6 of 50 patients with such an image a CAMUS EF MAE of 11.8 "
        "against 4.4. 0.945 is the highest value in steps of 0.005 that flags at most 15 % of the "
        "validation patients. Re-derived the same way for the slim default bundle "
        "(camus224-unet-slim, 2026-12-05): confidence 0.930-0.966, r 0.60 with LV Dice, 3.0 % of "
        "images below 0.945 (mean LV Dice 0.867 against 0.945), 5 of 50 patients flagged; 0.950 "
        "would flag 20. Bundle-specific: re-derive it for another model",
    ),
    QCFlag.LENGTH_MISMATCH: Threshold(
        0.10,
        "relative difference",
        False,
        "biplane Simpson assumes both views cut the true apex: 2CH and 4CH long axes at the same "
        "instant should differ by < 10 % (ASE/EACVI practice, Lang et al. 2015); "
        "(L_max - L_min) / L_max. Not blocking: it fires on 25 % of the CAMUS-224 expert "
        "patients, where it reflects the acquisition (foreshortening), not the segmentation",
    ),
    QCFlag.VIEW_EF_DISAGREEMENT: Threshold(
        25.0,
        "EF points",
        True,
        "the single-plane EFs of the 2CH and 4CH views measure the same ventricle; a difference "
        "of more than 25 points points to one view's segmentation (or a strongly regional wall "
        "motion). Expert masks, training + validation: 95th percentile 23.8, 97.5th 27.1 points; "
        "25 flags 3.8 % of those patients",
    ),
    QCFlag.ESV_GE_EDV: Threshold(
        0, "mL", True, "ESV >= EDV is physically impossible for correctly phased ED/ES frames"
    ),
    QCFlag.EF_OUT_OF_RANGE: Threshold(
        5,
        "percent",
        True,
        "EF outside 5-85 % is outside physiological limits (project spec, echo-batch issue 6)",
        upper=85,
    ),
    QCFlag.POOR_IMAGE_QUALITY: Threshold(
        0,
        "cfg ImageQuality",
        False,
        "ImageQuality 'Poor' in the cfg (expert rating, CAMUS). Reported, not blocking: the expert "
        "masks and EF exist for these patients, and the report shows the error by quality",
    ),
    QCFlag.LA_CUT: Threshold(
        5.0,
        "mm",
        False,
        "an atrium whose far wall lies beyond the imaging depth or outside the sector is drawn up "
        "to the sector's edge, and its area, length and volume are too small (Lang et al. 2015: "
        "LA views are acquired to show the whole atrium, without foreshortening); length of the "
        "LA border on the edge of the sector (convex hull of the image's bright pixels) or of the "
        "image, on the LV end-systolic image. Expert masks of the CAMUS-224 training + "
        "validation splits (900 ES images): 60.3 % have none, 38.1 % more than 5 mm (median 39 "
        "mm), 1.6 % 0.6-5 mm (single corner pixels). Not blocking: concerns the LA volume only",
    ),
    QCFlag.LA_LENGTH_MISMATCH: Threshold(
        5.0,
        "mm",
        False,
        "LA lengths (annulus mid-point to roof) of the 2CH and 4CH views at LV end-systole should "
        "differ by less than 5 mm for the biplane LA volume (ASE/EACVI chamber quantification, "
        "Lang et al. 2015, left atrium); |L_2CH - L_4CH|. Not blocking: concerns the LA volume "
        "only",
    ),
}

_PAD = 2


@dataclass(frozen=True)
class ImageQC:
    """Anatomical measurements of one label map that the image flags judge.

    Attributes:
        lv_pixels: LV pixels in the image.
        lv_extra_share: share of LV pixels outside the largest 8-connected LV component.
        lv_hole_mm2: area of non-LV pixels enclosed by the LV, mm^2.
        lv_background_mm: pixel-edge length of the LV border on background (holes excluded), mm.
        apex_background_share: share of the LV border length in the apical half of the long axis
            that lies on background (None without geometry).
        la_gap_mm: distance from the base mid-point to the nearest atrium pixel, mm (inf without
            atrium, None without geometry).
        lv_length_mm: long axis of the measured LV (None without geometry).
        lv_area_mm2: area of the measured LV (None without geometry).
    """

    lv_pixels: int
    lv_extra_share: float = 0.0
    lv_hole_mm2: float = 0.0
    lv_background_mm: float = 0.0
    apex_background_share: float | None = None
    la_gap_mm: float | None = None
    lv_length_mm: float | None = None
    lv_area_mm2: float | None = None


def _frontier(
    inside: np.ndarray, other: np.ndarray, sy: float, sx: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel edges between two disjoint ``(h, w)`` bool masks.

    Args:
        inside: first mask.
        other: second mask.
        sy: row spacing, mm.
        sx: column spacing, mm.

    Returns:
        ``(points, lengths)``: ``(K, 2)`` edge mid-points in (row, col) pixels of the masks and
        ``(K,)`` edge lengths in mm (``sy`` between left/right neighbours, ``sx`` between
        up/down neighbours).
    """
    horiz = (inside[:, :-1] & other[:, 1:]) | (other[:, :-1] & inside[:, 1:])
    vert = (inside[:-1, :] & other[1:, :]) | (other[:-1, :] & inside[1:, :])
    hr, hc = np.nonzero(horiz)
    vr, vc = np.nonzero(vert)
    points = np.concatenate([np.stack([hr, hc + 0.5], axis=1), np.stack([vr + 0.5, vc], axis=1)])
    lengths = np.concatenate([np.full(len(hr), sy), np.full(len(vr), sx)])
    return points.astype(float), lengths


def image_qc(
    labels: np.ndarray,
    spacing: tuple[float, float],
    geometry: ViewGeometry | GeometryFailure | None = None,
) -> ImageQC:
    """Measure the anatomical criteria of one label map (work on the LV bounding box only).

    Args:
        labels: ``(H, W)`` uint8 label map (0 background, 1 LV, 2 myocardium, 3 atrium), apex up.
        spacing: ``(row_mm, col_mm)`` pixel size.
        geometry: landmarks of this label map from
            :func:`echo_batch.measure.landmarks.measure_lv` (the apex and atrium
            criteria need them).

    Returns:
        The measurements; ``lv_pixels`` 0 and defaults when there is no LV.
    """
    labels = np.asarray(labels)
    sy, sx = float(spacing[0]), float(spacing[1])
    lv_full = np.ascontiguousarray(labels == Label.LV).view(np.uint8)
    col0, row0, w, h = cv2.boundingRect(lv_full)
    if w == 0 or h == 0:
        return ImageQC(lv_pixels=0)
    crop = crop_padded(labels, row0, col0, (h, w), _PAD)
    lv = crop == Label.LV
    _, _, stats, _ = cv2.connectedComponentsWithStats(lv.view(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    total = int(areas.sum())
    _, out_cc = cv2.connectedComponents((~lv).view(np.uint8), connectivity=4)
    exterior = out_cc == out_cc[0, 0]  # the padded frame is never LV
    holes = int(np.count_nonzero(~exterior & ~lv))
    background = exterior & (crop == Label.BG)
    bg_points, bg_lengths = _frontier(lv, background, sy, sx)
    fields: dict[str, float | None] = {}
    if isinstance(geometry, ViewGeometry):
        border_points, border_lengths = _frontier(lv, ~lv, sy, sx)
        origin = np.array([row0 - _PAD, col0 - _PAD], float)
        scale = np.array([sy, sx])
        on_apex = _apical(border_points, origin, scale, geometry)
        bg_on_apex = _apical(bg_points, origin, scale, geometry)
        apex_border = float(border_lengths[on_apex].sum())
        fields["apex_background_share"] = (
            float(bg_lengths[bg_on_apex].sum()) / apex_border if apex_border > 0 else 0.0
        )
        fields["la_gap_mm"] = _la_gap_mm(labels, (sy, sx), geometry.base_mid_mm)
        fields["lv_length_mm"] = geometry.length_mm
        fields["lv_area_mm2"] = geometry.area_mm2
    return ImageQC(
        lv_pixels=total,
        lv_extra_share=float(1.0 - areas.max() / total),
        lv_hole_mm2=holes * sy * sx,
        lv_background_mm=float(bg_lengths.sum()),
        **fields,
    )


def _apical(
    points: np.ndarray, origin: np.ndarray, scale: np.ndarray, geometry: ViewGeometry
) -> np.ndarray:
    """``(K,)`` True for crop points in the apical half of the long axis (base mid -> apex)."""
    axis = geometry.apex_mm - geometry.base_mid_mm
    mm = (points + origin) * scale
    return (mm - geometry.base_mid_mm) @ axis >= 0.5 * float(axis @ axis)


def _la_gap_mm(labels: np.ndarray, spacing: tuple[float, float], base_mid_mm: np.ndarray) -> float:
    """Distance from the base mid-point to the nearest atrium pixel centre, mm (inf: no atrium)."""
    rows, cols = np.nonzero(labels == Label.LA)
    if rows.size == 0:
        return math.inf
    dy = rows * spacing[0] - base_mid_mm[0]
    dx = cols * spacing[1] - base_mid_mm[1]
    return float(np.sqrt((dy * dy + dx * dx).min()))


def _out_of(flag: QCFlag, value: float | None) -> bool:
    if value is None:
        return False
    t = QC_THRESHOLDS[flag]
    return value < t.value or (t.upper is not None and value > t.upper)


def _above(flag: QCFlag, value: float | None) -> bool:
    return value is not None and value > QC_THRESHOLDS[flag].value


def image_flags(qc: ImageQC, confidence: float | None = None) -> list[str]:
    """Flags of one image from its measurements.

    Args:
        qc: measurements of :func:`image_qc`.
        confidence: model confidence of the image (None for expert masks).

    Returns:
        Sorted flag values (empty when nothing is wrong). An image without LV gets no anatomical
        flag: it fails measurement, which ``image_failed`` reports on the patient.
    """
    flags: set[QCFlag] = set()
    if qc.lv_pixels > 0:
        checks = {
            QCFlag.LV_FRAGMENTED: _above(QCFlag.LV_FRAGMENTED, qc.lv_extra_share),
            QCFlag.LV_HOLES: _above(QCFlag.LV_HOLES, qc.lv_hole_mm2),
            QCFlag.LV_NOT_ENCLOSED: _above(QCFlag.LV_NOT_ENCLOSED, qc.lv_background_mm),
            QCFlag.APEX_NOT_CAPPED: _above(QCFlag.APEX_NOT_CAPPED, qc.apex_background_share),
            QCFlag.LA_NOT_AT_BASE: _above(QCFlag.LA_NOT_AT_BASE, qc.la_gap_mm),
            QCFlag.LV_LENGTH_IMPLAUSIBLE: _out_of(QCFlag.LV_LENGTH_IMPLAUSIBLE, qc.lv_length_mm),
            QCFlag.LV_AREA_IMPLAUSIBLE: _out_of(QCFlag.LV_AREA_IMPLAUSIBLE, qc.lv_area_mm2),
        }
        flags.update(f for f, hit in checks.items() if hit)
    if confidence is not None and confidence < QC_THRESHOLDS[QCFlag.LOW_CONFIDENCE].value:
        flags.add(QCFlag.LOW_CONFIDENCE)
    return sorted(f.value for f in flags)


def length_mismatch(geometries: Mapping[ImageKey, ViewGeometry]) -> float | None:
    """Largest relative 2CH/4CH long-axis difference over the instants with both views.

    Args:
        geometries: measured LV geometry per (view, instant).

    Returns:
        ``max over instants of (L_max - L_min) / L_max``; None when no instant has both views.
    """
    worst: float | None = None
    for instant in Instant:
        a = geometries.get(ImageKey(View.A2C, instant))
        b = geometries.get(ImageKey(View.A4C, instant))
        if a is None or b is None:
            continue
        longer = max(a.length_mm, b.length_mm)
        diff = abs(a.length_mm - b.length_mm) / longer
        worst = diff if worst is None else max(worst, diff)
    return worst


def patient_flags(
    volumes: PatientVolumes,
    images: Sequence[ImageRecord],
    geometries: Mapping[ImageKey, ViewGeometry] | None = None,
    image_quality: str | None = None,
) -> list[str]:
    """Flags of one patient: its image flags and the patient-level criteria.

    Args:
        volumes: biplane and single-plane volumes of the patient.
        images: its image records (their ``qc_flags`` are carried over).
        geometries: measured LV geometry per (view, instant), for the 2CH/4CH length check.
        image_quality: ``ImageQuality`` of the cfg ("Good", "Medium", "Poor") when known.

    Returns:
        Sorted flag values (empty when nothing is wrong).
    """
    flags: set[str] = {f for r in images for f in (r.qc_flags or ())}
    if any(r.status == Status.FAILED.value for r in images):
        flags.add(QCFlag.IMAGE_FAILED.value)
    if volumes.edv_ml is not None and volumes.esv_ml is not None:
        if volumes.esv_ml >= volumes.edv_ml:
            flags.add(QCFlag.ESV_GE_EDV.value)
        if _out_of(QCFlag.EF_OUT_OF_RANGE, volumes.ef_pct):
            flags.add(QCFlag.EF_OUT_OF_RANGE.value)
    low = QC_THRESHOLDS[QCFlag.LOW_CONFIDENCE].value
    if any(r.confidence is not None and r.confidence < low for r in images):
        flags.add(QCFlag.LOW_CONFIDENCE.value)
    ef_2ch, ef_4ch = (volumes.single.get(v, (None, None, None))[2] for v in (View.A2C, View.A4C))
    if (
        ef_2ch is not None
        and ef_4ch is not None
        and _above(QCFlag.VIEW_EF_DISAGREEMENT, abs(ef_2ch - ef_4ch))
    ):
        flags.add(QCFlag.VIEW_EF_DISAGREEMENT.value)
    if _above(QCFlag.LENGTH_MISMATCH, length_mismatch(geometries or {})):
        flags.add(QCFlag.LENGTH_MISMATCH.value)
    if image_quality is not None and image_quality.strip().lower() == "poor":
        flags.add(QCFlag.POOR_IMAGE_QUALITY.value)
    return sorted(flags)


def is_blocking(flags: Sequence[str]) -> bool:
    """True when any flag is blocking (unknown flag names count as blocking)."""
    return any(
        f not in QCFlag.__members__.values() or QC_THRESHOLDS[QCFlag(f)].blocking for f in flags
    )


def atrium_image_flags(la_edge_mm: float | None) -> list[str]:
    """Flags of the atrium of one LV end-systolic image.

    Args:
        la_edge_mm: length of the atrium's border on the sector's or image's edge
            (:func:`echo_batch.qc.atrium.la_edge_mm`), mm; None when not measured.

    Returns:
        ``["la_cut"]`` above its threshold, else empty.
    """
    return [QCFlag.LA_CUT.value] if _above(QCFlag.LA_CUT, la_edge_mm) else []


def atrium_patient_flags(length_2ch_mm: float | None, length_4ch_mm: float | None) -> list[str]:
    """Flags of a patient's two LA lengths at LV end-systole.

    Args:
        length_2ch_mm: LA length in the 2CH view, mm (None when not measured).
        length_4ch_mm: LA length in the 4CH view, mm.

    Returns:
        ``["la_length_mismatch_2ch_4ch"]`` when both exist and differ by more than the limit.
    """
    if length_2ch_mm is None or length_4ch_mm is None:
        return []
    gap = abs(float(length_2ch_mm) - float(length_4ch_mm))
    return [QCFlag.LA_LENGTH_MISMATCH.value] if _above(QCFlag.LA_LENGTH_MISMATCH, gap) else []
