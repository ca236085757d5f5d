"""Per-study measurements (issue 19): phantoms against their truth, model against expert masks,
and the ranges of a whole cohort beside published reference values.

Three parts, each with the code a run uses (``process_chunk``; the formulas of
:mod:`echo_batch.measure.study`):

- **phantoms**: synthetic patients (``plan_cohort``) rendered at their native spacing (0.15-0.35
  mm pixels) and on 224 x 224 grids, measured on their label maps, against the closed forms of
  :class:`echo_batch.synth.shapes.LVShape`: LA volume (biplane disks against the true volume,
  area-length against the formula on the analytic areas and length, single-plane against its
  limit; relative error, %), LA length (mm), contour GLS, FAC and long-axis shortening (points).
  Issue 19 targets: LA volume within 3 %, GLS and FAC within 0.5 points.
- **sample**: the bundled sample (``examples/camus224-test``, 50 CAMUS patients) with the bundled
  model and with the expert masks (``--segmentation gt``); each measurement's agreement (n, bias,
  SD, limits of agreement, MAE, r) model against expert, with the same formulas. Target: LA
  volume r >= 0.9.
- **cohort**: the whole of ``../shared/camus224`` (500 patients) with the expert masks:
  distributions (n, mean, SD, median, IQR, 2.5-97.5th percentiles), for the LA also without the
  atria cut by the sector (``la_cut``), beside :data:`echo_batch.clinical.STUDY_REFERENCE_VALUES`;
  and the derivation of the ``la_cut`` threshold: the length of the LA border on the sector's
  edge on the ES expert masks of the training and validation splits.

Usage: ``python benchmarks/study_measures.py [--phantoms 40] [--json F] [--skip-model]``
(about 3 minutes on 2 idle cores, most of it the model on the sample).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from echo_batch.clinical import STUDY_REFERENCE_VALUES
from echo_batch.domain import ImageKey, Instant, SegmentationSource, View
from echo_batch.io.discovery import discover
from echo_batch.io.image import read_image
from echo_batch.measure.atrium import measure_la
from echo_batch.measure.landmarks import measure_lv
from echo_batch.measure.study import study_measures
from echo_batch.qc.agreement import agreement
from echo_batch.qc.atrium import la_edge_mm
from echo_batch.qc.flags import QC_THRESHOLDS, QCFlag
from echo_batch.run.chunk import process_chunk
from echo_batch.run.options import ChunkOptions
from echo_batch.synth import plan_cohort, rasterise_view

logger = logging.getLogger("study_measures")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "camus224-test"
CAMUS224 = REPO.parent / "shared" / "camus224"
MEASURES = (
    "la_volume_ml",
    "la_volume_al_ml",
    "la_volume_2ch_ml",
    "la_volume_4ch_ml",
    "la_length_2ch_mm",
    "la_length_4ch_mm",
    "gls_contour_pct",
    "gls_contour_2ch_pct",
    "gls_contour_4ch_pct",
    "fac_2ch_pct",
    "fac_4ch_pct",
    "long_axis_shortening_2ch_pct",
    "long_axis_shortening_4ch_pct",
    "ef_pct",
)
TARGETS = {"la_volume_rel_pct": 3.0, "gls_pts": 0.5, "fac_pts": 0.5, "sample_la_volume_r": 0.9}


def _stats(errors: list[float]) -> dict[str, float]:
    e = np.asarray(errors, float)
    return {
        "n": int(e.size),
        "mean": float(e.mean()),
        "sd": float(e.std(ddof=1)),
        "max_abs": float(np.abs(e).max()),
        "p95_abs": float(np.percentile(np.abs(e), 95)),
    }


def phantoms(n_patients: int, seed: int, side: int | None) -> dict[str, object]:
    """Measured against analytic values on ``n_patients`` phantoms (``side``: square grid)."""
    errors: dict[str, list[float]] = {
        k: []
        for k in (
            "la_volume_rel_pct",
            "la_volume_al_rel_pct",
            "la_volume_single_rel_pct",
            "la_length_mm",
            "gls_pts",
            "fac_pts",
            "long_axis_shortening_pts",
        )
    }
    for params, _ in plan_cohort(n_patients, seed=seed, max_side=side):  # same shapes any side
        geometries, spacings, atria = {}, {}, {}
        for view in View:
            spacing = params.setup(view).spacing
            for instant in Instant:
                labels, _ = rasterise_view(params, view, instant)
                key = ImageKey(view, instant)
                lv = measure_lv(labels, spacing)
                geometries[key], spacings[key] = lv, spacing
                if instant == Instant.ES:
                    atria[view] = measure_la(labels, spacing, lv)
        m = study_measures(geometries, spacings, atria)
        ed, es = params.ed, params.es
        errors["la_volume_rel_pct"].append(100 * (m.la_volume_ml / es.la_volume_ml - 1))
        al = 0.85 * es.la_area_mm2(View.A2C) * es.la_area_mm2(View.A4C) / es.la_length_mm / 1000
        errors["la_volume_al_rel_pct"].append(100 * (m.la_volume_al_ml / al - 1))
        for view in View:
            tag = view.value.lower()
            single = getattr(m, f"la_volume_{tag}_ml") / es.la_single_plane_volume_ml(view)
            errors["la_volume_single_rel_pct"].append(100 * (single - 1))
            errors["la_length_mm"].append(getattr(m, f"la_length_{tag}_mm") - es.la_length_mm)
            gls = 100 * (es.border_length_mm(view) / ed.border_length_mm(view) - 1)
            errors["gls_pts"].append(getattr(m, f"gls_contour_{tag}_pct") - gls)
            fac = 100 * (1 - es.section_area_mm2(view) / ed.section_area_mm2(view))
            errors["fac_pts"].append(getattr(m, f"fac_{tag}_pct") - fac)
            las = 100 * (1 - es.length_mm / ed.length_mm)
            errors["long_axis_shortening_pts"].append(
                getattr(m, f"long_axis_shortening_{tag}_pct") - las
            )
    return {
        "patients": n_patients,
        "seed": seed,
        "grid": "native" if side is None else f"{side}x{side}",
        "errors": {k: _stats(v) for k, v in errors.items()},
    }


def _run(root: Path, segmentation: SegmentationSource, only: set[str] | None = None):
    refs = [r for r in discover(root).patients if only is None or r.patient_id in only]
    started = time.perf_counter()
    result = process_chunk(refs, ChunkOptions(segmentation=segmentation))
    seconds = time.perf_counter() - started
    patients = pd.DataFrame([dataclasses.asdict(p) for p in result.patients])
    return patients.set_index("patient_id"), seconds


def sample_agreement() -> dict[str, object]:
    """Model masks against expert masks on the bundled sample, every measurement."""
    model, model_s = _run(SAMPLE, SegmentationSource.MODEL)
    expert, expert_s = _run(SAMPLE, SegmentationSource.GT)
    rows = {}
    for column in MEASURES:
        stats = agreement(model[column].tolist(), expert.loc[model.index, column].tolist())
        if stats is not None:
            stats["loa_low"] = stats["bias"] - 1.96 * stats["sd"]
            stats["loa_high"] = stats["bias"] + 1.96 * stats["sd"]
        rows[column] = stats
    # the run's own *_gt columns give the same pairs
    same = np.allclose(model["la_volume_gt_ml"], expert.loc[model.index, "la_volume_ml"])
    return {
        "patients": len(model),
        "seconds": {"model": round(model_s, 1), "expert": round(expert_s, 1)},
        "gt_columns_equal_expert_run": bool(same),
        "agreement": rows,
        "la_cut_share_model": _share(model, QCFlag.LA_CUT),
        "la_cut_share_expert": _share(expert, QCFlag.LA_CUT),
    }


def _share(patients: pd.DataFrame, flag: QCFlag) -> float:
    measured = patients["la_volume_ml"].notna()
    return float(patients.loc[measured, "qc_flags"].map(lambda f: flag.value in f).mean())


def _distribution(values: pd.Series) -> dict[str, float] | None:
    x = pd.to_numeric(values, errors="coerce").dropna().to_numpy(float)
    if x.size == 0:
        return None
    q = np.percentile(x, [2.5, 25, 50, 75, 97.5])
    return {
        "n": int(x.size),
        "mean": float(x.mean()),
        "sd": float(x.std(ddof=1)),
        "p2_5": float(q[0]),
        "p25": float(q[1]),
        "median": float(q[2]),
        "p75": float(q[3]),
        "p97_5": float(q[4]),
    }


def cohort_ranges() -> dict[str, object]:
    """Distributions on the whole camus224 cohort's expert masks, and the la_cut derivation."""
    patients, seconds = _run(CAMUS224, SegmentationSource.GT)
    cut = patients["qc_flags"].map(lambda f: QCFlag.LA_CUT.value in f)
    by_sex: dict[str, dict[str, object]] = {}
    from echo_batch.io.cfg import parse_cfg

    sex = pd.Series(
        {
            pid: parse_cfg(CAMUS224 / "database_nifti" / pid / "Info_2CH.cfg").sex
            for pid in patients.index
        }
    )
    for s in ("F", "M"):
        chosen = patients[sex == s]
        by_sex[s] = {
            "la_volume_ml": _distribution(chosen["la_volume_ml"]),
            "la_volume_ml_not_cut": _distribution(chosen.loc[~cut[sex == s], "la_volume_ml"]),
        }
    return {
        "patients": len(patients),
        "seconds": round(seconds, 1),
        "status": patients["status"].value_counts().to_dict(),
        "distributions": {c: _distribution(patients[c]) for c in MEASURES},
        "distributions_la_not_cut": {
            c: _distribution(patients.loc[~cut, c]) for c in MEASURES if c.startswith("la_")
        },
        "la_by_sex": by_sex,
        "la_cut_share": _share(patients, QCFlag.LA_CUT),
        "la_length_mismatch_share": _share(patients, QCFlag.LA_LENGTH_MISMATCH),
        "references": [dataclasses.asdict(r) for r in STUDY_REFERENCE_VALUES],
        "la_cut_derivation": la_cut_derivation(),
    }


