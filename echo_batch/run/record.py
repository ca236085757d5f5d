"""The run record: ``OUT/run.json`` (code version, model, settings, counts, timings, agreement)."""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from echo_batch.io.discovery import Manifest
from echo_batch.qc.agreement import EF_COMPARISONS, agreement
from echo_batch.run.options import RunOptions
from echo_batch.store.files import PATIENTS_FILE, write_run_record
from echo_batch.version import code_version

SUMMARY_COLUMNS = tuple(
    dict.fromkeys(
        [
            "status",
            "qc_pass",
            "ef_pct",
            "ef_category",
            *(column for c in EF_COMPARISONS for column in (c.measured, c.reference)),
        ]
    )
)
"""The columns of ``patients.parquet`` the run summary reads."""


def summarise(patients: pa.Table) -> dict[str, Any]:
    """Counts by status, EF distribution and agreement with the references.

    Args:
        patients: the :data:`SUMMARY_COLUMNS` of ``patients.parquet`` (one row per patient).
    """
    efs = patients["ef_pct"].drop_null().to_numpy()
    category = patients["ef_category"]
    summary: dict[str, Any] = {
        "patients": patients.num_rows,
        "status": _counts(patients["status"]),
        "qc_pass": int(pc.sum(patients["qc_pass"].cast(pa.int64())).as_py() or 0),
        "ef_pct": (
            {q: float(np.percentile(efs, int(q[1:]))) for q in ("p05", "p25", "p50", "p75", "p95")}
            if len(efs)
            else None
        ),
        "ef_category": _counts(category.filter(pc.not_equal(category, ""))),
        "agreement": {
            c.name: agreement(patients[c.measured].to_pylist(), patients[c.reference].to_pylist())
            for c in EF_COMPARISONS
        },
    }
    return summary


def _counts(values: pa.ChunkedArray) -> dict[str, int]:
    """Occurrences of each non-null value, in order of first occurrence."""
    counts = pc.value_counts(values.drop_null())
    return {
        str(v): int(n)
        for v, n in zip(
            counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
        )
    }


def _plain(value: Any) -> Any:
    """JSON-friendly copy of an options value (paths and enums as strings)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value if value is None or isinstance(value, bool | int | float) else str(value)


def run_record(
    options: RunOptions,
    manifest: Manifest,
    model_id: str,
    *,
    executor: str,
    seconds: Mapping[str, float],
    started: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build and write ``OUT/run.json``.

    Args:
        options: the run's options (written under ``config``).
        manifest: the discovered cohort.
        model_id: bundle id or "gt".
        executor: "serial" or the Dask scheduler used.
        seconds: time per stage.
        started: ``time.perf_counter()`` at the start of the run.
        extra: more fields for the record.

    Returns:
        The record written.
    """
    out = options.out
    patients = pq.read_table(out / PATIENTS_FILE, columns=list(SUMMARY_COLUMNS))
    wall = time.perf_counter() - started
    config = _plain(asdict(options))
    config["executor"] = executor
    record = {
        "code_version": code_version(),
        "model_id": model_id,
        "data": str(manifest.root),
        "out": str(out),
        "config": config,
        "host": platform.node(),
        "discovery_problems": [
            {"path": str(p.path), "reason": p.reason} for p in manifest.problems
        ],
        "summary": summarise(patients),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "wall_seconds": round(wall, 3),
        "patients_per_second": round(patients.num_rows / wall, 3) if wall > 0 else None,
        **dict(extra or {}),
    }
    write_run_record(out, record)
    return record
