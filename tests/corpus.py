"""Bad-input corpus for the reliability and security tests, generated on the fly.

Nothing is committed: every file is written by the tests.

:func:`build_corpus` writes two DATA roots in the CAMUS 2019 layout (``training/``, ``testing/``):

- ``clean``: the good patients only;
- ``bad``: the same good patients mixed with one patient per bad-input case (:data:`CASES`) and
  with odd entries next to the patient folders (:data:`ROOT_CASES`).

Good patients come from ``echo-batch synth`` (96 x 96 grid, so a run takes seconds). Escaping
files point at ``secret/``, a folder beside DATA that nothing may ever open.

The tables below are the single source of the expected outcomes; ``docs/reliability.md`` lists
the same cases.
"""

from __future__ import annotations

import os
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from echo_batch.synth import synth_cohort

GRID = 96  # synthetic images are GRID x GRID
_MHD_PATIENTS = 24
_NIFTI_PATIENTS = 6


@dataclass(frozen=True)
class Case:
    """A patient built to exercise one bad input.

    Attributes:
        case: short name (the id in docs/reliability.md).
        patient_id: folder name of the patient.
        status: expected status in ``patients.parquet``.
        file: file name the error must contain (None: no file concerned).
        reason: substring of the error.
        needs_unprivileged: the case only bites when the run cannot bypass permissions.
    """

    case: str
    patient_id: str
    status: str
    file: str | None
    reason: str | None
    needs_unprivileged: bool = False


@dataclass(frozen=True)
class RootCase:
    """An odd entry next to the patient folders: a discovery problem, never a patient row.

    Attributes:
        case: short name.
        entry: entry name under ``training/`` or ``testing/``.
        reason: substring of the logged problem.
        needs_unprivileged: as for :class:`Case`.
    """

    case: str
    entry: str
    reason: str
    needs_unprivileged: bool = False


@dataclass(frozen=True)
class Corpus:
    """Where the corpus was written.

    Attributes:
        clean: DATA root with the good patients only.
        bad: DATA root with the good patients, the bad ones and the odd entries.
        secret: folder outside DATA that escaping files point at.
        good_ids: patients that must come out identical to the clean run.
        cases: bad patients.
        root_cases: odd entries.
    """

    clean: Path
    bad: Path
    secret: Path
    good_ids: tuple[str, ...]
    cases: tuple[Case, ...]
    root_cases: tuple[RootCase, ...]


NON_ASCII_ID = "patiënt0003"

