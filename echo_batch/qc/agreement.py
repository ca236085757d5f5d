"""Agreement statistics between measured and reference EF (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from echo_batch.store.records import PatientRecord


@dataclass(frozen=True)
class Comparison:
    """A measured column compared with a reference column of ``patients.parquet``.

    Attributes:
        name: short identifier (``run.json`` and report keys, file names, anchors).
        measured: measured column.
        reference: reference column.
        label: what is compared, in words.
        unit: unit of both columns.
    """

    name: str
    measured: str
    reference: str
    label: str
    unit: str = "%"


# Every EF agreement a run, an evaluation and the report give; the first two rank the report's
# patients (cfg EF when the data carry it, else the expert-mask EF).
EF_COMPARISONS: tuple[Comparison, ...] = (
    Comparison("ef_camus_vs_cfg", "ef_camus_pct", "ef_ref_pct", "CAMUS-compatible EF vs cfg EF"),
    Comparison(
        "ef_vs_expert", "ef_pct", "ef_gt_pct", "guideline EF vs the same method on expert masks"
    ),
    Comparison(
        "ef_camus_vs_expert",
        "ef_camus_pct",
        "ef_camus_gt_pct",
        "CAMUS-compatible EF vs the same method on expert masks",
    ),
    Comparison("ef_vs_cfg", "ef_pct", "ef_ref_pct", "guideline EF vs cfg EF"),
    Comparison(
        "expert_camus_vs_cfg",
        "ef_camus_gt_pct",
        "ef_ref_pct",
        "expert masks, CAMUS-compatible EF vs cfg EF (floor of the data)",
    ),
)


# The per-study measurements beside EF that a run also computes on the expert masks (model masks
# against expert masks, same formulas).
STUDY_COMPARISONS: tuple[Comparison, ...] = (
    Comparison(
        "la_volume_vs_expert",
        "la_volume_ml",
        "la_volume_gt_ml",
        "LA volume (biplane disks) vs expert masks",
        "mL",
    ),
    Comparison(
        "la_volume_al_vs_expert",
        "la_volume_al_ml",
        "la_volume_al_gt_ml",
        "LA volume (biplane area-length) vs expert masks",
        "mL",
    ),
    Comparison(
        "gls_contour_vs_expert",
        "gls_contour_pct",
        "gls_contour_gt_pct",
        "contour GLS vs expert masks",
        "strain points",
    ),
    Comparison("fac_2ch_vs_expert", "fac_2ch_pct", "fac_2ch_gt_pct", "FAC 2CH vs expert masks"),
    Comparison("fac_4ch_vs_expert", "fac_4ch_pct", "fac_4ch_gt_pct", "FAC 4CH vs expert masks"),
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
        c.name: agreement(
            [getattr(p, c.measured) for p in patients], [getattr(p, c.reference) for p in patients]
        )
        for c in EF_COMPARISONS
    }


def summary_line(name: str, stats: dict[str, Any]) -> str:
    """One line of agreement figures for logs and terminal summaries."""
    return (
        f"{name}: n {stats['n']}, MAE {stats['mae']:.2f}, bias {stats['bias']:+.2f}, "
        f"SD {stats['sd']:.2f}, r {stats['r']:.3f}, within 3 pts {100 * stats['within_3']:.0f} %"
    )
