"""Two model bundles side by side: model-only images/s and end-to-end flow images/s, alternated.

Model-only = ``SegmentationEngine.forward_only`` in ``--workers`` concurrent processes of one
torch thread each (the flow's process layout), at the engine's precision for this CPU. End to end
= ``echo-batch run`` of the bundled sample replicated ``--replicas`` times with ``--model``. The
bundles alternate within each round (A B, then B A) so that a drift in the machine's load falls on
both; the figure per bundle is the median of its rounds, the ratio that of the medians.

Usage: ``python benchmarks/model_compare.py --bundles OLD NEW [--rounds 3] [--seconds 8]
[--workers 2] [--replicas 4] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_flow
import torch
from bench_engine import model_gflop_per_image
from suite import cpu_info

from echo_batch.model.bundle import load_bundle
from echo_batch.model.inference import SegmentationEngine, resolve_device, resolve_precision

logger = logging.getLogger("model_compare")


def _order(bundles: list[Path], round_index: int) -> list[Path]:
    return bundles if round_index % 2 == 0 else list(reversed(bundles))


def model_only(bundles: list[Path], rounds: int, seconds: float, workers: int) -> dict[str, list]:
    """Model-only images/s of each bundle per round, ``workers`` x 1 thread."""
    rates: dict[str, list[float]] = {str(b): [] for b in bundles}
    for r in range(rounds):
        for bundle in _order(bundles, r):
            ips = bench_flow.model_only_images_per_s(workers, seconds, bundle=bundle)
            rates[str(bundle)].append(ips)
            logger.info("round %d %s model-only %.1f img/s", r + 1, bundle.name, ips)
    return rates


def end_to_end(bundles: list[Path], rounds: int, workers: int, replicas: int) -> dict[str, list]:
    """Flow images/s of each bundle per round on the replicated sample."""
    rates: dict[str, list[float]] = {str(b): [] for b in bundles}
    with tempfile.TemporaryDirectory(prefix="model-compare-") as tmp:
        data = bench_flow.replicate_sample(Path(tmp) / "data", replicas)
        for r in range(rounds):
            for bundle in _order(bundles, r):
                out = Path(tmp) / f"out-{r}-{bundle.name}"
                case = bench_flow.flow_case(data, out, workers, ["--model", str(bundle)])
                if case["status"].get("ok", 0) != case["patients"]:
                    raise RuntimeError(f"{bundle}: not every patient ok: {case['status']}")
                rates[str(bundle)].append(case["images_per_s"])
                logger.info(
                    "round %d %s end to end %.1f img/s", r + 1, bundle.name, case["images_per_s"]
                )
    return rates


def summary(bundles: list[Path], rates: dict[str, list[float]]) -> dict[str, Any]:
    """Median per bundle and each bundle's ratio to the first."""
    medians = {str(b): statistics.median(rates[str(b)]) for b in bundles}
    first = medians[str(bundles[0])]
    return {
        "rounds": rates,
        "median": medians,
        "ratio_to_first": {k: v / first for k, v in medians.items()},
    }


def describe(bundle: Path) -> dict[str, Any]:
    """Id, architecture, GFLOP per image and recorded test metrics of a bundle."""
    loaded = load_bundle(bundle)
    engine = SegmentationEngine(loaded, device="cpu", precision="fp32")
    return {
        "model_id": loaded.model_id,
        "features": list(loaded.config.features),
        "n_parameters": loaded.metadata["architecture"].get("n_parameters"),
        "gflop_per_image": model_gflop_per_image(engine),
        "precision": resolve_precision(resolve_device("cpu")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundles", type=Path, nargs=2, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--skip-flow", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    bundles = list(args.bundles)
    results: dict[str, Any] = {
        "machine": {"cpu": cpu_info(), "torch": torch.__version__},
        "workers": args.workers,
        "bundles": {str(b): describe(b) for b in bundles},
        "model_only": summary(
            bundles, model_only(bundles, args.rounds, args.seconds, args.workers)
        ),
    }
    if not args.skip_flow:
        e2e = end_to_end(bundles, max(1, args.rounds - 1), args.workers, args.replicas)
        results["end_to_end"] = {"replicas": args.replicas, **summary(bundles, e2e)}
    for section in ("model_only", "end_to_end"):
        if section in results:
            for name, ratio in results[section]["ratio_to_first"].items():
                logger.info(
                    "%s %s: %.1f img/s, %.2fx the first",
                    section,
                    Path(name).name,
                    results[section]["median"][name],
                    ratio,
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
