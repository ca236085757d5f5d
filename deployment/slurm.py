"""Dask cluster on SLURM (dask-jobqueue) for ``echo-batch run --dask-address``.

Usage (on a login node, from the repository checkout, in the project's environment)::

    pip install dask-jobqueue                      # or: pip install -e '.[dev]'
    python deployment/slurm.py --jobs 8            # CPU nodes: 8 jobs x 8 CPU workers
    python deployment/slurm.py --jobs 2 --gpu --cores 16   # 2 GPUs, each with 15 CPU workers
    # prints: DASK_SCHEDULER_ADDRESS=tcp://10.1.2.3:41234 ; keep this process running, then:
    echo-batch run DATA --out OUT --dask-address tcp://10.1.2.3:41234

The layout is the local cluster's on a CUDA host (``echo_batch.run.cluster``): every worker is
a single-threaded process that imports ``echo_batch.run.worker_preload`` at start-up.

- A CPU job runs ``--cores`` CPU workers, started with ``CUDA_VISIBLE_DEVICES=""``.
- A ``--gpu`` job books one GPU (``--gres=gpu:1``) and ``--cores`` cores: one GPU worker that
  advertises ``GPU=1`` and keeps the job's ``CUDA_VISIBLE_DEVICES``, and ``--cores`` - 1 CPU
  workers with ``CUDA_VISIBLE_DEVICES=""`` that read, bring to the grid and measure for it
  (docs/gpu.md: how many cores one GPU needs). dask-jobqueue starts one worker command per job,
  so the GPU worker is started in the job script's prologue, in the background; it finds the
  scheduler through ``--scheduler-file`` (a path on a file system the compute nodes share).

The scheduler runs inside this process: the cluster (and its SLURM jobs) lives until Ctrl-C.
Every worker runs ``python -m distributed.cli.dask_worker`` with the same interpreter as this
script, so the project (and torch) must be installed in a Python environment visible from the
compute nodes, and the model bundle path must be readable there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

PRELOAD = "echo_batch.run.worker_preload"
GPU_RESOURCES = "GPU=1"
NO_CUDA = 'export CUDA_VISIBLE_DEVICES=""  # CPU workers: no CUDA context, no GPU work'


def _memory_share(memory: str, share: float) -> str:
    """``share`` of a memory size such as ``32GB``, in the same form (dask's byte units)."""
    from dask.utils import format_bytes, parse_bytes

    return format_bytes(int(parse_bytes(memory) * share)).replace(" ", "")


def cpu_processes(args: argparse.Namespace) -> int:
    """CPU worker processes per job: ``--processes``, else every core (less the GPU worker's)."""
    if args.processes:
        return args.processes
    return args.cores - 1 if args.gpu else args.cores


def gpu_worker_command(args: argparse.Namespace) -> str:
    """The GPU worker of a ``--gpu`` job, started in the background before the CPU workers."""
    command = [
        sys.executable if args.python is None else args.python,
        "-m distributed.cli.dask_worker",
        f"--scheduler-file {args.scheduler_file}",
        "--name gpu-$SLURM_JOB_ID",
        "--nthreads 1",
        f"--memory-limit {_memory_share(args.memory, 1 / args.cores)}",
        f"--resources {GPU_RESOURCES}",
        f"--preload {PRELOAD}",
        "--nanny",
        "--death-timeout 60",  # as dask-jobqueue's workers: end when the scheduler is gone
    ]
    if args.local_directory:
        command.append(f"--local-directory {args.local_directory}")
    if args.interface:
        command.append(f"--interface {args.interface}")
    return " ".join(command) + " &"


def cluster_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for one job's worker processes.

    The worker command dask-jobqueue writes runs the CPU workers (one thread each); a ``--gpu``
    job's prologue starts its GPU worker first, then hides the GPU from the CPU workers.
    """
    if args.gpu and args.cores < 2:
        raise SystemExit(
            "--gpu needs --cores >= 2: one for the GPU worker, the rest for CPU workers"
        )
    processes = cpu_processes(args)
    job_extra = [f"--job-name={args.job_name}"]
    prologue = list(args.prologue)
    memory = args.memory
    scheduler_options: dict[str, Any] = {"dashboard_address": args.dashboard_address}
    if args.gpu:
        job_extra.append("--gres=gpu:1")
        # the CPU workers' share of the job's memory; the GPU worker gets one core's share
        memory = _memory_share(args.memory, processes / args.cores)
        prologue.append(gpu_worker_command(args))
        scheduler_options["scheduler_file"] = args.scheduler_file
    prologue.append(NO_CUDA)
    job_extra += args.sbatch
    kwargs: dict[str, Any] = {
        "cores": processes,  # threads of the worker command: one per CPU worker process
        "processes": processes,
        "job_cpu": args.cores,
        "memory": memory,
        "job_mem": args.memory,
        "walltime": args.walltime,
        "job_extra_directives": job_extra,
        "worker_extra_args": ["--preload", PRELOAD],
        "job_script_prologue": prologue,
        "python": sys.executable if args.python is None else args.python,
        "local_directory": args.local_directory,
        "scheduler_options": scheduler_options,
    }
    if args.queue:
        kwargs["queue"] = args.queue
    if args.account:
        kwargs["account"] = args.account
    if args.interface:
        kwargs["interface"] = args.interface
    return kwargs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=4, help="SLURM jobs (one Dask worker group each)")
    p.add_argument(
        "--gpu",
        action="store_true",
        help="GPU jobs: --gres=gpu:1, one GPU=1 worker and --cores - 1 CPU workers",
    )
    p.add_argument("--cores", type=int, default=8, help="cores per job")
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        help="CPU worker processes per job (default: --cores, or --cores - 1 with --gpu)",
    )
    p.add_argument("--memory", default="32GB", help="memory per job")
    p.add_argument("--walltime", default="04:00:00", help="SLURM walltime per job")
    p.add_argument("--queue", default=None, help="SLURM partition (-p)")
    p.add_argument("--account", default=None, help="SLURM account (-A)")
    p.add_argument("--interface", default=None, help="network interface, e.g. ib0")
    p.add_argument("--job-name", default="echo-batch-dask")
    p.add_argument("--local-directory", default="$TMPDIR", help="worker spill directory")
    p.add_argument(
        "--scheduler-file",
        default=str(Path.cwd() / f".echo-batch-scheduler-{os.getpid()}.json"),
        help="where the scheduler writes its address for --gpu jobs' GPU workers "
        "(a file system the compute nodes share; default: this folder)",
    )
    p.add_argument("--dashboard-address", default=":8787", help="scheduler dashboard")
    p.add_argument(
        "--python", default=None, help="workers' interpreter (default: this one, sys.executable)"
    )
    p.add_argument(
        "--prologue",
        action="append",
        default=[],
        help="shell line run before the workers start (repeatable), e.g. 'module load cuda'",
    )
    p.add_argument(
        "--sbatch", action="append", default=[], help="extra #SBATCH directive (repeatable)"
    )
    p.add_argument("--print-job-script", action="store_true", help="print the job script too")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        print(
            "dask-jobqueue is not installed: pip install dask-jobqueue "
            "(in the environment that has echo-batch installed)",
            file=sys.stderr,
        )
        return 2

    cluster = SLURMCluster(**cluster_kwargs(args))
    if args.print_job_script:
        print(cluster.job_script())
    cluster.scale(jobs=args.jobs)
    print(f"DASK_SCHEDULER_ADDRESS={cluster.scheduler_address}", flush=True)
    print(f"echo-batch run DATA --out OUT --dask-address {cluster.scheduler_address}", flush=True)
    print("Dashboard:", cluster.dashboard_link, "- Ctrl-C stops the cluster.", flush=True)
    try:
        while True:
            time.sleep(60)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
