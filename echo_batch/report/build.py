"""Build ``OUT/report/``: ``index.html``, PNG plots, the worst-case gallery and ``summary.json``."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from echo_batch import atomic
from echo_batch.report import html, plots
from echo_batch.report.gallery import GalleryCase, render_gallery

if TYPE_CHECKING:
    import pandas as pd
from echo_batch.report.loops import EF_DETECTED_VS_ANNOTATED, loop_summary
from echo_batch.report.measures import measures_plot, measures_section, measures_summary
from echo_batch.report.stats import (
    EF_COMPARISONS,
    VOLUME_COMPARISONS,
    Comparison,
    RunData,
    agreement_stats,
    flag_counts,
    flagged_groups,
    grouped_agreement,
    load_run,
    primary_comparison,
    segmentation_table,
    worst_cases,
)
from echo_batch.report.uncertainty import (
    uncertainty_plot,
    uncertainty_section,
    uncertainty_summary,
)

logger = logging.getLogger(__name__)

REPORT_DIR = "report"
DEFAULT_WORST = 6


def write_report(
    out: Path,
    *,
    worst: int = DEFAULT_WORST,
    data: Path | None = None,
    recompute: bool = True,
) -> Path:
    """Write the cohort report of a finished run.

    Args:
        out: the run's OUT folder (``patients.parquet``, ``images.parquet``, ``run.json``).
        worst: patients in the gallery (largest absolute EF error first).
        data: DATA root of the images (default: the one recorded in ``run.json``).
        recompute: segment the gallery patients again when the run saved no masks.

    Returns:
        Path of ``OUT/report/index.html``.

    Raises:
        FileNotFoundError: the Parquet outputs are missing.
    """
    started = time.perf_counter()
    out = Path(out)
    run = load_run(out, report_columns=True)
    folder = out / REPORT_DIR
    for sub in ("plots", "gallery"):  # only what this function writes
        shutil.rmtree(folder / sub, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    summary = summarise(run)
    primary = primary_comparison(run.patients)
    figures = _plots(run, primary, summary, folder / "plots")
    cases = worst_cases(run.patients, primary, worst)
    gallery = (
        render_gallery(run, cases, primary, folder / "gallery", data=data, recompute=recompute)
        if primary is not None
        else []
    )
    summary["gallery"] = [_gallery_entry(c, folder) for c in gallery]
    atomic.write_text(folder / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    index = folder / "index.html"
    atomic.write_text(index, render_page(run, summary, figures, gallery))
    logger.info("report written to %s in %.1f s", index, time.perf_counter() - started)
    return index


def _gallery_entry(case: GalleryCase, folder: Path) -> dict[str, Any]:
    """``summary.json``'s gallery entry; ``curve`` (relative to the report) only for loops."""
    entry: dict[str, Any] = {"patient_id": case.patient_id, "source": case.source}
    if case.curve is not None:
        entry["curve"] = _rel(case.curve, folder)
    return entry


def summarise(run: RunData) -> dict[str, Any]:
    """Every figure the page shows, as plain data (also written to ``summary.json``)."""
    patients = run.patients
    primary = primary_comparison(patients)
    summary: dict[str, Any] = {
        "out": str(run.out),
        "patients": len(patients),
        "images": len(run.images),
        "status": patients["status"].value_counts().to_dict(),
        "model_id": str(patients["model_id"].iloc[0]) if len(patients) else None,
        "primary": None if primary is None else primary.name,
        "agreement": {c.name: agreement_stats(patients, c) for c in EF_COMPARISONS},
        "volumes": {c.name: agreement_stats(patients, c) for c in VOLUME_COMPARISONS},
        "qc": flagged_groups(patients, primary),
        "flags": flag_counts(patients, run.images),
        "segmentation": segmentation_table(run.images),
        "loops": loop_summary(run),
        "inputs": input_mix(patients),
        "measures": measures_summary(patients),
        "uncertainty": uncertainty_summary(patients),
    }
    if primary is not None:
        summary["by_image_quality"] = grouped_agreement(patients, primary, "image_quality")
        summary["by_reference_category"] = grouped_agreement(
            patients, primary, "reference_category"
        )
    return summary


