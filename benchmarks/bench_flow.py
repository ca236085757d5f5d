"""Flow benchmarks, side by side in one run: orchestration overhead, memory growth, end to end.

1. ``--segmentation gt`` on synthetic cohorts of each size in ``--sizes`` (256 x 256 grid):
   wall time, patients/s, overhead = wall - (chunk compute / workers), peak RSS of the whole
   process tree (flow process, Prefect API, Dask scheduler and workers) and of the largest
   process of each role, and output size.
2. With the model on the bundled sample: end-to-end images/s of the flow against the model-only
   images/s of the engine in the same process layout (``--workers`` processes x 1 thread, same
   precision, the network alone), and against a plain eager fp32 single-process loop doing the
   same work (read, segment one image at a time in NCHW fp32, measure, compare with the experts).
   Three ways of running the flow: a cold local cluster (started by the run), a warm external
   cluster (``dask scheduler`` + workers that already served one run, as for scheduled runs),
   and a cold local cluster on the sample replicated ``--replicas`` times (fixed costs amortised).

Usage: ``python benchmarks/bench_flow.py [--sizes 200 2000] [--workers 2] [--replicas 8]
[--skip-gt | --skip-model] [--json OUT]``; ``benchmarks/suite.py`` calls :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "camus224-test"
logger = logging.getLogger("bench_flow")


def process_role(proc: psutil.Process, root_pid: int) -> str:
    """Role of one process of a run's tree, from its command line.

    Returns:
        ``flow`` (the ``echo-batch`` process itself: flow, local Dask scheduler and nannies),
        ``prefect_server`` (the temporary Prefect API), ``dask_scheduler`` / ``dask_worker``
        (a ``dask`` CLI process or a worker spawned by a nanny), ``mp_resource_tracker``,
        ``mp_forkserver``, or the process name.
    """
    if proc.pid == root_pid:
        return "flow"
    try:
        cmd = " ".join(proc.cmdline())
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "unknown"
    rules = (
        ("resource_tracker", "mp_resource_tracker"),
        ("forkserver", "mp_forkserver"),
        ("uvicorn", "prefect_server"),
        ("flows.prefect_api", "prefect_server"),  # the run's own temporary Prefect API
        ("flows.report_process", "report"),  # the run's HTML report, written by a child
        ("prefect.server", "prefect_server"),
        ("prefect server", "prefect_server"),
        ("dask scheduler", "dask_scheduler"),
        ("dask-scheduler", "dask_scheduler"),
        ("dask worker", "dask_worker"),
        ("dask-worker", "dask_worker"),
        ("spawn_main", "dask_worker"),  # the only spawned children of a run: nanny workers
    )
    return next((role for tag, role in rules if tag in cmd), name)


class TreeSampler:
    """Peak RSS of a process tree, in total and per process (with each process's role)."""

    def __init__(self, root_pid: int) -> None:
        self.root = psutil.Process(root_pid)
        self.peak_total = 0.0
        self.processes: dict[int, dict[str, object]] = {}

    def sample(self) -> None:
        """Read the RSS of every live process of the tree once."""
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return
        total = 0.0
        for proc in procs:
            try:
                rss = proc.memory_info().rss / 2**20
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            total += rss
            entry = self.processes.get(proc.pid)
            if entry is None:
                entry = self._new_entry(proc)
            entry["peak_rss_mb"] = max(float(entry["peak_rss_mb"]), rss)
        self.peak_total = max(self.peak_total, total)

    def _new_entry(self, proc: psutil.Process) -> dict[str, object]:
        role = process_role(proc, self.root.pid)
        same = sum(1 for e in self.processes.values() if e["base_role"] == role)
        entry = {
            "pid": proc.pid,
            "base_role": role,
            "role": role if role in ("flow", "prefect_server") else f"{role}_{same + 1}",
            "peak_rss_mb": 0.0,
        }
        self.processes[proc.pid] = entry
        return entry

    def result(self) -> dict[str, object]:
        """``peak_rss_mb`` (tree total at its largest), ``peak_single_rss_mb``,
        ``peak_rss_by_role_mb`` (largest process of each role) and ``processes``."""
        by_role: dict[str, float] = {}
        for entry in self.processes.values():
            role = str(entry["base_role"])
            by_role[role] = max(by_role.get(role, 0.0), float(entry["peak_rss_mb"]))
        processes = sorted(self.processes.values(), key=lambda e: (str(e["role"]), e["pid"]))
        return {
            "peak_rss_mb": self.peak_total,
            "peak_single_rss_mb": max(by_role.values(), default=0.0),
            "peak_rss_by_role_mb": by_role,
            "processes": [
                {"role": e["role"], "pid": e["pid"], "peak_rss_mb": e["peak_rss_mb"]}
                for e in processes
            ],
        }


def run_measured(cmd: list[str], interval: float = 0.2) -> dict[str, object]:
    """Run a command; sample the RSS of its whole process tree until it exits.

    Returns:
        ``wall_s``, ``peak_rss_mb`` (sum over the tree at its largest),
        ``peak_single_rss_mb`` (largest single process), ``peak_rss_by_role_mb`` (largest
        process of each role, see :func:`process_role`) and ``processes`` (role, pid and peak
        of every process seen).

    Raises:
        RuntimeError: the command failed (with the end of its standard error).
    """
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sampler = TreeSampler(proc.pid)
    stderr: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        sampler.sample()
        time.sleep(interval)
    wall = time.perf_counter() - started
    reader.join(timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {b''.join(stderr).decode(errors='replace')[-2000:]}")
    return {"wall_s": wall, **sampler.result()}


def echo_batch(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "echo-batch"), *args]


def flow_case(data: Path, out: Path, workers: int, extra: list[str]) -> dict[str, Any]:
    """One flow run with measurements and its run.json figures."""
    measured = run_measured(
        echo_batch("run", str(data), "--out", str(out), "--workers", str(workers), *extra)
    )
    record = json.loads((out / "run.json").read_text())
    seconds = record["seconds"]
    compute = sum(seconds.get(k, 0.0) for k in ("load", "segment", "measure"))
    wall = record["wall_seconds"]
    n = record["summary"]["patients"]
    out_bytes = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    return {
        **measured,
        "patients": n,
        "status": record["summary"]["status"],
        "flow_wall_s": wall,
        "patients_per_s": n / wall,
        "images_per_s": 4 * n / wall,
        "compute_s": compute,
        "overhead_s": wall - compute / workers,
        "overhead_share": (wall - compute / workers) / wall,
        "cluster_start_s": seconds.get("cluster_start", 0.0),
        "output_mb": out_bytes / 2**20,
    }


def synthesize(
    data: Path, patients: int, seed: int = 7, max_side: int = 256, loops: bool = False
) -> float:
    """``echo-batch synth DATA --patients N --seed S --max-side M [--loops]``; returns its
    seconds."""
    t0 = time.perf_counter()
    subprocess.run(
        echo_batch(
            "synth",
            str(data),
            "--patients",
            str(patients),
            "--seed",
            str(seed),
            "--max-side",
            str(max_side),
            *(["--loops"] if loops else []),
        ),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def _model_only_worker(seconds: float, precision: str, bundle: str | None, queue: mp.Queue) -> None:
    import numpy as np
    import torch

    from echo_batch.model.inference import SegmentationEngine

    torch.set_num_threads(1)
    engine = SegmentationEngine.from_path(bundle, device="cpu", precision=precision, threads=1)
    grid = np.random.default_rng(0).standard_normal((8 * engine.batch_size, 224, 224))
    grid = grid.astype(np.float32)
    engine.forward_only(grid)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += engine.forward_only(grid)
    queue.put(count / (time.perf_counter() - start))


def model_only_images_per_s(
    processes: int, seconds: float, precision: str = "auto", bundle: Path | None = None
) -> float:
    """Network throughput with ``processes`` concurrent single-threaded processes, summed.

    Args:
        processes: concurrent processes, one torch thread each.
        seconds: measuring time.
        precision: engine precision ("auto": the engine's choice for this CPU).
        bundle: model bundle (None: the bundled one).
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    path = str(bundle) if bundle else None
    procs = [
        ctx.Process(target=_model_only_worker, args=(seconds, precision, path, queue))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    rates = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return float(sum(rates))


class PlainEngine:
    """The seed-code way of segmenting: eager NCHW fp32, one image at a time, host softmax."""

    def __init__(self) -> None:
        from echo_batch.model.bundle import load_bundle

        bundle = load_bundle()
        self.model = bundle.build()
        self.size = bundle.input_size

    def segment(self, images):
        import torch

        from echo_batch.model.inference import to_native
        from echo_batch.model.preprocess import to_grid

        out = []
        with torch.no_grad():
            for image in images:
                x = torch.from_numpy(to_grid(image, self.size))[None, None]
                probs = self.model(x).softmax(1)[0].permute(1, 2, 0).numpy()
                out.append(to_native(probs, image.shape))
        return out


def plain_loop_images_per_s(data: Path) -> float:
    """Images/s of the plain fp32 loop doing the flow's work on ``data``, in this process."""
    from echo_batch.io.discovery import discover
    from echo_batch.run.chunk import process_chunk
    from echo_batch.run.options import ChunkOptions

    refs = discover(data).patients
    engine = PlainEngine()
    options = ChunkOptions(precision="fp32")
    process_chunk(refs[:1], options, "plain", engine=engine)  # warm-up
    start = time.perf_counter()
    result = process_chunk(refs, options, "plain", engine=engine)
    return 4 * len(result.patients) / (time.perf_counter() - start)


def replicate_sample(dest: Path, replicas: int) -> Path:
    """The bundled sample ``replicas`` times under new patient ids (patientXNNN, X = copy)."""
    import shutil

    source = SAMPLE / "database_nifti"
    for k in range(replicas):
        for folder in sorted(source.iterdir()):
            pid = folder.name
            new = f"patient{k}{pid[-3:]}" if k else pid
            target = dest / "database_nifti" / new
            target.mkdir(parents=True)
            for f in folder.iterdir():
                shutil.copyfile(f, target / f.name.replace(pid, new))
    return dest


def external_cluster(workers: int):
    """Start ``dask scheduler`` and ``workers`` single-threaded workers on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bindir = Path(sys.executable).parent
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        subprocess.Popen(
            [
                str(bindir / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    time.sleep(2)
    for _ in range(workers):
        procs.append(
            subprocess.Popen(
                [
                    str(bindir / "dask"),
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--preload",
                    "echo_batch.run.worker_preload",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(workers, timeout=120)
    return address, procs


def model_cases(tmp_path: Path, workers: int, replicas: int) -> dict[str, dict[str, float]]:
    """End-to-end model runs: cold local, warm external, cold local on the replicated sample."""
    cases = {"cold_local": flow_case(SAMPLE, tmp_path / "cold", workers, [])}
    address, procs = external_cluster(workers)
    try:
        extra = ["--dask-address", address]
        flow_case(SAMPLE, tmp_path / "warm-up", workers, extra)  # loads the model in the workers
        cases["warm_external"] = flow_case(SAMPLE, tmp_path / "warm", workers, extra)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    data = replicate_sample(tmp_path / f"sample-x{replicas}", replicas)
    cases[f"cold_local_x{replicas}"] = flow_case(data, tmp_path / "replicated", workers, [])
    return cases


def gt_section(
    tmp_path: Path, sizes: Sequence[int], workers: int, chunk_size: int | None
) -> dict[str, Any]:
    """``--segmentation gt`` runs on synthetic cohorts of each size, and their growth."""
    cases: dict[str, dict[str, Any]] = {}
    for n in sizes:
        data = tmp_path / f"syn{n}"
        logger.info("synth %d patients: %.1f s", n, synthesize(data, n))
        chunking = ["--chunk-size", str(chunk_size)] if chunk_size else []
        case = flow_case(data, tmp_path / f"out{n}", workers, ["--segmentation", "gt", *chunking])
        cases[str(n)] = case
        logger.info("gt flow %d: %s", n, _scalars(case))
    section: dict[str, Any] = {"gt": cases}
    if len(sizes) >= 2:
        lo, hi = str(min(sizes)), str(max(sizes))
        section["growth"] = {
            "patients_ratio": max(sizes) / min(sizes),
            "flow_wall_ratio": cases[hi]["flow_wall_s"] / cases[lo]["flow_wall_s"],
            "peak_rss_ratio": cases[hi]["peak_rss_mb"] / cases[lo]["peak_rss_mb"],
        }
        logger.info("growth %s", section["growth"])
    return section


def model_section(
    tmp_path: Path, workers: int, replicas: int, seconds: float, model_only: float | None
) -> dict[str, Any]:
    """End-to-end model runs with their ratios to model-only and to the plain loop.

    Args:
        tmp_path: scratch folder.
        workers: Dask workers (and model-only processes, 1 thread each).
        replicas: copies of the bundled sample for the amortised run.
        seconds: model-only measuring time (when ``model_only`` is None).
        model_only: model-only images/s of ``workers`` x 1 thread at the flow's precision
            measured elsewhere in the same run (None: measured here, after the flow runs).
    """
    import torch

    from echo_batch.model.inference import resolve_precision

    model = model_cases(tmp_path, workers, replicas)
    source = "given by the caller (same run)" if model_only else "measured after the flow runs"
    if model_only is None:
        model_only = model_only_images_per_s(workers, seconds)
    plain = plain_loop_images_per_s(SAMPLE)
    ratios = {}
    for name, case in model.items():
        ratios[name] = {
            "images_per_s": case["images_per_s"],
            "over_model_only": case["images_per_s"] / model_only,
            "over_plain_loop": case["images_per_s"] / plain,
        }
        logger.info(
            "model e2e %-16s %6.1f img/s = %.2f x model-only, %.2f x plain loop",
            name,
            case["images_per_s"],
            ratios[name]["over_model_only"],
            ratios[name]["over_plain_loop"],
        )
    logger.info(
        "model-only %.1f img/s (%d x 1 thread); plain fp32 loop %.1f img/s",
        model_only,
        workers,
        plain,
    )
    return {
        "precision": resolve_precision(torch.device("cpu"), "auto"),
        "replicas": replicas,
        "model_e2e": model,
        "model_only_images_per_s": model_only,
        "model_only_source": source,
        "plain_loop_images_per_s": plain,
        "model_ratios": ratios,
    }


def run(
    sizes: Sequence[int] = (200, 2000),
    workers: int = 2,
    chunk_size: int | None = None,
    seconds: float = 8.0,
    replicas: int = 8,
    *,
    skip_gt: bool = False,
    skip_model: bool = False,
    model_only: float | None = None,
) -> dict[str, Any]:
    """All flow benchmarks of one run (see the module docstring).

    Args:
        sizes: synthetic cohort sizes of the ``--segmentation gt`` runs.
        workers: local Dask workers (1 thread each).
        chunk_size: patients per chunk of the gt runs (None: automatic).
        seconds: model-only measuring time per process.
        replicas: copies of the bundled sample for the amortised model run.
        skip_gt: leave out the gt runs.
        skip_model: leave out the model runs.
        model_only: see :func:`model_section`.

    Returns:
        ``workers``, ``chunk_size``, ``gt`` (cases by size as strings), ``growth`` (two sizes
        or more), and for the model: ``precision``, ``model_e2e``, ``model_only_images_per_s``,
        ``plain_loop_images_per_s``, ``model_ratios``.
    """
    results: dict[str, Any] = {"workers": workers, "chunk_size": chunk_size, "gt": {}}
    with tempfile.TemporaryDirectory(prefix="echo-batch-bench-") as tmp:
        tmp_path = Path(tmp)
        if not skip_gt:
            results |= gt_section(tmp_path, sizes, workers, chunk_size)
        if not skip_model:
            results |= model_section(tmp_path, workers, replicas, seconds, model_only)
    return results


def _scalars(case: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a case, rounded, for a log line."""
    return {k: round(v, 3) for k, v in case.items() if isinstance(v, float | int)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=None, help="default: automatic")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--replicas", type=int, default=8, help="copies of the sample (model run)")
    parser.add_argument("--skip-gt", action="store_true", help="only the model runs")
    parser.add_argument("--skip-model", action="store_true", help="only the gt runs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = run(
        args.sizes,
        args.workers,
        args.chunk_size,
        args.seconds,
        args.replicas,
        skip_gt=args.skip_gt,
        skip_model=args.skip_model,
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
