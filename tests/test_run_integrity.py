"""A run's integrity: what produced each row, one write path for every executor, bad options,
bad bundles and bad readers stopped or contained where they belong.

Each test here was written against a defect a new user hit (stale rows reported as a new run's,
``--serial`` bypassing the store, reader exceptions escaping, tracebacks for bad option values,
unloadable bundles failing patient by patient with exit 0, a chunk timeout spanning the run).
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from echo_batch.cli import app
from echo_batch.domain import SegmentationSource, Status
from echo_batch.io import image as image_module
from echo_batch.io.discovery import discover
from echo_batch.model.bundle import DEFAULT_BUNDLE, METADATA_FILE, WEIGHTS_FILE, sha256_file
from echo_batch.run import chunk as chunk_module
from echo_batch.run.chunk import process_chunk
from echo_batch.run.options import ChunkOptions, RunOptions
from echo_batch.run.serial import run_cohort
from echo_batch.store.files import PARTS_DIR, PATIENTS_FILE
from echo_batch.synth import synth_cohort

runner = CliRunner()
GT = ChunkOptions(segmentation=SegmentationSource.GT)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return synth_cohort(tmp_path_factory.mktemp("syn") / "c", 3, seed=11, fmt="nifti", max_side=96)


def _run(*args: str):
    return runner.invoke(app, ["run", *map(str, args), "--serial"])


def _patients(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / PATIENTS_FILE)


# ------------------------------------------------------------------ what produced a row (defect 1)


@pytest.mark.parametrize(
    ("first", "second"),
    [(["--segmentation", "gt"], []), ([], ["--segmentation", "gt"])],
    ids=["gt-then-model", "model-then-gt"],
)
def test_a_run_with_other_settings_stops_instead_of_taking_the_rows(
    cohort, tmp_path, first, second
):
    out = tmp_path / "out"
    assert _run(cohort, "--out", out, *first).exit_code == 0
    before = _patients(out)
    result = _run(cohort, "--out", out, *second)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--no-resume" in lines[0] and "model_id" in lines[0], lines
    pd.testing.assert_frame_equal(_patients(out), before)  # nothing touched
    # --no-resume recomputes every patient: every row is now the second run's
    result = _run(cohort, "--out", out, *second, "--no-resume")
    assert result.exit_code == 0, result.output
    after = _patients(out)
    wanted = "gt" if second else json.loads((out / "run.json").read_text())["model_id"]
    assert wanted != before.model_id.iloc[0]
    assert list(after.model_id.unique()) == [wanted]
    assert len(after) == len(before) == 3


def test_another_camus_grid_is_another_setting(cohort, tmp_path):
    out = tmp_path / "out"
    assert _run(cohort, "--out", out, "--segmentation", "gt").exit_code == 0
    result = _run(cohort, "--out", out, "--segmentation", "gt", "--camus-grid-mm", "0.308")
    assert result.exit_code == 2
    assert "camus_grid_mm" in result.output
    result = _run(cohort, "--out", out, "--segmentation", "gt")  # same settings: resumes
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["processed"] == 0


# ------------------------------------------------------------------ one write path (defect 2)


def test_serial_run_resumes_and_writes_parts_like_the_flow(cohort, tmp_path):
    out = tmp_path / "out"
    first = run_cohort(RunOptions(cohort, out, GT, chunk_size=2))
    assert first["processed"] == 3
    assert not (out / PARTS_DIR).exists()  # compacted, parts removed
    second = run_cohort(RunOptions(cohort, out, GT, chunk_size=2))
    assert second["processed"] == 0 and second["skipped_done"] == 3


def test_serial_run_respects_the_lock(cohort, tmp_path):
    from echo_batch.store.parts import OutputStore

    out = tmp_path / "out"
    holder = OutputStore(out)
    with holder.lock():
        result = _run(cohort, "--out", out, "--segmentation", "gt")
    assert result.exit_code == 2
    assert "lock" in result.output
    assert not (out / PATIENTS_FILE).exists()


def test_leftover_part_never_overwrites_a_newer_serial_result(cohort, tmp_path):
    """A crashed run's part (EF 10), a serial run (its own EF), then a flow-style compaction."""
    out = tmp_path / "out"
    run_cohort(RunOptions(cohort, out, GT))
    truth = _patients(out).set_index("patient_id").ef_pct
    victim = truth.index[0]
    # plant the part a crashed run of the same settings left behind, with a wrong EF
    from echo_batch.store.parts import OutputStore

    crashed = OutputStore(out, config=_patients(out).measure_config.iloc[0])
    result = process_chunk([p for p in discover(cohort).patients if p.patient_id == victim], GT)
    stale = dataclasses.replace(result.patients[0], ef_pct=10.0)
    crashed.write_part(dataclasses.replace(result, patients=[stale]), 0)
    # a serial run that recomputes everything, then a resumed run that recomputes nothing
    run_cohort(RunOptions(cohort, out, GT, resume=False))
    run_cohort(RunOptions(cohort, out, GT))
    final = _patients(out).set_index("patient_id").ef_pct
    assert final[victim] == pytest.approx(truth[victim])
    assert final[victim] != 10.0


