"""Validate the EF methods on the expert masks of camus224 against its reference.csv.

Prints, for every method, the agreement with a reference column: MAE, bias, SD, Pearson r, share
exact / within 1, 3, 5 points, max, and the worst patients.

* ``camus`` (header spacing) vs ``cfg_ef`` and vs ``ef_gt_ref`` (also EDV/ESV exact matches);
* ``camus --native`` (masks upsampled to 0.308 mm) vs ``cfg_ef`` and ``ef_gt_ref_native_grid``;
* guideline biplane (per-instant h, :mod:`echo_batch.measure.landmarks`) vs
  ``ef_gt_ref_per_instant_h``.

Usage::

    python benchmarks/camus_reference.py [--data ../shared/camus224] [--native] [--limit N]

The data folder can also be given by ``ECHO_BATCH_CAMUS224``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

from echo_batch.domain import IMAGE_KEYS, ImageKey, Instant, View
from echo_batch.io.image import read_image
from echo_batch.measure.camus_method import NATIVE_CAMUS_SPACING_MM, CamusFailure, camus_biplane
from echo_batch.measure.landmarks import GeometryFailure, measure_lv
from echo_batch.measure.volumes import (
    biplane_disk_height_mm,
    ejection_fraction_pct,
    simpson_biplane_ml,
)


def default_root() -> Path:
    env = os.environ.get("ECHO_BATCH_CAMUS224")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "camus224"


def agreement(name: str, pred: dict[str, float], ref: dict[str, float], worst: int = 10) -> None:
    """Print the agreement table row and the worst patients of ``pred`` against ``ref``."""
    ids = sorted(p for p in pred if p in ref and np.isfinite(pred[p]))
    a = np.array([pred[p] for p in ids])
    b = np.array([ref[p] for p in ids])
    d = a - b
    r = float(np.corrcoef(a, b)[0, 1])
    ad = np.abs(d)
    within = " ".join(f"<={k} {np.mean(ad <= k):6.1%}" for k in (1, 3, 5))
    print(
        f"{name:<44} n={len(ids):3d} MAE {ad.mean():5.2f} bias {d.mean():+5.2f}"
        f" SD {d.std(ddof=1):5.2f} r {r:.3f} exact {np.mean(ad < 0.5):6.1%} {within}"
        f" max {ad.max():.1f}"
    )
    order = np.argsort(-ad, kind="stable")[:worst]
    print("    worst: " + ", ".join(f"{ids[k]} {b[k]:g}->{a[k]:.4g}" for k in order))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_root())
    parser.add_argument("--native", action="store_true", help="also run the 0.308 mm grid variant")
    parser.add_argument("--limit", type=int, default=None, help="first N patients only")
    args = parser.parse_args(argv)
    ref_path = args.data / "reference.csv"
    if not ref_path.is_file():
        print(f"no {ref_path}: set --data or ECHO_BATCH_CAMUS224", file=sys.stderr)
        return 2
    with ref_path.open() as f:
        rows = {row["patient"]: row for row in csv.DictReader(f)}
    ids = sorted(rows)[: args.limit]
    camus, camus_native, guideline = {}, {}, {}
    match_ef = match_vol = 0
    failures: list[str] = []
    t_camus = t_native = t_guide = 0.0
    for pid in ids:
        masks, spacings = {}, {}
        for key in IMAGE_KEYS:
            image = read_image(
                args.data / "database_nifti" / pid / f"{pid}_{key}_gt.nii.gz", labels=True
            )
            masks[key], spacings[key] = image.array, image.spacing
        t0 = time.perf_counter()
        res = camus_biplane(masks, spacings)
        t_camus += time.perf_counter() - t0
        if isinstance(res, CamusFailure):
            failures.append(f"{pid} camus: {res.reason}")
        else:
            camus[pid] = float(res.ef_pct)
            match_ef += res.ef_pct == int(rows[pid]["ef_gt_ref"])
            match_vol += (res.edv_ml, res.esv_ml) == (
                int(rows[pid]["edv_gt_ref"]),
                int(rows[pid]["esv_gt_ref"]),
            )
        if args.native:
            t0 = time.perf_counter()
            res = camus_biplane(masks, spacings, native_spacing_mm=NATIVE_CAMUS_SPACING_MM)
            t_native += time.perf_counter() - t0
            if isinstance(res, CamusFailure):
                failures.append(f"{pid} camus native: {res.reason}")
            else:
                camus_native[pid] = float(res.ef_pct)
        t0 = time.perf_counter()
        geo = {key: measure_lv(masks[key], spacings[key]) for key in IMAGE_KEYS}
        bad = [f"{k}: {g.reason}" for k, g in geo.items() if isinstance(g, GeometryFailure)]
        if bad:
            failures.append(f"{pid} guideline: {'; '.join(bad)}")
        else:
            vol = {}
            for instant in (Instant.ED, Instant.ES):
                g2 = geo[ImageKey(View.A2C, instant)]
                g4 = geo[ImageKey(View.A4C, instant)]
                h = biplane_disk_height_mm(g2.length_mm, g4.length_mm)
                vol[instant] = simpson_biplane_ml(g2.diameters_mm, g4.diameters_mm, h)
            guideline[pid] = ejection_fraction_pct(vol[Instant.ED], vol[Instant.ES])
        t_guide += time.perf_counter() - t0

    def col(name: str) -> dict[str, float]:
        return {p: float(rows[p][name]) for p in ids}

    n = len(ids)
    print(f"{n} patients from {args.data}")
    agreement("CAMUS method, header spacing vs cfg_ef", camus, col("cfg_ef"))
    agreement("CAMUS method, header spacing vs ef_gt_ref", camus, col("ef_gt_ref"))
    print(f"    EF equal to ef_gt_ref: {match_ef}/{n}; EDV and ESV equal: {match_vol}/{n}")
    if args.native:
        agreement("CAMUS method, 0.308 mm grid vs cfg_ef", camus_native, col("cfg_ef"))
        agreement(
            "CAMUS method, 0.308 mm grid vs ef_gt_ref_native_grid",
            camus_native,
            col("ef_gt_ref_native_grid"),
        )
    agreement(
        "guideline biplane vs ef_gt_ref_per_instant_h", guideline, col("ef_gt_ref_per_instant_h")
    )
    agreement("guideline biplane vs cfg_ef", guideline, col("cfg_ef"))
    print(f"failures: {len(failures)}" + "".join(f"\n    {f}" for f in failures))
    print(
        f"time per patient (4 images): CAMUS {1e3 * t_camus / n:.1f} ms,"
        + (f" CAMUS 0.308 mm grid {1e3 * t_native / n:.1f} ms," if args.native else "")
        + f" guideline {1e3 * t_guide / n:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
