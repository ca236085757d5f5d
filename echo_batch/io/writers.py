"""Writers for CAMUS-style images, label maps, sequences and cfg files (``.nii.gz`` and ``.mhd``).

The twin of :mod:`echo_batch.io.image`: whatever is written here reads back through
:func:`echo_batch.io.image.read_image` / :func:`echo_batch.io.image.read_sequence` with the
same array and spacing.

Warning:
    Arrays are ``(H, W)`` (or ``(T, H, W)``) and spacing is ``(row_mm, col_mm)`` everywhere in this
    package, but SimpleITK wants spacing as ``(x, y)`` = ``(col_mm, row_mm)``. The swap happens here
    and nowhere else; never pass a SimpleITK-ordered spacing to these functions.

Every file is written atomically and durably (:mod:`echo_batch.atomic`): under a hidden
temporary name in the target's folder, flushed to disk, then renamed into place. For ``.mhd`` the
``.raw`` data file is moved into place first and the header, its ``ElementDataFile`` rewritten to
the final relative ``.raw`` name, last, so a header never points to a missing or temporary data
file. A crash leaves at most hidden ``.tmp-`` files or folders, never a half file.

Nothing is written through a symbolic link planted in an output folder: SimpleITK writes into a
fresh private folder (:func:`echo_batch.atomic.private_stage`: ``mkdtemp``, mode 0700, never
an existing name or link), text files are created with ``O_EXCL | O_NOFOLLOW``, and a rename
replaces a link at the final name instead of following it. :func:`real_folder` creates the folders
below an output root one by one and refuses any that is a link.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from echo_batch import atomic
from echo_batch.errors import OutputError

__all__ = ["real_folder", "write_cfg", "write_image", "write_text"]

_SUFFIXES = (".nii.gz", ".nii", ".mhd")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise ValueError(f"{path}: unsupported image file type (use .nii.gz, .nii or .mhd)")


def write_image(
    path: Path | str,
    array: np.ndarray,
    spacing: tuple[float, float],
    origin: tuple[float, float] = (0.0, 0.0),
) -> Path:
    """Write a still frame, label map or sequence with SimpleITK, atomically.

    Args:
        path: target ``.nii.gz`` (or ``.nii``) or ``.mhd`` file. For ``.mhd`` an uncompressed
            ``.raw`` data file of the same stem is written beside it and the header names it by
            its relative file name (``ElementDataFile = patient0001_2CH_ED.raw``).
        array: ``(H, W)`` image or label map, or ``(T, H, W)`` sequence, row 0 at the probe. The
            dtype is kept (use uint8 for CAMUS images and labels).
        spacing: ``(row_mm, col_mm)`` pixel size in mm, i.e. in array-axis order. NOT SimpleITK's
            ``(x, y)`` order: the swap to ``(col_mm, row_mm)`` is done here.
        origin: SimpleITK physical origin ``(x, y)`` in mm (as in
            :class:`echo_batch.io.image.ImageGrid`); sequences get a third coordinate 0.

    Returns:
        The path written.

    Raises:
        ValueError: unsupported suffix, array not 2-D or 3-D, or non-positive spacing.
    """
    path = Path(path)
    suffix = _suffix(path)
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"{path}: array has shape {array.shape}, expected (H, W) or (T, H, W)")
    row_mm, col_mm = (float(s) for s in spacing)
    if not (row_mm > 0 and col_mm > 0):
        raise ValueError(f"{path}: spacing {spacing} must be positive (row_mm, col_mm)")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    if array.ndim == 2:
        image.SetSpacing((col_mm, row_mm))
        image.SetOrigin((float(origin[0]), float(origin[1])))
    else:
        image.SetSpacing((col_mm, row_mm, 1.0))
        image.SetOrigin((float(origin[0]), float(origin[1]), 0.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    # SimpleITK opens by name and follows links: give it a folder no one else can have prepared.
    with atomic.private_stage(path.parent) as stage:
        staged = stage / path.name
        writer = sitk.ImageFileWriter()
        writer.SetFileName(os.fspath(staged))
        # .mhd: uncompressed .raw like CAMUS 2019; .nii.gz: gzip implied by the suffix.
        writer.SetUseCompression(suffix == ".nii.gz")
        writer.Execute(image)
        if suffix == ".mhd":
            _finish_mhd(staged, staged.with_name(path.name[: -len(".mhd")] + ".raw"), path)
        else:
            atomic.move_into_place(staged, path)
    return path


def real_folder(root: Path | str, *parts: str) -> Path:
    """Create ``root/parts[0]/parts[1]/...`` folder by folder, refusing symbolic links.

    ``root``'s own parents are created as usual (a link there was chosen by the user); ``root``
    and every folder below it must be a real folder, so that nothing lands outside ``root``.

    Args:
        root: output folder, e.g. ``OUT/masks``.
        parts: single folder names below it, e.g. the patient id.

    Returns:
        The innermost folder.

    Raises:
        OutputError: ``root`` or a folder below it is a symbolic link or not a folder.
        ValueError: a part is empty, ``.``, ``..`` or holds a path separator.
    """
    folder = Path(root)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _make_real_dir(folder)
    for part in parts:
        if part in ("", ".", "..") or "/" in part or (os.altsep and os.altsep in part):
            raise ValueError(f"{part!r} is not a single folder name")
        folder = folder / part
        _make_real_dir(folder)
    return folder


def _make_real_dir(folder: Path) -> None:
    """Create ``folder`` if absent (never through a link); refuse it if it is not a real folder."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder)
    mode = os.lstat(folder).st_mode
    if stat.S_ISLNK(mode):
        raise OutputError(folder, "is a symbolic link; refusing to write through it (remove it)")
    if not stat.S_ISDIR(mode):
        raise OutputError(folder, "exists and is not a folder")


def _finish_mhd(staged: Path, staged_raw: Path, path: Path) -> None:
    """Move a staged ``.mhd``/``.raw`` pair into place, pointing the header at the final name."""
    raw_name = path.name[: -len(".mhd")] + ".raw"
    lines = staged.read_text(encoding="ascii").splitlines()
    keys = [line.partition("=")[0].strip() for line in lines]
    if keys.count("ElementDataFile") != 1:
        raise RuntimeError(f"{staged}: SimpleITK wrote an unexpected MetaImage header")
    lines[keys.index("ElementDataFile")] = f"ElementDataFile = {raw_name}"
    atomic.move_into_place(staged_raw, path.parent / raw_name)
    atomic.write_text(path, "\n".join(lines) + "\n")


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if "\n" in text or "\r" in text:
        raise ValueError(f"cfg value {text[:40]!r} spans several lines")
    return text


def write_cfg(path: Path | str, mapping: Mapping[str, object]) -> Path:
    """Write a CAMUS ``Info_{VIEW}.cfg`` file as ``Key: value`` lines, atomically.

    Args:
        path: target file.
        mapping: keys in the order to write; values are written with ``str`` (floats with
            ``repr``, so they parse back to the same float). Round values before passing them
            when a shorter text is wanted.

    Returns:
        The path written.

    Raises:
        ValueError: a key is empty or holds ``:``, or a value spans several lines.
    """
    path = Path(path)
    lines = []
    for key, value in mapping.items():
        if not key or ":" in key or key != key.strip():
            raise ValueError(f"bad cfg key {key!r}")
        lines.append(f"{key}: {_format_value(value)}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic.write_text(path, "".join(lines))


def write_text(path: Path | str, text: str) -> Path:
    """Write a small text file (split lists, CSV tables) atomically.

    Args:
        path: target file; its folder is created when missing.
        text: full contents.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic.write_text(path, text)
