"""Discovery from a manifest CSV: any folder layout, any supported file format.

A manifest lists one loop (or still) file per patient and view::

    patient_id,view,path[,ed_frame,es_frame,spacing_row_mm,spacing_col_mm,frame_time_ms,ef_ref_pct,
                         gt_path]

``path`` is relative to the manifest's folder (or absolute); ``ed_frame``/``es_frame`` are
0-based and come together, as do the two spacings. Files may be NIfTI, MetaImage, DICOM or AVI
video (the reader is chosen from the file ending, DICOM also from its ``DICM`` preamble).
``gt_path`` (an extension of the design's columns) names per-frame expert label maps (a NIfTI
or MetaImage file) of a NIfTI, MetaImage or DICOM loop, same shape as the loop as read (a DICOM
loop cropped to its tissue region), for ``--segmentation gt`` and the expert comparison.

Confinement: no file may lie outside the manifest's folder, links resolved, unless the run names a
wider ``files_root`` that holds the manifest's files explicitly. A bad row (missing file, unknown
view, duplicate patient and view, a path leaving the folder, bad numbers) is a problem of that row,
reported by ``echo-batch discover``; it never stops the others. A patient all of whose rows are bad
is still a patient (its row in the output says why it failed).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from echo_batch.domain import (
    ClipMeta,
    ImageFiles,
    InputFormat,
    LoopKind,
    PatientRef,
    Release,
    View,
)
from echo_batch.errors import InputError
from echo_batch.io.csvtable import CsvRow, read_table, safe_name
from echo_batch.io.discovery import Manifest, Problem

logger = logging.getLogger(__name__)

MANIFEST_REQUIRED = ("patient_id", "view", "path")
MANIFEST_OPTIONAL = (
    "ed_frame",
    "es_frame",
    "spacing_row_mm",
    "spacing_col_mm",
    "frame_time_ms",
    "ef_ref_pct",
    "gt_path",
)
MAX_MANIFEST_BYTES = 64 << 20
MAX_SPACING_MM = 10.0  # as io.limits.InputLimits.max_spacing_mm
MAX_FRAME_TIME_MS = 1000.0  # 1 frame/s: slower than any echocardiography loop

_GT_FORMATS = (InputFormat.CAMUS2019, InputFormat.CAMUS2023, InputFormat.DICOM)
"""Loop formats a ``gt_path`` may accompany (EchoNet videos take their masks from tracings)."""

_VIEW_NAMES = {
    "2ch": View.A2C,
    "a2c": View.A2C,
    "4ch": View.A4C,
    "a4c": View.A4C,
}


def file_format(path: Path) -> InputFormat | None:
    """The reader a file needs, from its ending (and the DICOM preamble), or None if unsupported.

    NIfTI files are read like CAMUS 2023 files, MetaImage like CAMUS 2019, AVI videos like
    EchoNet-Dynamic's.
    """
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return InputFormat.CAMUS2023
    if name.endswith(".mhd"):
        return InputFormat.CAMUS2019
    if name.endswith((".avi", ".mp4")):
        return InputFormat.ECHONET
    if name.endswith((".dcm", ".dicom")) or _has_dicom_preamble(path):
        return InputFormat.DICOM
    return None


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


@dataclass
class _Patient:
    clips: dict[View, tuple[ImageFiles, ClipMeta]] = field(default_factory=dict)
    ef_ref_pct: float | None = None
    problems: list[str] = field(default_factory=list)


def _number(row: CsvRow, column: str, problems: list[str]) -> float | None:
    text = row.values.get(column)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        problems.append(f"line {row.line}: {column} {text!r} is not a number")
        return None
    if not math.isfinite(value):
        problems.append(f"line {row.line}: {column} {text!r} is not finite")
        return None
    return value


def _row_meta(row: CsvRow, fmt: InputFormat, problems: list[str]) -> ClipMeta | None:
    """The clip facts of one row, or None (with the reasons in ``problems``) when one is bad."""
    before = len(problems)
    ed, es = _number(row, "ed_frame", problems), _number(row, "es_frame", problems)
    rows_mm = _number(row, "spacing_row_mm", problems)
    cols_mm = _number(row, "spacing_col_mm", problems)
    frame_time = _number(row, "frame_time_ms", problems)
    where = f"line {row.line}"
    if (ed is None) != (es is None):
        problems.append(f"{where}: ed_frame and es_frame must be given together")
    for name, value in (("ed_frame", ed), ("es_frame", es)):
        if value is not None and (value < 0 or value != int(value)):
            problems.append(f"{where}: {name} {value:g} is not a 0-based frame index")
    if (rows_mm is None) != (cols_mm is None):
        problems.append(f"{where}: spacing_row_mm and spacing_col_mm must be given together")
    for name, value in (("spacing_row_mm", rows_mm), ("spacing_col_mm", cols_mm)):
        if value is not None and not 0 < value <= MAX_SPACING_MM:
            problems.append(f"{where}: {name} {value:g} is outside (0, {MAX_SPACING_MM:g}] mm")
    if frame_time is not None and not 0 < frame_time <= MAX_FRAME_TIME_MS:
        problems.append(
            f"{where}: frame_time_ms {frame_time:g} is outside (0, {MAX_FRAME_TIME_MS:g}] ms"
        )
    if len(problems) > before:
        return None
    spacing = None if rows_mm is None or cols_mm is None else (rows_mm, cols_mm)
    return ClipMeta(
        input_format=fmt,
        ed_frame=None if ed is None else int(ed),
        es_frame=None if es is None else int(es),
        spacing_mm=spacing,
        frame_time_ms=frame_time,
    )


def _resolve(base: Path, text: str, files_root: Path) -> tuple[Path | None, str | None]:
    """The row's file, resolved and confined to ``files_root``, or why it cannot be used."""
    if not text:
        return None, "empty path"
    path = Path(text).expanduser()
    path = path if path.is_absolute() else base / path
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        return None, f"file {path} is missing"
    except (OSError, RuntimeError) as exc:
        return None, f"file {path} cannot be resolved ({exc})"
    if not resolved.is_relative_to(files_root):
        return None, (
            f"path {text!r} leaves the manifest's folder {files_root} "
            "(give the run that root explicitly to allow it)"
        )
    if not resolved.is_file():
        return None, f"{path} is not a regular file"
    return resolved, None


