"""Training of the segmentation U-Net on a CAMUS-layout cohort.

The training split fits the weights, the validation split selects the best epoch (mean Dice of LV,
myocardium and atrium); the testing split is never read here.
"""

from __future__ import annotations

import functools
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from echo_batch import atomic
from echo_batch.domain import Label, Split
from echo_batch.io.discovery import discover
from echo_batch.model.augment import AugmentConfig, augment_batch
from echo_batch.model.bundle import save_bundle
from echo_batch.model.dataset import SegmentationSet, load_split
from echo_batch.model.preprocess import INPUT_SIZE, NORMALISATION
from echo_batch.model.unet import UNet, UNetConfig, count_parameters
from echo_batch.qc.metrics import dice
from echo_batch.version import code_version

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
FOREGROUND = (Label.LV, Label.MYO, Label.LA)


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (recorded in the bundle).

    Attributes:
        epochs: passes over the training split.
        batch_size: images per step.
        lr: peak Adam learning rate (cosine decay to 1 % after a one-epoch warm-up).
        weight_decay: AdamW weight decay.
        seed: seed of weights, shuffling and augmentation.
        precision: "bf16" (autocast), "fp32", or "auto": bf16 where the device has native bf16
            (CUDA, CPUs with AVX512-BF16 or AMX), else fp32 (emulated bf16 made the forward pass
            of the default U-Net 8x slower on an AVX2-only CPU: 0.6 against 5.1 images/s).
        threads: torch intra-op threads on CPU.
        augment: augmentation ranges.
        features: U-Net channels per resolution level (see ``UNetConfig.features``).
    """

    epochs: int = 40
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    precision: str = "bf16"
    threads: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    features: tuple[int, ...] = UNetConfig().features
    init_from: str | None = None


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (x - mean) / std.clamp_min(1e-6)


def dice_ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice loss over the foreground classes.

    Args:
        logits: ``(N, C, H, W)`` float32 logits.
        labels: ``(N, H, W)`` int64 labels.

    Returns:
        Scalar loss.
    """
    ce = F.cross_entropy(logits, labels)
    probs = logits.softmax(1)
    onehot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    soft_dice = (2 * inter + 1.0) / (denom + 1.0)
    return ce + (1 - soft_dice[1:].mean())


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return torch.autocast(device.type, dtype=dtype, enabled=precision == "bf16")


@torch.no_grad()
def predict_grid(
    model: UNet, images: np.ndarray, device: torch.device, precision: str, batch: int = 16
) -> np.ndarray:
    """Labels for images already on the network grid.

    Args:
        model: network in eval mode.
        images: ``(N, rows, cols)`` float32 intensities.
        device: where to run.
        precision: "bf16" or "fp32".
        batch: images per forward pass.

    Returns:
        ``(N, rows, cols)`` uint8 labels.
    """
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start : start + batch])[:, None].to(device)
        x = _normalise(x).contiguous(memory_format=torch.channels_last)
        with _autocast(device, precision):
            logits = model(x)
        out.append(logits.float().max(1).indices.to(torch.uint8).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, *images.shape[1:]), np.uint8)


