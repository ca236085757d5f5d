"""Left-atrial geometry in one label map, in physical millimetres (pure numpy, no I/O).

The atrium is measured on its axis as the ASE/EACVI 2015 chamber quantification guideline (Lang
et al., J Am Soc Echocardiogr 2015;28:1-39) defines the LA length: from the mid-point of the
mitral annulus, perpendicular to the annulus plane, to the atrial roof. The annulus is the LV's
base: the mitral hinge points that :func:`echo_batch.measure.landmarks.measure_lv` found, so that
both chambers share one mitral plane. The LA length is the largest distance of the atrium's border
from the annulus line along that perpendicular, and the 20 disks of the method of disks are cut
perpendicular to it, like the LV's (:func:`echo_batch.measure.landmarks.disk_diameters`).

The atrium's border is the exact boundary of its largest 8-connected component with holes filled
(the same marching-squares boundary as the LV's), so its area is the mask's area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from echo_batch.domain import Label
from echo_batch.measure.landmarks import (
    GeometryFailure,
    ViewGeometry,
    boundary_contour,
    disk_diameters,
    largest_component,
    polygon_area,
)
from echo_batch.measure.volumes import simpson_single_plane_ml

MIN_LA_PIXELS = 16


@dataclass(frozen=True)
class AtriumGeometry:
    """The left atrium in one image.

    Attributes:
        contour_mm: ``(N, 2)`` closed LA border (last vertex not repeated), (y_mm, x_mm).
        base_mid_mm: ``(2,)`` mid-point of the mitral annulus (the LV's hinges), (y_mm, x_mm).
        roof_mm: ``(2,)`` end of the LA axis: ``base_mid_mm + length_mm * axis``, (y_mm, x_mm).
        length_mm: LA length, perpendicular to the annulus, mm.
        area_mm2: area enclosed by the LA border, mm^2.
        diameters_mm: ``(20,)`` disk diameters perpendicular to the LA axis at
            ``(i + 0.5) L / 20`` from the annulus, mm.
    """

    contour_mm: np.ndarray
    base_mid_mm: np.ndarray
    roof_mm: np.ndarray
    length_mm: float
    area_mm2: float
    diameters_mm: np.ndarray

    @property
    def volume_single_ml(self) -> float:
        """Single-plane method-of-disks volume of this view, mL."""
        return simpson_single_plane_ml(self.diameters_mm, self.length_mm)


def annulus_normal(lv: ViewGeometry) -> np.ndarray:
    """``(2,)`` unit normal of the mitral annulus (hinge line), pointing away from the LV apex."""
    hinge = lv.hinges_mm[1] - lv.hinges_mm[0]
    normal = np.array([-hinge[1], hinge[0]], dtype=float)
    norm = float(np.hypot(*normal))
    if norm == 0:  # coincident hinges: fall back on the LV long axis
        normal, norm = lv.base_mid_mm - lv.apex_mm, lv.length_mm
    normal = normal / norm
    if float((lv.base_mid_mm - lv.apex_mm) @ normal) < 0:
        normal = -normal
    return normal


def measure_la(
    labels: np.ndarray, spacing: tuple[float, float], lv: ViewGeometry | GeometryFailure | None
) -> AtriumGeometry | GeometryFailure:
    """Border, axis, length, area and 20 disk diameters of the left atrium in one image.

    Args:
        labels: ``(H, W)`` label map (3 = left atrium), apex up.
        spacing: ``(row_mm, col_mm)`` pixel size.
        lv: the LV geometry of the same label map (its hinges are the mitral annulus), or why it
            failed.

    Returns:
        An :class:`AtriumGeometry`, or a :class:`GeometryFailure` naming why the atrium cannot be
        measured (no LV base, no or a tiny atrium, an atrium not beyond the annulus). Never raises
        for any 2-D integer array.
    """
    if not isinstance(lv, ViewGeometry):
        reason = "no LV" if lv is None else lv.reason
        return GeometryFailure(f"no mitral annulus ({reason})")
    found = largest_component(np.asarray(labels), Label.LA)
    if found is None:
        return GeometryFailure("no atrium pixels")
    mask, (row0, col0) = found
    if int(mask.sum()) < MIN_LA_PIXELS:
        return GeometryFailure(f"atrium has {int(mask.sum())} pixels, fewer than {MIN_LA_PIXELS}")
    contour_local = boundary_contour(mask)
    if len(contour_local) < 4:
        return GeometryFailure("no closed atrium contour")
    scale = np.array([float(spacing[0]), float(spacing[1])])
    contour_mm = (contour_local + np.array([row0, col0], dtype=float)) * scale
    axis = annulus_normal(lv)
    length = float(((contour_mm - lv.base_mid_mm) @ axis).max())
    if not length > 0:
        return GeometryFailure("atrium does not reach beyond the mitral annulus")
    roof = lv.base_mid_mm + length * axis
    diameters = disk_diameters(contour_mm, lv.base_mid_mm, roof)
    if not diameters.any():
        return GeometryFailure("disks miss the atrium")
    return AtriumGeometry(
        contour_mm=contour_mm,
        base_mid_mm=lv.base_mid_mm.copy(),
        roof_mm=roof,
        length_mm=length,
        area_mm2=polygon_area(contour_mm),
        diameters_mm=diameters,
    )
