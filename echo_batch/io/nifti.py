"""NIfTI-1 (``.nii``, ``.nii.gz``, CAMUS 2023) payload checks and a direct decoder.

SimpleITK silently zero-fills a truncated NIfTI payload and turns NaN/inf into 0, so the decoded
length and the float values are checked here on the raw bytes. The payload is decoded once; when
the file needs none of SimpleITK's conversions it is returned, so that SimpleITK does not decode
it again, with the same pixels and spacing SimpleITK would give (tests/test_io_fast.py).

The payload is sized from the datatype code, never from ``bitpix``: ITK's NIfTI reader sizes the
voxels from the datatype and ignores ``bitpix`` (checked with SimpleITK 2.5 on files whose
``bitpix`` is 0, 1, 7, 8, 12, 16, 32, 64 or 128 for every datatype below: each reads as its
datatype says), and so does this module.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo_batch.errors import InputError
from echo_batch.io.limits import InputLimits, check_dims, inflate_bounded

# NIfTI-1 datatype code -> numpy dtype, the scalar types echo-batch reads (nifti1.h: DT_UINT8 2,
# DT_INT16 4, DT_INT32 8, DT_FLOAT32 16, DT_FLOAT64 64, DT_INT8 256, DT_UINT16 512, DT_UINT32 768).
# SimpleITK also reads int64, complex and RGB codes; the readers refuse those pixel types anyway.
NIFTI_DTYPES: dict[int, str] = {
    2: "u1",
    4: "i2",
    8: "i4",
    16: "f4",
    64: "f8",
    256: "i1",
    512: "u2",
    768: "u4",
}
_HEADER_BYTES = 348  # sizeof_hdr of NIfTI-1; the payload never starts before it
_UNITS_MM = {0, 2}  # xyzt_units: unknown (ITK assumes mm) or millimetre


@dataclass(frozen=True)
class NiftiPayload:
    """Pixels and spacing decoded straight from a plain NIfTI-1 file (the common case).

    Attributes:
        array: ``(..., H, W)`` pixels in the file's dtype, C order as SimpleITK returns them.
        spacing: ``(row_mm, col_mm)`` pixel size.
    """

    array: np.ndarray
    spacing: tuple[float, float]


def check_nifti(path: Path, limits: InputLimits, max_dims: int) -> NiftiPayload | None:
    """Check a NIfTI-1 file's header and pixel payload before anything else reads it.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        limits: size limits, checked from the header before the payload is inflated.
        max_dims: 2 for a still, 3 for a sequence.

    Returns:
        The decoded pixels and spacing, or None when SimpleITK must read the file (a header
        that needs its conversions, or a file that is not NIfTI-1).

    Raises:
        InputError: a short header, invalid dimensions or ``vox_offset``, a datatype outside
            :data:`NIFTI_DTYPES`, sizes over the limits, a truncated payload, a compressed
            payload longer than the header implies (inflation stops one byte past it), or NaN
            or infinite float pixels.
    """
    gz = path.name.lower().endswith(".gz")
    if gz:
        head = inflate_bounded(path, 352, zlib.decompressobj(wbits=47))
    else:
        with path.open("rb") as fh:
            head = fh.read(352)
    if len(head) < _HEADER_BYTES:
        raise InputError(path, "not a readable image (NIfTI header shorter than 348 bytes)")
    for endian in "<>":
        if struct.unpack(endian + "i", head[:4])[0] == _HEADER_BYTES:
            break
    else:
        return None  # not NIfTI-1; SimpleITK decides
    dims = struct.unpack(endian + "8h", head[40:56])
    datatype = struct.unpack(endian + "h", head[70:72])[0]
    vox_offset = struct.unpack(endian + "f", head[108:112])[0]
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1 : ndim + 1]):
        raise InputError(path, f"invalid NIfTI dimensions {list(dims[1 : ndim + 1])}")
    check_dims(path, list(dims[1 : ndim + 1]), max_dims, limits)  # bounds nbytes below too
    if datatype not in NIFTI_DTYPES:
        raise InputError(path, f"unsupported pixel type (NIfTI datatype code {datatype})")
    if not math.isfinite(vox_offset) or vox_offset > limits.max_decoded_bytes:
        raise InputError(path, f"invalid NIfTI vox_offset {vox_offset}")
    dtype = np.dtype(endian + NIFTI_DTYPES[datatype])
    nbytes = math.prod(dims[1 : ndim + 1]) * dtype.itemsize
    # ITK truncates vox_offset to an integer and starts no earlier than the header's end
    expected = max(int(vox_offset), _HEADER_BYTES) + nbytes
    if gz:
        data = inflate_bounded(path, expected, zlib.decompressobj(wbits=47))
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
    values = np.frombuffer(
        data, dtype=dtype, count=nbytes // dtype.itemsize, offset=expected - nbytes
    )
    if dtype.kind == "f" and not np.isfinite(values).all():
        raise InputError(path, "image holds NaN or infinite pixel values")
    return _decoded(head, endian, values)


def _decoded(head: bytes, endian: str, values: np.ndarray) -> NiftiPayload | None:
    """Pixels and spacing when nothing calls for SimpleITK's conversions, else None.

    The direct path covers a 2-D or 3-D scalar image in millimetres without intensity scaling;
    anything else (scaling, other units, negative spacing, an sform without a qform) is left to
    SimpleITK, so both paths give the same pixels and spacing.

    Args:
        head: the first 352 bytes of the file (header and extension flag).
        endian: ``"<"`` or ``">"``, the header's byte order.
        values: ``(N,)`` the payload in the file's dtype and byte order.
    """
    dims = struct.unpack(endian + "8h", head[40:56])
    pixdim = struct.unpack(endian + "8f", head[76:108])
    slope, inter = struct.unpack(endian + "2f", head[112:120])
    units = head[123] & 0x07
    qform_code, sform_code = struct.unpack(endian + "2h", head[252:256])
    ndim = dims[0]
    if (
        not 2 <= ndim <= 3
        or units not in _UNITS_MM
        or slope not in (0.0, 1.0)
        or inter != 0.0
        or (sform_code > 0 and qform_code == 0)
        or not all(math.isfinite(v) and v > 0 for v in pixdim[1:3])
    ):
        return None
    shape = tuple(reversed(dims[1 : ndim + 1]))
    native = values.reshape(shape).astype(values.dtype.newbyteorder("="), copy=True)
    return NiftiPayload(array=native, spacing=(pixdim[2], pixdim[1]))
