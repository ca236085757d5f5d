"""Oracle: the direct NIfTI decoding of ``read_image`` equals SimpleITK's reading."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from fixtures import write_nifti_by_hand

from echo_batch.errors import InputError
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


def _sitk_nifti(
    path: Path, array: np.ndarray, patches: list[tuple] = (), extra: bytes = b""
) -> Path:
    """Write ``array`` as NIfTI-1 with SimpleITK, then overwrite header fields and gzip if asked.

    Args:
        path: ``.nii`` or ``.nii.gz`` target.
        array: ``(H, W)`` pixels.
        patches: ``(offset, struct format, *values)`` written into the 352 header bytes.
        extra: bytes appended after the payload.
    """
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.2, 0.3))
    plain = path.with_name("plain.nii")
    sitk.WriteImage(image, str(plain), useCompression=False)
    raw = bytearray(plain.read_bytes())
    plain.unlink()
    for offset, fmt, *values in patches:
        struct.pack_into(fmt, raw, offset, *values)
    raw += extra
    path.write_bytes(gzip.compress(bytes(raw)) if path.name.endswith(".gz") else bytes(raw))
    return path


_BITPIX = 72  # NIfTI-1 header offset of bitpix (int16); datatype is at 70, vox_offset at 108


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
@pytest.mark.parametrize("bitpix", [0, 4, 8, 12, 16, 64, 128])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.float32, np.float64])
def test_bitpix_that_disagrees_with_datatype_reads_as_simpleitk_does(
    tmp_path: Path, dtype, bitpix: int, ext: str
) -> None:
    """ITK sizes the payload from the datatype and ignores bitpix (a float32 file with bitpix 0
    reads as float32); so must the direct decoder, which sized it from bitpix before."""
    array = (np.random.default_rng(bitpix).random((7, 5)) * 100).astype(dtype)
    path = _sitk_nifti(tmp_path / f"a{ext}", array, [(_BITPIX, "<h", bitpix)])
    _assert_same(path, labels=False)
    np.testing.assert_array_equal(read_image(path).array, array.astype(np.float32))


_F32 = (np.arange(35, dtype=np.float32).reshape(7, 5) + 0.5) / 7
_NAN = np.where(_F32 > 3, np.nan, _F32).astype(np.float32)


@pytest.mark.parametrize(
    ("name", "array", "patches", "extra", "reason"),
    [
        ("a.nii.gz", _F32, [], b"\0" * 8, "expands past the 492 bytes"),  # bomb guard
        ("a.nii", _F32, [(42, "<h", 8)], b"", "truncated or corrupt"),  # 8 columns: zero-filled
        ("a.nii.gz", _NAN, [], b"", "NaN or infinite"),  # SimpleITK turns NaN into 0
        ("a.nii.gz", _F32, [(108, "<f", float("nan"))], b"", "invalid NIfTI vox_offset nan"),
        ("a.nii.gz", _F32, [(108, "<f", 1e30)], b"", "invalid NIfTI vox_offset"),
        ("a.nii.gz", _F32.astype(np.int64), [], b"", "unsupported pixel type"),
        ("a.nii.gz", _F32.astype(np.complex64), [], b"", "unsupported pixel type"),
    ],
    ids=["gz-trailing", "truncated", "nan", "vox-nan", "vox-huge", "int64", "complex64"],
)
def test_files_simpleitk_reads_but_we_refuse_are_these_only(
    tmp_path: Path, name: str, array: np.ndarray, patches: list, extra: bytes, reason: str
) -> None:
    """The deliberate disagreements with SimpleITK: each file reads there, is refused here."""
    path = _sitk_nifti(tmp_path / name, array, patches, extra)
    sitk.ReadImage(str(path))  # raises if SimpleITK does not read it
    with pytest.raises(InputError, match=reason):
        read_image(path)


@pytest.mark.parametrize("datatype", [0, 1, 3, 1536, 9999])
def test_datatype_codes_simpleitk_refuses_are_refused(tmp_path: Path, datatype: int) -> None:
    path = _sitk_nifti(tmp_path / "a.nii.gz", _F32, [(70, "<h", datatype)])
    with pytest.raises(RuntimeError):
        sitk.ReadImage(str(path))
    with pytest.raises(InputError, match=f"NIfTI datatype code {datatype}"):
        read_image(path)
