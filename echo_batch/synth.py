"""Synthetic CAMUS-layout cohorts with analytically known LV volumes and EF.

Geometry
    The LV cavity at one instant is a truncated ellipsoid. In its own frame (``z`` along the long
    axis, positive towards the apex, origin at the ellipsoid centre) the cavity is
    ``x²/a² + y²/b² + z²/c² <= 1`` with ``z >= z0 = -t·c`` (``0 <= t <= 0.3``): the apex is at
    ``z = c`` and a flat base plane (the mitral annulus) cuts the ellipsoid at or below its equator,
    so the base is never wider than the cavity. The 2CH view is the long-axis plane holding ``a``,
    the 4CH view the plane holding ``b``. Closed forms (``g(t) = 2/3 + t - t³/3``):

    - true volume ``V = π a b ∫_{z0}^{c} (1 - z²/c²) dz = π a b c g(t)``;
    - single-plane Simpson limit of a view with in-plane semi-axis ``s`` (``a`` or ``b``):
      ``π s² c g(t)`` (circular disks of the view's diameter); biplane Simpson converges to ``V``;
    - long axis (base midpoint to apex) ``L = c (1 + t)``, the same in both views;
    - section area ``A = 2 s c (π/4 + (t √(1-t²) + asin t) / 2)``.

    End-systole shortens the long axis by 8-17 % and scales ``a`` and ``b`` so that the sampled
    target EF (uniform in 15-75 %) holds exactly. The apex stays put during the cycle and the base
    moves towards it, like a real LV.

Labels (CAMUS): 1 LV cavity = the section; 2 myocardium = the band between the cavity and a
confocal-like outer ellipse with semi-axes ``(s + w, c + w)`` above the base plane (``w`` 8-12 mm,
thicker at ES; the band does not cross the base); 3 left atrium = an ellipse below the base,
truncated by the base plane so that its top chord is exactly the mitral opening; 0 elsewhere.

Rasterisation evaluates the analytic inside-tests at pixel centres (pixel ``(i, j)`` sits at
``(y, x) = (i·row_mm, j·col_mm)``, SimpleITK's convention with origin 0), so the label boundary is
the analytic boundary sampled without bias and areas converge at the pixel-size rate. No
supersampling: the measured geometry uses the mask boundary, which this samples directly.

Appearance: a 75° sector with its apex at the top centre, fully developed speckle (the magnitude of
a smoothed complex Gaussian field, i.e. Rayleigh-distributed), bright myocardium, dark blood,
slowly varying tissue echogenicity, depth attenuation and near-field haze that grows as the image
quality worsens; zero outside the sector. Speckle decorrelates smoothly along a half sequence
(two fields blended with cos/sin weights), so the ED and ES stills are exactly the first and last
frames of the half sequence.

Determinism: everything of patient ``k`` derives from ``numpy.random.default_rng((seed, k))`` and
fixed per-view child streams, so a patient is the same whatever the cohort size and the same seed
gives byte-identical arrays.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from echo_batch.domain import INSTANTS, VIEWS, Instant, Label, Split, View
from echo_batch.writers import write_cfg, write_image, write_text

__all__ = [
    "CLASSIC_SPACING_MM",
    "SECTOR_HALF_ANGLE_DEG",
    "LVShape",
    "PatientParams",
    "PatientTruth",
    "ViewSetup",
    "patient_truth",
    "plan_cohort",
    "rasterise_view",
    "render_sequence",
    "sample_patient",
    "synth_cohort",
    "write_patient",
]

logger = logging.getLogger(__name__)

CLASSIC_SPACING_MM: tuple[float, float] = (0.154, 0.308)
"""CAMUS 2019 native pixel size ``(row_mm, col_mm)`` (header ``ElementSpacing = 0.308 0.154``)."""
SECTOR_HALF_ANGLE_DEG = 37.5
"""Half opening of the imaging sector (75° in all)."""

Format = Literal["nifti", "mhd"]

# Appearance constants (reflectivity before speckle; 1.0 is the brightest tissue).
_BLOOD_REFL = {"Good": 0.05, "Medium": 0.08, "Poor": 0.13}
_HAZE = {"Good": 0.0, "Medium": 0.10, "Poor": 0.22}
_MYO_REFL = 0.85
_ATTENUATION_PER_MM = 0.005
_SPECKLE_SIGMA_MM = (0.35, 0.8)  # (axial = row, lateral = col) correlation length
_EDGE_SIGMA_MM = 0.6
_GAIN = 0.75
_GAMMA = 0.7
_RAYLEIGH_MEAN = math.sqrt(math.pi / 2.0)


def _g(t: float) -> float:
    """``∫_{-t}^{1} (1 - s²) ds`` for the base plane at ``z0 = -t c``."""
    return 2.0 / 3.0 + t - t**3 / 3.0


def _half_disk(t: float) -> float:
    """``∫_{-t}^{1} √(1 - s²) ds``."""
    return math.pi / 4.0 + (t * math.sqrt(1.0 - t * t) + math.asin(t)) / 2.0


@dataclass(frozen=True)
class LVShape:
    """The 3-D LV cavity (and its wall and atrium) at one instant.

    Attributes:
        a_mm: transverse semi-axis lying in the 2CH plane, mm.
        b_mm: transverse semi-axis lying in the 4CH plane, mm.
        c_mm: long semi-axis, ellipsoid centre to apex, mm.
        base_frac: ``t``; the base plane is at ``z0 = -t·c`` below the centre (0 <= t <= 0.3).
        myo_mm: myocardial band thickness ``w`` at the equator and apex, mm.
        la_width_ratio: atrial transverse semi-axis over the half mitral opening (> 1).
        la_depth_mm: atrial semi-axis along the long axis, mm.
    """

    a_mm: float
    b_mm: float
    c_mm: float
    base_frac: float
    myo_mm: float
    la_width_ratio: float
    la_depth_mm: float

    def semi_axis_mm(self, view: View) -> float:
        """In-plane transverse semi-axis of ``view`` (``a`` for 2CH, ``b`` for 4CH), mm."""
        return self.a_mm if view == View.A2C else self.b_mm

    @property
    def length_mm(self) -> float:
        """Long axis, base midpoint to apex, mm (identical in both views)."""
        return self.c_mm * (1.0 + self.base_frac)

    @property
    def volume_ml(self) -> float:
        """True cavity volume ``π a b c g(t)``, mL."""
        return math.pi * self.a_mm * self.b_mm * self.c_mm * _g(self.base_frac) / 1000.0

    def single_plane_volume_ml(self, view: View) -> float:
        """Limit of single-plane Simpson in ``view``: ``π s² c g(t)``, mL."""
        s = self.semi_axis_mm(view)
        return math.pi * s * s * self.c_mm * _g(self.base_frac) / 1000.0

    def section_area_mm2(self, view: View) -> float:
        """Area of the cavity section in ``view`` (truncated half-ellipse), mm²."""
        return 2.0 * self.semi_axis_mm(view) * self.c_mm * _half_disk(self.base_frac)

    def base_half_width_mm(self, view: View) -> float:
        """Half the mitral opening in ``view``, mm."""
        return self.semi_axis_mm(view) * math.sqrt(1.0 - self.base_frac**2)

    def interpolate(self, other: LVShape, phase: float) -> LVShape:
        """Shape a fraction ``phase`` (0 = self, 1 = other) of the way to ``other``."""
        return LVShape(
            **{
                f.name: (1.0 - phase) * getattr(self, f.name) + phase * getattr(other, f.name)
                for f in fields(self)
            }
        )


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


# --------------------------------------------------------------------------------------------
# Sampling


def _sample_shapes(rng: np.random.Generator) -> tuple[LVShape, LVShape]:
    """ED and ES shapes with a target EF uniform in 15-75 %."""
    c = rng.uniform(35.0, 55.0)
    a = rng.uniform(18.0, 30.0)
    b = rng.uniform(18.0, 28.5)
    if abs(a - b) < 1.5:  # keep a != b so the two single-plane volumes differ
        b = a + 1.5 if (b >= a and a + 1.5 <= 30.0) or a - 1.5 < 18.0 else a - 1.5
    t = rng.uniform(0.0, 0.3)
    myo = rng.uniform(8.0, 10.0)
    la_ratio = rng.uniform(1.1, 1.4)
    la_depth = rng.uniform(15.0, 22.0)
    ef = rng.uniform(0.15, 0.75)
    shortening = rng.uniform(0.08, min(0.17, ef))  # long-axis shortening, <= EF keeps k <= 1
    k = math.sqrt((1.0 - ef) / (1.0 - shortening))  # transverse scale, k_a * k_b = k²
    r = math.exp(rng.uniform(-0.04, 0.04))
    if k * max(r, 1.0 / r) > 1.0:
        r = 1.0
    la_growth = rng.uniform(1.1, 1.25)
    thickening = rng.uniform(1.1, 1.25)
    ed = LVShape(a, b, c, t, myo, la_ratio, la_depth)
    es = LVShape(
        a_mm=a * k * r,
        b_mm=b * k / r,
        c_mm=c * (1.0 - shortening),
        base_frac=t,
        myo_mm=min(myo * thickening, 12.0),
        la_width_ratio=la_ratio * la_growth / k,
        la_depth_mm=la_depth * la_growth,
    )
    return ed, es


def _spacing_kind(rng: np.random.Generator) -> tuple[float, float]:
    u = rng.random()
    iso = round(float(rng.uniform(0.2, 0.35)), 3)
    if u < 0.4:
        return CLASSIC_SPACING_MM
    if u < 0.6:
        return (CLASSIC_SPACING_MM[1], CLASSIC_SPACING_MM[0])
    return (iso, iso)


def _outline_mm(
    shape: LVShape, view: View, tilt_deg: float, apex_depth: float, apex_lateral: float
) -> tuple[np.ndarray, np.ndarray]:
    """Outline points ``(depth, lateral)`` in mm from the probe of the wall and the atrium."""
    e, n = _axes(tilt_deg)
    centre = np.array([apex_lateral, apex_depth]) - shape.c_mm * e
    s, c, w = shape.semi_axis_mm(view), shape.c_mm, shape.myo_mm
    z0 = -shape.base_frac * c
    ra, rz, zc = _atrium(shape, view)
    psi = np.linspace(0.0, 2.0 * np.pi, 73)
    vs = np.concatenate([(s + w) * np.cos(psi), ra * np.cos(psi)])
    zs = np.concatenate(
        [np.maximum((c + w) * np.sin(psi), z0), np.minimum(zc + rz * np.sin(psi), z0)]
    )
    pts = centre[:, None] + e[:, None] * zs + n[:, None] * vs
    return pts[1], pts[0]


def _place_apex(
    rng: np.random.Generator, view: View, shapes: tuple[LVShape, ...], tilt: float
) -> tuple[float, float]:
    """Apex ``(depth, lateral)`` in mm with wall and atrium inside the sector's opening."""
    myo = max(shape.myo_mm for shape in shapes)
    apex_depth = float(rng.uniform(myo + 8.0, myo + 20.0))
    # Shift the apex against the tilt so the chambers stay near the sector's centre line.
    length = max(shape.length_mm for shape in shapes)
    lateral = -0.5 * length * math.sin(math.radians(tilt)) + float(rng.uniform(-4.0, 4.0))
    limit = math.tan(math.radians(SECTOR_HALF_ANGLE_DEG - 2.0))
    for _ in range(100):
        outlines = [_outline_mm(shape, view, tilt, apex_depth, lateral) for shape in shapes]
        if all(np.all(np.abs(x) <= y * limit) for y, x in outlines):
            break
        apex_depth += 2.0
    return apex_depth, lateral


