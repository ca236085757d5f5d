"""DICOM ultrasound reader (io/dicom.py): pydicom's bundled ultrasound examples, hand-built files
with known answers (calibration, crop, grey levels, colour masking, frame time, view), refused
calibrations, bad files (each an InputError naming the file), identity never read, grouping."""

from __future__ import annotations

import dataclasses
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from echo_batch.domain import InputFormat, SpacingSource, View
from echo_batch.errors import InputError
from echo_batch.io.dicom import (
    COLOUR_SPREAD,
    VIEW_CODES,
    DicomHeader,
    PixelBox,
    RegionCalibration,
    group_dicom,
    is_dicom,
    read_dicom_clip,
    read_dicom_header,
)
from echo_batch.io.limits import InputLimits

NAME = "Quillfeather^Ondine"
BIRTH = "19620417"
SECRETS = ("Quillfeather", "Ondine", BIRTH, "1962-04-17")


def _example(name: str) -> Path:
    """A pydicom test file shipped with the package (never downloaded)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed")
    return Path(path)


def _region(
    rows: tuple[int, int],
    cols: tuple[int, int],
    delta_cm: tuple[float, float],
    *,
    units: tuple[int, int] = (3, 3),
    spatial: int = 1,
    data_type: int = 1,
) -> Dataset:
    """An ultrasound region: inclusive ``rows``/``cols`` bounds, ``delta_cm`` (row, col)."""
    item = Dataset()
    item.RegionSpatialFormat = spatial
    item.RegionDataType = data_type
    item.RegionFlags = 0
    item.RegionLocationMinX0, item.RegionLocationMaxX1 = cols
    item.RegionLocationMinY0, item.RegionLocationMaxY1 = rows
    item.PhysicalUnitsYDirection, item.PhysicalUnitsXDirection = units
    item.PhysicalDeltaY, item.PhysicalDeltaX = delta_cm
    return item


def _dataset(**tags: object) -> Dataset:
    """An ultrasound dataset with identity, tags as given (keywords)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.PatientName = NAME
    ds.PatientBirthDate = BIRTH
    ds.PatientID = "P001"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.5"
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def _write(
    path: Path, pixels: np.ndarray, photometric: str, bits_stored: int = 8, **tags: object
) -> Path:
    """Write ``pixels`` (``(T, H, W[, 3])``) uncompressed with the given tags."""
    ds = _dataset(**tags)
    ds.set_pixel_data(np.ascontiguousarray(pixels), photometric, bits_stored)
    if pixels.ndim == (4 if pixels.shape[-1] == 3 and photometric != "PALETTE COLOR" else 3):
        ds.NumberOfFrames = pixels.shape[0]
    ds.save_as(path, enforce_file_format=True)
    return path


# --- pydicom's ultrasound examples ------------------------------------------------------------


def test_sonosite_ybr_cine_refuses_its_region_beyond_the_grid():
    path = _example("examples_ybr_color.dcm")
    header = read_dicom_header(path)
    assert (header.n_frames, header.rows, header.columns) == (30, 240, 320)
    assert header.transfer_syntax == JPEGBaseline8Bit
    assert header.frame_time_ms == pytest.approx(33.333)
    assert header.problem is None
    clip = read_dicom_clip(path)
    assert clip.frames.shape == (30, 240, 320) and clip.frames.dtype == np.float32
    assert clip.spacing is None and clip.spacing_source == SpacingSource.NONE
    # its tissue region: X 84-595, Y 31-414 on a 320 x 240 grid (downsampled, not updated)
    assert "rows 31-414, columns 84-595 exceed the pixel grid of 240 x 320" in clip.spacing_problem
    assert clip.frame_time_ms == pytest.approx(33.333)
    assert clip.input_format == InputFormat.DICOM and clip.view is None


