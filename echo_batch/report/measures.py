"""The report's section on the per-study measurements beside EF: their distributions beside
published reference values, and their agreement with the same formulas on the expert masks.

Numbers (:func:`measures_summary`), the histogram figure (:func:`measures_plot`) and the HTML
section (:func:`measures_section`); :mod:`echo_batch.report.build` puts them in the page and in
``summary.json`` under ``measures``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echo_batch.clinical import STUDY_REFERENCE_VALUES, ReferenceValue
from echo_batch.qc.agreement import STUDY_COMPARISONS
from echo_batch.qc.flags import QCFlag
from echo_batch.report import html
from echo_batch.report.stats import agreement_stats

MEASURES: tuple[tuple[str, str], ...] = (
    ("la_volume_ml", "LA volume, biplane disks (mL)"),
    ("la_volume_al_ml", "LA volume, biplane area-length (mL)"),
    ("la_volume_2ch_ml", "LA volume, single-plane 2CH (mL)"),
    ("la_volume_4ch_ml", "LA volume, single-plane 4CH (mL)"),
    ("gls_contour_pct", "contour GLS, mean of 2CH and 4CH (%)"),
    ("gls_contour_2ch_pct", "contour GLS 2CH (%)"),
    ("gls_contour_4ch_pct", "contour GLS 4CH (%)"),
    ("fac_2ch_pct", "FAC 2CH (%)"),
    ("fac_4ch_pct", "FAC 4CH (%)"),
    ("long_axis_shortening_2ch_pct", "long-axis shortening 2CH (%)"),
    ("long_axis_shortening_4ch_pct", "long-axis shortening 4CH (%)"),
)
"""``patients.parquet`` columns of the section, with their labels (units in brackets)."""
PLOTTED = (
    "la_volume_ml",
    "la_volume_al_ml",
    "gls_contour_pct",
    "fac_2ch_pct",
    "fac_4ch_pct",
    "long_axis_shortening_4ch_pct",
)


def distribution(values: pd.Series | Sequence[float | None]) -> dict[str, float] | None:
    """``n, mean, sd, median, p25, p75, min, max`` of the finite values (None when there are none;
    ``sd`` None for one value)."""
    x = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return None
    p25, median, p75 = np.percentile(x, [25, 50, 75])
    return {
        "n": int(x.size),
        "mean": float(x.mean()),
        "sd": float(x.std(ddof=1)) if x.size > 1 else None,
        "median": float(median),
        "p25": float(p25),
        "p75": float(p75),
        "min": float(x.min()),
        "max": float(x.max()),
    }


def _has_flag(patients: pd.DataFrame, flag: QCFlag) -> pd.Series:
    flags = patients["qc_flags"] if "qc_flags" in patients else pd.Series(None, patients.index)
    return flags.map(lambda f: f is not None and flag.value in list(f)).astype(bool)


def reference_text(column: str) -> str:
    """The published reference values of one column, in words (empty when there are none)."""
    return "; ".join(_reference_phrase(r) for r in STUDY_REFERENCE_VALUES if r.column == column)


def _reference_phrase(ref: ReferenceValue) -> str:
    parts = []
    if ref.low is not None and ref.high is not None:
        parts.append(f"{ref.low:g} to {ref.high:g}")
    if ref.mean is not None:
        parts.append(f"mean {ref.mean:g}" + (f" +/- {ref.sd:g}" if ref.sd is not None else ""))
    return f"{ref.population}: {', '.join(parts)} ({ref.source})"


def measures_summary(patients: pd.DataFrame) -> dict[str, Any] | None:
    """Distributions, agreement with the expert masks and the atrium's QC shares.

    Args:
        patients: ``patients.parquet`` of a run.

    Returns:
        ``{"distributions": {column: stats or None}, "distributions_la_whole": {...},
        "agreement": {comparison name: stats or None}, "la_cut_share": float,
        "la_length_mismatch_share": float, "references": {column: text}}``; None when the run's
        patients have none of the columns (an OUT of schema < 1.4).
    """
    if not any(column in patients for column, _ in MEASURES):
        return None
    cut = _has_flag(patients, QCFlag.LA_CUT)
    measured = pd.to_numeric(patients.get("la_volume_ml"), errors="coerce").notna()
    return {
        "distributions": {c: distribution(patients.get(c, pd.Series())) for c, _ in MEASURES},
        "distributions_la_whole": {
            c: distribution(patients.loc[~cut, c]) if c in patients else None
            for c, _ in MEASURES[:4]
        },
        "agreement": {c.name: agreement_stats(patients, c) for c in STUDY_COMPARISONS},
        "la_cut_share": float(cut[measured].mean()) if measured.any() else None,
        "la_length_mismatch_share": (
            float(_has_flag(patients, QCFlag.LA_LENGTH_MISMATCH)[measured].mean())
            if measured.any()
            else None
        ),
        "references": {c: reference_text(c) for c, _ in MEASURES if reference_text(c)},
    }


def measures_plot(patients: pd.DataFrame, path: Path) -> Path | None:
    """Histograms of the main measurements, the published reference ranges shaded.

    Returns:
        The PNG path, or None when no patient has any of them.
    """
    from echo_batch.report.plots import figure, save

    columns = [
        c
        for c in PLOTTED
        if c in patients and pd.to_numeric(patients[c], errors="coerce").notna().any()
    ]
    if not columns:
        return None
    labels = dict(MEASURES)
    fig = figure(10.0, 2.6 * ((len(columns) + 2) // 3))
    axes = fig.subplots((len(columns) + 2) // 3, 3, squeeze=False).ravel()
    for ax, column in zip(axes, columns, strict=False):
        values = pd.to_numeric(patients[column], errors="coerce").dropna()
        for ref in STUDY_REFERENCE_VALUES:
            if ref.column == column and ref.low is not None and ref.high is not None:
                ax.axvspan(ref.low, ref.high, color="#d9ead3", alpha=0.5, lw=0)
            elif ref.column == column and ref.mean is not None:
                ax.axvline(ref.mean, color="#38761d", ls="--", lw=1)
        ax.hist(values, bins=min(30, max(5, len(values) // 3)), color="#2c7fb8")
        ax.set(xlabel=labels[column], ylabel="patients")
    for ax in axes[len(columns) :]:
        ax.set_visible(False)
    return save(fig, path)


def _distribution_cells(stats: dict[str, Any] | None) -> list[str]:
    if stats is None:
        return ["0", *["\u2013"] * 4]
    return [
        str(stats["n"]),
        f"{html.fmt(stats['mean'], 1)} \u00b1 {html.fmt(stats['sd'], 1)}",
        html.fmt(stats["median"], 1),
        f"{html.fmt(stats['p25'], 1)} to {html.fmt(stats['p75'], 1)}",
        f"{html.fmt(stats['min'], 1)} to {html.fmt(stats['max'], 1)}",
    ]


def _agreement_cells(stats: dict[str, Any] | None) -> list[str]:
    if stats is None:
        return ["0", *["\u2013"] * 5]
    return [
        str(stats["n"]),
        html.fmt(stats["r"], 3),
        html.fmt(stats["bias"], 2, True),
        html.fmt(stats["sd"], 2),
        f"{html.fmt(stats['loa_low'], 1, True)} to {html.fmt(stats['loa_high'], 1, True)}",
        html.fmt(stats["mae"], 2),
    ]


def measures_section(summary: dict[str, Any], figure: str | None) -> str:
    """The page's section.

    Args:
        summary: :func:`measures_summary` of the run.
        figure: path of :func:`measures_plot`'s PNG relative to the page, or None.
    """
    rows = [
        [
            html.fmt(label),
            *_distribution_cells(summary["distributions"][column]),
            html.fmt(summary["references"].get(column, "\u2013")),
        ]
        for column, label in MEASURES
    ]
    parts = [
        html.table(
            ["measurement", "n", "mean \u00b1 SD", "median", "IQR", "range", "published|source"],
            rows,
        ),
        html.paragraph(
            "Left atrium at LV end-systole: biplane method of disks and biplane area-length "
            "(0.85 A2C A4C / L, L the shorter LA length), Lang et al. 2015. "
            f"{html.pct(summary['la_cut_share'])} of the measured atria are cut by the sector or "
            "the image border (la_cut: their volume is too small) and "
            f"{html.pct(summary['la_length_mismatch_share'])} have 2CH and 4CH LA lengths more "
            "than 5 mm apart. Contour GLS is the relative change of the LV endocardial border "
            "length (hinge to hinge through the apex) from ED to ES on the segmentation: an "
            "approximation of global longitudinal strain, not speckle tracking. FAC: "
            "(A_ED - A_ES) / A_ED of the LV cavity. Long-axis shortening: (L_ED - L_ES) / L_ED of "
            "the base-to-apex length. Formulas and figures: docs/measures.md.",
            "note",
        ),
    ]
    whole = summary["distributions_la_whole"]
    if any(whole.values()):
        parts += [
            "<h3>Left atrium without the atria cut by the sector (no la_cut flag)</h3>",
            html.table(
                ["measurement", "n", "mean \u00b1 SD", "median", "IQR", "range"],
                [
                    [html.fmt(label), *_distribution_cells(whole[column])]
                    for column, label in MEASURES[:4]
                ],
            ),
        ]
    if figure is not None:
        parts.append(
            html.figure(
                figure,
                "distributions of the per-study measurements",
                "Green band: published normal range; dashed line: published mean of healthy "
                "adults (sources in the table).",
            )
        )
    agreement_rows = [
        [html.fmt(c.label), html.fmt(c.unit), *_agreement_cells(summary["agreement"][c.name])]
        for c in STUDY_COMPARISONS
    ]
    if any(summary["agreement"][c.name] is not None for c in STUDY_COMPARISONS):
        parts += [
            "<h3>Model masks against expert masks (same formulas)</h3>",
            html.table(
                ["comparison", "unit", "n", "r", "bias", "SD", "limits of agreement", "MAE"],
                agreement_rows,
                text_columns=2,
            ),
        ]
    else:
        parts.append(
            html.paragraph(
                "No patient has both model and expert-mask values (expert masks absent, or a "
                "--segmentation gt run).",
                "note",
            )
        )
    return html.section(
        "measures", "Left atrium, contour GLS, FAC and long-axis shortening", *parts
    )