def _plots(
    run: RunData, primary: Comparison | None, summary: dict[str, Any], folder: Path
) -> dict[str, Path]:
    figures: dict[str, Path | None] = {
        "ef_distribution": plots.ef_distribution(run.patients, folder / "ef_distribution.png"),
        "segmentation": plots.segmentation_boxes(run.images, folder / "segmentation.png"),
        "qc_flags": plots.flag_counts_plot(
            [r for r in summary["flags"] if r["patients"] or r["blocking"]],
            folder / "qc_flags.png",
        ),
    }
    shown = [c for c in EF_COMPARISONS[:2] if summary["agreement"][c.name] is not None]
    for comparison in shown:
        figures[f"agreement_{comparison.name}"] = plots.agreement_plot(
            run.patients,
            comparison,
            summary["agreement"][comparison.name],
            folder / f"agreement_{comparison.name}.png",
        )
    if primary is not None:
        figures["by_quality"] = plots.by_quality_plot(
            run.patients, primary, folder / "by_quality.png"
        )
    volumes = [
        (c, summary["volumes"][c.name])
        for c in VOLUME_COMPARISONS[:2]
        if summary["volumes"][c.name] is not None
    ]
    figures["volumes"] = plots.volume_plot(run.patients, volumes, folder / "volumes.png")
    if summary["measures"] is not None:
        figures["measures"] = measures_plot(run.patients, folder / "measures.png")
    if summary["uncertainty"] is not None:
        figures["uncertainty"] = uncertainty_plot(
            run.patients, summary["uncertainty"], folder / "uncertainty.png"
        )
    return {k: v for k, v in figures.items() if v is not None}


def _rel(path: Path, index_dir: Path) -> str:
    return path.relative_to(index_dir).as_posix()


def _rel_or_none(path: Path | None, index_dir: Path) -> str | None:
    return None if path is None else _rel(path, index_dir)


def _stats_cells(stats: dict[str, float] | None) -> list[str]:
    if stats is None:
        return ["0", *["\u2013"] * 6]
    return [
        str(stats["n"]),
        html.fmt(stats["r"], 3),
        html.fmt(stats["bias"], 2, signed=True),
        html.fmt(stats["sd"], 2),
        f"{html.fmt(stats['loa_low'], 1, True)} to {html.fmt(stats['loa_high'], 1, True)}",
        html.fmt(stats["mae"], 2),
        html.pct(stats["within_5"]),
    ]


STATS_HEADERS = ["n", "r", "bias", "SD", "limits of agreement", "MAE", "within 5"]