# fmt: off
CASES: tuple[Case, ...] = (
    Case("truncated-raw", "patient0004", "partial", "patient0004_2CH_ED.raw", "truncated"),
    Case("oversized-raw", "patient0005", "partial", "patient0005_2CH_ED.raw", "oversized"),
    Case("missing-raw", "patient0006", "partial", "patient0006_2CH_ED.mhd", "is missing"),
    Case("raw-absolute-path", "patient0007", "partial", "patient0007_2CH_ED.mhd",
         "is an absolute path"),
    Case("raw-dotdot-path", "patient0008", "partial", "patient0008_2CH_ED.mhd",
         "leaves the patient folder"),
    Case("raw-symlink-outside", "patient0009", "partial", "patient0009_2CH_ED.mhd",
         "resolves outside the patient folder"),
    Case("raw-symlink-loop", "patient0010", "partial", "patient0010_2CH_ED.mhd",
         "cannot be resolved"),
    Case("absurd-dimensions", "patient0011", "partial", "patient0011_2CH_ED.mhd",
         "exceeds 4096 pixels per side"),
    Case("zraw-bomb", "patient0012", "partial", "patient0012_2CH_ED.mhd",
         "expands past the 9216 bytes"),
    Case("nan-pixels", "patient0013", "partial", "patient0013_2CH_ED.mhd", "NaN or infinite"),
    Case("3d-where-2d-expected", "patient0014", "partial", "patient0014_2CH_ED.mhd",
         "3 dimensions"),
    Case("unknown-gt-labels", "patient0015", "partial", "patient0015_2CH_ED_gt.mhd",
         "unknown labels [7]"),
    Case("missing-view", "patient0016", "partial", None, "missing images 4CH_ED, 4CH_ES"),
    Case("missing-all-images-but-one", "patient0017", "failed", None,
         "missing images 2CH_ES, 4CH_ED, 4CH_ES"),
    Case("garbled-cfg", "patient0018", "partial", "Info_2CH.cfg", "not a text file"),
    Case("missing-cfg", "patient0019", "ok", None, None),
    Case("unreadable-raw", "patient0020", "partial", "patient0020_2CH_ED.raw",
         "Permission denied", needs_unprivileged=True),
    Case("image-symlink-outside", "patient0201", "partial", "patient0201_2CH_ED.nii.gz",
         "resolves outside the patient folder"),
    Case("non-image-bytes", "patient0202", "partial", "patient0202_2CH_ED.nii.gz",
         "not a readable image"),
    Case("truncated-nii-gz", "patient0203", "partial", "patient0203_4CH_ES.nii.gz",
         "truncated or corrupt"),
    Case("inf-pixels", "patient0204", "partial", "patient0204_4CH_ED.nii.gz", "NaN or infinite"),
    Case("fifo-instead-of-image", "patient0205", "partial", "patient0205_2CH_ES.nii.gz",
         "not a regular file"),
    Case("unreadable-image", "patient0206", "partial", "patient0206_2CH_ED.nii.gz",
         "Permission denied", needs_unprivileged=True),
)
ROOT_CASES: tuple[RootCase, ...] = (
    RootCase("duplicate-patient-id", "patient0001", "duplicate patient id patient0001"),
    RootCase("symlink-loop", "loop", "dangling symlink or symlink loop"),
    RootCase("patient-folder-symlink-outside", "patient0021",
             "resolves outside the folder of patients"),
    RootCase("undecodable-folder-name", "patient\udcff0022", "not valid UTF-8"),
    RootCase("unreadable-folder", "patient0023", "cannot list patient folder (Permission denied)",
             needs_unprivileged=True),
)
# fmt: on
GOOD_IDS = ("patient0001", "patient0002", NON_ASCII_ID, "patient0024")


def build_corpus(base: Path) -> Corpus:
    """Write the clean and the bad DATA roots under ``base``.

    Permissions are left open (the unreadable cases are set by :func:`lock_unreadable`, after any
    ``chown`` of the tree).

    Args:
        base: empty folder.

    Returns:
        The corpus description.
    """
    src_mhd = synth_cohort(base / "src-mhd", _MHD_PATIENTS, seed=11, fmt="mhd", max_side=GRID)
    src_nii = synth_cohort(base / "src-nii", _NIFTI_PATIENTS, seed=12, fmt="nifti", max_side=GRID)
    secret = base / "secret"
    secret.mkdir()
    (secret / "secret.raw").write_bytes(b"\x07" * GRID * GRID)
    shutil.copy(
        src_nii / "database_nifti" / "patient0001" / "patient0001_2CH_ED.nii.gz",
        secret / "secret.nii.gz",
    )
    clean, bad = base / "clean" / "training", base / "bad" / "training"
    for pid in GOOD_IDS:
        source = src_mhd / "training" / ("patient0003" if pid == NON_ASCII_ID else pid)
        for parent in (clean, bad):
            copy_patient(source, parent / pid)
    for case in CASES:
        if case.patient_id.startswith("patient02"):
            number = int(case.patient_id[-2:])
            source = src_nii / "database_nifti" / f"patient{number:04d}"
        else:
            source = src_mhd / "training" / case.patient_id
        folder = copy_patient(source, bad / case.patient_id)
        _BREAK[case.case](folder, secret)
    _odd_entries(bad, src_mhd / "training", secret)
    return Corpus(
        clean=base / "clean",
        bad=base / "bad",
        secret=secret,
        good_ids=GOOD_IDS,
        cases=CASES,
        root_cases=ROOT_CASES,
    )


def lock_unreadable(corpus: Corpus) -> None:
    """Make the files of the ``needs_unprivileged`` cases unreadable (mode 000)."""
    training = corpus.bad / "training"
    (training / "patient0020" / "patient0020_2CH_ED.raw").chmod(0)
    (training / "patient0206" / "patient0206_2CH_ED.nii.gz").chmod(0)
    (training / "patient0023").chmod(0)


