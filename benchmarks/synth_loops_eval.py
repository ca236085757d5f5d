"""ED/ES detection, EF and heart rate on synthetic loops against their analytic truth.

Synthesises a cohort with loops (``synth_cohort(..., loops=True)``: full loops of 1-4 beats at
40-180 bpm and half sequences, some stored ES->ED, some patients without stills), runs it with the
expert masks and detected frames (``ChunkOptions(segmentation="gt", frames="detected")``, i.e.
``echo-batch run --segmentation gt --frames detected``) and scores against ``truth.csv`` and
``truth_frames.csv``:

- **Beats**: per loop, every true beat is matched to the detected beat of nearest ED (at most half
  a beat away); ED and ES exact and within one frame, as shares of the true beats (a true beat
  without a detected one counts as wrong); detected beats matched to none are reported as extra.
  Each wrong frame gets a cause (:func:`miss_cause`): ``qc`` (the QC rejected the true frame, so
  by design it can be neither ED nor ES), ``measured`` (the volume measured on the expert mask is
  at least as extreme on the chosen frame: pixel sampling), ``detection``, ``missed``, ``unread``
  (the loop could not be read). The shares are also given over the ``qc_clean`` beats (loop read,
  neither true frame rejected by the QC) and, for EF, the patients without a rejected true frame.
- **EF**: the patient's EF (biplane, mean over its beat pairs) against the truth's ``ef_pct``,
  the EF of the true 3-D volumes. That is like with like: the synthetic LV is sectioned by two
  orthogonal planes, so the biplane method of disks converges to the true volume (``truth.csv``'s
  ``edv_ml``/``esv_ml`` are that limit), while one view's single-plane volume is not the 3-D volume
  (``truth.csv``'s ``ef_2ch_pct``/``ef_4ch_pct`` and ``truth_frames.csv``'s ``volume_single_ml``
  are each view's single-plane limit). A patient with one measured view is scored single-plane
  against that view's single-plane truth. To separate detection from measurement, the same EF is
  computed on the expert masks of the *true* ED/ES frames (``ef_true_frames``): a patient whose
  detected EF misses the truth although the true frames hit it is a ``qc`` miss when one of its
  true frames was rejected by the QC, else a ``detection`` miss; one whose true frames miss too is
  a ``measurement`` (pixel grid) miss.
- **Heart rate**: the patient's ``heart_rate_bpm`` against the mean true rate of the views it was
  measured on (the views differ slightly: each loop's RR is whole frames at its own frame rate);
  per view, the rate of the detected cycle (recomputed from ``frames.parquet``'s volumes with
  :func:`echo_batch.measure.cycle.detect_cycle`, which must give back the same ED/ES frames)
  against that view's true rate.

Usage: ``python benchmarks/synth_loops_eval.py [--patients 150] [--max-side 128] [--native 30]
[--json F]`` (about 4 minutes on 2 cores). Issue 14 targets: ED and ES exact for >= 95 % of beats
and within one frame for all; EF within 2 points for >= 95 % of patients; heart rate within 3 bpm.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from echo_batch.domain import VIEWS, FramesMode, LoopKind, SegmentationSource, View
from echo_batch.errors import InputError
from echo_batch.io.discovery import discover
from echo_batch.io.image import read_sequence
from echo_batch.measure.cycle import detect_cycle
from echo_batch.measure.landmarks import ViewGeometry, measure_lv
from echo_batch.measure.patient import biplane_ml, single_plane_ml
from echo_batch.measure.volumes import ejection_fraction_pct
from echo_batch.run.chunk import GT_MODEL_ID
from echo_batch.run.options import ChunkOptions
from echo_batch.run.serial import process_serially
from echo_batch.store.records import FrameRecord, PatientRecord
from echo_batch.synth import synth_cohort

logger = logging.getLogger("synth_loops_eval")

EF_TOLERANCE_PTS = 2.0
HEART_RATE_TOLERANCE_BPM = 3.0
TARGETS = {
    "ed_exact_share": 0.95,
    "es_exact_share": 0.95,
    "ed_within_1_share": 1.0,
    "es_within_1_share": 1.0,
    "ef_within_2_share": 0.95,
    "heart_rate_within_3_share": 1.0,
}
"""Issue 14's targets for synthetic loops with expert masks."""


