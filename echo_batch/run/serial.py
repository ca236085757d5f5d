"""Serial cohort run: every chunk in this process, through the same write path as the flow.

The reference the Prefect flow must match (same parts, lock, resume and compaction through
:class:`echo_batch.run.cohort.CohortRun`), and the executor of ``echo-batch run --serial``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from echo_batch.domain import PatientRef
from echo_batch.io.discovery import Manifest
from echo_batch.run.chunk import ChunkResult, process_chunk
from echo_batch.run.chunking import AUTO_CHUNK_MIN, chunked
from echo_batch.run.cohort import CohortRun, Progress
from echo_batch.run.options import ChunkOptions, RunOptions

logger = logging.getLogger(__name__)


def run_cohort(
    options: RunOptions,
    *,
    manifest: Manifest | None = None,
    model_id: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Process every discovered patient in this process and write the outputs.

    Args:
        options: the run's options (``workers`` and ``dask_address`` are not used).
        manifest: an already discovered cohort (discovered from ``options.data`` when None).
        model_id: the run's model id when already known (from :func:`~echo_batch.run.cohort.
            preflight`).
        progress: told the number of patients to process, then each written chunk.

    Returns:
        The run record, also written to ``OUT/run.json``.

    Raises:
        EchoBatchError: OUT is locked, unwritable, or holds rows of other settings (resume).
    """
    with CohortRun.open(options, model_id) as run:
        todo = run.plan(manifest)
        if progress is not None:
            progress.start(len(todo))
        seconds: Counter[str] = Counter({"discover": time.perf_counter() - run.started})
        size = options.chunk_size or AUTO_CHUNK_MIN
        chunk_options = options.chunk_options()
        counts: Counter[str] = Counter()
        for index, chunk in enumerate(chunked(todo, size) if todo else []):
            result = process_chunk(chunk, chunk_options, run.model_id)
            seconds.update(result.seconds)
            counts.update(run.record(result, index))
            if progress is not None:
                progress.advance(len(chunk))
        record = run.finish(
            executor="serial",
            seconds=seconds,
            extra={
                "processed": len(todo),
                "skipped_done": len(run.manifest.patients) - len(todo),
                "processed_by_status": dict(counts),
                "chunk_size_used": size,
            },
        )
    logger.info(
        "%d patients in %s (%.1f s)",
        record["summary"]["patients"],
        options.out,
        record["wall_seconds"],
    )
    return record


def process_serially(
    refs: Sequence[PatientRef],
    options: ChunkOptions,
    model_id: str,
    chunk_size: int = AUTO_CHUNK_MIN,
    on_chunk: Callable[[ChunkResult], None] | None = None,
) -> ChunkResult:
    """Process patients chunk by chunk in this process and merge the results, writing nothing.

    Used where records are needed in memory (evaluation of a bundle on a split).

    Args:
        refs: patients to process.
        options: segmentation source and engine settings.
        model_id: id written to every row (computed once by the caller).
        chunk_size: patients per chunk (images are batched across a chunk).
        on_chunk: called after each chunk (progress display).

    Returns:
        One ChunkResult with every record, in input order, and seconds summed per stage.
    """
    merged = ChunkResult()
    seconds: Counter[str] = Counter()
    for chunk in chunked(list(refs), chunk_size):
        result = process_chunk(chunk, options, model_id)
        merged.patients.extend(result.patients)
        merged.images.extend(result.images)
        merged.frames.extend(result.frames)
        seconds.update(result.seconds)
        if on_chunk is not None:
            on_chunk(result)
    merged.seconds = dict(seconds)
    return merged
