"""Test-time variants: known-answer checks on analytic shapes (echo_batch.model.tta)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echo_batch.model.tta import Variant, apply, invert

SIZE = 224


def _disk(radius: float, centre=(112.0, 112.0)) -> np.ndarray:
    rows, cols = np.mgrid[:SIZE, :SIZE] + 0.5
    return ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2).astype(np.float32)


def _z(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x)[None, None]
    return (t - t.mean()) / t.std(unbiased=False)


def _one_hot(mask: np.ndarray) -> torch.Tensor:
    """(1, 4, H, W) probabilities: background and one foreground class (LV)."""
    probs = torch.zeros(1, 4, SIZE, SIZE)
    probs[0, 1] = torch.from_numpy(mask)
    probs[0, 0] = 1 - probs[0, 1]
    return probs


def test_identity_is_the_input_itself():
    x = _z(_disk(40))
    assert apply(x, Variant()) is x
    probs = _one_hot(_disk(40))
    assert invert(probs, Variant()) is probs


@pytest.mark.parametrize("scale", [0.8, 0.9, 1.1, 1.25])
def test_zoom_scales_a_disk_area_by_the_square(scale):
    # a bright disk on black: the variant's bright area is the disk's area times scale^2
    x = _z(_disk(40))
    varied = apply(x, Variant(scale=scale))[0, 0].numpy()
    bright = varied > (varied.max() + varied.min()) / 2
    expected = np.pi * 40**2 * scale**2
    assert bright.sum() == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("scale", [0.85, 0.9, 1.1, 1.2])
def test_invert_brings_a_variant_s_prediction_back(scale):
    # what the network would predict on the zoomed image is the zoomed mask; inverting it must
    # give back the plain mask (up to the two bilinear resamplings at the edge)
    plain = _disk(50, centre=(100.0, 120.0))
    zoomed = apply(_z(plain), Variant(scale=scale))[0, 0].numpy()
    predicted = _one_hot((zoomed > (zoomed.max() + zoomed.min()) / 2).astype(np.float32))
    back = invert(predicted, Variant(scale=scale))
    labels = back.argmax(1)[0].numpy()
    lv = labels == 1
    dice = 2 * (lv & (plain > 0)).sum() / (lv.sum() + (plain > 0).sum())
    assert dice > 0.98
    assert torch.allclose(back.sum(1), torch.ones(1, SIZE, SIZE), atol=1e-5)


def test_enlarged_variant_leaves_the_unseen_border_to_the_background():
    # a zoom of 1.25 never sees the outer ring of the plain grid: there the background is sure
    everywhere_lv = torch.zeros(1, 4, SIZE, SIZE)
    everywhere_lv[:, 1] = 1.0
    back = invert(everywhere_lv, Variant(scale=1.25))
    assert back[0, 0, 0, 0] == pytest.approx(1.0)
    assert back[0, 1, SIZE // 2, SIZE // 2] == pytest.approx(1.0)
    seen = SIZE / 1.25
    assert back[0, 1].sum().item() == pytest.approx(seen**2, rel=0.03)


@pytest.mark.parametrize("gamma", [0.7, 1.4])
def test_gamma_keeps_the_order_of_intensities_and_the_normalisation(gamma):
    ramp = np.tile(np.linspace(0.0, 1.0, SIZE, dtype=np.float32), (SIZE, 1))
    varied = apply(_z(ramp), Variant(gamma=gamma))[0, 0].numpy()
    assert np.all(np.diff(varied[0]) > 0)
    assert varied.mean() == pytest.approx(0.0, abs=1e-5)
    assert varied.std() == pytest.approx(1.0, abs=1e-4)
    # mid-grey moves the way gamma says: brighter below 1, darker above 1 (relative to the ends)
    unit = (varied[0] - varied[0, 0]) / (varied[0, -1] - varied[0, 0])
    assert unit[SIZE // 2] == pytest.approx(0.5**gamma, abs=0.01)


@pytest.mark.parametrize("bad", [{"scale": 0.1}, {"scale": 3.0}, {"gamma": 0.0}, {"gamma": 9.0}])
def test_out_of_range_variants_are_refused(bad):
    with pytest.raises(ValueError, match="variant"):
        Variant(**bad)