def test_philips_palette_still_refuses_tissue_region_and_never_takes_its_ecg_region(tmp_path):
    path = _example("examples_palette.dcm")
    clip = read_dicom_clip(path)
    assert clip.frames.shape == (1, 350, 800)
    assert clip.spacing_source == SpacingSource.NONE
    assert "rows 60-518, columns 120-800 exceed the pixel grid of 350 x 800" in clip.spacing_problem
    # without its tissue region, the ECG region (spatial format 4, seconds) is left alone
    ds = dcmread(path)
    regions = ds.SequenceOfUltrasoundRegions
    assert (regions[1].RegionSpatialFormat, regions[1].PhysicalUnitsXDirection) == (4, 4)
    ds.SequenceOfUltrasoundRegions = [regions[1]]
    ds.save_as(tmp_path / "ecg_only.dcm")
    ecg_only = read_dicom_clip(tmp_path / "ecg_only.dcm")
    assert ecg_only.spacing is None
    assert ecg_only.spacing_problem == "none of the 1 ultrasound regions is a 2-D tissue region"


def test_rgb_still_without_regions_has_no_spacing_and_no_problem():
    clip = read_dicom_clip(_example("examples_rgb_color.dcm"))
    assert clip.frames.shape == (1, 240, 320)
    assert (clip.spacing, clip.spacing_source, clip.spacing_problem) == (
        None,
        SpacingSource.NONE,
        None,
    )


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        ("SC_rgb_rle_2frame.dcm", 0),  # RLE lossless, two frames
        ("SC_rgb_rle_16bit.dcm", 0),  # RLE lossless, 16 bits scaled to 0-255
        ("SC_rgb_jpeg_gdcm.dcm", 0),  # JPEG lossless, first-order prediction
        ("SC_rgb_gdcm_KY.dcm", 0),  # JPEG 2000
        ("SC_rgb_dcmtk_+eb+cy+n1.dcm", 1),  # JPEG baseline YBR_FULL
        ("SC_rgb_dcmtk_+eb+cy+s2.dcm", 1),  # JPEG baseline YBR_FULL_422
        ("SC_rgb_dcmtk_+eb+cr.dcm", 1),  # JPEG baseline RGB (no colour transform)
        ("SC_rgb_jls_lossy_sample.dcm", 2),  # JPEG-LS near-lossless
    ],
)
def test_encodings_of_one_test_pattern_agree(name, tolerance):
    reference = read_dicom_clip(_example("SC_rgb_rle.dcm")).frames[0]  # colour bars and greys
    assert 0.5 < (reference == 0).mean() < 0.8  # most bars are colour: masked
    clip = read_dicom_clip(_example(name))
    assert clip.n_frames == (2 if "2frame" in name else 1)  # a second frame is the negative
    assert np.abs(clip.frames[0] - reference).max() <= tolerance


@pytest.mark.parametrize("name", ["SC_rgb_jpeg.dcm", "SC_rgb_jpeg_dcmd.dcm"])
def test_pixel_element_written_the_implicit_way(name):
    # SC_rgb_jpeg.dcm: explicit VR file whose pixel element has no VR (pydicom reads it);
    # SC_rgb_jpeg_dcmd.dcm: implicit VR little endian, pixel data the last element
    header = read_dicom_header(_example(name))
    assert header.problem is None
    assert read_dicom_clip(_example(name)).frames.shape == (1, 256, 256)


def test_jpeg2000_ultrasound_still_against_pydicom_rgb():
    path = _example("examples_jpeg2k.dcm")  # JPEG 2000 lossless, YBR_RCT
    rgb = dcmread(path).pixel_array.astype(np.float64)  # pydicom's RGB: the oracle
    luma = (299 * rgb[..., 0] + 587 * rgb[..., 1] + 114 * rgb[..., 2]) / 1000
    expected = np.where(rgb.max(axis=-1) - rgb.min(axis=-1) > COLOUR_SPREAD, 0, luma)
    clip = read_dicom_clip(path)
    assert clip.spacing is None and clip.spacing_problem is None
    np.testing.assert_allclose(clip.frames[0], expected, rtol=0, atol=1e-4)


