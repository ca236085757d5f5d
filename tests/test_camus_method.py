"""CAMUS-compatible biplane: resampling conventions, synthetic shapes and real camus224 patients."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from echo_batch.domain import IMAGE_KEYS, ImageKey, Instant, Label, View
from echo_batch.measure.camus_method import (
    CamusDiameters,
    CamusFailure,
    CamusResult,
    camus_biplane,
    camus_diameters,
    resize_nearest,
    to_isotropic,
    upsample_bilinear,
)

CAMUS224 = Path(__file__).resolve().parents[2] / "shared" / "camus224"


def half_ellipse(a_px: float, c_px: float, shape: tuple[int, int] = (160, 120)) -> np.ndarray:
    """Binary half-ellipse, flat base at row 120, apex up, centred in the columns."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    v, w = 120 - yy, xx - shape[1] / 2
    return ((v >= 0) & ((w / a_px) ** 2 + (v / c_px) ** 2 <= 1)).astype(np.uint8)


def test_resize_nearest_matches_pil() -> None:
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (37, 224), dtype=np.uint8)
    for width in (224, 271, 272, 301, 389):
        expected = np.array(pil.fromarray(image).resize((width, 53), pil.Resampling.NEAREST))
        np.testing.assert_array_equal(resize_nearest(image, (53, width)), expected)


def test_isotropic_resampling_sizes() -> None:
    iso, s = to_isotropic(np.ones((224, 224), np.uint8), (0.5, 0.75))
    assert s == 0.5
    assert iso.shape == (224, 336)


def test_upsampling_inverts_a_corner_aligned_grid() -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[2:8, 3:7] = 1
    up, spacing = upsample_bilinear(mask, (1.0, 2.0), 0.5)
    assert up.shape == (19, 37)
    assert spacing == pytest.approx((0.5, 0.5))
    np.testing.assert_array_equal(up[::2, ::4], mask)  # original pixel centres keep their label


def test_upsampling_by_hand_two_by_two() -> None:
    """Corner-aligned 2x2 -> 3x3: new pixels are the means of their neighbours, kept at >= 0.5."""
    mask = np.array([[0, 1], [0, 0]], np.uint8)
    up, spacing = upsample_bilinear(mask, (1.0, 1.0), 0.5)
    # values: [[0, .5, 1], [0, .25, .5], [0, 0, 0]]
    np.testing.assert_array_equal(up, [[0, 1, 1], [0, 0, 1], [0, 0, 0]])
    assert up.dtype == np.uint8 and spacing == (0.5, 0.5)


@pytest.mark.parametrize(
    ("shape", "spacing", "target_mm"),
    [((224, 224), (0.8, 0.7), 0.308), ((37, 51), (1.0, 0.45), 0.3), ((1, 9), (0.5, 0.5), 0.2)],
)
def test_upsampling_matches_scipy_linear_interpolation(shape, spacing, target_mm) -> None:
    """Oracle: ``scipy.ndimage.map_coordinates(order=1)`` at the corner-aligned positions."""
    from scipy import ndimage

    rng = np.random.default_rng(sum(shape))
    mask = ndimage.binary_opening(rng.random(shape) > 0.4).astype(np.uint8)
    up, (row_mm, col_mm) = upsample_bilinear(mask, spacing, target_mm)
    out = [max(2, round((n - 1) * s / target_mm) + 1) for n, s in zip(shape, spacing, strict=True)]
    assert up.shape == tuple(out)
    rows = np.linspace(0, shape[0] - 1, out[0])
    cols = np.linspace(0, shape[1] - 1, out[1])
    grid = np.meshgrid(rows, cols, indexing="ij")
    values = ndimage.map_coordinates(mask.astype(np.float64), grid, order=1, mode="nearest")
    decided = np.abs(values - 0.5) > 1e-9  # exact ties may round either way in either code
    assert decided.mean() > 0.9
    np.testing.assert_array_equal(up[decided], (values >= 0.5)[decided])
    if shape[0] > 1:
        assert row_mm == pytest.approx((shape[0] - 1) * spacing[0] / (out[0] - 1))
    assert col_mm == pytest.approx((shape[1] - 1) * spacing[1] / (out[1] - 1))


