"""benchmarks/gpu_check.sh and gpu_check_e2e.py on a machine without a GPU: the shell script
parses, the helpers of the end-to-end part give known answers (issue 16, point 5).

The GPU figures themselves come from a GPU node (docs/gpu.md); here only what a CPU can check.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check_e2e as e2e  # noqa: E402

from echo_batch.io.discovery import discover  # noqa: E402
from echo_batch.io.image import read_image  # noqa: E402


def test_shell_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], check=True)


def test_shell_script_refuses_a_machine_without_gpu(tmp_path):
    """Without nvidia-smi (no NVIDIA driver) it stops with status 2 before any work."""
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if "no NVIDIA GPU" not in done.stderr:
        pytest.skip("an NVIDIA GPU is visible here, so the refusal without one cannot be checked")
    assert done.returncode == 2
    assert not list(tmp_path.iterdir())


def test_replicated_sample_has_renamed_copies(tmp_path):
    """52 patients of the 50-patient sample: copies 0 keep their ids, two copies 1 follow."""
    root = e2e.replicate_sample(52, tmp_path / "x52")
    patients = discover(root).patients
    ids = sorted(p.patient_id for p in patients)
    assert len(ids) == 52 and len(set(ids)) == 52
    copies = [i for i in ids if "c001" in i]
    assert len(copies) == 2
    base = copies[0].removesuffix("c001")
    (copy,) = [p for p in patients if p.patient_id == copies[0]]
    assert len(copy.images) == 4
    for files in copy.images.values():
        assert files.image.name.startswith(copies[0])
        original = e2e.SAMPLE / "database_nifti" / base / files.image.name.replace(copies[0], base)
        assert files.image.stat().st_ino == original.stat().st_ino  # a hard link
    splits = "".join(f.read_text() for f in (root / "database_split").glob("*.txt")).split()
    assert sorted(splits) == ids


def test_zero_latency_device_returns_the_expert_labels():
    engine = e2e.ExpertLabels()
    ref = discover(e2e.SAMPLE).patients[3]
    files = next(iter(ref.images.values()))
    image = read_image(files.image, patient_dir=ref.folder).array
    gt = read_image(files.gt, patient_dir=ref.folder, labels=True).array
    (seg,) = engine.segment([image])
    assert np.array_equal(seg.labels, gt)


def test_mask_agreement_known_answer(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    a = np.zeros((10, 10), np.uint8)
    b = a.copy()
    b[0, :3] = 1  # 3 of 200 pixels differ, in one of the two maps
    for folder, second in (("left", a), ("right", b)):
        (tmp_path / folder / "p1").mkdir(parents=True)
        sitk.WriteImage(sitk.GetImageFromArray(a), str(tmp_path / folder / "p1" / "x_pred.nii.gz"))
        path = tmp_path / folder / "p1" / "y_pred.nii.gz"
        sitk.WriteImage(sitk.GetImageFromArray(second), str(path))
    result = e2e.mask_agreement(tmp_path / "left", tmp_path / "right")
    assert result == {"maps": 2, "pixel_agreement": 197 / 200, "identical_maps": 0.5}
    (tmp_path / "right" / "p1" / "y_pred.nii.gz").unlink()
    assert "error" in e2e.mask_agreement(tmp_path / "left", tmp_path / "right")


def test_cores_per_gpu_and_verdict_known_answers():
    assert e2e.cores_per_gpu(6000, 10.0) == pytest.approx(60.0)
    assert e2e.cores_per_gpu(None, 10.0) is None
    report = {
        "model_only_images_per_s": 6000.0,
        "cpu_ceiling": {"images_per_s": 1000.0},
        "cpu_ceiling_flow": {"images_per_s": 800.0},  # preferred: the flow's own ceiling
        "end_to_end": {"a": {"images_per_s": 700.0}, "b": {"images_per_s": 600.0}},
        "labels": {"pixel_agreement": 0.9998},
    }
    v = e2e.verdict(report)
    assert v["min_g_c"] == 800.0
    assert v["a_e_share"] == pytest.approx(0.875) and v["a_meets_0.85"] is True
    assert v["b_e_share"] == pytest.approx(0.75) and v["b_meets_0.85"] is False
    assert v["labels_meet_99.97"] is True
    report["cpu_ceiling_flow"] = {"skipped": "not landed"}
    assert e2e.verdict(report)["min_g_c"] == 1000.0