def _calibrated_copy(src: Path, dst: Path, rows: tuple[int, int], cols: tuple[int, int]) -> float:
    """Copy ``src`` with its tissue region moved inside the grid; returns its delta (cm)."""
    ds = dcmread(src)
    regions = list(ds.get("SequenceOfUltrasoundRegions", []))
    if regions:
        tissue = regions[0]
        tissue.RegionLocationMinY0, tissue.RegionLocationMaxY1 = rows
        tissue.RegionLocationMinX0, tissue.RegionLocationMaxX1 = cols
        delta = float(tissue.PhysicalDeltaX)
    else:
        delta = 0.031
        regions = [_region(rows, cols, (delta, delta))]
    ds.SequenceOfUltrasoundRegions = regions
    ds.save_as(dst)
    return delta


@pytest.mark.parametrize(
    "name", ["examples_ybr_color.dcm", "examples_palette.dcm", "examples_rgb_color.dcm"]
)
def test_calibrated_copies_of_the_examples_take_the_region(tmp_path, name):
    src = _example(name)
    rows, cols = (20, 219), (40, 279)
    delta = _calibrated_copy(src, tmp_path / name, rows, cols)
    clip = read_dicom_clip(tmp_path / name)
    assert clip.spacing_source == SpacingSource.DICOM_REGION and clip.spacing_problem is None
    assert clip.spacing == pytest.approx((delta * 10, delta * 10), rel=1e-12)  # cm x 10 = mm
    whole = read_dicom_clip(src).frames  # no usable region: the whole grid, same decoder
    np.testing.assert_array_equal(clip.frames, whole[:, 20:220, 40:280])


def test_colour_doppler_of_the_rgb_example_is_masked():
    path = _example("examples_rgb_color.dcm")
    rgb = dcmread(path).pixel_array.astype(np.int32)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    frame = read_dicom_clip(path).frames[0]
    coloured = spread > COLOUR_SPREAD
    assert coloured.sum() > 3000  # the Doppler map and the colour bars
    assert np.all(frame[coloured] == 0)
    grey = spread == 0
    np.testing.assert_array_equal(frame[grey], rgb[..., 0][grey])


# --- hand-built files with known answers ----------------------------------------------------


