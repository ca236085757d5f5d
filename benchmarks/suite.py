"""The whole benchmark suite in one process tree: machine, geometry, engine, flow.

Sections, all measured in this one run so that every ratio compares figures of the same run:

* ``machine``: CPU model, cores, RAM, OS, Python, torch and numpy versions, native bf16.
* ``geometry``: median time per image of ``measure_lv`` + volumes and of the CAMUS-compatible
  ``camus_diameters`` at 224 x 224 and at native size (``bench_geometry.py``, one thread, run as
  a child process with single-threaded numerical libraries).
* ``engine``: model-only images/s (``SegmentationEngine.forward_only``) at fp32 and bf16, in one
  process with ``--threads`` threads at each batch size and in ``--workers`` processes x 1
  thread, with the fraction of the matmul peak and the ratio to the plain eager fp32 one-image
  loop (``bench_engine.py``, ``bench_flow.model_only_images_per_s``).
* ``flow``: ``--segmentation gt`` overhead and peak RSS per cohort size, and the model end to
  end in three modes with ratios to model-only (same layout and precision, taken from the
  engine section) and to the plain loop doing the same work (``bench_flow.py``).
* ``dicom_read``: reading cost per frame of the same synthetic loops as DICOM (JPEG baseline
  q95, uncompressed) and as NIfTI, and of a DICOM header (``bench_dicom_read.py`` at 256 px,
  one thread, run as a child process).

Writes ``<out>/<YYYY-MM-DD>-<host>.json`` and its Markdown rendering ``.md``
(``perf_table.py``). Full run: about 10-15 minutes on the 2-core development machine;
``--quick`` (or any override): about 2 minutes, written to ``build/bench-quick/`` unless
``--out`` is given, so that only full runs land in the committed ``benchmarks/results/``.

Usage::

    python benchmarks/suite.py [--quick] [--out DIR]
        [--only geometry engine flow-gt flow-model dicom-read]
        [--geometry-repeat N] [--engine-seconds S] [--batches 1 2 ...] [--flow-sizes N ...]
        [--replicas N] [--workers N] [--threads N] [--dicom-patients N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import bench_engine
import bench_flow
import perf_table

from echo_batch import atomic

logger = logging.getLogger("suite")

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
SECTIONS = ("geometry", "engine", "flow-gt", "flow-model", "dicom-read")
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Settings:
    """Sizes and durations of one suite run.

    Attributes:
        geometry_repeat: timed calls per geometry figure.
        engine_seconds: measuring time of each engine figure (and of each matmul peak).
        batches: batch sizes of the one-process engine rows.
        threads: torch threads of the one-process engine rows (and of the matmul peaks).
        workers: processes of the N x 1 engine rows and Dask workers of the flow runs.
        flow_sizes: synthetic cohort sizes of the ``--segmentation gt`` runs.
        replicas: copies of the bundled sample for the amortised model run.
        chunk_size: patients per chunk of the gt runs (None: the flow's automatic sizes, as a
            user gets them).
        dicom_patients: synthetic patients (two loops each) of the DICOM reading section.
        dicom_repeats: passes over the files of the DICOM reading section (the best kept).
    """

    geometry_repeat: int
    engine_seconds: float
    batches: tuple[int, ...]
    threads: int
    workers: int
    flow_sizes: tuple[int, ...]
    replicas: int
    chunk_size: int | None = None
    dicom_patients: int = 6
    dicom_repeats: int = 3


def presets(cores: int) -> dict[str, Settings]:
    """The ``full`` and ``quick`` settings for a machine with ``cores`` cores."""
    full = Settings(
        geometry_repeat=200,
        engine_seconds=3.0,
        batches=(1, 2, 4, 8, 16),
        threads=cores,
        workers=cores,
        flow_sizes=(200, 500, 2000),  # 500: the overhead target of issue 5
        replicas=8,
    )
    quick = replace(
        full,
        geometry_repeat=20,
        engine_seconds=1.0,
        batches=(1, 2),
        flow_sizes=(100, 300),
        replicas=2,
        dicom_patients=2,
        dicom_repeats=1,
    )
    return {"full": full, "quick": quick}


# ---------------------------------------------------------------- machine


def cpu_info() -> dict[str, Any]:
    """CPU model and the vector-extension flags that matter here, from ``/proc/cpuinfo``."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni")
    return {"cpu_model": model, "cpu_flags": [f for f in wanted if f in flags]}


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the working tree (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    status = git("status", "--porcelain")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def machine_info() -> dict[str, Any]:
    """Description of this machine and of the software versions."""
    import numpy as np
    import psutil
    import torch

    from echo_batch.model.inference import cpu_supports_bf16

    return {
        **cpu_info(),
        "host": host_name(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": psutil.virtual_memory().total / 2**30,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "native_bf16": cpu_supports_bf16(),
        "cuda_available": torch.cuda.is_available(),
        "load_average_at_start": list(os.getloadavg()),
    }


def host_name() -> str:
    """Short host name, safe in a file name."""
    name = socket.gethostname().split(".")[0] or "host"
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name)


# ---------------------------------------------------------------- sections


def geometry_section(settings: Settings) -> dict[str, Any]:
    """``bench_geometry.py`` in a child process with single-threaded numerical libraries."""
    env = dict(os.environ)
    env.update(dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), "1"))
    with tempfile.TemporaryDirectory(prefix="echo-batch-suite-") as tmp:
        out = Path(tmp) / "geometry.json"
        cmd = [sys.executable, str(BENCH / "bench_geometry.py")]
        cmd += ["--repeat", str(settings.geometry_repeat), "--json", str(out)]
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def dicom_read_section(settings: Settings) -> dict[str, Any]:
    """``bench_dicom_read.py`` (256 px) in a child process with single-threaded libraries."""
    env = dict(os.environ)
    env.update(dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), "1"))
    with tempfile.TemporaryDirectory(prefix="echo-batch-suite-") as tmp:
        out = Path(tmp) / "dicom-read.json"
        cmd = [sys.executable, str(BENCH / "bench_dicom_read.py"), "--side", "256"]
        cmd += ["--patients", str(settings.dicom_patients)]
        cmd += ["--repeats", str(settings.dicom_repeats), "--json", str(out)]
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def engine_section(settings: Settings) -> dict[str, Any]:
    """One process x ``threads`` at each batch, then ``workers`` processes x 1 thread."""
    import torch

    from echo_batch.model.inference import default_batch_size

    result = bench_engine.run(
        None, settings.engine_seconds, settings.threads, settings.batches, bench_engine.PRECISIONS
    )
    batch = default_batch_size(torch.device("cpu"))
    for precision in bench_engine.PRECISIONS:
        ips = bench_flow.model_only_images_per_s(
            settings.workers, settings.engine_seconds, precision
        )
        row = bench_engine.engine_row(
            precision,
            f"{settings.workers}x1",
            batch,
            ips,
            baseline=result["baseline_fp32_eager_batch1_img_s"],
            gflop=result["model_gflop_per_image"],
            peak_gflops=result["matmul_peak_gflops"][precision],
        )
        result["engine"].append(row)
        bench_engine.log_row(row)
    return result