def validation_dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Mean Dice per foreground label over a set of images, and their mean (``score``)."""
    scores = {
        label.name.lower(): float(
            np.mean([dice(p, t, label) for p, t in zip(pred, truth, strict=True)])
        )
        for label in FOREGROUND
    }
    scores["score"] = float(np.mean(list(scores.values())))
    return scores


def _lr_factor(step: int, steps_per_epoch: int, total: int) -> float:
    warmup = steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _precision(device: torch.device, precision: str) -> str:
    """``auto``: the engine's choice (bf16 where the device computes it natively), except that
    training takes fp32 where that choice is fp16 (no loss scaling here)."""
    if precision != "auto":
        return precision
    from echo_batch.model.inference import resolve_precision

    chosen = resolve_precision(device, "auto")
    return "fp32" if chosen == "fp16" else chosen


def device_name_of(device: torch.device) -> str:
    """The card's name on CUDA (``NVIDIA H200``), else the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(
    data: Path,
    out: Path,
    config: TrainConfig,
    *,
    device_name: str = "auto",
    resume: bool = True,
    max_minutes: float | None = None,
    show_progress: bool = True,
) -> Path:
    """Train a U-Net and write the bundle of the best validation epoch.

    Args:
        data: CAMUS-layout DATA root with split files.
        out: bundle directory (also holds the resumable checkpoint).
        config: hyper-parameters.
        device_name: "auto", "cpu" or "cuda".
        resume: continue from ``out/checkpoint.pt`` when present.
        max_minutes: stop after the epoch that crosses this wall-clock budget.
        show_progress: draw a progress bar.

    Returns:
        The bundle directory.
    """
    device = _device(device_name)
    config = replace(config, precision=_precision(device, config.precision))
    torch.manual_seed(config.seed)
    if device.type == "cpu":
        torch.set_num_threads(config.threads)
    manifest = discover(data)
    train_set = load_split(manifest, Split.TRAINING, INPUT_SIZE)
    val_set = load_split(manifest, Split.VALIDATION, INPUT_SIZE)
    if len(train_set.images) == 0 or len(val_set.images) == 0:
        raise ValueError(
            f"{data}: training needs labelled images in the training and validation splits"
        )
    logger.info(
        "training on %d images, validating on %d", len(train_set.images), len(val_set.images)
    )

    architecture = UNetConfig(features=tuple(config.features))
    model = UNet(architecture)
    init = _initialise(model, config.init_from) if config.init_from else None
    model = model.to(device).to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(train_set.images) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: _lr_factor(s, steps_per_epoch, total_steps)
    )
    state: dict[str, Any] = {"epoch": 0, "best_score": -1.0, "best_state": None, "history": []}
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT_FILE
    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimiser.load_state_dict(ckpt["optimiser"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = ckpt["state"]
        logger.info("resumed from %s at epoch %d", ckpt_path, state["epoch"])

    started = time.monotonic()
    for epoch in range(state["epoch"], config.epochs):
        t0 = time.monotonic()
        loss = _train_epoch(
            model, optimiser, scheduler, train_set, config, epoch, device, show_progress
        )
        model.eval()
        pred = predict_grid(model, val_set.images, device, config.precision)
        scores = validation_dice(pred, val_set.labels)
        record = {"epoch": epoch + 1, "loss": loss, **scores, "seconds": time.monotonic() - t0}
        state["history"].append(record)
        if scores["score"] > state["best_score"]:
            state["best_score"] = scores["score"]
            state["best_state"] = {
                k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            }
            state["best_epoch"] = epoch + 1
        state["epoch"] = epoch + 1
        logger.info(
            "epoch %d/%d loss %.4f val dice LV %.4f MYO %.4f LA %.4f (best %.4f) %.0f s",
            epoch + 1,
            config.epochs,
            loss,
            scores["lv"],
            scores["myo"],
            scores["la"],
            state["best_score"],
            record["seconds"],
        )
        checkpoint = {
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": state,
        }
        atomic.write_file(ckpt_path, functools.partial(torch.save, checkpoint))
        if max_minutes is not None and (time.monotonic() - started) / 60 > max_minutes:
            logger.warning("time budget of %.0f min reached after epoch %d", max_minutes, epoch + 1)
            break

    best = next(h for h in state["history"] if h["epoch"] == state["best_epoch"])
    metadata = {
        "name": out.name,
        "architecture": {
            "class": "echo_batch.model.unet.UNet",
            "params": architecture.to_dict(),
            "n_parameters": count_parameters(model),
        },
        "input": {"size": list(INPUT_SIZE), "channels": 1, "normalisation": NORMALISATION},
        "labels": {str(int(label)): label.name for label in Label},
        "training": {
            "data": str(Path(data).name),
            "split": {"fit": Split.TRAINING.value, "select": Split.VALIDATION.value},
            "n_train_images": len(train_set.images),
            "n_val_images": len(val_set.images),
            "config": {**asdict(config), "augment": asdict(config.augment)},
            "device": str(device),
            "device_name": device_name_of(device),
            "seconds": round(sum(h["seconds"] for h in state["history"]), 1),
            "epochs_run": state["epoch"],
            "init": init,
            "best_epoch": state["best_epoch"],
            "history": state["history"],
        },
        "seed": config.seed,
        "code_version": code_version(),
        "metrics": {"validation": {k: best[k] for k in ("lv", "myo", "la", "score")}},
    }
    save_bundle(out, state["best_state"], metadata)
    logger.info("bundle written to %s (best epoch %d)", out, state["best_epoch"])
    return out


def _initialise(model: UNet, bundle_dir: str) -> dict[str, Any]:
    """Load a trained bundle's weights into ``model``, cut to its width; what was done."""
    from echo_batch.model.bundle import load_bundle
    from echo_batch.model.slim import slim_state_dict

    bundle = load_bundle(bundle_dir)
    same = bundle.config == model.config  # slimming to the same width copies every weight
    model.load_state_dict(slim_state_dict(bundle.state_dict, bundle.config, model.config))
    logger.info(
        "initialised from %s (%s)", bundle.model_id, "same architecture" if same else "slimmed"
    )
    return {
        "model_id": bundle.model_id,
        "features": list(bundle.config.features),
        "method": "copy" if same else "network slimming: largest |batch-norm scale| kept",
    }


def _train_epoch(
    model: UNet,
    optimiser: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: SegmentationSet,
    config: TrainConfig,
    epoch: int,
    device: torch.device,
    show_progress: bool,
) -> float:
    """One pass over the training set; returns the mean loss."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(len(data.images), generator=gen)
    images = torch.from_numpy(data.images)
    labels = torch.from_numpy(data.labels).long()
    model.train()
    losses = []
    with Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
        disable=not show_progress,
        transient=True,
    ) as progress:
        task = progress.add_task("train", total=len(order), epoch=epoch + 1, loss=float("nan"))
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            x, y = augment_batch(images[idx, None], labels[idx], gen, config.augment)
            x = _normalise(x).to(device).contiguous(memory_format=torch.channels_last)
            y = y.to(device)
            with _autocast(device, config.precision):
                logits = model(x)
            loss = dice_ce_loss(logits.float(), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            progress.update(task, advance=len(idx), loss=float(np.mean(losses[-20:])))
    return float(np.mean(losses))
