"""Submitting chunks to Dask: one fused task per chunk, or three stages when a GPU worker is there.

The flow (``flows/cohort_ef.py``) owns the loop over chunks (deadlines, retries, records); this
module says what one chunk in flight is (a :class:`Chain` of futures) and how it is submitted:

- :class:`FusedChunks`: one ``process_chunk`` task per chunk, on any worker (``GPU=1`` where the
  model runs on GPU workers and there is no CPU worker to split for).
- :class:`SplitChunks`: per chunk, ``load_chunk`` and ``grid_of`` on the CPU workers,
  ``infer_grid`` with ``resources={"GPU": 1}`` (only GPU workers advertise it), ``measure_chunk``
  on the CPU workers (:mod:`echo_batch.run.stages`). Load and measure are restricted to the
  CPU workers, strictly: Dask's work stealing moves loosely restricted tasks to any idle
  worker, and the GPU worker's one thread must only ever feed the device (measured: loads and
  measurements ran on the GPU worker with ``allow_other_workers=True``). A chunk whose CPU
  workers are all gone is sent again (:meth:`SplitChunks.check_devices`). Backpressure: at
  most ``threads x depth`` loads in flight and :data:`WAITING_PER_GPU` loaded chunks waiting
  per GPU worker. When no GPU worker has been
  seen for :data:`GPU_LOSS_GRACE_S`, every chunk not yet measured runs its inference on the
  CPU workers instead (``device=cpu``, logged as a warning).

Nothing here knows Prefect.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from echo_batch.domain import Device, PatientRef
from echo_batch.run.options import ChunkOptions
from echo_batch.run.stages import (
    grid_of,
    infer_grid,
    load_chunk,
    measure_chunk,
    split_pass_size,
)

logger = logging.getLogger(__name__)

WAITING_PER_GPU = 3
"""Loaded chunks waiting for inference per GPU worker (one running, the next ones' grids already
fetched by the worker); each holds one pass of native images on a CPU worker."""
GRID_PRIORITY = 100  # Dask priority of the grid_of tasks (others: 0)
GPU_LOSS_GRACE_S = 5.0
"""Seconds without any GPU worker before inference falls back to the CPU workers (a nanny
restarts a killed worker within about 2 s here)."""


def _key(stage: str, index: int) -> str:
    return f"{stage}-{index:05d}-{os.getpid()}-{time.time_ns()}"


@dataclass(eq=False)  # hashed by identity: the flow keys its chunks in flight by chain
class Chain:
    """The futures of one chunk in flight, in stage order; the last one's result is the
    chunk's ``ChunkResult``."""

    stages: dict[str, Any]
    cpu: frozenset[str] = frozenset()  # the CPU workers its CPU stages are restricted to

    @property
    def final(self):
        """The future of the chunk's result."""
        return list(self.stages.values())[-1]

    def frontier(self):
        """The first future not yet done (the final one once all are)."""
        return next((f for f in self.stages.values() if not f.done()), self.final)

    def done(self, stage: str) -> bool:
        """Whether ``stage``'s future is done (True for a stage the chain does not have)."""
        future = self.stages.get(stage)
        return future is None or future.done()

    def release(self) -> None:
        """Let Dask forget every future of the chain."""
        for future in self.stages.values():
            future.release()

    def cancel(self) -> None:
        """Cancel every future of the chain."""
        for future in self.stages.values():
            future.cancel()


