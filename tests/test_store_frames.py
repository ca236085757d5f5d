"""frames.parquet in the output store: parts, latest wins, order, pre-1.3 OUTs, leftovers.

Every chunk of schema 1.3 writes a frames part (zero rows without a loop) before its patients
part; compaction writes ``frames.parquet`` (zero rows without a loop) with each patient's frame
rows from the same source as its patient row, ordered by patient (discovery order), view, frame.
Parts and compacted files of schema < 1.3 have no frames file and still resume and compact.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from echo_batch.errors import EchoBatchError
from echo_batch.store import compaction
from echo_batch.store.files import (
    FRAMES_FILE,
    IMAGES_FILE,
    PATIENTS_FILE,
    schema_version,
    write_results,
)
from echo_batch.store.parts import OutputStore, measure_config
from echo_batch.store.records import (
    SCHEMA_VERSION,
    ChunkResult,
    FrameRecord,
    ImageRecord,
    PatientRecord,
)

CURRENT = tuple(int(part) for part in SCHEMA_VERSION.split("."))
GT = measure_config("gt", None)
MODEL = measure_config("m@1", None)
_PATIENT_FIELDS = [f.name for f in dataclasses.fields(PatientRecord)]
NEW_IN_1_3 = {
    PATIENTS_FILE: _PATIENT_FIELDS[_PATIENT_FIELDS.index("measure_config") + 1 :],
    IMAGES_FILE: ["frame"],
}


def loop(pid: str, view: str, n: int, volume: float = 100.0) -> list[FrameRecord]:
    """``n`` frames of one view, volume ``volume + frame``; ED at frame 0, ES at frame n - 1."""
    return [
        FrameRecord(
            pid,
            view,
            k,
            time_ms=20.0 * k,
            volume_single_ml=volume + k,
            beat=0,
            is_ed=k == 0,
            is_es=k == n - 1,
        )
        for k in range(n)
    ]


def chunk(*pids: str, frames: list[FrameRecord] = (), ef: float = 55.0) -> ChunkResult:
    result = ChunkResult(frames=list(frames))
    for pid in pids:
        result.patients.append(PatientRecord(pid, "testing", "ok", ef_pct=ef, model_id="m@1"))
        result.images.append(ImageRecord(pid, "2CH", "ED", "ok", volume_single_ml=ef))
    return result


def read_frames(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / FRAMES_FILE)


def keys(frames: pd.DataFrame) -> list[tuple[str, str, int]]:
    return list(zip(frames.patient_id, frames.view, frames.frame, strict=True))


def as_schema_1_2(path: Path) -> None:
    """Rewrite a Parquet file as echo-batch 1.2 wrote it: no 1.3 columns, version 1.2."""
    table = pq.read_table(path)
    kind = PATIENTS_FILE if path.name.endswith(PATIENTS_FILE) else IMAGES_FILE
    table = table.drop_columns(NEW_IN_1_3[kind])
    metadata = dict(table.schema.metadata)
    metadata[b"echo_batch.schema_version"] = b"1.2"
    pq.write_table(table.replace_schema_metadata(metadata), path)


# ------------------------------------------------------------------------------------ parts


def test_write_part_rejects_frame_rows_of_patients_not_in_the_chunk(tmp_path):
    with pytest.raises(ValueError, match="frame rows of patients not in the chunk: b"):
        OutputStore(tmp_path).write_part(chunk("a", frames=loop("b", "2CH", 3)), 0)
    assert not (tmp_path / "parts").exists()


def test_frames_part_holds_the_chunk_frames_as_given(tmp_path):
    rows = loop("a", "4CH", 3) + loop("a", "2CH", 2)
    stem = OutputStore(tmp_path).write_part(chunk("a", frames=rows), 0)
    part = pq.read_table(tmp_path / "parts" / f"{stem}.frames.parquet")
    assert part.num_rows == 5
    assert part["view"].to_pylist() == ["4CH"] * 3 + ["2CH"] * 2
    assert part.schema.field("volume_single_ml").metadata[b"unit"] == b"mL"
    assert part.schema.field("time_ms").metadata[b"unit"] == b"ms"
    assert schema_version(tmp_path / "parts" / f"{stem}.frames.parquet") == CURRENT


# ------------------------------------------------------------------------------------ compaction


def test_compacted_frames_equal_write_results_of_the_ordered_rows(tmp_path):
    """Chunks finish out of order and hold their frames shuffled; the output is ordered."""
    order = ["p3", "p1", "p2"]
    rows = {
        "p1": loop("p1", "4CH", 4, 10.0) + loop("p1", "2CH", 3, 20.0),
        "p2": [],  # stills only
        "p3": loop("p3", "2CH", 12, 30.0),  # frame 10 sorts after 9, not after 1
    }
    shuffled = {pid: random.Random(7).sample(r, len(r)) for pid, r in rows.items()}
    store = OutputStore(tmp_path / "store")
    with store.lock():
        store.write_part(chunk("p2", "p1", frames=shuffled["p2"] + shuffled["p1"]), 1)
        store.write_part(chunk("p3", frames=shuffled["p3"]), 0)
        paths = store.compact(order, "m@1")
    expected = [
        *rows["p3"],
        *[r for r in rows["p1"] if r.view == "2CH"],
        *[r for r in rows["p1"] if r.view == "4CH"],
    ]
    reference = write_results(tmp_path / "reference", [], [], frames=expected, model_id="m@1")
    assert pq.read_table(paths.frames).equals(pq.read_table(reference.frames))
    frames = read_frames(tmp_path / "store")
    assert keys(frames)[:3] == [("p3", "2CH", 0), ("p3", "2CH", 1), ("p3", "2CH", 2)]
    assert keys(frames)[12:15] == [("p1", "2CH", 0), ("p1", "2CH", 1), ("p1", "2CH", 2)]
    assert pq.read_schema(paths.frames).metadata[b"echo_batch.model_id"] == b"m@1"
    assert not (tmp_path / "store" / "parts").exists()


def test_an_out_without_loops_has_a_frames_file_with_zero_rows_and_the_schema(tmp_path):
    store = OutputStore(tmp_path)
    store.write_part(chunk("a", "b"), 0)
    store.compact(["a", "b"], "m@1")
    frames = pq.read_table(tmp_path / FRAMES_FILE)
    assert frames.num_rows == 0
    assert frames.column_names == [f.name for f in dataclasses.fields(FrameRecord)]
    assert frames.schema.field("frame").type == pa.int64()


def test_later_part_wins_with_its_own_frame_rows_or_none(tmp_path):
    first = OutputStore(tmp_path)
    first.write_part(chunk("a", "b", frames=loop("a", "2CH", 5) + loop("b", "2CH", 5)), 0)
    second = OutputStore(tmp_path)
    second.write_part(chunk("a", frames=loop("a", "2CH", 3, volume=500.0)), 0)  # redone
    second.write_part(chunk("b"), 1)  # redone from its stills: no frames now
    second.compact(["a", "b"], "m@1")
    frames = read_frames(tmp_path)
    assert keys(frames) == [("a", "2CH", 0), ("a", "2CH", 1), ("a", "2CH", 2)]
    assert frames.volume_single_ml.tolist() == [500.0, 501.0, 502.0]


def test_frames_of_an_earlier_compaction_are_kept_for_patients_not_redone(tmp_path):
    first = OutputStore(tmp_path)
    with first.lock():
        first.write_part(chunk("a", "b", frames=loop("a", "4CH", 2) + loop("b", "4CH", 2)), 0)
        first.compact(["a", "b"], "m@1")
    second = OutputStore(tmp_path)
    with second.lock():
        second.write_part(chunk("b", "c", frames=loop("b", "2CH", 1, 9.0) + loop("c", "2CH", 1)), 0)
        second.compact(["c", "b"], "m@1")
    frames = read_frames(tmp_path)
    assert keys(frames) == [("c", "2CH", 0), ("b", "2CH", 0), ("a", "4CH", 0), ("a", "4CH", 1)]
    assert frames.volume_single_ml.tolist() == [100.0, 9.0, 100.0, 101.0]


def test_no_resume_compaction_drops_the_frames_of_other_settings(tmp_path):
    OutputStore(tmp_path, GT).write_part(chunk("a", "gone", frames=loop("gone", "2CH", 4)), 0)
    store = OutputStore(tmp_path, MODEL)
    store.write_part(chunk("a", frames=loop("a", "2CH", 2)), 0)
    store.compact(["a"], "m@1", keep_other_configs=False)
    assert keys(read_frames(tmp_path)) == [("a", "2CH", 0), ("a", "2CH", 1)]


def test_recompaction_after_a_crash_before_the_parts_were_deleted_has_no_duplicates(
    tmp_path, monkeypatch
):
    store = OutputStore(tmp_path)
    store.write_part(chunk("a", frames=loop("a", "2CH", 3)), 0)
    monkeypatch.setattr(OutputStore, "_delete_parts", lambda self, consumed: None)  # "crash"
    store.compact(["a"], "m@1")
    monkeypatch.undo()
    assert len(list((tmp_path / "parts").iterdir())) == 3
    OutputStore(tmp_path).compact(["a"], "m@1")
    assert keys(read_frames(tmp_path)) == [("a", "2CH", 0), ("a", "2CH", 1), ("a", "2CH", 2)]


@pytest.mark.parametrize("batch_rows", [65_536, 2])
def test_frame_order_by_hand(tmp_path, monkeypatch, batch_rows):
    """Patients in discovery order, then view, then frame; equal keys keep their order.

    With 2-row batches the tied rows (tags 4 and 5) reach the buckets in different batches.
    """
    monkeypatch.setattr(compaction, "BATCH_ROWS", batch_rows)
    rows = [("x", "4CH", 0), ("y", "2CH", 1), ("x", "2CH", 10), ("y", "2CH", 0)]
    rows += [("x", "2CH", 2), ("x", "2CH", 2)]
    frames = [
        FrameRecord(pid, view, frame, volume_single_ml=float(tag))
        for tag, (pid, view, frame) in enumerate(rows)
    ]
    store = OutputStore(tmp_path)
    store.write_part(chunk("x", "y", frames=frames), 0)
    store.compact(["y", "x"], "m@1")
    assert read_frames(tmp_path).volume_single_ml.tolist() == [3, 1, 4, 5, 2, 0]


# ------------------------------------------------------------------------------------ pre-1.3


@pytest.fixture()
def out_1_2(tmp_path):
    """An OUT of echo-batch 1.2: compacted p1 and p2, and a part redoing p2; no frames files."""
    old = OutputStore(tmp_path, MODEL)
    old.write_part(chunk("p1", "p2", ef=40.0), 0)
    old.compact(["p1", "p2"], "m@1")
    (tmp_path / FRAMES_FILE).unlink()
    crashed = OutputStore(tmp_path, MODEL)
    stem = crashed.write_part(chunk("p2", ef=45.0), 0)
    (tmp_path / "parts" / f"{stem}.frames.parquet").unlink()
    for path in [tmp_path / PATIENTS_FILE, tmp_path / IMAGES_FILE, *tmp_path.glob("parts/*")]:
        as_schema_1_2(path)
    return tmp_path


def test_an_out_of_schema_1_2_resumes_and_compacts_without_frames(out_1_2):
    assert schema_version(out_1_2 / PATIENTS_FILE) == (1, 2)
    store = OutputStore(out_1_2, MODEL)
    assert store.done_patient_ids() == {"p1", "p2"}
    store.check_config()
    store.write_part(chunk("p3", frames=loop("p3", "2CH", 2)), 0)
    with store.lock():
        store.compact(["p1", "p2", "p3"], "m@1")
    patients = pd.read_parquet(out_1_2 / PATIENTS_FILE)
    assert patients.patient_id.tolist() == ["p1", "p2", "p3"]
    assert patients.ef_pct.tolist() == [40.0, 45.0, 55.0]
    assert patients.n_beats.isna().all(), "columns added in 1.3 read as null"
    assert pd.read_parquet(out_1_2 / IMAGES_FILE).frame.isna().all()
    assert keys(read_frames(out_1_2)) == [("p3", "2CH", 0), ("p3", "2CH", 1)]
    assert schema_version(out_1_2 / FRAMES_FILE) == CURRENT
    assert not (out_1_2 / "parts").exists(), "the 1.2 part was consumed and deleted"


def test_a_patients_file_of_schema_1_3_without_its_frames_file_is_an_error(tmp_path):
    stem = OutputStore(tmp_path).write_part(chunk("a", frames=loop("a", "2CH", 2)), 0)
    (tmp_path / "parts" / f"{stem}.frames.parquet").unlink()
    # written by this version (1.3 or later: a frames part is always written)
    version = SCHEMA_VERSION.replace(".", r"\.")
    with pytest.raises(EchoBatchError, match=rf"part {stem} has no frames file .*schema {version}"):
        OutputStore(tmp_path).done_patient_ids()
    with pytest.raises(EchoBatchError, match="has no frames file"):
        OutputStore(tmp_path).compact(["a"], "m@1")
    assert (tmp_path / "parts" / f"{stem}.patients.parquet").exists(), "nothing consumed"
    (tmp_path / "parts" / f"{stem}.patients.parquet").unlink()
    (tmp_path / "parts" / f"{stem}.images.parquet").unlink()
    write_results(tmp_path, chunk("a").patients, [], model_id="m@1")
    (tmp_path / FRAMES_FILE).unlink()
    with pytest.raises(EchoBatchError, match=rf"{PATIENTS_FILE} has no frames file"):
        OutputStore(tmp_path).compact(["a"], "m@1")


def test_schema_version_of_a_file_without_one_is_none(tmp_path):
    pq.write_table(pa.table({"x": [1]}), tmp_path / "plain.parquet")
    assert schema_version(tmp_path / "plain.parquet") is None
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(EchoBatchError, match="unreadable Parquet"):
        schema_version(tmp_path / "junk.parquet")


# ------------------------------------------------------------------------------------ leftovers


def test_frames_part_of_a_crashed_chunk_is_a_leftover_removed_under_the_lock(tmp_path, caplog):
    store = OutputStore(tmp_path)
    store.write_part(chunk("a", frames=loop("a", "2CH", 2)), 0)
    crashed = OutputStore(tmp_path)  # died after its images and frames parts, before patients
    stem = crashed.write_part(chunk("b", frames=loop("b", "2CH", 2)), 1)
    (tmp_path / "parts" / f"{stem}.patients.parquet").unlink()
    assert store.done_patient_ids() == {"a"}
    OutputStore(tmp_path).compact(["a"], "m@1")  # without the lock: leftovers stay
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == [
        f"{stem}.frames.parquet",
        f"{stem}.images.parquet",
    ]
    final = OutputStore(tmp_path)
    with caplog.at_level("WARNING"), final.lock():
        final.compact(["a"], "m@1")
    assert f"leftover of a crashed run: {stem}.frames.parquet" in caplog.text
    assert not (tmp_path / "parts").exists()
    assert keys(read_frames(tmp_path)) == [("a", "2CH", 0), ("a", "2CH", 1)]


def test_frames_part_of_this_run_is_never_a_leftover(tmp_path):
    store = OutputStore(tmp_path)
    with store.lock():
        store.write_part(chunk("a"), 0)
        stem = store.write_part(chunk("b", frames=loop("b", "2CH", 2)), 1)
        (tmp_path / "parts" / f"{stem}.patients.parquet").unlink()  # being written right now
        store.compact(["a"], "m@1")
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == [
        f"{stem}.frames.parquet",
        f"{stem}.images.parquet",
    ]