@dataclass(frozen=True)
class TrueLoop:
    """The truth of one view's loop (``truth.csv`` loop columns)."""

    kind: LoopKind
    eds: tuple[int, ...]
    ess: tuple[int, ...]
    heart_rate_bpm: float | None
    frame_time_ms: float | None


@dataclass(frozen=True)
class BeatScore:
    """One true beat and the detected beat matched to it (None: missed)."""

    patient_id: str
    view: str
    kind: str
    true_ed: int
    true_es: int
    ed: int | None
    es: int | None
    ed_cause: str | None = None
    es_cause: str | None = None
    qc_clean: bool = True  # the loop was read and neither true frame was rejected by the QC

    @property
    def ed_error(self) -> int | None:
        """Detected minus true ED frame."""
        return None if self.ed is None else self.ed - self.true_ed

    @property
    def es_error(self) -> int | None:
        """Detected minus true ES frame."""
        return None if self.es is None else self.es - self.true_es


def _frames(text: str) -> tuple[int, ...]:
    return tuple(int(f) for f in text.split())


def _float(text: str) -> float | None:
    return float(text) if text else None


def read_truth(root: Path) -> tuple[dict[str, dict[str, str]], dict[tuple[str, str], TrueLoop]]:
    """``truth.csv`` rows by patient, and each view's loop truth by (patient, view)."""
    with (root / "truth.csv").open() as fh:
        rows = {row["patient_id"]: row for row in csv.DictReader(fh)}
    loops = {}
    for pid, row in rows.items():
        for view in VIEWS:
            tag = view.value.lower()
            loops[pid, view.value] = TrueLoop(
                kind=LoopKind(row[f"loop_kind_{tag}"]),
                eds=_frames(row[f"ed_frames_{tag}"]),
                ess=_frames(row[f"es_frames_{tag}"]),
                heart_rate_bpm=_float(row[f"heart_rate_{tag}_bpm"]),
                frame_time_ms=_float(row[f"frame_time_{tag}_ms"]),
            )
    return rows, loops


def miss_cause(rows: list[FrameRecord], true: int, detected: int | None, largest: bool) -> str:
    """Why a detected ED (``largest``) or ES frame differs from the true one.

    ``qc``: the true frame was rejected by the QC (never ED or ES, by design); ``measured``: the
    volume measured on the detected frame is at least as extreme as on the true frame (the
    expert masks' pixel sampling moves the extreme, no detector could do better); ``detection``:
    the true frame's measured volume is more extreme, yet another frame was chosen; ``missed``: no
    detected beat for this true beat (a loop that could not be read is ``unread``, set by
    :func:`score_loops`).
    """
    if detected is None:
        return "missed"
    if rows[true].qc_rejected:
        return "qc"
    at_true, at_found = rows[true].volume_single_ml, rows[detected].volume_single_ml
    if at_true is None or at_found is None:
        return "detection"
    if (at_found >= at_true) if largest else (at_found <= at_true):
        return "measured"
    return "detection"


def detected_beats(rows: Iterable[FrameRecord]) -> list[tuple[int, int]]:
    """(ED, ES) frames of each detected beat of one loop, in beat order, from its frame rows."""
    eds: dict[int, int] = {}
    ess: dict[int, int] = {}
    for row in rows:
        if row.beat is None:
            continue
        if row.is_ed:
            eds[row.beat] = row.frame
        if row.is_es:
            ess[row.beat] = row.frame
    return [(eds[b], ess[b]) for b in sorted(eds) if b in ess]


