"""The EchoNet-Dynamic layout: ``FileList.csv``, ``Videos/*.avi`` and ``VolumeTracings.csv``.

EchoNet-Dynamic (Ouyang et al., Nature 2020;580:252-256; https://echonet.github.io/dynamic/)
holds 10,030 apical 4-chamber videos, 112 x 112 pixels, grey in 3 channels, about 50 frames/s,
without pixel spacing::

    ROOT/FileList.csv         FileName, EF, ESV, EDV, FrameHeight, FrameWidth, FPS,
                              NumberOfFrames, Split (TRAIN | VAL | TEST)
    ROOT/Videos/<FileName>.avi
    ROOT/VolumeTracings.csv   optional, see :mod:`echo_batch.io.tracings`

``FileName`` lacks the ``.avi`` suffix in some releases and has it in others (and in
``VolumeTracings.csv``): both are accepted, and a video is known by its name without it. ``EF``,
``EDV`` and ``ESV`` are the reference values of the dataset (from the expert's tracings of the
4-chamber view); they become ``ef_ref_pct``.

:func:`read_filelist` returns one entry per row with that row's problems as data (a missing
column, a bad number, a duplicate, a missing video), so that one bad row never stops a cohort;
:func:`read_echonet_clip` decodes a video into a :class:`~echo_batch.io.clip.Clip` (view 4CH, no
spacing, frame time from the FileList's frame rate) and checks its frame count against the
FileList. The dataset's licence forbids redistributing its videos: tests use generated ones
(:mod:`echo_batch.synth.echonet`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from echo_batch.domain import InputFormat, SpacingSource, Split, View
from echo_batch.errors import InputError
from echo_batch.io.clip import Clip
from echo_batch.io.csvtable import MAX_TABLE_BYTES, CsvRow, read_table, safe_name
from echo_batch.io.limits import DEFAULT_LIMITS, InputLimits
from echo_batch.io.tracings import (
    Tracing,
    TracingTable,
    annotated_frames,
    read_tracings,
    tracing_mask,
    video_stem,
)
from echo_batch.io.video import read_video

__all__ = [
    "FILELIST",
    "FILELIST_COLUMNS",
    "TRACINGS",
    "VIDEOS",
    "EchoNetEntry",
    "Tracing",
    "TracingTable",
    "annotated_frames",
    "is_echonet_root",
    "read_echonet_clip",
    "read_entry_clip",
    "read_filelist",
    "read_tracings",
    "tracing_mask",
    "video_stem",
]

FILELIST = "FileList.csv"
TRACINGS = "VolumeTracings.csv"
VIDEOS = "Videos"
FILELIST_COLUMNS = (
    "FileName",
    "EF",
    "ESV",
    "EDV",
    "FrameHeight",
    "FrameWidth",
    "FPS",
    "NumberOfFrames",
    "Split",
)
SPLITS = {"TRAIN": Split.TRAINING, "VAL": Split.VALIDATION, "TEST": Split.TESTING}
"""EchoNet-Dynamic's split names (any case; the :class:`Split` values are accepted too)."""
MAX_FPS = 1000.0


@dataclass(frozen=True)
class EchoNetEntry:
    """One row of ``FileList.csv``.

    Attributes:
        file_name: ``FileName`` without ``.avi``.
        line: line of the row in ``FileList.csv`` (the header is line 1).
        video: ``ROOT/Videos/<file_name>.avi`` (None when ``FileName`` is not a plain file
            name); whether it exists is ``usable``.
        ef_ref_pct: reference EF, %.
        edv_ml: reference end-diastolic volume, mL.
        esv_ml: reference end-systolic volume, mL.
        fps: frames per second.
        n_frames: frames of the video, as the FileList says.
        height: frame height, pixels, as the FileList says.
        width: frame width, pixels, as the FileList says.
        split: the dataset's split (NONE when absent or unknown).
        problems: what is wrong with the row, in words (a bad value is None here).
        usable: the video can be read: a plain file name, a regular file inside ROOT, not a
            repeat of an earlier row.
    """

    file_name: str
    line: int
    video: Path | None
    ef_ref_pct: float | None = None
    edv_ml: float | None = None
    esv_ml: float | None = None
    fps: float | None = None
    n_frames: int | None = None
    height: int | None = None
    width: int | None = None
    split: Split = Split.NONE
    problems: tuple[str, ...] = ()
    usable: bool = True

    @property
    def frame_time_ms(self) -> float | None:
        """``1000 / fps``, or None when the frame rate is unknown."""
        return None if self.fps is None else 1000.0 / self.fps