def input_mix(patients: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Patients per input format, spacing source and frames source (empty for outputs written
    before these columns existed)."""
    return {
        column: {str(k): int(v) for k, v in patients[column].value_counts().sort_index().items()}
        for column in ("input_format", "spacing_source", "frames_source")
        if column in patients
    }


def _inputs_note(inputs: dict[str, dict[str, int]]) -> str | None:
    """One sentence on the formats and spacing sources the cohort mixed (None for none)."""
    formats, spacing = inputs.get("input_format", {}), inputs.get("spacing_source", {})
    if not formats:
        return None
    text = "Inputs: " + ", ".join(f"{k} {v}" for k, v in formats.items())
    text += "; spacing from " + ", ".join(f"{k} {v}" for k, v in spacing.items()) + "."
    if spacing.get("none"):
        text += (
            f" {spacing['none']} patient(s) have no trusted pixel spacing: their EF is measured, "
            "their volumes are not (null)."
        )
    if len(formats) > 1 or len(spacing) > 1:
        text += " The cohort mixes sources: compare groups before pooling their figures."
    return text


def _summary_section(summary: dict[str, Any]) -> str:
    qc = summary["qc"]
    name = summary["primary"]
    primary = summary["agreement"].get(name) if name else None
    comparison = next((c for c in EF_COMPARISONS if c.name == name), None)
    items = [
        (str(summary["patients"]), "patients"),
        (
            ", ".join(f"{k} {v}" for k, v in sorted(summary["status"].items())) or "\u2013",
            "by status",
        ),
    ]
    if primary is not None:
        items += [
            (html.fmt(primary["r"], 3), "EF r"),
            (html.fmt(primary["bias"], 2, True), "EF bias (points)"),
            (html.fmt(primary["sd"], 2), "EF SD (points)"),
            (html.fmt(primary["mae"], 2), "EF MAE (points)"),
        ]
    items.append((html.pct(qc["flagged_share"], 1), "patients flagged (qc_pass false)"))
    for key, label in (("flagged_stats", "MAE flagged"), ("unflagged_stats", "MAE not flagged")):
        if qc[key] is not None:
            items.append((html.fmt(qc[key]["mae"], 2), f"{label} (n {qc[key]['n']}, points)"))
    parts = [html.kpis(items)]
    if comparison is not None:
        parts.append(
            html.paragraph(
                f"EF figures: {comparison.label} ({comparison.measured} - {comparison.reference}, "
                "EF points). Flagged: a blocking QC flag is set or the patient was not fully "
                f"measured; {html.pct(qc['any_flag_share'])} of the patients carry at least one "
                "flag of any kind (non-blocking ones included).",
                "note",
            )
        )
    else:
        parts.append(html.paragraph("No reference EF: agreement figures are not available."))
    note = _inputs_note(summary.get("inputs") or {})
    if note is not None:
        parts.append(html.paragraph(note, "note"))
    return html.section("summary", "Summary", *parts)


def _agreement_section(summary: dict[str, Any], figures: dict[str, Path], root: Path) -> str:
    rows = [
        [html.fmt(c.label), html.fmt(f"{c.measured} - {c.reference}"), *_stats_cells(stats)]
        for c in EF_COMPARISONS
        if (stats := summary["agreement"][c.name]) is not None
    ]
    parts = [
        html.table(["comparison", "difference", *STATS_HEADERS], rows, text_columns=2),
        html.paragraph(
            "The cfg EF follows the CAMUS convention (one disk height from the longer ED axis), so "
            "the CAMUS-compatible EF is the one to compare with it; the guideline EF is compared "
            "with the same method on the expert masks. Limits of agreement: bias +- 1.96 SD.",
            "note",
        ),
    ]
    for comparison in EF_COMPARISONS[:2]:
        key = f"agreement_{comparison.name}"
        if key in figures:
            parts.append(html.figure(_rel(figures[key], root), comparison.label))
    qc = summary["qc"]
    group_rows = [
        [label, str(stats["n"]) if stats else "0", *_stats_cells(stats)[1:]]
        for label, stats in (
            ("flagged (qc_pass false)", qc["flagged_stats"]),
            ("not flagged", qc["unflagged_stats"]),
        )
    ]
    parts += [
        "<h3>Flagged and unflagged patients</h3>",
        html.table(["group", *STATS_HEADERS], group_rows),
    ]
    volume_rows = [
        [html.fmt(c.label), *_stats_cells(stats)]
        for c in VOLUME_COMPARISONS
        if (stats := summary["volumes"][c.name]) is not None
    ]
    if volume_rows:
        parts += [
            "<h3>Volumes against the 2019 cfg (LVedv, LVesv, mL)</h3>",
            html.table(["comparison", *STATS_HEADERS], volume_rows),
        ]
        if "volumes" in figures:
            parts.append(html.figure(_rel(figures["volumes"], root), "volume Bland-Altman"))
    return html.section("agreement", "Agreement with the references", *parts)


def _groups_section(summary: dict[str, Any], figures: dict[str, Path], root: Path) -> str:
    parts = []
    for key, title in (
        ("by_image_quality", "By image quality (cfg ImageQuality)"),
        ("by_reference_category", "By EF category of the reference"),
    ):
        rows = [
            [
                html.fmt(g["group"].replace("_", " ")),
                str(g["patients"]),
                html.pct(g["flagged_share"]),
                *_stats_cells(g["stats"]),
            ]
            for g in summary.get(key, [])
        ]
        parts += [
            f"<h3>{html.fmt(title)}</h3>",
            html.table(["group", "patients", "flagged", *STATS_HEADERS], rows),
        ]
    if "by_quality" in figures:
        parts.append(html.figure(_rel(figures["by_quality"], root), "error by image quality"))
    if "ef_distribution" in figures:
        parts += [
            "<h3>EF distribution</h3>",
            html.figure(
                _rel(figures["ef_distribution"], root),
                "EF distribution",
                "Bands: reduced <= 40 %, mildly reduced 41-49 %, preserved >= 50 % "
                "(universal definition of heart failure, Bozkurt et al. 2021).",
            ),
        ]
    return html.section("groups", "Results by image quality and EF category", *parts)


OFFSET_HEADERS = [
    "view",
    "instant",
    "n",
    "mean",
    "SD",
    "mean |offset|",
    "max |offset|",
    "exact",
    "within 1",
    "beyond 1",
    "other beat used",
]


def _loops_section(loops: dict[str, Any]) -> str:
    """Cine loops: what was measured, detected-minus-annotated frame offsets and EF difference."""
    by_source = loops["patients_by_frames_source"]
    items = [
        (str(loops["patients"]), "patients with loops"),
        (str(loops["loops"]), "loops"),
        (str(loops["frames"]), "frames segmented"),
        (str(loops["qc_rejected_frames"]), "frames QC-rejected"),
        (", ".join(f"{k} {v}" for k, v in sorted(by_source.items())) or "\u2013", "frames source"),
    ]
    parts = [html.kpis(items)]
    offsets = loops["offsets"]
    if offsets:
        rows = [
            [
                html.fmt(r["view"]),
                html.fmt(r["instant"]),
                str(r["n"]),
                html.fmt(r["mean"], 2, True),
                html.fmt(r["sd"], 2),
                html.fmt(r["mean_abs"], 2),
                str(r["max_abs"]),
                html.pct(r["exact_share"]),
                html.pct(r["within_1_share"]),
                html.pct(r["beyond_1_share"]),
                html.pct(r["other_beat_share"]),
            ]
            for r in offsets
        ]
        parts += [
            "<h3>Detected minus annotated ED/ES frames</h3>",
            html.table(OFFSET_HEADERS, rows, text_columns=2),
            html.paragraph(
                "Offset: the detected frame of the same instant nearest to the annotated one, over "
                "every beat of the loop, minus the annotated frame (frames; within 1 includes "
                "exact). Other beat used: the results use another beat's frame (the beat of "
                "median EF of a multi-beat loop).",
                "note",
            ),
        ]
    stats = loops["ef_detected_vs_annotated"]
    if stats is not None:
        comparison = EF_DETECTED_VS_ANNOTATED
        parts += [
            "<h3>EF on the detected against the annotated frames</h3>",
            html.table(
                ["difference", *STATS_HEADERS],
                [
                    [
                        html.fmt(f"{comparison.measured} - {comparison.reference}"),
                        *_stats_cells(stats),
                    ]
                ],
            ),
        ]
    if not offsets and stats is None:
        parts.append(
            html.paragraph(
                "No patient has both detected and annotated frames (run --frames detected on "
                "annotated data to measure the agreement).",
                "note",
            )
        )
    return html.section("loops", "Cine loops", *parts)


def _qc_section(summary: dict[str, Any], figures: dict[str, Path], root: Path) -> str:
    rows = []
    for r in summary["flags"]:
        limit = f"{r['value']:g}" if r["value"] is not None else "\u2013"
        if r["upper"] is not None:
            limit = f"{limit} to {r['upper']:g}"
        blocking = '<span class="blocking">yes</span>' if r["blocking"] else "no"
        rows.append(
            [
                html.fmt(r["flag"]),
                blocking,
                f"{limit} {html.fmt(r['unit'])}",
                str(r["patients"]),
                str(r["images"]),
                html.fmt(r["source"]),
            ]
        )
    return html.section(
        "qc",
        "Quality control",
        html.figure(_rel(figures["qc_flags"], root), "QC flag counts"),
        html.table(["flag", "blocking", "limit", "patients", "images", "source|source"], rows),
        html.paragraph(
            "Image flags also count on their patient. qc_pass is false when a blocking flag is set "
            "or the patient is not fully measured. Thresholds and their derivation: "
            "docs/quality.md.",
            "note",
        ),
    )


def _segmentation_section(summary: dict[str, Any], figures: dict[str, Path], root: Path) -> str:
    table_rows = summary["segmentation"]
    if not table_rows:
        return html.section(
            "segmentation",
            "Segmentation against ground truth",
            html.paragraph("No image has ground-truth metrics (expert masks absent or gt run)."),
        )
    metrics = [
        m
        for m in ("dice_lv", "dice_myo", "dice_la", "hd_lv_mm", "hd95_lv_mm", "mad_lv_mm")
        if m in table_rows[0]
    ]
    rows = []
    for r in table_rows:
        cells = [html.fmt(r["group"]), str(r["images"])]
        for m in metrics:
            digits = 3 if m.startswith("dice") else 1
            v = r[m]
            cells.append("\u2013" if v is None else f"{v[0]:.{digits}f} \u00b1 {v[1]:.{digits}f}")
        rows.append(cells)
    parts = [html.table(["view, instant", "images", *metrics], rows)]
    if "segmentation" in figures:
        parts.append(html.figure(_rel(figures["segmentation"], root), "segmentation metrics"))
    parts.append(
        html.paragraph(
            "HD: maximum symmetric LV contour distance (CAMUS paper), HD95: the larger directed "
            "95th percentile, MAD: mean of both directions; mm with the true anisotropic spacing.",
            "note",
        )
    )
    return html.section("segmentation", "Segmentation against ground truth", *parts)


def _gallery_section(gallery: list[GalleryCase], root: Path) -> str:
    if not gallery:
        return html.section("gallery", "Worst cases", html.paragraph("No case to show."))
    parts = [
        html.paragraph(
            "Largest absolute EF errors first. Yellow: measured LV contour, with the mitral hinges "
            "(cyan), apex (pink), long axis (dotted) and the 20 Simpson disks (orange); green "
            "dashed: expert contour. Pixels are drawn at their true size in mm.",
            "note",
        )
    ]
    if any(case.curve is not None for case in gallery):
        parts.append(
            html.paragraph(
                "Loop patients: the panels are the loop frames the results use (frame number in "
                "the panel title, 0-based); the volume curve shows every frame, the ED (triangle "
                "up) and ES (triangle down) of every beat, the frames used (circled), the "
                "annotated frames (dashed) and the QC-rejected frames (red crosses), which are "
                "never taken as ED or ES.",
                "note",
            )
        )
    for case in gallery:
        if case.png is None:
            text = f"{case.caption} \u2014 {case.source}"
            if case.curve is not None:
                text += " (contours not available; the volume curve follows)"
            parts.append(html.paragraph(text))
        else:
            caption = f"{case.caption}\ncontour source: {case.source}"
            parts.append(html.figure(_rel(case.png, root), case.patient_id, caption))
        if case.curve is not None:
            parts.append(html.figure(_rel(case.curve, root), f"{case.patient_id} volume curve", ""))
    return html.section("gallery", "Worst cases", *parts)


def render_page(
    run: RunData, summary: dict[str, Any], figures: dict[str, Path], gallery: list[GalleryCase]
) -> str:
    """The ``index.html`` text."""
    from echo_batch.version import code_version

    root = run.out / REPORT_DIR
    meta = (
        f"OUT {html.fmt(str(run.out))} \u00b7 model {html.fmt(summary['model_id'])} \u00b7 "
        f"data {html.fmt(run.run.get('data', 'unknown'))} \u00b7 echo-batch "
        f"{html.fmt(code_version())} \u00b7 written {time.strftime('%Y-%m-%d %H:%M')}"
    )
    sections = [
        _summary_section(summary),
        _agreement_section(summary, figures, root),
        *(
            [
                uncertainty_section(
                    summary["uncertainty"], _rel_or_none(figures.get("uncertainty"), root)
                )
            ]
            if summary["uncertainty"] is not None
            else []
        ),
        *([_loops_section(summary["loops"])] if summary["loops"] is not None else []),
        *(
            [measures_section(summary["measures"], _rel_or_none(figures.get("measures"), root))]
            if summary["measures"] is not None
            else []
        ),
        _qc_section(summary, figures, root),
        _groups_section(summary, figures, root),
        _segmentation_section(summary, figures, root),
        _gallery_section(gallery, root),
    ]
    return html.page("echo-batch cohort report", meta, sections)
