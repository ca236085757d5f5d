"""Untrusted input and output folders (issue 7, part 3).

Model weights are loaded weights-only from the very bytes whose sha256 was checked; size limits
stop absurd images and decompression bombs before anything large is allocated; a cohort run opens
nothing outside DATA and OUT (checked with an audit hook on every ``open`` in a child process);
no shell command is built from input data; the lock file and the other files written in OUT cannot
be turned into a way to clobber files elsewhere.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import subprocess
import sys
import tracemalloc
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from cli_runs import REPO
from corpus import build_corpus
from fixtures import lv_la_labels, make_patient, write_mhd, write_nifti_by_hand

from echo_batch.domain import Status
from echo_batch.errors import CfgError, EchoBatchError, InputError
from echo_batch.io.discovery import discover
from echo_batch.io.image import parse_cfg, read_image
from echo_batch.io.limits import InputLimits
from echo_batch.model.bundle import METADATA_FILE, WEIGHTS_FILE, load_bundle, save_bundle
from echo_batch.model.inference import Segmentation
from echo_batch.model.unet import UNet, UNetConfig
from echo_batch.run.chunk import process_chunk
from echo_batch.run.options import ChunkOptions
from echo_batch.store.files import LOCK_FILE, write_run_record
from echo_batch.store.parts import OutputStore

# --------------------------------------------------------------------------- model weights


def test_weights_are_loaded_weights_only_from_the_bytes_that_were_hashed(tmp_path, monkeypatch):
    config = UNetConfig(features=(4, 8, 8))
    meta = {
        "name": "tiny",
        "architecture": {"params": config.to_dict()},
        "input": {"size": [32, 32]},
    }
    path = save_bundle(tmp_path / "b", UNet(config).state_dict(), meta)
    expected = json.loads((path / METADATA_FILE).read_text())["sha256"]
    calls = []
    real_load = torch.load

    def spy(source, *args, **kwargs):
        data = source.getvalue() if isinstance(source, io.BytesIO) else Path(source).read_bytes()
        calls.append((hashlib.sha256(data).hexdigest(), isinstance(source, io.BytesIO), kwargs))
        return real_load(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_bundle(path)
    ((digest, from_memory, kwargs),) = calls
    assert kwargs.get("weights_only") is True
    assert from_memory and digest == expected  # no second read of a file that may have changed


def test_weights_swapped_after_the_metadata_are_refused(tmp_path):
    config = UNetConfig(features=(4, 8, 8))
    meta = {
        "name": "tiny",
        "architecture": {"params": config.to_dict()},
        "input": {"size": [32, 32]},
    }
    path = save_bundle(tmp_path / "b", UNet(config).state_dict(), meta)
    torch.save(UNet(config).state_dict(), path / WEIGHTS_FILE)  # other random weights
    with pytest.raises(EchoBatchError, match="sha256"):
        load_bundle(path)


# --------------------------------------------------------------------------- limits


@pytest.fixture()
def patient(tmp_path: Path) -> Path:
    folder = tmp_path / "patient0001"
    folder.mkdir()
    return folder


def _peak_bytes(call) -> tuple[int, BaseException | None]:
    """Peak Python allocation while ``call`` runs, and what it raised."""
    tracemalloc.start()
    try:
        call()
    except Exception as exc:
        raised = exc
    else:
        raised = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, raised


@pytest.fixture()
def sitk_calls(monkeypatch) -> list[str]:
    """Names of the SimpleITK reader calls made (none may happen for a refused header)."""
    calls: list[str] = []
    for name in ("ReadImageInformation", "Execute"):
        real = getattr(sitk.ImageFileReader, name)

        def spy(self, *args, _real=real, _name=name):
            calls.append(_name)
            return _real(self, *args)

        monkeypatch.setattr(sitk.ImageFileReader, name, spy)
    return calls


@pytest.mark.parametrize("ext", [".mhd", ".nii.gz"])
def test_absurd_dimensions_are_refused_before_anything_is_read(patient, sitk_calls, ext):
    if ext == ".mhd":
        path = write_mhd(patient / "patient0001_2CH_ED.mhd", (100_000, 100_000))  # no .raw at all
    else:
        path = write_nifti_by_hand(
            patient / "patient0001_2CH_ED.nii.gz",
            np.zeros((12, 10)),
            (0.3, 0.3),
            dims_override=(30_000, 30_000),
        )
    peak, raised = _peak_bytes(lambda: read_image(path))
    assert isinstance(raised, InputError) and "exceeds 4096 pixels per side" in str(raised)
    assert sitk_calls == [] and peak < 1 << 20


def test_decoded_size_limit_is_checked_from_the_header(patient, sitk_calls):
    path = write_mhd(patient / "p_2CH_ED.mhd", (2000, 2000), element_type="MET_DOUBLE")  # 32 MB
    with pytest.raises(InputError, match="exceeds the decoded size limit"):
        read_image(path, limits=InputLimits(max_decoded_bytes=1 << 20))
    assert sitk_calls == []


def _bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9)
    block = bytes(1 << 20)
    return b"".join(compressor.compress(block) for _ in range(size >> 20)) + compressor.flush()


def test_zraw_bomb_is_inflated_only_up_to_the_header_size(patient, sitk_calls):
    path = write_mhd(
        patient / "patient0001_2CH_ED.mhd",
        (10, 12),
        data_file="patient0001_2CH_ED.zraw",
        data=_bomb(256 << 20),
        extra_lines=["CompressedData = True"],
    )
    peak, raised = _peak_bytes(lambda: read_image(path))
    assert isinstance(raised, InputError) and "expands past the 120 bytes" in str(raised)
    assert sitk_calls == [] and peak < 1 << 20


def test_nifti_gz_bomb_is_inflated_only_up_to_the_header_size(patient, sitk_calls):
    good = write_nifti_by_hand(patient / "good.nii.gz", np.zeros((12, 10)), (0.3, 0.3))
    payload = zlib.decompress(good.read_bytes(), wbits=47)  # 352-byte header + 120 pixels
    compressor = zlib.compressobj(9, wbits=31)  # gzip container
    head = compressor.compress(payload)
    zeros = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(256))  # + 256 MiB
    path = patient / "patient0001_2CH_ED.nii.gz"
    path.write_bytes(head + zeros + compressor.flush())
    peak, raised = _peak_bytes(lambda: read_image(path))
    assert isinstance(raised, InputError) and "expands past the 472 bytes" in str(raised)
    assert sitk_calls == [] and peak < 1 << 20


# --------------------------------------------------------------------------- paths


_AUDIT = r"""
import json, os, sys
from pathlib import Path