def match_beats(
    truth: TrueLoop, found: list[tuple[int, int]], max_offset: float
) -> tuple[list[tuple[int, int, tuple[int, int] | None]], int]:
    """Match true beats to detected beats by ED frame.

    Greedy on the ED offset (smallest first), each detected beat used once, at most
    ``max_offset`` frames apart.

    Returns:
        Per true beat ``(true ED, true ES, matched (ED, ES) or None)``, and the number of detected
        beats left unmatched.
    """
    pairs = sorted(
        (abs(d[0] - t), i, j)
        for i, t in enumerate(truth.eds)
        for j, d in enumerate(found)
        if abs(d[0] - t) <= max_offset
    )
    matched: dict[int, int] = {}
    used: set[int] = set()
    for _, i, j in pairs:
        if i not in matched and j not in used:
            matched[i] = j
            used.add(j)
    out = [
        (ed, es, found[matched[i]] if i in matched else None)
        for i, (ed, es) in enumerate(zip(truth.eds, truth.ess, strict=True))
    ]
    return out, len(found) - len(used)


def view_heart_rate(rows: list[FrameRecord], truth: TrueLoop) -> tuple[float | None, bool]:
    """The detected cycle's heart rate of one loop, recomputed from its frame rows.

    The rows hold the volumes and validity that the chunk gave :func:`detect_cycle`, so running it
    again reproduces the chunk's cycle; the second value says whether its ED/ES frames equal the
    rows' (a check that the recomputation is faithful).
    """
    volumes = np.array([np.nan if r.volume_single_ml is None else r.volume_single_ml for r in rows])
    valid = np.array([not r.qc_rejected for r in rows])
    cycle = detect_cycle(
        volumes, truth.frame_time_ms, half_sequence=truth.kind == LoopKind.HALF, valid=valid
    )
    same = sorted((b.ed, b.es) for b in cycle.beats) == sorted(detected_beats(rows))
    return cycle.heart_rate_bpm, same


def ef_at_true_frames(
    root: Path, patient_id: str, loops: dict[str, TrueLoop]
) -> tuple[float | None, dict[str, float]]:
    """EF measured on the expert masks of the true ED/ES frames, as the chunk combines beats.

    Biplane per beat pair (2CH and 4CH beats paired in time order), mean over pairs; and per view
    the mean single-plane EF over its beats.

    Returns:
        (biplane EF or None, single-plane EF by view tag).
    """
    folder = root / "database_nifti" / patient_id
    geometries: dict[str, list[tuple[ViewGeometry, ViewGeometry]]] = {}
    for view in VIEWS:
        truth = loops[view.value]
        half = "half_" if truth.kind == LoopKind.HALF else ""
        gt = read_sequence(
            folder / f"{patient_id}_{view.value}_{half}sequence_gt.nii.gz", labels=True
        )
        spacing = gt.geometry.spacing
        beats = []
        for ed, es in zip(truth.eds, truth.ess, strict=True):
            pair = (measure_lv(gt.array[ed], spacing), measure_lv(gt.array[es], spacing))
            if all(isinstance(g, ViewGeometry) for g in pair):
                beats.append(pair)
        geometries[view.value] = beats
    single = {
        view.lower(): float(
            np.mean([ejection_fraction_pct(single_plane_ml(d), single_plane_ml(s)) for d, s in b])
        )
        for view, b in geometries.items()
        if b
    }
    pairs = list(zip(geometries[View.A2C.value], geometries[View.A4C.value], strict=False))
    if not pairs:
        return None, single
    efs = [ejection_fraction_pct(biplane_ml(a[0], b[0]), biplane_ml(a[1], b[1])) for a, b in pairs]
    return float(np.mean(efs)), single


def _ef_pair(patient: PatientRecord, truth: dict[str, str]) -> tuple[str, float | None, float]:
    """(which EF, measured EF, its truth): biplane when both views measured, else one view's."""
    if patient.ef_pct is not None:
        return "biplane", patient.ef_pct, float(truth["ef_pct"])
    for tag in ("2ch", "4ch"):
        value = getattr(patient, f"ef_{tag}_pct")
        if value is not None:
            return tag, value, float(truth[f"ef_{tag}_pct"])
    return "none", None, float(truth["ef_pct"])


def _share(flags: list[bool]) -> float | None:
    return float(np.mean(flags)) if flags else None


def _within(errors: Iterable[int | None], tolerance: int) -> list[bool]:
    return [e is not None and abs(e) <= tolerance for e in errors]


