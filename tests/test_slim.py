"""Network slimming: a narrower U-Net cut out of a wider one computes what the wide one computes
with the dropped channels silenced."""

from __future__ import annotations

import pytest
import torch

from echo_batch.model.slim import SlimError, kept_channels, slim_state_dict
from echo_batch.model.unet import UNet, UNetConfig

WIDE = UNetConfig(features=(8, 8, 12, 16))
NARROW = UNetConfig(features=(3, 5, 6, 16))


def _trained_looking(config: UNetConfig, seed: int) -> UNet:
    """A U-Net whose batch norms have spread scales and non-trivial running statistics."""
    gen = torch.Generator().manual_seed(seed)
    model = UNet(config)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(torch.randn(c, generator=gen) * 2)
                module.bias.copy_(torch.randn(c, generator=gen) * 0.5)
                module.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
    return model.eval()


def _silenced(model: UNet, state_before: dict[str, torch.Tensor], target: UNetConfig) -> UNet:
    """``model`` with every channel the slimming drops zeroed after its batch norm."""
    config = model.config
    norms = [f"down.{i}" for i in range(len(config.features))]
    widths = list(target.features)
    norms += [f"up.{j}" for j in range(len(config.features) - 1)]
    widths += list(reversed(target.features[:-1]))
    with torch.no_grad():
        for prefix, width in zip(norms, widths, strict=True):
            for norm in ("1", "4"):
                gamma = state_before[f"{prefix}.{norm}.weight"]
                drop = torch.ones(len(gamma), dtype=torch.bool)
                drop[kept_channels(gamma, width)] = False
                module = model.get_submodule(f"{prefix}.{norm}")
                module.weight[drop] = 0
                module.bias[drop] = 0
    return model


def test_kept_channels_are_the_largest_absolute_scales_in_order():
    gamma = torch.tensor([0.1, -3.0, 0.5, 2.0, -0.2])
    assert kept_channels(gamma, 2).tolist() == [1, 3]
    assert kept_channels(gamma, 3).tolist() == [1, 2, 3]
    assert kept_channels(torch.tensor([1.0, 1.0, 1.0]), 2).tolist() == [0, 1]


def test_the_narrow_network_equals_the_wide_one_with_dropped_channels_silenced():
    wide = _trained_looking(WIDE, seed=0)
    state = {k: v.clone() for k, v in wide.state_dict().items()}
    narrow = UNet(NARROW)
    narrow.load_state_dict(slim_state_dict(state, WIDE, NARROW))  # strict: every key, every shape
    narrow.eval()
    x = torch.randn(3, 1, 32, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = wide(x)
        silenced = _silenced(wide, state, NARROW)(x)
        cut = narrow(x)
    assert not torch.allclose(full, silenced, atol=1e-3)  # the silenced channels did matter
    torch.testing.assert_close(cut, silenced, atol=1e-5, rtol=1e-5)


def test_the_source_weights_are_not_modified():
    wide = _trained_looking(WIDE, seed=2)
    state = wide.state_dict()
    before = {k: v.clone() for k, v in state.items()}
    slim_state_dict(state, WIDE, NARROW)
    assert all(torch.equal(before[k], state[k]) for k in state)


def test_the_same_width_is_a_copy():
    wide = _trained_looking(WIDE, seed=3)
    state = wide.state_dict()
    out = slim_state_dict(state, WIDE, WIDE)
    assert out.keys() == state.keys()
    assert all(torch.equal(out[k], state[k]) for k in state)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (UNetConfig(features=(8, 8, 12)), "number of levels"),
        (UNetConfig(features=(9, 8, 12, 16)), "between 1 and its own"),
        (UNetConfig(features=(8, 0, 12, 16)), "between 1 and its own"),
        (UNetConfig(n_classes=3, features=(8, 8, 12, 16)), "classes"),
    ],
)
def test_a_target_that_is_not_a_narrowing_is_refused(target, message):
    with pytest.raises(SlimError, match=message):
        slim_state_dict(UNet(WIDE).state_dict(), WIDE, target)
