"""Median time of all measurements of one image: ``measure_lv`` + volume formulas, and the
CAMUS-compatible disk construction (``camus_diameters``) on the same LV mask.

Cases: a camus224 expert mask at 224 x 224 (header spacing), the same mask brought to its
reconstructed native size (nearest neighbour, 0.308 mm, from geometry.csv), and a synthetic
half-ellipse LV with myocardium and atrium at both sizes (used when camus224 is absent), plus a
binary-only mask that exercises the chord rule. Targets: <= 2 ms at 224, <= 10 ms native.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_geometry.py [--data ../shared/camus224] [--repeat 200]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo_batch.domain import Label
from echo_batch.measure.camus_method import CamusFailure, camus_diameters, resize_nearest
from echo_batch.measure.landmarks import GeometryFailure, measure_lv
from echo_batch.measure.volumes import area_length_ml, simpson_single_plane_ml

logger = logging.getLogger("bench_geometry")

NATIVE_SPACING_MM = (0.308, 0.308)
SYNTHETIC_SIZES = (
    ((224, 224), (0.62, 0.76)),
    ((973, 590), (0.154, 0.308)),
    ((900, 700), (0.308, 0.308)),
)


@dataclass(frozen=True)
class Case:
    """One image to time.

    Attributes:
        name: label of the case in tables.
        labels: ``(H, W)`` uint8 label map (0 BG, 1 LV, 2 MYO, 3 LA) or a binary LV mask.
        spacing: ``(row_mm, col_mm)``.
        camus: also time the CAMUS-compatible method (False for the binary duplicates).
    """

    name: str
    labels: np.ndarray
    spacing: tuple[float, float]
    camus: bool = True


def default_root() -> Path:
    env = os.environ.get("ECHO_BATCH_CAMUS224")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "camus224"


def measure_all(labels: np.ndarray, spacing: tuple[float, float]) -> tuple[float, float]:
    """``measure_lv`` then the single-plane Simpson and area-length volumes, in mL."""
    geo = measure_lv(labels, spacing)
    if isinstance(geo, GeometryFailure):
        raise RuntimeError(geo.reason)
    return (
        simpson_single_plane_ml(geo.diameters_mm, geo.length_mm),
        area_length_ml(geo.area_mm2, geo.length_mm),
    )


def camus_all(labels: np.ndarray, spacing: tuple[float, float]) -> None:
    """The CAMUS-compatible disk construction on the LV of ``labels``."""
    result = camus_diameters(labels == Label.LV, spacing)
    if isinstance(result, CamusFailure):
        raise RuntimeError(result.reason)


def median_ms(
    labels: np.ndarray,
    spacing: tuple[float, float],
    repeat: int,
    fn: Callable[[np.ndarray, tuple[float, float]], object] = measure_all,
) -> float:
    """Median wall time of ``fn(labels, spacing)`` over ``repeat`` calls after one warm-up, ms."""
    fn(labels, spacing)  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(labels, spacing)
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


def camus224_cases(data: Path, patient: str) -> list[Case]:
    """The 4CH ED expert mask of ``patient`` at 224 and at its native size; [] without data."""
    gt = data / "database_nifti" / patient / f"{patient}_4CH_ED_gt.nii.gz"
    if not gt.is_file():
        return []
    from echo_batch.io.image import read_image

    image = read_image(gt, labels=True)
    cases = [Case(f"camus224 {patient} 4CH ED", image.array, image.spacing)]
    geometry = data / "geometry.csv"
    if not geometry.is_file():
        return cases
    with geometry.open() as f:
        row = next(r for r in csv.DictReader(f) if r["patient"] == patient and r["view"] == "4CH")
    native_shape = (int(row["orig_height"]), int(row["orig_width"]))
    native = resize_nearest(image.array, native_shape)
    cases.append(
        Case(f"camus224 {patient} 4CH ED, native (NN upsampled)", native, NATIVE_SPACING_MM)
    )
    return cases


def synthetic_cases() -> list[Case]:
    """Synthetic label maps and binary LV masks at 224 and at two native sizes."""
    cases = []
    for size, spacing in SYNTHETIC_SIZES:
        tag = f"{size[0]}x{size[1]}"
        cases.append(Case(f"synthetic labels {tag}", synthetic(size, spacing, True), spacing))
        cases.append(
            Case(
                f"synthetic binary (chord rule) {tag}",
                synthetic(size, spacing, False),
                spacing,
                camus=False,  # same LV as the labels case: same CAMUS work
            )
        )
    return cases


def run(data: Path | None = None, patient: str = "patient0001", repeat: int = 200) -> dict:
    """Time every case.

    Args:
        data: camus224 root (default: ``ECHO_BATCH_CAMUS224`` or ``../shared/camus224``);
            synthetic cases only when it is absent.
        patient: camus224 patient of the real cases.
        repeat: timed calls per figure (the median is reported).

    Returns:
        ``{"repeat", "cases": [{"name", "shape", "spacing_mm", "measure_lv_ms",
        "camus_diameters_ms"}]}``; ``camus_diameters_ms`` is None where not timed.
    """
    cases = camus224_cases(data or default_root(), patient) + synthetic_cases()
    rows = []
    for case in cases:
        row = {
            "name": case.name,
            "shape": list(case.labels.shape),
            "spacing_mm": list(case.spacing),
            "measure_lv_ms": median_ms(case.labels, case.spacing, repeat),
            "camus_diameters_ms": (
                median_ms(case.labels, case.spacing, repeat, camus_all) if case.camus else None
            ),
        }
        logger.debug("%s", row)
        rows.append(row)
    return {"repeat": repeat, "cases": rows}


def format_table(results: dict) -> str:
    """Plain-text table of :func:`run`'s result."""
    lines = [
        f"median of {results['repeat']} runs, 1 thread: measure_lv + single-plane + area-length"
        " | camus_diameters"
    ]
    for row in results["cases"]:
        h, w = row["shape"]
        camus = row["camus_diameters_ms"]
        camus_text = f"{camus:7.2f} ms" if camus is not None else "      -"
        lines.append(
            f"  {row['name']:<50} {h:4d}x{w:<4d} {row['measure_lv_ms']:7.2f} ms | {camus_text}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_root())
    parser.add_argument("--patient", default="patient0001")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import cv2

    cv2.setNumThreads(1)
    results = run(args.data, args.patient, args.repeat)
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
