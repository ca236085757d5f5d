"""Readers: real CAMUS files, tiny hand-made files in both formats, a table of malformed inputs."""

from __future__ import annotations

import csv
import gzip
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from fixtures import lv_la_labels, write_image, write_mhd, write_nifti_by_hand
from scipy import ndimage

from echo_batch.errors import EchoBatchError, InputError
from echo_batch.io.image import read_image, read_sequence
from echo_batch.io.limits import InputLimits

EXTS = (".nii.gz", ".mhd")


@pytest.fixture(scope="module")
def original(camus224: Path) -> Path:
    path = camus224 / "original" / "patient0500_2CH_half_sequence.nii.gz"
    if not path.is_file():
        pytest.skip(f"original CAMUS half sequence not found at {path}")
    return path


# --------------------------------------------------------------------------- real files


@pytest.mark.shared
def test_original_half_sequence_shape_type_and_spacing(original: Path) -> None:
    seq = read_sequence(original)
    # README: 15 frames, 512 (wide) x 422 (deep) pixels, float32 0..255, 0.308 mm.
    assert seq.array.shape == (15, 422, 512)
    assert seq.array.dtype == np.float32
    assert float(seq.array.min()) == 0.0
    assert float(seq.array.max()) == 255.0
    assert seq.geometry.spacing == pytest.approx((0.308, 0.308), abs=1e-6)
    assert seq.path == original


@pytest.mark.shared
@pytest.mark.parametrize(("frame", "instant"), [(0, "ED"), (14, "ES")])
def test_original_frames_resize_to_the_camus224_images(
    original: Path, camus224: Path, frame: int, instant: str
) -> None:
    """Frames 1 and 15 are patient0500's 2CH ED/ES: the CAMUS-224 preprocessing maps one onto
    the other exactly only when both readers return the same (H, W) orientation."""
    native = read_sequence(original).array[frame].astype(np.float64)
    small = read_image(
        camus224 / "database_nifti/patient0500" / f"patient0500_2CH_{instant}.nii.gz"
    )
    zoomed = ndimage.zoom(native, (224 / 422, 224 / 512), order=1)
    zoomed = (zoomed - zoomed.min()) / (zoomed.max() - zoomed.min())
    np.testing.assert_array_equal(np.round(255 * zoomed), small.array)


@pytest.mark.shared
def test_patient0500_header_spacing_is_the_reconstructed_one(camus224: Path) -> None:
    image = read_image(camus224 / "database_nifti/patient0500/patient0500_2CH_ED.nii.gz")
    # (H - 1) * 0.308 / 223 and (W - 1) * 0.308 / 223 with W x H = 512 x 422.
    assert image.spacing == pytest.approx((421 * 0.308 / 223, 511 * 0.308 / 223), abs=1e-5)
    assert image.array.shape == (224, 224)


def _sample_files(root: Path, ids: list[str]) -> list[Path]:
    return [p for pid in ids for p in sorted((root / "database_nifti" / pid).glob("*.nii.gz"))]


@pytest.fixture(scope="module")
def sample_reads(real_sample: tuple[Path, list[str]]) -> dict[str, object]:
    """Every still image and label map of the real sample, read once."""
    root, ids = real_sample
    files = _sample_files(root, ids)
    reads = {p.name: read_image(p, labels=p.name.endswith("_gt.nii.gz")) for p in files}
    assert len(ids) == 50
    assert len(reads) == 8 * len(ids)
    return {"root": root, "ids": ids, "reads": reads}


def test_sample_spacings_match_geometry_csv(sample_reads: dict) -> None:
    with open(sample_reads["root"] / "geometry.csv", newline="") as f:
        rows = {(r["patient"], r["view"]): r for r in csv.DictReader(f)}
    checked = 0
    for name, image in sample_reads["reads"].items():
        pid, view = name.split("_")[:2]
        row = rows[(pid, view)]
        expected = (float(row["spacing_y_mm"]), float(row["spacing_x_mm"]))
        assert image.spacing == pytest.approx(expected, abs=1e-5), name
        checked += 1
    assert checked == 8 * len(sample_reads["ids"])


