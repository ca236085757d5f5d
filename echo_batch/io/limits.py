"""Resource limits applied to input files before any pixel buffer is allocated."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputLimits:
    """Upper bounds for what a reader accepts.

    Attributes:
        max_side_px: largest accepted image side, pixels (CAMUS natives are <= 1181).
        max_frames: largest accepted number of frames in a sequence.
        max_decoded_bytes: largest decoded pixel buffer, bytes.
        max_header_bytes: largest accepted ``.mhd`` header or ``.cfg`` file, bytes.
        max_spacing_mm: largest accepted pixel spacing, mm.
    """

    max_side_px: int = 4096
    max_frames: int = 512
    max_decoded_bytes: int = 1 << 30
    max_header_bytes: int = 64 * 1024
    max_spacing_mm: float = 10.0


DEFAULT_LIMITS = InputLimits()
