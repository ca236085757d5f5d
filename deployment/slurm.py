"""Dask cluster on SLURM (dask-jobqueue) for ``echo-batch run --dask-address``.

Usage (on a login node, from the repository checkout, in the project's environment)::

    pip install dask-jobqueue                      # not a dependency of echo-batch
    python deployment/slurm.py --jobs 8            # CPU nodes
    python deployment/slurm.py --jobs 2 --gpu      # GPU nodes: --gres=gpu:1, --resources GPU=1
    # prints: DASK_SCHEDULER_ADDRESS=tcp://10.1.2.3:41234 ; keep this process running, then:
    echo-batch run DATA --out OUT --dask-address tcp://10.1.2.3:41234

The scheduler runs inside this process: the cluster (and its SLURM jobs) lives until Ctrl-C.
Every worker job runs ``python -m distributed.cli.dask_worker`` with the same interpreter as
this script, so the project (and torch) must be installed in a Python environment visible from
the compute nodes, and the model bundle path must be readable there.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def cluster_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for one SLURM job per Dask worker."""
    job_extra = [f"--job-name={args.job_name}"]
    worker_extra: list[str] = []
    # Single-threaded worker processes (as the flow's local cluster): one per core on CPU nodes;
    # one per job on GPU nodes, so that one GPU is never advertised twice.
    processes = args.processes or (1 if args.gpu else args.cores)
    if args.gpu:
        # One GPU per job; the flow sends model chunks with resources={"GPU": 1} to such workers
        # only (CPU-only workers never receive GPU work).
        job_extra.append("--gres=gpu:1")
        worker_extra += ["--resources", "GPU=1"]
    job_extra += args.sbatch
    kwargs: dict[str, Any] = {
        "cores": args.cores,
        "processes": processes,
        "memory": args.memory,
        "walltime": args.walltime,
        "job_extra_directives": job_extra,
        "worker_extra_args": worker_extra,
        "job_script_prologue": args.prologue,
        "python": sys.executable,
        "local_directory": args.local_directory,
        "scheduler_options": {"dashboard_address": ":8787"},
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
    p.add_argument("--gpu", action="store_true", help="GPU nodes: --gres=gpu:1, --resources GPU=1")
    p.add_argument("--cores", type=int, default=8, help="cores per job")
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        help="Dask worker processes per job (default: --cores on CPU nodes, 1 with --gpu)",
    )
    p.add_argument("--memory", default="32GB", help="memory per job")
    p.add_argument("--walltime", default="04:00:00", help="SLURM walltime per job")
    p.add_argument("--queue", default=None, help="SLURM partition (-p)")
    p.add_argument("--account", default=None, help="SLURM account (-A)")
    p.add_argument("--interface", default=None, help="network interface, e.g. ib0")
    p.add_argument("--job-name", default="echo-batch-dask")
    p.add_argument("--local-directory", default="$TMPDIR", help="worker spill directory")
    p.add_argument(
        "--prologue",
        action="append",
        default=[],
        help="shell line run before the worker starts (repeatable), e.g. 'module load cuda'",
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
