"""Discovery: every accepted root layout, odd entries as problems, and the real CAMUS-224 tree."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from fixtures import make_patient, write_image

from echo_batch.domain import IMAGE_KEYS, ImageKey, Instant, Release, Split, View
from echo_batch.errors import InputError
from echo_batch.io.discovery import Manifest, Problem, discover, scan_patient


def _write_split(root: Path, **ids: list[str]) -> None:
    folder = root / "database_split"
    folder.mkdir(parents=True, exist_ok=True)
    for split, pids in ids.items():
        (folder / f"subgroup_{split}.txt").write_text("".join(f"{p}\n" for p in pids))


@pytest.fixture
def root_2023(tmp_path: Path) -> Path:
    """2023 root: 4 patients (written out of order) and split files, plus csv side files."""
    root = tmp_path / "camus"
    for pid in ("patient0003", "patient0001", "patient0004", "patient0002"):
        make_patient(root / "database_nifti", pid)
    _write_split(
        root,
        training=["patient0001", "patient0002"],
        validation=["patient0003"],
        testing=["patient0004"],
    )
    (root / "reference.csv").write_text("patient,split\n")
    (root / "geometry.csv").write_text("patient,view\n")
    return root


def _problems(manifest: Manifest) -> list[tuple[str, str]]:
    return [(p.path.name, p.reason) for p in manifest.problems]


def _assert_full_2023_patient(ref, folder: Path) -> None:
    pid = ref.patient_id
    assert ref.folder == folder / pid
    assert ref.release == Release.CAMUS2023
    assert ref.complete and ref.has_gt and ref.views == (View.A2C, View.A4C)
    assert set(ref.images) == set(IMAGE_KEYS)
    es_4ch = ref.images[ImageKey(View.A4C, Instant.ES)]
    assert es_4ch.image == folder / pid / f"{pid}_4CH_ES.nii.gz"
    assert es_4ch.gt == folder / pid / f"{pid}_4CH_ES_gt.nii.gz"
    assert set(ref.sequences) == {View.A2C, View.A4C}
    assert ref.sequences[View.A2C].image == folder / pid / f"{pid}_2CH_half_sequence.nii.gz"
    assert ref.sequences[View.A2C].gt == folder / pid / f"{pid}_2CH_half_sequence_gt.nii.gz"
    assert ref.cfgs == {
        View.A2C: folder / pid / "Info_2CH.cfg",
        View.A4C: folder / pid / "Info_4CH.cfg",
    }
    assert ref.problems == ()


def test_2023_root(root_2023: Path) -> None:
    manifest = discover(root_2023)
    assert manifest.root == root_2023.resolve()
    ids = [p.patient_id for p in manifest.patients]
    assert ids == ["patient0001", "patient0002", "patient0003", "patient0004"]
    splits = [p.split for p in manifest.patients]
    assert splits == [Split.TRAINING, Split.TRAINING, Split.VALIDATION, Split.TESTING]
    for ref in manifest.patients:
        _assert_full_2023_patient(ref, root_2023.resolve() / "database_nifti")
    assert manifest.problems == ()
    assert [p.patient_id for p in manifest.by_split(Split.VALIDATION)] == ["patient0003"]
    assert manifest.by_split(Split.NONE) == ()


def test_database_nifti_folder_given_directly(root_2023: Path) -> None:
    manifest = discover(root_2023 / "database_nifti")
    assert manifest.root == (root_2023 / "database_nifti").resolve()
    assert [(p.patient_id, p.split) for p in manifest.patients] == [
        ("patient0001", Split.TRAINING),
        ("patient0002", Split.TRAINING),
        ("patient0003", Split.VALIDATION),
        ("patient0004", Split.TESTING),
    ]
    assert manifest.problems == ()


def test_patient_not_in_any_split_file_has_no_split(root_2023: Path) -> None:
    make_patient(root_2023 / "database_nifti", "patient0009")
    manifest = discover(root_2023)
    assert manifest.patients[-1].patient_id == "patient0009"
    assert manifest.patients[-1].split == Split.NONE


def test_id_listed_in_two_split_files_is_a_problem(root_2023: Path) -> None:
    (root_2023 / "database_split" / "subgroup_testing.txt").write_text("patient0004\npatient0001\n")
    manifest = discover(root_2023)
    assert ("subgroup_testing.txt", "patient0001 is listed in two splits") in _problems(manifest)
    assert manifest.patients[0].split == Split.TRAINING  # the first listing is kept


def test_2019_root(tmp_path: Path) -> None:
    root = tmp_path / "camus2019"
    make_patient(root / "training", "patient0002", ext=".mhd")
    make_patient(root / "training", "patient0001", ext=".mhd")
    make_patient(root / "testing", "patient0051", ext=".mhd", gt=False)
    manifest = discover(root)
    resolved = root.resolve()
    assert [(p.patient_id, p.split) for p in manifest.patients] == [
        ("patient0001", Split.TRAINING),
        ("patient0002", Split.TRAINING),
        ("patient0051", Split.TESTING),
    ]
    for ref in manifest.patients:
        assert ref.release == Release.CAMUS2019
        assert ref.complete and ref.problems == ()
        assert set(ref.sequences) == {View.A2C, View.A4C}
        assert set(ref.cfgs) == {View.A2C, View.A4C}
    train, test = manifest.patients[0], manifest.patients[2]
    assert train.has_gt and not test.has_gt
    ed = train.images[ImageKey(View.A2C, Instant.ED)]
    assert ed.image == resolved / "training/patient0001/patient0001_2CH_ED.mhd"
    assert ed.gt == resolved / "training/patient0001/patient0001_2CH_ED_gt.mhd"
    assert train.sequences[View.A4C].image == (
        resolved / "training/patient0001/patient0001_4CH_sequence.mhd"
    )
    assert test.images[ImageKey(View.A4C, Instant.ES)].gt is None
    assert test.sequences[View.A2C].gt is None
    assert manifest.problems == ()


def test_plain_folder_of_patients(tmp_path: Path) -> None:
    for pid in ("p10", "p02", "p01"):
        make_patient(tmp_path, pid, sequences=False)
    manifest = discover(tmp_path)
    assert [p.patient_id for p in manifest.patients] == ["p01", "p02", "p10"]
    assert {p.split for p in manifest.patients} == {Split.NONE}
    assert all(p.complete and p.sequences == {} for p in manifest.patients)
    assert manifest.problems == ()


def test_discovery_reads_no_pixels(tmp_path: Path) -> None:
    folder = make_patient(tmp_path, "patient0001")
    (folder / "patient0001_2CH_ED.nii.gz").write_bytes(b"not an image")
    manifest = discover(tmp_path)
    assert manifest.patients[0].complete and manifest.patients[0].problems == ()


# --------------------------------------------------------------------------- odd entries


def test_patient_missing_a_view(tmp_path: Path) -> None:
    make_patient(tmp_path, "patient0001", views=["2CH"])
    make_patient(tmp_path, "patient0002")
    manifest = discover(tmp_path)
    one, two = manifest.patients
    assert one.views == (View.A2C,) and not one.complete
    assert set(one.images) == {ImageKey(View.A2C, Instant.ED), ImageKey(View.A2C, Instant.ES)}
    assert one.problems == ("missing 4CH_ED image", "missing 4CH_ES image")
    assert set(one.cfgs) == {View.A2C} and set(one.sequences) == {View.A2C}
    assert two.complete and two.problems == ()


def test_ground_truth_without_image(tmp_path: Path) -> None:
    folder = make_patient(tmp_path, "patient0001")
    (folder / "patient0001_4CH_ES.nii.gz").unlink()
    ref = discover(tmp_path).patients[0]
    assert ImageKey(View.A4C, Instant.ES) not in ref.images
    assert ref.problems == ("missing 4CH_ES image (ground truth only)",)


def test_stray_files_are_recorded(tmp_path: Path) -> None:
    folder = make_patient(tmp_path, "patient0001", sequences=False)
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
    (tmp_path / "README.md").write_text("ignored side file\n")
    (tmp_path / ".DS_Store").write_bytes(b"")
    (folder / "Thumbs.db").write_bytes(b"")
    (folder / "leftover.raw").write_bytes(b"")
    write_image(folder / "patient0002_2CH_ED.nii.gz", np.zeros((2, 2), np.uint8))
    manifest = discover(tmp_path)
    assert manifest.problems == (
        Problem(tmp_path.resolve() / "notes.pdf", "stray file next to the patient folders"),
    )
    ref = manifest.patients[0]
    assert ref.complete
    assert ref.problems == (
        "stray entry Thumbs.db",
        "patient0002_2CH_ED.nii.gz does not belong to patient0001",
    )


def test_folder_without_camus_files_is_a_problem(tmp_path: Path) -> None:
    make_patient(tmp_path, "patient0001")
    (tmp_path / "empty").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "protocol.txt").write_text("x")
    manifest = discover(tmp_path)
    assert [p.patient_id for p in manifest.patients] == ["patient0001"]
    assert _problems(manifest) == [
        ("docs", "folder holds no CAMUS image files"),
        ("empty", "folder holds no CAMUS image files"),
    ]


def test_mixed_formats_in_one_patient(tmp_path: Path) -> None:
    folder = make_patient(tmp_path, "patient0001", sequences=False)
    write_image(folder / "patient0001_2CH_ED.mhd", np.zeros((2, 2), np.uint8))
    ref = discover(tmp_path).patients[0]
    assert "mixed file formats ['mhd', 'nii.gz']" in ref.problems


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits; see the scandir test")
def test_unreadable_folder_chmod(tmp_path: Path) -> None:
    make_patient(tmp_path, "patient0001")
    locked = make_patient(tmp_path, "patient0002")
    locked.chmod(0)
    try:
        manifest = discover(tmp_path)
    finally:
        locked.chmod(0o755)
    assert [p.patient_id for p in manifest.patients] == ["patient0001"]
    assert manifest.problems[0].path.name == "patient0002"
    assert "cannot list patient folder" in manifest.problems[0].reason


def test_unreadable_folder_scandir_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Works as root too: listing one patient folder fails with EACCES."""
    make_patient(tmp_path, "patient0001")
    locked = make_patient(tmp_path, "patient0002").resolve()
    make_patient(tmp_path, "patient0003")
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:
        if Path(os.fsdecode(path)).resolve() == locked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    manifest = discover(tmp_path)
    assert [p.patient_id for p in manifest.patients] == ["patient0001", "patient0003"]
    assert manifest.problems == (Problem(locked, "cannot list patient folder (Permission denied)"),)
    with pytest.raises(InputError, match="cannot list patient folder"):
        scan_patient(locked)


