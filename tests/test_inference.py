"""Inference engine on real images with the default bundle: batching, precision, native grids."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from echo_batch.io.discovery import discover
from echo_batch.io.image import read_image
from echo_batch.model.inference import SegmentationEngine, cpu_supports_bf16
from echo_batch.qc.metrics import dice

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "camus224-test"


@pytest.fixture(scope="module")
def real_images() -> list[np.ndarray]:
    manifest = discover(SAMPLE)
    images = []
    for ref in manifest.patients[:6]:
        for files in ref.images.values():
            images.append(read_image(files.image, patient_dir=ref.folder).array)
    return images


@pytest.fixture(scope="module")
def real_gts() -> list[np.ndarray]:
    manifest = discover(SAMPLE)
    return [
        read_image(files.gt, patient_dir=ref.folder, labels=True).array
        for ref in manifest.patients[:6]
        for files in ref.images.values()
    ]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batched_equals_one_at_a_time(real_images, precision):
    if precision == "bf16" and not cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16 kernels")
    batched = SegmentationEngine.from_path(device="cpu", precision=precision, batch_size=8)
    single = SegmentationEngine.from_path(device="cpu", precision=precision, batch_size=1)
    a = batched.segment(real_images)
    b = single.segment(real_images)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.labels, y.labels)
        assert x.confidence == pytest.approx(y.confidence, abs=1e-5)


def test_bf16_labels_agree_with_fp32(real_images):
    if not cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16 kernels")
    fp32 = SegmentationEngine.from_path(device="cpu", precision="fp32").segment(real_images)
    bf16 = SegmentationEngine.from_path(device="cpu", precision="bf16").segment(real_images)
    agree = np.mean([(a.labels == b.labels).mean() for a, b in zip(fp32, bf16, strict=True)])
    assert agree >= 0.995


def test_segmentation_matches_expert_masks(real_images, real_gts):
    segs = SegmentationEngine.from_path(device="cpu").segment(real_images)
    lv = [dice(s.labels, gt, 1) for s, gt in zip(segs, real_gts, strict=True)]
    assert np.mean(lv) >= 0.88
    assert all(0.0 < s.confidence <= 1.0 for s in segs)


def test_native_grid_output_follows_the_input_shape(real_images, real_gts):
    """A native-size image (here 2.5x upsampled, anisotropic) gives labels on its own grid."""
    engine = SegmentationEngine.from_path(device="cpu", precision="fp32")
    img, gt = real_images[0], real_gts[0]
    big = cv2.resize(img, (560, 450), interpolation=cv2.INTER_CUBIC)
    big_gt = cv2.resize(gt, (560, 450), interpolation=cv2.INTER_NEAREST)
    (seg,) = engine.segment([big])
    assert seg.labels.shape == (450, 560)
    assert dice(seg.labels, big_gt, 1) >= 0.85
    (small,) = engine.segment([img])
    back = cv2.resize(seg.labels, (224, 224), interpolation=cv2.INTER_NEAREST)
    assert dice(back, small.labels, 1) >= 0.95


@pytest.mark.slow
def test_compiled_engine_matches_eager(real_images):
    """torch.compile with fixed-shape batches: labels as eager, also for a ragged last batch."""
    eager = SegmentationEngine.from_path(device="cpu", precision="fp32", batch_size=4)
    compiled = SegmentationEngine.from_path(
        device="cpu", precision="fp32", batch_size=4, compile=True
    )
    images = real_images[:6]  # batches of 4 and 2 (padded)
    for a, b in zip(eager.segment(images), compiled.segment(images), strict=True):
        assert (a.labels == b.labels).mean() >= 0.9999


def test_on_device_labels_equal_the_host_probability_path(real_images):
    """Oracle: labels and confidence taken on the device equal those of the host probabilities.

    Covers images on the input grid (labels straight from the device) and images of another size
    (probabilities resampled on the host), mixed in one batch.
    """
    from echo_batch.model.inference import to_native
    from echo_batch.model.preprocess import to_grid

    engine = SegmentationEngine.from_path(device="cpu", precision="fp32", batch_size=4)
    images = [*real_images[:3], cv2.resize(real_images[3], (301, 187)), real_images[4]]
    fast = engine.segment(images)
    probs = engine.probabilities(np.stack([to_grid(i, engine.input_size) for i in images]))
    for got, p, image in zip(fast, probs, images, strict=True):
        ref = to_native(p, image.shape)
        assert got.labels.shape == image.shape
        np.testing.assert_array_equal(got.labels, ref.labels)
        assert got.confidence == pytest.approx(ref.confidence, abs=1e-5)


def test_forward_only_counts_every_image(real_images):
    from echo_batch.model.preprocess import to_grid

    engine = SegmentationEngine.from_path(device="cpu", precision="fp32", batch_size=4)
    grid = np.stack([to_grid(i, engine.input_size) for i in real_images[:7]])
    assert engine.forward_only(grid) == 7


def test_folded_batch_norm_equals_the_trained_network(real_images):
    """The engine folds the norms into the convolutions: same logits and labels as the bundle."""
    import torch

    from echo_batch.model.bundle import load_bundle
    from echo_batch.model.preprocess import to_grid
    from echo_batch.model.unet import fold_batch_norm

    bundle = load_bundle()
    plain, folded = bundle.build(), fold_batch_norm(bundle.build())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    x = torch.from_numpy(np.stack([to_grid(i, bundle.input_size) for i in real_images]))[:, None]
    with torch.inference_mode():
        a, b = plain(x), folded(x)
    assert (a - b).abs().max().item() < 1e-3 * a.abs().max().item()
    assert (a.argmax(1) == b.argmax(1)).float().mean().item() >= 0.99999


def test_folding_refuses_a_model_in_training_mode():
    from echo_batch.model.unet import UNet, fold_batch_norm

    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(UNet().train())