def test_serial_run_saves_masks(tmp_path):
    sample = Path(__file__).resolve().parents[1] / "examples" / "camus224-test"
    data = tmp_path / "data"
    (data / "database_nifti").mkdir(parents=True)
    shutil.copytree(
        sample / "database_nifti" / "patient0047", data / "database_nifti" / "patient0047"
    )
    out = tmp_path / "out"
    result = _run(data, "--out", out, "--save-masks", "--device", "cpu")
    assert result.exit_code == 0, result.output
    saved = sorted(p.name for p in (out / "masks" / "patient0047").iterdir())
    assert saved == [
        f"patient0047_{v}_{i}_pred.nii.gz" for v in ("2CH", "4CH") for i in ("ED", "ES")
    ]


# ------------------------------------------------------------------ bad option values (defect 6)


@pytest.mark.parametrize(
    "args",
    [
        ["--precision", "fp8"],
        ["--device", "gpu"],
        ["--segmentation", "expert"],
        ["--chunk-size", "0"],
        ["--workers", "0"],
        ["--batch-size", "-1"],
        ["--camus-grid-mm", "0"],
    ],
)
def test_bad_option_values_exit_2_with_one_message(tmp_path, args):
    result = runner.invoke(
        app, ["run", str(tmp_path), "--out", str(tmp_path / "o"), *args, "--serial"]
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "Invalid value" in result.output
    assert not (tmp_path / "o").exists()


def test_bad_values_of_other_commands_exit_2(tmp_path):
    for args in (
        ["synth", str(tmp_path / "s"), "--format", "png"],
        ["synth", str(tmp_path / "s"), "--patients", "0"],
        ["train", str(tmp_path), "--out", str(tmp_path / "b"), "--precision", "fp16"],
        ["evaluate", str(tmp_path), "--split", "test"],
        ["report", str(tmp_path), "--worst", "-1"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Invalid value" in result.output, args


# ------------------------------------------------------------------ unloadable bundle (defect 8)


class _NotWeights:
    """A pickled Python object: what a safe (weights_only) load refuses."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def _bundle_with(tmp_path: Path, weights: bytes) -> Path:
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    (bundle / WEIGHTS_FILE).write_bytes(weights)
    meta = json.loads((bundle / METADATA_FILE).read_text())
    meta["sha256"] = sha256_file(bundle / WEIGHTS_FILE)  # a consistent bundle, bad content
    (bundle / METADATA_FILE).write_text(json.dumps(meta))
    return bundle


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (lambda: _saved(_NotWeights()), "not a plain state dict"),
        (lambda: _saved({"conv.weight": torch.zeros(2, 2)}), "do not fit the architecture"),
        (lambda: b"not a torch file at all", "cannot load weights"),
    ],
    ids=["pickled-object", "wrong-keys", "garbage"],
)
def test_unloadable_bundle_stops_the_run_before_anything_starts(
    cohort, tmp_path, monkeypatch, content, reason
):
    import echo_batch.run.cluster as cluster

    started = []
    monkeypatch.setattr(cluster, "prestart_cluster", lambda *a: started.append(a))
    bundle = _bundle_with(tmp_path, content())
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(cohort), "--out", str(out), "--model", str(bundle)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert str(bundle / WEIGHTS_FILE) in lines[0] and reason in lines[0]
    assert "weights_only" not in result.output
    assert len(lines[0]) < 300
    assert started == [] and not out.exists()


# ------------------------------------------------------------------ reader defects (defect 3)


def test_a_reader_crash_is_the_images_error_and_the_run_goes_on(cohort, monkeypatch):
    refs = discover(cohort).patients
    victim = refs[1].patient_id
    real = image_module.read_image

    def flaky(path, **kwargs):
        if victim in str(path) and "4CH_ES" in str(path) and not kwargs.get("labels"):
            raise ValueError("decoder bug")
        return real(path, **kwargs)

    monkeypatch.setattr(image_module, "read_image", flaky)
    result = process_chunk(refs, GT)
    by_id = {p.patient_id: p for p in result.patients}
    assert [p.patient_id for p in result.patients] == [r.patient_id for r in refs]
    assert by_id[victim].status == Status.PARTIAL.value
    assert "decoder bug" in by_id[victim].error and "4CH_ES" in by_id[victim].error
    assert victim in by_id[victim].error
    failed = [i for i in result.images if i.patient_id == victim and i.status == "failed"]
    assert [(i.view, i.instant) for i in failed] == [("4CH", "ES")]
    assert all(p.status == Status.OK.value for pid, p in by_id.items() if pid != victim)


# ------------------------------------------------------------------ null measurements (defect 7)


def test_a_null_camus_ef_says_why(cohort, monkeypatch):
    from echo_batch.measure.camus_method import CamusFailure

    monkeypatch.setattr(
        chunk_module, "camus_biplane", lambda *a, **k: CamusFailure("no base chord (test)")
    )
    result = process_chunk(discover(cohort).patients[:1], GT)
    (patient,) = result.patients
    assert patient.ef_camus_pct is None
    assert patient.ef_pct is not None
    assert "no CAMUS-compatible EF: no base chord (test)" in patient.error


def test_every_null_ef_of_the_bundled_sample_has_a_reason():
    sample = Path(__file__).resolve().parents[1] / "examples" / "camus224-test"
    refs = discover(sample).patients[:8]
    result = process_chunk(refs, GT)
    for patient in result.patients:
        for column in ("ef_pct", "ef_camus_pct", "ef_2ch_pct", "ef_4ch_pct"):
            if getattr(patient, column) is None:
                assert patient.error, (patient.patient_id, column)
