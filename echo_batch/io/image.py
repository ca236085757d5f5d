"""Readers for CAMUS images, label maps, sequences and cfg files (2019 ``.mhd``, 2023 ``.nii.gz``).

Arrays come back as ``(H, W)`` (sequences ``(T, H, W)``) with row 0 at the probe, i.e. the LV
apex at the top and the atrium at the bottom, exactly as SimpleITK returns CAMUS files.

Warning:
    SimpleITK reports spacing as ``(x, y)`` = ``(column, row)``; everything here uses
    ``(row_mm, col_mm)`` to match the array axes. Never assume square pixels.

Every header is validated before pixels are read; any problem raises :class:`InputError` naming the
file and the reason.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from echo_batch.domain import CfgInfo, Label
from echo_batch.errors import CfgError, InputError
from echo_batch.io.limits import DEFAULT_LIMITS, InputLimits

_MHD_TYPES: dict[str, int] = {
    "MET_UCHAR": 1,
    "MET_CHAR": 1,
    "MET_USHORT": 2,
    "MET_SHORT": 2,
    "MET_UINT": 4,
    "MET_INT": 4,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}
_SITK_TYPES = (
    "sitkUInt8",
    "sitkInt8",
    "sitkUInt16",
    "sitkInt16",
    "sitkUInt32",
    "sitkInt32",
    "sitkFloat32",
    "sitkFloat64",
)


def _sitk():
    """SimpleITK, imported on first use: plain NIfTI stills are decoded without it."""
    import SimpleITK

    return SimpleITK


_VALID_LABELS = frozenset(int(label) for label in Label)


@dataclass(frozen=True)
class ImageGrid:
    """Physical grid of an image, enough to write a mask with the same header.

    Attributes:
        spacing: ``(row_mm, col_mm)`` pixel size.
        origin: SimpleITK origin ``(x, y)``, mm.
        direction: SimpleITK direction cosines (row-major 2x2, flattened).
    """

    spacing: tuple[float, float]
    origin: tuple[float, float] = (0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class EchoImage:
    """A 2-D still frame or label map.

    Attributes:
        array: ``(H, W)`` pixels; float32 intensities or uint8 labels.
        spacing: ``(row_mm, col_mm)`` pixel size.
        path: file it was read from.
    """

    array: np.ndarray
    spacing: tuple[float, float]
    path: Path
    known_geometry: ImageGrid | None = field(default=None, repr=False, compare=False)

    @cached_property
    def geometry(self) -> ImageGrid:
        """Spacing, origin and direction (origin and direction read from the header on demand)."""
        if self.known_geometry is not None:
            return self.known_geometry
        reader = _sitk().ImageFileReader()
        reader.SetFileName(os.fspath(self.path))
        reader.ReadImageInformation()
        origin = reader.GetOrigin()[:2]
        direction = reader.GetDirection()
        n = reader.GetDimension()
        return ImageGrid(
            spacing=self.spacing,
            origin=origin,
            direction=(direction[0], direction[1], direction[n], direction[n + 1]),
        )


@dataclass(frozen=True)
class EchoSequence:
    """A sequence of frames.

    Attributes:
        array: ``(T, H, W)`` frames.
        geometry: in-plane geometry shared by all frames.
        path: file it was read from.
    """

    array: np.ndarray
    geometry: ImageGrid
    path: Path


def _is_mhd(path: Path) -> bool:
    return path.name.lower().endswith(".mhd")


def _parse_mhd_header(path: Path, limits: InputLimits) -> dict[str, str]:
    """Read a MetaImage header as ``{key: value}`` without touching pixel data."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(path, f"cannot stat header ({exc.strerror})") from None
    if size > limits.max_header_bytes:
        raise InputError(path, f"header is {size} bytes, larger than {limits.max_header_bytes}")
    try:
        text = path.read_text(encoding="utf-8")  # SimpleITK writes UTF-8 data-file names
    except UnicodeDecodeError:
        reason = "header is not ASCII or UTF-8 text (not a MetaImage header)"
        raise InputError(path, reason) from None
    except OSError as exc:
        raise InputError(path, f"cannot read header ({exc.strerror})") from None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise InputError(path, f"malformed header line {line[:60]!r}")
        fields[key.strip()] = value.strip()
    return fields


