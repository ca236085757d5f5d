"""Parquet output of a cohort run (``patients.parquet``, ``images.parquet``: README.md "Outputs").

Two ways to write ``OUT``:

- :func:`write_results` writes ``patients.parquet`` and ``images.parquet`` in one go.
- :class:`OutputStore` makes a long run resumable: the run takes ``OUT/.echo-batch.lock``, each
  finished chunk becomes an atomic pair of Parquet parts under ``OUT/parts/``, a later run skips
  the patients already done, and :meth:`OutputStore.compact` folds the parts into the two files.

Every file is written under a temporary name in its own folder and renamed into place, so a
reader never sees a half-written file. The schema version and the units are in the key-value
metadata of every file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import stat
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from echo_batch.domain import Status
from echo_batch.errors import EchoBatchError
from echo_batch.store.records import (
    SCHEMA_VERSION,
    UNITS,
    ImageRecord,
    PatientRecord,
    arrow_schema,
    to_table,
)

if TYPE_CHECKING:
    from echo_batch.run.chunk import ChunkResult

logger = logging.getLogger(__name__)

PATIENTS_FILE = "patients.parquet"
IMAGES_FILE = "images.parquet"
RUN_FILE = "run.json"
LOCK_FILE = ".echo-batch.lock"
PARTS_DIR = "parts"
PATIENTS_PART_SUFFIX = ".patients.parquet"
IMAGES_PART_SUFFIX = ".images.parquet"

_PART_RE = re.compile(r"^(?P<run_id>[^.].*)-(?P<chunk>\d{5,})\.(?P<kind>patients|images)\.parquet$")
_LOCK_ATTEMPTS = 5


class OutputLockedError(EchoBatchError):
    """``OUT`` is locked by a run that is (or may be) still alive.

    Args:
        out: the locked output folder.
        holder: what the lock file says about its holder (pid, host, started).
        reason: why the lock cannot be taken, in words a user can act on.
    """

    def __init__(self, out: Path, holder: dict[str, Any], reason: str) -> None:
        self.out = out
        self.holder = holder
        self.reason = reason
        super().__init__(
            f"{out}: {reason} (lock file {out / LOCK_FILE}: pid {holder.get('pid')} on host "
            f"{holder.get('host')}, started {holder.get('started')}); if no run is using this "
            f"folder, delete the lock file"
        )

    def __reduce__(self):
        """Picklable (a Prefect state or a Dask result may carry it to another process)."""
        return type(self), (self.out, self.holder, self.reason)


# --------------------------------------------------------------------------- atomic writes


def _write_atomic(table: pa.Table, path: Path, extra_metadata: dict[str, str]) -> None:
    tmp = _write_tmp(table, path, extra_metadata)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _write_tmp(table: pa.Table, path: Path, extra_metadata: dict[str, str]) -> Path:
    """Write ``table`` under a hidden, unpredictable temporary name beside ``path``.

    Returns:
        The temporary file; nothing is left behind when writing fails (e.g. a full disk).
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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp, compression="zstd")
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def _replace_pair(tables: Sequence[tuple[pa.Table, Path]], extra_metadata: dict[str, str]) -> None:
    """Write every table to a temporary file first, then rename them into place in order.

    A failure while writing (a full disk) leaves every existing file as it was; only the renames,
    which need no space, happen after the last byte is written.
    """
    written: list[tuple[Path, Path]] = []
    try:
        for table, path in tables:
            written.append((_write_tmp(table, path, extra_metadata), path))
        for tmp, path in written:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in written:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise


def write_results(
    out: Path,
    patients: Sequence[PatientRecord],
    images: Sequence[ImageRecord],
    *,
    model_id: str,
) -> tuple[Path, Path]:
    """Write ``patients.parquet`` and ``images.parquet`` atomically.

    Args:
        out: output folder (created).
        patients: one record per discovered patient.
        images: one record per (patient, view, instant) attempted.
        model_id: bundle id or "gt", stored in the file metadata too.

    Returns:
        Paths of the two files.
    """
    meta = {"model_id": model_id}
    p_path, i_path = out / PATIENTS_FILE, out / IMAGES_FILE
    try:
        out.mkdir(parents=True, exist_ok=True)
        _replace_pair(
            [
                (to_table(list(images), ImageRecord), i_path),
                (to_table(list(patients), PatientRecord), p_path),
            ],
            meta,
        )
    except OSError as exc:
        raise EchoBatchError(f"cannot write to OUT {out}: {exc}") from exc
    return p_path, i_path