data, out, log = sys.argv[1:4]
events = []


def hook(event, args):
    if event == "open" and not isinstance(args[0], int):
        events.append(("open", os.path.realpath(os.fsdecode(args[0]))))
    elif event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn"):
        events.append((event, repr(args)))


sys.addaudithook(hook)
import SimpleITK  # C++ opens are not audited: record what the readers hand to SimpleITK

for cls in (SimpleITK.ImageFileReader, SimpleITK.ImageFileWriter):
    def set_file_name(self, name, _real=cls.SetFileName):
        events.append(("sitk", os.path.realpath(name)))
        return _real(self, name)
    cls.SetFileName = set_file_name

from echo_batch.domain import SegmentationSource
from echo_batch.run.options import ChunkOptions, RunOptions
from echo_batch.run.serial import run_cohort

run_cohort(RunOptions(Path(data), Path(out), ChunkOptions(segmentation=SegmentationSource.GT)))
Path(log).write_text(json.dumps(events))
"""


def _under(path: str, roots: list[Path]) -> bool:
    return any(Path(path).is_relative_to(root) for root in roots)


def test_a_cohort_run_opens_nothing_outside_data_and_out(tmp_path):
    """Every file opened while the bad-input corpus is measured is in DATA, OUT or the software.

    The corpus points at ``secret/`` in every way it can (absolute and ``..`` data-file names,
    symbolic links to files and to a patient folder); none of it may be opened.
    """
    corpus = build_corpus(tmp_path / "corpus")
    out, log = tmp_path / "out", tmp_path / "events.json"
    subprocess.run(
        [sys.executable, "-c", _AUDIT, corpus.bad, out, log],
        check=True,
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
    )
    events = json.loads(log.read_text())
    opened = [path for kind, path in events if kind in ("open", "sitk")]
    assert any(_under(p, [corpus.bad.resolve()]) for p in opened)  # the hook saw the reads
    secret = corpus.secret.resolve()
    assert [p for p in opened if _under(p, [secret])] == []
    software = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), REPO]
    system = [Path(p) for p in ("/dev", "/proc", "/sys", "/etc", "/usr", "/lib", "/lib64")]
    allowed = [corpus.bad.resolve(), out.resolve(), *[p.resolve() for p in software], *system]
    assert [p for p in opened if not _under(p, allowed)] == []
    data_and_out = [corpus.bad.resolve(), out.resolve()]
    assert all(_under(p, data_and_out) for kind, p in events if kind == "sitk")
    commands = [args for kind, args in events if kind not in ("open", "sitk")]
    assert all(os.fspath(corpus.bad) not in args for args in commands), commands


_SHELL_CALLS = {"system", "popen", "getoutput", "getstatusoutput"}
_SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


def test_no_shell_command_is_built_anywhere():
    """No call in the package or the flow can start a shell; subprocess calls take a list."""
    offences = []
    for path in sorted([*REPO.glob("echo_batch/**/*.py"), *REPO.glob("flows/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else ""
            module = func.value.id if name and isinstance(func.value, ast.Name) else ""
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if name in _SHELL_CALLS and module in ("os", "subprocess", "commands"):
                offences.append(f"{where} calls {module}.{name}")
            for keyword in node.keywords:
                if keyword.arg == "shell" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                ):
                    offences.append(f"{where} passes shell=")
            literal = bool(node.args) and isinstance(node.args[0], ast.List | ast.Tuple)
            if module == "subprocess" and name in _SUBPROCESS_CALLS and not literal:
                offences.append(f"{where}: subprocess.{name} without an argument list")
    assert offences == []


def test_cfg_linked_outside_its_folder_is_refused_without_reading_it(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    folder = tmp_path / "patient0001"
    folder.mkdir()
    (folder / "Info_2CH.cfg").symlink_to(secret)
    with pytest.raises(CfgError, match="resolves outside the patient folder") as info:
        parse_cfg(folder / "Info_2CH.cfg")
    assert "root:x" not in str(info.value)


@pytest.mark.timeout(30)
def test_cfg_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "Info_2CH.cfg")
    with pytest.raises(CfgError, match="not a regular file"):
        parse_cfg(tmp_path / "Info_2CH.cfg")


def test_patient_folder_linked_outside_data_is_not_discovered(tmp_path):
    data = tmp_path / "data"
    make_patient(data, "patient0001", sequences=False)
    outside = make_patient(tmp_path / "elsewhere", "patient0002", sequences=False)
    (data / "patient0002").symlink_to(outside)
    manifest = discover(data)
    assert [p.patient_id for p in manifest.patients] == ["patient0001"]
    (problem,) = manifest.problems
    assert problem.path.name == "patient0002" and "resolves outside" in problem.reason


def test_unreadable_file_is_an_input_error_naming_it(patient, monkeypatch):
    """Permission denied while validating becomes an InputError (it fails only its image)."""
    path = write_nifti_by_hand(patient / "patient0001_2CH_ED.nii.gz", np.zeros((12, 10)), (1, 1))
    real_open = Path.open

    def deny(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", os.fspath(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(InputError, match=r"patient0001_2CH_ED.nii.gz: cannot read \(Permission"):
        read_image(path, patient_dir=patient)


# --------------------------------------------------------------------------- files in OUT


def test_lock_hard_linked_to_another_file_leaves_it_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    os.link(victim, out / LOCK_FILE)
    with pytest.raises(EchoBatchError, match="has 2 hard links; refusing"):
        OutputStore(out).acquire_lock()
    assert victim.read_text() == "precious\n" and (out / LOCK_FILE).exists()


def test_lock_that_is_a_folder_is_refused(tmp_path):
    (tmp_path / LOCK_FILE).mkdir()
    with pytest.raises(EchoBatchError, match="not a regular file"):
        OutputStore(tmp_path).acquire_lock()


def test_parts_folder_linked_elsewhere_is_neither_read_written_nor_cleaned(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    planted = [".x.tmp-1-abcd", "20000101T000000000000Z-p1-00000.images.parquet"]
    for name in planted:
        (victim / name).write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "parts").symlink_to(victim)
    with pytest.raises(EchoBatchError, match="symbolic link"):
        store = OutputStore(out)
        with store.lock():
            store.compact([], "gt")
    assert sorted(p.name for p in victim.iterdir()) == sorted(planted)


def test_run_record_never_writes_through_a_planted_link(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / f".run.json.tmp-{os.getpid()}").symlink_to(victim)  # the old, predictable name
    write_run_record(out, {"a": 1})
    assert json.loads((out / "run.json").read_text()) == {"a": 1}
    fixed = uuid.UUID(int=0)
    monkeypatch.setattr(uuid, "uuid4", lambda: fixed)  # force the temporary name: still no follow
    (out / f".run.json.tmp-{os.getpid()}-{fixed.hex[:8]}").symlink_to(victim)
    with pytest.raises(EchoBatchError, match="cannot write to OUT"):
        write_run_record(out, {"a": 2})
    assert victim.read_text() == "precious\n"


class _LabelsEngine:
    """Stands in for the model: predicts the fixture's label map for every image."""

    def segment(self, images):
        return [Segmentation(labels=lv_la_labels(*image.shape), confidence=0.9) for image in images]


