"""The local cluster on a CUDA host (issue 16, point 2): one GPU worker and CPU workers that see no
CUDA device; ``--device cpu`` and expert-mask runs keep the all-CPU layout.

This machine has no GPU: the "CUDA present" decision is forced (``local_layout(cuda=True)``,
``dask_client(gpu_worker=True)``, or ``cuda_visible`` patched), and the workers are inspected from
inside (their environment, resources, threads, the run pid they watch).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future

import dask
import psutil
import pytest

import echo_batch.run.cluster as cluster
from echo_batch.domain import Device, SegmentationSource
from echo_batch.run.cluster import (
    GPU_RESOURCES,
    WORKER_PRELOAD,
    LocalLayout,
    chunk_resources,
    close_cluster,
    dask_client,
    local_layout,
)
from echo_batch.run.worker_preload import RUN_PID_KEY

MODEL, GT = SegmentationSource.MODEL, SegmentationSource.GT


@pytest.mark.parametrize(
    ("cores", "workers", "device", "source", "cuda", "expected"),
    [
        # a CUDA host: the GPU worker's process takes one core from the default CPU workers
        (8, None, Device.AUTO, MODEL, True, LocalLayout(7, True)),
        (8, None, Device.CUDA, MODEL, True, LocalLayout(7, True)),
        (1, None, Device.AUTO, MODEL, True, LocalLayout(1, True)),  # never zero CPU workers
        # --workers counts CPU worker processes, with or without a GPU worker beside them
        (8, 3, Device.AUTO, MODEL, True, LocalLayout(3, True)),
        (8, 3, Device.CPU, MODEL, True, LocalLayout(3, False)),
        # all-CPU layouts: --device cpu, expert masks, no CUDA
        (8, None, Device.CPU, MODEL, True, LocalLayout(8, False)),
        (8, None, Device.AUTO, GT, True, LocalLayout(8, False)),
        (8, None, Device.AUTO, MODEL, False, LocalLayout(8, False)),
        (8, None, Device.CUDA, MODEL, False, LocalLayout(8, False)),
    ],
)
def test_local_layout(monkeypatch, cores, workers, device, source, cuda, expected):
    monkeypatch.setattr(cluster, "default_workers", lambda: cores)
    assert local_layout(workers, device, source, cuda=cuda) == expected


def test_cpu_runs_never_ask_for_cuda(monkeypatch):
    """--device cpu and expert-mask runs decide their layout without torch's CUDA query."""

    def no_query() -> bool:
        raise AssertionError("cuda_visible asked")

    monkeypatch.setattr(cluster, "cuda_visible", no_query)
    assert not local_layout(None, Device.CPU, MODEL).gpu_worker
    assert not local_layout(None, Device.AUTO, GT).gpu_worker


def test_this_machine_has_no_cuda():
    """The CPU build of torch answers without CUDA (so the suite's clusters stay all-CPU)."""
    torch = pytest.importorskip("torch")
    if torch.version.cuda is not None:
        pytest.skip("torch here is a CUDA build; this checks the CPU build the suite installs")
    assert cluster.cuda_visible() is False


@pytest.mark.parametrize(
    ("device", "workers", "expected_workers", "gpu"),
    [(Device.AUTO, None, 3, True), (Device.CUDA, 2, 2, True), (Device.CPU, None, 4, False)],
)
def test_timed_client_builds_the_layout(monkeypatch, device, workers, expected_workers, gpu):
    """The run's cluster start passes the layout to ``dask_client`` (CUDA forced present)."""
    calls = []
    monkeypatch.setattr(cluster, "cuda_visible", lambda: True)
    monkeypatch.setattr(cluster, "default_workers", lambda: 4)
    monkeypatch.setattr(cluster, "dask_client", lambda *a, **k: calls.append((a, k)) or (1, 2))
    cluster.timed_client(None, workers, MODEL, device)
    ((args, kwargs),) = calls
    assert args == (None, expected_workers)
    assert kwargs["gpu_worker"] is gpu
    assert kwargs["preload"] == [WORKER_PRELOAD] and kwargs["preload_torch"] is True