def write_run_record(out: Path, record: dict[str, Any]) -> Path:
    """Write ``run.json`` atomically.

    The temporary file is created exclusively and never through a symbolic link, so that a link
    planted in ``OUT`` cannot redirect the write.

    Raises:
        EchoBatchError: ``OUT`` is not writable or full.
    """
    path = out / RUN_FILE
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    data = (json.dumps(record, indent=2, default=str) + "\n").encode("utf-8")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise EchoBatchError(f"cannot write to OUT {out}: {exc}") from exc
    return path


# --------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True, order=True)
class PartName:
    """Identity of one chunk part; instances sort in write order (run, then chunk).

    Attributes:
        run_id: id of the run that wrote the part.
        chunk: chunk index within that run.
    """

    run_id: str
    chunk: int

    @property
    def stem(self) -> str:
        """``<run_id>-<chunk:05d>``, the common prefix of the two part files."""
        return f"{self.run_id}-{self.chunk:05d}"


def parse_part_name(name: str) -> tuple[PartName, str] | None:
    """``(part, kind)`` of a part file name, kind "patients" or "images"; None for other files.

    Temporary files (leading dot) are not parts.
    """
    match = _PART_RE.match(name)
    if match is None:
        return None
    return PartName(match["run_id"], int(match["chunk"])), match["kind"]


def new_run_id(now: datetime, pid: int, after: Iterable[str] = ()) -> str:
    """A run id that sorts after every id in ``after``.

    Args:
        now: current time (converted to UTC).
        pid: process id, so that two processes starting together differ.
        after: run ids of parts already in ``OUT``.

    Returns:
        ``YYYYmmddTHHMMSSffffffZ-p<pid>``; if the clock went back behind an existing run, the
        newest existing id with ``+`` appended (still sorts after it).
    """
    run_id = f"{now.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-p{pid}"
    newest = max(after, default="")
    if newest >= run_id:
        run_id = f"{newest}+"
    return run_id


def pending_patient_ids(patient_ids: Sequence[str], done: set[str]) -> list[str]:
    """Ids of ``patient_ids`` still to process on resume, in discovery order."""
    return [pid for pid in patient_ids if pid not in done]


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


