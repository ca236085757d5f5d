"""Reading DICOM ultrasound: a header record for discovery, a :class:`Clip` for workers.

Discovery calls :func:`read_dicom_header` on every file (``dcmread(stop_before_pixels=True)``:
no pixel decode) and groups the records into patients and studies with :func:`group_dicom`
(PatientID, StudyInstanceUID). Workers call :func:`read_dicom_clip`, which decodes the frames
through pydicom 3 and its plugin decoders, one plugin for all frames of a file: Pillow
(libjpeg-turbo) for JPEG baseline, pylibjpeg-libjpeg for JPEG extended, lossless and JPEG-LS,
pylibjpeg-openjpeg for JPEG 2000; RLE and native data need no plugin.

Calibration (DICOM PS3.3 C.8.5.5, Sequence of Ultrasound Regions (0018,6011)): the one region
with RegionSpatialFormat 1 (2-D) and RegionDataType 1 (tissue) gives the pixel size
``(PhysicalDeltaY, PhysicalDeltaX) x 10`` mm when both PhysicalUnits are 3 (cm), and the frames
are cropped to its bounds (RegionLocationMinX0..MaxX1, MinY0..MaxY1, inclusive pixel indices).
A region whose bounds leave the pixel grid (a calibration written for another image size, as in
pydicom's own ultrasound examples), or whose units are not cm, or with a non-positive or
implausible delta, or several tissue regions (a dual display), is refused: the clip has no
spacing (``SpacingSource.NONE``) and ``spacing_problem`` says why. A region outside the grid
also gives no crop; one that fits the grid crops even when its units are refused. PixelSpacing
(0028,0030) is never used: ITK and SimpleITK report 1.0 mm for ultrasound without a calibration.

Grey levels (float32, 0-255): MONOCHROME2 as stored, MONOCHROME1 inverted, RGB and PALETTE
COLOR (through its lookup table) by Rec. 601 luma ``(299 R + 587 G + 114 B) / 1000`` (exact for
grey pixels), YBR_FULL(_422) by its Y, the same luma (frames are decoded with ``raw=True``:
pydicom's own YCbCr -> RGB conversion would cost more than the JPEG decode). Colour overlays (ECG
trace, markers, text, colour Doppler) are masked: a pixel whose RGB channels spread by more than
:data:`COLOUR_SPREAD` grey levels becomes 0 (for YCbCr the spread follows from the chroma alone);
greys from lossy JPEG (a few levels of chroma noise) and lightly tinted grey maps stay. Text and
ECG outside the tissue region go with the crop. Depths other than 8 bits are scaled to 0-255.

Frame time (ms): FrameTimeVector (0018,1065) when FrameIncrementPointer (0028,0009) names it (its
increments after the first, accepted when they vary by at most
:data:`FRAME_TIME_VECTOR_TOLERANCE` of their mean), else FrameTime (0018,1063); accepted in
(:data:`FRAME_TIME_MS_RANGE`). CineRate (0018,0040) and RecommendedDisplayFrameRate (0008,2144)
are not used: they are replay rates, which a scanner may set for slow motion, and a wrong frame
time misleads beat detection more than none does.

View: ViewCodeSequence (0054,0220) with the SNOMED CT codes of apical 2- and 4-chamber views
(:data:`VIEW_CODES`), else ViewName (0008,2127) text (``A4C``, ``AP2``, ``apical four chamber``,
...), else None (unknown).

Identity: only PatientID and the study/series/instance UIDs are read. Every read names the tags
it wants (``specific_tags``), so PatientName, PatientBirthDate and every other identifying
element are never parsed into memory, let alone into a record, an error or a log line.

Every problem with a file raises :class:`InputError` naming it (a decoder's exception too);
:func:`read_dicom_header` raises only for a file it cannot parse and records a parsed file's
unreadable pixels in ``DicomHeader.problem``, so that discovery can list them per patient.
"""

from __future__ import annotations

import functools
import math
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from echo_batch.domain import InputFormat, SpacingSource, View
from echo_batch.errors import InputError
from echo_batch.io.clip import Clip
from echo_batch.io.limits import DEFAULT_LIMITS, InputLimits, check_dims

__all__ = [
    "COLOUR_SPREAD",
    "VIEW_CODES",
    "DicomHeader",
    "PixelBox",
    "RegionCalibration",
    "group_dicom",
    "is_dicom",
    "read_dicom_clip",
    "read_dicom_header",
    "region_calibration",
]

