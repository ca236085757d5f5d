"""Engine speed: model-only images/s per precision and batch size, against the plain eager fp32
one-image loop, with the matmul peak of each precision measured in the same run.

Model-only = ``SegmentationEngine.forward_only``: normalised grid batches in, logits out, the
network alone (no softmax, no labels, no resampling).

Usage: ``python benchmarks/bench_engine.py [--bundle DIR] [--seconds S] [--json OUT]``.
All figures of one run are comparable (same machine state); report ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from echo_batch.model.bundle import load_bundle
from echo_batch.model.inference import SegmentationEngine

logger = logging.getLogger("bench_engine")

PRECISIONS = ("fp32", "bf16")
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak_gflops(dtype: torch.dtype, seconds: float) -> float:
    """Best sustained matrix-product throughput at ``dtype``, GFLOP/s.

    The best of square GEMMs (``torch.mm``, sizes 512-2048) and of a large 1x1 convolution in
    channels_last (the same product through oneDNN, the library the model's convolutions use):
    on AMD CPUs the fp32 GEMM library may not reach the speed oneDNN reaches, and a ceiling below
    what the model itself does would give fractions above 1.
    """
    gemm = max(_gemm_gflops(dtype, seconds / 4, n) for n in (512, 1024, 2048))
    return max(gemm, _conv1x1_gflops(dtype, seconds / 4))


def _conv1x1_gflops(dtype: torch.dtype, seconds: float, channels: int = 512) -> float:
    """Sustained throughput of a ``channels -> channels`` 1x1 convolution on 64x64, GFLOP/s."""
    x = torch.randn(1, channels, 64, 64).to(dtype).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(channels, channels, 1, bias=False).to(dtype)
    conv = conv.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            conv(x)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            conv(x)
            count += 1
    return 2 * channels * channels * 64 * 64 * count / (time.perf_counter() - start) / 1e9


def _gemm_gflops(dtype: torch.dtype, seconds: float, n: int) -> float:
    """Sustained ``n x n`` GEMM throughput at ``dtype``, GFLOP/s."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def model_gflop_per_image(engine: SegmentationEngine) -> float:
    """Forward FLOPs of one image at the input grid, in GFLOP (multiply-add = 2)."""
    x = torch.zeros(1, 1, *engine.input_size)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        engine.model.float()(x.contiguous(memory_format=torch.channels_last))
    return counter.get_total_flops() / 1e9


def images_per_second(engine: SegmentationEngine, batch: int, seconds: float) -> float:
    """Model-only throughput: ``engine.forward_only`` on normalised grid batches of ``batch``."""
    rng = np.random.default_rng(0)
    grid = rng.standard_normal((batch, *engine.input_size)).astype(np.float32)
    engine.batch_size = batch
    engine.forward_only(grid)  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += engine.forward_only(grid)
    return count / (time.perf_counter() - start)


def plain_eager_fp32(bundle_dir: Path | None, seconds: float) -> float:
    """The baseline: NCHW fp32 eager model, one image at a time, no channels_last, no autocast."""
    model = load_bundle(bundle_dir).build()
    x = torch.randn(1, 1, 224, 224)
    with torch.no_grad():
        model(x)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(x).softmax(1)
            count += 1
    return count / (time.perf_counter() - start)


def engine_row(
    precision: str,
    layout: str,
    batch: int,
    images_per_s: float,
    *,
    baseline: float,
    gflop: float,
    peak_gflops: float,
) -> dict[str, object]:
    """One result row with its ratios to the baseline loop and to the matmul peak.

    Args:
        precision: "fp32" or "bf16".
        layout: process layout, e.g. ``"1x2"`` (processes x threads) or ``"2x1"``.
        batch: images per forward pass.
        images_per_s: measured throughput (all processes together).
        baseline: plain eager fp32 loop, images/s, same run.
        gflop: model GFLOP per image.
        peak_gflops: matmul peak of ``precision`` on the whole machine, same run.
    """
    return {
        "precision": precision,
        "layout": layout,
        "memory_format": "channels_last",
        "batch": batch,
        "images_per_s": images_per_s,
        "ratio_to_baseline": images_per_s / baseline,
        "gflops": images_per_s * gflop,
        "fraction_of_matmul_peak": images_per_s * gflop / peak_gflops,
    }


def run(
    bundle_dir: Path | None = None,
    seconds: float = 4.0,
    threads: int = 2,
    batches: Sequence[int] = (1, 4, 8, 16),
    precisions: Sequence[str] = PRECISIONS,
) -> dict:
    """Peaks, baseline and model-only rows of one process with ``threads`` torch threads.

    Sets the torch thread count of this process to ``threads``.

    Args:
        bundle_dir: model bundle (None: the bundled one).
        seconds: measuring time of each figure.
        threads: torch intra-op threads (the peaks are measured with the same count).
        batches: batch sizes of the model-only rows.
        precisions: subset of ``PRECISIONS``.

    Returns:
        ``threads``, ``torch``, ``matmul_peak_gflops`` per precision,
        ``baseline_fp32_eager_batch1_img_s``, ``model_gflop_per_image`` and ``engine`` rows
        (see :func:`engine_row`; layout ``1x<threads>``).
    """
    torch.set_num_threads(threads)
    bundle = load_bundle(bundle_dir)
    peaks = {p: matmul_peak_gflops(TORCH_DTYPES[p], seconds) for p in precisions}
    baseline = plain_eager_fp32(bundle_dir, seconds)
    gflop = model_gflop_per_image(SegmentationEngine(bundle, device="cpu", precision="fp32"))
    rows = []
    for precision in precisions:
        engine = SegmentationEngine(bundle, device="cpu", precision=precision)
        for batch in batches:
            ips = images_per_second(engine, batch, seconds)
            row = engine_row(
                precision,
                f"1x{threads}",
                batch,
                ips,
                baseline=baseline,
                gflop=gflop,
                peak_gflops=peaks[precision],
            )
            rows.append(row)
            log_row(row)
    logger.info("baseline (fp32 NCHW eager, batch 1): %.1f img/s; peaks %s", baseline, peaks)
    return {
        "threads": threads,
        "torch": torch.__version__,
        "matmul_peak_gflops": peaks,
        "baseline_fp32_eager_batch1_img_s": baseline,
        "model_gflop_per_image": gflop,
        "engine": rows,
    }


def log_row(row: dict) -> None:
    """Log one :func:`engine_row`."""
    logger.info(
        "%s %s batch %3d: %6.1f img/s  x%.2f baseline  %.0f GFLOP/s = %.0f %% of %s peak",
        row["precision"],
        row["layout"],
        row["batch"],
        row["images_per_s"],
        row["ratio_to_baseline"],
        row["gflops"],
        100 * row["fraction_of_matmul_peak"],
        row["precision"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = run(args.bundle, args.seconds, args.threads, args.batches)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
