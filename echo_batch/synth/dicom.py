"""Synthetic DICOM cohorts: the synthetic loops as a hospital archive exports them, with truth.

Every patient is one study of two multi-frame ultrasound files (2CH and 4CH, one series each)
in one flat folder, so that patients can only be told apart by PatientID. A file holds the
patient's full loop of that view (:mod:`echo_batch.synth.loops`; patients whose loops the
loop sampler made half sequences get full loops on the same timing, drawn from their own random
stream) as a scanner screen: the rendered sector inside a larger RGB grid, with a blue banner
and grey "text" above it, an ECG trace with a moving cursor in green and yellow below it, and
coloured markers (orientation dot, depth ticks) inside the tissue region but at least
:data:`OVERLAY_MARGIN_PX` pixels outside the sector. The Sequence of Ultrasound Regions holds
one 2-D tissue region (cm) on the rendered sector with its true pixel size, and an ECG region;
FrameTime and FrameIncrementPointer give the loop's frame time; ViewCodeSequence and ViewName
the view (unless ``view_tags=False``). PatientName, PatientBirthDate and AccessionNumber carry
made-up identities (:func:`synthetic_identity`), which no output of a run may show.

Encodings (:class:`DicomEncoding`): JPEG baseline (process 1, YCbCr 4:2:2, quality 95 by
default, one JPEG per frame encapsulated with a basic offset table) or uncompressed RGB
(explicit VR little endian). Read back with :func:`echo_batch.io.dicom.read_dicom_clip`, an
uncompressed file gives exactly the rendered frames; a JPEG file gives them within the JPEG
error.

Layout: ``OUT/dicom/IM_XXXXXX.dcm`` (numbered in a seeded random order of all files),
``OUT/truth.csv`` (one row per patient: the columns of :class:`PatientTruth` and the loop
columns, as ``synth_cohort(loops=True)`` writes them), ``OUT/truth_frames.csv`` (one row per
frame) and ``OUT/truth_dicom.csv`` (one row per file: :data:`DICOM_TRUTH_COLUMNS`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path

import cv2
import numpy as np

from echo_batch import atomic
from echo_batch.domain import VIEWS, LoopKind, View
from echo_batch.io.writers import real_folder, write_text
from echo_batch.synth.cohort import _csv_text, _loop_truth, _truth_csv
from echo_batch.synth.loop_truth import FRAME_COLUMNS, frame_rows, loop_columns
from echo_batch.synth.loops import MAX_BEATS, PatientLoops, ViewLoop, full_loop, sample_loops
from echo_batch.synth.params import SECTOR_HALF_ANGLE_DEG, PatientParams, PatientTruth
from echo_batch.synth.render import render_phases
from echo_batch.synth.sampling import plan_cohort

logger = logging.getLogger(__name__)

DICOM_STREAM = 102
"""Third key of the random stream of the DICOM-only draws (the loop sampler uses 101)."""
OVERLAY_MARGIN_PX = 16
"""Smallest distance of an in-region overlay pixel from the sector: two JPEG blocks, so that no
4:2:2 minimum coded unit holds both (colour never bleeds into the sector)."""
MARGINS_PX = (48, 24, 64, 40)
"""Screen around the tissue region: rows above (banner), columns left, rows below (ECG),
columns right."""
JPEG_QUALITY = 95

DICOM_TRUTH_COLUMNS = (
    "file",
    "patient_id",
    "view",
    "encoding",
    "n_frames",
    "rows",
    "columns",
    "region_row0",
    "region_row1",
    "region_col0",
    "region_col1",
    "spacing_row_mm",
    "spacing_col_mm",
    "frame_time_ms",
)
"""Columns of ``truth_dicom.csv``: the file (relative to OUT), its pixel grid, the tissue region
(half-open rows ``row0:row1``, columns ``col0:col1``), its true pixel size and the FrameTime
written (as the DICOM decimal string reads back)."""

_ULTRASOUND_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
_VIEW_CODES = {  # SNOMED CT, DICOM CID 12226
    View.A2C: ("399232001", "Apical two chamber"),
    View.A4C: ("399214001", "Apical four chamber"),
}
_BANNER_RGB = (16, 40, 96)
_TEXT_GREY = 220
_ECG_RGB = (0, 230, 0)
_CURSOR_RGB = (255, 230, 0)
_MARKER_RGB = (255, 140, 0)
_TICK_RGB = (0, 200, 255)
_FAMILY = ("Quillfeather", "Marrowind", "Oakenshaw", "Vexley", "Brindlecombe", "Thistlewood")
_GIVEN = ("Ondine", "Peregrin", "Isolde", "Caspian", "Wilhelmina", "Thaddeus")


class DicomEncoding(StrEnum):
    """Pixel encoding of a synthetic DICOM file."""

    JPEG = "jpeg"  # JPEG baseline (process 1), YBR_FULL_422
    NONE = "none"  # uncompressed RGB, explicit VR little endian
    MIXED = "mixed"  # per patient: JPEG for odd patient numbers, uncompressed for even ones


@dataclass(frozen=True)
class DicomFileTruth:
    """What one synthetic DICOM file holds (a row of ``truth_dicom.csv``).

    Attributes:
        file: path relative to the cohort root.
        patient_id: PatientID.
        view: the view.
        encoding: JPEG or NONE.
        n_frames: frames.
        rows: Rows of the pixel grid.
        columns: Columns of the pixel grid.
        region_row0: first row of the tissue region.
        region_row1: one past its last row.
        region_col0: first column of the tissue region.
        region_col1: one past its last column.
        spacing_row_mm: true pixel height, mm.
        spacing_col_mm: true pixel width, mm.
        frame_time_ms: FrameTime as written (the decimal string's value), ms.
    """

    file: str
    patient_id: str
    view: str
    encoding: str
    n_frames: int
    rows: int
    columns: int
    region_row0: int
    region_row1: int
    region_col0: int
    region_col1: int
    spacing_row_mm: float
    spacing_col_mm: float
    frame_time_ms: float


def synthetic_identity(params: PatientParams) -> tuple[str, str]:
    """The made-up PatientName and PatientBirthDate written into a patient's files.

    Letters only in the name (no digit of the patient id), a birth date between 1930 and 2005.

    Returns:
        ``(name, birth_date)``: ``"Family^Given"`` and ``"YYYYMMDD"``.
    """
    rng = np.random.default_rng((params.seed, params.index, DICOM_STREAM, 1))
    n, tail = params.index, ""
    while n:
        n, digit = divmod(n, 26)
        tail += "abcdefghijklmnopqrstuvwxyz"[digit]
    family = _FAMILY[int(rng.integers(len(_FAMILY)))] + tail
    given = _GIVEN[int(rng.integers(len(_GIVEN)))]
    year, month, day = rng.integers(1930, 2006), rng.integers(1, 13), rng.integers(1, 29)
    birth = f"{int(year)}{int(month):02d}{int(day):02d}"
    return f"{family}^{given}", birth


def full_loops(params: PatientParams) -> PatientLoops:
    """The patient's loops as full loops (archives hold whole beats, not half sequences).

    A view the loop sampler drew as a full loop is kept as drawn; a half sequence becomes a full
    loop on the same frame rate and cycle timing, with its beats, start and end drawn from the
    patient's DICOM stream (drawn for every view, so the stream layout is fixed).

    Returns:
        PatientLoops of two full loops, ``has_stills`` False (an archive has no ED/ES stills).
    """
    drawn = sample_loops(params)
    rng = np.random.default_rng((params.seed, params.index, DICOM_STREAM))
    views: list[ViewLoop] = []
    for loop in drawn.views:
        n_beats = int(rng.integers(1, MAX_BEATS + 1))
        start, end = float(rng.random()), float(rng.random())
        if loop.kind == LoopKind.HALF:
            loop = full_loop(loop.view, int(loop.frame_rate_hz), loop.timing, n_beats, start, end)
        views.append(loop)
    return PatientLoops(has_stills=False, views=(views[0], views[1]))


def _sector_distance(params: PatientParams, view: View, grid: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` float32 distance in pixels of every pixel from the imaging sector (0 inside).

    The sector of :mod:`echo_batch.synth.render`: apex at the top centre, radius the view's
    depth, half opening :data:`SECTOR_HALF_ANGLE_DEG`.
    """
    setup = params.setup(view)
    row_mm, col_mm = setup.spacing
    height, width = grid
    ys = (np.arange(height, dtype=np.float64) * row_mm)[:, None]
    xs = ((np.arange(width, dtype=np.float64) - (width - 1) / 2.0) * col_mm)[None, :]
    radius = np.sqrt(ys * ys + xs * xs)
    cos_limit = math.cos(math.radians(SECTOR_HALF_ANGLE_DEG))
    inside = (radius <= setup.depth_mm) & (ys >= radius * cos_limit)
    return cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 5)


