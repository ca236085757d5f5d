"""Batched U-Net inference: native images in, native-grid labels and a confidence out.

Images of any size are resized to the bundle's input grid, segmented in batches (across patients),
and the class probabilities are resampled back to each image's native grid before the labels are
taken, so that thin structures survive the round trip.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from echo_batch.domain import Precision
from echo_batch.model.bundle import Bundle, load_bundle
from echo_batch.model.preprocess import resample_labels, to_grid
from echo_batch.model.unet import fold_batch_norm

logger = logging.getLogger(__name__)

PRECISIONS = tuple(p.value for p in Precision)


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


@dataclass(frozen=True)
class GridSegmentation:
    """Model output for a stack of images on the input grid (the GPU stage of a split run).

    Attributes:
        labels: ``(N, rows, cols)`` uint8 labels on the input grid.
        confidence: ``(N,)`` float32, as :attr:`Segmentation.confidence`.
        probabilities: image index -> ``(rows, cols, C)`` float16 (float32 for a float32
            grid) class probabilities on the
            grid, only for images whose native shape differs from the grid (their labels are
            taken after resampling the probabilities to the native grid).
        seconds: time the engine took, when the caller measured it.
    """

    labels: np.ndarray
    confidence: np.ndarray
    probabilities: dict[int, np.ndarray]
    seconds: float = 0.0


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
        model = fold_batch_norm(bundle.build()).to(self.device)
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

    def _batches(self, grid_images: np.ndarray):
        """Yield ``(start, logits)`` per forward pass; ``logits`` is ``(n, C, rows, cols)``.

        Args:
            grid_images: ``(N, rows, cols)`` float32, already normalised (see ``to_grid``).
        """
        for start in range(0, len(grid_images), self.batch_size):
            batch = grid_images[start : start + self.batch_size]
            n = len(batch)
            if self.compiled and n < self.batch_size:  # fixed shape: no recompilation
                pad = np.zeros((self.batch_size - n, *batch.shape[1:]), batch.dtype)
                batch = np.concatenate([batch, pad])
            failure = None
            try:
                x = torch.from_numpy(np.ascontiguousarray(batch))[:, None]
                x = _on_device(x, self.device)
                with self._autocast():
                    logits = self._forward(x)[:n]
            except RuntimeError as exc:  # CUDA out of memory or a lost GPU: see _recover_batch
                failure = _gpu_failure(exc)
            if failure is not None:  # out of the except block: the failed pass's memory is free
                x = logits = None
                logits = self._recover_batch(batch[:n], *failure)
            yield start, logits

    def _recover_batch(self, batch: np.ndarray, oom: bool, reason: str) -> torch.Tensor:
        """Logits of a batch whose forward pass failed on the GPU: smaller batches, then the CPU.

        The whole out-of-memory / lost-GPU fallback lives in this method (and :func:`_gpu_failure`,
        which sorts the errors):

        - CUDA out of memory on several images: the batch is halved, recursively, on the same
          device with the eager model (a compiled graph must not see new batch shapes);
        - CUDA out of memory on one image, a lost GPU or any other CUDA error: the batch runs on
          a CPU copy of the model, built once from the bundle's weights (fp32).

        Each step logs a warning. Images are independent in the network (eval mode), so the
        results equal those of the normal path up to floating-point rounding. Retries happen
        outside ``except`` blocks: a live exception keeps the failed pass's activations alive
        through its traceback, and every smaller batch would run out of memory too.

        Args:
            batch: ``(n, rows, cols)`` float32 grid images of the failed pass (no padding).
            oom: the pass ran out of GPU memory (else the GPU failed).
            reason: first line of the error, for the log.

        Returns:
            ``(n, C, rows, cols)`` float32 logits, on the CPU.
        """
        if self.device.type == "cuda":
            with contextlib.suppress(RuntimeError):  # fails too when the GPU is gone
                torch.cuda.empty_cache()
        if oom and len(batch) > 1:
            half = (len(batch) + 1) // 2
            logger.warning(
                "engine: CUDA out of memory on a batch of %d images; retrying as %d + %d",
                len(batch),
                half,
                len(batch) - half,
            )
            parts = []
            for part in (batch[:half], batch[half:]):
                failure = None
                try:
                    x = torch.from_numpy(np.ascontiguousarray(part))[:, None]
                    x = _on_device(x, self.device)
                    with self._autocast():
                        logits = self.model(x).float().cpu()
                except RuntimeError as exc:
                    failure = _gpu_failure(exc)
                if failure is not None:
                    x = logits = None
                    logits = self._recover_batch(part, *failure)
                parts.append(logits)
            return torch.cat(parts)
        logger.warning(
            "engine: %s on a batch of %d images (%s); running this batch on the CPU",
            "CUDA out of memory" if oom else "GPU failure",
            len(batch),
            reason,
        )
        if getattr(self, "_cpu_model", None) is None:
            cpu_model = fold_batch_norm(self.bundle.build())
            self._cpu_model = cpu_model.to(memory_format=torch.channels_last)
        x = _on_device(torch.from_numpy(np.ascontiguousarray(batch))[:, None], torch.device("cpu"))
        with torch.inference_mode():
            return self._cpu_model(x).float()

    @torch.inference_mode()
    def forward_only(self, grid_images: np.ndarray) -> int:
        """Run the network alone on normalised grid images (the model-only benchmark).

        Args:
            grid_images: ``(N, rows, cols)`` float32.

        Returns:
            Number of images processed (the device is synchronised before returning).
        """
        count = 0
        for _, logits in self._batches(grid_images):
            count += len(logits)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return count

    @torch.inference_mode()
    def probabilities(self, grid_images: np.ndarray) -> np.ndarray:
        """Class probabilities on the input grid.

        Args:
            grid_images: ``(N, rows, cols)`` float32, already normalised (see ``to_grid``).

        Returns:
            ``(N, rows, cols, C)`` float32 probabilities (channels last, ready for cv2).
        """
        n_classes = self.bundle.config.n_classes
        out = np.empty((len(grid_images), *self.input_size, n_classes), np.float32)
        for start, logits in self._batches(grid_images):
            probs = logits.float().softmax(1).permute(0, 2, 3, 1)
            out[start : start + len(logits)] = probs.cpu().numpy()
        return out

    def _grid_outputs(self, grid_images: np.ndarray):
        """Yield per forward pass ``(start, labels, confidence, probs)``.

        ``labels`` is ``(n, rows, cols)`` uint8 and ``confidence`` ``(n,)`` float32 on the host;
        ``probs`` is the ``(n, C, rows, cols)`` float32 probability tensor, still on the device.
        Labels and confidences are taken on the device (``max(1)`` is much faster than
        ``argmax(1)``), so only the images that need resampling bring probabilities back.
        """
        for start, logits in self._batches(grid_images):
            probs = logits.float().softmax(1)
            top, labels = probs.max(1)  # (n, rows, cols)
            heart = labels > 0
            count = heart.sum((1, 2))
            conf = ((top * heart).sum((1, 2)) / count.clamp(min=1)).cpu().numpy()
            yield start, labels.to(torch.uint8).cpu().numpy(), conf, probs

    @torch.inference_mode()
    def segment(self, images: Sequence[np.ndarray]) -> list[Segmentation]:
        """Segment native images of any sizes.

        Labels and confidences are taken on the device; only images whose native size differs
        from the input grid bring their probabilities back to the host for resampling.

        Args:
            images: ``(H_i, W_i)`` intensity arrays.

        Returns:
            One Segmentation per image, labels on each image's native grid.
        """
        if not images:
            return []
        grid = np.stack([to_grid(img, self.input_size) for img in images])
        results: list[Segmentation] = []
        for start, labels_host, conf, probs in self._grid_outputs(grid):
            for k in range(len(labels_host)):
                image = images[start + k]
                if tuple(image.shape) == tuple(self.input_size):
                    native = labels_host[k]
                else:
                    grid_probs = probs[k].permute(1, 2, 0).cpu().numpy()
                    native = resample_labels(grid_probs, image.shape)
                results.append(Segmentation(labels=native, confidence=float(conf[k])))
        return results

    @torch.inference_mode()
    def segment_grid(
        self, grid_images: np.ndarray, native_shapes: Sequence[tuple[int, int]]
    ) -> GridSegmentation:
        """Segment images already on the input grid (the GPU stage of a split run).

        The same computation as :meth:`segment` without the resizing around it: the caller
        brought the images to the grid (``to_grid``) and resamples the labels back (with
        :func:`~echo_batch.model.preprocess.resample_labels` on ``probabilities``).

        Args:
            grid_images: ``(N, rows, cols)`` float16 or float32, normalised (see ``to_grid``);
                float16 halves the transfer and is widened to float32 on the device.
            native_shapes: ``(H, W)`` of each image before ``to_grid``.

        Returns:
            Labels and confidences on the grid, and the probabilities of the images whose
            native shape differs from the grid, in the grid's dtype (float16 or float32).
        """
        n = len(grid_images)
        labels = np.empty((n, *self.input_size), np.uint8)
        confidence = np.empty(n, np.float32)
        kept: dict[int, np.ndarray] = {}
        dtype = torch.float16 if grid_images.dtype == np.float16 else torch.float32
        for start, labels_host, conf, probs in self._grid_outputs(grid_images):
            labels[start : start + len(labels_host)] = labels_host
            confidence[start : start + len(labels_host)] = conf
            for k in range(len(labels_host)):
                if tuple(native_shapes[start + k]) != tuple(self.input_size):
                    grid_probs = probs[k].permute(1, 2, 0).to(dtype)
                    kept[start + k] = grid_probs.cpu().numpy()
        return GridSegmentation(labels=labels, confidence=confidence, probabilities=kept)


def _on_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``(n, 1, rows, cols)`` grid images on ``device`` as float32, channels last.

    float16 grids (a split run's transfer) are widened after the copy to the device, so the
    host-to-device transfer stays half the size; float32 input is not copied again.
    """
    x = x.to(device).to(torch.float32)
    return x.contiguous(memory_format=torch.channels_last)


def _gpu_failure(error: RuntimeError) -> tuple[bool, str]:
    """``(out of memory?, first line)`` of a CUDA failure; any other error is raised again.

    Part of the fallback of :meth:`SegmentationEngine._recover_batch`.
    """
    message = str(error)
    oom = isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in message
    if not oom and not any(tag in message for tag in ("CUDA", "cuDNN", "CUBLAS", "NCCL")):
        raise error
    return oom, (message.splitlines() or [type(error).__name__])[0][:160]


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
    return Segmentation(labels=resample_labels(probs, shape), confidence=confidence)