def split_chunk_size(
    n_patients: int, wanted: int | None, options: ChunkOptions, cpu_threads: int
) -> int:
    """Patients per chunk of a split run.

    One pass (:func:`~echo_batch.run.stages.split_pass_size`: a full GPU batch of stills), or
    ``--chunk-size`` when smaller; on a short run smaller still, so that every CPU thread has
    two chunks (the CPU stages in parallel matter more there than full batches).
    """
    size = min(wanted or split_pass_size(options), split_pass_size(options))
    return max(1, min(size, -(-n_patients // (2 * max(1, cpu_threads)))))


def worker_kinds(client) -> tuple[list[str], list[str], int]:
    """``(GPU worker addresses, CPU worker addresses, CPU worker threads)`` of the cluster.

    A GPU worker advertises the Dask resource ``GPU`` >= 1; every other worker is a CPU worker.
    """
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    gpu = [a for a, w in workers.items() if w.get("resources", {}).get("GPU", 0) >= 1]
    cpu = [a for a in workers if a not in gpu]
    threads = sum(int(workers[a].get("nthreads", 1)) for a in cpu)
    return gpu, cpu, threads


class FusedChunks:
    """One ``process_chunk`` task per chunk (today's path: no GPU worker, or no CPU worker).

    Args:
        client: Dask client.
        chunk: the chunk function (looked up by the flow at submission, so tests can wrap it).
        options: chunk options.
        model_id: id written to every row.
        resources: Dask resources of every chunk (``{"GPU": 1}`` or None).
    """

    split = False

    def __init__(self, client, chunk: Callable, options: ChunkOptions, model_id: str, resources):
        self.client, self.chunk, self.options = client, chunk, options
        self.model_id, self.resources = model_id, resources

    def submit(self, index: int, refs: Sequence[PatientRef]) -> Chain:
        future = self.client.submit(
            self.chunk,
            refs,
            self.options,
            self.model_id,
            resources=self.resources,
            pure=False,
            key=_key("chunk", index),
        )
        return Chain({"chunk": future})

    def has_room(self, chains: Sequence[Chain], depth: int) -> bool:
        """Chunks in flight: ``depth`` per worker thread."""
        return len(chains) < max(1, sum(self.client.nthreads().values())) * depth

    def check_devices(self, chains: Sequence[Chain]) -> list[Chain]:
        """Nothing to check: a fused chunk reruns wherever Dask sends it."""
        return []


class SplitChunks:
    """Each chunk as load (CPU) -> infer (GPU) -> measure (CPU) tasks.

    Args:
        client: Dask client of a cluster with at least one GPU and one CPU worker.
        options: chunk options of a model run.
        model_id: id written to every row.
    """

    split = True

    def __init__(self, client, options: ChunkOptions, model_id: str):
        self.client, self.options, self.model_id = client, options, model_id
        self.gpu, self.cpu, self.cpu_threads = worker_kinds(client)
        self.on_cpu = False  # inference fell back to the CPU workers
        self.gpu_seen = time.monotonic()

    def _refresh(self) -> None:
        gpu, cpu, threads = worker_kinds(self.client)
        if gpu:
            self.gpu_seen = time.monotonic()
        self.gpu = gpu
        if cpu:  # with none left, chunks wait (bounded by their deadlines) for one to join
            self.cpu, self.cpu_threads = cpu, threads

    def _infer(self, index: int, grid, options: ChunkOptions):
        if self.on_cpu:
            return self.client.submit(
                infer_grid,
                grid,
                dataclasses.replace(options, device=Device.CPU),
                workers=self.cpu,
                pure=False,
                key=_key("infer-cpu", index),
            )
        return self.client.submit(
            infer_grid, grid, options, resources={"GPU": 1}, pure=False, key=_key("infer", index)
        )

    def _measure(self, index: int, loaded, labels):
        return self.client.submit(
            measure_chunk,
            loaded,
            labels,
            self.options,
            self.model_id,
            workers=self.cpu,
            pure=False,
            key=_key("measure", index),
        )

    def submit(self, index: int, refs: Sequence[PatientRef]) -> Chain:
        on_cpu = {"workers": self.cpu, "pure": False}
        loaded = self.client.submit(
            load_chunk, refs, self.options, key=_key("load", index), **on_cpu
        )
        # first among the ready tasks of its worker: a grid queued behind measurements held
        # back the device and then those measurements (CPU-bound run: 0.44x the ceiling)
        grid = self.client.submit(
            grid_of, loaded, key=_key("grid", index), priority=GRID_PRIORITY, **on_cpu
        )
        labels = self._infer(index, grid, self.options)
        measured = self._measure(index, loaded, labels)
        stages = {"load": loaded, "grid": grid, "infer": labels, "measure": measured}
        return Chain(stages, cpu=frozenset(self.cpu))

    def has_room(self, chains: Sequence[Chain], depth: int) -> bool:
        """Room for one more chunk: fewer than ``depth`` loads per CPU thread in flight, fewer
        than :data:`WAITING_PER_GPU` loaded chunks waiting per GPU worker, and fewer chunks in
        flight than those two bounds plus one being measured per CPU thread."""
        loading = sum(not c.done("load") for c in chains)
        waiting = sum(c.done("load") and not c.done("infer") for c in chains)
        gpus = 1 if self.on_cpu else max(1, len(self.gpu))
        loads, waits = max(1, self.cpu_threads) * depth, WAITING_PER_GPU * gpus
        return (
            loading < loads
            and waiting < waits
            and len(chains) < loads + waits + max(1, self.cpu_threads)  # + those measured
        )

    def check_devices(self, chains: Sequence[Chain]) -> list[Chain]:
        """Follow the cluster's workers; returns the chains to send again.

        A chain none of whose CPU workers is left (a restarted worker has a new address) can
        never run its CPU stages: it is returned, for the flow to submit its patients again.
        After :data:`GPU_LOSS_GRACE_S` without a GPU worker, the inference of every chunk not yet
        measured runs on the CPU workers (Dask would wait forever for a ``GPU`` resource).
        """
        self._refresh()
        live = set(self.cpu)
        stranded = [c for c in chains if not c.final.done() and c.cpu and not c.cpu & live]
        if self.on_cpu or self.gpu or time.monotonic() - self.gpu_seen < GPU_LOSS_GRACE_S:
            return stranded
        self.on_cpu = True
        pending = [c for c in chains if not c.final.done() and c not in stranded]
        logger.warning(
            "no GPU worker left in the cluster for %.0f s: inference of %d chunks in flight and "
            "of every later chunk runs on the CPU workers",
            GPU_LOSS_GRACE_S,
            len(pending),
        )
        for chain in pending:
            index = len(chain.stages)  # any int: keys are unique by time anyway
            old = (chain.stages["infer"], chain.stages["measure"])
            chain.stages["infer"] = self._infer(index, chain.stages["grid"], self.options)
            chain.stages["measure"] = self._measure(
                index, chain.stages["load"], chain.stages["infer"]
            )
            for future in old:
                future.release()
        return stranded


def gpu_test_cluster(cpu_workers: int, gpu_workers: int = 1, preload: Sequence[str] = ()):
    """A local cluster with ``gpu_workers`` workers that advertise ``GPU=1`` and ``cpu_workers``
    that do not, each a single-threaded process under a nanny, named ``gpu-<i>`` and
    ``cpu-<i>`` (for the device simulation and benchmarks; a run's own local cluster is
    :func:`echo_batch.run.cluster.dask_client`'s).

    No CUDA device is needed: with :attr:`~echo_batch.run.options.ChunkOptions.simulated_device`
    set the "GPU" worker runs the simulated engine, otherwise the network on its CPU.

    Returns:
        A started ``distributed.SpecCluster`` (close it, or use it as a context manager).
    """
    from distributed import Nanny, Scheduler, SpecCluster

    common = {
        "host": "127.0.0.1",
        "nthreads": 1,
        "dashboard": False,
        "dashboard_address": None,
        "silence_logs": logging.ERROR,
        "memory_limit": 0,
        "preload": list(preload),
    }
    cpu = {"cls": Nanny, "options": dict(common)}
    gpu = {"cls": Nanny, "options": {**common, "resources": {"GPU": 1}}}
    specs = {f"cpu-{i}": cpu for i in range(cpu_workers)}
    specs |= {f"gpu-{i}": gpu for i in range(gpu_workers)}
    scheduler = {
        "cls": Scheduler,
        "options": {"host": "127.0.0.1", "port": 0, "dashboard": False, "dashboard_address": None},
    }
    return SpecCluster(workers=specs, scheduler=scheduler, silence_logs=logging.ERROR)
