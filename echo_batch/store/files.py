"""The files of ``OUT`` (README.md "Outputs") and the one-shot writers.

Layout of ``OUT``: ``patients.parquet``, ``images.parquet`` and ``frames.parquet`` (the results;
``frames.parquet`` has zero rows when no loop was measured, and is absent from an ``OUT`` of
schema < 1.3), ``run.json`` (what ran, with which options, how long), ``parts/`` (three Parquet
parts per finished chunk until a run compacts them, :mod:`echo_batch.store.parts`) and the run lock
(:mod:`echo_batch.store.lock`).

Every file is replaced atomically and durably (:mod:`echo_batch.atomic`). The schema version
and the units are in the key-value metadata of every Parquet file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from echo_batch import atomic
from echo_batch.errors import EchoBatchError
from echo_batch.store.records import (
    SCHEMA_VERSION,
    UNITS,
    FrameRecord,
    ImageRecord,
    PatientRecord,
    to_table,
)

PATIENTS_FILE = "patients.parquet"
IMAGES_FILE = "images.parquet"
FRAMES_FILE = "frames.parquet"
RUN_FILE = "run.json"
LOCK_FILE = ".echo-batch.lock"
LOCK_HOLDER_FILE = ".echo-batch.lock.json"
PARTS_DIR = "parts"

ROW_GROUP_ROWS = 16_384
"""A streamed result file gathers the tables it is given into row groups of at least this many
rows (or :data:`ROW_GROUP_BYTES`). The writer keeps every row group's metadata until the file
is closed: with a row group per 128-patient bucket, compacting 100,000 patients wrote 782 row
groups per file (5.1 MB of footer for the patients file) and the compaction's RSS rose by
118 MB, against 35 MB with 1,024-patient buckets."""
ROW_GROUP_BYTES = 16 * 2**20
"""Arrow bytes at which a row group is written before it reaches :data:`ROW_GROUP_ROWS`, so that
wide rows never hold more than this in memory."""
PATIENTS_PART_SUFFIX = ".patients.parquet"
IMAGES_PART_SUFFIX = ".images.parquet"
FRAMES_PART_SUFFIX = ".frames.parquet"
FRAMES_SINCE = (1, 3)
"""First schema version whose patients files always come with a frames file (part or compacted)."""


class ResultFiles(NamedTuple):
    """Paths of the three result files of ``OUT``."""

    patients: Path
    images: Path
    frames: Path


def schema_version(path: Path) -> tuple[int, ...] | None:
    """The schema version in a Parquet file's metadata, e.g. ``(1, 3)``, reading only its footer.

    Returns:
        None for a file without a readable version (not written by echo-batch).

    Raises:
        EchoBatchError: the file is not readable Parquet.
    """
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid) as exc:
        raise EchoBatchError(f"{path}: unreadable Parquet file: {exc}") from exc
    version = metadata.get(b"echo_batch.schema_version", b"").decode(errors="replace")
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return None


def result_schema(schema: pa.Schema, extra_metadata: dict[str, str]) -> pa.Schema:
    """``schema`` with the schema version, units and ``extra_metadata`` in its metadata.

    Args:
        schema: schema of the rows to write.
        extra_metadata: stored as ``echo_batch.<key>`` in the file's key-value metadata.
    """
    metadata = dict(schema.metadata or {})
    metadata.update(
        {
            b"echo_batch.schema_version": SCHEMA_VERSION.encode(),
            b"echo_batch.units": json.dumps(UNITS).encode(),
            **{f"echo_batch.{k}".encode(): v.encode() for k, v in extra_metadata.items()},
        }
    )
    return schema.with_metadata(metadata)


def parquet_writer(table: pa.Table, extra_metadata: dict[str, str]) -> atomic.Writer:
    """A writer of ``table`` as zstd Parquet with the schema version, units and ``extra_metadata``.

    Args:
        table: rows to write.
        extra_metadata: stored as ``echo_batch.<key>`` in the file's key-value metadata.

    Returns:
        A writer for :func:`echo_batch.atomic.write_file`.
    """
    table = table.replace_schema_metadata(result_schema(table.schema, extra_metadata).metadata)

    def write(fh: BinaryIO) -> None:
        pq.write_table(table, fh, compression="zstd")

    return write


def streaming_parquet_writer(
    schema: pa.Schema, tables: Callable[[], Iterable[pa.Table]], extra_metadata: dict[str, str]
) -> atomic.Writer:
    """A writer of the tables ``tables()`` yields, as :func:`parquet_writer`.

    Consecutive tables are gathered into one row group until it holds :data:`ROW_GROUP_ROWS`
    rows or :data:`ROW_GROUP_BYTES` bytes, so that the row groups (and the footer the writer keeps
    in memory) do not multiply with small tables; only that much is held at a time. ``tables`` is
    called when the file is written.

    Args:
        schema: schema of every yielded table.
        tables: returns the tables to write, in order.
        extra_metadata: stored as ``echo_batch.<key>`` in the file's key-value metadata.

    Returns:
        A writer for :func:`echo_batch.atomic.write_file`.
    """
    schema = result_schema(schema, extra_metadata)

    def write(fh: BinaryIO) -> None:
        with pq.ParquetWriter(fh, schema, compression="zstd") as writer:
            pending: list[pa.Table] = []
            rows = size = 0
            for table in tables():
                pending.append(table)
                rows, size = rows + table.num_rows, size + table.nbytes
                if rows >= ROW_GROUP_ROWS or size >= ROW_GROUP_BYTES:
                    writer.write_table(pa.concat_tables(pending), row_group_size=rows)
                    pending, rows, size = [], 0, 0
            if pending:
                writer.write_table(pa.concat_tables(pending), row_group_size=max(rows, 1))

    return write


def write_results(
    out: Path,
    patients: Sequence[PatientRecord],
    images: Sequence[ImageRecord],
    *,
    frames: Sequence[FrameRecord] = (),
    model_id: str,
) -> ResultFiles:
    """Write ``patients.parquet``, ``images.parquet`` and ``frames.parquet`` atomically.

    The patients file is renamed into place last, so a reader that finds it finds the other two
    of the same write. ``frames.parquet`` is written with zero rows when there are no frames.

    Args:
        out: output folder (created).
        patients: one record per discovered patient.
        images: one record per (patient, view, instant) attempted.
        frames: one record per segmented loop frame, in the order to write.
        model_id: bundle id or "gt", stored in the file metadata too.

    Returns:
        Paths of the three files.

    Raises:
        EchoBatchError: ``OUT`` is not writable or full.
    """
    meta = {"model_id": model_id}
    paths = ResultFiles(out / PATIENTS_FILE, out / IMAGES_FILE, out / FRAMES_FILE)
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_files(
            [
                (paths.images, parquet_writer(to_table(list(images), ImageRecord), meta)),
                (paths.frames, parquet_writer(to_table(list(frames), FrameRecord), meta)),
                (paths.patients, parquet_writer(to_table(list(patients), PatientRecord), meta)),
            ]
        )
    except OSError as exc:
        raise EchoBatchError(f"cannot write to OUT {out}: {exc}") from exc
    return paths


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
