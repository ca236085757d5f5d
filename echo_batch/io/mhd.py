"""MetaImage (``.mhd`` + ``.raw``/``.zraw``, CAMUS 2019) header checks, before SimpleITK reads.

The header is parsed here as text so that its sizes, element type and data file are checked
before any pixel is allocated; the data file must stay inside the patient folder (no absolute
path, no ``..``, no symbolic link leading out). SimpleITK then decodes the validated file.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

from echo_batch.errors import InputError
from echo_batch.io.limits import InputLimits, check_dims, inflate_bounded

# MetaImage element type -> bytes per pixel, for the scalar types SimpleITK reads
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


def is_mhd(path: Path) -> bool:
    """Whether ``path`` names a MetaImage header (by its ending, any case)."""
    return path.name.lower().endswith(".mhd")


def parse_mhd_header(path: Path, limits: InputLimits) -> dict[str, str]:
    """Read a MetaImage header as ``{key: value}`` without touching pixel data.

    Raises:
        InputError: the header is too large, not UTF-8 text, unreadable, or has a line
            without ``=``.
    """
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


def check_mhd(path: Path, patient_dir: Path | None, limits: InputLimits, max_dims: int) -> None:
    """Validate a ``.mhd`` header and its data file before SimpleITK reads anything.

    Args:
        path: the ``.mhd`` header.
        patient_dir: folder the data file must resolve inside (default: the header's folder).
        limits: size limits.
        max_dims: 2 for a still, 3 for a sequence.

    Raises:
        InputError: a missing or malformed field, an unsupported element type, inline data,
            several channels, a data file outside the folder, or a payload whose size does not
            match the header (compressed data is inflated at most one byte past that size).
    """
    fields = parse_mhd_header(path, limits)
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
    check_dims(path, dims, max_dims, limits)
    etype = fields["ElementType"]
    if etype not in _MHD_TYPES:
        raise InputError(path, f"unsupported ElementType {etype}")
    data_name = fields["ElementDataFile"]
    if data_name.upper() == "LOCAL":
        raise InputError(path, "inline (LOCAL) pixel data is not accepted in a .mhd header")
    data_path = resolve_inside(path, data_name, patient_dir or path.parent)
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
        decoded = inflate_bounded(data_path, nbytes, zlib.decompressobj(), report=path)
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


def resolve_inside(header: Path, data_name: str, folder: Path) -> Path:
    """Resolve an ``ElementDataFile`` and refuse anything outside ``folder``.

    Args:
        header: the ``.mhd`` file (named in errors; relative names resolve from its folder).
        data_name: the header's ``ElementDataFile`` value.
        folder: folder the data file must resolve inside.

    Returns:
        The resolved data file, a regular file inside ``folder``.

    Raises:
        InputError: an absolute path, a ``..`` or backslash, a missing file, a link loop, a
            target outside ``folder``, or something that is not a regular file.
    """
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