def _region_overlay(params: PatientParams, view: View, images: np.ndarray) -> np.ndarray:
    """``(H, W, 4)`` uint8 RGBA markers for the tissue region, only far outside the sector.

    An orange orientation dot near the top-left corner and cyan depth ticks every centimetre
    along the right edge, kept where the sector is at least :data:`OVERLAY_MARGIN_PX` away and
    every rendered frame is 0.
    """
    height, width = images.shape[1:]
    row_mm = params.setup(view).spacing[0]
    layer = np.zeros((height, width, 4), dtype=np.uint8)
    cv2.circle(layer, (10, 10), 5, (*_MARKER_RGB, 255), thickness=-1)
    for depth_cm in range(1, int(height * row_mm / 10.0) + 1):
        row = round(depth_cm * 10.0 / row_mm)
        cv2.line(layer, (width - 9, row), (width - 2, row), (*_TICK_RGB, 255), thickness=2)
    allowed = (_sector_distance(params, view, (height, width)) >= OVERLAY_MARGIN_PX) & (
        images.max(axis=0) == 0
    )
    layer[~allowed] = 0
    return layer


def _ecg_trace(loop: ViewLoop, width: int, height: int) -> np.ndarray:
    """``(width, 2)`` int32 points of an ECG-like trace: an R wave at every ED of the loop."""
    t = np.arange(width, dtype=np.float64) * loop.n_frames / width  # frame time of each column
    trace = np.zeros(width)
    for ed in loop.ed_frames:
        trace += np.exp(-0.5 * ((t - ed) / 0.4) ** 2) - 0.25 * np.exp(
            -0.5 * ((t - ed - 1) / 0.6) ** 2
        )
    rows = height * 0.55 - trace * height * 0.35
    return np.stack([np.arange(width), rows], axis=1).round().astype(np.int32)


