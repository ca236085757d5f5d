"""The resumable output store: chunk parts, resume and compaction of ``OUT``.

A long run takes the lock of ``OUT`` (:mod:`echo_batch.store.lock`); each finished chunk becomes
three Parquet parts under ``OUT/parts/`` (images, frames, patients); a later run skips the
patients already done, and :meth:`OutputStore.compact` folds the parts into ``patients.parquet``,
``images.parquet`` and ``frames.parquet``.

Every chunk of schema >= 1.3 writes a frames part, with zero rows when the chunk measured no
loop, so that a patients part without its frames part is an error, not "no frames". Parts and
compacted files of schema < 1.3 have none: their patients have no frames.

Every patient row carries ``measure_config``: the settings that change the numbers (model,
CAMUS grid), as canonical JSON (:func:`measure_config`). A row counts as done only for a run
with the same settings, so a model run into an ``OUT`` of a gt run never takes the gt rows for
its own; :meth:`OutputStore.check_config` lets a run stop at once instead, and
``compact(..., keep_other_configs=False)`` replaces such rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from echo_batch import atomic
from echo_batch.domain import Status
from echo_batch.errors import EchoBatchError
from echo_batch.store.files import (
    FRAMES_FILE,
    FRAMES_PART_SUFFIX,
    FRAMES_SINCE,
    IMAGES_FILE,
    IMAGES_PART_SUFFIX,
    PARTS_DIR,
    PATIENTS_FILE,
    PATIENTS_PART_SUFFIX,
    ResultFiles,
    parquet_writer,
    schema_version,
)
from echo_batch.store.lock import OutputLock
from echo_batch.store.provenance import ConfigMismatchError, config_mismatch_message, measure_config
from echo_batch.store.records import (
    ChunkResult,
    FrameRecord,
    ImageRecord,
    PatientRecord,
    arrow_schema,
    to_table,
)
from echo_batch.store.tables import (
    compaction_order,
    concat,
    ordered_frames,
    ordered_images,
    ordered_patients,
    read_conformed,
)

__all__ = [
    "ConfigMismatchError",
    "OutputStore",
    "PartName",
    "measure_config",
    "new_run_id",
    "parse_part_name",
]

logger = logging.getLogger(__name__)

_PART_RE = re.compile(
    r"^(?P<run_id>[^.].*)-(?P<chunk>\d{5,})\.(?P<kind>patients|images|frames)\.parquet$"
)


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
        """``<run_id>-<chunk:05d>``, the common prefix of the chunk's part files."""
        return f"{self.run_id}-{self.chunk:05d}"


def parse_part_name(name: str) -> tuple[PartName, str] | None:
    """``(part, kind)`` of a part file name, kind "patients", "images" or "frames"; else None.

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


@dataclass(frozen=True)
class _Source:
    """One place records come from: the compacted files or one chunk's parts."""

    patients: Path
    images: Path
    frames: Path | None  # None: written before frames existed (schema < 1.3), no frame rows
    part: PartName | None  # None: the compacted files

    def files(self) -> list[Path]:
        """The files of this source, the patients file first (it implies the others)."""
        return [self.patients, self.images, *([self.frames] if self.frames else [])]


