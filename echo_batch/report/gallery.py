"""Gallery of the worst cases: echo image, predicted contour, landmarks, disks, expert contour.

Where the predicted label maps come from, in order:

1. a ``--segmentation gt`` run measured the expert masks, so those are drawn;
2. ``OUT/masks/<patient>/<patient>_<VIEW>_<INSTANT>_pred.nii.gz`` written by ``--save-masks``;
3. otherwise (``recompute``) the few worst patients are segmented again with the run's bundle
   (checked against the ``model_id`` of the run) and precision setting;
4. without any of these, only the expert contour is drawn and the panel says so.

Landmarks and disks are those of :func:`echo_batch.measure.landmarks.measure_lv` on the predicted
mask, so the picture shows exactly what was measured.

For a patient whose results use loop frames (``ed_frame_2ch`` ... in ``patients.parquet``), the
panels are those frames of the view's loop file (its per-frame expert masks for the expert
contour), and a second figure shows each loop's volume curve from ``frames.parquet`` with the ED
and ES of every beat, the frames used, the annotated frames and the QC-rejected frames
(:func:`echo_batch.report.plots.cycle_plot`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from echo_batch.domain import IMAGE_KEYS, ImageKey, Instant, Label, PatientRef, View
from echo_batch.errors import InputError
from echo_batch.io.clips import read_patient_loop
from echo_batch.io.image import EchoImage, EchoSequence, read_image
from echo_batch.measure.landmarks import ViewGeometry, disk_chords, measure_lv
from echo_batch.report.loops import loop_frames
from echo_batch.report.plots import cycle_plot, figure, save
from echo_batch.report.stats import Comparison, RunData

logger = logging.getLogger(__name__)

PRED = "#f1c40f"
EXPERT = "#2ecc71"
DISKS = "#e67e22"
ZOOM_MARGIN_MM = 12.0


@dataclass(frozen=True)
class GalleryCase:
    """One patient of the gallery.

    Attributes:
        patient_id: patient folder name.
        png: the figure, or None when the images could not be read.
        caption: measured and reference values, flags.
        source: where the drawn predicted contour comes from (or why there is none).
        curve: the loops' volume curves, or None for a patient without frame rows.
    """

    patient_id: str
    png: Path | None
    caption: str
    source: str
    curve: Path | None = None


@dataclass
class _Panel:
    key: ImageKey
    image: EchoImage
    expert: np.ndarray | None
    predicted: np.ndarray | None
    frame: int | None = None  # loop frame the image is, None for a still


def _loop_frame(sequence: EchoSequence, index: int) -> EchoImage:
    """Frame ``index`` of a loop as a still on the loop's grid."""
    if not 0 <= index < sequence.array.shape[0]:
        raise InputError(
            sequence.path, f"frame {index} outside the loop's {sequence.array.shape[0]} frames"
        )
    return EchoImage(
        array=sequence.array[index],
        spacing=sequence.geometry.spacing,
        path=sequence.path,
        known_geometry=sequence.geometry,
    )


def _loop_panels(ref: PatientRef, view: View, frames: dict[Instant, int]) -> list[_Panel]:
    """The panels of one view whose results use loop frames (``frames``: instant -> frame)."""
    files = ref.sequences.get(view)
    if files is None or files.image is None:
        raise InputError(ref.folder, f"no {view.value} loop file for the loop frames of the run")
    found = read_patient_loop(ref, view)  # the run's reader: DICOM cropped, tracings as masks
    loop, gt = found.frames, found.gt
    panels = []
    for key in IMAGE_KEYS:
        if key.view == view and key.instant in frames:
            index = frames[key.instant]
            expert = None
            if gt is not None and (found.traced is None or index in found.traced):
                expert = _loop_frame(gt, index).array
            image = _loop_frame(loop, index)
            if found.may_show_burned_in_text:  # contours on black: no screen text, no name
                image = dataclasses.replace(image, array=np.zeros_like(image.array))
            panels.append(_Panel(key, image, expert, None, frame=index))
    return panels


