"""Flow benchmarks, side by side in one run: orchestration overhead, memory growth, end to end.

1. ``--segmentation gt`` on synthetic cohorts of each size in ``--sizes`` (256 x 256 grid):
   wall time, patients/s, overhead = wall - (chunk compute / workers), peak RSS of the whole
   process tree (flow process, Prefect API, Dask scheduler and workers) and output size.
2. With the model on the bundled sample: end-to-end images/s of the flow against the model-only
   images/s of the engine in the same process layout (``--workers`` processes x 1 thread, same
   precision), and against the plain eager fp32 single-process loop.

Usage: ``python benchmarks/bench_flow.py [--sizes 200 2000] [--workers 2] [--json OUT]``.
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
from pathlib import Path

import psutil
from bench_engine import plain_eager_fp32  # same folder: the shared baseline loop

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "camus224-test"
logger = logging.getLogger("bench_flow")


def run_measured(cmd: list[str], interval: float = 0.2) -> dict[str, float]:
    """Run a command; sample the RSS of its whole process tree until it exits.

    Returns:
        ``wall_s``, ``peak_rss_mb`` (sum over the tree at its largest) and
        ``peak_single_rss_mb`` (largest single process).
    """
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_total = peak_single = 0.0
    root = psutil.Process(proc.pid)
    stderr: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            rss = [p.memory_info().rss / 2**20 for p in procs if p.is_running()]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            rss = []
        if rss:
            peak_total = max(peak_total, sum(rss))
            peak_single = max(peak_single, max(rss))
        time.sleep(interval)
    reader.join(timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {b''.join(stderr).decode(errors='replace')[-2000:]}")
    return {
        "wall_s": time.perf_counter() - started,
        "peak_rss_mb": peak_total,
        "peak_single_rss_mb": peak_single,
    }


def echo_batch(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "echo-batch"), *args]


def flow_case(data: Path, out: Path, workers: int, extra: list[str]) -> dict[str, float]:
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
        "flow_wall_s": wall,
        "patients_per_s": n / wall,
        "images_per_s": 4 * n / wall,
        "compute_s": compute,
        "overhead_s": wall - compute / workers,
        "overhead_share": (wall - compute / workers) / wall,
        "cluster_start_s": seconds.get("cluster_start", 0.0),
        "output_mb": out_bytes / 2**20,
    }


def _model_only_worker(seconds: float, precision: str, queue: mp.Queue) -> None:
    import numpy as np
    import torch

    from echo_batch.model.inference import SegmentationEngine

    torch.set_num_threads(1)
    engine = SegmentationEngine.from_path(device="cpu", precision=precision, threads=1)
    grid = np.random.default_rng(0).standard_normal((engine.batch_size, 224, 224))
    grid = grid.astype(np.float32)
    engine.probabilities(grid)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        engine.probabilities(grid)
        count += len(grid)
    queue.put(count / (time.perf_counter() - start))


def model_only_images_per_s(processes: int, seconds: float, precision: str = "auto") -> float:
    """Engine throughput with ``processes`` concurrent single-threaded processes, summed."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_model_only_worker, args=(seconds, precision, queue))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    rates = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return float(sum(rates))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results: dict[str, object] = {"workers": args.workers, "chunk_size": args.chunk_size}
    with tempfile.TemporaryDirectory(prefix="echo-batch-bench-") as tmp:
        tmp_path = Path(tmp)
        gt_cases = {}
        for n in args.sizes:
            data = tmp_path / f"syn{n}"
            t0 = time.perf_counter()
            subprocess.run(
                echo_batch(
                    "synth", str(data), "--patients", str(n), "--seed", "7", "--max-side", "256"
                ),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            logger.info("synth %d patients: %.1f s", n, time.perf_counter() - t0)
            case = flow_case(
                data,
                tmp_path / f"out{n}",
                args.workers,
                ["--segmentation", "gt", "--chunk-size", str(args.chunk_size)],
            )
            gt_cases[n] = case
            logger.info("gt flow %d: %s", n, {k: round(v, 3) for k, v in case.items()})
        results["gt"] = gt_cases
        if len(args.sizes) >= 2:
            lo, hi = min(args.sizes), max(args.sizes)
            results["growth"] = {
                "patients_ratio": hi / lo,
                "flow_wall_ratio": gt_cases[hi]["flow_wall_s"] / gt_cases[lo]["flow_wall_s"],
                "peak_rss_ratio": gt_cases[hi]["peak_rss_mb"] / gt_cases[lo]["peak_rss_mb"],
            }
        model_case = flow_case(SAMPLE, tmp_path / "model", args.workers, ["--chunk-size", "8"])
        results["model_e2e"] = model_case
    model_only = model_only_images_per_s(args.workers, args.seconds)
    baseline = plain_eager_fp32(None, args.seconds)
    results["model_only_images_per_s"] = model_only
    results["plain_fp32_images_per_s"] = baseline
    results["e2e_over_model_only"] = model_case["images_per_s"] / model_only
    results["e2e_over_plain_fp32"] = model_case["images_per_s"] / baseline
    logger.info(
        "model e2e %.1f img/s; model-only %.1f img/s (%d x 1 thread); plain fp32 %.1f img/s; "
        "e2e/model-only %.2f; e2e/plain %.2f",
        model_case["images_per_s"],
        model_only,
        args.workers,
        baseline,
        results["e2e_over_model_only"],
        results["e2e_over_plain_fp32"],
    )
    if "growth" in results:
        logger.info("growth %s", results["growth"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
