"""Streaming compaction: each patient's rows from the source that holds its latest record, in
output order, written row group by row group with memory bounded by a bucket of patients.

The output order (discovery order, see :func:`echo_batch.store.tables.compaction_order`) is not
the order of the sources (a resumed run's parts, an earlier compacted file), so the rows are put
in order in two steps, a distribution sort:

1. every source file is read in record batches (never whole) and each kept row goes, with its
   output position (``rank``) and its arrival number (``seq``), to the bucket of its patient's
   position: patients ``[0, W)`` to bucket 0, ``[W, 2W)`` to bucket 1, ... (Arrow IPC files in
   a private folder of ``OUT``);
2. the buckets are read back one at a time, sorted by rank (then the kind's own keys, then
   arrival) and handed to the Parquet writer as one row group each.

So at most one bucket (``W`` patients' rows) and one record batch are in memory at once, whatever
the cohort size, and the result is the same table the in-memory compaction produced: the rows of a
patient in the order they arrived in (images), or sorted by view and frame, ties in arrival order
(frames), or its last row (patients).

Per-patient state (which source won each patient, its rank) stays in memory: tens of bytes per
patient, about 20 MB at 100,000 patients.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from echo_batch.errors import EchoBatchError
from echo_batch.store.tables import conform

BATCH_ROWS = 8_192
"""Rows per record batch read from a source file. A wide batch costs several times its Parquet
size once decoded, conformed and filtered: with 65,536 rows, recompacting the 100,000-patient
scale run's files peaked at 104 MB of Arrow memory, with 8,192 at 19 MB."""
MIN_BUCKET_PATIENTS = 128
"""Patients per bucket: a bucket of frames holds about 80 rows per loop patient (1.5 MB here).
With 1,024, every cohort under 1,024 patients was one bucket whose size grew with the cohort:
compacting 1,000 DICOM loop patients cost +37 MB of RSS against +24 MB for 100."""
MAX_BUCKETS = 4096
"""Buckets are widened beyond :data:`MIN_BUCKET_PATIENTS` to keep at most this many in the stage
folder (from 524,288 patients on). No bucket file stays open: each write is a closed piece."""

_RANK, _SEQ = "_rank", "_seq"


@dataclass(frozen=True)
class Won:
    """The patients one source supplies to the output.

    Attributes:
        patient_ids: ids whose latest record is in this source.
        ranks: their output positions (int64), aligned with ``patient_ids``.
    """

    patient_ids: pa.Array
    ranks: pa.Array

    @classmethod
    def empty(cls) -> Won:
        return cls(pa.array([], pa.string()), pa.array([], pa.int64()))


def winners_by_source(order: Sequence[str], source_of: dict[str, int], sources: int) -> list[Won]:
    """Split the output order by source.

    Args:
        order: output patient order.
        source_of: index of the source holding each patient's latest record (every id of
            ``order`` must be there).
        sources: number of sources.

    Returns:
        One :class:`Won` per source (empty for a source that supplies no patient).
    """
    ids: list[list[str]] = [[] for _ in range(sources)]
    ranks: list[list[int]] = [[] for _ in range(sources)]
    for rank, pid in enumerate(order):
        index = source_of[pid]
        ids[index].append(pid)
        ranks[index].append(rank)
    return [
        Won(pa.array(i, pa.string()), pa.array(r, pa.int64())) if i else Won.empty()
        for i, r in zip(ids, ranks, strict=True)
    ]


def bucket_patients(patients: int) -> int:
    """Patients per bucket for an output of ``patients`` patients (see :data:`MAX_BUCKETS`)."""
    return max(MIN_BUCKET_PATIENTS, math.ceil(patients / MAX_BUCKETS))


