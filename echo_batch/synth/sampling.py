"""Deterministic sampling of patients (shapes, probe placement, grids) and cohort splits."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from echo_batch.domain import VIEWS, Split, View
from echo_batch.synth.params import (
    CLASSIC_SPACING_MM,
    SECTOR_HALF_ANGLE_DEG,
    PatientParams,
    PatientTruth,
    ViewSetup,
    patient_truth,
)
from echo_batch.synth.shapes import LVShape, _atrium, _axes


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
