"""Discovery of CAMUS-layout patient folders into a deterministic manifest.

Accepted roots: a 2019 root (``training/``, ``testing/``), a 2023 root (``database_nifti/`` with
optional ``database_split/``), a ``database_nifti`` folder, or any folder of patient folders.
Odd entries (missing views, stray files, unreadable folders, duplicate ids, symbolic-link loops,
patient folders linked outside the folder of patients, folder names that are not UTF-8) become
problems with a reason; they never stop discovery.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from echo_batch.domain import (
    IMAGE_KEYS,
    ImageFiles,
    ImageKey,
    Instant,
    LoopKind,
    PatientRef,
    Release,
    Split,
    View,
)
from echo_batch.errors import InputError
from echo_batch.io.patient_refs import PatientRefs, PatientRefsBuilder

logger = logging.getLogger(__name__)

_FILE_RE = re.compile(
    r"^(?P<pid>.+?)_(?P<view>2CH|4CH)_(?P<what>ED|ES|half_sequence|sequence)(?P<gt>_gt)?"
    r"\.(?P<ext>nii\.gz|nii|mhd)$"
)
_CFG_RE = re.compile(r"^Info_(?P<view>2CH|4CH)\.cfg$")
_IGNORED_SUFFIXES = (".raw", ".zraw")
_SPLIT_FILES = {
    Split.TRAINING: "subgroup_training.txt",
    Split.VALIDATION: "subgroup_validation.txt",
    Split.TESTING: "subgroup_testing.txt",
}
_SPLIT_FOLDERS_2019 = {"training": Split.TRAINING, "testing": Split.TESTING}


@dataclass(frozen=True)
class Problem:
    """An odd entry found during discovery.

    Attributes:
        path: file or folder concerned.
        reason: what is odd about it.
    """

    path: Path
    reason: str


@dataclass(frozen=True)
class Manifest:
    """Everything a run would process.

    Attributes:
        root: the DATA root as given (resolved).
        patients: patients in deterministic (id) order.
        problems: odd entries outside any patient (stray folders, duplicates, bad split files).
    """

    root: Path
    patients: Sequence[PatientRef]
    problems: tuple[Problem, ...] = field(default=())

    def by_split(self, split: Split) -> tuple[PatientRef, ...]:
        """Patients of one split, in manifest order."""
        return tuple(p for p in self.patients if p.split == split)


def _read_split_files(folder: Path) -> tuple[dict[str, Split], list[Problem]]:
    splits: dict[str, Split] = {}
    problems: list[Problem] = []
    for split, name in _SPLIT_FILES.items():
        path = folder / name
        if not path.is_file():
            continue
        try:
            ids = path.read_text(encoding="utf-8").split()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(path, f"unreadable split file ({exc})"))
            continue
        for pid in ids:
            if pid in splits and splits[pid] != split:
                problems.append(Problem(path, f"{pid} is listed in two splits"))
                continue
            splits[pid] = split
    return splits, problems


def _patient_parents(root: Path) -> tuple[list[tuple[Path, Split | None]], Path | None]:
    """Folders that hold patient folders, with the split they imply, and the split-file folder."""
    if (root / "database_nifti").is_dir():
        return [(root / "database_nifti", None)], root / "database_split"
    present = [(root / name, split) for name, split in _SPLIT_FOLDERS_2019.items()]
    present = [(p, s) for p, s in present if p.is_dir()]
    if present:
        return present, None
    if root.name == "database_nifti":
        return [(root, None)], root.parent / "database_split"
    return [(root, None)], root / "database_split"


def scan_patient(folder: Path, split: Split = Split.NONE) -> PatientRef:
    """Build the PatientRef of one patient folder from its file names (no pixel is read).

    Args:
        folder: patient folder named after the patient id.
        split: official split of the patient.

    Returns:
        PatientRef with the files found and problems noted.

    Raises:
        InputError: the folder cannot be listed.
    """
    # Not ``folder.name``: pathlib interns every part it parses, and an id kept for the run (one
    # per patient, 100,000 in a large cohort) would keep its entry in the interpreter's table of
    # interned strings, which never shrinks (7 MB at 100,000 patients, docs/performance.md).
    pid = os.path.basename(os.fspath(folder))
    images: dict[ImageKey, dict[str, Path]] = {}
    sequences: dict[View, dict[str, Path]] = {}
    kinds: dict[View, str] = {}  # file-name kind of each view's loop: half_sequence or sequence
    cfgs: dict[View, Path] = {}
    problems: list[str] = []
    extensions: set[str] = set()
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(folder, f"cannot list patient folder ({exc.strerror or exc})") from None
    for entry in entries:
        name = entry.name
        path = Path(entry.path)
        if (m := _CFG_RE.match(name)) is not None:
            cfgs[View(m["view"])] = path
            continue
        m = _FILE_RE.match(name)
        if m is None:
            if not name.endswith(_IGNORED_SUFFIXES):
                problems.append(f"stray entry {name}")
            continue
        if m["pid"] != pid:
            problems.append(f"{name} does not belong to {pid}")
            continue
        extensions.add(m["ext"])
        kind = "gt" if m["gt"] else "image"
        if m["what"] in ("ED", "ES"):
            images.setdefault(ImageKey(View(m["view"]), Instant(m["what"])), {})[kind] = path
        else:
            view = View(m["view"])
            if view in kinds and kinds[view] != m["what"]:
                problems.append(f"{name}: a second loop of {view.value} ignored")
                continue
            kinds[view] = m["what"]
            sequences.setdefault(view, {})[kind] = path
    release = Release.CAMUS2019 if extensions == {"mhd"} else Release.CAMUS2023
    if len(extensions) > 1:
        problems.append(f"mixed file formats {sorted(extensions)}")
    files: dict[ImageKey, ImageFiles] = {}
    still_less = not images and bool(sequences)  # a patient whose only input is its loops
    for key in IMAGE_KEYS:
        found = images.get(key, {})
        if "image" not in found:
            if not still_less:
                problems.append(f"missing {key} image" + (" (ground truth only)" if found else ""))
            continue
        files[key] = ImageFiles(image=found["image"], gt=found.get("gt"))
    seqs: dict[View, ImageFiles] = {}
    for v, found in sequences.items():
        if "image" not in found:
            problems.append(f"{v.value} loop ground truth without its loop")
            continue
        seqs[v] = ImageFiles(image=found["image"], gt=found.get("gt"))
    loop_kinds = {v: _loop_kind(kinds[v], release) for v in seqs}
    return PatientRef(
        patient_id=pid,
        folder=folder,
        release=release,
        split=split,
        images=files,
        sequences=seqs,
        loop_kinds=loop_kinds,
        cfgs=cfgs,
        problems=tuple(problems),
    )


def _loop_kind(name_kind: str, release: Release) -> LoopKind:
    """What a loop file holds, from its name.

    CAMUS 2023 ``_half_sequence`` files and CAMUS 2019 ``_sequence.mhd`` files hold one ED -> ES
    stretch (the 2019 release names its half sequences ``_sequence``); a ``_sequence`` file in the
    2023 layout (not a CAMUS name: synthetic or converted cohorts) holds whole beats.
    """
    if name_kind == "half_sequence" or release == Release.CAMUS2019:
        return LoopKind.HALF
    return LoopKind.FULL


def _stays_inside(path: Path, parent: Path) -> bool:
    """True when ``path`` (a symbolic link) resolves inside ``parent``."""
    try:
        return path.resolve().is_relative_to(parent.resolve())
    except (OSError, RuntimeError):
        return False


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def log_problems(manifest: Manifest, log: logging.Logger | logging.LoggerAdapter) -> None:
    """Log each problem outside the patients (stray entries, duplicates, ...) as one warning line.

    Args:
        manifest: result of :func:`discover`.
        log: where to log (the flow passes its Prefect run logger).
    """
    for problem in manifest.problems:
        line = f"{problem.path}: {problem.reason}"
        # a name that is not UTF-8 is shown with \x escapes instead of breaking the handler
        log.warning(
            "%s", line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        )


def validate_root(root: Path | str) -> Path:
    """The resolved DATA root, checked to be a folder this process can list (cheap, no scan).

    Raises:
        InputError: the root does not exist, is not a folder or cannot be listed.
    """
    root = Path(root).expanduser()
    if _is_manifest(root):
        return root.resolve()
    if not root.is_dir():
        raise InputError(root, "DATA root is not a readable folder or a manifest .csv file")
    try:
        with os.scandir(root):
            pass
    except OSError as exc:
        raise InputError(root, f"cannot list folder ({exc.strerror or exc})") from None
    return root.resolve()


def _is_manifest(root: Path) -> bool:
    return root.suffix.lower() == ".csv" and root.is_file()


def discover(
    root: Path | str, *, files_root: Path | str | None = None, compact: bool = False
) -> Manifest:
    """Find every patient under a DATA root.

    Args:
        root: a CAMUS 2019 or 2023 root, a ``database_nifti`` folder, any folder of patient
            folders, an EchoNet-Dynamic root (:mod:`echo_batch.io.echonet_discovery`), a folder
            of DICOM files (:mod:`echo_batch.io.dicom_discovery`), or a manifest CSV
            (:mod:`echo_batch.io.manifest`).
        files_root: for a manifest, the folder its files must lie in (default: its own folder).
        compact: return the patients as :class:`~echo_batch.io.patient_refs.PatientRefs`
            (about 80 bytes per patient instead of about 7.5 KB; a run's cohort of 100,000);
            patient folders are compressed block by block as they are scanned, so that their
            references are never all in memory as objects.

    Returns:
        Manifest of patients sorted by id, with problems.

    Raises:
        InputError: the root does not exist or cannot be listed.
    """
    root = validate_root(root)
    if _is_manifest(root):
        from echo_batch.io.manifest import discover_manifest

        return _compacted(discover_manifest(root, files_root=files_root), compact)
    from echo_batch.io.echonet import is_echonet_root

    if is_echonet_root(root):
        from echo_batch.io.echonet_discovery import discover_echonet

        return _compacted(discover_echonet(root), compact)
    from echo_batch.io.dicom_discovery import discover_dicom, looks_like_dicom_root

    if looks_like_dicom_root(root):
        return _compacted(discover_dicom(root), compact)
    parents, split_dir = _patient_parents(root)
    split_of: dict[str, Split] = {}
    problems: list[Problem] = []
    if split_dir is not None and split_dir.is_dir():
        split_of, split_problems = _read_split_files(split_dir)
        problems.extend(split_problems)
    kept: dict[str, Path] = {}  # patient id -> the folder of patients it was kept from
    refs: list[PatientRef] = []
    blocks = PatientRefsBuilder() if compact else None
    for parent, folder_split in parents:
        try:
            entries = sorted(_list_entries(parent))
        except OSError as exc:
            raise InputError(parent, f"cannot list folder ({exc.strerror or exc})") from None
        for name, is_dir, is_symlink in entries:
            # Not ``parent / name``: pathlib would intern ``name`` itself, and ``entries`` and
            # ``kept`` hold every name until the end (see :func:`scan_patient`).
            path = Path(os.path.join(parent, name))
            if name in ("database_split",) or name.startswith("."):
                continue
            if not is_dir:
                if is_symlink and not path.exists():
                    problems.append(Problem(path, "dangling symlink or symlink loop"))
                elif not name.endswith((".txt", ".csv", ".md", ".json")):
                    problems.append(Problem(path, "stray file next to the patient folders"))
                continue
            if is_symlink and not _stays_inside(path, parent):
                problems.append(
                    Problem(
                        path,
                        f"patient folder is a symbolic link that resolves outside the folder of "
                        f"patients {parent}",
                    )
                )
                continue
            pid = name
            if pid in kept:
                kept_folder = kept[pid] / pid
                problems.append(Problem(path, f"duplicate patient id {pid} (kept {kept_folder})"))
                continue
            split = folder_split or split_of.get(pid, Split.NONE)
            try:
                ref = scan_patient(path, split)
            except InputError as exc:
                problems.append(Problem(path, exc.reason))
                continue
            if not ref.images and not ref.sequences:
                problems.append(Problem(path, "folder holds no CAMUS image files"))
                continue
            if not _is_utf8(pid):  # it could not be written to Parquet as an id
                problems.append(Problem(path, "folder name is not valid UTF-8 (not a patient id)"))
                continue
            kept[pid] = parent
            if blocks is None:
                refs.append(ref)
            else:
                blocks.append(ref)
    ordered = tuple(sorted(refs, key=lambda r: r.patient_id)) if blocks is None else blocks.sorted()
    logger.info("discovered %d patients under %s (%d problems)", len(ordered), root, len(problems))
    return Manifest(root=root, patients=ordered, problems=tuple(problems))


def _list_entries(folder: Path) -> list[tuple[str, bool, bool]]:
    """``(name, is a folder (links followed), is a symbolic link)`` of each entry of ``folder``.

    Plain tuples, not the ``DirEntry`` objects: 100,000 of those, held to be sorted, took 35 MB.
    """
    listed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            listed.append((entry.name, is_dir, entry.is_symlink()))
    return listed


def _compacted(manifest: Manifest, compact: bool) -> Manifest:
    """``manifest`` with its patients as :class:`PatientRefs` when ``compact``."""
    if not compact:
        return manifest
    return dataclasses.replace(manifest, patients=PatientRefs.from_refs(manifest.patients))
