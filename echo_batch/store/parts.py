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
import shutil
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
from echo_batch.store.compaction import merged_tables, winners_by_source
from echo_batch.store.files import (
    FRAMES_FILE,
    FRAMES_PART_SUFFIX,
    FRAMES_SINCE,
    IMAGES_FILE,
    IMAGES_PART_SUFFIX,
    PARTS_DIR,
    PATIENTS_FILE,
    PATIENTS_PART_SUFFIX,
    RUN_FILE,
    ResultFiles,
    parquet_writer,
    schema_version,
    streaming_parquet_writer,
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
from echo_batch.store.tables import compaction_order

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

    def _patient_columns(
        self, sources: Sequence[_Source], columns: Sequence[str]
    ) -> Iterator[tuple[list[str], list[list[Any]]]]:
        """Per source, its patient ids and ``columns`` of its patients file, reading only those.

        A column a file lacks (written before it existed) reads as None.
        """
        for source in sources:
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
            yield table["patient_id"].to_pylist(), values

    def _latest(self, columns: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """``columns`` of each patient's latest row, reading only those columns."""
        latest: dict[str, tuple[Any, ...]] = {}
        for pids, values in self._patient_columns(self._sources(), columns):
            latest.update(zip(pids, zip(*values, strict=True), strict=True))
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
        patient once.

        Memory is bounded: only the patient ids and configs of the patients files are read
        whole; rows stream through a distribution sort (:mod:`echo_batch.store.compaction`)
        into row groups, one bucket of patients at a time.

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
        if self.locked:
            self._remove_stale_temporaries()
        sources = self._sources()
        source_of, other_configs = self._winners(sources)
        if not keep_other_configs:
            self._drop_other_configs(source_of, other_configs)
        del other_configs
        order = compaction_order(patient_ids, source_of)
        won = winners_by_source(order, source_of, len(sources))
        del source_of
        rows: Counter[str] = Counter()
        model_ids: set[str] = set()

        def merged(kind: str, files: list[Path | None], record_type: type, **how: Any):
            """The writer of one result file; counts its rows (and model ids of patients)."""
            schema = arrow_schema(record_type)

            def tables() -> Iterator[pa.Table]:
                with atomic.private_stage(self.out) as stage:
                    for table in merged_tables(files, won, len(order), schema, stage, **how):
                        rows[kind] += table.num_rows
                        if kind == "patients":
                            model_ids.update(pc.unique(table["model_id"]).to_pylist())
                        yield table

            return streaming_parquet_writer(schema, tables, {"model_id": model_id})

        paths = ResultFiles(
            self.out / PATIENTS_FILE, self.out / IMAGES_FILE, self.out / FRAMES_FILE
        )
        try:
            atomic.write_files(
                [
                    (paths.images, merged("images", [s.images for s in sources], ImageRecord)),
                    (
                        paths.frames,
                        merged(
                            "frames",
                            [s.frames for s in sources],
                            FrameRecord,
                            sort_keys=("view", "frame"),
                        ),
                    ),
                    (
                        paths.patients,
                        merged(
                            "patients",
                            [s.patients for s in sources],
                            PatientRecord,
                            last_per_patient=True,
                        ),
                    ),
                ]
            )
            self._delete_parts([s for s in sources if s.part is not None])
        except OSError as exc:
            raise EchoBatchError(f"cannot write to OUT {self.out}: {exc}") from exc
        if model_ids - {model_id}:
            logger.warning(
                "%s: compacted rows include other model ids (earlier runs): %s",
                self.out,
                ", ".join(sorted(model_ids - {model_id})),
            )
        logger.info(
            "%s: compacted %d patients, %d images, %d frames from %d part(s)",
            self.out,
            rows["patients"],
            rows["images"],
            rows["frames"],
            sum(s.part is not None for s in sources),
        )
        return paths

    def _winners(self, sources: Sequence[_Source]) -> tuple[dict[str, int], set[str]]:
        """Where each patient's latest row is, reading only ids and configs.

        Returns:
            The index in ``sources`` of each patient's latest row, and the patients whose latest
            row has another ``measure_config`` than this store's.
        """
        source_of: dict[str, int] = {}
        other: set[str] = set()
        for index, (pids, (configs,)) in enumerate(
            self._patient_columns(sources, ["measure_config"])
        ):
            for pid, config in zip(pids, configs, strict=True):
                source_of[pid] = index
                if config == self.config:
                    other.discard(pid)
                else:
                    other.add(pid)
        return source_of, other

    def _drop_other_configs(self, source_of: dict[str, int], other: set[str]) -> None:
        """Remove from ``source_of`` the patients whose latest row has another config."""
        for pid in other:
            del source_of[pid]
        if other:
            dropped = sorted(other)
            logger.warning(
                "%s: dropped %d patient(s) measured with other settings (not resumed): %s",
                self.out,
                len(dropped),
                ", ".join(dropped[:10]) + (" ..." if len(dropped) > 10 else ""),
            )

    def _remove_stale_temporaries(self) -> None:
        """Remove what a killed compaction or run record left in ``OUT`` (under the lock only).

        That is a temporary result file or ``run.json`` (``.patients.parquet.tmp-<pid>-...``) or
        a bucket folder of the streaming compaction (``.stage.tmp-<pid>-...``) of another
        process: only the holder of the lock writes there, so they are leftovers.
        """
        names = {PATIENTS_FILE, IMAGES_FILE, FRAMES_FILE, RUN_FILE, "stage"}
        for name in _listdir(self.out):
            owner = atomic.temp_owner_pid(name)
            if owner is None or owner == os.getpid() or name[1:].split(".tmp-")[0] not in names:
                continue
            logger.warning("%s: removing leftover of a killed run: %s", self.out, name)
            path = self.out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

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
