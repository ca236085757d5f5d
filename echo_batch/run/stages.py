"""A chunk as three tasks for a cluster with a GPU worker: load (CPU), infer (GPU), measure (CPU).

:func:`~echo_batch.run.chunk.process_chunk` runs the same three stages one after the other in one
process; a split run sends them to different workers (issue 16, DESIGN 9.5):

- :func:`load_chunk` (CPU worker): read one pass of the chunk's patients (stills and loops, as
  the fused chunk reads them) and bring every image and frame to the network's input grid
  (``to_grid``) as one float16 stack; the patients' work state stays in the result, on the
  worker that read it.
- :func:`grid_of` (CPU worker, where the loaded chunk is): the grid stack alone, the only thing
  that travels to the GPU worker (100 KB per 224 x 224 image in float16).
- :func:`infer_grid` (GPU worker, ``resources={"GPU": 1}``): the process-wide engine segments
  the stack (:meth:`~echo_batch.model.inference.SegmentationEngine.segment_grid`): labels on
  the grid, confidences, and float16 grid probabilities only for images of another size.
- :func:`measure_chunk` (CPU worker, where the loaded chunk is): native labels (probabilities
  resampled as the fused chunk does), geometry, QC, records: the same ``ChunkResult``.

A loaded chunk holds one pass (:data:`~echo_batch.run.chunk.FRAMES_PER_PASS` frames or the
patients of one batch): patients it could not take are missing from its result, and the flow
sends them again as a new chunk.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from echo_batch.domain import PatientRef, Precision, SegmentationSource
from echo_batch.model.preprocess import resample_labels, to_grid
from echo_batch.run.chunk import (
    _PatientWork,
    get_engine,
    grid_size,
    load_pass,
    measure_pass,
    patients_per_pass,
    segment_targets,
    set_masks,
)
from echo_batch.run.options import ChunkOptions
from echo_batch.store.records import ChunkResult

GRID_DTYPE = np.float16
"""dtype of the grid stack sent to the GPU worker (and of the probabilities sent back): half the
bytes of float32 (100 KB per 224 x 224 image), widened on the device. Measured on 64 images of
the sample and a synthetic cohort (CPU): labels equal to the fused run's on 99.991 % of pixels
in bf16, 99.999 % in fp32. A run with ``--precision fp32`` sends float32 and equals the fused
run exactly."""
GPU_BATCH_SIZE = 256  # images per forward pass of the engine on CUDA (its default there)


@dataclass
class GridStack:
    """What the GPU worker receives for one loaded chunk.

    Attributes:
        images: ``(N, rows, cols)`` :data:`GRID_DTYPE` (float32 in fp32 runs), normalised
            images on the input grid, stills then loop frames in
            :func:`~echo_batch.run.chunk.segment_targets` order.
        native_shapes: ``(H, W)`` of each image before ``to_grid``.
    """

    images: np.ndarray
    native_shapes: list[tuple[int, int]]


@dataclass
class LoadedChunk:
    """One pass of a chunk, read and on the grid; it stays on the CPU worker that read it.

    Attributes:
        works: the patients' work state (images, loops, cfgs, errors).
        grid: the images to segment.
        seconds: ``load`` (reading) and ``grid`` (to the input grid), seconds.
    """

    works: list[_PatientWork]
    grid: GridStack
    seconds: dict[str, float] = field(default_factory=dict)


def split_pass_size(options: ChunkOptions) -> int:
    """Patients in one loaded chunk: enough for a full batch of the GPU engine (64 patients of
    four stills for the default 256-image batch), at least 16."""
    return patients_per_pass(options.batch_size or GPU_BATCH_SIZE)


def load_chunk(refs: Sequence[PatientRef], options: ChunkOptions) -> LoadedChunk:
    """Read one pass of ``refs`` and bring its images to the grid (CPU worker).

    Args:
        refs: the chunk's patients; only the first pass is read (see :func:`split_pass_size`
            and :data:`~echo_batch.run.chunk.FRAMES_PER_PASS`).
        options: a model run's chunk options.
    """
    seconds = {"load": 0.0}
    works = load_pass(iter(refs), options, split_pass_size(options), seconds)
    t0 = time.perf_counter()
    stills, loops = segment_targets(works)
    size = grid_size(options.bundle)
    images = [item.image.array for item in stills]
    for loop in loops:
        images.extend(loop.frames.array)
    dtype = np.float32 if options.precision == Precision.FP32 else GRID_DTYPE
    stack = np.empty((len(images), *size), dtype)
    for k, image in enumerate(images):
        stack[k] = to_grid(image, size)
    shapes = [(int(i.shape[0]), int(i.shape[1])) for i in images]
    seconds["grid"] = time.perf_counter() - t0
    return LoadedChunk(works=works, grid=GridStack(stack, shapes), seconds=seconds)


def grid_of(loaded: LoadedChunk) -> GridStack:
    """The grid stack of a loaded chunk: run where the chunk is, so that only this travels."""
    return loaded.grid


def infer_grid(grid: GridStack, options: ChunkOptions):
    """Segment a grid stack with the process-wide engine (GPU worker).

    Returns:
        :class:`~echo_batch.model.inference.GridSegmentation`.
    """
    t0 = time.perf_counter()
    segmentation = get_engine(options).segment_grid(grid.images, grid.native_shapes)
    return dataclasses.replace(segmentation, seconds=time.perf_counter() - t0)


def measure_chunk(
    loaded: LoadedChunk, segmentation, options: ChunkOptions, model_id: str
) -> ChunkResult:
    """Native labels, geometry and records of a loaded chunk (CPU worker).

    Args:
        loaded: the chunk as :func:`load_chunk` returned it.
        segmentation: :func:`infer_grid`'s result for ``loaded.grid``.
        options: the chunk options of the run.
        model_id: id written to every row.

    Returns:
        One PatientRecord per loaded patient, in input order, as the fused chunk writes them.
    """
    assert options.segmentation == SegmentationSource.MODEL
    t0 = time.perf_counter()
    stills, loops = segment_targets(loaded.works)
    shapes = loaded.grid.native_shapes
    labels = [
        resample_labels(segmentation.probabilities[k], shape)
        if k in segmentation.probabilities
        else segmentation.labels[k]
        for k, shape in enumerate(shapes)
    ]
    confidences = [float(c) for c in segmentation.confidence]
    set_masks(stills, loops, labels, confidences)
    t1 = time.perf_counter()
    result = ChunkResult()
    measure_pass(loaded.works, options, model_id, result)
    result.seconds = {
        **loaded.seconds,
        "segment": segmentation.seconds + (t1 - t0),
        "measure": time.perf_counter() - t1,
    }
    return result