def test_sample_arrays_types_and_labels(sample_reads: dict) -> None:
    for name, image in sample_reads["reads"].items():
        assert image.array.ndim == 2, name
        if name.endswith("_gt.nii.gz"):
            assert image.array.dtype == np.uint8, name
            assert set(np.unique(image.array)) == {0, 1, 2, 3}, name
        else:
            assert image.array.dtype == np.float32, name
            assert image.array.min() >= 0.0 and image.array.max() <= 255.0, name
            twin = sample_reads["reads"][name.replace(".nii.gz", "_gt.nii.gz")]
            assert twin.array.shape == image.array.shape, name
            assert twin.spacing == image.spacing, name


def test_sample_lv_cavity_lies_above_the_atrium(sample_reads: dict) -> None:
    n_gt = 0
    for name, image in sample_reads["reads"].items():
        if not name.endswith("_gt.nii.gz"):
            continue
        rows_lv = np.nonzero(image.array == 1)[0]
        rows_la = np.nonzero(image.array == 3)[0]
        assert rows_lv.mean() < rows_la.mean(), name
        n_gt += 1
    assert n_gt == 4 * len(sample_reads["ids"])


# --------------------------------------------------------------------------- tiny files


def test_hand_written_nifti_keeps_rows_columns_and_spacing(tmp_path: Path) -> None:
    """NIfTI bytes written without SimpleITK: x runs fastest, so byte r * W + c is pixel (r, c)."""
    array = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    path = write_nifti_by_hand(tmp_path / "p_2CH_ED.nii.gz", array, (0.154, 0.308))
    image = read_image(path)
    assert image.array.shape == (12, 10)
    assert image.array[0, 1] == 1 and image.array[1, 0] == 10 and image.array[11, 9] == 119
    assert image.spacing == pytest.approx((0.154, 0.308), abs=1e-6)


def test_hand_written_mhd_keeps_rows_columns_and_spacing(tmp_path: Path) -> None:
    array = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    path = write_mhd(
        tmp_path / "p_2CH_ED.mhd", (10, 12), spacing_xy=(0.308, 0.154), data=array.tobytes()
    )
    image = read_image(path)
    assert image.array.shape == (12, 10)
    assert image.array[0, 1] == 1 and image.array[1, 0] == 10 and image.array[11, 9] == 119
    assert image.spacing == pytest.approx((0.154, 0.308), abs=1e-9)


def _rectangle() -> np.ndarray:
    """30 x 20 label map holding a 20-row by 10-column block of label 1."""
    labels = np.zeros((30, 20), np.uint8)
    labels[5:25, 4:14] = 1
    return labels


@pytest.mark.parametrize("ext", EXTS)
@pytest.mark.parametrize(
    ("spacing", "height_mm", "width_mm"),
    [
        ((0.154, 0.308), 20 * 0.154, 10 * 0.308),  # rows finer: 3.08 x 3.08 mm
        ((0.308, 0.154), 20 * 0.308, 10 * 0.154),  # rows coarser: 6.16 x 1.54 mm
    ],
    ids=["rows-finer", "rows-coarser"],
)
def test_anisotropic_rectangle_has_its_physical_size(
    tmp_path: Path, ext: str, spacing: tuple[float, float], height_mm: float, width_mm: float
) -> None:
    path = write_image(tmp_path / f"p_2CH_ED_gt{ext}", _rectangle(), spacing)
    image = read_image(path, labels=True)
    rows, cols = np.nonzero(image.array == 1)
    row_mm, col_mm = image.spacing
    assert (rows.max() - rows.min() + 1) * row_mm == pytest.approx(height_mm, abs=1e-5)
    assert (cols.max() - cols.min() + 1) * col_mm == pytest.approx(width_mm, abs=1e-5)
    assert (image.array == 1).sum() * row_mm * col_mm == pytest.approx(200 * 0.154 * 0.308)


@pytest.mark.parametrize("ext", EXTS)
def test_sequence_is_frames_rows_columns_with_row_col_spacing(tmp_path: Path, ext: str) -> None:
    frames = np.stack([_rectangle() * k for k in (1, 2, 3)]).astype(np.float32)
    path = write_image(tmp_path / f"p_2CH_half_sequence{ext}", frames, (0.308, 0.154))
    seq = read_sequence(path)
    assert seq.array.shape == (3, 30, 20)
    assert seq.array.dtype == np.float32
    assert seq.geometry.spacing == pytest.approx((0.308, 0.154), abs=1e-6)
    assert [float(seq.array[t, 10, 5]) for t in range(3)] == [1.0, 2.0, 3.0]
    assert float(seq.array[2, 0, 0]) == 0.0


