"""Model bundle: integrity check, safe loading, and the metadata contract (docs/model.md)."""

from __future__ import annotations

import json

import pytest
import torch

from echo_batch.model.bundle import (
    DEFAULT_BUNDLE,
    METADATA_FILE,
    WEIGHTS_FILE,
    BundleError,
    load_bundle,
    save_bundle,
)
from echo_batch.model.unet import UNet, UNetConfig, count_parameters

TINY = UNetConfig(features=(4, 8, 8))


def _tiny_bundle(path):
    model = UNet(TINY)
    meta = {"name": "tiny", "architecture": {"params": TINY.to_dict()}, "input": {"size": [32, 32]}}
    return save_bundle(path, model.state_dict(), meta), model


def test_round_trip_gives_identical_outputs(tmp_path):
    path, model = _tiny_bundle(tmp_path / "b")
    loaded = load_bundle(path).build()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))


def test_tampered_weights_are_refused(tmp_path):
    path, _ = _tiny_bundle(tmp_path / "b")
    state = torch.load(path / WEIGHTS_FILE, weights_only=True)
    state["head.bias"] += 1.0
    torch.save(state, path / WEIGHTS_FILE)
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(path)


def test_pickled_code_is_not_executed(tmp_path):
    """A weights file carrying a pickled object is refused by the weights-only loader."""
    path, _ = _tiny_bundle(tmp_path / "b")

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"x": Evil()}, path / WEIGHTS_FILE)
    meta = json.loads((path / METADATA_FILE).read_text())
    from echo_batch.model.bundle import sha256_file

    meta["sha256"] = sha256_file(path / WEIGHTS_FILE)
    (path / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="cannot load weights"):
        load_bundle(path)


def test_missing_files_are_reported(tmp_path):
    path, _ = _tiny_bundle(tmp_path / "b")
    (path / METADATA_FILE).unlink()
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(path)


def test_default_bundle_metadata_contract():
    bundle = load_bundle(DEFAULT_BUNDLE)
    meta = bundle.metadata
    for key in ("architecture", "input", "labels", "training", "seed", "code_version", "metrics"):
        assert key in meta, key
    assert meta["labels"] == {"0": "BG", "1": "LV", "2": "MYO", "3": "LA"}
    assert meta["training"]["split"] == {"fit": "training", "select": "validation"}
    assert "validation" in meta["metrics"] and "testing" in meta["metrics"]
    assert bundle.input_size == (224, 224)
    model = bundle.build()
    assert count_parameters(model) == meta["architecture"]["n_parameters"]
    assert count_parameters(model) < 2.5e6  # a bundle of a few MB
    assert (DEFAULT_BUNDLE / "LICENCE.md").read_text().count("CC BY-NC-SA 4.0") >= 1
