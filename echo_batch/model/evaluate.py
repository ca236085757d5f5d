"""Evaluation of a bundle on one split: segmentation metrics per instant and EF agreement.

Used once, after training, to record the test metrics in the bundle metadata; it never feeds back
into training or model selection.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from echo_batch.domain import Instant, SegmentationSource, Split
from echo_batch.io.discovery import discover
from echo_batch.model.bundle import update_metadata
from echo_batch.qc.agreement import ef_agreements
from echo_batch.run.chunk import model_id_for
from echo_batch.run.options import ChunkOptions
from echo_batch.run.serial import process_serially
from echo_batch.store.records import ImageRecord

logger = logging.getLogger(__name__)

IMAGE_METRICS = ("dice_lv", "dice_myo", "dice_la", "hd_lv_mm", "hd95_lv_mm", "mad_lv_mm")


def image_metric_table(images: list[ImageRecord]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and SD of each image metric per instant.

    Returns:
        ``{instant: {metric: {"mean": .., "sd": .., "n": ..}}}``.
    """
    table: dict[str, dict[str, dict[str, float]]] = {}
    for instant in Instant:
        rows = [r for r in images if r.instant == instant.value]
        table[instant.value] = {}
        for metric in IMAGE_METRICS:
            values = np.array([getattr(r, metric) for r in rows if getattr(r, metric) is not None])
            if len(values):
                table[instant.value][metric] = {
                    "mean": float(values.mean()),
                    "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "n": len(values),
                }
    return table


def evaluate_bundle(
    bundle: Path, data: Path, split: Split, *, record: bool = True, chunk_size: int = 16
) -> dict[str, Any]:
    """Run the model on one split and compute its metrics.

    Args:
        bundle: bundle directory.
        data: CAMUS-layout DATA root with split files.
        split: split to evaluate (the testing split for the final report).
        record: write the metrics into ``metadata.json`` under ``metrics.<split>``.
        chunk_size: patients per chunk.

    Returns:
        ``{"n_patients", "images": per-instant metrics, "ef": agreement}``.
    """
    manifest = discover(data)
    refs = list(manifest.by_split(split))
    if not refs:
        raise ValueError(f"{data}: no patients in the {split.value} split")
    options = ChunkOptions(segmentation=SegmentationSource.MODEL, model=bundle)
    result = process_serially(refs, options, model_id_for(options), chunk_size)
    patients, images = result.patients, result.images
    metrics = {
        "data": Path(data).name,
        "split": split.value,
        "n_patients": len(patients),
        "n_images": len(images),
        "images": image_metric_table(images),
        "ef": ef_agreements(patients),
    }
    if record:
        from echo_batch.model.bundle import load_bundle

        current = load_bundle(bundle).metadata.get("metrics", {})
        update_metadata(bundle, metrics={**current, split.value: metrics})
    return metrics
