"""Resource limits applied to input files before any pixel buffer is allocated."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

from echo_batch.errors import InputError


@dataclass(frozen=True)
class InputLimits:
    """Upper bounds for what a reader accepts.

    Attributes:
        max_side_px: largest accepted image side, pixels (CAMUS natives are <= 1181).
        max_frames: largest accepted number of frames in a sequence (EchoNet-Dynamic's
            longest videos hold about 1,000 frames; memory is bounded by ``max_decoded_bytes``).
        max_decoded_bytes: largest decoded pixel buffer, bytes.
        max_header_bytes: largest accepted ``.mhd`` header or ``.cfg`` file, bytes.
        max_spacing_mm: largest accepted pixel spacing, mm.
    """

    max_side_px: int = 4096
    max_frames: int = 2048
    max_decoded_bytes: int = 1 << 30
    max_header_bytes: int = 64 * 1024
    max_spacing_mm: float = 10.0


DEFAULT_LIMITS = InputLimits()


def check_dims(path: Path, dims: list[int], max_dims: int, limits: InputLimits) -> None:
    """Check image sizes from a header against the limits.

    Args:
        path: file named in errors.
        dims: sizes in SimpleITK order ``(x, y[, t, ...])``, pixels.
        max_dims: dimensions the caller expects (2 for a still, 3 for a sequence); trailing
            axes of size 1 do not count.
        limits: bounds to enforce.

    Raises:
        InputError: too many dimensions, an empty axis, a side, frame count or decoded size
            above the limits.
    """
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


def inflate_bounded(path: Path, limit: int, inflater, report: Path | None = None) -> bytes:
    """Decompress a file, never producing more than ``limit + 1`` bytes (a bomb stops early).

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