def _conform(table: pa.Table, schema: pa.Schema, path: Path) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in order; missing nullable columns are null."""
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


def _read(path: Path, schema: pa.Schema) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise EchoBatchError(f"{path}: unreadable Parquet file: {exc}") from exc
    return _conform(table, schema, path)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class _Source:
    """One place records come from: the compacted pair or one part pair."""

    patients: Path
    images: Path
    part: PartName | None  # None: the compacted files


class OutputStore:
    """The output folder of a resumable cohort run.

    Layout: ``OUT/.echo-batch.lock`` while a run holds it, ``OUT/parts/<run_id>-<chunk>.{patients,
    images}.parquet`` per finished chunk, and the compacted ``OUT/patients.parquet`` and
    ``OUT/images.parquet``. A patient's latest record wins: a later part overrides an earlier one
    and every part overrides the compacted files; a patient's image rows always come from the same
    source as its patient row.

    Args:
        out: output folder (created when the lock is taken or a part is written).
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.parts_dir = self.out / PARTS_DIR
        self.lock_path = self.out / LOCK_FILE
        existing = {p.run_id for p, _ in self._part_files()}
        self.run_id = new_run_id(datetime.now(UTC), os.getpid(), existing)
        self._lock_content: bytes | None = None

    # ---------------------------------------------------------------- lock

    @contextlib.contextmanager
    def lock(self) -> Iterator[OutputStore]:
        """Hold ``OUT/.echo-batch.lock`` for the duration of a ``with`` block.

        Yields:
            This store.

        Raises:
            OutputLockedError: a live run holds the lock.
            EchoBatchError: ``OUT`` is not writable or the lock path is not a regular file.
        """
        self.acquire_lock()
        try:
            yield self
        finally:
            self.release_lock()

    @property
    def locked(self) -> bool:
        """True while this store holds the lock."""
        return self._lock_content is not None

    def acquire_lock(self) -> None:
        """Create ``OUT`` if needed and take its lock (see :meth:`lock`).

        A lock left by a dead process of this host is replaced, with a warning.
        """
        self._ensure_dir(self.out)
        content = json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": _now_iso(),
                "run_id": self.run_id,
            }
        ).encode()
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
        for _ in range(_LOCK_ATTEMPTS):
            try:
                fd = os.open(self.lock_path, flags, 0o644)
            except FileExistsError:
                seen = self._inspect_existing_lock()
                self._break_stale_lock(seen)
                continue
            except OSError as exc:
                raise EchoBatchError(f"cannot write to OUT {self.out}: {exc}") from exc
            try:
                os.write(fd, content)
            except OSError as exc:
                os.close(fd)
                self.lock_path.unlink(missing_ok=True)
                raise EchoBatchError(f"cannot write to OUT {self.out}: {exc}") from exc
            os.close(fd)
            self._lock_content = content
            logger.debug("%s: locked by run %s", self.out, self.run_id)
            return
        raise OutputLockedError(
            self.out, {}, f"could not take the lock in {_LOCK_ATTEMPTS} attempts"
        )

    def release_lock(self) -> None:
        """Remove the lock if this store holds it and it is still the one it wrote."""
        if self._lock_content is None:
            return
        content, self._lock_content = self._lock_content, None
        try:
            current = _read_nofollow(self.lock_path)
        except OSError as exc:
            logger.warning("%s: lock file vanished before release: %s", self.out, exc)
            return
        if current != content:
            logger.warning("%s: lock file was replaced by another run; leaving it", self.out)
            return
        self.lock_path.unlink(missing_ok=True)

    def _inspect_existing_lock(self) -> bytes:
        """Content of an existing lock held by a dead process; raise in every other case."""
        try:
            st = os.lstat(self.lock_path)
        except FileNotFoundError:
            return b""  # released meanwhile: try again
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise EchoBatchError(
                f"{self.lock_path} is {kind}; refusing to use or replace it (remove it by hand)"
            )
        try:
            content = _read_nofollow(self.lock_path)
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise EchoBatchError(f"cannot read the lock file {self.lock_path}: {exc}") from exc
        try:
            holder = json.loads(content)
            pid = int(holder["pid"])
            host = str(holder["host"])
        except (ValueError, TypeError, KeyError):
            raise OutputLockedError(self.out, {}, "the lock file is unreadable") from None
        if pid <= 0:
            raise OutputLockedError(self.out, holder, "the lock file names an invalid pid")
        if host != socket.gethostname():
            raise OutputLockedError(
                self.out, holder, "locked by a run on another host (its state cannot be checked)"
            )
        if pid == os.getpid():
            raise OutputLockedError(self.out, holder, "already locked by this process")
        if _pid_alive(pid):
            raise OutputLockedError(self.out, holder, "locked by a running process")
        logger.warning(
            "%s: replacing the stale lock of dead process %d (started %s)",
            self.out,
            pid,
            holder.get("started"),
        )
        return content

    def _break_stale_lock(self, seen: bytes) -> None:
        """Remove the lock whose content is ``seen``, never anyone else's."""
        if not seen:
            return
        aside = self.lock_path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.lock_path, aside)
        except FileNotFoundError:
            return  # another process removed it first
        try:
            moved = _read_nofollow(aside)
        except OSError:
            moved = None
        if moved != seen:
            # A new lock was taken between our check and the rename: put it back (no clobber).
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.lock_path, follow_symlinks=False)
        aside.unlink(missing_ok=True)

    # ---------------------------------------------------------------- parts

    def write_part(self, result: ChunkResult, chunk_index: int) -> str:
        """Write one finished chunk as an atomic pair of Parquet parts.

        The images part is written first, then the patients part, so a patients part on disk
        implies its images part is complete. Parts of this store sort after those of earlier runs.

        Args:
            result: records of the chunk (one PatientRecord per patient).
            chunk_index: index of the chunk within this run (>= 0).

        Returns:
            The part stem ``<run_id>-<chunk:05d>``.

        Raises:
            ValueError: bad chunk index, a patient twice, or image rows of a patient not in the
                chunk.
            EchoBatchError: ``OUT/parts`` is not writable.
        """
        if chunk_index < 0:
            raise ValueError(f"chunk index must be >= 0, got {chunk_index}")
        patient_ids = [p.patient_id for p in result.patients]
        if len(set(patient_ids)) != len(patient_ids):
            raise ValueError(f"chunk {chunk_index}: a patient appears more than once")
        strays = {i.patient_id for i in result.images} - set(patient_ids)
        if strays:
            raise ValueError(
                f"chunk {chunk_index}: image rows of patients not in the chunk: "
                f"{', '.join(sorted(strays)[:10])}"
            )
        self._check_parts_dir()
        self._ensure_dir(self.parts_dir)
        part = PartName(self.run_id, chunk_index)
        meta = {"run_id": self.run_id, "chunk": str(chunk_index)}
        try:
            _write_atomic(
                to_table(result.images, ImageRecord),
                self.parts_dir / f"{part.stem}{IMAGES_PART_SUFFIX}",
                meta,
            )
            _write_atomic(
                to_table(result.patients, PatientRecord),
                self.parts_dir / f"{part.stem}{PATIENTS_PART_SUFFIX}",
                meta,
            )
        except OSError as exc:
            raise EchoBatchError(f"cannot write to OUT {self.out}: {exc}") from exc
        return part.stem

    def _check_parts_dir(self) -> None:
        """Refuse an ``OUT/parts`` that is a symbolic link: parts are written and deleted there."""
        if self.parts_dir.is_symlink():
            raise EchoBatchError(
                f"{self.parts_dir} is a symbolic link; refusing to read, write or delete parts "
                "through it (remove it by hand)"
            )

    def _part_files(self) -> list[tuple[PartName, str]]:
        self._check_parts_dir()
        try:
            names = os.listdir(self.parts_dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [parsed for name in names if (parsed := parse_part_name(name)) is not None]

    def _sources(self) -> list[_Source]:
        """Compacted files (if any) then the complete parts, oldest first."""
        sources = []
        p_path, i_path = self.out / PATIENTS_FILE, self.out / IMAGES_FILE
        if p_path.exists():
            if not i_path.exists():
                raise EchoBatchError(f"{p_path} exists but {i_path} does not")
            sources.append(_Source(p_path, i_path, None))
        for part in sorted(p for p, kind in self._part_files() if kind == "patients"):
            images = self.parts_dir / f"{part.stem}{IMAGES_PART_SUFFIX}"
            if not images.exists():
                raise EchoBatchError(f"part {part.stem} has no images part {images}")
            sources.append(
                _Source(self.parts_dir / f"{part.stem}{PATIENTS_PART_SUFFIX}", images, part)
            )
        return sources

    # ---------------------------------------------------------------- resume

    def done_patient_ids(self) -> set[str]:
        """Patients whose latest record (compacted file or parts) has status "ok".

        Returns:
            Ids a resumed run can skip; "partial" and "failed" patients are processed again.
        """
        latest: dict[str, str] = {}
        for source in self._sources():
            try:
                table = pq.read_table(source.patients, columns=["patient_id", "status"])
            except (OSError, pa.ArrowInvalid) as exc:
                raise EchoBatchError(f"{source.patients}: unreadable Parquet file: {exc}") from exc
            latest.update(
                zip(table["patient_id"].to_pylist(), table["status"].to_pylist(), strict=True)
            )
        return {pid for pid, status in latest.items() if status == Status.OK.value}

    # ---------------------------------------------------------------- compaction

    def compact(self, patient_ids: Sequence[str], model_id: str) -> tuple[Path, Path]:
        """Fold the compacted files and all parts into ``patients.parquet`` and ``images.parquet``.

        Each patient keeps its latest record; rows follow ``patient_ids`` (discovery order), then
        patients of earlier runs that are no longer discovered, sorted. Both files are written
        in full under temporary names, then renamed into place (images first), so a full disk
        leaves the earlier files as they were; then the consumed parts are deleted; a crash in
        between leaves
        parts whose records are also in the compacted files, and the next compaction picks each
        patient once ("latest wins").

        Args:
            patient_ids: discovered patients in discovery order; each must have a record.
            model_id: bundle id or "gt", stored in the file metadata.

        Returns:
            Paths of the two files.

        Raises:
            EchoBatchError: an id is repeated or has no record, or a file is unreadable.
        """
        self._ensure_dir(self.out)
        p_schema, i_schema = arrow_schema(PatientRecord), arrow_schema(ImageRecord)
        sources = self._sources()
        patient_tables = [_read(s.patients, p_schema) for s in sources]
        winner: dict[str, int] = {}
        for index, table in enumerate(patient_tables):
            winner.update(dict.fromkeys(table["patient_id"].to_pylist(), index))
        order = compaction_order(patient_ids, winner)
        won: list[list[str]] = [[] for _ in sources]
        for pid, index in winner.items():
            won[index].append(pid)
        patients, images = [], []
        for index, (source, table) in enumerate(zip(sources, patient_tables, strict=True)):
            if not won[index]:
                continue
            keep = pa.array(won[index], pa.string())
            patients.append(table.filter(pc.is_in(table["patient_id"], value_set=keep)))
            image_table = _read(source.images, i_schema)
            images.append(image_table.filter(pc.is_in(image_table["patient_id"], value_set=keep)))
        patient_table = _ordered_patients(_concat(patients, p_schema), order)
        image_table = _ordered_images(_concat(images, i_schema), order)
        model_ids = set(pc.unique(patient_table["model_id"]).to_pylist()) - {model_id}
        if model_ids:
            logger.warning(
                "%s: compacted rows include other model ids (earlier runs): %s",
                self.out,
                ", ".join(sorted(model_ids)),
            )
        meta = {"model_id": model_id}
        p_path, i_path = self.out / PATIENTS_FILE, self.out / IMAGES_FILE
        try:
            _replace_pair([(image_table, i_path), (patient_table, p_path)], meta)
        except OSError as exc:
            raise EchoBatchError(f"cannot write to OUT {self.out}: {exc}") from exc
        self._delete_parts([s for s in sources if s.part is not None])
        logger.info(
            "%s: compacted %d patients, %d images from %d part(s)",
            self.out,
            patient_table.num_rows,
            image_table.num_rows,
            sum(s.part is not None for s in sources),
        )
        return p_path, i_path

    def _delete_parts(self, consumed: Sequence[_Source]) -> None:
        for source in consumed:
            source.patients.unlink(missing_ok=True)  # patients first: it implies its images part
            source.images.unlink(missing_ok=True)
        if self.locked:
            for name in _listdir(self.parts_dir):
                if _is_leftover(name, self.parts_dir, self.run_id):
                    logger.warning("%s: removing leftover of a crashed run: %s", self.out, name)
                    (self.parts_dir / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.parts_dir.rmdir()  # only when empty

    def _ensure_dir(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EchoBatchError(f"cannot write to OUT {self.out}: {exc}") from exc
        if not path.is_dir():
            raise EchoBatchError(f"cannot write to OUT {self.out}: {path} is not a folder")


def _is_leftover(name: str, parts_dir: Path, run_id: str) -> bool:
    """True for a file a crashed run left in ``parts/``.

    That is a temporary file of another process, or an images part of another run without its
    patients part. Only removed while the lock is held.
    """
    tmp = re.match(r"^\..*\.tmp-(\d+)-", name)
    if tmp is not None:
        return int(tmp[1]) != os.getpid()
    parsed = parse_part_name(name)
    if parsed is None or parsed[1] != "images" or parsed[0].run_id == run_id:
        return False
    return not (parts_dir / f"{parsed[0].stem}{PATIENTS_PART_SUFFIX}").exists()


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _read_nofollow(path: Path) -> bytes:
    """Content of ``path``; raises OSError (ELOOP) rather than follow a symbolic link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _ordered_patients(table: pa.Table, order: Sequence[str]) -> pa.Table:
    """Rows in ``order``, one per id (the last row of an id repeated within one source wins)."""
    row_of = dict(zip(table["patient_id"].to_pylist(), range(table.num_rows), strict=True))
    return table.take(pa.array([row_of[pid] for pid in order], pa.int64()))


def _ordered_images(table: pa.Table, order: Sequence[str]) -> pa.Table:
    """Rows grouped by patient in ``order``, each patient's rows in their original order."""
    rank = pc.index_in(table["patient_id"], value_set=pa.array(order, pa.string()))
    keyed = pa.table({"rank": rank, "row": pa.array(range(table.num_rows), pa.int64())})
    indices = pc.sort_indices(keyed, sort_keys=[("rank", "ascending"), ("row", "ascending")])
    return table.take(indices)
