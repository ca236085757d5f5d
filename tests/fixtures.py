"""Writers of tiny CAMUS-style files for the tests (SimpleITK or raw bytes, no echo_batch writer).

Spacing arguments are ``(row_mm, col_mm)`` like the readers; SimpleITK wants ``(x, y)`` =
(col, row), and the swap is done here, in one place.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk

VIEWS = ("2CH", "4CH")
INSTANTS = ("ED", "ES")
CFG_2023 = {
    "ED": "1",
    "ES": "3",
    "NbFrame": "4",
    "Sex": "F",
    "Age": "61",
    "ImageQuality": "Good",
    "EF": "55",
    "FrameRate": "50.0",
}
CFG_2019 = {
    "ED": "1",
    "ES": "3",
    "NbFrame": "4",
    "Sex": "M",
    "Age": "79",
    "ImageQuality": "Medium",
    "LVedv": "97.5",
    "LVesv": "58.9",
    "LVef": "39.6",
}


def write_image(path: Path, array: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> Path:
    """Write a 2-D ``(H, W)`` or 3-D ``(T, H, W)`` array; ``.mhd`` gets an uncompressed ``.raw``."""
    array = np.asarray(array)
    image = sitk.GetImageFromArray(array)
    row_mm, col_mm = spacing
    image.SetSpacing((col_mm, row_mm) if array.ndim == 2 else (col_mm, row_mm, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, os.fspath(path), useCompression=False)
    return path


def write_mhd(
    path: Path,
    dims_xy: Iterable[int],
    *,
    element_type: str = "MET_UCHAR",
    spacing_xy: Iterable[float] = (1.0, 1.0),
    data_file: str | None = None,
    data: bytes | None = None,
    extra_lines: Iterable[str] = (),
) -> Path:
    """Write a MetaImage header by hand and, when ``data`` is given, its data file next to it."""
    dims = list(dims_xy)
    data_file = data_file if data_file is not None else path.with_suffix(".raw").name
    lines = [
        "ObjectType = Image",
        f"NDims = {len(dims)}",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        f"ElementSpacing = {' '.join(str(s) for s in spacing_xy)}",
        f"DimSize = {' '.join(str(d) for d in dims)}",
        f"ElementType = {element_type}",
        *extra_lines,
        f"ElementDataFile = {data_file}",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    if data is not None:
        (path.parent / data_file).write_bytes(data)
    return path


def write_nifti_by_hand(
    path: Path,
    array: np.ndarray,
    spacing: tuple[float, float],
    *,
    dims_override: tuple[int, int] | None = None,
) -> Path:
    """Write a uint8 ``(H, W)`` array as NIfTI-1 with the CAMUS 2023 header, without SimpleITK.

    The affine is ``diag(-sx, -sy, 1)`` with qform/sform code 1, as in the CAMUS 2023 files; the
    voxel data are stored x fastest, i.e. row by row of the ``(H, W)`` array.
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    height, width = dims_override[::-1] if dims_override else array.shape
    row_mm, col_mm = spacing
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 2, width, height, 1, 1, 1, 1, 1)
    struct.pack_into("<hhh", header, 70, 2, 8, 0)  # datatype uint8, bitpix 8
    struct.pack_into("<8f", header, 76, 1.0, col_mm, row_mm, 1.0, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<fff", header, 108, 352.0, 1.0, 0.0)  # vox_offset, scl_slope, scl_inter
    struct.pack_into("<B", header, 123, 2)  # xyzt_units: mm
    struct.pack_into("<hh", header, 252, 1, 1)  # qform_code, sform_code
    struct.pack_into("<6f", header, 256, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)  # quatern (180 deg about z)
    struct.pack_into("<4f", header, 280, -col_mm, 0.0, 0.0, 0.0)
    struct.pack_into("<4f", header, 296, 0.0, -row_mm, 0.0, 0.0)
    struct.pack_into("<4f", header, 312, 0.0, 0.0, 1.0, 0.0)
    header[344:348] = b"n+1\x00"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(bytes(header) + array.tobytes()))
    return path


def write_cfg(path: Path, values: Mapping[str, str]) -> Path:
    """Write an ``Info_*.cfg`` file of ``Key: value`` lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}: {v}\n" for k, v in values.items()), encoding="utf-8")
    return path


def lv_la_labels(height: int = 12, width: int = 10) -> np.ndarray:
    """Label map with the LV cavity (1) in rows 2-5, myocardium (2) around it, atrium (3) below."""
    labels = np.zeros((height, width), np.uint8)
    labels[1:7, 2:8] = 2
    labels[2:6, 3:7] = 1
    labels[7:10, 3:7] = 3
    return labels


def make_patient(
    parent: Path,
    pid: str,
    *,
    ext: str = ".nii.gz",
    views: Iterable[str] = VIEWS,
    gt: bool = True,
    sequences: bool = True,
    cfg: Mapping[str, str] | None = None,
) -> Path:
    """Write one tiny patient folder: ED/ES images (+ gt), sequences (+ gt) and cfgs per view.

    ``.mhd`` patients follow the 2019 names (``_sequence``), others the 2023 ones
    (``_half_sequence``). Images are 12 x 10 pixels at 0.3 x 0.2 mm.
    """
    folder = parent / pid
    folder.mkdir(parents=True, exist_ok=True)
    labels = lv_la_labels()
    image = (labels * 60).astype(np.uint8)
    seq_name = "sequence" if ext == ".mhd" else "half_sequence"
    spacing = (0.3, 0.2)
    for view in views:
        for instant in INSTANTS:
            write_image(folder / f"{pid}_{view}_{instant}{ext}", image, spacing)
            if gt:
                write_image(folder / f"{pid}_{view}_{instant}_gt{ext}", labels, spacing)
        if sequences:
            write_image(folder / f"{pid}_{view}_{seq_name}{ext}", np.stack([image] * 4), spacing)
            if gt:
                frames = np.stack([labels] * 4)
                write_image(folder / f"{pid}_{view}_{seq_name}_gt{ext}", frames, spacing)
        write_cfg(
            folder / f"Info_{view}.cfg",
            cfg if cfg is not None else (CFG_2019 if ext == ".mhd" else CFG_2023),
        )
    return folder


def record_file_events(monkeypatch, *, unlinks: bool = False) -> list[tuple[str, str]]:
    """Record ``("fsync", path)``, ``("replace", target)`` (and ``("unlink", path)``) in order.

    The calls still happen; the list tells in which order files and folders were flushed,
    renamed and deleted (durability tests).
    """
    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_unlink = os.fsync, os.replace, Path.unlink

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        real_replace(src, dst)
        events.append(("replace", os.fspath(dst)))

    def unlink(self: Path, missing_ok: bool = False) -> None:
        events.append(("unlink", os.fspath(self)))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    if unlinks:
        monkeypatch.setattr(Path, "unlink", unlink)
    return events
