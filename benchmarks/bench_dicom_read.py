"""Reading cost per frame: DICOM (JPEG baseline, uncompressed RGB) against NIfTI, same frames.

A synthetic DICOM cohort (``synth_dicom_cohort``; every patient once as JPEG baseline q95 and once
uncompressed) and the same rendered loops as CAMUS-style ``.nii.gz`` sequences
(``write_image``, uint8, gzip). Each file is read in turn in this one process, one thread:

- **DICOM header** (discovery): ``read_dicom_header`` per file, ms per file;
- **DICOM clip**: ``read_dicom_clip`` (parse, decode frame by frame, crop to the tissue region,
  colour masking, grey float32), ms per frame;
- **NIfTI**: ``read_sequence`` of the region-sized sequence, ms per frame.

The best of ``--repeats`` passes over all files is kept (a warm page cache, like a run that
reads each file once after discovery listed it). Usage:
``python benchmarks/bench_dicom_read.py [--patients 6] [--side 256|0] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from echo_batch.domain import VIEWS  # noqa: E402
from echo_batch.io.dicom import read_dicom_clip, read_dicom_header  # noqa: E402
from echo_batch.io.image import read_sequence  # noqa: E402
from echo_batch.io.writers import write_image  # noqa: E402
from echo_batch.synth import plan_cohort, render_phases  # noqa: E402
from echo_batch.synth.dicom import DicomEncoding, full_loops, synth_dicom_cohort  # noqa: E402


def _best(paths: list[Path], read, repeats: int) -> float:
    """Seconds of the fastest pass of ``read`` over ``paths``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            read(path)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the result record (also written as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=6)
    parser.add_argument(
        "--side", type=int, default=256, help="max_side of the rendered grid (0: native grids)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    side = args.side or None
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files: dict[str, list[Path]] = {}
        for encoding in (DicomEncoding.JPEG, DicomEncoding.NONE):
            out = synth_dicom_cohort(
                root / encoding.value,
                args.patients,
                args.seed,
                max_side=side,
                encoding=encoding,
            )
            files[encoding.value] = sorted((out / "dicom").iterdir())
        nifti = []
        for params, _ in plan_cohort(args.patients, args.seed, max_side=side):
            loops = full_loops(params)
            for view in VIEWS:
                _, images = render_phases(params, view, loops.loop(view).phases)
                path = root / "nifti" / f"{params.patient_id}_{view.value}_sequence.nii.gz"
                write_image(path, images, params.setup(view).spacing)
                nifti.append(path)
        headers = [read_dicom_header(p) for p in files["jpeg"]]
        n_frames = sum(h.n_frames for h in headers)
        pixels = sum(h.n_frames * h.frame_shape[0] * h.frame_shape[1] for h in headers)
        results = {
            "dicom_header_ms_per_file": 1000
            * _best(files["jpeg"], read_dicom_header, args.repeats)
            / len(files["jpeg"]),
            "dicom_jpeg_ms_per_frame": 1000
            * _best(files["jpeg"], read_dicom_clip, args.repeats)
            / n_frames,
            "dicom_uncompressed_ms_per_frame": 1000
            * _best(files["none"], read_dicom_clip, args.repeats)
            / n_frames,
            "nifti_gz_ms_per_frame": 1000 * _best(nifti, read_sequence, args.repeats) / n_frames,
        }
        sizes = {k: sum(p.stat().st_size for p in v) / n_frames for k, v in files.items()}
        sizes["nifti_gz"] = sum(p.stat().st_size for p in nifti) / n_frames
    record = {
        "benchmark": "dicom-read",
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "patients": args.patients,
        "files_per_encoding": 2 * args.patients,
        "frames": n_frames,
        "rendered_grid": "native (CAMUS-like, up to about 1,400 pixels a side)"
        if side is None
        else [side, side],
        "frame_pixels_mean": round(pixels / n_frames),
        "results": {k: round(v, 4) for k, v in results.items()},
        "bytes_per_frame": {k: round(v) for k, v in sizes.items()},
    }
    print(json.dumps(record, indent=2))
    target = (
        args.json or REPO / "benchmarks" / "results" / f"bench-dicom-read-{record['date']}.json"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    main()