@dataclass(frozen=True)
class ScannerScreen:
    """Rendered frames on a scanner screen, drawn one frame at a time (a loop's RGB screens
    would take 3 bytes per pixel and frame at once).

    Attributes:
        images: ``(T, H, W)`` uint8 rendered frames.
        base: ``(rows, columns, 3)`` uint8 RGB screen without the frames: banner, text, ECG.
        overlay: ``(H, W, 4)`` uint8 RGBA markers drawn over every frame in the tissue region.
        region: the tissue region ``(row0, row1, col0, col1)``, half-open, holding the frames.
        cursor_rows: rows ``(first, last)`` of the ECG cursor.
    """

    images: np.ndarray
    base: np.ndarray
    overlay: np.ndarray
    region: tuple[int, int, int, int]
    cursor_rows: tuple[int, int]

    @property
    def n_frames(self) -> int:
        """Frames ``T``."""
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the screen."""
        return int(self.base.shape[0]), int(self.base.shape[1])

    def frame(self, index: int) -> np.ndarray:
        """``(rows, columns, 3)`` uint8 RGB screen of frame ``index``, its ECG cursor moved."""
        r0, r1, c0, c1 = self.region
        screen = self.base.copy()
        screen[r0:r1, c0:c1] = self.images[index][..., None]
        marked = self.overlay[..., 3] > 0
        screen[r0:r1, c0:c1][marked] = self.overlay[marked, :3]
        x = round((index + 0.5) * self.shape[1] / self.n_frames)
        screen[self.cursor_rows[0] : self.cursor_rows[1], max(x - 1, 0) : x + 1] = _CURSOR_RGB
        return screen


def scanner_screen(
    params: PatientParams, view: View, loop: ViewLoop, images: np.ndarray
) -> ScannerScreen:
    """Place rendered frames on a scanner screen with text, ECG and coloured markers.

    Args:
        params: the patient.
        view: the view.
        loop: its loop (the ECG marks its ED frames).
        images: ``(T, H, W)`` uint8 rendered frames.

    Returns:
        ScannerScreen of ``(H + top + bottom, W + left + right)`` pixels (:data:`MARGINS_PX`),
        the frames in its tissue region.
    """
    height, width = images.shape[1:]
    top, left, bottom, right = MARGINS_PX
    rows, cols = height + top + bottom, width + left + right
    base = np.zeros((rows, cols, 3), dtype=np.uint8)
    base[:top] = _BANNER_RGB
    for k, x in enumerate(range(8, cols - 40, 56)):  # white "text" on the banner
        cv2.rectangle(base, (x, 12 + 6 * (k % 2)), (x + 36, 22 + 6 * (k % 2)), (255, 255, 255), -1)
    for y in range(top + 8, min(rows - bottom, top + 120), 18):  # grey "text" on the left
        cv2.rectangle(base, (3, y), (left - 4, y + 8), (_TEXT_GREY,) * 3, -1)
    trace = _ecg_trace(loop, cols, bottom) + np.array([0, rows - bottom], dtype=np.int32)
    cv2.polylines(base, [trace], isClosed=False, color=_ECG_RGB, thickness=2)
    return ScannerScreen(
        images=images,
        base=base,
        overlay=_region_overlay(params, view, images),
        region=(top, top + height, left, left + width),
        cursor_rows=(rows - bottom + 4, rows - 4),
    )


def _ds(value: float):
    """A DICOM decimal string of ``value`` (at most 16 characters)."""
    from pydicom.valuerep import DSfloat

    return DSfloat(value, auto_format=True)


def _mm_to_cm(mm: float) -> float:
    """``mm`` / 10 as a decimal shift (1.89379 mm -> 0.189379 cm, which reads back exactly)."""
    return float(Decimal(repr(float(mm))) / 10)


def _region_items(
    region: tuple[int, int, int, int], spacing: tuple[float, float], grid: tuple[int, int]
) -> list:
    """Sequence of Ultrasound Regions items: the tissue region and an ECG strip below it."""
    from pydicom.dataset import Dataset

    r0, r1, c0, c1 = region
    tissue = Dataset()
    tissue.RegionSpatialFormat = 1  # 2D
    tissue.RegionDataType = 1  # tissue
    tissue.RegionFlags = 0
    tissue.RegionLocationMinX0, tissue.RegionLocationMinY0 = c0, r0
    tissue.RegionLocationMaxX1, tissue.RegionLocationMaxY1 = c1 - 1, r1 - 1
    tissue.PhysicalUnitsXDirection = 3  # cm
    tissue.PhysicalUnitsYDirection = 3
    tissue.PhysicalDeltaX = _mm_to_cm(spacing[1])
    tissue.PhysicalDeltaY = _mm_to_cm(spacing[0])
    ecg = Dataset()
    ecg.RegionSpatialFormat = 4  # waveform
    ecg.RegionDataType = 10  # ECG trace
    ecg.RegionFlags = 0
    ecg.RegionLocationMinX0, ecg.RegionLocationMinY0 = 0, r1 + 8
    ecg.RegionLocationMaxX1, ecg.RegionLocationMaxY1 = grid[1] - 1, grid[0] - 1
    ecg.PhysicalUnitsXDirection = 4  # seconds
    ecg.PhysicalUnitsYDirection = 0
    ecg.PhysicalDeltaX = 0.004
    ecg.PhysicalDeltaY = 0.0
    return [tissue, ecg]


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """One RGB frame as a baseline JPEG with YCbCr 4:2:2 chroma."""
    ok, buffer = cv2.imencode(
        ".jpg",
        np.ascontiguousarray(frame[..., ::-1]),  # OpenCV encodes BGR
        [
            cv2.IMWRITE_JPEG_QUALITY,
            quality,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
        ],
    )
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG frame")
    return buffer.tobytes()


def dicom_dataset(
    params: PatientParams,
    view: View,
    loop: ViewLoop,
    screen: ScannerScreen,
    encoding: DicomEncoding,
    *,
    jpeg_quality: int = JPEG_QUALITY,
    view_tags: bool = True,
):
    """The DICOM dataset of one view of a patient (``save_as(..., enforce_file_format=True)``).

    Args:
        params: the patient (ids, identity, spacing of the view).
        view: the view.
        loop: its loop (frame rate, heart rate).
        screen: the frames on their screen (:func:`scanner_screen`).
        encoding: JPEG or NONE.
        jpeg_quality: JPEG quality (1-100).
        view_tags: write ViewCodeSequence and ViewName.

    Returns:
        A ``pydicom.dataset.Dataset`` with its file meta information.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

    if encoding not in (DicomEncoding.JPEG, DicomEncoding.NONE):
        raise ValueError(f"a file is JPEG or uncompressed, not {encoding.value}")
    n, (rows, cols) = screen.n_frames, screen.shape
    study = _uid(params.seed, params.patient_id, "study")
    instance = _uid(params.seed, params.patient_id, view.value, "instance")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _ULTRASOUND_MULTIFRAME
    meta.MediaStorageSOPInstanceUID = instance
    meta.TransferSyntaxUID = (
        JPEGBaseline8Bit if encoding == DicomEncoding.JPEG else ExplicitVRLittleEndian
    )
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = _ULTRASOUND_MULTIFRAME, instance
    ds.Modality = "US"
    name, birth = synthetic_identity(params)
    ds.PatientName, ds.PatientBirthDate = name, birth
    ds.PatientID = params.patient_id
    ds.PatientSex = params.sex
    ds.AccessionNumber = f"A{_uid(params.seed, params.patient_id, 'accession')[-10:]}"
    ds.InstitutionName = "Synthetic Heart Hospital"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = _uid(params.seed, params.patient_id, view.value, "series")
    ds.SeriesNumber = 1 + VIEWS.index(view)
    ds.InstanceNumber = 1
    ds.StudyDescription = "Echocardiography"
    if view_tags:
        code = Dataset()
        code.CodeValue, code.CodeMeaning = _VIEW_CODES[view]
        code.CodingSchemeDesignator = "SCT"
        ds.ViewCodeSequence = [code]
        ds.ViewName = "A2C" if view == View.A2C else "A4C"
    ds.FrameTime = _ds(loop.frame_time_ms)
    ds.FrameIncrementPointer = 0x00181063
    ds.CineRate = round(loop.frame_rate_hz)
    ds.RecommendedDisplayFrameRate = round(loop.frame_rate_hz)
    if loop.heart_rate_bpm is not None:
        ds.HeartRate = round(loop.heart_rate_bpm)
    spacing = params.setup(view).spacing
    ds.SequenceOfUltrasoundRegions = _region_items(screen.region, spacing, (rows, cols))
    if encoding == DicomEncoding.NONE:
        pixels = np.empty((n, rows, cols, 3), dtype=np.uint8)
        for index in range(n):
            pixels[index] = screen.frame(index)
        ds.set_pixel_data(pixels, "RGB", 8, generate_instance_uid=False)
        del pixels  # the dataset holds the bytes
    else:
        ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, n
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = (
            3,
            "YBR_FULL_422",
            0,
        )
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        frames = [_encode_jpeg(screen.frame(index), jpeg_quality) for index in range(n)]
        ds.PixelData = encapsulate(frames, has_bot=True)
        ds["PixelData"].VR = "OB"
    return ds


