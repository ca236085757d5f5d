"""Median time of all measurements of one image: ``measure_lv`` + volume formulas.

Cases: a camus224 expert mask at 224 x 224 (header spacing), the same mask brought to its
reconstructed native size (nearest neighbour, 0.308 mm, from geometry.csv), and a synthetic
half-ellipse LV with myocardium and atrium at both sizes (used when camus224 is absent), plus a
binary-only mask that exercises the chord rule. Targets: <= 2 ms at 224, <= 10 ms native.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_geometry.py [--data ../shared/camus224] [--repeat 200]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

import numpy as np

from echo_batch.camus_method import resize_nearest
from echo_batch.domain import Label
from echo_batch.geometry import GeometryFailure, measure_lv
from echo_batch.volumes import area_length_ml, simpson_single_plane_ml


def default_root() -> Path:
    env = os.environ.get("ECHO_BATCH_CAMUS224")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "camus224"


def measure_all(labels: np.ndarray, spacing: tuple[float, float]) -> tuple[float, float]:
    geo = measure_lv(labels, spacing)
    if isinstance(geo, GeometryFailure):
        raise RuntimeError(geo.reason)
    return (
        simpson_single_plane_ml(geo.diameters_mm, geo.length_mm),
        area_length_ml(geo.area_mm2, geo.length_mm),
    )


def median_ms(labels: np.ndarray, spacing: tuple[float, float], repeat: int) -> float:
    measure_all(labels, spacing)  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        measure_all(labels, spacing)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def synthetic(shape: tuple[int, int], spacing: tuple[float, float], labels: bool) -> np.ndarray:
    """Half-ellipse LV (a = 22 mm, c = 55 mm) with an 8 mm myocardium cap and an atrium below."""
    yy, xx = np.meshgrid(
        np.arange(shape[0]) * spacing[0], np.arange(shape[1]) * spacing[1], indexing="ij"
    )
    v = shape[0] * spacing[0] * 0.6 - yy
    w = xx - shape[1] * spacing[1] * 0.5
    out = np.zeros(shape, np.uint8)
    if labels:
        out[(v >= 0) & ((w / 30) ** 2 + (v / 63) ** 2 <= 1)] = Label.MYO
        out[(v < 0) & ((w / 18) ** 2 + ((v + 22) / 22) ** 2 <= 1)] = Label.LA
    out[(v >= 0) & ((w / 22) ** 2 + (v / 55) ** 2 <= 1)] = Label.LV
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_root())
    parser.add_argument("--patient", default="patient0001")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)
    cases: list[tuple[str, np.ndarray, tuple[float, float]]] = []
    gt = args.data / "database_nifti" / args.patient / f"{args.patient}_4CH_ED_gt.nii.gz"
    if gt.is_file():
        from echo_batch.io import read_image

        image = read_image(gt, labels=True)
        cases.append((f"camus224 {args.patient} 4CH ED", image.array, image.spacing))
        with (args.data / "geometry.csv").open() as f:
            geo = next(
                r for r in csv.DictReader(f) if r["patient"] == args.patient and r["view"] == "4CH"
            )
        native_shape = (int(geo["orig_height"]), int(geo["orig_width"]))
        cases.append(
            (
                "  same, native size (NN upsampled)",
                resize_nearest(image.array, native_shape),
                (0.308, 0.308),
            )
        )
    for size, spacing in (
        ((224, 224), (0.62, 0.76)),
        ((973, 590), (0.154, 0.308)),
        ((900, 700), (0.308, 0.308)),
    ):
        cases.append(
            (f"synthetic labels {size[0]}x{size[1]}", synthetic(size, spacing, True), spacing)
        )
        cases.append(
            (
                f"synthetic binary (chord rule) {size[0]}x{size[1]}",
                synthetic(size, spacing, False),
                spacing,
            )
        )
    print(f"median of {args.repeat} runs, measure_lv + single-plane + area-length, 1 thread:")
    for name, labels, spacing in cases:
        ms = median_ms(labels, spacing, args.repeat)
        print(f"  {name:<44} {labels.shape[0]:4d}x{labels.shape[1]:<4d} {ms:7.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
