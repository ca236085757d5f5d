"""Deliberate corruptions of expert label maps, to measure what the QC flags catch.

Each function takes an ``(H, W)`` uint8 expert label map (apex up), its ``(row_mm, col_mm)``
spacing, its :class:`~echo_batch.measure.landmarks.ViewGeometry` and a numpy ``Generator``, and
returns a corrupted copy. The failure modes are those of segmentation models on echocardiograms:

* ``holes``: a disk of background (radius 2-4 mm) punched inside the LV cavity;
* ``split``: a band of myocardium (2 pixels, >= 1.5 mm) across the LV at 35-65 % of its long axis;
* ``missing_apex``: LV and myocardium beyond 75-85 % of the long axis from the base set to
  background (the apex cut off, as when it leaves the sector);
* ``swapped``: LV and atrium labels exchanged (even draws) or LV and myocardium (odd draws);
* ``leak``: the atrium relabelled LV, the half nearest the base (even draws) or all of it (odd).

Used by ``benchmarks/qc_thresholds.py`` and ``tests/test_quality_corruptions.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from echo_batch.domain import Label
from echo_batch.measure.landmarks import ViewGeometry

Corruption = Callable[
    [np.ndarray, tuple[float, float], ViewGeometry, np.random.Generator], np.ndarray
]


def _axis_position(shape: tuple[int, int], spacing: tuple[float, float], geo: ViewGeometry):
    """``(H, W)`` position of every pixel along the long axis: 0 at the base mid, 1 at the apex."""
    rows, cols = np.indices(shape, dtype=float)
    axis = geo.apex_mm - geo.base_mid_mm
    rel_y = rows * spacing[0] - geo.base_mid_mm[0]
    rel_x = cols * spacing[1] - geo.base_mid_mm[1]
    return (rel_y * axis[0] + rel_x * axis[1]) / float(axis @ axis)


def holes(labels, spacing, geo, rng):
    """Background disk of radius 2-4 mm at a random point deep inside the LV."""
    out = labels.copy()
    radius_mm = rng.uniform(2.0, 4.0)
    lv = labels == Label.LV
    depth = ndimage.distance_transform_edt(lv, sampling=spacing)
    candidates = np.argwhere(depth > radius_mm + max(spacing))
    if len(candidates) == 0:
        candidates = np.argwhere(depth == depth.max())
    r0, c0 = candidates[rng.integers(len(candidates))]
    rows, cols = np.indices(labels.shape, dtype=float)
    disk = np.hypot((rows - r0) * spacing[0], (cols - c0) * spacing[1]) <= radius_mm
    out[disk & lv] = Label.BG
    return out


def split(labels, spacing, geo, rng):
    """Myocardium band across the LV, perpendicular to the long axis."""
    out = labels.copy()
    t = _axis_position(labels.shape, spacing, geo)
    width = max(2 * max(spacing), 1.5) / geo.length_mm
    t0 = rng.uniform(0.35, 0.65)
    band = (t >= t0) & (t < t0 + width) & (labels == Label.LV)
    out[band] = Label.MYO
    return out


def missing_apex(labels, spacing, geo, rng):
    """Cut off the apex: LV and myocardium beyond 75-85 % of the long axis become background."""
    out = labels.copy()
    t = _axis_position(labels.shape, spacing, geo)
    cut = (t > rng.uniform(0.75, 0.85)) & ((labels == Label.LV) | (labels == Label.MYO))
    out[cut] = Label.BG
    return out


def swapped(labels, spacing, geo, rng):
    """Exchange the LV with the atrium (even draws) or with the myocardium (odd draws)."""
    other = Label.LA if rng.integers(2) == 0 else Label.MYO
    out = labels.copy()
    out[labels == Label.LV] = other
    out[labels == other] = Label.LV
    return out


def leak(labels, spacing, geo, rng):
    """Relabel the atrium as LV: its half nearest the base (even draws) or all of it (odd)."""
    out = labels.copy()
    la = labels == Label.LA
    if rng.integers(2) == 0 and la.any():
        t = _axis_position(labels.shape, spacing, geo)
        la &= t >= np.median(t[la])
    out[la] = Label.LV
    return out


CORRUPTIONS: dict[str, Corruption] = {
    "holes": holes,
    "split": split,
    "missing_apex": missing_apex,
    "swapped": swapped,
    "leak": leak,
}