def _load_panels(ref: PatientRef, row: pd.Series | None = None) -> list[_Panel]:
    """The patient's ED and ES images: stills, or the loop frames its results use.

    Args:
        ref: the patient's files.
        row: its ``patients.parquet`` row (None, or no loop frame: the stills).
    """
    from_loops = loop_frames(row) if row is not None else {}
    panels = []
    for view, frames in from_loops.items():
        panels.extend(_loop_panels(ref, view, frames))
    for key in IMAGE_KEYS:
        files = ref.images.get(key)
        if key.view in from_loops or files is None or files.image is None:
            continue
        image = read_image(files.image, patient_dir=ref.folder)
        expert = None
        if files.gt is not None:
            expert = read_image(files.gt, patient_dir=ref.folder, labels=True).array
        panels.append(_Panel(key, image, expert, None))
    return sorted(panels, key=lambda p: IMAGE_KEYS.index(p.key))


def _saved_mask(out: Path, patient_id: str, key: ImageKey) -> np.ndarray | None:
    path = out / "masks" / patient_id / f"{patient_id}_{key}_pred.nii.gz"
    return read_image(path, labels=True).array if path.is_file() else None


def chunk_config(run: RunData) -> dict:
    """How the run segmented: ``run.json`` ``config.chunk`` (the run options of echo-batch 1.3),
    or ``config`` itself in the flat layout of earlier runs (empty without ``run.json``)."""
    config = run.run.get("config") or {}
    chunk = config.get("chunk")
    return chunk if isinstance(chunk, dict) else config


def _recompute(panels: list[_Panel], run: RunData) -> str:
    """Segment the panels with the run's bundle; returns the source note."""
    from echo_batch.run.chunk import get_engine
    from echo_batch.run.options import ChunkOptions

    config = chunk_config(run)
    model = config.get("model")
    options = ChunkOptions(
        model=Path(model) if model not in (None, "None") else None,
        device="auto",
        precision=config.get("precision") or "auto",
        uncertainty=bool(config.get("uncertainty")),  # the members' mean, as the run measured
    )
    engine = get_engine(options)
    results = engine.segment([p.image.array for p in panels])
    for panel, seg in zip(panels, results, strict=True):
        panel.predicted = seg.labels
    run_model = str(run.patients["model_id"].iloc[0]) if len(run.patients) else ""
    if run_model and engine.model_id != run_model:
        logger.warning("gallery: recomputed with %s, the run used %s", engine.model_id, run_model)
        return f"recomputed with {engine.model_id}, NOT the model of the run ({run_model})"
    return f"recomputed with the run's model {engine.model_id} ({engine.precision})"


def fill_predictions(
    panels_by_patient: dict[str, list[_Panel]], run: RunData, recompute: bool
) -> dict[str, str]:
    """Set ``predicted`` on every panel; returns the source note per patient."""
    segmentation = chunk_config(run).get("segmentation", "model")
    notes: dict[str, str] = {}
    todo: list[_Panel] = []
    for pid, panels in panels_by_patient.items():
        if segmentation == "gt":
            for p in panels:
                p.predicted = p.expert
            notes[pid] = "expert masks (this run measured them)"
            continue
        saved = [_saved_mask(run.out, pid, p.key) for p in panels]
        if panels and all(m is not None for m in saved):
            for p, m in zip(panels, saved, strict=True):
                p.predicted = m
            notes[pid] = "predicted masks saved by the run (OUT/masks)"
        elif recompute:
            todo.extend(panels)
            notes[pid] = "recompute"
        else:
            notes[pid] = "predicted masks not saved (run with --save-masks); expert contour only"
    if todo:
        try:
            note = _recompute(todo, run)
        except Exception as exc:  # a report never fails for want of a model
            logger.warning("gallery: could not recompute the segmentation: %s", exc)
            note = f"could not recompute the segmentation ({type(exc).__name__}); expert only"
        notes.update({pid: note for pid, n in notes.items() if n == "recompute"})
    return notes


def _draw_contour(ax, geometry: ViewGeometry, colour: str, label: str, ls: str = "-") -> None:
    closed = np.vstack([geometry.contour_mm, geometry.contour_mm[:1]])
    ax.plot(closed[:, 1], closed[:, 0], color=colour, lw=1.3, ls=ls, label=label)


def _draw_landmarks(ax, geometry: ViewGeometry) -> None:
    label = "Simpson disks"
    for a, b in disk_chords(geometry.contour_mm, geometry.base_mid_mm, geometry.apex_mm):
        if np.isfinite(a).all():
            ax.plot([a[1], b[1]], [a[0], b[0]], color=DISKS, lw=0.6, alpha=0.9, label=label)
            label = None
    axis = np.stack([geometry.base_mid_mm, geometry.apex_mm])
    ax.plot(axis[:, 1], axis[:, 0], color="#bdc3c7", lw=1.0, ls=":", label="long axis")
    ax.plot(*geometry.hinges_mm[:, ::-1].T, "o", color="#00bcd4", ms=4, label="mitral hinges")
    ax.plot(geometry.apex_mm[1], geometry.apex_mm[0], "^", color="#e91e63", ms=5, label="apex")