def _grid(
    rng: np.random.Generator, depth: float, max_side: int | None
) -> tuple[tuple[float, float], tuple[int, int]]:
    """Pixel spacing ``(row_mm, col_mm)`` and grid ``(H, W)`` covering the sector."""
    width_mm = 2.0 * depth * math.sin(math.radians(SECTOR_HALF_ANGLE_DEG)) + 4.0
    row_mm, col_mm = _spacing_kind(rng)
    if max_side is not None:
        # Like a dataset resized to a square input (camus224): both axes fill max_side.
        row_mm = round(depth / (max_side - 1), 5)
        col_mm = round(width_mm / (max_side - 1), 5)
    return (row_mm, col_mm), (round(depth / row_mm) + 1, round(width_mm / col_mm) + 1)


def _sample_view(
    rng: np.random.Generator, view: View, ed: LVShape, es: LVShape, max_side: int | None
) -> ViewSetup:
    tilt = float(rng.uniform(-20.0, 20.0))
    apex_depth, lateral = _place_apex(rng, view, (ed, es), tilt)
    need = max(
        float(np.hypot(*_outline_mm(shape, view, tilt, apex_depth, lateral)).max())
        for shape in (ed, es)
    )
    depth = max(float(rng.uniform(120.0, 170.0)), need + 8.0)
    spacing, grid = _grid(rng, depth, max_side)
    n_frames = int(rng.integers(10, 21))
    systole_s = float(rng.uniform(0.28, 0.38))
    return ViewSetup(
        view=view,
        tilt_deg=tilt,
        apex_depth_mm=apex_depth,
        apex_lateral_mm=lateral,
        depth_mm=depth,
        spacing=spacing,
        shape=grid,
        n_frames=n_frames,
        frame_rate_hz=round((n_frames - 1) / systole_s, 1),
    )


