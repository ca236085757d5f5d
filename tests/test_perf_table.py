"""README performance tables: up to date with the committed results, and the renderer itself.

The renderer is ``benchmarks/perf_table.py`` (not part of the package), loaded from its file.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def perf_table():
    spec = importlib.util.spec_from_file_location(
        "perf_table", REPO / "benchmarks" / "perf_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_results() -> dict:
    """A hand-made suite result with one row of every section."""
    return {
        "kind": "echo-batch-suite",
        "date": "2026-01-02",
        "started_at": "2026-01-02T03:04:05+00:00",
        "mode": "full",
        "machine": {
            "cpu_model": "Test CPU 9000",
            "logical_cores": 2,
            "ram_gib": 16.2,
            "native_bf16": True,
            "os": "Linux-6",
            "python": "3.11.7",
            "torch": "2.13.0+cpu",
            "numpy": "2.4.6",
        },
        "engine": {
            "matmul_peak_gflops": {"fp32": 200.0, "bf16": 800.0},
            "baseline_fp32_eager_batch1_img_s": 20.0,
            "model_gflop_per_image": 8.0,
            "engine": [
                {
                    "precision": "bf16",
                    "layout": "2x1",
                    "batch": 2,
                    "images_per_s": 60.0,
                    "ratio_to_baseline": 3.0,
                    "fraction_of_matmul_peak": 0.6,
                }
            ],
        },
        "flow": {
            "workers": 2,
            "chunk_size": 25,
            "precision": "bf16",
            "model_only_images_per_s": 60.0,
            "plain_loop_images_per_s": 20.0,
            "model_e2e": {
                "cold_local_x8": {"patients": 400, "images_per_s": 48.0, "peak_rss_mb": 1900.4}
            },
            "model_ratios": {
                "cold_local_x8": {
                    "images_per_s": 48.0,
                    "over_model_only": 0.8,
                    "over_plain_loop": 2.4,
                }
            },
            "gt": {
                "2000": {
                    "patients": 2000,
                    "flow_wall_s": 60.0,
                    "patients_per_s": 33.333,
                    "overhead_s": 3.0,
                    "overhead_share": 0.05,
                    "peak_rss_mb": 1200.0,
                    "peak_rss_by_role_mb": {
                        "flow": 450.0,
                        "prefect_server": 250.0,
                        "dask_worker": 300.0,
                    },
                    "output_mb": 0.5,
                },
                "200": {
                    "patients": 200,
                    "flow_wall_s": 7.0,
                    "patients_per_s": 28.571,
                    "overhead_s": 1.4,
                    "overhead_share": 0.2,
                    "peak_rss_mb": 1100.0,
                    "peak_rss_by_role_mb": {"flow": 400.0},
                    "output_mb": 0.07,
                },
            },
            "growth": {"patients_ratio": 10.0, "flow_wall_ratio": 8.571, "peak_rss_ratio": 1.091},
        },
        "geometry": {
            "repeat": 200,
            "cases": [
                {
                    "name": "synthetic labels 224x224",
                    "shape": [224, 224],
                    "measure_lv_ms": 1.0,
                    "camus_diameters_ms": 6.25,
                },
                {
                    "name": "synthetic binary (chord rule) 224x224",
                    "shape": [224, 224],
                    "measure_lv_ms": 1.5,
                    "camus_diameters_ms": None,
                },
            ],
        },
    }


EXPECTED = """\
Measured on Test CPU 9000 (2 logical cores, 16 GiB RAM, native bf16: yes), Linux-6, \
Python 3.11.7, torch 2.13.0+cpu, numpy 2.4.6; 2026-01-02, `benchmarks/results/x.json`. \
All ratios are between figures of this one run.

**Model only** (`SegmentationEngine.forward_only`: the network alone, channels_last). \
Ratios to the plain eager fp32 one-image loop (20.0 images/s) and to the matmul throughput of \
the same precision on the whole machine (fp32 200 GFLOP/s, bf16 800 GFLOP/s); \
8.00 GFLOP per image.

| precision | processes x threads | batch | images/s | vs plain fp32 loop | of matmul peak |
|---|---|---|---|---|---|
| bf16 | 2x1 | 2 | 60.0 | 3.00x | 60 % |

**Flow end to end with the model** (bundled sample, bf16, 2 workers x 1 thread). Model-only \
for the same layout and precision: 60.0 images/s; plain eager fp32 one-process loop doing the \
same work: 20.0 images/s. Targets: at least 0.8x model-only and 3x the plain loop.

| run | patients | images/s | vs model-only | vs plain loop | peak RSS |
|---|---|---|---|---|---|
| cold local cluster, sample x8 | 400 | 48.0 | 0.80x | 2.40x | 1,900 MB |

**Orchestration** (`--segmentation gt`, synthetic cohorts on a 256 x 256 grid, 2 workers, \
chunk size 25; overhead = flow wall time - chunk compute / workers; target <= 10 %).

| patients | flow wall | patients/s | overhead | peak RSS, all processes | \
flow / Prefect API / largest worker | Parquet |
|---|---|---|---|---|---|---|
| 200 | 7.0 s | 28.6 | 1.40 s = 20 % | 1,100 MB | 400 / - / - MB | 0.07 MB |
| 2,000 | 60.0 s | 33.3 | 3.00 s = 5 % | 1,200 MB | 450 / 250 / 300 MB | 0.50 MB |

From 200 to 2,000 patients (x10): flow wall time x8.57, peak RSS x1.09 (target <= 1.2x).

