"""PNG plots of the cohort report (matplotlib, Agg canvas; nothing global is touched).

Figures are built with ``matplotlib.figure.Figure`` and rendered by the Agg canvas, so no pyplot
state and no backend switch happen, and nothing is imported before a plot is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echo_batch.clinical import EF_CATEGORY_TABLE
from echo_batch.qc.agreement import Comparison
from echo_batch.report.stats import (
    QUALITY_ORDER,
    SEGMENTATION_METRICS,
    abs_error,
    paired_values,
)

DPI = 110
FLAGGED = "#c0392b"
UNFLAGGED = "#2c7fb8"
CATEGORY_COLOURS = {"reduced": "#f4cccc", "mildly_reduced": "#fde9c9", "preserved": "#d9ead3"}


def figure(width_in: float, height_in: float):
    """A constrained-layout ``Figure`` on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: Path) -> Path:
    """Write the figure as PNG and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def ef_distribution(patients: pd.DataFrame, path: Path) -> Path | None:
    """Histogram of the biplane EF with the heart-failure category bands (and the reference EF).

    Returns:
        The PNG path, or None when no patient has an EF.
    """
    ef = pd.to_numeric(patients.get("ef_pct"), errors="coerce").dropna()
    if ef.empty:
        return None
    fig = figure(7.5, 3.6)
    ax = fig.add_subplot()
    lower = 0.0
    for row in EF_CATEGORY_TABLE:
        upper = min(float(row.upper_pct), 100.0)
        n = int(((ef > lower) & (ef <= upper)).sum()) if lower > 0 else int((ef <= upper).sum())
        label = f"{row.category.value.replace('_', ' ')} ({n})"
        ax.axvspan(lower, upper, color=CATEGORY_COLOURS[row.category.value], label=label, lw=0)
        lower = upper
    bins = np.arange(0, 102.5, 2.5)
    ax.hist(ef.clip(0, 100), bins=bins, color="#34495e", alpha=0.85, label="measured ef_pct")
    ref = pd.to_numeric(patients.get("ef_ref_pct"), errors="coerce").dropna()
    if not ref.empty:
        ax.hist(
            ref,
            bins=bins,
            histtype="step",
            color="black",
            lw=1.5,
            label="cfg EF (CAMUS convention)",
        )
    ax.set(xlabel="EF (%)", ylabel="patients", xlim=(0, 100), title="EF distribution")
    ax.legend(fontsize=8, loc="upper left")
    return save(fig, path)


def agreement_plot(
    patients: pd.DataFrame, comparison: Comparison, stats: dict[str, float], path: Path
) -> Path:
    """Scatter against the reference (identity line) and Bland-Altman plot, flagged in red."""
    pairs = paired_values(patients, comparison)
    flagged = ~patients.loc[pairs.index, "qc_pass"].astype(bool)
    fig = figure(9.0, 4.0)
    scatter, ba = fig.subplots(1, 2)
    unit = comparison.unit
    for mask, colour, label in ((~flagged, UNFLAGGED, "qc_pass"), (flagged, FLAGGED, "flagged")):
        if mask.any():
            sub = pairs[mask]
            marker = "x" if colour == FLAGGED else "o"
            scatter.scatter(sub.reference, sub.measured, s=18, c=colour, marker=marker, label=label)
            mean = (sub.measured + sub.reference) / 2
            ba.scatter(mean, sub["diff"], s=18, c=colour, marker=marker, label=label)
    lo = float(min(pairs.reference.min(), pairs.measured.min()))
    hi = float(max(pairs.reference.max(), pairs.measured.max()))
    scatter.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
    scatter.set(
        xlabel=f"{comparison.reference} ({unit})",
        ylabel=f"{comparison.measured} ({unit})",
        title=f"r = {stats['r']:.3f}, MAE = {stats['mae']:.2f} {unit}, n = {stats['n']}",
    )
    scatter.legend(fontsize=8)
    for value, style, name in (
        (stats["bias"], "-", f"bias {stats['bias']:+.2f}"),
        (stats["loa_low"], "--", f"-1.96 SD {stats['loa_low']:+.2f}"),
        (stats["loa_high"], "--", f"+1.96 SD {stats['loa_high']:+.2f}"),
    ):
        ba.axhline(value, color="black", ls=style, lw=1)
        ba.annotate(
            name,
            (1.0, value),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="bottom",
            fontsize=8,
        )
    ba.set(
        xlabel=f"mean of the two ({unit})",
        ylabel=f"measured - reference ({unit})",
        title=f"Bland-Altman: bias {stats['bias']:+.2f}, SD {stats['sd']:.2f} {unit}",
    )
    fig.suptitle(comparison.label, fontsize=11)
    return save(fig, path)


def segmentation_boxes(images: pd.DataFrame, path: Path) -> Path | None:
    """Box plots of Dice (LV, MYO, LA) and LV contour distances by view and instant.

    Returns:
        The PNG path, or None when no image has ground-truth metrics.
    """
    have = [
        (m, name) for m, name in SEGMENTATION_METRICS if m in images and images[m].notna().any()
    ]
    if not have:
        return None
    groups = sorted((images["view"] + " " + images["instant"]).dropna().unique())
    keyed = images.assign(group=images["view"] + " " + images["instant"])
    fig = figure(10.0, 4.0)
    axes = fig.subplots(1, 2)
    for ax, kind in zip(axes, ("dice", "mm"), strict=True):
        metrics = [(m, n) for m, n in have if (m.startswith("dice") == (kind == "dice"))]
        width = 0.8 / max(len(metrics), 1)
        for j, (metric, name) in enumerate(metrics):
            data = [keyed.loc[keyed.group == g, metric].dropna().to_numpy() for g in groups]
            positions = np.arange(len(groups)) + (j - (len(metrics) - 1) / 2) * width
            box = ax.boxplot(
                data,
                positions=positions,
                widths=width * 0.9,
                patch_artist=True,
                showfliers=True,
                flierprops={"markersize": 3},
            )
            colour = f"C{j}"
            for patch in box["boxes"]:
                patch.set_facecolor(colour)
                patch.set_alpha(0.6)
            ax.plot([], [], color=colour, lw=6, alpha=0.6, label=name)
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.legend(fontsize=8)
        ax.set_title("Dice by view and instant" if kind == "dice" else "LV contour distances (mm)")
    return save(fig, path)


def flag_counts_plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Horizontal bars: patients per QC flag, blocking flags in red."""
    fig = figure(7.5, 0.32 * len(rows) + 1.2)
    ax = fig.add_subplot()
    names = [r["flag"] for r in rows]
    counts = [r["patients"] for r in rows]
    colours = [FLAGGED if r["blocking"] else "#7f8c8d" for r in rows]
    y = np.arange(len(rows))
    ax.barh(y, counts, color=colours)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    for yi, count in zip(y, counts, strict=True):
        ax.annotate(
            str(count),
            (count, yi),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.set(xlabel="patients", title="QC flags (red: blocking, grey: reported only)")
    ax.set_xlim(0, max(max(counts, default=0), 1) * 1.15)
    return save(fig, path)


def by_quality_plot(patients: pd.DataFrame, comparison: Comparison, path: Path) -> Path | None:
    """Absolute error by cfg image quality (box plot) and the flagged share per quality.

    Returns:
        The PNG path, or None without any error value.
    """
    error = abs_error(patients, comparison)
    quality = patients.get("image_quality", pd.Series(index=patients.index)).fillna("unknown")
    groups = [g for g in QUALITY_ORDER if (quality == g).any()]
    groups += sorted(set(quality) - set(QUALITY_ORDER))
    data = [error[quality == g].dropna().to_numpy() for g in groups]
    if not any(len(d) for d in data):
        return None
    fig = figure(9.0, 3.6)
    box_ax, bar_ax = fig.subplots(1, 2)
    box_ax.boxplot([d if len(d) else [np.nan] for d in data], patch_artist=True)
    box_ax.set_xticks(
        np.arange(1, len(groups) + 1),
        [f"{g}\n(n={len(d)})" for g, d in zip(groups, data, strict=True)],
    )
    box_ax.set(
        ylabel=f"|{comparison.measured} - {comparison.reference}| ({comparison.unit})",
        title="Absolute error by image quality",
    )
    shares = [
        100 * float((~patients.loc[quality == g, "qc_pass"].astype(bool)).mean()) for g in groups
    ]
    bar_ax.bar(np.arange(len(groups)), shares, color=FLAGGED)
    bar_ax.set_xticks(np.arange(len(groups)), groups)
    bar_ax.set(
        ylabel="patients flagged (%)",
        title="Flagged share by image quality",
        ylim=(0, max(max(shares), 5) * 1.2),
    )
    return save(fig, path)


def volume_plot(
    patients: pd.DataFrame, comparisons: Sequence[tuple[Comparison, dict[str, float]]], path: Path
) -> Path | None:
    """Bland-Altman panels of the volumes against the 2019 cfg ``LVedv``/``LVesv``."""
    if not comparisons:
        return None
    fig = figure(4.2 * len(comparisons), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(comparisons)))
    for ax, (comparison, stats) in zip(axes, comparisons, strict=True):
        pairs = paired_values(patients, comparison)
        ax.scatter((pairs.measured + pairs.reference) / 2, pairs["diff"], s=14, c=UNFLAGGED)
        for value, style in (
            (stats["bias"], "-"),
            (stats["loa_low"], "--"),
            (stats["loa_high"], "--"),
        ):
            ax.axhline(value, color="black", ls=style, lw=1)
        ax.set(
            xlabel="mean (mL)",
            ylabel="measured - LV*sv (mL)",
            title=f"{comparison.measured}: bias {stats['bias']:+.1f}, SD {stats['sd']:.1f}",
        )
    return save(fig, path)


