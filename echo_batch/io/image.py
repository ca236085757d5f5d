"""Reading CAMUS images, label maps and sequences (2019 ``.mhd``, 2023 ``.nii.gz``).

Arrays come back as ``(H, W)`` (sequences ``(T, H, W)``) with row 0 at the probe, i.e. the LV
apex at the top and the atrium at the bottom, exactly as SimpleITK returns CAMUS files.

Warning:
    SimpleITK reports spacing as ``(x, y)`` = ``(column, row)``; everything here uses
    ``(row_mm, col_mm)`` to match the array axes. Never assume square pixels.

Every header is validated before pixels are read (per format: :mod:`echo_batch.io.nifti`,
:mod:`echo_batch.io.mhd`); plain NIfTI stills are decoded directly, anything else by SimpleITK.
Any problem, including an unexpected decoder exception, raises :class:`InputError` naming the
file and the reason. ``parse_cfg`` is re-exported from :mod:`echo_batch.io.cfg`.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from echo_batch.domain import Label
from echo_batch.errors import InputError
from echo_batch.io.cfg import parse_cfg
from echo_batch.io.limits import DEFAULT_LIMITS, InputLimits, check_dims
from echo_batch.io.mhd import check_mhd, is_mhd
from echo_batch.io.nifti import NiftiPayload, check_nifti

__all__ = [
    "EchoImage",
    "EchoSequence",
    "ImageGrid",
    "parse_cfg",
    "read_image",
    "read_sequence",
]

# What a decoder raises on bytes it cannot make sense of (SimpleITK raises RuntimeError, numpy
# ValueError or MemoryError, struct and zlib their own errors): the file's fault, so it becomes
# an InputError naming the file. Anything else (TypeError, AttributeError...) is a bug and
# propagates.
_DECODER_ERRORS = (
    ArithmeticError,
    EOFError,
    MemoryError,
    OSError,
    RuntimeError,
    ValueError,
    struct.error,
    zlib.error,
)


@contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Turn a decoder's exception (see ``_DECODER_ERRORS``) into an InputError naming ``path``."""
    try:
        yield
    except InputError:
        raise
    except _DECODER_ERRORS as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = f"{type(exc).__name__}: {lines[-1][:160]}" if lines else type(exc).__name__
        raise InputError(path, f"not a readable image ({detail})") from None


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
        with _decoding(self.path):
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


def _validate(
    path: Path, patient_dir: Path | None, limits: InputLimits, ndim: int
) -> NiftiPayload | None:
    """Check location, size and payload of a file before any pixel is allocated.

    An operating-system error (permission denied, I/O error) becomes an :class:`InputError`
    naming the file it concerns, so that it fails only its own image.

    Returns:
        The decoded pixels of a plain NIfTI file (see :func:`check_nifti`), else None.
    """
    try:
        return _validate_file(path, patient_dir, limits, ndim)
    except OSError as exc:
        where = Path(os.fsdecode(exc.filename)) if exc.filename else path
        raise InputError(where, f"cannot read ({exc.strerror or exc})") from None


def _validate_file(
    path: Path, patient_dir: Path | None, limits: InputLimits, ndim: int
) -> NiftiPayload | None:
    if not path.is_file():
        raise InputError(path, "file is missing" if not path.exists() else "not a regular file")
    if patient_dir is not None:
        try:
            inside = path.resolve().is_relative_to(patient_dir.resolve())
        except RuntimeError as exc:  # pathlib's "Symlink loop from ..."
            raise InputError(path, f"cannot be resolved ({exc})") from None
        if not inside:
            raise InputError(path, "file resolves outside the patient folder")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    if is_mhd(path):
        check_mhd(path, patient_dir, limits, ndim)
    elif path.name.lower().endswith((".nii", ".nii.gz")):
        return check_nifti(path, limits, ndim)
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
    check_dims(path, dims, ndim, limits)
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
        InputError: the file is missing, malformed, too large, not 2-D, or holds bad values;
            also for any exception a decoder raises on the file's bytes.
    """
    path = Path(path)
    with _decoding(path):
        return _read_image(path, patient_dir, labels, limits)


def _read_image(
    path: Path, patient_dir: Path | None, labels: bool, limits: InputLimits
) -> EchoImage:
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
        InputError: the file is missing, malformed, too large or holds bad values; also for
            any exception a decoder raises on the file's bytes.
    """
    path = Path(path)
    with _decoding(path):
        return _read_sequence(path, patient_dir, labels, limits)


def _read_sequence(
    path: Path, patient_dir: Path | None, labels: bool, limits: InputLimits
) -> EchoSequence:
    _validate(path, patient_dir, limits, ndim=3)
    image = _read_sitk(path, limits, ndim=3)
    array = _sitk().GetArrayFromImage(image)
    if array.ndim == 2:
        array = array[None]
    array = _as_labels(array, path) if labels else _as_intensity(array, path)
    return EchoSequence(array=array, geometry=_geometry(image), path=path)


def read_with_truth(
    path: Path,
    gt_path: Path | None,
    *,
    patient_dir: Path | None = None,
    sequence: bool = False,
) -> tuple[EchoImage | EchoSequence, EchoImage | EchoSequence | None]:
    """Read an image (or a loop) and its expert label map, which must have the same shape.

    Args:
        path: the still or loop file.
        gt_path: its expert label map, or None.
        patient_dir: folder the files must stay inside.
        sequence: read loops (``(T, H, W)``) instead of stills (``(H, W)``).

    Returns:
        ``(image, labels or None)``.

    Raises:
        InputError: either file is unusable, or the shapes differ (naming the label file).
    """
    read = read_sequence if sequence else read_image
    image = read(path, patient_dir=patient_dir)
    if gt_path is None:
        return image, None
    gt = read(gt_path, patient_dir=patient_dir, labels=True)
    if gt.array.shape != image.array.shape:
        what = "loop" if sequence else "image"
        raise InputError(
            gt_path,
            f"ground truth shape {gt.array.shape} differs from the {what} {image.array.shape}",
        )
    return image, gt
