"""Derive and check the QC thresholds on the CAMUS-224 expert masks.

For every expert label map of ``DATA`` (default ``../shared/camus224``, or ``ECHO_BATCH_CAMUS224``):

1. the anatomical measurements of :func:`echo_batch.qc.flags.image_qc`, summarised per split
   (max, 99.5th and 99th percentile, min/max of length and area): the thresholds in
   ``QC_THRESHOLDS`` were set from the **training + validation** rows only;
2. the false-flag rate of the current thresholds on the expert masks, per split and on all 500
   patients, per image and per patient (blocking flags, and every flag);
3. the detection rate of the corruptions of ``benchmarks/qc_corruptions.py`` (every image of every
   patient, one draw per kind, fixed seed), per kind and split;
4. the patient-level distributions (2CH/4CH long-axis mismatch, single-plane EF difference);
5. the time per image of :func:`image_qc` + :func:`image_flags` (the work QC adds to the chunk path;
   ``measure_lv`` runs anyway).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/qc_thresholds.py [--data DIR] [--json OUT.json] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from qc_corruptions import CORRUPTIONS

from echo_batch.domain import IMAGE_KEYS, View
from echo_batch.io.cfg import parse_cfg
from echo_batch.io.image import read_image
from echo_batch.measure.landmarks import ViewGeometry, measure_lv
from echo_batch.measure.patient import patient_volumes
from echo_batch.qc.flags import (
    QC_THRESHOLDS,
    QCFlag,
    image_flags,
    image_qc,
    is_blocking,
    length_mismatch,
    patient_flags,
)
from echo_batch.store.records import ImageRecord

logger = logging.getLogger("qc_thresholds")
FEATURES = (
    "lv_extra_share",
    "lv_hole_mm2",
    "lv_background_mm",
    "apex_background_share",
    "la_gap_mm",
    "lv_length_mm",
    "lv_area_mm2",
)


def default_root() -> Path:
    env = os.environ.get("ECHO_BATCH_CAMUS224")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "camus224"


def read_splits(root: Path) -> dict[str, str]:
    """Patient id -> split name from ``database_split``."""
    splits = {}
    for name in ("training", "validation", "testing"):
        path = root / "database_split" / f"subgroup_{name}.txt"
        for pid in path.read_text().split():
            splits[pid] = name
    return splits


def _stats(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    return {
        "n": int(values.size),
        "n_inf": int((~np.isfinite(values)).sum()),
        "min": float(finite.min()),
        "p0.5": float(np.percentile(finite, 0.5)),
        "p99": float(np.percentile(finite, 99)),
        "p99.5": float(np.percentile(finite, 99.5)),
        "max": float(finite.max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_root())
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--limit", type=int, default=None, help="first N patients only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    splits = read_splits(args.data)
    ids = sorted(splits)[: args.limit]
    rng = np.random.default_rng(args.seed)
    features: dict[str, list[dict]] = defaultdict(list)
    image_flagged: dict[str, Counter] = defaultdict(Counter)
    patient_flagged: dict[str, Counter] = defaultdict(Counter)
    detected: dict[tuple[str, str], list[bool]] = defaultdict(list)
    undetected: dict[str, list[str]] = defaultdict(list)
    mismatch: dict[str, list[float]] = defaultdict(list)
    view_ef: dict[str, list[float]] = defaultdict(list)
    qc_seconds: list[float] = []
    for pid in ids:
        split = splits[pid]
        folder = args.data / "database_nifti" / pid
        records, geometries = [], {}
        for key in IMAGE_KEYS:
            image = read_image(folder / f"{pid}_{key}_gt.nii.gz", labels=True)
            labels, spacing = image.array, image.spacing
            geo = measure_lv(labels, spacing)
            t0 = time.perf_counter()
            qc = image_qc(labels, spacing, geo)
            flags = image_flags(qc)
            qc_seconds.append(time.perf_counter() - t0)
            features[split].append({f: getattr(qc, f) for f in FEATURES})
            image_flagged[split]["images"] += 1
            image_flagged[split]["any"] += bool(flags)
            image_flagged[split]["blocking"] += is_blocking(flags)
            image_flagged[split].update(flags)
            status = "ok" if isinstance(geo, ViewGeometry) else "failed"
            if isinstance(geo, ViewGeometry):
                geometries[key] = geo
            records.append(
                ImageRecord(pid, key.view.value, key.instant.value, status, qc_flags=flags)
            )
            if not isinstance(geo, ViewGeometry):
                continue
            for kind, corrupt in CORRUPTIONS.items():
                bad = corrupt(labels, spacing, geo, rng)
                bad_geo = measure_lv(bad, spacing)
                hit = not isinstance(bad_geo, ViewGeometry) or is_blocking(
                    image_flags(image_qc(bad, spacing, bad_geo))
                )
                detected[(kind, split)].append(hit)
                if not hit:
                    undetected[kind].append(f"{pid}_{key}")
        cfg = parse_cfg(folder / "Info_2CH.cfg")
        volumes = patient_volumes(geometries)
        pflags = patient_flags(volumes, records, geometries, cfg.image_quality)
        mismatch[split].append(length_mismatch(geometries) or 0.0)
        ef_2ch, ef_4ch = (volumes.single[v][2] for v in (View.A2C, View.A4C))
        if ef_2ch is not None and ef_4ch is not None:
            view_ef[split].append(abs(ef_2ch - ef_4ch))
        patient_flagged[split]["patients"] += 1
        patient_flagged[split]["any"] += bool(pflags)
        patient_flagged[split]["blocking"] += is_blocking(pflags)
        patient_flagged[split].update(pflags)

    result: dict[str, object] = {"data": str(args.data), "patients": len(ids)}
    trainval = [row for s in ("training", "validation") for row in features[s]]
    result["features_trainval"] = {
        f: _stats(np.array([row[f] for row in trainval if row[f] is not None], float))
        for f in FEATURES
    }
    result["features_testing"] = {
        f: _stats(np.array([row[f] for row in features["testing"] if row[f] is not None], float))
        for f in FEATURES
        if features["testing"]
    }
    trainval_view_ef = np.array(view_ef["training"] + view_ef["validation"])
    result["view_ef_difference_trainval"] = {
        **_stats(trainval_view_ef),
        "p95": float(np.percentile(trainval_view_ef, 95)),
        "p97.5": float(np.percentile(trainval_view_ef, 97.5)),
        "share_over_threshold": float(
            np.mean(trainval_view_ef > QC_THRESHOLDS[QCFlag.VIEW_EF_DISAGREEMENT].value)
        ),
    }
    result["length_mismatch_share_over_10pct"] = {
        s: float(np.mean(np.array(v) > QC_THRESHOLDS[QCFlag.LENGTH_MISMATCH].value))
        for s, v in mismatch.items()
    }

    def rates(counts: dict[str, Counter], unit: str) -> dict[str, dict[str, float]]:
        total = Counter()
        for c in counts.values():
            total.update(c)
        out = {}
        for name, c in [*counts.items(), ("all", total)]:
            n = c[unit]
            out[name] = {"n": n, **{k: v / n for k, v in c.items() if k != unit}}
        return out

    result["expert_image_flag_rate"] = rates(image_flagged, "images")
    result["expert_patient_flag_rate"] = rates(patient_flagged, "patients")
    by_kind: dict[str, dict[str, float]] = defaultdict(dict)
    for (kind, split), hits in detected.items():
        by_kind[kind][split] = float(np.mean(hits))
    for kind in CORRUPTIONS:
        every = [h for (k, _), v in detected.items() if k == kind for h in v]
        by_kind[kind]["all"] = float(np.mean(every))
        by_kind[kind]["undetected_examples"] = undetected[kind][:10]
    all_hits = [h for v in detected.values() for h in v]
    test_hits = [h for (_, s), v in detected.items() if s == "testing" for h in v]
    result["corruption_detection"] = {
        "by_kind": by_kind,
        "all": float(np.mean(all_hits)),
        "testing": float(np.mean(test_hits)) if test_hits else None,
        "n": len(all_hits),
    }
    ms = 1000 * np.array(qc_seconds)
    result["qc_ms_per_image"] = {
        "median": float(np.median(ms)),
        "mean": float(ms.mean()),
        "p95": float(np.percentile(ms, 95)),
    }
    text = json.dumps(result, indent=2)
    logger.info("%s", text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
