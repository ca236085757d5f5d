"""The bundled CAMUS sample through DICOM: the same numbers as through NIfTI.

Every patient's ED and ES stills become one 2-frame DICOM file per view
(:func:`echo_batch.synth.dicom_convert.camus_stills_to_dicom`: a tissue region carrying the
NIfTI spacing in cm), uncompressed and JPEG baseline at quality 95, listed by a manifest with
``ed_frame 0, es_frame 1``. The three cohorts run with the bundled model (``--serial``), and the
DICOM rows are compared with the NIfTI rows:

- uncompressed: EF, volumes and CAMUS EF equal within 0.01 (issue 15 target: all patients);
- JPEG 95: EF within 1 point for at least 95 % of the patients (issue 15 target);
- seconds per run (reading DICOM through the manifest against reading NIfTI folders).

Usage: ``python benchmarks/dicom_eval.py [--sample examples/camus224-test] [--json F]``.
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
import pandas as pd

from echo_batch.run.options import RunOptions
from echo_batch.run.serial import run_cohort
from echo_batch.synth.dicom_convert import camus_stills_to_dicom

REPO = Path(__file__).resolve().parents[1]
COMPARED = ("ef_pct", "edv_ml", "esv_ml", "ef_2ch_pct", "ef_4ch_pct", "ef_camus_pct")


def convert(sample: Path, folder: Path, quality: int | None) -> Path:
    """The sample's stills as DICOM under ``folder``, and the manifest listing them."""
    folder.mkdir(parents=True)
    rows = [
        row
        for patient in sorted((sample / "database_nifti").iterdir())
        if patient.is_dir()
        for row in camus_stills_to_dicom(patient, folder, jpeg_quality=quality)
    ]
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def timed_run(data: Path, out: Path) -> tuple[pd.DataFrame, float]:
    start = time.perf_counter()
    run_cohort(RunOptions(data, out, report=False))
    seconds = time.perf_counter() - start
    return pd.read_parquet(out / "patients.parquet").set_index("patient_id").sort_index(), seconds


def compare(rows: pd.DataFrame, reference: pd.DataFrame) -> dict[str, object]:
    both = reference["ef_pct"].notna() & rows["ef_pct"].notna()
    diff = (rows.loc[both, "ef_pct"] - reference.loc[both, "ef_pct"]).abs()
    largest = {
        c: float(np.nanmax((rows[c] - reference[c]).abs().to_numpy(float))) for c in COMPARED
    }
    return {
        "patients": len(rows),
        "with_ef_both": int(both.sum()),
        "ef_missing_only_here": int((reference["ef_pct"].notna() & rows["ef_pct"].isna()).sum()),
        "largest_abs_difference": largest,
        "within_0_01_all_columns_pct": 100.0
        * float(
            np.mean(
                [
                    all(
                        abs(rows.at[p, c] - reference.at[p, c]) <= 0.01
                        or (pd.isna(rows.at[p, c]) and pd.isna(reference.at[p, c]))
                        for c in COMPARED
                    )
                    for p in reference.index
                ]
            )
        ),
        "ef_within_1_pt_pct": 100.0 * float((diff <= 1.0).sum()) / max(int(both.sum()), 1),
        "ef_mean_abs_difference": float(diff.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=REPO / "examples" / "camus224-test")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        nifti = work / "nifti"
        shutil.copytree(args.sample / "database_nifti", nifti / "database_nifti")
        reference, seconds = timed_run(nifti, work / "out-nifti")
        figures: dict[str, object] = {"sample": str(args.sample), "nifti_seconds": seconds}
        for name, quality in (("uncompressed", None), ("jpeg95", 95)):
            manifest = convert(args.sample, work / name, quality)
            rows, seconds = timed_run(manifest, work / f"out-{name}")
            figures[name] = {**compare(rows, reference), "seconds": seconds}
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
