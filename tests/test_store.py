"""The resumable output store: lock, atomic parts, resume set and compaction ("latest wins")."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from fixtures import record_file_events

from echo_batch.errors import EchoBatchError
from echo_batch.store.files import (
    FRAMES_FILE,
    IMAGES_FILE,
    LOCK_FILE,
    LOCK_HOLDER_FILE,
    PATIENTS_FILE,
    write_results,
)
from echo_batch.store.lock import OutputLockedError
from echo_batch.store.parts import OutputStore, new_run_id, parse_part_name
from echo_batch.store.records import SCHEMA_VERSION, ChunkResult, ImageRecord, PatientRecord
from echo_batch.store.tables import compaction_order

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


# ------------------------------------------------------------------------------------ lock


def test_lock_is_exclusive_and_released(tmp_path):
    out = tmp_path / "new" / "out"
    store = OutputStore(out)
    with store.lock():
        holder = json.loads((out / LOCK_HOLDER_FILE).read_text())
        assert holder["pid"] == os.getpid()
        assert holder["host"] == socket.gethostname()
        assert holder["started"] and holder["run_id"] == store.run_id
        with pytest.raises(OutputLockedError, match=str(os.getpid())) as info:
            OutputStore(out).acquire_lock()
        assert str(out) in str(info.value) and store.run_id in str(info.value)
        assert isinstance(info.value, EchoBatchError)
        with pytest.raises(OutputLockedError), store.lock():
            pass
        assert store.locked, "a failed second lock must not release the first"
        assert (out / LOCK_HOLDER_FILE).exists()
    assert not store.locked and not (out / LOCK_HOLDER_FILE).exists()
    with store.lock(), pytest.raises(OutputLockedError):  # can be taken again, and held again
        OutputStore(out).acquire_lock()


def test_lock_released_on_exception(tmp_path):
    store = OutputStore(tmp_path)
    with pytest.raises(RuntimeError), store.lock():
        raise RuntimeError("boom")
    assert not (tmp_path / LOCK_HOLDER_FILE).exists()
    with OutputStore(tmp_path).lock():
        pass


_HOLD_LOCK = """
import os, signal, sys, time
from echo_batch.store.parts import OutputStore
store = OutputStore(sys.argv[1])
store.acquire_lock()
print(store.run_id, flush=True)
if sys.argv[2] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(60)
"""


def _hold_lock(out: Path, then: str) -> tuple[subprocess.Popen, str]:
    """A process that takes OUT's lock, then dies by SIGKILL ("die") or holds it ("hold")."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, os.fspath(out), then],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return proc, proc.stdout.readline().strip()


def test_lock_of_a_killed_run_is_free_and_its_holder_record_reported(tmp_path, caplog):
    proc, run_id = _hold_lock(tmp_path, "die")
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and run_id
    assert json.loads((tmp_path / LOCK_HOLDER_FILE).read_text())["run_id"] == run_id
    store = OutputStore(tmp_path)
    with caplog.at_level("WARNING"), store.lock():  # the kernel released the dead run's lock
        assert json.loads((tmp_path / LOCK_HOLDER_FILE).read_text())["run_id"] == store.run_id
    assert f"run {run_id} (pid {proc.pid}" in caplog.text
    assert "ended without releasing" in caplog.text


def test_lock_of_a_live_process_is_respected_whatever_the_files_say(tmp_path):
    proc, run_id = _hold_lock(tmp_path, "hold")
    try:
        with pytest.raises(OutputLockedError) as info:
            OutputStore(tmp_path).acquire_lock()
        assert f"run {run_id}, pid {proc.pid} on host {socket.gethostname()}" in str(info.value)
        assert f"lock file {tmp_path / LOCK_FILE}" in str(info.value)
        (tmp_path / LOCK_HOLDER_FILE).unlink()  # the record is for the message only
        with pytest.raises(OutputLockedError, match="holder unknown"):
            OutputStore(tmp_path).acquire_lock()
    finally:
        proc.kill()
        proc.wait()
    # what the files say does not lock: the lock is the kernel's, held by a process or not
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": "x", "run_id": "r"}
    (tmp_path / LOCK_HOLDER_FILE).write_text(json.dumps(record))
    (tmp_path / LOCK_FILE).write_text(json.dumps(record))
    with OutputStore(tmp_path).lock():
        pass


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
    assert names == [f"{stem}.frames.parquet", f"{stem}.images.parquet", f"{stem}.patients.parquet"]
    assert pq.read_table(tmp_path / "parts" / names[0]).num_rows == 0, "no loop: empty frames part"
    meta = pq.read_schema(tmp_path / "parts" / names[2]).metadata
    assert meta[b"echo_batch.schema_version"] == SCHEMA_VERSION.encode()
    assert parse_part_name(names[1])[0].chunk == 3
    assert [parse_part_name(n)[1] for n in names] == ["frames", "images", "patients"]
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
        p_path, i_path, f_path = store.compact(order, "m@1")
    reference = write_results(
        tmp_path / "reference",
        [records[pid][0] for pid in order],
        [img for pid in order for img in records[pid][1]],
        model_id="m@1",
    )
    pd.testing.assert_frame_equal(pd.read_parquet(p_path), pd.read_parquet(reference[0]))
    pd.testing.assert_frame_equal(pd.read_parquet(i_path), pd.read_parquet(reference[1]))
    assert pq.read_table(f_path).equals(pq.read_table(reference.frames)), "zero rows, one schema"
    assert f_path == tmp_path / "store" / FRAMES_FILE
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
    assert len(list((tmp_path / "parts").iterdir())) == 6, "2 chunks x 3 parts, none deleted"
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
    done = store.done_patient_ids()
    assert [pid for pid in discovered if pid not in done] == ["part", "fail", "regress", "new"]
    later = OutputStore(tmp_path)
    later.write_part(chunk((patient("part"), images("part")), (patient("new"), [])), 0)
    assert later.done_patient_ids() == {"ok1", "part", "new"}
    later.compact(discovered, "m@1")
    assert OutputStore(tmp_path).done_patient_ids() == {"ok1", "part", "new"}


