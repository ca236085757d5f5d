"""Pure table operations of compaction: row order, schema conformance, concatenation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from echo_batch.errors import EchoBatchError


def compaction_order(patient_ids: Sequence[str], known: Iterable[str]) -> list[str]:
    """Row order of the compacted files.

    Args:
        patient_ids: discovered patients, in discovery order; each must be in ``known``.
        known: patients that have a record (compacted file or parts).

    Returns:
        ``patient_ids`` followed by the known patients no longer discovered, sorted.

    Raises:
        EchoBatchError: an id is repeated in ``patient_ids`` or has no record at all.
    """
    known = set(known)
    seen: set[str] = set()
    repeated: list[str] = []
    for pid in patient_ids:
        if pid in seen:
            repeated.append(pid)
        seen.add(pid)
    if repeated:
        raise EchoBatchError(f"patient ids listed more than once: {', '.join(repeated[:10])}")
    missing = [pid for pid in patient_ids if pid not in known]
    if missing:
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise EchoBatchError(
            f"no record for {len(missing)} discovered patient(s): {', '.join(missing[:10])}{more}"
        )
    return list(patient_ids) + sorted(known - seen)


def conform(table: pa.Table, schema: pa.Schema, path: Path) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in order; missing nullable columns are null.

    Files of an earlier schema version (without a column added since) are read this way.

    Raises:
        EchoBatchError: a non-nullable column is missing or a column cannot be cast.
    """
    columns = []
    try:
        for field in schema:
            if field.name in table.column_names:
                columns.append(table[field.name].cast(field.type))
            elif field.nullable:
                columns.append(pa.nulls(table.num_rows, field.type))
            else:
                raise EchoBatchError(f"{path}: column {field.name!r} is missing")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise EchoBatchError(f"{path}: does not match the output schema: {exc}") from exc
    return pa.Table.from_arrays(columns, schema=schema)


def read_conformed(path: Path, schema: pa.Schema) -> pa.Table:
    """A Parquet file conformed to ``schema`` (see :func:`conform`).

    Raises:
        EchoBatchError: the file is unreadable or does not match the schema.
    """
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise EchoBatchError(f"{path}: unreadable Parquet file: {exc}") from exc
    return conform(table, schema, path)


def concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """The rows of ``tables`` (all of ``schema``), or an empty table of ``schema``."""
    return pa.concat_tables(tables) if tables else schema.empty_table()


def ordered_patients(table: pa.Table, order: Sequence[str]) -> pa.Table:
    """Rows in ``order``, one per id (the last row of an id repeated within one source wins)."""
    row_of = dict(zip(table["patient_id"].to_pylist(), range(table.num_rows), strict=True))
    return table.take(pa.array([row_of[pid] for pid in order], pa.int64()))


def ordered_images(table: pa.Table, order: Sequence[str]) -> pa.Table:
    """Rows grouped by patient in ``order``, each patient's rows in their original order."""
    rank = pc.index_in(table["patient_id"], value_set=pa.array(order, pa.string()))
    keyed = pa.table({"rank": rank, "row": pa.array(range(table.num_rows), pa.int64())})
    indices = pc.sort_indices(keyed, sort_keys=[("rank", "ascending"), ("row", "ascending")])
    return table.take(indices)


def ordered_frames(table: pa.Table, order: Sequence[str]) -> pa.Table:
    """Rows grouped by patient in ``order``, then sorted by ``view``, then by ``frame``.

    The sort is stable: rows equal in all three keep their original order.
    """
    rank = pc.index_in(table["patient_id"], value_set=pa.array(order, pa.string()))
    keyed = pa.table(
        {
            "rank": rank,
            "view": table["view"],
            "frame": table["frame"],
            "row": pa.array(range(table.num_rows), pa.int64()),
        }
    )
    keys = [("rank", "ascending"), ("view", "ascending"), ("frame", "ascending")]
    indices = pc.sort_indices(keyed, sort_keys=[*keys, ("row", "ascending")])
    return table.take(indices)
