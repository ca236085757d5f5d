"""LV landmarks and disks on one label map, in physical millimetres (pure numpy, no I/O).

Conventions:

* A label map is ``(H, W)`` uint8 with :class:`~echo_batch.domain.Label` values; row 0 is at the
  probe, so the LV apex points up and the atrium lies below the LV.
* ``spacing`` is ``(row_mm, col_mm)`` and is usually anisotropic: every distance, angle and area is
  computed on points ``(row * row_mm, col * col_mm)``, never on pixel indices.
* Points are ``(y_mm, x_mm)`` pairs (row direction first), pixel centre ``(0, 0)`` at ``(0, 0)``.

The LV border is the exact boundary of the (largest, hole-filled) LV mask: the marching-squares
iso-contour at 0.5 of the binary mask, whose vertices lie half-way between an LV pixel centre and
its outside neighbour. Contours through pixel centres would shrink the LV by half a pixel all round
and bias volumes low.

Mitral hinge points: the base is the part of the LV border that the myocardium does not cap. When a
myocardium label is present, the hinges are the ends of the longest run of border vertices whose
outside neighbour is not myocardium (the run touching the atrium when there is one). Without a
usable myocardium, a chord rule is used instead: the longest contour chord within 45 degrees of
horizontal whose intermediate contour points stay within ``max(2.5 mm, 1.5 pixels)`` of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage
from skimage.measure import find_contours

from echo_batch.domain import Label
from echo_batch.measure.volumes import N_DISKS

logger = logging.getLogger(__name__)

MIN_LV_PIXELS = 16
CHORD_MAX_ANGLE_DEG = 45.0
CHORD_TOLERANCE_MM = 2.5
CHORD_TOLERANCE_PX = 1.5
CHORD_INLIER_MM = 0.75  # hinge refinement: distance to the fitted base line
CHORD_INLIER_PX = 1.0
MAX_BASE_SHARE = 0.6  # a base run longer than this share of the perimeter is not a base
MAX_CHORD_VERTICES = 128  # chord search on a subsampled contour (O(n^2) pairs)
_PAIR_CHUNK = 256
APEX_TOLERANCE = 0.005  # relative: near-farthest arc in which the apex is chosen
_LABEL_PAD = 2  # crop margin: outside pixel (1) + myocardium dilation (1)


@dataclass(frozen=True)
class ViewGeometry:
    """Landmarks and disks of the LV in one image.

    Attributes:
        contour_px: ``(N, 2)`` closed LV border (last vertex not repeated), (row, col) pixels.
        contour_mm: ``(N, 2)`` the same border in (y_mm, x_mm).
        hinges_mm: ``(2, 2)`` mitral hinge points, (y_mm, x_mm).
        base_mid_mm: ``(2,)`` mid-point of the hinges, (y_mm, x_mm).
        apex_mm: ``(2,)`` apex: the farthest contour point from the base mid-point, taken
            nearest the base normal within 0.5 % of that distance (see ``_apex``), (y_mm, x_mm).
        length_mm: long axis ``L`` from the base mid-point to the apex, mm.
        area_mm2: area enclosed by the contour, mm^2.
        diameters_mm: ``(20,)`` disk diameters perpendicular to the long axis at
            ``(i + 0.5) L / 20`` from the base, mm.
        base_method: "myocardium" when the hinges come from the myocardium/atrium labels,
            "chord" when the chord rule was used.
    """

    contour_px: np.ndarray
    contour_mm: np.ndarray
    hinges_mm: np.ndarray
    base_mid_mm: np.ndarray
    apex_mm: np.ndarray
    length_mm: float
    area_mm2: float
    diameters_mm: np.ndarray
    base_method: str


@dataclass(frozen=True)
class GeometryFailure:
    """The LV could not be measured in this image.

    Attributes:
        reason: human-readable cause (empty mask, no base, ...).
    """

    reason: str


def largest_lv_component(labels: np.ndarray) -> tuple[np.ndarray, tuple[int, int]] | None:
    """Largest 8-connected LV component with its holes filled, cropped to its bounding box.

    Args:
        labels: ``(H, W)`` label map (LV = 1).

    Returns:
        ``(mask, (row0, col0))``: ``(h, w)`` bool mask of the component and the image position of
        its top-left pixel; None when there is no LV pixel.
    """
    return largest_component(labels, Label.LV)


def largest_component(
    labels: np.ndarray, label: Label
) -> tuple[np.ndarray, tuple[int, int]] | None:
    """Largest 8-connected component of one label with its holes filled, cropped to its box.

    Args:
        labels: ``(H, W)`` label map.
        label: the label whose component is wanted.

    Returns:
        ``(mask, (row0, col0))``: ``(h, w)`` bool mask of the component and the image position of
        its top-left pixel; None when the label is absent.
    """
    lv = np.ascontiguousarray(labels == label).view(np.uint8)
    bx, by, bw, bh = cv2.boundingRect(lv)  # labelling only the bounding box is much cheaper
    if bw == 0 or bh == 0:
        return None
    _, cc, stats, _ = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(lv[by : by + bh, bx : bx + bw]), connectivity=8
    )
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x0, y0, w, h = (int(v) for v in stats[best, :4])
    mask = cc[y0 : y0 + h, x0 : x0 + w] == best
    return ndimage.binary_fill_holes(mask), (by + y0, bx + x0)


def boundary_contour(mask: np.ndarray) -> np.ndarray:
    """Exact boundary of a binary mask as a closed polygon.

    Args:
        mask: ``(h, w)`` bool mask of one 8-connected component without holes.

    Returns:
        ``(N, 2)`` vertices, (row, col) pixels of ``mask``, on the mask boundary (mid-way between an
        inside and an outside pixel centre), last vertex not repeated; empty when none.
    """
    padded = np.pad(mask.astype(np.float32), 1)
    contours = find_contours(padded, 0.5, fully_connected="high")
    if not contours:
        return np.empty((0, 2))
    contour = max(contours, key=len)
    if len(contour) > 1 and np.array_equal(contour[0], contour[-1]):
        contour = contour[:-1]
    return contour - 1.0


def _outside_pixels(contour: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel just outside the mask at each boundary vertex (vertices lie on pixel edges)."""
    lo = np.floor(contour).astype(np.intp)
    hi = np.ceil(contour).astype(np.intp)
    row_edge = contour[:, 0] != np.round(contour[:, 0])  # vertex between two rows
    r1 = lo[:, 0]
    c1 = lo[:, 1]
    r2 = np.where(row_edge, hi[:, 0], lo[:, 0])
    c2 = np.where(row_edge, lo[:, 1], hi[:, 1])
    h, w = mask.shape
    inside1 = (r1 >= 0) & (r1 < h) & (c1 >= 0) & (c1 < w)
    first_in = np.zeros(len(contour), dtype=bool)
    first_in[inside1] = mask[r1[inside1], c1[inside1]]
    return np.where(first_in, r2, r1), np.where(first_in, c2, c1)


