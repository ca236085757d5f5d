"""Oracle: the direct NIfTI decoding of ``read_image`` equals SimpleITK's reading."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from fixtures import write_nifti_by_hand

from echo_batch.io.image import read_image
from echo_batch.io.writers import write_image

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "camus224-test"


def _sitk(path: Path) -> tuple[np.ndarray, tuple[float, float], tuple, tuple]:
    image = sitk.ReadImage(str(path))
    sx, sy = image.GetSpacing()[:2]
    direction = image.GetDirection()
    n = image.GetDimension()
    return (
        np.squeeze(sitk.GetArrayFromImage(image)),
        (sy, sx),
        image.GetOrigin()[:2],
        (direction[0], direction[1], direction[n], direction[n + 1]),
    )


def _assert_same(path: Path, labels: bool) -> None:
    ours = read_image(path, labels=labels)
    array, spacing, origin, direction = _sitk(path)
    np.testing.assert_array_equal(ours.array, array.astype(ours.array.dtype))
    assert ours.spacing == spacing
    assert ours.geometry.origin == pytest.approx(origin)
    assert ours.geometry.direction == pytest.approx(direction)


def test_every_bundled_file_matches_simpleitk() -> None:
    files = sorted(SAMPLE.rglob("*.nii.gz"))
    assert len(files) == 50 * 8
    for path in files:
        _assert_same(path, labels=path.name.endswith("_gt.nii.gz"))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("spacing", [(0.154, 0.308), (0.25, 0.25)])
def test_writer_output_matches_simpleitk(tmp_path: Path, dtype, spacing) -> None:
    rng = np.random.default_rng(3)
    array = (rng.random((29, 17)) * 200).astype(dtype)
    path = write_image(tmp_path / "a.nii.gz", array, spacing)
    _assert_same(path, labels=False)


def _patch(path: Path, offset: int, fmt: str, *values) -> Path:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    struct.pack_into(fmt, raw, offset, *values)
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


@pytest.mark.parametrize(
    ("offset", "fmt", "values"),
    [
        (112, "<2f", (2.0, 5.0)),  # intensity scaling: SimpleITK applies slope and intercept
        (123, "<B", (3,)),  # spatial unit micron: SimpleITK converts the spacing
        (252, "<hh", (0, 1)),  # sform only
    ],
    ids=["scaled", "micron", "sform-only"],
)
def test_headers_needing_conversion_still_match_simpleitk(tmp_path, offset, fmt, values) -> None:
    rng = np.random.default_rng(5)
    array = rng.integers(0, 255, size=(12, 9), dtype=np.uint8)
    path = write_nifti_by_hand(tmp_path / "p_2CH_ED.nii.gz", array, (0.3, 0.2))
    _assert_same(_patch(path, offset, fmt, *values), labels=False)
