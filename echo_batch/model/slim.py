"""Initialise a narrower U-Net from a trained one by keeping its most active channels.

Network slimming (Liu et al. 2017, "Learning efficient convolutional networks through network
slimming", ICCV): after every convolution of a :class:`~echo_batch.model.unet.ConvBlock` a batch
norm scales each channel by ``gamma``; a channel whose ``|gamma|`` is small contributes little to
what follows. The narrower network keeps, in every batch norm, the channels with the largest
``|gamma|`` and takes the matching slices of every weight that reads or writes them; it is then
fine-tuned with the training recipe. Before fine-tuning, the narrower network computes exactly
what the wide one computes with the dropped channels silenced (``gamma = beta = 0``, so they are
zero after the ReLU): ``tests/test_slim.py`` checks that identity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from echo_batch.model.unet import UNetConfig

if TYPE_CHECKING:
    import torch

_NORM_KEYS = ("weight", "bias", "running_mean", "running_var")
# Indices inside a ConvBlock (nn.Sequential): conv, norm, relu, conv, norm, relu.
_CONV1, _NORM1, _CONV2, _NORM2 = 0, 1, 3, 4


class SlimError(ValueError):
    """The narrower architecture cannot be cut out of the wider one."""


def _check(source: UNetConfig, target: UNetConfig) -> None:
    if (source.in_channels, source.n_classes) != (target.in_channels, target.n_classes):
        raise SlimError(
            f"input channels and classes must match: {source.in_channels}/{source.n_classes} "
            f"against {target.in_channels}/{target.n_classes}"
        )
    if len(source.features) != len(target.features):
        raise SlimError(
            f"the number of levels must match: {len(source.features)} against "
            f"{len(target.features)}"
        )
    wider = [t > s for s, t in zip(source.features, target.features, strict=True)]
    if any(wider) or min(target.features) < 1:
        raise SlimError(
            f"every level must keep between 1 and its own channels: {list(source.features)} "
            f"-> {list(target.features)}"
        )


def kept_channels(gamma: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` channels with the largest ``|gamma|``, in ascending order.

    Args:
        gamma: ``(C,)`` batch-norm scales.
        keep: channels to keep, ``1 <= keep <= C``.

    Returns:
        ``(keep,)`` int64 indices (ties go to the lower index).
    """
    import torch

    order = torch.argsort(gamma.abs(), descending=True, stable=True)
    return torch.sort(order[:keep]).values


def _slim_layer(
    state: dict[str, torch.Tensor],
    conv: str,
    norm: str,
    inputs: torch.Tensor,
    width: int,
    out: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Cut one convolution and the batch norm after it; returns the kept output channels."""
    kept = kept_channels(state[f"{norm}.weight"], width)
    out[f"{conv}.weight"] = state[f"{conv}.weight"][kept][:, inputs].clone()
    for key in _NORM_KEYS:
        out[f"{norm}.{key}"] = state[f"{norm}.{key}"][kept].clone()
    out[f"{norm}.num_batches_tracked"] = state[f"{norm}.num_batches_tracked"].clone()
    return kept


def _slim_block(
    state: dict[str, torch.Tensor],
    prefix: str,
    inputs: torch.Tensor,
    width: int,
    out: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Cut one ConvBlock; returns the indices of its kept output channels."""
    mid = _slim_layer(state, f"{prefix}.{_CONV1}", f"{prefix}.{_NORM1}", inputs, width, out)
    return _slim_layer(state, f"{prefix}.{_CONV2}", f"{prefix}.{_NORM2}", mid, width, out)


def slim_state_dict(
    state: dict[str, torch.Tensor], source: UNetConfig, target: UNetConfig
) -> dict[str, torch.Tensor]:
    """Weights of a ``target`` U-Net cut out of a trained ``source`` U-Net.

    Every level keeps ``target.features[i]`` of its ``source.features[i]`` channels (chosen per
    batch norm by ``|gamma|``); the decoder's first convolution of each level reads the kept
    channels of the up-sampled level below and of the skip connection; the head reads the kept
    channels of the top decoder block.

    Args:
        state: the source U-Net's state dict (tensors are not modified).
        source: its architecture.
        target: the narrower architecture (same levels, classes and input channels).

    Returns:
        A state dict that :class:`~echo_batch.model.unet.UNet` ``(target)`` loads strictly.

    Raises:
        SlimError: ``target`` is not a narrowing of ``source``.
    """
    import torch

    _check(source, target)
    f_src, f_dst = source.features, target.features
    out: dict[str, torch.Tensor] = {}
    inputs = torch.arange(source.in_channels)
    skips = []
    for level, width in enumerate(f_dst):
        inputs = _slim_block(state, f"down.{level}", inputs, width, out)
        skips.append(inputs)
    below, c_below = skips.pop(), f_src[-1]
    for j, width in enumerate(reversed(f_dst[:-1])):
        skip = skips.pop()
        inputs = torch.cat([below, c_below + skip])
        below = _slim_block(state, f"up.{j}", inputs, width, out)
        c_below = f_src[len(f_src) - 2 - j]
    out["head.weight"] = state["head.weight"][:, below].clone()
    out["head.bias"] = state["head.bias"].clone()
    return out
