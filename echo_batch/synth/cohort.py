"""Writing synthetic patients and cohorts in the CAMUS layouts, with ``truth.csv``."""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Literal

from echo_batch.domain import INSTANTS, VIEWS, Instant, Split, View
from echo_batch.io.writers import write_cfg, write_image, write_text
from echo_batch.synth.params import PatientParams, PatientTruth, patient_truth
from echo_batch.synth.render import render_sequence
from echo_batch.synth.sampling import plan_cohort

logger = logging.getLogger(__name__)

Format = Literal["nifti", "mhd"]


def _cfg(params: PatientParams, truth: PatientTruth, view: View, fmt: Format) -> dict[str, object]:
    setup = params.setup(view)
    ed_frame, es_frame = (setup.n_frames, 1) if params.es_before_ed else (1, setup.n_frames)
    cfg: dict[str, object] = {
        "ED": ed_frame,
        "ES": es_frame,
        "NbFrame": setup.n_frames,
        "Sex": params.sex,
        "Age": params.age,
        "ImageQuality": params.image_quality,
    }
    if fmt == "nifti":
        cfg |= {"EF": round(truth.ef_pct, 3), "FrameRate": setup.frame_rate_hz}
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


def _truth_csv(truths: list[PatientTruth]) -> str:
    buffer = io.StringIO()
    names = [f.name for f in fields(PatientTruth)]
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for truth in truths:
        writer.writerow(
            {k: repr(v) if isinstance(v, float) else v for k, v in asdict(truth).items()}
        )
    return buffer.getvalue()


def synth_cohort(
    out: Path | str,
    n_patients: int,
    seed: int = 0,
    fmt: Format = "nifti",
    *,
    max_side: int | None = None,
) -> Path:
    """Write a synthetic cohort in the CAMUS layout with its truth table.

    Layout (``fmt="nifti"``, CAMUS 2023): ``OUT/database_nifti/patientXXXX/...`` and
    ``OUT/database_split/subgroup_{training,validation,testing}.txt`` (80/10/10 %).
    Layout (``fmt="mhd"``, CAMUS 2019): ``OUT/training/patientXXXX/...`` (every patient, split
    "training") with cfgs carrying the true ``LVedv``/``LVesv``/``LVef`` (rounded to 0.001).
    Both: ``OUT/truth.csv``, one row per patient (columns of :class:`PatientTruth`, floats at full
    precision).

    Args:
        out: output root (created when missing; existing files of the same names are replaced).
        n_patients: number of patients.
        seed: cohort seed; the same seed writes byte-identical arrays.
        fmt: "nifti" or "mhd".
        max_side: render every view on a ``(max_side, max_side)`` grid (e.g. 256 for large scale
            runs); None keeps realistic spacings such as 0.154 x 0.308 mm.

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
    for number, (params, truth) in enumerate(plan, start=1):
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
    write_text(out / "truth.csv", _truth_csv([truth for _, truth in plan]))
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
