"""Write grey frames as an ultrasound DICOM file, calibrated by a tissue region.

Used to convert CAMUS images to DICOM for oracle tests and benchmarks (the same pixels and
spacing through the DICOM path must give the NIfTI path's numbers), not to publish data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from echo_batch.atomic import write_bytes
from echo_batch.domain import View

_ULTRASOUND_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
_VIEW_CODES = {
    View.A2C: ("399232001", "Apical two chamber"),
    View.A4C: ("399214001", "Apical four chamber"),
}


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) as close to ``value`` as it can be."""
    for digits in range(15, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"{value} cannot be written as a decimal string")


def write_ultrasound_dicom(
    path: Path | str,
    frames: np.ndarray,
    spacing_mm: tuple[float, float],
    *,
    patient_id: str,
    view: View,
    frame_time_ms: float = 40.0,
    jpeg_quality: int | None = None,
    identity: tuple[str, str] | None = None,
    study_uid: str = "1.2.826.0.1.3680043.10.999.1",
    region: bool = True,
) -> Path:
    """Write ``(T, H, W)`` uint8 grey frames as a multi-frame ultrasound DICOM file.

    The whole grid is one 2-D tissue region (RegionSpatialFormat 1, RegionDataType 1) whose
    PhysicalDeltaX/Y are the spacing in cm, so a reader that trusts the region gets the spacing
    back (to the 16 characters of a decimal string).

    Args:
        path: file to write (replaced atomically).
        frames: ``(T, H, W)`` uint8 grey levels.
        spacing_mm: ``(row_mm, col_mm)``.
        patient_id: PatientID.
        view: written as ViewCodeSequence and ViewName.
        frame_time_ms: FrameTime.
        jpeg_quality: None for uncompressed MONOCHROME2, else JPEG baseline at this quality.
        identity: ``(PatientName, PatientBirthDate)`` to write (tests that they never leak).
        study_uid: StudyInstanceUID.
        region: write the calibrated tissue region (False: an uncalibrated file).

    Returns:
        ``path``.
    """
    import io

    import cv2
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W) uint8, got {frames.shape} {frames.dtype}")
    n, rows, cols = frames.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _ULTRASOUND_MULTIFRAME
    meta.MediaStorageSOPInstanceUID = instance = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if jpeg_quality is None else JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = _ULTRASOUND_MULTIFRAME, instance
    ds.Modality = "US"
    ds.PatientID = patient_id
    if identity is not None:
        ds.PatientName, ds.PatientBirthDate = identity
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    code = Dataset()
    code.CodeValue, code.CodeMeaning = _VIEW_CODES[view]
    code.CodingSchemeDesignator = "SCT"
    ds.ViewCodeSequence = [code]
    ds.ViewName = "A2C" if view == View.A2C else "A4C"
    ds.FrameTime = _ds(frame_time_ms)
    ds.FrameIncrementPointer = 0x00181063
    item = Dataset()
    item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = 1, 1, 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = 0, 0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = cols - 1, rows - 1
    item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3  # cm
    item.PhysicalDeltaX = float(_ds(spacing_mm[1] / 10.0))
    item.PhysicalDeltaY = float(_ds(spacing_mm[0] / 10.0))
    if region:
        ds.SequenceOfUltrasoundRegions = [item]
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, n
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if jpeg_quality is None:
        ds.PixelData = frames.tobytes()
    else:
        encoded = []
        for frame in frames:
            ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
            if not ok:
                raise ValueError("JPEG encoding failed")
            encoded.append(data.tobytes())
        ds.PixelData = encapsulate(encoded, has_bot=True)
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    path = Path(path)
    write_bytes(path, buffer.getvalue())
    return path


