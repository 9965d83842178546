"""Parameter depth (stem -> blocks -> head) for freeze/unfreeze schedules and layer-wise learning rates."""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from hftransfer.backbones.base import BLOCK_PATTERN
from hftransfer.saved_format import HEAD_PREFIX


_BLOCK_PREFIX = re.compile(r"^(.*?" + BLOCK_PATTERN + r")\.")


@dataclass(frozen=True)
class DepthMap:
    """``depth[name]``: 0 = stem/embeddings, 1..num_blocks = blocks, num_blocks+1 = final norms, +2 = head."""

    depth: dict[str, int]
    num_blocks: int

    @property
    def head_depth(self) -> int:
        return self.num_blocks + 2

    def in_stage(self, name: str, stage: str) -> bool:
        """Whether parameter ``name`` trains in schedule stage ``stage`` ("head" | "top:K" | "all")."""
        d = self.depth[name]
        if stage == "all":
            return True
        if stage == "head":
            return d == self.head_depth
        k = int(stage.split(":", 1)[1])
        return d > self.num_blocks - k


def depth_map(model: nn.Module) -> DepthMap:
    """Assign every parameter of an ``AutoTransfer`` a depth from its name and position."""
    blocks: dict[str, int] = {}
    depth: dict[str, int] = {}
    names = [n for n, _ in model.named_parameters()]
    for name in names:
        if name.startswith(HEAD_PREFIX):
            continue
        match = _BLOCK_PREFIX.match(name)
        if match and match.group(1) not in blocks:
            blocks[match.group(1)] = len(blocks) + 1
    n = len(blocks)
    seen_block = False
    for name in names:
        if name.startswith(HEAD_PREFIX):
            depth[name] = n + 2
            continue
        match = _BLOCK_PREFIX.match(name)
        if match:
            seen_block = True
            depth[name] = blocks[match.group(1)]
        else:
            depth[name] = n + 1 if seen_block else 0
    return DepthMap(depth, n)


def stage_at(schedule: list, epoch: int) -> str:
    """The unfreeze stage in force at ``epoch`` (the last stage whose start epoch has been reached)."""
    stage = "all"
    for item in sorted(schedule, key=lambda s: s.epoch):
        if item.epoch <= epoch:
            stage = item.train
    return stage


def apply_stage(model: nn.Module, method, depths: DepthMap, stage: str) -> int:
    """Set ``requires_grad`` = trained by the method AND inside the stage. Returns the trainable count."""
    count = 0
    for name, param in model.named_parameters():
        trainable = method.is_trained_parameter(name) and depths.in_stage(name, stage)
        param.requires_grad_(trainable)
        count += param.numel() if trainable else 0
    return count


def set_train_mode(model: nn.Module, stage: str) -> None:
    """Train mode for what trains, eval mode for what is frozen: frozen BatchNorm layers keep their pretrained
    statistics, and a frozen backbone (head-only stage, a method that trains no backbone or keeps it in eval mode)
    runs in eval mode around the method's trained modules."""
    model.train()
    frozen_stats = model.method.freezes_norm_statistics
    for module in model.backbone.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (frozen_stats or not any(
                p.requires_grad for p in module.parameters(recurse=False))):
            module.eval()
    if not model.method.trains_backbone or stage == "head" or model.method.keeps_backbone_eval:
        model.backbone.eval()
        for module in model.method.trained_modules(model):
            module.train()