def _check_mhd(path: Path, patient_dir: Path | None, limits: InputLimits, max_dims: int) -> None:
    """Validate a ``.mhd`` header and its data file before SimpleITK reads anything."""
    fields = _parse_mhd_header(path, limits)
    for key in ("NDims", "DimSize", "ElementType", "ElementDataFile"):
        if key not in fields:
            raise InputError(path, f"header has no {key}")
    try:
        ndims = int(fields["NDims"])
        dims = [int(v) for v in fields["DimSize"].split()]
    except ValueError:
        raise InputError(path, "NDims/DimSize are not integers") from None
    if ndims != len(dims) or ndims < 2:
        raise InputError(path, f"NDims={ndims} does not match DimSize={dims}")
    _check_dims(path, dims, max_dims, limits)
    etype = fields["ElementType"]
    if etype not in _MHD_TYPES:
        raise InputError(path, f"unsupported ElementType {etype}")
    data_name = fields["ElementDataFile"]
    if data_name.upper() == "LOCAL":
        raise InputError(path, "inline (LOCAL) pixel data is not accepted in a .mhd header")
    data_path = _resolve_inside(path, data_name, patient_dir or path.parent)
    try:
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except ValueError:
        raise InputError(path, "ElementNumberOfChannels is not an integer") from None
    if channels != 1:
        raise InputError(path, f"{channels} channels, expected 1")
    nbytes = math.prod(dims) * _MHD_TYPES[etype]
    compressed = fields.get("CompressedData", "False").lower() == "true"
    actual = data_path.stat().st_size
    _check_readable(data_path)
    if compressed:
        if nbytes > limits.max_decoded_bytes:
            raise InputError(path, f"decoded size {nbytes} bytes exceeds the limit")
        decoded = _inflate_bounded(data_path, nbytes, zlib.decompressobj(), report=path)
        if len(decoded) > nbytes:  # inflation stopped one byte past the header's size
            raise InputError(
                path,
                f"compressed data {data_path.name} expands past the {nbytes} bytes the header "
                "implies",
            )
        if len(decoded) != nbytes:
            raise InputError(
                path,
                f"pixel data is truncated or corrupt: {data_path.name} decodes to {len(decoded)} "
                f"bytes, header implies {nbytes}",
            )
    elif actual != nbytes:
        what = "truncated" if actual < nbytes else "oversized"
        raise InputError(
            data_path, f"raw data file is {what}: {actual} bytes, header implies {nbytes}"
        )