def camus_stills_to_dicom(
    patient_folder: Path | str,
    out: Path | str,
    *,
    jpeg_quality: int | None = None,
    identity: tuple[str, str] | None = None,
) -> list[dict[str, object]]:
    """Convert a CAMUS 2023 patient's ED and ES stills to one 2-frame DICOM file per view.

    Args:
        patient_folder: ``.../patientXXXX`` holding ``*_{2CH,4CH}_{ED,ES}.nii.gz``.
        out: folder for ``<patient>_<view>.dcm``.
        jpeg_quality: None for uncompressed, else JPEG baseline at this quality.
        identity: ``(PatientName, PatientBirthDate)`` written into every file.

    Returns:
        Manifest rows (``patient_id, view, path, ed_frame, es_frame``), ``path`` relative to
        ``out``, ED at frame 0 and ES at frame 1.
    """
    from echo_batch.domain import VIEWS
    from echo_batch.io.image import read_image

    folder, out = Path(patient_folder), Path(out)
    pid = folder.name
    rows: list[dict[str, object]] = []
    for view in VIEWS:
        stills = [read_image(folder / f"{pid}_{view.value}_{i}.nii.gz") for i in ("ED", "ES")]
        pixels = np.stack([np.clip(np.rint(s.array), 0, 255).astype(np.uint8) for s in stills])
        name = f"{pid}_{view.value}.dcm"
        write_ultrasound_dicom(
            out / name,
            pixels,
            stills[0].spacing,
            patient_id=pid,
            view=view,
            jpeg_quality=jpeg_quality,
            identity=identity,
        )
        rows.append(
            {"patient_id": pid, "view": view.value, "path": name, "ed_frame": 0, "es_frame": 1}
        )
    return rows


def camus_loops_to_dicom(
    patient_folder: Path | str,
    out: Path | str,
    *,
    jpeg_quality: int | None = None,
    identity: tuple[str, str] | None = None,
) -> list[dict[str, object]]:
    """Convert a CAMUS-layout patient's loops to one multi-frame DICOM file per view.

    Each view's ``*_{view}_sequence.nii.gz`` or ``*_{view}_half_sequence.nii.gz`` becomes
    ``<out>/dicom/<name>.dcm`` (the NIfTI name with ``.dcm``, so a half sequence stays one), its
    spacing in a tissue region covering the whole grid and the frame time from ``Info_<view>.cfg``
    (``FrameRate``; 40 ms without one); its ``_gt`` label loop, when there is one, is hard-linked
    (copied where links fail) to ``<out>/gt/``, for a manifest's ``gt_path``.

    Args:
        patient_folder: ``.../patientXXXX`` of a loop cohort (``echo-batch synth --loops``).
        out: cohort folder (the manifest's).
        jpeg_quality: None for uncompressed, else JPEG baseline at this quality.
        identity: ``(PatientName, PatientBirthDate)`` written into every file.

    Returns:
        Manifest rows (``patient_id, view, path, gt_path, n_frames``), paths relative to
        ``out``, spacing columns left out (the DICOM region gives the spacing); ``gt_path`` is
        empty without a label loop.
    """
    import os

    from echo_batch.domain import VIEWS
    from echo_batch.io.cfg import parse_cfg
    from echo_batch.io.image import read_sequence

    folder, out = Path(patient_folder), Path(out)
    pid = folder.name
    (out / "dicom").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for view in VIEWS:
        loops = [
            p
            for p in sorted(folder.glob(f"{pid}_{view.value}_*sequence.nii.gz"))
            if not p.name.endswith("_gt.nii.gz")
        ]
        if not loops:
            continue
        source = loops[0]
        loop = read_sequence(source)
        pixels = np.clip(np.rint(loop.array), 0, 255).astype(np.uint8)
        cfg_path = folder / f"Info_{view.value}.cfg"
        rate = parse_cfg(cfg_path).frame_rate_hz if cfg_path.is_file() else None
        name = source.name.removesuffix(".nii.gz")
        write_ultrasound_dicom(
            out / "dicom" / f"{name}.dcm",
            pixels,
            loop.geometry.spacing,
            patient_id=pid,
            view=view,
            frame_time_ms=1000.0 / rate if rate else 40.0,
            jpeg_quality=jpeg_quality,
            identity=identity,
        )
        gt_source = source.with_name(f"{name}_gt.nii.gz")
        gt_path = ""
        if gt_source.is_file():
            target = out / "gt" / gt_source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            try:
                os.link(gt_source, target)
            except OSError:
                target.write_bytes(gt_source.read_bytes())
            gt_path = f"gt/{gt_source.name}"
        rows.append(
            {
                "patient_id": pid,
                "view": view.value,
                "path": f"dicom/{name}.dcm",
                "gt_path": gt_path,
                "n_frames": int(pixels.shape[0]),
            }
        )
    return rows
