"""Readers raise nothing but InputError for a bad file: corrupted bytes of every format, and any
exception a decoder raises (numpy, struct, zlib, SimpleITK, an allocation) is turned into one."""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from fixtures import CFG_2023, lv_la_labels, write_cfg, write_image, write_mhd

from echo_batch.errors import InputError
from echo_batch.io import image as image_module
from echo_batch.io.image import parse_cfg, read_image, read_sequence

_ROWS, _COLS = 12, 10
_FLOATS = (np.arange(_ROWS * _COLS, dtype=np.float32).reshape(_ROWS, _COLS) + 0.25) / 3


def _nifti_bytes(array: np.ndarray) -> bytes:
    """Uncompressed NIfTI-1 bytes of ``array`` as SimpleITK writes them (352-byte header)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.3, 0.3) + (1.0,) * (array.ndim - 2))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.nii"
        sitk.WriteImage(image, os.fspath(path), useCompression=False)
        return path.read_bytes()


def _flipped(data: bytes, rng: np.random.Generator, start: int, stop: int) -> bytes:
    """``data`` with 1-4 random bytes in ``[start, stop)`` replaced by random values."""
    out = bytearray(data)
    for offset in rng.integers(start, min(stop, len(out)), size=int(rng.integers(1, 5))):
        out[offset] = int(rng.integers(0, 256))
    return bytes(out)


def _variants(data: bytes, seed: int, header_bytes: int) -> list[bytes]:
    """Corrupted copies of ``data``: flips in the header, flips anywhere, truncations."""
    rng = np.random.default_rng(seed)
    header = [_flipped(data, rng, 0, header_bytes) for _ in range(40)]
    anywhere = [_flipped(data, rng, 0, len(data)) for _ in range(10)]
    cut = [data[: int(n)] for n in rng.integers(0, len(data), size=10)]
    return header + anywhere + cut


def _assert_input_error_or_image(read: Callable[[], object], label: str) -> int:
    """Call ``read``; anything but a result or an InputError fails. Returns 1 when refused."""
    try:
        read()
    except InputError:
        return 1
    except Exception as exc:
        pytest.fail(f"{label}: {type(exc).__name__} escaped the reader: {exc}")
    return 0


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_corrupted_nifti_is_read_or_refused_with_input_error(tmp_path, ext, dtype) -> None:
    plain = _nifti_bytes(_FLOATS.astype(dtype))
    refused = 0
    for number, data in enumerate(
        _variants(plain, seed=len(ext) + dtype().itemsize, header_bytes=352)
    ):
        path = tmp_path / f"p{number}_2CH_ED{ext}"
        path.write_bytes(gzip.compress(data) if ext == ".nii.gz" else data)
        refused += _assert_input_error_or_image(lambda p=path: read_image(p), path.name)
    assert refused > 0  # the corruptions do reach the checks


def test_corrupted_gzip_stream_is_refused_with_input_error(tmp_path) -> None:
    packed = gzip.compress(_nifti_bytes(_FLOATS))
    for number, data in enumerate(_variants(packed, seed=7, header_bytes=len(packed))):
        path = tmp_path / f"p{number}_2CH_ED.nii.gz"
        path.write_bytes(data)
        _assert_input_error_or_image(lambda p=path: read_image(p), path.name)


def test_corrupted_sequence_is_read_or_refused_with_input_error(tmp_path) -> None:
    plain = _nifti_bytes(np.stack([_FLOATS, _FLOATS * 2, _FLOATS * 3]))
    for number, data in enumerate(_variants(plain, seed=11, header_bytes=352)):
        path = tmp_path / f"p{number}_2CH_half_sequence.nii.gz"
        path.write_bytes(gzip.compress(data))
        _assert_input_error_or_image(lambda p=path: read_sequence(p), path.name)


@pytest.mark.parametrize("compressed", [False, True])
def test_corrupted_mhd_header_and_data_are_read_or_refused(tmp_path, compressed) -> None:
    pixels = lv_la_labels(_ROWS, _COLS).tobytes()
    data = zlib.compress(pixels) if compressed else pixels
    extra = ["CompressedData = True"] if compressed else []
    suffix = ".zraw" if compressed else ".raw"
    header = write_mhd(
        tmp_path / "h.mhd", (_COLS, _ROWS), data_file="x" + suffix, extra_lines=extra
    )
    text = header.read_bytes()
    for number in range(30):
        folder = tmp_path / f"p{number}"
        folder.mkdir()
        head = _variants(text, seed=number, header_bytes=len(text))[number]
        payload = _variants(data, seed=100 + number, header_bytes=len(data))[number]
        (folder / "x.mhd").write_bytes(head)
        (folder / ("x" + suffix)).write_bytes(payload)
        _assert_input_error_or_image(
            lambda f=folder: read_image(f / "x.mhd", labels=True), str(folder)
        )


def test_corrupted_cfg_is_parsed_or_refused_with_cfg_error(tmp_path) -> None:
    good = write_cfg(tmp_path / "Info_2CH.cfg", CFG_2023).read_bytes()
    for number, data in enumerate(_variants(good, seed=3, header_bytes=len(good))):
        path = tmp_path / f"Info_{number}.cfg"
        path.write_bytes(data)
        _assert_input_error_or_image(lambda p=path: parse_cfg(p), path.name)


# --------------------------------------------------------------------------- known crashes

_VOX_OFFSET = 108  # NIfTI-1 header offset of vox_offset (float32)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e30])
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_non_finite_or_huge_vox_offset_is_an_input_error(tmp_path, value, ext) -> None:
    """Python's int() of such a value raised ValueError/OverflowError out of the reader."""
    raw = bytearray(_nifti_bytes(_FLOATS))
    struct.pack_into("<f", raw, _VOX_OFFSET, value)
    path = tmp_path / f"p_2CH_ED{ext}"
    path.write_bytes(gzip.compress(bytes(raw)) if ext == ".nii.gz" else bytes(raw))
    with pytest.raises(InputError, match="vox_offset") as raised:
        read_image(path)
    assert raised.value.path == path