def write_dicom_patient(
    folder: Path,
    params: PatientParams,
    loops: PatientLoops,
    names: tuple[str, str],
    encoding: DicomEncoding,
    *,
    jpeg_quality: int = JPEG_QUALITY,
    view_tags: bool = True,
) -> list[DicomFileTruth]:
    """Render and write the two DICOM files of one patient into ``folder``.

    Args:
        folder: the flat folder of the cohort's files (exists).
        params: the patient.
        loops: its full loops (:func:`full_loops`).
        names: file names of the 2CH and 4CH files.
        encoding: JPEG or NONE.
        jpeg_quality: JPEG quality.
        view_tags: write the view tags.

    Returns:
        One truth row per file (``file`` relative to ``folder``'s parent).
    """
    rows = []
    for view, name in zip(VIEWS, names, strict=True):
        loop = loops.loop(view)
        _, images = render_phases(params, view, loop.phases)
        screen = scanner_screen(params, view, loop, images)
        ds = dicom_dataset(
            params, view, loop, screen, encoding, jpeg_quality=jpeg_quality, view_tags=view_tags
        )
        atomic.write_file(folder / name, lambda fh, ds=ds: ds.save_as(fh, enforce_file_format=True))
        del ds
        spacing = params.setup(view).spacing
        rows.append(
            DicomFileTruth(
                file=f"{folder.name}/{name}",
                patient_id=params.patient_id,
                view=view.value,
                encoding=encoding.value,
                n_frames=screen.n_frames,
                rows=screen.shape[0],
                columns=screen.shape[1],
                region_row0=screen.region[0],
                region_row1=screen.region[1],
                region_col0=screen.region[2],
                region_col1=screen.region[3],
                spacing_row_mm=float(spacing[0]),
                spacing_col_mm=float(spacing[1]),
                frame_time_ms=float(str(_ds(loop.frame_time_ms))),
            )
        )
    return rows


