"""Writing synthetic patients and cohorts in the CAMUS layouts, with ``truth.csv``."""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Literal

from echo_batch.domain import INSTANTS, VIEWS, Instant, LoopKind, Split, View
from echo_batch.io.writers import write_cfg, write_image, write_text
from echo_batch.synth.loop_truth import FRAME_COLUMNS, frame_rows, loop_columns
from echo_batch.synth.loops import PatientLoops, sample_loops
from echo_batch.synth.params import PatientParams, PatientTruth, patient_truth
from echo_batch.synth.render import render_phases, render_sequence
from echo_batch.synth.sampling import plan_cohort

logger = logging.getLogger(__name__)

Format = Literal["nifti", "mhd"]


def _cfg(
    params: PatientParams,
    truth: PatientTruth,
    view: View,
    fmt: Format,
    loops: PatientLoops | None = None,
) -> dict[str, object]:
    setup = params.setup(view)
    ends: tuple[int, int] | None  # 1-based ED and ES frames of the sequence written
    if loops is None:
        n_frames, frame_rate = setup.n_frames, setup.frame_rate_hz
        ends = (n_frames, 1) if params.es_before_ed else (1, n_frames)
    else:  # the first beat's frames; none for a still-less patient
        loop = loops.loop(view)
        n_frames, frame_rate = loop.n_frames, loop.frame_rate_hz
        ends = (loop.ed_frames[0] + 1, loop.es_frames[0] + 1) if loops.has_stills else None
    cfg: dict[str, object] = {} if ends is None else {"ED": ends[0], "ES": ends[1]}
    cfg |= {
        "NbFrame": n_frames,
        "Sex": params.sex,
        "Age": params.age,
        "ImageQuality": params.image_quality,
    }
    if fmt == "nifti":
        cfg |= {"EF": round(truth.ef_pct, 3), "FrameRate": frame_rate}
    else:
        cfg |= {
            "LVedv": round(truth.edv_ml, 3),
            "LVesv": round(truth.esv_ml, 3),
            "LVef": round(truth.ef_pct, 3),
        }
    return cfg


def write_patient(
    folder: Path, params: PatientParams, fmt: Format = "nifti", truth: PatientTruth | None = None
) -> None:
    """Render and write one patient folder (8 stills, 2 sequences with gt, 2 cfgs).

    Args:
        folder: the patient folder (``.../patientXXXX``), created when missing.
        params: the patient.
        fmt: "nifti" (2023: ``.nii.gz``, ``_half_sequence``, cfg EF/FrameRate) or "mhd" (2019:
            ``.mhd``/``.raw``, ``_sequence``, cfg LVedv/LVesv/LVef).
        truth: the patient's truth (computed when omitted).
    """
    truth = truth or patient_truth(params)
    ext, seq_name = (".nii.gz", "half_sequence") if fmt == "nifti" else (".mhd", "sequence")
    pid = params.patient_id
    for view in VIEWS:
        labels, images = render_sequence(params, view)
        spacing = params.setup(view).spacing
        stem = folder / f"{pid}_{view.value}"
        write_image(f"{stem}_{seq_name}{ext}", images, spacing)
        write_image(f"{stem}_{seq_name}_gt{ext}", labels, spacing)
        ends = {Instant.ED: 0, Instant.ES: len(labels) - 1}
        if params.es_before_ed:
            ends = {Instant.ED: len(labels) - 1, Instant.ES: 0}
        for instant in INSTANTS:
            write_image(f"{stem}_{instant.value}{ext}", images[ends[instant]], spacing)
            write_image(f"{stem}_{instant.value}_gt{ext}", labels[ends[instant]], spacing)
        write_cfg(folder / f"Info_{view.value}.cfg", _cfg(params, truth, view, fmt))


def write_loop_patient(
    folder: Path,
    params: PatientParams,
    loops: PatientLoops,
    fmt: Format = "nifti",
    truth: PatientTruth | None = None,
) -> None:
    """Render and write one patient folder of loops (2 loops with gt, the stills, 2 cfgs).

    Per view: the loop ``{pid}_{VIEW}_sequence`` (full loop, or any loop in the 2019 layout) or
    ``{pid}_{VIEW}_half_sequence`` (half sequence, 2023 layout) with its ``_gt`` masks; when
    ``loops.has_stills``, the ED and ES stills (+ ``_gt``), which are the first beat's ED and ES
    frames, and ``ED``/``ES`` (1-based) in the cfg; ``NbFrame`` and (2023) ``FrameRate`` describe
    the loop.

    Args:
        folder: the patient folder, created when missing.
        params: the patient.
        loops: its loops (:func:`echo_batch.synth.loops.sample_loops`).
        fmt: "nifti" or "mhd" (see :func:`write_patient`).
        truth: the patient's truth (computed when omitted).
    """
    truth = truth or patient_truth(params)
    ext = ".nii.gz" if fmt == "nifti" else ".mhd"
    for view in VIEWS:
        loop = loops.loop(view)
        labels, images = render_phases(params, view, loop.phases)
        spacing = params.setup(view).spacing
        stem = folder / f"{params.patient_id}_{view.value}"
        seq_name = "half_sequence" if fmt == "nifti" and loop.kind == LoopKind.HALF else "sequence"
        write_image(f"{stem}_{seq_name}{ext}", images, spacing)
        write_image(f"{stem}_{seq_name}_gt{ext}", labels, spacing)
        if loops.has_stills:
            ends = {Instant.ED: loop.ed_frames[0], Instant.ES: loop.es_frames[0]}
            for instant in INSTANTS:
                write_image(f"{stem}_{instant.value}{ext}", images[ends[instant]], spacing)
                write_image(f"{stem}_{instant.value}_gt{ext}", labels[ends[instant]], spacing)
        write_cfg(folder / f"Info_{view.value}.cfg", _cfg(params, truth, view, fmt, loops))


