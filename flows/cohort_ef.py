"""Prefect flow ``cohort-ef``: discover patients, process chunks on Dask, write resumable Parquet.

Prefect runs only in the flow process and tracks chunks (one task per finished chunk); the chunk
computation itself is the plain function :func:`echo_batch.pipeline.process_chunk`, sent to Dask
workers, which never talk to Prefect (DESIGN.md section 6: no per-worker ephemeral servers, no
per-patient Prefect overhead). Each worker process loads the model once (``get_engine`` cache).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from echo_batch.discovery import discover
from echo_batch.domain import PatientRef, SegmentationSource
from echo_batch.pipeline import ChunkOptions, ChunkResult, failed_patient_record, process_chunk

# Set by the CLI to draw a progress bar; called with the number of patients of each finished chunk.
PROGRESS: Callable[[int], None] | None = None

CHUNK_TIMEOUT_S = 3600.0  # a chunk that takes longer than this is failed, never waited on forever


def default_workers() -> int:
    """One single-threaded worker process per core (2 x 1 thread beat 1 x 2 here, DESIGN.md 8)."""
    return max(1, os.cpu_count() or 1)


def dask_client(dask_address: str | None, workers: int | None):
    """A client of the given scheduler, or of a new local cluster sized to the machine.

    Returns:
        ``(client, cluster)``; ``cluster`` is None for an external scheduler.
    """
    import dask
    from distributed import Client, LocalCluster

    address = dask_address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        return Client(address, timeout=60), None
    # Dask's nannies set MALLOC_TRIM_THRESHOLD_=65536 in workers; with the many mid-sized
    # numpy allocations of contour and disk work this doubled the measurement time (measured:
    # 16 s -> 32 s for 500 patients), so local workers keep glibc's adaptive default.
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    dask.config.set({"distributed.nanny.pre-spawn-environ": environ})
    cluster = LocalCluster(
        n_workers=workers or default_workers(),
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=40,
    )
    return Client(cluster), cluster


def chunk_resources(client, device: str, segmentation: SegmentationSource) -> dict[str, int] | None:
    """Dask resources of a chunk: ``GPU=1`` when the model runs on a GPU worker.

    ``cuda`` requires a worker that advertises ``GPU``; ``auto`` uses GPU workers when the cluster
    has any. A resource no worker has would make Dask wait forever, hence the check here.
    """
    if segmentation == SegmentationSource.GT or device == "cpu":
        return None
    workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
    has_gpu = any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers)
    if device == "cuda" and not has_gpu:
        raise RuntimeError("--device cuda: no Dask worker advertises a GPU resource (GPU=1)")
    return {"GPU": 1} if has_gpu else None


@task(name="record-chunk", cache_policy=NO_CACHE)
def record_chunk(store, result: ChunkResult, index: int) -> dict[str, int]:
    """Write one finished chunk as an atomic Parquet part; return its counts by status."""
    store.write_part(result, index)
    return dict(Counter(p.status for p in result.patients))


def _failed_chunk(refs: Sequence[PatientRef], error: str, model_id: str) -> ChunkResult:
    return ChunkResult(
        patients=[failed_patient_record(r, f"{r.patient_id}: {error}", model_id) for r in refs]
    )


@flow(name="cohort-ef", log_prints=False)
def cohort_ef(
    data: str,
    out: str,
    model: str | None = None,
    segmentation: str = "model",
    chunk_size: int = 16,
    workers: int | None = None,
    dask_address: str | None = None,
    device: str = "auto",
    resume: bool = True,
    save_masks: bool = False,
    precision: str = "auto",
    batch_size: int | None = None,
    camus_grid_mm: float | None = None,
    compile: bool = False,
) -> dict[str, Any]:
    """Measure every patient under ``data`` and write ``patients.parquet``/``images.parquet``.

    Args:
        data: DATA root (CAMUS 2019/2023 layout or a folder of patient folders).
        out: output folder (locked for the duration of the run).
        model: bundle directory (None: the bundled default).
        segmentation: "model" or "gt".
        chunk_size: patients per chunk (one Dask task and one Prefect task each).
        workers: local Dask worker processes (None: one per core); ignored with ``dask_address``.
        dask_address: scheduler of an existing Dask cluster (or ``DASK_SCHEDULER_ADDRESS``).
        device: "auto", "cpu" or "cuda".
        resume: skip patients already ``ok`` in OUT; retry the others.
        save_masks: write predicted label maps under ``OUT/masks``.
        precision: "auto", "bf16", "fp16" or "fp32".
        batch_size: images per forward pass (None: device default).
        camus_grid_mm: fine grid for the CAMUS-compatible method (see ``ChunkOptions``).
        compile: ``torch.compile`` the model in each worker.

    Returns:
        The run record, also written to ``OUT/run.json``.
    """
    from echo_batch.pipeline import model_id_for
    from echo_batch.runner import chunked, run_record
    from echo_batch.store import OutputStore

    logger = get_run_logger()
    started = time.perf_counter()
    out_path = Path(out)
    source = SegmentationSource(segmentation)
    options = ChunkOptions(
        segmentation=source,
        model=Path(model) if model else None,
        device=device,
        precision=precision,
        batch_size=batch_size,
        threads=1,
        camus_grid_mm=camus_grid_mm,
        compile=compile,
        save_masks_to=out_path / "masks" if save_masks else None,
    )
    store = OutputStore(out_path)
    seconds: Counter[str] = Counter()
    with store.lock():
        manifest = discover(data)
        done = store.done_patient_ids() if resume else set()
        todo = [p for p in manifest.patients if p.patient_id not in done]
        model_id = model_id_for(options)
        logger.info(
            "%d patients discovered, %d already done, %d to process",
            len(manifest.patients),
            len(manifest.patients) - len(todo),
            len(todo),
        )
        seconds["discover"] = time.perf_counter() - started
        chunks = chunked(todo, chunk_size) if todo else []
        counts: Counter[str] = Counter()
        if chunks:
            t0 = time.perf_counter()
            client, cluster = dask_client(dask_address, workers)
            seconds["cluster_start"] = time.perf_counter() - t0
            try:
                counts = _run_chunks(client, chunks, options, model_id, store, seconds)
            finally:
                client.close()
                if cluster is not None:
                    cluster.close()
        t0 = time.perf_counter()
        store.compact([p.patient_id for p in manifest.patients], model_id)
        seconds["compact"] = time.perf_counter() - t0
        record = run_record(
            out_path,
            manifest,
            options,
            model_id,
            chunk_size=chunk_size,
            executor=f"dask:{dask_address or os.environ.get('DASK_SCHEDULER_ADDRESS') or 'local'}",
            seconds=seconds,
            started=started,
            extra={
                "processed": len(todo),
                "skipped_done": len(manifest.patients) - len(todo),
                "processed_by_status": dict(counts),
                "workers": workers or default_workers(),
            },
        )
    logger.info("run finished: %s", record["summary"]["status"])
    return record


def _run_chunks(client, chunks, options, model_id, store, seconds) -> Counter[str]:
    """Submit every chunk to Dask and record each as it finishes."""
    from distributed import as_completed

    resources = chunk_resources(client, options.device, options.segmentation)
    futures = {}
    for index, refs in enumerate(chunks):
        future = client.submit(
            process_chunk,
            refs,
            options,
            model_id,
            resources=resources,
            pure=False,
            key=f"chunk-{index:05d}-{os.getpid()}-{time.time_ns()}",
        )
        futures[future] = (index, refs)
    counts: Counter[str] = Counter()

    def record(result: ChunkResult, index: int, n: int) -> None:
        for stage, value in result.seconds.items():
            seconds[stage] += value
        counts.update(record_chunk(store, result, index))
        if PROGRESS is not None:
            PROGRESS(n)

    try:
        for future in as_completed(futures, timeout=CHUNK_TIMEOUT_S * len(chunks)):
            index, refs = futures.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # a dead or failing worker fails its chunk, not the run
                error = f"chunk failed on the cluster: {type(exc).__name__}: {exc}"
                result = _failed_chunk(refs, error, model_id)
            future.release()
            record(result, index, len(refs))
    except TimeoutError:
        for future, (index, refs) in futures.items():  # still pending: recorded as failed
            future.cancel()
            record(_failed_chunk(refs, "chunk timed out on the cluster", model_id), index, 0)
    return counts
