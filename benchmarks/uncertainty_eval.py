"""Test-time variants of the bundled model on a CAMUS-224 split: accuracy and uncertainty of EF.

For every candidate variant (``echo_batch.model.tta``) the split's images are segmented once; the
patients are then measured with each variant's labels alone and with the labels of the mean
probabilities of a member set. Printed and written as JSON: per variant and per set, the EF
agreement (``ef_camus_pct`` and ``ef_pct`` against the cfg EF), the EF SD between the set's
members, whether the SD ranks the errors (MAE of the top SD quarter / MAE of the rest), the share
of patients within 2 SD, and the inference cost relative to the plain pass.

Selection happens on ``validation``; ``testing`` is run once, with the set chosen there.

Usage::

    python benchmarks/uncertainty_eval.py --split validation [--out FILE.json]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from echo_batch.domain import SegmentationSource
from echo_batch.io.discovery import discover
from echo_batch.model.ensemble import VariantEngine
from echo_batch.model.inference import Segmentation, SegmentationEngine, to_native
from echo_batch.model.preprocess import to_grid
from echo_batch.model.tta import Variant
from echo_batch.run.chunk import model_id_for, process_chunk
from echo_batch.run.options import ChunkOptions

SHARED = Path(__file__).resolve().parents[2] / "shared"
CAMUS224 = SHARED / "camus224"

Member = tuple[int, int]
"""``(bundle index, candidate index)``."""

CANDIDATES = (
    Variant(),
    Variant(scale=0.9),
    Variant(scale=1.1),
    Variant(gamma=0.7),
    Variant(gamma=1.4),
    Variant(scale=0.9, gamma=1.4),
    Variant(scale=1.1, gamma=0.7),
)


class _CachedVariants:
    """Grid probabilities of every member for every image seen, computed once per image.

    A member is ``(bundle index, candidate index)``: one network on one test-time variant.
    """

    def __init__(self, engines: list[SegmentationEngine], used: list[Member]) -> None:
        self.used = used
        self.members = {
            b: (
                VariantEngine(engine, [CANDIDATES[k] for bb, k in used if bb == b]),
                [(bb, k) for bb, k in used if bb == b],
            )
            for b, engine in enumerate(engines)
            if any(bb == b for bb, _ in used)
        }
        self.cache: dict[str, dict[Member, np.ndarray]] = {}  # digest -> (H, W, C) per member
        self.seconds = 0.0  # inference of every used member

    def probs(self, images: list[np.ndarray]) -> list[dict[Member, np.ndarray]]:
        todo = [i for i, img in enumerate(images) if _digest(img) not in self.cache]
        if todo:
            t0 = time.perf_counter()
            for engine, keys in self.members.values():
                grid = np.stack([to_grid(images[i], engine.input_size) for i in todo])
                per_variant = engine.member_probabilities(grid)  # (M, N, H, W, C)
                for k, i in enumerate(todo):
                    entry = self.cache.setdefault(_digest(images[i]), {})
                    entry.update({key: per_variant[m, k] for m, key in enumerate(keys)})
            self.seconds += time.perf_counter() - t0
        return [self.cache[_digest(img)] for img in images]


def _member(text: str) -> Member:
    """``"k"`` (candidate k of the first bundle) or ``"b:k"``."""
    bundle, _, candidate = text.rpartition(":")
    return int(bundle or 0), int(candidate)


def _name(member: Member) -> str:
    bundle, candidate = member
    return (
        f"{CANDIDATES[candidate].name}"
        if bundle == 0
        else f"b{bundle}:{CANDIDATES[candidate].name}"
    )


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class _MemberEngine:
    """Engine interface answering with the mean probabilities of a subset of the candidates."""

    def __init__(self, cached: _CachedVariants, members: tuple[Member, ...]) -> None:
        self.cached, self.members, self.batch_size = cached, members, 2

    def segment(self, images):
        out = []
        for image, probs in zip(images, self.cached.probs(list(images)), strict=True):
            mean = np.mean([probs[m] for m in self.members], axis=0)
            out.append(to_native(mean, image.shape))
        return [Segmentation(s.labels, s.confidence) for s in out]


def _agreement(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    ok = np.isfinite(pred) & np.isfinite(ref)
    d = pred[ok] - ref[ok]
    return {
        "n": int(ok.sum()),
        "mae": float(np.abs(d).mean()),
        "bias": float(d.mean()),
        "r": float(np.corrcoef(pred[ok], ref[ok])[0, 1]),
    }


def _sd_ranks_errors(err: np.ndarray, sd: np.ndarray) -> dict[str, float]:
    """MAE of the quarter with the largest SD over the MAE of the other three quarters."""
    ok = np.isfinite(err) & np.isfinite(sd)
    err, sd = np.abs(err[ok]), sd[ok]
    top = np.argsort(-sd, kind="stable")[: max(1, len(sd) // 4)]
    rest = np.setdiff1d(np.arange(len(sd)), top)
    return {
        "top_quarter_mae": float(err[top].mean()),
        "rest_mae": float(err[rest].mean()),
        "ratio": float(err[top].mean() / max(err[rest].mean(), 1e-9)),
        "within_2sd": float(np.mean(err <= 2 * np.maximum(sd, 1e-9))),
        "mean_sd": float(sd.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="validation", choices=("validation", "testing"))
    parser.add_argument("--data", type=Path, default=CAMUS224)
    parser.add_argument(
        "--sets",
        default="",
        help="member sets, e.g. '0,1,2;0,3,4' (candidates of the first bundle) or "
        "'0:0,1:0;0:0,0:1' (bundle:candidate)",
    )
    parser.add_argument(
        "--bundles",
        nargs="+",
        type=Path,
        default=None,
        help="networks whose members are crossed with the candidates (default: the default bundle)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    refs = [p for p in discover(args.data).patients if p.split.value == args.split]
    options = ChunkOptions(segmentation=SegmentationSource.MODEL, threads=2)
    model_id = model_id_for(options)
    bundles = args.bundles or [None]
    engines = [SegmentationEngine.from_path(b, device="cpu", threads=2) for b in bundles]
    if args.sets:
        sets = [tuple(_member(i) for i in s.split(",")) for s in args.sets.split(";")]
    else:
        sets = [
            tuple((0, k) for k in (0, *c))
            for n in (2, 4)
            for c in itertools.combinations(range(1, 7), n)
        ]
    used = sorted({m for members in sets for m in members})
    cached = _CachedVariants(engines, used)

    def measure(members: tuple[Member, ...]) -> dict[str, dict[str, float]]:
        result = process_chunk(refs, options, model_id, engine=_MemberEngine(cached, members))
        return {
            p.patient_id: {
                "ef_camus": np.nan if p.ef_camus_pct is None else p.ef_camus_pct,
                "ef": np.nan if p.ef_pct is None else p.ef_pct,
                "ref": np.nan if p.ef_ref_pct is None else p.ef_ref_pct,
            }
            for p in result.patients
        }

    t0 = time.perf_counter()
    single = {key: measure((key,)) for key in used}
    ids = sorted(single[used[0]])
    ref = np.array([single[used[0]][p]["ref"] for p in ids])
    report: dict[str, object] = {
        "split": args.split,
        "patients": len(ids),
        "model_id": model_id,
        "bundles": [e.model_id for e in engines],
        "candidates": [v.to_dict() for v in CANDIDATES],
        "inference_seconds": cached.seconds,
        "variants": {},
        "sets": {},
    }
    for key in used:
        name = _name(key)
        ef_c = np.array([single[key][p]["ef_camus"] for p in ids])
        ef = np.array([single[key][p]["ef"] for p in ids])
        report["variants"][name] = {
            "ef_camus_vs_cfg": _agreement(ef_c, ref),
            "ef_vs_cfg": _agreement(ef, ref),
        }
        print(f"{name:16s} camus {report['variants'][name]['ef_camus_vs_cfg']}")
    for members in sets:
        ens = measure(members)
        name = "+".join(_name(m) for m in members)
        entry: dict[str, object] = {"members": list(members)}
        for column in ("ef_camus", "ef"):
            pred = np.array([ens[p][column] for p in ids])
            spread = np.array([[single[m][p][column] for m in members] for p in ids])
            sd = np.nanstd(spread, axis=1, ddof=1)
            entry[f"{column}_vs_cfg"] = _agreement(pred, ref)
            entry[f"{column}_sd_ranks_errors"] = _sd_ranks_errors(pred - ref, sd)
        report["sets"][name] = entry
        print(
            f"{name:60s} camus {entry['ef_camus_vs_cfg']} rank {entry['ef_camus_sd_ranks_errors']}",
            flush=True,
        )
    report["seconds"] = time.perf_counter() - t0
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