def sample_patient(index: int, seed: int = 0, *, max_side: int | None = None) -> PatientParams:
    """Draw the parameters of patient ``index`` of the cohort ``seed`` (pure, deterministic).

    Args:
        index: 1-based patient number; the id is ``patient{index:04d}``.
        seed: cohort seed.
        max_side: when given, every view is a ``(max_side, max_side)`` grid over the same field
            of view (spacing = depth or sector width over ``max_side - 1``, so mildly anisotropic
            and different per patient), like a cohort resized to a square network input; e.g.
            256 for scale benchmarks. Shapes and truth volumes do not change. None keeps the
            native spacings: the CAMUS 2019 pair (0.154, 0.308) mm, its swap, or isotropic
            0.2-0.35 mm.

    Returns:
        PatientParams (split NONE; :func:`plan_cohort` assigns splits).
    """
    rng = np.random.default_rng((seed, index))
    ed, es = _sample_shapes(rng)
    views = tuple(_sample_view(rng, view, ed, es, max_side) for view in VIEWS)
    return PatientParams(
        patient_id=f"patient{index:04d}",
        index=index,
        seed=seed,
        ed=ed,
        es=es,
        views=views,  # type: ignore[arg-type]
        es_before_ed=bool(rng.random() < 0.1),
        sex="M" if rng.random() < 0.5 else "F",
        age=int(rng.integers(20, 91)),
        image_quality=str(rng.choice(["Good", "Medium", "Poor"], p=[0.4, 0.4, 0.2])),
    )