def _check_readable(path: Path) -> None:
    """Open and close ``path`` so that a permission problem names the file (SimpleITK would not)."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as exc:
        raise InputError(path, f"cannot read data file ({exc.strerror or exc})") from None


def _inflate_bounded(path: Path, limit: int, inflater, report: Path | None = None) -> bytes:
    """Decompress a file, never producing more than ``limit + 1`` bytes.

    Args:
        path: compressed file.
        limit: expected decoded size, bytes.
        inflater: ``zlib.decompressobj`` configured for the container (zlib or gzip).
        report: file named in errors (default ``path``).

    Returns:
        The decoded bytes (longer than ``limit`` only by one byte, to detect oversize).

    Raises:
        InputError: the stream is corrupt or truncated.
    """
    out = bytearray()
    try:
        with path.open("rb") as fh:
            while len(out) <= limit:
                block = fh.read(1 << 16)
                if not block:
                    break
                out += inflater.decompress(block, limit + 1 - len(out))
                while inflater.unconsumed_tail and len(out) <= limit:
                    out += inflater.decompress(inflater.unconsumed_tail, limit + 1 - len(out))
    except zlib.error as exc:
        raise InputError(
            report or path, f"not a readable image: compressed data is truncated or corrupt ({exc})"
        ) from None
    return bytes(out)


_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}


@dataclass(frozen=True)
class _NiftiPayload:
    """Pixels and spacing decoded straight from a plain NIfTI-1 file (the common case)."""

    array: np.ndarray  # (..., H, W), C order as SimpleITK returns it
    spacing: tuple[float, float]  # (row_mm, col_mm)


# datatype code -> numpy dtype character, for the types decoded without SimpleITK
_NIFTI_FAST_TYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4"}
_NIFTI_UNITS_MM = {0, 2}  # unknown (ITK assumes mm) or millimetre


def _nifti_payload(head: bytes, data: bytes, endian: str, nbytes: int, expected: int):
    """Decode pixels when nothing calls for SimpleITK's conversions (else None).

    The fast path covers a 2-D or 3-D scalar image in millimetres without intensity scaling;
    anything else (scaling, other units, vector types, negative spacing, an sform without a
    qform) is left to SimpleITK, so both paths give the same pixels and spacing.
    """
    dims = struct.unpack(endian + "8h", head[40:56])
    datatype = struct.unpack(endian + "h", head[70:72])[0]
    pixdim = struct.unpack(endian + "8f", head[76:108])
    slope, inter = struct.unpack(endian + "2f", head[112:120])
    units = head[123] & 0x07
    qform_code, sform_code = struct.unpack(endian + "2h", head[252:256])
    ndim = dims[0]
    if (
        datatype not in _NIFTI_FAST_TYPES
        or not 2 <= ndim <= 3
        or units not in _NIFTI_UNITS_MM
        or slope not in (0.0, 1.0)
        or inter != 0.0
        or (sform_code > 0 and qform_code == 0)
        or not all(math.isfinite(v) and v > 0 for v in pixdim[1:3])
    ):
        return None
    dtype = np.dtype(endian + _NIFTI_FAST_TYPES[datatype])
    shape = tuple(reversed(dims[1 : ndim + 1]))
    array = np.frombuffer(
        data, dtype=dtype, count=nbytes // dtype.itemsize, offset=expected - nbytes
    )
    native = array.reshape(shape).astype(dtype.newbyteorder("="), copy=True)
    return _NiftiPayload(array=native, spacing=(pixdim[2], pixdim[1]))


def _check_nifti(path: Path, limits: InputLimits, max_dims: int) -> _NiftiPayload | None:
    """Check a NIfTI-1 file's pixel payload before anything else reads it.

    SimpleITK silently zero-fills a truncated NIfTI payload and turns NaN/inf into 0, so the
    decoded length and the float values are checked here on the raw bytes. The payload is decoded
    once; when the file needs none of SimpleITK's conversions it is returned so that SimpleITK does
    not decode it again.

    Returns:
        The decoded pixels and spacing, or None when SimpleITK must read the file.
    """
    gz = path.name.lower().endswith(".gz")
    if gz:
        head = _inflate_bounded(path, 352, zlib.decompressobj(wbits=47))
    else:
        with path.open("rb") as fh:
            head = fh.read(352)
    if len(head) < 348:
        raise InputError(path, "not a readable image (NIfTI header shorter than 348 bytes)")
    for endian in "<>":
        if struct.unpack(endian + "i", head[:4])[0] == 348:
            break
    else:
        return None  # not NIfTI-1; SimpleITK decides
    dims = struct.unpack(endian + "8h", head[40:56])
    datatype, bitpix = struct.unpack(endian + "2h", head[70:74])
    vox_offset = int(struct.unpack(endian + "f", head[108:112])[0])
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1 : ndim + 1]):
        raise InputError(path, f"invalid NIfTI dimensions {list(dims[1 : ndim + 1])}")
    _check_dims(path, list(dims[1 : ndim + 1]), max_dims, limits)
    nbytes = math.prod(dims[1 : ndim + 1]) * max(bitpix, 8) // 8
    if nbytes > limits.max_decoded_bytes:
        raise InputError(path, f"decoded size {nbytes} bytes exceeds the limit")
    expected = max(vox_offset, 348) + nbytes
    if gz:
        data = _inflate_bounded(path, expected, zlib.decompressobj(wbits=47))
        if len(data) > expected:  # inflation stopped one byte past the header's size
            raise InputError(
                path, f"compressed data expands past the {expected} bytes its header implies"
            )
    else:
        with path.open("rb") as fh:
            data = fh.read(expected)  # trailing bytes are ignored, as SimpleITK does
    if len(data) < expected:
        raise InputError(
            path,
            f"pixel data is truncated or corrupt: {len(data)} bytes, header implies {expected}",
        )
    if datatype in _NIFTI_FLOAT_TYPES:
        values = np.frombuffer(
            data,
            dtype=endian + _NIFTI_FLOAT_TYPES[datatype],
            count=nbytes // (bitpix // 8),
            offset=expected - nbytes,
        )
        if not np.isfinite(values).all():
            raise InputError(path, "image holds NaN or infinite pixel values")
    return _nifti_payload(head, data, endian, nbytes, expected)


def _resolve_inside(header: Path, data_name: str, folder: Path) -> Path:
    """Resolve an ``ElementDataFile`` and refuse anything outside ``folder``."""
    rel = Path(data_name)
    if rel.is_absolute() or data_name.startswith(("/", "\\")) or ":" in data_name:
        raise InputError(header, f"ElementDataFile {data_name!r} is an absolute path")
    if ".." in rel.parts or "\\" in data_name:
        raise InputError(header, f"ElementDataFile {data_name!r} leaves the patient folder")
    candidate = header.parent / rel
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise InputError(header, f"data file {data_name!r} is missing") from None
    except (OSError, RuntimeError) as exc:
        raise InputError(header, f"data file {data_name!r} cannot be resolved ({exc})") from None
    if not resolved.is_relative_to(folder.resolve()):
        raise InputError(header, f"data file {data_name!r} resolves outside the patient folder")
    if not resolved.is_file():
        raise InputError(header, f"data file {data_name!r} is not a regular file")
    return resolved


def _check_dims(path: Path, dims: list[int], max_dims: int, limits: InputLimits) -> None:
    """Check sizes (SimpleITK order: x, y[, t]) against the limits."""
    trailing_ones = dims[:2] + [d for d in dims[2:] if d != 1]
    if len(trailing_ones) > max_dims:
        raise InputError(path, f"image has {len(dims)} dimensions {dims}, expected {max_dims}")
    if any(d < 1 for d in dims):
        raise InputError(path, f"image size {dims} has an empty axis")
    if max(dims[:2]) > limits.max_side_px:
        raise InputError(path, f"image size {dims} exceeds {limits.max_side_px} pixels per side")
    if len(dims) > 2 and math.prod(dims[2:]) > limits.max_frames:
        raise InputError(path, f"{math.prod(dims[2:])} frames exceed the limit {limits.max_frames}")
    if math.prod(dims) * 8 > limits.max_decoded_bytes:
        raise InputError(path, f"image size {dims} exceeds the decoded size limit")


def _validate(
    path: Path, patient_dir: Path | None, limits: InputLimits, ndim: int
) -> _NiftiPayload | None:
    """Check location, size and payload of a file before any pixel is allocated.

    An operating-system error (permission denied, I/O error, symlink loop) becomes an
    :class:`InputError` naming the file, so that it fails only its own image.

    Returns:
        The decoded pixels of a plain NIfTI file (see ``_check_nifti``), else None.
    """
    try:
        return _validate_file(path, patient_dir, limits, ndim)
    except OSError as exc:
        where = Path(os.fsdecode(exc.filename)) if exc.filename else path
        raise InputError(where, f"cannot read ({exc.strerror or exc})") from None
    except RuntimeError as exc:  # pathlib's "Symlink loop from ..."
        raise InputError(path, f"cannot be resolved ({exc})") from None


def _validate_file(
    path: Path, patient_dir: Path | None, limits: InputLimits, ndim: int
) -> _NiftiPayload | None:
    if not path.is_file():
        raise InputError(path, "file is missing" if not path.exists() else "not a regular file")
    if patient_dir is not None and not path.resolve().is_relative_to(patient_dir.resolve()):
        raise InputError(path, "file resolves outside the patient folder")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    if _is_mhd(path):
        _check_mhd(path, patient_dir, limits, ndim)
    elif path.name.lower().endswith((".nii", ".nii.gz")):
        return _check_nifti(path, limits, ndim)
    return None


def _check_spacing(path: Path, spacing, limits: InputLimits) -> None:
    if not all(math.isfinite(s) and 0 < s <= limits.max_spacing_mm for s in spacing):
        raise InputError(path, f"implausible pixel spacing {tuple(spacing)} mm")


def _read_sitk(path: Path, limits: InputLimits, ndim: int):
    """Read a validated file with SimpleITK (returns a ``SimpleITK.Image``), header first."""
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(path, "not a readable image (header could not be parsed)") from None
    dims = list(reader.GetSize())
    _check_dims(path, dims, ndim, limits)
    if reader.GetNumberOfComponents() != 1:
        raise InputError(path, f"{reader.GetNumberOfComponents()} channels, expected 1")
    if reader.GetPixelID() not in {getattr(sitk, name) for name in _SITK_TYPES}:
        pixel_type = sitk.GetPixelIDValueAsString(reader.GetPixelID())
        raise InputError(path, f"unsupported pixel type {pixel_type}")
    _check_spacing(path, reader.GetSpacing()[:2], limits)
    try:
        return reader.Execute()
    except RuntimeError:
        raise InputError(path, "pixel data is truncated or corrupt") from None


def _geometry(image) -> ImageGrid:
    sx, sy = image.GetSpacing()[:2]
    origin = image.GetOrigin()[:2]
    direction = image.GetDirection()
    n = image.GetDimension()
    direction_2d = (direction[0], direction[1], direction[n], direction[n + 1])
    return ImageGrid(spacing=(float(sy), float(sx)), origin=origin, direction=direction_2d)


def _squeeze_to(array: np.ndarray, ndim: int, path: Path) -> np.ndarray:
    while array.ndim > ndim and array.shape[0] == 1:
        array = array[0]
    if array.ndim != ndim:
        raise InputError(path, f"array has shape {array.shape}, expected {ndim} dimensions")
    return array


def _as_intensity(array: np.ndarray, path: Path) -> np.ndarray:
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise InputError(path, "image holds NaN or infinite pixel values")
    return array


def _as_labels(array: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating) and (
        not np.isfinite(array).all() or not np.all(array == np.round(array))
    ):
        raise InputError(path, "label map holds non-integer values")
    values = {int(v) for v in np.unique(array)}
    unknown = sorted(values - _VALID_LABELS)
    if unknown:
        raise InputError(path, f"label map holds unknown labels {unknown[:8]} (expected 0-3)")
    return array.astype(np.uint8)


def read_image(
    path: Path | str,
    *,
    patient_dir: Path | None = None,
    labels: bool = False,
    limits: InputLimits = DEFAULT_LIMITS,
) -> EchoImage:
    """Read a 2-D CAMUS still frame or label map.

    Args:
        path: ``.nii.gz`` or ``.mhd`` file.
        patient_dir: folder the file and its data file must stay inside (defaults to the
            file's own folder for ``.mhd`` data files).
        labels: True for a ground-truth label map (values must be in 0-3, returned as uint8).
        limits: size limits checked before pixels are allocated.

    Returns:
        EchoImage with ``array`` ``(H, W)`` (float32 intensities, or uint8 labels) and spacing
        ``(row_mm, col_mm)``.

    Raises:
        InputError: the file is missing, malformed, too large, not 2-D, or holds bad values.
    """
    path = Path(path)
    payload = _validate(path, patient_dir, limits, ndim=2)
    if payload is not None:  # plain NIfTI: decoded once, SimpleITK reads the header on demand
        _check_spacing(path, payload.spacing, limits)
        array, geometry = payload.array, None
        spacing = payload.spacing
    else:
        image = _read_sitk(path, limits, ndim=2)
        array, geometry = _sitk().GetArrayFromImage(image), _geometry(image)
        spacing = geometry.spacing
    array = _squeeze_to(array, 2, path)
    array = _as_labels(array, path) if labels else _as_intensity(array, path)
    return EchoImage(array=array, spacing=spacing, path=path, known_geometry=geometry)


def read_sequence(
    path: Path | str,
    *,
    patient_dir: Path | None = None,
    labels: bool = False,
    limits: InputLimits = DEFAULT_LIMITS,
) -> EchoSequence:
    """Read a CAMUS (half) sequence.

    Args:
        path: ``.nii.gz`` or ``.mhd`` file holding frames along the third axis.
        patient_dir: folder the file must stay inside.
        labels: True for a per-frame label map.
        limits: size limits checked before pixels are allocated.

    Returns:
        EchoSequence with ``array`` ``(T, H, W)`` and spacing ``(row_mm, col_mm)``.

    Raises:
        InputError: the file is missing, malformed, too large or holds bad values.
    """
    path = Path(path)
    _validate(path, patient_dir, limits, ndim=3)
    image = _read_sitk(path, limits, ndim=3)
    array = _sitk().GetArrayFromImage(image)
    if array.ndim == 2:
        array = array[None]
    array = _as_labels(array, path) if labels else _as_intensity(array, path)
    return EchoSequence(array=array, geometry=_geometry(image), path=path)


_INT_KEYS = {"ED": "ed_frame", "ES": "es_frame", "NbFrame": "n_frames"}
_FLOAT_KEYS = {
    "Age": "age",
    "EF": "ef_pct",
    "LVef": "ef_pct",
    "LVedv": "edv_ml",
    "LVesv": "esv_ml",
    "FrameRate": "frame_rate_hz",
}
_STR_KEYS = {"Sex": "sex", "ImageQuality": "image_quality"}


def parse_cfg(
    path: Path | str, *, patient_dir: Path | None = None, limits: InputLimits = DEFAULT_LIMITS
) -> CfgInfo:
    """Parse a CAMUS ``Info_{2CH,4CH}.cfg`` file of either release.

    2019 files carry ``LVedv``, ``LVesv`` and ``LVef``; 2023 files carry ``EF`` and ``FrameRate``.
    Lines are ``Key: value``; unknown keys are kept in ``extra``.

    Args:
        path: cfg file.
        patient_dir: folder the file must resolve inside (default: the file's own folder), so
            that a symbolic link cannot make it read anything else.
        limits: ``max_header_bytes`` bounds the file size.

    Returns:
        CfgInfo with typed fields.

    Raises:
        CfgError: the file is missing, not a regular file, outside its folder, not text, has a
            line without ``:``, a value of the wrong type, or inconsistent frame indices.
    """
    path = Path(path)
    try:
        if not path.resolve().is_relative_to((patient_dir or path.parent).resolve()):
            raise CfgError(path, "file resolves outside the patient folder")
        if not path.is_file():  # a FIFO would block the reader forever
            what = "no such file" if not path.exists() else "not a regular file"
            raise CfgError(path, f"cannot read ({what})")
        if path.stat().st_size > limits.max_header_bytes:
            raise CfgError(path, "file is too large to be a cfg file")
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CfgError(path, "not a text file") from None
    except OSError as exc:
        raise CfgError(path, f"cannot read ({exc.strerror or exc})") from None
    except RuntimeError as exc:  # pathlib's "Symlink loop from ..."
        raise CfgError(path, f"cannot be resolved ({exc})") from None
    values: dict[str, object] = {}
    extra: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, raw = line.partition(":")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise CfgError(path, f"line {number} is not 'Key: value': {line[:60]!r}")
        try:
            if key in _INT_KEYS:
                values[_INT_KEYS[key]] = int(raw)
            elif key in _FLOAT_KEYS:
                number_value = float(raw)
                if not math.isfinite(number_value):
                    raise ValueError(raw)
                values[_FLOAT_KEYS[key]] = number_value
            elif key in _STR_KEYS:
                values[_STR_KEYS[key]] = raw
            else:
                extra[key] = raw
        except ValueError:
            raise CfgError(path, f"key {key} has a bad value {raw[:40]!r}") from None
    info = CfgInfo(**values, extra=extra)  # type: ignore[arg-type]
    n = info.n_frames
    for name, frame in (("ED", info.ed_frame), ("ES", info.es_frame)):
        if frame is not None and (frame < 1 or (n is not None and frame > n)):
            raise CfgError(path, f"{name} frame {frame} is outside 1..{n}")
    return info