def synth_dicom_cohort(
    out: Path | str,
    n_patients: int,
    seed: int = 0,
    *,
    max_side: int | None = None,
    encoding: DicomEncoding = DicomEncoding.MIXED,
    jpeg_quality: int = JPEG_QUALITY,
    view_tags: bool = True,
) -> Path:
    """Write a synthetic DICOM cohort (one flat folder) with its truth tables.

    The patients, their shapes, probes and EF truth are those of :func:`synth_cohort` with the
    same seed and ``max_side``; their loops are full loops (:func:`full_loops`).

    Args:
        out: output root (created when missing; files of the same names are replaced).
        n_patients: number of patients.
        seed: cohort seed (the same seed writes the same files).
        max_side: render every view on a ``(max_side, max_side)`` grid; None keeps realistic
            grids (up to about 1,400 pixels a side: large uncompressed files).
        encoding: JPEG, NONE, or MIXED (odd patient numbers JPEG, even ones uncompressed).
        jpeg_quality: JPEG quality (1-100).
        view_tags: write ViewCodeSequence and ViewName (False: views unknown to the reader).

    Returns:
        ``out``; the files are under ``out/dicom``.

    Raises:
        ValueError: fewer than one patient, or a JPEG quality outside 1-100.
    """
    if n_patients < 1:
        raise ValueError("n_patients must be at least 1")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"JPEG quality {jpeg_quality} outside 1-100")
    encoding = DicomEncoding(encoding)
    out = Path(out)
    folder = real_folder(out, "dicom")
    order = np.random.default_rng((seed, DICOM_STREAM)).permutation(2 * n_patients)
    start = time.perf_counter()
    truths: list[PatientTruth] = []
    extra: list[dict[str, object]] = []
    frames = [",".join(FRAME_COLUMNS) + "\n"]
    files = [",".join(DICOM_TRUTH_COLUMNS) + "\n"]
    for number, (params, truth) in enumerate(plan_cohort(n_patients, seed, max_side=max_side), 1):
        loops = full_loops(params)
        chosen = encoding
        if encoding == DicomEncoding.MIXED:
            chosen = DicomEncoding.JPEG if params.index % 2 else DicomEncoding.NONE
        names = tuple(f"IM_{int(order[2 * (number - 1) + k]) + 1:06d}.dcm" for k in range(2))
        rows = write_dicom_patient(
            folder, params, loops, names, chosen, jpeg_quality=jpeg_quality, view_tags=view_tags
        )
        truths.append(_loop_truth(truth, loops))
        extra.append(loop_columns(loops))
        frames.append(_csv_text(frame_rows(params, loops), list(FRAME_COLUMNS), header=False))
        files.append(_csv_text([vars(r) for r in rows], list(DICOM_TRUTH_COLUMNS), header=False))
        if number % 100 == 0:
            logger.info("synth dicom: %d/%d patients", number, n_patients)
    write_text(out / "truth.csv", _truth_csv(truths, extra))
    write_text(out / "truth_frames.csv", "".join(frames))
    write_text(out / "truth_dicom.csv", "".join(files))
    elapsed = time.perf_counter() - start
    logger.info(
        "synth dicom: %d patients (%s, seed %d) in %.1f s under %s",
        n_patients,
        encoding.value,
        seed,
        elapsed,
        out,
    )
    return out