def test_duplicate_ids_across_2019_training_and_testing(tmp_path: Path) -> None:
    make_patient(tmp_path / "training", "patient0007", ext=".mhd")
    make_patient(tmp_path / "testing", "patient0007", ext=".mhd", gt=False)
    make_patient(tmp_path / "testing", "patient0008", ext=".mhd", gt=False)
    manifest = discover(tmp_path)
    assert [(p.patient_id, p.split) for p in manifest.patients] == [
        ("patient0007", Split.TRAINING),
        ("patient0008", Split.TESTING),
    ]
    assert manifest.patients[0].has_gt  # the training copy is kept
    root = tmp_path.resolve()
    assert manifest.problems == (
        Problem(
            root / "testing/patient0007",
            f"duplicate patient id patient0007 (kept {root / 'training/patient0007'})",
        ),
    )


def test_symlink_loops_do_not_hang_or_crash(tmp_path: Path) -> None:
    folder = make_patient(tmp_path, "patient0001", sequences=False)
    (tmp_path / "loop").symlink_to("loop")  # ELOOP on stat
    (tmp_path / "patient0002").symlink_to(".")  # a "patient" that is the root itself
    (folder / "up").symlink_to("..")  # cycle inside a patient folder
    manifest = discover(tmp_path)
    assert [p.patient_id for p in manifest.patients] == ["patient0001"]
    assert manifest.patients[0].problems == ("stray entry up",)
    assert _problems(manifest) == [
        ("loop", "dangling symlink or symlink loop"),
        ("patient0002", "folder holds no CAMUS image files"),
    ]


