"""GPU check: CUDA labels against CPU labels on the bundled sample, and CUDA images/s.

Run through ``benchmarks/gpu_check.sh`` on a machine with a CUDA GPU. Steps (about 2-4 minutes):

1. CPU fp32 labels of the 200 bundled images are the reference.
2. CUDA fp32 (TF32 off), bf16 and fp16 autocast: share of pixels and of images whose labels equal
   the CPU reference, and the mean LV Dice of each against the expert masks.
3. Model-only images/s (normalised grid batches from host memory to logits on the device) for
   batch sizes 1-512 at each precision, channels_last, and ``engine.segment`` images/s (host
   preprocessing and labels back on the host included) at the default CUDA batch.

Writes ``<out>/gpu-<date>-<card>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

from echo_batch.domain import Label
from echo_batch.io.discovery import discover
from echo_batch.io.image import read_image
from echo_batch.model.inference import SegmentationEngine
from echo_batch.model.preprocess import to_grid
from echo_batch.qc.metrics import dice

logger = logging.getLogger("gpu_check")

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "camus224-test"
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
PRECISIONS = ("fp32", "bf16", "fp16")


def load_sample() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The 200 bundled still frames and their expert label maps."""
    images, gts = [], []
    for ref in discover(SAMPLE).patients:
        for files in ref.images.values():
            images.append(read_image(files.image, patient_dir=ref.folder).array)
            gts.append(read_image(files.gt, patient_dir=ref.folder, labels=True).array)
    return images, gts


def agreement(labels, reference, gts) -> dict[str, float]:
    """Pixel and image agreement with the reference labels, and LV Dice against experts."""
    pixels = np.mean([(a == b).mean() for a, b in zip(labels, reference, strict=True)])
    same = np.mean([np.array_equal(a, b) for a, b in zip(labels, reference, strict=True)])
    lv = np.mean([dice(a, g, Label.LV) for a, g in zip(labels, gts, strict=True)])
    return {"pixel_agreement": float(pixels), "identical_images": float(same), "lv_dice": float(lv)}


def model_only(engine: SegmentationEngine, grid: np.ndarray, batch: int, seconds: float) -> float:
    """Images/s of the network alone: host grid batches in, logits on the device out."""
    engine.batch_size = batch
    n = max(batch * 4, 64)
    data = np.resize(grid, (n, *grid.shape[1:]))  # real images, repeated
    engine.forward_only(data[: batch * 2])  # warm-up (cuDNN algorithm choice)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += engine.forward_only(data)
    return count / (time.perf_counter() - start)


def segment_rate(engine: SegmentationEngine, images: list[np.ndarray], seconds: float) -> float:
    """Images/s of ``engine.segment`` (host preprocessing and labels back included)."""
    engine.segment(images[:8])
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += len(engine.segment(images))
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--seconds", type=float, default=1.5, help="per throughput figure")
    parser.add_argument("--max-batch", type=int, default=512)
    parser.add_argument(
        "--precisions",
        default=",".join(PRECISIONS),
        help="comma-separated CUDA precisions to check (default: all three)",
    )
    args = parser.parse_args()
    precisions = tuple(p for p in args.precisions.split(",") if p)
    if not set(precisions) <= set(PRECISIONS):
        parser.error(f"--precisions: choose among {', '.join(PRECISIONS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device visible to torch")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    card = torch.cuda.get_device_name(0)
    report: dict[str, object] = {
        "date": dt.date.today().isoformat(),
        "card": card,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "host": platform.node(),
        "cpu_threads": torch.get_num_threads(),
    }
    images, gts = load_sample()
    logger.info("%s: %d images; CPU fp32 reference labels", card, len(images))
    cpu = SegmentationEngine.from_path(device="cpu", precision="fp32", batch_size=8)
    reference = [s.labels for s in cpu.segment(images)]
    report["cpu_fp32"] = agreement(reference, reference, gts)

    labels_check: dict[str, dict[str, float]] = {}
    engines: dict[str, SegmentationEngine] = {}
    for precision in precisions:
        engine = SegmentationEngine.from_path(device="cuda", precision=precision)
        engines[precision] = engine
        labels = [s.labels for s in engine.segment(images)]
        labels_check[precision] = agreement(labels, reference, gts)
        logger.info("cuda %s vs cpu fp32: %s", precision, labels_check[precision])
    report["cuda_vs_cpu_fp32"] = labels_check

    grid = np.stack([to_grid(img, cpu.input_size) for img in images])
    rates: dict[str, dict[int, float]] = {p: {} for p in precisions}
    for precision, engine in engines.items():
        for batch in (b for b in BATCHES if b <= args.max_batch):
            rates[precision][batch] = model_only(engine, grid, batch, args.seconds)
            logger.info(
                "model-only %s batch %d: %.0f images/s", precision, batch, rates[precision][batch]
            )
    report["model_only_images_per_s"] = rates
    default = SegmentationEngine.from_path(device="cuda")
    report["segment_images_per_s"] = {
        "precision": default.precision,
        "batch": default.batch_size,
        "images_per_s": segment_rate(default, images, args.seconds * 2),
    }
    report["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20

    args.out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", card).strip("-").lower()
    path = args.out / f"gpu-{report['date']}-{slug}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    logger.info("wrote %s", path)


def markdown(report: dict) -> str:
    """Markdown tables of one report."""
    rates = report["model_only_images_per_s"]
    lines = [
        f"GPU check on {report['card']} (torch {report['torch']}, CUDA {report['cuda']})",
        "",
        "| precision | pixels = CPU fp32 | images identical | LV Dice vs experts |",
        "|---|---|---|---|",
    ]
    for precision, row in report["cuda_vs_cpu_fp32"].items():
        lines.append(
            f"| {precision} | {100 * row['pixel_agreement']:.3f} % | "
            f"{100 * row['identical_images']:.1f} % | {row['lv_dice']:.4f} |"
        )
    lines.append(f"| CPU fp32 (reference) | - | - | {report['cpu_fp32']['lv_dice']:.4f} |")
    batches = sorted({b for r in rates.values() for b in r}, key=int)
    lines += ["", "Model-only images/s", "", "| batch | " + " | ".join(rates) + " |"]
    lines.append("|---" * (len(rates) + 1) + "|")
    for b in batches:
        lines.append(f"| {b} | " + " | ".join(f"{rates[p][b]:.0f}" for p in rates) + " |")
    seg = report["segment_images_per_s"]
    lines += [
        "",
        f"engine.segment ({seg['precision']}, batch {seg['batch']}): "
        f"{seg['images_per_s']:.0f} images/s; "
        f"peak GPU memory {report['peak_gpu_memory_mb']:.0f} MB",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