def _csv_text(rows: list[dict[str, object]], names: list[str], *, header: bool = True) -> str:
    """CSV with floats at full precision (``repr``) and None as an empty field."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def _truth_csv(truths: list[PatientTruth], extra: list[dict[str, object]] | None = None) -> str:
    names = [f.name for f in fields(PatientTruth)]
    rows = [asdict(truth) for truth in truths]
    if extra is not None:
        names += list(extra[0])
        rows = [row | more for row, more in zip(rows, extra, strict=True)]
    return _csv_text(rows, names)


def _loop_truth(truth: PatientTruth, loops: PatientLoops) -> PatientTruth:
    """The stills' truth with ``n_frames_*`` and ``es_before_ed`` describing the loops written."""
    a2c, a4c = loops.loop(View.A2C), loops.loop(View.A4C)
    return replace(
        truth,
        n_frames_2ch=a2c.n_frames,
        n_frames_4ch=a4c.n_frames,
        es_before_ed=a2c.reversed or a4c.reversed,
    )


def synth_cohort(
    out: Path | str,
    n_patients: int,
    seed: int = 0,
    fmt: Format = "nifti",
    *,
    max_side: int | None = None,
    loops: bool = False,
) -> Path:
    """Write a synthetic cohort in the CAMUS layout with its truth table.

    Layout (``fmt="nifti"``, CAMUS 2023): ``OUT/database_nifti/patientXXXX/...`` and
    ``OUT/database_split/subgroup_{training,validation,testing}.txt`` (80/10/10 %).
    Layout (``fmt="mhd"``, CAMUS 2019): ``OUT/training/patientXXXX/...`` (every patient, split
    "training") with cfgs carrying the true ``LVedv``/``LVesv``/``LVef`` (rounded to 0.001).
    Both: ``OUT/truth.csv``, one row per patient (columns of :class:`PatientTruth`, floats at full
    precision).

    With ``loops``, every patient has a loop per view instead of the half sequence
    (:func:`write_loop_patient`, :mod:`echo_batch.synth.loops`): full loops of 1-4 beats or half
    sequences, about one patient in five without stills. The patients' shapes, probes, stills and
    volume/EF truth are those of the same seed without loops; ``truth.csv`` gains the loop columns
    of :func:`echo_batch.synth.loop_truth.loop_columns` (and its ``n_frames_*`` and
    ``es_before_ed`` describe the loops), and ``OUT/truth_frames.csv`` holds one row per frame
    (:func:`echo_batch.synth.loop_truth.frame_rows`).

    Args:
        out: output root (created when missing; existing files of the same names are replaced).
        n_patients: number of patients.
        seed: cohort seed; the same seed writes byte-identical arrays.
        fmt: "nifti" or "mhd".
        max_side: render every view on a ``(max_side, max_side)`` grid (e.g. 256 for large scale
            runs); None keeps realistic spacings such as 0.154 x 0.308 mm.
        loops: write cine loops with per-frame truth instead of the half sequences (see above).

    Returns:
        ``out``, a DATA root that :func:`echo_batch.io.discovery.discover` accepts.

    Raises:
        ValueError: unknown format or fewer than one patient.
    """
    if fmt not in ("nifti", "mhd"):
        raise ValueError(f"unknown format {fmt!r} (use 'nifti' or 'mhd')")
    if n_patients < 1:
        raise ValueError("n_patients must be at least 1")
    out = Path(out)
    parent = out / ("database_nifti" if fmt == "nifti" else "training")
    plan = plan_cohort(n_patients, seed, max_side=max_side)
    if fmt == "mhd":  # the 2019 layout keeps everyone under training/
        plan = [
            (replace(p, split=Split.TRAINING), replace(t, split=Split.TRAINING.value))
            for p, t in plan
        ]
    start = time.perf_counter()
    truths: list[PatientTruth] = []
    extra: list[dict[str, object]] = []  # the loop columns of truth.csv
    frames = [",".join(FRAME_COLUMNS) + "\n"]  # CSV text per patient: compact at 10^4 patients
    for number, (params, truth) in enumerate(plan, start=1):
        truths.append(truth)
        if loops:
            patient_loops = sample_loops(params, half_only=fmt == "mhd")
            write_loop_patient(parent / params.patient_id, params, patient_loops, fmt, truth)
            truths[-1] = _loop_truth(truth, patient_loops)
            extra.append(loop_columns(patient_loops, frame_time_known=fmt == "nifti"))
            rows = frame_rows(params, patient_loops, frame_time_known=fmt == "nifti")
            frames.append(_csv_text(rows, list(FRAME_COLUMNS), header=False))
        else:
            write_patient(parent / params.patient_id, params, fmt, truth)
        logger.debug("%s written (EF %.1f %%)", params.patient_id, truth.ef_pct)
        if number % 100 == 0:
            logger.info("synth: %d/%d patients", number, n_patients)
    if fmt == "nifti":
        for split in (Split.TRAINING, Split.VALIDATION, Split.TESTING):
            ids = [p.patient_id for p, _ in plan if p.split == split]
            write_text(
                out / "database_split" / f"subgroup_{split.value}.txt",
                "".join(f"{pid}\n" for pid in ids),
            )
    write_text(out / "truth.csv", _truth_csv(truths, extra or None))
    if loops:
        write_text(out / "truth_frames.csv", "".join(frames))
    elapsed = time.perf_counter() - start
    logger.info(
        "synth: %d patients (%s, seed %d) in %.1f s (%.1f patients/s) under %s",
        n_patients,
        fmt,
        seed,
        elapsed,
        n_patients / max(elapsed, 1e-9),
        out,
    )
    return out
