"""The clip: one view of one patient over time, whatever file format it came from.

Every reader (CAMUS NIfTI/MetaImage, DICOM, EchoNet-Dynamic video) turns its format into a
:class:`Clip`; nothing after the readers knows the format. A still is a clip with one frame.
What a reader could not trust (a refused calibration, an unknown view) travels with the clip as
data, so that each output row can record it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo_batch.domain import InputFormat, SpacingSource, View


@dataclass(frozen=True)
class Clip:
    """Frames of one view, with the physical facts a reader could establish.

    Attributes:
        frames: ``(T, H, W)`` float32 grey levels (0-255 for 8-bit sources), row 0 at the probe.
        spacing: ``(row_mm, col_mm)`` pixel size, or None when the input has no trusted
            calibration (volumes are then null; EF is still measured, a ratio needs no scale).
        spacing_source: where ``spacing`` came from (``NONE`` when it is None).
        spacing_problem: why a calibration present in the file was refused, else None.
        frame_time_ms: time between frames, ms, or None when unknown.
        view: apical view, or None when the input does not say (single-view results, flagged).
        path: file the frames were read from.
        input_format: format of that file.
    """

    frames: np.ndarray
    spacing: tuple[float, float] | None
    spacing_source: SpacingSource
    path: Path
    input_format: InputFormat
    frame_time_ms: float | None = None
    view: View | None = None
    spacing_problem: str | None = None

    def __post_init__(self) -> None:
        if self.frames.ndim != 3:
            raise ValueError(f"clip frames must be (T, H, W), got shape {self.frames.shape}")
        if (self.spacing is None) != (self.spacing_source == SpacingSource.NONE):
            raise ValueError(
                f"spacing {self.spacing} contradicts spacing_source {self.spacing_source.value}"
            )

    @property
    def n_frames(self) -> int:
        """Number of frames ``T``."""
        return int(self.frames.shape[0])
