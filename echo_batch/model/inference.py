"""Batched U-Net inference: native images in, native-grid labels and a confidence out.

Images of any size are resized to the bundle's input grid, segmented in batches (across patients),
and the class probabilities are resampled back to each image's native grid before the labels are
taken, so that thin structures survive the round trip.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from echo_batch.model.bundle import Bundle, load_bundle
from echo_batch.model.preprocess import to_grid

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass(frozen=True)
class Segmentation:
    """Model output for one image.

    Attributes:
        labels: ``(H, W)`` uint8 labels on the native grid.
        confidence: mean maximum class probability over the pixels predicted as heart
            (labels 1-3) on the input grid, in [0, 1]; 0 when nothing is predicted.
    """

    labels: np.ndarray
    confidence: float


def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available")
    return torch.device(name)


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """Pick the precision: bf16 on CUDA and on bf16-capable CPUs, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


def default_batch_size(device: torch.device) -> int:
    """Images per forward pass: small on CPU (cache-friendly, measured), large on a GPU."""
    return 256 if device.type == "cuda" else 2


class SegmentationEngine:
    """Holds one model per process and segments images in batches.

    Args:
        bundle: verified model bundle.
        device: "auto", "cpu" or "cuda".
        precision: "auto", "bf16", "fp16" or "fp32".
        batch_size: images per forward pass (None: a device default).
        threads: torch intra-op threads on the CPU (None: leave torch's setting).
        compile: compile the model with ``torch.compile`` (inductor, weight freezing). Every batch
            is padded to ``batch_size`` so that the compiled graph never sees a new shape: torch
            2.13 crashes when a frozen channels_last graph recompiles for a new batch size. The
            first batch pays the compile time (10-20 s here); needs a C compiler on the CPU.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int | None = None,
        threads: int | None = None,
        compile: bool = False,
    ) -> None:
        self.bundle = bundle
        self.device = resolve_device(device)
        self.precision = resolve_precision(self.device, precision)
        self.batch_size = batch_size or default_batch_size(self.device)
        if threads is not None and self.device.type == "cpu":
            torch.set_num_threads(threads)
        self.input_size = bundle.input_size
        model = bundle.build().to(self.device)
        self.model = model.to(memory_format=torch.channels_last)
        self.compiled = compile
        self._forward = self.model
        if compile:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
            self._forward = torch.compile(self.model, dynamic=False)
        logger.info(
            "engine: model %s on %s, %s, batch %d",
            bundle.model_id,
            self.device,
            self.precision,
            self.batch_size,
        )

    @classmethod
    def from_path(cls, path: Path | str | None = None, **kwargs: object) -> SegmentationEngine:
        """Load the bundle at ``path`` (default bundle when None) and build an engine."""
        return cls(load_bundle(path), **kwargs)  # type: ignore[arg-type]

    @property
    def model_id(self) -> str:
        """Id of the bundle in use."""
        return self.bundle.model_id

    def _autocast(self) -> torch.autocast:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision, torch.float32)
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.precision != "fp32")

    @torch.inference_mode()
    def probabilities(self, grid_images: np.ndarray) -> np.ndarray:
        """Class probabilities on the input grid.

        Args:
            grid_images: ``(N, rows, cols)`` float32, already normalised (see ``to_grid``).

        Returns:
            ``(N, rows, cols, C)`` float32 probabilities (channels last, ready for cv2).
        """
        out = []
        for start in range(0, len(grid_images), self.batch_size):
            batch = grid_images[start : start + self.batch_size]
            n = len(batch)
            if self.compiled and n < self.batch_size:  # fixed shape: no recompilation
                pad = np.zeros((self.batch_size - n, *batch.shape[1:]), batch.dtype)
                batch = np.concatenate([batch, pad])
            x = torch.from_numpy(batch)[:, None]
            x = x.to(self.device).contiguous(memory_format=torch.channels_last)
            with self._autocast():
                logits = self._forward(x)[:n]
            probs = logits.float().softmax(1).permute(0, 2, 3, 1)
            out.append(probs.cpu().numpy())
        if not out:
            return np.zeros((0, *self.input_size, self.bundle.config.n_classes), np.float32)
        return np.ascontiguousarray(np.concatenate(out))

    def segment(self, images: Sequence[np.ndarray]) -> list[Segmentation]:
        """Segment native images of any sizes.

        Args:
            images: ``(H_i, W_i)`` intensity arrays.

        Returns:
            One Segmentation per image, labels on each image's native grid.
        """
        if not images:
            return []
        grid = np.stack([to_grid(img, self.input_size) for img in images])
        probs = self.probabilities(grid)
        return [to_native(p, img.shape) for p, img in zip(probs, images, strict=True)]


def to_native(probs: np.ndarray, shape: tuple[int, ...]) -> Segmentation:
    """Resample grid probabilities to a native shape and take labels.

    Args:
        probs: ``(rows, cols, C)`` float32 class probabilities on the input grid (C <= 4).
        shape: native ``(H, W)``.

    Returns:
        Segmentation with ``(H, W)`` uint8 labels and the grid-level confidence.
    """
    top = probs.max(axis=-1)
    heart = probs.argmax(axis=-1) > 0
    confidence = float(top[heart].mean()) if heart.any() else 0.0
    h, w = int(shape[0]), int(shape[1])
    if probs.shape[:2] != (h, w):
        probs = cv2.resize(probs, (w, h), interpolation=cv2.INTER_LINEAR)
    labels = probs.argmax(axis=-1).astype(np.uint8)
    return Segmentation(labels=labels, confidence=confidence)