def _screen(n_frames: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A 60 x 80 RGB screen: a grey ramp everywhere, colour marks, and the expected region.

    Returns ``(rgb (T, 60, 80, 3) uint8, expected grey (T, 40, 64) float32)`` for a tissue
    region of rows 10-49 and columns 8-71.
    """
    t, r, c = np.meshgrid(np.arange(n_frames), np.arange(60), np.arange(80), indexing="ij")
    grey = ((t * 10 + r + c) % 200).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[:, 2:6, 2:70] = (0, 230, 0)  # ECG-green text above the region
    rgb[:, 55:58, :] = (255, 255, 0)  # yellow trace below the region
    rgb[:, 12, 10] = (255, 0, 0)  # a red marker inside the region: masked
    rgb[:, 14, 12] = (100, 110, 120)  # a tinted grey (spread 20): kept as luma
    expected = grey[:, 10:50, 8:72].astype(np.float32)
    expected[:, 2, 2] = 0.0
    expected[:, 4, 4] = (299 * 100 + 587 * 110 + 114 * 120) / 1000  # 108.15
    return rgb, expected


def test_calibrated_multiframe_rgb_known_answer(tmp_path):
    rgb, expected = _screen()
    path = _write(
        tmp_path / "a.dcm",
        rgb,
        "RGB",
        SequenceOfUltrasoundRegions=[_region((10, 49), (8, 71), (0.03, 0.05))],
        FrameTime=20,
        FrameIncrementPointer=0x00181063,
    )
    clip = read_dicom_clip(path)
    assert clip.spacing == (0.3, 0.5)  # rows 0.03 cm, columns 0.05 cm
    assert clip.spacing_source == SpacingSource.DICOM_REGION
    assert clip.frame_time_ms == 20.0
    assert clip.frames.shape == (3, 40, 64)
    np.testing.assert_allclose(clip.frames, expected, rtol=0, atol=1e-4)
    assert clip.frames[0, 2, 2] == 0.0 and clip.frames[0, 4, 4] == pytest.approx(108.15)
    header = read_dicom_header(path)
    assert header.calibration.crop == PixelBox(10, 50, 8, 72)
    assert header.frame_shape == (40, 64)


def test_single_frame_monochrome2_still(tmp_path):
    image = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) % 256
    path = _write(tmp_path / "still.dcm", image.astype(np.uint8), "MONOCHROME2")
    clip = read_dicom_clip(path)
    assert clip.frames.shape == (1, 48, 64)
    np.testing.assert_array_equal(clip.frames[0], image)


def test_monochrome1_is_inverted(tmp_path):
    values = np.array([[[0, 1, 128, 255]]], dtype=np.uint8)
    path = _write(tmp_path / "m1.dcm", values[0], "MONOCHROME1")
    np.testing.assert_array_equal(read_dicom_clip(path).frames[0], [[255, 254, 127, 0]])


def test_twelve_bit_grey_is_scaled_to_255(tmp_path):
    values = np.array([[0, 2048, 4095]], dtype=np.uint16)
    path = _write(tmp_path / "m12.dcm", values, "MONOCHROME2", bits_stored=12)
    frame = read_dicom_clip(path).frames[0]
    np.testing.assert_allclose(frame, [[0, 2048 * 255 / 4095, 255]], rtol=1e-6)


@pytest.mark.parametrize("entry_scale", [1, 256, 257], ids=["8-bit", "16-bit-high-byte", "16-bit"])
def test_palette_colour_to_grey_with_colour_entries_masked(tmp_path, entry_scale):
    index = np.arange(256, dtype=np.uint8)
    red, green, blue = index.astype(np.uint16), index.astype(np.uint16), index.astype(np.uint16)
    red[200:], green[200:], blue[200:] = 255, 0, 0  # entries 200+ are red
    bits = 8 if entry_scale == 1 else 16
    vr_dtype = "<u1" if bits == 8 else "<u2"
    tags = {}
    for name, lut in (("Red", red), ("Green", green), ("Blue", blue)):
        tags[f"{name}PaletteColorLookupTableDescriptor"] = [256, 0, bits]
        data = (lut * entry_scale).astype(vr_dtype).tobytes()
        tags[f"{name}PaletteColorLookupTableData"] = data + (b"\0" if len(data) % 2 else b"")
    pixels = np.array([[0, 17, 199, 200, 255]], dtype=np.uint8)
    path = _write(tmp_path / "pal.dcm", pixels, "PALETTE COLOR", **tags)
    frame = read_dicom_clip(path).frames[0]
    np.testing.assert_allclose(frame, [[0, 17, 199, 0, 0]], atol=1e-4)


def test_native_ybr_full_is_its_luma_with_colour_masked(tmp_path):
    ybr = np.zeros((1, 4, 6, 3), dtype=np.uint8)
    ybr[..., 0] = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)
    ybr[..., 1:] = 128  # no chroma: grey
    ybr[0, 0, 1, 2] = 138  # Cr + 10: R - G = 2.116136 x 10 = 21.2 levels, kept
    ybr[0, 0, 2, 2] = 255  # Cr + 127: red, masked
    ybr[0, 0, 3, 1] = 144  # Cb + 16: B - G = 2.116136 x 16 = 33.9 levels, masked
    path = _write(tmp_path / "ybr.dcm", ybr, "YBR_FULL")
    expected = ybr[0, ..., 0].astype(np.float32)
    expected[0, 2:4] = 0
    np.testing.assert_array_equal(read_dicom_clip(path).frames[0], expected)


def test_every_chroma_pair_is_masked_as_its_rgb_spread_says(tmp_path):
    cb, cr = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    ybr = np.stack([np.full_like(cb, 100), cb, cr], axis=-1).astype(np.uint8)[None]
    path = _write(tmp_path / "chroma.dcm", ybr, "YBR_FULL")
    # JFIF YCbCr -> RGB, then the channel spread, in float64
    b_, r_ = cb - 128.0, cr - 128.0
    rgb = np.stack([100 + 1.402 * r_, 100 - 0.344136 * b_ - 0.714136 * r_, 100 + 1.772 * b_])
    coloured = rgb.max(axis=0) - rgb.min(axis=0) > COLOUR_SPREAD
    assert 0.5 < coloured.mean() < 1
    np.testing.assert_array_equal(read_dicom_clip(path).frames[0], np.where(coloured, 0, 100))


def test_random_rgb_is_luma_with_colour_masked(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, size=(2, 33, 47, 3), dtype=np.uint8)
    rgb[:, :10] = rgb[:, :10, :, :1] + np.array([0, 5, 20], dtype=np.uint8)  # some kept tints
    path = _write(tmp_path / "rgb.dcm", rgb, "RGB")
    values = rgb.astype(np.float64)
    luma = (299 * values[..., 0] + 587 * values[..., 1] + 114 * values[..., 2]) / 1000
    spread = values.max(axis=-1) - values.min(axis=-1)
    expected = np.where(spread > COLOUR_SPREAD, 0, luma)
    np.testing.assert_allclose(read_dicom_clip(path).frames, expected, rtol=0, atol=1e-4)


def _jpeg_file(path: Path, rgb: np.ndarray, **tags: object) -> Path:
    import cv2

    frames = []
    for frame in rgb:
        ok, data = cv2.imencode(
            ".jpg", np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
        assert ok
        frames.append(data.tobytes())
    ds = _dataset(**tags)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.Rows, ds.Columns, ds.NumberOfFrames = rgb.shape[1], rgb.shape[2], rgb.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate(frames, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_jpeg_baseline_multiframe_within_jpeg_error(tmp_path):
    rgb, expected = _screen()
    rgb[:, 10:50, 8:72] = np.repeat(expected.astype(np.uint8)[..., None], 3, axis=-1)
    rgb[:, 10:26, 8:24] = (255, 0, 0)  # a 16 x 16 red block in the region corner: masked
    expected[:, :16, :16] = 0
    path = _jpeg_file(
        tmp_path / "j.dcm",
        rgb,
        SequenceOfUltrasoundRegions=[_region((10, 49), (8, 71), (0.03, 0.05))],
    )
    clip = read_dicom_clip(path)
    assert clip.frames.shape == (3, 40, 64) and clip.spacing == (0.3, 0.5)
    error = np.abs(clip.frames - expected)
    assert np.all(clip.frames[:, 2:14, 2:14] == 0)  # inside the red block, away from JPEG edges
    assert error[:, 20:, 20:].mean() < 1.5


def test_jpeg_plugins_agree(monkeypatch):
    from echo_batch.io import dicom

    path = _example("examples_ybr_color.dcm")
    turbo = read_dicom_clip(path).frames  # Pillow: libjpeg-turbo
    monkeypatch.setattr(dicom, "_plugin", lambda decoder, ts: "pylibjpeg")
    libjpeg = read_dicom_clip(path).frames
    difference = np.abs(turbo - libjpeg)
    assert difference.mean() < 0.5 and np.percentile(difference, 99.9) <= 4


# --- refused calibrations -------------------------------------------------------------------


def _in_grid(rows=(10, 49), cols=(8, 71), delta=(0.03, 0.05), **kw) -> Dataset:
    """The known-answer tissue region of ``_screen`` with one thing changed."""
    return _region(rows, cols, delta, **kw)


@pytest.mark.parametrize(
    ("region", "problem", "crop"),
    [
        (_in_grid(units=(4, 4)), "units are seconds (rows) and seconds (columns), not cm", True),
        (_in_grid(units=(3, 0)), "units are cm (rows) and none (columns), not cm", True),
        (
            _in_grid(rows=(10, 60)),
            "rows 10-60, columns 8-71 exceed the pixel grid of 60 x 80",
            False,
        ),
        (
            _in_grid(cols=(8, 80)),
            "rows 10-49, columns 8-80 exceed the pixel grid of 60 x 80",
            False,
        ),
        (_in_grid(delta=(0.0, 0.05)), "deltas 0.0 x 0.05 cm are not positive", True),
        (_in_grid(delta=(3.0, 0.05)), "implausible tissue region pixel size", True),
        (_in_grid(spatial=2), "none of the 1 ultrasound regions", False),  # M-mode
        (_in_grid(data_type=2), "none of the 1 ultrasound regions", False),  # colour flow
    ],
    ids=["seconds", "no-units", "rows-out", "cols-out", "zero", "huge", "m-mode", "flow"],
)
def test_refused_calibrations_are_never_used(tmp_path, region, problem, crop):
    rgb, _ = _screen(1)
    path = _write(tmp_path / "r.dcm", rgb, "RGB", SequenceOfUltrasoundRegions=[region])
    clip = read_dicom_clip(path)
    assert clip.spacing is None and clip.spacing_source == SpacingSource.NONE
    assert problem in clip.spacing_problem
    assert clip.frames.shape[1:] == ((40, 64) if crop else (60, 80))


def test_two_tissue_regions_are_ambiguous(tmp_path):
    rgb, _ = _screen(1)
    regions = [_region((0, 59), (0, 39), (0.03, 0.03)), _region((0, 59), (40, 79), (0.03, 0.03))]
    path = _write(tmp_path / "dual.dcm", rgb, "RGB", SequenceOfUltrasoundRegions=regions)
    clip = read_dicom_clip(path)
    assert clip.spacing is None and "2 2-D tissue regions" in clip.spacing_problem
    assert clip.frames.shape == (1, 60, 80)


def test_pixel_spacing_is_never_taken(tmp_path):
    rgb, _ = _screen(1)
    path = _write(tmp_path / "ps.dcm", rgb, "RGB", PixelSpacing=[1.0, 1.0])
    clip = read_dicom_clip(path)
    assert (clip.spacing, clip.spacing_problem) == (None, None)
    path = _write(
        tmp_path / "both.dcm",
        rgb,
        "RGB",
        PixelSpacing=[1.0, 1.0],
        SequenceOfUltrasoundRegions=[_region((10, 49), (8, 71), (0.02, 0.02))],
    )
    assert read_dicom_clip(path).spacing == (0.2, 0.2)


# --- frame time and view --------------------------------------------------------------------


_VECTOR = 0x00181065  # FrameIncrementPointer -> FrameTimeVector


@pytest.mark.parametrize(
    ("tags", "frame_time", "problem"),
    [
        ({"FrameTime": 25.0}, 25.0, None),
        ({"FrameTime": 25.0, "FrameIncrementPointer": 0x00181063}, 25.0, None),
        ({"FrameTimeVector": [0, 30, 31, 29], "FrameIncrementPointer": _VECTOR}, 30.0, None),
        ({"FrameTimeVector": [0, 30, 50, 30], "FrameIncrementPointer": _VECTOR}, None, "irregular"),
        ({"FrameTimeVector": [0, 30, 30], "FrameIncrementPointer": _VECTOR}, None, "does not fit"),
        ({"FrameTime": 0.0}, None, "outside"),
        ({"CineRate": 50, "RecommendedDisplayFrameRate": 50}, None, None),
        ({}, None, None),
    ],
    ids=["frame-time", "pointer", "vector", "irregular", "short-vector", "zero", "replay", "none"],
)
def test_frame_time(tmp_path, tags, frame_time, problem):
    pixels = np.zeros((4, 8, 8), dtype=np.uint8)
    header = read_dicom_header(_write(tmp_path / "t.dcm", pixels, "MONOCHROME2", **tags))
    assert header.frame_time_ms == (pytest.approx(frame_time) if frame_time else None)
    if problem is None:
        assert header.frame_time_problem is None
    else:
        assert problem in header.frame_time_problem


def _code(scheme: str, value: str) -> Dataset:
    item = Dataset()
    item.CodingSchemeDesignator, item.CodeValue, item.CodeMeaning = scheme, value, "view"
    return item


@pytest.mark.parametrize(
    ("tags", "view"),
    [
        ({"ViewCodeSequence": [_code("SCT", "399214001")]}, View.A4C),
        ({"ViewCodeSequence": [_code("SCT", "399232001")]}, View.A2C),
        ({"ViewCodeSequence": [_code("SRT", "G-A19B")]}, View.A2C),
        ({"ViewCodeSequence": [_code("SCT", "399135002")]}, None),  # another view
        ({"ViewName": "A4C"}, View.A4C),
        ({"ViewName": "Apical 2 chamber"}, View.A2C),
        ({"ViewName": "AP4"}, View.A4C),
        ({"ViewName": "apical four-chamber"}, View.A4C),
        ({"ViewName": "A4C RV focused"}, None),
        ({"ViewName": "PLAX"}, None),
        ({"ViewName": "A2C and A4C"}, None),
        ({}, None),
    ],
)
def test_view_from_tags(tmp_path, tags, view):
    path = _write(tmp_path / "v.dcm", np.zeros((1, 8, 8), dtype=np.uint8), "MONOCHROME2", **tags)
    assert read_dicom_header(path).view == view
    assert read_dicom_clip(path).view == view
    assert read_dicom_clip(path, view=View.A2C).view == View.A2C  # a manifest's view wins


def test_view_codes_agree_with_pydicom_code_dictionary():
    from pydicom.sr.codedict import codes

    assert VIEW_CODES[("SCT", codes.SCT.ApicalFourChamber.value)] == View.A4C
    assert VIEW_CODES[("SCT", codes.SCT.ApicalTwoChamber.value)] == View.A2C


# --- bad files --------------------------------------------------------------------------------


def _plain(tmp_path: Path, name: str = "p.dcm", frames: int = 3) -> Path:
    return _write(tmp_path / name, np.full((frames, 20, 30), 7, dtype=np.uint8), "MONOCHROME2")


def _pixel_offset(data: bytes) -> int:
    return data.rindex(b"\xe0\x7f\x10\x00")


def _refused(path: Path, reason: str) -> None:
    with pytest.raises(InputError, match=reason) as info:
        read_dicom_clip(path)
    assert info.value.path == path


def test_truncated_native_pixel_data(tmp_path):
    path = _plain(tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    assert "truncated" in read_dicom_header(path).problem
    _refused(path, "pixel data is truncated")


def test_truncated_encapsulated_pixel_data(tmp_path):
    rgb, _ = _screen()
    path = _jpeg_file(tmp_path / "j.dcm", rgb)
    path.write_bytes(path.read_bytes()[:-300])
    _refused(path, "truncated|not a readable")


def test_four_gigabyte_length_field(tmp_path):
    path = _plain(tmp_path)
    data = bytearray(path.read_bytes())
    at = _pixel_offset(bytes(data)) + 8  # tag, VR, 2 reserved bytes, then the 4-byte length
    data[at : at + 4] = struct.pack("<I", 0xFFFFFFF0)
    path.write_bytes(bytes(data))
    _refused(path, "declares 4294967280 bytes")


def test_no_pixel_data(tmp_path):
    path = _plain(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: _pixel_offset(data)])
    header = read_dicom_header(path)
    assert header.problem == "no pixel data" and header.patient_id == "P001"
    _refused(path, "no pixel data")


def test_undecodable_jpeg_frames(tmp_path):
    ds = _dataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.Rows, ds.Columns, ds.NumberOfFrames = 16, 16, 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([b"\xff\xd8garbage" * 4, b"\xff\xd8more" * 4])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "bad.dcm", enforce_file_format=True)
    _refused(tmp_path / "bad.dcm", "not a readable DICOM file")


def test_unsupported_transfer_syntax(tmp_path):
    path = _plain(tmp_path)
    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"  # MPEG-4 AVC/H.264
    ds.PixelData = encapsulate([b"\x00" * 64] * 3)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    assert "unsupported transfer syntax" in read_dicom_header(path).problem
    _refused(path, "unsupported transfer syntax")


def test_sizes_over_the_limits(tmp_path):
    path = _plain(tmp_path, frames=3)
    _refused_with = InputLimits(max_frames=2)
    assert "3 frames exceed the limit 2" in read_dicom_header(path, limits=_refused_with).problem
    with pytest.raises(InputError, match="frames exceed"):
        read_dicom_clip(path, limits=_refused_with)
    ds = dcmread(path)
    ds.Rows = 60000  # declared grid over the limits, pixel data unchanged: refused before decode
    ds.save_as(path)
    _refused(path, "exceeds 4096 pixels per side")


def test_not_dicom_empty_and_missing(tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all" * 20)
    assert not is_dicom(junk)
    _refused(junk, "not a DICOM file")
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    _refused(empty, "file is empty")
    _refused(tmp_path / "missing.dcm", "file is missing")
    assert is_dicom(_plain(tmp_path))


def test_corrupted_bytes_give_input_error_or_a_clip(tmp_path):
    rgb, _ = _screen(2)
    sources = [
        _jpeg_file(tmp_path / "j.dcm", rgb, SequenceOfUltrasoundRegions=[_in_grid()]),
        _write(tmp_path / "n.dcm", rgb, "RGB", FrameTime=20),
    ]
    rng = np.random.default_rng(7)
    refused = 0
    for source in sources:
        data = source.read_bytes()
        for k in range(40):
            out = bytearray(data)
            if k % 4 == 0:
                out = out[: int(rng.integers(0, len(out)))]
            else:
                for at in rng.integers(0, len(out), size=int(rng.integers(1, 6))):
                    out[at] = int(rng.integers(0, 256))
            path = tmp_path / f"c{k}.dcm"
            path.write_bytes(bytes(out))
            try:
                read_dicom_clip(path)
            except InputError as exc:
                assert exc.path == path
                refused += 1
    assert refused > 10


# --- identity ---------------------------------------------------------------------------------


def test_names_and_birth_dates_never_reach_records_errors_or_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    rgb, _ = _screen()
    good = _write(
        tmp_path / "g.dcm",
        rgb,
        "RGB",
        SequenceOfUltrasoundRegions=[_region((10, 49), (8, 71), (0.03, 0.05))],
        AccessionNumber="ACC-Quillfeather",
        InstitutionName="Ondine Clinic",
    )
    assert NAME in str(dcmread(good))  # the file does carry them
    texts = [repr(read_dicom_header(good)), repr(read_dicom_clip(good))]
    bad = _plain(tmp_path, "b.dcm")
    bad.write_bytes(bad.read_bytes()[:-50])
    with pytest.raises(InputError) as info:
        read_dicom_clip(bad)
    texts += [str(info.value), repr(read_dicom_header(bad)), caplog.text]
    header = read_dicom_header(good)
    texts += [str(getattr(header, f.name)) for f in dataclasses.fields(header)]
    for text in texts:
        for secret in (*SECRETS, "ACC-", "Clinic"):
            assert secret not in text


# --- grouping ---------------------------------------------------------------------------------


def _header(path: str, patient: str | None, study: str | None, series: str, number: int | None):
    return DicomHeader(
        path=Path(path),
        patient_id=patient,
        study_uid=study,
        series_uid=series,
        instance_uid=None,
        instance_number=number,
        modality="US",
        transfer_syntax=ExplicitVRLittleEndian,
        rows=8,
        columns=8,
        n_frames=1,
        samples_per_pixel=1,
        bits_allocated=8,
        bits_stored=8,
        photometric="MONOCHROME2",
        view=None,
        frame_time_ms=None,
        frame_time_problem=None,
        calibration=RegionCalibration(),
        problem=None,
    )


def test_group_dicom_by_patient_and_study():
    a1 = _header("x/9.dcm", "B", "2", "s2", 1)
    a2 = _header("x/1.dcm", "B", "2", "s1", 3)
    a3 = _header("x/5.dcm", "B", "2", "s1", 2)
    b1 = _header("x/2.dcm", "B", "1", "s", None)
    c1 = _header("x/3.dcm", "A", None, "s", 1)
    orphan = _header("x/4.dcm", None, "1", "s", 1)
    groups = group_dicom([a1, orphan, a2, c1, b1, a3])
    assert list(groups) == ["A", "B"]
    assert groups["A"] == {"": [c1]}
    assert list(groups["B"]) == ["1", "2"]
    assert groups["B"]["2"] == [a3, a2, a1]  # series s1 (instances 2, 3), then s2
    assert groups["B"]["1"] == [b1]
    assert group_dicom([]) == {}