@pytest.mark.parametrize("ext", EXTS)
def test_labels_come_back_as_uint8_and_images_as_float32(tmp_path: Path, ext: str) -> None:
    labels = lv_la_labels()
    path = write_image(tmp_path / f"p_2CH_ED_gt{ext}", labels.astype(np.int16), (0.3, 0.2))
    as_labels = read_image(path, labels=True)
    as_image = read_image(path)
    assert as_labels.array.dtype == np.uint8
    np.testing.assert_array_equal(as_labels.array, labels)
    assert as_image.array.dtype == np.float32
    assert float(as_image.array[3, 4]) == 1.0 and float(as_image.array[8, 4]) == 3.0


def test_single_frame_volume_is_accepted_as_a_still(tmp_path: Path) -> None:
    path = write_image(tmp_path / "p_2CH_ED.nii.gz", _rectangle()[None], (0.3, 0.2))
    image = read_image(path)
    assert image.array.shape == (30, 20)
    assert image.spacing == pytest.approx((0.3, 0.2), abs=1e-6)


def test_custom_limits_apply(tmp_path: Path) -> None:
    path = write_image(tmp_path / "p_2CH_ED.nii.gz", _rectangle(), (0.3, 0.2))
    with pytest.raises(InputError, match="exceeds 16 pixels per side"):
        read_image(path, limits=InputLimits(max_side_px=16))


# --------------------------------------------------------------------------- malformed inputs

_PIXELS = np.arange(1, 121, dtype=np.uint8).reshape(12, 10).tobytes()  # 10 x 12 uchar = 120 bytes


def _patient(tmp: Path) -> Path:
    folder = tmp / "patient0001"
    folder.mkdir()
    return folder


def _mhd(tmp: Path, **kwargs: object) -> Path:
    kwargs.setdefault("data", _PIXELS)
    return write_mhd(_patient(tmp) / "patient0001_2CH_ED.mhd", (10, 12), **kwargs)


def _text_header(tmp: Path, text: str | bytes) -> Path:
    path = _patient(tmp) / "patient0001_2CH_ED.mhd"
    (path.parent / "patient0001_2CH_ED.raw").write_bytes(_PIXELS)
    if isinstance(text, str):
        text = text.encode("latin-1")
    path.write_bytes(text)
    return path


_HEADER = (
    "ObjectType = Image\nNDims = 2\nElementSpacing = 0.3 0.3\nDimSize = 10 12\n"
    "ElementType = MET_UCHAR\nElementDataFile = patient0001_2CH_ED.raw\n"
)


def _outside_raw(tmp: Path) -> Path:
    outside = tmp / "elsewhere"
    outside.mkdir()
    (outside / "x.raw").write_bytes(_PIXELS)
    return outside / "x.raw"


def _symlinked_raw(tmp: Path) -> Path:
    target = _outside_raw(tmp)
    path = _mhd(tmp, data=None, data_file="patient0001_2CH_ED.raw")
    (path.parent / "patient0001_2CH_ED.raw").symlink_to(target)
    return path


def _looping_raw(tmp: Path) -> Path:
    path = _mhd(tmp, data=None)
    (path.parent / "patient0001_2CH_ED.raw").symlink_to("patient0001_2CH_ED.raw")
    return path


def _nifti(tmp: Path, array: np.ndarray, name: str = "patient0001_2CH_ED.nii.gz") -> Path:
    return write_image(_patient(tmp) / name, array, (0.3, 0.3))


def _bytes(tmp: Path, name: str, data: bytes) -> Path:
    path = _patient(tmp) / name
    path.write_bytes(data)
    return path


def _truncated_nifti(tmp: Path) -> Path:
    full = write_image(tmp / "full.nii", np.arange(120, dtype=np.uint8).reshape(12, 10))
    return _bytes(tmp, "patient0001_2CH_ED.nii.gz", gzip.compress(full.read_bytes()[:-50]))


