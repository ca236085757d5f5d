"""Where the time of one model run goes, per image, in one process with one thread.

Runs the flow's chunk function (``pipeline.process_chunk``) on the bundled sample with the model,
then times its parts on the same images: resizing and normalising to the grid (``to_grid``) and
the network alone (``SegmentationEngine.forward_only``, the model-only benchmark). Whatever
``segment`` spends beyond these two is labels, confidence and the copies around the network.

Usage::

    python benchmarks/stage_budget.py [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "camus224-test"

logger = logging.getLogger("stage_budget")


def _best(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` calls of ``fn`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def stage_budget(repeat: int = 3) -> dict[str, Any]:
    """Milliseconds per image of each stage of a model run on the bundled sample (1 thread).

    Returns:
        ``{"images": n, "ms_per_image": {stage: ms}, "precision": ..., "batch_size": ...}``.
    """
    import torch

    torch.set_num_threads(1)
    from echo_batch.io.discovery import discover
    from echo_batch.io.image import read_image
    from echo_batch.model.preprocess import to_grid
    from echo_batch.run.chunk import get_engine, model_id_for, process_chunk
    from echo_batch.run.options import ChunkOptions

    refs = discover(SAMPLE).patients
    options = ChunkOptions(threads=1)
    engine = get_engine(options)
    model_id = model_id_for(options)
    process_chunk(refs[:2], options, model_id, engine=engine)  # warm-up
    runs = [process_chunk(refs, options, model_id, engine=engine) for _ in range(repeat)]
    n = 4 * len(refs)
    chunk = {k: statistics.median(r.seconds[k] for r in runs) for k in runs[0].seconds}
    images = [
        read_image(files.image, patient_dir=ref.folder).array
        for ref in refs
        for files in ref.images.values()
    ]
    size = engine.input_size
    grid_s = _best(lambda: [to_grid(i, size) for i in images], repeat)
    grid = np.stack([to_grid(i, size) for i in images])
    network_s = _best(lambda: engine.forward_only(grid), repeat)
    ms = {
        "load (read image and expert mask)": chunk["load"],
        "resize and normalise to the grid": grid_s,
        "network (forward_only)": network_s,
        "labels, confidence, copies (rest of segment)": chunk["segment"] - grid_s - network_s,
        "measurements (model and expert masks)": chunk["measure"],
    }
    ms = {k: 1000 * v / n for k, v in ms.items()}
    ms["total (process_chunk)"] = 1000 * sum(chunk.values()) / n
    return {
        "images": n,
        "precision": engine.precision,
        "batch_size": engine.batch_size,
        "threads": 1,
        "ms_per_image": ms,
        "network_share": ms["network (forward_only)"] / ms["total (process_chunk)"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = stage_budget(args.repeat)
    for stage, value in result["ms_per_image"].items():
        logger.info("%-48s %6.2f ms", stage, value)
    logger.info("network share of the chunk work: %.0f %%", 100 * result["network_share"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
