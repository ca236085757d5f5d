"""Reading and writing AVI videos (EchoNet-Dynamic's ``Videos/*.avi``) with OpenCV's FFmpeg backend.

Reading checks the container's header (frame size, frame count) against the input limits before
decoding, decodes every frame, and turns it to grey: a video whose three channels are equal (the
grey-in-3-channels AVIs of EchoNet-Dynamic) gives channel 0 exactly, any other the ITU-R BT.601
luma. Frames come back ``(T, H, W)`` float32 in 0-255, row 0 at the top of the picture.

A file FFmpeg cannot open, a frame that does not decode, fewer frames than the header announces
(a truncated or corrupt file: the decoder stops at the first broken frame), a frame of another
size, zero frames, or more frames than the limits allow raise :class:`InputError` naming the file.

Writing (the synthetic cohorts) stores grey frames in 3 equal channels like EchoNet-Dynamic, with
one of two codecs (:class:`VideoCodec`): FFV1, lossless (a read gives back the written frames
exactly), or Motion JPEG, lossy like the public dataset's files.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import cv2
import numpy as np

from echo_batch import atomic
from echo_batch.errors import InputError
from echo_batch.io.limits import DEFAULT_LIMITS, InputLimits

__all__ = ["Video", "VideoCodec", "read_video", "write_video"]

_LUMA_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float32)  # ITU-R BT.601, OpenCV's order
_DECODED_BYTES_PER_PIXEL = 3 + 4  # the BGR frames as decoded, then the float32 grey copy


class VideoCodec(StrEnum):
    """Codec of a written AVI."""

    FFV1 = "ffv1"  # FFmpeg's lossless intra-frame codec: frames read back exactly
    MJPG = "mjpg"  # Motion JPEG (lossy), the codec of EchoNet-Dynamic's files


_FOURCC = {VideoCodec.FFV1: "FFV1", VideoCodec.MJPG: "MJPG"}


@dataclass(frozen=True)
class Video:
    """Decoded frames of one video.

    Attributes:
        frames: ``(T, H, W)`` float32 grey levels in 0-255.
        fps: frame rate the container declares, or None when it declares none.
        path: the file.
    """

    frames: np.ndarray
    fps: float | None
    path: Path

    @property
    def n_frames(self) -> int:
        """Number of frames ``T``."""
        return int(self.frames.shape[0])


def _open(path: Path) -> cv2.VideoCapture:
    """An opened capture of ``path`` (FFmpeg only, one decoding thread), or InputError."""
    if not path.is_file():
        raise InputError(path, "file is missing" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    # An absolute name: FFmpeg would take a relative "name:rest" for a protocol. FFmpeg only:
    # OpenCV's image-sequence backend would read a name holding "%d" as a pattern.
    capture = cv2.VideoCapture(
        os.fspath(path.absolute()), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1]
    )
    if not capture.isOpened():
        capture.release()
        raise InputError(path, "not a readable video (FFmpeg cannot open it)")
    return capture


def _header(capture: cv2.VideoCapture, path: Path, limits: InputLimits) -> tuple[int, int, int]:
    """``(height, width, frames announced)`` from the container, checked against the limits.

    The frame count is -1 when the container does not say (decoding is then bounded by the limit).
    """
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    announced = int(count) if math.isfinite(count) and count >= 0 else -1
    if width < 1 or height < 1:
        raise InputError(path, f"video frame size {width} x {height} is empty")
    if max(width, height) > limits.max_side_px:
        raise InputError(
            path, f"video frame size {width} x {height} exceeds {limits.max_side_px} pixels"
        )
    if announced > limits.max_frames:
        raise InputError(path, f"{announced} frames exceed the limit {limits.max_frames}")
    frames = announced if announced > 0 else limits.max_frames
    if frames * height * width * _DECODED_BYTES_PER_PIXEL > limits.max_decoded_bytes:
        raise InputError(path, "video exceeds the decoded size limit")
    return height, width, announced


def _decode(capture: cv2.VideoCapture, path: Path, size: tuple[int, int], limits) -> np.ndarray:
    """Every frame, ``(T, H, W, 3)`` uint8 BGR."""
    frames: list[np.ndarray] = []
    while True:
        try:
            ok, frame = capture.read()
        except cv2.error as exc:
            raise InputError(path, f"frame {len(frames)} does not decode ({exc.err})") from None
        if not ok:
            break
        if len(frames) == limits.max_frames:
            raise InputError(path, f"more than {limits.max_frames} frames (the limit)")
        if frame.shape != (*size, 3) or frame.dtype != np.uint8:
            raise InputError(
                path,
                f"frame {len(frames)} is {frame.shape} {frame.dtype}, the header says "
                f"{size[0]} x {size[1]} (3 channels, 8 bits)",
            )
        frames.append(frame)
    if not frames:
        raise InputError(path, "video has no frames")
    return np.stack(frames)


def _grey(bgr: np.ndarray) -> np.ndarray:
    """``(T, H, W)`` float32: channel 0 when all three are equal, else the BT.601 luma."""
    b, g, r = bgr[..., 0], bgr[..., 1], bgr[..., 2]
    if np.array_equal(b, g) and np.array_equal(g, r):
        return b.astype(np.float32)
    return bgr.astype(np.float32) @ _LUMA_BGR


def read_video(path: Path | str, *, limits: InputLimits = DEFAULT_LIMITS) -> Video:
    """Decode a video to grey frames.

    Args:
        path: an AVI (or any container and codec OpenCV's FFmpeg reads).
        limits: ``max_side_px``, ``max_frames`` and ``max_decoded_bytes`` are checked against the
            header before decoding, and the frame count again while decoding.

    Returns:
        Video with ``(T, H, W)`` float32 frames and the container's frame rate.

    Raises:
        InputError: the file is missing, empty, not a video FFmpeg opens, over the limits, has
            no frames, fewer frames than its header announces (truncated or corrupt), or frames
            of another size than the header's.
    """
    path = Path(path)
    try:
        capture = _open(path)
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    try:
        height, width, announced = _header(capture, path, limits)
        fps = capture.get(cv2.CAP_PROP_FPS)
        bgr = _decode(capture, path, (height, width), limits)
    finally:
        capture.release()
    if announced > 0 and len(bgr) < announced:
        raise InputError(
            path,
            f"video is truncated or corrupt: {len(bgr)} of the {announced} frames its header "
            "announces decode",
        )
    return Video(
        frames=_grey(bgr),
        fps=float(fps) if math.isfinite(fps) and fps > 0 else None,
        path=path,
    )


def write_video(
    path: Path | str,
    frames: np.ndarray,
    fps: float,
    *,
    codec: VideoCodec = VideoCodec.FFV1,
) -> Path:
    """Write grey frames as an AVI in 3 equal channels, atomically.

    The file is written in a private stage folder and renamed into place
    (:func:`echo_batch.atomic.private_stage`), so a reader never sees a half-written video.

    Args:
        path: target ``.avi`` file; its folder is created when missing.
        frames: ``(T, H, W)`` uint8 grey frames, ``T >= 1``.
        fps: frame rate stored in the container, frames per second.
        codec: FFV1 (lossless) or MJPG (lossy, FFmpeg's default quality: on the synthetic
            112-pixel frames a mean absolute error of about 2 grey levels, at most about 25).

    Returns:
        The path written.

    Raises:
        ValueError: frames not ``(T, H, W)`` uint8 with ``T >= 1``, or a non-positive frame rate.
        RuntimeError: OpenCV cannot create the encoder.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"{path}: frames must be (T, H, W) uint8 with T >= 1, got {frames.shape}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"{path}: frame rate {fps} must be positive")
    height, width = frames.shape[1:]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.private_stage(path.parent) as stage:
        staged = stage / "video.avi"
        writer = cv2.VideoWriter(
            os.fspath(staged),
            cv2.CAP_FFMPEG,
            cv2.VideoWriter_fourcc(*_FOURCC[codec]),
            float(fps),
            (width, height),
            True,
        )
        if not writer.isOpened():
            raise RuntimeError(f"{path}: OpenCV cannot create a {codec.value} AVI writer")
        try:
            for frame in frames:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
        finally:
            writer.release()
        atomic.move_into_place(staged, path)
    return path
