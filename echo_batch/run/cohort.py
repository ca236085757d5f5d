"""The one write path of a cohort run, whatever executes the chunks.

Every executor (the serial run in this process, the Prefect flow on Dask, tests) goes through
:class:`CohortRun`: checks before anything starts (:func:`preflight`), the ``OUT`` lock, the
measurement settings of the rows already in ``OUT``, discovery and resume, one atomic Parquet part
per finished chunk, compaction, and ``run.json``. So a serial run and a flow run leave the same
files, and neither can compact an earlier run's leftover parts over newer results.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from echo_batch.domain import SegmentationSource
from echo_batch.io.discovery import Manifest, discover, validate_root
from echo_batch.io.patient_refs import PatientRefs
from echo_batch.run.chunk import GT_MODEL_ID, ChunkResult, model_id_for, uncertainty_method
from echo_batch.run.options import ChunkOptions, RunOptions
from echo_batch.run.record import run_record
from echo_batch.store.parts import OutputStore, measure_config

logger = logging.getLogger(__name__)


class Progress(Protocol):
    """Where a run reports its progress (a terminal progress bar, a test's counter)."""

    def start(self, total: int) -> None:
        """Called once, with the number of patients the run will process."""

    def advance(self, patients: int) -> None:
        """Called after each chunk is written, with its number of patients."""


def check_model(options: ChunkOptions) -> str:
    """Load the bundle completely (weights into the network) in this process.

    Called before any cluster or API starts, so that a bundle whose weights cannot be loaded
    stops the run with one line (exit 2) instead of failing every patient on the workers.

    Returns:
        The model id (``gt`` for expert masks, which need no bundle).

    Raises:
        BundleError: the bundle is missing, tampered with, or its weights do not load.
    """
    if options.segmentation == SegmentationSource.GT:
        return GT_MODEL_ID
    from echo_batch.model.ensemble_bundle import check_model_dir

    return check_model_dir(options.bundle)


def preflight(options: RunOptions) -> str:
    """Checks that need no lock and start nothing: DATA, the model bundle, OUT's settings.

    Returns:
        The model id of the run.

    Raises:
        EchoBatchError: DATA cannot be listed, the bundle cannot be loaded, or (with resume) OUT
            holds rows measured with other settings.
    """
    validate_root(options.data)
    model_id = check_model(options.chunk)
    if options.resume:
        OutputStore(options.out, config=run_config(options, model_id)).check_config()
    return model_id


def run_config(options: RunOptions, model_id: str) -> str:
    """The measurement settings every row of this run is stamped with (resume compares them)."""
    method = uncertainty_method(options.chunk)
    extra = {"uncertainty": method} if method is not None else {}
    return measure_config(
        model_id, options.chunk.camus_grid_mm, frames=options.chunk.frames.value, **extra
    )


@dataclass
class CohortRun:
    """One run over ``OUT``, from the lock to ``run.json``.

    Use :meth:`open`; then :meth:`plan`, :meth:`record` for each finished chunk (from any
    thread), and :meth:`finish`.

    Attributes:
        options: the run's options.
        model_id: id written to every row.
        store: the output folder.
        started: ``time.perf_counter()`` when the run was created.
    """

    options: RunOptions
    model_id: str
    store: OutputStore
    started: float
    manifest: Manifest | None = None
    patients: PatientRefs | None = None  # the manifest's patients, compressed

    @classmethod
    @contextlib.contextmanager
    def open(cls, options: RunOptions, model_id: str | None = None) -> Iterator[CohortRun]:
        """Take OUT's lock and check its settings for the duration of a ``with`` block.

        Args:
            options: the run's options.
            model_id: the run's model id (from :func:`preflight`; computed when None).

        Raises:
            OutputLockedError: another run holds OUT.
            ConfigMismatchError: with resume, OUT holds rows measured with other settings.
        """
        started = time.perf_counter()
        model_id = model_id or model_id_for(options.chunk)
        store = OutputStore(options.out, config=run_config(options, model_id))
        with store.lock():
            if options.resume:
                store.check_config()
            yield cls(options=options, model_id=model_id, store=store, started=started)

    def plan(self, manifest: Manifest | None = None) -> PatientRefs:
        """Discover the cohort (unless given) and return the patients still to process.

        With resume, patients whose latest row is ``ok`` are skipped; the others run again. The
        patients are kept compressed (:class:`~echo_batch.io.patient_refs.PatientRefs`, about
        80 bytes each instead of 7.5 KB), so that a cohort of 100,000 costs the run 8 MB.
        """
        self.manifest = manifest or discover(
            self.options.data, files_root=self.options.files_root, compact=True
        )
        self.patients = PatientRefs.from_refs(self.manifest.patients)
        done = self.store.done_patient_ids() if self.options.resume else set()
        todo = self.patients.without(done) if done else self.patients
        logger.info(
            "%d patients discovered, %d already done, %d to process",
            len(self.manifest.patients),
            len(self.manifest.patients) - len(todo),
            len(todo),
        )
        return todo

    def record(self, result: ChunkResult, index: int) -> dict[str, int]:
        """Write one finished chunk as an atomic part; safe to call from several threads.

        Returns:
            Counts of the chunk's patients by status.

        Raises:
            EchoBatchError: OUT cannot be written (full, read-only).
        """
        self.store.write_part(result, index)
        return dict(Counter(p.status for p in result.patients))

    def finish(
        self,
        *,
        executor: str,
        seconds: Mapping[str, float],
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Compact the parts into the two Parquet files and write ``run.json``.

        Without resume, rows of other measurement settings are dropped, so that the output holds
        this run's settings only.

        Returns:
            The run record.
        """
        if self.manifest is None or self.patients is None:
            raise RuntimeError("CohortRun.finish before plan")
        t0 = time.perf_counter()
        self.store.compact(
            self.patients.ids,
            self.model_id,
            keep_other_configs=self.options.resume,
        )
        seconds = {**seconds, "compact": time.perf_counter() - t0}
        return run_record(
            self.options,
            self.manifest,
            self.model_id,
            executor=executor,
            seconds=seconds,
            started=self.started,
            extra=extra,
        )
