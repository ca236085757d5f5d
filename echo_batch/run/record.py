"""The run record: ``OUT/run.json`` (code version, model, settings, counts, timings, agreement)."""

from __future__ import annotations

import platform
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from echo_batch.io.discovery import Manifest
from echo_batch.qc.agreement import ef_agreements
from echo_batch.run.options import RunOptions
from echo_batch.store.files import PATIENTS_FILE, write_run_record
from echo_batch.store.records import PatientRecord
from echo_batch.version import code_version


def summarise(patients: list[PatientRecord]) -> dict[str, Any]:
    """Counts by status, EF distribution and agreement with the references."""
    efs = [p.ef_pct for p in patients if p.ef_pct is not None]
    summary: dict[str, Any] = {
        "patients": len(patients),
        "status": dict(Counter(p.status for p in patients)),
        "qc_pass": sum(p.qc_pass for p in patients),
        "ef_pct": (
            {q: float(np.percentile(efs, int(q[1:]))) for q in ("p05", "p25", "p50", "p75", "p95")}
            if efs
            else None
        ),
        "ef_category": dict(Counter(p.ef_category for p in patients if p.ef_category)),
        "agreement": ef_agreements(patients),
    }
    return summary


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
    patients: Sequence[PatientRecord] | None = None,
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
        patients: the cohort's records (read back from ``patients.parquet`` when None).
        extra: more fields for the record.

    Returns:
        The record written.
    """
    out = options.out
    if patients is None:
        table = pq.read_table(out / PATIENTS_FILE)
        patients = [PatientRecord(**row) for row in table.to_pylist()]
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
        "summary": summarise(list(patients)),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "wall_seconds": round(wall, 3),
        "patients_per_second": round(len(patients) / wall, 3) if wall > 0 else None,
        **dict(extra or {}),
    }
    write_run_record(out, record)
    return record
