"""Engine speed: model-only images/s per precision and batch size, against the plain eager fp32
one-image loop, with the matmul peak of each precision measured in the same run.

Usage: ``python benchmarks/bench_engine.py [--bundle DIR] [--seconds S] [--json OUT]``.
All figures of one run are comparable (same machine state); report ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from echo_batch.model.bundle import load_bundle
from echo_batch.model.inference import SegmentationEngine

logger = logging.getLogger("bench_engine")


def matmul_peak_gflops(dtype: torch.dtype, seconds: float) -> float:
    """Best sustained square GEMM throughput at ``dtype`` over sizes 512, 1024 and 2048."""
    return max(_gemm_gflops(dtype, seconds / 3, n) for n in (512, 1024, 2048))


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
    """Model-only throughput (normalised grid images in, probabilities out)."""
    rng = np.random.default_rng(0)
    grid = rng.standard_normal((batch, *engine.input_size)).astype(np.float32)
    engine.batch_size = batch
    engine.probabilities(grid)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        engine.probabilities(grid)
        count += batch
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.bundle)
    results: dict[str, object] = {"threads": args.threads, "torch": torch.__version__}
    peaks = {
        "fp32": matmul_peak_gflops(torch.float32, args.seconds),
        "bf16": matmul_peak_gflops(torch.bfloat16, args.seconds),
    }
    results["matmul_peak_gflops"] = peaks
    baseline = plain_eager_fp32(args.bundle, args.seconds)
    results["baseline_fp32_eager_batch1_img_s"] = baseline
    engines = {p: SegmentationEngine(bundle, device="cpu", precision=p) for p in ("fp32", "bf16")}
    gflop = model_gflop_per_image(engines["fp32"])
    engines["fp32"] = SegmentationEngine(bundle, device="cpu", precision="fp32")
    results["model_gflop_per_image"] = gflop
    rows = []
    for precision, engine in engines.items():
        for batch in args.batches:
            ips = images_per_second(engine, batch, args.seconds)
            rows.append(
                {
                    "precision": precision,
                    "layout": "channels_last",
                    "batch": batch,
                    "images_per_s": ips,
                    "ratio_to_baseline": ips / baseline,
                    "gflops": ips * gflop,
                    "fraction_of_matmul_peak": ips * gflop / peaks[precision],
                }
            )
            logger.info(
                "%s batch %3d: %6.1f img/s  x%.2f baseline  %.0f GFLOP/s = %.0f %% of %s peak",
                precision,
                batch,
                ips,
                ips / baseline,
                ips * gflop,
                100 * ips * gflop / peaks[precision],
                precision,
            )
    results["engine"] = rows
    logger.info("baseline (fp32 NCHW eager, batch 1): %.1f img/s; peaks %s", baseline, peaks)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