def _cyclic_runs(flags: np.ndarray) -> list[np.ndarray]:
    """Index arrays of the cyclic runs of True in ``flags`` (wrapping around the end)."""
    n = len(flags)
    if flags.all():
        return [np.arange(n)]
    start = int(np.argmin(flags))  # a False position: no run crosses it
    rolled = np.roll(flags, -start)
    edges = np.diff(np.concatenate(([0], rolled.astype(np.int8), [0])))
    begins, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return [(np.arange(b, e) + start) % n for b, e in zip(begins, ends, strict=True)]


def _hinges_from_labels(
    contour_px: np.ndarray,
    contour_mm: np.ndarray,
    mask: np.ndarray,
    labels_crop: np.ndarray,
    perimeter_mm: float,
) -> np.ndarray | None:
    """Ends of the border run that the myocardium does not cap, or None when unusable."""
    myo = (labels_crop == Label.MYO).astype(np.uint8)
    if not myo.any():
        return None
    myo_near = cv2.dilate(myo, np.ones((3, 3), np.uint8)).astype(bool)
    rows, cols = _outside_pixels(contour_px, mask)
    capped = myo_near[rows, cols]
    if capped.all() or not capped.any():
        return None
    atrium = labels_crop[rows, cols] == Label.LA
    seg = np.linalg.norm(np.diff(contour_mm, axis=0, append=contour_mm[:1]), axis=1)
    runs = _cyclic_runs(~capped)
    if atrium[~capped].any():
        best = max(runs, key=lambda run: (int(atrium[run].sum()), float(seg[run].sum())))
    else:
        best = max(runs, key=lambda run: float(seg[run].sum()))
    if len(best) < 2 or seg[best].sum() > MAX_BASE_SHARE * perimeter_mm:
        return None
    return contour_mm[[best[0], best[-1]]]


