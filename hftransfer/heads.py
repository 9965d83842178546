"""The classification head every backbone gets: [bottleneck] + dropout + linear layer on pooled features."""

from __future__ import annotations

import torch
from torch import nn


BOTTLENECK_NORMS = ("batch", "layer", "none")


def _norm(kind: str, width: int) -> nn.Module:
    if kind not in BOTTLENECK_NORMS:
        raise ValueError(f"bottleneck_norm={kind!r} is not supported; use one of {list(BOTTLENECK_NORMS)}.")
    return {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}[kind](width) if kind != "none" else nn.Identity()


class ClassificationHead(nn.Module):
    """``fc(dropout(x))``; with ``bottleneck_dim``, ``x`` is first mapped by Linear-Norm-ReLU (domain adaptation).

    :meth:`embed` returns what ``fc`` sees (the bottleneck output, or the pooled features): the representation
    domain-adaptation objectives align.
    """

    def __init__(self, in_features: int, num_labels: int, dropout: float = 0.0, bottleneck_dim: int | None = None,
                 bottleneck_norm: str = "batch"):
        super().__init__()
        self.bottleneck = None
        width = in_features
        if bottleneck_dim:
            self.bottleneck = nn.Sequential(nn.Linear(in_features, bottleneck_dim),
                                            _norm(bottleneck_norm, bottleneck_dim), nn.ReLU())
            width = bottleneck_dim
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(width, num_labels)
        self.config = {"in_features": int(in_features), "num_labels": int(num_labels), "dropout": float(dropout)}
        if bottleneck_dim:
            self.config.update(bottleneck_dim=int(bottleneck_dim), bottleneck_norm=bottleneck_norm)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(features) if self.bottleneck is not None else features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.embed(features)))