def is_echonet_root(root: Path | str) -> bool:
    """True when ``root`` holds a ``FileList.csv`` and a ``Videos`` folder."""
    root = Path(root)
    return (root / FILELIST).is_file() and (root / VIDEOS).is_dir()


class _RowReader:
    """Typed values of one row; each bad or missing value becomes a problem and None."""

    def __init__(self, row: CsvRow, missing: tuple[str, ...]) -> None:
        self.row = row
        self.missing = missing
        self.problems: list[str] = []

    def number(
        self, name: str, low: float, high: float, *, integer: bool = False, positive: bool = False
    ):
        """The value of ``name`` in ``[low, high]`` (``(0, high]`` when ``positive``), or None."""
        if name in self.missing:
            self.problems.append(f"FileList.csv has no {name} column")
            return None
        text = self.row.values.get(name)
        if not text:
            self.problems.append(f"{name} is empty")
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        in_range = math.isfinite(value) and low <= value <= high and not (positive and value <= 0)
        if not in_range or (integer and value != int(value)):
            kind = "a whole number" if integer else "a number"
            bounds = f"(0, {high:g}]" if positive else f"[{low:g}, {high:g}]"
            self.problems.append(f"{name} {text!r} is not {kind} in {bounds}")
            return None
        return int(value) if integer else value

    def split(self) -> Split:
        """The row's split (NONE, with a problem, when unknown)."""
        if "Split" in self.missing:
            return Split.NONE
        text = (self.row.values.get("Split") or "").strip()
        if not text:
            self.problems.append("Split is empty")
            return Split.NONE
        found = SPLITS.get(text.upper())
        if found is None and text.lower() in {s.value for s in Split}:
            found = Split(text.lower())
        if found is None:
            self.problems.append(f"Split {text!r} is not one of TRAIN, VAL, TEST")
            return Split.NONE
        return found


def _video_problem(root: Path, path: Path) -> str | None:
    """Why the video ``path`` cannot be read, or None."""
    name = f"{VIDEOS}/{path.name}"
    try:
        if not path.exists():
            return f"{name} is missing"
        if not path.is_file():
            return f"{name} is not a regular file"
        if not path.resolve().is_relative_to(root.resolve()):
            return f"{name} resolves outside {root}"
    except (OSError, RuntimeError) as exc:  # permission, symlink loop
        return f"{name} cannot be read ({exc})"
    return None


def read_filelist(root: Path | str, *, max_bytes: int = MAX_TABLE_BYTES) -> list[EchoNetEntry]:
    """Read ``ROOT/FileList.csv`` and find each row's video.

    Args:
        root: the dataset folder (holding ``FileList.csv`` and ``Videos/``).
        max_bytes: largest accepted ``FileList.csv``.

    Returns:
        One :class:`EchoNetEntry` per data row, in file order, each with its problems: a column
        the header lacks (the value is None on every row), an empty or bad number, an unknown
        split, a wrong number of cells, a ``FileName`` that is not a plain file name (unusable),
        a row repeating an earlier ``FileName`` (unusable; the first row is kept), a missing
        video (unusable).

    Raises:
        InputError: ``FileList.csv`` is missing, unreadable, too large or has no ``FileName``
            column.
    """
    root = Path(root)
    table = read_table(root / FILELIST, ("FileName",), FILELIST_COLUMNS[1:], max_bytes=max_bytes)
    first_line: dict[str, int] = {}
    entries = []
    for row in table.rows:
        values = _RowReader(row, table.missing)
        if row.n_fields != table.n_header:
            values.problems.append(f"{row.n_fields} cells, the header has {table.n_header}")
        stem = video_stem(row.values["FileName"] or "")
        usable = True
        video: Path | None = None
        if not safe_name(stem):
            values.problems.append(f"FileName {stem!r} is not a plain file name")
            usable = False
        else:
            video = root / VIDEOS / f"{stem}.avi"
            if stem in first_line:
                values.problems.append(
                    f"FileName {stem} repeats line {first_line[stem]}; row ignored"
                )
                usable = False
            else:
                first_line[stem] = row.line
                problem = _video_problem(root, video)
                if problem is not None:
                    values.problems.append(problem)
                    usable = False
        entries.append(
            EchoNetEntry(
                file_name=stem,
                line=row.line,
                video=video,
                ef_ref_pct=values.number("EF", 0.0, 100.0),
                esv_ml=values.number("ESV", 0.0, 10_000.0),
                edv_ml=values.number("EDV", 0.0, 10_000.0),
                height=values.number("FrameHeight", 1, 1_000_000, integer=True),
                width=values.number("FrameWidth", 1, 1_000_000, integer=True),
                fps=values.number("FPS", 0.0, MAX_FPS, positive=True),
                n_frames=values.number("NumberOfFrames", 1, 1_000_000, integer=True),
                split=values.split(),
                problems=tuple(values.problems),
                usable=usable,
            )
        )
    return entries


