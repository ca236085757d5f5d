"""Clinical thresholds and published reference values: one table each, every value next to its
source (EF categories and normal ranges; reference values of the per-study measurements).

Sources:

* HF categories: Bozkurt B, Coats AJS, Tsutsui H, et al. "Universal definition and classification of
  heart failure." J Card Fail 2021;27:387-413 (also Eur J Heart Fail 2021;23:352-380): HFrEF
  LVEF <= 40 %, HFmrEF LVEF 41-49 %, HFpEF LVEF >= 50 %.
* Normal ranges: Lang RM, Badano LP, Mor-Avi V, et al. "Recommendations for cardiac chamber
  quantification by echocardiography in adults: an update from the ASE and the EACVI."
  J Am Soc Echocardiogr 2015;28:1-39, Table 4 (2D biplane LVEF, mean +/- 2 SD):
  men 52-72 %, women 54-74 %.

* Reference values of the per-study measurements (:data:`STUDY_REFERENCE_VALUES`):
  Lang RM, Bierig M, Devereux RB, et al. "Recommendations for chamber quantification."
  J Am Soc Echocardiogr 2005;18:1440-1463 (LA volume, biplane, women 22-52 mL, men 18-58 mL;
  the 2015 update gives the indexed limit only: LA volume / BSA <= 34 mL/m^2, which needs the
  body surface area CAMUS does not carry); Yingchoncharoen T, Agarwal S, Popovic ZB, Marwick TH.
  "Normal ranges of left ventricular strain: a meta-analysis." J Am Soc Echocardiogr
  2013;26:185-191 (speckle-tracking GLS of healthy adults, 24 studies, 2,597 subjects: mean
  -19.7 %, 95 % CI -20.4 to -18.9 %, study means from -15.9 to -22.1 %); Stoylen A, Molmen HE,
  Dalen H. "Relation between mitral annular plane systolic excursion and global longitudinal
  strain in normal subjects: the HUNT study." Echocardiography 2018;35:603-610 (MAPSE normalised
  by the LV length, 1,266 healthy subjects: 16.3 +/- 2.4 %). No guideline gives a normal range
  of the LV's fractional area change in the apical views (the guideline FAC is the right
  ventricle's); none is listed.

Boundaries between the integer limits: the published categories are written for whole-number
EF (40 | 41-49 | 50). Measured EF is a float, so the table uses half-open intervals on the real
line: reduced ``EF <= 40``, mildly reduced ``40 < EF < 50``, preserved ``EF >= 50``. A value such as
40.5 is therefore *mildly reduced* and 49.9 is *mildly reduced*; 40.0 is *reduced*. This equals the
published categories for every integer EF and never leaves a gap. Normal ranges are closed
intervals ``[low, high]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class EfCategory(StrEnum):
    """Heart-failure category of the LV ejection fraction (universal definition, 2021)."""

    REDUCED = "reduced"
    MILDLY_REDUCED = "mildly_reduced"
    PRESERVED = "preserved"


class Sex(StrEnum):
    """Sex as recorded in CAMUS cfg files."""

    MALE = "M"
    FEMALE = "F"


@dataclass(frozen=True)
class EfThreshold:
    """One row of the threshold table.

    Attributes:
        category: category assigned when ``EF <= upper_pct`` (and above the previous row).
        upper_pct: inclusive upper EF limit, percent (inf for the last row).
        source: citation of the value.
    """

    category: EfCategory
    upper_pct: float
    source: str


@dataclass(frozen=True)
class NormalRange:
    """Normal 2D biplane LVEF range.

    Attributes:
        sex: sex the range applies to.
        low_pct: lower limit (mean - 2 SD), percent, inclusive.
        high_pct: upper limit (mean + 2 SD), percent, inclusive.
        source: citation of the values.
    """

    sex: Sex
    low_pct: float
    high_pct: float
    source: str


_UNIVERSAL_HF_2021 = "Bozkurt et al. 2021, universal definition and classification of heart failure"
_LANG_2015 = "Lang et al. 2015, ASE/EACVI chamber quantification, Table 4"

# Ordered by upper limit; EF falls in the first row whose upper_pct it does not exceed.
EF_CATEGORY_TABLE: tuple[EfThreshold, ...] = (
    EfThreshold(EfCategory.REDUCED, 40.0, _UNIVERSAL_HF_2021 + ": HFrEF, LVEF <= 40 %"),
    EfThreshold(
        EfCategory.MILDLY_REDUCED, math.nextafter(50.0, 0.0), _UNIVERSAL_HF_2021 + ": 41-49 %"
    ),
    EfThreshold(EfCategory.PRESERVED, math.inf, _UNIVERSAL_HF_2021 + ": HFpEF, LVEF >= 50 %"),
)

NORMAL_EF_RANGES: dict[Sex, NormalRange] = {
    Sex.MALE: NormalRange(Sex.MALE, 52.0, 72.0, _LANG_2015 + ": men 62 +/- 5 %"),
    Sex.FEMALE: NormalRange(Sex.FEMALE, 54.0, 74.0, _LANG_2015 + ": women 64 +/- 5 %"),
}


def ef_category(ef_pct: float | None) -> EfCategory | None:
    """Heart-failure EF category.

    Args:
        ef_pct: ejection fraction, percent.

    Returns:
        REDUCED for ``EF <= 40``, MILDLY_REDUCED for ``40 < EF < 50`` (so 40.5 is mildly reduced),
        PRESERVED for ``EF >= 50``; None when ``ef_pct`` is None or NaN.
    """
    if ef_pct is None or math.isnan(ef_pct):
        return None
    for row in EF_CATEGORY_TABLE:
        if ef_pct <= row.upper_pct:
            return row.category
    return EF_CATEGORY_TABLE[-1].category


def ef_is_normal(ef_pct: float | None, sex: Sex | str | None) -> bool | None:
    """Whether EF lies in the sex-specific normal range of ASE/EACVI 2015.

    Args:
        ef_pct: ejection fraction, percent.
        sex: "M"/"F" (or :class:`Sex`).

    Returns:
        True inside ``[low, high]`` (inclusive), False outside, None when EF is missing/NaN or the
        sex is unknown.
    """
    if ef_pct is None or math.isnan(ef_pct) or sex is None:
        return None
    try:
        normal = NORMAL_EF_RANGES[Sex(sex)]
    except ValueError:
        return None
    return normal.low_pct <= ef_pct <= normal.high_pct


@dataclass(frozen=True)
class ReferenceValue:
    """Published values of healthy adults for one per-study measurement.

    Attributes:
        column: ``patients.parquet`` column the values are compared with.
        population: who was measured (and how, when the method differs from ours).
        low: lower limit of the normal range (None when the source gives none).
        high: upper limit (None when the source gives none).
        mean: mean of the healthy population (None when the source gives none).
        sd: its standard deviation (None when the source gives none).
        source: citation, with the table or figure the values come from.
    """

    column: str
    population: str
    low: float | None
    high: float | None
    mean: float | None
    sd: float | None
    source: str


_LANG_2005 = "Lang et al. 2005, ASE/EAE chamber quantification, LA volume reference range"
_YINGCHONCHAROEN_2013 = "Yingchoncharoen et al. 2013, meta-analysis of normal LV strain"
_STOYLEN_2018 = "Stoylen et al. 2018, HUNT study, MAPSE normalised by LV length (MAPSEn)"

STUDY_REFERENCE_VALUES: tuple[ReferenceValue, ...] = (
    ReferenceValue("la_volume_ml", "women", 22.0, 52.0, None, None, _LANG_2005),
    ReferenceValue("la_volume_ml", "men", 18.0, 58.0, None, None, _LANG_2005),
    ReferenceValue(
        "gls_contour_pct",
        "healthy adults, speckle-tracking GLS (not contour-based)",
        None,
        None,
        -19.7,
        None,
        _YINGCHONCHAROEN_2013 + ": mean -19.7 %, 95 % CI -20.4 to -18.9 %",
    ),
    ReferenceValue(
        "long_axis_shortening_2ch_pct",
        "healthy adults, mean of the apical views",
        16.3 - 2 * 2.4,
        16.3 + 2 * 2.4,
        16.3,
        2.4,
        _STOYLEN_2018 + ": 16.3 +/- 2.4 %, range mean +/- 2 SD",
    ),
    ReferenceValue(
        "long_axis_shortening_4ch_pct",
        "healthy adults, mean of the apical views",
        16.3 - 2 * 2.4,
        16.3 + 2 * 2.4,
        16.3,
        2.4,
        _STOYLEN_2018 + ": 16.3 +/- 2.4 %, range mean +/- 2 SD",
    ),
)
"""Published values of healthy adults beside which a cohort's per-study measurements are shown
(report, docs/measures.md); sources in the module docstring."""