COLOUR_SPREAD = 32.0
"""A pixel whose largest and smallest channels differ by more than this (grey levels of 0-255)
is a colour overlay and is masked to 0. JPEG quality 95 leaves grey pixels within a few levels;
overlays (ECG green, marker yellow, Doppler red/blue) spread by 100 levels and more."""

_LUMA_WEIGHTS = np.array([[299, 587, 114]], dtype=np.float32)  # Rec. 601 luma x 1000
_NEUTRAL_CHROMA = int(COLOUR_SPREAD // (1.402 + 1.772))
"""Chroma distance from the centre below which no pixel can spread by more than COLOUR_SPREAD."""

FRAME_TIME_MS_RANGE = (1.0, 1000.0)
"""Accepted frame times, ms (1000 to 1 frames per second); others are refused."""

FRAME_TIME_VECTOR_TOLERANCE = 0.1
"""Largest relative deviation of a FrameTimeVector increment from their mean."""

VIEW_CODES: dict[tuple[str, str], View] = {
    ("SCT", "399232001"): View.A2C,  # Apical two chamber (DICOM CID 12226)
    ("SRT", "G-A19B"): View.A2C,  # the same, legacy SNOMED RT code
    ("SCT", "399214001"): View.A4C,  # Apical four chamber (DICOM CID 12226)
    ("SRT", "G-A19C"): View.A4C,  # the same, legacy SNOMED RT code
}
"""(CodingSchemeDesignator, CodeValue) of ViewCodeSequence items -> apical view (codes as in
pydicom's copy of DICOM PS3.16, ``pydicom.sr.codedict.codes.SCT.ApicalFourChamber``...). Other
views (apical long axis, RV-focused four chamber, parasternal...) give None."""

_VIEW_NAME_PATTERNS: dict[View, re.Pattern[str]] = {
    View.A2C: re.compile(r"\b(a2c|ap2c?|2 ?ch|apical (2|two)( ?ch(amber)?)?|(2|two) ?chamber)\b"),
    View.A4C: re.compile(r"\b(a4c|ap4c?|4 ?ch|apical (4|four)( ?ch(amber)?)?|(4|four) ?chamber)\b"),
}
_RV_FOCUSED = re.compile(r"\brv\b")

# Region values (DICOM PS3.3 C.8.5.5.1).
_SPATIAL_2D = 1  # RegionSpatialFormat: 2D (tissue or flow)
_DATA_TISSUE = 1  # RegionDataType: tissue
_UNIT_CM = 3  # PhysicalUnitsX/YDirection
_UNIT_NAMES = {
    0: "none",
    1: "percent",
    2: "dB",
    3: "cm",
    4: "seconds",
    5: "hertz",
    6: "dB/seconds",
    7: "cm/sec",
    8: "cm2",
    9: "cm2/sec",
    10: "cm3",
    11: "cm3/sec",
    12: "degrees",
}

_PHOTOMETRIC = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "PALETTE COLOR",
        "YBR_RCT",  # JPEG 2000 lossless colour: the decoder returns RGB
        "YBR_ICT",  # JPEG 2000 lossy colour: the decoder returns RGB
    }
)

_HEADER_KEYWORDS = (
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Modality",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "PhotometricInterpretation",
    "FrameIncrementPointer",
    "FrameTime",
    "FrameTimeVector",
    "SequenceOfUltrasoundRegions",
    "ViewCodeSequence",
    "ViewName",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
)
_PIXEL_KEYWORDS = (
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "PixelData",
)
_HEADER_SLACK_BYTES = 16 << 20
"""A file may exceed the decoded-size limit by this much (header, lookup tables)."""
_PIXEL_TAG = 0x7FE00010
_JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
_UNDEFINED_LENGTH = 0xFFFFFFFF

# What pydicom and its plugins raise on bytes they cannot make sense of (the file's fault).
# Anything else (AttributeError, TypeError...) is a bug and propagates.
_DECODER_ERRORS = (
    ArithmeticError,
    EOFError,
    KeyError,
    IndexError,
    MemoryError,
    NotImplementedError,
    OSError,
    RuntimeError,
    ValueError,
    struct.error,
    zlib.error,
)


