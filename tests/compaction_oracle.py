"""The in-memory compaction echo-batch used before it streamed (commit 5371b62), as a test oracle.

Every table of every source is read whole, the winning rows are concatenated and put in order
with one sort; :func:`in_memory_compaction` returns the three tables the store then wrote. The
streaming compaction (:mod:`echo_batch.store.compaction`) must give the same tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from echo_batch.store.parts import OutputStore
from echo_batch.store.records import FrameRecord, ImageRecord, PatientRecord, arrow_schema
from echo_batch.store.tables import compaction_order, conform


def read_conformed(path: Path, schema: pa.Schema) -> pa.Table:
    """A whole Parquet file conformed to ``schema``."""
    return conform(pq.read_table(path), schema, path)


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
    """Rows grouped by patient in ``order``, then sorted by ``view``, then by ``frame`` (stable)."""
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


def in_memory_compaction(
    store: OutputStore, patient_ids: Sequence[str], *, keep_other_configs: bool = True
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """``(patients, images, frames)`` as the in-memory compaction computed them (nothing written).

    Call it before :meth:`OutputStore.compact`, which deletes the parts it reads.
    """
    p_schema, i_schema = arrow_schema(PatientRecord), arrow_schema(ImageRecord)
    f_schema = arrow_schema(FrameRecord)
    sources = store._sources()
    patient_tables = [read_conformed(s.patients, p_schema) for s in sources]
    winner: dict[str, int] = {}
    config_of: dict[str, str | None] = {}
    for index, table in enumerate(patient_tables):
        pids = table["patient_id"].to_pylist()
        winner.update(dict.fromkeys(pids, index))
        config_of.update(zip(pids, table["measure_config"].to_pylist(), strict=True))
    if not keep_other_configs:
        for pid, config in config_of.items():
            if config != store.config:
                del winner[pid]
    order = compaction_order(patient_ids, winner)
    won: list[list[str]] = [[] for _ in sources]
    for pid, index in winner.items():
        won[index].append(pid)
    patients, images, frames = [], [], []
    for index, (source, table) in enumerate(zip(sources, patient_tables, strict=True)):
        if not won[index]:
            continue
        keep = pa.array(won[index], pa.string())

        def rows_of(t: pa.Table, keep: pa.Array = keep) -> pa.Table:
            return t.filter(pc.is_in(t["patient_id"], value_set=keep))

        patients.append(rows_of(table))
        images.append(rows_of(read_conformed(source.images, i_schema)))
        if source.frames is not None:
            frames.append(rows_of(read_conformed(source.frames, f_schema)))
    return (
        ordered_patients(concat(patients, p_schema), order),
        ordered_images(concat(images, i_schema), order),
        ordered_frames(concat(frames, f_schema), order),
    )