ED_MARK = "#d35400"
ES_MARK = "#2980b9"


def _curve_axes(rows: pd.DataFrame) -> tuple[np.ndarray, str, np.ndarray, str]:
    """x (time when every frame has one, else frame) and y (mL, else relative volume) of a loop."""
    time = pd.to_numeric(rows["time_ms"], errors="coerce")
    if time.notna().all():
        x, x_label = time.to_numpy(float), "time (ms)"
    else:
        x, x_label = rows["frame"].to_numpy(float), "frame"
    volume = pd.to_numeric(rows["volume_single_ml"], errors="coerce")
    if volume.notna().any():
        return x, x_label, volume.to_numpy(float), "single-plane volume (mL)"
    relative = pd.to_numeric(rows["volume_rel"], errors="coerce").to_numpy(float)
    return x, x_label, relative, "volume / largest volume"


def cycle_plot(
    frames: pd.DataFrame,
    chosen: dict[str, dict[str, int]],
    annotated: dict[str, dict[str, int]],
    title: str,
    path: Path,
) -> Path | None:
    """Volume curve of each loop of one patient with its ED and ES marks.

    One panel per view: the single-plane volume of every frame (the volume relative to the loop's
    largest when the spacing is unknown) against time (frame index without a frame time); ED
    (triangle up) and ES (triangle down) of every beat; the frames the results use, circled; the
    annotated frames as dashed lines; QC-rejected frames as red crosses (at the foot of the panel
    when the frame has no volume).

    Args:
        frames: ``frames.parquet`` rows of one patient.
        chosen: per view (``"2CH"``), the ``{"ED": frame, "ES": frame}`` the results use.
        annotated: per view, the annotated frames (empty without annotation).
        title: figure title.
        path: where the PNG goes.

    Returns:
        The PNG path, or None without frame rows.
    """
    if frames.empty:
        return None
    views = sorted(frames["view"].unique())
    fig = figure(4.6 * len(views), 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(views)))
    for ax, view in zip(axes, views, strict=True):
        rows = frames[frames["view"] == view].sort_values("frame")
        x, x_label, y, y_label = _curve_axes(rows)
        at = dict(zip(rows["frame"].astype(int), zip(x, y, strict=True), strict=True))
        ax.plot(x, y, "-o", color="#34495e", lw=1.0, ms=2.5, label="every frame")
        for flag, marker, colour, name in (
            ("is_ed", "^", ED_MARK, "ED (every beat)"),
            ("is_es", "v", ES_MARK, "ES (every beat)"),
        ):
            marked = rows[rows[flag].fillna(False).astype(bool)]
            points = np.array([at[int(f)] for f in marked["frame"]]).reshape(-1, 2)
            ax.plot(points[:, 0], points[:, 1], marker, color=colour, ms=7, ls="", label=name)
        picked = [at[f] for f in chosen.get(view, {}).values() if f in at]
        if picked:
            px, py = np.array(picked).T
            ax.plot(px, py, "o", mfc="none", mec="black", ms=12, mew=1.3, ls="", label="used")
        label = "annotated"
        for frame in annotated.get(view, {}).values():
            if frame in at:
                ax.axvline(at[frame][0], color="grey", ls="--", lw=1, label=label)
                label = None
        rejected = rows["qc_rejected"].fillna(False).astype(bool).to_numpy()
        if rejected.any():
            finite = rejected & np.isfinite(y)
            ax.plot(x[finite], y[finite], "x", color=FLAGGED, ms=7, ls="", label="QC-rejected")
            foot = rejected & ~np.isfinite(y)
            ax.plot(
                x[foot],
                np.zeros(int(foot.sum())),
                "x",
                color=FLAGGED,
                ms=7,
                ls="",
                transform=ax.get_xaxis_transform(),
                clip_on=False,
            )
        ax.set(xlabel=x_label, ylabel=y_label, title=f"{view} loop, {len(rows)} frames")
        ax.tick_params(labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            if text not in labels:
                handles.append(handle)
                labels.append(text)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize=7)
    fig.suptitle(title, fontsize=9)
    return save(fig, path)