def _hinges_from_chord(contour_mm: np.ndarray, spacing: tuple[float, float]) -> np.ndarray | None:
    """Chord rule: longest near-horizontal chord whose in-between contour hugs it, or None."""
    start = int(np.argmin(contour_mm[:, 0]))  # topmost vertex (apex side): the base never wraps
    full = np.roll(contour_mm, -start, axis=0)
    step = max(1, int(np.ceil(len(full) / MAX_CHORD_VERTICES)))
    pts = full[::step]
    n = len(pts)
    tol = max(CHORD_TOLERANCE_MM, CHORD_TOLERANCE_PX * max(spacing))
    i_idx, j_idx = np.nonzero(np.tril(np.ones((n, n), dtype=bool), k=-2))
    diff = pts[i_idx] - pts[j_idx]
    keep = np.abs(diff[:, 0]) <= np.tan(np.radians(CHORD_MAX_ANGLE_DEG)) * np.abs(diff[:, 1])
    i_idx, j_idx, diff = i_idx[keep], j_idx[keep], diff[keep]
    length = np.hypot(diff[:, 0], diff[:, 1])
    order = np.argsort(-length, kind="stable")
    k = np.arange(n)
    for first in range(0, order.size, _PAIR_CHUNK):
        sel = order[first : first + _PAIR_CHUNK]
        pj, u = pts[j_idx[sel]], diff[sel] / length[sel][:, None]
        w = pts[None, :, :] - pj[:, None, :]
        dist = np.abs(u[:, None, 0] * w[:, :, 1] - u[:, None, 1] * w[:, :, 0])
        between = (k[None, :] > j_idx[sel][:, None]) & (k[None, :] < i_idx[sel][:, None])
        ok = ~np.any(between & (dist > tol), axis=1)
        hits = np.nonzero(ok)[0]
        if hits.size:
            best = sel[hits[0]]
            arc = full[j_idx[best] * step : i_idx[best] * step + 1]
            return _refine_base(arc, max(CHORD_INLIER_MM, CHORD_INLIER_PX * max(spacing)))
    return None


def _refine_base(arc: np.ndarray, tol_mm: float) -> np.ndarray:
    """Hinges from the contour arc under a base chord: ends of the points on its fitted line.

    The tolerant chord rule may let one end climb a steep LV side; a total-least-squares line
    through the arc, refitted on its inliers, drops such points.

    Args:
        arc: ``(M, 2)`` contour points from one chord end to the other, (y_mm, x_mm).
        tol_mm: inlier distance to the fitted line, mm.

    Returns:
        ``(2, 2)`` hinge points, (y_mm, x_mm).
    """
    inliers = arc
    for _ in range(2):
        centre = inliers.mean(axis=0)
        direction = np.linalg.svd(inliers - centre, full_matrices=False)[2][0]
        rel = arc - centre
        dist = np.abs(rel[:, 0] * direction[1] - rel[:, 1] * direction[0])
        if np.count_nonzero(dist <= tol_mm) < 2:
            return arc[[0, -1]]
        inliers = arc[dist <= tol_mm]
    along = (inliers - inliers.mean(axis=0)) @ direction
    return inliers[[int(np.argmin(along)), int(np.argmax(along))]]


def disk_diameters(
    contour_mm: np.ndarray, base_mid_mm: np.ndarray, apex_mm: np.ndarray, n_disks: int = N_DISKS
) -> np.ndarray:
    """Widths of a closed polygon across the long axis at the disk mid-planes.

    Args:
        contour_mm: ``(N, 2)`` closed polygon, (y_mm, x_mm).
        base_mid_mm: ``(2,)`` base mid-point.
        apex_mm: ``(2,)`` apex.
        n_disks: number of equal slices of the long axis.

    Returns:
        ``(n_disks,)`` distance in mm between the outermost intersections of each perpendicular
        line at ``(i + 0.5) / n_disks`` of the axis with the polygon (0 where it misses).
    """
    _, _, lo, hi = _disk_crossings(contour_mm, base_mid_mm, apex_mm, n_disks)
    return np.where(np.isfinite(hi) & np.isfinite(lo), hi - lo, 0.0)


