"""Prefect flow ``cohort-ef``: discover patients, process chunks on Dask, write resumable Parquet.

Prefect runs only in the flow process and tracks chunks (one task per finished chunk); the chunk
computation itself is the plain function :func:`echo_batch.run.chunk.process_chunk`, sent to Dask
workers, which never talk to Prefect (no per-worker ephemeral API servers, no per-patient Prefect
overhead). Each worker process loads the model once (``get_engine`` cache). Everything written
goes through :class:`echo_batch.run.cohort.CohortRun`, the write path the serial run uses too.

Failures stay contained: Dask reruns a chunk whose worker died (up to ``allowed_failures`` times);
a chunk that still fails is split and its patients are retried one by one, so that only the
patient that brings its worker down is recorded as failed; a chunk that runs past its time limit
is recorded as timed out while the others go on. An unusable ``OUT`` (not writable, full, locked,
holding rows of other settings) ends the run with a Failed state carrying the
:class:`EchoBatchError`, which the caller receives as that exception, without a traceback.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed
from prefect.utilities.annotations import quote

from echo_batch.domain import PatientRef
from echo_batch.errors import EchoBatchError
from echo_batch.io.discovery import log_problems
from echo_batch.run.chunk import (
    ChunkResult,
    failed_patient_record,
    process_chunk,
    uncertainty_method,
)
from echo_batch.run.chunking import auto_chunk_size, balanced_chunk_size, chunked
from echo_batch.run.cluster import (
    chunk_resources,
    close_cluster,
    default_workers,
    discard_cluster,
    in_background,
    scheduler_address,
    take_cluster,
)
from echo_batch.run.cohort import CohortRun, Progress, preflight
from echo_batch.run.gpu_stage import (
    Chain,
    FusedChunks,
    SplitChunks,
    split_chunk_size,
    worker_kinds,
)
from echo_batch.run.options import RunOptions
from flows.report_process import write_report_in_child

IN_FLIGHT_PER_THREAD = 2  # chunks submitted per worker thread while no chunk has failed
DEVICE_POLL_S = 0.5  # split runs: the flow looks at the stages and the GPU workers this often


@task(name="record-chunk", cache_policy=NO_CACHE)
def record_chunk(
    run: CohortRun, result: ChunkResult, index: int
) -> tuple[dict[str, int], str | None]:
    """Write one finished chunk as an atomic Parquet part.

    Returns:
        ``(counts by status, None)``, or ``({}, error)`` when ``OUT`` cannot be written (the
        flow then stops with that error; returning it keeps a traceback out of the task log).
    """
    try:
        return run.record(result, index), None
    except EchoBatchError as exc:
        return {}, str(exc)


@flow(name="cohort-ef", log_prints=False)
def cohort_ef(options: RunOptions, progress: Any = None) -> dict[str, Any]:
    """Measure every patient under ``options.data``; write the Parquet outputs to ``options.out``.

    Args:
        options: the run's options (a deployment passes them as a mapping, e.g.
            ``{"data": ..., "out": ..., "chunk": {"segmentation": "model"}, "resume": true}``).
        progress: a :class:`~echo_batch.run.cohort.Progress`, told the number of patients to
            process, then each written chunk (typed ``Any`` here: Prefect validates parameters
            with pydantic, which cannot check a protocol).

    Returns:
        The run record, also written to ``OUT/run.json``; a Failed state carrying the
        :class:`EchoBatchError` when DATA, the model bundle or ``OUT`` is unusable.
    """
    try:
        return _cohort_ef(options, progress)
    except EchoBatchError as exc:
        return Failed(message=str(exc), data=exc)


def _cohort_ef(options: RunOptions, progress: Progress | None) -> dict[str, Any]:
    """Body of :func:`cohort_ef`."""
    logger = get_run_logger()
    model_id = preflight(options)  # before any cluster starts (the CLI ran it already)
    seconds: Counter[str] = Counter()
    closing: list[Future] = []
    segmentation = options.chunk.segmentation
    try:
        with CohortRun.open(options, model_id) as run:
            # the cluster starts (and its workers import their modules) while discovery runs
            cluster_future = take_cluster(
                options.dask_address, options.workers, segmentation, options.chunk.device
            )
            try:
                todo = run.plan()
                if progress is not None:
                    progress.start(len(todo))
                log_problems(run.manifest, logger)
            except BaseException:
                discard_cluster(cluster_future)  # no cluster process outlives a failed run
                raise
            seconds["discover"] = time.perf_counter() - run.started
            counts: Counter[str] = Counter()
            t0 = time.perf_counter()
            client, cluster, seconds["cluster_start"] = cluster_future.result()
            seconds["cluster_wait"] = time.perf_counter() - t0
            # the cluster closes in the background while the results are compacted and reported
            t0 = time.perf_counter()
            size = None
            try:
                submitter = _submitter(client, options.chunk_options(threads=1), run.model_id)
                size = _chunk_size(client, submitter, len(todo), options)
                chunks = chunked(todo, size) if todo else []
                if chunks:
                    counts = _run_chunks(submitter, chunks, run, seconds, progress)
            finally:
                seconds["chunks_wall"] = time.perf_counter() - t0
                closing.append(in_background("dask-close", close_cluster, client, cluster))
            record = run.finish(
                executor=f"dask:{scheduler_address(options.dask_address) or 'local'}",
                seconds=seconds,
                extra={
                    "processed": len(todo),
                    "skipped_done": len(run.manifest.patients) - len(todo),
                    "processed_by_status": dict(counts),
                    "workers": options.workers or default_workers(),
                    "chunk_size_used": size,
                },
            )
        logger.info("run finished: %s", record["summary"]["status"])
        if options.report:  # in a child process: its memory goes back when it is written
            write_report_in_child(options.out, logger)
    finally:
        for future in closing:  # no cluster process outlives the run
            future.result()
    return record


def _failed_chunk(refs: Sequence[PatientRef], error: str, model_id: str) -> ChunkResult:
    return ChunkResult(
        patients=[failed_patient_record(r, f"{r.patient_id}: {error}", model_id) for r in refs]
    )


def _chunk_size(client, submitter, n_patients: int, options: RunOptions) -> int:
    """Patients per chunk: automatic (about 8 chunks per worker) or ``--chunk-size``, balanced;
    a split run's chunks are one pass each, two per CPU thread at least."""
    if submitter.split:
        n_workers = max(1, submitter.cpu_threads)
        wanted = split_chunk_size(n_patients, options.chunk_size, options.chunk, n_workers)
    else:
        n_workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
        wanted = options.chunk_size or auto_chunk_size(n_patients, n_workers)
    return balanced_chunk_size(n_patients, wanted, n_workers)