def discover_manifest(path: Path | str, *, files_root: Path | str | None = None) -> Manifest:
    """Find every patient a manifest lists.

    Args:
        path: the manifest CSV.
        files_root: folder every listed file must lie in (links resolved); the manifest's own
            folder when None.

    Returns:
        :class:`echo_batch.io.discovery.Manifest` with one PatientRef per patient id (sorted),
        each loop as a sequence of its view with its :class:`ClipMeta`, and the problems of
        bad rows.

    Raises:
        InputError: the manifest cannot be read at all (missing, too large, not UTF-8 CSV, a
            required column absent), or ``files_root`` does not hold the manifest.
    """
    path = Path(path).expanduser().resolve()
    table = read_table(path, MANIFEST_REQUIRED, MANIFEST_OPTIONAL, max_bytes=MAX_MANIFEST_BYTES)
    base = path.parent
    root = base if files_root is None else Path(files_root).expanduser().resolve()
    if not path.is_relative_to(root):
        raise InputError(path, f"the manifest lies outside the files root {root}")
    patients: dict[str, _Patient] = {}
    problems: list[Problem] = []
    for row in table.rows:
        pid = row.values.get("patient_id") or ""
        if not _is_patient_id(pid):
            problems.append(Problem(path, f"line {row.line}: {pid!r} is not a usable patient id"))
            continue
        patient = patients.setdefault(pid, _Patient())
        row_problems: list[str] = []
        view = _VIEW_NAMES.get((row.values.get("view") or "").lower())
        if view is None:
            row_problems.append(
                f"line {row.line}: unknown view {row.values.get('view')!r} (2CH or 4CH)"
            )
        file, why = _resolve(base, row.values.get("path") or "", root)
        if why is not None:
            row_problems.append(f"line {row.line}: {why}")
        fmt = None if file is None else file_format(file)
        if file is not None and fmt is None:
            row_problems.append(f"line {row.line}: {file.name} is not a supported file format")
        meta = None if fmt is None else _row_meta(row, fmt, row_problems)
        gt = None
        if row.values.get("gt_path"):
            gt, why = _resolve(base, row.values["gt_path"] or "", root)
            if why is not None:
                row_problems.append(f"line {row.line}: gt_path: {why}")
                meta = None
            elif fmt not in _GT_FORMATS:
                row_problems.append(
                    f"line {row.line}: gt_path only for NIfTI, MetaImage or DICOM loops"
                )
                meta = None
        ef = _number(row, "ef_ref_pct", row_problems)
        if ef is not None and not 0 <= ef <= 100:
            row_problems.append(f"line {row.line}: ef_ref_pct {ef:g} is outside [0, 100]")
            ef = None
        if ef is not None:
            if patient.ef_ref_pct is not None and patient.ef_ref_pct != ef:
                row_problems.append(
                    f"line {row.line}: ef_ref_pct {ef:g} differs from {patient.ef_ref_pct:g} "
                    "given before (kept)"
                )
            elif patient.ef_ref_pct is None:
                patient.ef_ref_pct = ef
        if view is not None and view in patient.clips:
            row_problems.append(
                f"line {row.line}: a second {view.value} file for {pid} "
                f"(kept {patient.clips[view][0].image})"
            )
        elif view is not None and file is not None and meta is not None:
            patient.clips[view] = (ImageFiles(image=file, gt=gt), meta)
        patient.problems.extend(row_problems)
        problems.extend(Problem(path, f"{pid}: {p}") for p in row_problems)
    refs = tuple(_patient_ref(pid, patients[pid], root) for pid in sorted(patients))
    logger.info(
        "manifest %s: %d patients, %d rows (%d problems)",
        path,
        len(refs),
        len(table.rows),
        len(problems),
    )
    return Manifest(root=path, patients=refs, problems=tuple(problems))


def _patient_ref(pid: str, patient: _Patient, root: Path) -> PatientRef:
    return PatientRef(
        patient_id=pid,
        folder=root,
        release=Release.CAMUS2023,
        sequences={view: files for view, (files, _) in patient.clips.items()},
        loop_kinds={
            view: LoopKind.HALF if "half_sequence" in str(files.image) else LoopKind.FULL
            for view, (files, _) in patient.clips.items()
        },
        problems=tuple(patient.problems),
        input_format=InputFormat.MANIFEST,
        clip_meta={view: meta for view, (_, meta) in patient.clips.items()},
        ef_ref_pct=patient.ef_ref_pct,
    )


def _is_patient_id(pid: str) -> bool:
    """A patient id that can name files and Parquet rows: one printable UTF-8 file name."""
    return safe_name(pid) and not pid.startswith(".") and len(pid) <= 128
