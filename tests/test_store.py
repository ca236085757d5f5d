"""The resumable output store: lock, atomic parts, resume set and compaction ("latest wins")."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from echo_batch.errors import EchoBatchError
from echo_batch.run.chunk import ChunkResult
from echo_batch.store.output import (
    IMAGES_FILE,
    LOCK_FILE,
    PATIENTS_FILE,
    OutputLockedError,
    OutputStore,
    compaction_order,
    new_run_id,
    parse_part_name,
    pending_patient_ids,
    write_results,
)
from echo_batch.store.records import SCHEMA_VERSION, ImageRecord, PatientRecord

VIEWS_INSTANTS = [("2CH", "ED"), ("2CH", "ES"), ("4CH", "ED"), ("4CH", "ES")]


def patient(pid: str, status: str = "ok", ef: float | None = 55.0, **kw) -> PatientRecord:
    error = None if status == "ok" else f"{pid}: something missing"
    return PatientRecord(
        pid, "testing", status, error=error, ef_pct=ef, qc_flags=["f"], model_id="m@1", **kw
    )


def images(pid: str, volume: float = 100.0, n: int = 4) -> list[ImageRecord]:
    return [
        ImageRecord(pid, view, instant, "ok", height=224, volume_single_ml=volume + k)
        for k, (view, instant) in enumerate(VIEWS_INSTANTS[:n])
    ]


def chunk(*records: tuple[PatientRecord, list[ImageRecord]]) -> ChunkResult:
    result = ChunkResult()
    for p, imgs in records:
        result.patients.append(p)
        result.images.extend(imgs)
    return result


def ids(n: int) -> list[str]:
    return [f"patient{i:04d}" for i in range(1, n + 1)]


def read(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_parquet(out / PATIENTS_FILE), pd.read_parquet(out / IMAGES_FILE)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------ lock


def test_lock_is_exclusive_and_released(tmp_path):
    out = tmp_path / "new" / "out"
    store = OutputStore(out)
    with store.lock():
        holder = json.loads((out / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid()
        assert holder["host"] == socket.gethostname()
        assert holder["started"]
        with pytest.raises(OutputLockedError, match=str(os.getpid())) as info:
            OutputStore(out).acquire_lock()
        assert str(out) in str(info.value)
        assert isinstance(info.value, EchoBatchError)
        with pytest.raises(OutputLockedError), store.lock():
            pass
        assert (out / LOCK_FILE).exists(), "a failed second lock must not remove the first"
    assert not (out / LOCK_FILE).exists()
    with store.lock():  # can be taken again
        pass


def test_lock_released_on_exception(tmp_path):
    store = OutputStore(tmp_path)
    with pytest.raises(RuntimeError), store.lock():
        raise RuntimeError("boom")
    assert not (tmp_path / LOCK_FILE).exists()


def test_stale_lock_of_dead_process_is_replaced(tmp_path, caplog):
    pid = dead_pid()
    stale = {"pid": pid, "host": socket.gethostname(), "started": "2020-01-01T00:00:00+00:00"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(stale))
    store = OutputStore(tmp_path)
    with caplog.at_level("WARNING"), store.lock():
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "stale lock" in caplog.text
    assert not (tmp_path / LOCK_FILE).exists()
    assert not [p for p in tmp_path.iterdir() if "lock" in p.name]


def test_lock_of_live_process_or_other_host_is_respected(tmp_path):
    lock = tmp_path / LOCK_FILE
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock.write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname(), "started": "x"}))
        with pytest.raises(OutputLockedError, match="running process"):
            OutputStore(tmp_path).acquire_lock()
    finally:
        proc.kill()
        proc.wait()
    lock.write_text(json.dumps({"pid": dead_pid(), "host": "elsewhere.invalid", "started": "x"}))
    with pytest.raises(OutputLockedError, match="another host"):
        OutputStore(tmp_path).acquire_lock()
    lock.write_text("")
    with pytest.raises(OutputLockedError, match="unreadable"):
        OutputStore(tmp_path).acquire_lock()
    assert lock.exists()


def test_lock_symlink_is_refused_and_target_untouched(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).symlink_to(target)
    with pytest.raises(EchoBatchError, match="symbolic link"):
        OutputStore(out).acquire_lock()
    assert target.read_text() == "keep me"
    assert (out / LOCK_FILE).is_symlink()
    (out / LOCK_FILE).unlink()
    (out / LOCK_FILE).symlink_to(tmp_path / "dangling")  # not created through a dangling link
    with pytest.raises(EchoBatchError, match="symbolic link"):
        OutputStore(out).acquire_lock()
    assert not (tmp_path / "dangling").exists()


def test_unwritable_out_is_a_clear_error(tmp_path):
    out = tmp_path / "file"
    out.write_text("not a folder")
    store = OutputStore(out)
    with pytest.raises(EchoBatchError, match="cannot write to OUT"):
        store.acquire_lock()
    with pytest.raises(EchoBatchError, match="cannot write to OUT"):
        store.write_part(chunk((patient("p1"), images("p1"))), 0)
    assert out.read_text() == "not a folder"


# ------------------------------------------------------------------------------------ parts


def test_parts_are_named_by_run_and_chunk(tmp_path):
    store = OutputStore(tmp_path)
    stem = store.write_part(chunk((patient("p1"), images("p1"))), 3)
    assert stem == f"{store.run_id}-00003"
    names = sorted(p.name for p in (tmp_path / "parts").iterdir())
    assert names == [f"{stem}.images.parquet", f"{stem}.patients.parquet"]
    meta = pq.read_schema(tmp_path / "parts" / names[1]).metadata
    assert meta[b"echo_batch.schema_version"] == SCHEMA_VERSION.encode()
    assert parse_part_name(names[0])[0].chunk == 3
    assert parse_part_name(f".{names[0]}.tmp-1-abc") is None
    later = OutputStore(tmp_path)
    assert later.run_id > store.run_id


def test_run_id_sorts_after_existing_even_if_clock_went_back():
    now = datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    first = new_run_id(now, 7)
    assert first == "20240102T030405000006Z-p7"
    assert new_run_id(now.replace(year=2023), 8, [first]) > first
    assert new_run_id(now.replace(year=2025), 8, [first]) > first


def test_write_part_rejects_inconsistent_chunks(tmp_path):
    store = OutputStore(tmp_path)
    with pytest.raises(ValueError, match="more than once"):
        store.write_part(chunk((patient("p1"), []), (patient("p1"), [])), 0)
    with pytest.raises(ValueError, match="not in the chunk"):
        store.write_part(chunk((patient("p1"), images("p2"))), 0)
    with pytest.raises(ValueError, match=">= 0"):
        store.write_part(chunk(), -1)


# ------------------------------------------------------------------------------------ compaction


def test_parts_compact_to_the_same_files_as_write_results(tmp_path):
    order = ["patient0003", "patient0001", "patient0004", "patient0002", "patient0005"]
    records = {
        pid: (patient(pid, ef=50.0 + i), images(pid, 100.0 + 10 * i, n=4 - i % 2))
        for i, pid in enumerate(order)
    }
    records["patient0005"] = (patient("patient0005", "failed", ef=None), [])
    store = OutputStore(tmp_path / "store")
    with store.lock():
        # chunks finish out of order, as with parallel workers
        store.write_part(chunk(records["patient0004"], records["patient0002"]), 1)
        store.write_part(chunk(records["patient0005"]), 2)
        store.write_part(chunk(records["patient0003"], records["patient0001"]), 0)
        p_path, i_path = store.compact(order, "m@1")
    reference = write_results(
        tmp_path / "reference",
        [records[pid][0] for pid in order],
        [img for pid in order for img in records[pid][1]],
        model_id="m@1",
    )
    pd.testing.assert_frame_equal(pd.read_parquet(p_path), pd.read_parquet(reference[0]))
    pd.testing.assert_frame_equal(pd.read_parquet(i_path), pd.read_parquet(reference[1]))
    assert list(pd.read_parquet(p_path).patient_id) == order
    assert pq.read_schema(p_path).metadata[b"echo_batch.model_id"] == b"m@1"
    assert pq.read_schema(i_path).field("lv_area_mm2").metadata[b"unit"] == b"mm^2"
    assert not (tmp_path / "store" / "parts").exists(), "consumed parts are deleted"
    assert not list((tmp_path / "store").glob(".*tmp*"))


def test_later_part_wins_and_brings_its_own_image_rows(tmp_path):
    store = OutputStore(tmp_path)
    store.write_part(chunk((patient("a", "partial"), images("a", 1.0, n=2))), 0)
    store.write_part(chunk((patient("a", "ok", ef=61.0), images("a", 500.0))), 1)
    store.compact(["a"], "m@1")
    patients, imgs = read(tmp_path)
    assert list(patients.status) == ["ok"]
    assert patients.ef_pct.iloc[0] == 61.0
    assert list(imgs.volume_single_ml) == [500.0, 501.0, 502.0, 503.0]


def test_compaction_merges_with_an_earlier_compacted_file(tmp_path):
    first = OutputStore(tmp_path)
    with first.lock():
        first.write_part(chunk(*[(patient(p), images(p)) for p in ["z9", "b", "a"]]), 0)
        first.compact(["z9", "b", "a"], "m@1")
    second = OutputStore(tmp_path)
    with second.lock():
        second.write_part(chunk((patient("b", ef=70.0), images("b", 900.0)), (patient("c"), [])), 0)
        second.compact(["c", "b"], "m@2")
    patients, imgs = read(tmp_path)
    assert list(patients.patient_id) == ["c", "b", "a", "z9"], "undiscovered ids kept, sorted"
    assert patients.set_index("patient_id").ef_pct["b"] == 70.0
    assert list(imgs.patient_id) == ["b"] * 4 + ["a"] * 4 + ["z9"] * 4
    assert imgs.volume_single_ml.iloc[0] == 900.0
    assert pq.read_schema(tmp_path / PATIENTS_FILE).metadata[b"echo_batch.model_id"] == b"m@2"


def test_recompaction_after_crash_before_parts_deleted_has_no_duplicates(tmp_path, monkeypatch):
    store = OutputStore(tmp_path)
    order = ids(4)
    store.write_part(chunk(*[(patient(p, "partial"), images(p, n=2)) for p in order[:2]]), 0)
    store.write_part(chunk(*[(patient(p), images(p)) for p in order[2:]]), 1)
    monkeypatch.setattr(OutputStore, "_delete_parts", lambda self, consumed: None)  # "crash"
    store.compact(order, "m@1")
    assert len(list((tmp_path / "parts").iterdir())) == 4
    monkeypatch.undo()
    # a resumed run redoes the partial patient0001 and finishes it
    resumed = OutputStore(tmp_path)
    resumed.write_part(chunk((patient(order[0]), images(order[0], 42.0))), 0)
    resumed.compact(order, "m@1")
    patients, imgs = read(tmp_path)
    assert list(patients.patient_id) == order
    assert list(patients.status) == ["ok", "partial", "ok", "ok"]
    assert imgs.groupby("patient_id").size().to_dict() == dict(
        zip(order, [4, 2, 4, 4], strict=True)
    )
    assert not imgs.duplicated(["patient_id", "view", "instant"]).any()
    assert imgs[imgs.patient_id == order[0]].volume_single_ml.iloc[0] == 42.0
    once_more = OutputStore(tmp_path).compact(order, "m@1")
    pd.testing.assert_frame_equal(pd.read_parquet(once_more[0]), patients)


def test_crash_between_images_and_patients_part_leaves_no_half_part(tmp_path):
    store = OutputStore(tmp_path)
    store.write_part(chunk((patient("a"), images("a"))), 0)
    # simulate a crash after the images part of chunk 1 of a dead run: no patients part
    crashed = OutputStore(tmp_path)
    crashed.write_part(chunk((patient("b"), images("b"))), 1)
    next(tmp_path.glob(f"parts/{crashed.run_id}-00001.patients.parquet")).unlink()
    (tmp_path / "parts" / ".x.patients.parquet.tmp-999999999-abcd").write_bytes(b"junk")
    assert store.done_patient_ids() == {"a"}
    with pytest.raises(EchoBatchError, match=r"no record .*: b"):
        store.compact(["a", "b"], "m@1")
    final = OutputStore(tmp_path)
    with final.lock():
        final.compact(["a"], "m@1")
    assert list(read(tmp_path)[0].patient_id) == ["a"]
    assert not (tmp_path / "parts").exists(), "leftovers of crashed runs removed under the lock"


def test_compaction_rejects_missing_or_repeated_ids(tmp_path):
    store = OutputStore(tmp_path)
    store.write_part(chunk((patient("a"), images("a"))), 0)
    with pytest.raises(EchoBatchError, match="no record for 1 discovered patient"):
        store.compact(["a", "ghost"], "m@1")
    with pytest.raises(EchoBatchError, match="more than once"):
        store.compact(["a", "a"], "m@1")
    assert (tmp_path / "parts").exists(), "a failed compaction consumes nothing"
    assert not (tmp_path / PATIENTS_FILE).exists()


def test_compaction_order_helper():
    assert compaction_order(["b", "a"], {"a", "b", "d", "c"}) == ["b", "a", "c", "d"]
    with pytest.raises(EchoBatchError, match="x"):
        compaction_order(["x"], set())


# ------------------------------------------------------------------------------------ resume


def test_done_patient_ids_follow_the_latest_status(tmp_path):
    store = OutputStore(tmp_path)
    assert store.done_patient_ids() == set()
    store.write_part(
        chunk(
            (patient("ok1"), images("ok1")),
            (patient("part", "partial"), images("part", n=2)),
            (patient("fail", "failed", ef=None), []),
            (patient("regress"), images("regress")),
        ),
        0,
    )
    assert store.done_patient_ids() == {"ok1", "regress"}
    store.write_part(chunk((patient("regress", "failed", ef=None), [])), 1)
    assert store.done_patient_ids() == {"ok1"}
    discovered = ["ok1", "part", "fail", "regress", "new"]
    assert pending_patient_ids(discovered, store.done_patient_ids()) == [
        "part",
        "fail",
        "regress",
        "new",
    ]
    later = OutputStore(tmp_path)
    later.write_part(chunk((patient("part"), images("part")), (patient("new"), [])), 0)
    assert later.done_patient_ids() == {"ok1", "part", "new"}
    later.compact(discovered, "m@1")
    assert OutputStore(tmp_path).done_patient_ids() == {"ok1", "part", "new"}
