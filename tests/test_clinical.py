"""EF category table: boundaries, normal ranges and sources."""

from __future__ import annotations

import math

import pytest

from echo_batch.clinical import (
    EF_CATEGORY_TABLE,
    NORMAL_EF_RANGES,
    EfCategory,
    Sex,
    ef_category,
    ef_is_normal,
)


@pytest.mark.parametrize(
    ("ef", "category"),
    [
        (5.0, EfCategory.REDUCED),
        (40.0, EfCategory.REDUCED),
        (40.0001, EfCategory.MILDLY_REDUCED),
        (40.5, EfCategory.MILDLY_REDUCED),
        (41.0, EfCategory.MILDLY_REDUCED),
        (49.0, EfCategory.MILDLY_REDUCED),
        (49.99, EfCategory.MILDLY_REDUCED),
        (50.0, EfCategory.PRESERVED),
        (75.0, EfCategory.PRESERVED),
        (-3.0, EfCategory.REDUCED),
        (120.0, EfCategory.PRESERVED),
    ],
)
def test_category_boundaries(ef: float, category: EfCategory) -> None:
    assert ef_category(ef) is category


@pytest.mark.parametrize("ef", list(range(0, 101)))
def test_integer_ef_matches_the_published_categories(ef: int) -> None:
    published = (
        EfCategory.REDUCED
        if ef <= 40
        else EfCategory.MILDLY_REDUCED
        if 41 <= ef <= 49
        else EfCategory.PRESERVED
    )
    assert ef_category(float(ef)) is published


def test_missing_ef_has_no_category() -> None:
    assert ef_category(None) is None
    assert ef_category(math.nan) is None


@pytest.mark.parametrize(
    ("ef", "sex", "normal"),
    [
        (52.0, "M", True),
        (51.9, "M", False),
        (72.0, Sex.MALE, True),
        (72.1, "M", False),
        (53.0, "F", False),
        (54.0, "F", True),
        (74.0, Sex.FEMALE, True),
        (74.5, "F", False),
    ],
)
def test_normal_ranges_by_sex(ef: float, sex: str, normal: bool) -> None:
    assert ef_is_normal(ef, sex) is normal


def test_normal_range_unknown_inputs() -> None:
    assert ef_is_normal(60.0, None) is None
    assert ef_is_normal(60.0, "X") is None
    assert ef_is_normal(math.nan, "M") is None


def test_table_is_ordered_and_sourced() -> None:
    uppers = [row.upper_pct for row in EF_CATEGORY_TABLE]
    assert uppers == sorted(uppers)
    assert {row.category for row in EF_CATEGORY_TABLE} == set(EfCategory)
    assert all("2021" in row.source for row in EF_CATEGORY_TABLE)
    assert all("2015" in r.source for r in NORMAL_EF_RANGES.values())
    assert (NORMAL_EF_RANGES[Sex.MALE].low_pct, NORMAL_EF_RANGES[Sex.MALE].high_pct) == (52, 72)
    assert (NORMAL_EF_RANGES[Sex.FEMALE].low_pct, NORMAL_EF_RANGES[Sex.FEMALE].high_pct) == (54, 74)
