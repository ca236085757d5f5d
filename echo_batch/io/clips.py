"""One entry point for loop files other than CAMUS NIfTI/MetaImage: the reader is chosen by the
input format a discovery module recorded (:class:`echo_batch.domain.ClipMeta`), and what the
input itself says (a manifest's spacing or frame time) is applied on top of the file's own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo_batch.domain import ClipMeta, InputFormat, PatientRef, SpacingSource, View
from echo_batch.errors import InputError
from echo_batch.io.clip import Clip
from echo_batch.io.image import EchoSequence, ImageGrid, read_sequence, read_with_truth
from echo_batch.io.limits import DEFAULT_LIMITS, InputLimits

# A loop without a trusted spacing is measured on this nominal square grid: lengths, areas and
# volumes come out in pixel units, which are never written (their columns are null), while every
# ratio (EF, FAC, relative volume) is exact for square pixels.
NOMINAL_SPACING = (1.0, 1.0)
_CAMUS_FORMATS = (InputFormat.CAMUS2019, InputFormat.CAMUS2023)


@dataclass(frozen=True)
class PatientLoop:
    """One view's loop of a patient as read, whatever its format.

    Attributes:
        frames: ``(T, H, W)`` frames on their grid (:data:`NOMINAL_SPACING` without a spacing).
        gt: ``(T, H, W)`` uint8 expert label maps, or None.
        traced: the frames ``gt`` holds masks for (None: every frame); EchoNet's tracings cover
            two frames.
        spacing_source: where the spacing came from (``NONE``: no trusted spacing).
        spacing_problem: why a calibration in the file was refused.
        frame_time_ms: the file's frame time, or the input's, or None.
        input_format: format of the loop file.
    """

    frames: EchoSequence
    gt: EchoSequence | None
    traced: frozenset[int] | None
    spacing_source: SpacingSource
    spacing_problem: str | None
    frame_time_ms: float | None
    input_format: InputFormat

    @property
    def may_show_burned_in_text(self) -> bool:
        """True for DICOM frames not cropped to a trusted tissue region: the scanner's screen
        text (which may carry the patient's name) can be in them, so no picture may show them."""
        return self.input_format == InputFormat.DICOM and self.spacing_source != (
            SpacingSource.DICOM_REGION
        )


def read_patient_loop(ref: PatientRef, view: View) -> PatientLoop:
    """Read one view's loop of a patient and its expert masks with the reader its format needs.

    CAMUS NIfTI/MetaImage loops (also when a manifest lists them) keep their header grid, a
    manifest's spacing replacing it; DICOM and video loops go through :func:`read_clip`;
    EchoNet's tracings become the expert masks of the traced frames.

    Raises:
        InputError: the loop, its masks or its tracings are unusable (naming the file).
    """
    files = ref.sequences[view]
    if files.image is None:
        raise InputError(ref.folder, f"no {view.value} loop file")
    meta = ref.clip_meta.get(view)
    if meta is None or meta.input_format in _CAMUS_FORMATS:
        frames, gt = read_with_truth(files.image, files.gt, patient_dir=ref.folder, sequence=True)
        source = SpacingSource.HEADER
        if meta is not None and meta.spacing_mm is not None:  # a manifest's spacing wins
            grid = dataclasses.replace(frames.geometry, spacing=meta.spacing_mm)
            frames = dataclasses.replace(frames, geometry=grid)
            source = SpacingSource.MANIFEST
        return PatientLoop(
            frames=frames,  # type: ignore[arg-type]
            gt=gt,  # type: ignore[arg-type]
            traced=None,
            spacing_source=source,
            spacing_problem=None,
            frame_time_ms=None if meta is None else meta.frame_time_ms,
            input_format=ref.format if meta is None else meta.input_format,
        )
    clip = read_clip(files.image, meta)
    grid = ImageGrid(spacing=clip.spacing or NOMINAL_SPACING)
    frames = EchoSequence(array=clip.frames, geometry=grid, path=clip.path)
    gt, traced = (None, None)
    if meta.tracings is not None:
        gt, traced = _traced_truth(ref, view, meta.tracings, frames)
    elif files.gt is not None:
        gt = _listed_truth(ref, files.gt, frames)
    return PatientLoop(
        frames=frames,
        gt=gt,
        traced=traced,
        spacing_source=clip.spacing_source,
        spacing_problem=clip.spacing_problem,
        frame_time_ms=clip.frame_time_ms,
        input_format=meta.input_format,
    )


def _listed_truth(ref: PatientRef, gt_path: Path, frames: EchoSequence) -> EchoSequence:
    """A manifest's ``gt_path`` label loop for a DICOM or video clip, on the clip's grid.

    The label maps must have the shape of the clip as read (after cropping to the tissue
    region): ``(T, H, W)``, one map per frame.

    Raises:
        InputError: the label file is unusable, or its shape differs (naming the label file).
    """
    gt = read_sequence(gt_path, patient_dir=ref.folder, labels=True)
    if gt.array.shape != frames.array.shape:
        raise InputError(
            gt_path,
            f"ground truth shape {gt.array.shape} differs from the loop {frames.array.shape} "
            "as read (cropped to its tissue region)",
        )
    return EchoSequence(array=gt.array, geometry=frames.geometry, path=gt_path)


def _traced_truth(
    ref: PatientRef, view: View, tracings: Path, frames: EchoSequence
) -> tuple[EchoSequence, frozenset[int]]:
    """Expert LV masks of the traced frames (label 1 inside each tracing), ``(T, H, W)`` uint8.

    Raises:
        InputError: the tracings file cannot be read again, or no longer traces this loop.
    """
    from echo_batch.io.tracings import read_tracings, tracing_mask

    traced = read_tracings(tracings).of(ref.patient_id)
    if not traced:
        raise InputError(tracings, f"no tracing of {ref.patient_id} {view.value} any more")
    shape = frames.array.shape
    gt = np.zeros(shape, np.uint8)
    for frame, tracing in traced.items():
        if not 0 <= frame < shape[0]:
            raise InputError(tracings, f"{tracing.where}: outside the {shape[0]} frames")
        gt[frame] = tracing_mask(tracing, shape[1:])
    return EchoSequence(array=gt, geometry=frames.geometry, path=tracings), frozenset(traced)


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