def _submitter(client, chunk_options, model_id: str) -> FusedChunks | SplitChunks:
    """Three tasks per chunk when the model runs on a cluster with GPU and CPU workers (only
    the inference requests ``GPU=1``); else one fused ``process_chunk`` task per chunk, with
    ``GPU=1`` when the model runs on GPU workers. A run with members (``--uncertainty`` or an
    ensemble bundle) runs fused: its ensemble segments native images (no grid-stack stage yet)."""
    resources = chunk_resources(client, chunk_options.device, chunk_options.segmentation)
    fused_only = uncertainty_method(chunk_options) is not None
    if resources is not None and worker_kinds(client)[1] and not fused_only:
        return SplitChunks(client, chunk_options, model_id)
    return FusedChunks(client, process_chunk, chunk_options, model_id, resources)


def _run_chunks(submitter, chunks, run: CohortRun, seconds, progress) -> Counter[str]:
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

    Each chunk has its own deadline: ``chunk_timeout_s`` times the chunks in flight per thread
    after its submission (a chunk may wait behind at most that many others on its thread). A
    chunk past its deadline is recorded as timed out and the run goes on with the others.
    """
    from distributed import wait

    logger = get_run_logger()
    options = run.options
    # chunk index and patients; None: the patients of chunks[index], taken (and for a
    # PatientRefs cohort: still compressed) only when the chunk is submitted
    waiting: deque[tuple[int, Sequence[PatientRef] | None]] = deque(
        (index, None) for index in range(len(chunks))
    )
    in_flight: dict[Chain, tuple[int, list[PatientRef], float]] = {}  # index, refs, deadline
    next_index = len(chunks)
    counts: Counter[str] = Counter()
    depth = [IN_FLIGHT_PER_THREAD]  # chunks in flight per worker thread; 1 after a failure

    def top_up() -> None:
        while waiting and submitter.has_room(list(in_flight), depth[0]):
            index, refs = waiting.popleft()
            if refs is None:
                refs = chunks[index]
            chain = submitter.submit(index, refs)
            deadline = time.monotonic() + options.chunk_timeout_s * depth[0]
            in_flight[chain] = (index, refs, deadline)

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
        writes.append(record_chunk.submit(quote(run), quote(result), index))
        collect(block=False)
        if progress is not None:
            progress.advance(n)

    def finished(chain: Chain, index: int, refs: list[PatientRef]) -> None:
        nonlocal next_index
        try:
            result = chain.final.result()
        except Exception as exc:  # a dead or failing worker fails its chunk, not the run
            error = f"chunk failed on the cluster: {type(exc).__name__}: {exc}"
            chain.release()
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
                return
            result = _failed_chunk(refs, error, run.model_id)
        else:
            chain.release()
        if len(result.patients) < len(refs):  # a split chunk reads one pass: the rest goes again
            waiting.appendleft((next_index, list(refs)[len(result.patients) :]))
            next_index += 1
        top_up()  # the freed worker gets its next chunk before this one is recorded
        record(result, index, len(result.patients))

    top_up()
    while in_flight:
        earliest = min(deadline for _, _, deadline in in_flight.values())
        timeout = max(0.0, earliest - time.monotonic())
        if submitter.split:  # wake for each stage (backpressure) and to notice a lost GPU
            timeout = min(timeout, DEVICE_POLL_S)
        with contextlib.suppress(TimeoutError):  # a deadline passed: handled below
            wait(
                [chain.frontier() for chain in in_flight],
                timeout=timeout,
                return_when="FIRST_COMPLETED",
            )
        for chain in submitter.check_devices(list(in_flight)):  # its CPU workers are gone
            index, refs, _ = in_flight.pop(chain)
            chain.cancel()
            logger.warning("chunk %d lost every worker it could run on; sending it again", index)
            waiting.appendleft((index, refs))
        for chain in [c for c in in_flight if c.final.done()]:
            index, refs, _ = in_flight.pop(chain)
            finished(chain, index, refs)
        now = time.monotonic()
        for chain in [c for c, (_, _, deadline) in in_flight.items() if deadline <= now]:
            index, refs, _ = in_flight.pop(chain)
            chain.cancel()
            depth[0] = 1  # a worker thread may be stuck in it: queue nothing more behind it
            logger.warning(
                "chunk %d (%s .. %s) did not finish in time; its patients are recorded as "
                "timed out",
                index,
                refs[0].patient_id,
                refs[-1].patient_id,
            )
            error = f"chunk timed out on the cluster (limit {options.chunk_timeout_s:g} s)"
            record(_failed_chunk(refs, error, run.model_id), index, len(refs))
        top_up()
    collect(block=True)
    return counts