def unlock_unreadable(corpus: Corpus) -> None:
    """Undo :func:`lock_unreadable`."""
    training = corpus.bad / "training"
    (training / "patient0023").chmod(0o755)
    (training / "patient0020" / "patient0020_2CH_ED.raw").chmod(0o644)
    (training / "patient0206" / "patient0206_2CH_ED.nii.gz").chmod(0o644)


def copy_patient(source: Path, folder: Path) -> Path:
    """Copy a patient folder under a new id: file names, and ``.mhd`` data-file names, follow."""
    old, new = source.name, folder.name
    folder.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        target = folder / path.name.replace(old, new, 1)
        if path.suffix == ".mhd":
            text = path.read_text(encoding="ascii").replace(old, new)
            target.write_bytes(text.encode("utf-8"))
        else:
            shutil.copyfile(path, target)
    return folder


# --------------------------------------------------------------------------- breakers


def _header(folder: Path, name: str) -> Path:
    return folder / f"{folder.name}_{name}.mhd"


def _set_field(header: Path, key: str, value: str) -> None:
    lines = header.read_text(encoding="ascii").splitlines()
    lines = [f"{key} = {value}" if line.startswith(f"{key} =") else line for line in lines]
    if not any(line.startswith(f"{key} =") for line in lines):
        lines.insert(-1, f"{key} = {value}")
    header.write_text("\n".join(lines) + "\n", encoding="ascii")


def _raw(folder: Path, name: str) -> Path:
    return folder / f"{folder.name}_{name}.raw"


def _truncate(folder: Path, _: Path) -> None:
    raw = _raw(folder, "2CH_ED")
    raw.write_bytes(raw.read_bytes()[:-100])


def _oversize(folder: Path, _: Path) -> None:
    raw = _raw(folder, "2CH_ED")
    raw.write_bytes(raw.read_bytes() + b"\0" * 64)


def _missing_raw(folder: Path, _: Path) -> None:
    _raw(folder, "2CH_ED").unlink()


def _absolute(folder: Path, secret: Path) -> None:
    _set_field(_header(folder, "2CH_ED"), "ElementDataFile", os.fspath(secret / "secret.raw"))


def _dotdot(folder: Path, secret: Path) -> None:
    _set_field(_header(folder, "2CH_ED"), "ElementDataFile", "../../../secret/secret.raw")


def _raw_symlink(folder: Path, secret: Path) -> None:
    raw = _raw(folder, "2CH_ED")
    raw.unlink()
    raw.symlink_to(secret / "secret.raw")


def _raw_loop(folder: Path, _: Path) -> None:
    raw = _raw(folder, "2CH_ED")
    raw.unlink()
    raw.symlink_to(raw.name)


def _absurd(folder: Path, _: Path) -> None:
    _set_field(_header(folder, "2CH_ED"), "DimSize", "100000 100000")


def _bomb(folder: Path, _: Path) -> None:
    """96 x 96 bytes announced; 64 MiB of zeros inside 64 KiB of zlib."""
    header = _header(folder, "2CH_ED")
    _set_field(header, "CompressedData", "True")
    _set_field(header, "ElementDataFile", f"{folder.name}_2CH_ED.zraw")
    compressor = zlib.compressobj(9)
    block = b"\0" * (1 << 20)
    data = b"".join(compressor.compress(block) for _ in range(64)) + compressor.flush()
    (folder / f"{folder.name}_2CH_ED.zraw").write_bytes(data)
    _raw(folder, "2CH_ED").unlink()