# ------------------------------------------------------------------------------------ durability


def _record_fsyncs_and_unlinks(monkeypatch) -> list[tuple[str, str]]:
    """``("fsync", path)``, ``("replace", target)`` and ``("unlink", path)`` events, in order."""
    return record_file_events(monkeypatch, unlinks=True)


def test_parts_are_flushed_images_and_frames_first(tmp_path, monkeypatch):
    store = OutputStore(tmp_path)
    events = _record_fsyncs_and_unlinks(monkeypatch)
    stem = store.write_part(chunk((patient("a"), images("a"))), 0)
    parts = tmp_path / "parts"
    images_part, frames_part, patients_part = (
        os.fspath(parts / f"{stem}.{kind}.parquet") for kind in ("images", "frames", "patients")
    )
    flushed_folder = ("fsync", os.fspath(parts))
    renames_and_flushes = [e for e in events if e[0] == "replace" or e == flushed_folder]
    assert renames_and_flushes == [
        ("replace", images_part),
        flushed_folder,
        ("replace", frames_part),
        flushed_folder,
        ("replace", patients_part),
        flushed_folder,
    ], "each part durable before the next; the patients part durable when write_part returns"
    assert events[-1] == flushed_folder
    files = [path for kind, path in events if kind == "fsync" and path != os.fspath(parts)]
    assert len(files) == 3 and all(".tmp-" in Path(f).name for f in files)


def test_parts_are_deleted_only_after_the_compacted_files_are_durable(tmp_path, monkeypatch):
    store = OutputStore(tmp_path)
    store.write_part(chunk((patient("a"), images("a"))), 0)
    with store.lock():
        events = _record_fsyncs_and_unlinks(monkeypatch)
        store.compact(["a"], "m@1")
    first_unlink = next(i for i, (kind, _) in enumerate(events) if kind == "unlink")
    before = events[:first_unlink]
    flushed = [path for kind, path in before if kind == "fsync"]
    renamed = [path for kind, path in before if kind == "replace"]
    assert renamed == [os.fspath(tmp_path / f) for f in (IMAGES_FILE, FRAMES_FILE, PATIENTS_FILE)]
    assert flushed[-1] == os.fspath(tmp_path), "OUT flushed after the renames, before any unlink"
    assert sum(".tmp-" in Path(p).name for p in flushed) == 3, "the three new files flushed"
    assert ("fsync", os.fspath(tmp_path / "parts")) in events[first_unlink:], "deletions flushed"
    assert not (tmp_path / "parts").exists()


@pytest.mark.parametrize("failing", ["rename", "folder fsync"])
def test_failed_compaction_deletes_no_part(tmp_path, monkeypatch, failing):
    first = OutputStore(tmp_path)
    first.write_part(chunk((patient("a", ef=40.0), images("a"))), 0)
    first.compact(["a"], "m@1")
    earlier = (tmp_path / PATIENTS_FILE).read_bytes(), (tmp_path / IMAGES_FILE).read_bytes()
    store = OutputStore(tmp_path)
    store.write_part(chunk((patient("a", ef=60.0), images("a", 7.0))), 0)
    parts_before = _listing(tmp_path / "parts")
    real_fsync, real_replace = os.fsync, os.replace

    def replace(src, dst) -> None:
        if os.fspath(dst) == os.fspath(tmp_path / PATIENTS_FILE):
            raise OSError(errno.EIO, "Input/output error")
        real_replace(src, dst)

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}") == os.fspath(tmp_path):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    if failing == "rename":
        monkeypatch.setattr(os, "replace", replace)
    else:
        monkeypatch.setattr(os, "fsync", fsync)
    with (
        pytest.raises(EchoBatchError, match=r"cannot write to OUT .*Input/output error"),
        store.lock(),
    ):
        store.compact(["a"], "m@1")
    monkeypatch.undo()
    assert _listing(tmp_path / "parts") == parts_before, "every part is still there"
    assert not [name for name in _listing(tmp_path) if ".tmp-" in name]
    if failing == "rename":
        assert (tmp_path / PATIENTS_FILE).read_bytes() == earlier[0]
    store.compact(["a"], "m@1")  # the next compaction finishes the job
    assert read(tmp_path)[0].ef_pct.tolist() == [60.0]


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())
