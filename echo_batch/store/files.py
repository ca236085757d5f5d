"""The files of ``OUT`` (README.md "Outputs") and the one-shot writers.

Layout of ``OUT``: ``patients.parquet`` and ``images.parquet`` (the results), ``run.json`` (what
ran, with which options, how long), ``parts/`` (one Parquet pair per finished chunk until a run
compacts them, :mod:`echo_batch.store.parts`) and the run lock (:mod:`echo_batch.store.lock`).

Every file is replaced atomically and durably (:mod:`echo_batch.atomic`). The schema version
and the units are in the key-value metadata of every Parquet file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from echo_batch import atomic
from echo_batch.errors import EchoBatchError
from echo_batch.store.records import SCHEMA_VERSION, UNITS, ImageRecord, PatientRecord, to_table

PATIENTS_FILE = "patients.parquet"
IMAGES_FILE = "images.parquet"
RUN_FILE = "run.json"
LOCK_FILE = ".echo-batch.lock"
LOCK_HOLDER_FILE = ".echo-batch.lock.json"
PARTS_DIR = "parts"
PATIENTS_PART_SUFFIX = ".patients.parquet"
IMAGES_PART_SUFFIX = ".images.parquet"


def parquet_writer(table: pa.Table, extra_metadata: dict[str, str]) -> atomic.Writer:
    """A writer of ``table`` as zstd Parquet with the schema version, units and ``extra_metadata``.

    Args:
        table: rows to write.
        extra_metadata: stored as ``echo_batch.<key>`` in the file's key-value metadata.

    Returns:
        A writer for :func:`echo_batch.atomic.write_file`.
    """
    metadata = dict(table.schema.metadata or {})
    metadata.update(
        {
            b"echo_batch.schema_version": SCHEMA_VERSION.encode(),
            b"echo_batch.units": json.dumps(UNITS).encode(),
            **{f"echo_batch.{k}".encode(): v.encode() for k, v in extra_metadata.items()},
        }
    )
    table = table.replace_schema_metadata(metadata)

    def write(fh: BinaryIO) -> None:
        pq.write_table(table, fh, compression="zstd")

    return write


def write_results(
    out: Path,
    patients: Sequence[PatientRecord],
    images: Sequence[ImageRecord],
    *,
    model_id: str,
) -> tuple[Path, Path]:
    """Write ``patients.parquet`` and ``images.parquet`` atomically (images first).

    Args:
        out: output folder (created).
        patients: one record per discovered patient.
        images: one record per (patient, view, instant) attempted.
        model_id: bundle id or "gt", stored in the file metadata too.

    Returns:
        Paths of the two files.

    Raises:
        EchoBatchError: ``OUT`` is not writable or full.
    """
    meta = {"model_id": model_id}
    p_path, i_path = out / PATIENTS_FILE, out / IMAGES_FILE
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_files(
            [
                (i_path, parquet_writer(to_table(list(images), ImageRecord), meta)),
                (p_path, parquet_writer(to_table(list(patients), PatientRecord), meta)),
            ]
        )
    except OSError as exc:
        raise EchoBatchError(f"cannot write to OUT {out}: {exc}") from exc
    return p_path, i_path


def write_run_record(out: Path, record: dict[str, Any]) -> Path:
    """Write ``run.json`` atomically (never through a link planted in ``OUT``).

    Raises:
        EchoBatchError: ``OUT`` is not writable or full.
    """
    path = out / RUN_FILE
    try:
        atomic.write_text(path, json.dumps(record, indent=2, default=str) + "\n")
    except OSError as exc:
        raise EchoBatchError(f"cannot write to OUT {out}: {exc}") from exc
    return path