**Measurements per image** (median of 200 calls, 1 thread): `measure_lv` with the single-plane \
and area-length volumes, and the CAMUS-compatible disk construction `camus_diameters` on the \
same LV mask.

| image | size | measure_lv + volumes | camus_diameters |
|---|---|---|---|
| synthetic labels 224x224 | 224x224 | 1.00 ms | 6.25 ms |
| synthetic binary (chord rule) 224x224 | 224x224 | 1.50 ms | - |

GPU: the check is ready (`benchmarks/gpu_check.sh`: CUDA labels against CPU labels, images/s \
for batches 1-512) but has not been run on a CUDA machine yet.
"""


def test_render_known_answer(perf_table):
    text = perf_table.render(small_results(), source="benchmarks/results/x.json")
    assert text == EXPECTED


def test_render_without_results_or_gpu(perf_table):
    assert perf_table.render(None) == f"{perf_table.NO_RESULTS}\n\n{perf_table.GPU_NOT_RUN}\n"


def test_render_gpu_table(perf_table):
    gpu = {
        "card": "NVIDIA H100",
        "torch": "2.13.0",
        "cuda": "12.8",
        "date": "2026-01-03",
        "cuda_vs_cpu_fp32": {
            "bf16": {"pixel_agreement": 0.99912, "identical_images": 0.5, "lv_dice": 0.93456}
        },
        "model_only_images_per_s": {"bf16": {"1": 900.0, "64": 12000.4, "512": 11000.0}},
        "segment_images_per_s": {"precision": "bf16", "batch": 256, "images_per_s": 3000.0},
    }
    lines = perf_table.gpu_lines(gpu)
    assert lines[0].startswith("**GPU** (NVIDIA H100, torch 2.13.0, CUDA 12.8; 2026-01-03)")
    assert "| bf16 | 99.912 % | 50.0 % | 0.9346 | 12,000 (batch 64) |" in lines
    assert lines[-1].endswith("3,000 images/s.")


def test_only_suite_files_are_picked(perf_table, tmp_path):
    def write(name: str, kind: str | None, started: str = "") -> None:
        data = {"kind": kind, "started_at": started} if kind else {"threads": 2}
        (tmp_path / name).write_text(json.dumps(data))

    suite = "echo-batch-suite"
    write("engine-2026-05-01-vm.json", None)
    write("flow-2026-05-01-vm.json", None)
    write("scale-2026-05-01-vm.json", "echo-batch-scale")
    write("2026-04-01-vm.json", suite)
    write("2026-04-02-vm.json", suite, "2026-04-02T08:00:00+00:00")
    write("2026-04-02-other.json", suite, "2026-04-02T09:00:00+00:00")
    write("2026-04-03-vm.json", "something-else")
    assert perf_table.newest_suite_results(tmp_path).name == "2026-04-02-other.json"
    assert [p.name for p in perf_table.suite_results(tmp_path)] == [
        "2026-04-01-vm.json",
        "2026-04-02-vm.json",
        "2026-04-02-other.json",
    ]
    assert perf_table.newest_gpu_results(tmp_path) is None
    write("gpu-2026-01-01-nvidia-a100.json", None)
    write("gpu-2026-02-01-nvidia-h100.json", None)
    assert perf_table.newest_gpu_results(tmp_path).name == "gpu-2026-02-01-nvidia-h100.json"


def test_replace_block(perf_table):
    text = f"# T\n\nbefore\n{perf_table.BEGIN}\nold\n{perf_table.END}\nafter\n"
    new = perf_table.replace_block(text, "new table\n")
    assert new == f"# T\n\nbefore\n{perf_table.BEGIN}\nnew table\n{perf_table.END}\nafter\n"
    assert perf_table.extract_block(new) == "new table\n"
    with pytest.raises(ValueError, match="markers"):
        perf_table.replace_block("no markers\n", "x")


def test_readme_table_matches_committed_results(perf_table):
    newest = perf_table.newest_suite_results()
    if newest is None:
        pytest.skip(
            "no suite results JSON (benchmarks/results/<YYYY-MM-DD>-<host>.json) is committed "
            "yet: `make bench` writes one and the README table"
        )
    actual = perf_table.extract_block((REPO / "README.md").read_text())
    assert actual == perf_table.readme_block(), (
        f"README.md performance tables differ from {newest.name}: run "
        "`.venv/bin/python benchmarks/perf_table.py --write-readme`"
    )


def test_render_dicom_reading_cost(perf_table):
    bench = {
        "patients": 6,
        "frames": 1111,
        "rendered_grid": [256, 256],
        "results": {
            "dicom_header_ms_per_file": 2.612,
            "dicom_jpeg_ms_per_frame": 2.353,
            "dicom_uncompressed_ms_per_frame": 1.1341,
            "nifti_gz_ms_per_frame": 1.265,
        },
        "bytes_per_frame": {"jpeg": 38630, "none": 353295, "nifti_gz": 31394},
    }
    text = perf_table.render({**small_results(), "dicom_read": bench}, source="x.json")
    assert (
        "**Reading cost per frame** (the same 1,111 synthetic loop frames, 256 x 256 px, "
        "6 patients x 2 views, best of the passes, 1 thread; a DICOM header alone 2.61 ms "
        "per file)." in text
    )
    assert "| DICOM, JPEG baseline q95 | 2.35 ms | 37.7 KiB |" in text
    assert "| DICOM, uncompressed | 1.13 ms | 345.0 KiB |" in text
    assert "| NIfTI (`.nii.gz`) | 1.26 ms | 30.7 KiB |" in text
    assert "Reading cost" not in perf_table.render(small_results(), source="x.json")
