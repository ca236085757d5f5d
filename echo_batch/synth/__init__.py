"""Synthetic CAMUS-layout cohorts with analytically known LV volumes and EF.

Geometry
    The LV cavity at one instant is a truncated ellipsoid. In its own frame (``z`` along the long
    axis, positive towards the apex, origin at the ellipsoid centre) the cavity is
    ``x²/a² + y²/b² + z²/c² <= 1`` with ``z >= z0 = -t·c`` (``0 <= t <= 0.3``): the apex is at
    ``z = c`` and a flat base plane (the mitral annulus) cuts the ellipsoid at or below its equator,
    so the base is never wider than the cavity. The 2CH view is the long-axis plane holding ``a``,
    the 4CH view the plane holding ``b``. Closed forms (``g(t) = 2/3 + t - t³/3``):

    - true volume ``V = π a b ∫_{z0}^{c} (1 - z²/c²) dz = π a b c g(t)``;
    - single-plane Simpson limit of a view with in-plane semi-axis ``s`` (``a`` or ``b``):
      ``π s² c g(t)`` (circular disks of the view's diameter); biplane Simpson converges to ``V``;
    - long axis (base midpoint to apex) ``L = c (1 + t)``, the same in both views;
    - section area ``A = 2 s c (π/4 + (t √(1-t²) + asin t) / 2)``.

    End-systole shortens the long axis by 8-17 % and scales ``a`` and ``b`` so that the sampled
    target EF (uniform in 15-75 %) holds exactly. The apex stays put during the cycle and the base
    moves towards it, like a real LV.

Labels (CAMUS): 1 LV cavity = the section; 2 myocardium = the band between the cavity and a
confocal-like outer ellipse with semi-axes ``(s + w, c + w)`` above the base plane (``w`` 8-12 mm,
thicker at ES; the band does not cross the base); 3 left atrium = an ellipse below the base,
truncated by the base plane so that its top chord is exactly the mitral opening; 0 elsewhere.

Rasterisation evaluates the analytic inside-tests at pixel centres (pixel ``(i, j)`` sits at
``(y, x) = (i·row_mm, j·col_mm)``, SimpleITK's convention with origin 0), so the label boundary is
the analytic boundary sampled without bias and areas converge at the pixel-size rate. No
supersampling: the measured geometry uses the mask boundary, which this samples directly.

Appearance: a 75° sector with its apex at the top centre, fully developed speckle (the magnitude of
a smoothed complex Gaussian field, i.e. Rayleigh-distributed), bright myocardium, dark blood,
slowly varying tissue echogenicity, depth attenuation and near-field haze that grows as the image
quality worsens; zero outside the sector. Speckle decorrelates smoothly along a half sequence
(two fields blended with cos/sin weights), so the ED and ES stills are exactly the first and last
frames of the half sequence.

Loops (``synth_cohort(..., loops=True)``, ``echo-batch synth --loops``): per view a full loop of
1-4 beats or a half sequence instead of the half sequence above, the frames drawn at the shape
phases of a cardiac-cycle waveform (:mod:`echo_batch.synth.waveform`,
:mod:`echo_batch.synth.loops`), so that every frame's volume is known in closed form
(``truth_frames.csv``, :mod:`echo_batch.synth.loop_truth`) and every beat's ED and ES volumes are
exactly the patient's EDV and ESV.

Determinism: everything of patient ``k`` derives from ``numpy.random.default_rng((seed, k))`` and
fixed per-view child streams, so a patient is the same whatever the cohort size and the same seed
gives byte-identical arrays.
"""

from echo_batch.synth.cohort import synth_cohort, write_loop_patient, write_patient
from echo_batch.synth.loops import PatientLoops, ViewLoop, sample_loops
from echo_batch.synth.params import (
    CLASSIC_SPACING_MM,
    SECTOR_HALF_ANGLE_DEG,
    PatientParams,
    PatientTruth,
    ViewSetup,
    patient_truth,
)
from echo_batch.synth.render import rasterise_view, render_phases, render_sequence
from echo_batch.synth.sampling import plan_cohort, sample_patient
from echo_batch.synth.shapes import LVShape

__all__ = [
    "CLASSIC_SPACING_MM",
    "SECTOR_HALF_ANGLE_DEG",
    "LVShape",
    "PatientLoops",
    "PatientParams",
    "PatientTruth",
    "ViewLoop",
    "ViewSetup",
    "patient_truth",
    "plan_cohort",
    "rasterise_view",
    "render_phases",
    "render_sequence",
    "sample_loops",
    "sample_patient",
    "synth_cohort",
    "write_loop_patient",
    "write_patient",
]
