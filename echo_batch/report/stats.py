"""Numbers of the cohort report, computed from the Parquet outputs with pandas (no plotting).

Every agreement figure comes from :func:`echo_batch.qc.agreement.agreement` (differences are
measured - reference; limits of agreement are bias +- 1.96 SD), over the comparisons of
:data:`echo_batch.qc.agreement.EF_COMPARISONS` (the same table as ``run.json``) and the volume
comparisons below.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from echo_batch.clinical import ef_category
from echo_batch.qc.agreement import EF_COMPARISONS, Comparison, agreement
from echo_batch.qc.flags import QC_THRESHOLDS, QCFlag
from echo_batch.store.files import FRAMES_FILE

QUALITY_ORDER = ("Good", "Medium", "Poor", "unknown")
CATEGORY_ORDER = ("reduced", "mildly_reduced", "preserved", "unknown")
LOA_Z = 1.96


VOLUME_COMPARISONS: tuple[Comparison, ...] = (
    Comparison(
        "edv_camus_vs_cfg", "edv_camus_ml", "edv_ref_ml", "CAMUS-compatible EDV vs LVedv", "mL"
    ),
    Comparison(
        "esv_camus_vs_cfg", "esv_camus_ml", "esv_ref_ml", "CAMUS-compatible ESV vs LVesv", "mL"
    ),
    Comparison("edv_vs_cfg", "edv_ml", "edv_ref_ml", "guideline EDV vs LVedv", "mL"),
    Comparison("esv_vs_cfg", "esv_ml", "esv_ref_ml", "guideline ESV vs LVesv", "mL"),
)


@dataclass(frozen=True)
class RunData:
    """Outputs of one run.

    Attributes:
        out: the run's OUT folder.
        patients: ``patients.parquet``.
        images: ``images.parquet``.
        run: ``run.json`` (empty when absent).
        frames: ``frames.parquet`` (empty when absent: stills only, or schema < 1.3).
    """

    out: Path
    patients: pd.DataFrame
    images: pd.DataFrame
    run: dict[str, Any]
    frames: pd.DataFrame = field(default_factory=pd.DataFrame)


SEGMENTATION_METRICS = (
    ("dice_lv", "Dice LV"),
    ("dice_myo", "Dice MYO"),
    ("dice_la", "Dice LA"),
    ("hd_lv_mm", "HD LV (mm)"),
    ("hd95_lv_mm", "HD95 LV (mm)"),
    ("mad_lv_mm", "MAD LV (mm)"),
)

UNREPORTED_PATIENT_COLUMNS = frozenset({"error", "measure_config", "split"})
"""Columns of ``patients.parquet`` the report never shows (free text and provenance)."""
REPORTED_IMAGE_COLUMNS = (
    "patient_id",
    "view",
    "instant",
    "qc_flags",
    *(metric for metric, _ in SEGMENTATION_METRICS),
)
"""Columns of ``images.parquet`` the report reads (flag counts, segmentation, panel titles)."""
REPORTED_FRAME_COLUMNS = (
    "patient_id",
    "view",
    "frame",
    "time_ms",
    "volume_single_ml",
    "volume_rel",
    "is_ed",
    "is_es",
    "qc_rejected",
)
"""Columns of ``frames.parquet`` the report reads (loop figures, volume curves)."""


def load_run(out: Path, *, report_columns: bool = False) -> RunData:
    """Read ``OUT/patients.parquet``, ``OUT/images.parquet``, ``OUT/run.json`` and, when
    present, ``OUT/frames.parquet``.

    Args:
        out: the run's OUT folder.
        report_columns: read only the columns the report uses (every column of
            ``patients.parquet`` but :data:`UNREPORTED_PATIENT_COLUMNS`,
            :data:`REPORTED_IMAGE_COLUMNS`, :data:`REPORTED_FRAME_COLUMNS`), which keeps the
            report's memory small at 100,000 patients; else every column.

    Raises:
        FileNotFoundError: ``patients.parquet`` or ``images.parquet`` is missing.
    """
    out = Path(out)
    patients = _read(out / "patients.parquet", _not(UNREPORTED_PATIENT_COLUMNS), report_columns)
    images = _read(out / "images.parquet", REPORTED_IMAGE_COLUMNS.__contains__, report_columns)
    run_path = out / "run.json"
    run = json.loads(run_path.read_text(encoding="utf-8")) if run_path.is_file() else {}
    frames_path = out / FRAMES_FILE
    frames = (
        _read(frames_path, REPORTED_FRAME_COLUMNS.__contains__, report_columns)
        if frames_path.is_file()
        else pd.DataFrame()
    )
    for frame in (patients, images):
        if "qc_flags" not in frame:
            frame["qc_flags"] = None
        frame["qc_flags"] = frame["qc_flags"].map(lambda v: [] if v is None else list(v))
    return RunData(out=out, patients=patients, images=images, run=run, frames=frames)


def _not(names: frozenset[str]) -> Callable[[str], bool]:
    return lambda name: name not in names


def _read(path: Path, wanted: Callable[[str], bool], select: bool) -> pd.DataFrame:
    """A Parquet file as a DataFrame: the columns ``wanted`` accepts when ``select``, else all."""
    if not select:
        return pd.read_parquet(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    names = pq.read_schema(path).names
    return pd.read_parquet(path, columns=[name for name in names if wanted(name)])


def paired_values(patients: pd.DataFrame, comparison: Comparison) -> pd.DataFrame:
    """Rows with both values finite: ``patient_id``, ``measured``, ``reference``, ``diff``."""
    if comparison.measured not in patients or comparison.reference not in patients:
        return pd.DataFrame(columns=["patient_id", "measured", "reference", "diff"])
    frame = pd.DataFrame(
        {
            "patient_id": patients["patient_id"],
            "measured": pd.to_numeric(patients[comparison.measured], errors="coerce"),
            "reference": pd.to_numeric(patients[comparison.reference], errors="coerce"),
        },
        index=patients.index,
    )
    frame = frame[np.isfinite(frame.measured) & np.isfinite(frame.reference)]
    return frame.assign(diff=frame.measured - frame.reference)


def agreement_stats(patients: pd.DataFrame, comparison: Comparison) -> dict[str, float] | None:
    """Agreement of one comparison: ``n, mae, bias, sd, r, within_*, loa_low, loa_high``.

    Returns:
        None with fewer than 2 pairs.
    """
    pairs = paired_values(patients, comparison)
    stats = agreement(pairs.measured.tolist(), pairs.reference.tolist())
    if stats is None:
        return None
    return {
        **stats,
        "loa_low": stats["bias"] - LOA_Z * stats["sd"],
        "loa_high": stats["bias"] + LOA_Z * stats["sd"],
    }


def primary_comparison(patients: pd.DataFrame) -> Comparison | None:
    """The comparison that ranks patients: cfg EF when present, else the expert-mask EF."""
    for comparison in EF_COMPARISONS[:2]:
        if len(paired_values(patients, comparison)) >= 2:
            return comparison
    return None


def abs_error(patients: pd.DataFrame, comparison: Comparison) -> pd.Series:
    """``|measured - reference|`` per patient (NaN where either is missing)."""
    pairs = paired_values(patients, comparison)
    return pairs["diff"].abs().reindex(patients.index)


def flagged_groups(patients: pd.DataFrame, comparison: Comparison | None) -> dict[str, Any]:
    """Share of patients flagged and the agreement of the flagged and unflagged groups.

    A patient is flagged when ``qc_pass`` is False (a blocking flag, or not fully measured).

    Returns:
        ``patients``, ``flagged`` (count), ``flagged_share``, ``any_flag_share`` (any flag,
        blocking or not), and ``flagged_stats`` / ``unflagged_stats`` (agreement or None).
    """
    n = len(patients)
    flagged = ~patients["qc_pass"].astype(bool)
    any_flag = patients["qc_flags"].map(len) > 0
    result: dict[str, Any] = {
        "patients": n,
        "flagged": int(flagged.sum()),
        "flagged_share": float(flagged.mean()) if n else float("nan"),
        "any_flag_share": float((any_flag | flagged).mean()) if n else float("nan"),
        "flagged_stats": None,
        "unflagged_stats": None,
    }
    if comparison is not None:
        result["flagged_stats"] = agreement_stats(patients[flagged], comparison)
        result["unflagged_stats"] = agreement_stats(patients[~flagged], comparison)
    return result


def _group_labels(patients: pd.DataFrame, by: str, comparison: Comparison) -> pd.Series:
    if by == "image_quality":
        return patients.get("image_quality", pd.Series(index=patients.index)).fillna("unknown")
    if by == "reference_category":
        ref = pd.to_numeric(patients[comparison.reference], errors="coerce")
        return ref.map(lambda v: "unknown" if pd.isna(v) else str(ef_category(float(v))))
    raise ValueError(f"unknown grouping {by!r}")


def grouped_agreement(
    patients: pd.DataFrame, comparison: Comparison, by: str
) -> list[dict[str, Any]]:
    """Agreement per group: by ``image_quality`` or by ``reference_category`` (EF category of
    the reference value, so that the groups do not depend on the measurement).

    Returns:
        One dict per non-empty group in clinical order: ``group``, ``patients``, ``flagged_share``
        and the agreement figures (None with fewer than 2 pairs).
    """
    labels = _group_labels(patients, by, comparison)
    order = QUALITY_ORDER if by == "image_quality" else CATEGORY_ORDER
    groups = [g for g in order if (labels == g).any()]
    groups += sorted(set(labels) - set(order))
    rows = []
    for group in groups:
        sub = patients[labels == group]
        rows.append(
            {
                "group": group,
                "patients": len(sub),
                "flagged_share": float((~sub["qc_pass"].astype(bool)).mean()),
                "stats": agreement_stats(sub, comparison),
            }
        )
    return rows


def flag_counts(patients: pd.DataFrame, images: pd.DataFrame) -> list[dict[str, Any]]:
    """Patients and images per flag, with the flag's threshold row.

    Returns:
        One dict per flag of the QC table (and any unknown flag found): ``flag``, ``patients``,
        ``images``, ``blocking``, ``value``, ``upper``, ``unit``, ``source``.
    """
    per_patient = patients["qc_flags"].explode().value_counts()
    per_image = images["qc_flags"].explode().value_counts() if len(images) else pd.Series()
    names = [f.value for f in QCFlag] + sorted(set(per_patient.index) - {f.value for f in QCFlag})
    rows = []
    for name in names:
        threshold = QC_THRESHOLDS.get(QCFlag(name)) if name in QCFlag.__members__.values() else None
        rows.append(
            {
                "flag": name,
                "patients": int(per_patient.get(name, 0)),
                "images": int(per_image.get(name, 0)),
                "blocking": True if threshold is None else threshold.blocking,
                "value": None if threshold is None else threshold.value,
                "upper": None if threshold is None else threshold.upper,
                "unit": "" if threshold is None else threshold.unit,
                "source": "unknown flag" if threshold is None else threshold.source,
            }
        )
    return rows


def segmentation_table(images: pd.DataFrame) -> list[dict[str, Any]]:
    """Mean and SD of every segmentation metric per (view, instant), and over all images.

    Returns:
        One dict per group with ``group``, ``images`` and ``<metric>: (mean, sd)``; empty when no
        image has ground-truth metrics.
    """
    have = [m for m, _ in SEGMENTATION_METRICS if m in images and images[m].notna().any()]
    if not have:
        return []
    rows = []
    keyed = images.assign(group=images["view"] + " " + images["instant"])
    for group, sub in [*sorted(keyed.groupby("group")), ("all", keyed)]:
        row: dict[str, Any] = {"group": group, "images": int(sub[have[0]].notna().sum())}
        for metric in have:
            values = sub[metric].dropna()
            row[metric] = (float(values.mean()), float(values.std(ddof=1))) if len(values) else None
        rows.append(row)
    return rows


def worst_cases(patients: pd.DataFrame, comparison: Comparison | None, n: int) -> pd.DataFrame:
    """The ``n`` patients with the largest absolute error of the comparison, worst first."""
    if comparison is None or n <= 0:
        return patients.iloc[:0]
    error = abs_error(patients, comparison)
    order = error.dropna().sort_values(ascending=False, kind="stable").index[:n]
    return patients.loc[order].assign(abs_error=error.loc[order])
