"""Training: a tiny U-Net on a synthetic cohort (device, time and architecture in the bundle)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from echo_batch.cli import app
from echo_batch.model.bundle import load_bundle
from echo_batch.model.inference import SegmentationEngine, cpu_supports_bf16
from echo_batch.model.train import TrainConfig, train
from echo_batch.synth import synth_cohort

TINY = (4, 4, 8, 8)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synth_cohort(root, 12, seed=3, max_side=64)
    return root


def _train(cohort, out):
    config = TrainConfig(epochs=1, batch_size=8, seed=5, precision="auto", threads=1, features=TINY)
    return train(cohort, out, config, device_name="cpu", show_progress=False)


def test_a_trained_bundle_records_its_device_time_and_architecture(cohort, tmp_path):
    bundle_dir = _train(cohort, tmp_path / "tiny")
    metadata = json.loads((bundle_dir / "metadata.json").read_text())
    training = metadata["training"]
    assert training["device"] == "cpu"
    assert training["device_name"]  # the CPU's model name here, the card's name on CUDA
    assert training["seconds"] > 0
    assert training["config"]["precision"] == ("bf16" if cpu_supports_bf16() else "fp32")
    assert metadata["architecture"]["params"]["features"] == list(TINY)
    bundle = load_bundle(bundle_dir)
    assert bundle.config.features == TINY
    engine = SegmentationEngine(bundle, device="cpu", precision="fp32")
    image = np.random.default_rng(0).uniform(0, 255, (96, 80)).astype(np.float32)
    assert engine.segment([image])[0].labels.shape == (96, 80)


def test_the_same_seed_gives_the_same_weights(cohort, tmp_path):
    first = load_bundle(_train(cohort, tmp_path / "a")).state_dict
    second = load_bundle(_train(cohort, tmp_path / "b")).state_dict
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("bad", ["", "16,x", "16", "16,0,8"])
def test_bad_features_are_a_one_line_error(cohort, tmp_path, bad):
    result = CliRunner().invoke(
        app, ["train", str(cohort), "--out", str(tmp_path / "m"), "--features", bad]
    )
    assert result.exit_code == 2
    assert "--features" in result.output


def test_a_narrower_network_starts_from_a_trained_bundle_and_records_it(cohort, tmp_path):
    wide_dir = _train(cohort, tmp_path / "wide")
    wide = load_bundle(wide_dir)
    config = TrainConfig(
        epochs=1,
        seed=5,
        precision="fp32",
        threads=1,
        features=(2, 3, 8, 8),
        init_from=str(wide_dir),
    )
    narrow_dir = train(cohort, tmp_path / "narrow", config, device_name="cpu", show_progress=False)
    metadata = json.loads((narrow_dir / "metadata.json").read_text())
    init = metadata["training"]["init"]
    assert init["model_id"] == wide.model_id
    assert init["features"] == list(TINY)
    assert "slimming" in init["method"]
    assert load_bundle(narrow_dir).config.features == (2, 3, 8, 8)


def test_an_init_bundle_narrower_than_the_network_is_a_one_line_error(cohort, tmp_path):
    wide_dir = _train(cohort, tmp_path / "wide")
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(cohort),
            "--out",
            str(tmp_path / "m"),
            "--features",
            "8,8,8,8",
            "--init-from",
            str(wide_dir),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 2
    assert "--init-from" in result.output
    assert "between 1 and its own" in result.output
    assert "Traceback" not in result.output
