"""Per-study measurements beside EF: left-atrial volume, contour GLS, FAC, long-axis shortening.

Pure functions that combine the measured images of one patient (LV geometry per view and instant,
the atrium at LV end-systole per view) into the columns of ``patients.parquet`` of the same
names. The formulas live in :mod:`echo_batch.measure.volumes` (volumes) and
:mod:`echo_batch.measure.deformation` (ratios); each missing value comes with the reason why
(``notes``), which the patient's ``error`` records.

The left atrium is measured at LV end-systole, where it is largest (Lang et al. 2015).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from echo_batch.domain import VIEWS, ImageKey, Instant, View
from echo_batch.measure.atrium import AtriumGeometry
from echo_batch.measure.deformation import (
    border_length_mm,
    contour_strain_pct,
    fractional_area_change_pct,
    long_axis_shortening_pct,
)
from echo_batch.measure.landmarks import GeometryFailure, ViewGeometry
from echo_batch.measure.volumes import (
    biplane_disk_height_mm,
    la_area_length_biplane_ml,
    simpson_biplane_ml,
)


@dataclass(frozen=True)
class StudyMeasures:
    """The measurements of one patient beside EF; None where they could not be measured.

    Attributes (the ``patients.parquet`` columns of the same names):
        la_volume_ml: LA volume at LV end-systole, biplane method of disks.
        la_volume_al_ml: LA volume at LV end-systole, biplane area-length.
        la_volume_2ch_ml: LA volume, single-plane method of disks in the 2CH view.
        la_volume_4ch_ml: LA volume, single-plane method of disks in the 4CH view.
        la_length_2ch_mm: LA length (annulus mid-point to roof) in the 2CH view.
        la_length_4ch_mm: LA length in the 4CH view.
        la_area_2ch_mm2: LA area in the 2CH view.
        la_area_4ch_mm2: LA area in the 4CH view.
        gls_contour_pct: mean of the two views' contour-based longitudinal strains.
        gls_contour_2ch_pct: contour-based longitudinal strain of the 2CH view.
        gls_contour_4ch_pct: contour-based longitudinal strain of the 4CH view.
        fac_2ch_pct: LV fractional area change in the 2CH view.
        fac_4ch_pct: LV fractional area change in the 4CH view.
        long_axis_shortening_2ch_pct: LV long-axis shortening in the 2CH view.
        long_axis_shortening_4ch_pct: LV long-axis shortening in the 4CH view.
        notes: why values are missing, one sentence each.
    """

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
    notes: tuple[str, ...] = field(default=())

    def columns(self) -> dict[str, float | None]:
        """The values by ``patients.parquet`` column name (``notes`` left out)."""
        values = asdict(self)
        del values["notes"]
        return values


SCALED_COLUMNS = (
    "la_volume_ml",
    "la_volume_al_ml",
    "la_volume_2ch_ml",
    "la_volume_4ch_ml",
    "la_length_2ch_mm",
    "la_length_4ch_mm",
    "la_area_2ch_mm2",
    "la_area_4ch_mm2",
)
"""Columns with a physical unit (mm, mm^2, mL); the other columns are ratios."""


def _tag(view: View) -> str:
    return view.value.lower()


def atrium_columns(
    atria: Mapping[View, AtriumGeometry | GeometryFailure],
) -> tuple[dict[str, float | None], list[str]]:
    """LA columns from the atria at LV end-systole, and why any is missing.

    Args:
        atria: per view, the atrium of the LV end-systolic image or why it failed (a view
            without an end-systolic image is absent).

    Returns:
        ``(columns, notes)``.
    """
    columns: dict[str, float | None] = {}
    notes: list[str] = []
    measured: dict[View, AtriumGeometry] = {}
    for view in VIEWS:
        atrium = atria.get(view)
        if isinstance(atrium, AtriumGeometry):
            measured[view] = atrium
            tag = _tag(view)
            columns[f"la_volume_{tag}_ml"] = atrium.volume_single_ml
            columns[f"la_length_{tag}_mm"] = atrium.length_mm
            columns[f"la_area_{tag}_mm2"] = atrium.area_mm2
        elif atrium is None:
            notes.append(f"no LA volume in {view.value}: no {view.value} ES image")
        else:
            notes.append(f"no LA volume in {view.value} ES: {atrium.reason}")
    if len(measured) == 2:
        a2c, a4c = measured[View.A2C], measured[View.A4C]
        h_mm = biplane_disk_height_mm(a2c.length_mm, a4c.length_mm, len(a2c.diameters_mm))
        columns["la_volume_ml"] = simpson_biplane_ml(a2c.diameters_mm, a4c.diameters_mm, h_mm)
        columns["la_volume_al_ml"] = la_area_length_biplane_ml(
            a2c.area_mm2, a4c.area_mm2, a2c.length_mm, a4c.length_mm
        )
    else:
        notes.append("no biplane LA volume (needs the atrium in 2CH and 4CH at ES)")
    return columns, notes


def lv_columns(
    geometries: Mapping[ImageKey, ViewGeometry],
    spacings: Mapping[ImageKey, tuple[float, float]],
) -> tuple[dict[str, float | None], list[str]]:
    """Contour GLS, FAC and long-axis shortening per view (and the mean GLS), and why any is
    missing.

    Args:
        geometries: measured LV geometry per (view, instant).
        spacings: pixel size per (view, instant) of the measured images.

    Returns:
        ``(columns, notes)``.
    """
    columns: dict[str, float | None] = {}
    notes: list[str] = []
    strains: list[float] = []
    for view in VIEWS:
        ed = geometries.get(ImageKey(view, Instant.ED))
        es = geometries.get(ImageKey(view, Instant.ES))
        if ed is None or es is None:
            notes.append(
                f"no contour GLS, FAC or long-axis shortening in {view.value} "
                "(needs the LV measured at ED and ES)"
            )
            continue
        tag = _tag(view)
        strain = contour_strain_pct(
            border_length_mm(ed, spacings[ImageKey(view, Instant.ED)]),
            border_length_mm(es, spacings[ImageKey(view, Instant.ES)]),
        )
        columns[f"gls_contour_{tag}_pct"] = strain
        columns[f"fac_{tag}_pct"] = fractional_area_change_pct(ed.area_mm2, es.area_mm2)
        columns[f"long_axis_shortening_{tag}_pct"] = long_axis_shortening_pct(
            ed.length_mm, es.length_mm
        )
        if strain is not None:
            strains.append(strain)
    if len(strains) == 2:
        columns["gls_contour_pct"] = float(np.mean(strains))
    else:
        notes.append("no mean contour GLS (needs the 2CH and 4CH strains)")
    return columns, notes


def study_measures(
    geometries: Mapping[ImageKey, ViewGeometry],
    spacings: Mapping[ImageKey, tuple[float, float]],
    atria: Mapping[View, AtriumGeometry | GeometryFailure],
) -> StudyMeasures:
    """All per-study measurements of one patient.

    Args:
        geometries: measured LV geometry per (view, instant).
        spacings: pixel size per (view, instant) of the measured images.
        atria: per view, the atrium at LV end-systole (or why it failed).

    Returns:
        StudyMeasures with the reasons of its missing values.
    """
    la, la_notes = atrium_columns(atria)
    lv, lv_notes = lv_columns(geometries, spacings)
    return StudyMeasures(**la, **lv, notes=tuple(lv_notes + la_notes))
