"""Writers round-trip exactly through the readers of ``echo_batch.io.image``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from echo_batch.io.cfg import parse_cfg
from echo_batch.io.image import read_image, read_sequence
from echo_batch.io.writers import write_cfg, write_image, write_text

SPACINGS = [(0.154, 0.308), (0.308, 0.154), (0.25, 0.25)]
SUFFIXES = [".nii.gz", ".mhd"]


def _labels(shape: tuple[int, ...]) -> np.ndarray:
    """Asymmetric uint8 label map (values 0-3) so a transpose or flip cannot pass."""
    rng = np.random.default_rng(7)
    return rng.integers(0, 4, size=shape, dtype=np.uint8)


def _spacing_close(read: tuple[float, float], written: tuple[float, float], suffix: str) -> None:
    # NIfTI stores pixdim as float32; MetaImage keeps the decimal text.
    rel = 1e-6 if suffix == ".nii.gz" else 1e-12
    assert read == pytest.approx(written, rel=rel)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_label_map_round_trip(tmp_path: Path, suffix: str, spacing: tuple[float, float]) -> None:
    array = _labels((37, 23))  # H != W: an axis swap would change the shape
    path = write_image(tmp_path / f"p_2CH_ED_gt{suffix}", array, spacing)
    image = read_image(path, labels=True)
    assert image.array.dtype == np.uint8
    assert image.array.shape == (37, 23)
    np.testing.assert_array_equal(image.array, array)
    _spacing_close(image.spacing, spacing, suffix)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_image_round_trip_uint8_and_float(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(1)
    still = rng.integers(0, 256, size=(20, 31), dtype=np.uint8)
    read = read_image(write_image(tmp_path / f"a{suffix}", still, (0.154, 0.308)))
    np.testing.assert_array_equal(read.array, still.astype(np.float32))
    values = rng.normal(size=(20, 31)).astype(np.float32)
    read = read_image(write_image(tmp_path / f"b{suffix}", values, (0.308, 0.154)))
    np.testing.assert_array_equal(read.array, values)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("spacing", SPACINGS[:2])
def test_sequence_round_trip(tmp_path: Path, suffix: str, spacing: tuple[float, float]) -> None:
    frames = _labels((5, 19, 12))
    path = write_image(tmp_path / f"p_4CH_half_sequence_gt{suffix}", frames, spacing)
    sequence = read_sequence(path, labels=True)
    assert sequence.array.shape == (5, 19, 12)
    np.testing.assert_array_equal(sequence.array, frames)
    _spacing_close(sequence.geometry.spacing, spacing, suffix)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_origin_round_trip(tmp_path: Path, suffix: str) -> None:
    path = write_image(tmp_path / f"o{suffix}", _labels((8, 9)), (0.5, 0.25), origin=(3.0, -2.0))
    assert read_image(path, labels=True).geometry.origin == pytest.approx((3.0, -2.0))


def test_mhd_header_names_final_raw_and_leaves_no_temporaries(tmp_path: Path) -> None:
    path = write_image(tmp_path / "patient0001_4CH_ES.mhd", _labels((6, 4)), (0.154, 0.308))
    header = {
        k.strip(): v.strip()
        for k, _, v in (line.partition("=") for line in path.read_text().splitlines())
    }
    assert header["ElementDataFile"] == "patient0001_4CH_ES.raw"
    assert header["ElementSpacing"] == "0.308 0.154"  # SimpleITK order (col, row)
    assert header["DimSize"] == "4 6"
    assert header["CompressedData"] == "False"
    assert (tmp_path / "patient0001_4CH_ES.raw").stat().st_size == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "patient0001_4CH_ES.mhd",
        "patient0001_4CH_ES.raw",
    ]


def test_overwrite_replaces_file(tmp_path: Path) -> None:
    path = tmp_path / "x.nii.gz"
    write_image(path, np.zeros((4, 4), np.uint8), (1.0, 1.0))
    write_image(path, np.ones((4, 4), np.uint8), (1.0, 1.0))
    assert read_image(path, labels=True).array.min() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]


def test_write_image_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        write_image(tmp_path / "x.png", np.zeros((4, 4), np.uint8), (1.0, 1.0))
    with pytest.raises(ValueError, match="expected"):
        write_image(tmp_path / "x.nii.gz", np.zeros(4, np.uint8), (1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        write_image(tmp_path / "x.nii.gz", np.zeros((4, 4), np.uint8), (0.0, 1.0))


def test_cfg_round_trip(tmp_path: Path) -> None:
    mapping = {
        "ED": 1,
        "ES": 14,
        "NbFrame": 14,
        "Sex": "F",
        "Age": 63,
        "ImageQuality": "Good",
        "LVedv": 101.234,
        "LVesv": 1 / 3,
        "LVef": 55.5,
    }
    path = write_cfg(tmp_path / "Info_2CH.cfg", mapping)
    assert path.read_text().splitlines()[0] == "ED: 1"
    info = parse_cfg(path)
    assert (info.ed_frame, info.es_frame, info.n_frames) == (1, 14, 14)
    assert (info.sex, info.age, info.image_quality) == ("F", 63.0, "Good")
    assert info.edv_ml == 101.234
    assert info.esv_ml == 1 / 3  # repr round-trips floats exactly
    assert info.ef_pct == 55.5


def test_cfg_rejects_bad_keys_and_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_cfg(tmp_path / "a.cfg", {"A:B": 1})
    with pytest.raises(ValueError):
        write_cfg(tmp_path / "a.cfg", {"A": "two\nlines"})
    assert not (tmp_path / "a.cfg").exists()


def test_write_text(tmp_path: Path) -> None:
    path = write_text(tmp_path / "sub" / "ids.txt", "patient0001\n")
    assert path.read_text() == "patient0001\n"
    assert [p.name for p in path.parent.iterdir()] == ["ids.txt"]
