"""Render the README performance tables from a suite results JSON (``benchmarks/suite.py``).

The input is ``benchmarks/results/<YYYY-MM-DD>-<host>.json`` (default: the newest one; the older
``engine-*``, ``flow-*``, ``gpu-*`` and ``scale-*`` files are not suite results). When a
``gpu-*.json`` of ``benchmarks/gpu_check.py`` lies next to it, a GPU table is added; otherwise a
line says that the GPU check is ready but not run yet. The rendering is a pure function of the
JSON files, so ``tests/test_perf_table.py`` can check that README.md is up to date.

Usage::

    python benchmarks/perf_table.py [RESULTS.json | --results-dir DIR] [--gpu-dir DIR]
        [--write-readme [--readme README.md]]

Without ``--write-readme`` the tables are printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger("perf_table")

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
README = REPO / "README.md"
BEGIN = "<!-- perf-table:begin -->"
END = "<!-- perf-table:end -->"
SUITE_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})-.+\.json$")
GPU_NAME = re.compile(r"^gpu-(\d{4}-\d{2}-\d{2})-.+\.json$")
SUITE_KIND = "echo-batch-suite"
MODE_NAMES = {
    "cold_local": "cold local cluster (started by the run)",
    "warm_external": "warm external cluster (workers already loaded)",
}
NO_RESULTS = "No suite results are committed yet: run `make bench` on a quiet machine."
GPU_NOT_RUN = (
    "GPU: the check is ready (`benchmarks/gpu_check.sh`: CUDA labels against CPU labels, "
    "images/s for batches 1-512) but has not been run on a CUDA machine yet."
)


# ---------------------------------------------------------------- finding the results files


def suite_results(folder: Path) -> list[Path]:
    """Suite results files in ``folder``, oldest first.

    Suite files are named ``<YYYY-MM-DD>-<host>.json`` and hold ``"kind": "echo-batch-suite"``;
    files of the single benchmarks (``engine-``, ``flow-``, ``gpu-``, ``scale-``) start with a
    word and are not picked up. Order: date in the name, then the run's start time.
    """
    found = []
    for path in folder.glob("*.json") if folder.is_dir() else ():
        match = SUITE_NAME.match(path.name)
        if not match:
            continue
        results = load(path)
        if results.get("kind") == SUITE_KIND:
            found.append(((match.group(1), str(results.get("started_at", "")), path.name), path))
    return [path for _, path in sorted(found)]


def newest_suite_results(folder: Path = RESULTS_DIR) -> Path | None:
    """The newest suite results file in ``folder``, or None."""
    paths = suite_results(folder)
    return paths[-1] if paths else None


def newest_gpu_results(folder: Path = RESULTS_DIR) -> Path | None:
    """The newest ``gpu-<date>-<card>.json`` of ``benchmarks/gpu_check.py`` in ``folder``."""
    paths = [p for p in folder.glob("gpu-*.json") if GPU_NAME.match(p.name)]
    paths.sort(key=lambda p: (GPU_NAME.match(p.name).group(1), p.name))
    return paths[-1] if paths else None


def load(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` ({} when it is not an object)."""
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- formatting helpers


