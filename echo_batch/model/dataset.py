"""In-memory training data: still frames and expert labels of one split, on the network grid."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from echo_batch.domain import Split
from echo_batch.errors import InputError
from echo_batch.io.discovery import Manifest
from echo_batch.io.image import read_image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentationSet:
    """Images and labels of one split.

    Attributes:
        images: ``(N, rows, cols)`` float32 intensities min-max scaled to [0, 1].
        labels: ``(N, rows, cols)`` uint8 labels 0-3.
        names: ``patientXXXX_VIEW_INSTANT`` per image.
    """

    images: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]


def resize_pair(
    image: np.ndarray, labels: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (area) and its label map (nearest) to ``size`` = ``(rows, cols)``."""
    if image.shape != size:
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        labels = cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    lo, hi = float(image.min()), float(image.max())
    image = (image - lo) / max(hi - lo, 1e-6)
    return image.astype(np.float32), labels.astype(np.uint8)


def load_split(manifest: Manifest, split: Split, size: tuple[int, int]) -> SegmentationSet:
    """Read every labelled still frame of one split.

    Args:
        manifest: discovered patients.
        split: which split to read.
        size: ``(rows, cols)`` network grid.

    Returns:
        SegmentationSet; images whose files are unreadable are skipped with a warning.
    """
    images, labels, names = [], [], []
    for ref in manifest.by_split(split):
        for key, files in ref.images.items():
            if files.gt is None or files.image is None:
                continue
            try:
                img = read_image(files.image, patient_dir=ref.folder).array
                gt = read_image(files.gt, patient_dir=ref.folder, labels=True).array
            except InputError as exc:
                logger.warning("%s: skipped for training: %s", ref.patient_id, exc)
                continue
            img, gt = resize_pair(img, gt, size)
            images.append(img)
            labels.append(gt)
            names.append(f"{ref.patient_id}_{key}")
    if not images:
        return SegmentationSet(np.zeros((0, *size), np.float32), np.zeros((0, *size), np.uint8), ())
    return SegmentationSet(np.stack(images), np.stack(labels), tuple(names))