@dataclass(frozen=True)
class PixelBox:
    """A rectangle of the pixel grid, half-open: rows ``row0:row1``, columns ``col0:col1``."""

    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the box."""
        return self.row1 - self.row0, self.col1 - self.col0


@dataclass(frozen=True)
class RegionCalibration:
    """What the Sequence of Ultrasound Regions says about the tissue image.

    Attributes:
        spacing: ``(row_mm, col_mm)`` of the tissue region, or None (no region, or refused).
        crop: the tissue region's pixels, or None (no region fits the grid: the whole frame).
        problem: why a calibration present in the file was refused, else None.
    """

    spacing: tuple[float, float] | None = None
    crop: PixelBox | None = None
    problem: str | None = None


@dataclass(frozen=True)
class DicomHeader:
    """What discovery needs of one DICOM file, read without decoding its pixels.

    Only PatientID and UIDs identify anything: no name, birth date, accession number or
    institution is read.

    Attributes:
        path: the file.
        patient_id: PatientID (0010,0020), or None when absent or empty.
        study_uid: StudyInstanceUID, or None.
        series_uid: SeriesInstanceUID, or None.
        instance_uid: SOPInstanceUID, or None.
        instance_number: InstanceNumber, or None.
        modality: Modality (``US`` for ultrasound), or None.
        transfer_syntax: transfer syntax UID.
        rows: Rows, pixels (0 when absent).
        columns: Columns, pixels (0 when absent).
        n_frames: NumberOfFrames (1 when absent).
        samples_per_pixel: SamplesPerPixel (1 grey or palette, 3 colour).
        bits_allocated: BitsAllocated.
        bits_stored: BitsStored.
        photometric: PhotometricInterpretation.
        view: apical view from the view tags, or None (unknown).
        frame_time_ms: time between frames, ms, or None.
        frame_time_problem: why a frame time present in the file was refused, else None.
        calibration: spacing and crop from the ultrasound regions.
        problem: why the pixels cannot be read (no pixel data, unsupported transfer syntax or
            photometric interpretation, sizes over the limits, truncated pixel data), else None.
    """

    path: Path
    patient_id: str | None
    study_uid: str | None
    series_uid: str | None
    instance_uid: str | None
    instance_number: int | None
    modality: str | None
    transfer_syntax: str
    rows: int
    columns: int
    n_frames: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    photometric: str
    view: View | None
    frame_time_ms: float | None
    frame_time_problem: str | None
    calibration: RegionCalibration
    problem: str | None

    @property
    def spacing(self) -> tuple[float, float] | None:
        """``(row_mm, col_mm)`` from the tissue region, or None."""
        return self.calibration.spacing

    @property
    def spacing_source(self) -> SpacingSource:
        """``DICOM_REGION`` when a calibration was taken, else ``NONE``."""
        return SpacingSource.NONE if self.spacing is None else SpacingSource.DICOM_REGION

    @property
    def spacing_problem(self) -> str | None:
        """Why a calibration present in the file was refused, else None."""
        return self.calibration.problem

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the clip's frames: the crop when there is one, else the whole grid."""
        crop = self.calibration.crop
        return crop.shape if crop is not None else (self.rows, self.columns)


def _pydicom():
    """pydicom, imported on first use (a reader module has no import-time cost)."""
    import pydicom

    return pydicom


@contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Turn a decoder's exception (see ``_DECODER_ERRORS``) into an InputError naming ``path``."""
    errors = _pydicom().errors
    try:
        yield
    except InputError:
        raise
    except errors.InvalidDicomError:
        raise InputError(path, "not a DICOM file (no 'DICM' file meta header)") from None
    except (*_DECODER_ERRORS, errors.BytesLengthException) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = f"{type(exc).__name__}: {lines[-1][:160]}" if lines else type(exc).__name__
        raise InputError(path, f"not a readable DICOM file ({detail})") from None


def is_dicom(path: Path | str) -> bool:
    """True when ``path`` is a file with the DICOM preamble (``DICM`` at byte 128).

    Cheap enough for discovery to sort files of a flat folder; files without the preamble are
    not read (pydicom would have to guess their encoding).
    """
    try:
        with Path(path).open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _check_file(path: Path, limits: InputLimits) -> None:
    try:
        if not path.is_file():
            raise InputError(path, "file is missing" if not path.exists() else "not a regular file")
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise InputError(path, "file is empty")
    if size > limits.max_decoded_bytes + _HEADER_SLACK_BYTES:
        raise InputError(path, f"file of {size} bytes exceeds the decoded size limit")


def _get(ds, keyword: str) -> Any:
    """Value of ``keyword`` in ``ds``, or None when absent or not convertible."""
    try:
        value = ds.get(keyword)
    except _DECODER_ERRORS:
        return None
    if value is None or value == "":
        return None
    return value