def table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    """Markdown table lines."""
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def num(value: float, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals and a thousands separator."""
    return f"{value:,.{digits}f}"


def pct(fraction: float) -> str:
    """A fraction as a whole percentage."""
    return f"{100 * fraction:.0f} %"


def ratio(value: float) -> str:
    """A ratio such as ``0.84x``."""
    return f"{value:.2f}x"


def yes_no(flag: object) -> str:
    return "yes" if flag else "no"


# ---------------------------------------------------------------- sections


def machine_line(results: dict[str, Any], source: str | None) -> str:
    """One sentence naming the machine, the software and the results file."""
    m = results["machine"]
    where = f", `{source}`" if source else ""
    notes = {
        "quick": " (quick mode: short measurements, small cohorts)",
        "custom": " (custom settings, see the JSON)",
    }
    quick = notes.get(results.get("mode", "full"), "")
    return (
        f"Measured on {m['cpu_model']} ({m['logical_cores']} logical cores, "
        f"{m['ram_gib']:.0f} GiB RAM, native bf16: {yes_no(m['native_bf16'])}), {m['os']}, "
        f"Python {m['python']}, torch {m['torch']}, numpy {m['numpy']}; "
        f"{results['date']}{where}{quick}. All ratios are between figures of this one run."
    )


def engine_lines(engine: dict[str, Any]) -> list[str]:
    """Model-only table: images/s per precision, process layout and batch."""
    peaks = engine["matmul_peak_gflops"]
    peak_text = ", ".join(f"{p} {num(v, 0)} GFLOP/s" for p, v in peaks.items())
    intro = (
        "**Model only** (`SegmentationEngine.forward_only`: the network alone, channels_last). "
        f"Ratios to the plain eager fp32 one-image loop "
        f"({num(engine['baseline_fp32_eager_batch1_img_s'])} images/s) and to the matmul "
        f"throughput of the same precision on the whole machine ({peak_text}); "
        f"{engine['model_gflop_per_image']:.2f} GFLOP per image."
    )
    rows = [
        (
            r["precision"],
            r["layout"],
            r["batch"],
            num(r["images_per_s"]),
            ratio(r["ratio_to_baseline"]),
            pct(r["fraction_of_matmul_peak"]),
        )
        for r in engine["engine"]
    ]
    header = (
        "precision",
        "processes x threads",
        "batch",
        "images/s",
        "vs plain fp32 loop",
        "of matmul peak",
    )
    return [intro, "", *table(header, rows)]


def model_flow_lines(flow: dict[str, Any]) -> list[str]:
    """End-to-end flow with the model, against model-only and the plain loop."""
    workers = flow["workers"]
    intro = (
        f"**Flow end to end with the model** (bundled sample, {flow['precision']}, "
        f"{workers} workers x 1 thread). Model-only for the same layout and precision: "
        f"{num(flow['model_only_images_per_s'])} images/s; plain eager fp32 one-process loop "
        f"doing the same work: {num(flow['plain_loop_images_per_s'])} images/s. "
        "Targets: at least 0.8x model-only and 3x the plain loop."
    )
    rows = []
    for name, case in flow["model_e2e"].items():
        r = flow["model_ratios"][name]
        rows.append(
            (
                mode_name(name),
                num(case["patients"], 0),
                num(case["images_per_s"]),
                ratio(r["over_model_only"]),
                ratio(r["over_plain_loop"]),
                f"{num(case['peak_rss_mb'], 0)} MB",
            )
        )
    header = ("run", "patients", "images/s", "vs model-only", "vs plain loop", "peak RSS")
    return [intro, "", *table(header, rows)]


def mode_name(name: str) -> str:
    """Readable name of a model run mode of ``bench_flow.model_cases``."""
    match = re.fullmatch(r"cold_local_x(\d+)", name)
    if match:
        return f"cold local cluster, sample x{match.group(1)}"
    return MODE_NAMES.get(name, name)


def gt_flow_lines(flow: dict[str, Any]) -> list[str]:
    """Orchestration overhead and memory of ``--segmentation gt`` runs by cohort size."""
    intro = (
        "**Orchestration** (`--segmentation gt`, synthetic cohorts on a 256 x 256 grid, "
        f"{flow['workers']} workers, {chunking(flow.get('chunk_size'))}; overhead = flow wall time "
        "- chunk compute / workers; target <= 10 %)."
    )
    rows = []
    for _, case in sorted(flow["gt"].items(), key=lambda kv: int(kv[0])):
        rows.append(
            (
                num(case["patients"], 0),
                f"{case['flow_wall_s']:.1f} s",
                num(case["patients_per_s"]),
                f"{case['overhead_s']:.2f} s = {pct(case['overhead_share'])}",
                f"{num(case['peak_rss_mb'], 0)} MB",
                role_peaks(case),
                f"{case['output_mb']:.2f} MB",
            )
        )
    header = (
        "patients",
        "flow wall",
        "patients/s",
        "overhead",
        "peak RSS, all processes",
        "flow / Prefect API / largest worker",
        "Parquet",
    )
    lines = [intro, "", *table(header, rows)]
    growth = flow.get("growth")
    if growth:
        sizes = sorted(int(n) for n in flow["gt"])
        lines += [
            "",
            f"From {sizes[0]:,} to {sizes[-1]:,} patients (x{growth['patients_ratio']:.0f}): "
            f"flow wall time x{growth['flow_wall_ratio']:.2f}, peak RSS "
            f"x{growth['peak_rss_ratio']:.2f} (target <= 1.2x).",
        ]
    return lines


def chunking(chunk_size: int | None) -> str:
    """How the gt runs were chunked."""
    return f"chunk size {chunk_size}" if chunk_size else "automatic chunk sizes"


def role_peaks(case: dict[str, Any]) -> str:
    """Peak RSS of the flow process, the Prefect API and the largest Dask worker."""
    roles = case.get("peak_rss_by_role_mb") or {}
    values = [roles.get(r) for r in ("flow", "prefect_server", "dask_worker")]
    return " / ".join("-" if v is None else num(v, 0) for v in values) + " MB"


def geometry_lines(geometry: dict[str, Any]) -> list[str]:
    """Per-image measurement times."""
    intro = (
        f"**Measurements per image** (median of {geometry['repeat']} calls, 1 thread): "
        "`measure_lv` with the single-plane and area-length volumes, and the CAMUS-compatible "
        "disk construction `camus_diameters` on the same LV mask."
    )
    rows = []
    for case in geometry["cases"]:
        camus = case["camus_diameters_ms"]
        rows.append(
            (
                case["name"],
                "x".join(str(s) for s in case["shape"]),
                f"{case['measure_lv_ms']:.2f} ms",
                f"{camus:.2f} ms" if camus is not None else "-",
            )
        )
    header = ("image", "size", "measure_lv + volumes", "camus_diameters")
    return [intro, "", *table(header, rows)]


def dicom_read_lines(bench: dict[str, Any]) -> list[str]:
    """Reading cost per frame, DICOM beside NIfTI (``bench_dicom_read.py``)."""
    grid = bench["rendered_grid"]
    size = f"{grid[0]} x {grid[1]}" if isinstance(grid, list) else "native"
    intro = (
        f"**Reading cost per frame** (the same {bench['frames']:,} synthetic loop frames, "
        f"{size} px, {bench['patients']} patients x 2 views, best of the passes, 1 thread; a "
        f"DICOM header alone {bench['results']['dicom_header_ms_per_file']:.2f} ms per file)."
    )
    cases = (
        ("DICOM, JPEG baseline q95", "dicom_jpeg_ms_per_frame", "jpeg"),
        ("DICOM, uncompressed", "dicom_uncompressed_ms_per_frame", "none"),
        ("NIfTI (`.nii.gz`)", "nifti_gz_ms_per_frame", "nifti_gz"),
    )
    rows = [
        (
            name,
            f"{bench['results'][key]:.2f} ms",
            f"{bench['bytes_per_frame'][size_key] / 1024:.1f} KiB",
        )
        for name, key, size_key in cases
    ]
    return [intro, "", *table(("file", "read per frame", "bytes per frame"), rows)]


def gpu_lines(gpu: dict[str, Any] | None, source: str | None = None) -> list[str]:
    """GPU table from a ``gpu_check.py`` report, or the line saying it has not run."""
    if gpu is None:
        return [GPU_NOT_RUN]
    where = f", `{source}`" if source else ""
    intro = (
        f"**GPU** ({gpu['card']}, torch {gpu['torch']}, CUDA {gpu['cuda']}; {gpu['date']}"
        f"{where}): labels against the CPU fp32 labels of the 200 sample images, and model-only "
        "images/s at the best batch size."
    )
    rows = []
    for precision, check in gpu["cuda_vs_cpu_fp32"].items():
        rates = gpu["model_only_images_per_s"].get(precision, {})
        best = max(rates.items(), key=lambda kv: kv[1]) if rates else None
        rows.append(
            (
                precision,
                f"{100 * check['pixel_agreement']:.3f} %",
                f"{100 * check['identical_images']:.1f} %",
                f"{check['lv_dice']:.4f}",
                f"{num(best[1], 0)} (batch {best[0]})" if best else "-",
            )
        )
    header = ("precision", "pixels = CPU", "identical images", "LV Dice", "model-only images/s")
    seg = gpu["segment_images_per_s"]
    return [
        intro,
        "",
        *table(header, rows),
        "",
        f"`engine.segment` ({seg['precision']}, batch {seg['batch']}, host pre- and "
        f"post-processing included): {num(seg['images_per_s'], 0)} images/s.",
    ]


def render(
    results: dict[str, Any] | None,
    gpu: dict[str, Any] | None = None,
    *,
    source: str | None = None,
    gpu_source: str | None = None,
) -> str:
    """Markdown of one suite run (sections that the run left out are left out here).

    Args:
        results: a suite results object (None: a line saying there are none yet).
        gpu: a ``gpu_check.py`` report, or None.
        source: results path to name in the text.
        gpu_source: GPU report path to name in the text.
    """
    parts: list[list[str]] = []
    if results is None:
        parts.append([NO_RESULTS])
    else:
        parts.append([machine_line(results, source)])
        flow = results.get("flow") or {}
        if results.get("engine"):
            parts.append(engine_lines(results["engine"]))
        if flow.get("model_e2e"):
            parts.append(model_flow_lines(flow))
        if flow.get("gt"):
            parts.append(gt_flow_lines(flow))
        if results.get("geometry"):
            parts.append(geometry_lines(results["geometry"]))
        if results.get("dicom_read"):
            parts.append(dicom_read_lines(results["dicom_read"]))
    parts.append(gpu_lines(gpu, gpu_source))
    return "\n\n".join("\n".join(lines) for lines in parts) + "\n"


# ---------------------------------------------------------------- README block


def render_files(path: Path | None, gpu_path: Path | None) -> str:
    """:func:`render` of a suite results file and a GPU report (either may be None)."""
    return render(
        load(path) if path else None,
        load(gpu_path) if gpu_path else None,
        source=relative(path),
        gpu_source=relative(gpu_path),
    )


def readme_block(results_dir: Path = RESULTS_DIR, gpu_dir: Path | None = None) -> str:
    """What belongs between the README markers for the newest files in the folders."""
    return render_files(
        newest_suite_results(results_dir), newest_gpu_results(gpu_dir or results_dir)
    )


def relative(path: Path | None) -> str | None:
    """``path`` relative to the repository when inside it (stable across checkouts)."""
    if path is None:
        return None
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def extract_block(text: str) -> str:
    """The text between the markers.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README needs the markers {BEGIN} ... {END}")
    return text[start + len(BEGIN) : end].strip("\n") + "\n"


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the markers replaced by ``block``."""
    extract_block(text)  # validates the markers
    start, end = text.find(BEGIN) + len(BEGIN), text.find(END)
    return text[:start] + "\n" + block.strip("\n") + "\n" + text[end:]


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="?", default=None, help="a suite JSON")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--gpu-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = args.results or newest_suite_results(args.results_dir)
    if path is None:
        logger.warning("no suite results in %s", args.results_dir)
    block = render_files(path, newest_gpu_results(args.gpu_dir))
    if not args.write_readme:
        sys.stdout.write(block)
        return 0
    text = args.readme.read_text()
    new = replace_block(text, block)
    if new != text:
        args.readme.write_text(new)
    logger.info("%s: performance tables %s", args.readme, "updated" if new != text else "unchanged")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
