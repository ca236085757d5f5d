"""deployment/slurm.py builds the local CUDA host's layout on SLURM (issue 16, point 2).

dask-jobqueue writes the job scripts without SLURM (``SLURMCluster(...).job_script()`` starts
only a scheduler in this process). Each script is checked as text (``#SBATCH`` lines, worker
commands) and run by bash with a stand-in ``python`` that records the environment and the
arguments each worker command would start with: one GPU worker per GPU job (``GPU=1``, the job's
``CUDA_VISIBLE_DEVICES``), CPU workers with ``CUDA_VISIBLE_DEVICES=""``, one thread each, the
echo-batch preload everywhere.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from dask_jobqueue import SLURMCluster  # a dev extra: these tests fail, not skip, without it

ROOT = Path(__file__).resolve().parents[1]
PRELOAD = "echo_batch.run.worker_preload"
WORKER_MODULE = "distributed.cli.dask_worker"

# Stand-in for the workers' interpreter: one line per worker command, its CUDA_VISIBLE_DEVICES
# ("unset" when absent) then its arguments.
FAKE_PYTHON = """#!/usr/bin/env bash
echo "${CUDA_VISIBLE_DEVICES-unset}|$*" >> "$WORKER_LOG"
"""


@pytest.fixture(scope="module")
def slurm():
    spec = importlib.util.spec_from_file_location("deployment_slurm", ROOT / "deployment/slurm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _job_script(slurm, tmp_path: Path, *argv: str) -> tuple[str, object]:
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    args = slurm.parse_args(
        [
            *argv,
            "--python",
            str(fake),
            "--scheduler-file",
            str(tmp_path / "scheduler.json"),
            "--dashboard-address",
            ":0",
            "--local-directory",
            str(tmp_path),
        ]
    )
    cluster = SLURMCluster(**slurm.cluster_kwargs(args))
    try:
        return cluster.job_script(), cluster.scheduler_address
    finally:
        cluster.close()


def _run(script: str, tmp_path: Path, visible: str, workers: int) -> list[tuple[str, list[str]]]:
    """Run the job script as SLURM would (``CUDA_VISIBLE_DEVICES`` set by ``--gres``)."""
    log = tmp_path / "workers.log"
    env = {**os.environ, "WORKER_LOG": str(log), "SLURM_JOB_ID": "4242"}
    env["CUDA_VISIBLE_DEVICES"] = visible
    subprocess.run(["bash", "-c", script], env=env, check=True, timeout=30)
    deadline = time.monotonic() + 10  # a background worker command may still be writing
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= workers:
            break
        time.sleep(0.05)
    started = []
    for line in lines:
        cuda, command = line.split("|", 1)
        started.append((cuda, shlex.split(command)))
    return started


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def _sbatch(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#")]


def test_gpu_job_runs_one_gpu_worker_and_cpu_workers_without_cuda(slurm, tmp_path):
    script, address = _job_script(slurm, tmp_path, "--gpu", "--cores", "8", "--memory", "32GB")
    sbatch = _sbatch(script)
    assert "--gres=gpu:1" in sbatch
    assert "--cpus-per-task=8" in sbatch and "--mem=32GB" in sbatch

    started = _run(script, tmp_path, visible="3", workers=2)
    assert len(started) == 2, started  # two worker commands: the GPU worker, the CPU workers
    gpu = [(cuda, argv) for cuda, argv in started if "--resources" in argv]
    cpu = [(cuda, argv) for cuda, argv in started if "--resources" not in argv]
    assert len(gpu) == 1 and len(cpu) == 1

    cuda, argv = gpu[0]
    assert cuda == "3"  # the job's GPU, as SLURM set it
    assert argv[:2] == ["-m", WORKER_MODULE]
    assert _option(argv, "--resources") == "GPU=1"
    assert _option(argv, "--nthreads") == "1"
    assert _option(argv, "--preload") == PRELOAD
    assert _option(argv, "--nworkers") is None  # one process
    assert _option(argv, "--scheduler-file") == str(tmp_path / "scheduler.json")
    assert _option(argv, "--name") == "gpu-4242"

    cuda, argv = cpu[0]
    assert cuda == ""  # never a CUDA context in a CPU worker
    assert argv[:3] == ["-m", WORKER_MODULE, address]
    assert _option(argv, "--nworkers") == "7"  # the other cores of the job
    assert _option(argv, "--nthreads") == "1"
    assert _option(argv, "--preload") == PRELOAD
    # memory: 7/8 of the job for the CPU workers, 1/8 for the GPU worker, the same per process
    assert _option(argv, "--memory-limit") == _option(gpu[0][1], "--memory-limit") == "3.73GiB"


def test_cpu_job_runs_cpu_workers_without_cuda(slurm, tmp_path):
    script, address = _job_script(slurm, tmp_path, "--cores", "8")
    sbatch = _sbatch(script)
    assert not [line for line in sbatch if "gres" in line or "gpu" in line]
    assert "--cpus-per-task=8" in sbatch

    ((cuda, argv),) = _run(script, tmp_path, visible="0", workers=1)
    assert cuda == ""
    assert argv[:3] == ["-m", WORKER_MODULE, address]
    assert _option(argv, "--nworkers") == "8"
    assert _option(argv, "--nthreads") == "1"
    assert _option(argv, "--preload") == PRELOAD
    assert "--resources" not in argv


def test_processes_sets_the_cpu_workers_of_a_gpu_job(slurm):
    args = slurm.parse_args(["--gpu", "--cores", "16", "--processes", "12"])
    kwargs = slurm.cluster_kwargs(args)
    assert kwargs["processes"] == kwargs["cores"] == 12  # one thread per CPU worker
    assert kwargs["job_cpu"] == 16


def test_gpu_job_needs_a_core_for_cpu_workers(slurm):
    with pytest.raises(SystemExit, match="--cores >= 2"):
        slurm.cluster_kwargs(slurm.parse_args(["--gpu", "--cores", "1"]))
