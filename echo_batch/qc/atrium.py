"""Is the left atrium whole in the image? Its border on the imaging sector's edge (pure numpy).

An atrium whose far wall lies beyond the imaging depth or outside the sector is drawn, by experts
and by the network alike, up to the sector's edge: its area, length and volume are then too small.
The measure here is the length of the atrium's border that lies on the edge of the sector or of
the image, in mm; :mod:`echo_batch.qc.flags` judges it (``la_cut``).

The sector is estimated from the image itself: the convex hull of the pixels brighter than
:data:`SECTOR_FLOOR` of the image's maximum (a fan-shaped sector is convex; dark blood inside it
is covered by the hull). An image without dark surroundings (a sector that fills it) leaves only
the image's own border as the edge.
"""

from __future__ import annotations

import cv2
import numpy as np

from echo_batch.domain import Label
from echo_batch.measure.landmarks import largest_component

SECTOR_FLOOR = 0.02
"""Pixels at or below this share of the image's maximum are candidates for outside the sector
(CAMUS: exactly 0 outside; compressed video and DICOM: a few grey levels of noise)."""


def sector_hull(image: np.ndarray) -> np.ndarray | None:
    """Convex hull of the pixels above :data:`SECTOR_FLOOR` of the image's maximum.

    Only the first and last bright pixel of each row can be hull vertices, so the hull is taken
    over those (two per row) instead of every bright pixel.

    Args:
        image: ``(H, W)`` grey image (any numeric type).

    Returns:
        ``(K, 1, 2)`` int32 hull vertices as OpenCV gives them, ``(x, y)`` = (col, row); None when
        no pixel is above the floor (nothing tells the sector from its surroundings).
    """
    image = np.asarray(image)
    top = float(np.max(image)) if image.size else 0.0
    if not top > 0:
        return None
    bright = image > SECTOR_FLOOR * top
    rows = np.flatnonzero(bright.any(axis=1))
    if rows.size == 0:
        return None
    first = np.argmax(bright[rows], axis=1)
    last = bright.shape[1] - 1 - np.argmax(bright[rows, ::-1], axis=1)
    points = np.concatenate(
        [np.stack([first, rows], axis=1), np.stack([last, rows], axis=1)]
    ).astype(np.int32)
    return cv2.convexHull(points)


def sector_mask(image: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """``(h, w)`` bool estimate of the imaging sector: the filled hull of :func:`sector_hull`.

    Args:
        image: ``(H, W)`` grey image (any numeric type).
        box: ``(row0, col0, h, w)``: return only this window of the mask (default: the image).

    Returns:
        The mask of the window; all True when the image has no pixel above the floor.
    """
    row0, col0, h, w = box if box is not None else (0, 0, *np.asarray(image).shape)
    hull = sector_hull(image)
    if hull is None:
        return np.ones((h, w), bool)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, hull - np.array([col0, row0], np.int32), 1)
    return mask.astype(bool)


def la_edge_mm(labels: np.ndarray, image: np.ndarray | None, spacing: tuple[float, float]) -> float:
    """Length of the left atrium's border on the sector's or the image's edge, mm.

    The border counted is made of the pixel edges between a pixel of the atrium's largest
    8-connected component and a pixel outside the sector or outside the image; an edge between
    horizontal neighbours is ``row_mm`` long, between vertical neighbours ``col_mm``.

    Args:
        labels: ``(H, W)`` label map (3 = left atrium).
        image: ``(H, W)`` grey image of the same grid (None: only the image border counts).
        spacing: ``(row_mm, col_mm)`` pixel size.

    Returns:
        mm; 0.0 without atrium.
    """
    found = largest_component(np.asarray(labels), Label.LA)
    if found is None:
        return 0.0
    mask, (row0, col0) = found
    h, w = mask.shape
    box = (row0 - 1, col0 - 1, h + 2, w + 2)  # the crop with a one-pixel margin
    inside = np.ones((h + 2, w + 2), bool) if image is None else sector_mask(image, box)
    rows = np.arange(row0 - 1, row0 + h + 1)
    cols = np.arange(col0 - 1, col0 + w + 1)
    inside[(rows < 0) | (rows >= labels.shape[0]), :] = False  # off the image
    inside[:, (cols < 0) | (cols >= labels.shape[1])] = False
    la = np.pad(mask, 1)
    out = ~inside & ~la  # neighbours off the sector or the image (an atrium pixel is never one)
    horizontal = (la[:, :-1] & out[:, 1:]) | (out[:, :-1] & la[:, 1:])
    vertical = (la[:-1, :] & out[1:, :]) | (out[:-1, :] & la[1:, :])
    return float(horizontal.sum() * spacing[0] + vertical.sum() * spacing[1])