def disk_chords(
    contour_mm: np.ndarray, base_mid_mm: np.ndarray, apex_mm: np.ndarray, n_disks: int = N_DISKS
) -> np.ndarray:
    """End points of the Simpson disks: the chords whose lengths are the disk diameters.

    At ``(i + 0.5) L / n`` from the base along the long axis, the outermost intersections of the
    perpendicular to the axis with the closed contour.

    Args:
        contour_mm: ``(N, 2)`` closed contour, (y_mm, x_mm).
        base_mid_mm: ``(2,)`` base mid-point.
        apex_mm: ``(2,)`` apex.
        n_disks: number of disks.

    Returns:
        ``(n_disks, 2, 2)`` chord end points, (y_mm, x_mm); NaN where a level misses the contour.
    """
    centres, normal, lo, hi = _disk_crossings(contour_mm, base_mid_mm, apex_mm, n_disks)
    ok = np.isfinite(hi) & np.isfinite(lo)
    ends = np.stack([centres + lo[:, None] * normal, centres + hi[:, None] * normal], axis=1)
    ends[~ok] = np.nan
    return ends


def _disk_crossings(
    contour_mm: np.ndarray, base_mid_mm: np.ndarray, apex_mm: np.ndarray, n_disks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Disk centres ``(n, 2)``, the unit normal ``(2,)`` and the outermost crossings ``lo, hi``
    ``(n,)`` (mm along the normal from each centre; -inf/inf where a level misses the contour)."""
    axis = apex_mm - base_mid_mm
    length = float(np.hypot(axis[0], axis[1]))
    u = axis / length
    normal = np.array([-u[1], u[0]])
    rel = contour_mm - base_mid_mm
    along, across = rel @ u, rel @ normal
    along_next, across_next = np.roll(along, -1), np.roll(across, -1)
    levels = length * (np.arange(n_disks) + 0.5) / n_disks
    below = along[None, :] < levels[:, None]
    crosses = below != (along_next[None, :] < levels[:, None])
    denom = np.where(along_next != along, along_next - along, 1.0)
    t = (levels[:, None] - along[None, :]) / denom[None, :]
    x = across[None, :] + t * (across_next - across)[None, :]
    hi = np.where(crosses, x, -np.inf).max(axis=1)
    lo = np.where(crosses, x, np.inf).min(axis=1)
    return base_mid_mm + levels[:, None] * u, normal, lo, hi


def crop_padded(
    labels: np.ndarray, row0: int, col0: int, shape: tuple[int, int], pad: int
) -> np.ndarray:
    """A box of ``labels`` with a margin, background (0) where the margin leaves the image.

    Args:
        labels: ``(H, W)`` label map.
        row0: first row of the box, pixels.
        col0: first column of the box, pixels.
        shape: ``(h, w)`` size of the box, pixels.
        pad: margin on every side, pixels.

    Returns:
        ``(h + 2 pad, w + 2 pad)`` array of ``labels``' dtype: ``labels[row0 - pad : row0 + h +
        pad, col0 - pad : col0 + w + pad]`` with zeros outside the image.
    """
    h, w = shape
    out = np.zeros((h + 2 * pad, w + 2 * pad), dtype=labels.dtype)
    r_lo, c_lo = max(row0 - pad, 0), max(col0 - pad, 0)
    r_hi = min(row0 + h + pad, labels.shape[0])
    c_hi = min(col0 + w + pad, labels.shape[1])
    out[r_lo - row0 + pad : r_hi - row0 + pad, c_lo - col0 + pad : c_hi - col0 + pad] = labels[
        r_lo:r_hi, c_lo:c_hi
    ]
    return out


def polygon_area(points: np.ndarray) -> float:
    """Area enclosed by a closed polygon ``(N, 2)`` (shoelace formula), in its units squared."""
    y, x = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _apex(contour_mm: np.ndarray, hinges_mm: np.ndarray, base_mid_mm: np.ndarray) -> np.ndarray:
    """Apex: the contour point farthest from the base mid-point.

    A blunt apex is a nearly circular arc around the base mid-point, where the single farthest
    point is decided by pixel noise and can sit several mm to one side, tilting the long axis.
    Among the points within ``APEX_TOLERANCE`` (relative) of the largest distance, the one closest
    to the base normal is taken; the long axis shortens by at most that tolerance.

    Args:
        contour_mm: ``(N, 2)`` contour, (y_mm, x_mm).
        hinges_mm: ``(2, 2)`` mitral hinge points.
        base_mid_mm: ``(2,)`` their mid-point.

    Returns:
        ``(2,)`` apex, (y_mm, x_mm).
    """
    offset = contour_mm - base_mid_mm
    dist = np.hypot(offset[:, 0], offset[:, 1])
    far = int(np.argmax(dist))
    near = np.nonzero(dist >= dist[far] * (1.0 - APEX_TOLERANCE))[0]
    base = hinges_mm[1] - hinges_mm[0]
    normal = np.array([-base[1], base[0]])
    norm = np.hypot(*normal)
    if len(near) < 2 or norm == 0:
        return contour_mm[far]
    normal = normal / norm
    if float(offset[far] @ normal) < 0:
        normal = -normal
    cos = (offset[near] @ normal) / dist[near]
    return contour_mm[near[int(np.argmax(cos))]]


def measure_lv(labels: np.ndarray, spacing: tuple[float, float]) -> ViewGeometry | GeometryFailure:
    """Contour, hinges, apex, long axis, area and 20 disk diameters of the LV in one image.

    Args:
        labels: ``(H, W)`` label map (0 background, 1 LV, 2 myocardium, 3 atrium) or a binary LV
            mask (then the chord rule finds the base).
        spacing: ``(row_mm, col_mm)`` pixel size.

    Returns:
        A :class:`ViewGeometry`, or a :class:`GeometryFailure` for degenerate masks (empty, tiny,
        no recognisable base, zero long axis). Never raises for any 2-D integer array.

    Raises:
        ValueError: ``labels`` is not 2-D or ``spacing`` is not two finite positive numbers
            (programming errors, not data problems).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D (H, W), got shape {labels.shape}")
    sy, sx = (float(s) for s in spacing)
    if not (np.isfinite(sy) and np.isfinite(sx) and sy > 0 and sx > 0):
        raise ValueError(f"spacing must be two finite positive mm values, got {spacing}")
    found = largest_lv_component(labels)
    if found is None:
        return GeometryFailure("no LV pixels")
    mask, (row0, col0) = found
    if int(mask.sum()) < MIN_LV_PIXELS:
        return GeometryFailure(f"LV has {int(mask.sum())} pixels, fewer than {MIN_LV_PIXELS}")
    contour_local = boundary_contour(mask)
    if len(contour_local) < 4:
        return GeometryFailure("no closed LV contour")
    scale = np.array([sy, sx])
    contour_px = contour_local + np.array([row0, col0], dtype=float)
    contour_mm = contour_px * scale
    area = polygon_area(contour_mm)
    perimeter = float(
        np.linalg.norm(np.diff(contour_mm, axis=0, append=contour_mm[:1]), axis=1).sum()
    )
    labels_crop = crop_padded(labels, row0, col0, mask.shape, _LABEL_PAD)
    hinges = _hinges_from_labels(
        contour_local + _LABEL_PAD,
        contour_mm,
        np.pad(mask, _LABEL_PAD),
        labels_crop,
        perimeter,
    )
    method = "myocardium"
    if hinges is None:
        hinges, method = _hinges_from_chord(contour_mm, (sy, sx)), "chord"
    if hinges is None:
        return GeometryFailure("no recognisable base (no myocardium gap, no flat chord)")
    base_mid = hinges.mean(axis=0)
    apex = _apex(contour_mm, hinges, base_mid)
    length = float(np.hypot(*(apex - base_mid)))
    if not length > 0:
        return GeometryFailure("zero long axis")
    diameters = disk_diameters(contour_mm, base_mid, apex)
    if not diameters.any():
        return GeometryFailure("disks miss the contour")
    return ViewGeometry(
        contour_px=contour_px,
        contour_mm=contour_mm,
        hinges_mm=hinges,
        base_mid_mm=base_mid,
        apex_mm=apex,
        length_mm=length,
        area_mm2=area,
        diameters_mm=diameters,
        base_method=method,
    )
