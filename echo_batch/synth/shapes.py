"""LV cavity shape at one instant, its closed-form volumes and areas, and its LV frame.

See the package docstring of :mod:`echo_batch.synth` for the geometry and the closed forms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from scipy.special import ellipeinc

from echo_batch.domain import View


def _g(t: float) -> float:
    """``∫_{-t}^{1} (1 - s²) ds`` for the base plane at ``z0 = -t c``."""
    return 2.0 / 3.0 + t - t**3 / 3.0


def _half_disk(t: float) -> float:
    """``∫_{-t}^{1} √(1 - s²) ds``."""
    return math.pi / 4.0 + (t * math.sqrt(1.0 - t * t) + math.asin(t)) / 2.0


@dataclass(frozen=True)
class LVShape:
    """The 3-D LV cavity (and its wall and atrium) at one instant.

    Attributes:
        a_mm: transverse semi-axis lying in the 2CH plane, mm.
        b_mm: transverse semi-axis lying in the 4CH plane, mm.
        c_mm: long semi-axis, ellipsoid centre to apex, mm.
        base_frac: ``t``; the base plane is at ``z0 = -t·c`` below the centre (0 <= t <= 0.3).
        myo_mm: myocardial band thickness ``w`` at the equator and apex, mm.
        la_width_ratio: atrial transverse semi-axis over the half mitral opening (> 1).
        la_depth_mm: atrial semi-axis along the long axis, mm.
    """

    a_mm: float
    b_mm: float
    c_mm: float
    base_frac: float
    myo_mm: float
    la_width_ratio: float
    la_depth_mm: float

    def semi_axis_mm(self, view: View) -> float:
        """In-plane transverse semi-axis of ``view`` (``a`` for 2CH, ``b`` for 4CH), mm."""
        return self.a_mm if view == View.A2C else self.b_mm

    @property
    def length_mm(self) -> float:
        """Long axis, base midpoint to apex, mm (identical in both views)."""
        return self.c_mm * (1.0 + self.base_frac)

    @property
    def volume_ml(self) -> float:
        """True cavity volume ``π a b c g(t)``, mL."""
        return math.pi * self.a_mm * self.b_mm * self.c_mm * _g(self.base_frac) / 1000.0

    def single_plane_volume_ml(self, view: View) -> float:
        """Limit of single-plane Simpson in ``view``: ``π s² c g(t)``, mL."""
        s = self.semi_axis_mm(view)
        return math.pi * s * s * self.c_mm * _g(self.base_frac) / 1000.0

    def section_area_mm2(self, view: View) -> float:
        """Area of the cavity section in ``view`` (truncated half-ellipse), mm²."""
        return 2.0 * self.semi_axis_mm(view) * self.c_mm * _half_disk(self.base_frac)

    def base_half_width_mm(self, view: View) -> float:
        """Half the mitral opening in ``view``, mm."""
        return self.semi_axis_mm(view) * math.sqrt(1.0 - self.base_frac**2)

    def border_length_mm(self, view: View) -> float:
        """Length of the LV endocardial border in ``view``, hinge to hinge through the apex, mm.

        The section's border is ``(v, z) = (s sin phi, c cos phi)`` for ``|phi| <= phi0``,
        ``cos phi0 = -t``: its length is ``2 s E(phi0 | 1 - c²/s²)``, with ``E`` the incomplete
        elliptic integral of the second kind.
        """
        s = self.semi_axis_mm(view)
        phi0 = math.acos(-self.base_frac)
        return 2.0 * s * float(ellipeinc(phi0, 1.0 - (self.c_mm / s) ** 2))

    def _la_cap(self, view: View) -> tuple[float, float, float]:
        """Atrial semi-axes ``(transverse, long)`` in ``view`` and ``u0``: the annulus plane at
        ``u0`` long semi-axes above the atrium's centre."""
        ra, rz, zc = _atrium(self, view)
        return ra, rz, (-self.base_frac * self.c_mm - zc) / rz

    @property
    def la_volume_ml(self) -> float:
        """True left-atrial volume, mL.

        The atrium is the ellipsoid of semi-axes ``(ra_2CH, ra_4CH, rz)`` below the annulus plane
        (its centre ``u0 rz`` below it, the same in both views since ``ra`` is the same multiple of
        each view's half mitral opening): ``π ra_2CH ra_4CH rz g(u0)`` with ``g`` as for the LV.
        Biplane method of disks converges to it.
        """
        ra2, rz, u0 = self._la_cap(View.A2C)
        ra4, _, _ = self._la_cap(View.A4C)
        return math.pi * ra2 * ra4 * rz * _g(u0) / 1000.0

    def la_single_plane_volume_ml(self, view: View) -> float:
        """Single-plane method-of-disks limit of the atrium in ``view``: ``π ra² rz g(u0)``, mL."""
        ra, rz, u0 = self._la_cap(view)
        return math.pi * ra * ra * rz * _g(u0) / 1000.0

    @property
    def la_length_mm(self) -> float:
        """LA length, annulus mid-point to the roof along the axis, ``rz (1 + u0)``, mm."""
        _, rz, u0 = self._la_cap(View.A2C)
        return rz * (1.0 + u0)

    def la_area_mm2(self, view: View) -> float:
        """Area of the atrium's section in ``view`` (ellipse below the annulus), mm²."""
        ra, rz, u0 = self._la_cap(view)
        return 2.0 * ra * rz * _half_disk(u0)

    def interpolate(self, other: LVShape, phase: float) -> LVShape:
        """Shape a fraction ``phase`` (0 = self, 1 = other) of the way to ``other``."""
        return LVShape(
            **{
                f.name: (1.0 - phase) * getattr(self, f.name) + phase * getattr(other, f.name)
                for f in fields(self)
            }
        )


def _axes(tilt_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors ``(x, y)`` in image mm: ``e`` along the long axis towards the apex, ``n``
    transverse (``y`` grows with depth)."""
    th = math.radians(tilt_deg)
    return np.array([-math.sin(th), -math.cos(th)]), np.array([math.cos(th), -math.sin(th)])


def _atrium(shape: LVShape, view: View) -> tuple[float, float, float]:
    """Atrial semi-axes ``(transverse, long)`` and centre ``z`` in the LV frame."""
    half_base = shape.base_half_width_mm(view)
    ra = max(shape.la_width_ratio * half_base, 1.02 * half_base)
    rz = shape.la_depth_mm
    z0 = -shape.base_frac * shape.c_mm
    return ra, rz, z0 - rz * math.sqrt(1.0 - (half_base / ra) ** 2)
