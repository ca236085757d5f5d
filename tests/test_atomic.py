"""Atomic, durable replacement of files: fsync order, no link following, nothing left on failure."""

from __future__ import annotations

import errno
import os
import stat
import uuid
from pathlib import Path

import pytest
from fixtures import record_file_events

from echo_batch import atomic


@pytest.fixture()
def trace(monkeypatch) -> list[tuple[str, str]]:
    """``("fsync", path)`` and ``("replace", target)`` events, in order, as they happen."""
    return record_file_events(monkeypatch)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_file_is_flushed_before_the_rename_and_its_folder_after(tmp_path, trace):
    target = tmp_path / "run.json"
    target.write_text("old")
    atomic.write_text(target, "new")
    assert target.read_text() == "new"
    assert [kind for kind, _ in trace] == ["fsync", "replace", "fsync"]
    (_, temp), (_, replaced), (_, folder) = trace
    assert Path(temp).parent == tmp_path and Path(temp).name.startswith(".run.json.tmp-")
    assert replaced == os.fspath(target)
    assert folder == os.fspath(tmp_path)
    assert _listing(tmp_path) == ["run.json"]


def test_several_files_are_all_flushed_then_renamed_in_order(tmp_path, trace):
    first, second = tmp_path / "images.parquet", tmp_path / "patients.parquet"
    atomic.write_files([(first, lambda fh: fh.write(b"1")), (second, lambda fh: fh.write(b"2"))])
    kinds = [kind for kind, _ in trace]
    assert kinds == ["fsync", "fsync", "replace", "replace", "fsync"]
    assert [path for kind, path in trace if kind == "replace"] == [str(first), str(second)]
    assert trace[-1] == ("fsync", os.fspath(tmp_path))
    assert (first.read_bytes(), second.read_bytes()) == (b"1", b"2")


def test_failing_writer_leaves_the_earlier_file_and_no_temporary(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"earlier")

    def half_then_full(fh) -> None:
        fh.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic.write_file(target, half_then_full)
    assert target.read_bytes() == b"earlier"
    assert _listing(tmp_path) == ["x.bin"]


def test_failure_in_a_later_file_renames_none(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"old a")

    def fail(fh) -> None:
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError):
        atomic.write_files([(first, lambda fh: fh.write(b"new a")), (second, fail)])
    assert first.read_bytes() == b"old a"
    assert _listing(tmp_path) == ["a"]


def test_link_planted_at_the_temporary_name_is_not_followed(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    fixed = uuid.UUID(int=0)
    monkeypatch.setattr(uuid, "uuid4", lambda: fixed)  # the attacker guessed the name
    target = tmp_path / "summary.json"
    atomic.temp_name(target).symlink_to(victim)
    with pytest.raises(FileExistsError):
        atomic.write_text(target, "written")
    assert victim.read_text() == "precious"
    assert not target.exists()
    dangling = tmp_path / "created-through-a-link"
    atomic.temp_name(target).unlink()
    atomic.temp_name(target).symlink_to(dangling)
    with pytest.raises(FileExistsError):
        atomic.write_text(target, "written")
    assert not dangling.exists()


def test_link_at_the_final_name_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "index.html"
    target.symlink_to(victim)
    atomic.write_text(target, "report")
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and target.read_text() == "report"


def test_staged_path_moves_a_finished_file_durably_and_keeps_the_old_one_on_failure(
    tmp_path, trace
):
    target = tmp_path / "mask.nii.gz"
    target.symlink_to(tmp_path / "victim")
    with atomic.staged_path(target) as staged:
        stage = staged.parent
        assert stage.parent == tmp_path and stage.name.startswith(".stage.tmp-")
        assert stat.S_IMODE(stage.stat().st_mode) == 0o700  # no one else can plant a link
        staged.write_bytes(b"image")
    assert not target.is_symlink() and target.read_bytes() == b"image"
    assert not (tmp_path / "victim").exists()
    assert [kind for kind, _ in trace] == ["fsync", "replace", "fsync"]
    assert trace[-1] == ("fsync", os.fspath(tmp_path))
    with pytest.raises(RuntimeError), atomic.staged_path(target) as staged:
        staged.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"image"
    assert _listing(tmp_path) == ["mask.nii.gz"]


def test_temporary_names_name_their_process():
    name = atomic.temp_name(Path("/out/parts/x.patients.parquet")).name
    assert name.startswith(".x.patients.parquet.tmp-")
    assert atomic.temp_owner_pid(name) == os.getpid()
    assert atomic.temp_owner_pid(".stage.tmp-123-k2_x9ab") == 123
    assert atomic.temp_owner_pid("20240101T000000000000Z-p1-00000.images.parquet") is None
    assert atomic.temp_owner_pid("x.tmp-1-ab") is None  # not hidden: not ours


def test_folder_flush_tolerates_only_file_systems_that_cannot(tmp_path, monkeypatch):
    def einval(fd: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "fsync", einval)
    atomic.fsync_dir(tmp_path)  # nothing more can be done there

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(OSError, match="Input/output"):
        atomic.fsync_dir(tmp_path)