def _zoom(ax, panel: _Panel, sy: float, sx: float) -> None:
    masks = [m for m in (panel.predicted, panel.expert) if m is not None]
    heart = np.zeros(panel.image.array.shape, bool)
    for m in masks:
        heart |= m != Label.BG
    if not heart.any():
        return
    rows, cols = np.nonzero(heart)
    h, w = heart.shape
    ax.set_xlim(
        max(cols.min() * sx - ZOOM_MARGIN_MM, -0.5 * sx),
        min(cols.max() * sx + ZOOM_MARGIN_MM, (w - 0.5) * sx),
    )
    ax.set_ylim(
        min(rows.max() * sy + ZOOM_MARGIN_MM, (h - 0.5) * sy),
        max(rows.min() * sy - ZOOM_MARGIN_MM, -0.5 * sy),
    )


def _panel_title(panel: _Panel, images: pd.DataFrame, patient_id: str) -> str:
    row = images[
        (images.patient_id == patient_id)
        & (images.view == panel.key.view.value)
        & (images.instant == panel.key.instant.value)
    ]
    title = str(panel.key).replace("_", " ")
    if panel.frame is not None:
        title += f", loop frame {panel.frame}"
    if row.empty:
        return title
    r = row.iloc[0]
    parts = [title]
    if pd.notna(r.get("dice_lv")):
        parts.append(f"Dice {r['dice_lv']:.2f}")
    if pd.notna(r.get("hd_lv_mm")):
        parts.append(f"HD {r['hd_lv_mm']:.1f} mm")
    text = ", ".join(parts)
    flags = list(r.get("qc_flags") or [])
    return text + ("\n" + ", ".join(flags) if flags else "")


def render_case(
    patient_id: str, panels: list[_Panel], images: pd.DataFrame, caption: str, path: Path
) -> Path:
    """One row of panels (2CH ED, 2CH ES, 4CH ED, 4CH ES) for one patient."""
    fig = figure(2.6 * max(len(panels), 1), 3.9)
    axes = np.atleast_1d(fig.subplots(1, max(len(panels), 1)))
    for ax, panel in zip(axes, panels, strict=False):
        sy, sx = panel.image.spacing
        h, w = panel.image.array.shape
        extent = (-0.5 * sx, (w - 0.5) * sx, (h - 0.5) * sy, -0.5 * sy)
        ax.imshow(panel.image.array, cmap="gray", extent=extent, interpolation="bilinear")
        if panel.expert is not None:
            expert_geo = measure_lv(panel.expert, (sy, sx))
            if isinstance(expert_geo, ViewGeometry):
                _draw_contour(ax, expert_geo, EXPERT, "expert", ls="--")
        if panel.predicted is not None:
            geo = measure_lv(panel.predicted, (sy, sx))
            if isinstance(geo, ViewGeometry):
                _draw_contour(ax, geo, PRED, "measured")
                _draw_landmarks(ax, geo)
            else:
                ax.text(
                    0.5,
                    0.05,
                    f"not measurable: {geo.reason}",
                    transform=ax.transAxes,
                    ha="center",
                    color="red",
                    fontsize=7,
                )
        _zoom(ax, panel, sy, sx)
        ax.set_title(_panel_title(panel, images, patient_id), fontsize=8)
        ax.set_xlabel("mm", fontsize=7)
        ax.tick_params(labelsize=6)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=7)
    fig.suptitle(caption, fontsize=9)
    return save(fig, path)


def _caption(row: pd.Series, comparison: Comparison) -> str:
    measured, reference = row.get(comparison.measured), row.get(comparison.reference)
    text = (
        f"{row['patient_id']}: {comparison.measured} {measured:.1f} vs {comparison.reference} "
        f"{reference:.1f} (error {measured - reference:+.1f} {comparison.unit})"
    )
    quality = row.get("image_quality")
    if isinstance(quality, str):
        text += f", image quality {quality}"
    loop = _loop_caption(row)
    if loop:
        text += f"\n{loop}"
    flags = list(row.get("qc_flags") or [])
    return text + (f"\nflags: {', '.join(flags)}" if flags else "\nno QC flag")


