"""One entry point for loop files other than CAMUS NIfTI/MetaImage: the reader is chosen by the
input format a discovery module recorded (:class:`echo_batch.domain.ClipMeta`), and what the
input itself says (a manifest's spacing or frame time) is applied on top of the file's own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from echo_batch.domain import ClipMeta, InputFormat, SpacingSource
from echo_batch.io.clip import Clip
from echo_batch.io.limits import DEFAULT_LIMITS, InputLimits


def read_clip(path: Path, meta: ClipMeta, *, limits: InputLimits = DEFAULT_LIMITS) -> Clip:
    """Read a DICOM or video loop into a clip, with the input's own facts applied.

    Args:
        path: the loop file.
        meta: what discovery found about it (format, declared frame count, frame time, a
            manifest's spacing).
        limits: size limits checked before pixels are decoded.

    Returns:
        The clip. A manifest's spacing replaces the file's (``SpacingSource.MANIFEST``); a
        declared frame time replaces the file's.

    Raises:
        InputError: naming the file, for anything the reader refuses.
        ValueError: ``meta`` names a format this function does not read (CAMUS files are read
            by :func:`echo_batch.io.image.read_with_truth`).
    """
    if meta.input_format == InputFormat.ECHONET:
        from echo_batch.io.echonet import read_echonet_clip

        fps = None if meta.frame_time_ms is None else 1000.0 / meta.frame_time_ms
        clip = read_echonet_clip(path, expected_frames=meta.n_frames, fps=fps, limits=limits)
    elif meta.input_format == InputFormat.DICOM:
        from echo_batch.io.dicom import read_dicom_clip

        clip = read_dicom_clip(path, limits=limits)
    else:
        raise ValueError(f"read_clip does not read {meta.input_format.value} files")
    return with_meta(clip, meta)


def with_meta(clip: Clip, meta: ClipMeta) -> Clip:
    """``clip`` with the spacing and frame time the input declares (they win over the file's)."""
    changes: dict[str, object] = {}
    if meta.spacing_mm is not None:
        changes.update(
            spacing=meta.spacing_mm, spacing_source=SpacingSource.MANIFEST, spacing_problem=None
        )
    if meta.frame_time_ms is not None:
        changes["frame_time_ms"] = meta.frame_time_ms
    return dataclasses.replace(clip, **changes) if changes else clip