def _int(ds, keyword: str) -> int | None:
    value = _get(ds, keyword)
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _text(ds, keyword: str) -> str | None:
    value = _get(ds, keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _values(value: Any) -> list[Any]:
    """A single- or multi-valued element's values as a list."""
    if value is None:
        return []
    if isinstance(value, str | bytes) or not hasattr(value, "__len__"):
        return [value]
    return list(value)


def _tags(value: Any) -> set[int]:
    """Tags of an AT element (FrameIncrementPointer)."""
    try:
        return {int(v) for v in _values(value)}
    except (TypeError, ValueError):
        return set()


def _units(code: int | None) -> str:
    return _UNIT_NAMES.get(code, f"code {code}") if code is not None else "missing"


def region_calibration(ds, rows: int, columns: int, limits: InputLimits) -> RegionCalibration:
    """Spacing and crop from the Sequence of Ultrasound Regions (pure, on a dataset).

    Args:
        ds: pydicom dataset (header elements are enough).
        rows: Rows of the pixel grid.
        columns: Columns of the pixel grid.
        limits: ``max_spacing_mm`` bounds the accepted pixel size.

    Returns:
        RegionCalibration: spacing and crop of the one 2-D tissue region when it fits the grid
        and is in cm; otherwise no spacing and the reason (no reason when there are no regions).
    """
    regions = _get(ds, "SequenceOfUltrasoundRegions") or []
    tissue = [
        r
        for r in regions
        if _int(r, "RegionSpatialFormat") == _SPATIAL_2D
        and _int(r, "RegionDataType") == _DATA_TISSUE
    ]
    if not tissue:
        if not regions:
            return RegionCalibration()
        return RegionCalibration(
            problem=f"none of the {len(regions)} ultrasound regions is a 2-D tissue region"
        )
    if len(tissue) > 1:
        return RegionCalibration(
            problem=f"{len(tissue)} 2-D tissue regions (a multi-image display): "
            "which one to measure is ambiguous"
        )
    region = tissue[0]
    bounds = [_int(region, f"RegionLocation{k}") for k in ("MinX0", "MinY0", "MaxX1", "MaxY1")]
    if any(b is None for b in bounds):
        return RegionCalibration(problem="the tissue region has no complete location")
    x0, y0, x1, y1 = (int(b) for b in bounds)  # type: ignore[arg-type]
    if not (0 <= x0 <= x1 < columns and 0 <= y0 <= y1 < rows):
        return RegionCalibration(
            problem=f"tissue region rows {y0}-{y1}, columns {x0}-{x1} exceed the pixel grid "
            f"of {rows} x {columns} (a calibration of another image size)"
        )
    crop = PixelBox(row0=y0, row1=y1 + 1, col0=x0, col1=x1 + 1)
    ux, uy = _int(region, "PhysicalUnitsXDirection"), _int(region, "PhysicalUnitsYDirection")
    if ux != _UNIT_CM or uy != _UNIT_CM:
        return RegionCalibration(
            crop=crop,
            problem=f"tissue region units are {_units(uy)} (rows) and {_units(ux)} (columns), "
            "not cm",
        )
    dx, dy = _float(_get(region, "PhysicalDeltaX")), _float(_get(region, "PhysicalDeltaY"))
    if dx is None or dy is None or dx <= 0 or dy <= 0:
        return RegionCalibration(
            crop=crop, problem=f"tissue region deltas {dy} x {dx} cm are not positive numbers"
        )
    spacing = (_cm_to_mm(dy), _cm_to_mm(dx))
    if max(spacing) > limits.max_spacing_mm:
        return RegionCalibration(
            crop=crop, problem=f"implausible tissue region pixel size {spacing} mm"
        )
    return RegionCalibration(spacing=spacing, crop=crop)


def _cm_to_mm(cm: float) -> float:
    """``cm`` x 10 as a decimal shift of the value as written (0.075043 cm -> 0.75043 mm)."""
    return float(Decimal(repr(cm)) * 10)


def _frame_time(ds, n_frames: int) -> tuple[float | None, str | None]:
    """Frame time in ms and why a present one was refused."""
    pointer = _tags(_get(ds, "FrameIncrementPointer"))
    vector = _get(ds, "FrameTimeVector")
    lo, hi = FRAME_TIME_MS_RANGE
    if 0x00181065 in pointer and vector is not None:
        values = [_float(v) for v in _values(vector)]
        steps = [s for s in values[1:] if s is not None and s > 0]  # the first one is 0
        if len(values) != n_frames or not steps or len(steps) != len(values) - 1:
            return None, f"FrameTimeVector of {len(values)} values does not fit {n_frames} frames"
        frame_time = sum(steps) / len(steps)
        if max(abs(s - frame_time) for s in steps) > FRAME_TIME_VECTOR_TOLERANCE * frame_time:
            return None, "FrameTimeVector is irregular (more than 10 % from its mean)"
    else:
        raw = _get(ds, "FrameTime")
        if raw is None:
            return None, None
        frame_time = _float(raw)
        if frame_time is None:
            return None, "FrameTime is not a number"
    if not lo <= frame_time <= hi:
        return None, f"frame time {frame_time:g} ms outside {lo:g}-{hi:g} ms"
    return frame_time, None


def _view(ds) -> View | None:
    """Apical view from ViewCodeSequence, else ViewName, else None."""
    for item in _get(ds, "ViewCodeSequence") or []:
        key = (_text(item, "CodingSchemeDesignator") or "", _text(item, "CodeValue") or "")
        if key in VIEW_CODES:
            return VIEW_CODES[key]
    name = _text(ds, "ViewName")
    if name is None:
        return None
    words = re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()
    if _RV_FOCUSED.search(words):
        return None
    found = {view for view, pattern in _VIEW_NAME_PATTERNS.items() if pattern.search(words)}
    return found.pop() if len(found) == 1 else None


def _pixel_element(fh: BinaryIO, ts) -> tuple[bool | None, int | None, int]:
    """Whether the pixel data element starts at ``fh``'s position, its declared value length,
    and how many bytes of the file follow the start of its value.

    An explicit-VR file may write the pixel element the implicit way (tag, then the length;
    pydicom reads it so), which the missing VR letters tell. Returns ``(None, None, 0)`` for a
    deflated file (its dataset is not at file positions).
    """
    if ts.is_deflated:
        return None, None, 0
    start = fh.tell()
    size = os.fstat(fh.fileno()).st_size
    head = fh.read(12)
    if len(head) < 8:
        return False, None, 0
    order = "<" if ts.is_little_endian else ">"
    group, element = struct.unpack(order + "HH", head[:4])
    if (group << 16 | element) != _PIXEL_TAG:
        return False, None, 0
    if ts.is_implicit_VR or not head[4:6].isalpha():
        return True, struct.unpack(order + "I", head[4:8])[0], size - start - 8
    if len(head) < 12:
        return True, None, 0
    return True, struct.unpack(order + "I", head[8:12])[0], size - start - 12


def _pixel_problem(
    ds, ts, rows: int, columns: int, n_frames: int, spp: int, photometric: str, limits
) -> str | None:
    """Why the pixels cannot be decoded, from the header alone, else None."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        return f"unsupported transfer syntax {ts.name} ({ts}): no pixel decoder for it"
    if not decoder.is_available:
        missing = "; ".join(f"{k}: {v}" for k, v in decoder.missing_dependencies.items())
        return f"no decoder installed for transfer syntax {ts.name} ({missing})"
    if rows < 1 or columns < 1:
        return f"pixel grid {rows} x {columns} is empty or missing"
    if n_frames < 1:
        return f"NumberOfFrames {n_frames} is not positive"
    if spp not in (1, 3):
        return f"{spp} samples per pixel (expected 1 or 3)"
    if photometric not in _PHOTOMETRIC:
        return f"unsupported photometric interpretation {photometric!r}"
    if (spp == 3) != (photometric not in {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"}):
        return f"photometric interpretation {photometric} with {spp} samples per pixel"
    if spp == 3 and _int(ds, "PlanarConfiguration") not in (0, 1):
        return "colour pixels without a valid PlanarConfiguration"
    if photometric == "PALETTE COLOR":
        for colour in ("Red", "Green", "Blue"):
            descriptor = _values(_get(ds, f"{colour}PaletteColorLookupTableDescriptor"))
            if len(descriptor) != 3 or descriptor[2] not in (8, 16):
                return f"PALETTE COLOR without a valid {colour.lower()} lookup table descriptor"
    bits = _int(ds, "BitsAllocated")
    if bits not in (8, 16):
        return f"BitsAllocated {bits} (expected 8 or 16)"
    if _int(ds, "PixelRepresentation") not in (None, 0):
        return "signed pixel values (ultrasound pixels are unsigned)"
    stored = _int(ds, "BitsStored") or bits
    if not 1 <= stored <= bits:
        return f"BitsStored {stored} does not fit BitsAllocated {bits}"
    try:
        check_dims(Path("."), [columns, rows, n_frames], 3, limits)
    except InputError as exc:
        return exc.reason
    return None


def _length_problem(
    declared: int | None, remaining: int, expected: int, encapsulated: bool
) -> str | None:
    """A pixel data length that the file cannot hold, or a native one too short."""
    if declared is None or declared == _UNDEFINED_LENGTH:
        return None
    if declared > remaining:
        return (
            f"pixel data is truncated: its element declares {declared} bytes, the file holds "
            f"{remaining}"
        )
    if not encapsulated and declared < expected:
        return f"pixel data is truncated: {declared} bytes, the frames need {expected}"
    return None


def _parse_header(path: Path, fh: BinaryIO, limits: InputLimits):
    """Read the header of an open file (positioned at 0): ``(DicomHeader, transfer syntax)``."""
    pydicom = _pydicom()
    ds = pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=list(_HEADER_KEYWORDS))
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if not isinstance(ts, str):
        raise InputError(path, "no valid transfer syntax in the file meta header")
    has_pixels, declared, remaining = _pixel_element(fh, ts)
    rows, columns = _int(ds, "Rows") or 0, _int(ds, "Columns") or 0
    n_frames = _int(ds, "NumberOfFrames")
    n_frames = 1 if n_frames is None else n_frames
    spp = _int(ds, "SamplesPerPixel") or 1
    bits = _int(ds, "BitsAllocated") or 0
    photometric = _text(ds, "PhotometricInterpretation") or ""
    problem = None
    if has_pixels is False:
        problem = "no pixel data"
    if problem is None:
        problem = _pixel_problem(ds, ts, rows, columns, n_frames, spp, photometric, limits)
    if problem is None:
        expected = rows * columns * n_frames * spp * (bits // 8)
        problem = _length_problem(declared, remaining, expected, ts.is_encapsulated)
    frame_time, frame_time_problem = _frame_time(ds, n_frames)
    header = DicomHeader(
        path=path,
        patient_id=_text(ds, "PatientID"),
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        instance_uid=_text(ds, "SOPInstanceUID"),
        instance_number=_int(ds, "InstanceNumber"),
        modality=_text(ds, "Modality"),
        transfer_syntax=str(ts),
        rows=rows,
        columns=columns,
        n_frames=n_frames,
        samples_per_pixel=spp,
        bits_allocated=bits,
        bits_stored=_int(ds, "BitsStored") or bits,
        photometric=photometric,
        view=_view(ds),
        frame_time_ms=frame_time,
        frame_time_problem=frame_time_problem,
        calibration=region_calibration(ds, rows, columns, limits),
        problem=problem,
    )
    return header, ts


def read_dicom_header(path: Path | str, *, limits: InputLimits = DEFAULT_LIMITS) -> DicomHeader:
    """Read what discovery needs of a DICOM file, without its pixels.

    Args:
        path: the file.
        limits: sizes checked against the header (a file over them gets ``problem``).

    Returns:
        DicomHeader; ``problem`` is set when the pixels cannot be read.

    Raises:
        InputError: the file is missing, empty, over the size limit, not DICOM or its header
            cannot be parsed.
    """
    path = Path(path)
    _check_file(path, limits)
    with _decoding(path), path.open("rb") as fh:
        return _parse_header(path, fh, limits)[0]


def _palette_scale(ds) -> float:
    """Factor that brings the palette's colours to 0-255.

    8-bit entries are used as they are. 16-bit entries hold either an 8-bit colour in their
    high byte (every entry a multiple of 256, as Philips writes them) or the full 16-bit range.
    """
    from pydicom.pixels import apply_color_lut

    descriptor = _values(_get(ds, "RedPaletteColorLookupTableDescriptor"))
    if len(descriptor) != 3 or int(descriptor[2]) == 8:
        return 1.0
    entries = int(descriptor[0]) or 65536
    first = int(descriptor[1])
    dtype = np.uint8 if _int(ds, "BitsAllocated") == 8 else np.uint16
    index = np.arange(first, first + entries).clip(0, np.iinfo(dtype).max).astype(dtype)
    colours = apply_color_lut(index, ds)
    return 1.0 / 256.0 if not np.any(colours % 256) else 255.0 / 65535.0


def _grey_from_rgb(rgb: np.ndarray, scale: float) -> np.ndarray:
    """``(H, W, 3)`` colour -> ``(H, W)`` float32 luma on 0-255, colour pixels masked to 0.

    8-bit frames go through OpenCV on contiguous planes (4x faster than numpy on the
    interleaved channels); ``299 R + 587 G + 114 B`` is exact in float32, so grey stays grey.
    """
    src = np.ascontiguousarray(rgb)
    if src.dtype == np.uint8 and scale == 1.0:
        r, g, b = cv2.split(src)
        spread = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))
        channels = src.astype(np.float32)
    else:
        channels = src.astype(np.float32) * np.float32(scale)
        spread = channels.max(axis=-1) - channels.min(axis=-1)
    grey = cv2.transform(channels, _LUMA_WEIGHTS).reshape(src.shape[:2])
    grey /= np.float32(1000)
    np.putmask(grey, spread > COLOUR_SPREAD, 0.0)
    return grey


def _chroma_spread(cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """RGB channel spread of full-range YCbCr pixels from their centred chroma (float32).

    JPEG/JFIF conversion: R = Y + 1.402 Cr, G = Y - 0.344136 Cb - 0.714136 Cr, B = Y + 1.772
    Cb, so R - G, B - G and R - B, hence the spread, do not depend on Y.
    """
    return np.maximum(
        np.maximum(np.abs(0.344136 * cb + 2.116136 * cr), np.abs(2.116136 * cb + 0.714136 * cr)),
        np.abs(1.402 * cr - 1.772 * cb),
    )


def _grey_from_ybr(ybr: np.ndarray, stored: int, scale: float) -> np.ndarray:
    """``(H, W, 3)`` full-range YCbCr -> ``(H, W)`` float32 luma (Y) on 0-255, colour masked.

    For 8-bit frames the spread is computed only where a chroma channel is more than
    :data:`_NEUTRAL_CHROMA` from its centre: below that no pixel can spread by more than
    :data:`COLOUR_SPREAD` (the largest coefficient sum is 1.402 + 1.772), and a B-mode image is
    almost all neutral.
    """
    src = np.ascontiguousarray(ybr)
    if src.dtype == np.uint8 and scale == 1.0:
        y, cb, cr = cv2.split(src)
        grey = y.astype(np.float32)
        far = _far_from_neutral_table()
        candidates = np.flatnonzero(cv2.bitwise_or(cv2.LUT(cb, far), cv2.LUT(cr, far)))
        if candidates.size:
            spread = _chroma_spread(
                cb.ravel()[candidates].astype(np.float32) - 128,
                cr.ravel()[candidates].astype(np.float32) - 128,
            )
            grey.ravel()[candidates[spread > COLOUR_SPREAD]] = 0.0
        return grey
    channels = src.astype(np.float32) * np.float32(scale)
    centre = np.float32(2 ** (stored - 1) * scale)
    grey = np.ascontiguousarray(channels[..., 0])
    spread = _chroma_spread(channels[..., 1] - centre, channels[..., 2] - centre)
    np.putmask(grey, spread > COLOUR_SPREAD, 0.0)
    return grey


@functools.cache
def _far_from_neutral_table() -> np.ndarray:
    """``(256,)`` uint8: 1 for 8-bit chroma values more than :data:`_NEUTRAL_CHROMA` from 128."""
    return (np.abs(np.arange(256) - 128) > _NEUTRAL_CHROMA).astype(np.uint8)


def _grey_frame(
    frame: np.ndarray, photometric: str, ds, header: DicomHeader, palette_scale: float
) -> np.ndarray:
    """One decoded frame (already cropped) -> ``(H, W)`` float32 grey levels on 0-255."""
    from pydicom.pixels import apply_color_lut

    stored = header.bits_stored
    scale = 1.0 if stored == 8 else 255.0 / (2**stored - 1)
    if photometric == "PALETTE COLOR":
        return _grey_from_rgb(apply_color_lut(frame, ds), palette_scale)
    if photometric in {"YBR_FULL", "YBR_FULL_422"}:  # decoded without pydicom's conversion
        return _grey_from_ybr(frame, stored, scale)
    if photometric == "RGB":
        return _grey_from_rgb(frame, scale)
    if photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        raise InputError(header.path, f"decoder returned photometric interpretation {photometric}")
    grey = frame.astype(np.float32)
    if photometric == "MONOCHROME1":  # 0 is white
        grey = np.float32(2**stored - 1) - grey
    if scale != 1.0:
        grey *= np.float32(scale)
    return grey


def _plugin(decoder, ts) -> str:
    """The one plugin that decodes every frame of a file (pydicom would otherwise fall back
    frame by frame): Pillow (libjpeg-turbo) first for JPEG baseline, 3-4x faster than
    pylibjpeg-libjpeg; pylibjpeg first for the others; "" (pydicom's choice) when neither."""
    order = ("pillow", "pylibjpeg") if ts == _JPEG_BASELINE else ("pylibjpeg", "pillow")
    return next((name for name in order if name in decoder.available_plugins), "")


def _decode_frames(ds, ts, header: DicomHeader) -> np.ndarray:
    """``(T, H, W)`` float32 grey frames, cropped to the tissue region, masked."""
    from pydicom.pixels import get_decoder

    if "PixelData" not in ds:  # pydicom drops encapsulated data that ends before its delimiter
        raise InputError(header.path, "pixel data is truncated (the file ends inside it)")
    box = header.calibration.crop or PixelBox(0, header.rows, 0, header.columns)
    frames = np.empty((header.n_frames, *box.shape), dtype=np.float32)
    decoder = get_decoder(ts)
    plugin = _plugin(decoder, ts)
    count = 0
    try:
        palette_scale = _palette_scale(ds) if header.photometric == "PALETTE COLOR" else 1.0
        for frame, meta in decoder.iter_array(ds, decoding_plugin=plugin, raw=True):
            if count == header.n_frames:
                break
            cropped = frame[box.row0 : box.row1, box.col0 : box.col1]
            photometric = str(meta.get("photometric_interpretation", header.photometric))
            frames[count] = _grey_frame(cropped, photometric, ds, header, palette_scale)
            count += 1
    except AttributeError as exc:  # pydicom's "Missing required element", a lookup table absent
        raise InputError(header.path, f"not a readable DICOM file ({exc})") from None
    if count != header.n_frames:
        raise InputError(
            header.path, f"pixel data holds {count} frames, the header says {header.n_frames}"
        )
    return frames


def read_dicom_clip(
    path: Path | str, *, view: View | None = None, limits: InputLimits = DEFAULT_LIMITS
) -> Clip:
    """Read a DICOM ultrasound file (single- or multi-frame) as a clip of grey frames.

    Args:
        path: the file.
        view: the view when the caller knows it (a manifest); None takes the view tags.
        limits: sizes checked against the header before any pixel is decoded.

    Returns:
        Clip with ``frames`` ``(T, H, W)`` float32 on 0-255, cropped to the tissue region when
        it fits the grid, colour overlays masked to 0; ``spacing`` ``(row_mm, col_mm)`` from the
        tissue region (``SpacingSource.DICOM_REGION``) or None with ``spacing_problem``;
        ``frame_time_ms``; ``view``; ``input_format`` DICOM.

    Raises:
        InputError: the file is missing, not DICOM, has no or truncated pixel data, an
            unsupported transfer syntax or photometric interpretation, sizes over the limits,
            or frames that do not decode.
    """
    path = Path(path)
    _check_file(path, limits)
    with _decoding(path), path.open("rb") as fh:
        header, ts = _parse_header(path, fh, limits)
        if header.problem is not None:
            raise InputError(path, header.problem)
        fh.seek(0)
        ds = _pydicom().dcmread(fh, specific_tags=[*_HEADER_KEYWORDS, *_PIXEL_KEYWORDS])
        frames = _decode_frames(ds, ts, header)
    return Clip(
        frames=frames,
        spacing=header.spacing,
        spacing_source=header.spacing_source,
        spacing_problem=header.spacing_problem,
        frame_time_ms=header.frame_time_ms,
        view=view if view is not None else header.view,
        path=path,
        input_format=InputFormat.DICOM,
    )


def group_dicom(headers: Iterable[DicomHeader]) -> dict[str, dict[str, list[DicomHeader]]]:
    """Group DICOM headers into patients (PatientID) and their studies (StudyInstanceUID).

    Pure: no file is read. Headers without a PatientID cannot be grouped and are left out (the
    caller reports them); a header without a StudyInstanceUID goes under the study ``""``.

    Args:
        headers: records from :func:`read_dicom_header`, in any order.

    Returns:
        ``{patient_id: {study_uid: [headers]}}``, patients and studies sorted, headers ordered
        by series UID, instance number and path.
    """
    groups: dict[str, dict[str, list[DicomHeader]]] = {}
    for header in headers:
        if header.patient_id is None:
            continue
        study = header.study_uid or ""
        groups.setdefault(header.patient_id, {}).setdefault(study, []).append(header)

    def order(h: DicomHeader) -> tuple[str, int, str]:
        number = h.instance_number if h.instance_number is not None else -1
        return h.series_uid or "", number, os.fspath(h.path)

    return {
        pid: {study: sorted(groups[pid][study], key=order) for study in sorted(groups[pid])}
        for pid in sorted(groups)
    }
