"""Serial in-process cohort run: discover, process chunks, write Parquet and ``run.json``.

The Prefect flow calls the same chunk function; this runner is the reference it must match.
"""

from __future__ import annotations

import logging
import platform
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from echo_batch.domain import PatientRef
from echo_batch.io.discovery import Manifest, discover
from echo_batch.qc.agreement import ef_agreements
from echo_batch.run.chunk import ChunkOptions, ChunkResult, model_id_for, process_chunk
from echo_batch.store.output import PATIENTS_FILE, write_results, write_run_record
from echo_batch.store.records import PatientRecord
from echo_batch.version import code_version

logger = logging.getLogger(__name__)


def chunked(items: list, size: int) -> list[list]:
    """Split a list into consecutive chunks of at most ``size`` items."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [items[i : i + size] for i in range(0, len(items), size)]


AUTO_CHUNK_MIN = 16
AUTO_CHUNK_MAX = 64
AUTO_CHUNKS_PER_WORKER = 8


def auto_chunk_size(n_items: int, workers: int) -> int:
    """Default chunk size: about 8 chunks per worker, within 16-64 patients.

    Each chunk costs one Prefect task and one Parquet part (tens of ms of flow-process CPU), so
    chunks must not be tiny on large cohorts; they must not be huge either, since a chunk is the
    unit of progress and of work lost when a worker dies.

    Args:
        n_items: patients to process.
        workers: workers that process chunks in parallel.

    Returns:
        ``clip(ceil(n / (8 * workers)), 16, 64)``.
    """
    wanted = -(-n_items // (AUTO_CHUNKS_PER_WORKER * max(1, workers)))
    return min(AUTO_CHUNK_MAX, max(AUTO_CHUNK_MIN, wanted))


def balanced_chunk_size(n_items: int, chunk_size: int, workers: int) -> int:
    """Largest size <= ``chunk_size`` that gives every worker the same number of chunks.

    With ``n`` items and ``w`` workers the chunk count is rounded up to a multiple of ``w`` and the
    items are spread evenly over the chunks, so that no worker is left alone with a last chunk
    while the others idle (the tail of a short run).

    Args:
        n_items: items to split.
        chunk_size: the largest allowed chunk.
        workers: workers that process chunks in parallel.

    Returns:
        The chunk size to pass to :func:`chunked` (>= 1).
    """
    if chunk_size < 1 or workers < 1:
        raise ValueError(f"chunk size and workers must be >= 1, got {chunk_size}, {workers}")
    if n_items <= 0:
        return chunk_size
    rounds = -(-n_items // (workers * chunk_size))  # chunks per worker
    return max(1, -(-n_items // (rounds * workers)))


def summarise(patients: list[PatientRecord]) -> dict[str, Any]:
    """Counts by status, EF distribution and agreement with the references."""
    efs = [p.ef_pct for p in patients if p.ef_pct is not None]
    summary: dict[str, Any] = {
        "patients": len(patients),
        "status": dict(Counter(p.status for p in patients)),
        "qc_pass": sum(p.qc_pass for p in patients),
        "ef_pct": (
            {q: float(np.percentile(efs, int(q[1:]))) for q in ("p05", "p25", "p50", "p75", "p95")}
            if efs
            else None
        ),
        "ef_category": dict(Counter(p.ef_category for p in patients if p.ef_category)),
        "agreement": ef_agreements(patients),
    }
    return summary


def run_cohort(
    data: Path,
    out: Path,
    options: ChunkOptions,
    *,
    chunk_size: int = 16,
    manifest: Manifest | None = None,
    on_chunk: Callable[[ChunkResult], None] | None = None,
) -> dict[str, Any]:
    """Process every discovered patient serially and write the outputs.

    Args:
        data: DATA root.
        out: output folder.
        options: segmentation source and engine settings.
        chunk_size: patients per chunk (images are batched across a chunk).
        manifest: an already discovered manifest (discovered from ``data`` when None).
        on_chunk: called after each chunk (progress display).

    Returns:
        The run record also written to ``run.json``.
    """
    started = time.perf_counter()
    manifest = manifest or discover(data)
    t_discover = time.perf_counter() - started
    model_id = model_id_for(options)
    result = process_serially(manifest.patients, options, model_id, chunk_size, on_chunk)
    patients, images = result.patients, result.images
    stage_seconds: Counter[str] = Counter({"discover": t_discover, **result.seconds})
    t_write = time.perf_counter()
    write_results(out, patients, images, model_id=model_id)
    stage_seconds["write"] = time.perf_counter() - t_write
    record = run_record(
        out,
        manifest,
        options,
        model_id,
        chunk_size=chunk_size,
        executor="serial",
        seconds=stage_seconds,
        started=started,
        patients=patients,
    )
    logger.info(
        "wrote %d patients, %d images to %s in %.1f s",
        len(patients),
        len(images),
        out,
        record["wall_seconds"],
    )
    return record


def process_serially(
    refs: Sequence[PatientRef],
    options: ChunkOptions,
    model_id: str,
    chunk_size: int = 16,
    on_chunk: Callable[[ChunkResult], None] | None = None,
) -> ChunkResult:
    """Process patients chunk by chunk in this process and merge the results.

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
        seconds.update(result.seconds)
        if on_chunk is not None:
            on_chunk(result)
    merged.seconds = dict(seconds)
    return merged


def run_record(
    out: Path,
    manifest: Manifest,
    options: ChunkOptions,
    model_id: str,
    *,
    chunk_size: int,
    executor: str,
    seconds: Mapping[str, float],
    started: float,
    patients: Sequence[PatientRecord] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build and write ``run.json``.

    Args:
        out: output folder.
        manifest: the discovered cohort.
        options: chunk options of the run.
        model_id: bundle id or "gt".
        chunk_size: patients per chunk.
        executor: "serial" or the Dask scheduler used.
        seconds: time per stage.
        started: ``time.perf_counter()`` at the start of the run.
        patients: the cohort's records (read back from ``patients.parquet`` when None).
        extra: more fields for the record.

    Returns:
        The record written.
    """
    if patients is None:
        table = pq.read_table(out / PATIENTS_FILE)
        patients = [PatientRecord(**row) for row in table.to_pylist()]
    wall = time.perf_counter() - started
    record = {
        "code_version": code_version(),
        "model_id": model_id,
        "data": str(manifest.root),
        "out": str(out),
        "config": {
            **{k: str(v) if v is not None else None for k, v in asdict(options).items()},
            "chunk_size": chunk_size,
            "executor": executor,
        },
        "host": platform.node(),
        "discovery_problems": [
            {"path": str(p.path), "reason": p.reason} for p in manifest.problems
        ],
        "summary": summarise(list(patients)),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "wall_seconds": round(wall, 3),
        "patients_per_second": round(len(patients) / wall, 3) if wall > 0 else None,
        **dict(extra or {}),
    }
    write_run_record(out, record)
    return record
