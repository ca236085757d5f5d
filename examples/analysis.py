"""Analyse a run in pandas: EF agreement by image quality, EF category and QC result.

Reads only the Parquet files of ``OUT`` (no echo-batch import), so it doubles as an example of the
output contract. Usage::

    python examples/analysis.py OUT

With a cfg EF (CAMUS), the CAMUS-compatible EF is compared with it; otherwise the guideline EF is
compared with the same method on the expert masks. Differences are measured - reference, in EF
points; limits of agreement are bias +- 1.96 SD.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def agreement(frame: pd.DataFrame) -> pd.Series:
    """n, bias, SD, limits of agreement, MAE and Pearson r of ``measured - reference``."""
    diff = frame["measured"] - frame["reference"]
    n = len(diff)
    sd = diff.std(ddof=1) if n > 1 else np.nan
    return pd.Series(
        {
            "n": n,
            "bias": diff.mean(),
            "sd": sd,
            "loa_low": diff.mean() - 1.96 * sd,
            "loa_high": diff.mean() + 1.96 * sd,
            "mae": diff.abs().mean(),
            "r": frame["measured"].corr(frame["reference"]) if n > 2 else np.nan,
        }
    )


def ef_category(ef: pd.Series) -> pd.Series:
    """Heart-failure category of an EF (reduced <= 40, mildly reduced 40-50, preserved >= 50)."""
    labels = np.select([ef <= 40, ef < 50], ["reduced", "mildly_reduced"], "preserved")
    return pd.Series(labels, index=ef.index).where(ef.notna(), "unknown")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="OUT folder of an echo-batch run")
    args = parser.parse_args(argv)
    patients = pd.read_parquet(args.out / "patients.parquet")
    images = pd.read_parquet(args.out / "images.parquet")

    measured, reference = "ef_camus_pct", "ef_ref_pct"
    if patients[reference].notna().sum() < 2:
        measured, reference = "ef_pct", "ef_gt_pct"
    pairs = patients.assign(measured=patients[measured], reference=patients[reference]).dropna(
        subset=["measured", "reference"]
    )
    pairs = pairs.assign(
        image_quality=pairs["image_quality"].fillna("unknown"),
        reference_category=ef_category(pairs["reference"]),
        flagged=~pairs["qc_pass"],
    )
    pd.set_option("display.width", 120)
    pd.set_option("display.precision", 2)
    print(f"{measured} vs {reference}, EF points ({len(pairs)} of {len(patients)} patients)\n")
    print(agreement(pairs).to_frame("all").T, "\n")
    columns = ["measured", "reference"]
    for by in ("image_quality", "reference_category", "flagged"):
        print(f"by {by}:")
        print(pairs.groupby(by)[columns].apply(agreement), "\n")

    flags = patients["qc_flags"].explode().dropna().value_counts()
    print("patients per QC flag:")
    print(flags.to_string() if len(flags) else "(none)", "\n")
    if images["dice_lv"].notna().any():
        metrics = ["dice_lv", "dice_myo", "dice_la", "hd_lv_mm", "hd95_lv_mm", "mad_lv_mm"]
        print("segmentation against the expert masks (mean):")
        print(images.groupby(["view", "instant"])[metrics].mean())
    return 0


if __name__ == "__main__":
    sys.exit(main())
