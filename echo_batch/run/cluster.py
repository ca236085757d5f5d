"""The Dask cluster of a run: a client of an existing scheduler, or a local cluster sized to the
machine, started ahead of the run where possible and always closed with it.

On a host where torch sees a CUDA device, a model run's local cluster has one GPU worker
(``GPU=1``, one thread, the host's CUDA devices) and single-threaded CPU workers started with
``CUDA_VISIBLE_DEVICES=""``, which can never create a CUDA context (:func:`local_layout`).

Nothing here knows Prefect: the flow in ``flows/cohort_ef.py`` takes its cluster from here.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from echo_batch.domain import Device, SegmentationSource
from echo_batch.run.worker_preload import PRELOAD_TORCH_KEY, RUN_PID_KEY

# Dask keeps its recent messages for debugging (``distributed.admin.low-level-log-length``,
# default 1,000). The local scheduler runs in the flow process and each message that sends a chunk
# holds that chunk's patient references: about 8 KB per patient kept for the whole run, 77 MB of
# flow-process growth over 10,000 patients (measured), 400 MB and more past 50,000.
LOCAL_LOW_LEVEL_LOG_LENGTH = 20
WORKER_PRELOAD = "echo_batch.run.worker_preload"  # imported by every local worker at start-up
GPU_RESOURCES = {"GPU": 1}
"""Dask resources the GPU worker advertises (and only the inference of a model run requests)."""
NO_CUDA_ENV = {"CUDA_VISIBLE_DEVICES": ""}
"""Environment of CPU workers beside a GPU worker: torch there sees no device, so they never
create a CUDA context (about 500 MB of device memory each) nor take the GPU's work."""
GPU_WORKER_NAME = "gpu-0"

logger = logging.getLogger(__name__)


def default_workers() -> int:
    """One single-threaded worker process per core.

    Measured on the 2-core development machine: 2 processes x 1 thread beat 1 process x 2 threads
    (small batches stay in each core's cache; see docs/performance.md).
    """
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class LocalLayout:
    """The worker processes of a local cluster, all single-threaded.

    Attributes:
        cpu_workers: CPU worker processes (``--workers``); beside a GPU worker they are started
            with ``CUDA_VISIBLE_DEVICES=""``.
        gpu_worker: whether one more process advertises ``GPU=1`` and keeps the host's CUDA
            devices (it runs on the first one torch sees).
    """

    cpu_workers: int
    gpu_worker: bool = False


def cuda_visible() -> bool:
    """Whether torch in this process sees a CUDA device, without initialising CUDA here.

    ``torch.cuda.device_count`` answers 0 at once from a CPU build of torch, and otherwise asks
    NVML (it honours ``CUDA_VISIBLE_DEVICES`` and creates no CUDA context in the flow process;
    only if NVML fails does it fall back to the CUDA runtime's count, which initialises the
    driver, still without a context). torch is imported already when this is asked: the run's
    preflight loaded the model bundle, and only model runs ask.
    """
    import torch

    return torch.cuda.device_count() > 0


def local_layout(
    workers: int | None,
    device: Device,
    source: SegmentationSource,
    cuda: bool | None = None,
) -> LocalLayout:
    """The local cluster of a run: all-CPU, or one GPU worker and CPU workers.

    A GPU worker is added for model runs whose device is ``auto`` or ``cuda`` on a host where
    torch sees CUDA. ``workers`` always counts the CPU worker processes; by default one per core,
    less the core the GPU worker's process uses when there is one (at least one CPU worker).

    Args:
        workers: ``--workers`` (None: the default above).
        device: ``--device``; ``cpu`` keeps the all-CPU layout on any host.
        source: the run's segmentation; expert-mask runs never need a GPU.
        cuda: whether CUDA is visible (None: ask :func:`cuda_visible`).
    """
    gpu = (
        source == SegmentationSource.MODEL
        and device != Device.CPU
        and (cuda_visible() if cuda is None else cuda)
    )
    if workers:
        return LocalLayout(workers, gpu)
    return LocalLayout(max(1, default_workers() - 1) if gpu else default_workers(), gpu)