def _loop_caption(row: pd.Series) -> str:
    """Where a loop patient's frames come from, its beats and heart rate ('' for stills)."""
    if not loop_frames(row):
        return ""
    parts = [f"frames {row.get('frames_source') or 'from the loops'}"]
    beats, sd = row.get("n_beats"), row.get("ef_beats_sd_pct")
    if beats is not None and pd.notna(beats):
        parts.append(f"{int(beats)} beat{'s' if beats != 1 else ''}")
    if sd is not None and pd.notna(sd):
        parts.append(f"EF SD over beats {sd:.1f}")
    rate = row.get("heart_rate_bpm")
    if rate is not None and pd.notna(rate):
        parts.append(f"heart rate {rate:.0f} bpm")
    annotated = row.get("ef_annotated_pct")
    if annotated is not None and pd.notna(annotated):
        parts.append(f"EF on the annotated frames {annotated:.1f}")
    return ", ".join(parts)


def _frames_by_view(row: pd.Series, annotated: bool) -> dict[str, dict[str, int]]:
    """``{"2CH": {"ED": frame, "ES": frame}, ...}`` of the used (or annotated) loop frames."""
    return {
        view.value: {instant.value: frame for instant, frame in frames.items()}
        for view, frames in loop_frames(row, annotated=annotated).items()
    }


def render_curve(run: RunData, row: pd.Series, path: Path) -> Path | None:
    """The volume curves of one patient's loops (None without frame rows)."""
    frames = run.frames
    if frames.empty:
        return None
    rows = frames[frames["patient_id"] == row["patient_id"]]
    title = f"{row['patient_id']}: volume over the loop"
    loop = _loop_caption(row)
    if loop:
        title += f"\n{loop}"
    used = _frames_by_view(row, annotated=False)
    annotated = _frames_by_view(row, annotated=True)
    return cycle_plot(rows, used, annotated, title, path)


def render_gallery(
    run: RunData,
    cases: pd.DataFrame,
    comparison: Comparison,
    folder: Path,
    *,
    data: Path | None = None,
    recompute: bool = True,
) -> list[GalleryCase]:
    """Draw one PNG per worst-case patient into ``folder``.

    Args:
        run: outputs of the run.
        cases: rows of ``patients.parquet`` to draw, worst first.
        comparison: the comparison that ranked them (for the caption).
        folder: where the PNGs go.
        data: DATA root (default: the ``data`` of ``run.json``).
        recompute: segment again when the run saved no masks.

    Returns:
        One GalleryCase per row of ``cases``.
    """
    if cases.empty:
        return []
    from echo_batch.io.discovery import discover

    root = Path(data) if data is not None else Path(run.run.get("data", ""))
    refs: dict[str, PatientRef] = {}
    files_root = (run.run.get("config") or {}).get("files_root")  # a manifest's wider root
    if str(root) and root.exists():  # a folder, or a manifest file
        found = discover(
            root,
            files_root=files_root if files_root not in (None, "None") else None,
            compact=True,  # 100,000 patients' references as objects held 756 MB (measured)
        )
        wanted = set(cases["patient_id"])
        others = set(found.patients.ids) - wanted
        refs = {p.patient_id: p for p in found.patients.without(others)}
    panels: dict[str, list[_Panel]] = {}
    problems: dict[str, str] = {}
    for _, row in cases.iterrows():
        pid = row["patient_id"]
        ref = refs.get(pid)
        if ref is None:
            problems[pid] = f"patient folder not found under DATA ({root})"
            continue
        try:
            panels[pid] = _load_panels(ref, row)
        except Exception as exc:  # an unreadable file never stops the report
            problems[pid] = f"images could not be read: {exc}"
    notes = fill_predictions(panels, run, recompute)
    result = []
    for _, row in cases.iterrows():
        pid = row["patient_id"]
        caption = _caption(row, comparison)
        try:
            curve = render_curve(run, row, folder / f"{pid}_cycle.png")
        except Exception as exc:  # a curve that cannot be drawn never stops the report
            logger.warning("gallery: %s: volume curve not drawn: %s", pid, exc)
            curve = None
        if pid in problems:
            result.append(GalleryCase(pid, None, caption, problems[pid], curve))
            continue
        path = render_case(pid, panels[pid], run.images, caption, folder / f"{pid}.png")
        result.append(GalleryCase(pid, path, caption, notes.get(pid, ""), curve))
    return result