def la_cut_derivation() -> dict[str, object]:
    """LA border on the sector's edge, ES expert masks of the training + validation splits."""
    split = CAMUS224 / "database_split"
    ids = {
        pid
        for name in ("subgroup_training.txt", "subgroup_validation.txt")
        for pid in (split / name).read_text().split()
    }
    values = []
    for pid in sorted(ids):
        for view in View:
            stem = CAMUS224 / "database_nifti" / pid / f"{pid}_{view.value}_ES"
            image = read_image(Path(f"{stem}.nii.gz"))
            labels = read_image(Path(f"{stem}_gt.nii.gz")).array
            values.append(la_edge_mm(labels, image.array, image.spacing))
    v = np.asarray(values)
    limit = QC_THRESHOLDS[QCFlag.LA_CUT].value
    return {
        "images": int(v.size),
        "share_none": float((v == 0).mean()),
        "share_above_limit": float((v > limit).mean()),
        "share_between": float(((v > 0) & (v <= limit)).mean()),
        "median_above_limit_mm": float(np.median(v[v > limit])),
        "limit_mm": limit,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phantoms", type=int, default=40)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    result: dict[str, object] = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "python": sys.version.split()[0],
        "targets": TARGETS,
        "phantoms": [phantoms(args.phantoms, args.seed, side) for side in (None, 224)],
    }
    if not args.skip_model and (SAMPLE / "database_nifti").is_dir():
        result["sample"] = sample_agreement()
    if (CAMUS224 / "database_nifti").is_dir():
        result["cohort"] = cohort_ranges()
    result["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