def _four_d(tmp: Path) -> Path:
    path = _patient(tmp) / "p_2CH_half_sequence.nii.gz"
    sitk.WriteImage(sitk.Image([10, 12, 4, 3], sitk.sitkUInt8), os.fspath(path))
    return path


def _nan_float(tmp: Path, ext: str) -> Path:
    array = np.ones((12, 10), np.float32)
    array[4, 5] = np.nan
    if ext == ".mhd":
        return _mhd(tmp, element_type="MET_FLOAT", data=array.tobytes())
    return _nifti(tmp, array)


def _garbage_zraw(tmp: Path) -> Path:
    lines = ["CompressedData = True", "CompressedDataSize = 40"]
    return _mhd(tmp, data=b"not zlib " * 4 + b"!!!!", data_file="x.zraw", extra_lines=lines)


def _short_zraw(tmp: Path) -> Path:
    lines = ["CompressedData = True"]
    data = zlib.compress(_PIXELS[:50])
    return _mhd(tmp, data=data, data_file="x.zraw", extra_lines=lines)


def _escaping_file(tmp: Path) -> Path:
    target = write_image(tmp / "elsewhere" / "patient0001_2CH_ED.nii.gz", np.ones((12, 10)))
    link = _patient(tmp) / "patient0001_2CH_ED.nii.gz"
    link.symlink_to(target)
    return link