def test_measure_imports_without_torch() -> None:
    """torch is imported inside ``upsample_bilinear`` only: the measurement stage needs none."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import echo_batch.measure.camus_method, echo_batch.measure.landmarks\n"
        "import echo_batch.measure.volumes, echo_batch.measure.patient\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


def test_half_ellipse_base_apex_and_diameters() -> None:
    result = camus_diameters(half_ellipse(30, 90), (1.0, 1.0))
    assert isinstance(result, CamusDiameters)
    # base chord along the flat base (row ~120.5), apex at the tip (row ~30)
    assert np.all(np.abs(result.base_px[:, 0] - 120.5) <= 1.0)
    assert result.apex_px[0] == pytest.approx(30.5, abs=1.0)
    assert result.length_mm == pytest.approx(90.0, abs=1.5)
    # disk 0 lies on the base: width of the ellipse at v = 0 (marching ends one step outside)
    assert result.diameters_mm[0] == pytest.approx(61.0, abs=2.0)
    assert np.all(np.diff(result.diameters_mm) <= 0.5)  # narrowing towards the apex


def test_identical_ed_and_es_give_zero_ef_and_volume_of_the_shape() -> None:
    masks = {key: half_ellipse(30, 90) for key in IMAGE_KEYS}
    spacings = dict.fromkeys(IMAGE_KEYS, (0.5, 0.5))
    result = camus_biplane(masks, spacings)
    assert isinstance(result, CamusResult)
    assert result.ef_pct == 0
    assert result.edv_ml == result.esv_ml
    # disks start at the base (fractions 0..0.95): slightly above the half spheroid 2/3 pi a^2 c
    spheroid = 2 / 3 * math.pi * 15.0**2 * 45.0 / 1000
    assert spheroid * 0.95 <= result.edv_ml <= spheroid * 1.15


def test_smaller_es_gives_positive_ef() -> None:
    masks = {
        ImageKey(v, Instant.ED): half_ellipse(30, 90) * Label.LV for v in (View.A2C, View.A4C)
    } | {ImageKey(v, Instant.ES): half_ellipse(22, 75) * Label.LV for v in (View.A2C, View.A4C)}
    result = camus_biplane(masks, dict.fromkeys(IMAGE_KEYS, (0.5, 0.5)))
    assert isinstance(result, CamusResult)
    assert 40 < result.ef_pct < 75


def test_missing_and_empty_images_fail() -> None:
    masks = {key: half_ellipse(30, 90) for key in IMAGE_KEYS}
    spacings = dict.fromkeys(IMAGE_KEYS, (0.5, 0.5))
    partial = {k: v for k, v in masks.items() if k != ImageKey(View.A4C, Instant.ES)}
    assert isinstance(camus_biplane(partial, spacings), CamusFailure)
    empty = masks | {ImageKey(View.A2C, Instant.ED): np.zeros((50, 50), np.uint8)}
    failure = camus_biplane(empty, spacings)
    assert isinstance(failure, CamusFailure)
    assert "2CH_ED" in failure.reason


def _reference_rows() -> dict[str, dict[str, str]]:
    if not (CAMUS224 / "reference.csv").is_file():
        pytest.skip(f"camus224 not found at {CAMUS224}")
    with (CAMUS224 / "reference.csv").open() as f:
        return {row["patient"]: row for row in csv.DictReader(f)}


def _patient(pid: str) -> tuple[dict[ImageKey, np.ndarray], dict[ImageKey, tuple[float, float]]]:
    from echo_batch.io.image import read_image

    masks, spacings = {}, {}
    for key in IMAGE_KEYS:
        image = read_image(
            CAMUS224 / "database_nifti" / pid / f"{pid}_{key}_gt.nii.gz", labels=True
        )
        masks[key], spacings[key] = image.array, image.spacing
    return masks, spacings


# spread over the cohort, including the hard 224-grid cases 0039, 0075 and 0217
REAL_PATIENTS = [f"patient{n:04d}" for n in (1, 7, 9, 39, 75, 120, 217, 306, 402, 500)]


@pytest.mark.shared
@pytest.mark.parametrize("pid", REAL_PATIENTS)
def test_real_patients_reproduce_the_reference_implementation(pid: str) -> None:
    row = _reference_rows()[pid]
    result = camus_biplane(*_patient(pid))
    assert isinstance(result, CamusResult)
    assert (result.edv_ml, result.esv_ml, result.ef_pct) == (
        int(row["edv_gt_ref"]),
        int(row["esv_gt_ref"]),
        int(row["ef_gt_ref"]),
    )


@pytest.mark.shared
@pytest.mark.parametrize("pid", ["patient0039", "patient0075"])
def test_native_grid_variant_reproduces_its_reference(pid: str) -> None:
    row = _reference_rows()[pid]
    result = camus_biplane(*_patient(pid), native_spacing_mm=0.308)
    assert isinstance(result, CamusResult)
    assert result.ef_pct == int(row["ef_gt_ref_native_grid"])
    assert abs(result.ef_pct - int(row["cfg_ef"])) <= 2


def test_native_grid_variant_reproduces_its_reference_on_the_bundled_sample() -> None:
    """All 50 bundled patients: the upsampled-mask EF equals the stored reference, which the
    explicit interpolation matrices produced before ``upsample_bilinear`` used torch."""
    from conftest import BUNDLED_SAMPLE

    from echo_batch.io.image import read_image

    with (BUNDLED_SAMPLE / "reference.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 50
    for row in rows:
        pid = row["patient"]
        images = {
            key: read_image(
                BUNDLED_SAMPLE / "database_nifti" / pid / f"{pid}_{key}_gt.nii.gz", labels=True
            )
            for key in IMAGE_KEYS
        }
        masks = {key: image.array for key, image in images.items()}
        spacings = {key: image.spacing for key, image in images.items()}
        result = camus_biplane(masks, spacings, native_spacing_mm=0.308)
        assert isinstance(result, CamusResult), pid
        assert result.ef_pct == int(row["ef_gt_ref_native_grid"]), pid


def _brute_force_base(contour: np.ndarray) -> tuple[int, int] | None:
    """The base chord by its definition, one chord at a time (slow, obviously correct)."""
    best, best_len = None, 0.0
    for i in range(len(contour)):
        for j in range(i - 1):
            d = contour[j] - contour[i]
            if abs(np.degrees(np.arctan2(d[0], d[1]))) > 45.0:
                continue
            length = float(np.hypot(d[0], d[1]))
            if length <= best_len:
                continue
            between = contour[j + 1 : i] - contour[i]
            dev = np.abs(d[0] * between[:, 1] - d[1] * between[:, 0]) / length
            if np.all(dev <= 8.0):
                best, best_len = (j, i), length
    return best


@pytest.mark.parametrize("seed", range(12))
def test_base_search_equals_the_definition(seed: int) -> None:
    """Oracle: the pruned, vectorised search returns the chord of the brute-force definition."""
    from echo_batch.measure.camus_method import _find_base

    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 140))
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = rng.uniform(10, 60) * (1 + 0.25 * rng.standard_normal(n).clip(-2, 2))
    contour = np.stack([radius * np.sin(t) * 1.6, radius * np.cos(t)], axis=1)
    contour = np.round(contour * 2) / 2  # half-pixel grid: ties in length do occur
    assert _find_base(contour) == _brute_force_base(contour)
