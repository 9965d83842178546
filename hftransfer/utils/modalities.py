"""The input modalities a backbone has (``AutoTransfer.modality``): per-modality defaults of methods and objectives
are keyed by these names."""

from __future__ import annotations


MODALITIES = ("text", "image")