@dataclass
class LoopScores:
    """What the loops' frame rows say, against the truth (filled by :func:`score_loops`)."""

    beats: list[BeatScore] = field(default_factory=list)
    extra_beats: list[str] = field(default_factory=list)
    recompute_mismatch: list[str] = field(default_factory=list)
    view_rates: list[tuple[str, str, float, float | None, int]] = field(default_factory=list)
    qc_touched: set[str] = field(default_factory=set)  # a true ED/ES frame rejected by the QC


def _eds_in_clip(truth: TrueLoop, n_frames: int) -> int:
    """True ED instants inside the clip (the complete beats', and an incomplete beat's ED)."""
    if truth.heart_rate_bpm is None or truth.frame_time_ms is None or not truth.eds:
        return len(truth.eds)
    rr = 60_000.0 / truth.heart_rate_bpm / truth.frame_time_ms
    return len(truth.eds) + int(truth.eds[-1] + rr <= n_frames - 1 + 1e-6)


def score_loops(
    frames: list[FrameRecord], true_loops: dict[tuple[str, str], TrueLoop]
) -> LoopScores:
    """Beats matched and scored per loop; each view's heart rate from its detected cycle."""
    by_loop: dict[tuple[str, str], list[FrameRecord]] = defaultdict(list)
    for row in frames:
        by_loop[row.patient_id, row.view].append(row)
    scores = LoopScores()
    for (pid, view), truth in sorted(true_loops.items()):
        rows = sorted(by_loop.get((pid, view), []), key=lambda r: r.frame)
        if not rows:  # the loop could not be read: its beats are missed
            scores.beats += [
                BeatScore(
                    pid, view, truth.kind.value, ed, es, None, None, "unread", "unread", False
                )
                for ed, es in zip(truth.eds, truth.ess, strict=True)
            ]
            continue
        if any(rows[f].qc_rejected for f in (*truth.eds, *truth.ess)):
            scores.qc_touched.add(pid)
        found = detected_beats(rows)
        rr = (
            np.inf
            if truth.heart_rate_bpm is None or truth.frame_time_ms is None
            else 60_000.0 / truth.heart_rate_bpm / truth.frame_time_ms
        )
        matched, extra = match_beats(truth, found, max_offset=rr / 2)
        if extra:
            scores.extra_beats.append(
                f"{pid} {view}: {extra} extra: detected {found}, true ED {truth.eds} ES {truth.ess}"
            )
        for ed, es, hit in matched:
            found_ed, found_es = hit if hit is not None else (None, None)
            scores.beats.append(
                BeatScore(
                    pid,
                    view,
                    truth.kind.value,
                    ed,
                    es,
                    found_ed,
                    found_es,
                    None if found_ed == ed else miss_cause(rows, ed, found_ed, largest=True),
                    None if found_es == es else miss_cause(rows, es, found_es, largest=False),
                    not (rows[ed].qc_rejected or rows[es].qc_rejected),
                )
            )
        rate, same = view_heart_rate(rows, truth)
        if not same:
            scores.recompute_mismatch.append(f"{pid} {view}")
        if truth.heart_rate_bpm is not None:
            scores.view_rates.append(
                (pid, view, truth.heart_rate_bpm, rate, _eds_in_clip(truth, len(rows)))
            )
    return scores


def beat_figures(scores: LoopScores) -> dict[str, object]:
    """ED/ES exact and within-one shares over all true beats and over the QC-clean ones."""
    beats = scores.beats
    clean = [b for b in beats if b.qc_clean]
    causes: dict[str, dict[str, int]] = {"ed": defaultdict(int), "es": defaultdict(int)}
    for b in beats:
        for instant, cause in (("ed", b.ed_cause), ("es", b.es_cause)):
            if cause is not None:
                causes[instant][cause] += 1
    figures: dict[str, object] = {
        "beats": len(beats),
        "beats_missed": sum(b.ed is None for b in beats),
        "beats_extra": len(scores.extra_beats),
    }
    for suffix, group in (("", beats), ("_qc_clean", clean)):
        figures |= {
            f"ed_exact_share{suffix}": _share(_within((b.ed_error for b in group), 0)),
            f"es_exact_share{suffix}": _share(_within((b.es_error for b in group), 0)),
            f"ed_within_1_share{suffix}": _share(_within((b.ed_error for b in group), 1)),
            f"es_within_1_share{suffix}": _share(_within((b.es_error for b in group), 1)),
        }
    figures["beats_qc_clean"] = len(clean)
    figures["miss_causes"] = {k: dict(v) for k, v in causes.items()}
    figures["beat_misses"] = [
        f"{b.patient_id} {b.view} {b.kind}: ED {b.ed} vs {b.true_ed} ({b.ed_cause}), "
        f"ES {b.es} vs {b.true_es} ({b.es_cause})"
        for b in beats
        if b.ed_error != 0 or b.es_error != 0
    ]
    figures["extra_beats"] = scores.extra_beats
    return figures


