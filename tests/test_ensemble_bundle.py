"""Ensemble bundles: several networks x test-time variants (echo_batch.model.ensemble_bundle).

Format tests use tiny random networks; the oracle tests run the shipped networks on the bundled
sample: an ensemble of one network twice is that network, and the SD of a two-network ensemble is
the SD of the two networks' own EFs measured in separate runs.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from echo_batch.cli import app
from echo_batch.io.discovery import discover
from echo_batch.model.bundle import (
    DEFAULT_BUNDLE,
    METADATA_FILE,
    WEIGHTS_FILE,
    BundleError,
    load_bundle,
    save_bundle,
)
from echo_batch.model.ensemble import EnsembleEngine, VariantEngine
from echo_batch.model.ensemble_bundle import (
    check_model_dir,
    is_ensemble,
    model_id_of,
    read_ensemble,
    save_ensemble,
)
from echo_batch.model.inference import SegmentationEngine
from echo_batch.model.tta import Variant
from echo_batch.model.unet import UNet, UNetConfig
from echo_batch.run.chunk import get_engine, grid_size, uncertainty_method
from echo_batch.run.cohort import run_config
from echo_batch.run.options import ChunkOptions, RunOptions
from echo_batch.run.serial import run_cohort

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "camus224-test"
FIRST = DEFAULT_BUNDLE.parent / "camus224-unet"
TINY = UNetConfig(features=(4, 8, 8))
PLAIN = [{"scale": 1.0, "gamma": 1.0}]


def _tiny(path: Path, seed: int, size: int = 32) -> Path:
    torch.manual_seed(seed)
    meta = {
        "name": f"tiny{seed}",
        "architecture": {"params": TINY.to_dict()},
        "input": {"size": [size, size]},
    }
    return save_bundle(path, UNet(TINY).state_dict(), meta)


@pytest.fixture
def tinies(tmp_path) -> list[Path]:
    return [_tiny(tmp_path / "nets" / f"n{s}", s) for s in (1, 2)]


def test_an_ensemble_round_trips_with_relative_paths_and_a_stable_id(tmp_path, tinies):
    variants = [{"scale": 1.0, "gamma": 1.0}, {"scale": 0.9, "gamma": 1.0}]
    built = save_ensemble(tmp_path / "ens", "ens", tinies, variants, selected_on="validation")
    meta = json.loads((tmp_path / "ens" / METADATA_FILE).read_text())
    assert [n["path"] for n in meta["networks"]] == ["../nets/n1", "../nets/n2"]
    assert meta["selected_on"] == "validation"
    assert is_ensemble(tmp_path / "ens") and not is_ensemble(tinies[0])
    assert not is_ensemble(None)
    again = read_ensemble(tmp_path / "ens")
    assert again.networks == tuple(p.resolve() for p in tinies)
    assert again.variants == tuple(variants)
    assert again.n_members == 4 and again.method == "ensemble-2x2"
    assert again.model_id == built.model_id == model_id_of(tmp_path / "ens")
    assert again.model_id.startswith("ens@")
    assert check_model_dir(tmp_path / "ens") == again.model_id
    assert grid_size(tmp_path / "ens") == (32, 32)
    # moved together with its networks, it still reads (paths are relative)
    shutil.move(tmp_path / "ens", tmp_path / "moved" / "ens")
    shutil.move(tmp_path / "nets", tmp_path / "moved" / "nets")
    assert read_ensemble(tmp_path / "moved" / "ens").model_id == built.model_id


def test_the_id_changes_with_the_networks_and_the_variants(tmp_path, tinies):
    a = save_ensemble(tmp_path / "a", "e", tinies, PLAIN).model_id
    b = save_ensemble(tmp_path / "b", "e", tinies[::-1], PLAIN).model_id
    c = save_ensemble(tmp_path / "c", "e", tinies, [{"scale": 1.1, "gamma": 1.0}]).model_id
    assert len({a, b, c}) == 3


def test_a_replaced_network_is_refused(tmp_path, tinies):
    save_ensemble(tmp_path / "ens", "ens", tinies, PLAIN)
    shutil.rmtree(tinies[1])
    _tiny(tinies[1], seed=3)  # a consistent bundle, but not the one pinned
    with pytest.raises(BundleError, match=r"metadata.json: network ../nets/n2 .* replaced"):
        read_ensemble(tmp_path / "ens")


def test_tampered_or_missing_networks_name_the_file(tmp_path, tinies):
    save_ensemble(tmp_path / "ens", "ens", tinies, PLAIN)
    state = torch.load(tinies[0] / WEIGHTS_FILE, weights_only=True)
    state["head.bias"] += 1.0
    torch.save(state, tinies[0] / WEIGHTS_FILE)
    with pytest.raises(BundleError, match=r"n1/model.pt: sha256 .* does not match"):
        read_ensemble(tmp_path / "ens")
    shutil.rmtree(tinies[0])
    with pytest.raises(BundleError, match="n1: not a model bundle"):
        read_ensemble(tmp_path / "ens")


def test_malformed_ensembles_are_refused(tmp_path, tinies):
    other = _tiny(tmp_path / "nets" / "big", 4, size=64)
    with pytest.raises(BundleError, match="input grids differ"):
        save_ensemble(tmp_path / "grids", "e", [tinies[0], other], PLAIN)
    with pytest.raises(BundleError, match="at least one network"):
        save_ensemble(tmp_path / "none", "e", [], PLAIN)
    with pytest.raises(BundleError, match="at least one variant"):
        save_ensemble(tmp_path / "novar", "e", tinies, [])
    save_ensemble(tmp_path / "ens", "e", tinies, PLAIN)
    with pytest.raises(BundleError, match="cannot be a network of an ensemble"):
        save_ensemble(tmp_path / "nested", "e", [tmp_path / "ens"], PLAIN)
    with pytest.raises(BundleError, match=r"an ensemble bundle .* not one network"):
        load_bundle(tmp_path / "ens")
    meta = json.loads((tmp_path / "ens" / METADATA_FILE).read_text())
    meta["variants"] = [{"scale": 1.0}]
    (tmp_path / "ens" / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="a variant is"):
        read_ensemble(tmp_path / "ens")


def test_members_are_every_network_on_every_variant(tinies):
    engines = [SegmentationEngine.from_path(p, device="cpu", precision="fp32") for p in tinies]
    variants = (Variant(), Variant(gamma=1.4))
    both = EnsembleEngine(engines, variants, model_id="e@0")
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(3, 32, 32)).astype(np.float32)
    probs = both.member_probabilities(grid)
    assert probs.shape == (4, 3, 32, 32, 4)
    for n, engine in enumerate(engines):  # network-major: each network's variants in order
        alone = VariantEngine(engine, variants).member_probabilities(grid)
        np.testing.assert_array_equal(probs[2 * n : 2 * n + 2], alone)
    images = [rng.normal(size=(40, 36)).astype(np.float32) for _ in range(2)]
    for result in both.segment(images):
        assert len(result.members) == 4 and result.labels.shape == (40, 36)
    with pytest.raises(ValueError, match="own model id"):
        EnsembleEngine(engines, variants)
    with pytest.raises(ValueError, match="at least one network"):
        EnsembleEngine([], variants, model_id="e@0")


def test_the_cli_writes_an_ensemble_and_refuses_bad_variants(tmp_path, tinies):
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["ensemble", str(out), *map(str, tinies), "--variant", "1:1", "--variant", "0.9:1.4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 network(s) x 2 variant(s) = 4 members" in result.output
    assert read_ensemble(out).variants[1] == {"scale": 0.9, "gamma": 1.4}
    bad = runner.invoke(app, ["ensemble", str(tmp_path / "x"), str(tinies[0]), "--variant", "9:1"])
    assert bad.exit_code == 2 and "--variant" in bad.output
    missing = runner.invoke(app, ["ensemble", str(tmp_path / "y"), str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "not a model bundle" in missing.output


N_PATIENTS = 3


@pytest.fixture(scope="module")
def sample_runs(tmp_path_factory) -> dict[str, pd.DataFrame]:
    """Serial runs on three sample patients: each shipped network alone, and ensembles of them."""
    root = tmp_path_factory.mktemp("ensembles")
    same = save_ensemble(root / "same", "same", [DEFAULT_BUNDLE, DEFAULT_BUNDLE], PLAIN)
    pair = save_ensemble(root / "pair", "pair", [DEFAULT_BUNDLE, FIRST], PLAIN)
    manifest = discover(SAMPLE)
    manifest = dataclasses.replace(manifest, patients=manifest.patients[:N_PATIENTS])
    runs = {}
    for name, model in (("slim", None), ("first", FIRST), ("same", same.path), ("pair", pair.path)):
        chunk = ChunkOptions(model=model, device="cpu", precision="fp32")
        run_cohort(RunOptions(SAMPLE, root / name, chunk, report=False), manifest=manifest)
        runs[name] = pd.read_parquet(root / name / "patients.parquet").set_index("patient_id")
    runs["pair_id"] = pair.model_id  # type: ignore[assignment]
    return runs


def test_one_network_twice_is_that_network(sample_runs):
    slim, same = sample_runs["slim"], sample_runs["same"]
    assert (same.status == "ok").all() and len(same) == N_PATIENTS
    pd.testing.assert_series_equal(same.ef_camus_pct, slim.ef_camus_pct)
    pd.testing.assert_series_equal(same.ef_pct, slim.ef_pct)
    assert (same.n_members == 2).all()
    assert (same.ef_pct_sd == 0).all() and (same.ef_camus_pct_sd == 0).all()


def test_the_sd_of_two_networks_is_that_of_their_own_runs(sample_runs):
    slim, first, pair = sample_runs["slim"], sample_runs["first"], sample_runs["pair"]
    assert (pair.model_id == sample_runs["pair_id"]).all()
    assert json.loads(pair.measure_config.iloc[0])["uncertainty"] == "ensemble-2x1"
    for column in ("ef_pct", "ef_camus_pct"):
        expected = (slim[column] - first[column]).abs() / np.sqrt(2)  # SD (ddof 1) of two values
        np.testing.assert_allclose(pair[f"{column}_sd"], expected, atol=1e-9)
    assert pair.ef_camus_pct_sd.max() > 0  # two networks do differ on these patients


def test_an_ensemble_model_runs_its_members_without_the_flag(tmp_path, tinies):
    ens = save_ensemble(tmp_path / "ens", "ens", tinies, PLAIN)
    options = ChunkOptions(model=ens.path, device="cpu", precision="fp32", threads=1)
    assert uncertainty_method(options) == "ensemble-2x1"
    assert uncertainty_method(ChunkOptions()) is None
    named = ChunkOptions(model=DEFAULT_BUNDLE, uncertainty=True)
    assert uncertainty_method(named) == "test-time-variants-5"
    engine = get_engine(options)
    assert isinstance(engine, EnsembleEngine) and engine.n_members == 2
    assert engine.model_id == ens.model_id
    with_flag = get_engine(dataclasses.replace(options, uncertainty=True))
    assert with_flag.n_members == 2  # not wrapped in the variants a second time
    plain = RunOptions(SAMPLE, tmp_path / "o", ChunkOptions())
    assert run_config(RunOptions(SAMPLE, tmp_path / "o", options), "m") != run_config(plain, "m")


def test_a_cluster_with_gpu_workers_runs_an_ensemble_fused(tmp_path, tinies, monkeypatch):
    """The split GPU stage has no member form: runs with members go as fused chunks."""
    from echo_batch.run import gpu_stage
    from flows import cohort_ef

    monkeypatch.setattr(cohort_ef, "chunk_resources", lambda *a: {"GPU": 1})
    for module in (cohort_ef, gpu_stage):
        monkeypatch.setattr(module, "worker_kinds", lambda client: (["gpu"], ["cpu"], 2))
    ens = save_ensemble(tmp_path / "ens", "ens", tinies, PLAIN)
    plain = cohort_ef._submitter(object(), ChunkOptions(device="cuda"), "m")
    member_run = cohort_ef._submitter(object(), ChunkOptions(model=ens.path, device="cuda"), "m")
    assert plain.split and not member_run.split
