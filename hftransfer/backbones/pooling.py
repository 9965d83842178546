"""How a transformers backbone turns its hidden states into one vector per example, and which way is the default."""

from __future__ import annotations

from typing import Any

import torch


# Vision transformers trained with a [CLS] token whose checkpoints ship no pooler weights.
CLS_POOLED_MODEL_TYPES = {"vit", "deit", "beit", "data2vec-vision", "dinov2", "dinov2_with_registers", "vit_msn",
                          "vit_mae", "ijepa"}


def default_pooling(config: Any, modality: str) -> str:
    """Mean over tokens for text; [CLS] for ViT-like models without pooler weights; the model's pooler otherwise."""
    if modality == "text":
        return "mean"
    return "cls" if config.model_type in CLS_POOLED_MODEL_TYPES else "pooler"


POOLERS = {
    "cls": lambda out, mask: out.last_hidden_state[:, 0],
    "pooler": lambda out, mask: out.pooler_output.flatten(1),
    "mean": lambda out, mask: masked_mean(out.last_hidden_state, mask),
}


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the tokens that ``mask`` keeps (over the spatial axes for conv feature maps)."""
    if hidden.dim() == 4:  # conv feature maps (B, C, H, W)
        return hidden.mean(dim=(2, 3))
    if mask is None:
        return hidden.mean(dim=1)
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
