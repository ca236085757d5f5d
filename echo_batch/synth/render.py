"""Rasterisation of CAMUS labels and the ultrasound-like image, single frames and sequences."""

from __future__ import annotations

import math

import cv2
import numpy as np

from echo_batch.domain import VIEWS, Instant, Label, View
from echo_batch.synth.params import SECTOR_HALF_ANGLE_DEG, PatientParams, ViewSetup
from echo_batch.synth.shapes import LVShape, _atrium, _axes

# Appearance constants (reflectivity before speckle; 1.0 is the brightest tissue).
_BLOOD_REFL = {"Good": 0.05, "Medium": 0.08, "Poor": 0.13}
_HAZE = {"Good": 0.0, "Medium": 0.10, "Poor": 0.22}
_MYO_REFL = 0.85
_ATTENUATION_PER_MM = 0.005
_SPECKLE_SIGMA_MM = (0.35, 0.8)  # (axial = row, lateral = col) correlation length
_EDGE_SIGMA_MM = 0.6
_GAIN = 0.75
_GAMMA = 0.7
_RAYLEIGH_MEAN = math.sqrt(math.pi / 2.0)


def _local_box_corners(
    shape: LVShape, view: View, tilt_deg: float, apex_yx: tuple[float, float]
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Centre ``(x, y)`` and image coordinates of the corners of the labelled region's box."""
    e, n = _axes(tilt_deg)
    apex = np.array([apex_yx[1], apex_yx[0]])
    centre = apex - shape.c_mm * e
    s, w = shape.semi_axis_mm(view), shape.myo_mm
    ra, rz, zc = _atrium(shape, view)
    half = max(s + w, ra)
    zs = np.array([shape.c_mm + w, shape.c_mm + w, zc - rz, zc - rz])
    vs = np.array([-half, half, -half, half])
    pts = centre[:, None] + e[:, None] * zs + n[:, None] * vs
    return centre, (pts[1], pts[0])


def _label_map(
    shape: LVShape,
    setup: ViewSetup,
    spacing: tuple[float, float],
    grid: tuple[int, int],
) -> np.ndarray:
    """``(H, W)`` uint8 CAMUS labels of the section, inside-tests at pixel centres."""
    row_mm, col_mm = spacing
    height, width = grid
    view = setup.view
    probe_x = (width - 1) * col_mm / 2.0
    apex_yx = (setup.apex_depth_mm, probe_x + setup.apex_lateral_mm)
    centre, (ys, xs) = _local_box_corners(shape, view, setup.tilt_deg, apex_yx)
    labels = np.zeros(grid, dtype=np.uint8)
    r0 = max(0, math.floor(ys.min() / row_mm) - 1)
    r1 = min(height, math.ceil(ys.max() / row_mm) + 2)
    c0 = max(0, math.floor(xs.min() / col_mm) - 1)
    c1 = min(width, math.ceil(xs.max() / col_mm) + 2)
    if r0 >= r1 or c0 >= c1:
        return labels
    e, n = _axes(setup.tilt_deg)
    qy = (np.arange(r0, r1, dtype=np.float64) * row_mm - centre[1])[:, None]
    qx = (np.arange(c0, c1, dtype=np.float64) * col_mm - centre[0])[None, :]
    z = qx * e[0] + qy * e[1]
    v = qx * n[0] + qy * n[1]
    s, c, w = shape.semi_axis_mm(view), shape.c_mm, shape.myo_mm
    z0 = -shape.base_frac * c
    above = z >= z0
    zz = z * z
    vv = v * v
    lv = above & (vv / (s * s) + zz / (c * c) <= 1.0)
    wall = above & (vv / ((s + w) ** 2) + zz / ((c + w) ** 2) <= 1.0)
    ra, rz, zc = _atrium(shape, view)
    la = ~above & (vv / (ra * ra) + (z - zc) ** 2 / (rz * rz) <= 1.0)
    box = labels[r0:r1, c0:c1]
    box[wall] = Label.MYO
    box[lv] = Label.LV
    box[la] = Label.LA
    return labels


class _ViewRenderer:
    """Per-view state reused across the frames of a sequence: grid, sector, speckle fields."""

    def __init__(
        self,
        params: PatientParams,
        view: View,
        spacing: tuple[float, float] | None = None,
        grid: tuple[int, int] | None = None,
    ) -> None:
        self.params = params
        self.setup = params.setup(view)
        self.spacing = tuple(float(s) for s in (spacing or self.setup.spacing))
        self.grid = tuple(int(g) for g in (grid or self.setup.shape))
        row_mm, col_mm = self.spacing
        height, width = self.grid
        rng = np.random.default_rng((params.seed, params.index, 1 + VIEWS.index(view)))
        ys = (np.arange(height, dtype=np.float32) * row_mm)[:, None]
        xs = (np.arange(width, dtype=np.float32) * col_mm - (width - 1) * col_mm / 2.0)[None, :]
        radius = np.sqrt(ys * ys + xs * xs)
        cos_limit = math.cos(math.radians(SECTOR_HALF_ANGLE_DEG))
        self.sector = (radius <= self.setup.depth_mm) & (ys >= radius * cos_limit)
        quality = params.image_quality
        self.blood = _BLOOD_REFL[quality]
        self.depth_gain = (np.exp(-_ATTENUATION_PER_MM * radius) * _GAIN / _RAYLEIGH_MEAN).astype(
            np.float32
        )
        self.haze = (_HAZE[quality] * np.exp(-radius / 35.0)).astype(np.float32)
        coarse = rng.uniform(0.22, 0.5, size=(6, 6)).astype(np.float32)
        self.tissue = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        sig_r = max(_SPECKLE_SIGMA_MM[0] / row_mm, 0.5)
        sig_c = max(_SPECKLE_SIGMA_MM[1] / col_mm, 0.5)
        fields_ = []
        for _ in range(4):  # real and imaginary parts of the ED and ES scatter fields
            noise = rng.standard_normal((height, width), dtype=np.float32)
            smooth = cv2.GaussianBlur(noise, (0, 0), sigmaX=sig_c, sigmaY=sig_r)
            fields_.append(smooth / max(float(smooth.std()), 1e-6))
        self.speckle = fields_
        self.edge_sigma = (max(_EDGE_SIGMA_MM / col_mm, 0.3), max(_EDGE_SIGMA_MM / row_mm, 0.3))
        self.lut = np.array([-1.0, self.blood, _MYO_REFL, self.blood], dtype=np.float32)

    def labels(self, phase: float) -> np.ndarray:
        """``(H, W)`` uint8 labels at ``phase`` (0 = ED, 1 = ES)."""
        return _label_map(self.params.shape_at(phase), self.setup, self.spacing, self.grid)

    def image(self, labels: np.ndarray, phase: float) -> np.ndarray:
        """``(H, W)`` uint8 B-mode-like image for ``labels`` at ``phase``."""
        refl = self.lut[labels]
        np.copyto(refl, self.tissue, where=labels == Label.BG)
        refl = cv2.GaussianBlur(refl, (0, 0), sigmaX=self.edge_sigma[0], sigmaY=self.edge_sigma[1])
        wa, wb = math.cos(math.pi * phase / 2.0), math.sin(math.pi * phase / 2.0)
        f = self.speckle
        if wb == 0.0:
            re, im = f[0], f[1]
        elif wa < 1e-12:
            re, im = f[2], f[3]
        else:
            re, im = wa * f[0] + wb * f[2], wa * f[1] + wb * f[3]
        envelope = np.sqrt(re * re + im * im)
        value = (refl + self.haze) * envelope * self.depth_gain
        np.clip(value, 0.0, 1.0, out=value)
        out = (np.power(value, _GAMMA) * 255.0).astype(np.uint8)
        out[~self.sector] = 0
        return out


def _phase(instant: Instant | float) -> float:
    if isinstance(instant, Instant):
        return 0.0 if instant == Instant.ED else 1.0
    phase = float(instant)
    if not 0.0 <= phase <= 1.0:
        raise ValueError(f"phase {phase} outside [0, 1]")
    return phase


def rasterise_view(
    params: PatientParams,
    view: View,
    instant: Instant | float,
    spacing: tuple[float, float] | None = None,
    shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one view of a patient at one instant (pure, deterministic).

    Args:
        params: the patient.
        view: 2CH or 4CH.
        instant: ED, ES, or a phase in [0, 1] of the ED→ES half cycle.
        spacing: grid pixel size ``(row_mm, col_mm)``; defaults to the view's own.
        shape: grid ``(H, W)``; defaults to the view's own. The probe sits at the top centre of
            the grid, and the heart keeps its physical placement whatever the grid.

    Returns:
        ``labels``: ``(H, W)`` uint8 CAMUS labels (inside-tests at pixel centres);
        ``image``: ``(H, W)`` uint8 ultrasound-like image.
    """
    renderer = _ViewRenderer(params, view, spacing, shape)
    phase = _phase(instant)
    labels = renderer.labels(phase)
    return labels, renderer.image(labels, phase)


def _phases(n_frames: int) -> np.ndarray:
    """ED→ES phases of a half sequence, cosine-eased (monotonic, 0 first, 1 last)."""
    k = np.arange(n_frames, dtype=np.float64) / (n_frames - 1)
    phases = 0.5 * (1.0 - np.cos(np.pi * k))
    phases[0], phases[-1] = 0.0, 1.0
    return phases


def render_phases(
    params: PatientParams, view: View, phases: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Render the frames of one view at the given shape phases, in the given order.

    A phase that recurs (the same point of a later beat) is drawn once and copied: a frame depends
    only on its phase, so the copy is the frame that drawing it again would give.

    Args:
        params: the patient.
        view: 2CH or 4CH.
        phases: ``(T,)`` shape phases in [0, 1] (0 = ED shape, 1 = ES shape).

    Returns:
        ``labels`` and ``images``, both ``(T, H, W)`` uint8.
    """
    renderer = _ViewRenderer(params, view)
    height, width = renderer.grid
    labels = np.empty((len(phases), height, width), dtype=np.uint8)
    images = np.empty_like(labels)
    drawn: dict[float, int] = {}
    for frame, phase in enumerate(phases):
        phase = _phase(float(phase))
        if (first := drawn.get(phase)) is not None:
            labels[frame], images[frame] = labels[first], images[first]
            continue
        drawn[phase] = frame
        labels[frame] = renderer.labels(phase)
        images[frame] = renderer.image(labels[frame], phase)
    return labels, images


def render_sequence(params: PatientParams, view: View) -> tuple[np.ndarray, np.ndarray]:
    """Render the half sequence of one view, in stored order.

    Args:
        params: the patient.
        view: 2CH or 4CH.

    Returns:
        ``labels`` and ``images``, both ``(T, H, W)`` uint8. Frames run ED→ES, or ES→ED when
        ``params.es_before_ed``; the ED and ES stills equal the first and last (or last and first)
        frames exactly.
    """
    phases = _phases(params.setup(view).n_frames)
    if params.es_before_ed:
        phases = phases[::-1]
    return render_phases(params, view, phases)
