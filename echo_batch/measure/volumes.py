"""Chamber volume formulas and ejection fraction (pure functions, millimetres in, millilitres out).

1 mL = 1000 mm^3. The disk formulas follow the ASE/EACVI 2015 chamber quantification guideline
(Lang et al., J Am Soc Echocardiogr 2015;28:1-39): method of disks, 20 disks along the long axis,
for the LV and, with the atrium's own axis, for the left atrium; the guideline's biplane
area-length formula for the left atrium is :func:`la_area_length_biplane_ml`.
"""

from __future__ import annotations

import math

import numpy as np

MM3_PER_ML = 1000.0
N_DISKS = 20  # disks along the long axis: the guideline above, and the CAMUS convention too
# Biplane area-length factor of the guideline's LA formula 0.85 A1 A2 / L: 8 / (3 pi) = 0.849 (an
# ellipsoid's volume from its two orthogonal sections) as the guideline rounds it.
LA_AREA_LENGTH_FACTOR = 0.85


def simpson_single_plane_ml(diameters_mm: np.ndarray, length_mm: float) -> float:
    """Single-plane Simpson (method of disks): circular disks of the measured diameters.

    ``V = pi/4 * sum(d_i^2) * L / n``.

    Args:
        diameters_mm: ``(n,)`` disk diameters, mm (n = 20 by convention).
        length_mm: long-axis length ``L``, mm.

    Returns:
        Volume in mL.
    """
    d = np.asarray(diameters_mm, dtype=float)
    h_mm = float(length_mm) / d.size
    return float(math.pi / 4.0 * np.sum(d * d) * h_mm / MM3_PER_ML)


def simpson_biplane_ml(diam_2ch_mm: np.ndarray, diam_4ch_mm: np.ndarray, h_mm: float) -> float:
    """Biplane Simpson (method of disks): elliptical disks with axes from two orthogonal views.

    ``V = pi/4 * sum(a_i * b_i) * h``.

    Args:
        diam_2ch_mm: ``(n,)`` disk diameters of the 2-chamber view, mm.
        diam_4ch_mm: ``(n,)`` disk diameters of the 4-chamber view at the same instant, mm.
        h_mm: disk height, mm; the guideline uses :func:`biplane_disk_height_mm`.

    Returns:
        Volume in mL.

    Raises:
        ValueError: the two diameter arrays differ in length.
    """
    a = np.asarray(diam_2ch_mm, dtype=float)
    b = np.asarray(diam_4ch_mm, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"diameter arrays differ in shape: {a.shape} vs {b.shape}")
    return float(math.pi / 4.0 * np.sum(a * b) * float(h_mm) / MM3_PER_ML)


def biplane_disk_height_mm(
    length_2ch_mm: float, length_4ch_mm: float, n_disks: int = N_DISKS
) -> float:
    """Guideline disk height at one instant: the longer of the two long axes over ``n_disks``.

    Args:
        length_2ch_mm: long axis of the 2-chamber view, mm.
        length_4ch_mm: long axis of the 4-chamber view (same instant), mm.
        n_disks: number of disks.

    Returns:
        ``max(L_2CH, L_4CH) / n_disks`` in mm.
    """
    return max(float(length_2ch_mm), float(length_4ch_mm)) / n_disks


def area_length_ml(area_mm2: float, length_mm: float) -> float:
    """Single-plane area-length volume ``V = 8 A^2 / (3 pi L)`` (for comparison only).

    Args:
        area_mm2: LV cavity area in the view, mm^2.
        length_mm: long-axis length, mm.

    Returns:
        Volume in mL; NaN when ``length_mm`` is not positive.
    """
    if not length_mm > 0:
        return math.nan
    return 8.0 * float(area_mm2) ** 2 / (3.0 * math.pi * float(length_mm)) / MM3_PER_ML


def la_area_length_biplane_ml(
    area_2ch_mm2: float, area_4ch_mm2: float, length_2ch_mm: float, length_4ch_mm: float
) -> float:
    """Left-atrial volume by the biplane area-length formula ``0.85 A_2CH A_4CH / L``.

    ASE/EACVI 2015 (Lang et al., section on the left atrium): ``L`` is the shorter of the two LA
    lengths (mitral annulus mid-point to the atrial roof, perpendicular to the annulus).

    Args:
        area_2ch_mm2: LA area in the 2-chamber view at LV end-systole, mm^2.
        area_4ch_mm2: LA area in the 4-chamber view at the same instant, mm^2.
        length_2ch_mm: LA length in the 2-chamber view, mm.
        length_4ch_mm: LA length in the 4-chamber view, mm.

    Returns:
        Volume in mL; NaN when the shorter length is not positive.
    """
    length = min(float(length_2ch_mm), float(length_4ch_mm))
    if not length > 0:
        return math.nan
    return LA_AREA_LENGTH_FACTOR * float(area_2ch_mm2) * float(area_4ch_mm2) / length / MM3_PER_ML


def ejection_fraction_pct(edv_ml: float | None, esv_ml: float | None) -> float:
    """Ejection fraction ``100 (EDV - ESV) / EDV``.

    Args:
        edv_ml: end-diastolic volume, mL.
        esv_ml: end-systolic volume, mL.

    Returns:
        EF in percent, not clipped (an ESV above the EDV gives a negative EF, which QC should
        flag). NaN when either volume is None or NaN, or when ``edv_ml <= 0`` (undefined).
    """
    if edv_ml is None or esv_ml is None:
        return math.nan
    edv, esv = float(edv_ml), float(esv_ml)
    if math.isnan(edv) or math.isnan(esv) or edv <= 0 or math.isinf(edv) or math.isinf(esv):
        return math.nan
    return 100.0 * (edv - esv) / edv