# --------------------------------------------------------------------------- decoder exceptions


_DECODER_FAILURES = [
    struct.error("unpack requires a buffer of 4 bytes"),
    zlib.error("Error -3 while decompressing data"),
    MemoryError(),
    ValueError("cannot reshape array"),
    RuntimeError("Exception thrown in SimpleITK\nITK ERROR: ImageIO: cannot read"),
    ZeroDivisionError("integer division or modulo by zero"),
]


@pytest.mark.parametrize(
    "failure", _DECODER_FAILURES, ids=lambda e: f"{type(e).__module__}.{type(e).__name__}"
)
def test_nifti_decoder_exception_becomes_input_error_naming_the_file(
    tmp_path, monkeypatch, failure
) -> None:
    path = write_image(tmp_path / "p_2CH_ED.nii.gz", _FLOATS, (0.3, 0.3))

    def broken(*_args, **_kwargs):
        raise failure

    monkeypatch.setattr(image_module, "check_nifti", broken)
    with pytest.raises(InputError, match=type(failure).__name__) as raised:
        read_image(path)
    assert raised.value.path == path and "not a readable image" in raised.value.reason
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "failure", _DECODER_FAILURES, ids=lambda e: f"{type(e).__module__}.{type(e).__name__}"
)
@pytest.mark.parametrize("read", [read_image, read_sequence], ids=["image", "sequence"])
def test_simpleitk_path_exception_becomes_input_error_naming_the_file(
    tmp_path, monkeypatch, failure, read
) -> None:
    path = write_mhd(
        tmp_path / "p_2CH_ED.mhd", (_COLS, _ROWS), data=lv_la_labels(_ROWS, _COLS).tobytes()
    )

    def broken(*_args, **_kwargs):
        raise failure

    monkeypatch.setattr(sitk, "GetArrayFromImage", broken)
    with pytest.raises(InputError, match=type(failure).__name__) as raised:
        read(path)
    assert raised.value.path == path


def test_programming_errors_are_not_disguised_as_bad_files(tmp_path, monkeypatch) -> None:
    """Only decoder failures are the file's fault; a TypeError is a bug and propagates."""
    path = write_image(tmp_path / "p_2CH_ED.nii.gz", _FLOATS, (0.3, 0.3))

    def broken(*_args, **_kwargs):
        raise TypeError("bug")

    monkeypatch.setattr(image_module, "check_nifti", broken)
    with pytest.raises(TypeError):
        read_image(path)