def _assign_splits(n_patients: int, seed: int) -> list[Split]:
    """80/10/10 training/validation/testing, shuffled deterministically."""
    n_small = round(0.1 * n_patients)
    if n_patients >= 3:
        n_small = max(n_small, 1)
    splits = [Split.VALIDATION] * n_small + [Split.TESTING] * n_small
    splits += [Split.TRAINING] * (n_patients - len(splits))
    order = np.random.default_rng((seed, 0)).permutation(n_patients)
    out = [Split.TRAINING] * n_patients
    for position, patient in enumerate(order):
        out[patient] = splits[position]
    return out


def plan_cohort(
    n_patients: int, seed: int = 0, *, max_side: int | None = None
) -> list[tuple[PatientParams, PatientTruth]]:
    """Parameters and truth of a whole cohort without rendering or writing anything.

    Args:
        n_patients: number of patients (ids ``patient0001`` ...).
        seed: cohort seed.
        max_side: see :func:`sample_patient`.

    Returns:
        ``(params, truth)`` per patient, in id order, splits assigned.
    """
    splits = _assign_splits(n_patients, seed)
    plan = []
    for index in range(1, n_patients + 1):
        params = replace(sample_patient(index, seed, max_side=max_side), split=splits[index - 1])
        plan.append((params, patient_truth(params)))
    return plan


