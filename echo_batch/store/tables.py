"""Pure table operations of compaction: the row order of the output, schema conformance."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa

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
