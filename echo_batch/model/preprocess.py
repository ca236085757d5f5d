"""Intensity normalisation and resizing between native images and the network's input grid."""

from __future__ import annotations

import cv2
import numpy as np

INPUT_SIZE: tuple[int, int] = (224, 224)
NORMALISATION = "per-image z-score: (x - mean) / max(std, 1e-6) after resizing to the input grid"


def to_grid(image: np.ndarray, size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """Resize an image to the network grid and normalise it.

    Args:
        image: ``(H, W)`` intensities (any range).
        size: ``(rows, cols)`` of the network input.

    Returns:
        ``(rows, cols)`` float32, zero mean and unit standard deviation.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.shape != size:
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return normalise(image)


def normalise(image: np.ndarray) -> np.ndarray:
    """Per-image z-score normalisation.

    Args:
        image: ``(..., H, W)`` float32 intensities.

    Returns:
        Array of the same shape with zero mean and unit standard deviation over the last two axes.
    """
    mean = image.mean(axis=(-2, -1), keepdims=True)
    std = image.std(axis=(-2, -1), keepdims=True)
    return ((image - mean) / np.maximum(std, 1e-6)).astype(np.float32)


def resample_labels(probs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Labels on a native grid from class probabilities on the network grid.

    The probabilities, not the labels, are resized (bilinear), so that thin structures survive
    the round trip.

    Args:
        probs: ``(rows, cols, C)`` float32 or float16 class probabilities (C <= 4).
        shape: native ``(H, W)``.

    Returns:
        ``(H, W)`` uint8 labels.
    """
    h, w = int(shape[0]), int(shape[1])
    if probs.shape[:2] != (h, w):
        if probs.dtype != np.float32:  # cv2.resize has no float16 kernel; widening is exact
            probs = probs.astype(np.float32)
        probs = cv2.resize(probs, (w, h), interpolation=cv2.INTER_LINEAR)
    return probs.argmax(axis=-1).astype(np.uint8)