def ef_figures(
    root: Path,
    patients: list[PatientRecord],
    truth_rows: dict[str, dict[str, str]],
    true_loops: dict[tuple[str, str], TrueLoop],
    qc_touched: set[str],
) -> dict[str, object]:
    """EF within 2 points of the truth; misses split into qc, detection and measurement."""
    rows = []
    for patient in patients:
        kind, measured, true_ef = _ef_pair(patient, truth_rows[patient.patient_id])
        loops = {v.value: true_loops[patient.patient_id, v.value] for v in VIEWS}
        try:
            biplane, single = ef_at_true_frames(root, patient.patient_id, loops)
        except InputError as exc:  # the pipeline could not read the loop either
            logger.warning("%s: %s", patient.patient_id, exc)
            biplane, single = None, {}
        rows.append(
            {
                "patient_id": patient.patient_id,
                "status": patient.status,
                "kind": kind,
                "ef": measured,
                "ef_truth": true_ef,
                "ef_true_frames": biplane if kind == "biplane" else single.get(kind),
                "n_beats": patient.n_beats,
                "frames_2ch_4ch": [
                    patient.ed_frame_2ch,
                    patient.es_frame_2ch,
                    patient.ed_frame_4ch,
                    patient.es_frame_4ch,
                ],
            }
        )

    def near(value: float | None, truth: float) -> bool:
        return value is not None and abs(value - truth) <= EF_TOLERANCE_PTS

    def diffs(key: str) -> np.ndarray:
        return np.array([np.nan if r[key] is None else r[key] - r["ef_truth"] for r in rows])

    ok = [near(r["ef"], r["ef_truth"]) for r in rows]
    misses = []
    for r, hit in zip(rows, ok, strict=True):
        if hit:
            continue
        if not near(r["ef_true_frames"], r["ef_truth"]):
            cause = "measurement"  # the true frames miss the truth too
        elif r["patient_id"] in qc_touched:
            cause = "qc"  # a true ED/ES frame was rejected by the QC, so another was taken
        else:
            cause = "detection"
        misses.append({**r, "cause": cause})
    clean = [hit for r, hit in zip(rows, ok, strict=True) if r["patient_id"] not in qc_touched]
    ef_diff, floor_diff = diffs("ef"), diffs("ef_true_frames")
    return {
        "ef_patients": len(rows),
        "ef_kinds": {
            k: sum(r["kind"] == k for r in rows) for k in sorted({r["kind"] for r in rows})
        },
        "ef_within_2_share": _share(ok),
        "ef_diff_mean": float(np.nanmean(ef_diff)),
        "ef_diff_mae": float(np.nanmean(np.abs(ef_diff))),
        "ef_diff_max_abs": float(np.nanmax(np.abs(ef_diff))),
        "ef_missing": int(np.isnan(ef_diff).sum()),
        "ef_patients_qc_clean": len(clean),
        "ef_within_2_share_qc_clean": _share(clean),
        "ef_miss_causes": {
            c: sum(m["cause"] == c for m in misses) for c in ("qc", "detection", "measurement")
        },
        "ef_true_frames_within_2_share": _share(
            [near(r["ef_true_frames"], r["ef_truth"]) for r in rows]
        ),
        "ef_true_frames_diff_mae": float(np.nanmean(np.abs(floor_diff))),
        "ef_true_frames_diff_max_abs": float(np.nanmax(np.abs(floor_diff))),
        "ef_misses": misses,
    }


