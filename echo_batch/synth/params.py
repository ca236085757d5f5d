"""Acquisition and patient parameters of a synthetic patient, and its analytic truth."""

from __future__ import annotations

from dataclasses import dataclass

from echo_batch.domain import VIEWS, Split, View
from echo_batch.synth.shapes import LVShape

CLASSIC_SPACING_MM: tuple[float, float] = (0.154, 0.308)
"""CAMUS 2019 native pixel size ``(row_mm, col_mm)`` (header ``ElementSpacing = 0.308 0.154``)."""
SECTOR_HALF_ANGLE_DEG = 37.5
"""Half opening of the imaging sector (75° in all)."""


@dataclass(frozen=True)
class ViewSetup:
    """Acquisition of one view: probe placement, grid and sequence length.

    Positions are relative to the probe (the sector apex at the top centre of the grid).

    Attributes:
        view: 2CH or 4CH.
        tilt_deg: in-plane tilt of the LV long axis from the image vertical; positive turns the
            base towards larger columns (image right).
        apex_depth_mm: depth (along rows) of the LV cavity apex below the probe, mm.
        apex_lateral_mm: lateral offset (along columns) of the cavity apex from the probe, mm.
        depth_mm: imaging depth (sector radius), mm.
        spacing: default grid pixel size ``(row_mm, col_mm)``.
        shape: default grid ``(H, W)`` covering the sector.
        n_frames: frames of the half sequence (ED to ES inclusive).
        frame_rate_hz: frames per second of the half sequence.
    """

    view: View
    tilt_deg: float
    apex_depth_mm: float
    apex_lateral_mm: float
    depth_mm: float
    spacing: tuple[float, float]
    shape: tuple[int, int]
    n_frames: int
    frame_rate_hz: float


@dataclass(frozen=True)
class PatientParams:
    """Everything needed to render one synthetic patient.

    Attributes:
        patient_id: folder name, e.g. "patient0001".
        index: 1-based patient number (with ``seed``, selects the random streams).
        seed: cohort seed.
        ed: shape at end-diastole (largest cavity).
        es: shape at end-systole (smallest cavity).
        views: acquisition of 2CH and 4CH, in that order.
        es_before_ed: True when the sequences are stored ES first (cfg ED = NbFrame, ES = 1).
        sex: "M" or "F".
        age: years.
        image_quality: "Good", "Medium" or "Poor" (drives haze and blood contrast).
        split: official-style split the cohort assigned.
    """

    patient_id: str
    index: int
    seed: int
    ed: LVShape
    es: LVShape
    views: tuple[ViewSetup, ViewSetup]
    es_before_ed: bool
    sex: str
    age: int
    image_quality: str
    split: Split = Split.NONE

    def setup(self, view: View) -> ViewSetup:
        """Acquisition of ``view``."""
        return self.views[VIEWS.index(view)]

    def shape_at(self, phase: float) -> LVShape:
        """Shape at ``phase`` in [0, 1] of the ED→ES half cycle."""
        return self.ed.interpolate(self.es, phase)


@dataclass(frozen=True)
class PatientTruth:
    """Ground truth of one synthetic patient (one row of ``truth.csv``). Volumes in mL, EF in %.

    ``*_2ch_ml`` / ``*_4ch_ml`` are the analytic single-plane Simpson limits; ``edv_ml``/``esv_ml``
    the true volumes (= biplane limit). Lengths are base midpoint to apex; areas are LV sections.
    """

    patient_id: str
    split: str
    edv_ml: float
    esv_ml: float
    ef_pct: float
    edv_2ch_ml: float
    esv_2ch_ml: float
    ef_2ch_pct: float
    edv_4ch_ml: float
    esv_4ch_ml: float
    ef_4ch_pct: float
    length_ed_2ch_mm: float
    length_es_2ch_mm: float
    length_ed_4ch_mm: float
    length_es_4ch_mm: float
    area_ed_2ch_mm2: float
    area_es_2ch_mm2: float
    area_ed_4ch_mm2: float
    area_es_4ch_mm2: float
    tilt_2ch_deg: float
    tilt_4ch_deg: float
    spacing_row_2ch_mm: float
    spacing_col_2ch_mm: float
    spacing_row_4ch_mm: float
    spacing_col_4ch_mm: float
    height_2ch: int
    width_2ch: int
    height_4ch: int
    width_4ch: int
    n_frames_2ch: int
    n_frames_4ch: int
    es_before_ed: bool
    a_ed_mm: float
    b_ed_mm: float
    c_ed_mm: float
    a_es_mm: float
    b_es_mm: float
    c_es_mm: float
    base_frac: float
    myo_ed_mm: float
    myo_es_mm: float
    image_quality: str


def _ef(edv: float, esv: float) -> float:
    return 100.0 * (edv - esv) / edv


def patient_truth(params: PatientParams) -> PatientTruth:
    """Analytic truth of a patient (pure; nothing is rendered).

    Args:
        params: the patient.

    Returns:
        PatientTruth with true and single-plane-limit volumes, lengths, areas and acquisition.
    """
    ed, es = params.ed, params.es
    per_view: dict[str, object] = {}
    for view in VIEWS:
        tag = "2ch" if view == View.A2C else "4ch"
        setup = params.setup(view)
        per_view |= {
            f"edv_{tag}_ml": ed.single_plane_volume_ml(view),
            f"esv_{tag}_ml": es.single_plane_volume_ml(view),
            f"ef_{tag}_pct": _ef(ed.single_plane_volume_ml(view), es.single_plane_volume_ml(view)),
            f"length_ed_{tag}_mm": ed.length_mm,
            f"length_es_{tag}_mm": es.length_mm,
            f"area_ed_{tag}_mm2": ed.section_area_mm2(view),
            f"area_es_{tag}_mm2": es.section_area_mm2(view),
            f"tilt_{tag}_deg": setup.tilt_deg,
            f"spacing_row_{tag}_mm": setup.spacing[0],
            f"spacing_col_{tag}_mm": setup.spacing[1],
            f"height_{tag}": setup.shape[0],
            f"width_{tag}": setup.shape[1],
            f"n_frames_{tag}": setup.n_frames,
        }
    return PatientTruth(
        patient_id=params.patient_id,
        split=params.split.value,
        edv_ml=ed.volume_ml,
        esv_ml=es.volume_ml,
        ef_pct=_ef(ed.volume_ml, es.volume_ml),
        es_before_ed=params.es_before_ed,
        a_ed_mm=ed.a_mm,
        b_ed_mm=ed.b_mm,
        c_ed_mm=ed.c_mm,
        a_es_mm=es.a_mm,
        b_es_mm=es.b_mm,
        c_es_mm=es.c_mm,
        base_frac=ed.base_frac,
        myo_ed_mm=ed.myo_mm,
        myo_es_mm=es.myo_mm,
        image_quality=params.image_quality,
        **per_view,  # type: ignore[arg-type]
    )