class OutputStore:
    """The output folder of a resumable cohort run.

    Layout: ``OUT/parts/<run_id>-<chunk>.{patients,images,frames}.parquet`` per finished chunk,
    the compacted ``OUT/patients.parquet``, ``OUT/images.parquet`` and ``OUT/frames.parquet``, and
    the lock. A patient's latest record wins: a later part overrides an earlier one and every part
    overrides the compacted files; a patient's image and frame rows always come from the same
    source as its patient row.

    Args:
        out: output folder (created when the lock is taken or a part is written).
        config: this run's :func:`measure_config`, stamped on every patient row it writes; None
            (callers that predate it) matches only rows without one.
    """

    def __init__(self, out: Path, config: str | None = None) -> None:
        self.out = Path(out)
        self.config = config
        self.parts_dir = self.out / PARTS_DIR
        existing = {p.run_id for p, _ in self._part_files()}
        self.run_id = new_run_id(datetime.now(UTC), os.getpid(), existing)
        self._lock = OutputLock(self.out, self.run_id)
        self.lock_path = self._lock.path

    # ---------------------------------------------------------------- lock

    @contextlib.contextmanager
    def lock(self) -> Iterator[OutputStore]:
        """Hold the lock of ``OUT`` for the duration of a ``with`` block.

        Yields:
            This store.

        Raises:
            OutputLockedError: another run (or this store already) holds the lock.
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
        return self._lock.held

    def acquire_lock(self) -> None:
        """Create ``OUT`` if needed and take its lock (see :meth:`lock`)."""
        self._ensure_dir(self.out)
        self._lock.acquire()

    def release_lock(self) -> None:
        """Release the lock if this store holds it."""
        self._lock.release()

    # ---------------------------------------------------------------- parts

    def write_part(self, result: ChunkResult, chunk_index: int) -> str:
        """Write one finished chunk as three Parquet parts, each atomic and durable.

        The images part, then the frames part, are on disk (renamed, folder flushed) before the
        patients part is written, so a patients part implies its other two parts are complete. The
        frames
        part is written even when the chunk has no frames (zero rows). Parts of this store sort
        after those of earlier runs. Every patient row gets this store's ``measure_config``.

        Args:
            result: records of the chunk (one PatientRecord per patient).
            chunk_index: index of the chunk within this run (>= 0).

        Returns:
            The part stem ``<run_id>-<chunk:05d>``.

        Raises:
            ValueError: bad chunk index, a patient twice, or image or frame rows of a patient not
                in the chunk.
            EchoBatchError: ``OUT/parts`` is not writable.
        """
        if chunk_index < 0:
            raise ValueError(f"chunk index must be >= 0, got {chunk_index}")
        patient_ids = [p.patient_id for p in result.patients]
        if len(set(patient_ids)) != len(patient_ids):
            raise ValueError(f"chunk {chunk_index}: a patient appears more than once")
        for kind, rows in (("image", result.images), ("frame", result.frames)):
            strays = {r.patient_id for r in rows} - set(patient_ids)
            if strays:
                raise ValueError(
                    f"chunk {chunk_index}: {kind} rows of patients not in the chunk: "
                    f"{', '.join(sorted(strays)[:10])}"
                )
        self._check_parts_dir()
        self._ensure_dir(self.parts_dir)
        part = PartName(self.run_id, chunk_index)
        meta = {"run_id": self.run_id, "chunk": str(chunk_index)}
        patients = [dataclasses.replace(p, measure_config=self.config) for p in result.patients]
        try:
            atomic.write_file(
                self.parts_dir / f"{part.stem}{IMAGES_PART_SUFFIX}",
                parquet_writer(to_table(result.images, ImageRecord), meta),
            )
            atomic.write_file(
                self.parts_dir / f"{part.stem}{FRAMES_PART_SUFFIX}",
                parquet_writer(to_table(result.frames, FrameRecord), meta),
            )
            atomic.write_file(
                self.parts_dir / f"{part.stem}{PATIENTS_PART_SUFFIX}",
                parquet_writer(to_table(patients, PatientRecord), meta),
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
        """Compacted files (if any) then the complete parts, oldest first.

        Raises:
            EchoBatchError: a patients file without its images file, or of schema >= 1.3 without
                its frames file.
        """
        sources = []
        p_path = self.out / PATIENTS_FILE
        if p_path.exists():
            sources.append(
                _source(p_path, self.out / IMAGES_FILE, self.out / FRAMES_FILE, None, str(p_path))
            )
        for part in sorted(p for p, kind in self._part_files() if kind == "patients"):
            stem = self.parts_dir / part.stem
            sources.append(
                _source(
                    Path(f"{stem}{PATIENTS_PART_SUFFIX}"),
                    Path(f"{stem}{IMAGES_PART_SUFFIX}"),
                    Path(f"{stem}{FRAMES_PART_SUFFIX}"),
                    part,
                    f"part {part.stem}",
                )
            )
        return sources

    # ---------------------------------------------------------------- resume

    def _latest(self, columns: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """``columns`` of each patient's latest row, reading only those columns.

        A column a file lacks (written before it existed) reads as None.
        """
        latest: dict[str, tuple[Any, ...]] = {}
        for source in self._sources():
            try:
                with pq.ParquetFile(source.patients) as parquet:
                    present = set(parquet.schema_arrow.names)
                    wanted = ["patient_id", *(c for c in columns if c in present)]
                    table = parquet.read(columns=wanted)
            except (OSError, pa.ArrowInvalid) as exc:
                raise EchoBatchError(f"{source.patients}: unreadable Parquet file: {exc}") from exc
            values = [
                table[c].to_pylist() if c in present else [None] * table.num_rows for c in columns
            ]
            rows = zip(*values, strict=True)
            latest.update(zip(table["patient_id"].to_pylist(), rows, strict=True))
        return latest

    def done_patient_ids(self) -> set[str]:
        """Patients whose latest record has status "ok" and this store's ``measure_config``.

        Returns:
            Ids a resumed run can skip; "partial" and "failed" patients, and those measured with
            other settings, are processed again.
        """
        latest = self._latest(["status", "measure_config"])
        return {
            pid
            for pid, (status, config) in latest.items()
            if status == Status.OK.value and config == self.config
        }

    def check_config(self) -> None:
        """Refuse an ``OUT`` whose latest rows were measured with other settings.

        Reads only the ``patient_id`` and ``measure_config`` columns. A row without a recorded
        config (a file of schema < 1.2) counts as different. Nothing is checked when this store
        has no config.

        Raises:
            ConfigMismatchError: one line naming the differing settings, the number of rows, and
                ``--no-resume``.
        """
        if self.config is None:
            return
        latest = self._latest(["measure_config"])
        other = Counter(c for (c,) in latest.values() if c != self.config)
        if other:
            raise ConfigMismatchError(config_mismatch_message(self.out, self.config, other))

    # ---------------------------------------------------------------- compaction

    def compact(
        self, patient_ids: Sequence[str], model_id: str, *, keep_other_configs: bool = True
    ) -> ResultFiles:
        """Fold the compacted files and all parts into ``patients.parquet``, ``images.parquet``
        and ``frames.parquet``.

        Each patient keeps its latest record, with the image and frame rows of the same source;
        rows follow ``patient_ids`` (discovery order), then patients of earlier runs that are no
        longer discovered, sorted; frame rows are sorted by view and frame within a patient.
        ``frames.parquet`` is written with zero rows when no patient has frames. The three files
        are written in full under temporary names, flushed to disk, renamed into place (patients
        last) and the folder flushed, so a full disk or a power loss leaves the earlier files or
        the new ones; only then are the consumed parts deleted. A crash in between leaves parts
        whose records are also in the compacted files, and the next compaction picks each
        patient once. Every table is held in memory at once.

        Args:
            patient_ids: discovered patients in discovery order; each must have a record.
            model_id: bundle id or "gt", stored in the file metadata.
            keep_other_configs: when False, patients whose latest row has another
                ``measure_config`` than this store's are dropped (``--no-resume``: the output is
                then all of this run's settings).

        Returns:
            Paths of the three files.

        Raises:
            EchoBatchError: an id is repeated or has no record, a file is unreadable or missing,
                or ``OUT`` is not writable.
        """
        self._ensure_dir(self.out)
        p_schema, i_schema = arrow_schema(PatientRecord), arrow_schema(ImageRecord)
        f_schema = arrow_schema(FrameRecord)
        sources = self._sources()
        patient_tables = [read_conformed(s.patients, p_schema) for s in sources]
        winner: dict[str, int] = {}
        config_of: dict[str, str | None] = {}
        for index, table in enumerate(patient_tables):
            pids = table["patient_id"].to_pylist()
            winner.update(dict.fromkeys(pids, index))
            config_of.update(zip(pids, table["measure_config"].to_pylist(), strict=True))
        if not keep_other_configs:
            self._drop_other_configs(winner, config_of)
        order = compaction_order(patient_ids, winner)
        won: list[list[str]] = [[] for _ in sources]
        for pid, index in winner.items():
            won[index].append(pid)
        patients, images, frames = [], [], []
        for index, (source, table) in enumerate(zip(sources, patient_tables, strict=True)):
            if not won[index]:
                continue
            keep = pa.array(won[index], pa.string())
            patients.append(_rows_of(table, keep))
            images.append(_rows_of(read_conformed(source.images, i_schema), keep))
            if source.frames is not None:
                frames.append(_rows_of(read_conformed(source.frames, f_schema), keep))
        patient_table = ordered_patients(concat(patients, p_schema), order)
        image_table = ordered_images(concat(images, i_schema), order)
        frame_table = ordered_frames(concat(frames, f_schema), order)
        model_ids = set(pc.unique(patient_table["model_id"]).to_pylist()) - {model_id}
        if model_ids:
            logger.warning(
                "%s: compacted rows include other model ids (earlier runs): %s",
                self.out,
                ", ".join(sorted(model_ids)),
            )
        meta = {"model_id": model_id}
        paths = ResultFiles(
            self.out / PATIENTS_FILE, self.out / IMAGES_FILE, self.out / FRAMES_FILE
        )
        try:
            atomic.write_files(
                [
                    (paths.images, parquet_writer(image_table, meta)),
                    (paths.frames, parquet_writer(frame_table, meta)),
                    (paths.patients, parquet_writer(patient_table, meta)),
                ]
            )
            self._delete_parts([s for s in sources if s.part is not None])
        except OSError as exc:
            raise EchoBatchError(f"cannot write to OUT {self.out}: {exc}") from exc
        logger.info(
            "%s: compacted %d patients, %d images, %d frames from %d part(s)",
            self.out,
            patient_table.num_rows,
            image_table.num_rows,
            frame_table.num_rows,
            sum(s.part is not None for s in sources),
        )
        return paths

    def _drop_other_configs(self, winner: dict[str, int], config_of: dict[str, str | None]) -> None:
        """Remove from ``winner`` the patients whose latest row has another config."""
        dropped = [pid for pid, config in config_of.items() if config != self.config]
        for pid in dropped:
            del winner[pid]
        if dropped:
            logger.warning(
                "%s: dropped %d patient(s) measured with other settings (not resumed): %s",
                self.out,
                len(dropped),
                ", ".join(sorted(dropped)[:10]) + (" ..." if len(dropped) > 10 else ""),
            )

    def _delete_parts(self, consumed: Sequence[_Source]) -> None:
        """Delete consumed parts (and, under the lock, leftovers of crashed runs), durably.

        The deletions are flushed to disk: a part that came back after a power loss would
        override the newer compacted rows.
        """
        for source in consumed:
            for path in source.files():  # patients first: it implies the other parts
                path.unlink(missing_ok=True)
        if self.locked:
            for name in _listdir(self.parts_dir):
                if _is_leftover(name, self.parts_dir, self.run_id):
                    logger.warning("%s: removing leftover of a crashed run: %s", self.out, name)
                    (self.parts_dir / name).unlink(missing_ok=True)
        if not self.parts_dir.is_dir():
            return
        atomic.fsync_dir(self.parts_dir)
        try:
            self.parts_dir.rmdir()  # only when empty
        except OSError:
            return
        atomic.fsync_dir(self.out)

    def _ensure_dir(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EchoBatchError(f"cannot write to OUT {self.out}: {exc}") from exc
        if not path.is_dir():
            raise EchoBatchError(f"cannot write to OUT {self.out}: {path} is not a folder")


def _source(
    patients: Path, images: Path, frames: Path, part: PartName | None, name: str
) -> _Source:
    """The source of one patients file, checked for its images and frames files.

    Args:
        patients: the patients file (exists).
        images: its images file (must exist).
        frames: its frames file; may be absent only beside a patients file of schema < 1.3.
        part: the chunk part, or None for the compacted files.
        name: how errors name the source.

    Raises:
        EchoBatchError: the images file is missing, or the frames file of a file of schema >=
            1.3 (whose writer always writes one before the patients file).
    """
    if not images.exists():
        raise EchoBatchError(f"{name} has no images file {images}")
    if frames.exists():
        return _Source(patients, images, frames, part)
    version = schema_version(patients)  # read only when the frames file is absent
    if version is not None and version >= FRAMES_SINCE:
        raise EchoBatchError(
            f"{name} has no frames file {frames}, but its patients file is of schema "
            f"{'.'.join(map(str, version))}, which always writes one"
        )
    return _Source(patients, images, None, part)


def _rows_of(table: pa.Table, patient_ids: pa.Array) -> pa.Table:
    """Rows of ``table`` whose ``patient_id`` is in ``patient_ids``."""
    return table.filter(pc.is_in(table["patient_id"], value_set=patient_ids))


def _is_leftover(name: str, parts_dir: Path, run_id: str) -> bool:
    """True for a file a crashed run left in ``parts/``.

    That is a temporary file of another process, or an images or frames part of another run
    without its patients part. Only removed while the lock is held.
    """
    owner = atomic.temp_owner_pid(name)
    if owner is not None:
        return owner != os.getpid()
    parsed = parse_part_name(name)
    if parsed is None or parsed[1] == "patients" or parsed[0].run_id == run_id:
        return False
    return not (parts_dir / f"{parsed[0].stem}{PATIENTS_PART_SUFFIX}").exists()


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