def heart_rate_figures(
    patients: list[PatientRecord], view_rates: list[tuple[str, str, float, float | None, int]]
) -> dict[str, object]:
    """Patient heart rate against the mean true rate of the views that gave one; per view too."""
    truths: dict[str, list[float]] = defaultdict(list)
    for pid, _, true, rate, _ in view_rates:
        if rate is not None:
            truths[pid].append(true)
    rows = [
        (p.patient_id, p.heart_rate_bpm, float(np.mean(truths[p.patient_id])))
        for p in patients
        if truths.get(p.patient_id)
    ]
    ok = [r is not None and abs(r - t) <= HEART_RATE_TOLERANCE_BPM for _, r, t in rows]
    err = np.array([np.nan if r is None else r - t for _, r, t in rows], float)
    with_rate = [(t, r) for _, _, t, r, _ in view_rates if r is not None]
    return {
        "heart_rate_patients": len(rows),
        "heart_rate_within_3_share": _share(ok),
        "heart_rate_mae_bpm": float(np.nanmean(np.abs(err))) if rows else None,
        "heart_rate_max_abs_bpm": float(np.nanmax(np.abs(err))) if rows else None,
        "heart_rate_views": len(view_rates),
        "heart_rate_view_within_3_share": _share(
            [abs(r - t) <= HEART_RATE_TOLERANCE_BPM for t, r in with_rate]
        ),
        "heart_rate_views_without_rate": sum(r is None for _, _, _, r, _ in view_rates),
        "heart_rate_views_without_rate_but_two_eds": [
            f"{pid} {view}" for pid, view, _, r, eds in view_rates if r is None and eds >= 2
        ],
        "heart_rate_misses": [
            f"{pid}: {rate} vs {true:.2f}"
            for (pid, rate, true), hit in zip(rows, ok, strict=True)
            if not hit
        ],
    }


def evaluate(root: Path, label: str) -> dict[str, object]:
    """Run the cohort at ``root`` with expert masks and detected frames, and score it."""
    truth_rows, true_loops = read_truth(root)
    options = ChunkOptions(segmentation=SegmentationSource.GT, frames=FramesMode.DETECTED)
    t0 = time.perf_counter()
    result = process_serially(discover(root).patients, options, GT_MODEL_ID)
    seconds = time.perf_counter() - t0
    scores = score_loops(result.frames, true_loops)
    kinds: dict[str, int] = defaultdict(int)
    for loop in true_loops.values():
        kinds[loop.kind.value] += 1
    figures: dict[str, object] = {
        "cohort": label,
        "patients": len(result.patients),
        "patients_still_less": sum(r["has_stills"] == "False" for r in truth_rows.values()),
        "clips": len(true_loops),
        "clips_by_kind": dict(kinds),
        "clips_reversed": sum(
            r[f"reversed_{t}"] == "True" for r in truth_rows.values() for t in ("2ch", "4ch")
        ),
        "frames": len(result.frames),
        "run_seconds": round(seconds, 2),
        "stage_seconds": {k: round(v, 2) for k, v in result.seconds.items()},
        "status": {
            s: sum(p.status == s for p in result.patients)
            for s in sorted({p.status for p in result.patients})
        },
        "errors": [p.error for p in result.patients if p.status != "ok"],
        "cycle_recompute_mismatch": scores.recompute_mismatch,
    }
    figures |= beat_figures(scores)
    figures |= ef_figures(root, result.patients, truth_rows, true_loops, scores.qc_touched)
    figures |= heart_rate_figures(result.patients, scores.view_rates)
    figures["targets_met"] = {
        name: figures[name] is not None and figures[name] >= goal for name, goal in TARGETS.items()
    }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=150, help="patients at --max-side")
    parser.add_argument("--max-side", type=int, default=128, help="grid of the main cohort")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--native", type=int, default=0, help="also this many patients at native spacing"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", type=Path, help="synthesise here and keep it (else a temp dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        cohorts = [(f"max_side_{args.max_side}", args.patients, args.max_side)]
        if args.native:
            cohorts.append(("native", args.native, None))
        for label, n, side in cohorts:
            root = synth_cohort(base / label, n, seed=args.seed, max_side=side, loops=True)
            figures[label] = evaluate(root, label)
    text = json.dumps(figures, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
