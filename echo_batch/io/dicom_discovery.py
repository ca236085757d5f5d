"""Discovery of a folder of DICOM files exported from an archive: patients from PatientID,
studies from StudyInstanceUID, one loop per apical view.

Only headers are read (``stop_before_pixels``), and of them only what
:func:`echo_batch.io.dicom.read_dicom_header` keeps: PatientID, UIDs, sizes, view and
calibration, never a name, birth date or accession number. A patient with one study is named by
its PatientID; with several, each study is a patient ``<PatientID>_study<k>`` (k from 1, studies
in UID order), so that the output holds no UID.

Each multi-frame file of a known view (ViewCodeSequence or ViewName, see :mod:`echo_batch.io.dicom`)
is a loop of whole beats. What cannot be used is a problem naming the file: a header that does
not parse, no PatientID, a PatientID that cannot name a patient, a single-frame file (a loop is
needed), a view the tags do not give (list such files in a manifest with their view), a second
loop of a view (the one with more frames kept). A study with no usable loop is still a patient:
its output row says why it failed.
"""

from __future__ import annotations

import logging
import os
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
from echo_batch.io.csvtable import safe_name
from echo_batch.io.dicom import DicomHeader, group_dicom, is_dicom, read_dicom_header
from echo_batch.io.discovery import Manifest, Problem

logger = logging.getLogger(__name__)

_SNIFF_FILES = 64  # files looked at to decide whether a folder is a DICOM export
_SKIPPED = (".txt", ".csv", ".md", ".json", ".xml", ".html", ".pdf")


def _files(root: Path) -> tuple[list[Path], list[Problem]]:
    """Regular files under ``root`` (sorted), never following a link out of it."""
    files: list[Path] = []
    problems: list[Problem] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            if path.is_symlink():
                try:
                    inside = path.resolve(strict=True).is_relative_to(root)
                except (OSError, RuntimeError):
                    inside = False
                if not inside:
                    problems.append(Problem(path, "link that resolves outside the DATA folder"))
                    continue
            files.append(path)
    return files, problems


def looks_like_dicom_root(root: Path) -> bool:
    """True when a folder (not a CAMUS layout) holds DICOM files among its first files."""
    if any((root / name).is_dir() for name in ("database_nifti", "training", "testing")):
        return False
    seen = 0
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(("Info_", ".")) or name.endswith((".nii.gz", ".nii", ".mhd")):
                return False  # CAMUS files
            if is_dicom(Path(folder) / name):
                return True
            seen += 1
            if seen >= _SNIFF_FILES:
                return False
    return False


def discover_dicom(root: Path | str) -> Manifest:
    """Find every patient and study of a folder of DICOM files.

    Args:
        root: folder holding DICOM files, at any depth, in any folder layout.

    Returns:
        Manifest with one PatientRef per patient and study, sorted by id, and the problems of the
        files that could not be used.
    """
    root = Path(root).resolve()
    files, problems = _files(root)
    headers: list[DicomHeader] = []
    for path in files:
        if not is_dicom(path):
            if not path.name.lower().endswith(_SKIPPED):
                problems.append(Problem(path, "not a DICOM file (no DICM preamble)"))
            continue
        try:
            header = read_dicom_header(path)
        except InputError as exc:
            problems.append(Problem(path, exc.reason))
            continue
        if header.patient_id is None:
            problems.append(Problem(path, "no PatientID: cannot tell whose file it is"))
            continue
        headers.append(header)
    refs: list[PatientRef] = []
    for patient_id, studies in group_dicom(headers).items():
        if not safe_name(patient_id) or patient_id.startswith("."):
            for study in studies.values():
                problems.extend(
                    Problem(h.path, "PatientID cannot name a patient (a folder or control part)")
                    for h in study
                )
            continue
        for number, study in enumerate(studies.values(), start=1):
            name = patient_id if len(studies) == 1 else f"{patient_id}_study{number}"
            refs.append(_patient(name, study, root))
    refs.sort(key=lambda r: r.patient_id)
    logger.info("DICOM folder %s: %d patients (%d problems)", root, len(refs), len(problems))
    return Manifest(root=root, patients=tuple(refs), problems=tuple(problems))


def _patient(patient_id: str, headers: list[DicomHeader], root: Path) -> PatientRef:
    loops: dict[View, DicomHeader] = {}
    problems: list[str] = []
    for header in headers:
        where = header.path.name
        if header.problem is not None:
            problems.append(f"{where}: {header.problem}")
        elif header.n_frames < 2:
            problems.append(f"{where}: a single frame; a loop is needed")
        elif header.view is None:
            problems.append(
                f"{where}: the view is not in the file (no ViewCodeSequence or ViewName): "
                "list it in a manifest with its view"
            )
        elif header.view in loops:
            kept, other = sorted((loops[header.view], header), key=lambda h: -h.n_frames)
            loops[header.view] = kept
            problems.append(
                f"{other.path.name}: a second {header.view.value} loop (kept {kept.path.name})"
            )
        else:
            loops[header.view] = header
    return PatientRef(
        patient_id=patient_id,
        folder=root,
        release=Release.CAMUS2023,
        sequences={v: ImageFiles(image=h.path) for v, h in loops.items()},
        loop_kinds=dict.fromkeys(loops, LoopKind.FULL),
        problems=tuple(problems),
        input_format=InputFormat.DICOM,
        clip_meta={v: ClipMeta(input_format=InputFormat.DICOM) for v in loops},
    )
