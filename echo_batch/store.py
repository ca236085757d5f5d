"""Parquet output: atomic writes with schema version and units in the key-value metadata."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from echo_batch.records import (
    SCHEMA_VERSION,
    UNITS,
    ImageRecord,
    PatientRecord,
    to_table,
)

PATIENTS_FILE = "patients.parquet"
IMAGES_FILE = "images.parquet"
RUN_FILE = "run.json"


def _write_atomic(table, path: Path, extra_metadata: dict[str, str]) -> None:
    metadata = dict(table.schema.metadata or {})
    metadata.update(
        {
            b"echo_batch.schema_version": SCHEMA_VERSION.encode(),
            b"echo_batch.units": json.dumps(UNITS).encode(),
            **{f"echo_batch.{k}".encode(): v.encode() for k, v in extra_metadata.items()},
        }
    )
    table = table.replace_schema_metadata(metadata)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def write_results(
    out: Path,
    patients: Sequence[PatientRecord],
    images: Sequence[ImageRecord],
    *,
    model_id: str,
) -> tuple[Path, Path]:
    """Write ``patients.parquet`` and ``images.parquet`` atomically.

    Args:
        out: output folder (created).
        patients: one record per discovered patient.
        images: one record per (patient, view, instant) attempted.
        model_id: bundle id or "gt", stored in the file metadata too.

    Returns:
        Paths of the two files.
    """
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model_id": model_id}
    p_path, i_path = out / PATIENTS_FILE, out / IMAGES_FILE
    _write_atomic(to_table(list(patients), PatientRecord), p_path, meta)
    _write_atomic(to_table(list(images), ImageRecord), i_path, meta)
    return p_path, i_path


def write_run_record(out: Path, record: dict[str, Any]) -> Path:
    """Write ``run.json`` atomically."""
    path = out / RUN_FILE
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