# --------------------------------------------------------------------------------------------
# Rasterisation


def _axes(tilt_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors ``(x, y)`` in image mm: ``e`` along the long axis towards the apex, ``n``
    transverse (``y`` grows with depth)."""
    th = math.radians(tilt_deg)
    return np.array([-math.sin(th), -math.cos(th)]), np.array([math.cos(th), -math.sin(th)])


def _atrium(shape: LVShape, view: View) -> tuple[float, float, float]:
    """Atrial semi-axes ``(transverse, long)`` and centre ``z`` in the LV frame."""
    half_base = shape.base_half_width_mm(view)
    ra = max(shape.la_width_ratio * half_base, 1.02 * half_base)
    rz = shape.la_depth_mm
    z0 = -shape.base_frac * shape.c_mm
    return ra, rz, z0 - rz * math.sqrt(1.0 - (half_base / ra) ** 2)


def _local_box_corners(
    shape: LVShape, view: View, tilt_deg: float, apex_yx: tuple[float, float]
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Centre ``(x, y)`` and image coordinates of the corners of the labelled region's box."""
    e, n = _axes(tilt_deg)
    apex = np.array([apex_yx[1], apex_yx[0]])
    centre = apex - shape.c_mm * e
    s, w = shape.semi_axis_mm(view), shape.myo_mm
    ra, rz, zc = _atrium(shape, view)
    half = max(s + w, ra)
    zs = np.array([shape.c_mm + w, shape.c_mm + w, zc - rz, zc - rz])
    vs = np.array([-half, half, -half, half])
    pts = centre[:, None] + e[:, None] * zs + n[:, None] * vs
    return centre, (pts[1], pts[0])


def _label_map(
    shape: LVShape,
    setup: ViewSetup,
    spacing: tuple[float, float],
    grid: tuple[int, int],
) -> np.ndarray:
    """``(H, W)`` uint8 CAMUS labels of the section, inside-tests at pixel centres."""
    row_mm, col_mm = spacing
    height, width = grid
    view = setup.view
    probe_x = (width - 1) * col_mm / 2.0
    apex_yx = (setup.apex_depth_mm, probe_x + setup.apex_lateral_mm)
    centre, (ys, xs) = _local_box_corners(shape, view, setup.tilt_deg, apex_yx)
    labels = np.zeros(grid, dtype=np.uint8)
    r0 = max(0, math.floor(ys.min() / row_mm) - 1)
    r1 = min(height, math.ceil(ys.max() / row_mm) + 2)
    c0 = max(0, math.floor(xs.min() / col_mm) - 1)
    c1 = min(width, math.ceil(xs.max() / col_mm) + 2)
    if r0 >= r1 or c0 >= c1:
        return labels
    e, n = _axes(setup.tilt_deg)
    qy = (np.arange(r0, r1, dtype=np.float64) * row_mm - centre[1])[:, None]
    qx = (np.arange(c0, c1, dtype=np.float64) * col_mm - centre[0])[None, :]
    z = qx * e[0] + qy * e[1]
    v = qx * n[0] + qy * n[1]
    s, c, w = shape.semi_axis_mm(view), shape.c_mm, shape.myo_mm
    z0 = -shape.base_frac * c
    above = z >= z0
    zz = z * z
    vv = v * v
    lv = above & (vv / (s * s) + zz / (c * c) <= 1.0)
    wall = above & (vv / ((s + w) ** 2) + zz / ((c + w) ** 2) <= 1.0)
    ra, rz, zc = _atrium(shape, view)
    la = ~above & (vv / (ra * ra) + (z - zc) ** 2 / (rz * rz) <= 1.0)
    box = labels[r0:r1, c0:c1]
    box[wall] = Label.MYO
    box[lv] = Label.LV
    box[la] = Label.LA
    return labels


class _ViewRenderer:
    """Per-view state reused across the frames of a sequence: grid, sector, speckle fields."""

    def __init__(
        self,
        params: PatientParams,
        view: View,
        spacing: tuple[float, float] | None = None,
        grid: tuple[int, int] | None = None,
    ) -> None:
        self.params = params
        self.setup = params.setup(view)
        self.spacing = tuple(float(s) for s in (spacing or self.setup.spacing))
        self.grid = tuple(int(g) for g in (grid or self.setup.shape))
        row_mm, col_mm = self.spacing
        height, width = self.grid
        rng = np.random.default_rng((params.seed, params.index, 1 + VIEWS.index(view)))
        ys = (np.arange(height, dtype=np.float32) * row_mm)[:, None]
        xs = (np.arange(width, dtype=np.float32) * col_mm - (width - 1) * col_mm / 2.0)[None, :]
        radius = np.sqrt(ys * ys + xs * xs)
        cos_limit = math.cos(math.radians(SECTOR_HALF_ANGLE_DEG))
        self.sector = (radius <= self.setup.depth_mm) & (ys >= radius * cos_limit)
        quality = params.image_quality
        self.blood = _BLOOD_REFL[quality]
        self.depth_gain = (np.exp(-_ATTENUATION_PER_MM * radius) * _GAIN / _RAYLEIGH_MEAN).astype(
            np.float32
        )
        self.haze = (_HAZE[quality] * np.exp(-radius / 35.0)).astype(np.float32)
        coarse = rng.uniform(0.22, 0.5, size=(6, 6)).astype(np.float32)
        self.tissue = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        sig_r = max(_SPECKLE_SIGMA_MM[0] / row_mm, 0.5)
        sig_c = max(_SPECKLE_SIGMA_MM[1] / col_mm, 0.5)
        fields_ = []
        for _ in range(4):  # real and imaginary parts of the ED and ES scatter fields
            noise = rng.standard_normal((height, width), dtype=np.float32)
            smooth = cv2.GaussianBlur(noise, (0, 0), sigmaX=sig_c, sigmaY=sig_r)
            fields_.append(smooth / max(float(smooth.std()), 1e-6))
        self.speckle = fields_
        self.edge_sigma = (max(_EDGE_SIGMA_MM / col_mm, 0.3), max(_EDGE_SIGMA_MM / row_mm, 0.3))
        self.lut = np.array([-1.0, self.blood, _MYO_REFL, self.blood], dtype=np.float32)

    def labels(self, phase: float) -> np.ndarray:
        """``(H, W)`` uint8 labels at ``phase`` (0 = ED, 1 = ES)."""
        return _label_map(self.params.shape_at(phase), self.setup, self.spacing, self.grid)

    def image(self, labels: np.ndarray, phase: float) -> np.ndarray:
        """``(H, W)`` uint8 B-mode-like image for ``labels`` at ``phase``."""
        refl = self.lut[labels]
        np.copyto(refl, self.tissue, where=labels == Label.BG)
        refl = cv2.GaussianBlur(refl, (0, 0), sigmaX=self.edge_sigma[0], sigmaY=self.edge_sigma[1])
        wa, wb = math.cos(math.pi * phase / 2.0), math.sin(math.pi * phase / 2.0)
        f = self.speckle
        if wb == 0.0:
            re, im = f[0], f[1]
        elif wa < 1e-12:
            re, im = f[2], f[3]
        else:
            re, im = wa * f[0] + wb * f[2], wa * f[1] + wb * f[3]
        envelope = np.sqrt(re * re + im * im)
        value = (refl + self.haze) * envelope * self.depth_gain
        np.clip(value, 0.0, 1.0, out=value)
        out = (np.power(value, _GAMMA) * 255.0).astype(np.uint8)
        out[~self.sector] = 0
        return out


def _phase(instant: Instant | float) -> float:
    if isinstance(instant, Instant):
        return 0.0 if instant == Instant.ED else 1.0
    phase = float(instant)
    if not 0.0 <= phase <= 1.0:
        raise ValueError(f"phase {phase} outside [0, 1]")
    return phase


def rasterise_view(
    params: PatientParams,
    view: View,
    instant: Instant | float,
    spacing: tuple[float, float] | None = None,
    shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one view of a patient at one instant (pure, deterministic).

    Args:
        params: the patient.
        view: 2CH or 4CH.
        instant: ED, ES, or a phase in [0, 1] of the ED→ES half cycle.
        spacing: grid pixel size ``(row_mm, col_mm)``; defaults to the view's own.
        shape: grid ``(H, W)``; defaults to the view's own. The probe sits at the top centre of
            the grid, and the heart keeps its physical placement whatever the grid.

    Returns:
        ``labels``: ``(H, W)`` uint8 CAMUS labels (inside-tests at pixel centres);
        ``image``: ``(H, W)`` uint8 ultrasound-like image.
    """
    renderer = _ViewRenderer(params, view, spacing, shape)
    phase = _phase(instant)
    labels = renderer.labels(phase)
    return labels, renderer.image(labels, phase)


def _phases(n_frames: int) -> np.ndarray:
    """ED→ES phases of a half sequence, cosine-eased (monotonic, 0 first, 1 last)."""
    k = np.arange(n_frames, dtype=np.float64) / (n_frames - 1)
    phases = 0.5 * (1.0 - np.cos(np.pi * k))
    phases[0], phases[-1] = 0.0, 1.0
    return phases


def render_sequence(params: PatientParams, view: View) -> tuple[np.ndarray, np.ndarray]:
    """Render the half sequence of one view, in stored order.

    Args:
        params: the patient.
        view: 2CH or 4CH.

    Returns:
        ``labels`` and ``images``, both ``(T, H, W)`` uint8. Frames run ED→ES, or ES→ED when
        ``params.es_before_ed``; the ED and ES stills equal the first and last (or last and first)
        frames exactly.
    """
    renderer = _ViewRenderer(params, view)
    phases = _phases(renderer.setup.n_frames)
    if params.es_before_ed:
        phases = phases[::-1]
    height, width = renderer.grid
    labels = np.empty((len(phases), height, width), dtype=np.uint8)
    images = np.empty_like(labels)
    for frame, phase in enumerate(phases):
        labels[frame] = renderer.labels(float(phase))
        images[frame] = renderer.image(labels[frame], float(phase))
    return labels, images


# --------------------------------------------------------------------------------------------
# Writing


def _cfg(params: PatientParams, truth: PatientTruth, view: View, fmt: Format) -> dict[str, object]:
    setup = params.setup(view)
    ed_frame, es_frame = (setup.n_frames, 1) if params.es_before_ed else (1, setup.n_frames)
    cfg: dict[str, object] = {
        "ED": ed_frame,
        "ES": es_frame,
        "NbFrame": setup.n_frames,
        "Sex": params.sex,
        "Age": params.age,
        "ImageQuality": params.image_quality,
    }
    if fmt == "nifti":
        cfg |= {"EF": round(truth.ef_pct, 3), "FrameRate": setup.frame_rate_hz}
    else:
        cfg |= {
            "LVedv": round(truth.edv_ml, 3),
            "LVesv": round(truth.esv_ml, 3),
            "LVef": round(truth.ef_pct, 3),
        }
    return cfg


def write_patient(
    folder: Path, params: PatientParams, fmt: Format = "nifti", truth: PatientTruth | None = None
) -> None:
    """Render and write one patient folder (8 stills, 2 sequences with gt, 2 cfgs).

    Args:
        folder: the patient folder (``.../patientXXXX``), created when missing.
        params: the patient.
        fmt: "nifti" (2023: ``.nii.gz``, ``_half_sequence``, cfg EF/FrameRate) or "mhd" (2019:
            ``.mhd``/``.raw``, ``_sequence``, cfg LVedv/LVesv/LVef).
        truth: the patient's truth (computed when omitted).
    """
    truth = truth or patient_truth(params)
    ext, seq_name = (".nii.gz", "half_sequence") if fmt == "nifti" else (".mhd", "sequence")
    pid = params.patient_id
    for view in VIEWS:
        labels, images = render_sequence(params, view)
        spacing = params.setup(view).spacing
        stem = folder / f"{pid}_{view.value}"
        write_image(f"{stem}_{seq_name}{ext}", images, spacing)
        write_image(f"{stem}_{seq_name}_gt{ext}", labels, spacing)
        ends = {Instant.ED: 0, Instant.ES: len(labels) - 1}
        if params.es_before_ed:
            ends = {Instant.ED: len(labels) - 1, Instant.ES: 0}
        for instant in INSTANTS:
            write_image(f"{stem}_{instant.value}{ext}", images[ends[instant]], spacing)
            write_image(f"{stem}_{instant.value}_gt{ext}", labels[ends[instant]], spacing)
        write_cfg(folder / f"Info_{view.value}.cfg", _cfg(params, truth, view, fmt))


def _truth_csv(truths: list[PatientTruth]) -> str:
    buffer = io.StringIO()
    names = [f.name for f in fields(PatientTruth)]
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for truth in truths:
        writer.writerow(
            {k: repr(v) if isinstance(v, float) else v for k, v in asdict(truth).items()}
        )
    return buffer.getvalue()


def synth_cohort(
    out: Path | str,
    n_patients: int,
    seed: int = 0,
    fmt: Format = "nifti",
    *,
    max_side: int | None = None,
) -> Path:
    """Write a synthetic cohort in the CAMUS layout with its truth table.

    Layout (``fmt="nifti"``, CAMUS 2023): ``OUT/database_nifti/patientXXXX/...`` and
    ``OUT/database_split/subgroup_{training,validation,testing}.txt`` (80/10/10 %).
    Layout (``fmt="mhd"``, CAMUS 2019): ``OUT/training/patientXXXX/...`` (every patient, split
    "training") with cfgs carrying the true ``LVedv``/``LVesv``/``LVef`` (rounded to 0.001).
    Both: ``OUT/truth.csv``, one row per patient (columns of :class:`PatientTruth`, floats at full
    precision).

    Args:
        out: output root (created when missing; existing files of the same names are replaced).
        n_patients: number of patients.
        seed: cohort seed; the same seed writes byte-identical arrays.
        fmt: "nifti" or "mhd".
        max_side: render every view on a ``(max_side, max_side)`` grid (e.g. 256 for large scale
            runs); None keeps realistic spacings such as 0.154 x 0.308 mm.

    Returns:
        ``out``, a DATA root that :func:`echo_batch.discovery.discover` accepts.

    Raises:
        ValueError: unknown format or fewer than one patient.
    """
    if fmt not in ("nifti", "mhd"):
        raise ValueError(f"unknown format {fmt!r} (use 'nifti' or 'mhd')")
    if n_patients < 1:
        raise ValueError("n_patients must be at least 1")
    out = Path(out)
    parent = out / ("database_nifti" if fmt == "nifti" else "training")
    plan = plan_cohort(n_patients, seed, max_side=max_side)
    if fmt == "mhd":  # the 2019 layout keeps everyone under training/
        plan = [
            (replace(p, split=Split.TRAINING), replace(t, split=Split.TRAINING.value))
            for p, t in plan
        ]
    start = time.perf_counter()
    for number, (params, truth) in enumerate(plan, start=1):
        write_patient(parent / params.patient_id, params, fmt, truth)
        logger.debug("%s written (EF %.1f %%)", params.patient_id, truth.ef_pct)
        if number % 100 == 0:
            logger.info("synth: %d/%d patients", number, n_patients)
    if fmt == "nifti":
        for split in (Split.TRAINING, Split.VALIDATION, Split.TESTING):
            ids = [p.patient_id for p, _ in plan if p.split == split]
            write_text(
                out / "database_split" / f"subgroup_{split.value}.txt",
                "".join(f"{pid}\n" for pid in ids),
            )
    write_text(out / "truth.csv", _truth_csv([truth for _, truth in plan]))
    elapsed = time.perf_counter() - start
    logger.info(
        "synth: %d patients (%s, seed %d) in %.1f s (%.1f patients/s) under %s",
        n_patients,
        fmt,
        seed,
        elapsed,
        n_patients / max(elapsed, 1e-9),
        out,
    )
    return out
