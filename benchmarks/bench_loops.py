"""Cost of a loop run against a stills run: frames per second against images per second.

In one process, one after the other, with the same engine (bundled model, one torch thread):

- **stills**: the bundled sample (``examples/camus224-test``, 50 patients, 200 images) through
  the chunk function, ``ChunkOptions(threads=1)`` (the CAMUS method and the expert comparison run
  per image) -> images per second;
- **loops**: the semi-real CAMUS-224 testing loops (``../shared/camus224-loops/testing``; when
  absent, a synthetic loop cohort at 224 px), ``ChunkOptions(threads=1, frames="detected")``
  (per frame only the cycle measurements run: landmarks, single-plane volume, image QC; the CAMUS
  method and the expert comparison only on the chosen ED/ES frames) -> frames per second.

Where the time goes, per image or frame: the chunk's own stages (``ChunkResult.seconds``: load =
read and decode, with the expert masks; segment = resize, network, labels; measure = everything
after), the network's part of segment (the share that ``SegmentationEngine.forward_only`` takes of
``segment`` on 64 of the same inputs, timed in turn, median of 3; the rest is resizing, labels
and confidence), and orchestration (wall time outside the three stages: chunking, merging the
records). Issue 14's target: loop frames/s >= stills images/s.

Usage: ``python benchmarks/bench_loops.py [--synthetic] [--synthetic-patients 16] [--json PATH]``
(about 4 minutes on one core); by default writes ``benchmarks/results/bench-loops-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from echo_batch import atomic

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "camus224-test"
LOOPS = REPO.parent / "shared" / "camus224-loops" / "testing"
RESULTS = REPO / "benchmarks" / "results"
NETWORK_SAMPLE = 64  # inputs of each run timed through segment and the network alone
ALTERNATE = 8  # inputs per step when segment and the network alone are timed in turn
SYNTHETIC_SIDE = 224

logger = logging.getLogger("bench_loops")


def _network_share(engine, samples: dict[str, list[np.ndarray]], repeat: int) -> dict[str, Any]:
    """Share of the engine's ``segment`` that is the network alone, per sample of inputs.

    Up to :data:`NETWORK_SAMPLE` inputs of each sample go through ``segment`` (resize, network,
    labels, confidence) and, put on the grid beforehand, through ``forward_only`` (the network
    alone), in turn by steps of :data:`ALTERNATE` inputs, ``repeat`` times; the medians' ratio is
    the network's share. A ratio of adjacent passes, not absolute times: on a shared machine the
    speed drifts between the runs and this measurement, while within a second it holds.

    Returns:
        Per sample: ``segment_ms`` and ``network_ms`` per input (medians) and ``network_share``.
    """
    from echo_batch.model.preprocess import to_grid

    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for name, arrays in samples.items():
        pick = rng.choice(len(arrays), size=min(NETWORK_SAMPLE, len(arrays)), replace=False)
        inputs = [arrays[i] for i in pick]
        grid = np.stack([to_grid(a, engine.input_size) for a in inputs])
        engine.segment(inputs[: engine.batch_size])  # warm-up
        segment, network = [], []
        for _ in range(repeat):
            seg_s = net_s = 0.0
            for start in range(0, len(inputs), ALTERNATE):  # alternating in small steps
                t0 = time.perf_counter()
                engine.segment(inputs[start : start + ALTERNATE])
                t1 = time.perf_counter()
                engine.forward_only(grid[start : start + ALTERNATE])
                seg_s += t1 - t0
                net_s += time.perf_counter() - t1
            segment.append(1000.0 * seg_s / len(inputs))
            network.append(1000.0 * net_s / len(inputs))
        seg_ms, net_ms = statistics.median(segment), statistics.median(network)
        out[name] = {
            "inputs": len(inputs),
            "segment_ms": round(seg_ms, 3),
            "network_ms": round(net_ms, 3),
            "network_share": round(net_ms / seg_ms, 4),
        }
    return out


def _timed_run(refs, options, model_id: str) -> tuple[Any, float]:
    """``process_serially`` (the ``echo-batch run --serial`` chunk loop, writing nothing); the
    result and its wall seconds. Both runs' options share the engine settings, so the
    process-wide engine of :func:`echo_batch.run.chunk.get_engine` serves both."""
    from echo_batch.run.serial import process_serially

    t0 = time.perf_counter()
    result = process_serially(refs, options, model_id)
    return result, time.perf_counter() - t0


def _budget(result, wall_s: float, count: int, network: dict[str, Any]) -> dict[str, Any]:
    """Milliseconds per image or frame of each stage, and the shares of the wall time.

    The network's part of the segment stage is the stage times the network share measured on a
    sample (:func:`_network_share`).
    """
    stages = {k: 1000.0 * v / count for k, v in result.seconds.items()}
    total = 1000.0 * wall_s / count
    network_ms = stages["segment"] * network["network_share"]
    ms = {
        "load (read and decode, with expert masks)": stages["load"],
        "segment (resize, network, labels)": stages["segment"],
        "  of which network": network_ms,
        "  of which resize, labels, confidence": stages["segment"] - network_ms,
        "measure (landmarks, volumes, QC, records)": stages["measure"],
        "orchestration (outside the stages)": total - sum(stages.values()),
        "total (wall)": total,
    }
    return {
        "ms": {k: round(v, 3) for k, v in ms.items()},
        "shares": {
            "load": round(stages["load"] / total, 4),
            "segment": round(stages["segment"] / total, 4),
            "network": round(network_ms / total, 4),
            "measure": round(stages["measure"] / total, 4),
            "orchestration": round(1 - sum(stages.values()) / total, 4),
        },
        "network_sample": network,
    }


def _loop_cohort(tmp: Path, n_patients: int, synthetic: bool) -> tuple[Path, str]:
    """The semi-real testing loops when present (and not ``synthetic``), else a synthetic loop
    cohort at 224 px."""
    if not synthetic and (LOOPS / "database_nifti").is_dir():
        return LOOPS, "camus224-loops/testing"
    from echo_batch.synth import synth_cohort

    root = synth_cohort(tmp / "loops", n_patients, seed=14, max_side=SYNTHETIC_SIDE, loops=True)
    return root, f"synthetic loops, {n_patients} patients at {SYNTHETIC_SIDE} px (seed 14)"


def bench(synthetic_patients: int, synthetic: bool = False) -> dict[str, Any]:
    """Both runs and their budgets (see the module docstring)."""
    import torch

    torch.set_num_threads(1)
    from echo_batch.domain import FramesMode
    from echo_batch.io.discovery import discover
    from echo_batch.io.image import read_image, read_sequence
    from echo_batch.run.chunk import get_engine, model_id_for
    from echo_batch.run.options import ChunkOptions

    load_before = os.getloadavg()
    stills_options = ChunkOptions(threads=1)
    loop_options = ChunkOptions(threads=1, frames=FramesMode.DETECTED)
    engine = get_engine(stills_options)
    assert get_engine(loop_options) is engine
    model_id = model_id_for(stills_options)
    stills_refs = discover(SAMPLE).patients
    _timed_run(stills_refs[:2], stills_options, model_id)  # warm-up: first batches, imports

    with tempfile.TemporaryDirectory() as tmp:
        loop_root, loop_source = _loop_cohort(Path(tmp), synthetic_patients, synthetic)
        loop_refs = discover(loop_root).patients
        stills, stills_s = _timed_run(stills_refs, stills_options, model_id)
        loops, loops_s = _timed_run(loop_refs, loop_options, model_id)
        images = [
            read_image(files.image, patient_dir=ref.folder).array
            for ref in stills_refs
            for files in ref.images.values()
        ]
        frames = [  # every 4th frame: enough to sample from, without holding every loop
            frame
            for ref in loop_refs
            for files in ref.sequences.values()
            for frame in read_sequence(files.image, patient_dir=ref.folder).array[::4]
        ]
        network = _network_share(engine, {"stills": images, "loops": frames}, repeat=3)

    n_images, n_frames = len(stills.images), len(loops.frames)
    images_per_s, frames_per_s = n_images / stills_s, n_frames / loops_s
    return {
        "date": datetime.date.today().isoformat(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "load_average_1_5_15_before": [round(x, 2) for x in load_before],
            "load_average_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        },
        "engine": {
            "model_id": model_id,
            "device": str(engine.device),
            "precision": engine.precision,
            "batch_size": engine.batch_size,
            "threads": torch.get_num_threads(),
        },
        "stills": {
            "source": "examples/camus224-test",
            "patients": len(stills.patients),
            "images": n_images,
            "seconds": round(stills_s, 2),
            "images_per_s": round(images_per_s, 2),
            "per_image": _budget(stills, stills_s, n_images, network["stills"]),
        },
        "loops": {
            "source": loop_source,
            "patients": len(loops.patients),
            "clips": sum(len(ref.sequences) for ref in loop_refs),
            "frames": n_frames,
            "seconds": round(loops_s, 2),
            "frames_per_s": round(frames_per_s, 2),
            "per_frame": _budget(loops, loops_s, n_frames, network["loops"]),
        },
        "frames_per_s_over_images_per_s": round(frames_per_s / images_per_s, 3),
        "target_met": frames_per_s >= images_per_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--synthetic-patients",
        type=int,
        default=16,
        help="patients of the synthetic loop cohort used when the semi-real loops are absent",
    )
    parser.add_argument(
        "--synthetic", action="store_true", help="synthetic loops even when the semi-real exist"
    )
    parser.add_argument("--json", type=Path, help="output file (default: benchmarks/results/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    figures = bench(args.synthetic_patients, args.synthetic)
    path = args.json or RESULTS / f"bench-loops-{figures['date']}.json"
    text = json.dumps(figures, indent=2)
    atomic.write_text(path, text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
