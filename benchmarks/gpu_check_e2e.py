"""End-to-end part of the GPU check (issue 16, point 5): CPU side, CPU ceiling, real runs, labels.

Run through ``benchmarks/gpu_check.sh`` on a GPU node, after ``gpu_check.py`` (which measures the
model-only images/s, G). Steps:

1. **CPU side, one core**: milliseconds per image of reading (image and expert mask), bringing to
   the grid (``to_grid``) and measuring, on the bundled sample, in this process with one thread,
   with a zero-latency device (a stand-in engine that returns each image's expert labels). With
   the model-only rate G this says how many CPU cores one GPU needs.
2. **C, the CPU-side ceiling**: the same zero-latency chunks on the CPU workers of the local
   cluster the run would build (``echo_batch.run.cluster.local_layout``), sample patients
   repeated: images/s when the device costs nothing. When the split flow's simulated engine has
   landed (``echo_batch.model.simulated``, ``echo_batch.run.stages``) it is named in the report;
   until then only this fused ceiling is measured.
3. **E, end to end**: ``echo-batch run --device cuda`` on N synthetic patients (``echo-batch
   synth`` of a base cohort, repeated as renamed hard links to N) and on the bundled sample
   repeated to M patients; images/s over the flow's wall time (``run.json``), the processes that
   held a CUDA context during the run (``nvidia-smi``), the statuses.
4. **Labels**: the bundled sample through the flow and through ``--serial`` (the fused chunk
   function in one process, on the same device), both with ``--save-masks``: share of equal
   pixels and of identical label maps.

Writes ``<out>/gpu-e2e-<date>-<card>.json`` and prints a Markdown summary. ``--device cpu`` with
small sizes runs every step on a machine without a GPU (a check of the script, not a figure).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "camus224-test"
IMAGES_PER_PATIENT = 4  # annotated stills: 2CH/4CH x ED/ES
SPLIT_MODULES = ("echo_batch.run.stages", "echo_batch.model.simulated")
TARGET_E_SHARE = 0.85  # E >= 0.85 x min(G, C)
TARGET_PIXELS = 0.9997  # labels of the split run equal to the fused run's

logger = logging.getLogger("gpu_check_e2e")


# ------------------------------------------------------------------ zero-latency device


class ExpertLabels:
    """A device that costs nothing: ``segment`` returns each image's expert label map.

    It still brings every image to the network grid, as the CPU worker does before inference in
    the split flow, so that the CPU work it leaves is the run's (read, grid, measure).

    Args:
        root: DATA root whose images and expert masks are known (the bundled sample).
        input_size: the network grid ``(rows, cols)``.
    """

    batch_size = 256
    precision = "none"

    def __init__(self, root: Path = SAMPLE, input_size: tuple[int, int] | None = None) -> None:
        from echo_batch.io.discovery import discover
        from echo_batch.io.image import read_image
        from echo_batch.model.preprocess import INPUT_SIZE

        self.input_size = input_size or INPUT_SIZE
        self._labels: dict[str, np.ndarray] = {}
        for ref in discover(root).patients:
            for files in ref.images.values():
                image = read_image(files.image, patient_dir=ref.folder).array
                gt = read_image(files.gt, patient_dir=ref.folder, labels=True).array
                self._labels[_digest(image)] = gt

    def segment(self, images):
        from echo_batch.model.inference import Segmentation
        from echo_batch.model.preprocess import to_grid

        out = []
        for image in images:
            to_grid(image, self.input_size)
            out.append(Segmentation(labels=self._labels[_digest(image)], confidence=1.0))
        return out


def _digest(image: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).hexdigest()


_ENGINE: ExpertLabels | None = None


def zero_latency_chunk(refs) -> tuple[int, dict[str, float]]:
    """Process a chunk with the zero-latency device (one per process); (images, seconds)."""
    global _ENGINE
    from echo_batch.domain import SegmentationSource
    from echo_batch.run.chunk import process_chunk
    from echo_batch.run.options import ChunkOptions

    if _ENGINE is None:
        _ENGINE = ExpertLabels()
    options = ChunkOptions(segmentation=SegmentationSource.MODEL, threads=1)
    result = process_chunk(refs, options, "zero-latency", engine=_ENGINE)
    return len(result.images), result.seconds


# ------------------------------------------------------------------ 1. CPU side, one core


def cpu_side(repeat: int = 3, root: Path = SAMPLE) -> dict[str, Any]:
    """Milliseconds per image of each CPU stage in this process (1 thread), zero-latency device.

    Returns:
        ``{"images": n, "ms_per_image": {...} (wall), "cpu_ms_per_image": {...} (the wall
        figures scaled by the process's CPU time over its wall time), "ground_truth": bool}``.
        With expert masks (the sample) every image is measured twice, on the model's and on
        the expert's masks, and compared (Dice, distances); :func:`without_ground_truth` gives
        a copy of the sample without them, measured once, as most cohorts are.
    """
    import torch

    from echo_batch.io.discovery import discover
    from echo_batch.io.image import read_image
    from echo_batch.model.preprocess import to_grid

    torch.set_num_threads(1)
    refs = discover(root).patients
    zero_latency_chunk(refs[:2])  # warm-up, builds the label table
    cpu0, wall0 = time.process_time(), time.perf_counter()
    runs = [zero_latency_chunk(refs) for _ in range(repeat)]
    busy = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    n = runs[0][0]
    seconds = {k: statistics.median(r[1][k] for r in runs) for k in runs[0][1]}
    images = [
        read_image(f.image, patient_dir=r.folder).array for r in refs for f in r.images.values()
    ]
    t0 = time.perf_counter()
    for image in images:
        to_grid(image, _ENGINE.input_size)
    grid_s = time.perf_counter() - t0
    ms = {
        "load": 1000 * seconds["load"] / n,
        "grid": 1000 * grid_s / len(images),
        "labels_lookup_and_grid": 1000 * seconds["segment"] / n,
        "measure": 1000 * seconds["measure"] / n,
    }
    ms["total"] = ms["load"] + ms["labels_lookup_and_grid"] + ms["measure"]
    # On a shared machine the wall clock includes time spent waiting for the core: the CPU
    # time of the same chunks is the cost a dedicated core would pay.
    cpu_ms = {k: v * min(1.0, busy) for k, v in ms.items()}
    return {
        "images": n,
        "repeat": repeat,
        "ms_per_image": ms,
        "cpu_share_of_wall": busy,
        "cpu_ms_per_image": cpu_ms,
        "ground_truth": any(f.gt for r in refs for f in r.images.values()),
    }


def without_ground_truth(dest: Path) -> Path:
    """The bundled sample without its expert masks (hard links), as a cohort without them."""
    root = replicate_sample(50, dest)
    for gt in root.rglob("*_gt.nii.gz"):
        gt.unlink()
    return root


def cores_per_gpu(model_only: float | None, ms_per_image: float) -> float | None:
    """CPU cores that keep a device of ``model_only`` images/s busy at ``ms_per_image`` each."""
    if not model_only:
        return None
    return model_only * ms_per_image / 1000


# ------------------------------------------------------------------ 2. C, the CPU ceiling


def cpu_ceiling(patients: int, workers: int | None, chunk: int = 25) -> dict[str, Any]:
    """Images/s of zero-latency chunks on the CPU workers of the run's local cluster."""
    from distributed import wait

    from echo_batch.domain import Device, SegmentationSource
    from echo_batch.io.discovery import discover
    from echo_batch.run.cluster import WORKER_PRELOAD, close_cluster, dask_client, local_layout

    layout = local_layout(workers, Device.AUTO, SegmentationSource.MODEL)
    client, cluster = dask_client(
        None,
        layout.cpu_workers,
        preload=[WORKER_PRELOAD],
        preload_torch=True,
        gpu_worker=layout.gpu_worker,
    )
    try:
        info = client.scheduler_info(n_workers=-1)["workers"]
        cpu = [a for a, w in info.items() if not w.get("resources", {}).get("GPU")]
        refs = discover(SAMPLE).patients
        cohort = [refs[i % len(refs)] for i in range(patients)]
        # by reference (this file run as a script is __main__, which Dask would pickle by value)
        sys.path.insert(0, str(REPO / "benchmarks"))
        task = importlib.import_module("gpu_check_e2e").zero_latency_chunk
        # warm-up: every CPU worker builds its label table before the clock starts
        wait([client.submit(task, refs[:1], workers=[a], pure=False) for a in cpu])
        t0 = time.perf_counter()
        futures = [
            client.submit(task, cohort[i : i + chunk], workers=cpu, pure=False)
            for i in range(0, len(cohort), chunk)
        ]
        images = sum(f.result()[0] for f in futures)
        wall = time.perf_counter() - t0
    finally:
        close_cluster(client, cluster)
    return {
        "cpu_workers": len(cpu),
        "gpu_worker": layout.gpu_worker,
        "patients": patients,
        "images": images,
        "wall_s": wall,
        "images_per_s": images / wall,
    }


def split_flow_status() -> str:
    """Whether the split flow and its simulated engine are importable here."""
    missing = [m for m in SPLIT_MODULES if find_spec(m) is None]
    if missing:
        return "skipped: not landed (" + ", ".join(missing) + " missing)"
    return "present"


# The flow with a zero-latency simulated device (issue 16, point 4), in a child process with
# its own temporary Prefect API, as ``echo-batch run`` has: on a CUDA host the local cluster has
# its GPU worker, so the chunks take the split path with a device that costs nothing.
SIMULATED_RUN = """
import json, sys
from pathlib import Path
from echo_batch.run.options import ChunkOptions, RunOptions, SimulatedDevice
from flows.prefect_api import prefect_api
data, out, workers = sys.argv[1:4]
options = RunOptions(
    data=Path(data), out=Path(out), workers=int(workers) or None, report=False,
    chunk=ChunkOptions(simulated_device=SimulatedDevice(batch_s=0.0, image_s=0.0)),
)
with prefect_api():
    import flows.cohort_ef as flow
    flow.cohort_ef(options)
"""


def split_ceiling(data: Path, out: Path, workers: int | None, timeout: float) -> dict[str, Any]:
    """C through the flow: images/s of a run whose device is simulated with zero latency.

    Skipped, with the reason, when the split flow or ``SimulatedDevice`` is not here.
    """
    status = split_flow_status()
    if status != "present":
        return {"skipped": status}
    from echo_batch.run import options

    if not hasattr(options, "SimulatedDevice"):
        return {"skipped": "echo_batch.run.options.SimulatedDevice missing"}
    if out.exists():
        shutil.rmtree(out)
    command = [sys.executable, "-c", SIMULATED_RUN, str(data), str(out), str(workers or 0)]
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
        )
    except subprocess.TimeoutExpired:
        return {"timed_out_after_s": timeout}
    if done.returncode != 0:
        return {"returncode": done.returncode, "stderr": done.stderr[-2000:]}
    return _run_figures(out)


# ------------------------------------------------------------------ 3. cohorts and runs


def replicate_sample(patients: int, dest: Path, base: Path = SAMPLE) -> Path:
    """``patients`` patients made of renamed hard-linked copies of ``base`` (CAMUS layout).

    Copy 0 of each patient keeps its id; copy k of ``patient0027`` is ``patient0027c00k``, its
    files renamed alike (cfg files keep their names), in the base patient's split.
    """
    if dest.exists():
        shutil.rmtree(dest)
    folders = sorted(p for p in (base / "database_nifti").iterdir() if p.is_dir())
    copies = -(-patients // len(folders))
    plan = [(k, folder) for k in range(copies) for folder in folders][:patients]
    split_files = sorted((base / "database_split").glob("*.txt"))
    split_of = {pid: f.name for f in split_files for pid in f.read_text().split()}
    members: dict[str, list[str]] = {f.name: [] for f in split_files}
    for k, folder in plan:
        pid = folder.name
        new = pid if k == 0 else f"{pid}c{k:03d}"
        target = dest / "database_nifti" / new
        target.mkdir(parents=True)
        for path in folder.iterdir():
            name = new + path.name[len(pid) :] if path.name.startswith(pid) else path.name
            try:
                os.link(path, target / name)
            except OSError:
                shutil.copyfile(path, target / name)
        if pid in split_of:
            members[split_of[pid]].append(new)
    (dest / "database_split").mkdir(parents=True)
    for name, ids in members.items():
        (dest / "database_split" / name).write_text("".join(f"{i}\n" for i in ids))
    return dest


def synthetic_cohort(work: Path, patients: int, base: int, max_side: int) -> Path:
    """``patients`` synthetic patients: ``echo-batch synth`` of ``base``, repeated by hard links."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from scale_run import replicate_cohort

    root = work / f"synth-n{base}"
    if not (root / "truth.csv").is_file():
        subprocess.run(
            _cli("synth", str(root), "--patients", str(base), "--max-side", str(max_side)),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    if patients <= base:
        return root
    return replicate_cohort(root, patients, work / f"synth-n{base}-x{patients}")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "echo_batch", *args]


class GpuProcesses:
    """Pids that hold a CUDA context while it runs (``nvidia-smi``, every 0.5 s)."""

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self.available = shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> GpuProcesses:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join(5)

    def _poll(self) -> None:
        query = ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"]
        while not self._stop.is_set():
            done = subprocess.run(query, capture_output=True, text=True, timeout=10)
            self.pids |= {int(p) for p in done.stdout.split() if p.strip().isdigit()}
            self._stop.wait(0.5)


def run_case(
    data: Path, out: Path, device: str, workers: int | None, timeout: float, *extra: str
) -> dict[str, Any]:
    """One ``echo-batch run``; its images/s over the flow's wall time and its CUDA processes."""
    if out.exists():
        shutil.rmtree(out)
    command = _cli("run", str(data), "--out", str(out), "--device", device, *extra)
    if workers:
        command += ["--workers", str(workers)]
    t0 = time.perf_counter()
    with GpuProcesses() as gpu:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"data": str(data), "timed_out_after_s": timeout}
    command_s = time.perf_counter() - t0
    if done.returncode != 0:
        return {"data": str(data), "returncode": done.returncode, "stderr": done.stderr[-2000:]}
    return {
        "data": str(data),
        **_run_figures(out),
        "command_s": command_s,
        "cuda_processes": len(gpu.pids) if gpu.available else None,
    }


def _run_figures(out: Path) -> dict[str, Any]:
    """Patients, statuses, image rows and images/s over the flow's wall time (``run.json``)."""
    import pyarrow.parquet as pq

    record = json.loads((out / "run.json").read_text())
    images = pq.read_metadata(out / "images.parquet").num_rows
    wall = record["wall_seconds"]
    seconds = record.get("seconds", {})
    return {
        "patients": record["summary"]["patients"],
        "status": record["summary"]["status"],
        "images": images,
        "flow_wall_s": wall,
        "images_per_s": images / wall,
        # the same images over the time chunks ran (cluster start and compaction left out)
        "images_per_chunks_s": images / chunks if (chunks := seconds.get("chunks_wall")) else None,
        "seconds": seconds,
    }


# ------------------------------------------------------------------ 4. labels


def mask_agreement(a: Path, b: Path) -> dict[str, Any]:
    """Pixel and map agreement of the ``*_pred.nii.gz`` label maps under two mask folders."""
    import SimpleITK as sitk

    left = sorted(p.relative_to(a) for p in a.rglob("*_pred.nii.gz"))
    right = sorted(p.relative_to(b) for p in b.rglob("*_pred.nii.gz"))
    if not left or left != right:
        return {"error": f"mask sets differ: {len(left)} vs {len(right)} files"}
    equal = total = identical = 0
    for rel in left:
        x = sitk.GetArrayFromImage(sitk.ReadImage(str(a / rel)))
        y = sitk.GetArrayFromImage(sitk.ReadImage(str(b / rel)))
        same = int((x == y).sum()) if x.shape == y.shape else 0
        equal += same
        total += x.size
        identical += int(same == x.size)
    return {
        "maps": len(left),
        "pixel_agreement": equal / total,
        "identical_maps": identical / len(left),
    }


def labels_check(
    work: Path, device: str, workers: int | None, timeout: float, patients: int = 50
) -> dict[str, Any]:
    """The bundled sample (its first ``patients``) through the flow and through ``--serial``."""
    data = SAMPLE if patients >= 50 else replicate_sample(patients, work / f"sample-{patients}")
    flow = run_case(data, work / "labels-flow", device, workers, timeout, "--save-masks")
    serial = run_case(
        data, work / "labels-serial", device, None, timeout, "--serial", "--save-masks"
    )
    if "images" not in flow or "images" not in serial:
        return {"flow": flow, "serial": serial}
    return {
        "flow_images_per_s": flow["images_per_s"],
        **mask_agreement(work / "labels-flow" / "masks", work / "labels-serial" / "masks"),
    }


# ------------------------------------------------------------------ report


def card_name() -> str:
    """The first GPU's name from ``nvidia-smi`` (no CUDA context in this process), else cpu."""
    if shutil.which("nvidia-smi") is None:
        return "cpu"
    query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
    names = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.split("\n")
    return names[0].strip() or "cpu"


def card_slug(card: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", card).strip("-").lower()


def model_only_rate(out_dir: Path, card: str, date: str) -> float | None:
    """G: bf16 model-only images/s at batch 256 from today's ``gpu_check.py`` report."""
    path = out_dir / f"gpu-{date}-{card_slug(card)}.json"
    if not path.is_file():
        return None
    rates = json.loads(path.read_text())["model_only_images_per_s"].get("bf16", {})
    return max(rates.values()) if rates else None


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """E / min(G, C) of each end-to-end run and the label target."""
    g = report.get("model_only_images_per_s")
    # C: through the flow when the simulated device is there, else the fused chunks' ceiling
    c = report.get("cpu_ceiling_flow", {}).get("images_per_s") or report["cpu_ceiling"].get(
        "images_per_s"
    )
    bound = min(x for x in (g, c) if x) if (g or c) else None
    out: dict[str, Any] = {"min_g_c": bound}
    for name, case in report["end_to_end"].items():
        if bound and "images_per_s" in case:
            out[f"{name}_e_share"] = case["images_per_s"] / bound
            out[f"{name}_meets_0.85"] = case["images_per_s"] >= TARGET_E_SHARE * bound
    pixels = report["labels"].get("pixel_agreement")
    if pixels is not None:
        out["labels_meet_99.97"] = pixels >= TARGET_PIXELS
    return out


def markdown(report: dict[str, Any]) -> str:
    c = report["cpu_ceiling"]
    lines = [
        f"GPU end-to-end check on {report['card']} ({report['host']}, {report['cpu_count']} cores)",
        "",
    ]
    for key, what in (("cpu_side", "with"), ("cpu_side_without_gt", "without")):
        ms = report[key]["cpu_ms_per_image"]
        lines.append(
            f"CPU side, one core, {what} expert masks (CPU ms/image): load {ms['load']:.2f}, "
            f"grid {ms['grid']:.2f}, measure {ms['measure']:.2f}, total {ms['total']:.2f}; "
            f"cores per GPU at G: {report['cores_per_gpu'][key] or 'n/a'}"
        )
    lines += [
        f"G model-only: {report.get('model_only_images_per_s') or 'n/a'} images/s",
        f"C CPU ceiling: {c['images_per_s']:.0f} images/s on {c['cpu_workers']} CPU workers "
        "(zero-latency device, fused chunks); through the flow: "
        + _ceiling_flow_text(report.get("cpu_ceiling_flow", {})),
        "",
        "| run | patients | images/s | E / min(G, C) | CUDA processes | status |",
        "|---|---|---|---|---|---|",
    ]
    v = report["verdict"]
    for name, case in report["end_to_end"].items():
        if "images_per_s" not in case:
            lines.append(f"| {name} | - | - | - | - | {json.dumps(case)[:120]} |")
            continue
        share = v.get(f"{name}_e_share")
        lines.append(
            f"| {name} | {case['patients']} | {case['images_per_s']:.0f} | "
            f"{'n/a' if share is None else f'{share:.2f}'} | {case['cuda_processes']} | "
            f"{case['status']} |"
        )
    labels = report["labels"]
    if "pixel_agreement" in labels:
        lines.append(
            f"\nLabels, flow vs --serial: {100 * labels['pixel_agreement']:.4f} % of pixels, "
            f"{100 * labels['identical_maps']:.1f} % of maps identical ({labels['maps']} maps)"
        )
    else:
        lines.append(f"\nLabels: {json.dumps(labels)[:300]}")
    return "\n".join(lines)


def _ceiling_flow_text(case: dict[str, Any]) -> str:
    if "images_per_s" in case:
        return f"{case['images_per_s']:.0f} images/s ({case['patients']} patients)"
    return json.dumps(case)[:200]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--work", type=Path, default=REPO / "build" / "gpu-e2e")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu", "auto"))
    p.add_argument("--workers", type=int, default=None, help="CPU workers (default: layout's)")
    p.add_argument("--synthetic", type=int, default=10_000, help="synthetic patients (E)")
    p.add_argument("--synth-base", type=int, default=300, help="patients echo-batch synth writes")
    p.add_argument("--max-side", type=int, default=256)
    p.add_argument("--sample-patients", type=int, default=2_000, help="sample repeated to (E)")
    p.add_argument("--ceiling-patients", type=int, default=1_000, help="patients for C")
    p.add_argument("--labels-patients", type=int, default=50, help="sample patients (labels)")
    p.add_argument("--run-timeout", type=float, default=150.0, help="seconds per run")
    p.add_argument("--repeat", type=int, default=2, help="repeats of the one-core CPU side")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    date = dt.date.today().isoformat()
    report: dict[str, Any] = {
        "date": date,
        "card": card_name(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "device": args.device,
        "torch": torch.__version__,
    }
    report["model_only_images_per_s"] = model_only_rate(args.out, report["card"], date)
    logger.info("1. CPU side on one core")
    report["cpu_side"] = cpu_side(args.repeat)
    report["cpu_side_without_gt"] = cpu_side(
        args.repeat, without_ground_truth(args.work / "sample-no-gt")
    )
    report["cores_per_gpu"] = {
        key: cores_per_gpu(
            report["model_only_images_per_s"], report[key]["cpu_ms_per_image"]["total"]
        )
        for key in ("cpu_side", "cpu_side_without_gt")
    }
    logger.info("2. C: zero-latency chunks on the CPU workers")
    report["cpu_ceiling"] = cpu_ceiling(args.ceiling_patients, args.workers)
    logger.info("3. E: synthetic and repeated-sample runs")
    args.work.mkdir(parents=True, exist_ok=True)
    synth = synthetic_cohort(args.work, args.synthetic, args.synth_base, args.max_side)
    sample = replicate_sample(args.sample_patients, args.work / f"sample-x{args.sample_patients}")
    logger.info("2b. C through the flow with a zero-latency simulated device")
    report["cpu_ceiling_flow"] = split_ceiling(
        sample, args.work / "out-simulated", args.workers, args.run_timeout
    )
    report["end_to_end"] = {
        f"synthetic {args.synthetic}": run_case(
            synth, args.work / "out-synth", args.device, args.workers, args.run_timeout
        ),
        f"sample x{args.sample_patients}": run_case(
            sample, args.work / "out-sample", args.device, args.workers, args.run_timeout
        ),
    }
    logger.info("4. labels: flow against --serial")
    report["labels"] = labels_check(
        args.work, args.device, args.workers, args.run_timeout, args.labels_patients
    )
    report["verdict"] = verdict(report)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu-e2e-{date}-{card_slug(report['card'])}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(markdown(report))
    logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
