"""Scale run: the flow on large synthetic cohorts, with ``--segmentation gt`` and with the model.

For each size in ``--sizes`` (default 1,000 and 10,000 patients) and each segmentation source,
``echo-batch run DATA --out OUT --workers W`` runs as a subprocess while the RSS of every process
of its tree is sampled (flow process with the local Dask scheduler and nannies, Prefect API, each
Dask worker). Recorded per run: wall time of the whole command and of the flow, patients/s,
images/s, peak RSS in total and per process, Parquet bytes and rows, and the seconds
``pandas.read_parquet`` takes for each output file; then the growth from the smallest to the
largest size (time should grow about linearly, memory stay within 1.2x).

Cohorts: ``echo-batch synth DIR --patients N --seed S --max-side 256`` writes the largest cohort
once under ``--work`` (reused by later runs when complete); every smaller size is a subset of it,
the first N patient folders hard-linked (copied where links fail) into their own DATA root.
``echo-batch synth`` draws each patient from ``(seed, index)`` alone, so the files of a patient do
not depend on the cohort size (only the split lists do); the subsets are the same patients and
bytes as the first N of the big cohort. A 256 x 256 patient takes about 1.1 MB.

``--replicate-from B`` synthesises only B patients and makes every size of hard-linked copies of
them, renamed (copy k of ``patient0001`` is ``patient0001c00k``; its split and truth row follow
it), so that 100,000 patients fit on a disk of a few GB: every size holds whole copies of the
same B patients, in the same mix. ``--loops`` synthesises cine loops (``synth --loops``) and runs
with ``--frames detected``, so that every loop frame is segmented and written to
``frames.parquet``.

``--format dicom`` runs a cohort of ultrasound DICOM files listed by a manifest instead: the
``--replicate-from`` base loop cohort (default 100 patients, ``synth --loops``) is converted once,
each view's loop to one multi-frame file (``camus_loops_to_dicom``: JPEG baseline q95 by default,
``--dicom-encoding none`` for uncompressed; a tissue region carrying the NIfTI spacing; a made-up
patient name and birth date in every header), its NIfTI label loop hard-linked beside; the
manifest (``patient_id, view, path, spacing_row_mm, spacing_col_mm, gt_path``, spacing left empty
so that the DICOM regions give it) has one row per file. Every size is made of renamed hard links
of those files and a manifest whose rows carry the new patient ids (the headers keep the base
PatientID: a run takes the manifest's). Runs use ``--segmentation gt --frames detected``. Checked
per run: the patient ids written are the manifest's, ``frames`` has one row per frame of the
files, and no output file holds the name or birth date of the headers.

``--per-worker-check`` also runs the smallest size with 1 worker: the throughput of one worker
and what each added worker adds, for sizing clusters.

Takes long at the defaults (on the 2-core development machine roughly: synth 10,000 patients
15-20 min, gt runs 6 min, model runs 25 min); try ``--sizes 20 60`` first.

Usage::

    python benchmarks/scale_run.py [--sizes 1000 10000] [--segmentations gt model]
        [--workers 2] [--seed 7] [--max-side 256] [--work build/scale] [--per-worker-check]
        [--replicate-from 2000] [--loops] [--format nifti|dicom] [--dicom-encoding jpeg|none]
        [--out-dir benchmarks/results]

Writes ``<out-dir>/scale[-loops|-dicom]-<date>-<host>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import math
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench_flow
import perf_table
import suite

from echo_batch import atomic
from echo_batch.synth.dicom_convert import camus_loops_to_dicom

logger = logging.getLogger("scale_run")

REPO = Path(__file__).resolve().parents[1]
SEGMENTATIONS = ("gt", "model")
COMPLETE = ".complete"
FORMATS = ("nifti", "dicom")
DICOM_ENCODINGS = {"jpeg": 95, "none": None}  # JPEG baseline quality, None: uncompressed
DICOM_BASE_PATIENTS = 100
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("patient_id", "view", "path", "spacing_row_mm", "spacing_col_mm", "gt_path")
FILES = "files.csv"  # the manifest's rows with the frames of each file (n_frames)
IDENTITY = ("Scalerun^Imogen", "19410305")  # made up; written into every DICOM header


# ---------------------------------------------------------------- cohorts


def cohort_is_complete(root: Path, patients: int) -> bool:
    """True when ``root`` holds a finished cohort of ``patients`` (``truth.csv`` is written
    last by ``echo-batch synth``, and by :func:`subset_cohort` before its marker)."""
    truth = root / "truth.csv"
    folder = root / "database_nifti"
    if not truth.is_file() or not folder.is_dir():
        return False
    rows = len(truth.read_text().splitlines()) - 1
    return rows == patients and sum(1 for _ in folder.iterdir()) == patients


def cohort_name(patients: int, seed: int, max_side: int, loops: bool) -> str:
    """Folder name of a synthesised cohort under ``--work``."""
    return f"cohort-seed{seed}-side{max_side}-n{patients}" + ("-loops" if loops else "")


def synth_cohort(
    work: Path, patients: int, seed: int, max_side: int, loops: bool = False
) -> tuple[Path, float]:
    """The cohort of ``patients`` under ``work``, written unless a complete one is there.

    Returns:
        The DATA root and the seconds spent writing it (0 when reused).
    """
    root = work / cohort_name(patients, seed, max_side, loops)
    if cohort_is_complete(root, patients):
        logger.info("reusing %s", root)
        return root, 0.0
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    seconds = bench_flow.synthesize(root, patients, seed=seed, max_side=max_side, loops=loops)
    logger.info(
        "synth %d patients: %.0f s (%.1f patients/s)", patients, seconds, patients / seconds
    )
    return root, seconds


def subset_cohort(big: Path, patients: int, dest: Path) -> Path:
    """The first ``patients`` patients of ``big`` as their own DATA root (hard links).

    Keeps the split lists and ``truth.csv`` rows of those patients. Reused when complete.
    """
    if (dest / COMPLETE).is_file() and cohort_is_complete(dest, patients):
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    folders = sorted((big / "database_nifti").iterdir())[:patients]
    for folder in folders:
        target = dest / "database_nifti" / folder.name
        target.mkdir(parents=True)
        for path in folder.iterdir():
            link_or_copy(path, target / path.name)
    ids = {f.name for f in folders}
    for split_file in sorted((big / "database_split").glob("*.txt")):
        kept = [line for line in split_file.read_text().splitlines() if line in ids]
        out = dest / "database_split" / split_file.name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(f"{pid}\n" for pid in kept))
    lines = (big / "truth.csv").read_text().splitlines()
    (dest / "truth.csv").write_text("\n".join(lines[: patients + 1]) + "\n")
    (dest / COMPLETE).write_text(f"{big}\n{patients}\n")
    return dest


def replica_id(patient_id: str, copy: int) -> str:
    """Id of copy ``copy`` of a patient: the id itself for copy 0, else ``<id>c<copy:03d>``."""
    return patient_id if copy == 0 else f"{patient_id}c{copy:03d}"


def replicate_cohort(base: Path, patients: int, dest: Path) -> Path:
    """``patients`` patients made of hard-linked copies of ``base``'s, renamed (reused when
    complete).

    Copy 0 of every base patient comes first, then copy 1, ...; each copy's files are the base
    files under the new id (cfg files keep their names), in the base patient's split, with the
    base patient's row of ``truth.csv``.
    """
    if (dest / COMPLETE).is_file() and cohort_is_complete(dest, patients):
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    folders = sorted((base / "database_nifti").iterdir())
    copies = math.ceil(patients / len(folders))
    plan = [(copy, folder) for copy in range(copies) for folder in folders][:patients]
    header, *lines = (base / "truth.csv").read_text().splitlines()
    truth = {line.split(",", 1)[0]: line for line in lines}
    split_files = sorted((base / "database_split").glob("*.txt"))
    split_of = {pid: f.name for f in split_files for pid in f.read_text().split()}
    members: dict[str, list[str]] = defaultdict(list)
    rows = [header]
    for copy, folder in plan:
        pid = folder.name
        new = replica_id(pid, copy)
        target = dest / "database_nifti" / new
        target.mkdir(parents=True)
        for path in folder.iterdir():
            name = new + path.name[len(pid) :] if path.name.startswith(pid) else path.name
            link_or_copy(path, target / name)
        if pid in split_of:
            members[split_of[pid]].append(new)
        rows.append(new + truth[pid][len(pid) :])
    (dest / "database_split").mkdir(parents=True)
    for split_file in split_files:
        ids = members[split_file.name]
        (dest / "database_split" / split_file.name).write_text("".join(f"{i}\n" for i in ids))
    (dest / "truth.csv").write_text("\n".join(rows) + "\n")
    (dest / COMPLETE).write_text(f"{base}\n{patients}\n")
    return dest


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target``; copy when the file system refuses."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def cohorts(
    work: Path,
    sizes: Sequence[int],
    seed: int,
    max_side: int,
    loops: bool = False,
    replicate_from: int | None = None,
) -> tuple[dict[int, Path], float]:
    """DATA roots by size: the largest synthesised, the others subsets of it; or, with
    ``replicate_from``, every size made of copies of a synthesised base cohort.

    Returns:
        Roots by size and the synth seconds.
    """
    if replicate_from:
        base, seconds = synth_cohort(work, replicate_from, seed, max_side, loops)
        roots = {}
        for n in sorted(set(sizes)):
            t0 = time.perf_counter()
            roots[n] = replicate_cohort(base, n, work / f"{base.name}-x{n}")
            logger.info(
                "%d patients from copies of %s: %.0f s", n, base.name, time.perf_counter() - t0
            )
        return roots, seconds
    big, seconds = synth_cohort(work, max(sizes), seed, max_side, loops)
    roots = {max(sizes): big}
    for n in sorted(set(sizes) - {max(sizes)}):
        roots[n] = subset_cohort(big, n, work / f"{big.name}-first{n}")
    return roots, seconds


# ---------------------------------------------------------------- DICOM cohorts


def write_rows(path: Path, rows: Sequence[dict[str, object]], columns: Sequence[str]) -> None:
    """A CSV of ``rows`` with ``columns`` (absent values empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(rows)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV written by :func:`write_rows`."""
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def dicom_cohort(nifti: Path, dest: Path, jpeg_quality: int | None) -> Path:
    """A CAMUS-layout loop cohort as DICOM files under ``dest`` (reused when complete).

    ``dest/dicom/*.dcm`` (one multi-frame file per view, :func:`camus_loops_to_dicom`, the
    :data:`IDENTITY` in every header), ``dest/gt/*_gt.nii.gz`` (hard links), ``dest/files.csv``
    (the manifest rows with ``n_frames``) and ``dest/manifest.csv``.
    """
    if (dest / COMPLETE).is_file():
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    rows = []
    for folder in sorted((nifti / "database_nifti").iterdir()):
        rows += camus_loops_to_dicom(folder, dest, jpeg_quality=jpeg_quality, identity=IDENTITY)
    write_rows(dest / FILES, rows, (*MANIFEST_COLUMNS, "n_frames"))
    write_rows(dest / MANIFEST, rows, MANIFEST_COLUMNS)
    (dest / COMPLETE).write_text(f"{nifti}\n{jpeg_quality}\n")
    return dest


def replica_rows(rows: Sequence[dict[str, str]], patients: int) -> list[dict[str, str]]:
    """Manifest rows of ``patients`` patients made of renamed copies of those in ``rows``.

    Copy 0 of every patient (in the order of ``rows``) comes first, then copy 1, ...; a copy's
    rows are its base patient's, with the patient id :func:`replica_id` and every file named
    after it (a file name starting with the base id gets the new id instead, in the same
    folder). ``source`` and ``gt_source`` keep the base rows' paths.
    """
    by_patient: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_patient[row["patient_id"]].append(row)
    ids = list(by_patient)
    copies = math.ceil(patients / len(ids)) if ids else 0
    plan = [(copy, pid) for copy in range(copies) for pid in ids][:patients]
    out = []
    for copy, pid in plan:
        new = replica_id(pid, copy)
        for row in by_patient[pid]:
            renamed = {
                **row,
                "patient_id": new,
                "source": row["path"],
                "gt_source": row.get("gt_path", ""),
            }
            for key in ("path", "gt_path"):
                if row.get(key):
                    folder, _, name = row[key].rpartition("/")
                    name = new + name[len(pid) :] if name.startswith(pid) else name
                    renamed[key] = f"{folder}/{name}" if folder else name
            out.append(renamed)
    return out


def replicate_manifest(base: Path, patients: int, dest: Path) -> Path:
    """``patients`` patients of renamed hard links of a DICOM cohort's files (reused when
    complete); returns ``dest`` (its manifest is ``dest/manifest.csv``)."""
    if (dest / COMPLETE).is_file():
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    rows = replica_rows(read_rows(base / FILES), patients)
    for row in rows:
        for key, source in (("path", "source"), ("gt_path", "gt_source")):
            if row[source]:
                target = dest / row[key]
                if target.exists():  # a file not named after its patient: shared by the copies
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                link_or_copy(base / row[source], target)
    write_rows(dest / FILES, rows, (*MANIFEST_COLUMNS, "n_frames"))
    write_rows(dest / MANIFEST, rows, MANIFEST_COLUMNS)
    (dest / COMPLETE).write_text(f"{base}\n{patients}\n")
    return dest


def dicom_cohorts(
    work: Path,
    sizes: Sequence[int],
    seed: int,
    max_side: int,
    base_patients: int,
    encoding: str,
) -> tuple[dict[int, Path], float]:
    """Manifests by size, every size made of copies of one DICOM base cohort.

    Returns:
        The manifest of each size and the seconds spent synthesising and converting the base.
    """
    nifti, seconds = synth_cohort(work, base_patients, seed, max_side, loops=True)
    t0 = time.perf_counter()
    base = dicom_cohort(nifti, work / f"{nifti.name}-dicom-{encoding}", DICOM_ENCODINGS[encoding])
    convert = time.perf_counter() - t0
    logger.info("DICOM base cohort %s: %.0f s", base, convert)
    roots = {}
    for n in sorted(set(sizes)):
        roots[n] = replicate_manifest(base, n, work / f"{base.name}-x{n}") / MANIFEST
    return roots, seconds + convert


def dicom_checks(manifest: Path, out: Path) -> dict[str, Any]:
    """What a DICOM run must show: the manifest's patient ids, one ``frames`` row per frame of
    the files, and neither the name nor the birth date of the headers in any output file."""
    import pandas as pd

    files = read_rows(manifest.parent / FILES)
    ids = {row["patient_id"] for row in files}
    written = set(pd.read_parquet(out / "patients.parquet", columns=["patient_id"])["patient_id"])
    needles = [IDENTITY[0], IDENTITY[0].replace("^", " "), *IDENTITY[0].split("^"), IDENTITY[1]]
    hits = [
        str(path.relative_to(out))
        for path in sorted(out.rglob("*"))
        if path.is_file() and any(n.encode() in path.read_bytes() for n in needles)
    ]
    return {
        "expected_frames": sum(int(row["n_frames"]) for row in files),
        "patient_ids_are_the_manifests": written == ids,
        "identity_in_outputs": hits,
    }


# ---------------------------------------------------------------- runs


def run_case(
    data: Path,
    out: Path,
    workers: int,
    segmentation: str,
    chunk_size: int | None,
    frames: str | None = None,
):
    """One measured ``echo-batch run`` into a fresh ``out``.

    Returns:
        ``bench_flow.flow_case``'s figures plus ``segmentation``, ``workers``, ``frames``,
        ``process_patients_per_s`` (whole command, Prefect start included),
        ``parquet_bytes`` (``patients``, ``images``, ``frames`` and ``all`` files under OUT),
        ``rows`` and ``read_parquet_s`` per output file (:func:`read_outputs`).
    """
    if out.exists():
        shutil.rmtree(out)
    extra = ["--segmentation", segmentation]
    if chunk_size:
        extra += ["--chunk-size", str(chunk_size)]
    if frames:
        extra += ["--frames", frames]
    load_before = os.getloadavg()
    case = bench_flow.flow_case(data, out, workers, extra)
    load_after = os.getloadavg()
    parquet = {
        name: (out / f"{name}.parquet").stat().st_size
        for name in OUTPUTS
        if (out / f"{name}.parquet").is_file()
    }
    parquet["all"] = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    result = {
        "segmentation": segmentation,
        "workers": workers,
        "frames": frames,
        **case,
        "process_patients_per_s": case["patients"] / case["wall_s"],
        "parquet_bytes": parquet,
        **read_outputs(out),
        # 1-, 5- and 15-minute load averages before and after (a shared machine: other jobs)
        "load_average": {"before": list(load_before), "after": list(load_after)},
    }
    logger.info(
        "%s %d patients, %d workers: flow %.1f s (%.1f patients/s), command %.1f s, "
        "peak RSS %.0f MB %s, status %s, rows %s, read_parquet %s s",
        segmentation,
        case["patients"],
        workers,
        case["flow_wall_s"],
        case["patients_per_s"],
        case["wall_s"],
        case["peak_rss_mb"],
        {k: round(v) for k, v in case["peak_rss_by_role_mb"].items()},
        case["status"],
        result["rows"],
        {k: round(v, 2) for k, v in result["read_parquet_s"].items()},
    )
    return result


OUTPUTS = ("patients", "images", "frames")


def read_outputs(out: Path) -> dict[str, dict[str, float]]:
    """``rows`` and ``read_parquet_s`` (seconds of ``pandas.read_parquet``, every column) of
    each output file of ``out``."""
    import pandas as pd

    rows, seconds = {}, {}
    for name in OUTPUTS:
        path = out / f"{name}.parquet"
        if not path.is_file():
            continue
        t0 = time.perf_counter()
        frame = pd.read_parquet(path)
        seconds[name] = time.perf_counter() - t0
        rows[name] = len(frame)
        del frame
    return {"rows": rows, "read_parquet_s": seconds}


def growth(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """Ratios from the small run to the large one (same segmentation and workers)."""
    patients = large["patients"] / small["patients"]
    wall = large["flow_wall_s"] / small["flow_wall_s"]
    rss = large["peak_rss_mb"] / small["peak_rss_mb"]
    roles = small["peak_rss_by_role_mb"].keys() & large["peak_rss_by_role_mb"].keys()
    by_role = {
        r: large["peak_rss_by_role_mb"][r] / small["peak_rss_by_role_mb"][r] for r in sorted(roles)
    }
    return {
        "from_patients": small["patients"],
        "to_patients": large["patients"],
        "patients_ratio": patients,
        "flow_wall_ratio": wall,
        "command_wall_ratio": large["wall_s"] / small["wall_s"],
        "time_per_patient_ratio": wall / patients,
        "peak_rss_ratio": rss,
        "peak_rss_by_role_ratio": by_role,
        "memory_flat": rss <= 1.2 and by_role.get("flow", 1.0) <= 1.2,
        "time_linear": wall / patients <= 1.05,  # e.g. at most 10.5x for 10x the patients
        "parquet_ratio": large["parquet_bytes"]["all"] / small["parquet_bytes"]["all"],
    }


def per_worker(one: dict[str, Any], many: dict[str, Any]) -> dict[str, Any]:
    """Throughput of one worker and what each added worker adds (flow wall time)."""
    workers = many["workers"]
    added = (many["patients_per_s"] - one["patients_per_s"]) / max(workers - 1, 1)
    return {
        "patients": one["patients"],
        "one_worker_patients_per_s": one["patients_per_s"],
        "workers": workers,
        "workers_patients_per_s": many["patients_per_s"],
        "added_per_worker_patients_per_s": added,
        "added_per_worker_images_per_s": 4 * added,
        "scaling_efficiency": many["patients_per_s"] / (workers * one["patients_per_s"]),
    }


def scale_run(args: argparse.Namespace) -> dict[str, Any]:
    """Cohorts, runs, growth and per-worker figures (see the module docstring)."""
    started = dt.datetime.now().astimezone()
    dicom = args.format == "dicom"
    if dicom:
        roots, synth_seconds = dicom_cohorts(
            args.work,
            args.sizes,
            args.seed,
            args.max_side,
            args.replicate_from or DICOM_BASE_PATIENTS,
            args.dicom_encoding,
        )
    else:
        roots, synth_seconds = cohorts(
            args.work, args.sizes, args.seed, args.max_side, args.loops, args.replicate_from
        )
    loops = args.loops or dicom
    frames = "detected" if loops else None
    tag = f"-dicom-{args.dicom_encoding}" if dicom else "-loops" if loops else ""
    runs: dict[tuple[str, int, int], dict[str, Any]] = {}
    for n in sorted(roots):
        for seg in args.segmentations:
            out = args.work / f"out{tag}-{seg}-n{n}-w{args.workers}"
            runs[seg, n, args.workers] = run_case(
                roots[n], out, args.workers, seg, args.chunk_size, frames
            )
            if dicom:
                runs[seg, n, args.workers]["dicom"] = checks = dicom_checks(roots[n], out)
                logger.info("DICOM checks, %d patients: %s", n, checks)
    lo, hi = min(roots), max(roots)
    result: dict[str, Any] = {
        "kind": "echo-batch-scale",
        "date": started.date().isoformat(),
        "started_at": started.isoformat(timespec="seconds"),
        "settings": {
            "sizes": sorted(roots),
            "segmentations": list(args.segmentations),
            "workers": args.workers,
            "chunk_size": args.chunk_size,
            "seed": args.seed,
            "max_side": args.max_side,
            "loops": loops,
            "frames": frames,
            "replicate_from": args.replicate_from,
            "format": args.format,
            "dicom_encoding": args.dicom_encoding if dicom else None,
            "dicom_jpeg_quality": DICOM_ENCODINGS[args.dicom_encoding] if dicom else None,
        },
        "cohort": {"root": str(roots[hi]), "synth_seconds": synth_seconds},
        "git": suite.git_state(),
        "machine": suite.machine_info(),
    }
    if lo != hi:
        result["growth"] = {
            seg: growth(runs[seg, lo, args.workers], runs[seg, hi, args.workers])
            for seg in args.segmentations
        }
    if args.per_worker_check and args.workers > 1:
        result["per_worker"] = {}
        for seg in args.segmentations:
            out = args.work / f"out{tag}-{seg}-n{lo}-w1"
            runs[seg, lo, 1] = run_case(roots[lo], out, 1, seg, args.chunk_size, frames)
            result["per_worker"][seg] = per_worker(runs[seg, lo, 1], runs[seg, lo, args.workers])
    result["runs"] = list(runs.values())
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    return result


# ---------------------------------------------------------------- report


def markdown(result: dict[str, Any]) -> str:
    """Markdown tables of one scale run."""
    rows = []
    for r in result["runs"]:
        rows.append(
            (
                r["segmentation"],
                f"{r['patients']:,}",
                r["workers"],
                f"{r['wall_s']:.0f} s",
                f"{r['flow_wall_s']:.1f} s",
                perf_table.num(r["patients_per_s"]),
                perf_table.num(r["images_per_s"]),
                f"{perf_table.num(r['peak_rss_mb'], 0)} MB",
                perf_table.role_peaks(r),
                f"{r['parquet_bytes']['all'] / 2**20:.2f} MB",
                " / ".join(f"{r['rows'].get(k, 0):,}" for k in OUTPUTS),
                " / ".join(f"{r['read_parquet_s'][k]:.2f}" for k in OUTPUTS if k in r["rows"]),
            )
        )
    header = (
        "segmentation",
        "patients",
        "workers",
        "command wall",
        "flow wall",
        "patients/s",
        "images/s",
        "peak RSS, all processes",
        "flow / Prefect API / largest worker",
        "Parquet",
        "rows: patients / images / frames",
        "read_parquet s",
    )
    lines = [perf_table.machine_line({**result, "mode": "full"}, None), ""]
    lines += perf_table.table(header, rows)
    for seg, g in result.get("growth", {}).items():
        lines += [
            "",
            f"{seg}: {g['from_patients']:,} -> {g['to_patients']:,} patients "
            f"(x{g['patients_ratio']:.0f}): flow wall time x{g['flow_wall_ratio']:.2f} "
            f"(time per patient x{g['time_per_patient_ratio']:.2f}), peak RSS "
            f"x{g['peak_rss_ratio']:.2f}, flow process "
            f"x{g['peak_rss_by_role_ratio'].get('flow', float('nan')):.2f} "
            f"(flat within 1.2x: {perf_table.yes_no(g['memory_flat'])}; time within 1.05x per "
            f"patient: {perf_table.yes_no(g['time_linear'])}).",
        ]
    for r in result["runs"]:
        if "dicom" in r:
            d = r["dicom"]
            same_ids = perf_table.yes_no(d["patient_ids_are_the_manifests"])
            lines += [
                "",
                f"DICOM, {r['patients']:,} patients: status {r['status']}; frames rows "
                f"{r['rows'].get('frames', 0):,} of {d['expected_frames']:,} frames in the "
                f"files; patient ids the manifest's: {same_ids}; header name or birth date in "
                f"an output file: {', '.join(d['identity_in_outputs']) or 'none'}.",
            ]
    for seg, w in result.get("per_worker", {}).items():
        lines += [
            "",
            f"{seg}, {w['patients']:,} patients: 1 worker "
            f"{w['one_worker_patients_per_s']:.1f} patients/s, {w['workers']} workers "
            f"{w['workers_patients_per_s']:.1f}; each added worker adds "
            f"{w['added_per_worker_patients_per_s']:.1f} patients/s "
            f"({w['added_per_worker_images_per_s']:.0f} images/s; scaling efficiency "
            f"{perf_table.pct(w['scaling_efficiency'])}).",
        ]
    return "\n".join(lines) + "\n"


def write_result(result: dict[str, Any], out_dir: Path) -> Path:
    """``<out_dir>/scale[-loops|-dicom-<encoding>]-<date>-<host>.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = result["settings"]
    tag = "-loops" if settings.get("loops") else ""
    if settings.get("format") == "dicom":
        tag = f"-dicom-{settings['dicom_encoding']}"
    path = out_dir / f"scale{tag}-{result['date']}-{result['machine']['host']}.json"
    return atomic.write_text(path, json.dumps(result, indent=2) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--segmentations", nargs="+", choices=SEGMENTATIONS, default=SEGMENTATIONS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=None, help="default: the flow's")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-side", type=int, default=256)
    parser.add_argument("--work", type=Path, default=REPO / "build" / "scale", help="cohorts, OUTs")
    parser.add_argument(
        "--replicate-from",
        type=int,
        default=None,
        metavar="B",
        help="synthesise B patients; every size is made of renamed hard-linked copies of them",
    )
    parser.add_argument(
        "--loops",
        action="store_true",
        help="cine-loop cohorts (synth --loops), runs with --frames detected",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="nifti",
        help="dicom: manifests of DICOM loop files with NIfTI label loops (implies --loops)",
    )
    parser.add_argument(
        "--dicom-encoding",
        choices=sorted(DICOM_ENCODINGS),
        default="jpeg",
        help="pixels of the DICOM files: JPEG baseline q95 or uncompressed",
    )
    parser.add_argument(
        "--per-worker-check",
        action="store_true",
        help="also run the smallest size with 1 worker (throughput added per worker)",
    )
    parser.add_argument("--out-dir", type=Path, default=perf_table.RESULTS_DIR)
    args = parser.parse_args(argv)
    if min(args.sizes) < 1:
        parser.error("--sizes must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    result = scale_run(args)
    path = write_result(result, args.out_dir)
    print(markdown(result))
    logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