# fmt: off
# (builder, reader options, reason substring, file name that the message must contain)
MALFORMED: list[object] = [
    pytest.param(
        lambda t: _mhd(t, data=_PIXELS[:100]), "image", "truncated: 100 bytes", "ED.raw",
        id="truncated-raw",
    ),
    pytest.param(
        lambda t: _mhd(t, data=_PIXELS + b"\0" * 7), "image", "oversized: 127 bytes", "ED.raw",
        id="oversized-raw",
    ),
    pytest.param(lambda t: _mhd(t, data=None), "image", "is missing", "ED.mhd", id="missing-raw"),
    pytest.param(
        lambda t: (_outside_raw(t), _mhd(t, data=None, data_file="../elsewhere/x.raw"))[1],
        "image", "leaves the patient folder", "ED.mhd", id="raw-dotdot",
    ),
    pytest.param(
        lambda t: _mhd(t, data=None, data_file=os.fspath(_outside_raw(t))),
        "image", "is an absolute path", "ED.mhd", id="raw-absolute",
    ),
    pytest.param(
        _symlinked_raw, "image", "resolves outside the patient folder", "ED.mhd",
        id="raw-symlink-escape",
    ),
    pytest.param(_looping_raw, "image", "cannot be resolved", "ED.mhd", id="raw-symlink-loop"),
    pytest.param(
        _escaping_file, "image-in-patient", "file resolves outside the patient folder",
        "ED.nii.gz", id="image-symlink-escape",
    ),
    pytest.param(
        lambda t: write_mhd(_patient(t) / "patient0001_2CH_ED.mhd", (100000, 100000), data=b"x"),
        "image", "exceeds 4096 pixels per side", "ED.mhd", id="absurd-dimsize-mhd",
    ),
    pytest.param(
        lambda t: write_nifti_by_hand(
            _patient(t) / "patient0001_2CH_ED.nii.gz", np.zeros((12, 10)), (0.3, 0.3),
            dims_override=(30000, 30000),
        ),
        "image", "exceeds 4096 pixels per side", "ED.nii.gz", id="absurd-dims-nifti",
    ),
    pytest.param(
        lambda t: write_mhd(_patient(t) / "p_2CH_half_sequence.mhd", (10, 12, 100000), data=b"x"),
        "sequence", "100000 frames exceed the limit 2048", "sequence.mhd", id="absurd-frames",
    ),
    pytest.param(
        lambda t: write_mhd(_patient(t) / "patient0001_2CH_ED.mhd", (10, -12), data=b"x"),
        "image", "has an empty axis", "ED.mhd", id="negative-dimsize",
    ),
    pytest.param(
        lambda t: _text_header(t, _HEADER.replace("DimSize = 10 12", "DimSize = 10 twelve")),
        "image", "are not integers", "ED.mhd", id="dimsize-not-integer",
    ),
    pytest.param(
        lambda t: _text_header(t, _HEADER.replace("NDims = 2", "NDims = 3")),
        "image", "NDims=3 does not match", "ED.mhd", id="ndims-mismatch",
    ),
    pytest.param(
        lambda t: _text_header(t, _HEADER.replace("ElementDataFile", "ElementFile")),
        "image", "header has no ElementDataFile", "ED.mhd", id="header-without-data-file",
    ),
    pytest.param(
        lambda t: _text_header(t, _HEADER + "this line has no equals sign\n"),
        "image", "malformed header line", "ED.mhd", id="header-line-without-equals",
    ),
    pytest.param(
        lambda t: _text_header(t, _HEADER.replace("MET_UCHAR", "MET_LONG")),
        "image", "unsupported ElementType MET_LONG", "ED.mhd", id="unsupported-element-type",
    ),
    pytest.param(
        lambda t: _text_header(t, _HEADER.replace("patient0001_2CH_ED.raw", "LOCAL")),
        "image", "inline (LOCAL) pixel data", "ED.mhd", id="local-data",
    ),
    pytest.param(
        lambda t: _text_header(t, "ObjectType = Image\nComment = échographie\n" + _HEADER),
        "image", "not ASCII", "ED.mhd", id="non-ascii-header",
    ),
    pytest.param(
        lambda t: _text_header(t, _HEADER + "Comment = " + "x" * 70_000 + "\n"),
        "image", "larger than 65536", "ED.mhd", id="huge-header",
    ),
    pytest.param(
        lambda t: _bytes(t, "patient0001_2CH_ED.mhd", b"\x89PNG\r\n\x1a\n\x00\x00garbage\xff"),
        "image", "not ASCII", "ED.mhd", id="garbage-mhd",
    ),
    pytest.param(
        lambda t: _bytes(t, "patient0001_2CH_ED.nii.gz", bytes(range(256)) * 4),
        "image", "not a readable image", "ED.nii.gz", id="garbage-nii-gz",
    ),
    pytest.param(
        lambda t: _bytes(t, "patient0001_2CH_ED.nii.gz", gzip.compress(b"\0" * 40)),
        "image", "not a readable image", "ED.nii.gz", id="gzip-of-garbage-nii-gz",
    ),
    pytest.param(
        lambda t: _bytes(t, "patient0001_2CH_ED.nii.gz", b""), "image", "file is empty",
        "ED.nii.gz", id="empty-nii-gz",
    ),
    pytest.param(
        lambda t: _bytes(t, "patient0001_2CH_ED.mhd", b""), "image", "file is empty", "ED.mhd",
        id="empty-mhd",
    ),
    pytest.param(
        lambda t: _patient(t) / "patient0001_2CH_ED.nii.gz", "image", "file is missing",
        "ED.nii.gz", id="missing-file",
    ),
    pytest.param(
        lambda t: (p := _patient(t) / "patient0001_2CH_ED.nii.gz", p.mkdir())[0],
        "image", "not a regular file", "ED.nii.gz", id="folder-named-like-an-image",
    ),
    pytest.param(
        lambda t: _nifti(t, np.full((12, 10), 7, np.uint8), "patient0001_2CH_ED_gt.nii.gz"),
        "labels", "unknown labels [7]", "ED_gt.nii.gz", id="unknown-label-nifti",
    ),
    pytest.param(
        lambda t: _mhd(t, data=bytes([0, 1, 2, 3, 7] * 24)), "labels", "unknown labels [7]",
        "ED.mhd", id="unknown-label-mhd",
    ),
    pytest.param(
        lambda t: _nifti(t, np.full((12, 10), 1.5, np.float32), "p_2CH_ED_gt.nii.gz"),
        "labels", "non-integer values", "ED_gt.nii.gz", id="fractional-labels",
    ),
    pytest.param(
        _four_d, "sequence", "4 dimensions", "sequence.nii.gz", id="4d-where-sequence-expected",
    ),
    pytest.param(
        lambda t: _nifti(t, np.zeros((3, 12, 10), np.uint8)), "image", "3 dimensions",
        "ED.nii.gz", id="3d-where-2d-expected-nifti",
    ),
    pytest.param(
        lambda t: write_mhd(_patient(t) / "patient0001_2CH_ED.mhd", (10, 12, 3), data=_PIXELS * 3),
        "image", "3 dimensions", "ED.mhd", id="3d-where-2d-expected-mhd",
    ),
    pytest.param(
        lambda t: _nan_float(t, ".nii.gz"), "image", "NaN or infinite", "ED.nii.gz",
        id="nan-pixels-nifti",
    ),
    pytest.param(
        lambda t: _nan_float(t, ".mhd"), "image", "NaN or infinite", "ED.mhd",
        id="nan-pixels-mhd",
    ),
    pytest.param(
        lambda t: write_mhd(
            _patient(t) / "p_2CH_half_sequence.mhd", (10, 12, 2), element_type="MET_FLOAT",
            spacing_xy=(0.3, 0.3, 1.0), data=np.full((2, 12, 10), np.inf, np.float32).tobytes(),
        ),
        "sequence", "NaN or infinite", "sequence.mhd", id="inf-pixels-sequence-mhd",
    ),
    pytest.param(
        lambda t: _mhd(t, spacing_xy=(0.0, 0.3)), "image", "implausible pixel spacing", "ED.mhd",
        id="zero-spacing",
    ),
    pytest.param(
        lambda t: _mhd(t, spacing_xy=(0.3, 50.0)), "image", "implausible pixel spacing", "ED.mhd",
        id="huge-spacing",
    ),
    pytest.param(
        lambda t: write_mhd(
            _patient(t) / "patient0001_2CH_ED.mhd", (10, 12), data=_PIXELS * 3,
            extra_lines=["ElementNumberOfChannels = 3"],
        ),
        "image", "3 channels, expected 1", "ED.mhd", id="rgb-mhd",
    ),
    pytest.param(
        _truncated_nifti, "image", "truncated or corrupt", "ED.nii.gz", id="truncated-nifti",
    ),
    pytest.param(
        _garbage_zraw, "image", "truncated or corrupt", "ED.mhd", id="corrupt-zraw",
    ),
    pytest.param(
        _short_zraw, "image", "truncated or corrupt", "ED.mhd", id="short-zraw",
    ),
    pytest.param(
        lambda t: _nifti(t, np.zeros((12, 10), np.int64)), "image", "unsupported pixel type",
        "ED.nii.gz", id="int64-nifti",
    ),
    pytest.param(
        lambda t: _mhd(t, extra_lines=["ElementNumberOfChannels = abc"]), "image",
        "ElementNumberOfChannels", "ED.mhd", id="channels-not-integer",
    ),
]
# fmt: on


