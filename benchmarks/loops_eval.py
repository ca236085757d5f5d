"""ED/ES detection and loop EF on the semi-real CAMUS-224 loops and on the one real CAMUS loop.

Develop on ``validation/``, report on ``testing/`` (``../shared/camus224-loops``, see its README):

- ED and ES right: within one frame of the truth, or a frame with the same expert LV area (near
  ED and ES the LV changes by less than a pixel between frames);
- loop EF: the biplane EF from the detected frames against the EF that the same model gives on
  the real stills of the same patients (``../shared/camus224``), within 2 points;
- real loop: ``../shared/camus224/original/patient0500_2CH_half_sequence.nii.gz`` (15 frames, cfg
  ED 1, ES 15): detected frames against the cfg's, and its single-plane 2CH EF against the model's
  2CH EF on the annotated stills of patient0500.

Usage: ``python benchmarks/loops_eval.py --split validation [--segmentation model] [--json F]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from echo_batch.domain import FramesMode, SegmentationSource
from echo_batch.io.discovery import discover
from echo_batch.run.chunk import model_id_for
from echo_batch.run.options import ChunkOptions
from echo_batch.run.serial import process_serially

SHARED = Path(__file__).resolve().parents[2] / "shared"
LOOPS = SHARED / "camus224-loops"
CAMUS224 = SHARED / "camus224"
REAL_LOOP = CAMUS224 / "original" / "patient0500_2CH_half_sequence.nii.gz"
EF_TOLERANCE_PTS = 2.0
REAL_EF_TOLERANCE_PTS = 5.0


def _truth(split: str) -> dict[str, dict[str, object]]:
    with (LOOPS / split / "truth.csv").open() as fh:
        return {row["patient_id"]: row for row in csv.DictReader(fh)}


def frame_right(detected: int | None, true: int, lv_px: list[int]) -> bool:
    """Within one frame of the truth, or the same expert LV area as the true frame."""
    if detected is None:
        return False
    return abs(detected - true) <= 1 or lv_px[detected] == lv_px[true]


def evaluate_split(split: str, segmentation: SegmentationSource) -> dict[str, object]:
    """Detection and EF agreement on one split of the semi-real loops."""
    truth = _truth(split)
    options = ChunkOptions(segmentation=segmentation, threads=2, frames=FramesMode.DETECTED)
    model_id = model_id_for(options)
    loops = discover(LOOPS / split)
    t0 = time.perf_counter()
    result = process_serially(loops.patients, options, model_id)
    loop_seconds = time.perf_counter() - t0
    n_frames = len(result.frames)
    ids = {p.patient_id for p in result.patients}
    stills_refs = [p for p in discover(CAMUS224).patients if p.patient_id in ids]
    t0 = time.perf_counter()
    stills = {
        p.patient_id: p
        for p in process_serially(
            stills_refs, ChunkOptions(segmentation=segmentation), model_id
        ).patients
    }
    stills_seconds = time.perf_counter() - t0
    right, total, misses = 0, 0, []
    ef_diffs = []
    for patient in result.patients:
        row = truth[patient.patient_id]
        for view in ("2ch", "4ch"):
            lv_px = [int(v) for v in str(row[f"lv_px_{view}"]).split()]
            for instant in ("ed", "es"):
                true = int(row[f"{instant}_frame_{view}"])
                detected = getattr(patient, f"{instant}_frame_{view}")
                total += 1
                if frame_right(detected, true, lv_px):
                    right += 1
                else:
                    misses.append(f"{patient.patient_id} {view} {instant}: {detected} vs {true}")
        still = stills.get(patient.patient_id)
        if patient.ef_pct is not None and still is not None and still.ef_pct is not None:
            ef_diffs.append(patient.ef_pct - still.ef_pct)
        else:
            ef_diffs.append(np.nan)
    diffs = np.asarray(ef_diffs)
    within = np.abs(diffs) <= EF_TOLERANCE_PTS
    return {
        "split": split,
        "segmentation": segmentation.value,
        "patients": len(result.patients),
        "frames": n_frames,
        "ed_es_right": right,
        "ed_es_total": total,
        "ed_es_right_share": right / total if total else None,
        "misses": misses,
        "ef_within_2_share": float(np.mean(within)),
        "ef_diff_mean": float(np.nanmean(diffs)),
        "ef_diff_mae": float(np.nanmean(np.abs(diffs))),
        "ef_diff_max_abs": float(np.nanmax(np.abs(diffs))),
        "ef_missing": int(np.isnan(diffs).sum()),
        "loop_seconds": round(loop_seconds, 2),
        "loop_frames_per_s": round(n_frames / loop_seconds, 1),
        "stills_seconds": round(stills_seconds, 2),
    }


def evaluate_real_loop(segmentation: SegmentationSource) -> dict[str, object]:
    """The one real CAMUS loop, with its cfg copied beside it."""
    pid = "patient0500"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / pid
        folder.mkdir()
        shutil.copy(REAL_LOOP, folder / REAL_LOOP.name)
        shutil.copy(CAMUS224 / "database_nifti" / pid / "Info_2CH.cfg", folder / "Info_2CH.cfg")
        options = ChunkOptions(segmentation=SegmentationSource.MODEL, threads=2, frames="detected")
        model_id = model_id_for(options)
        (loop,) = process_serially(discover(Path(tmp)).patients, options, model_id).patients
    (ref,) = [p for p in discover(CAMUS224).patients if p.patient_id == pid]
    (still,) = process_serially([ref], ChunkOptions(segmentation=segmentation), model_id).patients
    return {
        "detected": [loop.ed_frame_2ch, loop.es_frame_2ch],
        "annotated": [loop.ed_frame_2ch_annotated, loop.es_frame_2ch_annotated],
        "ef_2ch_loop": loop.ef_2ch_pct,
        "ef_2ch_stills": still.ef_2ch_pct,
        "ef_2ch_diff": None
        if loop.ef_2ch_pct is None or still.ef_2ch_pct is None
        else loop.ef_2ch_pct - still.ef_2ch_pct,
        "status": loop.status,
        "error": loop.error,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("validation", "testing"), default="validation")
    parser.add_argument("--segmentation", choices=("model", "gt"), default="model")
    parser.add_argument("--real", action="store_true", help="also the real patient0500 loop")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    figures = {"loops": evaluate_split(args.split, SegmentationSource(args.segmentation))}
    if args.real:
        figures["real"] = evaluate_real_loop(SegmentationSource.MODEL)
    text = json.dumps(figures, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