def test_external_scheduler_gets_no_local_layout(monkeypatch):
    calls = []
    monkeypatch.setattr(cluster, "cuda_visible", lambda: True)
    monkeypatch.setattr(cluster, "dask_client", lambda *a, **k: calls.append((a, k)) or (1, 2))
    cluster.timed_client("tcp://127.0.0.1:1", None, MODEL, Device.AUTO)
    ((args, kwargs),) = calls
    assert args == ("tcp://127.0.0.1:1", None) and kwargs["gpu_worker"] is False


def test_prestarted_cluster_is_taken_by_device(monkeypatch):
    """A run takes the cluster prestarted for its device; ``device=None`` takes any device's."""
    started = []

    def fake_start(*args):
        started.append(args)
        future: Future = Future()
        future.set_result(args)
        return future

    monkeypatch.setattr(cluster, "in_background", lambda name, fn, *args: fake_start(*args))
    monkeypatch.setattr(cluster, "_PRESTARTED", {})
    cluster.prestart_cluster(None, 2, MODEL, Device.CPU)
    assert cluster.take_cluster(None, 2, MODEL).result() == (None, 2, MODEL, Device.CPU)
    cluster.prestart_cluster(None, 2, MODEL, Device.CPU)
    taken = cluster.take_cluster(None, 2, MODEL, Device.AUTO).result()
    assert taken == (None, 2, MODEL, Device.AUTO)  # not the CPU layout started before
    assert len(cluster._PRESTARTED) == 1  # that one is left for discard_prestarted
    assert len(started) == 3


def _worker_pids(client) -> dict[str, int]:
    return client.run(os.getpid)


def _cuda_visible_devices() -> str | None:
    """Inside a worker: its CUDA_VISIBLE_DEVICES (``os.environ.get`` itself would be pickled
    with this process's environment)."""
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def _watching() -> tuple[int | None, bool]:
    """Inside a worker: the run pid it watches, and whether its watch thread runs."""
    names = {t.name for t in threading.enumerate()}
    return dask.config.get(RUN_PID_KEY, None), "parent-watch" in names


def test_gpu_layout_workers_from_inside():
    """One GPU=1 worker keeping CUDA_VISIBLE_DEVICES, CPU workers with it empty, 1 thread each."""
    client, local = dask_client(None, 2, preload=[WORKER_PRELOAD], gpu_worker=True)
    try:
        info = client.scheduler_info(n_workers=-1)["workers"]
        assert len(info) == 3
        assert all(w["nthreads"] == 1 for w in info.values())
        gpu = [a for a, w in info.items() if w.get("resources", {}).get("GPU", 0) >= 1]
        assert len(gpu) == 1
        assert info[gpu[0]]["resources"] == GPU_RESOURCES
        env = client.run(_cuda_visible_devices)
        assert env.pop(gpu[0]) == os.environ.get("CUDA_VISIBLE_DEVICES")
        assert list(env.values()) == ["", ""]
        # every worker ends with this process (the run), as in the all-CPU layout
        assert set(client.run(_watching).values()) == {(os.getpid(), True)}
        assert chunk_resources(client, Device.AUTO, MODEL) == GPU_RESOURCES
        assert chunk_resources(client, Device.CPU, MODEL) is None
        pids = list(_worker_pids(client).values())
    finally:
        close_cluster(client, local)
    assert not [p for p in pids if psutil.pid_exists(p)]


def test_cpu_layout_keeps_the_environment():
    """The all-CPU local cluster sets no CUDA_VISIBLE_DEVICES and advertises no GPU."""
    client, local = dask_client(None, 1)
    try:
        (info,) = client.scheduler_info(n_workers=-1)["workers"].values()
        assert not info.get("resources") and info["nthreads"] == 1
        (env,) = client.run(_cuda_visible_devices).values()
        assert env == os.environ.get("CUDA_VISIBLE_DEVICES")
    finally:
        close_cluster(client, local)


KILLED_RUN = """
import os, sys
from echo_batch.run.cluster import WORKER_PRELOAD, dask_client
client, cluster = dask_client(None, 1, preload=[WORKER_PRELOAD], gpu_worker=True)
print(" ".join(str(p) for p in client.run(os.getpid).values()), flush=True)
sys.stdin.read()
"""


def test_gpu_layout_workers_end_with_a_killed_run():
    """SIGKILL the process that started the cluster: its GPU and CPU workers end within 15 s."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2, pids
        assert all(psutil.pid_exists(p) for p in pids)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    deadline = time.monotonic() + 15
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive == []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