def read_echonet_clip(
    path: Path | str,
    *,
    expected_frames: int | None = None,
    expected_size: tuple[int, int] | None = None,
    fps: float | None = None,
    limits: InputLimits = DEFAULT_LIMITS,
) -> Clip:
    """Decode one EchoNet-Dynamic video into a clip.

    Args:
        path: ``Videos/<FileName>.avi``.
        expected_frames: ``NumberOfFrames`` of the FileList: the decoded count must equal it.
        expected_size: ``(FrameHeight, FrameWidth)`` of the FileList: the frames must have it.
        fps: ``FPS`` of the FileList (``frame_time_ms = 1000 / fps``); None leaves the frame
            time unknown (the container's rate is not trusted for it).
        limits: size limits checked before decoding.

    Returns:
        Clip: ``(T, H, W)`` float32 grey frames, no spacing (``SpacingSource.NONE``), view 4CH,
        format ``echonet``.

    Raises:
        InputError: naming the video: unreadable, truncated or corrupt, over the limits, no
            frames, or a frame count or size other than the FileList's.
        ValueError: ``fps`` not a positive number.
    """
    path = Path(path)
    if fps is not None and not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise ValueError(f"frame rate {fps} is not a positive number of frames per second")
    video = read_video(path, limits=limits)
    if expected_frames is not None and video.n_frames != expected_frames:
        raise InputError(
            path,
            f"{video.n_frames} frames decoded, {FILELIST} says {expected_frames} (NumberOfFrames)",
        )
    size = tuple(video.frames.shape[1:])
    if expected_size is not None and size != tuple(expected_size):
        raise InputError(
            path,
            f"frames are {size[0]} x {size[1]} pixels, {FILELIST} says "
            f"{expected_size[0]} x {expected_size[1]} (FrameHeight x FrameWidth)",
        )
    return Clip(
        frames=video.frames,
        spacing=None,
        spacing_source=SpacingSource.NONE,
        path=path,
        input_format=InputFormat.ECHONET,
        frame_time_ms=None if fps is None else 1000.0 / fps,
        view=View.A4C,
    )


def read_entry_clip(entry: EchoNetEntry, *, limits: InputLimits = DEFAULT_LIMITS) -> Clip:
    """The clip of a FileList entry, checked against the entry's frame count, size and rate.

    Args:
        entry: a row of :func:`read_filelist`.
        limits: size limits checked before decoding.

    Returns:
        Clip (see :func:`read_echonet_clip`).

    Raises:
        InputError: the entry has no usable video (naming the expected file and the row's
            problems), or the video is bad (see :func:`read_echonet_clip`).
    """
    if not entry.usable or entry.video is None:
        where = entry.video or Path(entry.file_name)
        raise InputError(where, "; ".join(entry.problems) or "no usable video")
    size = None if entry.height is None or entry.width is None else (entry.height, entry.width)
    return read_echonet_clip(
        entry.video,
        expected_frames=entry.n_frames,
        expected_size=size,
        fps=entry.fps,
        limits=limits,
    )
