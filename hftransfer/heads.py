"""The classification head every backbone gets: dropout + linear layer on pooled features."""

from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    def __init__(self, in_features: int, num_labels: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_labels)
        self.config = {"in_features": int(in_features), "num_labels": int(num_labels), "dropout": float(dropout)}

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features))
