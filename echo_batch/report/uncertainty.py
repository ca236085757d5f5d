"""The report's section on uncertainty (runs with ``--uncertainty``): does the SD between the
ensemble's members tell a reader which EFs to check?

For each EF with an SD column and a reference, the patients are split at the upper quartile of
the SD: the mean absolute error of that quarter against the other three, the share of patients
whose error lies within 2 SD, and a scatter of error against SD. Numbers
(:func:`uncertainty_summary`), the figure (:func:`uncertainty_plot`) and the HTML section
(:func:`uncertainty_section`); :mod:`echo_batch.report.build` puts them in the page and in
``summary.json`` under ``uncertainty``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echo_batch.qc.agreement import EF_COMPARISONS, Comparison
from echo_batch.report import html
from echo_batch.report.stats import paired_values

SD_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ef_camus_vs_cfg", "ef_camus_pct_sd"),
    ("ef_vs_cfg", "ef_pct_sd"),
    ("ef_camus_vs_expert", "ef_camus_pct_sd"),
    ("ef_vs_expert", "ef_pct_sd"),
)
"""(comparison name in ``qc.agreement.EF_COMPARISONS``, the SD column of its measured EF)."""
TOP_SHARE = 0.25  # the patients with the largest SDs, compared with the rest
MIN_PATIENTS = 8  # fewer paired patients: no quarter worth comparing


def _comparison(name: str) -> Comparison:
    return next(c for c in EF_COMPARISONS if c.name == name)


def error_and_sd(patients: pd.DataFrame, comparison: Comparison, sd_column: str) -> pd.DataFrame:
    """Patients with a measured EF, its reference and an SD: ``patient_id``, ``error``, ``sd``."""
    if sd_column not in patients:
        return pd.DataFrame(columns=["patient_id", "error", "sd"])
    pairs = paired_values(patients, comparison)
    sd = pd.to_numeric(patients[sd_column], errors="coerce").reindex(pairs.index)
    frame = pd.DataFrame({"patient_id": pairs["patient_id"], "error": pairs["diff"], "sd": sd})
    return frame[np.isfinite(frame["sd"])]


def sd_ranking(error: np.ndarray, sd: np.ndarray) -> dict[str, float] | None:
    """How well the SD ranks the errors.

    Args:
        error: ``(n,)`` measured - reference, EF points.
        sd: ``(n,)`` SD between the members, EF points.

    Returns:
        ``n``, ``mean_sd``, ``top_quarter_mae`` (the ``ceil(n / 4)`` largest SDs),
        ``rest_mae``, their ``ratio``, ``within_2sd`` (share with ``|error| <= 2 sd``) and the
        Spearman correlation of ``|error|`` with ``sd``; None below :data:`MIN_PATIENTS`.
    """
    error, sd = np.abs(np.asarray(error, float)), np.asarray(sd, float)
    n = len(error)
    if n < MIN_PATIENTS:
        return None
    order = np.argsort(-sd, kind="stable")
    top = order[: int(np.ceil(n * TOP_SHARE))]
    rest = order[len(top) :]
    rest_mae = float(error[rest].mean())
    ranks_sd = pd.Series(sd).rank().to_numpy()
    ranks_err = pd.Series(error).rank().to_numpy()
    spearman = float(np.corrcoef(ranks_sd, ranks_err)[0, 1]) if np.ptp(sd) > 0 else float("nan")
    return {
        "n": n,
        "mean_sd": float(sd.mean()),
        "top_quarter_mae": float(error[top].mean()),
        "rest_mae": rest_mae,
        "ratio": float(error[top].mean() / rest_mae) if rest_mae > 0 else float("inf"),
        "within_2sd": float(np.mean(error <= 2 * sd)),
        "spearman": spearman,
    }


def uncertainty_summary(patients: pd.DataFrame) -> dict[str, Any] | None:
    """Per comparison with SDs, :func:`sd_ranking`; None when the run has no SD at all."""
    found = {
        name: sd_ranking(frame["error"].to_numpy(), frame["sd"].to_numpy())
        for name, column in SD_COLUMNS
        if len(frame := error_and_sd(patients, _comparison(name), column))
    }
    found = {k: v for k, v in found.items() if v is not None}
    if not found:
        return None
    members = pd.to_numeric(patients.get("n_members"), errors="coerce")
    return {
        "members": None if members is None or members.isna().all() else int(members.max()),
        "comparisons": found,
    }


def uncertainty_plot(patients: pd.DataFrame, summary: dict[str, Any], path: Path) -> Path | None:
    """Absolute EF error against the members' SD, one panel per comparison of the summary."""
    from echo_batch.report.plots import figure, save

    names = list(summary["comparisons"])[:2]
    if not names:
        return None
    fig = figure(4.6 * len(names), 3.6)
    axes = fig.subplots(1, len(names), squeeze=False).ravel()
    columns = dict(SD_COLUMNS)
    for ax, name in zip(axes, names, strict=True):
        comparison = _comparison(name)
        frame = error_and_sd(patients, comparison, columns[name])
        sd, err = frame["sd"].to_numpy(float), frame["error"].abs().to_numpy(float)
        ax.scatter(sd, err, s=10, color="#2c7fb8", alpha=0.7)
        top = max(float(sd.max(initial=0.0)), 0.5)
        ax.plot([0, top], [0, 2 * top], color="#b30000", ls="--", lw=1, label="|error| = 2 SD")
        ax.set(xlabel="EF SD between members (points)", ylabel="|EF error| (points)")
        ax.set_title(comparison.label, fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
    return save(fig, path)


def uncertainty_section(summary: dict[str, Any], figure: str | None) -> str:
    """The page's section.

    Args:
        summary: :func:`uncertainty_summary` of the run.
        figure: path of :func:`uncertainty_plot`'s PNG relative to the page, or None.
    """
    rows = [
        [
            html.fmt(_comparison(name).label),
            str(stats["n"]),
            html.fmt(stats["mean_sd"], 2),
            html.fmt(stats["top_quarter_mae"], 2),
            html.fmt(stats["rest_mae"], 2),
            html.fmt(stats["ratio"], 2),
            html.pct(stats["within_2sd"]),
            html.fmt(stats["spearman"], 2),
        ]
        for name, stats in summary["comparisons"].items()
    ]
    parts = [
        html.paragraph(
            f"Each image was segmented by {summary['members'] or 'several'} members (the model "
            "on small zoom and intensity variants of the image); the EF is measured on each "
            "member's masks and its SD between members is the EF's uncertainty. When the "
            "quarter with the largest SD has a clearly larger error than the rest, the SD "
            "tells which EFs to check."
        ),
        html.table(
            [
                "comparison",
                "n",
                "mean SD",
                "MAE, top SD quarter",
                "MAE, other patients",
                "ratio",
                "within 2 SD",
                "Spearman |error| vs SD",
            ],
            rows,
        ),
    ]
    if figure is not None:
        parts.append(html.figure(figure, "Absolute EF error against the members' EF SD"))
    return html.section("uncertainty", "Uncertainty", *parts)
