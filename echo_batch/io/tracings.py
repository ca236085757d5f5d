"""EchoNet-Dynamic's expert tracings (``VolumeTracings.csv``): LV polygons, masks, ED and ES.

``VolumeTracings.csv`` has the columns ``FileName, X1, Y1, X2, Y2, Frame``: per video
(``FileName``, with or without ``.avi``) and traced frame (``Frame``, 0-based), rows in order, the
first row of a frame is the LV long axis and every other row one disk chord of the method of discs,
from ``(X1, Y1)`` to ``(X2, Y2)``. Coordinates are pixels of the video, ``X`` the column and ``Y``
the row, a pixel's centre at integer coordinates. Each video normally has two traced frames, an ED
and an ES frame, in either order: which is ED is decided by the traced area (larger = ED), never
by the rows' order (Ouyang et al., Nature 2020;580:252-256, EchoNet-Dynamic).

The LV polygon runs through one end of every chord in order along the long axis, then back
through the other ends: the chord ends are put on the two sides of the long axis (by the sign of
the cross product with it) and the chords ordered by where they cross it, so that a file listing
a chord's ends the other way round, or the chords in another order, gives the same simple
polygon. The long-axis row is not a polygon vertex (its base end is the middle of the mitral
chord, not a boundary point).

Problems are data: a frame with a bad number, a non-integer frame index, too few rows or a
degenerate polygon is left out and its problem recorded for its video; a video with other than two
traced frames keeps its frames and gets a problem. Only an unreadable table raises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from echo_batch.errors import InputError
from echo_batch.io.csvtable import MAX_TABLE_BYTES, read_table

__all__ = [
    "TRACING_COLUMNS",
    "Tracing",
    "TracingTable",
    "annotated_frames",
    "read_tracings",
    "tracing_mask",
    "video_stem",
]

TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
MIN_CHORDS = 2  # a polygon needs two chords (four corners) at least
_AREA_TIE = 1e-9  # relative: two traced areas this close cannot say which frame is ED


def video_stem(file_name: str) -> str:
    """``FileName`` without a trailing ``.avi`` (any case): the key shared by both tables."""
    return file_name[:-4] if file_name.lower().endswith(".avi") else file_name


@dataclass(frozen=True, eq=False)
class Tracing:
    """One traced frame of one video.

    Attributes:
        file_name: the video, without ``.avi``.
        frame: 0-based frame index.
        long_axis: ``(2, 2)`` float64, the long axis' two ends as ``(x, y)`` pixels.
        chords: ``(N, 2, 2)`` float64, each chord's two ends as ``(x, y)`` pixels, file order.
        source: the ``VolumeTracings.csv`` it came from.
        line: line of its long-axis row in that file.
    """

    file_name: str
    frame: int
    long_axis: np.ndarray
    chords: np.ndarray
    source: Path
    line: int

    def polygon(self) -> np.ndarray:
        """``(2N, 2)`` float64 ``(x, y)`` vertices of the LV polygon (see the module docstring)."""
        start = self.long_axis[0]
        direction = self.long_axis[1] - start
        first, second = self.chords[:, 0], self.chords[:, 1]
        cross_first = _cross(direction, first - start)
        cross_second = _cross(direction, second - start)
        swap = cross_first < cross_second
        left = np.where(swap[:, None], second, first)
        right = np.where(swap[:, None], first, second)
        along = ((left + right) / 2.0 - start) @ direction
        order = np.argsort(along, kind="stable")
        return np.concatenate([left[order], right[order][::-1]])

    @property
    def area_px(self) -> float:
        """Area of the polygon, square pixels (shoelace formula)."""
        return _shoelace(self.polygon())

    @property
    def where(self) -> str:
        """``FileName frame F`` for messages."""
        return f"{self.file_name} frame {self.frame}"


def _cross(direction: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    return direction[0] * vectors[:, 1] - direction[1] * vectors[:, 0]


def _shoelace(vertices: np.ndarray) -> float:
    x, y = vertices[:, 0], vertices[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


@dataclass(frozen=True)
class TracingTable:
    """Contents of a ``VolumeTracings.csv``.

    Attributes:
        path: the file.
        tracings: per video (without ``.avi``), its usable traced frames by 0-based frame index.
        file_problems: per video, what was wrong with its rows (frames left out, frame count).
        problems: problems of rows that name no video.
    """

    path: Path
    tracings: dict[str, dict[int, Tracing]] = field(default_factory=dict)
    file_problems: dict[str, tuple[str, ...]] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    def of(self, file_name: str) -> dict[int, Tracing]:
        """Traced frames of a video (``FileName`` with or without ``.avi``; empty when none)."""
        return self.tracings.get(video_stem(file_name), {})

    def problems_of(self, file_name: str) -> tuple[str, ...]:
        """Problems recorded for a video (with or without ``.avi``)."""
        return self.file_problems.get(video_stem(file_name), ())


def _frame_index(text: str | None) -> int | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0 or value != int(value):
        return None
    return int(value)


def _coordinates(values: Mapping[str, str | None]) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(values[name] or "") for name in ("X1", "Y1", "X2", "Y2"))
    except ValueError:
        return None
    return numbers if all(math.isfinite(v) for v in numbers) else None


def _build(
    stem: str, frame: int, rows: list[tuple[int, tuple[float, ...] | None]], path: Path
) -> Tracing | str:
    """The tracing of one frame from its rows in order, or the reason it cannot be used."""
    bad = [line for line, coords in rows if coords is None]
    if bad:
        return f"frame {frame} left out: non-numeric or non-finite coordinates on line {bad[0]}"
    if len(rows) < 1 + MIN_CHORDS:
        return (
            f"frame {frame} left out: {len(rows)} row(s), a tracing needs the long axis and at "
            f"least {MIN_CHORDS} chords"
        )
    points = np.array([coords for _, coords in rows], dtype=np.float64).reshape(-1, 2, 2)
    tracing = Tracing(stem, frame, points[0], points[1:], path, rows[0][0])
    if not np.any(points[0, 1] != points[0, 0]):
        return f"frame {frame} left out: its long axis (line {rows[0][0]}) has zero length"
    if tracing.area_px <= 0.0:
        return f"frame {frame} left out: its polygon has no area"
    return tracing


def read_tracings(path: Path | str, *, max_bytes: int = MAX_TABLE_BYTES) -> TracingTable:
    """Read ``VolumeTracings.csv``.

    Args:
        path: the table.
        max_bytes: largest accepted file size.

    Returns:
        TracingTable: usable tracings per video and frame, and the problems found.

    Raises:
        InputError: the table is missing, too large, not text, or lacks a column.
    """
    table = read_table(path, TRACING_COLUMNS, max_bytes=max_bytes)
    groups: dict[str, dict[int, list[tuple[int, tuple[float, ...] | None]]]] = {}
    file_problems: dict[str, list[str]] = {}
    problems: list[str] = []
    for row in table.rows:
        name = row.values["FileName"] or ""
        if not name:
            problems.append(f"line {row.line}: no FileName")
            continue
        stem = video_stem(name)
        frame = _frame_index(row.values["Frame"])
        if frame is None:
            file_problems.setdefault(stem, []).append(
                f"line {row.line}: Frame {row.values['Frame']!r} is not a frame index; row left out"
            )
            continue
        coords = _coordinates(row.values)
        groups.setdefault(stem, {}).setdefault(frame, []).append((row.line, coords))
    tracings: dict[str, dict[int, Tracing]] = {}
    for stem, frames in groups.items():
        kept: dict[int, Tracing] = {}
        for frame, rows in sorted(frames.items()):
            built = _build(stem, frame, rows, table.path)
            if isinstance(built, str):
                file_problems.setdefault(stem, []).append(built)
            else:
                kept[frame] = built
        if len(frames) != 2:
            file_problems.setdefault(stem, []).append(
                f"{len(frames)} traced frame(s), expected 2 (one ED, one ES)"
            )
        if kept:
            tracings[stem] = kept
    return TracingTable(
        path=table.path,
        tracings=tracings,
        file_problems={stem: tuple(texts) for stem, texts in file_problems.items()},
        problems=tuple(problems),
    )


def tracing_mask(tracing: Tracing, shape: tuple[int, int]) -> np.ndarray:
    """The traced LV as a mask: every pixel whose centre lies in the polygon (or on its edge).

    Args:
        tracing: one traced frame.
        shape: ``(H, W)`` of the video.

    Returns:
        ``(H, W)`` uint8, 1 inside the LV polygon, 0 elsewhere (parts outside the frame cut off).
    """
    from skimage.draw import polygon

    vertices = tracing.polygon()
    rows, cols = polygon(vertices[:, 1], vertices[:, 0], shape)
    mask = np.zeros(shape, dtype=np.uint8)
    mask[rows, cols] = 1
    return mask


def annotated_frames(
    frames: Mapping[int, Tracing], *, n_frames: int | None = None
) -> tuple[int, int]:
    """ED and ES frames of a video's two tracings, decided by traced area (larger = ED).

    Args:
        frames: the video's tracings by frame (:meth:`TracingTable.of`).
        n_frames: frames of the video, when known: both frames must lie inside it.

    Returns:
        ``(ed_frame, es_frame)``, 0-based.

    Raises:
        InputError: naming ``VolumeTracings.csv`` and the video: other than two tracings, equal
            areas, or a frame outside the video.
    """
    tracings = list(frames.values())
    if len(tracings) != 2:
        if not tracings:
            raise ValueError("no tracings given")
        raise InputError(
            tracings[0].source,
            f"{tracings[0].file_name}: {len(tracings)} traced frame(s), expected 2 (ED and ES)",
        )
    first, second = sorted(tracings, key=lambda t: t.area_px, reverse=True)
    if first.area_px - second.area_px <= _AREA_TIE * first.area_px:
        raise InputError(
            first.source,
            f"{first.file_name}: frames {first.frame} and {second.frame} have the same traced "
            f"area ({first.area_px:.1f} px); ED cannot be told from ES",
        )
    if n_frames is not None:
        for tracing in (first, second):
            if tracing.frame >= n_frames:
                raise InputError(
                    tracing.source,
                    f"{tracing.where}: traced frame beyond the video's {n_frames} frames",
                )
    return first.frame, second.frame
