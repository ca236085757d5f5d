"""Clinical EF thresholds: one table, each value next to its source.

Sources:

* HF categories: Bozkurt B, Coats AJS, Tsutsui H, et al. "Universal definition and classification of
  heart failure." J Card Fail 2021;27:387-413 (also Eur J Heart Fail 2021;23:352-380): HFrEF
  LVEF <= 40 %, HFmrEF LVEF 41-49 %, HFpEF LVEF >= 50 %.
* Normal ranges: Lang RM, Badano LP, Mor-Avi V, et al. "Recommendations for cardiac chamber
  quantification by echocardiography in adults: an update from the ASE and the EACVI."
  J Am Soc Echocardiogr 2015;28:1-39, Table 4 (2D biplane LVEF, mean +/- 2 SD):
  men 52-72 %, women 54-74 %.

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