def merged_tables(
    files: Sequence[Path | None],
    won: Sequence[Won],
    patients: int,
    schema: pa.Schema,
    stage: Path,
    *,
    sort_keys: Sequence[str] = (),
    last_per_patient: bool = False,
) -> Iterator[pa.Table]:
    """The rows of ``files`` that belong to the patients each file won, in output order.

    Args:
        files: one file per source (None: the source has no file of this kind, no rows).
        won: per source, the patients it supplies (:func:`winners_by_source`).
        patients: number of output patients (ranks are ``0 .. patients - 1``).
        schema: output schema; every file is conformed to it
            (:func:`echo_batch.store.tables.conform`).
        stage: an empty private folder for the buckets (removed by the caller).
        sort_keys: columns that order a patient's rows after its rank (frames: view, frame);
            ties keep their arrival order (source order, then row order within a source).
        last_per_patient: keep only the last row of each patient (patients: a repeated id
            within one source keeps its last row).

    Yields:
        Tables of ``schema``, one per non-empty bucket, in output order.

    Raises:
        EchoBatchError: a file is unreadable or does not match the schema.
    """
    width = bucket_patients(patients)
    spill_schema = schema.append(pa.field(_RANK, pa.int64())).append(pa.field(_SEQ, pa.int64()))
    buckets = _Buckets(stage, spill_schema)
    try:
        seq = 0
        for path, supplies in zip(files, won, strict=True):
            if path is None or len(supplies.patient_ids) == 0:
                continue
            for table in _read_batches(path, schema):
                index = pc.index_in(table["patient_id"], value_set=supplies.patient_ids)
                keep = pc.is_valid(index)
                table = table.filter(keep)
                if table.num_rows == 0:
                    continue
                rank = supplies.ranks.take(index.filter(keep))
                table = table.append_column(_RANK, rank).append_column(
                    _SEQ, pa.array(range(seq, seq + table.num_rows), pa.int64())
                )
                seq += table.num_rows
                buckets.add(table, pc.divide(rank, width))
    finally:
        buckets.close()
    for number in buckets.numbers():
        table = buckets.read(number)
        keys = [(_RANK, "ascending"), *((k, "ascending") for k in sort_keys), (_SEQ, "ascending")]
        table = table.take(pc.sort_indices(table, sort_keys=keys))
        if last_per_patient:
            table = table.filter(_last_of_each(table[_RANK]))
        yield table.drop_columns([_RANK, _SEQ]).combine_chunks()


def _read_batches(path: Path, schema: pa.Schema) -> Iterator[pa.Table]:
    """``path`` in record batches, each conformed to ``schema``.

    Only the columns of ``schema`` are read. The file's schema is checked first, so that a file
    without rows that lacks a required column is an error too.
    """
    try:
        with pq.ParquetFile(path) as parquet:
            present = parquet.schema_arrow
            conform(present.empty_table(), schema, path)
            columns = [name for name in schema.names if name in present.names]
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                yield conform(pa.Table.from_batches([batch]), schema, path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise EchoBatchError(f"{path}: unreadable Parquet file: {exc}") from exc


def _last_of_each(ranks: pa.ChunkedArray) -> pa.Array:
    """True for the last row of each run of equal values in a sorted column."""
    values = ranks.combine_chunks()
    if len(values) == 0:
        return pa.array([], pa.bool_())
    differs = pc.not_equal(values.slice(0, len(values) - 1), values.slice(1))
    return pa.concat_arrays([differs, pa.array([True])])


class _Buckets:
    """Buckets as Arrow IPC stream files, zstd-compressed, one closed piece per write.

    A piece is written and closed at once, so that no writer (its buffers and compression state)
    stays open per bucket: with a writer open per bucket, recompacting 8,192 patients in
    128-patient buckets took 13.3 MB of Arrow memory against 4.0 MB for 2,048.
    """

    def __init__(self, stage: Path, schema: pa.Schema) -> None:
        self.stage = stage
        self.schema = schema
        self._pieces: dict[int, int] = {}  # bucket number -> pieces written

    def _path(self, number: int, piece: int) -> Path:
        return self.stage / f"bucket-{number:06d}-{piece:06d}.arrows"

    def add(self, table: pa.Table, numbers: pa.Array) -> None:
        """Append the rows of ``table`` to the bucket each row's number names."""
        options = pa.ipc.IpcWriteOptions(compression="zstd")
        for number in pc.unique(numbers).to_pylist():
            rows = table.filter(pc.equal(numbers, number))
            piece = self._pieces.get(number, 0)
            with (
                pa.OSFile(str(self._path(number, piece)), "wb") as sink,
                pa.ipc.new_stream(sink, self.schema, options=options) as writer,
            ):
                writer.write_table(rows)
            self._pieces[number] = piece + 1

    def close(self) -> None:
        """Nothing stays open (kept for the callers' ``finally``)."""

    def numbers(self) -> list[int]:
        """Numbers of the buckets that received rows, ascending."""
        return sorted(self._pieces)

    def read(self, number: int) -> pa.Table:
        """The whole bucket, its pieces in the order they were written."""
        tables = []
        for piece in range(self._pieces[number]):
            with pa.OSFile(str(self._path(number, piece)), "rb") as source:
                tables.append(pa.ipc.open_stream(source).read_all())
        return pa.concat_tables(tables)
