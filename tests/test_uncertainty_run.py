"""A run with --uncertainty on the bundled sample: the SD columns, provenance and report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from echo_batch.cli import app
from echo_batch.io.discovery import discover
from echo_batch.model.bundle import DEFAULT_BUNDLE, UNCERTAINTY_BUNDLE
from echo_batch.model.ensemble import DEFAULT_VARIANTS
from echo_batch.model.ensemble_bundle import model_id_of, read_ensemble
from echo_batch.model.tta import Variant
from echo_batch.report import write_report
from echo_batch.run.chunk import uncertainty_method
from echo_batch.run.cohort import run_config
from echo_batch.run.options import ChunkOptions, RunOptions
from echo_batch.run.serial import run_cohort

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "camus224-test"
FIRST = DEFAULT_BUNDLE.parent / "camus224-unet"
N_PATIENTS = 8  # the report ranks SDs from 8 patients on


@pytest.fixture(scope="module")
def uncertain_out(tmp_path_factory) -> Path:
    manifest = discover(SAMPLE)
    manifest = dataclasses.replace(manifest, patients=manifest.patients[:N_PATIENTS])
    out = tmp_path_factory.mktemp("uncertain")
    chunk = ChunkOptions(device="cpu", precision="fp32", uncertainty=True)
    run_cohort(RunOptions(SAMPLE, out, chunk, report=False), manifest=manifest)
    return out


def test_every_patient_gets_the_members_spread(uncertain_out):
    patients = pd.read_parquet(uncertain_out / "patients.parquet")
    images = pd.read_parquet(uncertain_out / "images.parquet")
    assert len(patients) == N_PATIENTS
    assert (patients.status == "ok").all()
    assert (patients.n_members == 5).all()
    assert patients.ef_pct_sd.notna().all() and (patients.ef_pct_sd >= 0).all()
    assert patients.ef_camus_pct_sd.notna().all()
    assert patients.ef_pct_sd.max() > 0  # the variants do move the contours
    assert images.lv_dice_members.between(0.5, 1.0).all()
    config = json.loads(patients.measure_config.iloc[0])
    assert config["uncertainty"] == "ensemble-1x5"  # the uncertainty bundle: one network x 5
    assert (patients.model_id == model_id_of(UNCERTAINTY_BUNDLE)).all()
    assert patients.model_id.iloc[0].startswith("camus224-unet-tta@")


def test_the_report_shows_error_against_uncertainty(uncertain_out):
    index = write_report(uncertain_out, worst=2)
    text = index.read_text(encoding="utf-8")
    assert 'id="uncertainty"' in text
    assert "plots/uncertainty.png" in text
    summary = json.loads((uncertain_out / "report" / "summary.json").read_text())
    ranking = summary["uncertainty"]["comparisons"]["ef_camus_vs_cfg"]
    assert ranking["n"] == N_PATIENTS
    run_model = model_id_of(UNCERTAINTY_BUNDLE)  # the gallery is drawn with the run's members
    assert {g["source"] for g in summary["gallery"]} == {
        f"recomputed with the run's model {run_model} (fp32)"
    }


def test_rows_with_and_without_uncertainty_never_mix():
    plain = RunOptions(SAMPLE, Path("/tmp/x"), ChunkOptions())
    with_sd = RunOptions(SAMPLE, Path("/tmp/x"), ChunkOptions(uncertainty=True))
    assert "uncertainty" not in run_config(plain, "m")  # older outputs keep resuming
    assert run_config(plain, "m") != run_config(with_sd, "m")


def test_uncertainty_runs_the_uncertainty_bundle_unless_a_model_is_named():
    assert ChunkOptions(uncertainty=True).bundle == UNCERTAINTY_BUNDLE
    assert ChunkOptions().bundle is None  # the default network
    named = ChunkOptions(model=DEFAULT_BUNDLE, uncertainty=True)
    assert named.bundle == DEFAULT_BUNDLE
    assert uncertainty_method(named) == "test-time-variants-5"  # that network on the variants
    assert uncertainty_method(ChunkOptions(uncertainty=True)) == "ensemble-1x5"
    assert read_ensemble(UNCERTAINTY_BUNDLE).networks == (FIRST.resolve(),)
    assert [Variant(**v) for v in read_ensemble(UNCERTAINTY_BUNDLE).variants] == list(
        DEFAULT_VARIANTS
    )


def test_uncertainty_needs_the_model(tmp_path):
    with pytest.raises(ValueError, match="--uncertainty"):
        ChunkOptions(segmentation="gt", uncertainty=True)
    result = CliRunner().invoke(
        app,
        ["run", str(SAMPLE), "--out", str(tmp_path / "o"), "--segmentation", "gt", "--uncertainty"],
    )
    assert result.exit_code == 2
    assert "--uncertainty" in result.output
