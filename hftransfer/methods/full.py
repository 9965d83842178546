"""``full``: every parameter trains."""

from __future__ import annotations

from dataclasses import dataclass

from hftransfer.methods.base import MethodConfig, TransferMethod
from hftransfer.methods.registry import register_method


@dataclass
class FullConfig(MethodConfig):
    """Full fine-tuning has no options of its own (freeze schedules and LRs live in the training config)."""


@register_method("full", FullConfig)
class FullFineTuning(TransferMethod):
    """Full fine-tuning: every parameter of backbone and head trains."""

    def apply(self, model) -> None:
        self.set_trainable(model)

    def is_trained_parameter(self, name: str) -> bool:
        return True
