"""The Dask cluster of a run: a client of an existing scheduler, or a local cluster sized to the
machine, started ahead of the run where possible and always closed with it.

Nothing here knows Prefect: the flow in ``flows/cohort_ef.py`` takes its cluster from here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from echo_batch.domain import Device, SegmentationSource
from echo_batch.run.worker_preload import PRELOAD_TORCH_KEY, RUN_PID_KEY

# Dask keeps its recent messages for debugging (``distributed.admin.low-level-log-length``,
# default 1,000). The local scheduler runs in the flow process and each message that sends a chunk
# holds that chunk's patient references: about 8 KB per patient kept for the whole run, 77 MB of
# flow-process growth over 10,000 patients (measured), 400 MB and more past 50,000.
LOCAL_LOW_LEVEL_LOG_LENGTH = 20
WORKER_PRELOAD = "echo_batch.run.worker_preload"  # imported by every local worker at start-up


def default_workers() -> int:
    """One single-threaded worker process per core.

    Measured on the 2-core development machine: 2 processes x 1 thread beat 1 process x 2 threads
    (small batches stay in each core's cache; see docs/performance.md).
    """
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
            RUN_PID_KEY: os.getpid(),  # local workers end with this process, however it ends
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


def timed_client(dask_address: str | None, workers: int | None, source: SegmentationSource):
    """``dask_client`` plus the seconds it took; model runs also preload torch in the workers."""
    t0 = time.perf_counter()
    client, cluster = dask_client(
        dask_address,
        workers,
        preload=[WORKER_PRELOAD],
        preload_torch=source == SegmentationSource.MODEL,
    )
    return client, cluster, time.perf_counter() - t0


def close_cluster(client, cluster) -> None:
    """Close the client, then the local cluster it belongs to (None for an external one)."""
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


def in_background(name: str, fn: Callable[..., Any], *args: Any) -> Future:
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
        _PRESTARTED[key] = in_background(
            "dask-start", timed_client, dask_address, workers, segmentation
        )


def take_cluster(
    dask_address: str | None, workers: int | None, segmentation: SegmentationSource
) -> Future:
    """The future of a prestarted cluster that matches, or of one started now."""
    prestart_cluster(dask_address, workers, segmentation)  # no-op when one is waiting
    return _PRESTARTED.pop(_cluster_key(dask_address, workers, segmentation))


def discard_prestarted() -> None:
    """Close every cluster that :func:`prestart_cluster` started and no run took."""
    while _PRESTARTED:
        discard_cluster(_PRESTARTED.popitem()[1])


def discard_cluster(cluster_future) -> None:
    """Close the cluster a background start produced (or ignore a start that failed)."""
    try:
        client, cluster, _ = cluster_future.result()
    except Exception:  # the run is failing already; the start error adds nothing
        return
    close_cluster(client, cluster)


def chunk_resources(
    client, device: Device, segmentation: SegmentationSource
) -> dict[str, int] | None:
    """Dask resources of a chunk: ``GPU=1`` when the model runs on a GPU worker.

    ``cuda`` requires a worker that advertises ``GPU``; ``auto`` uses GPU workers when the cluster
    has any. A resource no worker has would make Dask wait forever, hence the check here.
    """
    if segmentation == SegmentationSource.GT or device == Device.CPU:
        return None
    workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
    has_gpu = any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers)
    if device == Device.CUDA and not has_gpu:
        raise RuntimeError("--device cuda: no Dask worker advertises a GPU resource (GPU=1)")
    return {"GPU": 1} if has_gpu else None
