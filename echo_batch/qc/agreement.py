"""Agreement statistics between measured and reference EF (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from echo_batch.store.records import PatientRecord

# (name, measured column, reference column) of every agreement a run reports
EF_COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("ef_camus_pct_vs_cfg", "ef_camus_pct", "ef_ref_pct"),
    ("ef_camus_gt_pct_vs_cfg", "ef_camus_gt_pct", "ef_ref_pct"),
    ("ef_pct_vs_ef_gt_pct", "ef_pct", "ef_gt_pct"),
    ("ef_pct_vs_cfg", "ef_pct", "ef_ref_pct"),
)


def agreement(pred: Sequence[float | None], ref: Sequence[float | None]) -> dict[str, float] | None:
    """Agreement over the pairs where both values are finite.

    Args:
        pred: measured values (e.g. EF, percent).
        ref: reference values, same order.

    Returns:
        ``n``, ``mae``, ``bias`` (mean of pred - ref), ``sd`` (of the differences), Pearson ``r``
        and the share within 1/3/5 units; None with fewer than 2 pairs.
    """
    pairs = np.array(
        [(p, r) for p, r in zip(pred, ref, strict=True) if p is not None and r is not None],
        dtype=float,
    ).reshape(-1, 2)
    pairs = pairs[np.isfinite(pairs).all(axis=1)]
    if len(pairs) < 2:
        return None
    diff = pairs[:, 0] - pairs[:, 1]
    varies = np.std(pairs, axis=0).min() > 0
    r = float(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]) if varies else float("nan")
    return {
        "n": len(pairs),
        "mae": float(np.abs(diff).mean()),
        "bias": float(diff.mean()),
        "sd": float(diff.std(ddof=1)),
        "r": r,
        **{f"within_{k}": float((np.abs(diff) <= k).mean()) for k in (1, 3, 5)},
    }


def ef_agreements(patients: Sequence[PatientRecord]) -> dict[str, dict[str, float] | None]:
    """Every EF comparison of :data:`EF_COMPARISONS` over a list of patient records."""
    return {
        name: agreement([getattr(p, m) for p in patients], [getattr(p, r) for p in patients])
        for name, m, r in EF_COMPARISONS
    }


def summary_line(name: str, stats: dict[str, Any]) -> str:
    """One line of agreement figures for logs and terminal summaries."""
    return (
        f"{name}: n {stats['n']}, MAE {stats['mae']:.2f}, bias {stats['bias']:+.2f}, "
        f"SD {stats['sd']:.2f}, r {stats['r']:.3f}, within 3 pts {100 * stats['within_3']:.0f} %"
    )