def _nan(folder: Path, _: Path) -> None:
    header = _header(folder, "2CH_ED")
    pixels = np.frombuffer(_raw(folder, "2CH_ED").read_bytes(), np.uint8).astype(np.float32)
    pixels[GRID * GRID // 2] = np.nan
    _set_field(header, "ElementType", "MET_FLOAT")
    _raw(folder, "2CH_ED").write_bytes(pixels.tobytes())


def _three_d(folder: Path, _: Path) -> None:
    header = _header(folder, "2CH_ED")
    _set_field(header, "NDims", "3")
    _set_field(header, "DimSize", f"{GRID} {GRID} 3")
    _set_field(header, "ElementSpacing", "0.3 0.3 1")
    raw = _raw(folder, "2CH_ED")
    raw.write_bytes(raw.read_bytes() * 3)


def _unknown_labels(folder: Path, _: Path) -> None:
    raw = _raw(folder, "2CH_ED_gt")
    labels = bytearray(raw.read_bytes())
    labels[0] = 7
    raw.write_bytes(bytes(labels))


def _missing_view(folder: Path, _: Path) -> None:
    for path in folder.glob(f"{folder.name}_4CH_E[DS]*"):
        path.unlink()


def _only_one_image(folder: Path, _: Path) -> None:
    for path in folder.glob(f"{folder.name}_*_E[DS]*"):
        if not path.name.startswith(f"{folder.name}_2CH_ED"):
            path.unlink()


def _garbled_cfg(folder: Path, _: Path) -> None:
    (folder / "Info_2CH.cfg").write_bytes(bytes(range(128, 256)) * 4)


def _missing_cfg(folder: Path, _: Path) -> None:
    for view in ("2CH", "4CH"):
        (folder / f"Info_{view}.cfg").unlink()


def _nothing(folder: Path, _: Path) -> None:
    """Made unreadable later by :func:`lock_unreadable`."""


def _image_symlink(folder: Path, secret: Path) -> None:
    image = folder / f"{folder.name}_2CH_ED.nii.gz"
    image.unlink()
    image.symlink_to(secret / "secret.nii.gz")


def _non_image(folder: Path, _: Path) -> None:
    (folder / f"{folder.name}_2CH_ED.nii.gz").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 8)


def _truncated_gz(folder: Path, _: Path) -> None:
    path = folder / f"{folder.name}_4CH_ES.nii.gz"
    path.write_bytes(path.read_bytes()[:-400])


def _inf(folder: Path, _: Path) -> None:
    path = folder / f"{folder.name}_4CH_ED.nii.gz"
    image = sitk.Cast(sitk.ReadImage(os.fspath(path)), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array[GRID // 2, GRID // 2] = np.inf
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, os.fspath(path))


def _fifo(folder: Path, _: Path) -> None:
    path = folder / f"{folder.name}_2CH_ES.nii.gz"
    path.unlink()
    os.mkfifo(path)


_BREAK: dict[str, Callable[[Path, Path], None]] = {
    "truncated-raw": _truncate,
    "oversized-raw": _oversize,
    "missing-raw": _missing_raw,
    "raw-absolute-path": _absolute,
    "raw-dotdot-path": _dotdot,
    "raw-symlink-outside": _raw_symlink,
    "raw-symlink-loop": _raw_loop,
    "absurd-dimensions": _absurd,
    "zraw-bomb": _bomb,
    "nan-pixels": _nan,
    "3d-where-2d-expected": _three_d,
    "unknown-gt-labels": _unknown_labels,
    "missing-view": _missing_view,
    "missing-all-images-but-one": _only_one_image,
    "garbled-cfg": _garbled_cfg,
    "missing-cfg": _missing_cfg,
    "unreadable-raw": _nothing,
    "image-symlink-outside": _image_symlink,
    "non-image-bytes": _non_image,
    "truncated-nii-gz": _truncated_gz,
    "inf-pixels": _inf,
    "fifo-instead-of-image": _fifo,
    "unreadable-image": _nothing,
}


def _odd_entries(training: Path, source: Path, secret: Path) -> None:
    """Duplicate id (testing/), symlink loop, folder symlinked outside, bad name, locked folder."""
    copy_patient(source / "patient0001", training.parent / "testing" / "patient0001")
    (training / "loop").symlink_to("loop")
    outside = copy_patient(source / "patient0021", secret / "patient0021")
    (training / "patient0021").symlink_to(outside)
    dest = os.fsencode(training / "patient") + b"\xff0022"
    os.mkdir(dest)
    for path in sorted((source / "patient0022").iterdir()):
        name = os.fsencode(path.name).replace(b"patient0022", b"patient\xff0022")
        shutil.copyfile(path, dest + b"/" + name)
    copy_patient(source / "patient0023", training / "patient0023")
