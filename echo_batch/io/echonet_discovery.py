"""Discovery of an EchoNet-Dynamic layout: one patient per video of ``FileList.csv``.

Each video is an apical 4-chamber loop without spacing (Ouyang et al., Nature 2020). Its
reference EF, split, frame rate and frame count come from ``FileList.csv``; when
``VolumeTracings.csv`` traces two of its frames, they become the annotated ED and ES (ED the
larger traced area). A row whose video is missing or whose values are bad is still a patient: its
problems go with it, and its output row says why it failed. Nothing here decodes a video.
"""

from __future__ import annotations

import logging
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
from echo_batch.io.discovery import Manifest, Problem
from echo_batch.io.echonet import TRACINGS, EchoNetEntry, read_filelist
from echo_batch.io.tracings import TracingTable, annotated_frames, read_tracings

logger = logging.getLogger(__name__)


def discover_echonet(root: Path | str) -> Manifest:
    """Find every video an EchoNet-Dynamic root lists.

    Args:
        root: folder holding ``FileList.csv``, ``Videos/`` and optionally ``VolumeTracings.csv``.

    Returns:
        Manifest with one PatientRef per FileList row (patient id = ``FileName`` without
        ``.avi``), sorted by id; a repeated FileName is a problem, its first row kept.

    Raises:
        InputError: ``FileList.csv`` cannot be read at all.
    """
    root = Path(root).resolve()
    entries = read_filelist(root)
    problems: list[Problem] = []
    table: TracingTable | None = None
    if (root / TRACINGS).is_file():
        try:
            table = read_tracings(root / TRACINGS)
        except InputError as exc:
            problems.append(Problem(exc.path, exc.reason))
        else:
            problems.extend(Problem(table.path, p) for p in table.problems)
    patients: dict[str, PatientRef] = {}
    for entry in entries:
        if entry.file_name in patients:
            problems.append(
                Problem(root, f"line {entry.line}: {entry.file_name} listed again (first kept)")
            )
            continue
        patients[entry.file_name] = _patient(entry, root, table)
    refs = tuple(patients[pid] for pid in sorted(patients))
    logger.info("EchoNet layout %s: %d videos (%d problems)", root, len(refs), len(problems))
    return Manifest(root=root, patients=refs, problems=tuple(problems))


def _patient(entry: EchoNetEntry, root: Path, table: TracingTable | None) -> PatientRef:
    problems = list(entry.problems)
    ed = es = None
    traced = table is not None and bool(table.of(entry.file_name))
    if table is not None:
        problems.extend(table.problems_of(entry.file_name))
        if traced:
            try:
                ed, es = annotated_frames(table.of(entry.file_name), n_frames=entry.n_frames)
            except InputError as exc:
                problems.append(exc.reason)
                traced = False
    meta = ClipMeta(
        input_format=InputFormat.ECHONET,
        ed_frame=ed,
        es_frame=es,
        frame_time_ms=entry.frame_time_ms,
        n_frames=entry.n_frames,
        tracings=table.path if traced and table is not None else None,
    )
    usable = entry.usable and entry.video is not None
    return PatientRef(
        patient_id=entry.file_name,
        folder=root,
        release=Release.CAMUS2023,
        split=entry.split,
        sequences={View.A4C: ImageFiles(image=entry.video)} if usable else {},
        loop_kinds={View.A4C: LoopKind.FULL} if usable else {},
        problems=tuple(problems),
        input_format=InputFormat.ECHONET,
        clip_meta={View.A4C: meta} if usable else {},
        ef_ref_pct=entry.ef_ref_pct,
    )