def _read(path: Path, how: str, tmp: Path) -> object:
    if how == "image":
        return read_image(path)
    if how == "image-in-patient":
        return read_image(path, patient_dir=tmp / "patient0001")
    if how == "labels":
        return read_image(path, labels=True)
    return read_sequence(path)


@pytest.mark.parametrize(("build", "how", "reason", "name"), MALFORMED)
def test_malformed_input_raises_input_error_naming_file_and_reason(
    tmp_path: Path, build: Callable[[Path], Path], how: str, reason: str, name: str
) -> None:
    path = build(tmp_path)
    try:
        _read(path, how, tmp_path)
    except InputError as exc:
        assert isinstance(exc, EchoBatchError)
        message = str(exc)
        assert reason in message, message
        assert name in message, message
        assert name in exc.path.name, exc.path
        assert exc.path.parent.resolve() == (tmp_path / "patient0001").resolve()
    else:
        pytest.fail(f"{path.name}: no InputError ({reason!r} expected)")


def test_sitk_spacing_is_x_first_so_readers_must_swap(tmp_path: Path) -> None:
    """Guards the fixture writer: SimpleITK stores (col, row), the reader returns (row, col)."""
    path = write_image(tmp_path / "a.nii.gz", np.zeros((3, 5), np.uint8), (0.1, 0.7))
    assert sitk.ReadImage(os.fspath(path)).GetSize() == (5, 3)
    assert sitk.ReadImage(os.fspath(path)).GetSpacing() == pytest.approx((0.7, 0.1))
    assert read_image(path).spacing == pytest.approx((0.1, 0.7))
