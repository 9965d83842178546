"""The head-only stage a method may ask for before training (LP-FT's linear probe, ``TransferMethod.head_warmup``).

The frozen backbone's features of the training split (eval transforms, no augmentation) are computed once with the
feature-cache code (sharded across processes, gathered on every rank); the head alone then trains on them with
AdamW on cross-entropy, seeded, and the fitted weights are loaded into the model. Every rank fits the same head from
the same features; the main process's weights are broadcast anyway, so the processes start fine-tuning identical.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from accelerate.utils import broadcast

from hftransfer.training.feature_cache import extract_features, feature_precision
from hftransfer.training.loaders import split_loader


if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from hftransfer.data import LoadedData
    from hftransfer.methods.base import HeadWarmup
    from hftransfer.modeling import AutoTransfer
    from hftransfer.training.config import TrainConfig

Log = Callable[[str], None]
PROBE_BATCH_ROWS = 1024  # rows per probe step (the whole split when it is smaller: full-batch)


def warm_up_head(model: AutoTransfer, data: LoadedData, accelerator: Accelerator, config: TrainConfig,
                 mixed_precision: str | None, log: Log) -> dict[str, Any] | None:
    """Run the head-only stage ``model.method.head_warmup()`` asks for (None: the method asks for none).

    Call once in the trainer's set-up, after the model and loaders are built and before the optimizer. Returns the
    stats for metrics.json (``probe_*`` keys).
    """
    settings = model.method.head_warmup()
    if settings is None:
        return None
    cfg = config
    loader = split_loader(data.train, model, cfg.eval_batch_size or cfg.batch_size, seed=cfg.seed,
                          num_workers=cfg.num_workers, cache_mb=cfg.image_cache_mb)
    return fit_head(model, accelerator.prepare_data_loader(loader), accelerator, settings, seed=cfg.seed, log=log,
                    precision=feature_precision(settings.feature_precision, mixed_precision, accelerator.device),
                    progress=cfg.progress_bar)


def fit_head(model: AutoTransfer, loader: DataLoader, accelerator: Accelerator, settings: HeadWarmup, *,
             seed: int, log: Log, precision: str = "fp32", progress: bool = False) -> dict[str, Any]:
    """Fit ``model.head`` on the frozen backbone's features over ``loader`` (un-augmented, prepared by
    ``accelerator``); the backbone is left unchanged. Returns ``probe_*`` stats."""
    start = time.perf_counter()
    model.to(accelerator.device)
    was_training = model.training
    features, labels = extract_features(accelerator, model, loader, f"{model.method.name}: probe features", progress,
                                        precision)
    head = model.head
    param = next(head.parameters())
    features, labels = features.to(param.device, param.dtype), labels.to(param.device)
    before = _loss_and_accuracy(head, features, labels)
    with torch.random.fork_rng(devices=[]):  # seeded here, the run's own random stream left as it was
        torch.manual_seed(seed)
        _train(head, features, labels, settings, seed)
    _broadcast_from_main(head, accelerator)
    after = _loss_and_accuracy(head, features, labels)
    model.train(was_training)
    stats = {"probe_train_accuracy": after[1], "probe_train_loss": after[0], "probe_initial_train_accuracy": before[1],
             "probe_initial_train_loss": before[0], "probe_epochs": settings.epochs, "probe_rows": len(labels),
             "probe_feature_precision": precision, "probe_seconds": time.perf_counter() - start}
    log(f"{model.method.name}: probe fitted on {len(labels)} training rows ({settings.epochs} epochs, features in "
        f"{precision}) in {stats['probe_seconds']:.1f}s: train loss {before[0]:.4g} -> {after[0]:.4g}, "
        f"train accuracy {after[1]:.4f} (untrained head {before[1]:.4f})")
    return stats


def _train(head: torch.nn.Module, features: torch.Tensor, labels: torch.Tensor, settings: HeadWarmup,
           seed: int) -> None:
    params = list(head.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    rows = len(labels)
    steps_per_epoch = max(1, math.ceil(rows / PROBE_BATCH_ROWS))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs * steps_per_epoch)
    order = torch.Generator().manual_seed(seed)
    head.train()
    with torch.enable_grad():
        for _ in range(settings.epochs):
            perm = torch.randperm(rows, generator=order).to(labels.device)
            for i in range(0, rows, PROBE_BATCH_ROWS):
                index = perm[i:i + PROBE_BATCH_ROWS]
                loss = F.cross_entropy(head(features[index]), labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    optimizer.zero_grad(set_to_none=True)
    for p, flag in zip(params, flags):
        p.requires_grad_(flag)


@torch.no_grad()
def _loss_and_accuracy(head: torch.nn.Module, features: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    was_training = head.training
    head.eval()
    logits = torch.cat([head(features[i:i + PROBE_BATCH_ROWS]) for i in range(0, len(labels), PROBE_BATCH_ROWS)])
    head.train(was_training)
    loss = F.cross_entropy(logits.float(), labels)
    return float(loss), float((logits.argmax(-1) == labels).float().mean())


@torch.no_grad()
def _broadcast_from_main(head: torch.nn.Module, accelerator: Accelerator) -> None:
    """The main process's head (parameters and buffers) on every process."""
    if accelerator.num_processes == 1:
        return

    for tensor in [*head.parameters(), *head.buffers()]:
        tensor.copy_(broadcast(tensor.detach().clone(), from_process=0))