def test_non_ascii_folder_names(tmp_path: Path) -> None:
    make_patient(tmp_path, "patient0001", sequences=False)
    make_patient(tmp_path, "patiënt0002", sequences=False)
    (tmp_path / "données").mkdir()
    (tmp_path / "données" / "lisez-moi.txt").write_text("x")
    manifest = discover(tmp_path)
    assert [p.patient_id for p in manifest.patients] == ["patient0001", "patiënt0002"]
    assert manifest.patients[1].complete and manifest.patients[1].problems == ()
    assert _problems(manifest) == [("données", "folder holds no CAMUS image files")]


def test_undecodable_folder_name(tmp_path: Path) -> None:
    make_patient(tmp_path, "patient0001", sequences=False)
    os.mkdir(os.fsencode(tmp_path) + b"/patient\xff0002")
    manifest = discover(tmp_path)
    assert [p.patient_id for p in manifest.patients] == ["patient0001"]
    assert [p.reason for p in manifest.problems] == ["folder holds no CAMUS image files"]
    assert os.fsencode(manifest.problems[0].path.name) == b"patient\xff0002"


@pytest.mark.parametrize("make", ["missing", "file"])
def test_bad_root_raises_input_error(tmp_path: Path, make: str) -> None:
    root = tmp_path / "data"
    if make == "file":
        root.write_text("x")
    with pytest.raises(InputError, match="DATA root is not a readable folder") as info:
        discover(root)
    assert info.value.path.name == "data"