def _errors(record) -> str:
    """The record's error text ('' when none). The fixture's 12 x 10 LV is too small for the
    CAMUS-compatible method (its volumes round to 0 mL), which the error says; the mask tests
    look only at what concerns the masks."""
    return record.error or ""


def _masks_run(tmp_path: Path, plant) -> tuple[dict, Path]:
    """Model run of two patients with ``--save-masks`` after ``plant(masks)``; records by id."""
    for pid in ("patient0001", "patient0002"):
        make_patient(tmp_path / "data", pid, sequences=False)
    masks = tmp_path / "out" / "masks"
    masks.parent.mkdir()
    plant(masks)
    options = ChunkOptions(device="cpu", save_masks_to=masks)
    refs = discover(tmp_path / "data").patients
    result = process_chunk(refs, options, model_id="labels", engine=_LabelsEngine())
    return {p.patient_id: p for p in result.patients}, masks


@pytest.mark.parametrize("linked", ["masks", "masks/patient0001"])
def test_masks_never_written_through_a_linked_folder(tmp_path, linked):
    """A linked mask folder skips that patient's masks with a recorded error, not a crash."""
    victim = tmp_path / "victim"
    victim.mkdir()

    def plant(masks: Path) -> None:
        (masks.parent / linked).parent.mkdir(parents=True, exist_ok=True)
        (masks.parent / linked).symlink_to(victim, target_is_directory=True)

    records, masks = _masks_run(tmp_path, plant)
    assert list(victim.iterdir()) == []
    link = masks.parent / linked
    refused = ["patient0001", "patient0002"] if linked == "masks" else ["patient0001"]
    for pid, record in records.items():
        if pid in refused:
            assert record.status == Status.PARTIAL.value and record.ef_pct is not None
            assert f"{pid}: masks not saved: {link}: " in record.error
            assert "symbolic link" in record.error
        else:
            assert "masks not saved" not in _errors(record)
            written = sorted(p.name for p in (masks / pid).iterdir())
            assert len(written) == 4 and not (masks / pid).is_symlink()


def test_mask_file_name_planted_as_a_link_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.nii.gz"
    victim.write_bytes(b"precious")

    def plant(masks: Path) -> None:
        (masks / "patient0001").mkdir(parents=True)
        (masks / "patient0001" / "patient0001_2CH_ED_pred.nii.gz").symlink_to(victim)

    records, masks = _masks_run(tmp_path, plant)
    target = masks / "patient0001" / "patient0001_2CH_ED_pred.nii.gz"
    assert victim.read_bytes() == b"precious"
    assert not target.is_symlink() and np.array_equal(
        read_image(target, labels=True).array, lv_la_labels()
    )
    assert all("masks not saved" not in _errors(r) for r in records.values())
    assert [p.name for p in (masks / "patient0001").iterdir() if p.name.startswith(".")] == []
