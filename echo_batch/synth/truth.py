"""Agreement of a ground-truth run on a synthetic cohort with its analytic truth table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

VOLUME_TOLERANCE = 0.03  # relative
EF_TOLERANCE_PTS = 2.0


def compare_to_truth(patients: pd.DataFrame, truth: pd.DataFrame) -> dict[str, Any]:
    """Relative volume errors and EF errors of measured patients against the truth table.

    Args:
        patients: ``patients.parquet`` of a ``--segmentation gt`` run.
        truth: ``truth.csv`` written by ``echo-batch synth``.

    Returns:
        Dict with, per quantity, the error distribution and the share within tolerance:
        ``biplane_volume`` (EDV and ESV pooled, relative), ``ef_pts`` (biplane EF, points),
        ``single_plane_volume`` (both views, both instants, relative, against the analytic
        single-plane limits).
    """
    joined = patients.set_index("patient_id").join(
        truth.set_index("patient_id"), suffixes=("", "_true")
    )
    bi = np.concatenate(
        [
            (joined.edv_ml / joined.edv_ml_true - 1).to_numpy(),
            (joined.esv_ml / joined.esv_ml_true - 1).to_numpy(),
        ]
    )
    ef = (joined.ef_pct - joined.ef_pct_true).to_numpy()
    single = np.concatenate(
        [
            (joined[f"{p}_{v}_ml"] / joined[f"{p}_{v}_ml_true"] - 1).to_numpy()
            for p in ("edv", "esv")
            for v in ("2ch", "4ch")
        ]
    )

    def stats(values: np.ndarray, tol: float) -> dict[str, float]:
        finite = values[np.isfinite(values)]
        return {
            "n": len(values),
            "n_missing": int(len(values) - len(finite)),
            "mean": float(finite.mean()),
            "mean_abs": float(np.abs(finite).mean()),
            "p95_abs": float(np.percentile(np.abs(finite), 95)),
            "max_abs": float(np.abs(finite).max()),
            "share_within": float((np.abs(values) <= tol).mean()),
            "tolerance": tol,
        }

    return {
        "patients": len(joined),
        "biplane_volume": stats(bi, VOLUME_TOLERANCE),
        "ef_pts": stats(ef, EF_TOLERANCE_PTS),
        "single_plane_volume": stats(single, VOLUME_TOLERANCE),
    }
