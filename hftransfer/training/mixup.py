"""Mixup / CutMix of image batches (timm's ``Mixup``), with soft targets."""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.data import Mixup
from torch.nn import functional as F


MixFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def build_mixup(mixup_alpha: float, cutmix_alpha: float, label_smoothing: float, num_labels: int) -> MixFn | None:
    """``(pixels, labels) -> (mixed pixels, soft targets)``; None when both alphas are 0."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return None
    mix = Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, label_smoothing=label_smoothing,
                num_classes=num_labels)

    def apply(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] % 2:  # timm's Mixup pairs samples: odd batches (the last one) pass through
            return x, F.one_hot(y, num_labels).float()
        return mix(x, y)

    return apply