def flow_model_only(engine: dict[str, Any] | None, workers: int) -> float | None:
    """Model-only images/s of ``workers`` x 1 thread at the flow's precision, if measured."""
    if not engine:
        return None
    import torch

    from echo_batch.model.inference import resolve_precision

    precision = resolve_precision(torch.device("cpu"), "auto")
    layout = f"{workers}x1"
    rows = [r for r in engine["engine"] if r["precision"] == precision and r["layout"] == layout]
    return rows[0]["images_per_s"] if rows else None


def flow_section(
    settings: Settings, only: Sequence[str], engine: dict[str, Any] | None
) -> dict[str, Any]:
    """``bench_flow.run`` with the model-only figure of the engine section."""
    return bench_flow.run(
        settings.flow_sizes,
        settings.workers,
        settings.chunk_size,
        settings.engine_seconds,
        settings.replicas,
        skip_gt="flow-gt" not in only,
        skip_model="flow-model" not in only,
        model_only=flow_model_only(engine, settings.workers),
    )


def timed(name: str, fn: Callable[[], dict[str, Any]], seconds: dict[str, float]) -> dict:
    """Run one section, log and record its duration."""
    logger.info("suite: %s ...", name)
    t0 = time.perf_counter()
    result = fn()
    seconds[name] = time.perf_counter() - t0
    logger.info("suite: %s done in %.0f s", name, seconds[name])
    return result