def dask_client(
    dask_address: str | None,
    workers: int | None,
    preload: Sequence[str] = (),
    preload_torch: bool = False,
    gpu_worker: bool = False,
):
    """A client of the given scheduler, or of a new local cluster sized to the machine.

    Args:
        dask_address: scheduler address (or ``DASK_SCHEDULER_ADDRESS``); None for a local cluster.
        workers: local CPU worker processes (None: one per core).
        preload: modules each local worker imports when it starts (Dask ``preload``).
        preload_torch: whether ``echo_batch.run.worker_preload`` also imports torch (model runs).
        gpu_worker: local cluster only: add one worker that advertises ``GPU=1`` and start the
            CPU workers with ``CUDA_VISIBLE_DEVICES=""`` (see :class:`LocalLayout`).

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
    if gpu_worker:
        cluster = _gpu_cluster(workers or default_workers(), preload)
        return Client(cluster), cluster
    cluster = LocalCluster(
        n_workers=workers or default_workers(),
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=40,
        preload=list(preload),
    )
    return Client(cluster), cluster


def _gpu_cluster(cpu_workers: int, preload: Sequence[str]):
    """A local ``SpecCluster``: ``cpu_workers`` CPU workers without CUDA, and one GPU worker.

    The same scheduler and worker options as the all-CPU ``LocalCluster`` (127.0.0.1, no
    dashboards, one thread per worker, memory split evenly), built as worker specs because the
    two kinds of worker differ in their environment and resources.
    """
    from distributed import Nanny, Scheduler, SpecCluster
    from distributed.worker_memory import parse_memory_limit

    total = cpu_workers + 1
    common = {
        "host": "127.0.0.1",
        "nthreads": 1,
        "dashboard": False,
        "dashboard_address": None,
        "silence_logs": 40,
        "preload": list(preload),
        "memory_limit": parse_memory_limit("auto", 1, total, logger=logger),
    }
    cpu = {"cls": Nanny, "options": {**common, "env": dict(NO_CUDA_ENV)}}
    gpu = {"cls": Nanny, "options": {**common, "resources": dict(GPU_RESOURCES)}}
    specs = {f"cpu-{i}": cpu for i in range(cpu_workers)} | {GPU_WORKER_NAME: gpu}
    scheduler = {
        "cls": Scheduler,
        "options": {"host": "127.0.0.1", "port": 0, "dashboard": False, "dashboard_address": None},
    }
    logger.info(
        "local cluster: 1 GPU worker (GPU=1) and %d CPU workers with CUDA_VISIBLE_DEVICES=''",
        cpu_workers,
    )
    return SpecCluster(workers=specs, scheduler=scheduler, worker=cpu, silence_logs=40)


def timed_client(
    dask_address: str | None,
    workers: int | None,
    source: SegmentationSource,
    device: Device = Device.AUTO,
):
    """``dask_client`` plus the seconds it took; model runs also preload torch in the workers.

    A local cluster takes its :func:`local_layout` from ``workers``, ``device`` and ``source``.
    """
    t0 = time.perf_counter()
    gpu_worker = False
    if scheduler_address(dask_address) is None:
        layout = local_layout(workers, device, source)
        workers, gpu_worker = layout.cpu_workers, layout.gpu_worker
    client, cluster = dask_client(
        dask_address,
        workers,
        preload=[WORKER_PRELOAD],
        preload_torch=source == SegmentationSource.MODEL,
        gpu_worker=gpu_worker,
    )
    return client, cluster, time.perf_counter() - t0


def close_cluster(client, cluster) -> None:
    """Close the client, then the local cluster it belongs to (None for an external one)."""
    client.close()
    if cluster is not None:
        cluster.close()


# Clusters started ahead of a run (``prestart_cluster``), by (address, workers, segmentation,
# device); the device is None for an external scheduler, whose workers are what they are.
_PRESTARTED: dict[tuple[str | None, int | None, SegmentationSource, Device | None], Future] = {}


def scheduler_address(dask_address: str | None) -> str | None:
    """``dask_address``, else ``DASK_SCHEDULER_ADDRESS``, else None (a local cluster)."""
    return dask_address or os.environ.get("DASK_SCHEDULER_ADDRESS")


def _cluster_key(
    dask_address: str | None, workers: int | None, source: SegmentationSource, device: Device
):
    address = scheduler_address(dask_address)
    if address:
        return address, None, source, None
    return None, workers or default_workers(), source, Device(device)


def in_background(name: str, fn: Callable[..., Any], *args: Any) -> Future:
    """Run ``fn(*args)`` in a new thread named after ``name``; returns its future."""
    runner = ThreadPoolExecutor(1, thread_name_prefix=name)
    future = runner.submit(fn, *args)
    runner.shutdown(wait=False)
    return future


def prestart_cluster(
    dask_address: str | None,
    workers: int | None,
    segmentation: SegmentationSource,
    device: Device = Device.AUTO,
) -> None:
    """Start connecting to (or starting) the Dask cluster now, in a background thread.

    The next :func:`cohort_ef` run in this process with the same address, workers, segmentation
    and device takes this cluster instead of starting one. ``echo-batch run`` calls it before
    the flow, so that the workers start (and import their modules) on the second core while
    the embedded Prefect API starts on the first. A cluster no run takes must be closed with
    :func:`discard_prestarted`.
    """
    key = _cluster_key(dask_address, workers, segmentation, device)
    if key not in _PRESTARTED:
        _PRESTARTED[key] = in_background(
            "dask-start", timed_client, dask_address, workers, segmentation, device
        )


def take_cluster(
    dask_address: str | None,
    workers: int | None,
    segmentation: SegmentationSource,
    device: Device | None = None,
) -> Future:
    """The future of a prestarted cluster that matches, or of one started now.

    ``device`` None takes a prestarted cluster of any device (the one ``echo-batch run``
    started for this run knows the run's device), else starts one for ``auto``.
    """
    wanted = _cluster_key(dask_address, workers, segmentation, device or Device.AUTO)
    for key in _PRESTARTED:
        if key[:3] == wanted[:3] and (device is None or key == wanted):
            return _PRESTARTED.pop(key)
    prestart_cluster(dask_address, workers, segmentation, device or Device.AUTO)
    return _PRESTARTED.pop(wanted)


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
