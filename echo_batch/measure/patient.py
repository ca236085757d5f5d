"""Patient-level volumes and EF from per-image LV geometry (pure functions, no I/O).

Combines the four (view, instant) measurements of one patient into single-plane volumes per view,
guideline biplane volumes (h = max(L_2CH, L_4CH) / 20 at each instant) and the EFs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from echo_batch.domain import ImageKey, Instant, View
from echo_batch.measure.landmarks import ViewGeometry
from echo_batch.measure.volumes import (
    ejection_fraction_pct,
    simpson_biplane_ml,
    simpson_single_plane_ml,
)


@dataclass(frozen=True)
class PatientVolumes:
    """Volumes and EFs of one patient; None where the inputs were missing.

    Attributes:
        edv_ml: biplane end-diastolic volume.
        esv_ml: biplane end-systolic volume.
        ef_pct: biplane EF.
        single: per view, ``(edv_ml, esv_ml, ef_pct)`` from single-plane Simpson.
        notes: why a value is missing.
    """

    edv_ml: float | None = None
    esv_ml: float | None = None
    ef_pct: float | None = None
    single: dict[View, tuple[float | None, float | None, float | None]] = field(
        default_factory=dict
    )
    notes: tuple[str, ...] = ()


def single_plane_ml(geometry: ViewGeometry) -> float:
    """Single-plane Simpson volume of one image, mL."""
    return simpson_single_plane_ml(geometry.diameters_mm, geometry.length_mm)


def biplane_ml(a2c: ViewGeometry, a4c: ViewGeometry) -> float:
    """Guideline biplane Simpson volume of one instant, mL (h = max of the two lengths / 20)."""
    h_mm = max(a2c.length_mm, a4c.length_mm) / len(a2c.diameters_mm)
    return simpson_biplane_ml(a2c.diameters_mm, a4c.diameters_mm, h_mm)


def patient_volumes(geometries: Mapping[ImageKey, ViewGeometry]) -> PatientVolumes:
    """Combine the measured images of one patient.

    Args:
        geometries: LV geometry per (view, instant) that could be measured.

    Returns:
        PatientVolumes; the biplane values need both views at both instants, a single-plane EF
        needs both instants of its view.
    """
    notes: list[str] = []
    single: dict[View, tuple[float | None, float | None, float | None]] = {}
    for view in View:
        ed = geometries.get(ImageKey(view, Instant.ED))
        es = geometries.get(ImageKey(view, Instant.ES))
        edv = single_plane_ml(ed) if ed is not None else None
        esv = single_plane_ml(es) if es is not None else None
        ef = ejection_fraction_pct(edv, esv) if edv is not None and esv is not None else None
        single[view] = (edv, esv, ef)
        if ef is None:
            notes.append(f"no single-plane EF in {view.value}")
    biplane: dict[Instant, float] = {}
    for instant in Instant:
        a2c = geometries.get(ImageKey(View.A2C, instant))
        a4c = geometries.get(ImageKey(View.A4C, instant))
        if a2c is not None and a4c is not None:
            biplane[instant] = biplane_ml(a2c, a4c)
    if len(biplane) < 2:
        notes.append("no biplane EF (needs 2CH and 4CH at ED and ES)")
        return PatientVolumes(single=single, notes=tuple(notes))
    edv, esv = biplane[Instant.ED], biplane[Instant.ES]
    return PatientVolumes(
        edv_ml=edv,
        esv_ml=esv,
        ef_pct=ejection_fraction_pct(edv, esv),
        single=single,
        notes=tuple(notes),
    )