def run_suite(settings: Settings, mode: str, only: Sequence[str] = SECTIONS) -> dict[str, Any]:
    """All sections in ``only``, in order geometry, engine, flow, DICOM reading.

    Args:
        settings: sizes and durations.
        mode: ``full``, ``quick`` or ``custom`` (overrides or a subset of sections; recorded).
        only: sections to run (see ``SECTIONS``).

    Returns:
        The results object written to JSON (``kind``, ``schema_version``, ``date``,
        ``started_at``, ``mode``, ``settings``, ``git``, ``machine``, one key per section run,
        ``seconds`` per section).
    """
    started = dt.datetime.now().astimezone()
    results: dict[str, Any] = {
        "kind": perf_table.SUITE_KIND,
        "schema_version": SCHEMA_VERSION,
        "date": started.date().isoformat(),
        "started_at": started.isoformat(timespec="seconds"),
        "mode": mode,
        "settings": asdict(settings),
        "git": git_state(),
        "machine": machine_info(),
    }
    seconds: dict[str, float] = {}
    if "geometry" in only:
        results["geometry"] = timed("geometry", lambda: geometry_section(settings), seconds)
    if "engine" in only:
        results["engine"] = timed("engine", lambda: engine_section(settings), seconds)
    if "flow-gt" in only or "flow-model" in only:
        engine = results.get("engine")
        results["flow"] = timed("flow", lambda: flow_section(settings, only, engine), seconds)
    if "dicom-read" in only:
        results["dicom_read"] = timed("dicom-read", lambda: dicom_read_section(settings), seconds)
    results["seconds"] = {**seconds, "total": sum(seconds.values())}
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    return results


def write_results(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``<out>/<date>-<host>.json`` and ``.md`` (each via a temporary file and a rename)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{results['date']}-{results['machine']['host']}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    gpu_path = perf_table.newest_gpu_results(perf_table.RESULTS_DIR)
    markdown = perf_table.render(
        results,
        perf_table.load(gpu_path) if gpu_path else None,
        source=perf_table.relative(json_path),
        gpu_source=perf_table.relative(gpu_path),
    )
    for path, text in ((json_path, json.dumps(results, indent=2) + "\n"), (md_path, markdown)):
        atomic.write_text(path, text)
    return json_path, md_path


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 2 minutes (small figures)")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--geometry-repeat", type=int)
    parser.add_argument("--engine-seconds", type=float)
    parser.add_argument("--batches", type=int, nargs="+")
    parser.add_argument("--flow-sizes", type=int, nargs="+")
    parser.add_argument("--replicas", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--chunk-size", type=int)
    parser.add_argument("--dicom-patients", type=int)
    parser.add_argument("--dicom-repeats", type=int)
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> tuple[Settings, str]:
    """The preset of ``--quick`` (or full) with the explicit overrides; and the mode name."""
    mode = "quick" if args.quick else "full"
    settings = presets(os.cpu_count() or 1)[mode]
    overrides = {
        field: getattr(args, field)
        for field in asdict(settings)
        if getattr(args, field, None) is not None
    }
    for field in ("batches", "flow_sizes"):
        if field in overrides:
            overrides[field] = tuple(overrides[field])
    if overrides or set(args.only) != set(SECTIONS):
        mode = "custom"
    return replace(settings, **overrides), mode


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    settings, mode = settings_from(args)
    # only full runs go to the committed results by default
    out = args.out or (perf_table.RESULTS_DIR if mode == "full" else REPO / "build" / "bench-quick")
    logger.info("suite (%s): %s -> %s", mode, settings, out)
    results = run_suite(settings, mode, args.only)
    json_path, md_path = write_results(results, out)
    logger.info("suite: %.0f s; wrote %s and %s", results["seconds"]["total"], json_path, md_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
