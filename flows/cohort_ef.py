"""Prefect flow ``cohort-ef``: discover patients, process chunks on Dask, write resumable Parquet.

Prefect runs only in the flow process and tracks chunks (one task per finished chunk); the chunk
computation itself is the plain function :func:`echo_batch.run.chunk.process_chunk`, sent to Dask
workers, which never talk to Prefect (DESIGN.md section 6: no per-worker ephemeral servers, no
per-patient Prefect overhead). Each worker process loads the model once (``get_engine`` cache).

Failures stay contained: Dask reruns a chunk whose worker died (up to ``allowed_failures`` times);
a chunk that still fails is split and its patients are retried one by one, so that only the
patient that brings its worker down is recorded as failed. An unusable ``OUT`` (not writable,
full, locked) ends the run with a Failed state carrying the :class:`EchoBatchError`, which the
caller receives as that exception, without a traceback in the log; parts already written stay.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed
from prefect.utilities.annotations import quote

from echo_batch.domain import PatientRef, SegmentationSource
from echo_batch.errors import EchoBatchError
from echo_batch.io.discovery import discover, log_problems
from echo_batch.run.chunk import ChunkOptions, ChunkResult, failed_patient_record, process_chunk
from echo_batch.run.worker_preload import PRELOAD_TORCH_KEY

# Set by the CLI to draw a progress bar; called with the number of patients of each finished chunk.
PROGRESS: Callable[[int], None] | None = None
# Set by the CLI; called once with the number of discovered patients (the progress bar's total).
PROGRESS_TOTAL: Callable[[int], None] | None = None

# Dask keeps its recent messages for debugging (``distributed.admin.low-level-log-length``,
# default 1,000). The local scheduler runs in the flow process and each message that sends a chunk
# holds that chunk's patient references: about 8 KB per patient kept for the whole run, 77 MB of
# flow-process growth over 10,000 patients (measured), 400 MB and more past 50,000.
LOCAL_LOW_LEVEL_LOG_LENGTH = 20
CHUNK_TIMEOUT_S = 3600.0  # a chunk that takes longer than this is failed, never waited on forever
IN_FLIGHT_PER_THREAD = 2  # chunks submitted per worker thread while no chunk has failed
WORKER_PRELOAD = "echo_batch.run.worker_preload"  # imported by every local worker at start-up


def default_workers() -> int:
    """One single-threaded worker process per core (2 x 1 thread beat 1 x 2 here, DESIGN.md 8)."""
    return max(1, os.cpu_count() or 1)


def dask_client(
    dask_address: str | None,
    workers: int | None,
    preload: Sequence[str] = (),
    preload_torch: bool = False,
):
    """A client of the given scheduler, or of a new local cluster sized to the machine.

    Args:
        dask_address: scheduler address (or ``DASK_SCHEDULER_ADDRESS``); None for a local cluster.
        workers: local worker processes (None: one per core).
        preload: modules each local worker imports when it starts (Dask ``preload``).
        preload_torch: whether ``echo_batch.run.worker_preload`` also imports torch (model runs).

    Returns:
        ``(client, cluster)``; ``cluster`` is None for an external scheduler.
    """
    import dask
    from distributed import Client, LocalCluster

    address = scheduler_address(dask_address)
    if address:
        return Client(address, timeout=60), None
    # Dask's nannies set MALLOC_TRIM_THRESHOLD_=65536 in workers; with the many mid-sized
    # numpy allocations of contour and disk work this doubled the measurement time (measured:
    # 16 s -> 32 s for 500 patients), so local workers keep glibc's adaptive default.
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    dask.config.set(
        {
            "distributed.nanny.pre-spawn-environ": environ,
            "distributed.admin.low-level-log-length": LOCAL_LOW_LEVEL_LOG_LENGTH,
            PRELOAD_TORCH_KEY: preload_torch,
        }
    )
    cluster = LocalCluster(
        n_workers=workers or default_workers(),
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=40,
        preload=list(preload),
    )
    return Client(cluster), cluster


def _timed_client(dask_address: str | None, workers: int | None, source: SegmentationSource):
    """``dask_client`` plus the seconds it took; model runs also preload torch in the workers."""
    t0 = time.perf_counter()
    client, cluster = dask_client(
        dask_address,
        workers,
        preload=[WORKER_PRELOAD],
        preload_torch=source == SegmentationSource.MODEL,
    )
    return client, cluster, time.perf_counter() - t0


def _close(client, cluster) -> None:
    client.close()
    if cluster is not None:
        cluster.close()


# Clusters started ahead of a run (``prestart_cluster``), by (address, workers, segmentation).
_PRESTARTED: dict[tuple[str | None, int | None, SegmentationSource], Future] = {}


def scheduler_address(dask_address: str | None) -> str | None:
    """``dask_address``, else ``DASK_SCHEDULER_ADDRESS``, else None (a local cluster)."""
    return dask_address or os.environ.get("DASK_SCHEDULER_ADDRESS")


def _cluster_key(dask_address: str | None, workers: int | None, source: SegmentationSource):
    address = scheduler_address(dask_address)
    return address, None if address else (workers or default_workers()), source


def _in_background(name: str, fn: Callable[..., Any], *args: Any) -> Future:
    """Run ``fn(*args)`` in a new thread named after ``name``; returns its future."""
    runner = ThreadPoolExecutor(1, thread_name_prefix=name)
    future = runner.submit(fn, *args)
    runner.shutdown(wait=False)
    return future


def prestart_cluster(
    dask_address: str | None, workers: int | None, segmentation: SegmentationSource
) -> None:
    """Start connecting to (or starting) the Dask cluster now, in a background thread.

    The next :func:`cohort_ef` run in this process with the same address, workers and
    segmentation takes this cluster instead of starting one. ``echo-batch run`` calls it before
    the flow, so that the workers start (and import their modules) on the second core while
    the embedded Prefect API starts on the first. A cluster no run takes must be closed with
    :func:`discard_prestarted`.
    """
    key = _cluster_key(dask_address, workers, segmentation)
    if key not in _PRESTARTED:
        _PRESTARTED[key] = _in_background(
            "dask-start", _timed_client, dask_address, workers, segmentation
        )


def _take_cluster(
    dask_address: str | None, workers: int | None, segmentation: SegmentationSource
) -> Future:
    """The future of a prestarted cluster that matches, or of one started now."""
    prestart_cluster(dask_address, workers, segmentation)  # no-op when one is waiting
    return _PRESTARTED.pop(_cluster_key(dask_address, workers, segmentation))


def discard_prestarted() -> None:
    """Close every cluster that :func:`prestart_cluster` started and no run took."""
    while _PRESTARTED:
        _discard(_PRESTARTED.popitem()[1])


def _discard(cluster_future) -> None:
    """Close the cluster a background start produced (or ignore a start that failed)."""
    try:
        client, cluster, _ = cluster_future.result()
    except Exception:  # the run is failing already; the start error adds nothing
        return
    _close(client, cluster)


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
def record_chunk(store, result: ChunkResult, index: int) -> tuple[dict[str, int], str | None]:
    """Write one finished chunk as an atomic Parquet part.

    Returns:
        ``(counts by status, None)``, or ``({}, error)`` when ``OUT`` cannot be written (the
        flow then stops with that error; returning it keeps a traceback out of the task log).
    """
    try:
        store.write_part(result, index)
    except EchoBatchError as exc:
        return {}, str(exc)
    return dict(Counter(p.status for p in result.patients)), None


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
    chunk_size: int | None = None,
    workers: int | None = None,
    dask_address: str | None = None,
    device: str = "auto",
    resume: bool = True,
    save_masks: bool = False,
    precision: str = "auto",
    batch_size: int | None = None,
    camus_grid_mm: float | None = None,
    compile: bool = False,
    report: bool = True,
) -> dict[str, Any]:
    """Measure every patient under ``data`` and write ``patients.parquet``/``images.parquet``.

    Args:
        data: DATA root (CAMUS 2019/2023 layout or a folder of patient folders).
        out: output folder (locked for the duration of the run).
        model: bundle directory (None: the bundled default).
        segmentation: "model" or "gt".
        chunk_size: patients per chunk (one Dask task and one Prefect task each); None picks
            about 8 chunks per worker within 16-64 (``runner.auto_chunk_size``). Either way the
            size is lowered so that every worker gets the same number of chunks.
        workers: local Dask worker processes (None: one per core); ignored with ``dask_address``.
        dask_address: scheduler of an existing Dask cluster (or ``DASK_SCHEDULER_ADDRESS``).
        device: "auto", "cpu" or "cuda".
        resume: skip patients already ``ok`` in OUT; retry the others.
        save_masks: write predicted label maps under ``OUT/masks``.
        precision: "auto", "bf16", "fp16" or "fp32".
        batch_size: images per forward pass (None: device default).
        camus_grid_mm: fine grid for the CAMUS-compatible method (see ``ChunkOptions``).
        compile: ``torch.compile`` the model in each worker.
        report: write ``OUT/report/`` (as ``echo-batch report OUT``) at the end; a report failure
            is logged as a warning and never fails the run.

    Returns:
        The run record, also written to ``OUT/run.json``; a Failed state carrying the
        :class:`EchoBatchError` when ``OUT`` is locked, not writable or full.
    """
    try:
        return _cohort_ef(**locals())  # first statement: locals() holds the arguments only
    except EchoBatchError as exc:
        return Failed(message=str(exc), data=exc)


def _cohort_ef(
    data: str,
    out: str,
    model: str | None,
    segmentation: str,
    chunk_size: int | None,
    workers: int | None,
    dask_address: str | None,
    device: str,
    resume: bool,
    save_masks: bool,
    precision: str,
    batch_size: int | None,
    camus_grid_mm: float | None,
    compile: bool,
    report: bool = True,
) -> dict[str, Any]:
    """Body of :func:`cohort_ef` (same arguments)."""
    from echo_batch.run.chunk import model_id_for
    from echo_batch.run.serial import auto_chunk_size, balanced_chunk_size, chunked, run_record
    from echo_batch.store.output import OutputStore

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
    closing: list[Future] = []
    try:
        with store.lock():
            # the cluster starts (and its workers import their modules) while discovery runs
            cluster_future = _take_cluster(dask_address, workers, source)
            try:
                manifest = discover(data)
                if PROGRESS_TOTAL is not None:
                    PROGRESS_TOTAL(len(manifest.patients))
                log_problems(manifest, logger)
                done = store.done_patient_ids() if resume else set()
                todo = [p for p in manifest.patients if p.patient_id not in done]
                model_id = model_id_for(options)
            except BaseException:
                _discard(cluster_future)  # no cluster process outlives a failed run
                raise
            logger.info(
                "%d patients discovered, %d already done, %d to process",
                len(manifest.patients),
                len(manifest.patients) - len(todo),
                len(todo),
            )
            seconds["discover"] = time.perf_counter() - started
            counts: Counter[str] = Counter()
            t0 = time.perf_counter()
            client, cluster, seconds["cluster_start"] = cluster_future.result()
            seconds["cluster_wait"] = time.perf_counter() - t0
            n_workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
            wanted = chunk_size or auto_chunk_size(len(todo), n_workers)
            size = balanced_chunk_size(len(todo), wanted, n_workers)
            chunks = chunked(todo, size) if todo else []
            # the cluster closes in the background while the results are compacted and reported
            if not chunks:
                closing.append(_in_background("dask-close", _close, client, cluster))
            else:
                t0 = time.perf_counter()
                try:
                    counts = _run_chunks(client, chunks, options, model_id, store, seconds)
                finally:
                    seconds["chunks_wall"] = time.perf_counter() - t0
                    closing.append(_in_background("dask-close", _close, client, cluster))
            t0 = time.perf_counter()
            store.compact([p.patient_id for p in manifest.patients], model_id)
            seconds["compact"] = time.perf_counter() - t0
            record = run_record(
                out_path,
                manifest,
                options,
                model_id,
                chunk_size=chunk_size,
                executor=f"dask:{scheduler_address(dask_address) or 'local'}",
                seconds=seconds,
                started=started,
                extra={
                    "processed": len(todo),
                    "skipped_done": len(manifest.patients) - len(todo),
                    "processed_by_status": dict(counts),
                    "workers": workers or default_workers(),
                    "chunk_size_used": size,
                },
            )
        logger.info("run finished: %s", record["summary"]["status"])
        if report:
            from echo_batch.report import write_report_safely

            write_report_safely(out_path, logger)
    finally:
        for future in closing:  # no cluster process outlives the run
            future.result()
    return record


def _run_chunks(client, chunks, options, model_id, store, seconds) -> Counter[str]:
    """Submit the chunks to Dask and record each as it finishes.

    Two chunks per worker thread are in flight until the first chunk fails: the second waits on
    the worker, so that a worker never idles for the round trip (finished chunk -> flow -> next
    chunk), which cost 30-240 ms per chunk here, 10 % of a 500-patient gt run. After a failure
    the flow goes down to one chunk per thread: when a worker dies, Dask counts the death
    against every task assigned to it, so a patient that keeps killing its worker would use up
    the ``allowed_failures`` of innocent chunks queued behind it. A chunk whose future still
    fails (its worker died more often than ``allowed_failures``, or the chunk function raised)
    is split: each of its patients is retried alone, first, so that the others are measured and
    only a patient that fails alone is recorded as failed.
    """
    from distributed import as_completed

    logger = get_run_logger()
    resources = chunk_resources(client, options.device, options.segmentation)
    waiting: deque[tuple[int, list[PatientRef]]] = deque(enumerate(chunks))
    futures = {}
    next_index = len(chunks)
    counts: Counter[str] = Counter()
    pending = as_completed([], timeout=CHUNK_TIMEOUT_S * len(chunks))
    depth = [IN_FLIGHT_PER_THREAD]  # chunks in flight per worker thread; 1 after a failure

    def top_up() -> None:
        slots = max(1, sum(client.nthreads().values())) * depth[0]
        while waiting and len(futures) < slots:
            index, refs = waiting.popleft()
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
            pending.add(future)

    writes: list = []  # Prefect futures of record-chunk tasks, in submission order

    def collect(block: bool) -> None:
        """Take the counts of finished writes (all of them when ``block``); stop on an error."""
        still = []
        for write in writes:
            wrapped = getattr(write, "wrapped_future", None)
            if block or wrapped is None or wrapped.done():
                chunk_counts, error = write.result()
                if error is not None:
                    raise EchoBatchError(error)
                counts.update(chunk_counts)
            else:
                still.append(write)
        writes[:] = still

    def record(result: ChunkResult, index: int, n: int) -> None:
        """Write a chunk's part in Prefect's task thread pool: this loop goes on serving Dask."""
        for stage, value in result.seconds.items():
            seconds[stage] += value
        writes.append(record_chunk.submit(quote(store), quote(result), index))
        collect(block=False)
        if PROGRESS is not None:
            PROGRESS(n)

    top_up()
    try:
        for future in pending:
            index, refs = futures.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # a dead or failing worker fails its chunk, not the run
                error = f"chunk failed on the cluster: {type(exc).__name__}: {exc}"
                future.release()
                depth[0] = 1
                if len(refs) > 1:
                    logger.warning(
                        "chunk %d (%s .. %s) failed on the cluster (%s); retrying its %d "
                        "patients one by one",
                        index,
                        refs[0].patient_id,
                        refs[-1].patient_id,
                        type(exc).__name__,
                        len(refs),
                    )
                    alone = [(next_index + k, [ref]) for k, ref in enumerate(refs)]
                    next_index += len(refs)
                    waiting.extendleft(reversed(alone))  # next in line, in patient order
                    top_up()
                    continue
                result = _failed_chunk(refs, error, model_id)
            else:
                future.release()
            top_up()  # the freed worker gets its next chunk before this one is recorded
            record(result, index, len(refs))
    except TimeoutError:  # still in flight or waiting: recorded as failed
        for future, (index, refs) in futures.items():
            future.cancel()
            record(_failed_chunk(refs, "chunk timed out on the cluster", model_id), index, 0)
        for index, refs in waiting:
            record(_failed_chunk(refs, "chunk timed out on the cluster", model_id), index, 0)
    collect(block=True)
    return counts
