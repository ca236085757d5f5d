"""A simulated inference device: the engine interface without a network, for tests and benchmarks.

Scheduling of the GPU stage (issue 16) is tested on machines without a GPU with an engine that
costs what a device costs, a fixed time per batch plus a time per image, spent in ``time.sleep``
so that the GIL is released as it is while a CUDA kernel runs, and returns known labels: every
image gets the same template on the input grid, an LV ellipse ringed by myocardium with the
atrium below it (:func:`template_labels`). Images whose native shape differs from the grid get
one-hot grid probabilities, which the measurement stage resamples like a network's.

Every batch appends one line ``{"pid", "start", "end", "images"}`` (``time.time()`` seconds)
to the device's ``log`` file when it is set (:class:`~echo_batch.run.options.SimulatedDevice`),
so that a test reads when the device was busy and checks that no two batches overlapped.

Selected by :attr:`echo_batch.run.options.ChunkOptions.simulated_device`, which only tests and
benchmarks set (the CLI has no option for it).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from echo_batch.domain import Label
from echo_batch.model.preprocess import INPUT_SIZE, resample_labels, to_grid
from echo_batch.run.options import SimulatedDevice

SIMULATED_CONFIDENCE = float(np.float32(0.9))  # as a float32 confidence array gives it back
N_CLASSES = len(Label)


def template_labels(size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """``(rows, cols)`` uint8: an LV ellipse (1) in a myocardium ring (2), an atrium (3) below.

    The LV's long axis is vertical, its apex at the top, as in an apical view; its size is a
    fixed share of the grid, so that it is measurable on any grid of 64 pixels and more.
    """
    rows, cols = size
    r, c = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cr, cc = 0.42 * rows, 0.5 * cols

    def inside(scale: float, centre_row: float, half_rows: float, half_cols: float):
        return ((r - centre_row) / (half_rows * scale)) ** 2 + (
            (c - cc) / (half_cols * scale)
        ) ** 2 <= 1

    labels = np.zeros(size, np.uint8)
    labels[inside(1.0, 0.77 * rows, 0.12 * rows, 0.14 * cols)] = Label.LA
    labels[inside(1.25, cr, 0.26 * rows, 0.13 * cols)] = Label.MYO
    labels[inside(1.0, cr, 0.26 * rows, 0.13 * cols)] = Label.LV
    return labels


class SimulatedEngine:
    """The engine interface (``segment``, ``segment_grid``, ``batch_size``) on a simulated device.

    Args:
        device: latencies and batch log.
        input_size: ``(rows, cols)`` of the grid (the bundle's input size).
        batch_size: images per simulated forward pass.
    """

    def __init__(
        self, device: SimulatedDevice, input_size: tuple[int, int], batch_size: int
    ) -> None:
        self.device = device
        self.input_size = tuple(input_size)
        self.batch_size = batch_size

    @cached_property
    def labels(self) -> np.ndarray:
        """``(rows, cols)`` uint8: the labels every image gets."""
        return template_labels(self.input_size)

    @cached_property
    def _probabilities(self) -> np.ndarray:
        """``(rows, cols, C)`` float16 one-hot probabilities of :attr:`labels`."""
        return np.eye(N_CLASSES, dtype=np.float16)[self.labels]

    def _run_batches(self, n: int) -> None:
        """Occupy the device for ``n`` images, batch by batch, logging each batch."""
        for start in range(0, n, self.batch_size):
            size = min(self.batch_size, n - start)
            began = time.time()
            time.sleep(self.device.batch_s + self.device.image_s * size)
            if self.device.log is not None:
                line = {"pid": os.getpid(), "start": began, "end": time.time(), "images": size}
                with open(self.device.log, "a", encoding="utf-8") as log:
                    log.write(json.dumps(line) + "\n")

    def segment(self, images: Sequence[np.ndarray]):
        """Native images in, native labels out (the fused chunk's call), like the real engine."""
        from echo_batch.model.inference import Segmentation

        grid = [to_grid(image, self.input_size) for image in images]  # the CPU work it costs
        self._run_batches(len(grid))
        return [
            Segmentation(
                labels=self.labels.copy()
                if tuple(image.shape) == self.input_size
                else resample_labels(self._probabilities, image.shape),
                confidence=SIMULATED_CONFIDENCE,
            )
            for image in images
        ]

    def segment_grid(self, grid_images: np.ndarray, native_shapes: Sequence[tuple[int, int]]):
        """Grid images in, grid labels out (the GPU stage's call), like the real engine."""
        from echo_batch.model.inference import GridSegmentation

        n = len(grid_images)
        self._run_batches(n)
        probabilities = self._probabilities.astype(grid_images.dtype)
        return GridSegmentation(
            labels=np.broadcast_to(self.labels, (n, *self.input_size)).copy(),
            confidence=np.full(n, SIMULATED_CONFIDENCE, np.float32),
            probabilities={
                k: probabilities
                for k, shape in enumerate(native_shapes)
                if tuple(shape) != self.input_size
            },
        )


def read_batch_log(path: Path) -> list[dict[str, float]]:
    """The batches a simulated device logged, in start order."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return sorted((json.loads(line) for line in lines if line), key=lambda b: b["start"])


def busy_fraction(batches: Sequence[dict[str, float]]) -> float:
    """Share of the span from the first batch's start to the last batch's end the device was
    busy (1.0 for one batch or none)."""
    if len(batches) < 2:
        return 1.0
    span = max(b["end"] for b in batches) - batches[0]["start"]
    return sum(b["end"] - b["start"] for b in batches) / span if span > 0 else 1.0


def overlapping(batches: Sequence[dict[str, float]]) -> list[tuple[int, int]]:
    """Index pairs of consecutive batches (in start order) that ran at the same time."""
    return [
        (k, k + 1) for k in range(len(batches) - 1) if batches[k + 1]["start"] < batches[k]["end"]
    ]
