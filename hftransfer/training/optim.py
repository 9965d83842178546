"""Optimizers with parameter groups (no decay on 1-d params, layer-wise / discriminative LRs) and LR schedules."""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import nn

from hftransfer.errors import ConfigurationError
from hftransfer.training.config import OptimConfig, SchedulerConfig
from hftransfer.training.freezing import DepthMap


def param_groups(model: nn.Module, method, depths: DepthMap, cfg: OptimConfig) -> list[dict]:
    """Group the method's trainable parameters by (learning-rate scale, weight decay)."""
    buckets: dict[tuple[float, float], list] = defaultdict(list)
    names: dict[tuple[float, float], list[str]] = defaultdict(list)
    top = depths.num_blocks + 1
    for name, param in model.named_parameters():
        if not method.is_trained_parameter(name):
            continue
        d = depths.depth[name]
        if d == depths.head_depth:
            lr = cfg.head_lr if cfg.head_lr is not None else cfg.lr
        else:
            scale = cfg.layer_decay ** (top - min(d, top)) if cfg.layer_decay else 1.0
            lr = cfg.lr * scale * cfg.backbone_lr_scale
        # Norm weights, biases and other 1-d tensors get no weight decay (nanoGPT's rule).
        decay = 0.0 if param.ndim < 2 else cfg.weight_decay
        buckets[(lr, decay)].append(param)
        names[(lr, decay)].append(name)
    return [{"params": params, "lr": lr, "weight_decay": decay, "param_names": names[(lr, decay)]}
            for (lr, decay), params in sorted(buckets.items(), key=lambda kv: kv[0])]


def add_module_groups(optimizer: torch.optim.Optimizer, modules: dict[str, nn.Module], cfg: OptimConfig,
                      lrs: dict[str, float | None]) -> None:
    """Extra trained modules (an objective's discriminator) join ``optimizer``: at ``lrs[name]``, else the head's
    learning rate; weight decay on matrices only, like :func:`param_groups`."""
    for name, module in modules.items():
        lr = lrs.get(name) or (cfg.head_lr if cfg.head_lr is not None else cfg.lr)
        params = [p for p in module.parameters() if p.requires_grad]
        for decay, group in ((cfg.weight_decay, [p for p in params if p.ndim >= 2]),
                             (0.0, [p for p in params if p.ndim < 2])):
            if group:
                optimizer.add_param_group({"params": group, "lr": lr, "weight_decay": decay,
                                           "param_names": [f"objective.{name}"] * len(group)})


OPTIMIZERS = {
    "adamw": lambda groups, cfg, fused: torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused),
    "sgd": lambda groups, cfg, fused: torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=fused),
}

_FUSED_DEVICES = ("cpu", "cuda", "xpu", "mps")
# Fused kernels that also run on FSDP's DTensor shards (torch registers no sharding rule for fused SGD).
_FUSED_ON_DTENSOR = ("adamw",)


def can_fuse(groups: list[dict]) -> bool:
    """Fused kernels need floating-point parameters on one supported device type (dense, not sparse)."""
    params = [p for g in groups for p in g["params"]]
    devices = {p.device.type for p in params}
    return (len(devices) == 1 and devices.pop() in _FUSED_DEVICES
            and all(p.is_floating_point() and not p.is_sparse for p in params))


def build_optimizer(model: nn.Module, method, depths: DepthMap, cfg: OptimConfig,
                    fsdp: bool = False, params_join_later: bool = False) -> torch.optim.Optimizer:
    """The configured optimizer over the method's parameter groups.

    By default the fused kernel runs where it can (on CPU one AdamW step over MiniLM's 22.7M parameters takes
    7 ms fused vs 52 ms with ``foreach``); ``optim.fused: false`` turns it off, ``true`` insists on it. ``fsdp``: the
    parameters will be FSDP (DTensor) shards, where only some fused kernels exist. ``params_join_later``: some
    parameters get their first gradient after others were stepped (an ``unfreeze_schedule``); torch's fused SGD with
    momentum then fails ("expected Tensor as element 0 in argument 2, but got NoneType": a momentum buffer missing
    beside existing ones), so SGD with momentum runs unfused there.
    """
    groups = param_groups(model, method, depths, cfg)
    if not groups:
        raise ConfigurationError(
            "No trainable parameters: the method froze everything. Check the recipe and method options."
        )
    if fsdp and cfg.fused and cfg.name not in _FUSED_ON_DTENSOR:
        raise ConfigurationError(f"optim.fused=true: torch has no fused {cfg.name} kernel for FSDP-sharded "
                                 f"parameters (fused: {list(_FUSED_ON_DTENSOR)}). Set optim.fused to null (auto) or "
                                 "false.")
    late_momentum = params_join_later and cfg.name == "sgd" and cfg.momentum > 0
    if cfg.fused and late_momentum:
        raise ConfigurationError("optim.fused=true: torch's fused SGD with momentum fails when parameters start "
                                 "training later (unfreeze_schedule). Set optim.fused to null (auto) or false, or "
                                 "remove the unfreeze_schedule.")
    fusable = can_fuse(groups) and (not fsdp or cfg.name in _FUSED_ON_DTENSOR) and not late_momentum
    if cfg.fused and not fusable:
        devices = sorted({p.device.type for g in groups for p in g["params"]})
        raise ConfigurationError(f"optim.fused=true needs floating-point parameters on one of {_FUSED_DEVICES}; got "
                                 f"parameters on {devices}. Set optim.fused to null (auto) or false.")
    fused = fusable if cfg.fused is None else cfg.fused
    return OPTIMIZERS[cfg.name](groups, cfg, fused or None)


def _warmup(step: int, warmup: int) -> float:
    return (step + 1) / (warmup + 1) if step < warmup else 1.0


SCHEDULES = {
    "constant": lambda step, total, warmup, cfg, steps_per_epoch: 1.0,
    "linear": lambda step, total, warmup, cfg, spe: max(0.0, (total - step) / max(1, total - warmup)),
    "cosine": lambda step, total, warmup, cfg, spe: cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup)))),
    "step": lambda step, total, warmup, cfg, spe: cfg.gamma ** int(step / max(1.0, cfg.step_size_epochs * spe)),
}


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, total_steps: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup (linear from ~0) followed by the named decay, stepped once per optimizer step."""
    warmup = cfg.warmup_steps or int(cfg.warmup_ratio * total_steps)
    decay = SCHEDULES[cfg.name]

    def factor(step: int) -> float:
        if step < warmup:
            return _warmup(step, warmup)
        return decay(step, total_steps, warmup, cfg, steps_per_epoch)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
