"""Human- and machine-readable summaries of a discovery manifest (``echo-batch discover``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from echo_batch.domain import IMAGE_KEYS, VIEWS
from echo_batch.io.discovery import Manifest


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    """Counts and problems of a manifest as plain JSON-friendly data.

    Args:
        manifest: result of :func:`echo_batch.io.discovery.discover`.

    Returns:
        Dict with ``root``, ``n_patients``, ``splits``, ``releases``, file counts, ``patients``
        (one entry per patient with its files and problems) and root-level ``problems``.
    """
    patients = []
    for ref in manifest.patients:
        patients.append(
            {
                "patient_id": ref.patient_id,
                "split": ref.split.value,
                "release": ref.release.value,
                "input_format": ref.format.value,
                "loop_formats": {
                    v.value: meta.input_format.value for v, meta in sorted(ref.clip_meta.items())
                },
                "images": sorted(str(k) for k in ref.images),
                "ground_truth": sorted(str(k) for k, f in ref.images.items() if f.gt is not None),
                "sequences": sorted(v.value for v in ref.sequences),
                "cfgs": sorted(v.value for v in ref.cfgs),
                "problems": list(ref.problems),
            }
        )
    files = Counter()
    for ref in manifest.patients:
        files["images"] += len(ref.images)
        files["ground_truth"] += sum(f.gt is not None for f in ref.images.values())
        files["sequences"] += len(ref.sequences)
        files["cfgs"] += len(ref.cfgs)
    formats: dict[str, Counter] = {}
    keys = ("patients", "stills", "loops", "patients_with_problems", "problems")
    for ref in manifest.patients:
        entry = formats.setdefault(ref.format.value, Counter(dict.fromkeys(keys, 0)))
        entry["patients"] += 1
        entry["loops"] += len(ref.sequences)
        entry["stills"] += len(ref.images)
        entry["patients_with_problems"] += bool(ref.problems)
        entry["problems"] += len(ref.problems)
    return {
        "root": str(manifest.root),
        "input_formats": {k: dict(v) for k, v in sorted(formats.items())},
        "n_patients": len(manifest.patients),
        "splits": dict(sorted(Counter(p.split.value for p in manifest.patients).items())),
        "releases": dict(sorted(Counter(p.release.value for p in manifest.patients).items())),
        "complete_patients": sum(p.complete for p in manifest.patients),
        "patients_with_gt": sum(p.has_gt for p in manifest.patients),
        "files": dict(files),
        "patients_with_problems": sum(bool(p.problems) for p in manifest.patients),
        "patients": patients,
        "problems": [{"path": str(p.path), "reason": p.reason} for p in manifest.problems],
    }


def render_summary(summary: dict[str, Any], max_problems: int = 50) -> str:
    """Plain-text rendering of :func:`manifest_summary` for the terminal."""
    n = summary["n_patients"]
    lines = [
        f"DATA root: {summary['root']}",
        f"patients: {n} ({summary['complete_patients']} with all {len(IMAGE_KEYS)} images, "
        f"{summary['patients_with_gt']} with ground truth)",
        "splits: " + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()),
    ]
    for fmt, found in summary.get("input_formats", {}).items():
        lines.append(
            f"input format {fmt}: {found['patients']} patients, {found.get('stills', 0)} stills, "
            f"{found.get('loops', 0)} loops, {found.get('problems', 0)} problems"
        )
    camus = [k for k in summary.get("input_formats", {}) if k.startswith("camus")]
    if camus:
        lines.append(
            "releases: "
            + ", ".join(f"CAMUS {k} layout: {v}" for k, v in summary["releases"].items())
        )
    lines += [
        "files: " + ", ".join(f"{k} {v}" for k, v in summary["files"].items()),
    ]
    cfg_views = Counter(v for p in summary["patients"] for v in p["cfgs"])
    lines.append("cfg files: " + ", ".join(f"Info_{v}.cfg {cfg_views.get(v, 0)}" for v in VIEWS))
    problems = [(p["patient_id"], msg) for p in summary["patients"] for msg in p["problems"]]
    problems += [(item["path"], item["reason"]) for item in summary["problems"]]
    lines.append(f"problems: {len(problems)}")
    for where, reason in problems[:max_problems]:
        lines.append(f"  {where}: {reason}")
    if len(problems) > max_problems:
        lines.append(f"  ... and {len(problems) - max_problems} more (use --json for all)")
    return "\n".join(lines)