# --------------------------------------------------------------------------- real data


@pytest.mark.shared
@pytest.mark.parametrize("sub", ["", "database_nifti"], ids=["root", "database_nifti"])
def test_real_camus224_tree(camus224: Path, sub: str) -> None:
    manifest = discover(camus224 / sub)
    ids = [p.patient_id for p in manifest.patients]
    assert ids == [f"patient{i:04d}" for i in range(1, 501)]
    assert len(manifest.by_split(Split.TRAINING)) == 400
    assert len(manifest.by_split(Split.VALIDATION)) == 50
    assert len(manifest.by_split(Split.TESTING)) == 50
    assert manifest.problems == ()
    for ref in manifest.patients:
        assert ref.release == Release.CAMUS2023
        assert ref.complete and ref.has_gt and ref.problems == ()
        assert ref.cfgs == {View.A2C: ref.folder / "Info_2CH.cfg"}
        assert ref.sequences == {}
    by_id = {p.patient_id: p for p in manifest.patients}
    assert by_id["patient0027"].split == Split.TESTING  # first line of subgroup_testing.txt
    assert by_id["patient0200"].split == Split.VALIDATION  # first line of subgroup_validation.txt


def test_real_sample_tree(real_sample: tuple[Path, list[str]]) -> None:
    root, ids = real_sample
    manifest = discover(root)
    testing = [p for p in manifest.by_split(Split.TESTING) if p.patient_id in set(ids)]
    assert [p.patient_id for p in testing] == ids
    assert all(p.complete and p.has_gt and p.problems == () for p in testing)
    assert all(View.A2C in p.cfgs for p in testing)
    assert manifest.problems == ()
